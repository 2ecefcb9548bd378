/* test_ops.c: the dense ops of autograd/ops.c against naive references, hand-computed
 * values and central finite differences; plus tape plumbing (frozen weights, gradient
 * accumulation across tapes, no arena growth after the first step).
 *
 * The naive references below are written the obvious way (triple loops, double
 * accumulation, no max-subtraction tricks) and never call the kernels under test.
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
#include "core/pool.h"
#include "testutil.h"

#include "autograd/blas.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EW_ATOL 1e-6   /* elementwise forward: see the file comment */
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

static Tensor *rnd2(int rows, int cols, TensorKind kind, const char *name, uint64_t seed,
                    float lo, float hi) {
    Tensor *x = tt_tensor2(rows, cols, kind, name);
    tt_fill_uniform(x, seed, lo, hi);
    return x;
}

/* got vs ref (float32, n) within atol + rtol*|ref|, all finite. (tt_max_err alone can lose a
 * NaN that is followed by a finite error, so finiteness is asserted separately.) */
static void expect_close(const float *got, const float *ref, size_t n, double atol,
                         double rtol, const char *what) {
    for (size_t j = 0; j < n; j++)
        ck_assert_msg(isfinite(got[j]), "%s: element %zu is %g", what, j, (double)got[j]);
    double e = tt_max_err(got, ref, n, atol, rtol);
    ck_assert_msg(e <= 1.0, "%s: max scaled error %g > 1", what, e);
}

static void new_tape(Tape *t, bool record) {
    tape_init(t, (size_t)1 << 16);
    tape_reset(t, record);
}

/* ======================================================================== references */

static void ref_linear(float *y, const float *x, const float *w, int N, int in, int out) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < out; o++) {
            double s = 0;
            for (int k = 0; k < in; k++) s += (double)x[n * in + k] * (double)w[o * in + k];
            y[n * out + o] = (float)s;
        }
}

static double ref_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

static void ref_rmsnorm(float *y, const float *x, const float *g, int N, int C, double eps) {
    for (int n = 0; n < N; n++) {
        double ss = 0;
        for (int c = 0; c < C; c++) ss += (double)x[n * C + c] * (double)x[n * C + c];
        double rms = sqrt(ss / C + eps);
        for (int c = 0; c < C; c++) y[n * C + c] = (float)((double)x[n * C + c] / rms * (double)g[c]);
    }
}

