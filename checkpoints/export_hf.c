/* export_hf.c: Hugging Face model directories and PEFT adapter directories. See
 * export_hf.h. */
#include "checkpoints/export_hf.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoints/ckpt.h"
#include "checkpoints/export_ckpt.h"
#include "checkpoints/export_names.h"
#include "checkpoints/export_tokenizer.h"
#include "checkpoints/json_out.h"
#include "configs/config.h"
#include "core/fs.h"
#include "data/tokenizer.h"
#include "layers/lora.h"
#include "layers/model.h"

/* Names an export writes: *.json and *.safetensors (export_hf.h lists them). */
static bool export_file_name(const char *name) {
    size_t l = strlen(name);
    return (l > 5 && !strcmp(name + l - 5, ".json")) ||
           (l > 12 && !strcmp(name + l - 12, ".safetensors"));
}

int export_dir_replaceable(const char *outdir, MoeErr *err) {
    struct stat st;
    if (lstat(outdir, &st) != 0) return 0;   /* nothing to replace */
    if (!S_ISDIR(st.st_mode)) {
        moe_errorf(err, "%s: exists and is not a directory", outdir);
        return moe_hintf(err, "choose a new directory name for the export");
    }
    DIR *d = opendir(outdir);
    if (!d) {
        moe_errorf(err, "%s: cannot list the directory: %s", outdir, strerror(errno));
        return moe_hintf(err, "check its permissions, or choose another output directory");
    }
    struct dirent *de;
    char p[4200];
    int rc = 0;
    while (!rc && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", outdir, de->d_name);
        if (lstat(p, &st) != 0 || !S_ISREG(st.st_mode) || !export_file_name(de->d_name)) {
            moe_errorf(err, "%s: holds %s, which an export does not write; --force replaces "
                       "only a directory of .json and .safetensors files", outdir, p);
            rc = moe_hintf(err, "choose another output directory, or empty %s yourself",
                           outdir);
        }
    }
    closedir(d);
    return rc;
}

/* The checks before anything is read: outdir is new, or replaceable when overwriting. */
static int check_outdir(const char *outdir, bool overwrite, MoeErr *err) {
    struct stat st;
    if (lstat(outdir, &st) == 0 && !overwrite) {
        moe_errorf(err, "%s: already exists", outdir);
        return moe_hintf(err, "pass --force to replace it, or choose another output directory");
    }
    return overwrite ? export_dir_replaceable(outdir, err) : 0;
}

/* Move the finished temporary directory into place (fs_publish_dir), re-checking right
 * before that an old outdir may still be replaced. */
static int publish(const char *tmpdir, const char *outdir, bool overwrite, MoeErr *err) {
    if (overwrite && export_dir_replaceable(outdir, err)) return -1;
    return fs_publish_dir(tmpdir, outdir, overwrite, err);
}

static const char *torch_dtype(StDtype d) {
    return d == ST_F32 ? "float32" : d == ST_BF16 ? "bfloat16" : "float16";
}

