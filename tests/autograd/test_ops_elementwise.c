/* test_ops_elementwise.c: the elementwise ops of autograd/ops_elementwise.c (add, mul,
 * scale, silu, swiglu, softplus): forward against double references, backward against
 * central differences, softplus at the extremes where exp overflows, and the loops split
 * over the cores (swiglu above POOL_SPLIT_MIN; add and mul at 1 and 2 threads) bit for bit
 * against their serial loops. Tolerances: ops_test.h.
 */
#include "ops_test.h"

#include "autograd/blas.h"
#include "core/pool.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------- elementwise ---------------- */

typedef float (*RefUnary)(float);
static float ref_silu1(float x) { return (float)((double)x * ref_sigmoid((double)x)); }
static float ref_softplus1(float x) { return (float)log(1.0 + exp((double)x)); }

static void check_unary_forward(Tensor *(*op)(Tape *, Tensor *), RefUnary ref, float lo,
                                float hi, const char *what) {
    Tensor *x = rnd2(3, 5, TENSOR_CONST, "x", 7, lo, hi);
    Tape t;
    new_tape(&t, false);
    Tensor *y = op(&t, x);
    ck_assert_int_eq((int)y->n, 15);
    float r[15];
    for (int j = 0; j < 15; j++) r[j] = ref(x->data[j]);
    expect_close(y->data, r, 15, EW_ATOL, EW_RTOL, what);
    tape_free(&t);
    tt_free(x);
}

START_TEST(add_forward_backward) {
    Tensor *a = rnd2(3, 5, TENSOR_PARAM, "a", 8, -1, 1);
    Tensor *b = rnd2(3, 5, TENSOR_PARAM, "b", 9, -1, 1);
    Tape t;
    new_tape(&t, false);
    Tensor *y = op_add(&t, a, b);
    float r[15];
    for (int j = 0; j < 15; j++) r[j] = (float)((double)a->data[j] + (double)b->data[j]);
    expect_close(y->data, r, 15, EW_ATOL, EW_RTOL, "add forward");
    tape_free(&t);
    Tensor *in[2] = {a, b};
    ck_assert_int_eq(tt_check_grad(b_add, NULL, in, 2, FD_H, FD_ATOL, FD_RTOL, "add"), 0);
    /* a + a: both contributions accumulate into the same grad (d/da = 2). */
    Tensor *in2[2] = {a, a};
    ck_assert_int_eq(tt_check_grad(b_add, NULL, in2, 2, FD_H, FD_ATOL, FD_RTOL, "add a+a"), 0);
    tt_free(a);
    tt_free(b);
}
END_TEST

START_TEST(mul_forward_backward) {
    Tensor *a = rnd2(3, 5, TENSOR_PARAM, "a", 10, -2, 2);
    Tensor *b = rnd2(3, 5, TENSOR_PARAM, "b", 11, -2, 2);
    Tape t;
    new_tape(&t, false);
    Tensor *y = op_mul(&t, a, b);
    float r[15];
    for (int j = 0; j < 15; j++) r[j] = (float)((double)a->data[j] * (double)b->data[j]);
    expect_close(y->data, r, 15, EW_ATOL, EW_RTOL, "mul forward");
    tape_free(&t);
    Tensor *in[2] = {a, b};
    ck_assert_int_eq(tt_check_grad(b_mul, NULL, in, 2, FD_H, FD_ATOL, FD_RTOL, "mul"), 0);
    Tensor *in2[2] = {a, a};
    ck_assert_int_eq(tt_check_grad(b_mul, NULL, in2, 2, FD_H, FD_ATOL, FD_RTOL, "mul a*a"), 0);
    tt_free(a);
    tt_free(b);
}
END_TEST

START_TEST(scale_forward_backward) {
    Tensor *x = rnd2(3, 5, TENSOR_PARAM, "x", 12, -2, 2);
    float s = -1.75f;
    Tape t;
    new_tape(&t, false);
    Tensor *y = op_scale(&t, x, s);
    float r[15];
    for (int j = 0; j < 15; j++) r[j] = (float)((double)s * (double)x->data[j]);
    expect_close(y->data, r, 15, EW_ATOL, EW_RTOL, "scale forward");
    tape_free(&t);
    Tensor *in[1] = {x};
    ck_assert_int_eq(tt_check_grad(b_scale, &s, in, 1, FD_H, FD_ATOL, FD_RTOL, "scale"), 0);
    tt_free(x);
}
END_TEST

