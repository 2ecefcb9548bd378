/* ops_moe.c: the Mixture-of-Experts ops (see ops.h): top-k gating, row gather, weighted
 * combine, the grouped expert GEMM (alone; fused with the experts' SwiGLU, or with the
 * gather before the two up projections, so that the SwiGLU activation and the gathered rows
 * are recomputed in backward instead of kept) and the two router auxiliary losses.
 *
 * References: Shazeer et al. 2017 (top-k gating), Fedus et al. 2022 eq. 4 (load-balancing
 * loss), Zoph et al. 2022 eq. 5 (router z-loss); the selection-only bias of
 * op_topk_gate_bias: Wang et al. 2024 (arXiv:2408.15664, "Loss-Free Balancing") and
 * DeepSeek-V3 (arXiv:2412.19437, sec. 2.1.2): the bias decides which experts, never how much.
 * Non-goals: capacity planning and the routing itself (counts, offsets, slots: layers/moe),
 * expert parallelism (parallel/), noisy gating.
 * Threading: the expert GEMMs run one expert per core (pool_parallel_for, single-threaded
 * sgemm inside); gather and combine are split into row ranges over the cores
 * (pool_parallel_range), each row doing the serial loop's float operations in its order,
 * so every result is bit-identical at any thread count (scatter-adds are split by
 * destination row: RowRuns). The gate and the router losses (O(N E), ~0.1 ms a call at
 * mixtral_tiny's size) stay on one thread: split, a helper's start ate the gain.
 */
#include "autograd/ops.h"

#include "autograd/blas.h"
#include "autograd/ops_internal.h"
#include "core/pool.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* ---------------- top-k gate ---------------- */

static void topk_gate_backward(TapeOp *op) {
    Tensor *h = op->in[0], *out = op->out;
    if (!h->requires_grad) return;
    const int32_t *idx = op->aux[0];           /* (N, K) */
    const int K = op->i[0], E = tensor_cols(h);
    const size_t N = tensor_rows(h);
    for (size_t n = 0; n < N; n++) {
        const float *g = out->data + n * K, *dg = out->grad + n * K;
        /* gates = softmax(s) over the chosen scores: ds_k = g_k (dg_k - sum_j g_j dg_j). */
        double dot = 0.0;
        for (int j = 0; j < K; j++) dot += (double)g[j] * (double)dg[j];
        float *dh = h->grad + n * (size_t)E;
        for (int j = 0; j < K; j++) dh[idx[n * K + j]] += g[j] * (dg[j] - (float)dot);
    }
}

/* The selection score of expert e: the router score, plus the expert's bias when one is
 * given (aux-loss-free balancing). Without a bias this is s[e] itself, bit for bit. */
static inline float sel_score(const float *s, const float *bias, int e) {
    return bias ? s[e] + bias[e] : s[e];
}

Tensor *op_topk_gate(Tape *t, Tensor *h, int K, int32_t *idx) {
    return op_topk_gate_bias(t, h, NULL, K, idx);
}

Tensor *op_topk_gate_bias(Tape *t, Tensor *h, const float *bias, int K, int32_t *idx) {
    const size_t N = tensor_rows(h);
    const int E = tensor_cols(h);
    ASSERT(K >= 1 && K <= E, "K %d not in [1, E = %d]", K, E);
    const bool need = tape_needs_grad(t, h, NULL, NULL);
    Tensor *out = tape_tensor2(t, (int)N, K, need);
    for (size_t n = 0; n < N; n++) {
        const float *s = h->data + n * (size_t)E;
        int32_t *ix = idx + n * K;
        /* k-th pick = largest selection score strictly after the previous pick in the order
         * (score descending, index ascending): O(K E), no marker array, ties -> lower index.
         * A NaN score ranks as -inf, so a diverged router still yields K distinct experts;
         * the NaN then reaches the gates and the loss, where the trainer's health check
         * skips the step (a numerical fault, not a programmer error). */
        for (int k = 0; k < K; k++) {
            int best = -1;
            float sb = 0.0f;   /* selection score of best */
            for (int e = 0; e < E; e++) {
                const float v = sel_score(s, bias, e);
                const float se = v == v ? v : -INFINITY;
                if (k > 0) {
                    const float pv = sel_score(s, bias, ix[k - 1]);
                    const float ps = pv == pv ? pv : -INFINITY;
                    if (!(se < ps || (se == ps && e > ix[k - 1]))) continue;
                }
                if (best < 0 || se > sb) {
                    best = e;
                    sb = se;
                }
            }
            ASSERT(best >= 0, "top-k found no pick %d of %d in row %zu", k, K, n);
            ix[k] = best;
        }
        /* Softmax over the K chosen (unbiased) scores, shifted by their max for stability:
         * without a bias the first pick is that max; with one it need not be. */
        float *g = out->data + n * K;
        float m = s[ix[0]];
        if (bias)
            for (int k = 1; k < K; k++) m = s[ix[k]] > m ? s[ix[k]] : m;
        double sum = 0.0;
        for (int k = 0; k < K; k++) {
            g[k] = expf(s[ix[k]] - m);
            sum += (double)g[k];
        }
        const float inv = (float)(1.0 / sum);
        for (int k = 0; k < K; k++) g[k] *= inv;
    }
    if (need) {
        TapeOp *op = tape_push(t, "topk_gate", topk_gate_backward, out);
        op->in[0] = h;
        op->i[0] = K;
        op->aux[0] = idx;   /* caller-owned, must stay valid until backward */
    }
    return out;
}

