/* export_gguf.c: GGUF export for llama.cpp. See export_gguf.h. */
#include "checkpoints/export_gguf.h"

#include <string.h>

#include "checkpoints/export_ckpt.h"
#include "checkpoints/export_names.h"
#include "checkpoints/export_tokenizer.h"
#include "configs/config.h"
#include "data/pretok_patterns.h"
#include "data/tokenizer.h"
#include "layers/model.h"

/* The llama.* hyper-parameter keys of model shape s (config c). */
static void put_hparams(GgufWriter *w, const Config *c, const ModelShape *s, GgmlType type) {
    gguf_w_str(w, "general.architecture", "llama");
    gguf_w_str(w, "general.name", c->name ? c->name : "moetrain");
    gguf_w_u32(w, "general.alignment", GGUF_DEFAULT_ALIGNMENT);
    gguf_w_u32(w, "general.file_type", type == GGML_F32 ? 0 : type == GGML_F16 ? 1 : 7);
    gguf_w_u32(w, "llama.context_length", (uint32_t)c->train.seq_len);
    gguf_w_u32(w, "llama.embedding_length", (uint32_t)s->C);
    gguf_w_u32(w, "llama.block_count", (uint32_t)s->L);
    gguf_w_u32(w, "llama.feed_forward_length", (uint32_t)s->F);
    gguf_w_u32(w, "llama.attention.head_count", (uint32_t)s->H);
    gguf_w_u32(w, "llama.attention.head_count_kv", (uint32_t)s->Hkv);
    gguf_w_u32(w, "llama.attention.key_length", (uint32_t)s->D);
    gguf_w_u32(w, "llama.attention.value_length", (uint32_t)s->D);
    gguf_w_f32(w, "llama.attention.layer_norm_rms_epsilon", (float)c->model.norm_eps);
    gguf_w_f32(w, "llama.rope.freq_base", (float)c->model.rope_theta);
    gguf_w_u32(w, "llama.rope.dimension_count", (uint32_t)s->D);
    gguf_w_u32(w, "llama.vocab_size", (uint32_t)s->V);
    if (s->E > 0) {
        gguf_w_u32(w, "llama.expert_count", (uint32_t)s->E);
        gguf_w_u32(w, "llama.expert_used_count", (uint32_t)s->K);
    }
}

/* The tokenizer.ggml.* keys: tokens in the GPT-2 alphabet, types (1 normal, 3 control),
 * ranked merges, <|endoftext|> as BOS and EOS, none added automatically. */
static void put_tokenizer(GgufWriter *w, const Tokenizer *tok) {
    const int V = tok_vocab_size(tok), M = tok_n_merges(tok), eot = tok_eot(tok);
    char **vocab = export_tok_vocab(tok);
    int32_t *types = moe_malloc(sizeof(int32_t) * (size_t)V);
    /* llama.cpp's types: 1 normal, 3 control (special added tokens), 4 user-defined */
    for (int id = 0; id < V; id++)
        types[id] = tok_added(tok, id) == TOK_ADDED_SPECIAL ? 3
                    : tok_added(tok, id) == TOK_ADDED_NORMAL ? 4 : 1;
    /* llama.cpp's names for the pre-tokenizer patterns (its llama-vocab.cpp) */
    const char *pre = tok->pattern == TOK_PAT_LLAMA3  ? "llama-bpe"
                      : tok->pattern == TOK_PAT_QWEN2 ? "qwen2" : "gpt-2";
    gguf_w_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_w_str(w, "tokenizer.ggml.pre", pre);
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)vocab, (size_t)V);
    gguf_w_arr_i32(w, "tokenizer.ggml.token_type", types, (size_t)V);
    moe_free(types);
    char **mer = export_tok_merges(tok, vocab);
    gguf_w_arr_str(w, "tokenizer.ggml.merges", (const char *const *)mer, (size_t)M);
    export_tok_strings_free(mer, M);
    export_tok_strings_free(vocab, V);
    gguf_w_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)eot);
    gguf_w_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eot);
    gguf_w_bool(w, "tokenizer.ggml.add_bos_token", false);
    gguf_w_bool(w, "tokenizer.ggml.add_eos_token", false);
}

/* Every exported parameter of m as a tensor of type (or f32 / f16, see export_gguf). */
static void put_tensors(GgufWriter *w, const Model *m, GgmlType type) {
    const ModelShape *s = &m->s;
    float *scratch = NULL;
    size_t scratch_n = 0;
    for (int i = 0; i < m->ps.count; i++) {
        const Param *p = &m->ps.p[i];
        char name[128];
        int heads;
        if (!export_gguf_name(p, s, name, sizeof name, &heads)) continue;
        /* ggml lists dims innermost first, so ne is our shape reversed */
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
        gguf_w_tensor(w, name, p->t.ndim, ne, tt, data);
    }
    moe_free(scratch);
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
    int rc = -1;
    if (export_read_ckpt(ckpt_path, &c, &m, &tok, true, err) ||
        export_check_expressible(ckpt_path, &c, &m, EXPORT_GGUF, err))
        goto done;
    put_hparams(&w, &c, &m.s, type);
    put_tokenizer(&w, &tok);
    put_tensors(&w, &m, type);
    rc = gguf_w_save(&w, out_path, err);
done:
    gguf_w_free(&w);
    tok_free(&tok);
    model_free(&m);
    config_free(&c);
    return rc;
}
