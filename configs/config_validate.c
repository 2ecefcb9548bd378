/* config_validate.c: config_validate, the checks that run once after the file and every
 * --set override (config.h): each key's rule again, the required keys and the rules that
 * tie several keys together. Each message names the keys and the location of the one
 * most likely to be wrong (a --set override first), with a hint saying what is allowed.
 */
#include "configs/config.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "configs/config_keys.h"
#include "layers/lora.h"

/* Location for a message about keys a and b: a --set override of either (it is what most
 * likely broke the rule), else the first one that has a source, else the config file. */
static const char *loc_of(const Config *c, int a, int b) {
    if (a >= 0 && c->key_loc[a] && !strncmp(c->key_loc[a], "--set ", 6)) return c->key_loc[a];
    if (b >= 0 && c->key_loc[b] && !strncmp(c->key_loc[b], "--set ", 6)) return c->key_loc[b];
    if (a >= 0 && c->key_loc[a]) return c->key_loc[a];
    if (b >= 0 && c->key_loc[b]) return c->key_loc[b];
    return c->path ? c->path : "(defaults)";
}

/* The finetune section's cross-field rules (see config.h). */
static int validate_finetune(const Config *c, MoeErr *err) {
    const ConfigFinetune *f = &c->finetune;
    int kif = cfg_key_index(S_FINETUNE, "init_from"), kr = cfg_key_index(S_FINETUNE, "lora_rank"),
        kt = cfg_key_index(S_FINETUNE, "lora_targets"), kup = cfg_key_index(S_INIT, "upcycle_from");
    if (f->init_from && c->init.upcycle_from) {
        moe_errorf(err, "%s: finetune.init_from, init.upcycle_from: a run starts from a "
                   "checkpoint to fine-tune or from a dense checkpoint to upcycle, not both",
                   loc_of(c, kif, kup));
        return moe_hintf(err, "remove one of the two keys (to fine-tune an upcycled model, "
                              "upcycle first with `moetrain upcycle` and fine-tune its output)");
    }
    if (f->lora_rank > 0 && !f->init_from) {
        moe_errorf(err, "%s: finetune.lora_rank, finetune.init_from: LoRA adapters "
                   "(lora_rank = %d) need a base checkpoint", loc_of(c, kr, kif), f->lora_rank);
        return moe_hintf(err, "set finetune.init_from to the checkpoint to fine-tune (e.g. "
                              "runs/mixtral_tiny/checkpoints/step_00001000.h5), or "
                              "finetune.lora_rank to 0");
    }
    for (size_t i = 0; i < f->n_lora_targets; i++) {
        const char *name = f->lora_targets[i];
        if (lora_target_index(name) < 0) {
            const char *sug = cfg_closest(name, lora_target_names, LORA_N_TARGETS);
            moe_errorf(err, "%s: finetune.lora_targets[%zu]: unknown projection '%s'",
                       loc_of(c, kt, -1), i, name);
            return moe_hintf(err, "%s%s%sallowed: q_proj, k_proj, v_proj, o_proj, and with "
                             "moe.n_experts > 0 w1, w2, w3, gate",
                             sug ? "did you mean '" : "", sug ? sug : "", sug ? "'? " : "");
        }
        for (size_t j = 0; j < i; j++)
            if (!strcmp(f->lora_targets[j], name)) {
                moe_errorf(err, "%s: finetune.lora_targets[%zu]: '%s' is listed twice",
                           loc_of(c, kt, -1), i, name);
                return moe_hintf(err, "list each projection once");
            }
    }
    unsigned mask = 0;
    for (size_t i = 0; i < f->n_lora_targets; i++)
        mask |= 1u << lora_target_index(f->lora_targets[i]);
    const int kd = cfg_key_index(S_FINETUNE, "lora_dropout"),
              ks = cfg_key_index(S_FINETUNE, "lora_expert_shared"),
              ke = cfg_key_index(S_MOE, "n_experts");
    if (f->lora_rank > 0 && (mask & (LORA_EXPERT_MASK | (1u << LORA_GATE))) &&
        c->moe.n_experts == 0) {
        moe_errorf(err, "%s: finetune.lora_targets, moe.n_experts: w1, w2, w3 and gate adapt "
                   "the experts and the router, but this model is dense (n_experts = 0)",
                   loc_of(c, kt, ke));
        return moe_hintf(err, "target a dense model's attention only (q_proj, k_proj, v_proj, "
                              "o_proj), or fine-tune its FFN with finetune.train_experts");
    }
    if (f->lora_rank > 0 && (mask & LORA_EXPERT_MASK) && f->lora_dropout > 0) {
        moe_errorf(err, "%s: finetune.lora_dropout, finetune.lora_targets: expert adapters "
                   "(w1, w2, w3) take no dropout, but lora_dropout = %g",
                   loc_of(c, kd, kt), f->lora_dropout);
        return moe_hintf(err, "set finetune.lora_dropout to 0, or leave w1, w2, w3 out of "
                              "lora_targets (an expert's rows have no token identity under "
                              "expert parallelism, so a mask could not follow the token)");
    }
    if (f->lora_rank > 0 && f->lora_expert_shared && !(mask & LORA_EXPERT_MASK)) {
        moe_errorf(err, "%s: finetune.lora_expert_shared, finetune.lora_targets: shared expert "
                   "adapters are asked for, but no expert weight is targeted",
                   loc_of(c, ks, kt));
        return moe_hintf(err, "add w1, w2 or w3 to finetune.lora_targets, or set "
                              "finetune.lora_expert_shared to false");
    }
    if (f->lora_rank > 0 && f->n_lora_targets == 0) {
        moe_errorf(err, "%s: finetune.lora_targets, finetune.lora_rank: the list is empty but "
                   "lora_rank = %d asks for adapters", loc_of(c, kt, kr), f->lora_rank);
        return moe_hintf(err, "list at least one of q_proj, k_proj, v_proj, o_proj, w1, w2, "
                              "w3, gate (or set finetune.lora_rank to 0)");
    }
    return 0;
}

