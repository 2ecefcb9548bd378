/* config_keys.c: the key table of the run configuration (config_keys.h) and the per-key
 * helpers that read it: lookup, value formatting, what a key accepts, range rules and the
 * did-you-mean of unknown names.
 *
 * The doc of each row is the single description of its key: it is the comment beside the
 * key in config_to_yaml's output and its line in the reference, docs/configuration.md
 * (`moetrain config keys`). Shape letters are those of core/common.h.
 */
#include "configs/config_keys.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- key table */

const char *const cfg_sections[CONFIG_N_SECTIONS] = {
    "model", "moe", "train", "optim", "data", "run", "parallel", "compute", "checkpoint",
    "init", "finetune"};

const char *const cfg_section_docs[CONFIG_N_SECTIONS] = {
    "the transformer's shape",
    "the mixture-of-experts feed-forward layers and their router",
    "the training loop",
    "AdamW and the learning-rate schedule (linear warmup, then optim.schedule)",
    "the corpus and the tokenizer",
    "the run directory",
    "the layout of the MPI ranks",
    "how the matrix products run: library and number format (docs/performance.md)",
    "how often checkpoints are written and how many are kept",
    "starting an MoE run from a dense checkpoint (sparse upcycling)",
    "starting from a trained checkpoint: full fine-tuning or LoRA adapters"};

#define KI(s, n, fld, lo, hi, fl, d) \
    {s, n, T_INT, offsetof(Config, fld), 0, lo, hi, 0, 0, fl, d, NULL, NULL, 0}
#define KL(s, n, fld, lo, hi, fl, d) \
    {s, n, T_I64, offsetof(Config, fld), 0, lo, hi, 0, 0, fl, d, NULL, NULL, 0}
#define KF(s, n, fld, lo, hi, fl, d) \
    {s, n, T_FLOAT, offsetof(Config, fld), 0, 0, 0, lo, hi, fl, d, NULL, NULL, 0}
#define KB(s, n, fld, fl, d) \
    {s, n, T_BOOL, offsetof(Config, fld), 0, 0, 0, 0, 0, fl, d, NULL, NULL, 0}
/* A string; dflt: how the reference shows its default (NULL: config_defaults' value). */
#define KS(s, n, fld, dflt, d) \
    {s, n, T_STR, offsetof(Config, fld), 0, 0, 0, 0, 0, 0, d, NULL, dflt, 0}
#define KLS(s, n, fld, cnt, fl, d) \
    {s, n, T_LIST, offsetof(Config, fld), offsetof(Config, cnt), 0, 0, 0, 0, fl, d, NULL, NULL, \
     0}
/* A list whose entries are a path or a mapping {path: P, weight: W}; wfld the weights. */
#define KLW(s, n, fld, cnt, wfld, fl, d) \
    {s, n, T_LIST, offsetof(Config, fld), offsetof(Config, cnt), 0, 0, 0, 0, fl, d, NULL, \
     NULL, offsetof(Config, wfld)}
/* An enumeration: written as one of the names, stored as its index (an int field). */
#define KE(s, n, fld, names, fl, d) \
    {s, n, T_ENUM, offsetof(Config, fld), 0, 0, \
     (int64_t)(sizeof(names) / sizeof(names)[0]) - 1, 0, 0, fl, d, names, NULL, 0}

/* moe.router, in the order of CONFIG_ROUTER_* */
static const char *const ROUTERS[] = {"topk", "topp", "expert_choice"};
/* moe.score and moe.aux_scope, in the order of CONFIG_SCORE_* and CONFIG_AUX_* */
static const char *const SCORES[] = {"softmax", "sigmoid"};
static const char *const AUX_SCOPES[] = {"batch", "sequence", "global"};
/* optim.schedule, in the order of CONFIG_SCHEDULE_* */
static const char *const SCHEDULES[] = {"cosine", "wsd", "linear", "constant"};
/* compute.gemm and compute.precision, in the order of GemmBackend and GemmPrecision */
static const char *const GEMMS[] = {"auto", "openblas", "onednn"};
static const char *const PRECISIONS[] = {"fp32", "bf16"};
/* data.records, in the order of RecFormat (data/records.h) */
static const char *const RECORDS[] = {"auto", "file", "paragraph", "jsonl"};