/* ---------------- gather rows ---------------- */

static void gather_rows_backward(TapeOp *op) {
    Tensor *x = op->in[0], *out = op->out;
    if (!x->requires_grad) return;
    /* y[m] = x[rows[m]]  =>  dx[rows[m]] += dy[m]. Rows repeat (a token sits in up to K
     * slots): split by destination row, each row's additions in increasing m (RowRuns). */
    row_runs_scatter_add(op->aux[1], op->aux[0], x->grad, out->grad, NULL, 1, tensor_cols(x));
}

Tensor *op_gather_rows(Tape *t, Tensor *x, const int32_t *rows, int M) {
    const size_t N = tensor_rows(x);
    const int C = tensor_cols(x);
    ASSERT(M >= 0, "M %d", M);
    const bool need = tape_needs_grad(t, x, NULL, NULL);
    Tensor *out = tape_tensor2(t, M, C, need);
    for (int m = 0; m < M; m++)
        ASSERT(rows[m] >= 0 && (size_t)rows[m] < N, "rows[%d] = %d not in [0, %zu)", m,
               rows[m], N);
    rows_gather(out->data, x->data, rows, M, C);
    if (need) {
        TapeOp *op = tape_push(t, "gather_rows", gather_rows_backward, out);
        op->in[0] = x;
        op->i[0] = M;
        op->aux[0] = (void *)rows;   /* borrowed, read-only */
        RowRuns *runs = arena_alloc(&t->arena, sizeof *runs);   /* slots grouped by token */
        *runs = row_runs_build(&t->arena, rows, M, (int)N);
        op->aux[1] = runs;
    }
    return out;
}

/* ---------------- combine ---------------- */

/* The gate gradients are dot products of C terms in double, each a serial chain (kept: the
 * order of a sum decides its rounding). Chains of up to COMBINE_LANES slots run interleaved,
 * so they overlap in the pipeline instead of waiting on each other's adds. */
#define COMBINE_LANES 4

/* dst[j] += (float) sum_c (double)a[j][c] * (double)b[j][c], c ascending, for j < m. */
static void dots_f64(const float *const *a, const float *const *b, float *const *dst, int m,
                     int C) {
    const float *pa[COMBINE_LANES], *pb[COMBINE_LANES];
    for (int j = 0; j < COMBINE_LANES; j++) {   /* idle lanes repeat lane 0, unused */
        pa[j] = a[j < m ? j : 0];
        pb[j] = b[j < m ? j : 0];
    }
    double acc[COMBINE_LANES] = {0.0};
    for (int c = 0; c < C; c++)
        for (int j = 0; j < COMBINE_LANES; j++) acc[j] += (double)pa[j][c] * (double)pb[j][c];
    for (int j = 0; j < m; j++) *dst[j] += (float)acc[j];
}

typedef struct CombineRows {
    const TapeOp *op;   /* backward; NULL in forward */
    float *y;           /* forward: out (N, C) */
    const float *ys, *gates;
    const float *r;     /* forward: the residual (N, C) or NULL */
    const int32_t *slot;
    int K, C;
} CombineRows;

