/* test_ops_loss.c: softmax and the language-model loss, autograd/ops_loss.c (op_softmax,
 * op_cross_entropy, the fused and the chunked LM head + loss against their unfused
 * compositions; the ignore label LOSS_IGNORE and the shared denominator: finite
 * differences, bit-identity when only ignored rows differ, a split batch equal to the
 * whole, no target at all), and the reductions of autograd/ops_reduce.c (op_sum, op_mean): double
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

/* ---------------- the ignore label and the shared denominator ---------------- */

/* The three forms of the loss, by index: 0 unfused (op_cross_entropy of op_linear), 1 fused,
 * 2 chunked (chunk 2). */
static Tensor *loss_form(Tape *t, int form, Tensor *x, Tensor *w, const int32_t *tgt,
                         float scale, double denom) {
    if (form == 0) return op_cross_entropy(t, op_linear(t, x, w), tgt, scale, denom);
    if (form == 1) return op_linear_cross_entropy(t, x, w, tgt, scale, denom, NULL);
    return op_linear_cross_entropy_chunked(t, x, w, tgt, scale, denom, 2);
}

/* A given denominator: forward equals the double reference scale / denom x sum, for each
 * form; central differences of the loss with denom > 0 (7.5, not the count 4, so a loss that
 * ignored denom would be off by a factor 1.9) and with the targets mostly ignored. */
START_TEST(ignore_denom_forward_fd) {
    Tensor *x = rnd2(6, 5, TENSOR_PARAM, "x", 90, -1, 1);
    Tensor *w = rnd2(7, 5, TENSOR_PARAM, "w", 91, -1, 1);
    const int32_t tgt[6] = {LOSS_IGNORE, 3, LOSS_IGNORE, 6, 0, 2};
    Tape t;
    new_tape(&t, false);
    float *logits = malloc(sizeof(float) * 42);
    ref_linear(logits, x->data, w->data, 6, 5, 7);
    for (int form = 0; form < 3; form++) {
        tape_reset(&t, false);
        Tensor *y = loss_form(&t, form, x, w, tgt, 0.5f, 7.5);
        const float r = (float)ref_cross_entropy_d(logits, tgt, 6, 7, 0.5, 7.5);
        expect_close(y->data, &r, 1, RED_ATOL, RED_RTOL, "loss with denom 7.5");
    }
    tape_free(&t);
    free(logits);
    Tensor *in[2] = {x, w};
    CeCtx c = {tgt, 1.5f, 7.5};
    ck_assert_int_eq(tt_check_grad(b_linear_ce, &c, in, 2, FD_H, FD_ATOL, FD_RTOL,
                                   "linear_ce denom"), 0);
    ChunkCtx cc = {tgt, 1.5f, 4, 7.5};
    ck_assert_int_eq(tt_check_grad(b_linear_ce_chunked, &cc, in, 2, FD_H, FD_ATOL, FD_RTOL,
                                   "linear_ce_chunked denom"), 0);
    Tensor *lg = rnd2(6, 7, TENSOR_PARAM, "logits", 92, -2, 2);
    Tensor *lin[1] = {lg};
    const int32_t one[6] = {LOSS_IGNORE, LOSS_IGNORE, LOSS_IGNORE, LOSS_IGNORE, 5,
                            LOSS_IGNORE};
    CeCtx c1 = {one, 1.0f, 0};
    ck_assert_int_eq(tt_check_grad(b_cross_entropy, &c1, lin, 1, FD_H, FD_ATOL, FD_RTOL,
                                   "ce one target"), 0);
    CeCtx c2 = {tgt, 2.0f, 2.5};
    ck_assert_int_eq(tt_check_grad(b_cross_entropy, &c2, lin, 1, FD_H, FD_ATOL, FD_RTOL,
                                   "ce denom"), 0);
    tt_free(lg);
    tt_free(x);
    tt_free(w);
}
END_TEST

/* Two batches that differ only where the target is ignored (the rows of x, the logits, of
 * those positions): the loss and every gradient are bit-identical (the same arithmetic: an
 * ignored row adds exact zeros), and the ignored rows of dx are exactly zero; each form. */