const KeySpec cfg_keys[] = {
    KI(S_MODEL, "vocab_size", model.vocab_size, 258, 1073741824, F_SHAPE,
       "V: tokenizer vocabulary size (256 byte tokens, V - 257 merges, one end-of-text token)"),
    KI(S_MODEL, "dim", model.dim, 1, INT_MAX, F_SHAPE, "C: model (residual stream) width"),
    KI(S_MODEL, "n_layers", model.n_layers, 1, INT_MAX, F_SHAPE, "L: transformer blocks"),
    KI(S_MODEL, "n_heads", model.n_heads, 1, INT_MAX, F_SHAPE,
       "H: query heads per attention layer"),
    KI(S_MODEL, "n_kv_heads", model.n_kv_heads, 1, INT_MAX, F_SHAPE,
       "Hkv: key/value heads (grouped-query attention; n_heads = plain multi-head); must "
       "divide n_heads"),
    KI(S_MODEL, "head_dim", model.head_dim, 2, INT_MAX, F_SHAPE | F_EVEN,
       "D: width of each head, even (RoPE rotates pairs of dimensions)"),
    KF(S_MODEL, "norm_eps", model.norm_eps, 0, HUGE_VAL, F_SHAPE | F_LO_OPEN,
       "epsilon inside RMSNorm"),
    KF(S_MODEL, "rope_theta", model.rope_theta, 0, HUGE_VAL, F_SHAPE | F_LO_OPEN,
       "RoPE base frequency"),
    KF(S_MODEL, "init_std", model.init_std, 0, HUGE_VAL, F_SHAPE | F_LO_OPEN,
       "standard deviation of the normal weight initialisation"),
    KI(S_MODEL, "sliding_window", model.sliding_window, 0, INT_MAX, F_SHAPE,
       "W: query i attends keys i-W < j <= i (the last W positions, itself included; "
       "Mistral); 0 = full causal attention"),

    KI(S_MOE, "n_experts", moe.n_experts, 0, INT_MAX, F_SHAPE,
       "E: experts per MoE layer; 0 = a dense SwiGLU FFN instead"),
    KI(S_MOE, "top_k", moe.top_k, 1, INT_MAX, F_SHAPE,
       "K: experts each token is routed to (router topk), at most n_experts"),
    KI(S_MOE, "hidden", moe.hidden, 1, INT_MAX, F_SHAPE,
       "F: hidden width of each expert, or of the dense FFN when n_experts = 0"),
    KF(S_MOE, "capacity_factor", moe.capacity_factor, 0, HUGE_VAL, 0,
       "an expert takes at most about capacity_factor x N K / E tokens a step (the overflow "
       "is dropped); 0 = dropless. Router expert_choice: its capacity factor (0 = 1)"),
    KB(S_MOE, "router_noise", moe.router_noise, 0,
       "noisy top-k gating while training (Shazeer et al. 2017); off at evaluation"),
    KF(S_MOE, "aux_loss_coef", moe.aux_loss_coef, 0, HUGE_VAL, 0,
       "weight of the load-balancing loss (Switch Transformer)"),
    KF(S_MOE, "z_loss_coef", moe.z_loss_coef, 0, HUGE_VAL, 0,
       "weight of the router z-loss, which penalises large router logits (ST-MoE)"),
    KI(S_MOE, "n_shared_experts", moe.n_shared_experts, 0, INT_MAX, F_SHAPE,
       "always-active SwiGLU experts added to the routed output (DeepSeekMoE); 0 = none; "
       "needs n_experts > 0"),
    KI(S_MOE, "shared_hidden", moe.shared_hidden, 0, INT_MAX, F_SHAPE,
       "hidden width of each shared expert; 0 = hidden"),
    KF(S_MOE, "bias_update_rate", moe.bias_update_rate, 0, HUGE_VAL, 0,
       "aux-loss-free balancing (router topk): step of the per-expert selection bias, 1e-3 "
       "in the papers; 0 = off (a bias saved in the checkpoint is kept, frozen)"),
    KE(S_MOE, "router", moe.router, ROUTERS, 0,
       "topk: K experts per token; topp: experts per token by probability mass (Huang et "
       "al. 2024); expert_choice: each expert picks its tokens (Zhou et al. 2022)"),
    KF(S_MOE, "top_p", moe.top_p, 0, 1, F_LO_OPEN,
       "topp: a token takes experts by router probability until their sum reaches this"),
    KI(S_MOE, "max_experts", moe.max_experts, 0, INT_MAX, 0,
       "topp: experts per token at most, <= n_experts; 0 = n_experts (no cap)"),
    KF(S_MOE, "entropy_coef", moe.entropy_coef, 0, HUGE_VAL, 0,
       "topp: weight of the router entropy penalty (part of the aux loss); ignored by the "
       "other routers"),
    KE(S_MOE, "score", moe.score, SCORES, 0,
       "router topk: softmax (Mixtral) or sigmoid per-expert affinities whose chosen K are "
       "renormalised to sum to 1 (DeepSeek-V3 sec. 2.1.2)"),
    KF(S_MOE, "route_scale", moe.route_scale, 0, HUGE_VAL, F_LO_OPEN,
       "router topk: the K gates of a token are multiplied by this (DeepSeek-V3's routed "
       "scaling factor); 1 = unscaled"),
    KI(S_MOE, "n_groups", moe.n_groups, 0, INT_MAX, 0,
       "group-limited routing: the experts form this many equal contiguous groups, must "
       "divide n_experts; 0 with topk_groups > 0 = parallel.expert_parallel (one group per "
       "expert-parallel shard, which must then be set > 0)"),
    KI(S_MOE, "topk_groups", moe.topk_groups, 0, INT_MAX, 0,
       "group-limited routing (router topk): each token keeps the topk_groups groups with "
       "the largest sum of their 2 best scores and picks its K experts inside them; 0 = off"),
    KE(S_MOE, "aux_scope", moe.aux_scope, AUX_SCOPES, 0,
       "load-balancing loss over: batch (each micro-batch, all ranks), sequence (per "
       "sequence, averaged; DeepSeek-V3 eq. 17-20) or global (the step's micro-batches so "
       "far, all ranks; Qiu et al. 2025)"),

    KI(S_TRAIN, "seq_len", train.seq_len, 1, INT_MAX, 0, "T: tokens per sequence"),
    KI(S_TRAIN, "global_micro_batch", train.micro_batch, 1, INT_MAX, 0,
       "B: sequences in one forward/backward pass summed over ALL ranks (each of R ranks "
       "takes B / R); an optimizer step is B x grad_accum sequences. In Megatron terms B = "
       "micro-batch-size x data-parallel ranks, and B x grad_accum = global-batch-size"),
    KI(S_TRAIN, "micro_batch", train.micro_batch, 1, INT_MAX, F_ALIAS,
       "old name of global_micro_batch (the same global count, not per rank), still read; "
       "written configs use the new name, and a config giving both is refused"),
    KI(S_TRAIN, "grad_accum", train.grad_accum, 1, INT_MAX, 0,
       "micro-batches accumulated per optimizer step"),
    KL(S_TRAIN, "steps", train.steps, 1, INT64_MAX, 0,
       "optimizer steps to run, which the learning-rate schedule spans; leave it out when "
       "train.tokens is set"),
    KL(S_TRAIN, "tokens", train.tokens, 0, INT64_MAX, 0,
       "token budget instead of train.steps (giving both is refused): steps = ceil(tokens / "
       "(global_micro_batch x seq_len x grad_accum)), printed at the start; 0 = use "
       "train.steps"),
    KL(S_TRAIN, "seed", train.seed, 0, INT64_MAX, 0,
       "seed of the weight initialisation, the data order and the router noise"),
    KL(S_TRAIN, "log_every", train.log_every, 1, INT64_MAX, 0, "steps between log lines"),
    KL(S_TRAIN, "eval_every", train.eval_every, 0, INT64_MAX, 0,
       "steps between validation runs; 0 = only at the end"),
    KI(S_TRAIN, "eval_batches", train.eval_batches, 1, INT_MAX, 0,
       "micro-batches per validation run"),
    KI(S_TRAIN, "max_bad_steps", train.max_bad_steps, 1, INT_MAX, 0,
       "non-finite steps (each skipped and reported) in a row that save a checkpoint and stop "
       "the run, exit 1"),
    KF(S_TRAIN, "spike_factor", train.spike_factor, 1, HUGE_VAL, 0,
       "a gradient norm above this multiple of its running mean is logged as a spike "
       "(grad_spike in metrics.jsonl)"),
    KB(S_TRAIN, "recompute", train.recompute, 0,
       "keep each block's input and output only and recompute its activations in backward: "
       "the same results, less memory, one more forward"),
    KI(S_TRAIN, "loss_chunk", train.loss_chunk, 0, INT_MAX, 0,
       "rows of the LM head + cross-entropy computed at once; 0 = the whole micro-batch "
       "(an (N, V) logits buffer)"),
    KB(S_TRAIN, "log_experts", train.log_experts, 0,
       "under each log line, the per-layer expert load (share of slots per expert, "
       "max/mean, drops); off: the line sums it up as the worst layer's max/mean and drops"),
    KF(S_TRAIN, "warn_dropped", train.warn_dropped, 0, 1, 0,
       "warn when a MoE layer's capacity limit drops more than this share of its routed "
       "slots in a step (expert choice: of its tokens left unchosen); 1 = never"),

    KF(S_OPTIM, "lr", optim.lr, 0, HUGE_VAL, F_LO_OPEN, "peak learning rate, reached after "
       "warmup"),
    KF(S_OPTIM, "min_lr", optim.min_lr, 0, HUGE_VAL, 0,
       "learning rate the decay reaches at the last step (schedules cosine, wsd, linear), "
       "<= lr"),
    KL(S_OPTIM, "warmup_steps", optim.warmup_steps, 0, INT64_MAX, 0,
       "steps of linear warmup up to lr (from lr / warmup_steps)"),
    KE(S_OPTIM, "schedule", optim.schedule, SCHEDULES, 0,
       "after warmup: cosine = cosine decay to min_lr; wsd = warmup-stable-decay: lr, then a "
       "linear decay to min_lr over the last decay_fraction of the steps (MiniCPM, Hu et "
       "al. 2024; Hägele et al. 2024); linear = linear decay to min_lr; constant = lr"),
    KF(S_OPTIM, "decay_fraction", optim.decay_fraction, 0, 1, F_LO_OPEN,
       "wsd: share of the steps in the final decay: the last round(decay_fraction x steps) "
       "steps (at least 1) decay, the last one at min_lr"),
    KF(S_OPTIM, "beta1", optim.beta1, 0, 1, F_HI_OPEN, "AdamW first-moment decay"),
    KF(S_OPTIM, "beta2", optim.beta2, 0, 1, F_HI_OPEN, "AdamW second-moment decay"),
    KF(S_OPTIM, "eps", optim.eps, 0, HUGE_VAL, F_LO_OPEN, "AdamW denominator epsilon"),
    KF(S_OPTIM, "weight_decay", optim.weight_decay, 0, HUGE_VAL, 0, "decoupled weight decay"),
    KF(S_OPTIM, "grad_clip", optim.grad_clip, 0, HUGE_VAL, 0,
       "the global gradient norm is clipped to this; 0 = no clipping"),

    KS(S_DATA, "tokenizer", data.tokenizer, "(required)",
       "BPE tokenizer file; when missing it is trained on data.text and written there"),
    KLW(S_DATA, "text", data.text, data.n_text, data.text_weight, 0,
        "raw UTF-8 text files to tokenize; an entry {path: a.txt, weight: 2} is a source of "
        "a weighted mixture (docs/data.md)"),
    KLW(S_DATA, "shards", data.shards, data.n_shards, data.shards_weight, 0,
        "pre-encoded token shards (moetrain data encode); text, shards or sft must be "
        "non-empty; entries may carry a weight as in data.text"),
    KF(S_DATA, "val_fraction", data.val_fraction, 0, 0.5, F_LO_OPEN,
       "fraction of the tokens held out for validation (the tail of each source) when "
       "data.val_text and data.val_shards are empty (data.sft: the last whole records, the "
       "boundary nearest this fraction)"),
    KB(S_DATA, "doc_mask", data.doc_mask, 0,
       "documents packed in a window do not see each other: each begins at an end-of-text "
       "token, attends only inside itself (block-diagonal causal mask) and counts its RoPE "
       "positions from 0; validation, eval and sample follow it (docs/training.md)"),
    KLS(S_DATA, "val_text", data.val_text, data.n_val_text, 0,
        "raw UTF-8 text files that validate (encoded with data.tokenizer; none of it trains)"),
    KLS(S_DATA, "val_shards", data.val_shards, data.n_val_shards, 0,
        "pre-encoded token shards that validate, after data.val_text"),
    KE(S_DATA, "records", data.records, RECORDS, 0,
       "how text files split into documents (each followed by <|endoftext|>): file (whole "
       "file), paragraph (blank-line separated), jsonl (a \"text\" field per line), auto "
       "(jsonl for .jsonl names, else file)"),
    KLS(S_DATA, "sft", data.sft, data.n_sft, 0,
       "supervised fine-tuning records: JSON Lines files of {prompt, completion} or "
       "{messages} objects; the loss is taken on the completion (assistant) tokens only "
       "(docs/finetuning.md); not with text, shards, val_text or val_shards"),
    KS(S_DATA, "prompt_key", data.prompt_key, "prompt",
       "data.sft: the field of a record that holds the prompt"),
    KS(S_DATA, "completion_key", data.completion_key, "completion",
       "data.sft: the field of a record that holds the completion"),
    KS(S_DATA, "sft_separator", data.sft_separator, "(none)",
       "data.sft: text put between a record's prompt and its completion, not trained on "
       "(e.g. \"\\n\")"),

    KS(S_RUN, "dir", run.dir, "runs/<config name>",
       "run directory: logs, checkpoints, the effective config (config name: the config "
       "file's name without directory and extension)"),

    KI(S_PARALLEL, "expert_parallel", parallel.expert_parallel, 0, INT_MAX, 0,
       "ranks an MoE layer's experts are sharded over; 0 = the largest size dividing both "
       "the rank count and n_experts"),
    KB(S_PARALLEL, "shard_optimizer", parallel.shard_optimizer, 0,
       "distributed optimizer (ZeRO stage 1): each rank keeps the AdamW moments of 1/R of "
       "the parameters it replicates (dense: all ranks; experts: the ranks holding the same "
       "experts), gradients are reduce-scattered and the updated slices all-gathered; same "
       "updates, less optimizer memory; a no-op on one rank"),
    KB(S_PARALLEL, "hierarchical", parallel.hierarchical, 0,
       "when the ranks span several nodes of equal size (shared-memory groups, or the "
       "environment variable MOE_NODE_MAP), collectives exchange within each node first and "
       "then between nodes; no effect on one node"),
    KI(S_PARALLEL, "a2a_chunks", parallel.a2a_chunks, 1, 64, 0,
       "the expert exchange in this many chunks of local experts (at most the experts per "
       "rank): one chunk's all-to-all overlaps another's expert products, and the shared "
       "experts the first chunk's; 1 = one blocking all-to-all each way; same results"),

    KF(S_PARALLEL, "bucket_mb", parallel.bucket_mb, -1, 1024, 0,
       "size of the gradient-reduction buckets in MiB: each is reduced while the backward "
       "pass goes on below it (non-blocking, overlapping computation); 0 = reduce after the "
       "backward pass; -1 = automatic: 16 when the ranks span several nodes, else 0 (within "
       "one machine the transfers are copies made by the same cores, measured no faster "
       "overlapped: docs/performance.md); the summation order is the same for every size, "
       "so results do not depend on it (docs/architecture.md)"),

    KE(S_COMPUTE, "gemm", compute.gemm, GEMMS, 0,
       "matrix-product library: auto (oneDNN when built in, else OpenBLAS; logged with the "
       "ISA and kernels), openblas, onednn"),
    KE(S_COMPUTE, "precision", compute.precision, PRECISIONS, 0,
       "number format of the products' inputs: fp32, or bf16 (inputs rounded to bfloat16, "
       "fp32 accumulation; weights, optimizer, norms, softmax and losses stay fp32; needs "
       "AVX512-BF16 or AMX unless compute.gemm is openblas, which emulates it slowly)"),

    KL(S_CHECKPOINT, "every", checkpoint.every, 0, INT64_MAX, 0,
       "steps between checkpoints; 0 = only at the end and on SIGINT/SIGTERM"),
    KI(S_CHECKPOINT, "keep", checkpoint.keep, 1, INT_MAX, 0,
       "most recent checkpoints kept in the run directory"),

    KS(S_INIT, "upcycle_from", init.upcycle_from, NULL,
       "dense checkpoint upcycled into this MoE at the start (when there is none to resume); "
       "needs moe.n_experts > 0 and a multiple of granularity, and the dense run's model.*"),
    KF(S_INIT, "router_init_std", init.router_init_std, 0, HUGE_VAL, 0,
       "the upcycled router's weights are N(0, std); 0 = zeros"),
    KF(S_INIT, "expert_noise", init.expert_noise, 0, HUGE_VAL, 0,
       "each upcycled expert weight is multiplied by 1 + x N(0, 1) with x this (seeded by "
       "train.seed), to break the symmetry between copies"),
    KI(S_INIT, "granularity", init.granularity, 1, INT_MAX, 0,
       "G: the dense FFN's hidden units are split into G slices, one per expert (moe.hidden "
       "= dense hidden / G)"),

    KS(S_FINETUNE, "init_from", finetune.init_from, NULL,
       "full checkpoint whose weights the run starts from (when there is none to resume); "
       "model.*, moe.n_experts, top_k, hidden and the tokenizer as in its run; not with "
       "init.upcycle_from"),
    KI(S_FINETUNE, "lora_rank", finetune.lora_rank, 0, 65536, F_SHAPE,
       "r: LoRA adapters of rank r on lora_targets, the base frozen (needs init_from); 0 = "
       "no adapters, every weight is fine-tuned"),
    KF(S_FINETUNE, "lora_alpha", finetune.lora_alpha, 0, HUGE_VAL, F_LO_OPEN,
       "adapters are scaled by lora_alpha / lora_rank"),
    KF(S_FINETUNE, "lora_dropout", finetune.lora_dropout, 0, 1, F_HI_OPEN,
       "dropout on the adapters' input while training"),
    KLS(S_FINETUNE, "lora_targets", finetune.lora_targets, finetune.n_lora_targets, F_SHAPE,
        "weights that get adapters, each at most once, non-empty when lora_rank > 0: the "
        "attention's q_proj, k_proj, v_proj, o_proj; with moe.n_experts > 0 also the "
        "experts' w1, w3 (up, gate) and w2 (down) and the router's gate (expert targets take "
        "no dropout: lora_dropout 0)"),
    KB(S_FINETUNE, "lora_expert_shared", finetune.lora_expert_shared, F_SHAPE,
       "w1/w2/w3 adapters: one pair per layer and target shared by every expert (replicated) "
       "instead of one pair per expert (held with the experts under expert parallelism); "
       "needs an expert target"),
    KB(S_FINETUNE, "train_router", finetune.train_router, F_SHAPE,
       "with adapters: the router (and noise router) weights train too"),
    KB(S_FINETUNE, "train_experts", finetune.train_experts, F_SHAPE,
       "with adapters: the expert weights (dense model: the FFN) train too"),
};
_Static_assert(sizeof cfg_keys / sizeof cfg_keys[0] == CONFIG_N_KEYS,
               "CONFIG_N_KEYS is out of date");