START_TEST(silu_forward_backward) {
    check_unary_forward(op_silu, ref_silu1, -6, 6, "silu forward");
    Tensor *x = rnd2(3, 5, TENSOR_PARAM, "x", 13, -3, 3);
    Tensor *in[1] = {x};
    ck_assert_int_eq(tt_check_grad(b_silu, NULL, in, 1, FD_H, FD_ATOL, FD_RTOL, "silu"), 0);
    tt_free(x);
}
END_TEST

START_TEST(swiglu_forward_backward) {
    Tensor *a = rnd2(3, 5, TENSOR_PARAM, "a", 14, -3, 3);
    Tensor *b = rnd2(3, 5, TENSOR_PARAM, "b", 15, -2, 2);
    Tape t;
    new_tape(&t, false);
    Tensor *y = op_swiglu(&t, a, b);
    float r[15];
    for (int j = 0; j < 15; j++)
        r[j] = (float)((double)a->data[j] * ref_sigmoid((double)a->data[j]) * (double)b->data[j]);
    expect_close(y->data, r, 15, EW_ATOL, EW_RTOL, "swiglu forward");
    tape_free(&t);
    Tensor *in[2] = {a, b};
    ck_assert_int_eq(tt_check_grad(b_swiglu, NULL, in, 2, FD_H, FD_ATOL, FD_RTOL, "swiglu"), 0);
    tt_free(a);
    tt_free(b);
}
END_TEST

/* Large enough (> 2^16 elements) that the kernel splits the work over the BLAS thread count
 * (the suite also runs with 2 threads): forward and backward against the closed forms
 * y = a s(a) b, da = dy b (s + a s (1 - s)), db = dy a s, in double. Tolerance EW_*: a few
 * float roundings and one expf per element. */
START_TEST(swiglu_large_split) {
    const int R = 300, Cc = 300, n = R * Cc;
    Tensor *a = rnd2(R, Cc, TENSOR_PARAM, "a", 16, -4, 4);
    Tensor *b = rnd2(R, Cc, TENSOR_PARAM, "b", 17, -2, 2);
    Tape t;
    new_tape(&t, true);
    Tensor *y = op_swiglu(&t, a, b);
    float *ref = malloc(sizeof(float) * (size_t)n), *dy = malloc(sizeof(float) * (size_t)n);
    float *rda = malloc(sizeof(float) * (size_t)n), *rdb = malloc(sizeof(float) * (size_t)n);
    MoeRng rng;
    rng_seed(&rng, 18);
    for (int j = 0; j < n; j++) {
        double x = (double)a->data[j], bb = (double)b->data[j], sg = ref_sigmoid(x);
        dy[j] = (float)(2.0 * rng_uniform(&rng) - 1.0);
        ref[j] = (float)(x * sg * bb);
        rda[j] = (float)((double)dy[j] * bb * (sg + x * sg * (1.0 - sg)));
        rdb[j] = (float)((double)dy[j] * x * sg);
    }
    expect_close(y->data, ref, (size_t)n, EW_ATOL, EW_RTOL, "swiglu large forward");
    tape_backward(&t, y, dy);
    expect_close(a->grad, rda, (size_t)n, EW_ATOL, EW_RTOL, "swiglu large da");
    expect_close(b->grad, rdb, (size_t)n, EW_ATOL, EW_RTOL, "swiglu large db");
    tape_free(&t);
    free(ref);
    free(dy);
    free(rda);
    free(rdb);
    tt_free(a);
    tt_free(b);
}
END_TEST


START_TEST(softplus_forward_backward) {
    check_unary_forward(op_softplus, ref_softplus1, -25, 25, "softplus forward");
    Tensor *x = rnd2(3, 5, TENSOR_PARAM, "x", 16, -4, 4);
    Tensor *in[1] = {x};
    ck_assert_int_eq(tt_check_grad(b_softplus, NULL, in, 1, FD_H, FD_ATOL, FD_RTOL, "softplus"),
                     0);
    tt_free(x);
}
END_TEST

/* exp(x) overflows float at x > 88.7: the naive log(1+exp(x)) would give inf. */
START_TEST(softplus_extremes) {
    const float xs[6] = {1000.0f, 100.0f, 89.0f, -89.0f, -100.0f, -1000.0f};
    Tensor *x = tt_tensor2(1, 6, TENSOR_PARAM, "x");
    memcpy(x->data, xs, sizeof xs);
    Tape t;
    new_tape(&t, true);
    Tensor *y = op_softplus(&t, x);
    tape_backward(&t, op_sum(&t, y), NULL);
    for (int j = 0; j < 6; j++) {
        ck_assert_msg(isfinite(y->data[j]) && y->data[j] >= 0.0f, "softplus(%g) = %g",
                      (double)xs[j], (double)y->data[j]);
        ck_assert_msg(isfinite(x->grad[j]), "softplus'(%g) = %g", (double)xs[j],
                      (double)x->grad[j]);
    }
    EXPECT_EQ(y->data[0], 1000.0f);
    EXPECT_EQ(y->data[1], 100.0f);
    EXPECT_NEAR(y->data[2], 89.0f, 1e-5f);
    ck_assert(y->data[3] < 1e-30f);   /* exp(-89) ~ 2.2e-39 */
    ck_assert(y->data[5] == 0.0f);    /* exp(-1000) underflows to exactly 0 */
    EXPECT_EQ(x->grad[0], 1.0f);
    ck_assert(x->grad[5] == 0.0f);
    tape_free(&t);
    tt_free(x);
}
END_TEST


