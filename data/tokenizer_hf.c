/* tokenizer_hf.c: reading a Hugging Face tokenizer.json that holds a byte-level BPE into a
 * Tokenizer of kind TOK_KIND_HF. See tokenizer.h; what is read and what is refused is
 * docs/tokenizers.md.
 *
 * The file's parts and what becomes of them:
 *   model          type "BPE" (or no type), vocab {token: id}, merges ("A B" strings or
 *                  [A, B] pairs) in rank order, ignore_merges; dropout must be off and the
 *                  subword prefix/suffix empty (they change what BPE makes)
 *   added_tokens   [{id, content, special}]: decoded to their text; never split out of text
 *   normalizer     null (or an empty Sequence): anything else changes text, refused
 *   pre_tokenizer  ByteLevel (use_regex true: the GPT-2 pattern), or a Sequence of a Split
 *                  (Regex pattern, behavior Isolated, not inverted) and ByteLevel (use_regex
 *                  false); add_prefix_space must be false; the Regex must be a known pattern
 *   decoder        null or ByteLevel
 *   post_processor, truncation, padding: not used (encode is add_special_tokens=False on
 *                  whole texts)
 * Every vocabulary string must be in GPT-2's byte alphabet (added tokens may be any text)
 * and all 256 single bytes must be tokens, so every byte string encodes losslessly.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/json.h"
#include "data/pretok_patterns.h"
#include "data/pretokenize.h"
#include "data/tokenizer.h"
#include "data/wordmap.h"

/* The end-of-text tokens, most preferred first: GPT-2, Qwen2 and cl100k; Llama 3;
 * DeepSeek (fullwidth bars, U+2581 between words); SentencePiece-style names. */
static const char *const EOT_NAMES[] = {
    "<|endoftext|>", "<|end_of_text|>",
    ("<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"), "</s>", "<eos>"};
#define N_EOT_NAMES (sizeof EOT_NAMES / sizeof EOT_NAMES[0])

typedef struct HfLoad {
    const char *label;
    MoeErr *err;
    Tokenizer *t;
    int16_t inv[324];        /* codepoint -> byte of GPT-2's alphabet, -1 for none */
    uint8_t *tmp;            /* (tmp_cap) scratch for one string's bytes */
    size_t tmp_cap;
} HfLoad;

