/* tokenizer.c: the byte-level BPE tokenizer: building it from its merges, encode, decode,
 * and its file. See tokenizer.h; training is data/bpe_train.c, the pre-tokenizer
 * data/pretokenize.c.
 */
#include "data/tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "core/fs.h"
#include "data/pretok_patterns.h"
#include "data/pretokenize.h"
#include "data/wordmap.h"

/* ---------------------------------------------------------------- building a Tokenizer */

static void sources_free(TokSource *src, int n) {
    for (int i = 0; i < n; i++) moe_free(src[i].name);
    moe_free(src);
}

void tok_free(Tokenizer *t) {
    if (!t) return;
    sources_free(t->sources, t->n_sources);
    moe_free(t->merges); moe_free(t->tok_off); moe_free(t->tok_len); moe_free(t->tok_bytes);
    moe_free(t->rank_keys); moe_free(t->rank_vals); moe_free(t->merge_id); moe_free(t->added);
    moe_free(t->word_slots); moe_free(t->file);
    memset(t, 0, sizeof *t);
}

/* Insert merge (a, b) with rank r into the rank table; false if the pair is already there
 * (its rank then becomes r when last_wins). */
static bool rank_insert(Tokenizer *t, int32_t a, int32_t b, int32_t r, bool last_wins) {
    uint64_t key = tok_pair_key(a, b) + 1;
    size_t s = moe_hash64(key) & (t->rank_cap - 1);
    while (t->rank_keys[s]) {
        if (t->rank_keys[s] == key) {
            if (last_wins) t->rank_vals[s] = r;
            return false;
        }
        s = (s + 1) & (t->rank_cap - 1);
    }
    t->rank_keys[s] = key;
    t->rank_vals[s] = r;
    return true;
}

static int32_t rank_of(const Tokenizer *t, int32_t a, int32_t b) {
    uint64_t key = tok_pair_key(a, b) + 1;
    size_t s = moe_hash64(key) & (t->rank_cap - 1);
    while (t->rank_keys[s]) {
        if (t->rank_keys[s] == key) return t->rank_vals[s];
        s = (s + 1) & (t->rank_cap - 1);
    }
    return -1;
}

static uint64_t word_hash(const uint8_t *b, size_t n) {
    return wordmap_fnv1a(WORDMAP_FNV_OFFSET, b, n);
}

int32_t tok_token_id(const Tokenizer *t, const uint8_t *bytes, size_t len) {
    if (!t->word_cap) return -1;
    size_t s = word_hash(bytes, len) & (t->word_cap - 1);
    for (; t->word_slots[s]; s = (s + 1) & (t->word_cap - 1)) {
        int32_t id = (int32_t)t->word_slots[s] - 1;
        if (t->tok_len[id] == len && !memcmp(t->tok_bytes + t->tok_off[id], bytes, len))
            return id;
    }
    return -1;
}

int tok_index_ranks(Tokenizer *t, bool last_wins) {
    t->rank_cap = 64;
    while (t->rank_cap < 2 * (size_t)t->n_merges) t->rank_cap *= 2;
    t->rank_keys = moe_calloc(t->rank_cap * sizeof(uint64_t));
    t->rank_vals = moe_malloc(t->rank_cap * sizeof(int32_t));
    for (int r = 0; r < t->n_merges; r++)
        if (!rank_insert(t, t->merges[2 * r], t->merges[2 * r + 1], r, last_wins) && !last_wins)
            return r;
    return -1;
}

void tok_index_words(Tokenizer *t) {
    t->word_cap = 64;
    while (t->word_cap < 2 * (size_t)t->vocab_size) t->word_cap *= 2;
    t->word_slots = moe_calloc(t->word_cap * sizeof(uint32_t));
    for (int id = 0; id < t->vocab_size; id++) {
        size_t len = t->tok_len[id];
        const uint8_t *b = t->tok_bytes + t->tok_off[id];
        if (t->added[id] != TOK_ORDINARY || tok_token_id(t, b, len) >= 0) continue;
        size_t s = word_hash(b, len) & (t->word_cap - 1);
        while (t->word_slots[s]) s = (s + 1) & (t->word_cap - 1);
        t->word_slots[s] = (uint32_t)id + 1;
    }
}

