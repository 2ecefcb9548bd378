/* attention.c: fused causal grouped-query self-attention (op_attention, see ops.h).
 *
 * Forward per (batch b, query head h), with g = h / (H/Hkv) the shared kv head:
 *   S = Q_h K_g^T / sqrt(D)            (T, T), one sgemm on the strided head views
 *   P = softmax_row(S + mask)          masked entries are exactly 0: j > i (causal) and,
 *                                      with a sliding window W > 0, j <= i - W
 *   O_h = P V_g                        (T, D), written straight into out (ldc = H*D)
 * and lse_i = log sum_{j visible} exp(S_ij) is saved (B, H, T). Backward recomputes P from
 * Q, K and lse (FlashAttention, Dao et al. 2022, sec. 3.1 / appendix B.2):
 *   dV_g += P^T dO_h;  dP = dO_h V_g^T;  Drow_i = sum_d dO_id O_id;
 *   dS = P * (dP - Drow);  dQ_h += scale dS K_g;  dK_g += scale dS^T Q_h.
 * Sliding window (Mistral 7B, Jiang et al. 2023, arXiv:2310.06825, sec. 2): query i sees
 * keys i - W < j <= i, W positions counting itself (Hugging Face's mask kv > q - W).
 * Documents (op_attention_docs): query i of row b also sees no key before start[b, i], the
 * first position of its document, so a packed window is block-diagonal causal (the mask
 * between documents of the Llama 3 report, Dubey et al. 2024, arXiv:2407.21783, sec. 3.2).
 * Query rows go in tiles of at most ATT_BLK rows that never cross a document start, and
 * each tile only multiplies the keys some row of it can see: from the first row's first
 * visible key to the diagonal (the masked upper triangle, everything left of the
 * document's start and, with a window, left of the band are skipped, up to the two
 * triangles of the band's edge inside the tile); scores live only in two (ATT_BLK, T)
 * scratch buffers carved once per call. Without documents the tiles are the blocks
 * [0, 64), [64, 128), ... of the plain kernel.
 *
 * Precision: the score and value products are fp32 even when compute.precision is bf16
 * (gemm_fp32_begin around the tasks). At these shapes (64-row blocks, head_dim 32..64) a
 * bf16 product is dominated by rounding P and dS into bf16 and by the per-call cost of the
 * AMX kernels: measured on mixtral_tiny (process CPU seconds per step, attention region),
 * fp32 0.128 s against 0.235 s with bf16 score/value products; the softmax's input also
 * keeps fp32 scores. The q/k/v/o projections outside this op follow compute.precision.
 * Threading: (batch, kv head) pairs are independent tasks (each owns its dK_g, dV_g) run by
 * pool_parallel_for on the cores with single-threaded sgemm inside: the per-head products
 * ((T, D) by (D, T) at training sizes) are too small to split over threads themselves.
 * Non-goals: online-softmax tiling over keys for long sequences, dropout, non-causal or
 * padded attention, a different window per layer, documents that are not contiguous runs
 * of positions.
 */
#include "autograd/gemm.h"
#include "autograd/ops.h"

#include "autograd/blas.h"
#include "autograd/ops_internal.h"
#include "autograd/vmath.h"
#include "core/pool.h"

#include <math.h>

/* Saved-state layout of the TapeOp. */
enum { ATT_B, ATT_T, ATT_H, ATT_HKV, ATT_D, ATT_W };
enum { ATT_LSE, ATT_P, ATT_DP, ATT_START };

/* Query rows are processed in tiles of at most ATT_BLK; tile [i0, i0+m) attends to keys
 * [lo, w), w = i0 + m and lo = the first key row i0 sees (0 without a window or documents),
 * so only the on- and below-diagonal key blocks are multiplied: for T = 4 blocks that is
 * 10 of 16 (T, T) tiles; with a window of W <= ATT_BLK, at most 2 per block; with
 * documents, only the diagonal blocks of each document. The scores of key lo + c sit in
 * column c of the scratch rows. Entries of a row outside its visible keys but inside
 * [lo, w) are computed and masked to exactly 0; keys outside [lo, w) are never read.
 * Scratch per call is (ATT_BLK, T), not (T, T). */
#define ATT_BLK 64

/* First key that query i sees: i - W + 1 with a window W > 0 (clamped at 0), else 0; and
 * not before its document's first position start[i] (start: this row's (T), or NULL). Both
 * bounds are non-decreasing in i, so a tile's first row has the smallest. */