/* "label: where: what" with a hint; returns -1. */
static int hf_fail(HfLoad *L, const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int hf_fail(HfLoad *L, const char *hint, const char *fmt, ...) {
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    moe_errorf(L->err, "%s: %s", L->label, msg);
    return moe_hintf(L->err, "%s", hint);
}

#define HINT_BPE "moetrain reads byte-level BPE tokenizer.json files (GPT-2, Llama 3, Qwen2 " \
                 "style; docs/tokenizers.md); use such a file or train one with " \
                 "`moetrain tokenizer train`"
#define HINT_DAMAGED "the tokenizer.json is damaged or inconsistent; download or export it again"

/* s shortened for a message: at most 60 bytes, then "...". */
static const char *shown(const char *s, char *buf, size_t cap) {
    size_t n = strlen(s);
    snprintf(buf, cap, "%.60s%s", s, n > 60 ? "..." : "");
    return buf;
}

/* The type string of a component object, or NULL. */
static const char *type_of(const JsonValue *v) {
    const JsonValue *ty = json_get(v, "type");
    return ty && ty->type == JSON_STR ? ty->str : NULL;
}

static bool is_null(const JsonValue *v) { return !v || v->type == JSON_NULL; }

/* A boolean member: def when absent or null, -1 when another type. */
static int get_bool(const JsonValue *obj, const char *key, bool def) {
    const JsonValue *v = json_get(obj, key);
    if (is_null(v)) return def;
    return v->type == JSON_BOOL ? v->b : -1;
}

/* The bytes a byte-level string stands for, into L->tmp; its length, or -1 when some
 * character is not in GPT-2's alphabet (or the string is not valid UTF-8). */
static long alphabet_bytes(HfLoad *L, const char *s) {
    size_t n = strlen(s), k = 0;
    if (n > L->tmp_cap) {
        moe_free(L->tmp);
        L->tmp_cap = 2 * n + 64;
        L->tmp = moe_malloc(L->tmp_cap);
    }
    for (size_t i = 0; i < n;) {
        TokCp c = tok_cp_at((const uint8_t *)s, n, i, true);
        if ((c.len == 1 && (uint8_t)s[i] >= 0x80) || c.cp >= 324 || L->inv[c.cp] < 0) return -1;
        L->tmp[k++] = (uint8_t)L->inv[c.cp];
        i += c.len;
    }
    return (long)k;
}

/* A token id from a JSON number: an integer in [0, TOK_MAX_VOCAB), or -1. */
static int id_of(const JsonValue *v) {
    if (!v || v->type != JSON_NUM || !(v->num >= 0) || v->num >= TOK_MAX_VOCAB ||
        v->num != (double)(int)v->num)
        return -1;
    return (int)v->num;
}

/* ---------------------------------------------------------------- the components */

static int check_model(HfLoad *L, const JsonValue *model) {
    const char *ty = type_of(model);
    if (json_get(model, "type") && (!ty || strcmp(ty, "BPE") != 0))
        return hf_fail(L, HINT_BPE, "model.type is \"%s\", not \"BPE\"", ty ? ty : "?");
    const JsonValue *d = json_get(model, "dropout");
    if (!is_null(d) && !(d->type == JSON_NUM && d->num == 0))
        return hf_fail(L, "set \"dropout\": null in a copy of the file (dropout is for "
                       "training a tokenizer, not for encoding data)",
                       "model.dropout is set: BPE dropout makes encoding random");
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        const JsonValue *a = json_get(model, affixes[k]);
        if (!is_null(a) && !(a->type == JSON_STR && a->str[0] == 0))
            return hf_fail(L, HINT_BPE, "model.%s is set: a byte-level BPE has none "
                           "(this looks like a WordPiece-style BPE)", affixes[k]);
    }
    int im = get_bool(model, "ignore_merges", false);
    if (im < 0) return hf_fail(L, HINT_DAMAGED, "model.ignore_merges is not true or false");
    L->t->ignore_merges = im;
    return 0;
}

static int check_normalizer(HfLoad *L, const JsonValue *root) {
    const JsonValue *nz = json_get(root, "normalizer");
    if (is_null(nz)) return 0;
    const char *ty = type_of(nz);
    const JsonValue *list = json_get(nz, "normalizers");
    if (ty && !strcmp(ty, "Sequence") && list && list->type == JSON_ARR && list->n == 0)
        return 0;
    return hf_fail(L, "moetrain applies no normalizer; if your text is already in that form "
                   "(NFC: most text is), set \"normalizer\": null in a copy of the file",
                   "normalizer %s changes text before it is split, which moetrain does not do",
                   ty ? ty : "(without a type)");
}

/* A ByteLevel pre-tokenizer: add_prefix_space must be false; *use_regex gets its flag. */
static int check_byte_level(HfLoad *L, const JsonValue *bl, const char *where, int *use_regex) {
    int aps = get_bool(bl, "add_prefix_space", false);
    if (aps != 0)
        return hf_fail(L, "set \"add_prefix_space\": false in a copy of the file (a leading "
                       "space would change every document's first token)",
                       "%s ByteLevel has add_prefix_space true (or not a boolean), which moetrain "
                       "does not do", where);
    *use_regex = get_bool(bl, "use_regex", true);
    if (*use_regex < 0) return hf_fail(L, HINT_DAMAGED, "%s ByteLevel use_regex is not a boolean", where);
    return 0;
}

