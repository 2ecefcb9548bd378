/* bpe_train.c: training a byte-level BPE tokenizer (tok_train, tok_train_buffers of
 * data/tokenizer.h; Sennrich et al. 2016, GPT-2's byte-level variant).
 *
 * Training keeps, for every distinct pre-token ("word") of the corpus, its frequency and its
 * current symbol sequence; a pair -> count map; a pair -> words posting list (append-only,
 * may hold stale or repeated entries, checked when used); and a max-heap of pairs keyed by
 * (count desc, a asc, b asc) with lazy invalidation. A merge only rewrites the words that
 * contain the pair, so a step costs O(occurrences), not O(corpus).
 */
#include "data/tokenizer.h"

#include <string.h>

#include "core/fs.h"
#include "data/bpe_corpus.h"
#include "data/pretokenize.h"
#include "data/wordmap.h"

typedef struct { int64_t count; int32_t a, b; } HeapEnt;

/* Max-heap order: larger count first, then smaller a, then smaller b. */
static bool heap_above(const HeapEnt *x, const HeapEnt *y) {
    if (x->count != y->count) return x->count > y->count;
    if (x->a != y->a) return x->a < y->a;
    return x->b < y->b;
}

typedef struct { HeapEnt *e; size_t n, cap; } PairHeap;

static void heap_push(PairHeap *h, HeapEnt x) {
    wordmap_grow((void **)&h->e, &h->cap, h->n + 1, sizeof(HeapEnt));
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
    uint64_t key = tok_pair_key(a, b);
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
    wordmap_grow((void **)&tr->post_word, &tr->post_cap, tr->npost + 1, sizeof(int32_t));
    wordmap_grow((void **)&tr->post_next, &tr->post_cap2, tr->npost + 1, sizeof(int32_t));
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
    WordMap words;
    memset(&words, 0, sizeof words);
    for (int d = 0; d < n_bufs; d++) tok_pretokenize(bufs[d], lens[d], train_count_piece, &words);
    return tok_train_words(t, &words, vocab_size, err);
}

int tok_train_words(Tokenizer *t, WordMap *words, int vocab_size, MoeErr *err) {
    memset(t, 0, sizeof *t);
    if (vocab_size < TOK_MIN_VOCAB || vocab_size > TOK_MAX_VOCAB) {
        wordmap_free(words);
        moe_errorf(err, "tokenizer vocab_size %d is outside [%d, %d] (256 bytes + at least one "
                   "merge + <|endoftext|>)", vocab_size, TOK_MIN_VOCAB, TOK_MAX_VOCAB);
        return moe_hintf(err, "set vocab_size between %d and %d (typical: 4096..65536)",
                         TOK_MIN_VOCAB, TOK_MAX_VOCAB);
    }
    Trainer tr;
    memset(&tr, 0, sizeof tr);
    tr.words = *words;   /* taken over: trainer_free releases it */
    memset(words, 0, sizeof *words);

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
                    wordmap_grow((void **)&touched, &touched_cap, n_touched + 1, sizeof(size_t));
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
    /* whole files, every byte: the streamed trainer counts exactly what reading each file
     * whole would (safe cuts, data/records.h) */
    return tok_train_files(t, paths, n_paths, vocab_size, REC_FILE, 0, NULL, err);
}
