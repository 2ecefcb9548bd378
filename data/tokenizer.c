/* tokenizer.c: byte-level BPE (GPT-2 scheme). See tokenizer.h for the contract.
 *
 * Layout of this file: UTF-8 + Unicode classes, the GPT-2 pre-tokenizer, a byte-string hash
 * map (word counts for training, the per-call word cache for encode), building a Tokenizer
 * from its merge list, training, encode/decode, save/load, and the file helpers.
 *
 * Training keeps, for every distinct pre-token ("word") of the corpus, its frequency and its
 * current symbol sequence; a pair -> count map; a pair -> words posting list (append-only,
 * may hold stale or repeated entries, checked when used); and a max-heap of pairs keyed by
 * (count desc, a asc, b asc) with lazy invalidation. A merge only rewrites the words that
 * contain the pair, so a step costs O(occurrences), not O(corpus).
 */
#include "data/tokenizer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fs.h"
#include "data/unicode_tables.h"

/* ---------------------------------------------------------------- small helpers */

/* Grow *p (elements of size elem, capacity *cap) to hold at least need elements. */
static void grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return;
    size_t nc = *cap ? *cap : 16;
    while (nc < need) nc *= 2;
    *p = moe_realloc(*p, *cap * elem, nc * elem);
    *cap = nc;
}

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const uint8_t *s = data;
    for (size_t i = 0; i < n; i++) { h ^= s[i]; h *= 0x100000001b3ULL; }
    return h;
}
#define FNV_OFFSET 0xcbf29ce484222325ULL

static uint64_t pair_key(int32_t a, int32_t b) {
    return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
}

/* ---------------------------------------------------------------- UTF-8 and classes */

enum { CL_OTHER = 0, CL_LETTER, CL_NUMBER, CL_SPACE };

static bool in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return true;
    }
    return false;
}
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static int cp_class(uint32_t cp) {
    if (cp < 128) {  /* ASCII fast path; agrees with the tables */
        if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return CL_LETTER;
        if (cp >= '0' && cp <= '9') return CL_NUMBER;
        if (cp == ' ' || (cp >= 9 && cp <= 13) || (cp >= 0x1C && cp <= 0x1F)) return CL_SPACE;
        return CL_OTHER;
    }
    if (in_ranges(UNI_LETTER, NELEM(UNI_LETTER), cp)) return CL_LETTER;
    if (in_ranges(UNI_NUMBER, NELEM(UNI_NUMBER), cp)) return CL_NUMBER;
    if (in_ranges(UNI_SPACE, NELEM(UNI_SPACE), cp)) return CL_SPACE;
    return CL_OTHER;
}

typedef struct { uint32_t cp; int cls; size_t len; } Cp;

/* Decode the codepoint at s[i] (i < n). Invalid UTF-8 (bad lead, bad continuation,
 * truncated, overlong, surrogate, > U+10FFFF) is one byte of class "other". */
static Cp cp_at(const uint8_t *s, size_t n, size_t i) {
    Cp r = {s[i], CL_OTHER, 1};
    uint8_t c = s[i];
    if (c < 0x80) { r.cls = cp_class(c); return r; }
    size_t len;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; v = c & 0x1Fu; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; v = c & 0x0Fu; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; v = c & 0x07u; min = 0x10000; }
    else return r;
    if (len > n - i) return r;
    for (size_t k = 1; k < len; k++) {
        if ((s[i + k] & 0xC0) != 0x80) return r;
        v = (v << 6) | (s[i + k] & 0x3Fu);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return r;
    r.cp = v; r.cls = cp_class(v); r.len = len;
    return r;
}

/* ---------------------------------------------------------------- GPT-2 pre-tokenizer */

/* Length of a contraction 's 't 're 've 'm 'll 'd at s (s[0] == '\''), or 0. */
static size_t contraction_len(const uint8_t *s, size_t n) {
    if (n >= 2 && (s[1] == 's' || s[1] == 't' || s[1] == 'm' || s[1] == 'd')) return 2;
    if (n >= 3 && ((s[1] == 'r' && s[2] == 'e') || (s[1] == 'v' && s[2] == 'e') ||
                   (s[1] == 'l' && s[2] == 'l'))) return 3;
    return 0;
}

