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
 * Non-goals: adapters on the experts or the router (those can be unfrozen instead),
 * rsLoRA/DoRA variants, adapter biases.
 */
#ifndef MOE_LORA_H
#define MOE_LORA_H

#include "autograd/ops.h"

/* The projections an adapter can sit on, in this order everywhere (bit t of a targets
 * mask is projection t). */
enum { LORA_Q = 0, LORA_K, LORA_V, LORA_O, LORA_N_TARGETS };
extern const char *const lora_target_names[LORA_N_TARGETS];   /* "q_proj", ... "o_proj" */

typedef struct LoraSpec {
    int rank;              /* r >= 1 with adapters; 0 = none (the model is a plain model) */
    float alpha;           /* scaling numerator: adapters are scaled by alpha / r */
    float dropout;         /* p in [0, 1): inverted dropout on the adapter input (training) */
    unsigned targets;      /* bit LORA_Q.. set: that projection gets an adapter */
    bool train_router;     /* router (and noise router) weights stay trainable */
    bool train_experts;    /* expert (dense model: FFN) weights stay trainable */
} LoraSpec;

/* Where a dropout mask comes from: the counter-RNG key of one adapter call. */
typedef struct LoraDrop {
    float p;               /* drop probability; 0 = no mask */
    uint64_t seed;         /* run seed */
    long step;             /* optimizer step */
    int layer, target;     /* which adapter */
    long token_base;       /* global index of the call's first token (row 0 of x) */
} LoraDrop;

/* Index of "q_proj" .. "o_proj" in lora_target_names, or -1. */
int lora_target_index(const char *name);

/* y (N, d_out) = x W^T + scale * (drop(x) A^T) B^T for x (N, d_in), w (d_out, d_in),
 * a (r, d_in), b (d_out, r). drop NULL or drop->p == 0: no dropout. Output and saved state
 * come from the tape arena. backward (accumulates): dx += dy W + mask * ((scale dy B) A),
 * dA += (scale dy B)^T drop(x), dB += scale dy^T (drop(x) A^T), dW += dy^T x (each only for
 * an input that requires grad). */
Tensor *lora_linear(Tape *t, Tensor *x, Tensor *w, Tensor *a, Tensor *b, float scale,
                    const LoraDrop *drop);

/* The dropout mask lora_linear multiplies in: mask (N, d_in) with entries 0 (probability
 * d->p) or 1/(1 - d->p), entry (n, j) keyed by (seed, step, layer, target,
 * (token_base + n) * d_in + j). Overwrites mask. */
void lora_dropout_mask(float *mask, int N, int din, const LoraDrop *d);

/* w (d_out, d_in) += scale * b (d_out, r) @ a (r, d_in): folds an adapter into its weight
 * (x w'^T then equals x w^T + scale (x a^T) b^T up to float rounding). */
void lora_merge(float *w, const float *a, const float *b, int dout, int din, int r,
                float scale);


/* True for an adapter tensor name (".lora_A." or ".lora_B."). */
bool lora_is_adapter(const char *name);
/* With adapters (s->rank > 0), whether the base tensor called name stays trainable:
 * routers ("block_sparse_moe.gate", "noise_gate") when s->train_router, experts and FFNs
 * ("experts", "mlp.", "shared_experts") when s->train_experts; every other base tensor is
 * frozen. */
bool lora_base_trainable(const char *name, const LoraSpec *s);

#endif
