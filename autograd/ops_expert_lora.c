/* ops_expert_lora.c: op_expert_lora_linear (autograd/ops.h), LoRA adapters on the grouped
 * expert products (Hu et al. 2021, arXiv:2106.09685; layers/lora.h has the formula, the
 * initialisation and the names).
 *
 * Rows offs[e] .. offs[e+1]-1 belong to expert e (layers/moe.c sorts them); W (E, out, in).
 * Per-expert adapters A (E, r, in), B (E, out, r): every product of expert e (base and
 * adapter) is one task on the cores (pool_parallel_for, busiest expert first, each gemm
 * single-threaded inside, as op_expert_linear): tasks write disjoint rows of y, u, du and
 * dx and their own W_e, A_e, B_e gradients, each element in a fixed order, so the results
 * are the same at any thread count. Shared adapters A (r, in), B (out, r): the base per
 * expert as above, the adapter as products over all M rows at once (its gradients sum over
 * every expert's rows: one product, no reduction between tasks).
 * Non-goals: dropout on the adapter input (layers/lora.h says why), fusing the SwiGLU or
 * the gather (the fused ops of ops_expert.c stay the path without expert adapters).
 */
#include "autograd/gemm.h"
#include "autograd/ops.h"

#include "autograd/ops_internal.h"
#include "core/pool.h"

#include <string.h>

/* What forward and backward tasks share (carved from the tape's arena for backward). */
typedef struct ExpertLora {
    const float *x, *w, *a, *b;    /* x (M, in); W (E, out, in); A, B as the op says */
    const float *dy;               /* (M, out) backward */
    float *y;                      /* (M, out) forward */
    float *u, *du;                 /* (M, r): x A_e^T (kept), scale dy B_e (scratch) */
    float *dx, *dw, *da, *db;      /* grads (backward; NULL = not required) */
    const int32_t *offs, *order;
    int E, din, dout, r;
    bool shared;                   /* A, B 2-D: one pair for every expert */
    float scale;
} ExpertLora;

/* Expert e's slices of A and B: its own (per expert) or the shared pair. */
static const float *lora_a_of(const ExpertLora *k, const float *a, int e) {
    return k->shared ? a : a + (size_t)e * k->r * k->din;
}
static const float *lora_b_of(const ExpertLora *k, const float *b, int e) {
    return k->shared ? b : b + (size_t)e * k->dout * k->r;
}

/* y_e = x_e W_e^T, and per expert: u_e = x_e A_e^T; y_e += s u_e B_e^T. */
static void expert_lora_forward_task(void *ctx, int task, int worker) {
    (void)worker;
    const ExpertLora *k = ctx;
    const int e = k->order[task];
    const int m = k->offs[e + 1] - k->offs[e];
    if (m == 0) return;
    const size_t r0 = (size_t)k->offs[e];
    const float *x = k->x + r0 * k->din;
    float *y = k->y + r0 * k->dout;
    gemm(false, true, m, k->dout, k->din, 1.0f, x, k->din,
         k->w + (size_t)e * k->dout * k->din, k->din, 0.0f, y, k->dout);
    if (k->shared) return;   /* the adapter follows over all rows */
    float *u = k->u + r0 * k->r;
    gemm(false, true, m, k->r, k->din, 1.0f, x, k->din, lora_a_of(k, k->a, e), k->din, 0.0f,
         u, k->r);
    gemm(false, true, m, k->dout, k->r, k->scale, u, k->r, lora_b_of(k, k->b, e), k->r, 1.0f,
         y, k->dout);
}

/* Inverts expert e's products: dW_e += dy_e^T x_e; dx_e += dy_e W_e; and per expert
 * dB_e += s dy_e^T u_e; du_e = s dy_e B_e; dA_e += du_e^T x_e; dx_e += du_e A_e. */
static void expert_lora_backward_task(void *ctx, int task, int worker) {
    (void)worker;
    const ExpertLora *k = ctx;
    const int e = k->order[task];
    const int m = k->offs[e + 1] - k->offs[e];
    if (m == 0) return;   /* empty expert: its gradients stay as they were */
    const size_t r0 = (size_t)k->offs[e], wst = (size_t)k->dout * k->din;
    const float *x = k->x + r0 * k->din, *dy = k->dy + r0 * k->dout;
    float *dx = k->dx ? k->dx + r0 * k->din : NULL;
    if (k->dw)
        gemm(true, false, k->dout, k->din, m, 1.0f, dy, k->dout, x, k->din, 1.0f,
             k->dw + (size_t)e * wst, k->din);
    if (dx)
        gemm(false, false, m, k->din, k->dout, 1.0f, dy, k->dout, k->w + (size_t)e * wst,
             k->din, 1.0f, dx, k->din);
    if (k->shared) return;
    const float *u = k->u + r0 * k->r;
    float *du = k->du + r0 * k->r;
    if (k->db)
        gemm(true, false, k->dout, k->r, m, k->scale, dy, k->dout, u, k->r, 1.0f,
             (float *)lora_b_of(k, k->db, e), k->r);
    if (!k->da && !dx) return;
    gemm(false, false, m, k->r, k->dout, k->scale, dy, k->dout, lora_b_of(k, k->b, e), k->r,
         0.0f, du, k->r);
    if (k->da)
        gemm(true, false, k->r, k->din, m, 1.0f, du, k->r, x, k->din, 1.0f,
             (float *)lora_a_of(k, k->da, e), k->din);
    if (dx)
        gemm(false, false, m, k->din, k->r, 1.0f, du, k->r, lora_a_of(k, k->a, e), k->din,
             1.0f, dx, k->din);
}

