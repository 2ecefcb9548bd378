/* ops_elementwise.c: the elementwise ops of autograd/ops.h: op_add, op_mul, op_scale,
 * op_silu, op_swiglu, op_softplus. All operands have the same number of elements n (no
 * broadcasting); backward kernels ACCUMULATE into the inputs' grads.
 *
 * Threading: op_add and op_mul split their loops into ranges over the cores
 * (pool_parallel_range), op_swiglu into pool_workers() contiguous ranges when
 * n >= POOL_SPLIT_MIN (swiglu_run); op_scale, op_silu and op_softplus are single-threaded
 * loops. A split changes no element's arithmetic, so every result is bit-identical at any
 * thread count. The add and SwiGLU kernels are shared with the fused ops (ops_internal.h).
 * Non-goals: broadcasting, strided views.
 * References: Elfwing et al. 2018 (SiLU); Shazeer 2020 (SwiGLU).
 */
#include "autograd/ops.h"

#include "autograd/ops_internal.h"
#include "autograd/vmath.h"
#include "core/pool.h"

#include <math.h>

static float sigmoidf(float x) { return vm_sigmoidf(x); }

/* ---------------- add / mul / scale ---------------- */

static void add_forward(float *y, const float *a, const float *b, size_t n) {
    for (size_t j = 0; j < n; j++) y[j] = a[j] + b[j];
}

/* Inverts y = a + b: da += dy, db += dy. */
static void add_backward(float *da, float *db, const float *dy, size_t n) {
    if (da) for (size_t j = 0; j < n; j++) da[j] += dy[j];
    if (db) for (size_t j = 0; j < n; j++) db[j] += dy[j];
}

/* op_add and op_mul over the cores (pool_parallel_range): each element's arithmetic is
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

/* ---------------- silu / swiglu ---------------- */

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

/* swiglu_run's split: pool_workers() contiguous ranges of [0, n), one task each; the
 * per-element arithmetic is the serial loop's. */
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

/* ---------------- softplus ---------------- */

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