int cfg_key_index(int sec, const char *name) {
    for (int i = 0; i < CONFIG_N_KEYS; i++)
        if (cfg_keys[i].sec == sec && strcmp(cfg_keys[i].name, name) == 0) return i;
    return -1;
}

int cfg_canonical(int ki) {
    if (ki > 0 && (cfg_keys[ki].flags & F_ALIAS)) {
        ASSERT(cfg_keys[ki - 1].off == cfg_keys[ki].off && !(cfg_keys[ki - 1].flags & F_ALIAS),
               "alias row %s must follow the row of its new name", cfg_keys[ki].name);
        return ki - 1;
    }
    return ki;
}

int cfg_section_index(const char *name) {
    for (int s = 0; s < CONFIG_N_SECTIONS; s++)
        if (strcmp(cfg_sections[s], name) == 0) return s;
    return -1;
}

/* ---------------------------------------------------------------- growable string */

void cfg_buf_printf(Buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int need = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    ASSERT(need >= 0, "vsnprintf failed on format '%s'", fmt);
    if (b->n + (size_t)need + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + (size_t)need + 1) cap *= 2;
        b->p = moe_realloc(b->p, b->cap, cap);
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    b->n += (size_t)need;
}

/* ---------------------------------------------------------------- value formatting */

