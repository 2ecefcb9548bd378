/* test_fuzz_regressions.c: inputs from outside that a parser must handle, each first
 * produced by a fuzzer in tests/fuzz/ (the inputs are also in
 * tests/fuzz/corpus/<target>/crash-*), checked in the ordinary (gcc, non-fuzz) test build:
 * - config: config_to_yaml quotes U+0085, U+2028/2029 (libyaml folds them as line breaks
 *   inside double quotes), C1 controls and U+FFFE (libyaml refuses them raw), so every
 *   config stored in a checkpoint reads back (fuzz_config's round-trip check);
 * - ckpt: a root attribute with more than one element is refused, never read by H5Aread
 *   into a single int64 (fuzz_ckpt);
 * - ckpt: a byte or float dataset declaring 2^40 elements that were never written (a few
 *   hundred bytes of file) is refused before anything the size of the declaration is
 *   allocated (fuzz_ckpt);
 * - tokenizer: tok_load_buffer on an empty buffer fails cleanly (never hands NULL to
 *   memchr);
 * - gguf: a key repeated with another type is refused, naming it (fuzz_gguf).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hdf5.h>

#include "autograd/blas.h"
#include "checkpoints/ckpt.h"
#include "checkpoints/gguf.h"
#include "data/tokenizer.h"
#include "configs/config.h"
#include "train/train.h"

/* ---- config: every string survives config_to_yaml -> config_load_text ---- */

START_TEST(test_config_quoted_roundtrip) {
    static const char *const cases[] = {
        "a\xc2\x85" "b",                      /* U+0085 NEL */
        "a\xe2\x80\xa8" "b\xe2\x80\xa9" "c",  /* U+2028, U+2029 */
        "\xc2\x80x\xc2\x9f",                  /* C1 controls */
        "\xef\xbb\xbf\xef\xbf\xbe\xef\xbf\xbf", /* U+FEFF, U+FFFE, U+FFFF */
        "tab\tq\"b\\s\x7f",
        "\xf0\x9f\x98\x80\xc3\xa9 \xe6\x9d\xb1",  /* plain UTF-8 passes through */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Config c, back;
        config_defaults(&c);
        c.data.tokenizer = moe_strdup(cases[i]);
        char *yaml = config_to_yaml(&c);
        MoeErr err;
        ck_assert_msg(config_load_text(&back, yaml, strlen(yaml), "rt.yaml", &err) == 0,
                      "case %zu: %s\n%s", i, err.msg, yaml);
        ck_assert_msg(strcmp(back.data.tokenizer, cases[i]) == 0, "case %zu changed", i);
        moe_free(yaml);
        config_free(&back);
        config_free(&c);
    }
    /* Not UTF-8 at all (a config name from a Latin-1 file name): still loads back. */
    Config c, back;
    config_defaults(&c);
    c.data.tokenizer = moe_strdup("caf\xe9");
    char *yaml = config_to_yaml(&c);
    MoeErr err;
    ck_assert_msg(config_load_text(&back, yaml, strlen(yaml), "rt.yaml", &err) == 0, "%s",
                  err.msg);
    ck_assert_str_eq(back.data.tokenizer, "caf\xc3\xa9");
    moe_free(yaml);
    config_free(&back);
    config_free(&c);
}
END_TEST

/* ---- checkpoints: a tiny valid file, then one hostile edit per test ---- */

static char g_dir[64], g_tok[128], g_ref[128], g_bad[128];

