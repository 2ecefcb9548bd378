/* ops.c: the dense differentiable ops of autograd/ops.h (linear, elementwise, rmsnorm,
 * rope, embedding, softmax, cross-entropy, sum/mean).
 *
 * Each op is a pair of static kernels on raw float pointers (<name>_forward /
 * <name>_backward) plus the public op_* wrapper, which carves the output from the tape
 * arena, runs the forward and, when an input requires grad, pushes a TapeOp. Backward
 * kernels ACCUMULATE (+=) into input grads and touch only inputs that require grad.
 *
 * Threading: one layer only. Matrix products go through cblas_sgemm (OpenBLAS threads
 * inside); every loop here is single-threaded, contiguous and vectorisable.
 * Fused: SwiGLU + the down projection (op_swiglu_linear: the activation is recomputed in
 * backward instead of kept) and softmax + cross-entropy (with the LM head).
 * Non-goals: broadcasting, strided views, other fusions.
 * References: Zhang & Sennrich 2019 (RMSNorm); Su et al. 2021 (RoFormer, rotate-half
 * layout as in Hugging Face Llama); Shazeer 2020 (SwiGLU).
 * Naive references for every kernel live in tests/autograd/test_ops.c.
 */
#include "autograd/ops.h"

#include "autograd/blas.h"
#include "autograd/ops_internal.h"
#include "autograd/vmath.h"
#include "core/pool.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* Grad buffer of an input that should receive a gradient, else NULL. A FROZEN weight or a
 * CONST input is skipped even if someone attached a buffer to it. */
static float *grad_of(const Tensor *x) {
    return (x && x->requires_grad) ? x->grad : NULL;
}

/* Output with the same shape as x. */
static Tensor *tape_like(Tape *t, const Tensor *x, bool needs) {
    return tape_tensor(t, x->ndim, x->shape, needs);
}

static Tensor *tape_scalar(Tape *t, bool needs) {
    int one = 1;
    return tape_tensor(t, 1, &one, needs);
}

static float sigmoidf(float x) { return vm_sigmoidf(x); }

/* ======================================================================== linear */

/* y (N, out) = x (N, in) @ w^T, w (out, in). */
static void linear_forward(float *y, const float *x, const float *w, int N, int in, int out) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, out, in, 1.0f, x, in, w, in,
                0.0f, y, out);
}

/* Inverts y = x w^T: dx (N, in) += dy w; dw (out, in) += dy^T x. Either may be NULL. */
static void linear_backward(float *dx, float *dw, const float *dy, const float *x,
                            const float *w, int N, int in, int out) {
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, in, out, 1.0f, dy, out, w,
                    in, 1.0f, dx, in);
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, N, 1.0f, dy, out, x, in,
                    1.0f, dw, in);
}

static void op_linear_bw(TapeOp *op) {
    Tensor *x = op->in[0], *w = op->in[1];
    linear_backward(grad_of(x), grad_of(w), op->out->grad, x->data, w->data, op->i[0],
                    op->i[1], op->i[2]);
}