/* The pattern of a Split pre-tokenizer (Regex, Isolated, not inverted) into *pat. */
static int check_split(HfLoad *L, const JsonValue *sp, int *pat) {
    char buf[80];
    const JsonValue *p = json_get(sp, "pattern");
    const JsonValue *re = json_get(p, "Regex");
    if (!re || re->type != JSON_STR)
        return hf_fail(L, HINT_BPE, "pre_tokenizer Split has no \"pattern\": {\"Regex\": ...} "
                       "(a String pattern is not a byte-level BPE pattern)");
    const JsonValue *beh = json_get(sp, "behavior");
    if (!beh || beh->type != JSON_STR || strcmp(beh->str, "Isolated") != 0)
        return hf_fail(L, HINT_BPE, "pre_tokenizer Split behavior is \"%s\", moetrain knows "
                       "\"Isolated\"", beh && beh->type == JSON_STR ? shown(beh->str, buf, sizeof buf)
                                                                    : "?");
    if (get_bool(sp, "invert", false) != 0)
        return hf_fail(L, HINT_BPE, "pre_tokenizer Split has invert true (or not a boolean)");
    *pat = tok_pattern_from_regex(re->str);
    if (*pat < 0) {
        char hint[400];
        snprintf(hint, sizeof hint, "moetrain has no regex engine; it knows the GPT-2, Llama 3 "
                 "/ cl100k and Qwen2 patterns (docs/tokenizers.md). A new pattern needs a "
                 "scanner in data/pretok_patterns.c");
        return hf_fail(L, hint, "pre_tokenizer Split pattern is not one moetrain knows: "
                       "\"%.300s%s\"", re->str, strlen(re->str) > 300 ? "..." : "");
    }
    return 0;
}

static int check_pre_tokenizer(HfLoad *L, const JsonValue *root) {
    const JsonValue *pt = json_get(root, "pre_tokenizer");
    if (is_null(pt))
        return hf_fail(L, HINT_BPE, "pre_tokenizer is null: a byte-level BPE splits text with "
                       "ByteLevel (or a Split and ByteLevel)");
    const char *ty = type_of(pt);
    int use_regex = 0;
    if (ty && !strcmp(ty, "ByteLevel")) {
        if (check_byte_level(L, pt, "pre_tokenizer", &use_regex)) return -1;
        if (!use_regex)
            return hf_fail(L, HINT_BPE, "pre_tokenizer ByteLevel has use_regex false and no "
                           "Split before it: the whole text would be one pre-token");
        L->t->pattern = TOK_PAT_GPT2_WS;
        return 0;
    }
    const JsonValue *list = json_get(pt, "pretokenizers");
    if (!ty || strcmp(ty, "Sequence") != 0 || !list || list->type != JSON_ARR)
        return hf_fail(L, HINT_BPE, "pre_tokenizer %s is not a byte-level pre-tokenizer "
                       "(ByteLevel, or a Sequence of Split and ByteLevel)", ty ? ty : "(no type)");
    const char *t0 = list->n >= 1 ? type_of(&list->items[0]) : NULL;
    const char *t1 = list->n >= 2 ? type_of(&list->items[1]) : NULL;
    if (list->n == 1 && t0 && !strcmp(t0, "ByteLevel")) {
        if (check_byte_level(L, &list->items[0], "pre_tokenizer", &use_regex)) return -1;
        if (!use_regex)
            return hf_fail(L, HINT_BPE, "pre_tokenizer ByteLevel has use_regex false and no "
                           "Split before it: the whole text would be one pre-token");
        L->t->pattern = TOK_PAT_GPT2_WS;
        return 0;
    }
    if (list->n != 2 || !t0 || strcmp(t0, "Split") != 0 || !t1 || strcmp(t1, "ByteLevel") != 0)
        return hf_fail(L, HINT_BPE, "pre_tokenizer is a Sequence of %zu parts (%s, %s%s); moetrain "
                       "knows Split then ByteLevel", list->n, t0 ? t0 : "-", t1 ? t1 : "-",
                       list->n > 2 ? ", ..." : "");
    int pat = -1;
    if (check_split(L, &list->items[0], &pat) ||
        check_byte_level(L, &list->items[1], "pre_tokenizer", &use_regex))
        return -1;
    if (use_regex)
        return hf_fail(L, HINT_BPE, "pre_tokenizer ByteLevel after a Split has use_regex true: "
                       "it would split the pieces again with the GPT-2 pattern");
    L->t->pattern = pat;
    return 0;
}

