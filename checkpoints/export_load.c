/* export_load.c: a model for inference from a checkpoint, an HF directory or a GGUF file.
 * See export_load.h. */
#include "checkpoints/export_load.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoints/export_ckpt.h"
#include "checkpoints/export_names.h"
#include "checkpoints/export_tokenizer.h"
#include "checkpoints/gguf.h"
#include "checkpoints/safetensors.h"
#include "configs/config.h"
#include "core/fs.h"
#include "core/json.h"

void model_source_free(ModelSource *src) {
    if (!src) return;
    model_free(&src->model);
    tok_free(&src->tok);
    memset(src, 0, sizeof *src);
}

/* Hyper-parameters read from a file, bounded before model_init sizes anything from them:
 * -1 with err (label names the file) when any is out of range. */
static int shape_sane(const ModelShape *s, const char *label, MoeErr *err) {
    const int lim = 1 << 20;
    if (s->V < TOK_MIN_VOCAB || s->V > lim || s->C < 1 || s->C > lim || s->L < 1 || s->L > 4096 ||
        s->H < 1 || s->H > 4096 || s->Hkv < 1 || s->H % s->Hkv || s->D < 2 || s->D % 2 ||
        s->D > 4096 || s->F < 1 || s->F > lim || s->E < 0 || s->E > 4096 ||
        (s->E > 0 && (s->K < 1 || s->K > s->E)) || !(s->norm_eps > 0.0f) ||
        !(s->rope_theta > 0.0f)) {
        moe_errorf(err, "%s: the model hyper-parameters are invalid (V %d C %d L %d H %d Hkv %d "
                        "D %d F %d E %d K %d)", label, s->V, s->C, s->L, s->H, s->Hkv, s->D, s->F,
                   s->E, s->K);
        return moe_hintf(err, "the file is corrupt or not a moetrain export");
    }
    return 0;
}

/* Integer member key of the object o into *out; an absent key gives def, or fails when def
 * < 0 (required). Fails (-1, err) on a non-integer or |value| > 1e9. */
static int json_int(const JsonValue *o, const char *key, int def, int *out, const char *label,
                    MoeErr *err) {
    const JsonValue *v = json_get(o, key);
    if (!v) {
        if (def < 0) {
            moe_errorf(err, "%s: \"%s\" is missing", label, key);
            return moe_hintf(err, "export the model again with `moetrain export --format hf`");
        }
        *out = def;
        return 0;
    }
    if (v->type != JSON_NUM || v->num != floor(v->num) || fabs(v->num) > 1e9) {
        moe_errorf(err, "%s: \"%s\" is not an integer", label, key);
        return moe_hintf(err, "export the model again with `moetrain export --format hf`");
    }
    *out = (int)v->num;
    return 0;
}

/* An HF export directory (export_hf.h): config.json, the safetensors files, tokenizer.json
 * when present. */