Tensor *op_linear(Tape *t, Tensor *x, Tensor *w) {
    ASSERT(w->ndim == 2, "linear: weight must be 2-D, got %d dims", w->ndim);
    int in = tensor_cols(x), out = w->shape[0];
    ASSERT(w->shape[1] == in, "linear: x cols %d != W in %d (W is [out, in])", in, w->shape[1]);
    ASSERT(in > 0 && out > 0, "linear: empty dims in %d out %d", in, out);
    size_t rows = tensor_rows(x);
    ASSERT(rows <= (size_t)INT32_MAX, "linear: %zu rows", rows);
    int N = (int)rows;
    bool needs = tape_needs_grad(t, x, w, NULL);
    int shape[TENSOR_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = out;
    Tensor *y = tape_tensor(t, x->ndim, shape, needs);
    if (N > 0) linear_forward(y->data, x->data, w->data, N, in, out);
    if (needs && N > 0) {
        TapeOp *op = tape_push(t, "linear", op_linear_bw, y);
        op->in[0] = x;
        op->in[1] = w;
        op->i[0] = N;
        op->i[1] = in;
        op->i[2] = out;
    }
    return y;
}

/* ======================================================================== add / mul / scale */

static void add_forward(float *y, const float *a, const float *b, size_t n) {
    for (size_t j = 0; j < n; j++) y[j] = a[j] + b[j];
}

/* Inverts y = a + b: da += dy, db += dy. */
static void add_backward(float *da, float *db, const float *dy, size_t n) {
    if (da) for (size_t j = 0; j < n; j++) da[j] += dy[j];
    if (db) for (size_t j = 0; j < n; j++) db[j] += dy[j];
}

/* The elementwise ops over the cores (pool_parallel_range): each element's arithmetic is
 * the serial loop's, and a backward with da == db (y = a + a) still adds to each element
 * twice in the same order, within one range. */
typedef struct EwArgs {
    float *y, *da, *db;       /* forward: y; backward: da, db (either NULL) */
    const float *a, *b, *dy;  /* dy NULL in forward */
} EwArgs;

static EwArgs ew_at(const EwArgs *k, size_t lo) {
    return (EwArgs){k->y ? k->y + lo : NULL, k->da ? k->da + lo : NULL,
                    k->db ? k->db + lo : NULL, k->a + lo, k->b + lo, k->dy ? k->dy + lo : NULL};
}

static void add_range(void *ctx, size_t lo, size_t hi) {
    const EwArgs k = ew_at(ctx, lo);
    if (k.y) add_forward(k.y, k.a, k.b, hi - lo);
    else add_backward(k.da, k.db, k.dy, hi - lo);
}

void add_run(float *y, const float *a, const float *b, size_t n) {
    EwArgs k = {y, NULL, NULL, a, b, NULL};
    pool_parallel_range(n, n, add_range, &k);
}

void add_grad_run(float *da, float *db, const float *dy, size_t n) {
    if (!da && !db) return;
    EwArgs k = {NULL, da, db, dy, dy, dy};   /* a and b are not read in backward */
    pool_parallel_range(n, n, add_range, &k);
}

static void op_add_bw(TapeOp *op) {
    add_grad_run(grad_of(op->in[0]), grad_of(op->in[1]), op->out->grad, op->out->n);
}

Tensor *op_add(Tape *t, Tensor *a, Tensor *b) {
    ASSERT(a->n == b->n, "add: sizes %zu != %zu", a->n, b->n);
    bool needs = tape_needs_grad(t, a, b, NULL);
    Tensor *y = tape_like(t, a, needs);
    add_run(y->data, a->data, b->data, a->n);
    if (needs) {
        TapeOp *op = tape_push(t, "add", op_add_bw, y);
        op->in[0] = a;
        op->in[1] = b;
    }
    return y;
}

static void mul_forward(float *y, const float *a, const float *b, size_t n) {
    for (size_t j = 0; j < n; j++) y[j] = a[j] * b[j];
}

/* Inverts y = a * b: da += dy * b, db += dy * a (reads data only, so a == b is fine). */
static void mul_backward(float *da, float *db, const float *dy, const float *a,
                         const float *b, size_t n) {
    if (da) for (size_t j = 0; j < n; j++) da[j] += dy[j] * b[j];
    if (db) for (size_t j = 0; j < n; j++) db[j] += dy[j] * a[j];
}

static void mul_range(void *ctx, size_t lo, size_t hi) {
    const EwArgs k = ew_at(ctx, lo);
    if (k.y) mul_forward(k.y, k.a, k.b, hi - lo);
    else mul_backward(k.da, k.db, k.dy, k.a, k.b, hi - lo);
}

static void op_mul_bw(TapeOp *op) {
    Tensor *a = op->in[0], *b = op->in[1];
    EwArgs k = {NULL, grad_of(a), grad_of(b), a->data, b->data, op->out->grad};
    if (k.da || k.db) pool_parallel_range(op->out->n, op->out->n, mul_range, &k);
}

Tensor *op_mul(Tape *t, Tensor *a, Tensor *b) {
    ASSERT(a->n == b->n, "mul: sizes %zu != %zu", a->n, b->n);
    bool needs = tape_needs_grad(t, a, b, NULL);
    Tensor *y = tape_like(t, a, needs);
    EwArgs k = {y->data, NULL, NULL, a->data, b->data, NULL};
    pool_parallel_range(a->n, a->n, mul_range, &k);
    if (needs) {
        TapeOp *op = tape_push(t, "mul", op_mul_bw, y);
        op->in[0] = a;
        op->in[1] = b;
    }
    return y;
}

static void scale_forward(float *y, const float *x, float s, size_t n) {
    for (size_t j = 0; j < n; j++) y[j] = s * x[j];
}

/* Inverts y = s x: dx += s dy. */
static void scale_backward(float *dx, const float *dy, float s, size_t n) {
    for (size_t j = 0; j < n; j++) dx[j] += s * dy[j];
}

static void op_scale_bw(TapeOp *op) {
    float *dx = grad_of(op->in[0]);
    if (dx) scale_backward(dx, op->out->grad, (float)op->f[0], op->out->n);
}

Tensor *op_scale(Tape *t, Tensor *x, float s) {
    bool needs = tape_needs_grad(t, x, NULL, NULL);
    Tensor *y = tape_like(t, x, needs);
    scale_forward(y->data, x->data, s, x->n);
    if (needs) {
        TapeOp *op = tape_push(t, "scale", op_scale_bw, y);
        op->in[0] = x;
        op->f[0] = (double)s;
    }
    return y;
}

/* ======================================================================== silu / swiglu / softplus */

static void silu_forward(float *y, const float *x, size_t n) {
    for (size_t j = 0; j < n; j++) y[j] = x[j] * sigmoidf(x[j]);
}

/* Inverts y = x s(x): dy/dx = s + x s (1 - s). */
static void silu_backward(float *dx, const float *dy, const float *x, size_t n) {
    for (size_t j = 0; j < n; j++) {
        float s = sigmoidf(x[j]);
        dx[j] += dy[j] * (s + x[j] * s * (1.0f - s));
    }
}

static void op_silu_bw(TapeOp *op) {
    float *dx = grad_of(op->in[0]);
    if (dx) silu_backward(dx, op->out->grad, op->in[0]->data, op->out->n);
}

Tensor *op_silu(Tape *t, Tensor *x) {
    bool needs = tape_needs_grad(t, x, NULL, NULL);
    Tensor *y = tape_like(t, x, needs);
    silu_forward(y->data, x->data, x->n);
    if (needs) {
        TapeOp *op = tape_push(t, "silu", op_silu_bw, y);
        op->in[0] = x;
    }
    return y;
}

/* Shared with op_swiglu_linear and op_swiglu_expert_linear (ops_internal.h). */
void swiglu_forward(float *y, const float *a, const float *b, size_t n) {
    for (size_t j = 0; j < n; j++) y[j] = a[j] * sigmoidf(a[j]) * b[j];
}

/* Inverts y = silu(a) b: da += dy b silu'(a), db += dy silu(a). */
void swiglu_backward(float *da, float *db, const float *dy, const float *a, const float *b,
                     size_t n) {
    for (size_t j = 0; j < n; j++) {
        float s = sigmoidf(a[j]);
        if (da) da[j] += dy[j] * b[j] * (s + a[j] * s * (1.0f - s));
        if (db) db[j] += dy[j] * a[j] * s;
    }
}

/* The expert FFN's elementwise step over (M, F) is large (2M elements in mixtral_tiny): split
 * it into contiguous ranges over the cores; the per-element arithmetic is unchanged. */
typedef struct SwigluTask {
    float *y, *da, *db;
    const float *dy, *a, *b;
    size_t n;
    int workers;
} SwigluTask;

static void swiglu_task(void *ctx, int task, int worker) {
    (void)worker;
    const SwigluTask *k = ctx;
    size_t j0, j1;
    pool_range(k->n, task, k->workers, &j0, &j1);
    if (k->y) {
        swiglu_forward(k->y + j0, k->a + j0, k->b + j0, j1 - j0);
    } else {
        swiglu_backward(k->da ? k->da + j0 : NULL, k->db ? k->db + j0 : NULL, k->dy + j0,
                        k->a + j0, k->b + j0, j1 - j0);
    }
}

void swiglu_run(float *y, float *da, float *db, const float *dy, const float *a,
                const float *b, size_t n) {
    SwigluTask k = {y, da, db, dy, a, b, n, pool_workers()};
    if (n < POOL_SPLIT_MIN) k.workers = 1;   /* small: not worth a thread */
    if (k.workers == 1) swiglu_task(&k, 0, 0);
    else pool_parallel_for(k.workers, swiglu_task, &k);
}

static void op_swiglu_bw(TapeOp *op) {
    Tensor *a = op->in[0], *b = op->in[1];
    swiglu_run(NULL, grad_of(a), grad_of(b), op->out->grad, a->data, b->data, op->out->n);
}

Tensor *op_swiglu(Tape *t, Tensor *a, Tensor *b) {
    ASSERT(a->n == b->n, "swiglu: sizes %zu != %zu", a->n, b->n);
    bool needs = tape_needs_grad(t, a, b, NULL);
    Tensor *y = tape_like(t, a, needs);
    swiglu_run(y->data, NULL, NULL, NULL, a->data, b->data, a->n);
    if (needs) {
        TapeOp *op = tape_push(t, "swiglu", op_swiglu_bw, y);
        op->in[0] = a;
        op->in[1] = b;
    }
    return y;
}

/* ======================================================================== fused swiglu + linear */

/* Inverts y = act W^T with act = silu(a) b, act not kept (op_swiglu then op_linear, their
 * float operations in their order):
 *   act  = silu(a) b                 recomputed into the scratch (swiglu_run, as forward)
 *   dW  += dy^T act                  (op_linear's weight gradient; skipped when frozen)
 *   dact = dy W                      over act in the scratch: zeroed, then the sgemm with
 *                                    beta 1, as op_linear accumulates into a zeroed grad
 *   da  += dact b silu'(a), db += dact silu(a)   (op_swiglu's backward) */
static void op_swiglu_linear_bw(TapeOp *op) {
    Tensor *a = op->in[0], *b = op->in[1], *w = op->in[2];
    const int N = op->i[0], F = op->i[1], out = op->i[2];
    const size_t n = (size_t)N * F;
    float *da = grad_of(a), *db = grad_of(b), *dw = grad_of(w);
    float *act = tape_scratch(op->aux[0], n);   /* (N, F): act, then dact */
    if (dw) {
        swiglu_run(act, NULL, NULL, NULL, a->data, b->data, n);
        linear_backward(NULL, dw, op->out->grad, act, w->data, N, F, out);
    }
    if (da || db) {
        memset(act, 0, sizeof(float) * n);
        linear_backward(act, NULL, op->out->grad, NULL, w->data, N, F, out);
        swiglu_run(NULL, da, db, act, a->data, b->data, n);
    }
}

Tensor *op_swiglu_linear(Tape *t, Tensor *a, Tensor *b, Tensor *w) {
    ASSERT(a->ndim == b->ndim && a->n == b->n && tensor_cols(a) == tensor_cols(b),
           "swiglu_linear: a (%zu, %d) and b (%zu, %d) differ", tensor_rows(a),
           tensor_cols(a), tensor_rows(b), tensor_cols(b));
    ASSERT(w->ndim == 2, "swiglu_linear: weight must be 2-D, got %d dims", w->ndim);
    const int F = tensor_cols(a), out = w->shape[0];
    ASSERT(w->shape[1] == F, "swiglu_linear: a cols %d != W in %d (W is [out, in])", F,
           w->shape[1]);
    ASSERT(F > 0 && out > 0, "swiglu_linear: empty dims in %d out %d", F, out);
    const size_t rows = tensor_rows(a);
    ASSERT(rows <= (size_t)INT32_MAX, "swiglu_linear: %zu rows", rows);
    const int N = (int)rows;
    const bool needs = tape_needs_grad(t, a, b, w);
    int shape[TENSOR_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[a->ndim - 1] = out;
    Tensor *y = tape_tensor(t, a->ndim, shape, needs);              /* (N, out) */
    if (N == 0) return y;
    float *act = tape_scratch(t, a->n);                             /* (N, F), not kept */
    swiglu_run(act, NULL, NULL, NULL, a->data, b->data, a->n);
    linear_forward(y->data, act, w->data, N, F, out);
    if (needs) {
        TapeOp *op = tape_push(t, "swiglu_linear", op_swiglu_linear_bw, y);
        op->in[0] = a;
        op->in[1] = b;
        op->in[2] = w;
        op->i[0] = N;
        op->i[1] = F;
        op->i[2] = out;
        op->aux[0] = t;   /* the tape whose scratch the backward borrows */
    }
    return y;
}

/* ======================================================================== linear + residual */

/* Inverts y = r + x W^T (op_linear then op_add(r, .), in their order): dr += dy (the add's
 * backward), then op_linear's backward with the product's gradient, which is dy itself
 * (the add copies dy into its zeroed grad). The product x W^T is never read in backward, so
 * it lives in the scratch instead of the arena. */
static void op_linear_residual_bw(TapeOp *op) {
    Tensor *r = op->in[0], *x = op->in[1], *w = op->in[2];
    const float *dy = op->out->grad;
    add_grad_run(grad_of(r), NULL, dy, op->out->n);
    linear_backward(grad_of(x), grad_of(w), dy, x->data, w->data, op->i[0], op->i[1],
                    op->i[2]);
}

Tensor *op_linear_residual(Tape *t, Tensor *r, Tensor *x, Tensor *w) {
    ASSERT(w->ndim == 2, "linear_residual: weight must be 2-D, got %d dims", w->ndim);
    const int in = tensor_cols(x), out = w->shape[0];
    ASSERT(w->shape[1] == in, "linear_residual: x cols %d != W in %d (W is [out, in])", in,
           w->shape[1]);
    ASSERT(in > 0 && out > 0, "linear_residual: empty dims in %d out %d", in, out);
    const size_t rows = tensor_rows(x);
    ASSERT(rows <= (size_t)INT32_MAX, "linear_residual: %zu rows", rows);
    ASSERT(tensor_rows(r) == rows && tensor_cols(r) == out,
           "linear_residual: r (%zu, %d) != (%zu, %d)", tensor_rows(r), tensor_cols(r), rows,
           out);
    const int N = (int)rows;
    const bool needs = tape_needs_grad(t, r, x, w);
    Tensor *y = tape_like(t, r, needs);                             /* (N, out) */
    if (N == 0) return y;
    float *p = tape_scratch(t, (size_t)N * out);                    /* x W^T, not kept */
    linear_forward(p, x->data, w->data, N, in, out);
    add_run(y->data, r->data, p, y->n);
    if (needs) {
        TapeOp *op = tape_push(t, "linear_residual", op_linear_residual_bw, y);
        op->in[0] = r;
        op->in[1] = x;
        op->in[2] = w;
        op->i[0] = N;
        op->i[1] = in;
        op->i[2] = out;
    }
    return y;
}

/* softplus(x) = max(x, 0) + log1p(exp(-|x|)): exp never overflows, and log1p keeps the
 * tail accurate for large negative x (where the result is ~exp(x), not 0). */
static void softplus_forward(float *y, const float *x, size_t n) {
    for (size_t j = 0; j < n; j++) {
        float v = x[j];
        y[j] = v > 20.0f ? v : fmaxf(v, 0.0f) + log1pf(expf(-fabsf(v)));
    }
}

/* Inverts y = softplus(x): dy/dx = sigmoid(x). */
static void softplus_backward(float *dx, const float *dy, const float *x, size_t n) {
    for (size_t j = 0; j < n; j++) dx[j] += dy[j] * sigmoidf(x[j]);
}

static void op_softplus_bw(TapeOp *op) {
    float *dx = grad_of(op->in[0]);
    if (dx) softplus_backward(dx, op->out->grad, op->in[0]->data, op->out->n);
}

Tensor *op_softplus(Tape *t, Tensor *x) {
    bool needs = tape_needs_grad(t, x, NULL, NULL);
    Tensor *y = tape_like(t, x, needs);
    softplus_forward(y->data, x->data, x->n);
    if (needs) {
        TapeOp *op = tape_push(t, "softplus", op_softplus_bw, y);
        op->in[0] = x;
    }
    return y;
}

/* ======================================================================== rmsnorm */

/* y (N, C) = x * rstd[n] * g, rstd (N) = 1 / sqrt(mean(x^2) + eps); the mean of squares is
 * accumulated in double (C can be thousands, and x^2 spans a wide range). */
/* Rows are independent: above POOL_SPLIT_MIN elements the rows are cut into RMS_CHUNKS fixed
 * ranges run over the cores (pool_parallel_for). The gain gradient is summed per range
 * into its own (C) partial, and the partials are added in range order: the result does not
 * depend on the thread count. */
#define RMS_CHUNKS 8

static void rmsnorm_rows(float *y, float *rstd, const float *x, const float *g, int n0, int n1,
                         int C, float eps) {
    for (int n = n0; n < n1; n++) {
        const float *xr = x + (size_t)n * C;
        float *yr = y + (size_t)n * C;
        const double sum = vm_sumsq_f64(xr, (size_t)C);   /* vectorised partials */
        float r = (float)(1.0 / sqrt(sum / C + (double)eps));
        rstd[n] = r;
        for (int c = 0; c < C; c++) yr[c] = xr[c] * r * g[c];
    }
}

/* Inverts y_c = g_c x_c r, r = (mean(x^2) + eps)^-1/2, dr/dx_c = -r^3 x_c / C:
 *   dx_c += r g_c dy_c - x_c r^3 / C * sum_j dy_j g_j x_j;   dg_c += sum_n dy_nc x_nc r_n. */
static void rmsnorm_backward_rows(float *dx, float *dg, const float *dy, const float *x,
                                  const float *g, const float *rstd, int n0, int n1, int C) {
    for (int n = n0; n < n1; n++) {
        const float *xr = x + (size_t)n * C, *dyr = dy + (size_t)n * C;
        float r = rstd[n];
        if (dx) {
            float *dxr = dx + (size_t)n * C;
            double dp[8] = {0};
            int c = 0;
            for (; c + 8 <= C; c += 8)
                for (int j = 0; j < 8; j++)
                    dp[j] += (double)dyr[c + j] * (double)g[c + j] * (double)xr[c + j];
            for (; c < C; c++) dp[0] += (double)dyr[c] * (double)g[c] * (double)xr[c];
            double dot = ((dp[0] + dp[1]) + (dp[2] + dp[3])) + ((dp[4] + dp[5]) + (dp[6] + dp[7]));
            float k = (float)(dot * (double)r * (double)r * (double)r / C);
            for (c = 0; c < C; c++) dxr[c] += r * g[c] * dyr[c] - k * xr[c];
        }
        if (dg)
            for (int c = 0; c < C; c++) dg[c] += dyr[c] * xr[c] * r;
    }
}

typedef struct RmsTask {
    float *y, *rstd, *dx, *dg_part;   /* dg_part (RMS_CHUNKS, C), zeroed, or NULL */
    const float *x, *g, *dy;
    int N, C, chunks;
    float eps;
} RmsTask;

static void rmsnorm_task(void *ctx, int task, int worker) {
    (void)worker;
    const RmsTask *k = ctx;
    size_t lo, hi;
    pool_range((size_t)k->N, task, k->chunks, &lo, &hi);
    const int n0 = (int)lo, n1 = (int)hi;
    if (k->y) rmsnorm_rows(k->y, k->rstd, k->x, k->g, n0, n1, k->C, k->eps);
    else
        rmsnorm_backward_rows(k->dx, k->dg_part ? k->dg_part + (size_t)task * k->C : NULL, k->dy,
                              k->x, k->g, k->rstd, n0, n1, k->C);
}

static int rms_chunks(int N, int C) {
    return (size_t)N * (size_t)C >= POOL_SPLIT_MIN && N >= RMS_CHUNKS ? RMS_CHUNKS : 1;
}

static void op_rmsnorm_bw(TapeOp *op) {
    Tensor *x = op->in[0], *g = op->in[1];
    const int N = op->i[0], C = op->i[1];
    float *dx = grad_of(x), *dg = grad_of(g);
    if (!dx && !dg) return;
    RmsTask k = {NULL, (float *)op->aux[0], dx, NULL, x->data, g->data, op->out->grad, N, C,
                 rms_chunks(N, C), 0.0f};
    if (k.chunks == 1) {
        rmsnorm_backward_rows(dx, dg, k.dy, k.x, k.g, k.rstd, 0, N, C);
        return;
    }
    if (dg) {
        k.dg_part = op->aux[1];
        memset(k.dg_part, 0, sizeof(float) * (size_t)RMS_CHUNKS * C);
    }
    pool_parallel_for(k.chunks, rmsnorm_task, &k);
    if (dg)
        for (int j = 0; j < RMS_CHUNKS; j++)
            for (int c = 0; c < C; c++) dg[c] += k.dg_part[(size_t)j * C + c];
}

Tensor *op_rmsnorm(Tape *t, Tensor *x, Tensor *g, float eps) {
    int C = tensor_cols(x);
    size_t rows = tensor_rows(x);
    ASSERT(g->n == (size_t)C, "rmsnorm: g has %zu elements, x has %d cols", g->n, C);
    ASSERT(rows <= (size_t)INT32_MAX, "rmsnorm: %zu rows", rows);
    ASSERT(eps >= 0.0f, "rmsnorm: eps %g < 0", (double)eps);
    int N = (int)rows;
    bool needs = tape_needs_grad(t, x, g, NULL);
    Tensor *y = tape_like(t, x, needs);
    float *rstd = arena_floats(&t->arena, (size_t)N);
    RmsTask k = {y->data, rstd, NULL, NULL, x->data, g->data, NULL, N, C, rms_chunks(N, C), eps};
    if (k.chunks == 1) rmsnorm_rows(y->data, rstd, x->data, g->data, 0, N, C, eps);
    else pool_parallel_for(k.chunks, rmsnorm_task, &k);
    if (needs) {
        TapeOp *op = tape_push(t, "rmsnorm", op_rmsnorm_bw, y);
        op->in[0] = x;
        op->in[1] = g;
        op->f[0] = (double)eps;
        op->i[0] = N;
        op->i[1] = C;
        op->aux[0] = rstd;
        /* (RMS_CHUNKS, C) gain-gradient partials of the split backward */
        op->aux[1] = k.chunks > 1 ? arena_floats(&t->arena, (size_t)RMS_CHUNKS * C) : NULL;
    }
    return y;
}

/* ======================================================================== rope */

/* cos/sin table (T, D/2) for positions pos0 .. pos0+T-1. Angle pos * base^(-2i/D) is formed
 * in double: at pos ~ 1e5 a float angle would already be off by ~1e-2 rad. */
static void rope_table(float *cs, float *sn, int T, int D, float base, int pos0) {
    int half = D / 2;
    for (int tt = 0; tt < T; tt++) {
        double pos = (double)pos0 + tt;
        for (int i = 0; i < half; i++) {
            double ang = pos * pow((double)base, -2.0 * i / D);
            cs[(size_t)tt * half + i] = (float)cos(ang);
            sn[(size_t)tt * half + i] = (float)sin(ang);
        }
    }
}

/* x, y (B*T, nh*D): y[i] = x[i] c - x[i+h] s, y[i+h] = x[i+h] c + x[i] s, h = D/2.
 * y == x is allowed (in place). */
static void rope_forward(float *y, const float *x, const float *cs, const float *sn, int B,
                         int T, int nh, int D) {
    int half = D / 2;
    for (int b = 0; b < B; b++)
        for (int tt = 0; tt < T; tt++) {
            const float *c = cs + (size_t)tt * half, *s = sn + (size_t)tt * half;
            for (int h = 0; h < nh; h++) {
                size_t off = (((size_t)b * T + tt) * nh + h) * D;
                const float *xa = x + off, *xb = xa + half;
                float *ya = y + off, *yb = ya + half;
                for (int i = 0; i < half; i++) {
                    const float u = xa[i], w = xb[i];   /* both read first: y may be x */
                    ya[i] = u * c[i] - w * s[i];
                    yb[i] = w * c[i] + u * s[i];
                }
            }
        }
}

/* Inverts the rotation (its transpose): dx[i] += dy[i] c + dy[i+h] s,
 * dx[i+h] += -dy[i] s + dy[i+h] c. */
static void rope_backward(float *dx, const float *dy, const float *cs, const float *sn, int B,
                          int T, int nh, int D) {
    int half = D / 2;
    for (int b = 0; b < B; b++)
        for (int tt = 0; tt < T; tt++) {
            const float *c = cs + (size_t)tt * half, *s = sn + (size_t)tt * half;
            for (int h = 0; h < nh; h++) {
                size_t off = (((size_t)b * T + tt) * nh + h) * D;
                const float *da = dy + off, *db = da + half;
                float *xa = dx + off, *xb = xa + half;
                for (int i = 0; i < half; i++) {
                    xa[i] += da[i] * c[i] + db[i] * s[i];
                    xb[i] += -da[i] * s[i] + db[i] * c[i];
                }
            }
        }
}

static void op_rope_bw(TapeOp *op) {
    float *dx = grad_of(op->in[0]);
    if (dx)
        rope_backward(dx, op->out->grad, (const float *)op->aux[0], (const float *)op->aux[1],
                      op->i[0], op->i[1], op->i[2], op->i[3]);
}

static Tensor *rope(Tape *t, Tensor *x, int B, int T, int nh, int D, float base, int pos0,
                    bool in_place) {
    ASSERT(B >= 0 && T >= 0 && nh > 0 && D > 0, "rope: B %d T %d nh %d D %d", B, T, nh, D);
    ASSERT(D % 2 == 0, "rope: head dim D = %d must be even", D);
    ASSERT(base > 0.0f, "rope: base %g", (double)base);
    ASSERT(pos0 >= 0, "rope: pos0 %d", pos0);
    ASSERT(tensor_rows(x) == (size_t)B * T && tensor_cols(x) == nh * D,
           "rope: x is (%zu, %d), expected (%d, %d)", tensor_rows(x), tensor_cols(x), B * T,
           nh * D);
    bool needs = tape_needs_grad(t, x, NULL, NULL);
    Tensor *y;
    if (in_place) {
        /* a new header on x's data: y has its own grad, x's values are gone */
        y = arena_alloc(&t->arena, sizeof(Tensor));
        tensor_view(y, x->data, NULL, x->ndim, x->shape, TENSOR_ACT, NULL);
        y->requires_grad = needs;
    } else {
        y = tape_like(t, x, needs);
    }
    size_t tab = (size_t)T * (D / 2);
    float *cs = arena_floats(&t->arena, tab), *sn = arena_floats(&t->arena, tab);
    rope_table(cs, sn, T, D, base, pos0);
    rope_forward(y->data, x->data, cs, sn, B, T, nh, D);
    if (needs) {
        TapeOp *op = tape_push(t, "rope", op_rope_bw, y);
        op->in[0] = x;
        op->i[0] = B;
        op->i[1] = T;
        op->i[2] = nh;
        op->i[3] = D;
        op->i[4] = pos0;
        op->f[0] = (double)base;
        op->aux[0] = cs;
        op->aux[1] = sn;
    }
    return y;
}

Tensor *op_rope(Tape *t, Tensor *x, int B, int T, int nh, int D, float base, int pos0) {
    return rope(t, x, B, T, nh, D, base, pos0, false);
}

Tensor *op_rope_inplace(Tape *t, Tensor *x, int B, int T, int nh, int D, float base, int pos0) {
    return rope(t, x, B, T, nh, D, base, pos0, true);
}

/* ======================================================================== embedding */

/* ---- row gather and its scatter-add (ops_internal.h), shared with op_gather_rows ---- */

typedef struct RowCopy {
    float *y;
    const float *x;
    const int32_t *src;
    int C;
} RowCopy;

static void row_copy_range(void *ctx, size_t lo, size_t hi) {
    const RowCopy *k = ctx;
    for (size_t m = lo; m < hi; m++)
        memcpy(k->y + m * k->C, k->x + (size_t)k->src[m] * k->C, sizeof(float) * k->C);
}

void rows_gather(float *y, const float *x, const int32_t *src, int M, int C) {
    RowCopy k = {y, x, src, C};
    pool_parallel_range((size_t)M, (size_t)M * C, row_copy_range, &k);
}

RowRuns row_runs_build(Arena *a, const int32_t *dst, int M, int n_dst) {
    RowRuns r = {arena_ints(a, (size_t)M + 1), arena_ints(a, (size_t)M + 1), 0};
    /* counting sort by destination, stable: sources keep increasing m inside a run */
    int32_t *next = arena_ints(a, (size_t)n_dst + 1);   /* scratch: write cursor per dst */
    memset(next, 0, sizeof(int32_t) * ((size_t)n_dst + 1));
    for (int m = 0; m < M; m++)
        if (dst[m] >= 0) next[dst[m] + 1]++;
    for (int d = 0; d < n_dst; d++) next[d + 1] += next[d];
    const int P = next[n_dst];   /* sources with a destination */
    for (int m = 0; m < M; m++)
        if (dst[m] >= 0) r.order[next[dst[m]]++] = m;
    r.run[0] = 0;
    for (int j = 1; j < P; j++)
        if (dst[r.order[j]] != dst[r.order[j - 1]]) r.run[++r.n_runs] = j;
    if (P > 0) r.run[++r.n_runs] = P;
    return r;
}

typedef struct RowScatter {
    const RowRuns *r;
    const int32_t *dst;
    float *dx;
    const float *dy, *w;
    int per_row, C;
} RowScatter;

/* Runs [lo, hi): each destination row is one run, so ranges of runs write disjoint rows. */
static void row_scatter_range(void *ctx, size_t lo, size_t hi) {
    const RowScatter *k = ctx;
    const int C = k->C;
    for (size_t u = lo; u < hi; u++) {
        const int32_t j0 = k->r->run[u], j1 = k->r->run[u + 1];
        float *d = k->dx + (size_t)k->dst[k->r->order[j0]] * C;
        for (int32_t j = j0; j < j1; j++) {
            const int32_t m = k->r->order[j];
            const float *s = k->dy + (size_t)(m / k->per_row) * C;
            if (k->w) {
                const float g = k->w[m];
                for (int c = 0; c < C; c++) d[c] += g * s[c];
            } else {
                for (int c = 0; c < C; c++) d[c] += s[c];
            }
        }
    }
}

void row_runs_scatter_add(const RowRuns *r, const int32_t *dst, float *dx, const float *dy,
                          const float *w, int per_row, int C) {
    RowScatter k = {r, dst, dx, dy, w, per_row, C};
    const size_t P = r->n_runs > 0 ? (size_t)r->run[r->n_runs] : 0;
    pool_parallel_range((size_t)r->n_runs, P * C, row_scatter_range, &k);
}

/* y (N, C) = w[ids[n]], w (V, C): rows copied over the cores. */
static void embedding_forward(float *y, const float *w, const int32_t *ids, int N, int C) {
    rows_gather(y, w, ids, N, C);
}

/* Inverts the row gather: dw[ids[n]] += dy[n] (scatter-add; repeated ids accumulate in
 * increasing n, the serial loop's order: the runs of the forward's RowRuns, over the cores). */
static void embedding_backward(float *dw, const float *dy, const int32_t *ids,
                               const RowRuns *runs, int C) {
    row_runs_scatter_add(runs, ids, dw, dy, NULL, 1, C);
}

static void op_embedding_bw(TapeOp *op) {
    float *dw = grad_of(op->in[0]);
    if (dw)
        embedding_backward(dw, op->out->grad, (const int32_t *)op->aux[0],
                           (const RowRuns *)op->aux[1], op->i[1]);
}

Tensor *op_embedding(Tape *t, Tensor *w, const int32_t *ids, int N) {
    ASSERT(w->ndim == 2, "embedding: table must be 2-D (V, C), got %d dims", w->ndim);
    ASSERT(N >= 0, "embedding: N %d", N);
    int V = w->shape[0], C = w->shape[1];
    for (int n = 0; n < N; n++)
        ASSERT(ids[n] >= 0 && ids[n] < V, "embedding: ids[%d] = %d outside [0, %d)", n,
               (int)ids[n], V);
    bool needs = tape_needs_grad(t, w, NULL, NULL);
    Tensor *y = tape_tensor2(t, N, C, needs);
    embedding_forward(y->data, w->data, ids, N, C);
    if (needs) {
        TapeOp *op = tape_push(t, "embedding", op_embedding_bw, y);
        op->in[0] = w;
        op->i[0] = N;
        op->i[1] = C;
        op->aux[0] = (void *)ids; /* borrowed: valid until backward (ops.h contract) */
        /* positions grouped by id for the split scatter-add (arena) */
        RowRuns *runs = arena_alloc(&t->arena, sizeof *runs);
        *runs = row_runs_build(&t->arena, ids, N, V);
        op->aux[1] = runs;
    }
    return y;
}

/* ======================================================================== softmax */

/* y (N, M) = softmax of each row; subtracting the row max keeps exp() <= 1. */
static void softmax_forward(float *y, const float *x, int N, int M) {
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * M;
        float *yr = y + (size_t)n * M;
        float mx = -INFINITY;
        for (int m = 0; m < M; m++) mx = fmaxf(mx, xr[m]);
        double sum = 0.0;
        for (int m = 0; m < M; m++) {
            yr[m] = expf(xr[m] - mx);
            sum += (double)yr[m];
        }
        float inv = (float)(1.0 / sum);
        for (int m = 0; m < M; m++) yr[m] *= inv;
    }
}

/* Inverts the softmax Jacobian: dx_m += y_m (dy_m - sum_j dy_j y_j). */
static void softmax_backward(float *dx, const float *dy, const float *y, int N, int M) {
    for (int n = 0; n < N; n++) {
        const float *yr = y + (size_t)n * M, *dyr = dy + (size_t)n * M;
        float *dxr = dx + (size_t)n * M;
        double dot = 0.0;
        for (int m = 0; m < M; m++) dot += (double)dyr[m] * (double)yr[m];
        float d = (float)dot;
        for (int m = 0; m < M; m++) dxr[m] += yr[m] * (dyr[m] - d);
    }
}

static void op_softmax_bw(TapeOp *op) {
    float *dx = grad_of(op->in[0]);
    if (dx) softmax_backward(dx, op->out->grad, op->out->data, op->i[0], op->i[1]);
}

Tensor *op_softmax(Tape *t, Tensor *x) {
    int M = tensor_cols(x);
    size_t rows = tensor_rows(x);
    ASSERT(M > 0, "softmax: empty rows");
    ASSERT(rows <= (size_t)INT32_MAX, "softmax: %zu rows", rows);
    bool needs = tape_needs_grad(t, x, NULL, NULL);
    Tensor *y = tape_like(t, x, needs);
    softmax_forward(y->data, x->data, (int)rows, M);
    if (needs) {
        TapeOp *op = tape_push(t, "softmax", op_softmax_bw, y);
        op->in[0] = x;
        op->i[0] = (int)rows;
        op->i[1] = M;
    }
    return y;
}

/* ======================================================================== cross-entropy */

/* loss = scale / count * sum_{n: tgt[n] >= 0} (lse[n] - logits[n, tgt[n]]), with
 * lse = max + log(sum exp(x - max)) (no overflow). Writes lse (N) (rows with an ignored
 * target are skipped and left unset) and returns the loss; *count gets the valid rows. */
static float cross_entropy_forward(float *lse, const float *logits, const int32_t *tgt, int N,
                                   int V, float scale, int *count) {
    double loss = 0.0;
    int cnt = 0;
    for (int n = 0; n < N; n++) {
        if (tgt[n] < 0) continue;
        const float *xr = logits + (size_t)n * V;
        float mx = -INFINITY;
        for (int v = 0; v < V; v++) mx = fmaxf(mx, xr[v]);
        double sum = 0.0;
        for (int v = 0; v < V; v++) sum += (double)expf(xr[v] - mx);
        double l = (double)mx + log(sum);
        lse[n] = (float)l;
        loss += l - (double)xr[tgt[n]];
        cnt++;
    }
    *count = cnt;
    return cnt ? (float)((double)scale * loss / cnt) : 0.0f;
}

/* Inverts the loss: dlogits[n] += (softmax(logits[n]) - onehot(tgt[n])) * k,
 * k = scale * dloss / count; ignored rows get nothing. */
static void cross_entropy_backward(float *dlogits, const float *logits, const float *lse,
                                   const int32_t *tgt, int N, int V, float k) {
    for (int n = 0; n < N; n++) {
        if (tgt[n] < 0) continue;
        const float *xr = logits + (size_t)n * V;
        float *dr = dlogits + (size_t)n * V;
        float l = lse[n];
        for (int v = 0; v < V; v++) dr[v] += expf(xr[v] - l) * k;
        dr[tgt[n]] -= k;
    }
}

static void op_cross_entropy_bw(TapeOp *op) {
    float *dx = grad_of(op->in[0]);
    int count = op->i[2];
    if (!dx || count == 0) return;
    float k = (float)(op->f[0] * (double)op->out->grad[0] / count);
    cross_entropy_backward(dx, op->in[0]->data, (const float *)op->aux[0],
                           (const int32_t *)op->aux[1], op->i[0], op->i[1], k);
}

Tensor *op_cross_entropy(Tape *t, Tensor *logits, const int32_t *targets, float scale) {
    int V = tensor_cols(logits);
    size_t rows = tensor_rows(logits);
    ASSERT(V > 0, "cross_entropy: empty vocab");
    ASSERT(rows <= (size_t)INT32_MAX, "cross_entropy: %zu rows", rows);
    int N = (int)rows;
    for (int n = 0; n < N; n++)
        ASSERT(targets[n] < V, "cross_entropy: targets[%d] = %d >= V = %d", n,
               (int)targets[n], V);
    bool needs = tape_needs_grad(t, logits, NULL, NULL);
    Tensor *y = tape_scalar(t, needs);
    float *lse = arena_floats(&t->arena, (size_t)N);
    int count = 0;
    y->data[0] = cross_entropy_forward(lse, logits->data, targets, N, V, scale, &count);
    if (needs) {
        TapeOp *op = tape_push(t, "cross_entropy", op_cross_entropy_bw, y);
        op->in[0] = logits;
        op->i[0] = N;
        op->i[1] = V;
        op->i[2] = count;
        op->f[0] = (double)scale;
        op->aux[0] = lse;
        op->aux[1] = (void *)targets; /* borrowed: valid until backward */
    }
    return y;
}

/* ======================================================================== fused head + loss */

/* Fused LM head and cross-entropy: the (N, V) buffer holds the logits, and when recording
 * is then overwritten in place by d(loss)/d(logits) per unit upstream gradient,
 * (softmax - onehot) * scale / count, which is all backward needs: the logits never get
 * a separate gradient buffer and each exp is computed once (llm.c's fused classifier). */
static void op_linear_ce_bw(TapeOp *op) {
    Tensor *x = op->in[0], *w = op->in[1];
    const float *dl = op->aux[0];
    const int N = op->i[0], C = op->i[1], V = op->i[2];
    const float g = op->out->grad[0];
    float *dx = grad_of(x), *dw = grad_of(w);
    /* inverts logits = x W^T with dlogits = g * dl */
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, V, g, dl, V, w->data, C,
                    1.0f, dx, C);
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, V, C, N, g, dl, V, x->data, C,
                    1.0f, dw, C);
}

