/* lora.h: LoRA adapters on the attention projections, for fine-tuning a trained model
 * without updating (or storing optimizer state for) its weights.
 *
 * Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models" (arXiv:2106.09685),
 * eq. (3) with the alpha/r scaling of sec. 4.1: a projection y = x W^T (W (d_out, d_in),
 * frozen) becomes
 *
 *   y = x W^T + (alpha / r) * (drop(x) A^T) B^T     A (r, d_in), B (d_out, r) trainable
 *
 * A starts Kaiming-uniform, U(-1/sqrt(d_in), 1/sqrt(d_in)) (He et al. 2015's uniform
 * initialisation with negative slope sqrt(5), as PyTorch's nn.Linear and PEFT initialise
 * lora_A), B at zero, so at step 0 the adapter adds exactly zero and the model computes
 * what the base model computed. drop is inverted dropout on the adapter's input only
 * (PEFT's lora_dropout): each element is zeroed with probability p and the rest scaled by
 * 1/(1-p); the keep/drop decision is a pure function of (seed, step, layer, projection,
 * global token, element) (the counter RNG of core/rng.h), so a run does not depend
 * on the rank layout and a resumed run draws the same masks. Evaluation uses no dropout.
 *
 * lora_linear is one op (forward and backward kernels side by side in lora.c): the adapter
 * is added into the base product's output, so besides y it keeps only u = drop(x) A^T and a
 * du scratch (N, r) (plus the mask and masked input (N, d_in) with dropout); backward gives
 * dx, dA, dB and skips dW for a frozen W (no weight-gradient GEMM). Merging for export is
 * W' = W + (alpha/r) B A (lora_merge), which computes the same function.
 *
 * Names (autograd/params.h) follow PEFT without its "base_model.model." prefix:
 * "model.layers.{l}.self_attn.{q,k,v,o}_proj.lora_A.weight" (r, d_in) and
 * "...lora_B.weight" (d_out, r).
 *
 * MoE targets (docs/finetuning.md): "w1", "w3" (the experts' up projections, (F, C) each),
 * "w2" (the down projection, (C, F)) and "gate" (the router, (E, C)).
 *   per expert (the default): A_e (r, d_in), B_e (d_out, r) for every expert e, stacked as
 *     "model.layers.{l}.block_sparse_moe.experts.{e}.w1.lora_A.weight" (E_local, r, d_in)
 *     and "...lora_B.weight" (E_local, d_out, r): EXPERT-block parameters, sharded with the
 *     experts they adapt (expert parallelism) and reduced over their expert-data group;
 *   shared (LoraSpec.expert_shared): one A (r, d_in), B (d_out, r) per layer and target,
 *     added to every expert's product: "model.layers.{l}.block_sparse_moe.experts.w1.lora_A
 *     .weight", DENSE-block parameters (replicated; their gradient sums every rank's
 *     experts' contributions in the dense all-reduce);
 *   gate: "model.layers.{l}.block_sparse_moe.gate.lora_A.weight" (r, C), "...lora_B.weight"
 *     (E, r), DENSE; computed in fp32 like the router itself (lora_linear_fp32).
 * The expert products with adapters are op_expert_lora_linear (autograd/ops.h). Expert
 * adapters take no dropout (config_validate refuses lora_dropout > 0 with w1/w2/w3: an
 * expert's rows carry no token identity under expert parallelism, so a mask could not be a
 * function of the token; PEFT's ParamWrapper refuses dropout on expert parameters too).
 * Non-goals: rsLoRA/DoRA variants, adapter biases, adapters on the shared experts or the
 * noise router.
 */
#ifndef MOE_LORA_H
#define MOE_LORA_H

#include "autograd/ops.h"

/* The projections an adapter can sit on, in this order everywhere (bit t of a targets
 * mask is projection t): the attention's four (LORA_N_ATTN, the default list), then the
 * experts' three and the router. */
enum {
    LORA_Q = 0, LORA_K, LORA_V, LORA_O, LORA_N_ATTN,
    LORA_W1 = LORA_N_ATTN, LORA_W2, LORA_W3, LORA_GATE, LORA_N_TARGETS
};
/* "q_proj", "k_proj", "v_proj", "o_proj", "w1", "w2", "w3", "gate" */
extern const char *const lora_target_names[LORA_N_TARGETS];
/* Bits of the expert targets (w1, w2, w3) in a targets mask. */
#define LORA_EXPERT_MASK ((1u << LORA_W1) | (1u << LORA_W2) | (1u << LORA_W3))

