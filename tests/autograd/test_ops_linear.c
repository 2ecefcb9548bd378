/* test_ops_linear.c: the matrix-product ops of autograd/ops_linear.c: op_linear (forward
 * against a double reference, backward against central differences, a FROZEN weight gets
 * no gradient), op_swiglu_linear and op_linear_residual (the same, and bit for bit against
 * their compositions). Tolerances: ops_test.h.
 */
#include "ops_test.h"

#include "autograd/blas.h"
#include "core/pool.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------- linear ---------------- */

START_TEST(linear_forward_ref) {
    const int shapes[][3] = {{3, 5, 4}, {1, 1, 1}, {7, 17, 3}, {4, 8, 16}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s][0], in = shapes[s][1], out = shapes[s][2];
        Tensor *x = rnd2(N, in, TENSOR_CONST, "x", 1 + s, -1, 1);
        Tensor *w = rnd2(out, in, TENSOR_CONST, "w", 100 + s, -1, 1);
        Tape t;
        new_tape(&t, false);
        Tensor *y = op_linear(&t, x, w);
        ck_assert_int_eq(y->shape[0], N);
        ck_assert_int_eq(y->shape[1], out);
        float *ref = malloc(sizeof(float) * (size_t)N * out);
        ref_linear(ref, x->data, w->data, N, in, out);
        expect_close(y->data, ref, (size_t)N * out, RED_ATOL, RED_RTOL, "linear forward");
        free(ref);
        tape_free(&t);
        tt_free(x);
        tt_free(w);
    }
}
END_TEST

START_TEST(linear_backward_fd) {
    Tensor *x = rnd2(3, 5, TENSOR_PARAM, "x", 2, -1, 1);
    Tensor *w = rnd2(4, 5, TENSOR_PARAM, "w", 3, -1, 1);
    Tensor *in[2] = {x, w};
    ck_assert_int_eq(tt_check_grad(b_linear, NULL, in, 2, FD_H, FD_ATOL, FD_RTOL, "linear"), 0);
    tt_free(x);
    tt_free(w);
}
END_TEST

/* A FROZEN weight gets no gradient (and no dW GEMM): its NULL grad is never touched, a
 * frozen weight that happens to carry a buffer keeps it at zero, and dx is still right. */
START_TEST(linear_frozen_weight) {
    Tensor *x = rnd2(3, 5, TENSOR_PARAM, "x", 4, -1, 1);
    Tensor *w = rnd2(4, 5, TENSOR_FROZEN, "w", 5, -1, 1);
    ck_assert_ptr_null(w->grad);
    Tensor *in[2] = {x, w};
    ck_assert_int_eq(tt_check_grad(b_linear, NULL, in, 2, FD_H, FD_ATOL, FD_RTOL, "linear frozen"),
                     0);
    ck_assert_ptr_null(w->grad);

    /* dx against the reference dy @ W with dy = ones (backward of op_sum). */
    float wbuf[20], gbuf[20] = {0};
    memcpy(wbuf, w->data, sizeof wbuf);
    Tensor wf;
    int ws[2] = {4, 5};
    tensor_view(&wf, wbuf, gbuf, 2, ws, TENSOR_FROZEN, "w_frozen_with_buf");
    ck_assert(!wf.requires_grad);
    memset(x->grad, 0, x->n * sizeof(float));
    Tape t;
    new_tape(&t, true);
    Tensor *y = op_linear(&t, x, &wf);
    ck_assert(y->requires_grad);
    tape_backward(&t, op_sum(&t, y), NULL);
    for (int j = 0; j < 20; j++) EXPECT_EQ(gbuf[j], 0.0f);
    float ref[15];
    for (int n = 0; n < 3; n++)
        for (int k = 0; k < 5; k++) {
            double s = 0;
            for (int o = 0; o < 4; o++) s += (double)wbuf[o * 5 + k];
            ref[n * 5 + k] = (float)s;
        }
    expect_close(x->grad, ref, 15, RED_ATOL, RED_RTOL, "linear frozen dx");

    /* Nothing requires grad: no op is recorded and the output needs no grad. */
    tape_reset(&t, true);
    Tensor *xc = rnd2(3, 5, TENSOR_CONST, "xc", 6, -1, 1);
    Tensor *yc = op_linear(&t, xc, &wf);
    ck_assert(!yc->requires_grad);
    ck_assert_int_eq(t.n, 0);
    tape_free(&t);
    tt_free(xc);
    tt_free(x);
    tt_free(w);
}
END_TEST