static void ref_rope(float *y, const float *x, int B, int T, int nh, int D, double base,
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

static void ref_softmax(float *y, const float *x, int N, int M) {
    for (int n = 0; n < N; n++) {
        double s = 0;
        for (int m = 0; m < M; m++) s += exp((double)x[n * M + m]);
        for (int m = 0; m < M; m++) y[n * M + m] = (float)(exp((double)x[n * M + m]) / s);
    }
}

static double ref_cross_entropy(const float *x, const int32_t *tgt, int N, int V,
                                double scale) {
    double loss = 0;
    int cnt = 0;
    for (int n = 0; n < N; n++) {
        if (tgt[n] < 0) continue;
        double s = 0;
        for (int v = 0; v < V; v++) s += exp((double)x[n * V + v]);
        loss += log(s) - (double)x[n * V + tgt[n]];
        cnt++;
    }
    return cnt ? scale * loss / cnt : 0.0;
}

/* ======================================================================== graph builders */

static Tensor *b_linear(Tape *t, Tensor **in, void *ctx) {
    (void)ctx;
    return op_linear(t, in[0], in[1]);
}
static Tensor *b_add(Tape *t, Tensor **in, void *ctx) {
    (void)ctx;
    return op_add(t, in[0], in[1]);
}
static Tensor *b_mul(Tape *t, Tensor **in, void *ctx) {
    (void)ctx;
    return op_mul(t, in[0], in[1]);
}
static Tensor *b_scale(Tape *t, Tensor **in, void *ctx) {
    return op_scale(t, in[0], *(const float *)ctx);
}
static Tensor *b_silu(Tape *t, Tensor **in, void *ctx) {
    (void)ctx;
    return op_silu(t, in[0]);
}
static Tensor *b_swiglu(Tape *t, Tensor **in, void *ctx) {
    (void)ctx;
    return op_swiglu(t, in[0], in[1]);
}
static Tensor *b_softplus(Tape *t, Tensor **in, void *ctx) {
    (void)ctx;
    return op_softplus(t, in[0]);
}
static Tensor *b_rmsnorm(Tape *t, Tensor **in, void *ctx) {
    return op_rmsnorm(t, in[0], in[1], *(const float *)ctx);
}
typedef struct { int B, T, nh, D, pos0; float base; } RopeCtx;
static Tensor *b_rope(Tape *t, Tensor **in, void *ctx) {
    const RopeCtx *c = ctx;
    return op_rope(t, in[0], c->B, c->T, c->nh, c->D, c->base, c->pos0);
}
typedef struct { const int32_t *ids; int N; } EmbCtx;
static Tensor *b_embedding(Tape *t, Tensor **in, void *ctx) {
    const EmbCtx *c = ctx;
    return op_embedding(t, in[0], c->ids, c->N);
}
static Tensor *b_softmax(Tape *t, Tensor **in, void *ctx) {
    (void)ctx;
    return op_softmax(t, in[0]);
}
typedef struct { const int32_t *tgt; float scale; } CeCtx;
static Tensor *b_cross_entropy(Tape *t, Tensor **in, void *ctx) {
    const CeCtx *c = ctx;
    return op_cross_entropy(t, in[0], c->tgt, c->scale);
}
static Tensor *b_sum(Tape *t, Tensor **in, void *ctx) {
    (void)ctx;
    return op_sum(t, in[0]);
}
static Tensor *b_mean(Tape *t, Tensor **in, void *ctx) {
    (void)ctx;
    return op_mean(t, in[0]);
}

/* ======================================================================== linear */

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

/* ======================================================================== elementwise */

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
    Tensor *a = rnd2(3, 5, TENSOR_PARAM, "a", 8, -1, 1), *b = rnd2(3, 5, TENSOR_PARAM, "b", 9, -1, 1);
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
    Tensor *a = rnd2(3, 5, TENSOR_PARAM, "a", 10, -2, 2), *b = rnd2(3, 5, TENSOR_PARAM, "b", 11, -2, 2);
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
    Tensor *a = rnd2(3, 5, TENSOR_PARAM, "a", 14, -3, 3), *b = rnd2(3, 5, TENSOR_PARAM, "b", 15, -2, 2);
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
    Tensor *a = rnd2(R, Cc, TENSOR_PARAM, "a", 16, -4, 4), *b = rnd2(R, Cc, TENSOR_PARAM, "b", 17, -2, 2);
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

/* ======================================================================== swiglu + linear */

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
         * linear's: the RED bound (see the file comment) still holds with 10x margin */
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
        /* smooth in a (silu), bilinear in (b, W): the FD error bound of the file comment */
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

/* ======================================================================== linear + residual */

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
    /* a sum of 9 products of size <= 1 plus |r| <= 3: the RED bound (file comment) */
    expect_close(y->data, ref, (size_t)N * out, RED_ATOL, RED_RTOL, "linear_residual forward");
    tape_free(&t);
    tt_free(r);
    tt_free(x);
    tt_free(w);
    for (int frozen = 0; frozen < 2; frozen++) {
        Tensor *in3[3] = {rnd2(3, 4, TENSOR_PARAM, "r", 503, -2, 2),
                          rnd2(3, 6, TENSOR_PARAM, "x", 504, -1, 1),
                          rnd2(4, 6, frozen ? TENSOR_FROZEN : TENSOR_PARAM, "w", 505, -1, 1)};
        /* linear in each input: FD is exact up to float rounding (file comment) */
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

/* ======================================================================== rmsnorm */

START_TEST(rmsnorm_forward_ref) {
    const int shapes[][2] = {{3, 5}, {1, 1}, {4, 17}};
    for (size_t s = 0; s < 3; s++) {
        int N = shapes[s][0], C = shapes[s][1];
        Tensor *x = rnd2(N, C, TENSOR_CONST, "x", 20 + s, -2, 2);
        Tensor *g = rnd2(1, C, TENSOR_CONST, "g", 30 + s, 0.5f, 1.5f);
        Tape t;
        new_tape(&t, false);
        Tensor *y = op_rmsnorm(&t, x, g, 1e-5f);
        float *r = malloc(sizeof(float) * (size_t)N * C);
        ref_rmsnorm(r, x->data, g->data, N, C, (double)1e-5f);
        expect_close(y->data, r, (size_t)N * C, RED_ATOL, RED_RTOL, "rmsnorm forward");
        free(r);
        tape_free(&t);
        tt_free(x);
        tt_free(g);
    }
}
END_TEST

/* Large enough (N*C >= 2^16) that rmsnorm splits its rows over the cores and sums the gain
 * gradient per row range (the suite also runs this with 2 threads): forward, dx and dg
 * against the closed forms in double. Tolerances: forward as RED_* (sums of C = 256 squares
 * in double, then a few float roundings); dx, dg: rtol 1e-4 / atol 1e-5, since dg sums
 * N = 300 float products per element (~300 * 2^-24 ~ 2e-5 relative to sum|terms|). */
START_TEST(rmsnorm_large_split) {
    const int N = 300, C = 256;
    const size_t n = (size_t)N * C;
    Tensor *x = rnd2(N, C, TENSOR_PARAM, "x", 40, -2, 2);
    Tensor *g = rnd2(1, C, TENSOR_PARAM, "g", 41, 0.5f, 1.5f);
    Tape t;
    new_tape(&t, true);
    Tensor *y = op_rmsnorm(&t, x, g, 1e-5f);
    float *ref = malloc(sizeof(float) * n), *dy = malloc(sizeof(float) * n);
    float *rdx = malloc(sizeof(float) * n);
    double *rdg = calloc((size_t)C, sizeof(double));
    ref_rmsnorm(ref, x->data, g->data, N, C, (double)1e-5f);
    expect_close(y->data, ref, n, RED_ATOL, RED_RTOL, "rmsnorm large forward");
    MoeRng rng;
    rng_seed(&rng, 42);
    for (size_t j = 0; j < n; j++) dy[j] = (float)(2.0 * rng_uniform(&rng) - 1.0);
    for (int r = 0; r < N; r++) {
        const float *xr = x->data + (size_t)r * C, *dyr = dy + (size_t)r * C;
        double ss = 0, dot = 0;
        for (int c = 0; c < C; c++) ss += (double)xr[c] * (double)xr[c];
        double rs = 1.0 / sqrt(ss / C + (double)1e-5f);
        for (int c = 0; c < C; c++) dot += (double)dyr[c] * (double)g->data[c] * (double)xr[c];
        for (int c = 0; c < C; c++) {
            rdx[(size_t)r * C + c] =
                (float)(rs * (double)g->data[c] * (double)dyr[c] - (double)xr[c] * rs * rs * rs / C * dot);
            rdg[c] += (double)dyr[c] * (double)xr[c] * rs;
        }
    }
    tape_backward(&t, y, dy);
    expect_close(x->grad, rdx, n, 1e-5, 1e-4, "rmsnorm large dx");
    float *rdgf = malloc(sizeof(float) * (size_t)C);
    for (int c = 0; c < C; c++) rdgf[c] = (float)rdg[c];
    expect_close(g->grad, rdgf, (size_t)C, 1e-5, 1e-4, "rmsnorm large dg");
    tape_free(&t);
    free(ref);
    free(dy);
    free(rdx);
    free(rdg);
    free(rdgf);
    tt_free(x);
    tt_free(g);
}
END_TEST

/* x = [3, 4], g = [1, 1], eps = 0: mean(x^2) = (9 + 16) / 2 = 12.5, rms = sqrt(12.5)
 * = 3.5355339, y = [3, 4] / 3.5355339 = [0.8485281, 1.1313708]. */
START_TEST(rmsnorm_hand) {
    Tensor *x = tt_tensor2(1, 2, TENSOR_CONST, "x"), *g = tt_tensor2(1, 2, TENSOR_CONST, "g");
    x->data[0] = 3.0f;
    x->data[1] = 4.0f;
    g->data[0] = g->data[1] = 1.0f;
    Tape t;
    new_tape(&t, false);
    Tensor *y = op_rmsnorm(&t, x, g, 0.0f);
    EXPECT_NEAR(y->data[0], 0.8485281f, 1e-6f);
    EXPECT_NEAR(y->data[1], 1.1313708f, 1e-6f);
    tape_free(&t);
    tt_free(x);
    tt_free(g);
}
END_TEST

/* rmsnorm's f''' grows like 1/rms^3: inputs in [-1, 1] with C = 5 keep rms >~ 0.3 and the
 * truncation error below ~1e-3, hence atol 2e-3. */
START_TEST(rmsnorm_backward_fd) {
    Tensor *x = rnd2(3, 5, TENSOR_PARAM, "x", 21, -1, 1);
    Tensor *g = rnd2(1, 5, TENSOR_PARAM, "g", 22, 0.5f, 1.5f);
    float eps = 1e-5f;
    Tensor *in[2] = {x, g};
    ck_assert_int_eq(tt_check_grad(b_rmsnorm, &eps, in, 2, FD_H, 2e-3, FD_RTOL, "rmsnorm"), 0);
    tt_free(x);
    tt_free(g);
}
END_TEST

/* ======================================================================== rope */

START_TEST(rope_forward_ref) {
    /* (B, T, nh, D, pos0): odd T and nh, a large position where a float angle would drift. */
    const int cfg[][5] = {{2, 3, 3, 4, 0}, {1, 5, 1, 8, 7}, {1, 2, 2, 6, 100000}};
    for (size_t s = 0; s < 3; s++) {
        int B = cfg[s][0], T = cfg[s][1], nh = cfg[s][2], D = cfg[s][3], pos0 = cfg[s][4];
        Tensor *x = rnd2(B * T, nh * D, TENSOR_CONST, "x", 40 + s, -1, 1);
        Tape t;
        new_tape(&t, false);
        Tensor *y = op_rope(&t, x, B, T, nh, D, 10000.0f, pos0);
        float *r = malloc(sizeof(float) * x->n);
        ref_rope(r, x->data, B, T, nh, D, 10000.0, pos0);
        /* A rotation of O(1) values: cos/sin rounded to float (2^-24) plus two products and a
         * sum: ~4 * 6e-8 absolute; EW tolerances apply. */
        expect_close(y->data, r, x->n, EW_ATOL, EW_RTOL, "rope forward");
        free(r);
        tape_free(&t);
        tt_free(x);
    }
}
END_TEST

/* Position 0 is the identity (cos 0 = 1, sin 0 = 0 exactly); each (i, i+D/2) pair keeps its
 * norm; one element by hand. */
START_TEST(rope_properties) {
    int B = 2, T = 3, nh = 2, D = 4;
    Tensor *x = rnd2(B * T, nh * D, TENSOR_CONST, "x", 41, -1, 1);
    Tape t;
    new_tape(&t, false);
    Tensor *y = op_rope(&t, x, B, T, nh, D, 10000.0f, 0);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < nh * D; c++) {
            size_t j = (size_t)(b * T) * nh * D + c; /* t = 0 row of sequence b */
            EXPECT_EQ(y->data[j], x->data[j]);
        }
    for (int row = 0; row < B * T; row++)
        for (int h = 0; h < nh; h++)
            for (int i = 0; i < D / 2; i++) {
                size_t o = (size_t)row * nh * D + h * D;
                double nx = hypot((double)x->data[o + i], (double)x->data[o + i + D / 2]);
                double ny = hypot((double)y->data[o + i], (double)y->data[o + i + D / 2]);
                ck_assert_msg(fabs(nx - ny) <= 1e-6 + 1e-6 * nx, "norm %g -> %g", nx, ny);
            }

    /* By hand: D = 4, base = 10000, pos0 = 7, x = [1, 2, 3, 4].
     * theta_0 = 7 * 10000^0 = 7 rad; theta_1 = 7 * 10000^(-2/4) = 7/100 = 0.07 rad.
     * y[0] = 1 cos 7 - 3 sin 7 = 0.753902 - 1.970960 = -1.217058
     * y[1] = 2 cos 0.07 - 4 sin 0.07 = 1.995102 - 0.279771 = 1.715331
     * y[2] = 3 cos 7 + 1 sin 7 = 2.261707 + 0.656987 = 2.918694
     * y[3] = 4 cos 0.07 + 2 sin 0.07 = 3.990204 + 0.139886 = 4.130090 */
    tape_reset(&t, false);
    Tensor *x1 = tt_tensor2(1, 4, TENSOR_CONST, "x1");
    for (int j = 0; j < 4; j++) x1->data[j] = (float)(j + 1);
    Tensor *y1 = op_rope(&t, x1, 1, 1, 1, 4, 10000.0f, 7);
    EXPECT_NEAR(y1->data[0], -1.217058f, 2e-6f);
    EXPECT_NEAR(y1->data[1], 1.715331f, 2e-6f);
    EXPECT_NEAR(y1->data[2], 2.918694f, 2e-6f);
    EXPECT_NEAR(y1->data[3], 4.130090f, 2e-6f);
    EXPECT_NEAR(y1->data[1], (float)(2 * cos(0.07) - 4 * sin(0.07)), 1e-6f);
    tape_free(&t);
    tt_free(x1);
    tt_free(x);
}
END_TEST

START_TEST(rope_backward_fd) {
    RopeCtx c = {2, 3, 1, 4, 5, 10000.0f};
    Tensor *x = rnd2(c.B * c.T, c.nh * c.D, TENSOR_PARAM, "x", 42, -1, 1);
    Tensor *in[1] = {x};
    ck_assert_int_eq(tt_check_grad(b_rope, &c, in, 1, FD_H, FD_ATOL, FD_RTOL, "rope"), 0);
    RopeCtx c2 = {1, 2, 3, 6, 0, 500.0f};
    Tensor *x2 = rnd2(c2.B * c2.T, c2.nh * c2.D, TENSOR_PARAM, "x2", 43, -1, 1);
    Tensor *in2[1] = {x2};
    ck_assert_int_eq(tt_check_grad(b_rope, &c2, in2, 1, FD_H, FD_ATOL, FD_RTOL, "rope nh=3"), 0);
    tt_free(x);
    tt_free(x2);
}
END_TEST

/* op_rope_inplace: the rotation written over its input's memory equals op_rope bit for bit
 * (same products and sums), forward and backward; finite differences through a copy
 * (op_scale by 1, whose backward never reads its output) so the FD re-runs see fresh x. */
static Tensor *b_rope_inplace(Tape *t, Tensor **in, void *ctx) {
    const RopeCtx *c = ctx;
    return op_rope_inplace(t, op_scale(t, in[0], 1.0f), c->B, c->T, c->nh, c->D, c->base,
                           c->pos0);
}

START_TEST(rope_inplace_matches) {
    const int cfg[][5] = {{2, 3, 3, 4, 0}, {1, 2, 2, 6, 100000}};
    for (size_t s = 0; s < 2; s++) {
        int B = cfg[s][0], T = cfg[s][1], nh = cfg[s][2], D = cfg[s][3], pos0 = cfg[s][4];
        Tensor *x = rnd2(B * T, nh * D, TENSOR_PARAM, "x", 60 + s, -1, 1);
        Tensor *x2 = rnd2(B * T, nh * D, TENSOR_PARAM, "x2", 60 + s, -1, 1);
        Tensor *r = rnd2(B * T, nh * D, TENSOR_CONST, "r", 70 + s, -1, 1);
        Tape t;
        new_tape(&t, true);
        Tensor *y = op_rope(&t, x, B, T, nh, D, 10000.0f, pos0);
        tape_backward(&t, y, r->data);
        float *ref = malloc(x->n * sizeof(float));   /* y lives in the arena: keep a copy */
        memcpy(ref, y->data, x->n * sizeof(float));
        tape_reset(&t, true);
        Tensor *y2 = op_rope_inplace(&t, x2, B, T, nh, D, 10000.0f, pos0);
        ck_assert_ptr_eq(y2->data, x2->data);
        ck_assert_ptr_ne(y2, x2);
        tape_backward(&t, y2, r->data);
        ck_assert(memcmp(ref, y2->data, x->n * sizeof(float)) == 0);
        ck_assert(memcmp(x->grad, x2->grad, x->n * sizeof(float)) == 0);
        free(ref);
        tape_free(&t);
        tt_free(x);
        tt_free(x2);
        tt_free(r);
    }
    RopeCtx c = {2, 3, 2, 4, 5, 10000.0f};
    Tensor *x = rnd2(c.B * c.T, c.nh * c.D, TENSOR_PARAM, "x", 62, -1, 1);
    Tensor *in[1] = {x};
    ck_assert_int_eq(tt_check_grad(b_rope_inplace, &c, in, 1, FD_H, FD_ATOL, FD_RTOL,
                                   "rope in place"), 0);
    tt_free(x);
}
END_TEST

/* ======================================================================== embedding */

START_TEST(embedding_forward_backward) {
    Tensor *w = rnd2(5, 3, TENSOR_PARAM, "w", 50, -1, 1);
    const int32_t ids[7] = {4, 0, 2, 4, 4, 1, 0}; /* repeats: the scatter-add must accumulate */
    Tape t;
    new_tape(&t, false);
    Tensor *y = op_embedding(&t, w, ids, 7);
    ck_assert_int_eq(y->shape[0], 7);
    ck_assert_int_eq(y->shape[1], 3);
    for (int n = 0; n < 7; n++)
        for (int c = 0; c < 3; c++) EXPECT_EQ(y->data[n * 3 + c], w->data[ids[n] * 3 + c]);
    tape_free(&t);
    EmbCtx c = {ids, 7};
    Tensor *in[1] = {w};
    ck_assert_int_eq(tt_check_grad(b_embedding, &c, in, 1, FD_H, FD_ATOL, FD_RTOL, "embedding"),
                     0);
    /* Row 3 is never looked up: its gradient stays exactly 0. */
    for (int k = 0; k < 3; k++) EXPECT_EQ(w->grad[3 * 3 + k], 0.0f);
    tt_free(w);
}
END_TEST

/* Split over the cores (the copy and the scatter-add, pool_parallel_range; N C = 96,000 >
 * POOL_SPLIT_MIN): N = 1000 positions of C = 96 over V = 50 ids, so ids repeat ~20 times,
 * id 7 at the 300 positions 100..399 (one long run), id 13 never (its gradient row must
 * stay as it was); N = 0 empty. At 1 and 2 threads, bit for bit against the serial loop
 * dw[ids[n]] += dy[n], n ascending, from a random starting gradient: float addition is not
 * associative, so adding a row's terms in another order would change some roundings. */
START_TEST(embedding_split) {
    const int V = 50, N = 1000, C = 96;
    int32_t *ids = malloc(sizeof(int32_t) * N);
    MoeRng r;
    rng_seed(&r, 51);
    for (int n = 0; n < N; n++) {
        ids[n] = n >= 100 && n < 400 ? 7 : (int32_t)(rng_next(&r) % (uint64_t)V);
        if (ids[n] == 13) ids[n] = 12;
    }
    Tensor *w = rnd2(V, C, TENSOR_PARAM, "w", 52, -1, 1);
    float *g0 = malloc(sizeof(float) * w->n), *ref = malloc(sizeof(float) * w->n);
    float *dy = malloc(sizeof(float) * (size_t)N * C);
    for (size_t j = 0; j < w->n; j++) g0[j] = (float)(2.0 * rng_uniform(&r) - 1.0);
    for (size_t j = 0; j < (size_t)N * C; j++) dy[j] = (float)(2.0 * rng_uniform(&r) - 1.0);
    memcpy(ref, g0, sizeof(float) * w->n);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) ref[(size_t)ids[n] * C + c] += dy[(size_t)n * C + c];
    const int keep = blas_threads();
    for (int th = 1; th <= 2; th++) {
        blas_set_threads(th);
        Tape t;
        tape_init(&t, 1 << 16);
        memcpy(w->grad, g0, sizeof(float) * w->n);
        tt_poison_arena(&t, (size_t)N * C + 4096, true);
        Tensor *y = op_embedding(&t, w, ids, N);
        for (int n = 0; n < N; n++)
            ck_assert_msg(memcmp(y->data + (size_t)n * C, w->data + (size_t)ids[n] * C,
                                 sizeof(float) * C) == 0, "row %d (%d threads)", n, th);
        tape_backward(&t, y, dy);
        ck_assert_msg(memcmp(w->grad, ref, sizeof(float) * w->n) == 0,
                      "embedding dW differs from the serial loop (%d threads)", th);
        tape_reset(&t, true);
        Tensor *e = op_embedding(&t, w, ids, 0);
        ck_assert_int_eq((int)tensor_rows(e), 0);
        tape_backward(&t, e, NULL);
        ck_assert_msg(memcmp(w->grad, ref, sizeof(float) * w->n) == 0, "empty lookup wrote");
        tape_free(&t);
    }
    blas_set_threads(keep);
    tt_free(w);
    free(ids);
    free(g0);
    free(ref);
    free(dy);
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

/* ======================================================================== softmax */

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

/* ======================================================================== cross-entropy */

START_TEST(cross_entropy_forward_ref) {
    Tensor *x = rnd2(4, 5, TENSOR_CONST, "logits", 70, -3, 3);
    const int32_t tgt[4] = {2, -1, 0, 4};
    Tape t;
    new_tape(&t, false);
    Tensor *y = op_cross_entropy(&t, x, tgt, 1.0f);
    ck_assert_int_eq((int)y->n, 1);
    float r = (float)ref_cross_entropy(x->data, tgt, 4, 5, 1.0);
    expect_close(y->data, &r, 1, RED_ATOL, RED_RTOL, "cross_entropy forward");
    Tensor *y2 = op_cross_entropy(&t, x, tgt, 0.25f);
    float r2 = (float)ref_cross_entropy(x->data, tgt, 4, 5, 0.25);
    expect_close(y2->data, &r2, 1, RED_ATOL, RED_RTOL, "cross_entropy forward scale");
    /* All targets ignored: loss 0 (no division by zero). */
    const int32_t none[4] = {-1, -1, -1, -1};
    Tensor *y3 = op_cross_entropy(&t, x, none, 1.0f);
    EXPECT_EQ(y3->data[0], 0.0f);
    /* Large logits: log-sum-exp with the row max stays finite. */
    for (size_t j = 0; j < x->n; j++) x->data[j] += 500.0f;
    Tensor *y4 = op_cross_entropy(&t, x, tgt, 1.0f);
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
    Tensor *y = op_cross_entropy(&t, x, tgt, 1.0f);
    EXPECT_NEAR(y->data[0], 0.6931472f, 1e-6f);
    tape_free(&t);
    tt_free(x);
}
END_TEST

START_TEST(cross_entropy_backward_fd) {
    Tensor *x = rnd2(4, 5, TENSOR_PARAM, "logits", 71, -2, 2);
    const int32_t tgt[4] = {3, -1, 0, -1};
    CeCtx c = {tgt, 1.0f};
    Tensor *in[1] = {x};
    ck_assert_int_eq(tt_check_grad(b_cross_entropy, &c, in, 1, FD_H, FD_ATOL, FD_RTOL, "ce"), 0);
    /* Ignored rows get exactly zero gradient. */
    for (int v = 0; v < 5; v++) {
        EXPECT_EQ(x->grad[1 * 5 + v], 0.0f);
        EXPECT_EQ(x->grad[3 * 5 + v], 0.0f);
    }
    /* scale != 1 (and > 1, so a missing scale factor is well outside the tolerance). */
    CeCtx c2 = {tgt, 2.5f};
    ck_assert_int_eq(tt_check_grad(b_cross_entropy, &c2, in, 1, FD_H, FD_ATOL, FD_RTOL, "ce x2.5"),
                     0);
    const int32_t all[4] = {1, 4, 2, 0};
    CeCtx c3 = {all, 0.5f};
    ck_assert_int_eq(tt_check_grad(b_cross_entropy, &c3, in, 1, FD_H, FD_ATOL, FD_RTOL, "ce all"),
                     0);
    tt_free(x);
}
END_TEST

/* ======================================================================== fused head + loss */

static Tensor *b_linear_ce(Tape *t, Tensor **in, void *ctx) {
    const CeCtx *c = ctx;
    return op_linear_cross_entropy(t, in[0], in[1], c->tgt, c->scale, NULL);
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
    Tensor *yf = op_linear_cross_entropy(&t, x, w, tgt, 0.75f, &logits);
    ck_assert_ptr_null(logits);
    tape_backward(&t, yf, NULL);
    float lf = yf->data[0];
    float *gx = malloc(x->n * sizeof(float)), *gw = malloc(w->n * sizeof(float));
    memcpy(gx, x->grad, x->n * sizeof(float));
    memcpy(gw, w->grad, w->n * sizeof(float));
    memset(x->grad, 0, x->n * sizeof(float));
    memset(w->grad, 0, w->n * sizeof(float));
    tape_reset(&t, true);
    Tensor *yu = op_cross_entropy(&t, op_linear(&t, x, w), tgt, 0.75f);
    tape_backward(&t, yu, NULL);
    expect_close(&lf, yu->data, 1, RED_ATOL, RED_RTOL, "fused loss");
    expect_close(gx, x->grad, x->n, RED_ATOL, RED_RTOL, "fused dx");
    expect_close(gw, w->grad, w->n, RED_ATOL, RED_RTOL, "fused dW");
    /* not recording: the logits come back and equal x W^T */
    tape_reset(&t, false);
    Tensor *ye = op_linear_cross_entropy(&t, x, w, tgt, 0.75f, &logits);
    ck_assert_ptr_nonnull(logits);
    expect_close(ye->data, yu->data, 1, RED_ATOL, RED_RTOL, "fused loss, eval");
    Tensor *lu = op_linear(&t, x, w);
    expect_close(logits->data, lu->data, lu->n, RED_ATOL, RED_RTOL, "fused logits");
    tape_free(&t);
    CeCtx c = {tgt, 2.5f};
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
typedef struct ChunkCtx { const int32_t *tgt; float scale; int chunk; } ChunkCtx;

static Tensor *b_linear_ce_chunked(Tape *t, Tensor **in, void *ctx) {
    const ChunkCtx *c = ctx;
    return op_linear_cross_entropy_chunked(t, in[0], in[1], c->tgt, c->scale, c->chunk);
}

START_TEST(linear_ce_chunked_matches_fused) {
    Tensor *x = rnd2(6, 5, TENSOR_PARAM, "x", 84, -1, 1);
    Tensor *w = rnd2(7, 5, TENSOR_PARAM, "w", 85, -1, 1);
    const int32_t tgt[6] = {3, -1, 0, 6, 2, 2};
    Tape t;
    new_tape(&t, true);
    Tensor *yf = op_linear_cross_entropy(&t, x, w, tgt, 0.75f, NULL);
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
        Tensor *yc = op_linear_cross_entropy_chunked(&t, x, w, tgt, 0.75f, chunks[i]);
        tape_backward(&t, yc, NULL);
        expect_close(yc->data, &lf, 1, RED_ATOL, RED_RTOL, "chunked loss");
        expect_close(x->grad, gx, x->n, RED_ATOL, RED_RTOL, "chunked dx");
        expect_close(w->grad, gw, w->n, RED_ATOL, RED_RTOL, "chunked dW");
        /* forward only: the same loss, nothing recorded */
        tape_reset(&t, false);
        Tensor *ye = op_linear_cross_entropy_chunked(&t, x, w, tgt, 0.75f, chunks[i]);
        expect_close(ye->data, &lf, 1, RED_ATOL, RED_RTOL, "chunked loss, forward only");
        ck_assert_int_eq(t.n, 0);
    }
    /* a constant x: only dW */
    Tensor *xc = rnd2(6, 5, TENSOR_CONST, "xc", 84, -1, 1);
    memset(w->grad, 0, w->n * sizeof(float));
    tape_reset(&t, true);
    tape_backward(&t, op_linear_cross_entropy_chunked(&t, xc, w, tgt, 0.75f, 4), NULL);
    expect_close(w->grad, gw, w->n, RED_ATOL, RED_RTOL, "chunked dW, constant x");
    tape_free(&t);
    for (int i = 0; i < 3; i++) {
        ChunkCtx c = {tgt, 2.5f, chunks[i + 1]};
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
        if (ck) op_linear_cross_entropy_chunked(&t, xb, wb, tb, 1.0f, 8);
        else op_linear_cross_entropy(&t, xb, wb, tb, 1.0f, NULL);
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

/* ======================================================================== sum / mean */

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

/* ======================================================================== tape plumbing */

typedef struct {
    const int32_t *ids, *tgt;
    int N;
} ChainCtx;

/* A small model step through most ops: embedding -> rmsnorm -> linear -> swiglu -> rope
 * -> + residual -> softmax * x -> scale -> linear -> cross-entropy + mean(softplus). */
static Tensor *b_chain(Tape *t, Tensor **in, void *ctx) {
    const ChainCtx *c = ctx;
    Tensor *emb = in[0], *g = in[1], *w1 = in[2], *w2 = in[3], *wo = in[4];
    Tensor *h = op_embedding(t, emb, c->ids, c->N);           /* (N, 4) */
    Tensor *n = op_rmsnorm(t, h, g, 1e-5f);
    Tensor *a = op_linear(t, n, w1), *b = op_linear(t, n, w2); /* (N, 4) */
    Tensor *s = op_swiglu(t, a, b);
    Tensor *r = op_rope(t, s, 1, c->N, 1, 4, 10000.0f, 2);
    Tensor *x = op_add(t, h, r);
    Tensor *p = op_mul(t, op_softmax(t, x), x);
    Tensor *logits = op_linear(t, op_scale(t, p, 1.5f), wo);  /* (N, 5) */
    Tensor *ce = op_cross_entropy(t, logits, c->tgt, 0.5f);
    return op_add(t, ce, op_mean(t, op_softplus(t, op_silu(t, logits))));
}

START_TEST(chain_backward_fd) {
    const int32_t ids[3] = {1, 4, 1}, tgt[3] = {0, -1, 3};
    ChainCtx c = {ids, tgt, 3};
    Tensor *emb = rnd2(6, 4, TENSOR_PARAM, "emb", 90, -1, 1);
    Tensor *g = rnd2(1, 4, TENSOR_PARAM, "g", 91, 0.5f, 1.5f);
    Tensor *w1 = rnd2(4, 4, TENSOR_PARAM, "w1", 92, -1, 1);
    Tensor *w2 = rnd2(4, 4, TENSOR_PARAM, "w2", 93, -1, 1);
    Tensor *wo = rnd2(5, 4, TENSOR_PARAM, "wo", 94, -1, 1);
    Tensor *in[5] = {emb, g, w1, w2, wo};
    /* Deeper composition: larger f''' than a single op, hence atol 2e-3. */
    ck_assert_int_eq(tt_check_grad(b_chain, &c, in, 5, FD_H, 2e-3, FD_RTOL, "chain"), 0);
    for (int i = 0; i < 5; i++) tt_free(in[i]);
}
END_TEST

/* One pass of linear -> sum on its own tape; W->grad accumulates (not overwritten). */
static void linear_pass(Tensor *x, Tensor *w) {
    Tape t;
    new_tape(&t, true);
    tape_backward(&t, op_sum(&t, op_linear(&t, x, w)), NULL);
    tape_free(&t);
}

START_TEST(grad_accumulates_across_tapes) {
    Tensor *w = rnd2(4, 5, TENSOR_PARAM, "w", 100, -1, 1);
    Tensor *x1 = rnd2(3, 5, TENSOR_CONST, "x1", 101, -1, 1);
    Tensor *x2 = rnd2(2, 5, TENSOR_CONST, "x2", 102, -1, 1);
    float g1[20], g2[20], both[20];
    linear_pass(x1, w);
    memcpy(g1, w->grad, sizeof g1);
    memset(w->grad, 0, sizeof g1);
    linear_pass(x2, w);
    memcpy(g2, w->grad, sizeof g2);
    memset(w->grad, 0, sizeof g2);
    linear_pass(x1, w);
    linear_pass(x2, w);
    for (int j = 0; j < 20; j++) both[j] = g1[j] + g2[j];
    /* Same sgemm calls, one extra float addition: 2^-24 relative. */
    expect_close(w->grad, both, 20, EW_ATOL, EW_RTOL, "accumulated dW");
    /* And g1 itself is dy^T x with dy = ones: dW[o][k] = sum_n x1[n][k]. */
    float r1[20];
    for (int o = 0; o < 4; o++)
        for (int k = 0; k < 5; k++) {
            double s = 0;
            for (int n = 0; n < 3; n++) s += (double)x1->data[n * 5 + k];
            r1[o * 5 + k] = (float)s;
        }
    expect_close(g1, r1, 20, EW_ATOL, EW_RTOL, "dW of one pass");
    tt_free(w);
    tt_free(x1);
    tt_free(x2);
}
END_TEST

/* Every backward ACCUMULATES: with the input grads pre-filled with 0.5, a second backward
 * gives 0.5 + (the gradient from zeroed buffers). A kernel that writes (=) instead of += is
 * invisible to a single-op FD check, so each op is run here. */
static void check_accumulates(TTBuild build, void *ctx, Tensor **in, int n_in, const char *what) {
    float *g0[4];
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < n_in; i++)
            for (size_t j = 0; j < in[i]->n; j++) in[i]->grad[j] = pass ? 0.5f : 0.0f;
        Tape t;
        new_tape(&t, true);
        tape_backward(&t, op_sum(&t, build(&t, in, ctx)), NULL);
        tape_free(&t);
        for (int i = 0; i < n_in; i++) {
            if (pass == 0) {
                g0[i] = malloc(in[i]->n * sizeof(float));
                for (size_t j = 0; j < in[i]->n; j++) g0[i][j] = in[i]->grad[j] + 0.5f;
            } else {
                /* The same arithmetic plus one addition of 0.5: a few ulp of O(1) values. */
                expect_close(in[i]->grad, g0[i], in[i]->n, EW_ATOL, EW_RTOL, what);
                free(g0[i]);
            }
        }
    }
}

START_TEST(every_backward_accumulates) {
    Tensor *a = rnd2(3, 5, TENSOR_PARAM, "a", 110, -1, 1), *b = rnd2(3, 5, TENSOR_PARAM, "b", 111, -1, 1);
    Tensor *w = rnd2(4, 5, TENSOR_PARAM, "w", 112, -1, 1), *g = rnd2(1, 5, TENSOR_PARAM, "g", 113, 0.5f, 1.5f);
    Tensor *ab[2] = {a, b}, *aw[2] = {a, w}, *ag[2] = {a, g}, *a1[1] = {a}, *w1[1] = {w};
    float s = 1.5f, eps = 1e-5f;
    RopeCtx rc = {1, 3, 1, 4, 2, 10000.0f}; /* applied to r (3, 4) below */
    const int32_t ids[3] = {3, 0, 3}, tgt[3] = {4, -1, 0};
    EmbCtx ec = {ids, 3};
    CeCtx cc = {tgt, 0.5f};
    check_accumulates(b_linear, NULL, aw, 2, "linear accumulates");
    check_accumulates(b_add, NULL, ab, 2, "add accumulates");
    check_accumulates(b_mul, NULL, ab, 2, "mul accumulates");
    check_accumulates(b_scale, &s, a1, 1, "scale accumulates");
    check_accumulates(b_silu, NULL, a1, 1, "silu accumulates");
    check_accumulates(b_swiglu, NULL, ab, 2, "swiglu accumulates");
    check_accumulates(b_softplus, NULL, a1, 1, "softplus accumulates");
    check_accumulates(b_rmsnorm, &eps, ag, 2, "rmsnorm accumulates");
    check_accumulates(b_embedding, &ec, w1, 1, "embedding accumulates");
    check_accumulates(b_softmax, NULL, a1, 1, "softmax accumulates");
    check_accumulates(b_cross_entropy, &cc, a1, 1, "cross_entropy accumulates");
    check_accumulates(b_sum, NULL, a1, 1, "sum accumulates");
    check_accumulates(b_mean, NULL, a1, 1, "mean accumulates");
    Tensor *r = rnd2(3, 4, TENSOR_PARAM, "r", 114, -1, 1), *r1[1] = {r};
    check_accumulates(b_rope, &rc, r1, 1, "rope accumulates");
    tt_free(a);
    tt_free(b);
    tt_free(w);
    tt_free(g);
    tt_free(r);
}
END_TEST

/* After the first step, the same forward + backward on a reset tape reuses the arena chunks:
 * no chunk is added and moe_malloc is never called. A 1 KiB chunk size forces several chunks
 * in the first step so the reuse path is exercised. */
START_TEST(no_growth_after_first_step) {
    const int32_t ids[3] = {1, 4, 1}, tgt[3] = {0, -1, 3};
    ChainCtx c = {ids, tgt, 3};
    Tensor *in[5] = {rnd2(6, 4, TENSOR_PARAM, "emb", 90, -1, 1),
                     rnd2(1, 4, TENSOR_PARAM, "g", 91, 0.5f, 1.5f),
                     rnd2(4, 4, TENSOR_PARAM, "w1", 92, -1, 1),
                     rnd2(4, 4, TENSOR_PARAM, "w2", 93, -1, 1),
                     rnd2(5, 4, TENSOR_PARAM, "wo", 94, -1, 1)};
    Tape t;
    tape_init(&t, 1024);
    size_t grows = 0, ggrows = 0, calls = 0, used = 0;
    for (int step = 0; step < 3; step++) {
        tape_reset(&t, true);
        Tensor *loss = b_chain(&t, in, &c);
        tape_backward(&t, loss, NULL);
        ck_assert(isfinite(loss->data[0]));
        if (step == 0) {
            ck_assert_msg(t.arena.grows > 1, "chunk size too big to exercise several chunks");
            grows = t.arena.grows;
            ggrows = t.grad_arena.grows;
            calls = moe_alloc_calls();
            used = arena_used(&t.arena);
        } else {
            ck_assert_uint_eq(t.arena.grows, grows);
            ck_assert_uint_eq(t.grad_arena.grows, ggrows);
            ck_assert_uint_eq(moe_alloc_calls(), calls);
            ck_assert_uint_eq(arena_used(&t.arena), used);
        }
    }
    tape_free(&t);
    for (int i = 0; i < 5; i++) tt_free(in[i]);
}
END_TEST

/* ---- activation-grad liveness plan (tape_backward with plan_grads) ---- */

/* A two-block transformer-like tape: every op kind that the model uses on the dense path,
 * residual streams consumed far apart, a dangling output and a loss built from several
 * terms, so regions really are shared and zeroed at different times. */
static Tensor *b_plan(Tape *t, Tensor **in, void *ctx) {
    const ChainCtx *c = ctx;
    Tensor *emb = in[0], *g = in[1], *wq = in[2], *wk = in[3], *wo = in[4], *w1 = in[5];
    Tensor *x = op_embedding(t, emb, c->ids, c->N);              /* (N, 4) */
    for (int l = 0; l < 2; l++) {
        Tensor *n = op_rmsnorm(t, x, g, 1e-5f);
        Tensor *q = op_rope(t, op_linear(t, n, wq), 1, c->N, 2, 2, 10000.0f, 0);
        Tensor *k = op_rope(t, op_linear(t, n, wk), 1, c->N, 1, 2, 10000.0f, 0);
        Tensor *v = op_linear(t, n, wk);                          /* (N, 2) */
        Tensor *a = op_attention(t, q, k, v, 1, c->N, 2, 1, 2, 0); /* (N, 4) */
        x = op_add(t, x, op_linear(t, a, wo));
        Tensor *h = op_rmsnorm(t, x, g, 1e-5f);
        Tensor *f = op_swiglu(t, op_linear(t, h, w1), op_linear(t, h, wq));
        (void)op_silu(t, f);                                      /* never consumed */
        x = op_add(t, x, op_scale(t, op_mul(t, f, op_softmax(t, f)), 0.5f));
    }
    Tensor *ce = op_cross_entropy(t, op_linear(t, x, emb), c->tgt, 0.5f);
    return op_add(t, ce, op_mean(t, op_softplus(t, x)));
}

/* Parameter grads of the second of two identical steps on one tape (the second re-uses
 * the first's plan), planned or not. */
static void plan_grads(TTBuild build, void *ctx, Tensor **in, int n_in, bool plan,
                       float **out) {
    Tape t;
    tape_init(&t, 1024);
    t.plan_grads = plan;
    for (int step = 0; step < 2; step++) {   /* step 2 re-uses the plan */
        for (int i = 0; i < n_in; i++) memset(in[i]->grad, 0, in[i]->n * sizeof(float));
        tape_reset(&t, true);
        tape_backward(&t, build(&t, in, ctx), NULL);
    }
    if (plan) ck_assert_msg(tape_grad_plan_bytes(&t) > 0, "no plan was made");
    tape_free(&t);
    for (int i = 0; i < n_in; i++) {
        out[i] = malloc(in[i]->n * sizeof(float));
        memcpy(out[i], in[i]->grad, in[i]->n * sizeof(float));
    }
}

static Tensor **plan_inputs(void) {
    static Tensor *in[6];
    in[0] = rnd2(6, 4, TENSOR_PARAM, "emb", 120, -1, 1);
    in[1] = rnd2(1, 4, TENSOR_PARAM, "g", 121, 0.5f, 1.5f);
    in[2] = rnd2(4, 4, TENSOR_PARAM, "wq", 122, -1, 1);
    in[3] = rnd2(2, 4, TENSOR_PARAM, "wk", 123, -1, 1);
    in[4] = rnd2(4, 4, TENSOR_PARAM, "wo", 124, -1, 1);
    in[5] = rnd2(4, 4, TENSOR_PARAM, "w1", 125, -1, 1);
    return in;
}

/* Planned and unplanned backward do the same float operations in the same order (a
 * region is zeroed before its first += exactly as a fresh zeroed buffer would be): the
 * parameter grads must be bit-identical. */
START_TEST(grad_plan_matches_unplanned) {
    const int32_t ids[5] = {1, 4, 1, 0, 5}, tgt[5] = {0, -1, 3, 5, 2};
    ChainCtx c = {ids, tgt, 5};
    Tensor **in = plan_inputs();
    float *ref[6], *got[6];
    plan_grads(b_plan, &c, in, 6, false, ref);
    plan_grads(b_plan, &c, in, 6, true, got);
    for (int i = 0; i < 6; i++) {
        ck_assert_msg(memcmp(ref[i], got[i], in[i]->n * sizeof(float)) == 0,
                      "planned grad of %s differs", in[i]->name);
        free(ref[i]);
        free(got[i]);
    }
    /* And the planned backward is right, not just consistent: finite differences. */
    ck_assert_int_eq(tt_check_grad(b_plan, &c, in, 6, FD_H, 2e-3, FD_RTOL, "plan"), 0);
    for (int i = 0; i < 6; i++) tt_free(in[i]);
}
END_TEST

/* The plan shares memory: it is smaller than one buffer per activation grad. */
START_TEST(grad_plan_shares_memory) {
    const int32_t ids[5] = {1, 4, 1, 0, 5}, tgt[5] = {0, -1, 3, 5, 2};
    ChainCtx c = {ids, tgt, 5};
    Tensor **in = plan_inputs();
    Tape t;
    tape_init(&t, 1 << 20);
    t.plan_grads = false;
    tape_reset(&t, true);
    tape_backward(&t, b_plan(&t, in, &c), NULL);
    size_t unplanned = arena_used(&t.grad_arena);
    t.plan_grads = true;
    tape_reset(&t, true);
    tape_backward(&t, b_plan(&t, in, &c), NULL);
    size_t planned = tape_grad_plan_bytes(&t);
    ck_assert_msg(planned > 0 && planned < unplanned / 2, "planned %zu vs unplanned %zu bytes",
                  planned, unplanned);
    tape_free(&t);
    for (int i = 0; i < 6; i++) tt_free(in[i]);
}
END_TEST

/* One tape object alternating between two different graphs re-plans each time (the
 * signature differs) and stays exact; backward from an intermediate that a later op also
 * consumes keeps its seed (its region is live from the start). */
START_TEST(grad_plan_replans) {
    const int32_t ids[3] = {1, 4, 1}, tgt[3] = {0, -1, 3};
    ChainCtx c = {ids, tgt, 3};
    Tensor *in5[5] = {rnd2(6, 4, TENSOR_PARAM, "emb", 90, -1, 1),
                      rnd2(1, 4, TENSOR_PARAM, "g", 91, 0.5f, 1.5f),
                      rnd2(4, 4, TENSOR_PARAM, "w1", 92, -1, 1),
                      rnd2(4, 4, TENSOR_PARAM, "w2", 93, -1, 1),
                      rnd2(5, 4, TENSOR_PARAM, "wo", 94, -1, 1)};
    float *ref[5];
    plan_grads(b_chain, &c, in5, 5, false, ref);
    Tape t;
    tape_init(&t, 1024);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 5; i++) memset(in5[i]->grad, 0, in5[i]->n * sizeof(float));
        /* A different graph in between: y = linear(x, w1) is the backward root, and is
         * consumed afterwards by an add whose output is never used. */
        tape_reset(&t, true);
        Tensor *h = op_embedding(&t, in5[0], ids, 3);
        Tensor *y = op_linear(&t, h, in5[2]);
        (void)op_add(&t, op_mul(&t, y, y), h);
        tape_backward(&t, y, NULL);
        /* dW1 = ones^T h: row o of dW1 is the column sums of h. */
        for (int k = 0; k < 4; k++) {
            double s = 0;
            for (int n = 0; n < 3; n++) s += (double)h->data[n * 4 + k];
            EXPECT_NEAR(in5[2]->grad[k], s, 1e-5);
        }
        for (int i = 0; i < 5; i++) memset(in5[i]->grad, 0, in5[i]->n * sizeof(float));
        tape_reset(&t, true);
        tape_backward(&t, b_chain(&t, in5, &c), NULL);
        for (int i = 0; i < 5; i++)
            ck_assert_msg(memcmp(ref[i], in5[i]->grad, in5[i]->n * sizeof(float)) == 0,
                          "round %d: grad of %s differs after a re-plan", round, in5[i]->name);
    }
    tape_free(&t);
    for (int i = 0; i < 5; i++) {
        free(ref[i]);
        tt_free(in5[i]);
    }
}
END_TEST