/* Shortest %g form that reads back to the same double, so to_yaml round-trips exactly. */
void cfg_fmt_double(double v, char *out, size_t cap) {
    if (!out || cap == 0) return;   /* nothing to write into */
    if (v == floor(v) && fabs(v) < 1e15) {  /* 10000, not 1e+04 */
        snprintf(out, cap, "%.0f", v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, cap, "%.*g", prec, v);
        if (strtod(out, NULL) == v) return;
    }
}

/* Length (2..4) and codepoint of the UTF-8 sequence at p (p[0] >= 0x80), or 0 when it is
 * not valid UTF-8 (bad lead or continuation, overlong, surrogate, > U+10FFFF). */
int cfg_utf8_seq(const unsigned char *p, uint32_t *cp) {
    int len = p[0] >= 0xF0 && p[0] <= 0xF4 ? 4 : p[0] >= 0xE0 ? 3 : p[0] >= 0xC2 ? 2 : 0;
    if (len == 0 || p[0] > 0xF4) return 0;
    uint32_t v = p[0] & (0x7Fu >> len);
    for (int k = 1; k < len; k++) {
        if ((p[k] & 0xC0) != 0x80) return 0;  /* also stops at the NUL */
        v = (v << 6) | (p[k] & 0x3Fu);
    }
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (v < min[len] || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return len;
}

/* A YAML double-quoted string that libyaml reads back to exactly s: escapes ", \, and every
 * codepoint YAML does not allow raw in a stream (C0/C1 controls, DEL, U+FEFF, U+FFFE/FFFF)
 * or would fold as a line break (U+0085, U+2028, U+2029). Other valid UTF-8 passes through;
 * a byte that is not valid UTF-8 (only possible in a name taken from a file path) becomes
 * \xNN, i.e. the codepoint U+00NN: the cfg_closest YAML can say. */
static void fmt_quoted(Buf *b, const char *s) {
    cfg_buf_printf(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        uint32_t cp = *p;
        int len = *p < 0x80 ? 1 : cfg_utf8_seq(p, &cp);
        if (len == 0) len = 1;  /* invalid byte: cp stays the byte value */
        if (cp == '"' || cp == '\\') cfg_buf_printf(b, "\\%c", (char)cp);
        else if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F))
            cfg_buf_printf(b, "\\x%02x", (unsigned)cp);
        else if (cp == 0x2028 || cp == 0x2029 || cp == 0xFEFF || cp == 0xFFFE || cp == 0xFFFF)
            cfg_buf_printf(b, "\\u%04x", (unsigned)cp);
        else if (len == 1 && cp >= 0x80) cfg_buf_printf(b, "\\x%02x", (unsigned)cp);
        else cfg_buf_printf(b, "%.*s", len, (const char *)p);
        p += len;
    }
    cfg_buf_printf(b, "\"");
}

