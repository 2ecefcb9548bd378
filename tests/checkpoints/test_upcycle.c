/* test_upcycle.c: sparse upcycling (checkpoints/upcycle.h) computes the dense model at
 * step 0, on the tiny model of upcycle_fixture.h.
 * - the invariant: a dense model saved with ckpt_save, upcycled (expert noise 0, G = 1) and
 *   loaded back computes the dense model's logits at step 0 (targets NULL, noise off);
 *   also through upcycle_into directly and with a router far from zero;
 * - granularity: E = G = K with a zero router computes the dense logits too, and so does
 *   K = G < E with the virtual-group router; K < G moves the function (printed);
 * - the upcycled file: no optimizer state, step 0, loader at the start, the dense tokenizer;
 * - shared experts: they start as the dense FFN's first Fs hidden units (bit for bit), the
 *   routed experts as slices of the rest, and the upcycled model computes the dense logits
 *   (G = 1 with any router; G = 2 with virtual groups; shared as wide as routed or not);
 *   through the file (upcycle_ckpt / the command line) too.
 * The expert layout, noise, refusals, config and command line are test_upcycle_init.c.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/blas.h"
#include "checkpoints/ckpt.h"
#include "checkpoints/upcycle.h"
#include "configs/config.h"
#include "layers/model.h"
#include "testutil.h"
#include "train/cmd_upcycle.h"
#include "train/train.h"

#include "upcycle_fixture.h"

/* ---- the step-0 invariant ---- */

START_TEST(test_upcycled_file_equals_dense) {
    Model dm;
    Config dc;
    save_dense(&dm, &dc);
    float *ref = moe_malloc(sizeof(float) * TN * TV), *lg = moe_malloc(sizeof(float) * TN * TV);
    logits_of(&dm, ref);
    char out[320];
    snprintf(out, sizeof out, "%s/moe.h5", g_dir);
    UpcycleOpts o = opts(1, 0.02f, 0.0f);
    MoeErr err;
    int rc = upcycle_ckpt(g_dense, out, 4, 2, &o, &err);
    ck_assert_msg(rc == 0, "upcycle_ckpt failed: %s", err.msg);

    /* load it the way a run would: config from the file, model built from it */
    Config mc;
    memset(&mc, 0, sizeof mc);
    ck_assert_int_eq(ckpt_read_config(out, &mc, &err), 0);
    ck_assert_int_eq(mc.moe.n_experts, 4);
    ck_assert_int_eq(mc.moe.top_k, 2);
    ck_assert_int_eq(mc.moe.hidden, 6);
    ck_assert_str_eq(mc.init.upcycle_from, g_dense);
    char diff[512];
    dc.moe.n_experts = 4;   /* only the MoE keys differ from the dense config */
    ck_assert_int_eq(config_diff_shape(&dc, &mc, diff, sizeof diff), 0);
    dc.moe.n_experts = 0;
    Model moe;
    build(&moe, &mc, 0, 4, 12345);
    CkptMeta meta;
    rc = ckpt_load(out, &moe, &meta, false, &err);
    ck_assert_msg(rc == 0, "load failed: %s", err.msg);
    logits_of(&moe, lg);
    double mx, mean, scale;
    diff_stats(lg, ref, &mx, &mean, &scale);
    ck_assert_msg(mx <= LOGIT_ATOL && scale > 0.1, "max |logit diff| %g (scale %g)", mx, scale);

    /* run state reset: no optimizer, step 0, loader at the start; dense tokenizer kept */
    ck_assert_int_eq(meta.step, 0);
    ck_assert_int_eq(meta.tokens_seen, 0);
    ck_assert(meta.loader_epoch == 0 && meta.loader_cursor == 0);
    ck_assert(meta.loader_windows == 99 && meta.tok_hash == 0x1234abcdULL);
    ck_assert(meta.seed == 4242);
    rc = ckpt_load(out, &moe, NULL, true, &err);
    ck_assert_int_eq(rc, -1);
    ck_assert_msg(strstr(err.msg, "no optimizer state") != NULL, "%s", err.msg);
    CkptInfo info;
    ck_assert_int_eq(ckpt_inspect(out, &info, &err), 0);
    ck_assert(!info.has_optimizer && info.n_optim == 0);
    ck_assert_int_eq(info.n_experts, 4);
    ckpt_info_free(&info);
    uint8_t *tb;
    size_t tn;
    ck_assert_int_eq(ckpt_read_tokenizer(out, &tb, &tn, &err), 0);
    ck_assert(tn == strlen("moetrain-bpe 1\nnot a real tokenizer, only bytes to store\n"));
    moe_free(tb);
    char tmp[400];
    snprintf(tmp, sizeof tmp, "%s.tokenizer.tmp", out);
    ck_assert_int_eq(access(tmp, F_OK), -1);   /* the temporary is gone */

    /* the router is N(0, 0.02) (not the model init), the noise router zeros */
    const float *r = moe.ps.p[moe.layer[0].router].t.data,
                *nz = moe.ps.p[moe.layer[1].noise].t.data;
    double ss = 0.0;
    for (int i = 0; i < 4 * 8; i++) {
        ss += (double)r[i] * (double)r[i];
        ck_assert(nz[i] == 0.0f);
    }
    double std = sqrt(ss / 32.0);
    ck_assert_msg(std > 0.01 && std < 0.035, "router std %g", std);   /* 32 draws of 0.02 */
    model_free(&moe);
    config_free(&mc);
    moe_free(ref);
    moe_free(lg);
    model_free(&dm);
    config_free(&dc);
}
END_TEST