static int load_hf(ModelSource *src, const char *dir, MoeErr *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    uint8_t *buf = NULL;
    size_t n = 0;
    if (fs_read_file(path, &buf, &n, err)) return -1;
    JsonValue cfg;
    int rc = json_parse(&cfg, (const char *)buf, n, path, 1, err);
    moe_free(buf);
    buf = NULL;
    if (rc) return -1;
    rc = -1;
    StModel st;
    memset(&st, 0, sizeof st);
    JsonValue tj;
    memset(&tj, 0, sizeof tj);
    const char **tk = NULL, **mg = NULL;
    size_t *tkl = NULL, *mgl = NULL;
    ModelShape s;
    memset(&s, 0, sizeof s);
    const JsonValue *mt = json_get(&cfg, "model_type");
    bool moe = mt && mt->type == JSON_STR && !strcmp(mt->str, "mixtral");
    if (!mt || mt->type != JSON_STR ||
        (!moe && strcmp(mt->str, "llama") && strcmp(mt->str, "mistral"))) {
        moe_errorf(err, "%s: model_type is not \"mixtral\", \"mistral\" or \"llama\"", path);
        moe_hintf(err, "give a directory written by `moetrain export --format hf`");
        goto done;
    }
    /* sliding_window: null or absent = full causal attention */
    const JsonValue *sw = json_get(&cfg, "sliding_window");
    if (sw && sw->type != JSON_NULL &&
        (json_int(&cfg, "sliding_window", 0, &s.W, path, err) || s.W < 0)) {
        if (s.W < 0) {
            moe_errorf(err, "%s: \"sliding_window\" is %d", path, s.W);
            moe_hintf(err, "expected null or a window >= 1");
        }
        goto done;
    }
    if (json_int(&cfg, "vocab_size", -1, &s.V, path, err) ||
        json_int(&cfg, "hidden_size", -1, &s.C, path, err) ||
        json_int(&cfg, "num_hidden_layers", -1, &s.L, path, err) ||
        json_int(&cfg, "num_attention_heads", -1, &s.H, path, err) ||
        json_int(&cfg, "num_key_value_heads", s.H, &s.Hkv, path, err) ||
        json_int(&cfg, "head_dim", s.H > 0 ? s.C / s.H : 1, &s.D, path, err) ||
        json_int(&cfg, "intermediate_size", -1, &s.F, path, err) ||
        json_int(&cfg, "max_position_embeddings", 0, &src->context_len, path, err))
        goto done;
    if (moe && (json_int(&cfg, "num_local_experts", -1, &s.E, path, err) ||
                json_int(&cfg, "num_experts_per_tok", -1, &s.K, path, err)))
        goto done;
    s.norm_eps = (float)json_get_num(&cfg, "rms_norm_eps");
    s.rope_theta = (float)json_get_num(&cfg, "rope_theta");
    if (isnan(s.rope_theta)) s.rope_theta = 10000.0f;
    s.init_std = 0.02f;
    if (shape_sane(&s, path, err)) goto done;
    model_init(&src->model, &s, 0, s.E, 0);
    if (st_model_open(&st, dir, err)) goto done;
    Model *m = &src->model;
    for (int i = 0; i < m->ps.count; i++) {
        Param *p = &m->ps.p[i];
        if (export_skips(p)) {
            memset(p->t.data, 0, sizeof(float) * p->t.n);
            continue;
        }
        int ne = p->block == PBLOCK_EXPERT ? m->e_local : 1;
        for (int e = 0; e < ne; e++) {
            char name[160];
            export_hf_expert_name(p->name, e, name, sizeof name);
            int nd = p->block == PBLOCK_EXPERT ? 2 : p->t.ndim;
            const int *want = p->block == PBLOCK_EXPERT ? p->t.shape + 1 : p->t.shape;
            const StFile *sf = NULL;
            const StEntry *en = st_model_find(&st, name, &sf);
            if (!en) {
                moe_errorf(err, "%s: tensor '%s' is missing", dir, name);
                moe_hintf(err, "the export is incomplete: export the model again");
                goto done;
            }
            bool same = en->ndim == nd;
            for (int k = 0; k < nd && same; k++) same = en->shape[k] == want[k];
            if (!same) {
                moe_errorf(err, "%s: tensor '%s' has shape [%lld%s%s] in %s, config.json needs "
                                "[%d%s%s]", dir, name, (long long)en->shape[0], en->ndim > 1 ? ", " : "",
                           en->ndim > 1 ? "..." : "", sf->path, want[0], nd > 1 ? ", " : "",
                           nd > 1 ? "..." : "");
                moe_hintf(err, "config.json and the safetensors files do not match");
                goto done;
            }
            size_t per = en->n;
            st_entry_to_f32(sf, en, p->t.data + (size_t)e * per);
        }
    }
    /* Tokenizer (optional: logits needs none): moetrain's own layout (exported from a .bpe)
     * comes back as that tokenizer, with its hash; any other byte-level BPE tokenizer.json
     * (a model trained with one: the export wrote its file back) is read as such. */
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    struct stat sb;
    if (stat(path, &sb) == 0) {
        if (fs_read_file(path, &buf, &n, err)) goto done;
        int prc = json_parse(&tj, (const char *)buf, n, path, 1, err);
        if (prc) goto done;
        const JsonValue *model = json_get(&tj, "model");
        const JsonValue *vocab = json_get(model, "vocab"), *merges = json_get(model, "merges");
        bool ours = vocab && vocab->type == JSON_OBJ && merges && merges->type == JSON_ARR &&
                    (int)vocab->n == s.V;
        if (ours) {
            tk = moe_calloc(sizeof(char *) * (size_t)s.V);
            tkl = moe_calloc(sizeof(size_t) * (size_t)s.V);
            mg = moe_calloc(sizeof(char *) * (merges->n + 1));
            mgl = moe_calloc(sizeof(size_t) * (merges->n + 1));
        }
        for (size_t i = 0; ours && i < vocab->n; i++) {
            const JsonValue *v = &vocab->items[i];
            ours = v->type == JSON_NUM && v->num >= 0 && v->num < s.V && v->num == floor(v->num) &&
                   !tk[(int)v->num];
            if (!ours) break;
            tk[(int)v->num] = vocab->keys[i];
            tkl[(int)v->num] = strlen(vocab->keys[i]);
        }
        for (size_t i = 0; ours && i < merges->n; i++) {
            ours = merges->items[i].type == JSON_STR;
            if (!ours) break;
            mg[i] = merges->items[i].str;
            mgl[i] = strlen(mg[i]);
        }
        MoeErr ignored;
        if (!ours || export_tok_from_strings(&src->tok, tk, tkl, s.V, mg, mgl,
                                             (int)merges->n, path, &ignored) != 0) {
            if (tok_load_buffer(&src->tok, buf, n, path, err)) goto done;
            if (tok_vocab_size(&src->tok) != s.V) {
                moe_errorf(err, "%s: %d tokens, but config.json's vocab_size is %d", path,
                           tok_vocab_size(&src->tok), s.V);
                moe_hintf(err, "export the model again");
                tok_free(&src->tok);
                goto done;
            }
        }
        src->has_tok = true;
    }
    rc = 0;
done:
    moe_free(buf);
    moe_free(tk);
    moe_free(tkl);
    moe_free(mg);
    moe_free(mgl);
    json_free(&tj);
    st_model_close(&st);
    json_free(&cfg);
    return rc;
}

