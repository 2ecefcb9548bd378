/* test_ops_router_loss.c: the router losses of autograd/ops_router_loss.c: op_load_balance
 * (values at uniform and skewed routing, f copied, central differences) and op_zloss
 * (a hand computation, central differences), and both bit for bit against their serial
 * row loops written out. (op_router_entropy: test_ops_route.c, with the top-p gate.)
 */
#include "ops_moe_test.h"

#include "autograd/blas.h"
#include "core/pool.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------- load balance ---------------- */

START_TEST(test_load_balance_values) {
    const float coef = 0.01f;
    Tape tape;
    tape_init(&tape, 1 << 16);
    /* Perfectly uniform routing: p_ni = 1/E and f_i = 1/E, scale = coef E / N:
     * coef E/N * sum_i (1/E) * N (1/E) = coef * E * E (1/E^2) = coef. */
    {
        const int N = 8, E = 4;
        Tensor *lg = tt_tensor2(N, E, TENSOR_CONST, "logits");
        for (size_t j = 0; j < lg->n; j++) lg->data[j] = 0.7f;
        float f[4] = {0.25f, 0.25f, 0.25f, 0.25f};
        tape_reset(&tape, false);
        Tensor *out = op_load_balance(&tape, lg, f, coef * (float)E / (float)N);
        /* float32 result of a double sum: 1e-6 absolute is ~100 ulps of 0.01 */
        ck_assert_msg(fabs((double)out->data[0] - (double)coef) <= 1e-6, "uniform: %.9g",
                      (double)out->data[0]);
        tt_free(lg);
    }
    /* N = 2, E = 2, logits [[0, 0], [ln 3, 0]]: p_0 = (1/2, 1/2), p_1 = (3/4, 1/4);
     * P = sum_n p_n = (5/4, 3/4); f = (3/4, 1/4): sum_i f_i P_i = 15/16 + 3/16 = 9/8;
     * scale = coef E / N = coef, so out = 9/8 coef. */
    {
        Tensor *lg = tt_tensor2(2, 2, TENSOR_CONST, "logits");
        const float v[4] = {0.0f, 0.0f, logf(3.0f), 0.0f};
        memcpy(lg->data, v, sizeof v);
        float f[2] = {0.75f, 0.25f};
        tape_reset(&tape, false);
        Tensor *out = op_load_balance(&tape, lg, f, coef);
        /* ln 3 rounded to float32 perturbs p by ~1e-8; 1e-7 on 0.01125 is ~10 ulps */
        ck_assert_msg(fabs((double)out->data[0] - 1.125 * (double)coef) <= 1e-7, "hand: %.9g",
                      (double)out->data[0]);
        tt_free(lg);
    }
    tape_free(&tape);
}
END_TEST

typedef struct LbCtx { const float *f; float scale; } LbCtx;

static Tensor *build_lb(Tape *t, Tensor **in, void *ctx) {
    LbCtx *c = ctx;
    return op_load_balance(t, in[0], c->f, c->scale);
}

START_TEST(test_load_balance_copies_f) {
    /* f is copied at forward time: the caller may reuse its buffer before backward. */
    Tensor *lg = tt_tensor2(3, 3, TENSOR_PARAM, "logits");
    tt_fill_normal(lg, 61, 1.0f);
    float f[3] = {0.5f, 0.3f, 0.2f};
    float keep[9];
    Tape tape;
    tape_init(&tape, 1 << 16);
    for (int pass = 0; pass < 2; pass++) {
        memset(lg->grad, 0, sizeof(float) * lg->n);
        tape_reset(&tape, true);
        Tensor *out = op_load_balance(&tape, lg, f, 0.7f);
        if (pass == 1) f[0] = f[1] = f[2] = 9.0f;   /* clobber the caller's copy */
        tape_backward(&tape, out, NULL);
        if (pass == 0) memcpy(keep, lg->grad, sizeof keep);
        else f[0] = 0.5f, f[1] = 0.3f, f[2] = 0.2f;
    }
    for (int j = 0; j < 9; j++)
        ck_assert_msg(lg->grad[j] == keep[j], "backward read the caller's f (elt %d)", j);
    tape_free(&tape);
    tt_free(lg);
}
END_TEST