void tok_pretokenize(const uint8_t *s, size_t n,
                     void (*fn)(const uint8_t *piece, size_t len, void *ctx), void *ctx) {
    size_t i = 0;
    while (i < n) {
        if (s[i] == '\'') {
            size_t k = contraction_len(s + i, n - i);
            if (k) { fn(s + i, k, ctx); i += k; continue; }
        }
        Cp c = cp_at(s, n, i);
        /* " ?\p{L}+ | ?\p{N}+ | ?[^\s\p{L}\p{N}]+": an optional U+0020 then a run of one class */
        size_t j = i;
        Cp first = c;
        if (c.cp == ' ' && i + 1 < n) {
            Cp d = cp_at(s, n, i + 1);
            if (d.cls != CL_SPACE) { j = i + 1; first = d; }
        }
        if (first.cls != CL_SPACE) {
            size_t k = j + first.len;
            while (k < n) {
                Cp e = cp_at(s, n, k);
                if (e.cls != first.cls) break;
                k += e.len;
            }
            fn(s + i, k - i, ctx);
            i = k;
            continue;
        }
        /* "\s+(?!\S)|\s+": a whitespace run followed by a non-space gives its last
         * character to the next token (unless the run is one character long). */
        size_t k = i, last = i, count = 0;
        while (k < n) {
            Cp e = cp_at(s, n, k);
            if (e.cls != CL_SPACE) break;
            last = k;
            k += e.len;
            count++;
        }
        if (k < n && count >= 2) k = last;
        fn(s + i, k - i, ctx);
        i = k;
    }
}

/* ---------------------------------------------------------------- GPT-2 byte alphabet */

uint32_t tok_byte_to_unicode(uint8_t b) {
    /* Printable ranges '!'..'~', 0xA1..0xAC, 0xAE..0xFF map to themselves; the other 68
     * bytes map to 256, 257, ... in increasing byte order. */
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) return b;
    if (b <= 0x20) return 256u + b;                 /* 0..32   -> 256..288 */
    if (b <= 0xA0) return 256u + 33u + (b - 0x7Fu); /* 127..160 -> 289..322 */
    return 256u + 33u + 34u;                        /* 173     -> 323 */
}

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

/* ---------------------------------------------------------------- byte-string map */

/* Open-addressing map from byte strings to an int64 value; keys live in an arena. */
typedef struct WordMap {
    uint32_t *slots;     /* (cap) entry index + 1; 0 = empty */
    size_t cap;          /* power of two */
    size_t n, ecap;      /* entries, entry capacity */
    uint64_t *hash;      /* (n) */
    size_t *key_off;     /* (n) into arena */
    uint32_t *key_len;   /* (n) */
    int64_t *val;        /* (n) */
    uint8_t *arena;
    size_t arena_n, arena_cap;
} WordMap;

static void wordmap_free(WordMap *m) {
    moe_free(m->slots); moe_free(m->hash); moe_free(m->key_off); moe_free(m->key_len);
    moe_free(m->val); moe_free(m->arena);
    memset(m, 0, sizeof *m);
}

static void wordmap_rehash(WordMap *m, size_t cap) {
    moe_free(m->slots);
    m->slots = moe_calloc(cap * sizeof(uint32_t));
    m->cap = cap;
    for (size_t e = 0; e < m->n; e++) {
        size_t s = m->hash[e] & (cap - 1);
        while (m->slots[s]) s = (s + 1) & (cap - 1);
        m->slots[s] = (uint32_t)(e + 1);
    }
}

