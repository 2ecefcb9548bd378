/* test_ops_loss.c: softmax and the language-model loss, autograd/ops_loss.c (op_softmax,
 * op_cross_entropy, the fused and the chunked LM head + loss against their unfused
 * compositions), and the reductions of autograd/ops_reduce.c (op_sum, op_mean): double
 * references, hand-computed values and central differences. Tolerances: ops_test.h.
 */
#include "ops_test.h"

#include "autograd/blas.h"
#include "core/pool.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------- softmax ---------------- */

START_TEST(softmax_forward_ref) {
    const int shapes[][2] = {{3, 5}, {1, 1}, {2, 17}};
    for (size_t s = 0; s < 3; s++) {
        int N = shapes[s][0], M = shapes[s][1];
        Tensor *x = rnd2(N, M, TENSOR_CONST, "x", 60 + s, -4, 4);
        Tape t;
        new_tape(&t, false);
        Tensor *y = op_softmax(&t, x);
        float *r = malloc(sizeof(float) * x->n);
        ref_softmax(r, x->data, N, M);
        expect_close(y->data, r, x->n, RED_ATOL, RED_RTOL, "softmax forward");
        /* Shift invariance with huge logits: exp(1000) overflows unless the max is removed. */
        for (size_t j = 0; j < x->n; j++) x->data[j] += 1000.0f;
        Tensor *y2 = op_softmax(&t, x);
        /* x + 1000 in float rounds x to ~6e-5, which moves p by ~6e-5 relative. */
        expect_close(y2->data, r, x->n, 1e-4, 1e-4, "softmax shifted by 1000");
        free(r);
        tape_free(&t);
        tt_free(x);
    }
}
END_TEST

START_TEST(softmax_backward_fd) {
    Tensor *x = rnd2(3, 5, TENSOR_PARAM, "x", 61, -2, 2);
    Tensor *in[1] = {x};
    ck_assert_int_eq(tt_check_grad(b_softmax, NULL, in, 1, FD_H, FD_ATOL, FD_RTOL, "softmax"), 0);
    tt_free(x);
}
END_TEST

/* ---------------- cross-entropy ---------------- */

START_TEST(cross_entropy_forward_ref) {
    Tensor *x = rnd2(4, 5, TENSOR_CONST, "logits", 70, -3, 3);
    const int32_t tgt[4] = {2, -1, 0, 4};
    Tape t;
    new_tape(&t, false);
    Tensor *y = op_cross_entropy(&t, x, tgt, 1.0f, 0);
    ck_assert_int_eq((int)y->n, 1);
    float r = (float)ref_cross_entropy(x->data, tgt, 4, 5, 1.0);
    expect_close(y->data, &r, 1, RED_ATOL, RED_RTOL, "cross_entropy forward");
    Tensor *y2 = op_cross_entropy(&t, x, tgt, 0.25f, 0);
    float r2 = (float)ref_cross_entropy(x->data, tgt, 4, 5, 0.25);
    expect_close(y2->data, &r2, 1, RED_ATOL, RED_RTOL, "cross_entropy forward scale");
    /* All targets ignored: loss 0 (no division by zero). */
    const int32_t none[4] = {-1, -1, -1, -1};
    Tensor *y3 = op_cross_entropy(&t, x, none, 1.0f, 0);
    EXPECT_EQ(y3->data[0], 0.0f);
    /* Large logits: log-sum-exp with the row max stays finite. */
    for (size_t j = 0; j < x->n; j++) x->data[j] += 500.0f;
    Tensor *y4 = op_cross_entropy(&t, x, tgt, 1.0f, 0);
    ck_assert_msg(isfinite(y4->data[0]) && fabsf(y4->data[0] - r) <= 1e-3f,
                  "shifted CE %g vs %g", (double)y4->data[0], (double)r);
    tape_free(&t);
    tt_free(x);
}
END_TEST

/* logits [0, ln 2, 0], target 1: sum exp = 1 + 2 + 1 = 4, loss = ln 4 - ln 2 = ln 2
 * = 0.6931472. */
