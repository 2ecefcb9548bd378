/* test_seal.c: a checkpoint is either exactly what was written, or refused
 * (checkpoints/seal.h, ckpt.h "Integrity"), on the reference checkpoint of seal_fixture.h:
 * - SHA-256: the FIPS 180-2 example vectors, the constants re-derived from the primes, and
 *   multi-block inputs fed in odd pieces against coreutils' sha256sum;
 * - the record: its text, and `tail -c +4097 FILE | sha256sum` reproduces its digest;
 * - single-byte flips over every region (the user block with the record and its padding,
 *   the superblock, the middle, the last 16 KiB): ckpt_verify, ckpt_inspect and ckpt_load
 *   each refuse every one, naming the file (and the two digests past the user block); the
 *   untouched file passes; truncations and appended bytes are refused the same way;
 * - the verdict cache: a settled file is hashed once per process, a fresh one on every open,
 *   a re-sealed or replaced one again; a file swapped between verification and opening is
 *   refused.
 * Format version 1 and crafted attributes are test_seal_attrs.c. Each test says which
 * deliberate break of the code it was seen to catch ("Caught:").
 */
#include <check.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "autograd/blas.h"
#include "checkpoints/ckpt.h"
#include "checkpoints/h5io.h"
#include "checkpoints/seal.h"
#include "checkpoints/sha256.h"
#include "train/train.h"

#include "seal_fixture.h"

/* ---- SHA-256 ---- */

static void hex_of(const void *data, size_t n, char out[SHA256_HEX]) {
    Sha256 s;
    uint8_t d[SHA256_BYTES];
    sha256_init(&s);
    sha256_update(&s, data, n);
    sha256_final(&s, d);
    sha256_hex(d, out);
}

/* Caught: a wrong rotation in BSIG1 (6 -> 7), the bit length written little-endian in the
 * padding, one round constant changed (K[1] 0x71374491 -> 0x71374492): each failed "abc". */
