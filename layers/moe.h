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
 *   experts: y_e = w2( silu(w1 x) * (w3 x) ), one GEMM per expert over its gathered rows;
 *     the SwiGLU activation is not kept (op_swiglu_expert_linear recomputes it in backward),
 *     nor, without expert parallelism, the gathered rows (op_gather_expert_up re-gathers)
 *   combine: out[n] = sum_k gates[n,k] * y[slot[n,k]]
 *   aux   = coef * E * sum_i f_i P_i   (f_i share of the N K routed slots to expert i,
 *           P_i mean router probability softmax(clean)_i; Fedus et al. 2022 eq. 4)
 *   zloss = coef * mean_n logsumexp(clean_n)^2  (Zoph et al. 2022 eq. 5)
 * The auxiliary losses use the clean logits: the noise only perturbs which experts are
 * chosen. With expert parallelism (parallel/), the gathered rows are exchanged with the
 * ranks owning the experts between gather and the expert GEMMs (MoeExchange).
 *
 * Routers (moe.router, docs/configuration.md): the gates/idx arrays are (N, W)
 * with W slots per token and idx -1 for an unused slot (skipped by dispatch and combine).
 *   topk          W = K, op_topk_gate (the default above)
 *   topp          W = max_experts (0 = E), op_topp_gate: experts by probability until their
 *                 mass reaches top_p; gates = softmax(h) unnormalised; the router entropy
 *                 penalty coef * mean_n H(softmax(clean_n)) joins aux (Huang et al. 2024);
 *                 capacity_factor > 0 caps experts at ceil(N K / E * factor) as for topk;
 *                 f_i is the share of all routed slots (their number varies)
 *   expert_choice W = E, op_expert_choice_gate: each expert takes its top
 *                 ceil(N K factor / E) tokens (factor 0 = 1) of this call's N tokens (per
 *                 rank under expert parallelism); no load-balancing loss (balanced by
 *                 construction), no capacity drops; "dropped" counts tokens no expert took
 * The z-loss applies to every router.
 *
 * Top-k variants (router topk; op_topk_route, DeepSeek-V3 arXiv:2412.19437 sec. 2.1.2):
 *   score sigmoid   s = sigmoid(h) (E) per token, top-K by s (+ b: the selection bias is
 *                   then in affinity units), gates = s_k / sum of the chosen s
 *   route_scale     gates x route_scale (either score)
 *   groups          topk_groups > 0: the E experts form n_groups contiguous groups; a token
 *                   keeps the topk_groups groups with the largest sum of their 2 best
 *                   selection scores (softmax: of softmax(h + b)) and picks K inside them
 * Softmax, scale 1 and no groups is op_topk_gate_bias, bit for bit the default.
 * The load-balancing loss by aux_scope (f_i shares of routed slots, q the affinities:
 * softmax(clean), or with sigmoid scores sigmoid(clean_i) / sum_j sigmoid(clean_j),
 * DeepSeek-V3 eq. 19):
 *   batch     coef E sum_i f_i P_i over this call's tokens, f over all ranks (as above)
 *   sequence  coef E mean_s sum_i f_si P_si, f and P per sequence of T tokens (eqs. 17-20);
 *             rank-local (a rank holds whole sequences)
 *   global    coef E sum_i F_i P_i, F the share of the slots routed so far in the optimizer
 *             step (all ranks, this and the earlier micro-batches: a->step_count), P over
 *             this call's tokens (Qiu et al. 2025, arXiv:2501.11873, with the running
 *             buffer over micro-batches; the first micro-batch's F is batch's f)
 */
#ifndef MOE_MOE_H
#define MOE_MOE_H

#include "autograd/ops.h"
#include "layers/lora.h"

typedef struct MoeStats {
    int L, E;
    double *count;      /* (L, E) routed slots per expert (before capacity), summed */
    double *dropped;    /* (L) slots dropped by the capacity limit (expert choice: tokens
                           that no expert took) */
    double *entropy;    /* (L) sum over calls of the mean router entropy (nats) */
    double *tokens;     /* (L) tokens routed */
    double *experts;    /* (L) sum over calls of the mean experts per token (routed slots
                           before capacity / tokens; K for topk) */
    double *remote;     /* (L) expert parallel: (token, other EP rank) pairs this rank
                           routed, each rank counted once per token however many of its
                           experts the token chose (what a token-deduplicating exchange
                           would send; the bench compares it with the slots sent) */
    int calls;          /* forward calls accumulated */
} MoeStats;

void moe_stats_init(MoeStats *st, int L, int E);
void moe_stats_reset(MoeStats *st);
void moe_stats_free(MoeStats *st);