START_TEST(test_g1_any_router_equals_dense) {
    Model dm;
    Config dc;
    save_dense(&dm, &dc);
    float *ref = moe_malloc(sizeof(float) * TN * TV);
    logits_of(&dm, ref);
    double mean;
    /* zero router (ties), the default and a large router (sharp, token-dependent routing):
     * identical experts make the choice irrelevant */
    const float S[3] = {0.0f, 0.02f, 3.0f};
    for (int i = 0; i < 3; i++) {
        double mx = upcycled_diff(&dc, ref, 4, 2, 1, S[i], 0.0f, &mean);
        ck_assert_msg(mx <= LOGIT_ATOL, "S=%g: max |logit diff| %g", (double)S[i], mx);
        mx = upcycled_diff(&dc, ref, 3, 1, 1, S[i], 0.0f, &mean);
        ck_assert_msg(mx <= LOGIT_ATOL, "K=1 S=%g: max |logit diff| %g", (double)S[i], mx);
    }
    moe_free(ref);
    model_free(&dm);
    config_free(&dc);
}
END_TEST

/* ---- granularity ---- */

START_TEST(test_granularity_all_slices_equals_dense) {
    Model dm;
    Config dc;
    save_dense(&dm, &dc);
    float *ref = moe_malloc(sizeof(float) * TN * TV);
    logits_of(&dm, ref);
    double mean;
    /* E = G = K, zero router: every slice selected with gate 1/G, scaled back by G */
    double mx = upcycled_diff(&dc, ref, 3, 3, 3, 0.0f, 0.0f, &mean);
    ck_assert_msg(mx <= LOGIT_ATOL, "E=G=K=3: max |logit diff| %g", mx);
    mx = upcycled_diff(&dc, ref, 2, 2, 2, 0.0f, 0.0f, &mean);
    ck_assert_msg(mx <= LOGIT_ATOL, "E=G=K=2: max |logit diff| %g", mx);
    mx = upcycled_diff(&dc, ref, 6, 6, 6, 0.0f, 0.0f, &mean);
    ck_assert_msg(mx <= LOGIT_ATOL, "E=G=K=6 (slices of width 1): max |logit diff| %g", mx);
    /* K = G < E with the virtual-group router (rows shared within a copy): each token picks
     * one whole copy (ties within a group, distinct across groups) */
    mx = upcycled_diff(&dc, ref, 6, 3, 3, 0.5f, 0.0f, &mean);
    ck_assert_msg(mx <= LOGIT_ATOL, "E=6 G=K=3 virtual groups: max |logit diff| %g", mx);
    /* the unscaled slices would be off by far more: a wrong scale must fail this test */
    mx = upcycled_diff(&dc, ref, 3, 2, 3, 0.0f, 0.0f, &mean);
    ck_assert_msg(mx > 1e-3, "K < G should move the function, max diff %g", mx);
    moe_free(ref);
    model_free(&dm);
    config_free(&dc);
}
END_TEST

