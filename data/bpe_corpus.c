/* bpe_corpus.c: streamed, parallel pre-token counting for tokenizer training. See
 * bpe_corpus.h. */
#include "data/bpe_corpus.h"

#include <string.h>
#include <sys/stat.h>

#include "core/pool.h"
#include "data/encode.h"
#include "data/pretokenize.h"

#define COUNT_TASKS 64   /* per block, whatever the thread count (see bpe_corpus.h) */

typedef struct CountJob {
    const RecReader *r;
    const size_t *take;    /* (n_items) bytes of each item's start to count */
    WordMap *maps;         /* (tasks) */
    int tasks;
} CountJob;

/* The longest prefix of text no longer than want that ends after a space or newline (a
 * sample cut between words), or 0 when there is none in the last 4 kB before want. */
static size_t sample_prefix(const uint8_t *text, size_t want) {
    for (size_t p = want; p > 0 && want - p < 4096; p--)
        if (text[p - 1] == ' ' || text[p - 1] == '\n') return p;
    return 0;
}

static void count_piece(const uint8_t *piece, size_t len, void *ctx) {
    WordMap *m = ctx;
    bool added;
    size_t e = wordmap_get(m, piece, len, &added);
    m->val[e]++;
}

static void count_task(void *ctx, int k, int worker) {
    (void)worker;
    CountJob *j = ctx;
    size_t lo, hi;
    pool_range(j->r->n_items, k, j->tasks, &lo, &hi);
    for (size_t i = lo; i < hi; i++)
        if (j->take[i])
            tok_pretokenize(j->r->text + j->r->items[i].off, j->take[i], count_piece,
                            &j->maps[k]);
}

/* words += m (in m's insertion order), then free m. */
static void merge_into(WordMap *words, WordMap *m) {
    for (size_t e = 0; e < m->n; e++) {
        bool added;
        size_t g = wordmap_get(words, m->arena + m->key_off[e], m->key_len[e], &added);
        words->val[g] += m->val[e];
    }
    wordmap_free(m);
}

int tok_train_files(Tokenizer *t, const char *const *paths, int n, int vocab_size,
                    RecFormat fmt, uint64_t max_bytes, Progress *progress, MoeErr *err) {
    memset(t, 0, sizeof *t);
    if (n <= 0) {
        moe_errorf(err, "tokenizer training needs at least one text file (got %d)", n);
        return moe_hintf(err, "list the training text files under data.text");
    }
    TokSource *src = moe_calloc(sizeof(TokSource) * (size_t)n);
    uint64_t total = 0;
    int rc = -1;
    for (int f = 0; f < n; f++) {
        if (encode_file_hash(paths[f], &src[f].size, &src[f].hash, err)) goto done;
        total += src[f].size;
    }
    /* the running credit (bytes): grows by max_bytes/total per byte read, an item is taken
     * when the credit covers it (the same double operations in the same order on every
     * run, so the sample is deterministic) */
    const bool sample = max_bytes > 0 && max_bytes < total;
    const double ratio = sample ? (double)max_bytes / (double)total : 1.0;
    double credit = 0;
    uint64_t done_bytes = 0;
    WordMap words;
    memset(&words, 0, sizeof words);
    size_t *take = NULL;
    size_t take_cap = 0;
    WordMap maps[COUNT_TASKS];
    if (progress) progress_start(progress, "tokenizer: counting", total);
    for (int f = 0; f < n; f++) {
        RecReader r;
        if (rec_open(&r, paths[f], fmt, 0, err)) goto fail;
        int got;
        while ((got = rec_next(&r, err)) == 1) {
            if (r.n_items > take_cap) {
                moe_free(take);
                take_cap = r.n_items;
                take = moe_malloc(take_cap * sizeof(size_t));
            }
            for (size_t i = 0; i < r.n_items; i++) {
                const size_t len = r.items[i].len;
                if (!sample) { take[i] = len; continue; }
                credit += (double)len * ratio;
                take[i] = credit >= (double)len ? len : sample_prefix(r.text + r.items[i].off,
                                                                      (size_t)credit);
                credit -= (double)take[i];
            }
            int tasks = r.n_items < COUNT_TASKS ? (int)r.n_items : COUNT_TASKS;
            memset(maps, 0, sizeof maps);
            CountJob j = {&r, take, maps, tasks};
            pool_parallel_for(tasks, count_task, &j);
            for (int k = 0; k < tasks; k++) merge_into(&words, &maps[k]);
            if (progress) progress_update(progress, done_bytes + r.bytes_done);
        }
        done_bytes += r.bytes_done;
        rec_close(&r);
        if (got < 0) goto fail;
    }
    if (progress) progress_end(progress);
    moe_free(take);
    take = NULL;
    rc = tok_train_words(t, &words, vocab_size, err);
    if (rc == 0) {   /* the record tok_save writes (trained_on) */
        t->sources = src;
        t->n_sources = n;
        for (int f = 0; f < n; f++) t->sources[f].name = moe_strdup(paths[f]);
        src = NULL;
    }
    goto done;
fail:
    if (progress) progress_end(progress);
    wordmap_free(&words);
    moe_free(take);
done:
    moe_free(src);
    return rc;
}
