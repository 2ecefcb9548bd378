/* config.c: the run configuration's lifecycle (config_defaults, config_free,
 * config_copy) and the narrow types made from it (config_model_shape, config_lora_spec).
 * See config.h for the contract; reading is config_load.c, checking config_validate.c,
 * writing back config_yaml.c, the key table config_keys.c.
 */
#include "configs/config.h"

#include <string.h>

#include "layers/lora.h"

/* ---------------------------------------------------------------- lifecycle */

void config_defaults(Config *c) {
    memset(c, 0, sizeof *c);
    c->name = moe_strdup("default");
    c->model = (ConfigModel){.vocab_size = 4096, .dim = 256, .n_layers = 4, .n_heads = 8,
                             .n_kv_heads = 4, .head_dim = 32, .norm_eps = 1e-5,
                             .rope_theta = 10000.0, .init_std = 0.02};
    c->moe = (ConfigMoe){.n_experts = 8, .top_k = 2, .hidden = 512, .capacity_factor = 0.0,
                         .router_noise = true, .aux_loss_coef = 0.01, .z_loss_coef = 0.001,
                         .router = CONFIG_ROUTER_TOPK, .top_p = 0.4, .max_experts = 0,
                         .entropy_coef = 1e-4, .score = CONFIG_SCORE_SOFTMAX,
                         .route_scale = 1.0, .aux_scope = CONFIG_AUX_BATCH};
    c->train = (ConfigTrain){.seq_len = 256, .micro_batch = 8, .grad_accum = 1, .steps = 1000,
                             .seed = 1337, .log_every = 10, .eval_every = 100,
                             .eval_batches = 8, .max_bad_steps = 5, .spike_factor = 5.0};
    c->train.warn_dropped = 0.05;
    c->optim = (ConfigOptim){.lr = 1e-3, .min_lr = 1e-4, .warmup_steps = 100, .beta1 = 0.9,
                             .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1, .grad_clip = 1.0,
                             .schedule = CONFIG_SCHEDULE_COSINE, .decay_fraction = 0.2};
    c->data.val_fraction = 0.1;
    c->run.dir = moe_strdup("runs/default");
    c->parallel.expert_parallel = 0;
    c->parallel.shard_optimizer = false;
    c->parallel.hierarchical = true;
    c->parallel.bucket_mb = -1;
    c->parallel.a2a_chunks = 1;
    c->compute.gemm = 0;        /* GEMM_AUTO */
    c->compute.precision = 0;   /* GEMM_FP32 */
    c->checkpoint = (ConfigCheckpoint){.every = 0, .keep = 3};
    c->init = (ConfigInit){.upcycle_from = NULL, .router_init_std = 0.02, .expert_noise = 0.0,
                           .granularity = 1};
    c->finetune = (ConfigFinetune){.init_from = NULL, .lora_rank = 0, .lora_alpha = 16.0,
                                   .lora_dropout = 0.0};
    c->finetune.lora_targets = moe_calloc(LORA_N_ATTN * sizeof(char *));
    for (int t = 0; t < LORA_N_ATTN; t++)
        c->finetune.lora_targets[t] = moe_strdup(lora_target_names[t]);
    c->finetune.n_lora_targets = LORA_N_ATTN;
}

void config_free(Config *c) {
    if (!c) return;
    moe_free(c->path);
    moe_free(c->name);
    moe_free(c->data.tokenizer);
    for (size_t i = 0; i < c->data.n_text; i++) moe_free(c->data.text[i]);
    moe_free(c->data.text);
    for (size_t i = 0; i < c->data.n_shards; i++) moe_free(c->data.shards[i]);
    moe_free(c->data.shards);
    moe_free(c->data.text_weight);
    moe_free(c->data.shards_weight);
    for (size_t i = 0; i < c->data.n_val_text; i++) moe_free(c->data.val_text[i]);
    moe_free(c->data.val_text);
    for (size_t i = 0; i < c->data.n_val_shards; i++) moe_free(c->data.val_shards[i]);
    moe_free(c->data.val_shards);
    for (size_t i = 0; i < c->data.n_sft; i++) moe_free(c->data.sft[i]);
    moe_free(c->data.sft);
    moe_free(c->data.prompt_key);
    moe_free(c->data.completion_key);
    moe_free(c->data.sft_separator);
    moe_free(c->run.dir);
    moe_free(c->init.upcycle_from);
    moe_free(c->finetune.init_from);
    for (size_t i = 0; i < c->finetune.n_lora_targets; i++) moe_free(c->finetune.lora_targets[i]);
    moe_free(c->finetune.lora_targets);
    for (int i = 0; i < CONFIG_N_KEYS; i++) moe_free(c->key_loc[i]);
    for (int i = 0; i < CONFIG_N_SECTIONS; i++) moe_free(c->section_loc[i]);
    memset(c, 0, sizeof *c);
}

static double *copy_weights(const double *w, size_t n) {
    if (!w) return NULL;
    double *r = moe_calloc((n ? n : 1) * sizeof(double));
    if (n) memcpy(r, w, n * sizeof(double));
    return r;
}

static char **copy_list(char *const *l, size_t n) {
    if (!l) return NULL;
    char **r = moe_calloc((n ? n : 1) * sizeof(char *));
    for (size_t i = 0; i < n; i++) r[i] = moe_strdup(l[i]);
    return r;
}

