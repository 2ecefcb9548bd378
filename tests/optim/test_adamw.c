/* test_adamw.c: AdamW update and clipping against values derived by hand in the comments
 * (the learning-rate schedules: test_schedule.c). */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/blas.h"
#include "optim/adamw.h"
#include "testutil.h"

/* float values compared in double (Check's float macros promote implicitly). */
#define EQF(a, b, tol) ck_assert_double_eq_tol((double)(a), (double)(b), (double)(tol))

/* Two parameters: a matrix with weight decay and a norm gain without, plus a frozen one. */
static void make_set(ParamSet *ps) {
    params_init(ps);
    int s2[2] = {1, 2}, s1[1] = {1};
    params_add(ps, "w", PBLOCK_DENSE, 2, s2, true, INIT_ONES, 0, 0);
    params_add(ps, "g", PBLOCK_DENSE, 1, s1, false, INIT_ONES, 0, 0);
    params_add(ps, "frozen", PBLOCK_EXPERT, 1, s1, true, INIT_ONES, 0, 0);
    params_finalise(ps);
    params_init_values(ps, 1, 0);
    params_set_trainable(ps, 2, false);
}

START_TEST(test_adamw_first_step_by_hand) {
    ParamSet ps;
    make_set(&ps);
    ps.p[0].t.grad[0] = 0.5f;
    ps.p[0].t.grad[1] = -2.0f;
    ps.p[1].t.grad[0] = 0.5f;
    AdamWConfig c = {0.9f, 0.999f, 1e-8f, 0.1f};
    adamw_step(&ps, &c, 0.1f, 1);
    /* t=1: m = 0.1 g, v = 0.001 g^2; mhat = g, vhat = g^2, so the Adam direction is
     * g/|g| = sign(g) (eps negligible). With decay: p = 1 - 0.1*(sign(g) + 0.1*1).
     *   w0: 1 - 0.1*(1 + 0.1) = 0.89;  w1: 1 - 0.1*(-1 + 0.1) = 1.09;
     * gain (no decay): 1 - 0.1*1 = 0.9; frozen: unchanged 1.
     * Tolerance 1e-6: float32 rounding of a few O(1) operations. */
    EQF(ps.p[0].t.data[0], 0.89f, 1e-6f);
    EQF(ps.p[0].t.data[1], 1.09f, 1e-6f);
    EQF(ps.p[1].t.data[0], 0.9f, 1e-6f);
    ck_assert(ps.p[2].t.data[0] == 1.0f); /* exact */
    /* moments: m = (1-b1) g = 0.05, v = (1-b2) g^2 = 0.00025; 1e-7: (1-b) rounded to
     * float32 is off by up to ~1e-8 relative to 1, times g <= 0.5 (and g^2). */
    EQF(ps.blocks[0].m[ps.p[0].off], 0.05f, 1e-7f);
    EQF(ps.blocks[0].v[ps.p[0].off], 0.00025f, 1e-7f);
    params_free(&ps);
}
END_TEST

START_TEST(test_adamw_second_step_by_hand) {
    ParamSet ps;
    make_set(&ps);
    AdamWConfig c = {0.9f, 0.99f, 0.0f, 0.0f};
    ps.p[1].t.grad[0] = 1.0f;
    adamw_step(&ps, &c, 0.1f, 1);          /* gain: 1 - 0.1 = 0.9 */
    ps.p[1].t.grad[0] = 0.0f;
    adamw_step(&ps, &c, 0.1f, 2);
    /* t=2, g=0: m = 0.9*0.1 = 0.09, v = 0.99*0.01 = 0.0099;
     * mhat = 0.09/(1-0.81) = 0.473684..., vhat = 0.0099/(1-0.9801) = 0.497487...
     * step = 0.1 * 0.473684/sqrt(0.497487) = 0.1 * 0.671574 = 0.0671574 -> 0.8328426.
     * Tolerance 1e-5: float32 bias corrections and sqrt. */
    EQF(ps.p[1].t.data[0], 0.8328426f, 1e-5f);
    params_free(&ps);
}
END_TEST

START_TEST(test_grad_norm_and_clip) {
    ParamSet ps;
    make_set(&ps);
    ps.p[0].t.grad[0] = 3.0f;
    ps.p[0].t.grad[1] = 0.0f;
    ps.p[1].t.grad[0] = 4.0f;
    /* frozen parameter has no grad buffer and is not counted */
    ck_assert_double_eq_tol(grad_sumsq_block(&ps, PBLOCK_DENSE), 25.0, 1e-12);
    ck_assert(grad_sumsq_block(&ps, PBLOCK_EXPERT) == 0.0);
    float f = grad_clip_factor(5.0, 1.0f);
    EQF(f, 0.2f, 1e-6f);      /* 1/(5 + 1e-6) */
    ck_assert(grad_clip_factor(0.5, 1.0f) == 1.0f);
    ck_assert(grad_clip_factor(100.0, 0.0f) == 1.0f); /* 0 = off */
    grad_scale(&ps, f);
    ck_assert_double_eq_tol(sqrt(grad_sumsq_block(&ps, PBLOCK_DENSE)), 1.0, 1e-5);
    params_zero_grad(&ps);
    ck_assert(grad_sumsq_block(&ps, PBLOCK_DENSE) == 0.0);
    params_free(&ps);
}
END_TEST