/* ---------------- swiglu + linear ---------------- */

static Tensor *b_swiglu_linear(Tape *t, Tensor **in, void *ctx) {
    (void)ctx;
    return op_swiglu_linear(t, in[0], in[1], in[2]);
}

/* y (N, out) = (silu(a) b) W^T with the activation in double (never rounded to float). */
static void ref_swiglu_linear(float *y, const float *a, const float *b, const float *w, int N,
                              int F, int out) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < out; o++) {
            double s = 0;
            for (int f = 0; f < F; f++) {
                const double x = (double)a[n * F + f];
                s += x * ref_sigmoid(x) * (double)b[n * F + f] * (double)w[o * F + f];
            }
            y[n * out + o] = (float)s;
        }
}

START_TEST(swiglu_linear_forward_ref) {
    const int shapes[][3] = {{3, 5, 4}, {1, 1, 1}, {7, 17, 3}, {4, 8, 16}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int N = shapes[s][0], F = shapes[s][1], out = shapes[s][2];
        Tensor *a = rnd2(N, F, TENSOR_CONST, "a", 200 + s, -2, 2);
        Tensor *b = rnd2(N, F, TENSOR_CONST, "b", 210 + s, -1, 1);
        Tensor *w = rnd2(out, F, TENSOR_CONST, "w", 220 + s, -1, 1);
        Tape t;
        new_tape(&t, false);
        Tensor *y = op_swiglu_linear(&t, a, b, w);
        ck_assert_int_eq(y->shape[0], N);
        ck_assert_int_eq(y->shape[1], out);
        float *ref = malloc(sizeof(float) * (size_t)N * out);
        ref_swiglu_linear(ref, a->data, b->data, w->data, N, F, out);
        /* a reduction of <= 17 terms of size <= 1.8 (|silu(a) b| with |a| < 2, |b| < 1)
         * whose factors carry one more float rounding and one exp (<= 2 ulp) each than
         * linear's: the RED bound (ops_test.h) still holds with 10x margin */
        expect_close(y->data, ref, (size_t)N * out, RED_ATOL, RED_RTOL, "swiglu_linear forward");
        free(ref);
        tape_free(&t);
        tt_free(a);
        tt_free(b);
        tt_free(w);
    }
}
END_TEST

/* Finite differences for da, db and dW, then with W FROZEN (no grad buffer: the op must not
 * form dW, writing it would crash) for da and db. */
START_TEST(swiglu_linear_backward_fd) {
    for (int frozen = 0; frozen < 2; frozen++) {
        Tensor *a = rnd2(3, 5, TENSOR_PARAM, "a", 230, -3, 3);
        Tensor *b = rnd2(3, 5, TENSOR_PARAM, "b", 231, -2, 2);
        Tensor *w = rnd2(4, 5, frozen ? TENSOR_FROZEN : TENSOR_PARAM, "w", 232, -1, 1);
        Tensor *in[3] = {a, b, w};
        /* smooth in a (silu), bilinear in (b, W): the FD error bound of ops_test.h */
        ck_assert_int_eq(tt_check_grad(b_swiglu_linear, NULL, in, 3, FD_H, FD_ATOL, FD_RTOL,
                                       frozen ? "swiglu_linear frozen W" : "swiglu_linear"), 0);
        if (frozen) ck_assert_ptr_null(w->grad);
        tt_free(a);
        tt_free(b);
        tt_free(w);
    }
}
END_TEST

