/* export.c: Hugging Face and GGUF export, and loading a model from any of the three forms.
 * See export.h. */
#include "checkpoints/export.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoints/ckpt.h"
#include "core/fs.h"
#include "layers/router_bias.h"
#include "checkpoints/finetune.h"
#include "configs/config.h"
#include "core/json.h"

/* ------------------------------------------------------------------ small helpers */

/* Shortest decimal that reads back as exactly x (JSON has no float32/float64 distinction). */
static void fmt_num(char *out, size_t cap, double x) {
    for (int p = 1; p <= 17; p++) {
        snprintf(out, cap, "%.*g", p, x);
        if (strtod(out, NULL) == x) return;
    }
}

static void json_str(FILE *fp, const char *s, size_t n) {
    fputc('"', fp);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') fprintf(fp, "\\%c", c);
        else if (c < 0x20) fprintf(fp, "\\u%04x", c);
        else fputc(c, fp);
    }
    fputc('"', fp);
}

/* Expand a stacked expert name pattern "...experts.{e}.w1.weight" for expert e. */
static void expand_name(const char *pat, int e, char *out, size_t cap) {
    const char *at = strstr(pat, "{e}");
    if (!at) {
        snprintf(out, cap, "%s", pat);
        return;
    }
    snprintf(out, cap, "%.*s%d%s", (int)(at - pat), pat, e, at + 3);
}

static bool is_noise(const Param *p) { return strstr(p->name, "noise_gate") != NULL; }

/* Refuses (-1, err naming the config key) what the target format cannot express, instead of
 * writing a file that silently computes something else: shared experts (neither HF Mixtral /
 * Mistral / Llama nor llama.cpp's llama architecture has them) and, for GGUF, a sliding
 * window (llama.cpp's llama architecture reads no sliding-window key and would attend to
 * the whole context). */
static int check_expressible(const char *ckpt_path, const Config *c, bool gguf, MoeErr *err) {
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

void export_permute_rope_rows(const float *w, float *out, int n_head, int D, int C,
                              bool inverse) {
    ASSERT(D % 2 == 0 && w != out, "permute: D %d", D);
    const int half = D / 2;
    for (int h = 0; h < n_head; h++)
        for (int s = 0; s < 2; s++)
            for (int j = 0; j < half; j++) {
                /* rotate-half row s*half + j  <->  interleaved row 2j + s */
                size_t rh = (size_t)h * D + (size_t)s * half + j, il = (size_t)h * D + 2 * j + s;
                size_t src = inverse ? il : rh, dst = inverse ? rh : il;
                memcpy(out + dst * C, w + src * C, sizeof(float) * (size_t)C);
            }
}

/* Tokenizer from a file's bytes held in memory (the checkpoint's /tokenizer dataset). */
static int tok_from_bytes(Tokenizer *t, const uint8_t *b, size_t n, const char *label,
                          MoeErr *err) {
    const char *td = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/moetrain-tok-XXXXXX", td && *td ? td : "/tmp");
    int fd = mkstemp(tmpl);
    if (fd < 0) {
        moe_errorf(err, "%s: cannot create a temporary file for the tokenizer: %s", label,
                   strerror(errno));
        return moe_hintf(err, "set TMPDIR to a writable directory");
    }
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, b + done, n - done);
        if (w <= 0) break;
        done += (size_t)w;
    }
    close(fd);
    int rc = -1;
    if (done != n) {
        moe_errorf(err, "%s: cannot write a temporary tokenizer file %s", label, tmpl);
        moe_hintf(err, "check free space in TMPDIR");
    } else {
        rc = tok_load(t, tmpl, err);
    }
    unlink(tmpl);
    return rc;
}

/* Index of string s (len n) among sorted keys, or -1. */
typedef struct StrId {
    const char *s;
    size_t n;
    int id;
} StrId;

static int cmp_strid(const void *a, const void *b) {
    const StrId *x = a, *y = b;
    size_t m = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->s, y->s, m);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

/* Rebuild our tokenizer from its exported form: V token strings (GPT-2 alphabet) and the
 * ranked merges "A B". Checks the layout our tokenizer has (bytes first in byte order,
 * merges in id order, <|endoftext|> last) and hands the result to tok_load's validation. */
