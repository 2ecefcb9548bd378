/* ops_route_topk.c: op_topk_route, the variants of top-k routing (autograd/ops.h):
 * sigmoid affinities, a route scale and group-limited routing.
 *
 * References: DeepSeek-V3 technical report (arXiv:2412.19437), sec. 2.1.2, eqs. 12-16:
 * s_i = sigmoid(u^T e_i), the top-K of s_i (+ b_i for the aux-loss-free bias, selection
 * only), g_i = s_i / sum of the chosen s_j, and the routed scaling factor; sec. 2.1.2 /
 * 3.x "node-limited routing" and DeepSeek-V2 (arXiv:2405.04434) sec. 2.2 "device-limited
 * routing": a token first keeps the best groups (scored by the sum of their top-2
 * affinities in DeepSeek-V3's released inference code), then its K experts inside them.
 *
 * Non-goals: the plain softmax top-k without variants (op_topk_gate_bias, ops_moe.c, kept
 * bit for bit for the default configuration), threading (O(N E) work per layer on one
 * thread, small next to the expert GEMMs), capacity (layers/moe.c).
 */
#include "autograd/ops.h"

#include "autograd/ops_internal.h"

#include <math.h>
#include <string.h>

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

/* A NaN ranks below everything (as in op_topk_gate): a diverged router still yields a
 * valid choice, and the NaN then reaches the gates and the loss. */
static inline float rank_key(float s) { return s == s ? s : -INFINITY; }

/* The k-th best of the entries ok[e] of v (n), in the order (value descending, index
 * ascending), given the previous pick prev (-1 for the first): the largest entry strictly
 * after prev in that order. Returns -1 when none is left. */
static int next_best(const float *v, const unsigned char *ok, int n, int prev) {
    int best = -1;
    for (int e = 0; e < n; e++) {
        if (ok && !ok[e]) continue;
        if (prev >= 0 && !(v[e] < v[prev] || (v[e] == v[prev] && e > prev))) continue;
        if (best < 0 || v[e] > v[best]) best = e;
    }
    return best;
}

/* Marks in ok (E) the experts of the topk_groups best groups of the selection scores sel
 * (E, NaN already -inf); gs (G) and gok (G) scratch. */
static void keep_groups(const float *sel, const TopkRoute *r, int E, float *gs,
                        unsigned char *gok, unsigned char *ok) {
    const int G = r->n_groups, Eg = E / G;
    float m = -INFINITY;
    for (int e = 0; e < E; e++) m = sel[e] > m ? sel[e] : m;
    for (int g = 0; g < G; g++) {
        const float *v = sel + (size_t)g * Eg;
        int b1 = next_best(v, NULL, Eg, -1), b2 = Eg > 1 ? next_best(v, NULL, Eg, b1) : -1;
        if (r->sigmoid) {
            gs[g] = v[b1] + (b2 >= 0 ? v[b2] : 0.0f);
        } else {   /* softmax(sel) up to the row's common factor; an all -inf row scores 0 */
            double s = m == -INFINITY ? 0.0 : exp((double)v[b1] - (double)m);
            if (b2 >= 0 && m != -INFINITY) s += exp((double)v[b2] - (double)m);
            gs[g] = (float)s;
        }
        gs[g] = rank_key(gs[g]);
    }
    memset(gok, 0, (size_t)G);
    int prev = -1;
    for (int k = 0; k < r->topk_groups; k++) {
        prev = next_best(gs, NULL, G, prev);
        gok[prev] = 1;
    }
    for (int e = 0; e < E; e++) ok[e] = gok[e / Eg];
}