/* Index of key's entry; adds it with value 0 if absent (sets *added). */
static size_t wordmap_get(WordMap *m, const uint8_t *key, size_t len, bool *added) {
    if (2 * (m->n + 1) > m->cap) wordmap_rehash(m, m->cap ? 2 * m->cap : 1024);
    uint64_t h = fnv1a(FNV_OFFSET, key, len);
    size_t s = h & (m->cap - 1);
    while (m->slots[s]) {
        size_t e = m->slots[s] - 1;
        if (m->hash[e] == h && m->key_len[e] == len &&
            memcmp(m->arena + m->key_off[e], key, len) == 0) {
            *added = false;
            return e;
        }
        s = (s + 1) & (m->cap - 1);
    }
    ASSERT(m->n < UINT32_MAX && len <= UINT32_MAX, "word map overflow (%zu entries)", m->n);
    if (m->n == m->ecap) {
        size_t old = m->ecap, nc = old ? 2 * old : 1024;
        m->hash = moe_realloc(m->hash, old * sizeof *m->hash, nc * sizeof *m->hash);
        m->key_off = moe_realloc(m->key_off, old * sizeof *m->key_off, nc * sizeof *m->key_off);
        m->key_len = moe_realloc(m->key_len, old * sizeof *m->key_len, nc * sizeof *m->key_len);
        m->val = moe_realloc(m->val, old * sizeof *m->val, nc * sizeof *m->val);
        m->ecap = nc;
    }
    grow((void **)&m->arena, &m->arena_cap, m->arena_n + len, 1);
    memcpy(m->arena + m->arena_n, key, len);
    size_t e = m->n++;
    m->hash[e] = h; m->key_off[e] = m->arena_n; m->key_len[e] = (uint32_t)len; m->val[e] = 0;
    m->arena_n += len;
    m->slots[s] = (uint32_t)(e + 1);
    *added = true;
    return e;
}

/* ---------------------------------------------------------------- building a Tokenizer */

#define TOK_MAX_TOKEN_BYTES (1u << 24)

void tok_free(Tokenizer *t) {
    if (!t) return;
    moe_free(t->merges); moe_free(t->tok_off); moe_free(t->tok_len); moe_free(t->tok_bytes);
    moe_free(t->rank_keys); moe_free(t->rank_vals);
    memset(t, 0, sizeof *t);
}

/* Insert merge (a, b) with rank r into the rank table; false if the pair is already there. */
static bool rank_insert(Tokenizer *t, int32_t a, int32_t b, int32_t r) {
    uint64_t key = pair_key(a, b) + 1;
    size_t s = moe_hash64(key) & (t->rank_cap - 1);
    while (t->rank_keys[s]) {
        if (t->rank_keys[s] == key) return false;
        s = (s + 1) & (t->rank_cap - 1);
    }
    t->rank_keys[s] = key;
    t->rank_vals[s] = r;
    return true;
}

static int32_t rank_of(const Tokenizer *t, int32_t a, int32_t b) {
    uint64_t key = pair_key(a, b) + 1;
    size_t s = moe_hash64(key) & (t->rank_cap - 1);
    while (t->rank_keys[s]) {
        if (t->rank_keys[s] == key) return t->rank_vals[s];
        s = (s + 1) & (t->rank_cap - 1);
    }
    return -1;
}

/* Allocate t for vocab V and take ownership of merges (n_merges = V-257, ids already
 * checked to be < 256+r). Builds token bytes, the rank table and the hash. Returns the rank
 * of the first duplicate merge or of the first token longer than TOK_MAX_TOKEN_BYTES
 * (t then half-built: the caller frees it), else -1. */
static int tok_build(Tokenizer *t, int V, int32_t *merges) {
    memset(t, 0, sizeof *t);
    t->vocab_size = V;
    t->n_merges = V - 257;
    t->merges = merges;
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

    t->rank_cap = 64;
    while (t->rank_cap < 2 * (size_t)t->n_merges) t->rank_cap *= 2;
    t->rank_keys = moe_calloc(t->rank_cap * sizeof(uint64_t));
    t->rank_vals = moe_malloc(t->rank_cap * sizeof(int32_t));
    for (int r = 0; r < t->n_merges; r++)
        if (!rank_insert(t, merges[2 * r], merges[2 * r + 1], r)) return r;

    uint64_t h = fnv1a(FNV_OFFSET, "moetrain-bpe 1", 14);
    uint8_t le[4];
    for (int k = 0; k < 4; k++) le[k] = (uint8_t)((uint32_t)V >> (8 * k));
    h = fnv1a(h, le, 4);
    h = fnv1a(h, TOK_EOT_TEXT, sizeof TOK_EOT_TEXT - 1);
    for (int i = 0; i < 2 * t->n_merges; i++) {
        for (int k = 0; k < 4; k++) le[k] = (uint8_t)((uint32_t)merges[i] >> (8 * k));
        h = fnv1a(h, le, 4);
    }
    t->hash = h;
    return -1;
}

