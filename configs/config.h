/* config.h: the run configuration (YAML), read strictly.
 *
 * One Config holds every knob of a run: model shape, MoE routing, the training loop,
 * AdamW, data, run directory, parallel layout and checkpointing. The YAML file has one
 * mapping per section ("model:", "moe:", ...) whose keys are scalars or lists of strings.
 * Every key with its type, default, range and meaning: docs/configuration.md, generated
 * from the key table (configs/config_keys.c) by `moetrain config keys`.
 *
 * Strictness is the point: an unknown section or key, a wrong type (a quoted "8" or 1.5 for
 * an integer, yes/no for a bool, a list for a scalar), an out-of-range value, a duplicate
 * key or a YAML syntax error is an error, never a silent default. Errors are reported as
 *     MoeErr.msg  = "FILE:LINE:COL: section.key: what is wrong"   (1-based line/col of the
 *                                                                   offending YAML node)
 *     MoeErr.hint = what is allowed (allowed keys, a did-you-mean, the valid range).
 * Overrides from the command line are located as "--set section.key=value".
 *
 * Renamed keys: an old name stays accepted as an alias of the new one (a row of the key
 * table marked as such): train.micro_batch = train.global_micro_batch. A file that gives
 * both names of one key is refused (like a duplicate key); a --set of either name
 * overrides the file's. Written configs (config_to_yaml) use the new name only.
 * Budgets: train.tokens > 0 makes train.steps = ceil(tokens / (global_micro_batch x
 * seq_len x grad_accum)); config_load and config_set keep it so (after every key that
 * enters the product), config_validate refuses a config that also gives train.steps, and
 * config_to_yaml writes derived steps as a comment only, so the text reads back.
 *
 * Order of use (cross-field checks run last so that overrides can fix each other):
 *     Config c;
 *     if (config_load(&c, path, &err)) fail;            // syntax, keys, types, ranges
 *     for each --set: if (config_set(&c, arg, &err)) fail;   // same per-key rules
 *     if (config_validate(&c, &err)) fail;              // required keys + cross-field checks
 *     ...
 *     config_free(&c);
 * config_load does NOT run the cross-field checks (n_kv_heads | n_heads, top_k <= n_experts,
 * min_lr <= lr) nor the required-key checks (data.tokenizer; data.text, data.shards or
 * data.sft):
 * the caller must call config_validate once after all overrides.
 *
 * Non-goals: no environment-variable expansion, no includes/merging of several files, no
 * YAML 1.1 booleans (yes/no/on/off). Only "true"/"True"/"TRUE"/"false"/"False"/"FALSE" are
 * booleans; numbers must be plain (unquoted) scalars; strings may be plain or quoted.
 *
 * Files: config.c (defaults, free, copy, the narrow types), config_keys.c (the key table,
 * internal header config_keys.h), config_load.c (YAML and --set), config_validate.c,
 * config_yaml.c (to_yaml and the diffs), config_reference.c (the Markdown reference).
 */
#ifndef MOE_CONFIG_H
#define MOE_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>

#include "core/common.h"
#include "layers/lora.h"
#include "layers/model.h"
#include "optim/schedule.h"

#define CONFIG_N_SECTIONS 11  /* model moe train optim data run parallel compute checkpoint
                                 init finetune */
#define CONFIG_N_KEYS 89      /* total number of keys over all sections (aliases included) */

typedef struct ConfigModel {
    int vocab_size;     /* V, in [258, 2^30] */
    int dim;            /* C, >= 1 */
    int n_layers;       /* L, >= 1 */
    int n_heads;        /* H, >= 1 */
    int n_kv_heads;     /* Hkv, >= 1, divides H */
    int head_dim;       /* D, even, >= 2 (RoPE rotates pairs) */
    double norm_eps;    /* RMSNorm epsilon, > 0 */
    double rope_theta;  /* RoPE base, > 0 */
    double init_std;    /* std of the normal weight init, > 0 */
    int sliding_window; /* W >= 0: query i attends keys i-W < j <= i (Mistral); 0 = full */
} ConfigModel;