/* One recorded forward + backward (seeded with dy) of the fused op or of its composition
 * op_linear(op_swiglu(a, b), W): output and grads copied out (NULL where not required),
 * the tape's arena use and grad-plan bytes. Between the op's forward and its backward a
 * second fused op on other (constant) inputs overwrites the tape's scratch, as the next
 * layer does in a model: a backward that trusted the scratch to still hold its activation
 * would be wrong. The second of two steps on one tape, so the first one's allocations
 * (arena chunks, plan, scratch) are done: the second must allocate nothing. */
typedef struct SwiRun {
    float *y, *g[3];
    size_t arena, plan, allocs;
} SwiRun;

static void swi_run(bool fused, Tensor **in, Tensor **clobber, const float *dy, SwiRun *r) {
    Tape t;
    new_tape(&t, true);
    for (int step = 0; step < 2; step++) {
        for (int k = 0; k < 3; k++)
            if (in[k]->grad) memset(in[k]->grad, 0, sizeof(float) * in[k]->n);
        const size_t c0 = moe_alloc_calls();
        tape_reset(&t, true);
        Tensor *y = fused ? op_swiglu_linear(&t, in[0], in[1], in[2])
                          : op_linear(&t, op_swiglu(&t, in[0], in[1]), in[2]);
        r->arena = arena_used(&t.arena);
        (void)op_swiglu_linear(&t, clobber[0], clobber[1], clobber[2]);
        tape_backward(&t, y, dy);
        r->allocs = moe_alloc_calls() - c0;
        if (step == 1) {
            r->y = malloc(sizeof(float) * y->n);
            memcpy(r->y, y->data, sizeof(float) * y->n);
        }
    }
    r->plan = tape_grad_plan_bytes(&t);
    for (int k = 0; k < 3; k++) {
        r->g[k] = NULL;
        if (!in[k]->requires_grad) continue;
        r->g[k] = malloc(sizeof(float) * in[k]->n);
        memcpy(r->g[k], in[k]->grad, sizeof(float) * in[k]->n);
    }
    tape_free(&t);
}

static void swi_run_free(SwiRun *r) {
    free(r->y);
    for (int k = 0; k < 3; k++) free(r->g[k]);
}

/* The fused op against its composition, bit for bit: the fused op runs the same float
 * operations (the same SwiGLU kernel, the same sgemm calls with the same arguments, dact
 * accumulated with beta 1 into zeros as op_linear's dx), so no tolerance. Small and large
 * (> 2^16 elements: the SwiGLU is split over the threads; the suite also runs with 2),
 * with every input trainable, with W FROZEN (carrying a grad buffer, which must stay zero)
 * and with a CONST (only db and dW). The fused tape keeps N*F floats less activation and
 * plans N*F floats less gradient. */
START_TEST(swiglu_linear_matches_composition) {
    const int shapes[][3] = {{3, 5, 4}, {300, 256, 40}};
    for (int s = 0; s < 2; s++)
        for (int v = 0; v < 3; v++) {
            const int N = shapes[s][0], F = shapes[s][1], out = shapes[s][2];
            Tensor *in[3] = {
                rnd2(N, F, v == 2 ? TENSOR_CONST : TENSOR_PARAM, "a", 240 + s, -4, 4),
                rnd2(N, F, TENSOR_PARAM, "b", 250 + s, -2, 2),
                rnd2(out, F, v == 1 ? TENSOR_FROZEN : TENSOR_PARAM, "w", 260 + s, -0.5f, 0.5f)};
            if (v == 1) in[2]->grad = moe_calloc(sizeof(float) * in[2]->n);
            Tensor *clobber[3] = {rnd2(N, F, TENSOR_CONST, "a2", 280 + s, -4, 4),
                                  rnd2(N, F, TENSOR_CONST, "b2", 290 + s, -2, 2),
                                  rnd2(out, F, TENSOR_CONST, "w2", 300 + s, -1, 1)};
            Tensor *dyt = rnd2(N, out, TENSOR_CONST, "dy", 270 + s, -1, 1);
            SwiRun f, u;
            swi_run(true, in, clobber, dyt->data, &f);
            if (v == 1)
                for (size_t j = 0; j < in[2]->n; j++) EXPECT_EQ(in[2]->grad[j], 0.0f);
            swi_run(false, in, clobber, dyt->data, &u);
            ck_assert_msg(memcmp(f.y, u.y, sizeof(float) * (size_t)N * out) == 0,
                          "shape %d variant %d: forward differs", s, v);
            for (int k = 0; k < 3; k++) {
                ck_assert_msg((f.g[k] == NULL) == !in[k]->requires_grad, "grad %d", k);
                if (f.g[k])
                    ck_assert_msg(memcmp(f.g[k], u.g[k], sizeof(float) * in[k]->n) == 0,
                                  "shape %d variant %d: grad of %s differs", s, v,
                                  in[k]->name);
            }
            const size_t act = sizeof(float) * (size_t)N * F;
            ck_assert_msg(f.arena + act <= u.arena, "arena fused %zu, composition %zu",
                          f.arena, u.arena);
            ck_assert_msg(f.plan + act <= u.plan, "plan fused %zu, composition %zu", f.plan,
                          u.plan);
            ck_assert_uint_eq(f.allocs, 0);
            swi_run_free(&f);
            swi_run_free(&u);
            for (int k = 0; k < 3; k++) {
                tt_free(in[k]);
                tt_free(clobber[k]);
            }
            tt_free(dyt);
        }
}
END_TEST

