/* upcycle.h: sparse upcycling: initialise an MoE model from a trained dense checkpoint.
 *
 * Sparse upcycling (Komatsuzaki et al. 2023, "Sparse Upcycling: Training Mixture-of-Experts
 * from Dense Checkpoints", ICLR): every expert of an MoE layer starts as a copy of the dense
 * SwiGLU FFN (w1 = gate_proj, w3 = up_proj, w2 = down_proj); embeddings, attention, norms and
 * the LM head are copied unchanged; the router starts at N(0, S) (or zeros for S = 0), the
 * noise router (noise_gate) at zeros, and training continues with fresh AdamW moments from
 * step 0. Our gates are the softmax over the K selected router logits, so they sum to 1:
 * with identical experts the MoE layer computes exactly the dense FFN, whatever the router
 * picks, and the upcycled model at step 0 is the dense model.
 *
 * Granularity G > 1 (He et al. 2024, "Upcycling Large Language Models into Mixture of
 * Experts", arXiv 2410.07524, as implemented in Megatron-Core's
 * megatron/core/transformer/moe/upcycling_utils.py): the dense FFN's F hidden units are cut
 * into G slices of width F/G. Slice s takes rows [s F/G, (s+1) F/G) of w1 and of w3 (the
 * gate/up pairs stay together) and the same columns of w2, so the dense FFN is the sum of
 * its G slices: w2 (silu(w1 x) * w3 x) = sum_s w2[:, s] (silu(w1[s] x) * w3[s] x). With E
 * experts there are E/G copies of the slice set: expert e = c G + s (copy c = e / G) holds
 * slice s. "Virtual group" router init (same paper), used when K is a multiple of G: the
 * router row of expert c G + s is row c of an (E/G, C) draw, i.e. shared by the G slices of
 * a copy, so a copy's slices tie and a token's top K are K/G whole copies. For K < G each
 * expert gets its own row instead (shared rows would make every token use the lowest-index
 * slices of a group, since ties go to the lower index).
 * Weight scaling (same paper, sec. "weight scaling"; Megatron-Core's activation scale for
 * topK-then-softmax routing, moe_router_pre_softmax = false): a token's output is
 * sum_k g_k y_{e_k} with gates summing to 1, so K selected slices of equal gate 1/K give
 * (1/K) sum of K slices ~ (1/K)(K/G) dense = dense / G: the MoE output is multiplied back
 * by a = G. Megatron-Core spreads a as a^(1/3) over fc1 (w1 and w3) and fc2, which is exact
 * only for positively homogeneous activations; silu is not, so here the whole factor goes to
 * w2 (the layer output is linear in w2): exact whenever the selected slices form whole
 * copies with equal gates within each copy (E = G = K with a zero router, or K a multiple
 * of G with the virtual-group router, router noise off), and equal to the dense FFN only in
 * expectation over which K of the G slices a token selects otherwise. G = 1 gives a = 1
 * (plain copies).
 *
 * Expert noise X > 0 breaks the symmetry between copies: each expert weight is multiplied
 * by (1 + X n), n ~ N(0, 1) drawn from the counter-based RNG keyed by (seed, layer, tensor,
 * global expert, element), so the values do not depend on the rank layout (like Drop-
 * Upcycling's partial re-init, Nakamura et al. 2025, it is a perturbation of the copies;
 * moetrain's only one).
 *
 * Shared experts (DeepSeekMoE, Dai et al. 2024, arXiv:2401.06066: fine-grained experts plus
 * shared-expert isolation): the MoE's shared experts, total width Fs = n_shared *
 * shared_hidden, start as the FIRST Fs hidden units of the dense FFN (rows [0, Fs) of w1 and
 * w3, columns [0, Fs) of w2, unscaled, no expert noise: they see every token, exactly like
 * the dense FFN did), and the routed experts are cut from the REMAINING F - Fs units as
 * above (G slices of width (F - Fs) / G, w2 scaled by G). Since a SwiGLU is the sum of its
 * hidden units' contributions, shared + routed = the dense FFN under the same conditions as
 * without shared experts (e.g. G = 1 with any router: exactly), so the upcycled model's
 * first forward is the dense model's. The widths must add up: moe.hidden * G + Fs = F.
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
