/* ops_route.c: the gate ops of the two alternative routers (see ops.h, moe.router); the
 * router entropy penalty that goes with top-p routing is in ops_router_loss.c.
 *
 * - op_topp_gate: top-p ("dynamic") routing, Huang et al. 2024, "Harder Tasks Need More
 *   Experts: Dynamic Routing in MoE Models", arXiv:2403.07652, sec. 3: a token takes experts
 *   in order of router probability until their summed probability reaches p. The gates are
 *   the chosen experts' softmax probabilities, not renormalised (the paper's released code
 *   weights each expert output by its probability as is).
 * - op_expert_choice_gate: Zhou et al. 2022, "Mixture-of-Experts with Expert Choice
 *   Routing", arXiv:2202.09368, sec. 3.1: S = softmax(X Wg) over experts; each expert takes
 *   the k tokens with the largest S in its column (G, I = TopK(S^T, k)) and weights their
 *   outputs by those S.
 *
 * Both gates are the same function of h: gates = softmax(h) read at the chosen (token,
 * expert) pairs, so they share one backward (the softmax Jacobian applied to dgates).
 * Layout: gates and idx are (N, W) with W slots per token; idx = -1 marks an unused slot
 * (gate 0, no gradient), which layers/moe.c's dispatch and op_combine skip.
 * Non-goals: capacity limits for top-p (layers/moe.c), threading (O(N E) or O(E N log N)
 * work per layer, small next to the expert GEMMs).
 */
#include "autograd/ops.h"

#include "autograd/ops_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A NaN score ranks below everything (as in op_topk_gate): a diverged router still yields
 * a valid choice, and the NaN then reaches the loss, where the trainer's health check
 * skips the step. */
static float rank_key(float s) { return s == s ? s : -INFINITY; }

/* gates (N, W) = softmax(h)[n, idx[n, k]] (0 where idx < 0), p (N, E) the saved softmax.
 * dh[n, j] += sum_{k: idx[n,k] = j} g_nk dg_nk - p_nj sum_k g_nk dg_nk
 * (d p_i / d h_j = p_i (delta_ij - p_j), summed over the picked i). */
static void softmax_pick_backward(TapeOp *op) {
    Tensor *h = op->in[0], *out = op->out;
    if (!h->requires_grad) return;
    const int32_t *idx = op->aux[0];   /* (N, W) */
    const float *p = op->aux[1];       /* (N, E) */
    const int W = tensor_cols(out), E = tensor_cols(h);
    const size_t N = tensor_rows(h);
    for (size_t n = 0; n < N; n++) {
        const float *g = out->data + n * W, *dg = out->grad + n * W;
        const int32_t *ix = idx + n * W;
        double dot = 0.0;
        for (int k = 0; k < W; k++)
            if (ix[k] >= 0) dot += (double)g[k] * (double)dg[k];
        float *dh = h->grad + n * E;
        const float *pn = p + n * E;
        for (int j = 0; j < E; j++) dh[j] -= pn[j] * (float)dot;
        for (int k = 0; k < W; k++)
            if (ix[k] >= 0) dh[ix[k]] += g[k] * dg[k];
    }
}

static void push_pick(Tape *t, const char *name, Tensor *h, Tensor *out, int32_t *idx,
                      float *p) {
    TapeOp *op = tape_push(t, name, softmax_pick_backward, out);
    op->in[0] = h;
    op->aux[0] = idx;   /* caller-owned, must stay valid until backward */
    op->aux[1] = p;
}

/* ---------------- top-p gate ---------------- */

Tensor *op_topp_gate(Tape *t, Tensor *h, float top_p, int kmax, int32_t *idx) {
    const size_t N = tensor_rows(h);
    const int E = tensor_cols(h);
    ASSERT(kmax >= 1 && kmax <= E, "kmax %d not in [1, E = %d]", kmax, E);
    ASSERT(top_p > 0.0f && top_p <= 1.0f, "top_p %g not in (0, 1]", (double)top_p);
    const bool need = tape_needs_grad(t, h, NULL, NULL);
    Tensor *out = tape_tensor2(t, (int)N, kmax, need);
    float *p = arena_floats(&t->arena, N * (size_t)E);   /* (N, E) softmax, for backward */
    for (size_t n = 0; n < N; n++) {
        const float *s = h->data + n * E;
        float *pn = p + n * E, *g = out->data + n * kmax;
        int32_t *ix = idx + n * kmax;
        softmax_row(s, E, pn);
        /* Experts in the order (score descending, index ascending); softmax is monotone,
         * so ordering by the logits orders by probability without float ties of p. The
         * k-th pick is the best entry strictly after pick k-1 in that order. */
        double mass = 0.0;
        int k = 0;
        while (k < kmax && !(mass >= (double)top_p)) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                const float se = rank_key(s[e]);
                if (k > 0) {
                    const float ps = rank_key(s[ix[k - 1]]);
                    if (!(se < ps || (se == ps && e > ix[k - 1]))) continue;
                }
                if (best < 0 || se > rank_key(s[best])) best = e;
            }
            ASSERT(best >= 0, "top-p found no pick %d in row %zu", k, n);
            ix[k] = best;
            g[k] = pn[best];
            mass += (double)pn[best];
            k++;
        }
        for (; k < kmax; k++) {   /* unused slots: no expert, gate 0 */
            ix[k] = -1;
            g[k] = 0.0f;
        }
    }
    if (need) push_pick(t, "topp_gate", h, out, idx, p);
    return out;
}

/* ---------------- expert-choice gate ---------------- */

typedef struct ScoreTok { float s; int32_t n; } ScoreTok;

/* Score descending, token index ascending: a strict total order (NaN mapped to -inf). */
static int cmp_score_tok(const void *a, const void *b) {
    const ScoreTok *x = a, *y = b;
    if (x->s != y->s) return x->s > y->s ? -1 : 1;
    return (x->n > y->n) - (x->n < y->n);
}

Tensor *op_expert_choice_gate(Tape *t, Tensor *h, int cap, int32_t *idx) {
    const size_t N = tensor_rows(h);
    const int E = tensor_cols(h);
    ASSERT(cap >= 1, "capacity %d < 1", cap);
    const size_t take = (size_t)cap < N ? (size_t)cap : N;
    const bool need = tape_needs_grad(t, h, NULL, NULL);
    Tensor *out = tape_tensor2(t, (int)N, E, need);
    float *p = arena_floats(&t->arena, N * (size_t)E);   /* (N, E) S, for backward */
    ScoreTok *col = arena_alloc(&t->arena, sizeof(ScoreTok) * (N ? N : 1));   /* (N) */
    for (size_t n = 0; n < N; n++) softmax_row(h->data + n * E, E, p + n * E);
    memset(out->data, 0, sizeof(float) * out->n);
    for (size_t j = 0; j < N * (size_t)E; j++) idx[j] = -1;
    for (int e = 0; e < E; e++) {
        /* G, I = TopK(S^T, k) for this expert's column: sort the column, keep the head. */
        for (size_t n = 0; n < N; n++) col[n] = (ScoreTok){rank_key(p[n * E + e]), (int32_t)n};
        qsort(col, N, sizeof *col, cmp_score_tok);
        for (size_t r = 0; r < take; r++) {
            const size_t n = (size_t)col[r].n;
            idx[n * E + e] = e;
            out->data[n * E + e] = p[n * E + e];
        }
    }
    if (need) push_pick(t, "expert_choice_gate", h, out, idx, p);
    return out;
}