static int write_config_json(const char *dir, const Config *c, const ModelShape *s, StDtype d,
                             int eot, MoeErr *err) {
    char path[4096], eps[64], theta[64], std[64], aux[64];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_out_num(eps, sizeof eps, c->model.norm_eps);
    json_out_num(theta, sizeof theta, c->model.rope_theta);
    json_out_num(std, sizeof std, c->model.init_std);
    json_out_num(aux, sizeof aux, c->moe.aux_loss_coef);
    FsAtomicFile af;
    if (fs_atomic_open(&af, path, err)) return -1;
    FILE *fp = af.fp;
    bool moe = s->E > 0;
    /* A dense model with a window is a Mistral (Llama's layout plus sliding_window, Jiang
     * et al. 2023); Llama's config has no window. */
    const bool mistral = !moe && s->W > 0;
    char window[32] = "null";
    if (s->W > 0) snprintf(window, sizeof window, "%d", s->W);
    fprintf(fp, "{\n");
    fprintf(fp, "  \"architectures\": [\"%s\"],\n", moe ? "MixtralForCausalLM"
                : mistral ? "MistralForCausalLM" : "LlamaForCausalLM");
    fprintf(fp, "  \"model_type\": \"%s\",\n", moe ? "mixtral" : mistral ? "mistral" : "llama");
    fprintf(fp, "  \"vocab_size\": %d,\n  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n",
            s->V, s->C, s->F);
    fprintf(fp, "  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n"
                "  \"num_key_value_heads\": %d,\n  \"head_dim\": %d,\n", s->L, s->H, s->Hkv, s->D);
    if (moe)
        fprintf(fp, "  \"num_local_experts\": %d,\n  \"num_experts_per_tok\": %d,\n"
                    "  \"output_router_logits\": false,\n  \"router_aux_loss_coef\": %s,\n"
                    "  \"router_jitter_noise\": 0.0,\n  \"sliding_window\": %s,\n",
                s->E, s->K, aux, window);
    else if (mistral)
        fprintf(fp, "  \"sliding_window\": %s,\n", window);
    else
        fprintf(fp, "  \"mlp_bias\": false,\n  \"pretraining_tp\": 1,\n  \"rope_scaling\": null,\n");
    fprintf(fp, "  \"hidden_act\": \"silu\",\n  \"rms_norm_eps\": %s,\n  \"rope_theta\": %s,\n",
            eps, theta);
    fprintf(fp, "  \"max_position_embeddings\": %d,\n  \"initializer_range\": %s,\n",
            c->train.seq_len, std);
    fprintf(fp, "  \"attention_bias\": false,\n  \"attention_dropout\": 0.0,\n");
    fprintf(fp, "  \"tie_word_embeddings\": false,\n  \"use_cache\": true,\n");
    fprintf(fp, "  \"bos_token_id\": %d,\n  \"eos_token_id\": %d,\n", eot, eot);
    fprintf(fp, "  \"torch_dtype\": \"%s\"\n}\n", torch_dtype(d));
    return fs_atomic_commit(&af, err);
}

static int write_small_json(const char *dir, const char *name, const char *text, MoeErr *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FsAtomicFile af;
    if (fs_atomic_open(&af, path, err)) return -1;
    fputs(text, af.fp);
    return fs_atomic_commit(&af, err);
}

/* generation_config.json, tokenizer.json, tokenizer_config.json, special_tokens_map.json.
 * The end-of-text token's text goes into JSON unescaped: it is "<|endoftext|>" or, for a
 * tokenizer.json, one of the names data/tokenizer_hf.c picks it by (no quote, backslash or
 * control character in any). */
static int write_tokenizer_files(const char *dir, const Tokenizer *tok, int seq_len,
                                 MoeErr *err) {
    const int eot = tok_eot(tok);
    size_t el;
    const uint8_t *eb = tok_token_bytes(tok, eot, &el);
    char et[64];
    snprintf(et, sizeof et, "%.*s", (int)(el < sizeof et ? el : sizeof et - 1), (const char *)eb);
    char gen[512], tcfg[2048], smap[512], path[4096];
    snprintf(gen, sizeof gen, "{\n  \"_from_model_config\": true,\n  \"bos_token_id\": %d,\n"
                              "  \"eos_token_id\": %d\n}\n", eot, eot);
    snprintf(tcfg, sizeof tcfg,
             "{\n  \"tokenizer_class\": \"PreTrainedTokenizerFast\",\n"
             "  \"add_bos_token\": false,\n  \"add_eos_token\": false,\n"
             "  \"add_prefix_space\": false,\n"
             "  \"bos_token\": \"%s\",\n  \"eos_token\": \"%s\",\n  \"unk_token\": \"%s\",\n"
             "  \"clean_up_tokenization_spaces\": false,\n  \"model_max_length\": %d,\n"
             "  \"added_tokens_decoder\": {\"%d\": {\"content\": \"%s\", \"lstrip\": false, "
             "\"normalized\": false, \"rstrip\": false, \"single_word\": false, "
             "\"special\": true}}\n}\n",
             et, et, et, seq_len, eot, et);
    snprintf(smap, sizeof smap, "{\n  \"bos_token\": \"%s\",\n  \"eos_token\": \"%s\",\n"
                                "  \"unk_token\": \"%s\"\n}\n", et, et, et);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (write_small_json(dir, "generation_config.json", gen, err) ||
        export_tok_write_hf(path, tok, err) ||
        write_small_json(dir, "tokenizer_config.json", tcfg, err) ||
        write_small_json(dir, "special_tokens_map.json", smap, err))
        return -1;
    return 0;
}

