/* test_shard.c: token shard files (data/shard.c): round trip in both widths, the old
 * format-1 files, validation on open and of the ids, atomic writes, and encoding text
 * files into a shard (data/encode.c). */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/blas.h"
#include "data/encode.h"
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
    ck_assert_int_eq(s.width, 2);
    ck_assert_int_eq(s.version, 2);
    for (int i = 0; i < 1000; i++) ck_assert_int_eq((int)shard_token(&s, i), ids[i]);
    ck_assert_int_eq(shard_check_ids(&s, &err), 0);
    shard_close(&s);
    ck_assert_ptr_null(s.map);

    /* the header bytes are the documented little-endian layout */
    FILE *f = fopen(path, "rb");
    uint8_t h[40];
    ck_assert_uint_eq(fread(h, 1, 40, f), 40);
    fseek(f, 0, SEEK_END);
    ck_assert_int_eq(ftell(f), 40 + 2 * 1000);
    fclose(f);
    ck_assert(memcmp(h, "MOETOK1\0", 8) == 0);
    ck_assert(h[8] == 2 && h[9] == 0 && h[10] == 0 && h[11] == 0);      /* version 2 */
    ck_assert(h[12] == 0x50 && h[13] == 0xC3 && h[14] == 0 && h[15] == 0); /* 50000 = 0xC350 */
    ck_assert(h[16] == 0xE8 && h[17] == 0x03);                           /* 1000 = 0x3E8 */
    ck_assert(h[24] == 0xef && h[31] == 0x12);
    ck_assert(h[32] == 2 && h[33] == 0 && h[36] == 0);                  /* width 2, reserved */

    /* vocab 65536 (the largest with 16-bit ids) keeps id 65535 */
    int32_t top[2] = {65535, 0};
    ck_assert_msg(shard_write(path, top, 2, 65536, 1, &err) == 0, "%s", err.msg);
    ck_assert_msg(shard_open(&s, path, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(s.width, 2);
    ck_assert_int_eq((int)shard_token(&s, 0), 65535);
    shard_close(&s);

    /* vocab 200000 (a current standard vocabulary) stores 32-bit ids */
    int32_t wide[3] = {199999, 65536, 7};
    ck_assert_msg(shard_write(path, wide, 3, 200000, 5, &err) == 0, "%s", err.msg);
    ck_assert_msg(shard_open(&s, path, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(s.width, 4);
    ck_assert_uint_eq(s.map_len, 40 + 4 * 3);
    int32_t back[3];
    ck_assert_uint_eq(shard_read(&s, 0, 3, back), 3);
    ck_assert(memcmp(back, wide, sizeof back) == 0);
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

/* A format-1 shard as earlier versions wrote it, made byte by byte here: 32-byte header
 * (version 1, no width field) and uint16 ids. It still opens and reads the same ids. */
START_TEST(test_format1_opens) {
    char path[600];
    tmp_path(path, sizeof path, "v1.bin");
    uint8_t b[32 + 2 * 5];
    memset(b, 0, sizeof b);
    memcpy(b, "MOETOK1\0", 8);
    b[8] = 1;                      /* version 1 */
    b[12] = 0x00; b[13] = 0x01;    /* vocab 256 */
    b[16] = 5;                     /* 5 tokens */
    b[24] = 0x77;                  /* tokenizer hash 0x77 */
    const uint16_t ids[5] = {0, 255, 17, 128, 3};
    for (int i = 0; i < 5; i++) { b[32 + 2 * i] = (uint8_t)ids[i]; b[33 + 2 * i] = 0; }
    write_bytes(path, b, sizeof b);
    Shard s;
    MoeErr err;
    ck_assert_msg(shard_open(&s, path, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(s.version, 1);
    ck_assert_int_eq(s.width, 2);
    ck_assert_uint_eq(s.n_tokens, 5);
    ck_assert_uint_eq(s.vocab_size, 256);
    ck_assert(s.tok_hash == 0x77);
    for (int i = 0; i < 5; i++) ck_assert_uint_eq(shard_token(&s, i), ids[i]);
    shard_close(&s);
    /* format 1 has no 32-bit ids: a vocabulary above 65536 in its header is refused */
    b[14] = 0x02;   /* vocab 0x20100 = 131328 */
    write_bytes(path, b, sizeof b);
    expect_open_error(path, "vocab_size 131328", "format 1");
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
    ck_assert_int_eq(truncate(path, 40 + 2 * 50 + 1), 0);
    /* 100 tokens need 40 + 200 = 240 bytes; the file has 141 */
    expect_open_error(path, "240", "141");
    ck_assert_int_eq(truncate(path, 20), 0);
    expect_open_error(path, "truncated", "20 bytes");
    /* trailing bytes are rejected too */
    ck_assert_int_eq(shard_write(path, ids, 100, 256, 0, &err), 0);
    FILE *f = fopen(path, "ab");
    fputc(0, f);
    fclose(f);
    expect_open_error(path, "241", "trailing");
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
    buf[8] = 3;  /* version 3: newer than this build */
    write_bytes(path, buf, 40);
    expect_open_error(path, "version 3", NULL);
    buf[8] = 2;
    buf[32] = 4;  /* 4-byte ids for a 256-token vocabulary: not what a writer makes */
    ck_assert_int_eq(shard_write(path, ids, 4, 256, 0, &err), 0);
    FILE *g = fopen(path, "r+b");
    fseek(g, 32, SEEK_SET);
    fputc(4, g);
    fclose(g);
    expect_open_error(path, "width", NULL);
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
    fseek(f, 40 + 2 * 17, SEEK_SET);
    uint8_t v[2] = {1000 & 0xFF, 1000 >> 8};
    fwrite(v, 1, 2, f);
    fclose(f);
    /* open reads no id (O(1)); the full check and a read both find it */
    Shard s;
    ck_assert_msg(shard_open(&s, path, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(shard_check_ids(&s, &err), -1);
    ck_assert_msg(strstr(err.msg, "token 17") && strstr(err.msg, "1000") &&
                  strstr(err.msg, path), "msg: %s", err.msg);
    int32_t got[40];
    ck_assert_uint_eq(shard_read(&s, 10, 20, got), 7);   /* token 17 = index 7 of the read */
    ck_assert_uint_eq(shard_read(&s, 18, 20, got), 20);
    shard_close(&s);
    /* and shard_write refuses ids outside the vocab, naming the index */
    ids[5] = 1000;
    ck_assert_int_eq(shard_write(path, ids, 40, 1000, 0, &err), -1);
    ck_assert_msg(strstr(err.msg, "token 5") != NULL, "msg: %s", err.msg);
    ids[5] = -1;
    ck_assert_int_eq(shard_write(path, ids, 40, 1000, 0, &err), -1);
    ids[5] = 5;
    ck_assert_int_eq(shard_write(path, ids, 40, 0, 0, &err), -1);
    ck_assert_msg(strstr(err.msg, "vocab_size 0") != NULL, "msg: %s", err.msg);
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
    ck_assert_msg(encode_files(&t, paths, 2, REC_AUTO, 0, out, NULL, NULL, &err) == 0, "%s",
                  err.msg);
    Shard s;
    ck_assert_msg(shard_open(&s, out, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(s.vocab_size, 270);
    ck_assert(s.tok_hash == tok_hash(&t));
    /* layout: tokens(a) EOT tokens(b) EOT; each part decodes to its file */
    size_t eots[2], k = 0;
    for (size_t i = 0; i < s.n_tokens; i++)
        if ((int)shard_token(&s, i) == tok_eot(&t)) { ck_assert_uint_lt(k, 2); eots[k++] = i; }
    ck_assert_uint_eq(k, 2);
    ck_assert_uint_eq(eots[1], s.n_tokens - 1);
    const char *want[2] = {ta, tb};
    size_t begin = 0;
    for (int d = 0; d < 2; d++) {
        int32_t ids[256];
        uint8_t text[256];
        size_t n = eots[d] - begin, m;
        ck_assert_uint_le(n, 256);
        for (size_t i = 0; i < n; i++) ids[i] = (int32_t)shard_token(&s, begin + i);
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
    ck_assert_int_eq(encode_files(&t, p1, 1, REC_AUTO, 0, out, NULL, NULL, &err), -1);
    char want[700];
    snprintf(want, sizeof want, "%s is empty", empty);
    ck_assert_msg(strstr(err.msg, want) != NULL, "msg: %s", err.msg);
    ck_assert(err.hint[0] != 0);
    const char *p2[1] = {missing};
    ck_assert_int_eq(encode_files(&t, p2, 1, REC_AUTO, 0, out, NULL, NULL, &err), -1);
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
        {"format1_opens", test_format1_opens},
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