static int tok_from_strings(Tokenizer *t, const char *const *tok, const size_t *tok_len, int V,
                            const char *const *mer, const size_t *mer_len, int M,
                            const char *label, MoeErr *err) {
    if (V < TOK_MIN_VOCAB || M != V - 257) {
        moe_errorf(err, "%s: %d tokens and %d merges do not have moetrain's layout (V-257 merges)",
                   label, V, M);
        return moe_hintf(err, "only tokenizers exported by moetrain can be read back");
    }
    if (tok_len[V - 1] != strlen(TOK_EOT_TEXT) || memcmp(tok[V - 1], TOK_EOT_TEXT, tok_len[V - 1])) {
        moe_errorf(err, "%s: the last token is not %s", label, TOK_EOT_TEXT);
        return moe_hintf(err, "only tokenizers exported by moetrain can be read back");
    }
    StrId *map = moe_malloc(sizeof(StrId) * (size_t)V);
    for (int i = 0; i < V; i++) map[i] = (StrId){tok[i], tok_len[i], i};
    qsort(map, (size_t)V, sizeof *map, cmp_strid);
    size_t cap = 64 + (size_t)M * 24, n = 0;
    char *txt = moe_malloc(cap);
    n += (size_t)snprintf(txt, cap, "moetrain-bpe 1\nvocab_size %d\nspecial %d %s\nmerges %d\n",
                          V, V - 1, TOK_EOT_TEXT, M);
    int rc = 0;
    for (int r = 0; r < M && !rc; r++) {
        const char *sp = memchr(mer[r], ' ', mer_len[r]);
        int ab[2] = {-1, -1};
        if (sp) {
            StrId k[2] = {{mer[r], (size_t)(sp - mer[r]), 0},
                          {sp + 1, mer_len[r] - (size_t)(sp - mer[r]) - 1, 0}};
            for (int q = 0; q < 2; q++) {
                StrId *f = bsearch(&k[q], map, (size_t)V, sizeof *map, cmp_strid);
                if (f) ab[q] = f->id;
            }
        }
        if (ab[0] < 0 || ab[1] < 0) {
            moe_errorf(err, "%s: merge %d (\"%.*s\") does not name two tokens of the vocabulary",
                       label, r, (int)(mer_len[r] < 200 ? mer_len[r] : 200), mer[r]);
            moe_hintf(err, "the tokenizer is corrupt: export the model again");
            rc = -1;
            break;
        }
        n += (size_t)snprintf(txt + n, cap - n, "%d %d\n", ab[0], ab[1]);
    }
    moe_free(map);
    if (!rc) rc = tok_from_bytes(t, (const uint8_t *)txt, n, label, err);
    moe_free(txt);
    return rc;
}

/* ------------------------------------------------------------------ checkpoint loading */

/* Read config, weights and tokenizer of an HDF5 checkpoint into m (all experts). An adapter
 * checkpoint is loaded on top of its base (checkpoints/finetune.h); with merge its adapters
 * are then folded into the weights, so m is a plain model (what the exporters write),
 * otherwise m keeps them (inference runs base + adapters). */
static int load_ckpt(const char *path, Config *c, Model *m, Tokenizer *tok, bool merge,
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
    int rc = tok_from_bytes(tok, b, n, path, err);
    moe_free(b);
    if (!rc && tok_vocab_size(tok) != s.V) {
        moe_errorf(err, "%s: the stored tokenizer has %d tokens but model.vocab_size is %d", path,
                   tok_vocab_size(tok), s.V);
        moe_hintf(err, "the checkpoint is inconsistent");
        rc = -1;
    }
    return rc;
}

/* Aux-loss-free balancing: Mixtral's HF layout and llama.cpp's llama graph route by the plain
 * top-k of the router logits and have no place for a selection bias (DeepSeek-V3's
 * e_score_correction_bias is not part of them), so a model with a non-zero bias would route
 * differently there than it was trained to: refuse (an all-zero bias changes nothing). */