/* add and mul over n = 90,000 elements (> POOL_SPLIT_MIN: split over the cores), at 1 and 2
 * threads, bit for bit against their serial loops (the same float expression per element),
 * backward from random starting gradients; a + a and a * a, whose backward adds twice into
 * one gradient (first the a-side term, then the b-side one, as the serial loops do). */
START_TEST(elementwise_split) {
    const int R = 300, Cc = 300;
    const size_t n = (size_t)R * Cc;
    Tensor *a = rnd2(R, Cc, TENSOR_PARAM, "a", 53, -3, 3);
    Tensor *b = rnd2(R, Cc, TENSOR_PARAM, "b", 54, -3, 3);
    float *dy = malloc(sizeof(float) * n), *ga = malloc(sizeof(float) * n);
    float *gb = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
    float *ra = malloc(sizeof(float) * n), *rb = malloc(sizeof(float) * n);
    MoeRng r;
    rng_seed(&r, 55);
    for (size_t j = 0; j < n; j++) {
        dy[j] = (float)(2.0 * rng_uniform(&r) - 1.0);
        ga[j] = (float)(2.0 * rng_uniform(&r) - 1.0);
        gb[j] = (float)(2.0 * rng_uniform(&r) - 1.0);
    }
    const int keep = blas_threads();
    for (int op = 0; op < 4; op++) {   /* a+b, a+a, a*b, a*a */
        const bool same = op == 1 || op == 3;
        Tensor *bb = same ? a : b;
        for (size_t j = 0; j < n; j++) {
            const float x = a->data[j], z = bb->data[j];
            ra[j] = ga[j];
            rb[j] = gb[j];
            float *db = same ? ra : rb;
            if (op <= 1) {
                y[j] = x + z;
                ra[j] += dy[j];
                db[j] += dy[j];
            } else {
                y[j] = x * z;
                ra[j] += dy[j] * z;
                db[j] += dy[j] * x;
            }
        }
        for (int th = 1; th <= 2; th++) {
            blas_set_threads(th);
            Tape t;
            tape_init(&t, 1 << 16);
            memcpy(a->grad, ga, sizeof(float) * n);
            memcpy(b->grad, gb, sizeof(float) * n);
            tt_poison_arena(&t, n + 4096, true);
            Tensor *out = op <= 1 ? op_add(&t, a, bb) : op_mul(&t, a, bb);
            ck_assert_msg(memcmp(out->data, y, sizeof(float) * n) == 0,
                          "op %d forward (%d threads)", op, th);
            tape_backward(&t, out, dy);
            ck_assert_msg(memcmp(a->grad, ra, sizeof(float) * n) == 0, "op %d da (%d threads)",
                          op, th);
            ck_assert_msg(memcmp(b->grad, same ? gb : rb, sizeof(float) * n) == 0,
                          "op %d db (%d threads)", op, th);
            tape_free(&t);
        }
    }
    blas_set_threads(keep);
    tt_free(a);
    tt_free(b);
    free(dy);
    free(ga);
    free(gb);
    free(y);
    free(ra);
    free(rb);
}
END_TEST


/* ---------------- suite */

static Suite *ops_elementwise_suite(void) {
    Suite *s = suite_create("ops_elementwise");
    struct { const char *name; const TTest *tests[5]; } cases[] = {
        {"add", {add_forward_backward, elementwise_split, NULL}},
        {"mul", {mul_forward_backward, NULL}},
        {"scale", {scale_forward_backward, NULL}},
        {"silu", {silu_forward_backward, NULL}},
        {"swiglu", {swiglu_forward_backward, swiglu_large_split, NULL}},
        {"softplus", {softplus_forward_backward, softplus_extremes, NULL}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        for (int j = 0; j < 5 && cases[i].tests[j]; j++) tcase_add_test(tc, cases[i].tests[j]);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    SRunner *sr = srunner_create(ops_elementwise_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