static inline int att_first_key(int i, int W, const int32_t *start) {
    const int w = W > 0 && i >= W ? i - W + 1 : 0;
    return start && start[i] > w ? start[i] : w;
}

/* End of the tile that begins at query row i0: at most ATT_BLK rows, the sequence's end, or
 * the next document's first position (start[j] == j), whichever comes first. */
static inline int att_tile_end(int i0, int T, const int32_t *start) {
    const int end = T - i0 < ATT_BLK ? T : i0 + ATT_BLK;
    if (start)
        for (int j = i0 + 1; j < end; j++)
            if (start[j] == j) return j;
    return end;
}

/* S (m, w) = scale * Q_h[i0:i0+m] K_g[0:w]^T, into s (row stride T). */
static void attention_scores(const float *qh, int ldq, const float *kg, int ldk, int m, int w,
                             int D, float scale, float *s, int T) {
    gemm(false, true, m, w, D, scale, qh, ldq, kg, ldk,
                0.0f, s, T);
}

/* Backward of one (batch b, kv head g) task: its query heads in turn. dK_g and dV_g are
 * only touched by this task (the heads sharing them run here), so tasks run in parallel
 * without atomics. p and ds are this worker's (ATT_BLK, T) scratch. */
static void attention_backward_task(void *ctx, int task, int worker) {
    TapeOp *op = ctx;
    Tensor *q = op->in[0], *k = op->in[1], *v = op->in[2], *out = op->out;
    const int T = op->i[ATT_T], H = op->i[ATT_H], Hkv = op->i[ATT_HKV];
    const int D = op->i[ATT_D], W = op->i[ATT_W];
    const int b = task / Hkv, g = task % Hkv;
    const float scale = (float)op->f[0];
    const float *lse = op->aux[ATT_LSE];   /* (B, H, T) */
    const int32_t *start = op->aux[ATT_START] ? (const int32_t *)op->aux[ATT_START] +
                                                    (size_t)b * T : NULL;   /* (T) or NULL */
    const size_t scratch = (size_t)(T < ATT_BLK ? T : ATT_BLK) * T;
    float *p = (float *)op->aux[ATT_P] + (size_t)worker * scratch;    /* (ATT_BLK, T) */
    float *ds = (float *)op->aux[ATT_DP] + (size_t)worker * scratch;  /* dP, then dS */
    const int ldq = H * D, ldk = Hkv * D, group = H / Hkv;
    const bool need_qk = q->requires_grad || k->requires_grad;
    const bool need_v = v->requires_grad;

    for (int h = g * group; h < (g + 1) * group; h++) {
        const size_t qoff = (size_t)b * T * ldq + (size_t)h * D;
        const size_t koff = (size_t)b * T * ldk + (size_t)g * D;
        const float *qh = q->data + qoff, *kg = k->data + koff, *vg = v->data + koff;
        const float *oh = out->data + qoff, *doh = out->grad + qoff;
        const float *lse_bh = lse + ((size_t)b * H + h) * T;
        for (int i0 = 0, w; i0 < T; i0 = w) {
            w = att_tile_end(i0, T, start);
            const int m = w - i0;
            const int lo = att_first_key(i0, W, start), nk = w - lo;   /* keys [lo, w) */
            const size_t klo = (size_t)lo * ldk;
            const float *qb = qh + (size_t)i0 * ldq, *dob = doh + (size_t)i0 * ldq;
            /* P_ij = exp(S_ij - lse_i) for visible j inverts the forward softmax exactly
             * (up to rounding) without storing P; masked entries in [lo, w) are 0. */
            attention_scores(qb, ldq, kg + klo, ldk, m, nk, D, scale, p, T);
            for (int r = 0; r < m; r++) {
                const int i = i0 + r, c0 = att_first_key(i, W, start) - lo, c1 = i - lo;
                float *pr = p + (size_t)r * T;
                for (int c = 0; c < c0; c++) pr[c] = 0.0f;
                for (int c = c0; c <= c1; c++) pr[c] = vm_expf(pr[c] - lse_bh[i]);
                for (int c = c1 + 1; c < nk; c++) pr[c] = 0.0f;
            }
            /* O = P V  =>  dV_g[lo:w] += P^T dO_h (heads sharing g accumulate into it). */
            if (need_v)
                gemm(true, false, nk, D, m, 1.0f, p, T,
                            dob, ldq, 1.0f, v->grad + koff + klo, ldk);
            if (!need_qk) continue;

            /* O = P V  =>  dP = dO_h V_g^T. */
            gemm(false, true, m, nk, D, 1.0f, dob, ldq,
                        vg + klo, ldk, 0.0f, ds, T);
            /* P = softmax(S)  =>  dS_ij = P_ij (dP_ij - sum_l P_il dP_il), and
             * sum_l P_il dP_il = sum_d dO_id O_id (since O = P V), which costs D not T. */
            for (int r = 0; r < m; r++) {
                const int i = i0 + r, c0 = att_first_key(i, W, start) - lo, c1 = i - lo;
                double drow = 0.0;
                for (int d = 0; d < D; d++)
                    drow += (double)doh[(size_t)i * ldq + d] *
                            (double)oh[(size_t)i * ldq + d];
                const float *pr = p + (size_t)r * T;
                float *dsr = ds + (size_t)r * T;
                for (int c = 0; c < c0; c++) dsr[c] = 0.0f;
                for (int c = c0; c <= c1; c++) dsr[c] = pr[c] * (dsr[c] - (float)drow);
                for (int c = c1 + 1; c < nk; c++) dsr[c] = 0.0f;
            }
            /* S = scale Q K^T  =>  dQ_h += scale dS K_g,  dK_g[lo:w] += scale dS^T Q_h. */
            if (q->requires_grad)
                gemm(false, false, m, D, nk, scale, ds,
                            T, kg + klo, ldk, 1.0f, q->grad + qoff + (size_t)i0 * ldq, ldq);
            if (k->requires_grad)
                gemm(true, false, nk, D, m, scale, ds, T,
                            qb, ldq, 1.0f, k->grad + koff + klo, ldk);
        }
    }
}