int tok_eot(const Tokenizer *t) { return t->vocab_size - 1; }
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
        if (id == t->vocab_size - 1) buf[0] = (char)bytes[i];  /* literal "<|endoftext|>" */
        else k = utf8_put(tok_byte_to_unicode(bytes[i]), buf);
        for (size_t j = 0; j < k; j++, w++)
            if (w + 1 < cap) out[w] = buf[j];
    }
    if (cap) out[w < cap ? w : cap - 1] = 0;
    return w;
}

/* ---------------------------------------------------------------- training */

typedef struct { int64_t count; int32_t a, b; } HeapEnt;

/* Max-heap order: larger count first, then smaller a, then smaller b. */
static bool heap_above(const HeapEnt *x, const HeapEnt *y) {
    if (x->count != y->count) return x->count > y->count;
    if (x->a != y->a) return x->a < y->a;
    return x->b < y->b;
}

typedef struct { HeapEnt *e; size_t n, cap; } PairHeap;

static void heap_push(PairHeap *h, HeapEnt x) {
    grow((void **)&h->e, &h->cap, h->n + 1, sizeof(HeapEnt));
    size_t i = h->n++;
    while (i > 0 && heap_above(&x, &h->e[(i - 1) / 2])) { h->e[i] = h->e[(i - 1) / 2]; i = (i - 1) / 2; }
    h->e[i] = x;
}

static HeapEnt heap_pop(PairHeap *h) {
    HeapEnt top = h->e[0], x = h->e[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && heap_above(&h->e[c + 1], &h->e[c])) c++;
        if (!heap_above(&h->e[c], &x)) break;
        h->e[i] = h->e[c];
        i = c;
    }
    if (h->n) h->e[i] = x;
    return top;
}

/* Pair table for training: key -> pair index; per pair a count and a posting-list head. */
typedef struct Trainer {
    WordMap words;        /* distinct pre-tokens; val = frequency */
    int32_t *sym;         /* symbols of all words, word w at sym[word_off[w]..+word_len[w]) */
    size_t *word_off;     /* (n_words) */
    uint32_t *word_len;   /* (n_words) current symbol count */
    uint32_t *word_stamp; /* (n_words) last merge step that rewrote the word (+1) */
    uint64_t *pkeys;      /* (pcap) pair key + 1, 0 empty */
    uint32_t *pslot;      /* (pcap) pair index */
    size_t pcap, np, pecap;
    int64_t *pcount;      /* (np) */
    int32_t *phead;       /* (np) first posting node, -1 = none */
    uint32_t *pstamp;     /* (np) last step the pair was queued for a heap push (+1) */
    uint64_t *pkey;       /* (np) the pair key */
    int32_t *post_word, *post_next;  /* posting nodes */
    size_t npost, post_cap, post_cap2;
    PairHeap heap;
} Trainer;

static void trainer_free(Trainer *tr) {
    wordmap_free(&tr->words);
    moe_free(tr->sym); moe_free(tr->word_off); moe_free(tr->word_len); moe_free(tr->word_stamp);
    moe_free(tr->pkeys); moe_free(tr->pslot); moe_free(tr->pcount); moe_free(tr->phead);
    moe_free(tr->pstamp); moe_free(tr->pkey); moe_free(tr->post_word); moe_free(tr->post_next);
    moe_free(tr->heap.e);
    memset(tr, 0, sizeof *tr);
}

static void pairs_rehash(Trainer *tr, size_t cap) {
    moe_free(tr->pkeys); moe_free(tr->pslot);
    tr->pkeys = moe_calloc(cap * sizeof(uint64_t));
    tr->pslot = moe_malloc(cap * sizeof(uint32_t));
    tr->pcap = cap;
    for (size_t p = 0; p < tr->np; p++) {
        size_t s = moe_hash64(tr->pkey[p]) & (cap - 1);
        while (tr->pkeys[s]) s = (s + 1) & (cap - 1);
        tr->pkeys[s] = tr->pkey[p] + 1;
        tr->pslot[s] = (uint32_t)p;
    }
}