typedef struct LceTask {
    float *L;                 /* (N, V) logits in, loss gradient out (when needs) */
    const int32_t *targets;
    int N, V;
    float k;                  /* scale / count */
    bool needs;
    double loss[16];          /* per worker: sum of (lse - logit[target]) */
    int workers;
} LceTask;

/* Rows [N w / W, N (w+1) / W): loss terms, and (when recording) the rows overwritten by
 * (softmax - onehot) * k. */
static void linear_ce_rows(void *ctx, int task, int worker) {
    (void)worker;
    LceTask *a = ctx;
    size_t lo, hi;
    pool_range((size_t)a->N, task, a->workers, &lo, &hi);
    const int V = a->V, k0 = (int)lo, k1 = (int)hi;
    const float k = a->k;
    double loss = 0.0;
    for (int n = k0; n < k1; n++) {
        float *r = a->L + (size_t)n * V;
        const int tg = a->targets[n];
        if (tg < 0) {
            if (a->needs) memset(r, 0, sizeof(float) * (size_t)V);   /* no gradient */
            continue;
        }
        const float mx = vm_max(r, V);
        const float at = r[tg];
        double sum;
        if (a->needs) {
            for (int v = 0; v < V; v++) r[v] = vm_expf(r[v] - mx);
            sum = vm_sum_f64(r, V);
            const float inv = (float)(1.0 / sum) * k;
            for (int v = 0; v < V; v++) r[v] *= inv;
            r[tg] -= k;
        } else {
            /* the logits are the caller's output: exponentiate a chunk at a time */
            float e[256];
            sum = 0.0;
            for (int v0 = 0; v0 < V; v0 += 256) {
                const int m = V - v0 < 256 ? V - v0 : 256;
                for (int v = 0; v < m; v++) e[v] = vm_expf(r[v0 + v] - mx);
                sum += vm_sum_f64(e, m);
            }
        }
        loss += (double)mx + log(sum) - (double)at;
    }
    a->loss[task] = loss;
}