static void attention_backward(TapeOp *op) {
    Tensor *q = op->in[0], *k = op->in[1], *v = op->in[2];
    if (!q->requires_grad && !k->requires_grad && !v->requires_grad) return;
    gemm_fp32_begin();
    pool_parallel_for(op->i[ATT_B] * op->i[ATT_HKV], attention_backward_task, op);
    gemm_fp32_end();
}

/* Forward of one (batch b, kv head g) task; p is this worker's (ATT_BLK, T) scratch. */
typedef struct AttFwd {
    const Tensor *q, *k, *v;
    Tensor *out;
    float *lse, *p;
    const int32_t *start;   /* (B, T) or NULL */
    int B, T, H, Hkv, D, W;
    float scale;
} AttFwd;

static void attention_forward_task(void *ctx, int task, int worker) {
    const AttFwd *a = ctx;
    const Tensor *q = a->q, *k = a->k, *v = a->v;
    Tensor *out = a->out;
    const int T = a->T, H = a->H, Hkv = a->Hkv, D = a->D, W = a->W;
    const int b = task / Hkv, g = task % Hkv;
    const int ldq = H * D, ldk = Hkv * D, group = H / Hkv;
    const float scale = a->scale;
    float *lse = a->lse;
    float *p = a->p + (size_t)worker * (size_t)(T < ATT_BLK ? T : ATT_BLK) * T;
    const int32_t *start = a->start ? a->start + (size_t)b * T : NULL;   /* (T) or NULL */
    for (int h = g * group; h < (g + 1) * group; h++) {
        const size_t qoff = (size_t)b * T * ldq + (size_t)h * D;
        const size_t koff = (size_t)b * T * ldk + (size_t)g * D;
        float *lse_bh = lse + ((size_t)b * H + h) * T;
        for (int i0 = 0, w; i0 < T; i0 = w) {
            w = att_tile_end(i0, T, start);
            const int mb = w - i0;
            const int lo = att_first_key(i0, W, start), nk = w - lo;   /* keys [lo, w) */
            const size_t klo = (size_t)lo * ldk;
            attention_scores(q->data + qoff + (size_t)i0 * ldq, ldq, k->data + koff + klo, ldk,
                             mb, nk, D, scale, p, T);
            /* Row softmax over the visible keys (columns c0..c1); subtracting the row max
             * keeps exp() in range; the masked entries of [lo, w) left of the window and
             * right of the diagonal are set to exactly 0 so P V ignores them (a tile lies in
             * one document, so no key of [lo, w) belongs to another). */
            for (int r = 0; r < mb; r++) {
                const int i = i0 + r, c0 = att_first_key(i, W, start) - lo, c1 = i - lo;
                float *pr = p + (size_t)r * T;
                const float m = vm_max(pr + c0, c1 - c0 + 1);
                for (int c = c0; c <= c1; c++) pr[c] = vm_expf(pr[c] - m);
                const double sum = vm_sum_f64(pr + c0, c1 - c0 + 1);
                const float inv = (float)(1.0 / sum);
                for (int c = 0; c < c0; c++) pr[c] = 0.0f;
                for (int c = c0; c <= c1; c++) pr[c] *= inv;
                for (int c = c1 + 1; c < nk; c++) pr[c] = 0.0f;
                lse_bh[i] = m + (float)log(sum);
            }
            gemm(false, false, mb, D, nk, 1.0f, p, T,
                        v->data + koff + klo, ldk, 0.0f, out->data + qoff + (size_t)i0 * ldq,
                        ldq);
        }
    }
}