START_TEST(test_sha256) {
    /* FIPS 180-2 appendix B (SHA-256 examples) and the empty message */
    char h[SHA256_HEX];
    hex_of("abc", 3, h);
    ck_assert_str_eq(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    hex_of("", 0, h);
    ck_assert_str_eq(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    hex_of(two, strlen(two), h);
    ck_assert_str_eq(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    Sha256 s;
    uint8_t d[SHA256_BYTES];
    sha256_init(&s);
    char as[1000];
    memset(as, 'a', sizeof as);
    for (int i = 0; i < 1000; i++) sha256_update(&s, as, sizeof as);   /* a million 'a' */
    sha256_final(&s, d);
    sha256_hex(d, h);
    ck_assert_str_eq(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");

    /* the constants from their definition: the first 32 bits of the fractional parts of the
     * cube roots of the first 64 primes (K) and square roots of the first 8 (H0); double
     * carries 53 bits, about 50 of them after the point for roots below 8, so the floor of
     * frac * 2^32 is exact unless a root sits within 1e-5 of a 2^-32 boundary (none does) */
    int primes[64], np = 0;
    for (int n = 2; np < 64; n++) {
        bool prime = true;
        for (int i = 0; i < np && prime; i++) prime = n % primes[i] != 0;
        if (prime) primes[np++] = n;
    }
    for (int i = 0; i < 64; i++) {
        double r = cbrt((double)primes[i]);
        ck_assert_msg(SHA256_K[i] == (uint32_t)ldexp(r - floor(r), 32), "K[%d]", i);
    }
    for (int i = 0; i < 8; i++) {
        double r = sqrt((double)primes[i]);
        ck_assert_msg(SHA256_H0[i] == (uint32_t)ldexp(r - floor(r), 32), "H0[%d]", i);
    }

    /* multi-block inputs of awkward lengths (every padding case around 55, 56, 63, 64
     * bytes mod 64), fed in pieces of varying size, against coreutils */
    char path[320], cmd[400], want[200];
    snprintf(path, sizeof path, "%s/blob", g_dir);
    const size_t lens[] = {55, 56, 63, 64, 119, 120, 1000003};
    uint8_t *buf = malloc(1000003);
    ck_assert_ptr_nonnull(buf);
    MoeRng r;
    rng_seed(&r, 5);
    for (size_t i = 0; i < 1000003; i++) buf[i] = (uint8_t)rng_next(&r);
    for (size_t c = 0; c < sizeof lens / sizeof lens[0]; c++) {
        FILE *f = fopen(path, "wb");
        ck_assert_uint_eq(fwrite(buf, 1, lens[c], f), lens[c]);
        fclose(f);
        snprintf(cmd, sizeof cmd, "sha256sum '%s'", path);
        shell_line(cmd, want, sizeof want);
        want[64] = 0;
        sha256_init(&s);
        for (size_t off = 0, piece = 1; off < lens[c]; off += piece, piece = piece * 3 % 131 + 1)
            sha256_update(&s, buf + off, lens[c] - off < piece ? lens[c] - off : piece);
        sha256_final(&s, d);
        sha256_hex(d, h);
        ck_assert_msg(strcmp(h, want) == 0, "length %zu: %s, sha256sum %s", lens[c], h, want);
    }
    free(buf);
}
END_TEST

/* ---- the record ---- */

/* Caught: the digest range starting 8 bytes late (bytes 4104..end): writer and verifier
 * agreed, so every other test passed, but `tail -c +4097 | sha256sum` did not match. */
START_TEST(test_record) {
    char head[SEAL_BLOCK];
    FILE *f = fopen(g_ref, "rb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fread(head, 1, sizeof head, f), sizeof head);
    fclose(f);
    char cmd[400], by_hand[200], want[300];
    snprintf(cmd, sizeof cmd, "tail -c +4097 '%s' | sha256sum", g_ref);
    shell_line(cmd, by_hand, sizeof by_hand);
    by_hand[64] = 0;
    snprintf(want, sizeof want, "moetrain-seal 1\nalgorithm sha256\nlength %ld\ndigest %s\n"
             "check: tail -c +4097 FILE | sha256sum\n", file_size(g_ref), by_hand);
    ck_assert_msg(strncmp(head, want, strlen(want)) == 0, "record:\n%.300s\nwanted:\n%s", head,
                  want);
    for (size_t i = strlen(want); i < SEAL_BLOCK; i++) ck_assert_msg(head[i] == 0, "pad %zu", i);
    /* the HDF5 file proper starts after the user block */
    ck_assert(memcmp(head, "\x89HDF", 4) != 0);
    snprintf(cmd, sizeof cmd, "h5ls '%s/params/lm_head.weight' > /dev/null 2>&1", g_ref);
    ck_assert_msg(system(cmd) == 0, "h5ls cannot read a sealed file");
    CkptInfo in;
    MoeErr err;
    ck_assert_msg(ckpt_inspect(g_ref, &in, &err) == 0, "%s", err.msg);
    ck_assert(in.sealed && in.format_version == 2);
    ckpt_info_free(&in);
}
END_TEST

/* ---- damage anywhere ---- */

/* ckpt_verify, ckpt_inspect and ckpt_load all refuse path with a message naming it (and,
 * when past_block, giving the expected and found digests). m receives nothing. */
static void assert_refused(const char *path, Model *m, bool past_block, const char *what) {
    MoeErr err;
    CkptMeta meta;
    CkptInfo in;
    for (int r = 0; r < 3; r++) {
        memset(&err, 0, sizeof err);
        int rc = r == 0 ? ckpt_verify(path, &meta, &err)
               : r == 1 ? ckpt_inspect(path, &in, &err) : ckpt_load(path, m, NULL, true, &err);
        if (r == 1) ckpt_info_free(&in);
        static const char *const NAMES[] = {"ckpt_verify", "ckpt_inspect", "ckpt_load"};
        ck_assert_msg(rc == -1, "%s: %s accepted it", what, NAMES[r]);
        ck_assert_msg(strstr(err.msg, path) && err.hint[0], "%s: %s: %s", what, NAMES[r],
                      err.msg);
        if (past_block)
            ck_assert_msg(strstr(err.msg, "SHA-256") && strstr(err.msg, "the seal records"),
                          "%s: %s: no digests in: %s", what, NAMES[r], err.msg);
    }
}


/* Caught: the canonical-record comparison removed (a flip at offset 118, in the text of the
 * record's last line, was accepted), and the digest comparison removed so that only the
 * length was compared (a flip at offset 56, in the digest's hex, was accepted). */
START_TEST(test_flip_sweep) {
    copy_file(g_ref, g_bad, -1, 0);
    const long size = file_size(g_bad);
    ck_assert_int_gt(size, SEAL_BLOCK + 32768);
    long offs[1024];
    int n = 0;
    for (long o = 0; o < 200; o++) offs[n++] = o;   /* the record (about 180 bytes) */
    const long pad[] = {200, 511, 512, 1024, 2048, 3000, 4095};
    for (size_t i = 0; i < sizeof pad / sizeof pad[0]; i++) offs[n++] = pad[i];
    for (long o = SEAL_BLOCK; o < SEAL_BLOCK + 128; o++) offs[n++] = o;   /* superblock */
    for (long k = 1; k <= 100; k++)   /* the middle */
        offs[n++] = SEAL_BLOCK + 128 + k * (size - 16384 - SEAL_BLOCK - 128) / 101;
    for (long o = size - 16384; o < size - 64; o += 127) offs[n++] = o;   /* last 16 KiB */
    for (long o = size - 64; o < size; o++) offs[n++] = o;
    ck_assert_int_le(n, 1024);
    static const uint8_t MASKS[] = {0x01, 0x80, 0x10, 0xff};
    Model m;
    build(&m, 9);
    MoeErr err;
    ck_assert_msg(ckpt_verify(g_bad, NULL, &err) == 0, "%s", err.msg);
    for (int i = 0; i < n; i++) {
        char what[64];
        snprintf(what, sizeof what, "flip at %ld of %ld", offs[i], size);
        flip(g_bad, offs[i], MASKS[i % 4]);
        assert_refused(g_bad, &m, offs[i] >= SEAL_BLOCK, what);
        flip(g_bad, offs[i], MASKS[i % 4]);
    }
    ck_assert_msg(ckpt_verify(g_bad, NULL, &err) == 0, "%s", err.msg);   /* restored */
    ck_assert_msg(ckpt_load(g_bad, &m, NULL, true, &err) == 0, "%s", err.msg);

    /* truncated: inside the record, at the block's end, inside the superblock, anywhere */
    const long cut[] = {0, 1, 8, 100, SEAL_BLOCK - 1, SEAL_BLOCK, SEAL_BLOCK + 1,
                        SEAL_BLOCK + 8, size / 2, size - 16384, size - 1};
    for (size_t i = 0; i < sizeof cut / sizeof cut[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "truncated to %ld of %ld", cut[i], size);
        copy_file(g_ref, g_bad, cut[i], 0);
        assert_refused(g_bad, &m, false, what);
        if (cut[i] > SEAL_BLOCK) {   /* past the block the message gives both lengths */
            ck_assert_int_eq(ckpt_verify(g_bad, NULL, &err), -1);
            ck_assert_msg(strstr(err.msg, "truncated") && strstr(err.msg, "the seal records"),
                          "%s", err.msg);
        }
    }
    const long more[] = {1, 7, SEAL_BLOCK};
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "%ld bytes appended", more[i]);
        copy_file(g_ref, g_bad, -1, more[i]);
        assert_refused(g_bad, &m, true, what);
        ck_assert_int_eq(ckpt_verify(g_bad, NULL, &err), -1);
        ck_assert_msg(strstr(err.msg, "bytes appended"), "%s", err.msg);
    }
    model_free(&m);
}
END_TEST

/* ---- the verdict cache and the open-time identity check ---- */

/* Caught: caching fresh files too (the fresh file was hashed once, not twice: a change in
 * the same timestamp tick would pass as the cached verdict), a cache key without mtime and
 * ctime (the re-sealed file was not hashed again), and h5io_open_ro without the identity
 * check (the file swapped in after verification opened). */
START_TEST(test_cache) {
    const uint64_t body = (uint64_t)file_size(g_ref) - SEAL_BLOCK;
    MoeErr err;
    uint64_t h0 = seal_hashed_bytes();
    ck_assert_int_eq(ckpt_verify(g_ref, NULL, &err), 0);
    ck_assert_int_eq(ckpt_verify(g_ref, NULL, &err), 0);
    ck_assert_uint_eq(seal_hashed_bytes() - h0, 2 * body);   /* fresh: hashed each time */

    usleep((SEAL_SETTLE_S * 1000 + 300) * 1000);
    h0 = seal_hashed_bytes();
    ck_assert_int_eq(ckpt_verify(g_ref, NULL, &err), 0);
    ck_assert_uint_eq(seal_hashed_bytes() - h0, body);
    Config c;
    Model m;
    build(&m, 3);
    ck_assert_msg(ckpt_read_config(g_ref, &c, &err) == 0, "%s", err.msg);
    ck_assert_msg(ckpt_load(g_ref, &m, NULL, true, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(seal_hashed_bytes() - h0, body);   /* settled: once per process */
    config_free(&c);

    /* re-sealed in place: a new mtime, a new identity, hashed again */
    ck_assert_msg(ckpt_seal(g_ref, &err) == 0, "%s", err.msg);
    h0 = seal_hashed_bytes();
    ck_assert_int_eq(ckpt_verify(g_ref, NULL, &err), 0);
    ck_assert_uint_eq(seal_hashed_bytes() - h0, body);

    /* a file renamed over the verified one between verification and opening */
    copy_file(g_ref, g_bad, -1, 0);
    bool sealed = false;
    SealId id;
    ck_assert_int_eq(seal_verify(g_ref, &sealed, &id, &err), 0);
    ck_assert_int_eq(rename(g_bad, g_ref), 0);
    int64_t f;
    ck_assert_int_eq(h5io_open_ro(g_ref, &id, &f, &err), -1);
    ck_assert_msg(strstr(err.msg, g_ref) && strstr(err.msg, "changed"), "%s", err.msg);
    model_free(&m);
}
END_TEST

static Suite *seal_suite(void) {
    Suite *s = suite_create("seal");
    struct { const char *name; const TTest *fn; } cases[] = {
        {"sha256", test_sha256},
        {"record", test_record},
        {"flip_sweep", test_flip_sweep},
        {"cache", test_cache},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, cases[i].fn);
        tcase_set_timeout(tc, 120);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    SRunner *sr = srunner_create(seal_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