static int check_decoder(HfLoad *L, const JsonValue *root) {
    const JsonValue *dec = json_get(root, "decoder");
    if (is_null(dec)) return 0;
    const char *ty = type_of(dec);
    if (ty && !strcmp(ty, "ByteLevel")) return 0;
    return hf_fail(L, HINT_BPE, "decoder %s is not ByteLevel: decoding would not give back "
                   "the bytes of the tokens", ty ? ty : "(without a type)");
}

/* ---------------------------------------------------------------- vocabulary and merges */

/* Each id's text: the vocab string (owner JSON) or the added token's content, and flags. */
typedef struct Slot {
    const char *vocab;       /* model.vocab key with this id, or NULL */
    const char *content;     /* added token content with this id, or NULL */
    uint8_t added;           /* TOK_ORDINARY / TOK_ADDED_* */
} Slot;

static int read_vocab(HfLoad *L, const JsonValue *model, const JsonValue *added, Slot **out,
                      int *V_out) {
    char buf[80];
    const JsonValue *vocab = json_get(model, "vocab");
    if (!vocab || vocab->type != JSON_OBJ)
        return hf_fail(L, HINT_BPE, "model.vocab is missing or not an object");
    if (added && !is_null(added) && added->type != JSON_ARR)
        return hf_fail(L, HINT_DAMAGED, "added_tokens is not an array");
    size_t n_added = added && added->type == JSON_ARR ? added->n : 0;
    int V = 0;
    for (size_t i = 0; i < vocab->n; i++) {
        int id = id_of(&vocab->items[i]);
        if (id < 0)
            return hf_fail(L, HINT_DAMAGED, "model.vocab: \"%s\" has no id in [0, %d)",
                           shown(vocab->keys[i], buf, sizeof buf), TOK_MAX_VOCAB);
        if (id >= V) V = id + 1;
    }
    for (size_t i = 0; i < n_added; i++) {
        const JsonValue *a = &added->items[i], *c = json_get(a, "content");
        int id = id_of(json_get(a, "id"));
        if (id < 0 || !c || c->type != JSON_STR || c->str[0] == 0 || get_bool(a, "special", false) < 0)
            return hf_fail(L, HINT_DAMAGED, "added_tokens[%zu] needs an id in [0, %d), a "
                           "non-empty content and special true or false", i, TOK_MAX_VOCAB);
        if (id >= V) V = id + 1;
    }
    if (V < 256) return hf_fail(L, HINT_BPE, "%d tokens: a byte-level BPE has at least 256", V);
    if ((size_t)V > vocab->n + n_added)  /* before allocating V slots: a gap for sure */
        return hf_fail(L, HINT_BPE, "ids go up to %d but there are %zu tokens (ids must be "
                       "0..N-1 without gaps)", V - 1, vocab->n + n_added);
    Slot *sl = moe_calloc(sizeof(Slot) * (size_t)V);
    *out = sl;
    *V_out = V;
    for (size_t i = 0; i < vocab->n; i++) {
        int id = id_of(&vocab->items[i]);
        if (sl[id].vocab)
            return hf_fail(L, HINT_DAMAGED, "model.vocab: id %d is given to both \"%s\" and "
                           "another token", id, shown(vocab->keys[i], buf, sizeof buf));
        sl[id].vocab = vocab->keys[i];
    }
    for (size_t i = 0; i < n_added; i++) {
        const JsonValue *a = &added->items[i];
        int id = id_of(json_get(a, "id"));
        if (sl[id].content)
            return hf_fail(L, HINT_DAMAGED, "added_tokens: id %d is given twice", id);
        sl[id].content = json_get(a, "content")->str;
        sl[id].added = get_bool(a, "special", false) ? TOK_ADDED_SPECIAL : TOK_ADDED_NORMAL;
    }
    for (int id = 0; id < V; id++)
        if (!sl[id].vocab && !sl[id].content)
            return hf_fail(L, HINT_BPE, "no token has id %d (ids must be 0..%d without gaps)",
                           id, V - 1);
    return 0;
}