/* data.sft and its field keys (data/sft.h). */
static int validate_sft(const Config *c, MoeErr *err) {
    const ConfigData *d = &c->data;
    int ks = cfg_key_index(S_DATA, "sft"), kt = cfg_key_index(S_DATA, "text"),
        ksh = cfg_key_index(S_DATA, "shards"), kp = cfg_key_index(S_DATA, "prompt_key"),
        kc = cfg_key_index(S_DATA, "completion_key"),
        kse = cfg_key_index(S_DATA, "sft_separator");
    if (d->n_sft > 0 && (d->n_text > 0 || d->n_shards > 0)) {
        moe_errorf(err, "%s: data.sft, data.%s: fine-tuning records are trained on alone, not "
                   "mixed with pretraining %s", loc_of(c, ks, d->n_text ? kt : ksh),
                   d->n_text ? "text" : "shards", d->n_text ? "text" : "shards");
        return moe_hintf(err, "set data.text: [] and data.shards: [] for a fine-tuning run on "
                              "data.sft (or leave data.sft empty to train on the text)");
    }
    if (d->n_sft > 0 && (d->n_val_text > 0 || d->n_val_shards > 0)) {
        const int kv = cfg_key_index(S_DATA, d->n_val_text ? "val_text" : "val_shards");
        moe_errorf(err, "%s: data.sft, data.%s: a fine-tuning run validates on its own last "
                   "records (scored on their completion tokens only), not on separate "
                   "pretraining %s", loc_of(c, ks, kv), d->n_val_text ? "val_text" : "val_shards",
                   d->n_val_text ? "text" : "shards");
        return moe_hintf(err, "set data.val_text: [] and data.val_shards: [] for a run on "
                              "data.sft; data.val_fraction sets how many of its records are "
                              "held out (to validate on other records, append them to the "
                              "last data.sft file)");
    }
    const int only[3] = {kp, kc, kse};
    const char *const val[3] = {d->prompt_key, d->completion_key, d->sft_separator};
    for (int i = 0; i < 3; i++)
        if (val[i] && d->n_sft == 0) {
            moe_errorf(err, "%s: data.%s applies to data.sft records, and data.sft is empty",
                       loc_of(c, only[i], ks), cfg_keys[only[i]].name);
            return moe_hintf(err, "list the JSONL files under data.sft, or remove data.%s",
                             cfg_keys[only[i]].name);
        }
    const char *pk = d->prompt_key ? d->prompt_key : "prompt";
    const char *ck = d->completion_key ? d->completion_key : "completion";
    if (!strcmp(pk, ck)) {
        moe_errorf(err, "%s: data.prompt_key, data.completion_key: both name the field \"%s\"",
                   loc_of(c, kp, kc), pk);
        return moe_hintf(err, "the prompt and the completion are two fields of a record");
    }
    if (!strcmp(pk, "messages") || !strcmp(ck, "messages")) {
        moe_errorf(err, "%s: data.%s: \"messages\" is the field of a conversation record",
                   loc_of(c, !strcmp(pk, "messages") ? kp : kc, -1),
                   !strcmp(pk, "messages") ? "prompt_key" : "completion_key");
        return moe_hintf(err, "records with \"messages\" are read as conversations (chat "
                              "template, docs/finetuning.md) without these keys");
    }
    return 0;
}