/* The value of key k in c as YAML text (appended to b). */
void cfg_fmt_value(Buf *b, const Config *c, const KeySpec *k) {
    const char *base = (const char *)c + k->off;
    char num[64];
    switch (k->type) {
    case T_INT: cfg_buf_printf(b, "%d", *(const int *)base); break;
    case T_I64: cfg_buf_printf(b, "%lld", (long long)*(const int64_t *)base); break;
    case T_FLOAT:
        cfg_fmt_double(*(const double *)base, num, sizeof num);
        cfg_buf_printf(b, "%s", num);
        break;
    case T_BOOL: cfg_buf_printf(b, "%s", *(const bool *)base ? "true" : "false"); break;
    case T_ENUM: {
        int v = *(const int *)base;
        if (v >= 0 && v <= k->imax) cfg_buf_printf(b, "%s", k->choices[v]);
        else cfg_buf_printf(b, "%d", v);   /* only after a direct edit; validate rejects it */
        break;
    }
    case T_STR: {
        const char *s = *(char *const *)base;
        if (s) fmt_quoted(b, s);
        else cfg_buf_printf(b, "null");  /* unset optional string; to_yaml leaves it out */
        break;
    }
    case T_LIST: {
        char *const *l = *(char **const *)base;
        size_t n = *(const size_t *)((const char *)c + k->off_n);
        const double *w = k->off_w ? *(double *const *)((const char *)c + k->off_w) : NULL;
        cfg_buf_printf(b, "[");
        for (size_t i = 0; i < n; i++) {
            if (i) cfg_buf_printf(b, ", ");
            if (w && w[i] > 0) {
                char wnum[32];
                cfg_fmt_double(w[i], wnum, sizeof wnum);
                cfg_buf_printf(b, "{path: ");
                fmt_quoted(b, l[i]);
                cfg_buf_printf(b, ", weight: %s}", wnum);
            } else {
                fmt_quoted(b, l[i]);
            }
        }
        cfg_buf_printf(b, "]");
        break;
    }
    }
}