/* Fill t's token bytes (tok_off, tok_len, tok_bytes, added) from the slots. */
static int token_bytes(HfLoad *L, const Slot *sl, int V) {
    char buf[80], buf2[80];
    Tokenizer *t = L->t;
    t->vocab_size = V;
    t->tok_off = moe_malloc(sizeof(uint32_t) * (size_t)V);
    t->tok_len = moe_malloc(sizeof(uint32_t) * (size_t)V);
    t->added = moe_calloc((size_t)V);
    size_t cap = 1024, total = 0;
    t->tok_bytes = moe_malloc(cap);
    for (int id = 0; id < V; id++) {
        const char *s = sl[id].content ? sl[id].content : sl[id].vocab;
        long n = alphabet_bytes(L, s);
        if (n < 0 && !sl[id].content)
            return hf_fail(L, HINT_BPE, "model.vocab: \"%s\" (id %d) is not written in GPT-2's "
                           "byte alphabet: not a byte-level BPE", shown(s, buf, sizeof buf), id);
        const uint8_t *b = n >= 0 ? L->tmp : (const uint8_t *)s;  /* HF's ByteLevel decoder */
        size_t len = n >= 0 ? (size_t)n : strlen(s);
        if (len > TOK_MAX_TOKEN_BYTES || total + len > UINT32_MAX)
            return hf_fail(L, HINT_DAMAGED, "token %d is too long", id);
        wordmap_grow((void **)&t->tok_bytes, &cap, total + len, 1);
        memcpy(t->tok_bytes + total, b, len);
        if (sl[id].content && sl[id].vocab && strcmp(sl[id].content, sl[id].vocab) != 0) {
            /* an added token that is also in the vocab, under another spelling */
            long m = alphabet_bytes(L, sl[id].vocab);
            if (m < 0 || (size_t)m != len || memcmp(L->tmp, t->tok_bytes + total, len) != 0)
                return hf_fail(L, HINT_DAMAGED, "id %d is \"%s\" in model.vocab but \"%s\" in "
                               "added_tokens", id, shown(sl[id].vocab, buf2, sizeof buf2),
                               shown(s, buf, sizeof buf));
        }
        t->tok_off[id] = (uint32_t)total;
        t->tok_len[id] = (uint32_t)len;
        t->added[id] = sl[id].added;
        total += len;
    }
    return 0;
}

/* Split merge r (JSON item m) into its two strings a, b (pointers into the item or into
 * split, which is a scratch copy). */
static int merge_parts(HfLoad *L, const JsonValue *m, size_t r, char **split, size_t *split_cap,
                       const char **a, const char **b) {
    if (m->type == JSON_ARR && m->n == 2 && m->items[0].type == JSON_STR &&
        m->items[1].type == JSON_STR) {
        *a = m->items[0].str;
        *b = m->items[1].str;
        return 0;
    }
    const char *sp = m->type == JSON_STR ? strchr(m->str, ' ') : NULL;
    if (!sp || strchr(sp + 1, ' '))
        return hf_fail(L, HINT_DAMAGED, "model.merges[%zu] is not \"A B\" (one space) or "
                       "[\"A\", \"B\"]", r);
    size_t n = strlen(m->str);
    if (n + 1 > *split_cap) {
        moe_free(*split);
        *split_cap = 2 * n + 16;
        *split = moe_malloc(*split_cap);
    }
    memcpy(*split, m->str, n + 1);
    (*split)[sp - m->str] = 0;
    *a = *split;
    *b = *split + (sp - m->str) + 1;
    return 0;
}