typedef struct ConfigMoe {
    int n_experts;          /* E, >= 0; 0 = dense FFN */
    int top_k;              /* K, in [1, E] when E > 0 (ignored when E = 0) */
    int hidden;             /* F: expert hidden width, or dense FFN hidden width when E = 0 */
    double capacity_factor; /* >= 0; 0 = dropless */
    bool router_noise;      /* noisy top-k gating during training (Shazeer et al. 2017) */
    double aux_loss_coef;   /* load-balancing loss weight, >= 0 */
    double z_loss_coef;     /* router z-loss weight, >= 0 */
    int n_shared_experts;   /* >= 0 always-active SwiGLU experts (DeepSeekMoE); needs E > 0 */
    int shared_hidden;      /* >= 0 hidden width of each shared expert; 0 = hidden */
    double bias_update_rate; /* >= 0: aux-loss-free balancing bias step (layers/router_bias.h);
                                0 = off */
    int router;             /* CONFIG_ROUTER_*: topk (default), topp, expert_choice */
    double top_p;           /* topp: probability mass each token's experts reach, (0, 1] */
    int max_experts;        /* topp: experts per token at most, <= n_experts; 0 = n_experts */
    double entropy_coef;    /* topp: router entropy penalty weight, >= 0 */
    int score;              /* CONFIG_SCORE_*: softmax (default) or sigmoid affinities (topk) */
    double route_scale;     /* > 0: the topk gates are multiplied by it; 1 = unscaled */
    int n_groups;           /* >= 0: expert groups of group-limited routing; 0 with
                               topk_groups > 0 = parallel.expert_parallel */
    int topk_groups;        /* >= 0: groups each token may route into; 0 = not group-limited */
    int aux_scope;          /* CONFIG_AUX_*: batch (default), sequence, global */
} ConfigMoe;

/* moe.router values, in the order of layers/moe.h MoeRouter (config_model_shape maps them). */
enum { CONFIG_ROUTER_TOPK = 0, CONFIG_ROUTER_TOPP = 1, CONFIG_ROUTER_EXPERT_CHOICE = 2 };
/* moe.score and moe.aux_scope values, in the order of layers/moe.h MoeScore and MoeAuxScope. */
enum { CONFIG_SCORE_SOFTMAX = 0, CONFIG_SCORE_SIGMOID = 1 };
enum { CONFIG_AUX_BATCH = 0, CONFIG_AUX_SEQUENCE = 1, CONFIG_AUX_GLOBAL = 2 };

/* optim.schedule values, in the order of optim/schedule.h LrKind (config_lr_schedule). */
enum { CONFIG_SCHEDULE_COSINE = 0, CONFIG_SCHEDULE_WSD = 1, CONFIG_SCHEDULE_LINEAR = 2,
       CONFIG_SCHEDULE_CONSTANT = 3 };

typedef struct ConfigTrain {
    int seq_len;          /* T, >= 1 */
    int micro_batch;      /* B: key train.global_micro_batch (old name train.micro_batch, an
                             alias): sequences per micro-batch summed over all ranks, >= 1 */
    int grad_accum;       /* micro-batches per optimizer step, >= 1 */
    int64_t steps;        /* optimizer steps, >= 1; with tokens > 0 derived from it */
    int64_t tokens;       /* >= 0: token budget; > 0 sets steps = ceil(tokens / (B T
                             grad_accum)) (config_load, config_set); 0 = steps is given */
    int64_t seed;         /* >= 0 */
    int64_t log_every;    /* >= 1 */
    int64_t eval_every;   /* >= 0; 0 = evaluate only at the end */
    int eval_batches;     /* >= 1 */
    int max_bad_steps;    /* >= 1: this many non-finite steps in a row stop the run */
    double spike_factor;  /* >= 1: grad norm > factor x running mean is logged as a spike */
    bool recompute;       /* per-layer activation recomputation (StepCtx.recompute) */
    int loss_chunk;       /* >= 0: rows of the fused head + loss at once; 0 = all */
    bool log_experts;     /* the per-layer expert-load block under each log line */
    double warn_dropped;  /* [0, 1]: warn when a layer drops more than this share of slots */
} ConfigTrain;

