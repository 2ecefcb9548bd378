/* export_tokenizer.c: the tokenizer in the HF and GGUF vocabulary forms, and back. See
 * export_tokenizer.h. */
#include "checkpoints/export_tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoints/json_out.h"
#include "core/fs.h"
#include "data/pretok_patterns.h"
#include "data/pretokenize.h"

/* A byte string and the token id it belongs to, ordered by bytes (memcmp, then length). */
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

char **export_tok_vocab(const Tokenizer *t) {
    const int V = tok_vocab_size(t);
    char **s = moe_calloc(sizeof(char *) * (size_t)V);
    for (int id = 0; id < V; id++) {
        size_t len = tok_token_gpt2_str(t, id, NULL, 0);
        s[id] = moe_malloc(len + 1);
        tok_token_gpt2_str(t, id, s[id], len + 1);
    }
    return s;
}

char **export_tok_merges(const Tokenizer *t, char *const *vocab) {
    const int M = tok_n_merges(t);
    char **mer = moe_calloc(sizeof(char *) * (size_t)(M ? M : 1));
    for (int r = 0; r < M; r++) {
        int32_t a, b;
        tok_merge(t, r, &a, &b);
        size_t la = strlen(vocab[a]), lb = strlen(vocab[b]);
        mer[r] = moe_malloc(la + lb + 2);
        memcpy(mer[r], vocab[a], la);
        mer[r][la] = ' ';
        memcpy(mer[r] + la + 1, vocab[b], lb + 1);
    }
    return mer;
}

void export_tok_strings_free(char **s, int n) {
    if (!s) return;
    for (int i = 0; i < n; i++) moe_free(s[i]);
    moe_free(s);
}

int export_tok_duplicates(const Tokenizer *t) {
    if (t->kind == TOK_KIND_HF) return 0;  /* its own file is written back */
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

int export_tok_write_hf(const char *path, const Tokenizer *t, MoeErr *err) {
    if (t->kind == TOK_KIND_HF) return tok_save(t, path, err);  /* the file, as it was read */
    FsAtomicFile af;
    if (fs_atomic_open(&af, path, err)) return -1;
    FILE *fp = af.fp;
    const int V = tok_vocab_size(t), M = tok_n_merges(t), eot = tok_eot(t);
    char **vocab = export_tok_vocab(t), **mer = export_tok_merges(t, vocab);
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
        fputs(id ? ",\n      " : "\n      ", fp);
        json_out_str(fp, vocab[id], strlen(vocab[id]));
        fprintf(fp, ": %d", id);
    }
    fprintf(fp, "\n    },\n    \"merges\": [");
    for (int r = 0; r < M; r++) {
        fputs(r ? ",\n      " : "\n      ", fp);
        json_out_str(fp, mer[r], strlen(mer[r]));
    }
    fprintf(fp, "\n    ]\n  }\n}\n");
    export_tok_strings_free(mer, M);
    export_tok_strings_free(vocab, V);
    return fs_atomic_commit(&af, err);
}

int export_tok_from_strings(Tokenizer *t, const char *const *tok, const size_t *tok_len, int V,
                            const char *const *mer, const size_t *mer_len, int M,
                            const char *label, MoeErr *err) {
    memset(t, 0, sizeof *t);
    if (V < TOK_MIN_VOCAB || M != V - 257) {
        moe_errorf(err, "%s: %d tokens and %d merges do not have moetrain's layout (V-257 merges)",
                   label, V, M);
        return moe_hintf(err, "only tokenizers exported by moetrain can be read back");
    }
    if (tok_len[V - 1] != strlen(TOK_EOT_TEXT) || memcmp(tok[V - 1], TOK_EOT_TEXT, tok_len[V - 1])) {
        moe_errorf(err, "%s: the last token is not %s", label, TOK_EOT_TEXT);
        return moe_hintf(err, "only tokenizers exported by moetrain can be read back");
    }
    /* ids 0..255 are the bytes in order: a GPT-2 style file with V - 257 merges is not ours */
    for (int b = 0; b < 256; b++) {
        char want[4];
        uint32_t cp = tok_byte_to_unicode((uint8_t)b);
        size_t wl = cp < 0x80 ? 1 : 2;
        if (cp < 0x80) want[0] = (char)cp;
        else { want[0] = (char)(0xC0 | (cp >> 6)); want[1] = (char)(0x80 | (cp & 0x3F)); }
        if (tok_len[b] != wl || memcmp(tok[b], want, wl) != 0) {
            moe_errorf(err, "%s: token %d is not byte %d: not moetrain's layout", label, b, b);
            return moe_hintf(err, "only tokenizers exported by moetrain can be read back");
        }
    }
    StrId *map = moe_malloc(sizeof(StrId) * (size_t)V);
    for (int i = 0; i < V; i++) map[i] = (StrId){tok[i], tok_len[i], i};
    qsort(map, (size_t)V, sizeof *map, cmp_strid);
    /* the tokenizer file (data/tokenizer.h) these strings stand for, then tok_load's checks */
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
    if (!rc) rc = tok_load_buffer(t, (const uint8_t *)txt, n, label, err);
    moe_free(txt);
    return rc;
}