/* ---------------- linear + residual ---------------- */

static Tensor *b_linear_residual(Tape *t, Tensor **in, void *ctx) {
    (void)ctx;
    return op_linear_residual(t, in[0], in[1], in[2]);
}

/* Forward against r + a double reference product, then finite differences for dr, dx, dW
 * and with W FROZEN (no grad buffer: forming dW would crash) for dr and dx. */
START_TEST(linear_residual_forward_fd) {
    const int N = 7, in = 9, out = 5;
    Tensor *r = rnd2(N, out, TENSOR_CONST, "r", 500, -3, 3);
    Tensor *x = rnd2(N, in, TENSOR_CONST, "x", 501, -1, 1);
    Tensor *w = rnd2(out, in, TENSOR_CONST, "w", 502, -1, 1);
    Tape t;
    new_tape(&t, false);
    Tensor *y = op_linear_residual(&t, r, x, w);
    float ref[7 * 5];
    ref_linear(ref, x->data, w->data, N, in, out);
    for (int j = 0; j < N * out; j++) ref[j] += r->data[j];
    /* a sum of 9 products of size <= 1 plus |r| <= 3: the RED bound (ops_test.h) */
    expect_close(y->data, ref, (size_t)N * out, RED_ATOL, RED_RTOL, "linear_residual forward");
    tape_free(&t);
    tt_free(r);
    tt_free(x);
    tt_free(w);
    for (int frozen = 0; frozen < 2; frozen++) {
        Tensor *in3[3] = {rnd2(3, 4, TENSOR_PARAM, "r", 503, -2, 2),
                          rnd2(3, 6, TENSOR_PARAM, "x", 504, -1, 1),
                          rnd2(4, 6, frozen ? TENSOR_FROZEN : TENSOR_PARAM, "w", 505, -1, 1)};
        /* linear in each input: FD is exact up to float rounding (ops_test.h) */
        ck_assert_int_eq(tt_check_grad(b_linear_residual, NULL, in3, 3, FD_H, FD_ATOL, FD_RTOL,
                                       frozen ? "linear_residual frozen W" : "linear_residual"),
                         0);
        if (frozen) ck_assert_ptr_null(in3[2]->grad);
        for (int k = 0; k < 3; k++) tt_free(in3[k]);
    }
}
END_TEST

/* Against its composition op_add(r, op_linear(x, W)) bit for bit (the same sgemm calls, the
 * same float additions in the same order): output and the grads of r, x and W, all
 * trainable and with W FROZEN carrying a zeroed grad buffer that must stay zero; the fused
 * tape keeps N*out floats less (the product lives in the scratch, which a second op
 * overwrites before the backward) and the second step allocates nothing. */