typedef struct ConfigOptim {
    double lr;            /* peak learning rate, > 0 */
    double min_lr;        /* floor of the schedule, in [0, lr] */
    int64_t warmup_steps; /* >= 0 */
    int schedule;         /* CONFIG_SCHEDULE_*: cosine (default), wsd, linear, constant */
    double decay_fraction; /* wsd: share of the steps in the final decay, (0, 1] */
    double beta1;         /* [0, 1) */
    double beta2;         /* [0, 1) */
    double eps;           /* > 0 */
    double weight_decay;  /* >= 0 */
    double grad_clip;     /* global-norm clip, >= 0; 0 = off */
} ConfigOptim;

typedef struct ConfigData {
    char *tokenizer;      /* owned; required (trained on data.text when the file is missing) */
    char **text;          /* owned array of n_text owned paths (raw text files) */
    size_t n_text;
    double *text_weight;  /* owned (n_text) sampling weights, 0 = not given; NULL when no
                             entry has one ({path: P, weight: W} entries) */
    char **shards;        /* owned array of n_shards owned paths (pre-encoded token shards) */
    size_t n_shards;
    double *shards_weight;  /* owned (n_shards) as text_weight, or NULL */
    double val_fraction;  /* (0, 0.5]; used when val_text and val_shards are empty */
    char **val_text;      /* owned (n_val_text) text files that only validate */
    size_t n_val_text;
    char **val_shards;    /* owned (n_val_shards) shards that only validate */
    size_t n_val_shards;
    int records;          /* CONFIG_RECORDS_*: how text files split into documents */
    bool doc_mask;        /* attention stays inside the documents of a window, which begin
                             at each end-of-text token; RoPE positions restart with each */
    char **sft;           /* owned array of n_sft owned paths (JSONL fine-tuning records,
                             data/sft.h); not with text, shards, val_text or val_shards */
    size_t n_sft;
    char *prompt_key;     /* owned or NULL (= "prompt"): the prompt field of a record */
    char *completion_key; /* owned or NULL (= "completion"): the completion field */
    char *sft_separator;  /* owned or NULL (= none): text between prompt and completion */
} ConfigData;

/* data.records, the values of RecFormat (data/records.h) */
enum { CONFIG_RECORDS_AUTO = 0, CONFIG_RECORDS_FILE = 1, CONFIG_RECORDS_PARAGRAPH = 2,
       CONFIG_RECORDS_JSONL = 3 };

typedef struct ConfigRun {
    char *dir;            /* owned; default "runs/<config name>" */
} ConfigRun;

typedef struct ConfigParallel {
    int expert_parallel;  /* >= 0; 0 = auto (min(ranks, n_experts)) */
    bool shard_optimizer; /* AdamW moments split over the ranks replicating a block
                             (parallel/zero.h); default false */
    bool hierarchical;    /* exchange within a node first when the job spans several equal
                             nodes (parallel/comm.h); default true */
    double bucket_mb;     /* gradient-reduction bucket, MiB; 0 = after the backward;
                             negative = automatic (parallel/reduce.h); default -1 */
    int a2a_chunks;       /* [1, 64] expert-exchange chunks (parallel/expert_pipe.h); 1 =
                             blocking, unchunked */
} ConfigParallel;

typedef struct ConfigCompute {
    int gemm;             /* GemmBackend (autograd/gemm.h): auto (default), openblas, onednn */
    int precision;        /* GemmPrecision: fp32 (default), bf16 */
} ConfigCompute;