/* Shared adapters over all M rows, after the base tasks: dB += s dy^T u; du = s dy B;
 * dA += du^T x; dx += du A. */
static void shared_backward(const ExpertLora *k, int M) {
    if (k->db)
        gemm(true, false, k->dout, k->r, M, k->scale, k->dy, k->dout, k->u, k->r, 1.0f, k->db,
             k->r);
    if (!k->da && !k->dx) return;
    gemm(false, false, M, k->r, k->dout, k->scale, k->dy, k->dout, k->b, k->r, 0.0f, k->du,
         k->r);
    if (k->da)
        gemm(true, false, k->r, k->din, M, 1.0f, k->du, k->r, k->x, k->din, 1.0f, k->da,
             k->din);
    if (k->dx)
        gemm(false, false, M, k->din, k->r, 1.0f, k->du, k->r, k->a, k->din, 1.0f, k->dx,
             k->din);
}

static void expert_lora_backward(TapeOp *op) {
    Tensor *x = op->in[0], *w = op->in[1], *a = op->in[2], *b = op->in[3];
    ExpertLora k = *(const ExpertLora *)op->aux[0];
    k.dy = op->out->grad;
    k.dx = grad_of(x);
    k.dw = grad_of(w);
    k.da = grad_of(a);
    k.db = grad_of(b);
    if (!k.dx && !k.dw && !k.da && !k.db) return;
    pool_parallel_for(k.E, expert_lora_backward_task, &k);
    if (k.shared) shared_backward(&k, k.offs[k.E]);
}

Tensor *op_expert_lora_linear(Tape *t, Tensor *x, Tensor *w, Tensor *a, Tensor *b,
                              const int32_t *offs, int E, float scale) {
    const size_t M = tensor_rows(x);
    const int din = tensor_cols(x);
    ASSERT(w->ndim == 3 && w->shape[0] == E && w->shape[2] == din,
           "W ndim %d (%d, %d, %d) does not match E %d, in %d", w->ndim, w->shape[0],
           w->shape[1], w->shape[2], E, din);
    const int dout = w->shape[1];
    const bool shared = a->ndim == 2;
    const int r = a->shape[shared ? 0 : 1];
    if (shared)
        ASSERT(a->shape[1] == din && b->ndim == 2 && b->shape[0] == dout && b->shape[1] == r,
               "shared adapters A (%d, %d), B (%d, %d) do not match in %d, out %d",
               a->shape[0], a->shape[1], b->shape[0], b->shape[1], din, dout);
    else
        ASSERT(a->ndim == 3 && a->shape[0] == E && a->shape[2] == din && b->ndim == 3 &&
               b->shape[0] == E && b->shape[1] == dout && b->shape[2] == r,
               "per-expert adapters A (%d, %d, %d), B (%d, %d, %d) do not match E %d, in %d, "
               "out %d", a->shape[0], a->shape[1], a->shape[2], b->shape[0], b->shape[1],
               b->shape[2], E, din, dout);
    ASSERT(M <= (size_t)INT32_MAX, "expert_lora_linear: %zu rows", M);
    expert_offs_check(offs, E, M);
    const bool need = tape_needs_grad(t, x, w, a) || tape_needs_grad(t, b, NULL, NULL);
    Tensor *y = tape_tensor2(t, (int)M, dout, need);                 /* (M, out) */
    float *u = arena_floats(&t->arena, M * (size_t)r);               /* (M, r) */
    ExpertLora k = {
        .x = x->data, .w = w->data, .a = a->data, .b = b->data, .y = y->data, .u = u,
        .offs = offs, .order = expert_order(t, offs, E), .E = E, .din = din, .dout = dout,
        .r = r, .shared = shared, .scale = scale,
    };
    pool_parallel_for(E, expert_lora_forward_task, &k);
    if (shared && M > 0) {   /* u = x A^T; y += s u B^T over all rows */
        gemm(false, true, (int)M, r, din, 1.0f, x->data, din, a->data, din, 0.0f, u, r);
        gemm(false, true, (int)M, dout, r, scale, u, r, b->data, r, 1.0f, y->data, dout);
    }
    if (need && M > 0) {
        k.y = NULL;
        k.du = arena_floats(&t->arena, M * (size_t)r);               /* (M, r) scratch */
        ExpertLora *kept = arena_alloc(&t->arena, sizeof *kept);
        *kept = k;
        TapeOp *op = tape_push(t, "expert_lora_linear", expert_lora_backward, y);
        op->in[0] = x;
        op->in[1] = w;
        op->in[2] = a;
        op->in[3] = b;
        op->aux[0] = kept;
    }
    return y;
}