/* "an integer in [1, 8]", "a number in [0, 1)", ... : what key k accepts. */
void cfg_describe(const KeySpec *k, char *out, size_t cap) {
    char lo[32], hi[32];
    switch (k->type) {
    case T_INT:
    case T_I64: {
        int64_t top = k->type == T_INT ? INT_MAX : INT64_MAX;
        const char *what = (k->flags & F_EVEN) ? "an even integer" : "an integer";
        if (k->imax == top) snprintf(out, cap, "%s >= %lld", what, (long long)k->imin);
        else snprintf(out, cap, "%s in [%lld, %lld]", what, (long long)k->imin,
                      (long long)k->imax);
        break;
    }
    case T_FLOAT:
        cfg_fmt_double(k->fmin, lo, sizeof lo);
        cfg_fmt_double(k->fmax, hi, sizeof hi);
        if (isinf(k->fmax))
            snprintf(out, cap, "a number %s %s", (k->flags & F_LO_OPEN) ? ">" : ">=", lo);
        else
            snprintf(out, cap, "a number in %c%s, %s%c", (k->flags & F_LO_OPEN) ? '(' : '[',
                     lo, hi, (k->flags & F_HI_OPEN) ? ')' : ']');
        break;
    case T_BOOL: snprintf(out, cap, "true or false"); break;
    case T_ENUM: {
        size_t n = (size_t)snprintf(out, cap, "one of ");
        for (int64_t i = 0; i <= k->imax && n < cap; i++)
            n += (size_t)snprintf(out + n, cap - n, "%s%s", i ? ", " : "", k->choices[i]);
        break;
    }
    case T_STR: snprintf(out, cap, "a non-empty string"); break;
    case T_LIST:
        if (k->off_w)
            snprintf(out, cap, "a list of strings such as [a.txt, b.txt] ([] for none); an "
                     "entry may be {path: a.txt, weight: 0.3}");
        else
            snprintf(out, cap, "a list of strings such as [a.txt, b.txt] ([] for none)");
        break;
    }
}