/* Blocks large enough that the norm and the scaling run as 16 ranges over the cores (the
 * suite runs this file with 1 and 2 threads), with tensors of odd sizes (padding between
 * them in the grad buffer) and a frozen one in between: the sum of squares equals a plain
 * double loop over the trainable tensors within 1e-12 relative (the same terms added in
 * another order; double rounding is ~1e-16 per add), and scaling multiplies exactly the
 * trainable elements. */
START_TEST(test_grad_norm_large_split) {
    ParamSet ps;
    params_init(&ps);
    int s1[1] = {40001}, s2[1] = {333}, s3[1] = {70003};
    params_add(&ps, "a", PBLOCK_DENSE, 1, s1, true, INIT_ONES, 0, 0);
    params_add(&ps, "frozen", PBLOCK_DENSE, 1, s2, true, INIT_ONES, 0, 0);
    params_add(&ps, "b", PBLOCK_DENSE, 1, s3, true, INIT_ONES, 0, 0);
    params_set_trainable(&ps, 1, false);
    params_finalise(&ps);
    MoeRng r;
    rng_seed(&r, 9);
    double ref = 0.0;
    for (int i = 0; i < 3; i++) {
        if (i == 1) continue;
        Tensor *t = &ps.p[i].t;
        for (size_t j = 0; j < t->n; j++) {
            t->grad[j] = (float)(2.0 * rng_uniform(&r) - 1.0);
            ref += (double)t->grad[j] * (double)t->grad[j];
        }
    }
    ck_assert_double_eq_tol(grad_sumsq_block(&ps, PBLOCK_DENSE), ref, 1e-12 * ref);
    const float keep0 = ps.p[0].t.grad[123], keep2 = ps.p[2].t.grad[70002];
    grad_scale(&ps, 0.5f);
    ck_assert(ps.p[0].t.grad[123] == keep0 * 0.5f && ps.p[2].t.grad[70002] == keep2 * 0.5f);
    ck_assert_double_eq_tol(grad_sumsq_block(&ps, PBLOCK_DENSE), 0.25 * ref, 1e-12 * ref);
    params_free(&ps);
}
END_TEST

/* The clip factor folded into the update: adamw_step_scaled(g) must equal grad_scale then
 * adamw_step bit for bit (the same float product g * s feeds the same arithmetic), on two
 * large tensors split over the cores, over three steps so the moments carry the scaled
 * gradients forward; the gradients themselves stay unscaled. */
START_TEST(test_adamw_scaled_equals_scale_then_step) {
    ParamSet ps[2];
    int s1[1] = {50003}, s2[2] = {97, 301};
    for (int k = 0; k < 2; k++) {
        params_init(&ps[k]);
        params_add(&ps[k], "a", PBLOCK_DENSE, 1, s1, false, INIT_ONES, 0, 0);
        params_add(&ps[k], "b", PBLOCK_EXPERT, 2, s2, true, INIT_ONES, 0, 0);
        params_finalise(&ps[k]);
        params_init_values(&ps[k], 3, 0);
    }
    AdamWConfig c = {0.9f, 0.95f, 1e-8f, 0.1f};
    MoeRng r;
    rng_seed(&r, 17);
    for (int st = 1; st <= 3; st++) {
        const float clip = 0.37f / (float)st;
        for (int i = 0; i < 2; i++)
            for (size_t j = 0; j < ps[0].p[i].t.n; j++)
                ps[0].p[i].t.grad[j] = ps[1].p[i].t.grad[j] =
                    (float)(4.0 * rng_uniform(&r) - 2.0);
        const float g0 = ps[1].p[1].t.grad[5];
        grad_scale(&ps[0], clip);
        adamw_step(&ps[0], &c, 1e-2f, st);
        adamw_step_scaled(&ps[1], &c, 1e-2f, st, clip);
        ck_assert(ps[1].p[1].t.grad[5] == g0);   /* left unscaled */
        for (int i = 0; i < 2; i++) {
            const Param *p0 = &ps[0].p[i], *p1 = &ps[1].p[i];
            const ParamBlock *b0 = &ps[0].blocks[p0->block], *b1 = &ps[1].blocks[p1->block];
            ck_assert(!memcmp(p0->t.data, p1->t.data, p0->t.n * sizeof(float)));
            ck_assert(!memcmp(b0->m + p0->goff, b1->m + p1->goff, p0->t.n * sizeof(float)));
            ck_assert(!memcmp(b0->v + p0->goff, b1->v + p1->goff, p0->t.n * sizeof(float)));
        }
    }
    params_free(&ps[0]);
    params_free(&ps[1]);
}
END_TEST

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("adamw");
    tcase_add_test(tc, test_adamw_first_step_by_hand);
    tcase_add_test(tc, test_adamw_second_step_by_hand);
    suite_add_tcase(s, tc);
    tc = tcase_create("clip");
    tcase_add_test(tc, test_grad_norm_and_clip);
    tcase_add_test(tc, test_grad_norm_large_split);
    tcase_add_test(tc, test_adamw_scaled_equals_scale_then_step);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