static void ckpt_setup(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/moe_fuzzreg_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(g_dir));
    snprintf(g_tok, sizeof g_tok, "%s/tok.bpe", g_dir);
    snprintf(g_ref, sizeof g_ref, "%s/ref.h5", g_dir);
    snprintf(g_bad, sizeof g_bad, "%s/bad.h5", g_dir);
    MoeErr err;
    Tokenizer t;
    const uint8_t *text = (const uint8_t *)"aaaa";
    size_t n = 4;
    ck_assert_msg(tok_train_buffers(&t, &text, &n, 1, 258, &err) == 0, "%s", err.msg);
    ck_assert_msg(tok_save(&t, g_tok, &err) == 0, "%s", err.msg);
    tok_free(&t);
    Config c;
    config_defaults(&c);
    c.model.vocab_size = 258;
    c.model.dim = 8;
    c.model.n_layers = 1;
    c.model.n_heads = 2;
    c.model.n_kv_heads = 1;
    c.model.head_dim = 4;
    c.moe.n_experts = 2;
    c.moe.top_k = 1;
    c.moe.hidden = 6;
    c.data.tokenizer = moe_strdup(g_tok);
    ModelShape s;
    config_model_shape(&c, &s);
    Model m;
    model_init(&m, &s, 0, 2, 1);
    CkptMeta meta = {.step = 3};
    ck_assert_msg(ckpt_save(g_ref, &c, &m, &meta, g_tok, true, &err) == 0, "%s", err.msg);
    model_free(&m);
    config_free(&c);
}

static void ckpt_teardown(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
}