START_TEST(cross_entropy_hand) {
    Tensor *x = tt_tensor2(1, 3, TENSOR_CONST, "logits");
    x->data[0] = 0.0f;
    x->data[1] = logf(2.0f);
    x->data[2] = 0.0f;
    const int32_t tgt[1] = {1};
    Tape t;
    new_tape(&t, false);
    Tensor *y = op_cross_entropy(&t, x, tgt, 1.0f, 0);
    EXPECT_NEAR(y->data[0], 0.6931472f, 1e-6f);
    tape_free(&t);
    tt_free(x);
}
END_TEST

START_TEST(cross_entropy_backward_fd) {
    Tensor *x = rnd2(4, 5, TENSOR_PARAM, "logits", 71, -2, 2);
    const int32_t tgt[4] = {3, -1, 0, -1};
    CeCtx c = {tgt, 1.0f, 0};
    Tensor *in[1] = {x};
    ck_assert_int_eq(tt_check_grad(b_cross_entropy, &c, in, 1, FD_H, FD_ATOL, FD_RTOL, "ce"), 0);
    /* Ignored rows get exactly zero gradient. */
    for (int v = 0; v < 5; v++) {
        EXPECT_EQ(x->grad[1 * 5 + v], 0.0f);
        EXPECT_EQ(x->grad[3 * 5 + v], 0.0f);
    }
    /* scale != 1 (and > 1, so a missing scale factor is well outside the tolerance). */
    CeCtx c2 = {tgt, 2.5f, 0};
    ck_assert_int_eq(tt_check_grad(b_cross_entropy, &c2, in, 1, FD_H, FD_ATOL, FD_RTOL, "ce x2.5"),
                     0);
    const int32_t all[4] = {1, 4, 2, 0};
    CeCtx c3 = {all, 0.5f, 0};
    ck_assert_int_eq(tt_check_grad(b_cross_entropy, &c3, in, 1, FD_H, FD_ATOL, FD_RTOL, "ce all"),
                     0);
    tt_free(x);
}
END_TEST

/* ---------------- fused head + loss ---------------- */

static Tensor *b_linear_ce(Tape *t, Tensor **in, void *ctx) {
    const CeCtx *c = ctx;
    return op_linear_cross_entropy(t, in[0], in[1], c->tgt, c->scale, c->denom, NULL);
}

/* The fused op against its unfused composition op_cross_entropy(op_linear(x, W)): same
 * loss and same gradients (tolerance RED_*: the same float32 products, summed in another
 * order), logits returned only when not recording; plus finite differences. */
START_TEST(linear_ce_matches_composition) {
    Tensor *x = rnd2(6, 5, TENSOR_PARAM, "x", 80, -1, 1);
    Tensor *w = rnd2(7, 5, TENSOR_PARAM, "w", 81, -1, 1);
    const int32_t tgt[6] = {3, -1, 0, 6, 2, 2};
    Tape t;
    new_tape(&t, true);
    Tensor *logits = (Tensor *)1;
    Tensor *yf = op_linear_cross_entropy(&t, x, w, tgt, 0.75f, 0, &logits);
    ck_assert_ptr_null(logits);
    tape_backward(&t, yf, NULL);
    float lf = yf->data[0];
    float *gx = malloc(x->n * sizeof(float)), *gw = malloc(w->n * sizeof(float));
    memcpy(gx, x->grad, x->n * sizeof(float));
    memcpy(gw, w->grad, w->n * sizeof(float));
    memset(x->grad, 0, x->n * sizeof(float));
    memset(w->grad, 0, w->n * sizeof(float));
    tape_reset(&t, true);
    Tensor *yu = op_cross_entropy(&t, op_linear(&t, x, w), tgt, 0.75f, 0);
    tape_backward(&t, yu, NULL);
    expect_close(&lf, yu->data, 1, RED_ATOL, RED_RTOL, "fused loss");
    expect_close(gx, x->grad, x->n, RED_ATOL, RED_RTOL, "fused dx");
    expect_close(gw, w->grad, w->n, RED_ATOL, RED_RTOL, "fused dW");
    /* not recording: the logits come back and equal x W^T */
    tape_reset(&t, false);
    Tensor *ye = op_linear_cross_entropy(&t, x, w, tgt, 0.75f, 0, &logits);
    ck_assert_ptr_nonnull(logits);
    expect_close(ye->data, yu->data, 1, RED_ATOL, RED_RTOL, "fused loss, eval");
    Tensor *lu = op_linear(&t, x, w);
    expect_close(logits->data, lu->data, lu->n, RED_ATOL, RED_RTOL, "fused logits");
    tape_free(&t);
    CeCtx c = {tgt, 2.5f, 0};
    Tensor *in[2] = {x, w};
    ck_assert_int_eq(tt_check_grad(b_linear_ce, &c, in, 2, FD_H, FD_ATOL, FD_RTOL, "linear_ce"),
                     0);
    free(gx);
    free(gw);
    tt_free(x);
    tt_free(w);
}
END_TEST