typedef struct LoraSpec {
    int rank;              /* r >= 1 with adapters; 0 = none (the model is a plain model) */
    float alpha;           /* scaling numerator: adapters are scaled by alpha / r */
    float dropout;         /* p in [0, 1): inverted dropout on the adapter input (training) */
    unsigned targets;      /* bit LORA_Q.. set: that projection gets an adapter */
    bool train_router;     /* router (and noise router) weights stay trainable */
    bool train_experts;    /* expert (dense model: FFN) weights stay trainable */
    bool expert_shared;    /* w1/w2/w3 adapters: one pair per layer and target shared by
                              every expert (DENSE) instead of one per expert (EXPERT) */
} LoraSpec;

/* Where a dropout mask comes from: the counter-RNG key of one adapter call. */
typedef struct LoraDrop {
    float p;               /* drop probability; 0 = no mask */
    uint64_t seed;         /* run seed */
    long step;             /* optimizer step */
    int layer, target;     /* which adapter */
    long token_base;       /* global index of the call's first token (row 0 of x) */
} LoraDrop;

/* Index of "q_proj" .. "gate" in lora_target_names, or -1. */
int lora_target_index(const char *name);
/* With adapters, whether the model holds EXPERT-block tensors that train: unfrozen experts,
 * or per-expert (not shared) w1/w2/w3 adapters. */
bool lora_trains_expert_block(const LoraSpec *s);

/* y (N, d_out) = x W^T + scale * (drop(x) A^T) B^T for x (N, d_in), w (d_out, d_in),
 * a (r, d_in), b (d_out, r). drop NULL or drop->p == 0: no dropout. Output and saved state
 * come from the tape arena. backward (accumulates): dx += dy W + mask * ((scale dy B) A),
 * dA += (scale dy B)^T drop(x), dB += scale dy^T (drop(x) A^T), dW += dy^T x (each only for
 * an input that requires grad). */
Tensor *lora_linear(Tape *t, Tensor *x, Tensor *w, Tensor *a, Tensor *b, float scale,
                    const LoraDrop *drop);
/* lora_linear with every product in fp32 whatever compute.precision (gemm_fp32_begin), as
 * op_linear_fp32: the router's logits with a "gate" adapter. */
Tensor *lora_linear_fp32(Tape *t, Tensor *x, Tensor *w, Tensor *a, Tensor *b, float scale,
                         const LoraDrop *drop);

/* The dropout mask lora_linear multiplies in: mask (N, d_in) with entries 0 (probability
 * d->p) or 1/(1 - d->p), entry (n, j) keyed by (seed, step, which,
 * (token_base + n) * d_in + j), which = layer * 4 + target for the attention targets (the
 * keys of the first release, kept so old runs resume bit for bit) and a disjoint range
 * 2^40 + layer * LORA_N_TARGETS + target for the others. Overwrites mask. */
void lora_dropout_mask(float *mask, int N, int din, const LoraDrop *d);

/* w (d_out, d_in) += scale * b (d_out, r) @ a (r, d_in): folds an adapter into its weight
 * (x w'^T then equals x w^T + scale (x a^T) b^T up to float rounding). */
void lora_merge(float *w, const float *a, const float *b, int dout, int din, int r,
                float scale);


/* True for an adapter tensor name (".lora_A." or ".lora_B."). */
bool lora_is_adapter(const char *name);
/* w (E, d_out, d_in) += scale * b_e @ a_e for every expert e: per-expert adapters a
 * (E, r, d_in), b (E, d_out, r), or shared ones (ndim 2: a (r, d_in), b (d_out, r), the
 * same for every expert): shared = 1. */
void lora_merge_experts(float *w, const float *a, const float *b, int E, int dout, int din,
                        int r, float scale, bool shared);

/* With adapters (s->rank > 0), whether the base tensor called name stays trainable:
 * routers ("block_sparse_moe.gate", "noise_gate") when s->train_router, experts and FFNs
 * ("experts", "mlp.", "shared_experts") when s->train_experts; every other base tensor is
 * frozen. */
bool lora_base_trainable(const char *name, const LoraSpec *s);

#endif