/* How far K < G moves the function (reported, not a pass/fail bound beyond finiteness):
 * printed for docs/upcycling.md. */
START_TEST(test_granularity_k_below_g_reported) {
    Model dm;
    Config dc;
    save_dense(&dm, &dc);
    float *ref = moe_malloc(sizeof(float) * TN * TV);
    logits_of(&dm, ref);
    double scale = 0.0;
    for (int i = 0; i < TN * TV; i++)
        if (fabs((double)ref[i]) > scale) scale = fabs((double)ref[i]);
    const int cfg[][3] = {{2, 1, 2}, {3, 1, 3}, {3, 2, 3}, {6, 2, 3}, {4, 1, 2}, {6, 1, 2}};
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
        double mean, mx = upcycled_diff(&dc, ref, cfg[i][0], cfg[i][1], cfg[i][2], 0.02f,
                                        0.0f, &mean);
        ck_assert(isfinite(mx) && isfinite(mean));
        ck_assert_msg(mx > LOGIT_ATOL, "K < G should change the logits");
        printf("upcycle tiny E=%d K=%d G=%d S=0.02: max |dlogit| %.4g, mean %.4g (max |logit| "
               "%.3g)\n", cfg[i][0], cfg[i][1], cfg[i][2], mx, mean, scale);
    }
    moe_free(ref);
    model_free(&dm);
    config_free(&dc);
}
END_TEST

/* ---- shared experts ---- */

/* Upcycle g_dense into an MoE with ns shared experts of width sh (E, K, G, S) and return the
 * max abs logit difference to ref; also checks the shared weights are the dense FFN's first
 * ns*sh units bit for bit and expert 0 the next slice. */
static double upcycled_shared_diff(const Model *dm, const Config *dc, const float *ref, int E,
                                   int K, int G, int ns, int sh, float S) {
    Model moe;
    build_moe_shared(&moe, dc, E, K, G, ns, sh, 0, E);
    const int Fs = ns * sh, C = 8, Fd = 6, Fe = moe.s.F;
    ck_assert_int_eq(moe.s.Fs, Fs);
    UpcycleOpts o = opts(G, S, 0.0f);
    MoeErr err;
    int rc = upcycle_into(g_dense, &moe, &o, &err);
    ck_assert_msg(rc == 0, "upcycle_into failed: %s", err.msg);
    for (int l = 0; l < 2; l++) {
        const float *d1 = dm->ps.p[dm->layer[l].w1].t.data, *d2 = dm->ps.p[dm->layer[l].w2].t.data;
        const float *s1 = moe.ps.p[moe.layer[l].sw1].t.data, *s2 = moe.ps.p[moe.layer[l].sw2].t.data;
        const float *e1 = moe.ps.p[moe.layer[l].w1].t.data;
        ck_assert(!memcmp(s1, d1, sizeof(float) * (size_t)Fs * C));          /* rows [0, Fs) */
        for (int c = 0; c < C; c++)                                            /* cols [0, Fs) */
            ck_assert(!memcmp(s2 + c * Fs, d2 + c * Fd, sizeof(float) * (size_t)Fs));
        ck_assert(!memcmp(e1, d1 + (size_t)Fs * C, sizeof(float) * (size_t)Fe * C));
    }
    float *lg = moe_malloc(sizeof(float) * TN * TV);
    logits_of(&moe, lg);
    double mx, mean, scale;
    diff_stats(lg, ref, &mx, &mean, &scale);
    ck_assert(isfinite(mx) && scale > 0.1);
    moe_free(lg);
    model_free(&moe);
    return mx;
}