static int refuse_router_bias(const char *path, const Config *c, const Model *m,
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

/* Mixtral's HF and GGUF formats say "top num_experts_per_tok experts, softmax over them":
 * an inference engine would route a top-p or expert-choice model differently, i.e. run a
 * different model. Refuse instead of writing a file that silently computes something else. */
static int check_router_exportable(const Config *c, const char *path, const char *format,
                                   MoeErr *err) {
    if (c->moe.n_experts == 0 || c->moe.router == CONFIG_ROUTER_TOPK) return 0;
    moe_errorf(err, "%s: moe.router is '%s': the %s format routes top-%d "
               "(num_experts_per_tok), so inference engines would route this model differently",
               path, c->moe.router == CONFIG_ROUTER_TOPP ? "topp" : "expert_choice", format,
               c->moe.top_k);
    return moe_hintf(err, "only moe.router: topk models can be exported; evaluate this one "
                          "with `moetrain eval` or `moetrain logits` on the checkpoint");
}

/* ------------------------------------------------------------------ temp directories */

static void remove_tree_flat(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        char p[4096];
        while ((de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

static void fsync_path(const char *p) {
    int fd = open(p, O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

static void parent_of(const char *p, char *out, size_t cap) {
    snprintf(out, cap, "%s", p);
    char *s = strrchr(out, '/');
    if (!s) snprintf(out, cap, ".");
    else if (s == out) out[1] = 0;
    else *s = 0;
}

/* ------------------------------------------------------------------ HF export */


/* Names an export writes: *.json and *.safetensors (export.h lists them). */
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

/* Move a finished temporary export directory into place: give it the permissions mkdir
 * would have (mkdtemp makes it 0700), fsync it, rename it to outdir, fsync the parent.
 * With replace and an existing outdir (checked by export_dir_replaceable), the old
 * directory is first renamed aside to OUTDIR.old-XXXXXX, removed only once the new one is
 * in place, and renamed back if that fails: a failed export leaves the old one as it was.
 * On success tmpdir[0] is cleared (nothing left to remove); on failure err is set. */
static int publish_dir(char *tmpdir, const char *outdir, bool replace, MoeErr *err) {
    mode_t um = umask(0);
    umask(um);
    chmod(tmpdir, 0777 & ~um);
    fsync_path(tmpdir);
    char old[4200] = "";
    struct stat st;
    if (replace && lstat(outdir, &st) == 0) {
        if (export_dir_replaceable(outdir, err)) return -1;
        /* mkdtemp makes an empty directory with a fresh name; rename replaces an empty
         * directory atomically */
        snprintf(old, sizeof old, "%s.old-XXXXXX", outdir);
        const bool made = mkdtemp(old) != NULL;
        if (!made || rename(outdir, old) != 0) {
            moe_errorf(err, "%s: cannot move the old export aside: %s", outdir,
                       strerror(errno));
            if (made) rmdir(old);
            return moe_hintf(err, "check that the parent directory is writable");
        }
    }
    if (rename(tmpdir, outdir) != 0) {
        moe_errorf(err, "%s: cannot rename %s into place: %s", outdir, tmpdir, strerror(errno));
        if (old[0] && rename(old, outdir) != 0)
            return moe_hintf(err, "the previous export is in %s", old);
        return moe_hintf(err, "remove %s if it was created meanwhile and export again", outdir);
    }
    tmpdir[0] = 0;
    if (old[0]) remove_tree_flat(old);
    char parent[4096];
    parent_of(outdir, parent, sizeof parent);
    fsync_path(parent);
    return 0;
}

static const char *torch_dtype(StDtype d) {
    return d == ST_F32 ? "float32" : d == ST_BF16 ? "bfloat16" : "float16";
}

static int write_config_json(const char *dir, const Config *c, const ModelShape *s, StDtype d,
                             int eot, MoeErr *err) {
    char path[4096], eps[64], theta[64], std[64], aux[64];
    snprintf(path, sizeof path, "%s/config.json", dir);
    fmt_num(eps, sizeof eps, c->model.norm_eps);
    fmt_num(theta, sizeof theta, c->model.rope_theta);
    fmt_num(std, sizeof std, c->model.init_std);
    fmt_num(aux, sizeof aux, c->moe.aux_loss_coef);
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

/* tokenizer.json in the `tokenizers` library's format (BPE model, ByteLevel pieces). */
static int write_tokenizer_json(const char *dir, const Tokenizer *t, MoeErr *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FsAtomicFile af;
    if (fs_atomic_open(&af, path, err)) return -1;
    FILE *fp = af.fp;
    const int V = tok_vocab_size(t), M = tok_n_merges(t), eot = tok_eot(t);
    size_t cap = 4096;
    char *buf = moe_malloc(cap), *buf2 = moe_malloc(cap);
    fprintf(fp, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n");
    fprintf(fp, "  \"added_tokens\": [{\"id\": %d, \"content\": \"%s\", \"single_word\": false, "
                "\"lstrip\": false, \"rstrip\": false, \"normalized\": false, \"special\": true}],\n",
            eot, TOK_EOT_TEXT);
    fprintf(fp, "  \"normalizer\": null,\n");
    fprintf(fp, "  \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
                "\"trim_offsets\": true, \"use_regex\": true},\n");
    fprintf(fp, "  \"post_processor\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
                "\"trim_offsets\": false, \"use_regex\": true},\n");
    fprintf(fp, "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
                "\"trim_offsets\": true, \"use_regex\": true},\n");
    fprintf(fp, "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n"
                "    \"unk_token\": null,\n    \"continuing_subword_prefix\": \"\",\n"
                "    \"end_of_word_suffix\": \"\",\n    \"fuse_unk\": false,\n"
                "    \"byte_fallback\": false,\n    \"ignore_merges\": false,\n    \"vocab\": {");
    for (int id = 0; id < V; id++) {
        size_t n = tok_token_gpt2_str(t, id, buf, cap);
        if (n + 1 > cap) {
            moe_free(buf);
            moe_free(buf2);
            cap = 2 * (n + 1);
            buf = moe_malloc(cap);
            buf2 = moe_malloc(cap);
            tok_token_gpt2_str(t, id, buf, cap);
        }
        fputs(id ? ",\n      " : "\n      ", fp);
        json_str(fp, buf, n);
        fprintf(fp, ": %d", id);
    }
    fprintf(fp, "\n    },\n    \"merges\": [");
    for (int r = 0; r < M; r++) {
        int32_t a, b;
        tok_merge(t, r, &a, &b);
        size_t na = tok_token_gpt2_str(t, a, NULL, 0), nb = tok_token_gpt2_str(t, b, NULL, 0);
        if (na + nb + 2 > cap) {
            moe_free(buf);
            moe_free(buf2);
            cap = 2 * (na + nb + 2);
            buf = moe_malloc(cap);
            buf2 = moe_malloc(cap);
        }
        tok_token_gpt2_str(t, a, buf, cap);
        tok_token_gpt2_str(t, b, buf2, cap);
        buf[na] = ' ';
        memcpy(buf + na + 1, buf2, nb);
        fputs(r ? ",\n      " : "\n      ", fp);
        json_str(fp, buf, na + 1 + nb);
    }
    fprintf(fp, "\n    ]\n  }\n}\n");
    moe_free(buf);
    moe_free(buf2);
    return fs_atomic_commit(&af, err);
}

/* Number of vocabulary strings that occur more than once (HF's vocab is a map). */
static int count_duplicate_tokens(const Tokenizer *t) {
    const int V = tok_vocab_size(t);
    StrId *map = moe_malloc(sizeof(StrId) * (size_t)V);
    for (int i = 0; i < V; i++) {
        size_t n;
        const uint8_t *b = tok_token_bytes(t, i, &n);
        map[i] = (StrId){(const char *)b, n, i};
    }
    /* The special token's bytes equal the plain text "<|endoftext|>"; it is a separate
     * added token, so only compare ordinary tokens. */
    qsort(map, (size_t)V - 1, sizeof *map, cmp_strid);
    int dup = 0;
    for (int i = 1; i < V - 1; i++) dup += cmp_strid(&map[i - 1], &map[i]) == 0;
    moe_free(map);
    return dup;
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
    struct stat st;
    if (lstat(outdir, &st) == 0 && !opt->overwrite) {
        moe_errorf(err, "%s: already exists", outdir);
        moe_hintf(err, "pass --force to replace it, or choose another output directory");
        goto done;
    }
    if (opt->overwrite && export_dir_replaceable(outdir, err)) goto done;
    if (load_ckpt(ckpt_path, &c, &m, &tok, true, err) || check_expressible(ckpt_path, &c, false, err))
        goto done;
    if (refuse_router_bias(ckpt_path, &c, &m, "Hugging Face Mixtral", err)) goto done;
    if (check_router_exportable(&c, ckpt_path, "Hugging Face Mixtral", err)) goto done;
    if (count_duplicate_tokens(&tok) > 0) {
        moe_errorf(err, "%s: the tokenizer has %d tokens with identical bytes; a Hugging Face "
                        "vocab cannot hold them", ckpt_path, count_duplicate_tokens(&tok));
        moe_hintf(err, "retrain the tokenizer");
        goto done;
    }
    snprintf(tmpdir, sizeof tmpdir, "%s.tmp-XXXXXX", outdir);
    if (!mkdtemp(tmpdir)) {
        moe_errorf(err, "%s: cannot create the output directory: %s", outdir, strerror(errno));
        moe_hintf(err, "check that the parent directory exists and is writable");
        tmpdir[0] = 0;
        goto done;
    }
    /* The tensor list: every parameter but the router noise, experts split per expert. */
    const ModelShape *s = &m.s;
    size_t cap = (size_t)m.ps.count * (size_t)(s->E > 0 ? s->E : 1), n = 0;
    ts = moe_calloc(sizeof(StTensorIn) * cap);
    names = moe_calloc(sizeof *names * cap);
    for (int i = 0; i < m.ps.count; i++) {
        const Param *p = &m.ps.p[i];
        if (is_noise(p)) continue;
        if (p->block == PBLOCK_EXPERT) {
            size_t per = (size_t)p->t.shape[1] * p->t.shape[2];
            for (int e = 0; e < m.e_local; e++) {
                expand_name(p->name, m.e_first + e, names[n], sizeof names[n]);
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
    const int eot = tok_eot(&tok);
    char gen[512], tcfg[2048], smap[512];
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
             TOK_EOT_TEXT, TOK_EOT_TEXT, TOK_EOT_TEXT, c.train.seq_len, eot, TOK_EOT_TEXT);
    snprintf(smap, sizeof smap, "{\n  \"bos_token\": \"%s\",\n  \"eos_token\": \"%s\",\n"
                                "  \"unk_token\": \"%s\"\n}\n", TOK_EOT_TEXT, TOK_EOT_TEXT,
             TOK_EOT_TEXT);
    if (write_config_json(tmpdir, &c, s, opt->dtype, eot, err) ||
        write_small_json(tmpdir, "generation_config.json", gen, err) ||
        write_tokenizer_json(tmpdir, &tok, err) ||
        write_small_json(tmpdir, "tokenizer_config.json", tcfg, err) ||
        write_small_json(tmpdir, "special_tokens_map.json", smap, err))
        goto done;
    if (publish_dir(tmpdir, outdir, opt->overwrite, err)) goto done;
    rc = 0;
done:
    if (rc && tmpdir[0]) remove_tree_flat(tmpdir);
    moe_free(ts);
    moe_free(names);
    tok_free(&tok);
    model_free(&m);
    config_free(&c);
    return rc;
}

/* ------------------------------------------------------------------ PEFT adapters */

int export_peft(const char *ckpt_path, const char *outdir, StDtype dtype, bool overwrite,
                MoeErr *err) {
    Config c;
    Model m;
    memset(&c, 0, sizeof c);
    memset(&m, 0, sizeof m);
    char tmpdir[4096] = "", path[4200];
    StTensorIn *ts = NULL;
    char (*names)[192] = NULL;
    int rc = -1;
    struct stat st;
    CkptMeta meta;
    if (lstat(outdir, &st) == 0 && !overwrite) {
        moe_errorf(err, "%s: already exists", outdir);
        moe_hintf(err, "pass --force to replace it, or choose another output directory");
        goto done;
    }
    if (overwrite && export_dir_replaceable(outdir, err)) goto done;
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
    snprintf(tmpdir, sizeof tmpdir, "%s.tmp-XXXXXX", outdir);
    if (!mkdtemp(tmpdir)) {
        moe_errorf(err, "%s: cannot create the output directory: %s", outdir, strerror(errno));
        moe_hintf(err, "check that the parent directory exists and is writable");
        tmpdir[0] = 0;
        goto done;
    }
    /* PEFT names: base_model.model.<our name>; lora_A (r, d_in), lora_B (d_out, r) */
    size_t n = 0;
    ts = moe_calloc(sizeof(StTensorIn) * (size_t)m.ps.count);
    names = moe_calloc(sizeof *names * (size_t)m.ps.count);
    for (int i = 0; i < m.ps.count; i++) {
        const Param *p = &m.ps.p[i];
        if (!lora_is_adapter(p->name)) continue;
        snprintf(names[n], sizeof names[n], "base_model.model.%s", p->name);
        ts[n] = (StTensorIn){names[n], p->t.data, 2, {p->t.shape[0], p->t.shape[1], 0, 0}};
        n++;
    }
    static const char *const stmeta[] = {"format", "pt", NULL};
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", tmpdir);
    if (st_write_file(path, ts, n, dtype, stmeta, err)) goto done;
    snprintf(path, sizeof path, "%s/adapter_config.json", tmpdir);
    FsAtomicFile af;
    if (fs_atomic_open(&af, path, err)) goto done;
    char alpha[64], drop[64];
    fmt_num(alpha, sizeof alpha, c.finetune.lora_alpha);
    fmt_num(drop, sizeof drop, c.finetune.lora_dropout);
    fprintf(af.fp, "{\n  \"peft_type\": \"LORA\",\n  \"task_type\": \"CAUSAL_LM\",\n"
                   "  \"base_model_name_or_path\": ");
    json_str(af.fp, meta.base_path, strlen(meta.base_path));
    fprintf(af.fp, ",\n  \"r\": %d,\n  \"lora_alpha\": %s,\n  \"lora_dropout\": %s,\n"
                   "  \"target_modules\": [", lo.rank, alpha, drop);
    for (int t = 0, k = 0; t < LORA_N_TARGETS; t++)
        if (lo.targets & (1u << t))
            fprintf(af.fp, "%s\"%s\"", k++ ? ", " : "", lora_target_names[t]);
    fprintf(af.fp, "],\n  \"bias\": \"none\",\n  \"fan_in_fan_out\": false,\n"
                   "  \"use_rslora\": false,\n  \"use_dora\": false,\n"
                   "  \"init_lora_weights\": true,\n  \"inference_mode\": true,\n"
                   "  \"modules_to_save\": null,\n  \"layers_to_transform\": null,\n"
                   "  \"revision\": null\n}\n");
    if (fs_atomic_commit(&af, err)) goto done;
    if (publish_dir(tmpdir, outdir, overwrite, err)) goto done;
    rc = 0;
done:
    if (rc && tmpdir[0]) remove_tree_flat(tmpdir);
    moe_free(ts);
    moe_free(names);
    model_free(&m);
    config_free(&c);
    return rc;
}

/* ------------------------------------------------------------------ GGUF names */

/* llama.cpp's name for parameter p (stacked experts as one tensor). Returns false for
 * tensors that are not exported (router noise). *rope_heads > 0 when the rows need the
 * rotate-half -> interleaved permutation with that many heads. */
static bool gguf_name(const Param *p, const ModelShape *s, char *out, size_t cap,
                      int *rope_heads) {
    *rope_heads = 0;
    const char *n = p->name;
    if (is_noise(p)) return false;
    if (!strcmp(n, "model.embed_tokens.weight")) { snprintf(out, cap, "token_embd.weight"); return true; }
    if (!strcmp(n, "model.norm.weight")) { snprintf(out, cap, "output_norm.weight"); return true; }
    if (!strcmp(n, "lm_head.weight")) { snprintf(out, cap, "output.weight"); return true; }
    int l, used = 0;
    if (sscanf(n, "model.layers.%d.%n", &l, &used) != 1 || used == 0) {
        ASSERT(false, "gguf_name: unexpected parameter %s", n);
    }
    const char *rest = n + used;
    static const struct { const char *hf, *gg; int rope; } map[] = {
        {"input_layernorm.weight", "attn_norm.weight", 0},
        {"self_attn.q_proj.weight", "attn_q.weight", 1},
        {"self_attn.k_proj.weight", "attn_k.weight", 2},
        {"self_attn.v_proj.weight", "attn_v.weight", 0},
        {"self_attn.o_proj.weight", "attn_output.weight", 0},
        {"post_attention_layernorm.weight", "ffn_norm.weight", 0},
        {"block_sparse_moe.gate.weight", "ffn_gate_inp.weight", 0},
        {"block_sparse_moe.experts.{e}.w1.weight", "ffn_gate_exps.weight", 0},
        {"block_sparse_moe.experts.{e}.w3.weight", "ffn_up_exps.weight", 0},
        {"block_sparse_moe.experts.{e}.w2.weight", "ffn_down_exps.weight", 0},
        {"mlp.gate_proj.weight", "ffn_gate.weight", 0},
        {"mlp.up_proj.weight", "ffn_up.weight", 0},
        {"mlp.down_proj.weight", "ffn_down.weight", 0},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(rest, map[i].hf)) {
            snprintf(out, cap, "blk.%d.%s", l, map[i].gg);
            *rope_heads = map[i].rope == 1 ? s->H : map[i].rope == 2 ? s->Hkv : 0;
            return true;
        }
    ASSERT(false, "gguf_name: unexpected parameter %s", n);
    return false;
}

int export_gguf(const char *ckpt_path, const char *out_path, GgmlType type, MoeErr *err) {
    Config c;
    Model m;
    Tokenizer tok;
    memset(&c, 0, sizeof c);
    memset(&m, 0, sizeof m);
    memset(&tok, 0, sizeof tok);
    GgufWriter w;
    gguf_w_init(&w, GGUF_DEFAULT_ALIGNMENT);
    char **strs = NULL;
    int n_strs = 0;
    int rc = -1;
    if (load_ckpt(ckpt_path, &c, &m, &tok, true, err) || check_expressible(ckpt_path, &c, true, err))
        goto done;
    if (refuse_router_bias(ckpt_path, &c, &m, "GGUF (llama)", err)) goto done;
    if (check_router_exportable(&c, ckpt_path, "GGUF (llama)", err)) goto done;
    const ModelShape *s = &m.s;
    gguf_w_str(&w, "general.architecture", "llama");
    gguf_w_str(&w, "general.name", c.name ? c.name : "moetrain");
    gguf_w_u32(&w, "general.alignment", GGUF_DEFAULT_ALIGNMENT);
    gguf_w_u32(&w, "general.file_type", type == GGML_F32 ? 0 : type == GGML_F16 ? 1 : 7);
    gguf_w_u32(&w, "llama.context_length", (uint32_t)c.train.seq_len);
    gguf_w_u32(&w, "llama.embedding_length", (uint32_t)s->C);
    gguf_w_u32(&w, "llama.block_count", (uint32_t)s->L);
    gguf_w_u32(&w, "llama.feed_forward_length", (uint32_t)s->F);
    gguf_w_u32(&w, "llama.attention.head_count", (uint32_t)s->H);
    gguf_w_u32(&w, "llama.attention.head_count_kv", (uint32_t)s->Hkv);
    gguf_w_u32(&w, "llama.attention.key_length", (uint32_t)s->D);
    gguf_w_u32(&w, "llama.attention.value_length", (uint32_t)s->D);
    gguf_w_f32(&w, "llama.attention.layer_norm_rms_epsilon", (float)c.model.norm_eps);
    gguf_w_f32(&w, "llama.rope.freq_base", (float)c.model.rope_theta);
    gguf_w_u32(&w, "llama.rope.dimension_count", (uint32_t)s->D);
    gguf_w_u32(&w, "llama.vocab_size", (uint32_t)s->V);
    if (s->E > 0) {
        gguf_w_u32(&w, "llama.expert_count", (uint32_t)s->E);
        gguf_w_u32(&w, "llama.expert_used_count", (uint32_t)s->K);
    }
    /* Tokenizer: tokens in the GPT-2 alphabet, types (1 normal, 3 control), ranked merges. */
    const int V = tok_vocab_size(&tok), M = tok_n_merges(&tok), eot = tok_eot(&tok);
    strs = moe_calloc(sizeof(char *) * (size_t)(V > M ? V : M));
    int32_t *types = moe_malloc(sizeof(int32_t) * (size_t)V);
    for (int id = 0; id < V; id++) {
        size_t len = tok_token_gpt2_str(&tok, id, NULL, 0);
        strs[id] = moe_malloc(len + 1);
        tok_token_gpt2_str(&tok, id, strs[id], len + 1);
        types[id] = id == eot ? 3 : 1;
    }
    n_strs = V;
    gguf_w_str(&w, "tokenizer.ggml.model", "gpt2");
    gguf_w_str(&w, "tokenizer.ggml.pre", "gpt-2");
    gguf_w_arr_str(&w, "tokenizer.ggml.tokens", (const char *const *)strs, (size_t)V);
    gguf_w_arr_i32(&w, "tokenizer.ggml.token_type", types, (size_t)V);
    moe_free(types);
    {
        char **mer = moe_calloc(sizeof(char *) * (size_t)(M ? M : 1));
        for (int r = 0; r < M; r++) {
            int32_t a, b;
            tok_merge(&tok, r, &a, &b);
            size_t la = strlen(strs[a]), lb = strlen(strs[b]);
            mer[r] = moe_malloc(la + lb + 2);
            memcpy(mer[r], strs[a], la);
            mer[r][la] = ' ';
            memcpy(mer[r] + la + 1, strs[b], lb + 1);
        }
        gguf_w_arr_str(&w, "tokenizer.ggml.merges", (const char *const *)mer, (size_t)M);
        for (int r = 0; r < M; r++) moe_free(mer[r]);
        moe_free(mer);
    }
    gguf_w_u32(&w, "tokenizer.ggml.bos_token_id", (uint32_t)eot);
    gguf_w_u32(&w, "tokenizer.ggml.eos_token_id", (uint32_t)eot);
    gguf_w_bool(&w, "tokenizer.ggml.add_bos_token", false);
    gguf_w_bool(&w, "tokenizer.ggml.add_eos_token", false);

    /* Tensors: ggml lists dims innermost first, so ne is our shape reversed. */
    float *scratch = NULL;
    size_t scratch_n = 0;
    for (int i = 0; i < m.ps.count; i++) {
        const Param *p = &m.ps.p[i];
        char name[128];
        int heads;
        if (!gguf_name(p, s, name, sizeof name, &heads)) continue;
        uint64_t ne[GGUF_MAX_DIMS] = {0};
        for (int k = 0; k < p->t.ndim; k++) ne[k] = (uint64_t)p->t.shape[p->t.ndim - 1 - k];
        const float *data = p->t.data;
        if (heads) {
            if (scratch_n < p->t.n) {
                moe_free(scratch);
                scratch = moe_malloc(sizeof(float) * p->t.n);
                scratch_n = p->t.n;
            }
            export_permute_rope_rows(p->t.data, scratch, heads, s->D, s->C, false);
            data = scratch;
        }
        GgmlType tt = type;
        if (p->t.ndim == 1 || strstr(name, "ffn_gate_inp")) tt = GGML_F32;
        else if (tt == GGML_Q8_0 && ne[0] % 32) tt = GGML_F16;
        gguf_w_tensor(&w, name, p->t.ndim, ne, tt, data);
    }
    moe_free(scratch);
    rc = gguf_w_save(&w, out_path, err);
done:
    for (int i = 0; i < n_strs; i++) moe_free(strs[i]);
    moe_free(strs);
    gguf_w_free(&w);
    tok_free(&tok);
    model_free(&m);
    config_free(&c);
    return rc;
}

/* ------------------------------------------------------------------ loading */

void model_source_free(ModelSource *src) {
    if (!src) return;
    model_free(&src->model);
    tok_free(&src->tok);
    memset(src, 0, sizeof *src);
}

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

static int load_hf(ModelSource *src, const char *dir, MoeErr *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    uint8_t *buf = NULL;
    size_t n = 0;
    if (fs_read_file(path, &buf, &n, err)) return -1;
    JsonValue cfg;
    int rc = json_parse(&cfg, (const char *)buf, n, path, 1, err);
    moe_free(buf);
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
        if (is_noise(p)) {
            memset(p->t.data, 0, sizeof(float) * p->t.n);
            continue;
        }
        int ne = p->block == PBLOCK_EXPERT ? m->e_local : 1;
        for (int e = 0; e < ne; e++) {
            char name[160];
            expand_name(p->name, e, name, sizeof name);
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
    /* Tokenizer (optional: logits needs none). */
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    struct stat sb;
    if (stat(path, &sb) == 0) {
        if (fs_read_file(path, &buf, &n, err)) goto done;
        int prc = json_parse(&tj, (const char *)buf, n, path, 1, err);
        moe_free(buf);
        if (prc) goto done;
        const JsonValue *model = json_get(&tj, "model");
        const JsonValue *vocab = json_get(model, "vocab"), *merges = json_get(model, "merges");
        if (!vocab || vocab->type != JSON_OBJ || !merges || merges->type != JSON_ARR ||
            (int)vocab->n != s.V) {
            moe_errorf(err, "%s: model.vocab (%d entries expected) or model.merges is missing",
                       path, s.V);
            moe_hintf(err, "export the model again");
            goto done;
        }
        tk = moe_calloc(sizeof(char *) * (size_t)s.V);
        tkl = moe_calloc(sizeof(size_t) * (size_t)s.V);
        mg = moe_calloc(sizeof(char *) * (merges->n + 1));
        mgl = moe_calloc(sizeof(size_t) * (merges->n + 1));
        for (size_t i = 0; i < vocab->n; i++) {
            const JsonValue *v = &vocab->items[i];
            if (v->type != JSON_NUM || v->num < 0 || v->num >= s.V || v->num != floor(v->num) ||
                tk[(int)v->num]) {
                moe_errorf(err, "%s: vocab entry '%s' has a bad or repeated id", path, vocab->keys[i]);
                moe_hintf(err, "export the model again");
                goto done;
            }
            tk[(int)v->num] = vocab->keys[i];
            tkl[(int)v->num] = strlen(vocab->keys[i]);
        }
        for (size_t i = 0; i < merges->n; i++) {
            if (merges->items[i].type != JSON_STR) {
                moe_errorf(err, "%s: merge %zu is not a string \"a b\"", path, i);
                moe_hintf(err, "export the model again");
                goto done;
            }
            mg[i] = merges->items[i].str;
            mgl[i] = strlen(mg[i]);
        }
        if (tok_from_strings(&src->tok, tk, tkl, s.V, mg, mgl, (int)merges->n, path, err))
            goto done;
        src->has_tok = true;
    }
    rc = 0;
done:
    moe_free(tk);
    moe_free(tkl);
    moe_free(mg);
    moe_free(mgl);
    json_free(&tj);
    st_model_close(&st);
    json_free(&cfg);
    return rc;
}

static int load_gguf(ModelSource *src, const char *path, MoeErr *err) {
    GgufFile f;
    int rc = -1;
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
        if (!gguf_name(p, &s, name, sizeof name, &heads)) {
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
        if (tok_from_strings(&src->tok, tk, tkl, (int)V, mg, mgl, (int)M, path, err)) goto done;
        src->has_tok = true;
    }
    rc = 0;
done:
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
            rc = load_ckpt(path, &c, &src->model, &src->tok, false, err);
            src->has_tok = rc == 0;
            src->context_len = c.train.seq_len;
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