typedef struct ConfigCheckpoint {
    int64_t every;        /* >= 0; 0 = only at the end and on SIGINT/SIGTERM */
    int keep;             /* >= 1 checkpoints kept */
} ConfigCheckpoint;

typedef struct ConfigInit {
    char *upcycle_from;     /* owned; dense checkpoint to upcycle a new MoE run from
                               (checkpoints/upcycle.h), NULL = random init (default) */
    double router_init_std; /* >= 0: router weights N(0, std) at upcycling; 0 = zeros */
    double expert_noise;    /* >= 0: relative std of the multiplicative expert noise */
    int granularity;        /* G >= 1: dense FFN hidden units split into G expert slices */
} ConfigInit;

typedef struct ConfigFinetune {
    char *init_from;        /* owned; full checkpoint to fine-tune (its weights are the
                               start; with lora_rank > 0 they stay frozen), NULL = none */
    int lora_rank;          /* r >= 0: LoRA adapters of rank r; 0 = no adapters (full
                               fine-tuning from init_from) */
    double lora_alpha;      /* > 0: adapters are scaled by alpha / r */
    double lora_dropout;    /* [0, 1): dropout on the adapter input while training */
    char **lora_targets;    /* owned array of n_lora_targets owned names, each one of
                               q_proj, k_proj, v_proj, o_proj, w1, w2, w3, gate
                               (default the four attention projections) */
    size_t n_lora_targets;
    bool train_router;      /* with adapters: router weights stay trainable */
    bool train_experts;     /* with adapters: expert (dense: FFN) weights stay trainable */
    bool lora_expert_shared;  /* w1/w2/w3 adapters shared by every expert of a layer */
} ConfigFinetune;

typedef struct Config {
    char *path;           /* owned; file the config was loaded from (NULL for defaults) */
    char *name;           /* owned; basename of path without extension ("default") */
    ConfigModel model;
    ConfigMoe moe;
    ConfigTrain train;
    ConfigOptim optim;
    ConfigData data;
    ConfigRun run;
    ConfigParallel parallel;
    ConfigCompute compute;
    ConfigCheckpoint checkpoint;
    ConfigInit init;
    ConfigFinetune finetune;
    /* Where each value came from, for error messages: owned "FILE:LINE:COL" or
     * "--set k=v" strings, NULL = default. Indexed by the internal key/section tables. */
    char *key_loc[CONFIG_N_KEYS];
    char *section_loc[CONFIG_N_SECTIONS];
} Config;

/* Fills *c with the defaults (docs/configuration.md); data.tokenizer stays NULL and the
 * data lists empty, so the result does not pass config_validate until data is set.
 * Overwrites *c without freeing it: call on a zeroed or freed struct. name = "default",
 * run.dir = "runs/default". */
void config_defaults(Config *c);

/* Frees everything *c owns and zeroes it. Safe on a zeroed or half-built struct. */
void config_free(Config *c);

/* Defaults, then the keys of the YAML file at path (syntax, known keys, types, per-key
 * ranges, no duplicates). run.dir defaults to "runs/<basename of path without extension>".
 * Does not run config_validate. Returns 0, or -1 with err set (file:line:col, key path,
 * hint); on error *c is freed (zeroed). */
int config_load(Config *c, const char *path, MoeErr *err);

/* Same as config_load from YAML text in memory (e.g. the copy stored in a checkpoint);
 * label stands for the file name in messages and gives the config name. */
int config_load_text(Config *c, const char *text, size_t len, const char *label, MoeErr *err);

/* One command-line override "section.key=value", the value taken whole: for a string key
 * it is the text after '=' as is (" #" included; a value that is entirely one YAML quoted
 * scalar is unquoted), otherwise a YAML scalar, or a flow list "[a, b]" for list keys,
 * and text after it that YAML would drop as a comment is an error, not a cut. Checked
 * with the same per-key rules as the file; errors are located as "--set
 * section.key=value". On error *c is unchanged. */
