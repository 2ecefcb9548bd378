/* ops_expert.c: the grouped expert GEMMs of autograd/ops.h: op_expert_linear (one product
 * per expert over its contiguous rows), op_swiglu_expert_linear (the experts' SwiGLU and
 * down projection, the activation recomputed in backward instead of kept) and
 * op_gather_expert_up (the routing gather fused into the two up projections, the gathered
 * rows recomputed in backward instead of kept).
 *
 * Rows offs[e] .. offs[e+1]-1 belong to expert e (the routing, layers/moe.c, sorts them);
 * W (E, out, in) holds one [out, in] matrix per expert.
 * Threading: experts are independent products (disjoint rows of the activations and their
 * grads, their own W_e and dW_e): one task per non-empty expert, busiest first, on the
 * cores (pool_parallel_for), each sgemm single-threaded inside. Every element is computed
 * by one task in a fixed order, so the results are bit-identical at any thread count.
 * The fused ops use op_swiglu's kernels and op_gather_rows' copy (ops_internal.h) and equal
 * their compositions bit for bit.
 * Non-goals: capacity planning and the routing itself (layers/moe.c), expert parallelism
 * (parallel/), padded or batched-GEMM layouts.
 */
#include "autograd/expert_ffn.h"
#include "autograd/gemm.h"
#include "autograd/ops.h"

#include "autograd/ops_internal.h"
#include "core/pool.h"

#include <string.h>

/* ---------------- grouped expert GEMM ---------------- */

/* Experts are independent products (disjoint rows of x, y and their grads, their own W_e):
 * one task per expert on the cores, each sgemm single-threaded (pool_parallel_for). */
static void expert_linear_backward_task(void *ctx, int task, int worker) {
    (void)worker;
    TapeOp *op = ctx;
    Tensor *x = op->in[0], *w = op->in[1], *out = op->out;
    const int32_t *offs = op->aux[0];
    const int e = ((const int32_t *)op->aux[1])[task];
    const int dout = w->shape[1], din = w->shape[2];
    const size_t wstride = (size_t)dout * din;
    const int m = offs[e + 1] - offs[e];
    if (m == 0) return;   /* empty expert: nothing to multiply */
    const float *dy = out->grad + (size_t)offs[e] * dout;
    /* y_e = x_e W_e^T  =>  dx_e += dy_e W_e;  dW_e += dy_e^T x_e. */
    if (x->requires_grad)
        gemm(false, false, m, din, dout, 1.0f, dy, dout,
                    w->data + e * wstride, din, 1.0f, x->grad + (size_t)offs[e] * din, din);
    if (w->requires_grad)
        gemm(true, false, dout, din, m, 1.0f, dy, dout,
                    x->data + (size_t)offs[e] * din, din, 1.0f, w->grad + e * wstride, din);
}

static void expert_linear_backward(TapeOp *op) {
    pool_parallel_for(op->i[0], expert_linear_backward_task, op);
}

typedef struct ExpertFwd {
    const float *x, *w;
    float *y;
    const int32_t *offs, *order;
    int din, dout;
} ExpertFwd;

static void expert_linear_forward_task(void *ctx, int task, int worker) {
    (void)worker;
    const ExpertFwd *a = ctx;
    const int e = a->order[task];
    const int m = a->offs[e + 1] - a->offs[e];
    if (m == 0) return;
    const size_t wstride = (size_t)a->dout * a->din;
    gemm(false, true, m, a->dout, a->din, 1.0f,
                a->x + (size_t)a->offs[e] * a->din, a->din, a->w + e * wstride, a->din, 0.0f,
                a->y + (size_t)a->offs[e] * a->dout, a->dout);
}

/* offs (E+1) must cover [0, M) in order: every output row is then written by some sgemm. */
void expert_offs_check(const int32_t *offs, int E, size_t M) {
    ASSERT(offs[0] == 0 && (size_t)offs[E] == M, "offs[0] = %d, offs[E] = %d, M = %zu",
           offs[0], offs[E], M);
    for (int e = 0; e < E; e++)
        ASSERT(offs[e + 1] >= offs[e], "offs not monotone at expert %d: %d > %d", e,
               offs[e], offs[e + 1]);
}

/* Busiest experts first (longest-processing-time order): the workers claim tasks in that
 * order, so the last products to start are the short ones and the cores finish together.
 * Insertion sort by row count, ties by index (E is small). order (E) from t's arena (kept:
 * the backward runs its tasks in the same order). */