Tensor *op_linear_cross_entropy(Tape *t, Tensor *x, Tensor *w, const int32_t *targets,
                                float scale, Tensor **logits) {
    ASSERT(w->ndim == 2, "linear_cross_entropy: weight must be 2-D");
    const int C = tensor_cols(x), V = w->shape[0];
    ASSERT(w->shape[1] == C, "linear_cross_entropy: x cols %d != W in %d", C, w->shape[1]);
    size_t rows = tensor_rows(x);
    ASSERT(rows <= (size_t)INT32_MAX, "linear_cross_entropy: %zu rows", rows);
    const int N = (int)rows;
    int count = 0;
    for (int n = 0; n < N; n++) {
        ASSERT(targets[n] < V, "linear_cross_entropy: targets[%d] = %d >= V = %d", n,
               (int)targets[n], V);
        count += targets[n] >= 0;
    }
    const bool needs = tape_needs_grad(t, x, w, NULL);
    Tensor *L = tape_tensor2(t, N, V, false);                      /* (N, V) */
    Tensor *y = tape_scalar(t, needs);
    if (N > 0) linear_forward(L->data, x->data, w->data, N, C, V);
    LceTask task = {L->data, targets, N, V, count ? scale / (float)count : 0.0f, needs,
                    {0.0}, pool_workers()};
    /* rows are independent: split them over the cores (no BLAS inside) */
    pool_parallel_for(task.workers, linear_ce_rows, &task);
    double loss = 0.0;
    for (int j = 0; j < task.workers; j++) loss += task.loss[j];   /* fixed order */
    y->data[0] = count ? (float)((double)scale * loss / count) : 0.0f;
    if (logits) *logits = needs ? NULL : L;
    if (needs && N > 0) {
        TapeOp *op = tape_push(t, "linear_cross_entropy", op_linear_ce_bw, y);
        op->in[0] = x;
        op->in[1] = w;
        op->i[0] = N;
        op->i[1] = C;
        op->i[2] = V;
        op->aux[0] = L->data;
    }
    return y;
}