void config_copy(Config *dst, const Config *src) {
    *dst = *src;
    dst->path = src->path ? moe_strdup(src->path) : NULL;
    dst->name = src->name ? moe_strdup(src->name) : NULL;
    dst->data.tokenizer = src->data.tokenizer ? moe_strdup(src->data.tokenizer) : NULL;
    dst->data.text = copy_list(src->data.text, src->data.n_text);
    dst->data.shards = copy_list(src->data.shards, src->data.n_shards);
    dst->data.text_weight = copy_weights(src->data.text_weight, src->data.n_text);
    dst->data.shards_weight = copy_weights(src->data.shards_weight, src->data.n_shards);
    dst->data.val_text = copy_list(src->data.val_text, src->data.n_val_text);
    dst->data.val_shards = copy_list(src->data.val_shards, src->data.n_val_shards);
    dst->data.sft = copy_list(src->data.sft, src->data.n_sft);
    dst->data.prompt_key = src->data.prompt_key ? moe_strdup(src->data.prompt_key) : NULL;
    dst->data.completion_key = src->data.completion_key ? moe_strdup(src->data.completion_key)
                                                        : NULL;
    dst->data.sft_separator = src->data.sft_separator ? moe_strdup(src->data.sft_separator)
                                                      : NULL;
    dst->run.dir = src->run.dir ? moe_strdup(src->run.dir) : NULL;
    dst->init.upcycle_from = src->init.upcycle_from ? moe_strdup(src->init.upcycle_from) : NULL;
    dst->finetune.init_from = src->finetune.init_from ? moe_strdup(src->finetune.init_from)
                                                      : NULL;
    dst->finetune.lora_targets = copy_list(src->finetune.lora_targets,
                                           src->finetune.n_lora_targets);
    for (int i = 0; i < CONFIG_N_KEYS; i++)
        dst->key_loc[i] = src->key_loc[i] ? moe_strdup(src->key_loc[i]) : NULL;
    for (int i = 0; i < CONFIG_N_SECTIONS; i++)
        dst->section_loc[i] = src->section_loc[i] ? moe_strdup(src->section_loc[i]) : NULL;
}


/* ---------------------------------------------------------------- narrow types */

int config_moe_groups(const Config *c) {
    return c->moe.n_groups > 0 ? c->moe.n_groups : c->parallel.expert_parallel;
}

void config_model_shape(const Config *c, ModelShape *s) {
    memset(s, 0, sizeof *s);
    s->V = c->model.vocab_size;
    s->C = c->model.dim;
    s->L = c->model.n_layers;
    s->H = c->model.n_heads;
    s->Hkv = c->model.n_kv_heads;
    s->D = c->model.head_dim;
    s->F = c->moe.hidden;
    s->E = c->moe.n_experts;
    s->K = c->moe.n_experts > 0 ? c->moe.top_k : 0;
    s->norm_eps = (float)c->model.norm_eps;
    s->rope_theta = (float)c->model.rope_theta;
    s->init_std = (float)c->model.init_std;
    s->capacity_factor = (float)c->moe.capacity_factor;
    s->router_noise = c->moe.router_noise;
    s->aux_coef = (float)c->moe.aux_loss_coef;
    s->z_coef = (float)c->moe.z_loss_coef;
    s->W = c->model.sliding_window;
    s->Fs = c->moe.n_experts > 0 ? c->moe.n_shared_experts *
            (c->moe.shared_hidden > 0 ? c->moe.shared_hidden : c->moe.hidden) : 0;
    s->router = c->moe.router == CONFIG_ROUTER_TOPP ? MOE_ROUTER_TOPP
              : c->moe.router == CONFIG_ROUTER_EXPERT_CHOICE ? MOE_ROUTER_EXPERT_CHOICE
              : MOE_ROUTER_TOPK;
    s->top_p = (float)c->moe.top_p;
    s->max_experts = c->moe.max_experts;
    s->entropy_coef = (float)c->moe.entropy_coef;
    s->score = c->moe.score == CONFIG_SCORE_SIGMOID ? MOE_SCORE_SIGMOID : MOE_SCORE_SOFTMAX;
    s->route_scale = (float)c->moe.route_scale;
    s->topk_groups = c->moe.n_experts > 0 ? c->moe.topk_groups : 0;
    s->n_groups = s->topk_groups > 0 ? config_moe_groups(c) : 0;
    s->aux_scope = c->moe.aux_scope == CONFIG_AUX_SEQUENCE ? MOE_AUX_SEQUENCE
                 : c->moe.aux_scope == CONFIG_AUX_GLOBAL ? MOE_AUX_GLOBAL : MOE_AUX_BATCH;
}

void config_lora_spec(const Config *c, LoraSpec *s) {
    memset(s, 0, sizeof *s);
    const ConfigFinetune *f = &c->finetune;
    s->rank = f->lora_rank;
    s->alpha = (float)f->lora_alpha;
    s->dropout = (float)f->lora_dropout;
    for (size_t i = 0; i < f->n_lora_targets; i++) {
        int t = lora_target_index(f->lora_targets[i]);
        if (t >= 0) s->targets |= 1u << t;
    }
    s->train_router = f->train_router;
    s->train_experts = f->train_experts;
    s->expert_shared = f->lora_expert_shared;
}

void config_lr_schedule(const Config *c, LrSchedule *s) {
    static const LrKind kinds[] = {LR_COSINE, LR_WSD, LR_LINEAR, LR_CONSTANT};
    ASSERT(c->optim.schedule >= 0 && c->optim.schedule <= CONFIG_SCHEDULE_CONSTANT,
           "optim.schedule %d (config_validate rejects it)", c->optim.schedule);
    *s = (LrSchedule){(float)c->optim.lr, (float)c->optim.min_lr, (long)c->optim.warmup_steps,
                      (long)c->train.steps, kinds[c->optim.schedule], c->optim.decay_fraction};
}