int32_t *expert_order(Tape *t, const int32_t *offs, int E) {
    int32_t *order = arena_ints(&t->arena, (size_t)E);
    for (int e = 0; e < E; e++) {
        const int32_t me = offs[e + 1] - offs[e];
        int j = e;
        while (j > 0 && offs[order[j - 1] + 1] - offs[order[j - 1]] < me) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = e;
    }
    return order;
}

Tensor *op_expert_linear(Tape *t, Tensor *x, Tensor *w, const int32_t *offs, int E) {
    const size_t M = tensor_rows(x);
    const int din = tensor_cols(x);
    ASSERT(w->ndim == 3 && w->shape[0] == E && w->shape[2] == din,
           "W ndim %d (%d, %d, %d) does not match E %d, in %d", w->ndim, w->shape[0],
           w->shape[1], w->shape[2], E, din);
    expert_offs_check(offs, E, M);
    const int dout = w->shape[1];
    const bool need = tape_needs_grad(t, x, w, NULL);
    Tensor *out = tape_tensor2(t, (int)M, dout, need);
    int32_t *order = expert_order(t, offs, E);
    ExpertFwd a = {x->data, w->data, out->data, offs, order, din, dout};
    pool_parallel_for(E, expert_linear_forward_task, &a);
    if (need) {
        TapeOp *op = tape_push(t, "expert_linear", expert_linear_backward, out);
        op->in[0] = x;
        op->in[1] = w;
        op->i[0] = E;
        op->aux[0] = (void *)offs;   /* borrowed, read-only */
        op->aux[1] = order;
    }
    return out;
}

/* ---------------- grouped expert GEMM with a fused SwiGLU ---------------- */

/* One expert's rows r0 .. r0+m-1 are a task: its SwiGLU rows, its sgemms and its slice of
 * the scratch are its own, so tasks write disjoint memory (pool_parallel_for). */
typedef struct SwigluExpert {
    const float *a, *b, *w, *dy;   /* a, b (M, F); W (E, C, F); dy (M, C) (backward) */
    float *act;                    /* (M, F) scratch: act, then dact in backward */
    float *y;                      /* (M, C) forward output */
    float *da, *db, *dw;           /* grads (backward; NULL = not required) */
    const int32_t *offs, *order;
    int F, C;
} SwigluExpert;

static void swiglu_expert_forward_task(void *ctx, int task, int worker) {
    (void)worker;
    const SwigluExpert *k = ctx;
    const int e = k->order[task];
    const int m = k->offs[e + 1] - k->offs[e];
    if (m == 0) return;
    const size_t r0 = (size_t)k->offs[e], F = (size_t)k->F, C = (size_t)k->C;
    float *act = k->act + r0 * F;
    swiglu_forward(act, k->a + r0 * F, k->b + r0 * F, (size_t)m * F);
    /* op_expert_linear's forward sgemm on act */
    gemm(false, true, m, k->C, k->F, 1.0f, act, k->F,
                k->w + (size_t)e * C * F, k->F, 0.0f, k->y + r0 * C, k->C);
}

/* Inverts y_e = act_e W_e^T, act_e = silu(a_e) b_e, with the float operations of
 * op_expert_linear's then op_swiglu's backward:
 *   act_e = silu(a_e) b_e (recomputed);  dW_e += dy_e^T act_e;
 *   dact_e = dy_e W_e (over act_e: zeroed, then beta 1, as into op_expert_linear's zeroed
 *   input grad);  da_e += dact_e b_e silu'(a_e), db_e += dact_e silu(a_e). */
static void swiglu_expert_backward_task(void *ctx, int task, int worker) {
    (void)worker;
    const SwigluExpert *k = ctx;
    const int e = k->order[task];
    const int m = k->offs[e + 1] - k->offs[e];
    if (m == 0) return;   /* empty expert: nothing to multiply, dW_e stays as it was */
    const size_t r0 = (size_t)k->offs[e], F = (size_t)k->F, C = (size_t)k->C;
    const size_t n = (size_t)m * F;
    const float *a = k->a + r0 * F, *b = k->b + r0 * F, *dy = k->dy + r0 * C;
    const float *w = k->w + (size_t)e * C * F;
    float *act = k->act + r0 * F;
    if (k->dw && (k->da || k->db)) gemm_local_standin(dy, (size_t)m * C);   /* read twice */
    if (k->dw) {
        swiglu_forward(act, a, b, n);
        gemm(true, false, k->C, k->F, m, 1.0f, dy, k->C,
                    act, k->F, 1.0f, k->dw + (size_t)e * C * F, k->F);
    }
    if (k->da || k->db) {
        memset(act, 0, sizeof(float) * n);
        gemm(false, false, m, k->F, k->C, 1.0f, dy, k->C,
                    w, k->F, 1.0f, act, k->F);
        swiglu_backward(k->da ? k->da + r0 * F : NULL, k->db ? k->db + r0 * F : NULL, act, a,
                        b, n);
    }
    gemm_local_clear();
}