static int read_merges(HfLoad *L, const JsonValue *model) {
    Tokenizer *t = L->t;
    const JsonValue *mer = json_get(model, "merges");
    if (!mer || mer->type != JSON_ARR)
        return hf_fail(L, HINT_BPE, "model.merges is missing or not an array");
    if (mer->n > (size_t)TOK_MAX_VOCAB)
        return hf_fail(L, HINT_DAMAGED, "model.merges has %zu merges", mer->n);
    t->n_merges = (int)mer->n;
    t->merges = moe_malloc(sizeof(int32_t) * 2 * (mer->n ? mer->n : 1));
    t->merge_id = moe_malloc(sizeof(int32_t) * (mer->n ? mer->n : 1));
    char *split = NULL, *joined = NULL, buf[2][80];
    size_t split_cap = 0, joined_cap = 0;
    int rc = 0;
    for (size_t r = 0; r < mer->n && !rc; r++) {
        const char *part[2];
        if ((rc = merge_parts(L, &mer->items[r], r, &split, &split_cap, &part[0], &part[1])))
            break;
        int32_t ab[2];
        size_t la = 0;
        for (int k = 0; k < 2 && !rc; k++) {
            long n = alphabet_bytes(L, part[k]);
            ab[k] = n >= 0 ? tok_token_id(t, L->tmp, (size_t)n) : -1;
            if (ab[k] < 0)
                rc = hf_fail(L, HINT_DAMAGED, "model.merges[%zu] (\"%s\" \"%s\"): \"%s\" is not "
                             "in model.vocab", r, shown(part[0], buf[0], sizeof buf[0]),
                             shown(part[1], buf[1], sizeof buf[1]), part[k]);
        }
        if (rc) break;
        la = t->tok_len[ab[0]];
        size_t lb = t->tok_len[ab[1]];
        if (la + lb > joined_cap) {
            moe_free(joined);
            joined_cap = 2 * (la + lb) + 16;
            joined = moe_malloc(joined_cap);
        }
        memcpy(joined, t->tok_bytes + t->tok_off[ab[0]], la);
        memcpy(joined + la, t->tok_bytes + t->tok_off[ab[1]], lb);
        int32_t made = tok_token_id(t, (const uint8_t *)joined, la + lb);
        if (made < 0)
            rc = hf_fail(L, HINT_DAMAGED, "model.merges[%zu] (\"%s\" \"%s\") makes a token that "
                         "is not in model.vocab", r, shown(part[0], buf[0], sizeof buf[0]),
                         shown(part[1], buf[1], sizeof buf[1]));
        t->merges[2 * r] = ab[0];
        t->merges[2 * r + 1] = ab[1];
        t->merge_id[r] = made;
    }
    moe_free(split);
    moe_free(joined);
    return rc;
}

/* The end-of-text id: the first of EOT_NAMES among the added tokens, else in the vocab. */
static int pick_eot(HfLoad *L) {
    Tokenizer *t = L->t;
    for (int pass = 0; pass < 2; pass++)
        for (size_t k = 0; k < N_EOT_NAMES; k++) {
            size_t nl = strlen(EOT_NAMES[k]);
            for (int id = 0; id < t->vocab_size; id++)
                if ((t->added[id] != TOK_ORDINARY) == (pass == 0) && t->tok_len[id] == nl &&
                    !memcmp(t->tok_bytes + t->tok_off[id], EOT_NAMES[k], nl)) {
                    t->eot = id;
                    return 0;
                }
        }
    return hf_fail(L, "moetrain separates documents with an end-of-text token; add one to "
                   "added_tokens (special: true, a new id) in a copy of the file, or use a "
                   "tokenizer that has one",
                   "no end-of-text token: none of <|endoftext|>, <|end_of_text|>, "
                   "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>, </s>, "
                   "<eos> is a token");
}