/* A GGUF file (export_gguf.h): the llama.* keys, the tensors (q/k rows un-permuted), the
 * tokenizer arrays when present. */
static int load_gguf(ModelSource *src, const char *path, MoeErr *err) {
    GgufFile f;
    int rc = -1;
    int32_t *types = NULL;
    const char **tk = NULL, **mg = NULL;
    size_t *tkl = NULL, *mgl = NULL;
    float *scratch = NULL;
    if (gguf_open(&f, path, err)) goto done;
    const char *arch;
    size_t al;
    if (gguf_get_str(&f, "general.architecture", &arch, &al, err)) goto done;
    if (al != 5 || memcmp(arch, "llama", 5)) {
        moe_errorf(err, "%s: general.architecture is \"%.*s\", not \"llama\"", path, (int)al, arch);
        moe_hintf(err, "give a file written by `moetrain export --format gguf`");
        goto done;
    }
    ModelShape s;
    memset(&s, 0, sizeof s);
    uint32_t u[9] = {0};
    if (gguf_get_u32(&f, "llama.embedding_length", &u[0], err) ||
        gguf_get_u32(&f, "llama.block_count", &u[1], err) ||
        gguf_get_u32(&f, "llama.feed_forward_length", &u[2], err) ||
        gguf_get_u32(&f, "llama.attention.head_count", &u[3], err) ||
        gguf_get_u32(&f, "llama.attention.head_count_kv", &u[4], err) ||
        gguf_get_u32(&f, "llama.rope.dimension_count", &u[5], err) ||
        gguf_get_f32(&f, "llama.attention.layer_norm_rms_epsilon", &s.norm_eps, err) ||
        gguf_get_f32(&f, "llama.rope.freq_base", &s.rope_theta, err))
        goto done;
    if (gguf_find(&f, "llama.expert_count") >= 0 &&
        (gguf_get_u32(&f, "llama.expert_count", &u[6], err) ||
         gguf_get_u32(&f, "llama.expert_used_count", &u[7], err)))
        goto done;
    if (gguf_find(&f, "llama.context_length") >= 0 &&
        gguf_get_u32(&f, "llama.context_length", &u[8], err))
        goto done;
    const GgufTensorInfo *emb = gguf_find_tensor(&f, "token_embd.weight");
    if (!emb || emb->ndim != 2) {
        moe_errorf(err, "%s: tensor 'token_embd.weight' is missing or not 2-D", path);
        moe_hintf(err, "give a file written by `moetrain export --format gguf`");
        goto done;
    }
    s.C = (int)u[0]; s.L = (int)u[1]; s.F = (int)u[2]; s.H = (int)u[3]; s.Hkv = (int)u[4];
    s.D = (int)u[5]; s.E = (int)u[6]; s.K = (int)u[7]; s.V = (int)emb->ne[1];
    s.init_std = 0.02f;
    src->context_len = (int)u[8];
    if (shape_sane(&s, path, err)) goto done;
    model_init(&src->model, &s, 0, s.E, 0);
    Model *m = &src->model;
    for (int i = 0; i < m->ps.count; i++) {
        Param *p = &m->ps.p[i];
        char name[128];
        int heads;
        if (!export_gguf_name(p, &s, name, sizeof name, &heads)) {
            memset(p->t.data, 0, sizeof(float) * p->t.n);
            continue;
        }
        const GgufTensorInfo *t = gguf_find_tensor(&f, name);
        bool same = t && t->ndim == p->t.ndim;
        for (int k = 0; same && k < p->t.ndim; k++)
            same = t->ne[k] == (uint64_t)p->t.shape[p->t.ndim - 1 - k];
        if (!same) {
            moe_errorf(err, "%s: tensor '%s' is %s (expected %d dims, innermost %d)", path, name,
                       t ? "of the wrong shape" : "missing", p->t.ndim, p->t.shape[p->t.ndim - 1]);
            moe_hintf(err, "the file does not match its own hyper-parameters: export it again");
            goto done;
        }
        if (heads) {
            scratch = moe_malloc(sizeof(float) * p->t.n);
            gguf_tensor_to_f32(&f, t, scratch);
            export_permute_rope_rows(scratch, p->t.data, heads, s.D, s.C, true);
            moe_free(scratch);
            scratch = NULL;
        } else {
            gguf_tensor_to_f32(&f, t, p->t.data);
        }
    }
    /* Tokenizer (optional). */
    int kt = gguf_find(&f, "tokenizer.ggml.tokens"), km = gguf_find(&f, "tokenizer.ggml.merges");
    if (kt >= 0 && km >= 0 && f.kv[kt].type == GGUF_T_ARRAY && f.kv[kt].arr_type == GGUF_T_STRING &&
        f.kv[km].type == GGUF_T_ARRAY && f.kv[km].arr_type == GGUF_T_STRING) {
        size_t V = f.kv[kt].arr_n, M = f.kv[km].arr_n;
        if (V != (size_t)s.V) {
            moe_errorf(err, "%s: %zu tokens but token_embd has %d rows", path, V, s.V);
            moe_hintf(err, "the file is corrupt: export it again");
            goto done;
        }
        tk = moe_calloc(sizeof(char *) * V);
        tkl = moe_calloc(sizeof(size_t) * V);
        mg = moe_calloc(sizeof(char *) * (M + 1));
        mgl = moe_calloc(sizeof(size_t) * (M + 1));
        for (size_t i = 0; i < V; i++) gguf_arr_str(&f, kt, i, &tk[i], &tkl[i]);
        for (size_t i = 0; i < M; i++) gguf_arr_str(&f, km, i, &mg[i], &mgl[i]);
        /* moetrain's own layout, else (a model trained with a tokenizer.json) the
         * tokenizer.json the tokens, types, merges and pre-tokenizer name stand for */
        MoeErr ignored;
        if (export_tok_from_strings(&src->tok, tk, tkl, (int)V, mg, mgl, (int)M, path,
                                    &ignored) != 0) {
            int ktt = gguf_find(&f, "tokenizer.ggml.token_type");
            const char *pre = "gpt-2";
            size_t pre_len = 5;
            if (gguf_find(&f, "tokenizer.ggml.pre") >= 0 &&
                gguf_get_str(&f, "tokenizer.ggml.pre", &pre, &pre_len, err))
                goto done;
            if (ktt >= 0 && f.kv[ktt].type == GGUF_T_ARRAY && f.kv[ktt].arr_type == GGUF_T_INT32 &&
                f.kv[ktt].arr_n == V) {
                types = moe_malloc(sizeof(int32_t) * V);
                memcpy(types, f.buf + f.kv[ktt].off, sizeof(int32_t) * V);  /* little endian */
            }
            if (export_tok_from_gguf(&src->tok, tk, tkl, types, (int)V, mg, mgl, (int)M, pre,
                                     pre_len, path, err))
                goto done;
        }
        src->has_tok = true;
    }
    rc = 0;
done:
    moe_free(types);
    moe_free(scratch);
    moe_free(tk);
    moe_free(tkl);
    moe_free(mg);
    moe_free(mgl);
    gguf_close(&f);
    return rc;
}