static void swiglu_expert_backward(TapeOp *op) {
    Tensor *a = op->in[0], *b = op->in[1], *w = op->in[2];
    SwigluExpert k = {
        .a = a->data, .b = b->data, .w = w->data, .dy = op->out->grad,
        .act = tape_scratch(op->aux[2], a->n),
        .da = a->requires_grad ? a->grad : NULL,
        .db = b->requires_grad ? b->grad : NULL,
        .dw = w->requires_grad ? w->grad : NULL,
        .offs = op->aux[0], .order = op->aux[1],
        .F = tensor_cols(a), .C = w->shape[1],
    };
    if (!k.dw && !k.da && !k.db) return;
    pool_parallel_for(op->i[0], swiglu_expert_backward_task, &k);
}

Tensor *op_swiglu_expert_linear(Tape *t, Tensor *a, Tensor *b, Tensor *w, const int32_t *offs,
                                int E) {
    const size_t M = tensor_rows(a);
    const int F = tensor_cols(a);
    ASSERT(tensor_rows(b) == M && tensor_cols(b) == F, "swiglu_expert_linear: a (%zu, %d) "
           "and b (%zu, %d) differ", M, F, tensor_rows(b), tensor_cols(b));
    ASSERT(w->ndim == 3 && w->shape[0] == E && w->shape[2] == F,
           "W ndim %d (%d, %d, %d) does not match E %d, in %d", w->ndim, w->shape[0],
           w->shape[1], w->shape[2], E, F);
    expert_offs_check(offs, E, M);
    const int C = w->shape[1];
    const bool need = tape_needs_grad(t, a, b, w);
    Tensor *out = tape_tensor2(t, (int)M, C, need);                 /* (M, C) */
    int32_t *order = expert_order(t, offs, E);
    SwigluExpert k = {
        .a = a->data, .b = b->data, .w = w->data,
        .act = tape_scratch(t, a->n),                               /* (M, F), not kept */
        .y = out->data, .offs = offs, .order = order, .F = F, .C = C,
    };
    pool_parallel_for(E, swiglu_expert_forward_task, &k);
    if (need) {
        TapeOp *op = tape_push(t, "swiglu_expert_linear", swiglu_expert_backward, out);
        op->in[0] = a;
        op->in[1] = b;
        op->in[2] = w;
        op->i[0] = E;
        op->aux[0] = (void *)offs;   /* borrowed, read-only */
        op->aux[1] = order;
        op->aux[2] = t;              /* the tape whose scratch the backward borrows */
    }
    return out;
}

/* ---------------- gather fused into the experts' two up projections ---------------- */

/* What the backward needs besides the tensors (carved from the tape's arena). */
typedef struct ExpertUp {
    Tape *t;                       /* the tape whose scratch the backward borrows */
    Tensor *h3;                    /* the second output: its grad is read in backward */
    const int32_t *rows, *offs, *order;
    int E;
} ExpertUp;

/* One expert's slots offs[e] .. offs[e+1]-1 are a task: their rows of the scratch, of h1,
 * h3 and of their grads and W1[e], W3[e] are its own (pool_parallel_for). */
typedef struct ExpertUpTask {
    const float *x, *w1, *w3;      /* x (N, C); W1, W3 (E, F, C) */
    const float *dh1, *dh3;        /* (M, F) (backward) */
    float *xg;                     /* (M, C) scratch: the gathered rows, then their grad */
    float *h1, *h3;                /* (M, F) forward outputs */
    float *dw1, *dw3;              /* grads (backward; NULL = not required) */
    bool dx;                       /* backward: form the gathered rows' grad */
    const int32_t *rows, *offs, *order;
    int C, F;
} ExpertUpTask;

