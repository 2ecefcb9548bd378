/* ops_moe.c: the top-k gate and the combine of Mixture-of-Experts routing
 * (autograd/ops.h): op_topk_gate (with an optional selection-only bias, op_topk_gate_bias)
 * and op_combine / op_combine_residual (the gate-weighted sum of the expert outputs back
 * into token order).
 *
 * Threading: the gate is one loop on one thread (O(N K E)); the combine and its backward
 * are split into token ranges over the cores (pool_parallel_range), each token doing the
 * serial loop's float operations in its order, and the expert-output gradient is a
 * scatter-add split by destination row (RowRuns, ops_internal.h): every result is
 * bit-identical at any thread count.
 * Non-goals: capacity planning and the routing itself (counts, offsets, slots:
 * layers/moe.c), expert parallelism (parallel/), noisy gating (layers/moe.c adds the noise
 * to the scores), the other routers (ops_route.c).
 * References: Shazeer et al. 2017, "Outrageously Large Neural Networks", sec. 2.1 (top-k
 * gating); the selection-only bias of op_topk_gate_bias: Wang et al. 2024
 * (arXiv:2408.15664, "Loss-Free Balancing") and DeepSeek-V3 (arXiv:2412.19437,
 * sec. 2.1.2): the bias decides which experts, never how much.
 */
#include "autograd/ops.h"

#include "autograd/ops_internal.h"
#include "core/pool.h"

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