/* Index of pair (a, b), created with count 0 if absent. */
static size_t pair_get(Trainer *tr, int32_t a, int32_t b) {
    if (2 * (tr->np + 1) > tr->pcap) pairs_rehash(tr, tr->pcap ? 2 * tr->pcap : 4096);
    uint64_t key = pair_key(a, b);
    size_t s = moe_hash64(key) & (tr->pcap - 1);
    while (tr->pkeys[s]) {
        if (tr->pkeys[s] == key + 1) return tr->pslot[s];
        s = (s + 1) & (tr->pcap - 1);
    }
    if (tr->np == tr->pecap) {
        size_t old = tr->pecap, nc = old ? 2 * old : 4096;
        tr->pcount = moe_realloc(tr->pcount, old * sizeof(int64_t), nc * sizeof(int64_t));
        tr->phead = moe_realloc(tr->phead, old * sizeof(int32_t), nc * sizeof(int32_t));
        tr->pstamp = moe_realloc(tr->pstamp, old * sizeof(uint32_t), nc * sizeof(uint32_t));
        tr->pkey = moe_realloc(tr->pkey, old * sizeof(uint64_t), nc * sizeof(uint64_t));
        tr->pecap = nc;
    }
    size_t p = tr->np++;
    tr->pcount[p] = 0; tr->phead[p] = -1; tr->pstamp[p] = 0; tr->pkey[p] = key;
    tr->pkeys[s] = key + 1;
    tr->pslot[s] = (uint32_t)p;
    return p;
}

static void post_add(Trainer *tr, size_t p, size_t w) {
    ASSERT(tr->npost < INT32_MAX, "posting list overflow");
    grow((void **)&tr->post_word, &tr->post_cap, tr->npost + 1, sizeof(int32_t));
    grow((void **)&tr->post_next, &tr->post_cap2, tr->npost + 1, sizeof(int32_t));
    tr->post_word[tr->npost] = (int32_t)w;
    tr->post_next[tr->npost] = tr->phead[p];
    tr->phead[p] = (int32_t)tr->npost++;
}

static void train_count_piece(const uint8_t *piece, size_t len, void *ctx) {
    WordMap *m = ctx;
    bool added;
    size_t e = wordmap_get(m, piece, len, &added);
    m->val[e]++;
}

/* Add (sign=+1) or remove (sign=-1) word w's adjacent pairs from the counts. */
static void word_pairs(Trainer *tr, size_t w, int64_t sign) {
    const int32_t *s = tr->sym + tr->word_off[w];
    int64_t f = tr->words.val[w] * sign;
    for (uint32_t i = 0; i + 1 < tr->word_len[w]; i++) {
        size_t p = pair_get(tr, s[i], s[i + 1]);  /* may grow pcount: index after the call */
        tr->pcount[p] += f;
    }
}