/* The chunked head + loss against the fused one (itself checked against the unfused
 * composition above) for chunk sizes that divide N, leave a remainder, are 1 and exceed N:
 * loss and grads within the reduction tolerance (dW is summed over chunks, a different
 * float32 order), a constant x (no dX kept), forward-only loss, finite differences, and the
 * arena it needs (no (N, V) buffer). */
typedef struct ChunkCtx { const int32_t *tgt; float scale; int chunk; double denom; } ChunkCtx;

static Tensor *b_linear_ce_chunked(Tape *t, Tensor **in, void *ctx) {
    const ChunkCtx *c = ctx;
    return op_linear_cross_entropy_chunked(t, in[0], in[1], c->tgt, c->scale, c->denom, c->chunk);
}

START_TEST(linear_ce_chunked_matches_fused) {
    Tensor *x = rnd2(6, 5, TENSOR_PARAM, "x", 84, -1, 1);
    Tensor *w = rnd2(7, 5, TENSOR_PARAM, "w", 85, -1, 1);
    const int32_t tgt[6] = {3, -1, 0, 6, 2, 2};
    Tape t;
    new_tape(&t, true);
    Tensor *yf = op_linear_cross_entropy(&t, x, w, tgt, 0.75f, 0, NULL);
    tape_backward(&t, yf, NULL);
    const float lf = yf->data[0];
    float *gx = malloc(x->n * sizeof(float)), *gw = malloc(w->n * sizeof(float));
    memcpy(gx, x->grad, x->n * sizeof(float));
    memcpy(gw, w->grad, w->n * sizeof(float));
    const int chunks[5] = {1, 2, 4, 6, 100};
    for (int i = 0; i < 5; i++) {
        memset(x->grad, 0, x->n * sizeof(float));
        memset(w->grad, 0, w->n * sizeof(float));
        tape_reset(&t, true);
        Tensor *yc = op_linear_cross_entropy_chunked(&t, x, w, tgt, 0.75f, 0, chunks[i]);
        tape_backward(&t, yc, NULL);
        expect_close(yc->data, &lf, 1, RED_ATOL, RED_RTOL, "chunked loss");
        expect_close(x->grad, gx, x->n, RED_ATOL, RED_RTOL, "chunked dx");
        expect_close(w->grad, gw, w->n, RED_ATOL, RED_RTOL, "chunked dW");
        /* forward only: the same loss, nothing recorded */
        tape_reset(&t, false);
        Tensor *ye = op_linear_cross_entropy_chunked(&t, x, w, tgt, 0.75f, 0, chunks[i]);
        expect_close(ye->data, &lf, 1, RED_ATOL, RED_RTOL, "chunked loss, forward only");
        ck_assert_int_eq(t.n, 0);
    }
    /* a constant x: only dW */
    Tensor *xc = rnd2(6, 5, TENSOR_CONST, "xc", 84, -1, 1);
    memset(w->grad, 0, w->n * sizeof(float));
    tape_reset(&t, true);
    tape_backward(&t, op_linear_cross_entropy_chunked(&t, xc, w, tgt, 0.75f, 0, 4), NULL);
    expect_close(w->grad, gw, w->n, RED_ATOL, RED_RTOL, "chunked dW, constant x");
    tape_free(&t);
    for (int i = 0; i < 3; i++) {
        ChunkCtx c = {tgt, 2.5f, chunks[i + 1], 0};
        Tensor *in[2] = {x, w};
        ck_assert_int_eq(tt_check_grad(b_linear_ce_chunked, &c, in, 2, FD_H, FD_ATOL, FD_RTOL,
                                       "linear_ce_chunked"), 0);
    }
    /* memory: N = 64, V = 96, C = 5, chunk 8: 8 V + N C + V C floats << N V */
    Tensor *xb = rnd2(64, 5, TENSOR_PARAM, "xb", 86, -1, 1);
    Tensor *wb = rnd2(96, 5, TENSOR_PARAM, "wb", 87, -1, 1);
    int32_t tb[64];
    for (int n = 0; n < 64; n++) tb[n] = (n * 7) % 96;
    size_t used[2];
    for (int ck = 0; ck < 2; ck++) {
        new_tape(&t, true);
        if (ck) op_linear_cross_entropy_chunked(&t, xb, wb, tb, 1.0f, 0, 8);
        else op_linear_cross_entropy(&t, xb, wb, tb, 1.0f, 0, NULL);
        used[ck] = arena_used(&t.arena);
        tape_free(&t);
    }
    ck_assert_msg(used[1] < used[0] / 2, "chunked arena %zu bytes, fused %zu", used[1], used[0]);
    free(gx);
    free(gw);
    tt_free(xc);
    tt_free(xb);
    tt_free(wb);
    tt_free(x);
    tt_free(w);
}
END_TEST

