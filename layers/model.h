/* model.h: the Mixtral-style sparse MoE transformer (and its dense variant).
 *
 *   tokens -> embed -> L x [ x += attn(rmsnorm(x)); x += moe(rmsnorm(x)) ] -> rmsnorm -> head
 *
 * attention: GQA causal self-attention, q/k/v/o projections without bias, RoPE in the
 *   rotate-half layout (Hugging Face Llama/Mixtral convention, so exports need no permutation);
 *   optionally a sliding window of W keys (Mistral 7B, Jiang et al. 2023); optionally
 *   (data.doc_mask) attention kept inside the documents packed in a sequence, RoPE positions
 *   restarting at each (model_doc_starts).
 * moe: noisy top-k router (Shazeer et al. 2017) + SwiGLU experts run as one GEMM per expert
 *   over its gathered tokens (layers/moe.h); n_experts = 0 gives one dense SwiGLU FFN.
 *   Optional shared experts (DeepSeekMoE, Dai et al. 2024, arXiv:2401.06066, sec. 3.2):
 *   n_s always-active SwiGLU experts of width F_s added to the routed output. Their sum
 *   sum_i w2_i (silu(w1_i x) * w3_i x) is one SwiGLU of width Fs = n_s F_s (stack the w1_i,
 *   w3_i rows and the w2_i columns), stored that way as dense (replicated) parameters.
 * head: untied LM head. Loss: mean token cross-entropy + load-balancing loss (Switch
 *   Transformer, Fedus et al. 2022) + router z-loss (ST-MoE, Zoph et al. 2022), the two
 *   auxiliary losses averaged over layers.
 *
 * Parameters carry Hugging Face Mixtral names (autograd/params.h). Experts are stacked per
 * layer as (E_local, F, C) tensors; a rank holds experts [e_first, e_first + E_local).
 */
#ifndef MOE_MODEL_H
#define MOE_MODEL_H

#include "autograd/params.h"
#include "layers/lora.h"
#include "layers/moe.h"
#include "layers/regions.h"

typedef struct ModelShape {
    int V, C, L, H, Hkv, D;   /* vocab, width, layers, heads, kv heads, head dim */
    int F;                    /* expert hidden width (dense FFN hidden when E == 0) */
    int E, K;                 /* experts (0 = dense), experts per token */
    int Fs;                   /* shared experts' total hidden width (0 = none; E > 0 only) */
    int W;                    /* attention window in keys, query included (0 = full causal) */
    float norm_eps, rope_theta, init_std;
    float capacity_factor;    /* 0 = dropless */
    bool router_noise;        /* noisy gating while training */
    float aux_coef, z_coef;
    int router;               /* MoeRouter (moe.router); 0 = MOE_ROUTER_TOPK */
    float top_p;              /* topp: probability mass to reach, (0, 1] */
    int max_experts;          /* topp: experts per token at most; 0 = E */
    float entropy_coef;       /* topp: router entropy penalty weight */
} ModelShape;

typedef struct LayerParams {
    int attn_norm, wq, wk, wv, wo, ffn_norm;   /* indices into ParamSet */
    int router, noise;                          /* (E, C) each; -1 when dense */
    int w1, w3, w2;    /* MoE: (E_local, F, C), (E_local, F, C), (E_local, C, F);
                          dense: (F, C), (F, C), (C, F) */
    int sw1, sw3, sw2; /* shared experts (Fs, C), (Fs, C), (C, Fs); -1 when Fs == 0 */
    int lora_a[LORA_N_TARGETS];   /* adapter A (r, d_in) of q/k/v/o, w1/w2/w3, gate; per-expert
                                     w1/w2/w3: (E_local, r, d_in); -1 when absent */
    int lora_b[LORA_N_TARGETS];   /* adapter B (d_out, r) (per expert (E_local, d_out, r));
                                     -1 when absent */
} LayerParams;

typedef struct Model {
    ModelShape s;
    int e_first, e_local;     /* experts held by this rank */
    ParamSet ps;
    int embed, final_norm, head;
    LayerParams *layer;       /* (L) owned */
    MoeStats stats;           /* routing statistics of the last forward, summed over
                                 micro-batches until moe_stats_reset */
    MoeStats recompute_stats; /* what recomputed layers route into (discarded) */
    MoeExchange *exchange;    /* expert-parallel exchange, NULL on one rank (borrowed) */
    float *router_bias;       /* (L, E) selection-only expert bias (layers/router_bias.h),
                                 zeros at init; owned; NULL when dense */
    bool use_router_bias;     /* routing adds router_bias: set by the trainer when
                                 moe.bias_update_rate > 0, and by ckpt_load when the file
                                 holds /state/router_bias */
    LoraSpec lora;            /* adapters (layers/lora.h); rank 0 = none */
    bool doc_mask;            /* data.doc_mask: each sequence is cut into documents at its
                                 eot tokens (model_doc_starts); a position attends only to
                                 its own document and its RoPE position counts from the
                                 document's first token. Set by the trainer and by
                                 model_source_load (a checkpoint's config); false = one
                                 causal sequence (model_init's default) */
    int32_t eot;              /* the end-of-text id (data/tokenizer.h tok_eot) that begins
                                 each document; read only when doc_mask */
} Model;


