/* upcycle.h: sparse upcycling: initialise an MoE model from a trained dense checkpoint.
 *
 * References: Komatsuzaki et al. 2023, "Sparse Upcycling: Training Mixture-of-Experts from
 * Dense Checkpoints" (ICLR): experts as copies of the dense FFN; He et al. 2024, "Upcycling
 * Large Language Models into Mixture of Experts" (arXiv 2410.07524; Megatron-Core's
 * moe/upcycling_utils.py): granularity, "virtual group" router init, weight scaling; Dai et
 * al. 2024, DeepSeekMoE (arXiv 2401.06066): shared experts. docs/upcycling.md explains the
 * scheme and why each part keeps the dense function.
 *
 * The upcycled model (dense SwiGLU w1 = gate_proj, w3 = up_proj (F, C), w2 = down_proj
 * (C, F); G = granularity, Fs = n_shared * shared_hidden, S = router_init_std, X =
 * expert_noise):
 *   embeddings, attention, norms, LM head   copied unchanged
 *   shared experts      hidden units [0, Fs) of the dense FFN (rows of w1/w3, columns of
 *                       w2), unscaled, no noise
 *   routed expert e     e = c G + s holds slice s of the remaining F - Fs units, width
 *                       (F - Fs) / G (rows of w1 and w3, the same columns of w2), w2
 *                       multiplied by G (the whole scale on w2: silu is not homogeneous),
 *                       every weight by (1 + X n), n ~ N(0, 1) from the counter-based RNG
 *                       keyed by (seed, layer, tensor, global expert, element), so the
 *                       values do not depend on the rank layout
 *   router              N(0, S) (zeros for S = 0); when K is a multiple of G the G slices of
 *                       copy c share row c of an (E/G, C) draw, else one row per expert;
 *                       the noise router (noise_gate) zeros
 *   optimizer           fresh AdamW moments, step 0
 * Guarantee (router noise off, X = 0): at step 0 the upcycled model computes exactly what
 * the dense model computed when G = 1 (any router), E = G = K with a zero router, or K a
 * multiple of G with the virtual-group router; otherwise it equals the dense FFN in
 * expectation over which slices a token selects. The widths must add up: moe.hidden * G +
 * Fs = dense F.
 *
 * Non-goals: upcycling an MoE into a bigger MoE, dense layers kept dense.
 */
#ifndef MOE_UPCYCLE_H
#define MOE_UPCYCLE_H

#include <stdint.h>

#include "core/common.h"
#include "layers/model.h"
#include "configs/config.h"

typedef struct UpcycleOpts {
    int granularity;         /* G >= 1; moe F = (dense F - Fs) / G, E a multiple of G */
    int n_shared;            /* shared experts of the MoE (upcycle_config; 0 = none) */
    int shared_hidden;       /* width of each; 0 = the routed width (moe.hidden) */
    float router_init_std;   /* S >= 0: router weights N(0, S); 0 = zeros */
    float expert_noise;      /* X >= 0: relative std of the multiplicative expert noise */
    uint64_t seed;           /* keys the router draw and the expert noise */
} UpcycleOpts;

/* G, S, X from c->init, the shared experts from c->moe and the seed from c->train.seed. */
void upcycle_opts_from_config(const Config *c, UpcycleOpts *o);

/* Overwrite every parameter value of moe (built by model_init with E > 0, any expert range
 * e_first .. e_first + e_local - 1) from the dense checkpoint at dense_ckpt: the experts this
 * model holds are filled by GLOBAL index (so every rank of an expert-parallel run calls this
 * with its own model and gets its own slice of the same upcycled model). Gradients and AdamW
 * moments are not touched (model_init zeroed them). Reads only parameter values (the dense
 * file's optimizer state, step and loader position are ignored).
 * Fails (-1, err naming the file and what differs, with hint) before touching moe when the
 * file is not a readable checkpoint, is not dense (moe.n_experts > 0), or its shape does not
 * fit: any of model.vocab_size/dim/n_layers/n_heads/n_kv_heads/head_dim/norm_eps/rope_theta/
 * sliding_window differs, the shared width Fs leaves no dense units for the routed experts,
 * the dense hidden width minus Fs is not divisible by G, moe.hidden != (dense hidden - Fs)
 * / G, or moe.n_experts is not a multiple of G. A read error (corruption) after the checks leaves
 * moe partly overwritten. */
int upcycle_into(const char *dense_ckpt, Model *moe, const UpcycleOpts *o, MoeErr *err);

/* The config of the upcycled run: a copy of the dense checkpoint's config dense (loaded
 * from dense_path) with moe.n_experts = E, moe.top_k = K, moe.n_shared_experts and
 * moe.shared_hidden from o, moe.hidden = (dense hidden - Fs) / G (Fs = n_shared *
 * shared_hidden; with shared_hidden 0 the shared experts are as wide as the routed ones:
 * moe.hidden = dense hidden / (n_shared + G)) and the init section set from dense_path and
 * o. *out is overwritten (config_free it). Fails (-1, err) when dense is not dense, or the
 * widths do not divide, or E, K, G do not fit (E >= 1 a multiple of G, 1 <= K <= E). */
int upcycle_config(const Config *dense, const char *dense_path, int E, int K,
                   const UpcycleOpts *o, Config *out, MoeErr *err);

/* `moetrain upcycle`: read the dense checkpoint, build the upcycled model (one process, all
 * E experts), and write it to out_path (atomically, ckpt_save) WITHOUT optimizer state, at
 * step 0 and tokens 0 with the loader at its start; the stored config is upcycle_config's,
 * the tokenizer and its hash the dense checkpoint's. Experts are stored by global index, so
 * any rank layout can load the file. Fails (-1, err) as upcycle_config / upcycle_into /
 * ckpt_save. */
int upcycle_ckpt(const char *dense_ckpt, const char *out_path, int E, int K,
                 const UpcycleOpts *o, MoeErr *err);

#endif