static void topk_route_backward(TapeOp *op) {
    Tensor *h = op->in[0], *out = op->out;
    if (!h->requires_grad) return;
    const int32_t *idx = op->aux[0];   /* (N, K) */
    const int K = op->i[0], E = tensor_cols(h);
    const bool sigmoid = op->i[1];
    const float scale = (float)op->f[0];
    const size_t N = tensor_rows(h);
    for (size_t n = 0; n < N; n++) {
        const float *g = out->data + n * K, *dg = out->grad + n * K;
        const int32_t *ix = idx + n * K;
        const float *hn = h->data + n * (size_t)E;
        float *dh = h->grad + n * (size_t)E;
        double dot = 0.0;   /* sum_k g_k dg_k */
        for (int k = 0; k < K; k++) dot += (double)g[k] * (double)dg[k];
        if (!sigmoid) {
            /* g = c p, p = softmax of the chosen h: dh_j = c p_j (dg_j - <p, dg>) */
            const float d = (float)(dot / (double)scale);
            for (int k = 0; k < K; k++) dh[ix[k]] += g[k] * (dg[k] - d);
            continue;
        }
        /* g_k = c s_k / S: dL/ds_j = (c dg_j - <g, dg>) / S, ds_j/dh_j = s_j (1 - s_j);
         * s and S recomputed with the forward's expressions (the same bits) */
        double S = 0.0;
        for (int k = 0; k < K; k++) S += (double)sigmoidf(hn[ix[k]]);
        for (int k = 0; k < K; k++) {
            const float s = sigmoidf(hn[ix[k]]);
            dh[ix[k]] += (float)(((double)scale * (double)dg[k] - dot) / S) * s * (1.0f - s);
        }
    }
}

Tensor *op_topk_route(Tape *t, Tensor *h, const TopkRoute *r, int32_t *idx) {
    const size_t N = tensor_rows(h);
    const int E = tensor_cols(h), K = r->K;
    ASSERT(K >= 1 && K <= E, "K %d not in [1, E = %d]", K, E);
    ASSERT(r->scale > 0.0f, "route scale %g <= 0", (double)r->scale);
    const bool groups = r->topk_groups > 0;
    if (groups) {
        ASSERT(r->n_groups >= 1 && E % r->n_groups == 0, "%d groups do not divide E = %d",
               r->n_groups, E);
        ASSERT(r->topk_groups <= r->n_groups && K <= r->topk_groups * (E / r->n_groups),
               "K %d from %d of %d groups of %d experts", K, r->topk_groups, r->n_groups,
               E / r->n_groups);
    }
    const bool need = tape_needs_grad(t, h, NULL, NULL);
    Tensor *out = tape_tensor2(t, (int)N, K, need);
    /* per-row scratch: selection scores (E), expert and group masks, group scores (G) */
    float *sel = arena_floats(&t->arena, (size_t)E);
    unsigned char *ok = groups ? arena_alloc(&t->arena, (size_t)E) : NULL;
    unsigned char *gok = groups ? arena_alloc(&t->arena, (size_t)r->n_groups) : NULL;
    float *gs = groups ? arena_floats(&t->arena, (size_t)r->n_groups) : NULL;
    for (size_t n = 0; n < N; n++) {
        const float *hn = h->data + n * (size_t)E;
        int32_t *ix = idx + n * K;
        for (int e = 0; e < E; e++) {
            const float a = r->sigmoid ? sigmoidf(hn[e]) : hn[e];
            sel[e] = rank_key(r->bias ? a + r->bias[e] : a);
        }
        if (groups) keep_groups(sel, r, E, gs, gok, ok);
        int prev = -1;
        for (int k = 0; k < K; k++) {
            prev = next_best(sel, ok, E, prev);
            ASSERT(prev >= 0, "top-k found no pick %d of %d in row %zu", k, K, n);
            ix[k] = prev;
        }
        float *g = out->data + n * K;
        double sum = 0.0;
        if (r->sigmoid) {
            for (int k = 0; k < K; k++) {
                g[k] = sigmoidf(hn[ix[k]]);
                sum += (double)g[k];
            }
        } else {   /* softmax over the chosen, shifted by their max */
            float m = hn[ix[0]];
            for (int k = 1; k < K; k++) m = hn[ix[k]] > m ? hn[ix[k]] : m;
            for (int k = 0; k < K; k++) {
                g[k] = expf(hn[ix[k]] - m);
                sum += (double)g[k];
            }
        }
        const float inv = (float)((double)r->scale / sum);
        for (int k = 0; k < K; k++) g[k] *= inv;
    }
    if (need) {
        TapeOp *op = tape_push(t, "topk_route", topk_route_backward, out);
        op->in[0] = h;
        op->i[0] = K;
        op->i[1] = r->sigmoid;
        op->f[0] = (double)r->scale;
        op->aux[0] = idx;   /* caller-owned, must stay valid until backward */
    }
    return out;
}