START_TEST(linear_residual_matches_composition) {
    const int shapes[][3] = {{3, 5, 4}, {300, 256, 96}};
    for (int s = 0; s < 2; s++)
        for (int v = 0; v < 2; v++) {
            const int N = shapes[s][0], in = shapes[s][1], out = shapes[s][2];
            float *res[2][4];
            size_t arena[2], allocs[2];
            for (int fused = 0; fused < 2; fused++) {
                Tensor *ins[3] = {rnd2(N, out, TENSOR_PARAM, "r", 510 + s, -2, 2),
                                  rnd2(N, in, TENSOR_PARAM, "x", 520 + s, -1, 1),
                                  rnd2(out, in, v ? TENSOR_FROZEN : TENSOR_PARAM, "w", 530 + s,
                                       -0.5f, 0.5f)};
                if (v) ins[2]->grad = moe_calloc(sizeof(float) * ins[2]->n);
                Tensor *cl[3] = {rnd2(N, out, TENSOR_CONST, "r2", 540 + s, -2, 2),
                                 rnd2(N, in, TENSOR_CONST, "x2", 550 + s, -1, 1),
                                 rnd2(out, in, TENSOR_CONST, "w2", 560 + s, -1, 1)};
                Tensor *dy = rnd2(N, out, TENSOR_CONST, "dy", 570 + s, -1, 1);
                Tape t;
                new_tape(&t, true);
                for (int step = 0; step < 2; step++) {
                    for (int k = 0; k < 3; k++)
                        if (ins[k]->grad) memset(ins[k]->grad, 0, sizeof(float) * ins[k]->n);
                    const size_t c0 = moe_alloc_calls();
                    tape_reset(&t, true);
                    Tensor *y = fused ? op_linear_residual(&t, ins[0], ins[1], ins[2])
                                      : op_add(&t, ins[0], op_linear(&t, ins[1], ins[2]));
                    arena[fused] = arena_used(&t.arena);
                    (void)op_linear_residual(&t, cl[0], cl[1], cl[2]);   /* clobbers scratch */
                    tape_backward(&t, y, dy->data);
                    allocs[fused] = moe_alloc_calls() - c0;
                    if (step == 1) {
                        res[fused][3] = malloc(sizeof(float) * y->n);
                        memcpy(res[fused][3], y->data, sizeof(float) * y->n);
                    }
                }
                for (int k = 0; k < 3; k++) {
                    res[fused][k] = malloc(sizeof(float) * ins[k]->n);
                    memcpy(res[fused][k], ins[k]->grad, sizeof(float) * ins[k]->n);
                }
                if (v)
                    for (size_t j = 0; j < ins[2]->n; j++) EXPECT_EQ(ins[2]->grad[j], 0.0f);
                tape_free(&t);
                for (int k = 0; k < 3; k++) {
                    tt_free(ins[k]);
                    tt_free(cl[k]);
                }
                tt_free(dy);
            }
            const size_t sz[4] = {(size_t)N * out, (size_t)N * in, (size_t)out * in,
                                  (size_t)N * out};
            for (int k = 0; k < 4; k++) {
                ck_assert_msg(memcmp(res[0][k], res[1][k], sizeof(float) * sz[k]) == 0,
                              "shape %d variant %d: %s differs", s, v,
                              k == 3 ? "output" : k == 0 ? "dr" : k == 1 ? "dx" : "dW");
                free(res[0][k]);
                free(res[1][k]);
            }
            ck_assert_msg(arena[1] + sizeof(float) * (size_t)N * out <= arena[0],
                          "arena fused %zu, composition %zu", arena[1], arena[0]);
            ck_assert_uint_eq(allocs[1], 0);
        }
}
END_TEST


/* ---------------- suite */

static Suite *ops_linear_suite(void) {
    Suite *s = suite_create("ops_linear");
    struct { const char *name; const TTest *tests[5]; } cases[] = {
        {"linear", {linear_forward_ref, linear_backward_fd, linear_frozen_weight, NULL}},
        {"swiglu_linear", {swiglu_linear_forward_ref, swiglu_linear_backward_fd,
                           swiglu_linear_matches_composition, NULL}},
        {"linear_residual", {linear_residual_forward_fd, linear_residual_matches_composition,
                             NULL}},
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
    SRunner *sr = srunner_create(ops_linear_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