static void hash_hf(Tokenizer *t) {
    uint64_t h = wordmap_fnv1a(WORDMAP_FNV_OFFSET, "moetrain-hf 1", 13);
    int32_t head[4] = {t->vocab_size, t->pattern, t->ignore_merges, t->eot};
    uint8_t le[4];
    for (int i = 0; i < 4; i++) {
        for (int k = 0; k < 4; k++) le[k] = (uint8_t)((uint32_t)head[i] >> (8 * k));
        h = wordmap_fnv1a(h, le, 4);
    }
    for (int id = 0; id < t->vocab_size; id++) {
        for (int k = 0; k < 4; k++) le[k] = (uint8_t)(t->tok_len[id] >> (8 * k));
        h = wordmap_fnv1a(h, le, 4);
        h = wordmap_fnv1a(h, t->tok_bytes + t->tok_off[id], t->tok_len[id]);
        h = wordmap_fnv1a(h, &t->added[id], 1);
    }
    for (int r = 0; r < t->n_merges; r++) {
        int32_t v[3] = {t->merges[2 * r], t->merges[2 * r + 1], t->merge_id[r]};
        for (int i = 0; i < 3; i++) {
            for (int k = 0; k < 4; k++) le[k] = (uint8_t)((uint32_t)v[i] >> (8 * k));
            h = wordmap_fnv1a(h, le, 4);
        }
    }
    t->hash = h;
}

int tok_load_hf(Tokenizer *t, const uint8_t *buf, size_t n, const char *label, MoeErr *err) {
    memset(t, 0, sizeof *t);
    HfLoad L = {.label = label, .err = err, .t = t};
    for (int c = 0; c < 324; c++) L.inv[c] = -1;
    for (int b = 0; b < 256; b++) L.inv[tok_byte_to_unicode((uint8_t)b)] = (int16_t)b;
    JsonValue root;
    Slot *sl = NULL;
    int V = 0, rc = -1;
    size_t bom = n >= 3 && buf[0] == 0xEF && buf[1] == 0xBB && buf[2] == 0xBF ? 3 : 0;
    if (json_parse(&root, (const char *)buf + bom, n - bom, label, 1, err)) {
        moe_hintf(err, "the file is not valid JSON (a Hugging Face tokenizer.json is); "
                  "download or export it again");
        return -1;
    }
    t->kind = TOK_KIND_HF;
    const JsonValue *model = json_get(&root, "model");
    if (root.type != JSON_OBJ || !model || model->type != JSON_OBJ) {
        hf_fail(&L, HINT_BPE, "no \"model\" object: not a Hugging Face tokenizer.json");
        goto done;
    }
    if (check_model(&L, model) || check_normalizer(&L, &root) ||
        check_pre_tokenizer(&L, &root) || check_decoder(&L, &root) ||
        read_vocab(&L, model, json_get(&root, "added_tokens"), &sl, &V) ||
        token_bytes(&L, sl, V))
        goto done;
    tok_index_words(t);
    for (int b = 0; b < 256; b++) {
        uint8_t byte = (uint8_t)b;
        t->byte_id[b] = tok_token_id(t, &byte, 1);
        if (t->byte_id[b] < 0) {
            char s[8];
            size_t k = 0;
            uint32_t cp = tok_byte_to_unicode(byte);
            if (cp < 0x80) s[k++] = (char)cp;
            else { s[k++] = (char)(0xC0 | (cp >> 6)); s[k++] = (char)(0x80 | (cp & 0x3F)); }
            s[k] = 0;
            hf_fail(&L, HINT_BPE, "byte 0x%02X (\"%s\") is not in model.vocab: text with it "
                    "could not be encoded", b, s);
            goto done;
        }
    }
    if (read_merges(&L, model) || pick_eot(&L)) goto done;
    tok_index_ranks(t, true);
    hash_hf(t);
    t->file = moe_malloc(n);
    memcpy(t->file, buf, n);
    t->file_n = n;
    rc = 0;
done:
    json_free(&root);
    moe_free(sl);
    moe_free(L.tmp);
    if (rc) tok_free(t);
    return rc;
}