/* ======================================================================== suite */

static Suite *ops_suite(void) {
    Suite *s = suite_create("ops");
    struct { const char *name; const TTest *tests[5]; } cases[] = {
        {"linear", {linear_forward_ref, linear_backward_fd, linear_frozen_weight, NULL}},
        {"add", {add_forward_backward, elementwise_split, NULL}},
        {"mul", {mul_forward_backward, NULL}},
        {"scale", {scale_forward_backward, NULL}},
        {"silu", {silu_forward_backward, NULL}},
        {"swiglu", {swiglu_forward_backward, swiglu_large_split, NULL}},
        {"swiglu_linear", {swiglu_linear_forward_ref, swiglu_linear_backward_fd,
                           swiglu_linear_matches_composition, NULL}},
        {"linear_residual", {linear_residual_forward_fd, linear_residual_matches_composition,
                             NULL}},
        {"softplus", {softplus_forward_backward, softplus_extremes, NULL}},
        {"rmsnorm", {rmsnorm_forward_ref, rmsnorm_hand, rmsnorm_backward_fd, rmsnorm_large_split, NULL}},
        {"rope", {rope_forward_ref, rope_properties, rope_backward_fd, rope_inplace_matches,
                  NULL}},
        {"embedding", {embedding_forward_backward, embedding_split, NULL}},
        {"softmax", {softmax_forward_ref, softmax_backward_fd, NULL}},
        {"cross_entropy", {cross_entropy_forward_ref, cross_entropy_hand,
                           cross_entropy_backward_fd, NULL}},
        {"linear_cross_entropy", {linear_ce_matches_composition, linear_ce_chunked_matches_fused,
                                  NULL}},
        {"sum", {sum_forward_backward, NULL}},
        {"mean", {mean_forward_backward, NULL}},
        {"tape", {chain_backward_fd, grad_accumulates_across_tapes, every_backward_accumulates,
                  no_growth_after_first_step, NULL}},
        {"grad_plan", {grad_plan_matches_unplanned, grad_plan_shares_memory, grad_plan_replans,
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
    SRunner *sr = srunner_create(ops_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