/* A copy of the reference file at g_bad, open for writing. */
static hid_t open_copy(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", g_ref, g_bad);
    ck_assert_int_eq(system(cmd), 0);
    hid_t f = H5Fopen(g_bad, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert(f >= 0);
    return f;
}

START_TEST(test_ckpt_attr_not_scalar) {
    hid_t f = open_copy();
    ck_assert(H5Adelete(f, "step") >= 0);
    hsize_t n = 40;
    int64_t vals[40] = {0};
    hid_t sp = H5Screate_simple(1, &n, NULL);
    hid_t a = H5Acreate2(f, "step", H5T_NATIVE_INT64, sp, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert(a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, vals) >= 0);
    H5Aclose(a);
    /* and "magic" as three strings of 20 bytes */
    ck_assert(H5Adelete(f, "magic") >= 0);
    hsize_t three = 3;
    hid_t sp3 = H5Screate_simple(1, &three, NULL), st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, 20);
    char strs[3][20] = {"moetrain-checkpoint", "x", "y"};
    a = H5Acreate2(f, "magic", st, sp3, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert(a >= 0 && H5Awrite(a, st, strs) >= 0);
    H5Aclose(a);
    H5Tclose(st);
    H5Sclose(sp3);
    H5Sclose(sp);
    H5Fclose(f);
    MoeErr err;
    ck_assert_msg(ckpt_seal(g_bad, &err) == 0, "%s", err.msg);   /* past the digest */
    CkptMeta meta;
    ck_assert_int_eq(ckpt_read_meta(g_bad, &meta, &err), -1);
    ck_assert_msg(strstr(err.msg, "'magic'") && strstr(err.msg, "not a readable string"),
                  "got: %s", err.msg);
    /* put magic back: now the vector "step" is what is wrong */
    f = H5Fopen(g_bad, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert(H5Adelete(f, "magic") >= 0);
    H5Fclose(f);
    f = H5Fopen(g_bad, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t s1 = H5Screate(H5S_SCALAR), t1 = H5Tcopy(H5T_C_S1);
    H5Tset_size(t1, sizeof CKPT_MAGIC);
    a = H5Acreate2(f, "magic", t1, s1, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert(a >= 0 && H5Awrite(a, t1, CKPT_MAGIC) >= 0);
    H5Aclose(a);
    H5Tclose(t1);
    H5Sclose(s1);
    H5Fclose(f);
    ck_assert_msg(ckpt_seal(g_bad, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(ckpt_read_meta(g_bad, &meta, &err), -1);
    ck_assert_msg(strstr(err.msg, "'step'") && strstr(err.msg, "not a single integer"),
                  "got: %s", err.msg);
    ck_assert(err.hint[0]);
}
END_TEST

START_TEST(test_ckpt_declared_size) {
    hid_t f = open_copy();
    ck_assert(H5Ldelete(f, "config", H5P_DEFAULT) >= 0);
    hsize_t dims = (hsize_t)1 << 40, chunk = 1024;
    hid_t sp = H5Screate_simple(1, &dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &chunk);
    hid_t ds = H5Dcreate2(f, "config", H5T_STD_U8LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    ck_assert(ds >= 0);  /* nothing written: the file stays small */
    H5Dclose(ds);
    H5Pclose(dcpl);
    H5Sclose(sp);
    H5Fclose(f);
    MoeErr err;
    ck_assert_msg(ckpt_seal(g_bad, &err) == 0, "%s", err.msg);
    Config c;
    ck_assert_int_eq(ckpt_read_config(g_bad, &c, &err), -1);
    ck_assert_msg(strstr(err.msg, "'config'") && strstr(err.msg, "declares shape"),
                  "got: %s", err.msg);
    CkptInfo info;
    ck_assert_int_eq(ckpt_inspect(g_bad, &info, &err), -1);
    ckpt_info_free(&info);
    /* the untouched reference still reads */
    ck_assert_msg(ckpt_read_config(g_ref, &c, &err) == 0, "%s", err.msg);
    config_free(&c);
    ck_assert_msg(ckpt_inspect(g_ref, &info, &err) == 0, "%s", err.msg);
    ckpt_info_free(&info);
}
END_TEST

/* ---- tokenizer ---- */

START_TEST(test_tok_load_buffer_edges) {
    Tokenizer t;
    MoeErr err;
    ck_assert_int_eq(tok_load_buffer(&t, NULL, 0, "empty.bpe", &err), -1);
    ck_assert_msg(strstr(err.msg, "empty.bpe:1: file is empty"), "got: %s", err.msg);
    /* a complete file with no NUL after it (the buffer API promises not to need one) */
    static const char file[] = "moetrain-bpe 1\nvocab_size 258\nspecial 257 <|endoftext|>\n"
                               "merges 1\n97 97\n";
    size_t n = sizeof file - 1;
    uint8_t *exact = malloc(n);
    ck_assert_ptr_nonnull(exact);
    memcpy(exact, file, n);
    ck_assert_msg(tok_load_buffer(&t, exact, n, "exact.bpe", &err) == 0, "%s", err.msg);
    ck_assert_int_eq(tok_vocab_size(&t), 258);
    tok_free(&t);
    free(exact);
}
END_TEST

/* ---- gguf: a repeated key is refused, naming it ---- */

START_TEST(test_gguf_duplicate_key) {
    char dir[] = "/tmp/moe_fuzzreg_XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/dup.gguf", dir);
    GgufWriter w;
    gguf_w_init(&w, 32);
    gguf_w_u32(&w, "general.k", 7);
    const char *strs[2] = {"a", "b"};
    gguf_w_arr_str(&w, "general.k", strs, 2);
    MoeErr err;
    ck_assert_msg(gguf_w_save(&w, path, &err) == 0, "%s", err.msg);
    gguf_w_free(&w);
    GgufFile f;
    memset(&f, 0, sizeof f);
    ck_assert_int_eq(gguf_open(&f, path, &err), -1);
    ck_assert_msg(strstr(err.msg, "key 'general.k' appears twice"), "got: %s", err.msg);
    gguf_close(&f);
    unlink(path);
    rmdir(dir);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("fuzz_regressions");
    TCase *tc = tcase_create("config_quoted_roundtrip");
    tcase_add_test(tc, test_config_quoted_roundtrip);
    suite_add_tcase(s, tc);
    tc = tcase_create("ckpt_attr_not_scalar");
    tcase_add_checked_fixture(tc, ckpt_setup, ckpt_teardown);
    tcase_add_test(tc, test_ckpt_attr_not_scalar);
    suite_add_tcase(s, tc);
    tc = tcase_create("ckpt_declared_size");
    tcase_add_checked_fixture(tc, ckpt_setup, ckpt_teardown);
    tcase_add_test(tc, test_ckpt_declared_size);
    suite_add_tcase(s, tc);
    tc = tcase_create("tok_load_buffer_edges");
    tcase_add_test(tc, test_tok_load_buffer_edges);
    suite_add_tcase(s, tc);
    tc = tcase_create("gguf_duplicate_key");
    tcase_add_test(tc, test_gguf_duplicate_key);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    SRunner *r = srunner_create(suite());
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