int export_tok_from_gguf(Tokenizer *t, const char *const *tok, const size_t *tok_len,
                         const int32_t *types, int V, const char *const *mer,
                         const size_t *mer_len, int M, const char *pre, size_t pre_len,
                         const char *label, MoeErr *err) {
    memset(t, 0, sizeof *t);
    /* llama.cpp's pre-tokenizer names (tokenizer.ggml.pre) and the patterns they run */
    TokPattern pat;
    bool ignore_merges = false;
    if (pre_len == 5 && !memcmp(pre, "gpt-2", 5)) pat = TOK_PAT_GPT2_WS;
    else if (pre_len == 9 && !memcmp(pre, "llama-bpe", 9)) { pat = TOK_PAT_LLAMA3; ignore_merges = true; }
    else if (pre_len == 5 && !memcmp(pre, "qwen2", 5)) pat = TOK_PAT_QWEN2;
    else {
        moe_errorf(err, "%s: tokenizer.ggml.pre is \"%.*s\", a pre-tokenizer moetrain does not "
                   "know", label, (int)(pre_len < 60 ? pre_len : 60), pre);
        return moe_hintf(err, "moetrain reads back gpt-2, llama-bpe and qwen2 (docs/tokenizers.md)");
    }
    char *txt = NULL;
    size_t n = 0;
    FILE *fp = open_memstream(&txt, &n);
    ASSERT(fp != NULL, "open_memstream failed");
    fputs("{\"added_tokens\": [", fp);
    int na = 0;
    for (int id = 0; id < V; id++)
        if (types && (types[id] == 3 || types[id] == 4)) {  /* control, user-defined */
            fprintf(fp, "%s{\"id\": %d, \"special\": %s, \"content\": ", na++ ? ", " : "", id,
                    types[id] == 3 ? "true" : "false");
            json_out_str(fp, tok[id], tok_len[id]);
            fputc('}', fp);
        }
    fputs("], \"normalizer\": null, \"decoder\": {\"type\": \"ByteLevel\"}, ", fp);
    if (pat == TOK_PAT_GPT2_WS) {
        fputs("\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"use_regex\": true}, ", fp);
    } else {
        const char *re = tok_pattern_regex(pat);
        fputs("\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": "
              "\"Split\", \"behavior\": \"Isolated\", \"pattern\": {\"Regex\": ", fp);
        json_out_str(fp, re, strlen(re));
        fputs("}}, {\"type\": \"ByteLevel\", \"use_regex\": false}]}, ", fp);
    }
    fprintf(fp, "\"model\": {\"type\": \"BPE\", \"ignore_merges\": %s, \"vocab\": {",
            ignore_merges ? "true" : "false");
    int nv = 0;
    for (int id = 0; id < V; id++) {
        if (types && (types[id] == 3 || types[id] == 4)) continue;
        if (nv++) fputs(", ", fp);
        json_out_str(fp, tok[id], tok_len[id]);
        fprintf(fp, ": %d", id);
    }
    fputs("}, \"merges\": [", fp);
    for (int r = 0; r < M; r++) {
        if (r) fputs(", ", fp);
        json_out_str(fp, mer[r], mer_len[r]);
    }
    fputs("]}}", fp);
    fclose(fp);
    int rc = tok_load_buffer(t, (const uint8_t *)txt, n, label, err);
    free(txt);  /* open_memstream's buffer comes from malloc */
    return rc;
}