/* moe.router: how tokens and experts are matched (see above). */
typedef enum { MOE_ROUTER_TOPK = 0, MOE_ROUTER_TOPP = 1, MOE_ROUTER_EXPERT_CHOICE = 2 } MoeRouter;
/* moe.score: how the topk router turns logits into affinities (see above). */
typedef enum { MOE_SCORE_SOFTMAX = 0, MOE_SCORE_SIGMOID = 1 } MoeScore;
/* moe.aux_scope: the tokens f_i and P_i of the load-balancing loss are taken over. */
typedef enum { MOE_AUX_BATCH = 0, MOE_AUX_SEQUENCE = 1, MOE_AUX_GLOBAL = 2 } MoeAuxScope;

/* LoRA adapters of one MoE layer (layers/lora.h); a NULL pair = no adapter there.
 *   clean = x Wg^T + scale (drop(x) Ag^T) Bg^T       gate: lora_linear_fp32
 *   h1 = xg W1_e^T + scale (xg A1_e^T) B1_e^T, h3 likewise with W3, y_e = act W2_e^T + scale
 *   (act A2_e^T) B2_e^T with act = silu(h1) h3       op_expert_lora_linear
 * With any expert adapter the gathered rows xg (M, C) are kept (op_gather_rows), and with a
 * w2 adapter the activation (M, F) too (op_swiglu); without, the fused ops run as before. */
typedef struct MoeLora {
    Tensor *gate_a, *gate_b;   /* (r, C), (E, r) */
    Tensor *a[3], *b[3];       /* w1, w2, w3 (LORA_W1 + i): per expert A (E_local, r, d_in),
                                  B (E_local, d_out, r); shared A (r, d_in), B (d_out, r) */
    float scale;               /* alpha / r */
    LoraDrop gate_drop;        /* the gate adapter's dropout key (p 0 = none) */
} MoeLora;

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
    MoeRouter router;           /* MOE_ROUTER_TOPK (0) unless moe.router says otherwise */
    float top_p;                /* topp: probability mass each token's experts reach */
    int max_experts;            /* topp: experts per token at most; 0 = E */
    float entropy_scale;        /* topp: entropy coef * loss_scale / L */
    MoeScore score;             /* topk: softmax (default) or sigmoid affinities */
    float route_scale;          /* topk: gates x this; 0 or 1 = unscaled */
    int n_groups, topk_groups;  /* topk: group-limited routing; topk_groups 0 = off */
    MoeAuxScope aux_scope;      /* the load-balancing loss's scope (MOE_AUX_BATCH = 0) */
    int T;                      /* MOE_AUX_SEQUENCE: tokens per sequence (N = B T) */
    const double *step_count;   /* MOE_AUX_GLOBAL: (E) this layer's slots routed so far in
                                   the optimizer step, all ranks, INCLUDING this call once
                                   moe_forward has added its counts to st (it must be
                                   st->count's row of this layer, or, when st is a scratch
                                   MoeStats of a recomputation, the row the first forward
                                   already filled) */
    Tensor *residual;           /* (N, C) added to the output by the combine (the residual
                                   stream: its sum is not kept separately); NULL = none */
    const MoeLora *lora;        /* adapters of this layer; NULL = none */
    float lora_dropout;         /* the gate adapter's dropout p (training; 0 = none): read
                                   by model_ffn when it builds lora */
    void (*overlap)(Tape *t, void *ctx);   /* NULL, or work independent of the routed
                                   experts (the shared experts) that moe_forward records
                                   exactly once: with an exchange, after the dispatch is
                                   posted and before the experts (so it runs while rows
                                   travel, parallel/expert_pipe.h); without, after the
                                   experts' products */
    void *overlap_ctx;
} MoeLayerArgs;

/* The router noise of moe_forward: eps (N, E), eps[n, e] = moe_randn_key(a->seed, a->step,
 * a->layer, (a->token_base + n) E + e), rows over the cores (each element is a function of
 * its key alone: the same at any thread count). */
void moe_router_noise(float *eps, int N, int E, const MoeLayerArgs *a);
/* Sum over the N rows of clean (N, E) of the entropy (nats) of softmax(clean[n]) (the
 * routing statistics): the rows' entropies go to ent (N), the caller's scratch, computed
 * over the cores, then are summed in row order (the same at any thread count). */
double moe_router_entropy(const float *clean, int N, int E, double *ent);

/* x (N, C) normalised input; router, noise (E, C); w1, w3 (E_local, F, C); w2 (E_local, C, F).
 * Returns y (N, C) (plus a->residual when given); adds the layer's aux and z losses to
 * *aux / *z (tensors (1), created when NULL) and accumulates routing statistics into st. */
Tensor *moe_forward(Tape *t, Tensor *x, Tensor *router, Tensor *noise, Tensor *w1, Tensor *w3,
                    Tensor *w2, const MoeLayerArgs *a, MoeExchange *ex, MoeStats *st,
                    Tensor **aux, Tensor **z);

#endif