/* Tokens [lo, hi): y[n] = sum_k g_nk ys[slot[n,k]] in k order, from a zeroed row; with a
 * residual then y[n] = r[n] + y[n] (op_add's float operation on the finished sum). */
static void combine_rows(void *ctx, size_t lo, size_t hi) {
    const CombineRows *a = ctx;
    const int K = a->K, C = a->C;
    for (size_t n = lo; n < hi; n++) {
        float *y = a->y + n * C;
        memset(y, 0, sizeof(float) * C);
        for (int k = 0; k < K; k++) {
            const int32_t s = a->slot[n * K + k];
            if (s < 0) continue;
            const float g = a->gates[n * K + k];
            const float *x = a->ys + (size_t)s * C;
            for (int c = 0; c < C; c++) y[c] += g * x[c];
        }
        if (a->r) {
            const float *r = a->r + n * C;
            for (int c = 0; c < C; c++) y[c] = r[c] + y[c];
        }
    }
}

/* The gate gradients of tokens [lo, hi): dg_nk += <dy[n], ys[slot[n,k]]>, one entry each. */
static void combine_dgates_rows(void *ctx, size_t lo, size_t hi) {
    const CombineRows *a = ctx;
    const Tensor *ys = a->op->in[0], *out = a->op->out;
    float *dg = a->op->in[1]->grad;
    const int K = a->K, C = a->C;
    const float *pa[COMBINE_LANES], *pb[COMBINE_LANES];
    float *dst[COMBINE_LANES];
    int m = 0;
    for (size_t n = lo; n < hi; n++)
        for (int k = 0; k < K; k++) {
            const int32_t s = a->slot[n * K + k];
            if (s < 0) continue;
            pa[m] = out->grad + n * C;
            pb[m] = ys->data + (size_t)s * C;
            dst[m] = dg + n * K + k;
            if (++m == COMBINE_LANES) {
                dots_f64(pa, pb, dst, m, C);
                m = 0;
            }
        }
    if (m > 0) dots_f64(pa, pb, dst, m, C);
}

/* y[n] = sum_k g_nk ys[s]  =>  dys[s] += g_nk dy[n]; dg_nk += <dy[n], ys[s]>; dropped
 * slots (s < 0) contributed 0 and get 0. A ys row may serve several slots (top-p and
 * expert-choice gates pass slot = expert): dys is a scatter-add by ys row (RowRuns, built
 * in forward), each row's terms in (n, k) order as the serial loop adds them; the gate
 * entries are split by token. */
static void combine_backward(TapeOp *op) {
    Tensor *ys = op->in[0], *gates = op->in[1], *r = op->in[2];
    CombineRows a = {op, NULL, NULL, NULL, NULL, op->aux[0], op->i[0], tensor_cols(ys)};
    const size_t N = tensor_rows(gates);
    if (r && r->requires_grad)   /* y = r + combine  =>  dr += dy (op_add's backward) */
        add_grad_run(r->grad, NULL, op->out->grad, op->out->n);
    if (ys->requires_grad)
        row_runs_scatter_add(op->aux[1], a.slot, ys->grad, op->out->grad, gates->data, a.K,
                             a.C);
    if (gates->requires_grad)
        pool_parallel_range(N, N * (size_t)a.K * a.C, combine_dgates_rows, &a);
}

Tensor *op_combine_residual(Tape *t, Tensor *r, Tensor *ys, Tensor *gates,
                            const int32_t *slot, int K) {
    const size_t M = tensor_rows(ys), N = tensor_rows(gates);
    const int C = tensor_cols(ys);
    ASSERT(tensor_cols(gates) == K, "gates has %d cols, K = %d", tensor_cols(gates), K);
    ASSERT(!r || (tensor_rows(r) == N && tensor_cols(r) == C),
           "combine: residual (%zu, %d) != (%zu, %d)", r ? tensor_rows(r) : 0,
           r ? tensor_cols(r) : 0, N, C);
    for (size_t j = 0; j < N * K; j++)
        ASSERT(slot[j] < 0 || (size_t)slot[j] < M, "slot[%zu, %zu] = %d not in [0, %zu)",
               j / K, j % K, slot[j], M);
    const bool need = tape_needs_grad(t, ys, gates, r);
    Tensor *out = tape_tensor2(t, (int)N, C, need);
    CombineRows a = {NULL, out->data, ys->data, gates->data, r ? r->data : NULL, slot, K, C};
    pool_parallel_range(N, N * (size_t)K * C, combine_rows, &a);
    if (need) {
        TapeOp *op = tape_push(t, r ? "combine_residual" : "combine", combine_backward, out);
        op->in[0] = ys;
        op->in[1] = gates;
        op->in[2] = r;
        op->i[0] = K;
        op->aux[0] = (void *)slot;   /* borrowed, read-only */
        if (ys->requires_grad) {     /* slots grouped by ys row, for the dys scatter-add */
            RowRuns *runs = arena_alloc(&t->arena, sizeof *runs);
            *runs = row_runs_build(&t->arena, slot, (int)(N * K), (int)M);
            op->aux[1] = runs;
        }
    }
    return out;
}