int export_hf(const char *ckpt_path, const char *outdir, const ExportHfOptions *opt,
              MoeErr *err) {
    Config c;
    Model m;
    Tokenizer tok;
    memset(&c, 0, sizeof c);
    memset(&m, 0, sizeof m);
    memset(&tok, 0, sizeof tok);
    char tmpdir[4096] = "";
    StTensorIn *ts = NULL;
    char (*names)[160] = NULL;
    int rc = -1;
    if (check_outdir(outdir, opt->overwrite, err)) goto done;
    if (export_read_ckpt(ckpt_path, &c, &m, &tok, true, err) ||
        export_check_expressible(ckpt_path, &c, &m, EXPORT_HF, err))
        goto done;
    if (export_tok_duplicates(&tok) > 0) {
        moe_errorf(err, "%s: the tokenizer has %d tokens with identical bytes; a Hugging Face "
                        "vocab cannot hold them", ckpt_path, export_tok_duplicates(&tok));
        moe_hintf(err, "retrain the tokenizer");
        goto done;
    }
    if (fs_temp_dir(outdir, tmpdir, sizeof tmpdir, err)) goto done;
    /* The tensor list: every parameter but the router noise, experts split per expert. */
    const ModelShape *s = &m.s;
    size_t cap = (size_t)m.ps.count * (size_t)(s->E > 0 ? s->E : 1), n = 0;
    ts = moe_calloc(sizeof(StTensorIn) * cap);
    names = moe_calloc(sizeof *names * cap);
    for (int i = 0; i < m.ps.count; i++) {
        const Param *p = &m.ps.p[i];
        if (export_skips(p)) continue;
        if (p->block == PBLOCK_EXPERT) {
            size_t per = (size_t)p->t.shape[1] * p->t.shape[2];
            for (int e = 0; e < m.e_local; e++) {
                export_hf_expert_name(p->name, m.e_first + e, names[n], sizeof names[n]);
                ts[n] = (StTensorIn){names[n], p->t.data + (size_t)e * per, 2,
                                     {p->t.shape[1], p->t.shape[2], 0, 0}};
                n++;
            }
        } else {
            snprintf(names[n], sizeof names[n], "%s", p->name);
            ts[n] = (StTensorIn){names[n], p->t.data, p->t.ndim, {0, 0, 0, 0}};
            for (int k = 0; k < p->t.ndim; k++) ts[n].shape[k] = p->t.shape[k];
            n++;
        }
    }
    static const char *const meta[] = {"format", "pt", NULL};
    int shards = 0;
    if (st_write_model(tmpdir, ts, n, opt->dtype, opt->max_shard_bytes, meta, &shards, err))
        goto done;
    if (write_config_json(tmpdir, &c, s, opt->dtype, tok_eot(&tok), err) ||
        write_tokenizer_files(tmpdir, &tok, c.train.seq_len, err))
        goto done;
    if (publish(tmpdir, outdir, opt->overwrite, err)) goto done;
    rc = 0;
done:
    if (rc && tmpdir[0]) fs_remove_dir_flat(tmpdir);
    moe_free(ts);
    moe_free(names);
    tok_free(&tok);
    model_free(&m);
    config_free(&c);
    return rc;
}

/* adapter_config.json of PEFT's LoRA for the adapters of config c, base base_path. */
static int write_adapter_config(const char *dir, const Config *c, const LoraSpec *lo,
                                const char *base_path, MoeErr *err) {
    char path[4200], alpha[64], drop[64];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    FsAtomicFile af;
    if (fs_atomic_open(&af, path, err)) return -1;
    json_out_num(alpha, sizeof alpha, c->finetune.lora_alpha);
    json_out_num(drop, sizeof drop, c->finetune.lora_dropout);
    fprintf(af.fp, "{\n  \"peft_type\": \"LORA\",\n  \"task_type\": \"CAUSAL_LM\",\n"
                   "  \"base_model_name_or_path\": ");
    json_out_str(af.fp, base_path, strlen(base_path));
    fprintf(af.fp, ",\n  \"r\": %d,\n  \"lora_alpha\": %s,\n  \"lora_dropout\": %s,\n"
                   "  \"target_modules\": [", lo->rank, alpha, drop);
    for (int t = 0, k = 0; t < LORA_N_TARGETS; t++)
        if (lo->targets & (1u << t))
            fprintf(af.fp, "%s\"%s\"", k++ ? ", " : "", lora_target_names[t]);
    fprintf(af.fp, "],\n  \"bias\": \"none\",\n  \"fan_in_fan_out\": false,\n"
                   "  \"use_rslora\": false,\n  \"use_dora\": false,\n"
                   "  \"init_lora_weights\": true,\n  \"inference_mode\": true,\n"
                   "  \"modules_to_save\": null,\n  \"layers_to_transform\": null,\n"
                   "  \"revision\": null\n}\n");
    return fs_atomic_commit(&af, err);
}