size_t op_attention_score_floats(int T) {
    const int blk = T < ATT_BLK ? T : ATT_BLK;
    return (size_t)pool_workers() * (size_t)blk * (size_t)T;
}

Tensor *op_attention(Tape *t, Tensor *q, Tensor *k, Tensor *v, int B, int T, int H, int Hkv,
                     int D, int W) {
    return op_attention_docs(t, q, k, v, B, T, H, Hkv, D, W, NULL);
}

Tensor *op_attention_docs(Tape *t, Tensor *q, Tensor *k, Tensor *v, int B, int T, int H,
                          int Hkv, int D, int W, const int32_t *start) {
    ASSERT(B > 0 && T > 0 && H > 0 && Hkv > 0 && D > 0 && W >= 0,
           "B %d T %d H %d Hkv %d D %d W %d", B, T, H, Hkv, D, W);
    if (start) op_doc_starts_check(start, B, T);
    ASSERT(H % Hkv == 0, "H %d is not a multiple of Hkv %d", H, Hkv);
    const size_t N = (size_t)B * T;
    const int ldq = H * D, ldk = Hkv * D;
    ASSERT(tensor_rows(q) == N && tensor_cols(q) == ldq, "q (%zu, %d) != (%zu, %d)",
           tensor_rows(q), tensor_cols(q), N, ldq);
    ASSERT(tensor_rows(k) == N && tensor_cols(k) == ldk, "k (%zu, %d) != (%zu, %d)",
           tensor_rows(k), tensor_cols(k), N, ldk);
    ASSERT(tensor_rows(v) == N && tensor_cols(v) == ldk, "v (%zu, %d) != (%zu, %d)",
           tensor_rows(v), tensor_cols(v), N, ldk);

    const bool need = tape_needs_grad(t, q, k, v);
    Tensor *out = tape_tensor2(t, (int)N, ldq, need);
    const float scale = 1.0f / sqrtf((float)D);
    float *lse = arena_floats(&t->arena, N * (size_t)H);    /* (B, H, T) */
    const size_t score = op_attention_score_floats(T);
    float *p = arena_floats(&t->arena, score);              /* per worker (ATT_BLK, T) */

    AttFwd a = {q, k, v, out, lse, p, start, B, T, H, Hkv, D, W, scale};
    /* bf16: Q, K, V rounded once (every task's products read slices of them many times) */
    gemm_fp32_begin();
    pool_parallel_for(B * Hkv, attention_forward_task, &a);
    gemm_fp32_end();

    if (need) {
        TapeOp *op = tape_push(t, "attention", attention_backward, out);
        op->in[0] = q;
        op->in[1] = k;
        op->in[2] = v;
        op->f[0] = (double)scale;
        op->i[ATT_B] = B;
        op->i[ATT_T] = T;
        op->i[ATT_H] = H;
        op->i[ATT_HKV] = Hkv;
        op->i[ATT_D] = D;
        op->i[ATT_W] = W;
        op->aux[ATT_LSE] = lse;
        op->aux[ATT_P] = p;
        op->aux[ATT_START] = (void *)start;   /* borrowed: read again in backward */
        /* Carved now, not in backward, so the backward pass allocates nothing. */
        op->aux[ATT_DP] = arena_floats(&t->arena, score);
    }
    return out;
}