/* Per-call context of a forward pass. */
typedef struct StepCtx {
    bool train;               /* router noise on (if configured) */
    uint64_t seed;            /* run seed: keys the router noise */
    long step;                /* optimizer step: keys the router noise */
    long token_base;          /* global index of this call's first token (noise key) */
    float loss_scale;         /* multiplies every loss term (1/grad_accum) */
    double lm_denom;          /* > 0: the LM loss is loss_scale x (sum of the non-ignored
                                 targets' -log p) / lm_denom (the batch-wide mean, see
                                 autograd/ops.h); 0: the mean over this call's targets */
    int pos0;                 /* position of the first token (KV-cache sampling) */
    bool recompute;           /* each block is a checkpointed segment (tape_checkpoint): its
                                 activations are freed after its forward and recomputed in
                                 backward; forward-only passes are bounded the same way */
    int loss_chunk;           /* > 0: the fused head + loss runs over this many rows at a
                                 time (op_linear_cross_entropy_chunked); 0: all rows */
} StepCtx;

typedef struct ModelOut {
    Tensor *loss;             /* (1) scaled total loss (what backward starts from) */
    Tensor *logits;           /* (N, V); NULL when training with targets (the fused
                                 head + loss keeps only the loss gradient) */
    double lm_loss, aux_loss, z_loss;   /* unscaled values of this call */
} ModelOut;

/* Declare and allocate the parameters. e_first/e_local select the experts this rank holds
 * (0 and E on one rank). Values are initialised from seed. */
void model_init(Model *m, const ModelShape *s, int e_first, int e_local, uint64_t seed);
/* model_init plus LoRA adapters when lora != NULL and lora->rank > 0: an A (r, d_in) and a
 * B (d_out, r) per layer and targeted projection (per-expert targets: one pair per held
 * expert, stacked; layers/lora.h), declared after every base tensor (so base
 * parameter indices equal model_init's), A Kaiming-uniform and B zero (keyed by seed and
 * name); every base tensor is frozen except those lora_base_trainable keeps, so grad/m/v
 * exist only for the adapters and those. */
void model_init_lora(Model *m, const ModelShape *s, const LoraSpec *lora, int e_first,
                     int e_local, uint64_t seed);
void model_free(Model *m);

/* Projection target (LORA_Q .. LORA_O) of layer l: x (N, d_in) @ W^T, plus the layer's
 * adapter when it has one (with dropout when ctx is non-NULL, training, and the spec has
 * dropout > 0). Shared by model_forward and KV-cache inference. */
Tensor *model_proj(Model *m, Tape *t, int l, int target, Tensor *x, const StepCtx *ctx);

/* Document layout of a packed batch, inputs (B, T) -> start (B, T) (overwritten): the
 * first position of each token's document. A document begins at position 0 of each row and
 * at every eot token: the end-of-text token OPENS the document that follows it (it is that
 * document's position 0), so start[t] = t when inputs[t] == eot, else start[t - 1]. Then
 * every next-token target is predictable from what its position sees: a document's last
 * token predicts the eot after it (the document ends), and the eot, which sees only itself,
 * predicts the first token of the next document (as `moetrain sample`'s empty prompt, a
 * lone eot, asks). The layout op_attention_docs and op_rope_docs take. */
void model_doc_starts(const int32_t *inputs, int B, int T, int32_t eot, int32_t *start);

/* Forward over inputs (B, T) token ids. With targets (B, T) (in [0, V), or LOSS_IGNORE: not
 * trained on; the LM loss divides by ctx->lm_denom) the loss terms are computed; targets
 * may be NULL (logits only). Activations come from the tape.
 * With m->doc_mask the document layout (model_doc_starts) is carved from the tape's arena
 * and every layer's attention and RoPE follow it; ctx->pos0 must then be 0. */
void model_forward(Model *m, Tape *t, const int32_t *inputs, const int32_t *targets, int B,
                   int T, const StepCtx *ctx, ModelOut *out);

/* The feed-forward sub-block of layer l on its normalised input hn (N, C) -> (N, C): the
 * MoE block (routing per a, which names the layer) plus the shared experts' SwiGLU when
 * Fs > 0, or the dense SwiGLU FFN; plus a->residual when not NULL (added by the MoE
 * combine when there are no shared experts, so that the sum alone is kept). Shared by
 * model_forward and KV-cache inference. */
Tensor *model_ffn(Model *m, Tape *t, int l, Tensor *hn, const MoeLayerArgs *a, Tensor **aux,
                  Tensor **z);

/* Active matmul parameters per token (q,k,v,o, routers, K experts' w1/w2/w3, the shared
 * experts' w1/w2/w3, head) and the model FLOPs per token of a training step: 6 x that +
 * 12 L T' H D (the attention products, PaLM's appendix B count) with T' = min(T, W) keys
 * attended under a window. */
double model_active_params(const ModelShape *s);
double model_flops_per_token(const ModelShape *s, int T);
/* Model FLOPs per token of a training step with adapters (what MFU divides by): frozen
 * matmul weights cost 4 FLOPs per parameter (forward and input gradient, no weight
 * gradient), trainable ones 6 (unfrozen routers / experts, the adapters' A and B), attention
 * 12 L T H D as in model_flops_per_token (which this equals for s->rank == 0). The first
 * layer's q/k/v input needs no gradient either; that is ignored (a small overestimate). */
double model_flops_per_token_lora(const ModelShape *m, const LoraSpec *s, int T);

#endif