/* ---------------------------------------------------------------- did-you-mean */

static size_t edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63) return 64;
    size_t row[64];
    for (size_t j = 0; j <= lb; j++) row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* Closest of names[0..n) to s within a small distance, or NULL. */
const char *cfg_closest(const char *s, const char *const *names, int n) {
    const char *best = NULL;
    size_t bd = (size_t)-1, limit = strlen(s) / 3 + 1;
    if (limit > 3) limit = 3;
    for (int i = 0; i < n; i++) {
        size_t d = edit_distance(s, names[i]);
        if (d < bd) { bd = d; best = names[i]; }
    }
    return bd <= limit ? best : NULL;
}

/* ---------------------------------------------------------------- values and their rules */

void cfg_value_free(Value *v) {
    moe_free(v->s);
    moe_free(v->w);
    for (size_t j = 0; j < v->n; j++) moe_free(v->list[j]);
    moe_free(v->list);
    memset(v, 0, sizeof *v);
}

/* The current value of key k in c as a borrowed Value (for range re-checks). */
Value cfg_peek(const Config *c, const KeySpec *k) {
    const char *base = (const char *)c + k->off;
    Value v = {0};
    switch (k->type) {
    case T_INT: v.i = *(const int *)base; break;
    case T_I64: v.i = *(const int64_t *)base; break;
    case T_FLOAT: v.f = *(const double *)base; break;
    case T_BOOL: v.b = *(const bool *)base; break;
    case T_ENUM: v.i = *(const int *)base; break;
    case T_STR: v.s = *(char *const *)base; break;
    case T_LIST: break;
    }
    return v;
}