/* ======================================================================== chunked head + loss */

/* Chunked variant (ops.h): rows go through the (chunk, V) buffer in blocks; when recording,
 * each block's loss gradient is turned at once into its rows of dX = dlogits W (saved, (N, C))
 * and its share of dW = dlogits^T x (summed over blocks into a saved (V, C)), so no (N, V)
 * buffer exists. Backward only adds g * dX and g * dW (g = upstream grad of the loss). */
static void op_linear_ce_chunked_bw(TapeOp *op) {
    Tensor *x = op->in[0], *w = op->in[1];
    const float *dX = op->aux[0], *dW = op->aux[1];
    const float g = op->out->grad[0];
    float *dx = grad_of(x), *dw = grad_of(w);
    /* inverts loss(x W^T): d/dx = g dlogits W, d/dW = g dlogits^T x (summed in forward) */
    if (dx && dX) for (size_t j = 0; j < x->n; j++) dx[j] += g * dX[j];
    if (dw && dW) for (size_t j = 0; j < w->n; j++) dw[j] += g * dW[j];
}

Tensor *op_linear_cross_entropy_chunked(Tape *t, Tensor *x, Tensor *w, const int32_t *targets,
                                        float scale, int chunk) {
    ASSERT(w->ndim == 2, "linear_cross_entropy_chunked: weight must be 2-D");
    ASSERT(chunk >= 1, "linear_cross_entropy_chunked: chunk %d", chunk);
    const int C = tensor_cols(x), V = w->shape[0];
    ASSERT(w->shape[1] == C, "linear_cross_entropy_chunked: x cols %d != W in %d", C,
           w->shape[1]);
    size_t rows = tensor_rows(x);
    ASSERT(rows <= (size_t)INT32_MAX, "linear_cross_entropy_chunked: %zu rows", rows);
    const int N = (int)rows;
    int count = 0;
    for (int n = 0; n < N; n++) {
        ASSERT(targets[n] < V, "linear_cross_entropy_chunked: targets[%d] = %d >= V = %d", n,
               (int)targets[n], V);
        count += targets[n] >= 0;
    }
    const bool needs = tape_needs_grad(t, x, w, NULL);
    const int R = chunk < N ? chunk : (N > 0 ? N : 1);
    Tensor *y = tape_scalar(t, needs);
    float *L = arena_floats(&t->arena, (size_t)R * V);                    /* (R, V) scratch */
    float *dX = needs && x->requires_grad ? arena_floats(&t->arena, (size_t)N * C + 1) : NULL;
    float *dW = needs && w->requires_grad ? arena_zeros(&t->arena, (size_t)V * C) : NULL;
    const float k = count ? scale / (float)count : 0.0f;
    double loss = 0.0;
    for (int r0 = 0; r0 < N; r0 += R) {
        const int m = N - r0 < R ? N - r0 : R;
        const float *xr = x->data + (size_t)r0 * C;
        linear_forward(L, xr, w->data, m, C, V);
        LceTask task = {L, targets + r0, m, V, k, needs, {0.0}, pool_workers()};
        pool_parallel_for(task.workers, linear_ce_rows, &task);
        for (int j = 0; j < task.workers; j++) loss += task.loss[j];   /* fixed order */
        /* L now holds this block's d(loss)/d(logits) per unit upstream gradient */
        if (dX)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, C, V, 1.0f, L, V,
                        w->data, C, 0.0f, dX + (size_t)r0 * C, C);
        if (dW)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, V, C, m, 1.0f, L, V, xr, C,
                        1.0f, dW, C);
    }
    y->data[0] = count ? (float)((double)scale * loss / count) : 0.0f;
    if (needs && N > 0) {
        TapeOp *op = tape_push(t, "linear_cross_entropy_chunked", op_linear_ce_chunked_bw, y);
        op->in[0] = x;
        op->in[1] = w;
        op->i[0] = chunk;
        op->aux[0] = dX;
        op->aux[1] = dW;
    }
    return y;
}