START_TEST(ignore_masked_rows_change_nothing) {
    const int32_t tgt[6] = {4, LOSS_IGNORE, 0, LOSS_IGNORE, LOSS_IGNORE, 6};
    Tensor *w = rnd2(7, 5, TENSOR_PARAM, "w", 94, -1, 1);
    Tensor *x[2] = {rnd2(6, 5, TENSOR_PARAM, "x0", 93, -1, 1),
                    rnd2(6, 5, TENSOR_PARAM, "x1", 95, -3, 3)};
    for (int n = 0; n < 6; n++)   /* x1 = x0 except on the ignored rows */
        if (tgt[n] != LOSS_IGNORE)
            memcpy(x[1]->data + n * 5, x[0]->data + n * 5, sizeof(float) * 5);
    ck_assert(memcmp(x[0]->data, x[1]->data, sizeof(float) * 30) != 0);
    for (int form = 0; form < 3; form++) {
        float loss[2], gx[2][30], gw[2][35];
        for (int b = 0; b < 2; b++) {
            Tape t;
            new_tape(&t, true);
            memset(x[b]->grad, 0, sizeof(float) * 30);
            memset(w->grad, 0, sizeof(float) * 35);
            Tensor *y = loss_form(&t, form, x[b], w, tgt, 1.0f, form == 1 ? 0 : 3.0);
            tape_backward(&t, y, NULL);
            loss[b] = y->data[0];
            memcpy(gx[b], x[b]->grad, sizeof gx[b]);
            memcpy(gw[b], w->grad, sizeof gw[b]);
            tape_free(&t);
        }
        ck_assert_msg(loss[0] == loss[1] && isfinite(loss[0]), "form %d: loss %.9g vs %.9g",
                      form, (double)loss[0], (double)loss[1]);
        ck_assert_msg(!memcmp(gw[0], gw[1], sizeof gw[0]), "form %d: dW differs", form);
        ck_assert_msg(!memcmp(gx[0], gx[1], sizeof gx[0]), "form %d: dx differs", form);
        for (int n = 0; n < 6; n++)
            for (int k = 0; k < 5 && tgt[n] == LOSS_IGNORE; k++)
                ck_assert_msg(gx[0][n * 5 + k] == 0.0f, "form %d: dx[%d][%d] = %g", form, n, k,
                              (double)gx[0][n * 5 + k]);
    }
    tt_free(x[0]);
    tt_free(x[1]);
    tt_free(w);
}
END_TEST

/* One batch split into 3 calls of uneven target counts (4 rows, none, 2), each with scale
 * 1/3 and the shared denominator (total count) / 3, as train/train.c calls it for
 * micro-batches and ranks: the summed losses and gradients equal one call over the whole
 * batch (RED_*: the same terms summed in another order). Per-call means would not: the
 * rows of the 2-target call would weigh twice as much. */
START_TEST(ignore_split_batch_equals_whole) {
    Tensor *x = rnd2(12, 5, TENSOR_PARAM, "x", 96, -1, 1);
    Tensor *w = rnd2(7, 5, TENSOR_PARAM, "w", 97, -1, 1);
    const int32_t tgt[12] = {1, 2, 3, 4, LOSS_IGNORE, LOSS_IGNORE, LOSS_IGNORE, LOSS_IGNORE,
                             5, LOSS_IGNORE, 6, LOSS_IGNORE};
    for (int form = 0; form < 3; form++) {
        Tape t;
        new_tape(&t, true);
        memset(x->grad, 0, sizeof(float) * x->n);
        memset(w->grad, 0, sizeof(float) * w->n);
        Tensor *y = loss_form(&t, form, x, w, tgt, 1.0f, 0);
        tape_backward(&t, y, NULL);
        const float whole = y->data[0];
        float gx[60], gw[35];
        memcpy(gx, x->grad, sizeof gx);
        memcpy(gw, w->grad, sizeof gw);
        memset(x->grad, 0, sizeof gx);
        memset(w->grad, 0, sizeof gw);
        float sum = 0.0f;
        for (int part = 0; part < 3; part++) {
            Tensor *xp = tt_tensor2(4, 5, TENSOR_PARAM, "xp");
            memcpy(xp->data, x->data + part * 20, sizeof(float) * 20);
            tape_reset(&t, true);
            Tensor *yp = loss_form(&t, form, xp, w, tgt + part * 4, 1.0f / 3.0f, 6.0 / 3.0);
            tape_backward(&t, yp, NULL);
            sum += yp->data[0];
            for (int j = 0; j < 20; j++) x->grad[part * 20 + j] = xp->grad[j];
            tt_free(xp);
        }
        expect_close(&sum, &whole, 1, RED_ATOL, RED_RTOL, "split loss");
        expect_close(x->grad, gx, 60, RED_ATOL, RED_RTOL, "split dx");
        expect_close(w->grad, gw, 35, RED_ATOL, RED_RTOL, "split dW");
        tape_free(&t);
    }
    tt_free(x);
    tt_free(w);
}
END_TEST

/* No target at all: loss 0 and no gradient, with the call's own count (0) and with a
 * denominator given (a call without targets in a batch that has some elsewhere). */
START_TEST(ignore_all_targets) {
    Tensor *x = rnd2(4, 5, TENSOR_PARAM, "x", 98, -1, 1);
    Tensor *w = rnd2(7, 5, TENSOR_PARAM, "w", 99, -1, 1);
    const int32_t none[4] = {LOSS_IGNORE, LOSS_IGNORE, LOSS_IGNORE, LOSS_IGNORE};
    for (int form = 0; form < 3; form++)
        for (int d = 0; d < 2; d++) {
            Tape t;
            new_tape(&t, true);
            memset(x->grad, 0, sizeof(float) * x->n);
            memset(w->grad, 0, sizeof(float) * w->n);
            Tensor *y = loss_form(&t, form, x, w, none, 1.0f, d ? 5.0 : 0.0);
            tape_backward(&t, y, NULL);
            EXPECT_EQ(y->data[0], 0.0f);
            for (size_t j = 0; j < x->n; j++) EXPECT_EQ(x->grad[j], 0.0f);
            for (size_t j = 0; j < w->n; j++) EXPECT_EQ(w->grad[j], 0.0f);
            tape_free(&t);
        }
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
        {"ignore_label", {ignore_denom_forward_fd, ignore_masked_rows_change_nothing,
                          ignore_split_batch_equals_whole, ignore_all_targets, NULL}},
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