int config_set(Config *c, const char *assignment, MoeErr *err);

/* Required keys (data.tokenizer; data.text or data.shards non-empty), per-key ranges again
 * (catches direct edits of the struct) and the cross-field checks: model.n_kv_heads divides
 * model.n_heads, moe.top_k <= moe.n_experts when n_experts > 0, moe.n_shared_experts = 0
 * when n_experts = 0 (and their total width fits an int), optim.min_lr <= optim.lr,
 * the shape products fit an int (n_heads x head_dim, global_micro_batch x seq_len times
 * the routed slots per token, global_micro_batch x n_kv_heads: checked in 64 bits),
 * train.tokens > 0 not with train.steps given,
 * and with init.upcycle_from set: moe.n_experts > 0 and a multiple of init.granularity
 * (the checks against the dense checkpoint itself are upcycle_into's), and
 * moe.max_experts <= moe.n_experts when n_experts > 0, moe.bias_update_rate only with
 * moe.router topk; finetune: not with init.upcycle_from, lora_rank > 0 needs init_from and
 * a non-empty lora_targets list of distinct names (layers/lora.h); w1/w2/w3/gate need
 * moe.n_experts > 0, w1/w2/w3 need lora_dropout 0, lora_expert_shared needs one of
 * w1/w2/w3 (with lora_rank > 0). Errors name both
 * keys and the location of one of them. Returns 0 or -1 with err set. */
int config_validate(const Config *c, MoeErr *err);

/* Deep copy (dst is overwritten without being freed). */
void config_copy(Config *dst, const Config *src);

/* The complete effective config as YAML text that config_load accepts back and that
 * reproduces every field exactly (floats printed with round-trip precision). Owned:
 * release with moe_free. */
char *config_to_yaml(const Config *c);

/* Lists the keys that change the model shape (model.*, moe.n_experts, moe.top_k,
 * moe.hidden, moe.n_shared_experts, moe.shared_hidden, model.sliding_window, and the
 * finetune keys that change the trainable tensor set: lora_rank, lora_targets,
 * lora_expert_shared, train_router, train_experts) whose values differ between a and b, as
 * "model.dim: 256 -> 512, ..." into out (NUL-terminated, truncated to cap; out may be NULL
 * when cap is 0). Returns the number of differing keys. config_diff_other does the same for
 * every other key. */
int config_diff_shape(const Config *a, const Config *b, char *out, size_t cap);
int config_diff_other(const Config *a, const Config *b, char *out, size_t cap);
/* config_diff_shape without the finetune section's keys (which shape the adapters, not the
 * model): what a fine-tuning config must share with its base checkpoint's. */
int config_diff_model(const Config *a, const Config *b, char *out, size_t cap);

/* The reference of every key as Markdown (docs/configuration.md): the rules every key
 * follows, then per section a table of key, type, default (config_defaults), allowed values
 * and the key's doc line, all from the key table. Returns 0, or -1 when writing to out
 * failed (its error flag is set). */
int config_write_reference(FILE *out);

/* The narrow types the rest of the program takes instead of a whole Config. */
/* A ModelShape from the config's model/moe sections. */
void config_model_shape(const Config *c, ModelShape *s);
/* The expert groups of group-limited routing: moe.n_groups, or parallel.expert_parallel when
 * moe.n_groups is 0 (one group per expert-parallel shard; config_validate requires it > 0
 * then, so the routing never depends on an automatic rank layout). Meaningful only with
 * moe.topk_groups > 0. */
int config_moe_groups(const Config *c);
/* A LoraSpec from the config's finetune section (rank 0 = no adapters). */
void config_lora_spec(const Config *c, LoraSpec *s);
/* The learning-rate schedule of the optim section over train.steps (derived from
 * train.tokens when that is set). */
void config_lr_schedule(const Config *c, LrSchedule *s);

#endif
