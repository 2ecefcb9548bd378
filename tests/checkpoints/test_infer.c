/* test_infer.c: a model read back for inference, on the tiny model of export_fixture.h.
 * - corrupt safetensors/GGUF files (truncated, bad header length, overlapping offsets,
 *   wrong magic) fail with a message naming the problem;
 * - the KV-cache path (layers/infer.h) matches model_forward; with a sliding window the cache
 *   is a ring of W positions and still matches the full forward on a sequence 8x longer
 *   than W (prefills shorter and longer than W, single steps, shared experts on).
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hdf5.h>

#include "autograd/blas.h"
#include "checkpoints/export.h"
#include "checkpoints/gguf.h"
#include "checkpoints/safetensors.h"
#include "core/fs.h"
#include "layers/infer.h"
#include "testutil.h"

#include "export_fixture.h"

/* ---------------------------------------------------------------- corruption */

START_TEST(test_corrupt_files) {
    Config c;
    Model m;
    memset(&c, 0, sizeof c);
    save_ref(&m, &c, 4);
    char out[400], p[500], bad[500];
    MoeErr err;
    snprintf(out, sizeof out, "%s/hf", g_dir);
    ExportHfOptions o = {ST_F32, 0, false};
    ck_assert(export_hf(g_ckpt, out, &o, &err) == 0);
    snprintf(p, sizeof p, "%s/model.safetensors", out);
    uint8_t *buf;
    size_t n;
    ck_assert(fs_read_file(p, &buf, &n, &err) == 0);
    snprintf(bad, sizeof bad, "%s/bad.safetensors", g_dir);
    StFile sf;
    /* Truncated by one byte: the tensors no longer tile the data section. */
    write_bytes(bad, buf, n - 1);
    ck_assert_int_eq(st_open(&sf, bad, &err), -1);
    ck_assert_msg(strstr(err.msg, "bad.safetensors") && strstr(err.msg, "outside"), "%s", err.msg);
    st_close(&sf);
    /* Header length larger than the file. */
    uint8_t save0 = buf[5];
    buf[5] = 0x7f;
    write_bytes(bad, buf, n);
    ck_assert_int_eq(st_open(&sf, bad, &err), -1);
    ck_assert_msg(strstr(err.msg, "header length"), "%s", err.msg);
    st_close(&sf);
    buf[5] = save0;
    /* Shift one tensor's offsets ("data_offsets":[0, -> [4,): overlap/hole detected. */
    char *hdr = (char *)buf + 8;
    char *at = strstr(hdr, "\"data_offsets\":[0,");
    ck_assert_ptr_nonnull(at);
    at[16] = '4';
    write_bytes(bad, buf, n);
    ck_assert_int_eq(st_open(&sf, bad, &err), -1);
    ck_assert_msg(strstr(err.msg, "data_offsets") || strstr(err.msg, "hole"), "%s", err.msg);
    st_close(&sf);
    /* Three bytes: too short. */
    write_bytes(bad, buf, 3);
    ck_assert_int_eq(st_open(&sf, bad, &err), -1);
    st_close(&sf);
    moe_free(buf);

    /* GGUF: truncated in the tensor data, in the header, and a wrong magic. */
    snprintf(p, sizeof p, "%s/m.gguf", g_dir);
    ck_assert(export_gguf(g_ckpt, p, GGML_F32, &err) == 0);
    ck_assert(fs_read_file(p, &buf, &n, &err) == 0);
    snprintf(bad, sizeof bad, "%s/bad.gguf", g_dir);
    GgufFile gf;
    write_bytes(bad, buf, n - 100);
    ck_assert_int_eq(gguf_open(&gf, bad, &err), -1);
    ck_assert_msg(strstr(err.msg, "truncated"), "%s", err.msg);
    gguf_close(&gf);
    write_bytes(bad, buf, 200);
    ck_assert_int_eq(gguf_open(&gf, bad, &err), -1);
    ck_assert_msg(strstr(err.msg, "truncated"), "%s", err.msg);
    gguf_close(&gf);
    buf[0] = 'X';
    write_bytes(bad, buf, n);
    ck_assert_int_eq(gguf_open(&gf, bad, &err), -1);
    ck_assert_msg(strstr(err.msg, "not a GGUF"), "%s", err.msg);
    gguf_close(&gf);
    moe_free(buf);
    model_free(&m);
    config_free(&c);
}
END_TEST

/* ---------------------------------------------------------------- KV cache */

START_TEST(test_infer_matches_forward) {
    for (int E = 0; E <= 4; E += 4) {
        Config c;
        Model m;
        memset(&c, 0, sizeof c);
        save_ref(&m, &c, E);
        float *ref = moe_malloc(sizeof(float) * 12 * 300), *got = moe_malloc(sizeof(float) * 12 * 300);
        logits_of(&m, IDS, 12, ref);
        /* Prefill 5 tokens, then 7 single steps. */
        InferCache ic;
        infer_init(&ic, &m, 12);
        infer_step(&ic, &m, IDS, 5, got);
        for (int i = 5; i < 12; i++) infer_step(&ic, &m, IDS + i, 1, got + (size_t)i * 300);
        /* Same kernels except attention's summation order: float32 rounding differences of
         * ~1e-6 relative on logits of O(1)..O(10). */
        double e = tt_max_err(got, ref, 12 * 300, 1e-4, 1e-4);
        ck_assert_msg(e <= 1.0, "E=%d: KV-cache logits differ from model_forward (%g)", E, e);
        /* A reset cache reproduces the same numbers. */
        infer_reset(&ic);
        infer_step(&ic, &m, IDS, 12, got);
        ck_assert(tt_max_err(got, ref, 12 * 300, 1e-4, 1e-4) <= 1.0);
        infer_free(&ic);
        moe_free(ref);
        moe_free(got);
        model_free(&m);
        config_free(&c);
    }
}
END_TEST