START_TEST(test_shared_experts_equal_dense) {
    Model dm;
    Config dc;
    save_dense(&dm, &dc);
    float *ref = moe_malloc(sizeof(float) * TN * TV);
    logits_of(&dm, ref);
    /* G = 1: shared = the first units, every expert = the rest: exact for any router */
    const float S[2] = {0.02f, 3.0f};
    for (int i = 0; i < 2; i++) {
        double mx = upcycled_shared_diff(&dm, &dc, ref, 4, 2, 1, 1, 2, S[i]);
        ck_assert_msg(mx <= LOGIT_ATOL, "1 shared x 2, S=%g: max |logit diff| %g", (double)S[i], mx);
        mx = upcycled_shared_diff(&dm, &dc, ref, 3, 1, 1, 2, 1, S[i]);
        ck_assert_msg(mx <= LOGIT_ATOL, "2 shared x 1, K=1: max |logit diff| %g", mx);
    }
    /* G = 2 = K with virtual groups, shared as wide as a routed slice: 6 = 2 + 2 x 2 */
    double mx = upcycled_shared_diff(&dm, &dc, ref, 4, 2, 2, 1, 2, 0.5f);
    ck_assert_msg(mx <= LOGIT_ATOL, "G=2 + shared: max |logit diff| %g", mx);
    /* the contrast: without the shared part the routed slices alone are not the dense FFN */
    Model moe;
    build_moe_shared(&moe, &dc, 4, 2, 1, 1, 2, 0, 4);
    UpcycleOpts o = opts(1, 0.02f, 0.0f);
    MoeErr err;
    ck_assert_int_eq(upcycle_into(g_dense, &moe, &o, &err), 0);
    for (int l = 0; l < 2; l++) {
        Tensor *s2 = &moe.ps.p[moe.layer[l].sw2].t;
        memset(s2->data, 0, sizeof(float) * s2->n);
    }
    float *lg = moe_malloc(sizeof(float) * TN * TV);
    logits_of(&moe, lg);
    double mean, scale;
    diff_stats(lg, ref, &mx, &mean, &scale);
    ck_assert_msg(mx > 1e-3, "dropping the shared part should move the function (%g)", mx);
    moe_free(lg);
    model_free(&moe);

    /* through the file: upcycle_ckpt with 1 shared expert as wide as the routed ones
     * (6 = (1 + G=2) x 2), then loaded the way a run would */
    char out[320];
    snprintf(out, sizeof out, "%s/moe_shared.h5", g_dir);
    o = opts(2, 0.02f, 0.0f);
    o.n_shared = 1;
    ck_assert_msg(upcycle_ckpt(g_dense, out, 4, 2, &o, &err) == 0, "%s", err.msg);
    Config mc;
    memset(&mc, 0, sizeof mc);
    ck_assert_int_eq(ckpt_read_config(out, &mc, &err), 0);
    ck_assert(mc.moe.n_shared_experts == 1 && mc.moe.shared_hidden == 0 && mc.moe.hidden == 2);
    build(&moe, &mc, 0, 4, 5);
    ck_assert_int_eq(moe.s.Fs, 2);
    ck_assert_int_eq(ckpt_load(out, &moe, NULL, false, &err), 0);
    lg = moe_malloc(sizeof(float) * TN * TV);
    logits_of(&moe, lg);
    diff_stats(lg, ref, &mx, &mean, &scale);
    ck_assert_msg(mx <= LOGIT_ATOL, "upcycled file with shared experts: %g", mx);
    moe_free(lg);
    model_free(&moe);
    config_free(&mc);
    /* widths that do not divide: 6 = 1 x FS + G x F has no solution for G = 4, FS = 0 */
    o = opts(4, 0.02f, 0.0f);
    o.n_shared = 1;
    ck_assert_int_eq(upcycle_ckpt(g_dense, out, 4, 2, &o, &err), -1);
    ck_assert_msg(strstr(err.msg, "does not split into 1 shared + 4 routed"), "%s", err.msg);
    o.shared_hidden = 3;   /* 6 - 3 = 3 units for G = 4: no */
    ck_assert_int_eq(upcycle_ckpt(g_dense, out, 4, 2, &o, &err), -1);
    ck_assert_msg(strstr(err.msg, "leaves 3 units"), "%s", err.msg);
    moe_free(ref);
    model_free(&dm);
    config_free(&dc);
}
END_TEST

static Suite *upcycle_suite(void) {
    Suite *s = suite_create("upcycle");
    TCase *tc;
    tc = tcase_create("step0_equals_dense");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_upcycled_file_equals_dense);
    tcase_add_test(tc, test_g1_any_router_equals_dense);
    suite_add_tcase(s, tc);
    tc = tcase_create("granularity");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_granularity_all_slices_equals_dense);
    tcase_add_test(tc, test_granularity_k_below_g_reported);
    suite_add_tcase(s, tc);
    tc = tcase_create("shared_experts");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_shared_experts_equal_dense);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    SRunner *sr = srunner_create(upcycle_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