int cfg_check_range(const KeySpec *k, const Value *v, const char *loc, const char *path,
                       MoeErr *err) {
    char want[128];
    cfg_describe(k, want, sizeof want);
    if (k->type == T_ENUM) {
        if (v->i < k->imin || v->i > k->imax) {
            moe_errorf(err, "%s: %s: value %lld is not a valid choice", loc, path,
                       (long long)v->i);
            return moe_hintf(err, "expected %s", want);
        }
    } else if (k->type == T_INT || k->type == T_I64) {
        if (v->i < k->imin || v->i > k->imax) {
            moe_errorf(err, "%s: %s: value %lld is out of range", loc, path, (long long)v->i);
            return moe_hintf(err, "expected %s", want);
        }
        if ((k->flags & F_EVEN) && (v->i % 2)) {
            moe_errorf(err, "%s: %s: value %lld is odd", loc, path, (long long)v->i);
            return moe_hintf(err, "expected %s (RoPE rotates pairs of dimensions)", want);
        }
    } else if (k->type == T_FLOAT) {
        bool lo_ok = (k->flags & F_LO_OPEN) ? v->f > k->fmin : v->f >= k->fmin;
        bool hi_ok = (k->flags & F_HI_OPEN) ? v->f < k->fmax : v->f <= k->fmax;
        if (!lo_ok || !hi_ok || !isfinite(v->f)) {
            char num[32];
            cfg_fmt_double(v->f, num, sizeof num);
            moe_errorf(err, "%s: %s: value %s is out of range", loc, path, num);
            return moe_hintf(err, "expected %s", want);
        }
    } else if (k->type == T_STR) {
        if (!v->s || !*v->s) {
            moe_errorf(err, "%s: %s: empty string", loc, path);
            return moe_hintf(err, "expected %s", want);
        }
    }
    return 0;
}