int tok_train_buffers(Tokenizer *t, const uint8_t *const *bufs, const size_t *lens, int n_bufs,
                      int vocab_size, MoeErr *err) {
    memset(t, 0, sizeof *t);
    if (vocab_size < TOK_MIN_VOCAB || vocab_size > TOK_MAX_VOCAB) {
        moe_errorf(err, "tokenizer vocab_size %d is outside [%d, %d] (256 bytes + at least one "
                   "merge + <|endoftext|>)", vocab_size, TOK_MIN_VOCAB, TOK_MAX_VOCAB);
        return moe_hintf(err, "set vocab_size between %d and %d (typical: 4096..65536)",
                         TOK_MIN_VOCAB, TOK_MAX_VOCAB);
    }
    Trainer tr;
    memset(&tr, 0, sizeof tr);
    for (int d = 0; d < n_bufs; d++) tok_pretokenize(bufs[d], lens[d], train_count_piece, &tr.words);

    size_t nw = tr.words.n;
    tr.word_off = moe_malloc((nw + 1) * sizeof(size_t));
    tr.word_len = moe_malloc((nw + 1) * sizeof(uint32_t));
    tr.word_stamp = moe_calloc((nw + 1) * sizeof(uint32_t));
    tr.sym = moe_malloc((tr.words.arena_n + 1) * sizeof(int32_t));
    for (size_t w = 0; w < nw; w++) {
        tr.word_off[w] = tr.words.key_off[w];
        tr.word_len[w] = tr.words.key_len[w];
        for (uint32_t i = 0; i < tr.word_len[w]; i++)
            tr.sym[tr.word_off[w] + i] = tr.words.arena[tr.word_off[w] + i];
        word_pairs(&tr, w, +1);
        const int32_t *s = tr.sym + tr.word_off[w];
        for (uint32_t i = 0; i + 1 < tr.word_len[w]; i++) {
            size_t p = pair_get(&tr, s[i], s[i + 1]);
            if (tr.phead[p] < 0 || tr.post_word[tr.phead[p]] != (int32_t)w) post_add(&tr, p, w);
        }
    }
    for (size_t p = 0; p < tr.np; p++)
        heap_push(&tr.heap, (HeapEnt){tr.pcount[p], (int32_t)(tr.pkey[p] >> 32), (int32_t)(uint32_t)tr.pkey[p]});

    int n_merges = vocab_size - 257, done = 0;
    int32_t *merges = moe_malloc((size_t)n_merges * 2 * sizeof(int32_t));
    size_t *touched = NULL, n_touched = 0, touched_cap = 0;
    while (done < n_merges && tr.heap.n > 0) {
        HeapEnt top = heap_pop(&tr.heap);
        size_t p = pair_get(&tr, top.a, top.b);
        int64_t cur = tr.pcount[p];
        if (cur != top.count) {  /* stale: counts only fall after creation, re-queue */
            if (cur > 0) heap_push(&tr.heap, (HeapEnt){cur, top.a, top.b});
            continue;
        }
        if (cur <= 0) continue;
        int32_t a = top.a, b = top.b, z = 256 + done;
        uint32_t step = (uint32_t)done + 1;
        merges[2 * done] = a;
        merges[2 * done + 1] = b;
        n_touched = 0;
        for (int32_t node = tr.phead[p]; node >= 0; node = tr.post_next[node]) {
            size_t w = (size_t)tr.post_word[node];
            if (tr.word_stamp[w] == step) continue;
            int32_t *s = tr.sym + tr.word_off[w];
            uint32_t len = tr.word_len[w], i;
            for (i = 0; i + 1 < len; i++) if (s[i] == a && s[i + 1] == b) break;
            if (i + 1 >= len) continue;  /* stale posting: pair no longer in this word */
            tr.word_stamp[w] = step;
            word_pairs(&tr, w, -1);
            uint32_t o = 0;
            for (i = 0; i < len; i++) {
                if (i + 1 < len && s[i] == a && s[i + 1] == b) { s[o++] = z; i++; }
                else s[o++] = s[i];
            }
            tr.word_len[w] = o;
            word_pairs(&tr, w, +1);
            for (i = 0; i + 1 < o; i++) {
                if (s[i] != z && s[i + 1] != z) continue;
                size_t q = pair_get(&tr, s[i], s[i + 1]);
                if (tr.phead[q] < 0 || tr.post_word[tr.phead[q]] != (int32_t)w) post_add(&tr, q, w);
                if (tr.pstamp[q] != step) {
                    tr.pstamp[q] = step;
                    grow((void **)&touched, &touched_cap, n_touched + 1, sizeof(size_t));
                    touched[n_touched++] = q;
                }
            }
        }
        for (size_t k = 0; k < n_touched; k++) {
            size_t q = touched[k];
            if (tr.pcount[q] > 0)
                heap_push(&tr.heap, (HeapEnt){tr.pcount[q], (int32_t)(tr.pkey[q] >> 32),
                                              (int32_t)(uint32_t)tr.pkey[q]});
        }
        done++;
    }
    moe_free(touched);
    trainer_free(&tr);
    if (done < n_merges) {
        moe_free(merges);
        moe_errorf(err, "tokenizer vocab_size %d is too large for this corpus: it only allows "
                   "%d merges (largest possible vocab_size is %d), %d were needed",
                   vocab_size, done, done + 257, n_merges);
        return moe_hintf(err, "lower vocab_size to at most %d, or train on more text", done + 257);
    }
    int bad = tok_build(t, vocab_size, merges);
    if (bad >= 0) {  /* only a pathological corpus (huge repeated runs) gets here */
        tok_free(t);
        moe_errorf(err, "tokenizer training: merge %d would create a token longer than %u bytes",
                   bad, TOK_MAX_TOKEN_BYTES);
        return moe_hintf(err, "lower vocab_size or remove the very long repeated runs from the text");
    }
    return 0;
}