/* Tensor dimensions and the counts kernels loop over are ints (autograd/tensor.h): the
 * products they are made of are checked here in 64 bits, so that no int overflow is
 * reachable from a config that validates (layers/model.c asserts the same). Each factor is
 * already in [1, INT_MAX]. */
static int validate_products(const Config *c, MoeErr *err) {
    const ConfigModel *m = &c->model;
    const ConfigMoe *e = &c->moe;
    const int64_t B = c->train.micro_batch, T = c->train.seq_len;
    int kh = cfg_key_index(S_MODEL, "n_heads"), kd = cfg_key_index(S_MODEL, "head_dim"),
        kkv = cfg_key_index(S_MODEL, "n_kv_heads"),
        kb = cfg_key_index(S_TRAIN, "global_micro_batch"), kt = cfg_key_index(S_TRAIN, "seq_len");
    const int64_t hd = (int64_t)m->n_heads * m->head_dim;
    if (hd > INT_MAX) {
        moe_errorf(err, "%s: model.n_heads, model.head_dim: n_heads x head_dim = %d x %d = "
                   "%lld exceeds %d (the width of the queries and of the attention output)",
                   loc_of(c, kh, kd), m->n_heads, m->head_dim, (long long)hd, INT_MAX);
        return moe_hintf(err, "lower model.n_heads or model.head_dim");
    }
    /* routed slots per token: top-k's K, top-p's cap, every expert under expert choice */
    const int64_t w = e->n_experts == 0 ? 1
                    : e->router == CONFIG_ROUTER_TOPK ? e->top_k
                    : e->router == CONFIG_ROUTER_TOPP && e->max_experts > 0 ? e->max_experts
                    : e->n_experts;
    if (B * T > INT_MAX) {
        moe_errorf(err, "%s: train.global_micro_batch, train.seq_len: %lld x %lld = %lld "
                   "tokens per micro-batch exceed %d", loc_of(c, kb, kt), (long long)B,
                   (long long)T, (long long)(B * T), INT_MAX);
        return moe_hintf(err, "lower train.global_micro_batch or train.seq_len "
                              "(train.grad_accum makes a larger batch out of several "
                              "micro-batches)");
    }
    if (B * T * w > INT_MAX) {
        moe_errorf(err, "%s: train.global_micro_batch, train.seq_len: %lld tokens per "
                   "micro-batch x %lld routed slots per token (moe.top_k, moe.max_experts or "
                   "moe.n_experts by moe.router) = %lld exceed %d", loc_of(c, kb, kt),
                   (long long)(B * T), (long long)w, (long long)(B * T * w), INT_MAX);
        return moe_hintf(err, "lower train.global_micro_batch or train.seq_len "
                              "(train.grad_accum makes a larger batch out of several "
                              "micro-batches)");
    }
    if (B * m->n_kv_heads > INT_MAX) {   /* attention's (sequence, kv head) tasks */
        moe_errorf(err, "%s: train.global_micro_batch, model.n_kv_heads: %lld x %d exceeds %d",
                   loc_of(c, kb, kkv), (long long)B, m->n_kv_heads, INT_MAX);
        return moe_hintf(err, "lower train.global_micro_batch or model.n_kv_heads");
    }
    return 0;
}