/* Sliding window: the cache is a ring of W positions (memory W, not the sequence length)
 * and RoPE positions keep counting, yet every position's logits equal model_forward's over
 * the whole sequence (the forward's own window mask is the reference; it is tested against
 * a naive reference in test_attention.c). 40 tokens with W = 5: prefills of 3 (< W) and
 * 13 (> W, so the prefill's own early keys are evicted from the ring while later queries
 * of the same step still need them) followed by single steps, and one 40-token prefill.
 * MoE with shared experts and the dense model. Tolerance as test_infer_matches_forward:
 * the same kernels but attention's summation order, ~1e-6 relative on logits of O(1..10),
 * so 1e-4 + 1e-4 relative; a wrong slot or an off-by-one window changes logits by O(0.1). */
START_TEST(test_infer_window_ring) {
    enum { NT = 40, WIN = 5 };
    int32_t ids[NT];
    for (int i = 0; i < NT; i++) ids[i] = IDS[(i * 7) % 12];
    const int cfg[][2] = {{4, 2}, {0, 0}};   /* {E, n_shared} */
    for (int ci = 0; ci < 2; ci++) {
        Config c;
        memset(&c, 0, sizeof c);
        tiny_config(&c, cfg[ci][0]);
        c.model.sliding_window = WIN;
        c.moe.n_shared_experts = cfg[ci][1];
        ModelShape s;
        config_model_shape(&c, &s);
        ck_assert_int_eq(s.W, WIN);
        Model m;
        model_init(&m, &s, 0, s.E, 7);
        MoeRng r;
        rng_seed(&r, 99);
        for (int b = 0; b < PBLOCK_COUNT; b++)
            for (size_t i = 0; i < m.ps.blocks[b].n; i++)
                m.ps.blocks[b].data[i] = 0.3f * rng_normal(&r);
        m.s.router_noise = false;
        float *ref = moe_malloc(sizeof(float) * NT * 300), *got = moe_malloc(sizeof(float) * NT * 300);
        logits_of(&m, ids, NT, ref);
        const int prefill[3] = {3, 13, NT};
        for (int pi = 0; pi < 3; pi++) {
            InferCache ic;
            infer_init(&ic, &m, 2);   /* max_T is no limit with a window */
            ck_assert_int_eq(ic.cap, WIN);
            infer_step(&ic, &m, ids, prefill[pi], got);
            for (int i = prefill[pi]; i < NT; i++)
                infer_step(&ic, &m, ids + i, 1, got + (size_t)i * 300);
            ck_assert_int_eq(ic.pos, NT);
            double e = tt_max_err(got, ref, (size_t)NT * 300, 1e-4, 1e-4);
            ck_assert_msg(e <= 1.0, "E=%d prefill %d: ring-cache logits differ from the "
                          "windowed forward (%g)", cfg[ci][0], prefill[pi], e);
            infer_free(&ic);
        }
        /* the window matters here: the full-causal model gives other logits after W */
        m.s.W = 0;
        float *full = moe_malloc(sizeof(float) * NT * 300);
        logits_of(&m, ids, NT, full);
        /* First W positions: the same attention. Not bit for bit: the other positions
         * route elsewhere, so the expert products run over other row counts, and OpenBLAS
         * may pick another kernel by size (its SkylakeX small-matrix kernels do), which
         * rounds differently: within 1e-5 absolute + 1e-5 relative, fifty times the
         * largest difference seen (2e-7 on logits of O(1), SkylakeX kernels); the window
         * changes later logits by more than 1e-3 (next assertion). */
        double e0 = tt_max_err(full, ref, (size_t)WIN * 300, 1e-5, 1e-5);
        ck_assert_msg(e0 <= 1.0, "first %d positions differ with and without the window (%g)",
                      WIN, e0);
        ck_assert_double_gt(tt_max_err(full + WIN * 300, ref + WIN * 300,
                                       (size_t)(NT - WIN) * 300, 1e-3, 0), 1.0);
        moe_free(full);
        moe_free(ref);
        moe_free(got);
        model_free(&m);
        config_free(&c);
    }
}
END_TEST

static Suite *infer_suite(void) {
    Suite *s = suite_create("infer");
    struct { const char *name; const TTest *fn; } cases[] = {
        {"corrupt_files", test_corrupt_files},
        {"infer_matches_forward", test_infer_matches_forward},
        {"infer_window_ring", test_infer_window_ring},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, cases[i].fn);
        tcase_set_timeout(tc, 60);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    SRunner *sr = srunner_create(infer_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