/* xg rows r0 .. r0+m-1 = x[rows[r]] (op_gather_rows' copy). */
static void expert_up_gather(const ExpertUpTask *k, size_t r0, int m) {
    const size_t C = (size_t)k->C;
    for (int r = 0; r < m; r++)
        memcpy(k->xg + (r0 + (size_t)r) * C, k->x + (size_t)k->rows[r0 + (size_t)r] * C,
               sizeof(float) * C);
}

static void expert_up_forward_task(void *ctx, int task, int worker) {
    (void)worker;
    const ExpertUpTask *k = ctx;
    const int e = k->order[task];
    const int m = k->offs[e + 1] - k->offs[e];
    if (m == 0) return;
    const size_t r0 = (size_t)k->offs[e], C = (size_t)k->C, F = (size_t)k->F;
    expert_up_gather(k, r0, m);
    const float *xg = k->xg + r0 * C;
    gemm_local_standin(xg, (size_t)m * C);   /* bf16: rounded once for both products */
    /* op_expert_linear's forward sgemm, for W1 then W3 */
    gemm(false, true, m, k->F, k->C, 1.0f, xg, k->C,
                k->w1 + (size_t)e * F * C, k->C, 0.0f, k->h1 + r0 * F, k->F);
    gemm(false, true, m, k->F, k->C, 1.0f, xg, k->C,
                k->w3 + (size_t)e * F * C, k->C, 0.0f, k->h3 + r0 * F, k->F);
    gemm_local_clear();
}

/* Inverts h1_e = xg_e W1_e^T, h3_e = xg_e W3_e^T, xg = x[rows], with the float operations
 * of the composition's backward (op_expert_linear for h3, then for h1, then
 * op_gather_rows): xg_e re-gathered; dW3_e += dh3_e^T xg_e, dW1_e += dh1_e^T xg_e;
 * dxg_e = dh3_e W3_e + dh1_e W1_e over xg_e (zeroed, then two sgemms with beta 1 in that
 * order, as into the composition's zeroed grad of xg). The scatter into dx follows the
 * tasks (expert_up_backward): rows repeat across experts. */
static void expert_up_backward_task(void *ctx, int task, int worker) {
    (void)worker;
    const ExpertUpTask *k = ctx;
    const int e = k->order[task];
    const int m = k->offs[e + 1] - k->offs[e];
    if (m == 0) return;
    const size_t r0 = (size_t)k->offs[e], C = (size_t)k->C, F = (size_t)k->F;
    float *xg = k->xg + r0 * C;
    const float *dh1 = k->dh1 + r0 * F, *dh3 = k->dh3 + r0 * F;
    const float *w1 = k->w1 + (size_t)e * F * C, *w3 = k->w3 + (size_t)e * F * C;
    gemm_local_standin(dh3, (size_t)m * F);   /* bf16: each read twice, rounded once */
    gemm_local_standin(dh1, (size_t)m * F);
    if (k->dw1 || k->dw3) {
        expert_up_gather(k, r0, m);
        if (k->dw1 && k->dw3) gemm_local_standin(xg, (size_t)m * C);
        if (k->dw3)
            gemm(true, false, k->F, k->C, m, 1.0f, dh3, k->F,
                        xg, k->C, 1.0f, k->dw3 + (size_t)e * F * C, k->C);
        if (k->dw1)
            gemm(true, false, k->F, k->C, m, 1.0f, dh1, k->F,
                        xg, k->C, 1.0f, k->dw1 + (size_t)e * F * C, k->C);
    }
    if (k->dx) {
        memset(xg, 0, sizeof(float) * (size_t)m * C);
        gemm(false, false, m, k->C, k->F, 1.0f, dh3, k->F,
                    w3, k->C, 1.0f, xg, k->C);
        gemm(false, false, m, k->C, k->F, 1.0f, dh1, k->F,
                    w1, k->C, 1.0f, xg, k->C);
    }
    gemm_local_clear();
}