int config_validate(const Config *c, MoeErr *err) {
    for (int i = 0; i < CONFIG_N_KEYS; i++) {
        if (cfg_keys[i].flags & F_ALIAS) continue;   /* the field of the row above */
        char path[64];
        snprintf(path, sizeof path, "%s.%s", cfg_sections[cfg_keys[i].sec], cfg_keys[i].name);
        Value v = cfg_peek(c, &cfg_keys[i]);
        if (cfg_keys[i].type == T_STR && !v.s) continue;  /* optional; tokenizer: below */
        if (cfg_check_range(&cfg_keys[i], &v, loc_of(c, i, -1), path, err)) return -1;
    }
    int ktext = cfg_key_index(S_DATA, "text"),
        kshards = cfg_key_index(S_DATA, "shards");
    const char *data_loc = c->section_loc[S_DATA];
    char fallback[1100];
    snprintf(fallback, sizeof fallback, "%s:1:1", c->path ? c->path : "(defaults)");
    if (!c->data.tokenizer) {
        moe_errorf(err, "%s: data.tokenizer: required key is missing", data_loc ? data_loc
                                                                                : fallback);
        return moe_hintf(err, "set data.tokenizer to a BPE file path, e.g. "
                              "data/tokenizer_4096.bpe (trained on data.text if missing)");
    }
    if (c->data.n_text == 0 && c->data.n_shards == 0 && c->data.n_sft == 0) {
        const char *l = c->key_loc[ktext] ? c->key_loc[ktext]
                      : c->key_loc[kshards] ? c->key_loc[kshards]
                      : data_loc ? data_loc : fallback;
        moe_errorf(err, "%s: data.text, data.shards, data.sft: all are empty", l);
        return moe_hintf(err, "list at least one text file (data.text: [corpus.txt]), token "
                              "shard (data.shards: [...]) or fine-tuning JSONL file "
                              "(data.sft: [records.jsonl])");
    }
    if (validate_sft(c, err)) return -1;
    int kh = cfg_key_index(S_MODEL, "n_heads"), kkv = cfg_key_index(S_MODEL, "n_kv_heads");
    if (c->model.n_heads % c->model.n_kv_heads != 0) {
        moe_errorf(err, "%s: model.n_kv_heads, model.n_heads: n_kv_heads = %d does not divide "
                   "n_heads = %d", loc_of(c, kkv, kh), c->model.n_kv_heads, c->model.n_heads);
        return moe_hintf(err, "each kv head serves n_heads/n_kv_heads query heads; pick "
                              "n_kv_heads among the divisors of %d", c->model.n_heads);
    }
    if (validate_products(c, err)) return -1;
    int ke = cfg_key_index(S_MOE, "n_experts"), kk = cfg_key_index(S_MOE, "top_k");
    if (c->moe.n_experts > 0 && c->moe.top_k > c->moe.n_experts) {
        moe_errorf(err, "%s: moe.top_k, moe.n_experts: top_k = %d exceeds n_experts = %d",
                   loc_of(c, kk, ke), c->moe.top_k, c->moe.n_experts);
        return moe_hintf(err, "expected moe.top_k to be an integer in [1, %d]",
                         c->moe.n_experts);
    }
    int ksh = cfg_key_index(S_MOE, "n_shared_experts");
    if (c->moe.n_shared_experts > 0 && c->moe.n_experts == 0) {
        moe_errorf(err, "%s: moe.n_shared_experts, moe.n_experts: %d shared expert(s) need "
                   "routed experts, n_experts is 0", loc_of(c, ksh, ke),
                   c->moe.n_shared_experts);
        return moe_hintf(err, "a dense model (n_experts: 0) has one FFN already: set "
                              "moe.n_shared_experts: 0, or moe.n_experts > 0");
    }
    const long long shw = c->moe.shared_hidden > 0 ? c->moe.shared_hidden : c->moe.hidden;
    if ((long long)c->moe.n_shared_experts * shw > INT_MAX) {
        moe_errorf(err, "%s: moe.n_shared_experts, moe.shared_hidden: %d shared experts of "
                   "width %lld exceed %d hidden units in total", loc_of(c, ksh, -1),
                   c->moe.n_shared_experts, shw, INT_MAX);
        return moe_hintf(err, "use fewer or narrower shared experts");
    }
    int kmx = cfg_key_index(S_MOE, "max_experts");
    if (c->moe.n_experts > 0 && c->moe.max_experts > c->moe.n_experts) {
        moe_errorf(err, "%s: moe.max_experts, moe.n_experts: max_experts = %d exceeds "
                   "n_experts = %d", loc_of(c, kmx, ke), c->moe.max_experts, c->moe.n_experts);
        return moe_hintf(err, "expected moe.max_experts in [0, %d] (0 = no cap below "
                              "n_experts)", c->moe.n_experts);
    }
    int kbr = cfg_key_index(S_MOE, "bias_update_rate"), kro = cfg_key_index(S_MOE, "router");
    if (c->moe.n_experts > 0 && c->moe.bias_update_rate > 0.0 &&
        c->moe.router != CONFIG_ROUTER_TOPK) {
        moe_errorf(err, "%s: moe.bias_update_rate, moe.router: the selection bias balances "
                   "top-k routing, the router is '%s'", loc_of(c, kbr, kro),
                   c->moe.router == CONFIG_ROUTER_TOPP ? "topp" : "expert_choice");
        return moe_hintf(err, "use moe.router: topk with the bias, or set "
                              "moe.bias_update_rate: 0 (expert choice is balanced by "
                              "construction; top-p has no fixed K to bias)");
    }
    int kup = cfg_key_index(S_INIT, "upcycle_from"), kg = cfg_key_index(S_INIT, "granularity");
    if (c->init.upcycle_from && c->moe.n_experts == 0) {
        moe_errorf(err, "%s: init.upcycle_from, moe.n_experts: upcycling needs an MoE model, "
                   "n_experts is 0", loc_of(c, kup, ke));
        return moe_hintf(err, "set moe.n_experts (a multiple of init.granularity) or remove "
                              "init.upcycle_from");
    }
    if (c->init.upcycle_from && c->moe.n_experts % c->init.granularity != 0) {
        moe_errorf(err, "%s: moe.n_experts, init.granularity: n_experts = %d is not a multiple "
                   "of granularity = %d", loc_of(c, kg, ke), c->moe.n_experts,
                   c->init.granularity);
        return moe_hintf(err, "each of the n_experts/granularity copies of the dense FFN holds "
                              "all %d slices", c->init.granularity);
    }
    if (validate_finetune(c, err)) return -1;
    int ktok = cfg_key_index(S_TRAIN, "tokens"), kst = cfg_key_index(S_TRAIN, "steps");
    if (c->train.tokens > 0 && c->key_loc[kst]) {
        moe_errorf(err, "%s: train.tokens, train.steps: both are given; the budget is either "
                   "steps or tokens", loc_of(c, ktok, kst));
        return moe_hintf(err, "remove one of them (with train.tokens the steps are derived: "
                         "ceil(tokens / (global_micro_batch x seq_len x grad_accum)))");
    }
    int klr = cfg_key_index(S_OPTIM, "lr"), kmin = cfg_key_index(S_OPTIM, "min_lr");
    if (c->optim.min_lr > c->optim.lr) {
        char a[32], b[32];
        cfg_fmt_double(c->optim.min_lr, a, sizeof a);
        cfg_fmt_double(c->optim.lr, b, sizeof b);
        moe_errorf(err, "%s: optim.min_lr, optim.lr: min_lr = %s exceeds lr = %s",
                   loc_of(c, kmin, klr), a, b);
        return moe_hintf(err, "expected optim.min_lr in [0, %s]", b);
    }
    return 0;
}