Tensor *op_combine(Tape *t, Tensor *ys, Tensor *gates, const int32_t *slot, int K) {
    return op_combine_residual(t, NULL, ys, gates, slot, K);
}

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
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, din, dout, 1.0f, dy, dout,
                    w->data + e * wstride, din, 1.0f, x->grad + (size_t)offs[e] * din, din);
    if (w->requires_grad)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dout, din, m, 1.0f, dy, dout,
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
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, a->dout, a->din, 1.0f,
                a->x + (size_t)a->offs[e] * a->din, a->din, a->w + e * wstride, a->din, 0.0f,
                a->y + (size_t)a->offs[e] * a->dout, a->dout);
}

/* offs (E+1) must cover [0, M) in order: every output row is then written by some sgemm. */
static void expert_offs_check(const int32_t *offs, int E, size_t M) {
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
static int32_t *expert_order(Tape *t, const int32_t *offs, int E) {
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
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, k->C, k->F, 1.0f, act, k->F,
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
    if (k->dw) {
        swiglu_forward(act, a, b, n);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k->C, k->F, m, 1.0f, dy, k->C,
                    act, k->F, 1.0f, k->dw + (size_t)e * C * F, k->F);
    }
    if (k->da || k->db) {
        memset(act, 0, sizeof(float) * n);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, k->F, k->C, 1.0f, dy, k->C,
                    w, k->F, 1.0f, act, k->F);
        swiglu_backward(k->da ? k->da + r0 * F : NULL, k->db ? k->db + r0 * F : NULL, act, a,
                        b, n);
    }
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
    /* op_expert_linear's forward sgemm, for W1 then W3 */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, k->F, k->C, 1.0f, xg, k->C,
                k->w1 + (size_t)e * F * C, k->C, 0.0f, k->h1 + r0 * F, k->F);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, k->F, k->C, 1.0f, xg, k->C,
                k->w3 + (size_t)e * F * C, k->C, 0.0f, k->h3 + r0 * F, k->F);
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
    if (k->dw1 || k->dw3) {
        expert_up_gather(k, r0, m);
        if (k->dw3)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k->F, k->C, m, 1.0f, dh3, k->F,
                        xg, k->C, 1.0f, k->dw3 + (size_t)e * F * C, k->C);
        if (k->dw1)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k->F, k->C, m, 1.0f, dh1, k->F,
                        xg, k->C, 1.0f, k->dw1 + (size_t)e * F * C, k->C);
    }
    if (k->dx) {
        memset(xg, 0, sizeof(float) * (size_t)m * C);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, k->C, k->F, 1.0f, dh3, k->F,
                    w3, k->C, 1.0f, xg, k->C);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, k->C, k->F, 1.0f, dh1, k->F,
                    w1, k->C, 1.0f, xg, k->C);
    }
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

/* ---------------- router losses ---------------- */

/* Stable softmax of one row (ops_internal.h): p (E) = softmax(x); returns logsumexp(x). */
double logsumexp_row(const float *x, int E) {
    float m = x[0];
    for (int j = 1; j < E; j++) m = x[j] > m ? x[j] : m;
    double sum = 0.0;
    for (int j = 0; j < E; j++) sum += exp((double)(x[j] - m));
    return (double)m + log(sum);
}

double softmax_row(const float *x, int E, float *p) {
    float m = x[0];
    for (int j = 1; j < E; j++) m = x[j] > m ? x[j] : m;
    double sum = 0.0;
    for (int j = 0; j < E; j++) {
        p[j] = expf(x[j] - m);
        sum += (double)p[j];
    }
    const float inv = (float)(1.0 / sum);
    for (int j = 0; j < E; j++) p[j] *= inv;
    return (double)m + log(sum);
}