int tok_build(Tokenizer *t, int V, int32_t *merges) {
    memset(t, 0, sizeof *t);
    t->kind = TOK_KIND_BPE;
    t->vocab_size = V;
    t->n_merges = V - 257;
    t->merges = merges;
    t->eot = V - 1;
    t->pattern = TOK_PAT_GPT2;
    for (int b = 0; b < 256; b++) t->byte_id[b] = b;
    t->merge_id = moe_malloc((size_t)(t->n_merges ? t->n_merges : 1) * sizeof(int32_t));
    for (int r = 0; r < t->n_merges; r++) t->merge_id[r] = 256 + r;
    t->added = moe_calloc((size_t)V);
    t->added[V - 1] = TOK_ADDED_SPECIAL;
    t->tok_off = moe_malloc((size_t)V * sizeof(uint32_t));
    t->tok_len = moe_malloc((size_t)V * sizeof(uint32_t));
    size_t total = 256 + sizeof TOK_EOT_TEXT - 1;
    for (int i = 0; i < 256; i++) t->tok_len[i] = 1;
    for (int r = 0; r < t->n_merges; r++) {
        uint64_t len = (uint64_t)t->tok_len[merges[2 * r]] + t->tok_len[merges[2 * r + 1]];
        if (len > TOK_MAX_TOKEN_BYTES) return r;
        t->tok_len[256 + r] = (uint32_t)len;
        total += len;
        if (total > UINT32_MAX) return r;
    }
    t->tok_len[V - 1] = sizeof TOK_EOT_TEXT - 1;
    t->tok_bytes = moe_malloc(total);
    size_t off = 0;
    for (int i = 0; i < 256; i++) { t->tok_off[i] = (uint32_t)i; t->tok_bytes[i] = (uint8_t)i; }
    off = 256;
    for (int r = 0; r < t->n_merges; r++) {
        int32_t a = merges[2 * r], b = merges[2 * r + 1];
        t->tok_off[256 + r] = (uint32_t)off;
        memcpy(t->tok_bytes + off, t->tok_bytes + t->tok_off[a], t->tok_len[a]);
        memcpy(t->tok_bytes + off + t->tok_len[a], t->tok_bytes + t->tok_off[b], t->tok_len[b]);
        off += t->tok_len[256 + r];
    }
    t->tok_off[V - 1] = (uint32_t)off;
    memcpy(t->tok_bytes + off, TOK_EOT_TEXT, sizeof TOK_EOT_TEXT - 1);

    int dup = tok_index_ranks(t, false);
    if (dup >= 0) return dup;
    tok_index_words(t);

    uint64_t h = wordmap_fnv1a(WORDMAP_FNV_OFFSET, "moetrain-bpe 1", 14);
    uint8_t le[4];
    for (int k = 0; k < 4; k++) le[k] = (uint8_t)((uint32_t)V >> (8 * k));
    h = wordmap_fnv1a(h, le, 4);
    h = wordmap_fnv1a(h, TOK_EOT_TEXT, sizeof TOK_EOT_TEXT - 1);
    for (int i = 0; i < 2 * t->n_merges; i++) {
        for (int k = 0; k < 4; k++) le[k] = (uint8_t)((uint32_t)merges[i] >> (8 * k));
        h = wordmap_fnv1a(h, le, 4);
    }
    t->hash = h;
    return -1;
}

/* ---------------------------------------------------------------- token access */

