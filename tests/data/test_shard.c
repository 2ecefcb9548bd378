/* test_shard.c: token shard files (data/shard.c): round trip, validation on open, atomic
 * writes, and encoding text files into a shard. */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/blas.h"
#include "data/shard.h"

static char g_dir[512];

/* Path of name inside the per-run directory g_dir (made by main under $MOE_BUILD_DIR or
 * /tmp before the tests fork, removed at the end). */
static void tmp_path(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", g_dir, name);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void expect_open_error(const char *path, const char *want1, const char *want2) {
    Shard s;
    MoeErr err;
    ck_assert_int_eq(shard_open(&s, path, &err), -1);
    ck_assert_msg(strstr(err.msg, path) != NULL, "error does not name the file: %s", err.msg);
    ck_assert_msg(strstr(err.msg, want1) != NULL, "want \"%s\" in: %s", want1, err.msg);
    ck_assert_msg(!want2 || strstr(err.msg, want2) != NULL, "want \"%s\" in: %s", want2, err.msg);
    ck_assert(err.hint[0] != 0);
    ck_assert_ptr_null(s.map);
    shard_close(&s);  /* safe on the zeroed struct */
}

START_TEST(test_roundtrip) {
    char path[600];
    tmp_path(path, sizeof path, "rt.bin");
    int32_t ids[1000];
    for (int i = 0; i < 1000; i++) ids[i] = (i * 7919) % 50000;
    MoeErr err;
    ck_assert_msg(shard_write(path, ids, 1000, 50000, 0x1234567890abcdefULL, &err) == 0, "%s", err.msg);
    Shard s;
    ck_assert_msg(shard_open(&s, path, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(s.n_tokens, 1000);
    ck_assert_uint_eq(s.vocab_size, 50000);
    ck_assert(s.tok_hash == 0x1234567890abcdefULL);
    for (int i = 0; i < 1000; i++) ck_assert_int_eq(s.tokens[i], ids[i]);
    shard_close(&s);
    ck_assert_ptr_null(s.map);

    /* the header bytes are the documented little-endian layout */
    FILE *f = fopen(path, "rb");
    uint8_t h[32];
    ck_assert_uint_eq(fread(h, 1, 32, f), 32);
    fclose(f);
    ck_assert(memcmp(h, "MOETOK1\0", 8) == 0);
    ck_assert(h[8] == 1 && h[9] == 0 && h[10] == 0 && h[11] == 0);      /* version 1 */
    ck_assert(h[12] == 0x50 && h[13] == 0xC3 && h[14] == 0 && h[15] == 0); /* 50000 = 0xC350 */
    ck_assert(h[16] == 0xE8 && h[17] == 0x03);                           /* 1000 = 0x3E8 */
    ck_assert(h[24] == 0xef && h[31] == 0x12);

    /* vocab 65536 (the largest) keeps id 65535 */
    int32_t top[2] = {65535, 0};
    ck_assert_msg(shard_write(path, top, 2, 65536, 1, &err) == 0, "%s", err.msg);
    ck_assert_msg(shard_open(&s, path, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(s.tokens[0], 65535);
    shard_close(&s);

    /* no temporary file is left next to it */
    DIR *d = opendir(g_dir);
    struct dirent *e;
    while ((e = readdir(d)))
        ck_assert_msg(strstr(e->d_name, ".tmp") == NULL, "leftover temporary %s", e->d_name);
    closedir(d);
    unlink(path);
}
END_TEST

START_TEST(test_empty_shard) {
    char path[600];
    tmp_path(path, sizeof path, "empty.bin");
    MoeErr err;
    ck_assert_int_eq(shard_write(path, NULL, 0, 300, 9, &err), 0);
    Shard s;
    ck_assert_msg(shard_open(&s, path, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(s.n_tokens, 0);
    shard_close(&s);
    unlink(path);
}
END_TEST

START_TEST(test_truncated_rejected) {
    char path[600];
    tmp_path(path, sizeof path, "trunc.bin");
    int32_t ids[100];
    for (int i = 0; i < 100; i++) ids[i] = i;
    MoeErr err;
    ck_assert_int_eq(shard_write(path, ids, 100, 256, 0, &err), 0);
    ck_assert_int_eq(truncate(path, 32 + 2 * 50 + 1), 0);
    /* 100 tokens need 32 + 200 = 232 bytes; the file has 133 */
    expect_open_error(path, "232", "133");
    ck_assert_int_eq(truncate(path, 20), 0);
    expect_open_error(path, "truncated", "20 bytes");
    /* trailing bytes are rejected too */
    ck_assert_int_eq(shard_write(path, ids, 100, 256, 0, &err), 0);
    FILE *f = fopen(path, "ab");
    fputc(0, f);
    fclose(f);
    expect_open_error(path, "233", "trailing");
    unlink(path);
}
END_TEST

START_TEST(test_bad_header_rejected) {
    char path[600];
    tmp_path(path, sizeof path, "hdr.bin");
    int32_t ids[4] = {1, 2, 3, 4};
    MoeErr err;
    ck_assert_int_eq(shard_write(path, ids, 4, 256, 0, &err), 0);
    uint8_t buf[40];
    FILE *f = fopen(path, "rb");
    ck_assert_uint_eq(fread(buf, 1, 40, f), 40);
    fclose(f);
    buf[0] = 'X';
    write_bytes(path, buf, 40);
    expect_open_error(path, "magic", NULL);
    buf[0] = 'M';
    buf[8] = 2;  /* version 2 */
    write_bytes(path, buf, 40);
    expect_open_error(path, "version", NULL);
    unlink(path);
    expect_open_error(path, "cannot open", NULL);
}
END_TEST

START_TEST(test_bad_id_rejected) {
    char path[600];
    tmp_path(path, sizeof path, "badid.bin");
    int32_t ids[40];
    for (int i = 0; i < 40; i++) ids[i] = i;
    MoeErr err;
    ck_assert_int_eq(shard_write(path, ids, 40, 1000, 0, &err), 0);
    /* overwrite token 17 with 1000 (= vocab_size) in place */
    FILE *f = fopen(path, "r+b");
    fseek(f, 32 + 2 * 17, SEEK_SET);
    uint8_t v[2] = {1000 & 0xFF, 1000 >> 8};
    fwrite(v, 1, 2, f);
    fclose(f);
    expect_open_error(path, "token 17", "1000");
    /* and shard_write refuses ids outside the vocab, naming the index */
    ids[5] = 1000;
    ck_assert_int_eq(shard_write(path, ids, 40, 1000, 0, &err), -1);
    ck_assert_msg(strstr(err.msg, "token 5") != NULL, "msg: %s", err.msg);
    ids[5] = -1;
    ck_assert_int_eq(shard_write(path, ids, 40, 1000, 0, &err), -1);
    ids[5] = 5;
    ck_assert_int_eq(shard_write(path, ids, 40, 70000, 0, &err), -1);
    ck_assert_msg(strstr(err.msg, "70000") != NULL, "msg: %s", err.msg);
    unlink(path);
}
END_TEST

static void train_small(Tokenizer *t) {
    const char *text = "the cat sat on the mat. the dog sat on the log. "
                       "a cat and a dog, the cat and the dog.";
    const uint8_t *bufs[1] = {(const uint8_t *)text};
    size_t lens[1] = {strlen(text)};
    MoeErr err;
    ck_assert_msg(tok_train_buffers(t, bufs, lens, 1, 270, &err) == 0, "%s", err.msg);
}

START_TEST(test_encode_files) {
    Tokenizer t;
    train_small(&t);
    char a[600], b[600], out[600];
    tmp_path(a, sizeof a, "a.txt");
    tmp_path(b, sizeof b, "b.txt");
    tmp_path(out, sizeof out, "ab.bin");
    const char *ta = "the cat sat on the mat.\n", *tb = "h\xc3\xa9llo \xff dog";
    write_bytes(a, ta, strlen(ta));
    write_bytes(b, tb, strlen(tb));
    const char *paths[2] = {a, b};
    MoeErr err;
    ck_assert_msg(shard_encode_files(&t, paths, 2, out, &err) == 0, "%s", err.msg);
    Shard s;
    ck_assert_msg(shard_open(&s, out, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(s.vocab_size, 270);
    ck_assert(s.tok_hash == tok_hash(&t));
    /* layout: tokens(a) EOT tokens(b) EOT; each part decodes to its file */
    size_t eots[2], k = 0;
    for (size_t i = 0; i < s.n_tokens; i++)
        if (s.tokens[i] == tok_eot(&t)) { ck_assert_uint_lt(k, 2); eots[k++] = i; }
    ck_assert_uint_eq(k, 2);
    ck_assert_uint_eq(eots[1], s.n_tokens - 1);
    const char *want[2] = {ta, tb};
    size_t begin = 0;
    for (int d = 0; d < 2; d++) {
        int32_t ids[256];
        uint8_t text[256];
        size_t n = eots[d] - begin, m;
        ck_assert_uint_le(n, 256);
        for (size_t i = 0; i < n; i++) ids[i] = s.tokens[begin + i];
        ck_assert_int_eq(tok_decode(&t, ids, n, text, sizeof text, &m), 0);
        ck_assert_uint_eq(m, strlen(want[d]));
        ck_assert(memcmp(text, want[d], m) == 0);
        begin = eots[d] + 1;
    }
    /* merges were applied: fewer tokens than bytes */
    ck_assert_uint_lt(s.n_tokens, strlen(ta) + strlen(tb));
    shard_close(&s);
    unlink(a);
    unlink(b);
    unlink(out);
    tok_free(&t);
}
END_TEST

START_TEST(test_encode_files_errors) {
    Tokenizer t;
    train_small(&t);
    char empty[600], missing[600], out[600];
    tmp_path(empty, sizeof empty, "empty.txt");
    tmp_path(missing, sizeof missing, "missing.txt");
    tmp_path(out, sizeof out, "never.bin");
    write_bytes(empty, "", 0);
    MoeErr err;
    const char *p1[1] = {empty};
    ck_assert_int_eq(shard_encode_files(&t, p1, 1, out, &err), -1);
    char want[700];
    snprintf(want, sizeof want, "%s is empty", empty);
    ck_assert_msg(strstr(err.msg, want) != NULL, "msg: %s", err.msg);
    ck_assert(err.hint[0] != 0);
    const char *p2[1] = {missing};
    ck_assert_int_eq(shard_encode_files(&t, p2, 1, out, &err), -1);
    ck_assert_msg(strstr(err.msg, missing) != NULL, "msg: %s", err.msg);
    ck_assert(err.hint[0] != 0);
    ck_assert_int_ne(access(out, F_OK), 0);  /* nothing half-written */
    unlink(empty);
    tok_free(&t);
}
END_TEST

static Suite *shard_suite(void) {
    Suite *s = suite_create("shard");
    struct { const char *name; const TTest *fn; } cases[] = {
        {"roundtrip", test_roundtrip},
        {"empty_shard", test_empty_shard},
        {"truncated_rejected", test_truncated_rejected},
        {"bad_header_rejected", test_bad_header_rejected},
        {"bad_id_rejected", test_bad_id_rejected},
        {"encode_files", test_encode_files},
        {"encode_files_errors", test_encode_files_errors},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].fn);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    const char *base = getenv("MOE_BUILD_DIR");
    snprintf(g_dir, sizeof g_dir, "%s/test_shard_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror(g_dir);
        return 1;
    }
    SRunner *sr = srunner_create(shard_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    rmdir(g_dir);  /* only succeeds when empty: every passing test unlinks its files */
    return failed == 0 ? 0 : 1;
}