int tok_train(Tokenizer *t, const char *const *paths, int n_paths, int vocab_size, MoeErr *err) {
    memset(t, 0, sizeof *t);
    if (n_paths <= 0) {
        moe_errorf(err, "tokenizer training needs at least one text file (got %d)", n_paths);
        return moe_hintf(err, "list the training text files under data.train_files");
    }
    uint8_t **bufs = moe_calloc((size_t)n_paths * sizeof(uint8_t *));
    size_t *lens = moe_calloc((size_t)n_paths * sizeof(size_t));
    int rc = -1;
    for (int i = 0; i < n_paths; i++) {
        if (fs_read_file(paths[i], &bufs[i], &lens[i], err) != 0) goto done;
        if (lens[i] == 0) {
            moe_errorf(err, "%s is empty", paths[i]);
            moe_hintf(err, "remove it from the file list or put the training text in it");
            goto done;
        }
    }
    rc = tok_train_buffers(t, (const uint8_t *const *)bufs, lens, n_paths, vocab_size, err);
done:
    for (int i = 0; i < n_paths; i++) moe_free(bufs[i]);
    moe_free(bufs);
    moe_free(lens);
    return rc;
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

/* BPE on one pre-token: apply merges lowest rank first (leftmost first within a rank, which
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
    size_t nh = 0, count = len;
    for (size_t i = 0; i < len; i++) {
        c->ids[i] = p[i]; c->next[i] = (int32_t)i + 1; c->prev[i] = (int32_t)i - 1;
    }
    for (size_t i = 0; i + 1 < len; i++) cand_consider(c, &nh, len, (int32_t)i);
    while (nh > 0) {
        MergeCand m = cand_pop(c, &nh);
        int32_t i = (int32_t)m.pos;
        if (c->ids[i] < 0 || c->next[i] >= (int32_t)len) continue;
        int32_t j = c->next[i];
        if (c->t->merges[2 * m.rank] != c->ids[i] || c->t->merges[2 * m.rank + 1] != c->ids[j])
            continue;  /* stale candidate */
        c->ids[i] = 256 + m.rank;
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
        grow((void **)&c->cache_ids, &c->cache_ids_cap, c->n_cache_ids + cnt, sizeof(int32_t));
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
    tok_pretokenize(text, n, encode_piece, &c);
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

/* ---------------------------------------------------------------- save / load */

int tok_save(const Tokenizer *t, const char *path, MoeErr *err) {
    FsAtomicFile af;
    if (fs_atomic_open(&af, path, err) != 0) return -1;
    fprintf(af.fp, "moetrain-bpe 1\nvocab_size %d\nspecial %d %s\nmerges %d\n", t->vocab_size,
            t->vocab_size - 1, TOK_EOT_TEXT, t->n_merges);
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

int tok_load(Tokenizer *t, const char *path, MoeErr *err) {
    memset(t, 0, sizeof *t);
    uint8_t *buf = NULL;
    size_t n = 0;
    if (fs_read_file(path, &buf, &n, err) != 0) return -1;
    int rc = tok_load_buffer(t, buf, n, path, err);
    moe_free(buf);
    return rc;
}

int tok_load_buffer(Tokenizer *t, const uint8_t *buf, size_t n, const char *path,
                    MoeErr *err) {
    memset(t, 0, sizeof *t);
    LineReader r = {path, buf, n, 0, 0, NULL, 0};
    int32_t *merges = NULL;
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
    if (!next_line(&r) || !parse_kw_uint(&r, "merges", UINT32_MAX, &nm) || nm != V - 257) {
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
            moe_errorf(err, "%s:%d: merge %d duplicates an earlier merge", path, 5 + bad, bad);
        else
            moe_errorf(err, "%s:%d: merge %d makes a token longer than %u bytes", path, 5 + bad,
                       bad, TOK_MAX_TOKEN_BYTES);
        moe_hintf(err, "this is not a valid moetrain-bpe tokenizer file (damaged or edited); "
                  "restore it or retrain the tokenizer");
        tok_free(t);
        goto fail;
    }
    return 0;
fail:
    moe_free(merges);
    return -1;
}