static void expert_up_backward(TapeOp *op) {
    Tensor *x = op->in[0], *w1 = op->in[1], *w3 = op->in[2];
    const ExpertUp *s = op->aux[0];
    const int M = s->offs[s->E], C = tensor_cols(x);
    ExpertUpTask k = {
        .x = x->data, .w1 = w1->data, .w3 = w3->data,
        .dh1 = op->out->grad, .dh3 = s->h3->grad,
        .xg = tape_scratch(s->t, (size_t)M * C),
        .dw1 = w1->requires_grad ? w1->grad : NULL,
        .dw3 = w3->requires_grad ? w3->grad : NULL,
        .dx = x->requires_grad,
        .rows = s->rows, .offs = s->offs, .order = s->order, .C = C, .F = w1->shape[1],
    };
    if (!k.dw1 && !k.dw3 && !k.dx) return;
    pool_parallel_for(s->E, expert_up_backward_task, &k);
    /* op_gather_rows' backward: dx[rows[m]] += dxg[m] in slot order (rows may repeat) */
    if (k.dx)
        for (int m = 0; m < M; m++) {
            float *dx = x->grad + (size_t)s->rows[m] * C;
            const float *dxg = k.xg + (size_t)m * C;
            for (int c = 0; c < C; c++) dx[c] += dxg[c];
        }
}

Tensor *op_gather_expert_up(Tape *t, Tensor *x, const int32_t *rows, Tensor *w1, Tensor *w3,
                            const int32_t *offs, int E, Tensor **h3) {
    const size_t N = tensor_rows(x);
    const int C = tensor_cols(x);
    ASSERT(w1->ndim == 3 && w1->shape[0] == E && w1->shape[2] == C && w3->ndim == 3 &&
           w3->shape[0] == E && w3->shape[1] == w1->shape[1] && w3->shape[2] == C,
           "W1 (%d, %d, %d), W3 (%d, %d, %d) do not match E %d, in %d", w1->shape[0],
           w1->shape[1], w1->shape[2], w3->shape[0], w3->shape[1], w3->shape[2], E, C);
    const int M = offs[E], F = w1->shape[1];
    expert_offs_check(offs, E, (size_t)M);   /* offs[0] = 0 and monotone: M >= 0 */
    for (int m = 0; m < M; m++)
        ASSERT(rows[m] >= 0 && (size_t)rows[m] < N, "rows[%d] = %d not in [0, %zu)", m,
               rows[m], N);
    const bool need = tape_needs_grad(t, x, w1, w3);
    Tensor *h1 = tape_tensor2(t, M, F, need);                       /* (M, F) */
    *h3 = tape_tensor2(t, M, F, need);                              /* (M, F) */
    int32_t *order = expert_order(t, offs, E);
    ExpertUpTask k = {
        .x = x->data, .w1 = w1->data, .w3 = w3->data,
        .xg = tape_scratch(t, (size_t)M * C),                       /* (M, C), not kept */
        .h1 = h1->data, .h3 = (*h3)->data,
        .rows = rows, .offs = offs, .order = order, .C = C, .F = F,
    };
    pool_parallel_for(E, expert_up_forward_task, &k);
    if (need) {
        ExpertUp *s = arena_alloc(&t->arena, sizeof *s);
        *s = (ExpertUp){t, *h3, rows, offs, order, E};
        /* h3 is this op's second output: a no-backward op carries it, recorded just before,
         * so its grad's interval covers this op's backward (tape_backward's contract) */
        tape_push(t, "expert_up_h3", NULL, *h3);
        TapeOp *op = tape_push(t, "gather_expert_up", expert_up_backward, h1);
        op->in[0] = x;
        op->in[1] = w1;
        op->in[2] = w3;
        op->aux[0] = s;
    }
    return h1;
}

/* ---------------- the experts' SwiGLU FFN on a subset (autograd/expert_ffn.h) ---------------- */

typedef struct FfnRun {
    const ExpertFfn *k;
    const int32_t *experts;
    int n;
} FfnRun;

static void ffn_progress(const ExpertFfn *k, int worker) {
    if (worker == 0 && k->progress) k->progress(k->progress_ctx);
}

static void ffn_forward_task(void *ctx, int task, int worker) {
    const FfnRun *run = ctx;
    if (task >= run->n) return;   /* padding: the region has E tasks (expert_ffn.h) */
    const ExpertFfn *k = run->k;
    const int e = run->experts[task];
    const int m = k->offs[e + 1] - k->offs[e];
    if (m == 0) return;
    const size_t r0 = (size_t)k->offs[e], C = (size_t)k->C, F = (size_t)k->F;
    const float *x = k->x + r0 * C;
    /* op_expert_linear's forward sgemm, for W1 then W3 (x rounded once for both in bf16) */
    gemm_local_standin(x, (size_t)m * C);
    gemm(false, true, m, k->F, k->C, 1.0f, x, k->C, k->w1 + (size_t)e * F * C, k->C, 0.0f,
         k->h1 + r0 * F, k->F);
    ffn_progress(k, worker);
    gemm(false, true, m, k->F, k->C, 1.0f, x, k->C, k->w3 + (size_t)e * F * C, k->C, 0.0f,
         k->h3 + r0 * F, k->F);
    gemm_local_clear();
    ffn_progress(k, worker);
    /* op_swiglu_expert_linear's forward */
    float *act = k->act + r0 * F;
    swiglu_forward(act, k->h1 + r0 * F, k->h3 + r0 * F, (size_t)m * F);
    gemm(false, true, m, k->C, k->F, 1.0f, act, k->F, k->w2 + (size_t)e * C * F, k->F, 0.0f,
         k->y + r0 * C, k->C);
    ffn_progress(k, worker);
}