START_TEST(test_load_balance_grad) {
    const int N = 5, E = 4;
    Tensor *lg = tt_tensor2(N, E, TENSOR_PARAM, "logits");
    tt_fill_normal(lg, 60, 1.0f);
    const float f[4] = {0.4f, 0.1f, 0.3f, 0.2f};
    LbCtx c = {f, 0.5f};
    /* one smooth scalar of size ~1: truncation h^2 |f'''| / 6 ~ 1e-5, rounding
     * eps_f32 |f| / h ~ 6e-6; 1e-4 absolute plus 1e-3 relative */
    int bad = tt_check_grad(build_lb, &c, &lg, 1, 1e-2f, 1e-4, 1e-3, "load_balance");
    ck_assert_int_eq(bad, 0);
    tt_free(lg);
}
END_TEST

/* ---------------- z-loss ---------------- */

START_TEST(test_zloss_value) {
    /* N = 2, E = 2, logits [[0, 0], [ln 3, 0]]: lse_0 = ln(1 + 1) = ln 2,
     * lse_1 = ln(3 + 1) = ln 4 = 2 ln 2. scale = coef / N:
     * out = coef (ln^2 2 + 4 ln^2 2) / 2 = 2.5 coef ln^2 2. */
    const float coef = 0.001f;
    Tensor *lg = tt_tensor2(2, 2, TENSOR_CONST, "logits");
    const float v[4] = {0.0f, 0.0f, logf(3.0f), 0.0f};
    memcpy(lg->data, v, sizeof v);
    Tape tape;
    tape_init(&tape, 1 << 16);
    tape_reset(&tape, false);
    Tensor *out = op_zloss(&tape, lg, coef / 2.0f);
    const double want = 2.5 * (double)coef * log(2.0) * log(2.0);
    /* float32 ln 3 and scale: relative error ~1e-7; 1e-6 relative is ~10x that */
    ck_assert_msg(fabs((double)out->data[0] - want) <= 1e-6 * want, "zloss %.9g want %.9g",
                  (double)out->data[0], want);
    /* large logits must not overflow: lse of [100, 100] is 100 + ln 2 */
    const float big[4] = {100.0f, 100.0f, 100.0f, 100.0f};
    memcpy(lg->data, big, sizeof big);
    tape_reset(&tape, false);
    out = op_zloss(&tape, lg, 1.0f);
    const double lse = 100.0 + log(2.0);
    ck_assert_msg(fabs((double)out->data[0] - 2.0 * lse * lse) <= 1e-6 * 2.0 * lse * lse,
                  "zloss big %.9g", (double)out->data[0]);
    tape_free(&tape);
    tt_free(lg);
}
END_TEST

static Tensor *build_zloss(Tape *t, Tensor **in, void *ctx) {
    return op_zloss(t, in[0], *(const float *)ctx);
}

START_TEST(test_zloss_grad) {
    Tensor *lg = tt_tensor2(5, 4, TENSOR_PARAM, "logits");
    tt_fill_normal(lg, 70, 1.0f);
    float scale = 0.3f;
    /* smooth float32 scalar f ~ 3: truncation h^2 |f'''| / 6 ~ 1e-5; rounding one ulp of f
     * (2.4e-7) per evaluation / 2h = 1.2e-5 each. Observed worst 3e-5, so 1e-4 absolute
     * plus 1e-3 relative */
    int bad = tt_check_grad(build_zloss, &scale, &lg, 1, 1e-2f, 1e-4, 1e-3, "zloss");
    ck_assert_int_eq(bad, 0);
    tt_free(lg);
}
END_TEST


/* ---------------- row loops */

/* The router losses over N = 3000 rows of E = 8 (one thread: see ops_router_loss.c; the
 * load-balancing backward reads the forward's softmax rows instead of recomputing them),
 * bit for bit against the serial loops: per row the stable softmax (max subtracted, expf,
 * sum in double, times the float inverse) or logsumexp (exp in double), summed over rows
 * in order. Backward: the load-balancing gradient scale p (f - <f, p>), the z-loss
 * gradient 2 c lse p with p = expf(x - lse). */
