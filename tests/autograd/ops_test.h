/* ops_test.h: what the dense-op tests of tests/autograd/ share: tolerances, assertion
 * macros, random inputs, the naive references (written the obvious way: loops, double
 * accumulation, no max-subtraction tricks; they never call the kernels under test) and the
 * one-op graph builders for tt_check_grad.
 *
 * Tolerances (each check is |got - ref| <= atol + rtol*|ref|):
 * - Forward, elementwise ops: float32 kernel vs double reference rounded to float; a few
 *   roundings and one libm call (expf/log1pf, <= 2 ulp) give ~5 * 2^-24 ~ 3e-7 relative,
 *   so rtol = 1e-6 and atol = 1e-6 (for results near 0 where the error is absolute).
 * - Forward, reductions of K terms (linear, rmsnorm, softmax, CE): float32 summation order
 *   vs double costs up to ~K * 2^-24 relative to sum|terms|; K <= 17 here and terms are
 *   O(1), so atol = 2e-5, rtol = 1e-5.
 * - Backward vs central differences (tt_check_grad: forward in float32, loss sum(r*out)
 *   accumulated in double): FD error ~ eps_f32*|out|*sqrt(n_out)/h + h^2*|f'''|/6. With
 *   h = 1e-2, |out| ~ 1 and n_out <= 30: ~3e-5 + ~2e-5*|f'''|. atol = 1e-3 (2e-3 for
 *   rmsnorm, whose f''' ~ 1/rms^3 is larger), rtol = 1e-2. Gradients here are O(0.1..1),
 *   so a wrong factor 2 or a sign flip (error >= 0.1) is caught by two orders of magnitude;
 *   this was checked by breaking backward kernels on purpose.
 */
#ifndef MOE_TESTS_OPS_TEST_H
#define MOE_TESTS_OPS_TEST_H

#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>

#define EW_ATOL 1e-6   /* elementwise forward: see above */
#define EW_RTOL 1e-6
#define RED_ATOL 2e-5  /* reductions of <= 17 terms */
#define RED_RTOL 1e-5
#define FD_H 1e-2f     /* finite-difference step */
#define FD_ATOL 1e-3
#define FD_RTOL 1e-2

/* Check's float macros promote to double inside (a -Wdouble-promotion warning); these do
 * the conversion explicitly and print both values. */
#define EXPECT_EQ(a, b) \
    ck_assert_msg((a) == (b), "%s = %.9g, expected %.9g", #a, (double)(a), (double)(b))
#define EXPECT_NEAR(a, b, tol)                                                          \
    ck_assert_msg(fabs((double)(a) - (double)(b)) <= (double)(tol), "%s = %.9g, expected %.9g", \
                  #a, (double)(a), (double)(b))

static inline Tensor *rnd2(int rows, int cols, TensorKind kind, const char *name, uint64_t seed,
                    float lo, float hi) {
    Tensor *x = tt_tensor2(rows, cols, kind, name);
    tt_fill_uniform(x, seed, lo, hi);
    return x;
}

/* got vs ref (float32, n) within atol + rtol*|ref|, all finite. (tt_max_err alone can lose a
 * NaN that is followed by a finite error, so finiteness is asserted separately.) */
static inline void expect_close(const float *got, const float *ref, size_t n, double atol,
                         double rtol, const char *what) {
    for (size_t j = 0; j < n; j++)
        ck_assert_msg(isfinite(got[j]), "%s: element %zu is %g", what, j, (double)got[j]);
    double e = tt_max_err(got, ref, n, atol, rtol);
    ck_assert_msg(e <= 1.0, "%s: max scaled error %g > 1", what, e);
}

static inline void new_tape(Tape *t, bool record) {
    tape_init(t, (size_t)1 << 16);
    tape_reset(t, record);
}

/* ---------------- references ---------------- */

static inline void ref_linear(float *y, const float *x, const float *w, int N, int in, int out) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < out; o++) {
            double s = 0;
            for (int k = 0; k < in; k++) s += (double)x[n * in + k] * (double)w[o * in + k];
            y[n * out + o] = (float)s;
        }
}

static inline double ref_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

static inline void ref_rmsnorm(float *y, const float *x, const float *g, int N, int C, double eps) {
    for (int n = 0; n < N; n++) {
        double ss = 0;
        for (int c = 0; c < C; c++) ss += (double)x[n * C + c] * (double)x[n * C + c];
        double rms = sqrt(ss / C + eps);
        for (int c = 0; c < C; c++)
            y[n * C + c] = (float)((double)x[n * C + c] / rms * (double)g[c]);
    }
}

