/* export_ckpt.c: reading a checkpoint for export or inference; the formats' limits. See
 * export_ckpt.h. */
#include "checkpoints/export_ckpt.h"

#include <math.h>
#include <string.h>

#include "checkpoints/ckpt.h"
#include "checkpoints/finetune.h"
#include "layers/router_bias.h"

int export_read_ckpt(const char *path, Config *c, Model *m, Tokenizer *tok, bool merge,
                     MoeErr *err) {
    CkptMeta meta;
    if (ckpt_read_meta(path, &meta, err) || ckpt_read_config(path, c, err)) return -1;
    ModelShape s;
    config_model_shape(c, &s);
    if (meta.adapter) {
        Model lm;
        int bad = finetune_load_model(path, &meta, c, &lm, err);
        if (!bad && merge) finetune_merge(&lm, m);
        if (!bad && !merge) *m = lm;
        else model_free(&lm);
        if (bad) return -1;
    } else {
        model_init(m, &s, 0, s.E, 0);
        if (ckpt_load(path, m, NULL, false, err)) return -1;
    }
    uint8_t *b = NULL;
    size_t n = 0;
    if (ckpt_read_tokenizer(path, &b, &n, err)) return -1;
    int rc = tok_load_buffer(tok, b, n, path, err);
    moe_free(b);
    if (!rc && tok_vocab_size(tok) != s.V) {
        moe_errorf(err, "%s: the stored tokenizer has %d tokens but model.vocab_size is %d", path,
                   tok_vocab_size(tok), s.V);
        moe_hintf(err, "the checkpoint is inconsistent");
        rc = -1;
    }
    return rc;
}

/* Shared experts: neither HF Mixtral / Mistral / Llama nor llama.cpp's llama architecture
 * has them. Sliding window: llama.cpp's llama architecture reads no sliding-window key and
 * would attend to the whole context (HF's config.json carries it). */
static int check_shape(const char *ckpt_path, const Config *c, bool gguf, MoeErr *err) {
    if (c->moe.n_experts > 0 && c->moe.n_shared_experts > 0) {
        moe_errorf(err, "%s: moe.n_shared_experts = %d: %s has no shared experts, the export "
                   "would drop them", ckpt_path, c->moe.n_shared_experts,
                   gguf ? "llama.cpp's llama architecture (GGUF)"
                        : "Hugging Face's MixtralForCausalLM");
        return moe_hintf(err, "moetrain sample/eval/logits run the checkpoint itself; only a "
                              "model trained with moe.n_shared_experts: 0 can be exported");
    }
    if (gguf && c->model.sliding_window > 0) {
        moe_errorf(err, "%s: model.sliding_window = %d: llama.cpp's llama architecture has no "
                   "sliding-window key (GGUF), it would attend to the whole context",
                   ckpt_path, c->model.sliding_window);
        return moe_hintf(err, "export --format hf (config.json carries sliding_window), or "
                              "run the checkpoint with moetrain sample/eval/logits");
    }
    return 0;
}

/* Aux-loss-free balancing: Mixtral's HF layout and llama.cpp's llama graph route by the plain
 * top-k of the router logits and have no place for a selection bias (DeepSeek-V3's
 * e_score_correction_bias is not part of them), so a model with a non-zero bias would route
 * differently there than it was trained to. */
static int check_router_bias(const char *path, const Config *c, const Model *m,
                             const char *format, MoeErr *err) {
    if (!m->use_router_bias || !m->router_bias) return 0;
    double mx = 0.0;
    for (int l = 0; l < m->s.L; l++)
        mx = fmax(mx, router_bias_max_abs(m->router_bias + (size_t)l * m->s.E, m->s.E));
    if (mx == 0.0) return 0;
    moe_errorf(err, "%s: the model was trained with moe.bias_update_rate = %g and routes with a "
                    "non-zero expert selection bias (/state/router_bias, max |b| %.3g), which "
                    "the %s format cannot express", path, c->moe.bias_update_rate, mx, format);
    return moe_hintf(err, "an engine reading the export would pick other experts than the "
                          "model was trained with; run this checkpoint with `moetrain sample|"
                          "eval|logits` instead, or train with moe.bias_update_rate: 0 to export");
}

/* The formats say "top num_experts_per_tok experts, softmax over them": an inference engine
 * would route a top-p or expert-choice model differently, i.e. run a different model. */
static int check_router(const Config *c, const char *path, const char *format, MoeErr *err) {
    if (c->moe.n_experts == 0 || c->moe.router == CONFIG_ROUTER_TOPK) return 0;
    moe_errorf(err, "%s: moe.router is '%s': the %s format routes top-%d "
               "(num_experts_per_tok), so inference engines would route this model differently",
               path, c->moe.router == CONFIG_ROUTER_TOPP ? "topp" : "expert_choice", format,
               c->moe.top_k);
    return moe_hintf(err, "only moe.router: topk models can be exported; evaluate this one "
                          "with `moetrain eval` or `moetrain logits` on the checkpoint");
}

/* The formats compute softmax over the top-k router logits with gates summing to 1: sigmoid
 * scores, a route scale and group-limited routing would route or weight differently there.
 * llama.cpp has GGUF keys for them (expert_gating_func, expert_weights_scale,
 * expert_group_count / expert_group_used_count), but only its DeepSeek-style architectures
 * read them; the llama architecture moetrain writes ignores them. */
static int check_topk_variant(const Config *c, const char *path, const char *format,
                              MoeErr *err) {
    if (c->moe.n_experts == 0) return 0;
    char what[96] = "";
    if (c->moe.score == CONFIG_SCORE_SIGMOID)
        snprintf(what, sizeof what, "moe.score is 'sigmoid'");
    else if (c->moe.route_scale != 1.0)
        snprintf(what, sizeof what, "moe.route_scale is %g", c->moe.route_scale);
    else if (c->moe.topk_groups > 0)
        snprintf(what, sizeof what, "moe.topk_groups is %d (group-limited routing)",
                 c->moe.topk_groups);
    if (!what[0]) return 0;
    moe_errorf(err, "%s: %s: the %s format routes by softmax over the top-%d router logits "
               "(gates summing to 1), so inference engines would run a different model",
               path, what, format, c->moe.top_k);
    return moe_hintf(err, "only models trained with moe.score: softmax, moe.route_scale: 1 "
                          "and moe.topk_groups: 0 can be exported; run this one with "
                          "`moetrain sample|eval|logits` on the checkpoint");
}

int export_check_expressible(const char *path, const Config *c, const Model *m,
                             ExportFormat format, MoeErr *err) {
    const bool gguf = format == EXPORT_GGUF;
    const char *name = gguf ? "GGUF (llama)" : "Hugging Face Mixtral";
    if (check_shape(path, c, gguf, err)) return -1;
    if (check_router_bias(path, c, m, name, err)) return -1;
    if (check_router(c, path, name, err)) return -1;
    return check_topk_variant(c, path, name, err);
}