START_TEST(test_router_losses_rows) {
    const int N = 3000, E = 8;
    Tensor *lg = tt_tensor2(N, E, TENSOR_PARAM, "logits");
    tt_fill_normal(lg, 98, 2.0f);
    fill_grad(lg, 99);
    float *gr0 = malloc(sizeof(float) * lg->n), *dlb = malloc(sizeof(float) * lg->n);
    float *dz = malloc(sizeof(float) * lg->n), *p = malloc(sizeof(float) * lg->n);
    float *lse = malloc(sizeof(float) * N);
    memcpy(gr0, lg->grad, sizeof(float) * lg->n);
    const float f[8] = {0.2f, 0.1f, 0.05f, 0.15f, 0.1f, 0.1f, 0.2f, 0.1f};
    const float lb_scale = 0.37f, z_scale = 0.013f, seed_lb = 1.5f, seed_z = -0.75f;
    /* load balance */
    double total = 0.0;
    for (int n = 0; n < N; n++) {
        const float *x = lg->data + (size_t)n * E;
        float *pr = p + (size_t)n * E;
        float mx = x[0];
        for (int j = 1; j < E; j++) mx = x[j] > mx ? x[j] : mx;
        double sum = 0.0;
        for (int j = 0; j < E; j++) {
            pr[j] = expf(x[j] - mx);
            sum += (double)pr[j];
        }
        const float inv = (float)(1.0 / sum);
        for (int j = 0; j < E; j++) pr[j] *= inv;
        for (int j = 0; j < E; j++) total += (double)f[j] * (double)pr[j];
    }
    const float lb_ref = (float)((double)lb_scale * total);
    memcpy(dlb, gr0, sizeof(float) * lg->n);
    const float clb = seed_lb * lb_scale;
    for (int n = 0; n < N; n++) {
        const float *pr = p + (size_t)n * E;
        double fp = 0.0;
        for (int j = 0; j < E; j++) fp += (double)f[j] * (double)pr[j];
        for (int j = 0; j < E; j++) dlb[(size_t)n * E + j] += clb * pr[j] * (f[j] - (float)fp);
    }
    /* z-loss */
    total = 0.0;
    for (int n = 0; n < N; n++) {
        const float *x = lg->data + (size_t)n * E;
        float mx = x[0];
        for (int j = 1; j < E; j++) mx = x[j] > mx ? x[j] : mx;
        double sum = 0.0;
        for (int j = 0; j < E; j++) sum += exp((double)(x[j] - mx));
        const double l = (double)mx + log(sum);
        total += l * l;
        lse[n] = (float)l;
    }
    const float z_ref = (float)((double)z_scale * total);
    memcpy(dz, gr0, sizeof(float) * lg->n);
    const float cz = seed_z * z_scale;
    for (int n = 0; n < N; n++) {
        const float a = 2.0f * cz * lse[n];
        for (int j = 0; j < E; j++)
            dz[(size_t)n * E + j] += a * expf(lg->data[(size_t)n * E + j] - lse[n]);
    }
    const int keep = blas_threads();
    for (int th = 1; th <= 2; th++) {
        blas_set_threads(th);
        Tape tape;
        tape_init(&tape, 1 << 16);
        memcpy(lg->grad, gr0, sizeof(float) * lg->n);
        tt_poison_arena(&tape, (size_t)N * E + 4096, true);
        Tensor *out = op_load_balance(&tape, lg, f, lb_scale);
        EXPECT_SAME(out->data, &lb_ref, 1, "load-balancing loss");
        tape_backward(&tape, out, &seed_lb);
        EXPECT_SAME(lg->grad, dlb, lg->n, "load-balancing gradient");
        memcpy(lg->grad, gr0, sizeof(float) * lg->n);
        tt_poison_arena(&tape, (size_t)N * E + 4096, true);
        out = op_zloss(&tape, lg, z_scale);
        EXPECT_SAME(out->data, &z_ref, 1, "z-loss");
        tape_backward(&tape, out, &seed_z);
        EXPECT_SAME(lg->grad, dz, lg->n, "z-loss gradient");
        tape_free(&tape);
    }
    blas_set_threads(keep);
    tt_free(lg);
    free(gr0);
    free(dlb);
    free(dz);
    free(p);
    free(lse);
}
END_TEST

/* ---------------- suite */

static Suite *ops_router_loss_suite(void) {
    Suite *s = suite_create("ops_router_loss");
    TCase *tc;
    tc = tcase_create("load_balance");
    tcase_add_test(tc, test_load_balance_values);
    tcase_add_test(tc, test_load_balance_copies_f);
    tcase_add_test(tc, test_load_balance_grad);
    suite_add_tcase(s, tc);
    tc = tcase_create("zloss");
    tcase_add_test(tc, test_zloss_value);
    tcase_add_test(tc, test_zloss_grad);
    suite_add_tcase(s, tc);
    tc = tcase_create("rows_bit_identical");
    tcase_add_test(tc, test_router_losses_rows);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    SRunner *sr = srunner_create(ops_router_loss_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