static inline void ref_rope(float *y, const float *x, int B, int T, int nh, int D, double base,
                     int pos0) {
    int h2 = D / 2;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < nh; h++)
                for (int i = 0; i < h2; i++) {
                    int off = ((b * T + t) * nh + h) * D;
                    double ang = (double)(pos0 + t) * pow(base, -2.0 * i / D);
                    double a = (double)x[off + i], bb = (double)x[off + i + h2];
                    y[off + i] = (float)(a * cos(ang) - bb * sin(ang));
                    y[off + i + h2] = (float)(bb * cos(ang) + a * sin(ang));
                }
}

static inline void ref_softmax(float *y, const float *x, int N, int M) {
    for (int n = 0; n < N; n++) {
        double s = 0;
        for (int m = 0; m < M; m++) s += exp((double)x[n * M + m]);
        for (int m = 0; m < M; m++) y[n * M + m] = (float)(exp((double)x[n * M + m]) / s);
    }
}

/* scale / d * sum over targets != LOSS_IGNORE of -log softmax; d = denom when > 0, else
 * the count of those targets (0: the loss is 0). */
static inline double ref_cross_entropy_d(const float *x, const int32_t *tgt, int N, int V,
                                         double scale, double denom) {
    double loss = 0;
    int cnt = 0;
    for (int n = 0; n < N; n++) {
        if (tgt[n] == LOSS_IGNORE) continue;
        double s = 0;
        for (int v = 0; v < V; v++) s += exp((double)x[n * V + v]);
        loss += log(s) - (double)x[n * V + tgt[n]];
        cnt++;
    }
    const double d = denom > 0 ? denom : cnt;
    return d > 0 ? scale * loss / d : 0.0;
}
static inline double ref_cross_entropy(const float *x, const int32_t *tgt, int N, int V,
                                double scale) {
    return ref_cross_entropy_d(x, tgt, N, V, scale, 0.0);
}

/* ---------------- graph builders ---------------- */

static inline Tensor *b_linear(Tape *t, Tensor **in, void *ctx) {
    (void)ctx;
    return op_linear(t, in[0], in[1]);
}
static inline Tensor *b_add(Tape *t, Tensor **in, void *ctx) {
    (void)ctx;
    return op_add(t, in[0], in[1]);
}
static inline Tensor *b_mul(Tape *t, Tensor **in, void *ctx) {
    (void)ctx;
    return op_mul(t, in[0], in[1]);
}
static inline Tensor *b_scale(Tape *t, Tensor **in, void *ctx) {
    return op_scale(t, in[0], *(const float *)ctx);
}
static inline Tensor *b_silu(Tape *t, Tensor **in, void *ctx) {
    (void)ctx;
    return op_silu(t, in[0]);
}
static inline Tensor *b_swiglu(Tape *t, Tensor **in, void *ctx) {
    (void)ctx;
    return op_swiglu(t, in[0], in[1]);
}
static inline Tensor *b_softplus(Tape *t, Tensor **in, void *ctx) {
    (void)ctx;
    return op_softplus(t, in[0]);
}
static inline Tensor *b_rmsnorm(Tape *t, Tensor **in, void *ctx) {
    return op_rmsnorm(t, in[0], in[1], *(const float *)ctx);
}
typedef struct { int B, T, nh, D, pos0; float base; } RopeCtx;
static inline Tensor *b_rope(Tape *t, Tensor **in, void *ctx) {
    const RopeCtx *c = ctx;
    return op_rope(t, in[0], c->B, c->T, c->nh, c->D, c->base, c->pos0);
}
typedef struct { const int32_t *ids; int N; } EmbCtx;
static inline Tensor *b_embedding(Tape *t, Tensor **in, void *ctx) {
    const EmbCtx *c = ctx;
    return op_embedding(t, in[0], c->ids, c->N);
}
static inline Tensor *b_softmax(Tape *t, Tensor **in, void *ctx) {
    (void)ctx;
    return op_softmax(t, in[0]);
}
/* denom: the loss's divisor (> 0), or 0 for the call's own count (autograd/ops.h) */
typedef struct { const int32_t *tgt; float scale; double denom; } CeCtx;
static inline Tensor *b_cross_entropy(Tape *t, Tensor **in, void *ctx) {
    const CeCtx *c = ctx;
    return op_cross_entropy(t, in[0], c->tgt, c->scale, c->denom);
}
static inline Tensor *b_sum(Tape *t, Tensor **in, void *ctx) {
    (void)ctx;
    return op_sum(t, in[0]);
}
static inline Tensor *b_mean(Tape *t, Tensor **in, void *ctx) {
    (void)ctx;
    return op_mean(t, in[0]);
}


#endif