int export_peft(const char *ckpt_path, const char *outdir, StDtype dtype, bool overwrite,
                MoeErr *err) {
    Config c;
    Model m;
    memset(&c, 0, sizeof c);
    memset(&m, 0, sizeof m);
    char tmpdir[4096] = "", path[4200];
    StTensorIn *ts = NULL;
    char (*names)[208] = NULL;
    int rc = -1;
    CkptMeta meta;
    if (check_outdir(outdir, overwrite, err)) goto done;
    if (ckpt_read_meta(ckpt_path, &meta, err) || ckpt_read_config(ckpt_path, &c, err)) goto done;
    if (!meta.adapter) {
        moe_errorf(err, "%s: --adapters-only needs a LoRA adapter checkpoint; this is a full "
                   "checkpoint", ckpt_path);
        moe_hintf(err, "export it without --adapters-only, or pick a checkpoint of a run with "
                       "finetune.lora_rank > 0");
        goto done;
    }
    if (c.finetune.train_router || c.finetune.train_experts) {
        moe_errorf(err, "%s: the run also trained base tensors (finetune.train_router / "
                   "train_experts), which PEFT adapters cannot carry", ckpt_path);
        moe_hintf(err, "export the merged model instead (without --adapters-only)");
        goto done;
    }
    /* the adapters alone: the base's values are not needed (and not read) */
    ModelShape s;
    LoraSpec lo;
    config_model_shape(&c, &s);
    config_lora_spec(&c, &lo);
    model_init_lora(&m, &s, &lo, 0, s.E, 0);
    if (ckpt_load(ckpt_path, &m, NULL, false, err)) goto done;
    if (fs_temp_dir(outdir, tmpdir, sizeof tmpdir, err)) goto done;
    /* PEFT names: base_model.model.<our name>, lora_A (r, d_in), lora_B (d_out, r), with
     * the expert adapters as PEFT's target_modules puts them on Mixtral's per-expert
     * nn.Linear modules (docs/export.md): a per-expert stack split into its experts'
     * "...experts.<e>.w1.lora_A.weight", a shared pair written once per expert under the
     * same names (every expert's module gets the same adapter: the same function). */
    size_t cap = (size_t)m.ps.count * (size_t)(s.E > 0 ? s.E : 1), n = 0;
    ts = moe_calloc(sizeof(StTensorIn) * cap);
    names = moe_calloc(sizeof *names * cap);
    char one[160];
    for (int i = 0; i < m.ps.count; i++) {
        const Param *p = &m.ps.p[i];
        if (!lora_is_adapter(p->name)) continue;
        const char *ex = strstr(p->name, ".experts.");
        if (!ex) {
            snprintf(names[n], sizeof names[n], "base_model.model.%s", p->name);
            ts[n] = (StTensorIn){names[n], p->t.data, 2, {p->t.shape[0], p->t.shape[1], 0, 0}};
            n++;
            continue;
        }
        const bool stacked = p->t.ndim == 3;
        const int r0 = stacked ? 1 : 0;
        const size_t per = stacked ? (size_t)p->t.shape[1] * p->t.shape[2] : 0;
        for (int e = 0; e < s.E; e++) {
            if (stacked) {
                export_hf_expert_name(p->name, e, one, sizeof one);
            } else {   /* "...experts.w1.lora_A.weight" -> "...experts.<e>.w1.lora_A..." */
                const size_t at = (size_t)(ex - p->name) + strlen(".experts.");
                snprintf(one, sizeof one, "%.*s%d.%s", (int)at, p->name, e, p->name + at);
            }
            snprintf(names[n], sizeof names[n], "base_model.model.%s", one);
            ts[n] = (StTensorIn){names[n], p->t.data + (size_t)e * per, 2,
                                 {p->t.shape[r0], p->t.shape[r0 + 1], 0, 0}};
            n++;
        }
    }
    static const char *const stmeta[] = {"format", "pt", NULL};
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", tmpdir);
    if (st_write_file(path, ts, n, dtype, stmeta, err)) goto done;
    if (write_adapter_config(tmpdir, &c, &lo, meta.base_path, err)) goto done;
    if (publish(tmpdir, outdir, overwrite, err)) goto done;
    rc = 0;
done:
    if (rc && tmpdir[0]) fs_remove_dir_flat(tmpdir);
    moe_free(ts);
    moe_free(names);
    model_free(&m);
    config_free(&c);
    return rc;
}