/* The load-balancing gradient reuses the forward's softmax rows (kept in the arena, N E
 * floats) instead of recomputing them: the same softmax_row of the same logits, so the
 * same bits, without the backward's expf. The row loops of both router losses stay on one
 * thread: at N E = 16K (mixtral_tiny) a call takes ~0.1 ms, and split over two cores the
 * helper thread's start ate the gain (measured in the model: no faster, the z-loss
 * backward slower). */
static void load_balance_backward(TapeOp *op) {
    Tensor *logits = op->in[0];
    if (!logits->requires_grad) return;
    const float *f = op->aux[0];   /* (E) */
    const float *p = op->aux[1];   /* (N, E) softmax rows of the forward */
    const size_t N = tensor_rows(logits);
    const int E = tensor_cols(logits);
    const float c = op->out->grad[0] * (float)op->f[0];
    for (size_t n = 0; n < N; n++) {
        const float *pn = p + n * E;
        /* out = scale sum_i f_i p_ni, p = softmax  =>  dx_nj = scale p_nj (f_j - <f, p_n>). */
        double fp = 0.0;
        for (int i = 0; i < E; i++) fp += (double)f[i] * (double)pn[i];
        float *dx = logits->grad + n * E;
        for (int j = 0; j < E; j++) dx[j] += c * pn[j] * (f[j] - (float)fp);
    }
}

Tensor *op_load_balance(Tape *t, Tensor *logits, const float *f, float scale) {
    const size_t N = tensor_rows(logits);
    const int E = tensor_cols(logits);
    const bool need = tape_needs_grad(t, logits, NULL, NULL);
    Tensor *out = tape_tensor2(t, 1, 1, need);
    float *fc = arena_floats(&t->arena, (size_t)E);   /* (E) copy: caller's f may change */
    memcpy(fc, f, sizeof(float) * E);
    float *p = arena_floats(&t->arena, N * E + 1);    /* (N, E) softmax rows */
    double total = 0.0;
    for (size_t n = 0; n < N; n++) {
        float *pn = p + n * E;
        softmax_row(logits->data + n * E, E, pn);
        for (int i = 0; i < E; i++) total += (double)fc[i] * (double)pn[i];
    }
    out->data[0] = (float)((double)scale * total);
    if (need) {
        TapeOp *op = tape_push(t, "load_balance", load_balance_backward, out);
        op->in[0] = logits;
        op->f[0] = (double)scale;
        op->aux[0] = fc;
        op->aux[1] = p;
    }
    return out;
}

static void zloss_backward(TapeOp *op) {
    Tensor *logits = op->in[0];
    if (!logits->requires_grad) return;
    const float *lse = op->aux[0];   /* (N) */
    const size_t N = tensor_rows(logits);
    const int E = tensor_cols(logits);
    const float c = op->out->grad[0] * (float)op->f[0];
    for (size_t n = 0; n < N; n++) {
        /* out = scale sum_n lse_n^2, d lse_n / dx_nj = p_nj  =>  dx_nj = 2 scale lse_n p_nj. */
        const float *x = logits->data + n * E;
        float *dx = logits->grad + n * E;
        const float a = 2.0f * c * lse[n];
        for (int j = 0; j < E; j++) dx[j] += a * expf(x[j] - lse[n]);
    }
}

Tensor *op_zloss(Tape *t, Tensor *logits, float scale) {
    const size_t N = tensor_rows(logits);
    const int E = tensor_cols(logits);
    const bool need = tape_needs_grad(t, logits, NULL, NULL);
    Tensor *out = tape_tensor2(t, 1, 1, need);
    float *lse = need ? arena_floats(&t->arena, N ? N : 1) : NULL;   /* (N) */
    double total = 0.0;
    for (size_t n = 0; n < N; n++) {
        const float *x = logits->data + n * E;
        const double l = logsumexp_row(x, E);
        total += l * l;
        if (lse) lse[n] = (float)l;
    }
    out->data[0] = (float)((double)scale * total);
    if (need) {
        TapeOp *op = tape_push(t, "zloss", zloss_backward, out);
        op->in[0] = logits;
        op->f[0] = (double)scale;
        op->aux[0] = lse;
    }
    return out;
}