/* ======================================================================== sum / mean */

/* Sum of n floats in double (a float running sum loses ~n * 2^-24 relative). */
static double sum_forward(const float *x, size_t n) {
    double s = 0.0;
    for (size_t j = 0; j < n; j++) s += (double)x[j];
    return s;
}

/* Inverts y = k * sum(x): dx += k dy. */
static void sum_backward(float *dx, float dyk, size_t n) {
    for (size_t j = 0; j < n; j++) dx[j] += dyk;
}

static void op_sum_bw(TapeOp *op) {
    float *dx = grad_of(op->in[0]);
    if (dx) sum_backward(dx, (float)((double)op->out->grad[0] * op->f[0]), op->in[0]->n);
}

static Tensor *sum_scaled(Tape *t, Tensor *x, double k, const char *name) {
    bool needs = tape_needs_grad(t, x, NULL, NULL);
    Tensor *y = tape_scalar(t, needs);
    y->data[0] = (float)(k * sum_forward(x->data, x->n));
    if (needs) {
        TapeOp *op = tape_push(t, name, op_sum_bw, y);
        op->in[0] = x;
        op->f[0] = k;
    }
    return y;
}

Tensor *op_sum(Tape *t, Tensor *x) { return sum_scaled(t, x, 1.0, "sum"); }

Tensor *op_mean(Tape *t, Tensor *x) {
    ASSERT(x->n > 0, "mean of an empty tensor");
    return sum_scaled(t, x, 1.0 / (double)x->n, "mean");
}