/* UTF-8 of codepoint cp (< U+0800) into buf; returns its length. */
static size_t utf8_put(uint32_t cp, char *buf) {
    if (cp < 0x80) { buf[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        buf[0] = (char)(0xC0 | (cp >> 6)); buf[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    buf[0] = (char)(0xE0 | (cp >> 12)); buf[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    buf[2] = (char)(0x80 | (cp & 0x3F));
    return 3;  /* the alphabet stays below U+0800 */
}

int tok_eot(const Tokenizer *t) { return t->eot; }

int tok_added(const Tokenizer *t, int id) {
    ASSERT(id >= 0 && id < t->vocab_size, "token id %d outside [0, %d)", id, t->vocab_size);
    return t->added[id];
}

size_t tok_describe(const Tokenizer *t, char *out, size_t cap) {
    if (t->kind == TOK_KIND_BPE)
        return (size_t)snprintf(out, cap, "moetrain-bpe, %d tokens, pattern %s", t->vocab_size,
                                tok_pattern_name((TokPattern)t->pattern));
    size_t len;
    const uint8_t *b = tok_token_bytes(t, t->eot, &len);
    char shown[48];
    size_t k = 0;
    for (size_t i = 0; i < len && i < 40; i++)
        shown[k++] = b[i] >= 0x20 && b[i] < 0x7F ? (char)b[i] : '?';
    shown[k] = 0;
    return (size_t)snprintf(out, cap, "tokenizer.json (byte-level BPE), %d tokens, %d merges, "
                            "pattern %s, end of text %s%s = %d", t->vocab_size, t->n_merges,
                            tok_pattern_name((TokPattern)t->pattern), shown,
                            len > 40 ? "..." : "", t->eot);
}
int tok_vocab_size(const Tokenizer *t) { return t->vocab_size; }
int tok_n_merges(const Tokenizer *t) { return t->n_merges; }
uint64_t tok_hash(const Tokenizer *t) { return t->hash; }

void tok_merge(const Tokenizer *t, int r, int32_t *a, int32_t *b) {
    ASSERT(r >= 0 && r < t->n_merges, "merge rank %d outside [0, %d)", r, t->n_merges);
    *a = t->merges[2 * r];
    *b = t->merges[2 * r + 1];
}

const uint8_t *tok_token_bytes(const Tokenizer *t, int id, size_t *len) {
    ASSERT(id >= 0 && id < t->vocab_size, "token id %d outside [0, %d)", id, t->vocab_size);
    *len = t->tok_len[id];
    return t->tok_bytes + t->tok_off[id];
}

size_t tok_token_gpt2_str(const Tokenizer *t, int id, char *out, size_t cap) {
    ASSERT(id >= 0 && id < t->vocab_size, "token id %d outside [0, %d)", id, t->vocab_size);
    size_t len, w = 0;
    const uint8_t *bytes = tok_token_bytes(t, id, &len);
    for (size_t i = 0; i < len; i++) {
        char buf[4];
        size_t k = 1;
        if (t->added[id] != TOK_ORDINARY) buf[0] = (char)bytes[i];  /* literal text */
        else k = utf8_put(tok_byte_to_unicode(bytes[i]), buf);
        for (size_t j = 0; j < k; j++, w++)
            if (w + 1 < cap) out[w] = buf[j];
    }
    if (cap) out[w < cap ? w : cap - 1] = 0;
    return w;
}

/* ---------------------------------------------------------------- encode / decode */

#define CACHE_MAX_PIECE 255  /* longer pre-tokens are rare; encode them without caching */
#define CACHE_MAX_WORDS (1u << 20)

typedef struct { int32_t rank; uint32_t pos; } MergeCand;

typedef struct EncodeCtx {
    const Tokenizer *t;
    int32_t *out;
    size_t cap, n_out;
    WordMap cache;                  /* piece -> val = (offset into cache_ids << 8) | count */
    int32_t *cache_ids;
    size_t n_cache_ids, cache_ids_cap;
    int32_t *ids, *next, *prev;     /* scratch (piece length) */
    MergeCand *heap;                /* scratch (3 * piece length) */
    size_t scratch_cap, heap_cap;
} EncodeCtx;

static bool cand_below(MergeCand x, MergeCand y) {
    return x.rank != y.rank ? x.rank < y.rank : x.pos < y.pos;
}

static void cand_push(EncodeCtx *c, size_t *n, MergeCand x) {
    size_t i = (*n)++;
    while (i > 0 && cand_below(x, c->heap[(i - 1) / 2])) { c->heap[i] = c->heap[(i - 1) / 2]; i = (i - 1) / 2; }
    c->heap[i] = x;
}

static MergeCand cand_pop(EncodeCtx *c, size_t *n) {
    MergeCand top = c->heap[0], x = c->heap[--*n];
    size_t i = 0;
    for (;;) {
        size_t k = 2 * i + 1;
        if (k >= *n) break;
        if (k + 1 < *n && cand_below(c->heap[k + 1], c->heap[k])) k++;
        if (!cand_below(c->heap[k], x)) break;
        c->heap[i] = c->heap[k];
        i = k;
    }
    if (*n) c->heap[i] = x;
    return top;
}

static void cand_consider(EncodeCtx *c, size_t *nh, size_t len, int32_t i) {
    if (i < 0 || c->next[i] >= (int32_t)len) return;
    int32_t r = rank_of(c->t, c->ids[i], c->ids[c->next[i]]);
    if (r >= 0) cand_push(c, nh, (MergeCand){r, (uint32_t)i});
}

/* BPE on one pre-token (or, with ignore_merges, the token it is when it is one): apply merges lowest rank first (leftmost first within a rank, which
 * equals "merge every occurrence of the best pair left to right, repeat"). Linked list plus a
 * candidate heap, O(len log len). Result left in c->ids following c->next from 0; returns
 * the token count. */
static size_t bpe_piece(EncodeCtx *c, const uint8_t *p, size_t len) {
    if (len > c->scratch_cap) {
        moe_free(c->ids); moe_free(c->next); moe_free(c->prev); moe_free(c->heap);
        c->scratch_cap = len * 2;
        c->ids = moe_malloc(c->scratch_cap * sizeof(int32_t));
        c->next = moe_malloc(c->scratch_cap * sizeof(int32_t));
        c->prev = moe_malloc(c->scratch_cap * sizeof(int32_t));
        c->heap = moe_malloc(3 * c->scratch_cap * sizeof(MergeCand));
    }
    ASSERT(len < INT32_MAX, "pre-token of %zu bytes is too long", len);
    if (c->t->ignore_merges) {  /* HF's ignore_merges: a whole-word token wins */
        int32_t id = tok_token_id(c->t, p, len);
        if (id >= 0) {
            c->ids[0] = id;
            c->next[0] = (int32_t)len;
            return 1;
        }
    }
    size_t nh = 0, count = len;
    for (size_t i = 0; i < len; i++) {
        c->ids[i] = c->t->byte_id[p[i]]; c->next[i] = (int32_t)i + 1; c->prev[i] = (int32_t)i - 1;
    }
    for (size_t i = 0; i + 1 < len; i++) cand_consider(c, &nh, len, (int32_t)i);
    while (nh > 0) {
        MergeCand m = cand_pop(c, &nh);
        int32_t i = (int32_t)m.pos;
        if (c->ids[i] < 0 || c->next[i] >= (int32_t)len) continue;
        int32_t j = c->next[i];
        if (c->t->merges[2 * m.rank] != c->ids[i] || c->t->merges[2 * m.rank + 1] != c->ids[j])
            continue;  /* stale candidate */
        c->ids[i] = c->t->merge_id[m.rank];
        c->ids[j] = -1;
        c->next[i] = c->next[j];
        if (c->next[j] < (int32_t)len) c->prev[c->next[j]] = i;
        count--;
        cand_consider(c, &nh, len, c->prev[i]);
        cand_consider(c, &nh, len, i);
    }
    return count;
}

static void emit_id(EncodeCtx *c, int32_t id) {
    if (c->n_out < c->cap) c->out[c->n_out] = id;
    c->n_out++;
}

static void encode_piece(const uint8_t *p, size_t len, void *ctx) {
    EncodeCtx *c = ctx;
    bool cacheable = len <= CACHE_MAX_PIECE && (c->cache.n < CACHE_MAX_WORDS);
    if (cacheable) {
        bool added;
        size_t e = wordmap_get(&c->cache, p, len, &added);
        if (!added) {
            int64_t v = c->cache.val[e];
            const int32_t *ids = c->cache_ids + (v >> 8);
            for (int64_t k = 0; k < (v & 255); k++) emit_id(c, ids[k]);
            return;
        }
        size_t cnt = bpe_piece(c, p, len);
        wordmap_grow((void **)&c->cache_ids, &c->cache_ids_cap, c->n_cache_ids + cnt, sizeof(int32_t));
        c->cache.val[e] = ((int64_t)c->n_cache_ids << 8) | (int64_t)cnt;
        for (int32_t i = 0; i < (int32_t)len; i = c->next[i]) {
            c->cache_ids[c->n_cache_ids++] = c->ids[i];
            emit_id(c, c->ids[i]);
        }
        return;
    }
    bpe_piece(c, p, len);
    for (int32_t i = 0; i < (int32_t)len; i = c->next[i]) emit_id(c, c->ids[i]);
}

int tok_encode(const Tokenizer *t, const uint8_t *text, size_t n, int32_t *out, size_t cap,
               size_t *n_out) {
    EncodeCtx c;
    memset(&c, 0, sizeof c);
    c.t = t; c.out = out; c.cap = cap;
    tok_pattern_split((TokPattern)t->pattern, text, n, encode_piece, &c);
    wordmap_free(&c.cache);
    moe_free(c.cache_ids); moe_free(c.ids); moe_free(c.next); moe_free(c.prev); moe_free(c.heap);
    *n_out = c.n_out;
    return c.n_out <= cap ? 0 : -1;
}

int32_t *tok_encode_alloc(const Tokenizer *t, const uint8_t *text, size_t n, size_t *n_out) {
    int32_t *out = moe_malloc((n ? n : 1) * sizeof(int32_t));
    int rc = tok_encode(t, text, n, out, n, n_out);
    ASSERT(rc == 0, "encode produced %zu ids for %zu bytes", *n_out, n);
    return out;
}

int tok_decode(const Tokenizer *t, const int32_t *ids, size_t n, uint8_t *out, size_t cap,
               size_t *n_out) {
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->vocab_size) { *n_out = i; return -2; }
        uint32_t len = t->tok_len[ids[i]];
        if (w + len <= cap) memcpy(out + w, t->tok_bytes + t->tok_off[ids[i]], len);
        else if (w < cap) memcpy(out + w, t->tok_bytes + t->tok_off[ids[i]], cap - w);
        w += len;
    }
    *n_out = w;
    return w <= cap ? 0 : -1;
}

/* ---------------------------------------------------------------- what it was trained on */

uint64_t tok_text_hash(const uint8_t *buf, size_t n) {
    return wordmap_fnv1a(WORDMAP_FNV_OFFSET, buf, n);
}

static int cmp_source(const void *pa, const void *pb) {
    const TokSource *a = pa, *b = pb;
    if (a->size != b->size) return a->size < b->size ? -1 : 1;
    if (a->hash != b->hash) return a->hash < b->hash ? -1 : 1;
    return 0;
}

int tok_sources_match(const Tokenizer *t, const TokSource *texts, int n) {
    if (t->n_sources == 0) return -1;
    if (t->n_sources != n) return 0;
    /* sorted copies: the same files in another order (or under other names) match */
    TokSource *a = moe_malloc(sizeof(TokSource) * (size_t)n);
    TokSource *b = moe_malloc(sizeof(TokSource) * (size_t)n);
    memcpy(a, t->sources, sizeof(TokSource) * (size_t)n);
    memcpy(b, texts, sizeof(TokSource) * (size_t)n);
    qsort(a, (size_t)n, sizeof *a, cmp_source);
    qsort(b, (size_t)n, sizeof *b, cmp_source);
    int same = 1;
    for (int i = 0; i < n && same; i++) same = cmp_source(&a[i], &b[i]) == 0;
    moe_free(a);
    moe_free(b);
    return same;
}

/* ---------------------------------------------------------------- the file */

int tok_save(const Tokenizer *t, const char *path, MoeErr *err) {
    FsAtomicFile af;
    if (fs_atomic_open(&af, path, err) != 0) return -1;
    if (t->kind == TOK_KIND_HF) {
        fwrite(t->file, 1, t->file_n, af.fp);
        return fs_atomic_commit(&af, err);
    }
    fprintf(af.fp, "moetrain-bpe 1\nvocab_size %d\nspecial %d %s\n", t->vocab_size,
            t->vocab_size - 1, TOK_EOT_TEXT);
    if (t->n_sources > 0) {
        fprintf(af.fp, "trained_on %d\n", t->n_sources);
        for (int i = 0; i < t->n_sources; i++) {
            const TokSource *src = &t->sources[i];
            fprintf(af.fp, "text %llu %016llx ", (unsigned long long)src->size,
                    (unsigned long long)src->hash);
            /* the name labels only: a control character (a newline would end the line)
             * becomes '?' */
            for (const unsigned char *c = (const unsigned char *)src->name; *c; c++)
                fputc(*c < 0x20 || *c == 0x7F ? '?' : *c, af.fp);
            fputc('\n', af.fp);
        }
    }
    fprintf(af.fp, "merges %d\n", t->n_merges);
    for (int r = 0; r < t->n_merges; r++)
        fprintf(af.fp, "%d %d\n", (int)t->merges[2 * r], (int)t->merges[2 * r + 1]);
    return fs_atomic_commit(&af, err);
}

typedef struct {
    const char *path;
    const uint8_t *s;
    size_t n, pos;
    int line;
    const uint8_t *ls;  /* current line */
    size_t ll;
} LineReader;

/* Next line (without '\n') into r->ls/r->ll; false at end of file (then r->ls = NULL and
 * r->line is the number the missing line would have had). */
static bool next_line(LineReader *r) {
    if (r->pos >= r->n) {
        r->ls = NULL;
        r->ll = 0;
        r->line++;
        return false;
    }
    r->ls = r->s + r->pos;
    const uint8_t *nl = memchr(r->ls, '\n', r->n - r->pos);
    r->ll = nl ? (size_t)(nl - r->ls) : r->n - r->pos;
    r->pos += r->ll + (nl ? 1 : 0);
    r->line++;
    return true;
}

/* Strict decimal: digits only, no sign, no leading zero (except "0"), value <= max.
 * Parses s[*i..) up to the first non-digit. */
static bool parse_uint(const uint8_t *s, size_t n, size_t *i, uint64_t max, uint64_t *v) {
    size_t k = *i;
    uint64_t x = 0;
    while (k < n && s[k] >= '0' && s[k] <= '9') {
        x = x * 10 + (uint64_t)(s[k] - '0');
        if (x > max) return false;
        k++;
    }
    if (k == *i || (s[*i] == '0' && k - *i > 1)) return false;
    *i = k;
    *v = x;
    return true;
}

/* Line must be exactly "<kw> <uint>" (uint <= max). */
static bool parse_kw_uint(const LineReader *r, const char *kw, uint64_t max, uint64_t *v) {
    size_t kl = strlen(kw), i = kl + 1;
    if (r->ll < kl + 2 || memcmp(r->ls, kw, kl) != 0 || r->ls[kl] != ' ') return false;
    return parse_uint(r->ls, r->ll, &i, max, v) && i == r->ll;
}

static int load_fail(MoeErr *err, const LineReader *r, const char *what) {
    char shown[48];
    size_t k = 0;
    for (size_t i = 0; i < r->ll && k + 1 < sizeof shown; i++)
        shown[k++] = (r->ls[i] >= 0x20 && r->ls[i] < 0x7F) ? (char)r->ls[i] : '?';
    shown[k] = 0;
    if (!r->ls)
        moe_errorf(err, "%s:%d: %s (the file ends before this line)", r->path, r->line, what);
    else
        moe_errorf(err, "%s:%d: %s (line reads \"%s%s\")", r->path, r->line, what, shown,
                   r->ll >= sizeof shown - 1 ? "..." : "");
    return moe_hintf(err, "this is not a valid moetrain-bpe tokenizer file (damaged or edited); "
                     "restore it or retrain the tokenizer");
}

/* Exactly 16 lowercase hex digits at s[*i..), then *i moves past them. */
static bool parse_hex16(const uint8_t *s, size_t n, size_t *i, uint64_t *v) {
    uint64_t x = 0;
    size_t k = *i;
    for (; k < n && k - *i < 16; k++) {
        uint8_t c = s[k];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return false;
        x = x << 4 | (uint64_t)d;
    }
    if (k - *i != 16) return false;
    *i = k;
    *v = x;
    return true;
}

/* The trained_on block: r is on its "trained_on N" line; reads the N "text" lines after it
 * into a new array (*src, *n_src; *n_src counts the entries built so far, so the caller
 * frees them on failure too). */
static int parse_sources(LineReader *r, TokSource **src, int *n_src, MoeErr *err) {
    uint64_t cnt = 0;
    /* a text line takes at least 24 bytes ("text 0 " + 16 digits + " x") */
    if (!parse_kw_uint(r, "trained_on", 65536, &cnt) || cnt == 0 ||
        cnt > (r->n - r->pos) / 24 + 1)
        return load_fail(err, r, "expected \"trained_on N\" with N text lines after it");
    *src = moe_calloc((size_t)cnt * sizeof(TokSource));
    for (uint64_t k = 0; k < cnt; k++) {
        uint64_t size = 0, hash = 0;
        size_t i = 5;
        bool ok = next_line(r) && r->ll > 5 && memcmp(r->ls, "text ", 5) == 0 &&
                  parse_uint(r->ls, r->ll, &i, (uint64_t)1 << 50, &size) && i < r->ll &&
                  r->ls[i++] == ' ' && parse_hex16(r->ls, r->ll, &i, &hash) && i + 1 < r->ll &&
                  r->ls[i++] == ' ';
        if (!ok)
            return load_fail(err, r, "expected \"text BYTES HASH NAME\" (a file the tokenizer "
                             "was trained on)");
        TokSource *s = &(*src)[(*n_src)++];
        s->size = size;
        s->hash = hash;
        s->name = moe_malloc(r->ll - i + 1);
        memcpy(s->name, r->ls + i, r->ll - i);
        s->name[r->ll - i] = 0;
    }
    return 0;
}

int tok_load(Tokenizer *t, const char *path, MoeErr *err) {
    memset(t, 0, sizeof *t);
    uint8_t *buf = NULL;
    size_t n = 0;
    if (fs_read_file(path, &buf, &n, err) != 0) return -1;
    int rc = tok_load_buffer(t, buf, n, path, err);
    moe_free(buf);
    return rc;
}

/* Whether buf[0..n) is a tokenizer.json: '{' is its first non-blank byte (after an optional
 * UTF-8 byte order mark). */
static bool looks_like_json(const uint8_t *buf, size_t n) {
    size_t i = 0;
    if (n >= 3 && buf[0] == 0xEF && buf[1] == 0xBB && buf[2] == 0xBF) i = 3;
    while (i < n && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n' || buf[i] == '\r')) i++;
    return i < n && buf[i] == '{';
}

int tok_load_buffer(Tokenizer *t, const uint8_t *buf, size_t n, const char *path,
                    MoeErr *err) {
    memset(t, 0, sizeof *t);
    if (n > 0 && looks_like_json(buf, n)) return tok_load_hf(t, buf, n, path, err);
    LineReader r = {path, buf, n, 0, 0, NULL, 0};
    int32_t *merges = NULL;
    TokSource *src = NULL;
    int n_src = 0;
    uint64_t V = 0, nm = 0, sid = 0;
    char what[160];
    if (n == 0) {  /* first: buf may then be NULL, which memchr must not see */
        moe_errorf(err, "%s:1: file is empty", path);
        moe_hintf(err, "the tokenizer file was not written completely; retrain the tokenizer");
        goto fail;
    }
    if (memchr(buf, '\r', n)) {
        const uint8_t *cr = memchr(buf, '\r', n);
        for (const uint8_t *q = buf; q < cr; q++) r.line += (*q == '\n');
        r.line++;
        moe_errorf(err, "%s:%d: carriage return in file (Windows line endings?)", path, r.line);
        moe_hintf(err, "convert the file to Unix line endings (e.g. dos2unix %s)", path);
        goto fail;
    }
    if (!next_line(&r) || r.ll != 14 || memcmp(r.ls, "moetrain-bpe 1", 14) != 0) {
        load_fail(err, &r, "bad magic: expected first line \"moetrain-bpe 1\"");
        goto fail;
    }
    if (!next_line(&r) || !parse_kw_uint(&r, "vocab_size", TOK_MAX_VOCAB, &V) || V < TOK_MIN_VOCAB) {
        snprintf(what, sizeof what, "expected \"vocab_size N\" with %d <= N <= %d",
                 TOK_MIN_VOCAB, TOK_MAX_VOCAB);
        load_fail(err, &r, what);
        goto fail;
    }
    {
        size_t kl = strlen("special "), i = kl;
        bool ok = next_line(&r) && r.ll > kl && memcmp(r.ls, "special ", kl) == 0 &&
                  parse_uint(r.ls, r.ll, &i, UINT32_MAX, &sid) && i < r.ll && r.ls[i] == ' ' &&
                  r.ll - i - 1 == strlen(TOK_EOT_TEXT) &&
                  memcmp(r.ls + i + 1, TOK_EOT_TEXT, strlen(TOK_EOT_TEXT)) == 0 && sid == V - 1;
        if (!ok) {
            snprintf(what, sizeof what, "expected \"special %d %s\"", (int)V - 1, TOK_EOT_TEXT);
            load_fail(err, &r, what);
            goto fail;
        }
    }
    if (!next_line(&r)) {
        load_fail(err, &r, "expected \"merges N\" or \"trained_on N\"");
        goto fail;
    }
    if (r.ll >= 11 && memcmp(r.ls, "trained_on ", 11) == 0) {
        if (parse_sources(&r, &src, &n_src, err)) goto fail;
        next_line(&r);
    }
    if (!r.ls || !parse_kw_uint(&r, "merges", UINT32_MAX, &nm) || nm != V - 257) {
        snprintf(what, sizeof what, "expected \"merges %d\" (vocab_size - 257)", (int)V - 257);
        load_fail(err, &r, what);
        goto fail;
    }
    if (nm > (n - r.pos) / 4 + 1) {  /* a merge line takes at least 4 bytes ("a b\n") */
        moe_errorf(err, "%s:%d: header promises %d merges but only %zu bytes follow (truncated)",
                   path, r.line, (int)nm, n - r.pos);
        moe_hintf(err, "the file is incomplete; restore it or retrain the tokenizer");
        goto fail;
    }
    const int line0 = r.line + 1;   /* the line of merge 0 */
    merges = moe_malloc((size_t)nm * 2 * sizeof(int32_t));
    for (uint64_t m = 0; m < nm; m++) {
        if (!next_line(&r)) {
            moe_errorf(err, "%s:%d: file ends after %d of %d merges (truncated)", path, r.line,
                       (int)m, (int)nm);
            moe_hintf(err, "the file is incomplete; restore it or retrain the tokenizer");
            goto fail;
        }
        uint64_t a = 0, b = 0;
        size_t i = 0;
        uint64_t lim = 256 + m - 1;  /* merge m may only use ids that exist before it */
        bool ok = parse_uint(r.ls, r.ll, &i, UINT32_MAX, &a) && i < r.ll && r.ls[i] == ' ';
        i++;
        ok = ok && parse_uint(r.ls, r.ll, &i, UINT32_MAX, &b) && i == r.ll;
        if (!ok) {
            load_fail(err, &r, "expected a merge \"A B\" (two decimal token ids)");
            goto fail;
        }
        if (a > lim || b > lim) {
            snprintf(what, sizeof what, "merge %d uses id %d, but only ids < %d exist at this rank",
                     (int)m, (int)(a > lim ? a : b), (int)lim + 1);
            load_fail(err, &r, what);
            goto fail;
        }
        merges[2 * m] = (int32_t)a;
        merges[2 * m + 1] = (int32_t)b;
    }
    if (next_line(&r)) {
        load_fail(err, &r, "trailing data after the last merge");
        goto fail;
    }
    int bad = tok_build(t, (int)V, merges);
    merges = NULL;  /* owned by t now */
    if (bad >= 0) {
        if (t->rank_vals)  /* tok_build got as far as the rank table: a duplicate pair */
            moe_errorf(err, "%s:%d: merge %d duplicates an earlier merge", path, line0 + bad,
                       bad);
        else
            moe_errorf(err, "%s:%d: merge %d makes a token longer than %u bytes", path,
                       line0 + bad, bad, TOK_MAX_TOKEN_BYTES);
        moe_hintf(err, "this is not a valid moetrain-bpe tokenizer file (damaged or edited); "
                  "restore it or retrain the tokenizer");
        tok_free(t);
        goto fail;
    }
    t->sources = src;
    t->n_sources = n_src;
    return 0;
fail:
    sources_free(src, n_src);
    moe_free(merges);
    return -1;
}