static void ffn_backward_task(void *ctx, int task, int worker) {
    const FfnRun *run = ctx;
    if (task >= run->n) return;
    const ExpertFfn *k = run->k;
    const int e = run->experts[task];
    const int m = k->offs[e + 1] - k->offs[e];
    if (m == 0) return;   /* empty expert: its weight grads stay as they were */
    const size_t r0 = (size_t)k->offs[e], C = (size_t)k->C, F = (size_t)k->F;
    const size_t n = (size_t)m * F;
    const float *x = k->x + r0 * C, *h1 = k->h1 + r0 * F, *h3 = k->h3 + r0 * F;
    const float *dy = k->dy + r0 * C;
    const float *w1 = k->w1 + (size_t)e * F * C, *w3 = k->w3 + (size_t)e * F * C;
    const float *w2 = k->w2 + (size_t)e * C * F;
    float *act = k->act + r0 * F;
    const bool dh = k->dx || k->dw1 || k->dw3;
    /* op_swiglu_expert_linear's backward (swiglu_expert_backward_task) */
    if (k->dw2 && dh) gemm_local_standin(dy, (size_t)m * C);
    if (k->dw2) {
        swiglu_forward(act, h1, h3, n);
        gemm(true, false, k->C, k->F, m, 1.0f, dy, k->C, act, k->F, 1.0f,
             k->dw2 + (size_t)e * C * F, k->F);
        ffn_progress(k, worker);
    }
    gemm_local_clear();
    if (!dh) return;
    float *dh1 = k->dh1 + r0 * F, *dh3 = k->dh3 + r0 * F;
    memset(act, 0, sizeof(float) * n);
    gemm(false, false, m, k->F, k->C, 1.0f, dy, k->C, w2, k->F, 1.0f, act, k->F);
    memset(dh1, 0, sizeof(float) * n);
    memset(dh3, 0, sizeof(float) * n);
    swiglu_backward(dh1, dh3, act, h1, h3, n);
    ffn_progress(k, worker);
    /* op_expert_linear's backward for W3 (recorded last, so run first), then for W1 */
    float *dx = k->dx ? k->dx + r0 * C : NULL;
    if (dx) memset(dx, 0, sizeof(float) * (size_t)m * C);
    if (dx) gemm(false, false, m, k->C, k->F, 1.0f, dh3, k->F, w3, k->C, 1.0f, dx, k->C);
    if (k->dw3)
        gemm(true, false, k->F, k->C, m, 1.0f, dh3, k->F, x, k->C, 1.0f,
             k->dw3 + (size_t)e * F * C, k->C);
    ffn_progress(k, worker);
    if (dx) gemm(false, false, m, k->C, k->F, 1.0f, dh1, k->F, w1, k->C, 1.0f, dx, k->C);
    if (k->dw1)
        gemm(true, false, k->F, k->C, m, 1.0f, dh1, k->F, x, k->C, 1.0f,
             k->dw1 + (size_t)e * F * C, k->C);
    ffn_progress(k, worker);
}

void expert_ffn_forward(const ExpertFfn *k, const int32_t *experts, int n) {
    ASSERT(n >= 0 && n <= k->E, "expert_ffn: %d experts of %d", n, k->E);
    FfnRun run = {k, experts, n};
    pool_parallel_for(k->E, ffn_forward_task, &run);
}

void expert_ffn_backward(const ExpertFfn *k, const int32_t *experts, int n) {
    ASSERT(n >= 0 && n <= k->E, "expert_ffn: %d experts of %d", n, k->E);
    FfnRun run = {k, experts, n};
    pool_parallel_for(k->E, ffn_backward_task, &run);
}