/* ---------------- sum / mean ---------------- */

START_TEST(sum_forward_backward) {
    Tensor *x = rnd2(3, 5, TENSOR_PARAM, "x", 80, -1, 1);
    double s = 0;
    for (size_t j = 0; j < x->n; j++) s += (double)x->data[j];
    Tape t;
    new_tape(&t, false);
    float r = (float)s;
    expect_close(op_sum(&t, x)->data, &r, 1, EW_ATOL, EW_RTOL, "sum forward");
    tape_free(&t);
    Tensor *in[1] = {x};
    ck_assert_int_eq(tt_check_grad(b_sum, NULL, in, 1, FD_H, FD_ATOL, FD_RTOL, "sum"), 0);
    tt_free(x);
}
END_TEST

START_TEST(mean_forward_backward) {
    Tensor *x = rnd2(3, 5, TENSOR_PARAM, "x", 81, -1, 1);
    double s = 0;
    for (size_t j = 0; j < x->n; j++) s += (double)x->data[j];
    Tape t;
    new_tape(&t, false);
    float r = (float)(s / 15.0);
    expect_close(op_mean(&t, x)->data, &r, 1, EW_ATOL, EW_RTOL, "mean forward");
    tape_free(&t);
    Tensor *in[1] = {x};
    ck_assert_int_eq(tt_check_grad(b_mean, NULL, in, 1, FD_H, FD_ATOL, FD_RTOL, "mean"), 0);
    tt_free(x);
}
END_TEST


/* ---------------- suite */

static Suite *ops_loss_suite(void) {
    Suite *s = suite_create("ops_loss");
    struct { const char *name; const TTest *tests[5]; } cases[] = {
        {"softmax", {softmax_forward_ref, softmax_backward_fd, NULL}},
        {"cross_entropy", {cross_entropy_forward_ref, cross_entropy_hand, cross_entropy_backward_fd,
                           NULL}},
        {"linear_cross_entropy", {linear_ce_matches_composition, linear_ce_chunked_matches_fused,
                                  NULL}},
        {"sum", {sum_forward_backward, NULL}},
        {"mean", {mean_forward_backward, NULL}},
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
    SRunner *sr = srunner_create(ops_loss_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