int model_source_load(ModelSource *src, const char *path, MoeErr *err) {
    memset(src, 0, sizeof *src);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        moe_errorf(err, "%s: %s", path, strerror(errno));
        return moe_hintf(err, "give a checkpoint (.h5), an HF export directory or a .gguf file");
    }
    int rc;
    if (S_ISDIR(sb.st_mode)) {
        src->kind = SRC_HF;
        rc = load_hf(src, path, err);
    } else {
        char magic[4] = {0};
        FILE *fp = fopen(path, "rb");
        size_t got = fp ? fread(magic, 1, 4, fp) : 0;
        if (fp) fclose(fp);
        if (got == 4 && !memcmp(magic, "GGUF", 4)) {
            src->kind = SRC_GGUF;
            rc = load_gguf(src, path, err);
        } else {
            src->kind = SRC_CKPT;
            Config c;
            memset(&c, 0, sizeof c);
            rc = export_read_ckpt(path, &c, &src->model, &src->tok, false, err);
            src->has_tok = rc == 0;
            src->context_len = c.train.seq_len;
            if (!rc) {   /* trained on packed documents: scored and sampled the same way */
                src->model.doc_mask = c.data.doc_mask;
                src->model.eot = tok_eot(&src->tok);
                src->gemm = c.compute.gemm;   /* and with the run's products */
                src->precision = c.compute.precision;
            }
            config_free(&c);
        }
    }
    if (!rc) {
        /* Inference: dropless routing, no router noise. Expert choice keeps its capacity
         * factor: there it sets how many tokens each expert takes, i.e. the routing. */
        if (src->model.s.router != MOE_ROUTER_EXPERT_CHOICE) src->model.s.capacity_factor = 0.0f;
        src->model.s.router_noise = false;
    }
    return rc;
}
