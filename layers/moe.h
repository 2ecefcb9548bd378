/* moe.h: the sparse MoE block: noisy top-k router, dispatch, SwiGLU experts, combine, and
 * the auxiliary losses.
 *
 *   clean = x Wg^T                                  (N, E)  router logits, fp32, no bias
 *   h     = clean + eps * softplus(x Wn^T)          training with noise (Shazeer et al. 2017,
 *                                                    eq. 4); eps ~ N(0,1) from a counter RNG
 *                                                    keyed by (seed, step, layer, token)
 *   gates, idx = top-k softmax of h                  (N, K)
 *     with a selection bias b (E): idx = top-k of h + b, gates = softmax of the chosen
 *     h (Wang et al. 2024; DeepSeek-V3 sec. 2.1.2; layers/router_bias.h)
 *   dispatch: tokens grouped per expert by a prefix sum over counts (stable, token order);
 *     with capacity_factor > 0 each expert keeps at most ceil(N K / E * factor) slots and
 *     the overflow is dropped (the residual still carries the token)
 *   experts: y_e = w2( silu(w1 x) * (w3 x) ), one GEMM per expert over its gathered rows
 *   combine: out[n] = sum_k gates[n,k] * y[slot[n,k]]
 *   aux   = coef * E * sum_i f_i P_i   (f_i share of the N K routed slots to expert i,
 *           P_i mean router probability softmax(clean)_i; Fedus et al. 2022 eq. 4)
 *   zloss = coef * mean_n logsumexp(clean_n)^2  (Zoph et al. 2022 eq. 5)
 * The auxiliary losses use the clean logits: the noise only perturbs which experts are
 * chosen. With expert parallelism (parallel/), the gathered rows are exchanged with the
 * ranks owning the experts between gather and the expert GEMMs (MoeExchange).
 */
#ifndef MOE_MOE_H
#define MOE_MOE_H

#include "autograd/ops.h"

typedef struct MoeStats {
    int L, E;
    double *count;      /* (L, E) routed slots per expert (before capacity), summed */
    double *dropped;    /* (L) slots dropped by the capacity limit */
    double *entropy;    /* (L) sum over calls of the mean router entropy (nats) */
    double *tokens;     /* (L) tokens routed */
    int calls;          /* forward calls accumulated */
} MoeStats;

void moe_stats_init(MoeStats *st, int L, int E);
void moe_stats_reset(MoeStats *st);
void moe_stats_free(MoeStats *st);

/* Expert-parallel exchange hook (implemented in parallel/); NULL means all experts local. */
typedef struct MoeExchange MoeExchange;

typedef struct MoeLayerArgs {
    int layer, L;
    int E, K, F;
    int e_first, e_local;
    float capacity_factor;
    bool noise;                 /* add router noise */
    uint64_t seed;
    long step, token_base;
    float aux_scale, z_scale;   /* coef * loss_scale / L (per-layer share) */
    const float *bias;          /* (E) selection-only bias of this layer (aux-loss-free
                                   balancing, layers/router_bias.h); NULL = none */
} MoeLayerArgs;

/* x (N, C) normalised input; router, noise (E, C); w1, w3 (E_local, F, C); w2 (E_local, C, F).
 * Returns y (N, C); adds the layer's aux and z losses to *aux / *z (tensors (1), created
 * when NULL) and accumulates routing statistics into st. */
Tensor *moe_forward(Tape *t, Tensor *x, Tensor *router, Tensor *noise, Tensor *w1, Tensor *w3,
                    Tensor *w2, const MoeLayerArgs *a, MoeExchange *ex, MoeStats *st,
                    Tensor **aux, Tensor **z);

#endif
