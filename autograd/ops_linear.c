/* ops_linear.c: the matrix-product ops of autograd/ops.h: op_linear, op_linear_residual
 * (the product added to the residual stream) and op_swiglu_linear (SwiGLU then the down
 * projection, the activation recomputed in backward instead of kept).
 *
 * Every product is one gemm (autograd/gemm.h); the residual add and the
 * SwiGLU are op_add's and op_swiglu's kernels (ops_internal.h), so each fused op equals its
 * composition bit for bit. Backward kernels ACCUMULATE into the inputs' grads and skip the
 * weight-gradient GEMM of a weight that does not require grad.
 * Weights are in the [out, in] layout of Hugging Face checkpoints.
 * Non-goals: biases, transposed or strided operands, other fusions.
 * Reference: Shazeer 2020, "GLU Variants Improve Transformer" (SwiGLU).
 */
#include "autograd/gemm.h"
#include "autograd/ops.h"

#include "autograd/ops_internal.h"

#include <string.h>

/* ---------------- linear ---------------- */

/* y (N, out) = x (N, in) @ w^T, w (out, in) (ops_internal.h). */
void linear_forward(float *y, const float *x, const float *w, int N, int in, int out) {
    gemm(false, true, N, out, in, 1.0f, x, in, w, in,
                0.0f, y, out);
}

/* Inverts y = x w^T: dx (N, in) += dy w; dw (out, in) += dy^T x. Either may be NULL. */
static void linear_backward(float *dx, float *dw, const float *dy, const float *x,
                            const float *w, int N, int in, int out) {
    if (dx)
        gemm(false, false, N, in, out, 1.0f, dy, out, w,
                    in, 1.0f, dx, in);
    if (dw)
        gemm(true, false, out, in, N, 1.0f, dy, out, x, in,
                    1.0f, dw, in);
}

static void op_linear_bw(TapeOp *op) {
    Tensor *x = op->in[0], *w = op->in[1];
    if (op->i[3]) gemm_fp32_begin();
    linear_backward(grad_of(x), grad_of(w), op->out->grad, x->data, w->data, op->i[0],
                    op->i[1], op->i[2]);
    if (op->i[3]) gemm_fp32_end();
}

static Tensor *linear(Tape *t, Tensor *x, Tensor *w, bool fp32) {
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
    if (fp32) gemm_fp32_begin();
    if (N > 0) linear_forward(y->data, x->data, w->data, N, in, out);
    if (fp32) gemm_fp32_end();
    if (needs && N > 0) {
        TapeOp *op = tape_push(t, "linear", op_linear_bw, y);
        op->in[0] = x;
        op->in[1] = w;
        op->i[0] = N;
        op->i[1] = in;
        op->i[2] = out;
        op->i[3] = fp32;
    }
    return y;
}

Tensor *op_linear(Tape *t, Tensor *x, Tensor *w) { return linear(t, x, w, false); }
Tensor *op_linear_fp32(Tape *t, Tensor *x, Tensor *w) { return linear(t, x, w, true); }

/* ---------------- fused swiglu + linear ---------------- */

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

/* ---------------- linear + residual ---------------- */

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
