/* loader.c: training/validation windows over memory-mapped token streams. See loader.h. */
#include "data/loader.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void part_free(LoaderPart *p) {
    perm_free(&p->order);
    moe_free(p->start);
    moe_free(p->name);
    memset(p, 0, sizeof *p);
}

void loader_free(Loader *l) {
    if (!l) return;
    for (int i = 0; i < l->n_src && l->src; i++) part_free(&l->src[i]);
    moe_free(l->src);
    part_free(&l->val_src);
    mix_free(&l->mix);
    moe_free(l->mix_count);
    moe_free(l->train_first);
    moe_free(l->val_parts);
    moe_free(l->val_first);
    memset(l, 0, sizeof *l);
}

/* The stream of source s (no regions yet). Fails on a source without shards or tokens. */
static int part_stream(LoaderPart *p, const LoaderSource *s, MoeErr *err) {
    memset(p, 0, sizeof *p);
    p->name = moe_strdup(s->name ? s->name : "?");
    if (s->n_shards <= 0) {
        moe_errorf(err, "data source %s has no shards", p->name);
        return moe_hintf(err, "list at least one text file or token shard for it");
    }
    p->shards = s->shards;
    p->n_shards = s->n_shards;
    p->mask = s->mask;
    p->start = moe_malloc(sizeof(size_t) * ((size_t)s->n_shards + 1));
    p->start[0] = 0;
    for (int i = 0; i < s->n_shards; i++) p->start[i + 1] = p->start[i] + s->shards[i].n_tokens;
    p->n_tokens = p->start[s->n_shards];
    if (p->n_tokens == 0) {
        moe_errorf(err, "data source %s has zero tokens", p->name);
        return moe_hintf(err, "check that its shards are not empty (re-encode non-empty text)");
    }
    return 0;
}

/* Every shard against the first one's vocabulary and tokenizer. */
static int same_tokenizer(const Shard *ref, const LoaderPart *p, MoeErr *err) {
    for (int i = 0; i < p->n_shards; i++) {
        const Shard *s = &p->shards[i];
        if (s->vocab_size != ref->vocab_size || s->tok_hash != ref->tok_hash) {
            moe_errorf(err, "shards %s and %s were made by different tokenizers (vocab_size %u "
                       "vs %u, hash %016llx vs %016llx)", ref->path, s->path, ref->vocab_size,
                       s->vocab_size, (unsigned long long)ref->tok_hash,
                       (unsigned long long)s->tok_hash);
            return moe_hintf(err, "re-encode all text with one tokenizer");
        }
    }
    return 0;
}

/* Split p into training and validation regions (val_fraction of its tail, or none when
 * vf < 0: p is a separate validation source and all of it validates). */
static int part_regions(LoaderPart *p, int T, double vf, bool one_source, MoeErr *err) {
    const size_t n = p->n_tokens, need = (size_t)T + 1;
    if (vf < 0) {   /* a validation source */
        p->n_train = 0;
        p->val_begin = 0;
        p->n_val = n;
        if (n < need) {
            moe_errorf(err, "the validation data %s has %zu tokens, but one sequence needs "
                       "seq_len + 1 = %zu", p->name, n, need);
            return moe_hintf(err, "lower train.seq_len or give more validation text");
        }
        p->n_val_windows = (n - 1) / (size_t)T;
        return 0;
    }
    size_t n_val = (size_t)floor(vf * (double)n + 0.5);
    size_t n_train = n - n_val;
    const char *what = one_source ? "the training region" : "the training region of source";
    if (n_train < need) {
        moe_errorf(err, "%s%s%s has %zu tokens (of %zu, after holding out %zu for validation), "
                   "but one sequence needs seq_len + 1 = %zu", what, one_source ? "" : " ",
                   one_source ? "" : p->name, n_train, n, n_val, need);
        return moe_hintf(err, "lower train.seq_len or data.val_fraction, or add more text");
    }
    if (vf > 0.0 && n_val < need) {
        moe_errorf(err, "the validation region%s%s has %zu tokens (data.val_fraction = %g of "
                   "%zu), but one sequence needs seq_len + 1 = %zu", one_source ? "" : " of ",
                   one_source ? "" : p->name, n_val, vf, n, need);
        return moe_hintf(err, "lower train.seq_len, raise data.val_fraction (or set it to 0 to "
                         "disable validation), give a separate data.val_text, or add more "
                         "text");
    }
    p->n_train = n_train;
    p->val_begin = n_train;
    p->n_val = n_val;
    p->n_windows = (n_train - 1) / (size_t)T;
    p->n_val_windows = n_val ? (n_val - 1) / (size_t)T : 0;
    return 0;
}

int loader_init(Loader *l, const LoaderSource *train, int n_src, const LoaderSource *val, int T,
                double val_fraction, uint64_t seed, MoeErr *err) {
    memset(l, 0, sizeof *l);
    if (n_src <= 0) {
        moe_errorf(err, "no training data given");
        return moe_hintf(err, "list text files under data.text or token shards under "
                         "data.shards");
    }
    if (T < 1) {
        moe_errorf(err, "sequence length T = %d must be at least 1", T);
        return moe_hintf(err, "set train.seq_len to a positive value");
    }
    if (!val && !(val_fraction >= 0.0 && val_fraction < 1.0)) {
        moe_errorf(err, "data.val_fraction = %g is outside [0, 1)", val_fraction);
        return moe_hintf(err, "use a small fraction such as 0.05 (0 disables validation)");
    }
    l->T = T;
    l->seed = seed;
    l->src = moe_calloc(sizeof(LoaderPart) * (size_t)n_src);
    l->n_src = n_src;
    for (int i = 0; i < n_src; i++) {
        if (part_stream(&l->src[i], &train[i], err) ||
            same_tokenizer(&train[0].shards[0], &l->src[i], err) ||
            part_regions(&l->src[i], T, val ? 0.0 : val_fraction, n_src == 1, err))
            goto fail;
    }
    if (val) {
        l->has_val_src = true;
        if (part_stream(&l->val_src, val, err) ||
            same_tokenizer(&train[0].shards[0], &l->val_src, err) ||
            part_regions(&l->val_src, T, -1.0, true, err))
            goto fail;
    }
    /* training windows, and their order */
    l->train_first = moe_malloc(sizeof(size_t) * ((size_t)n_src + 1));
    l->train_first[0] = 0;
    for (int i = 0; i < n_src; i++) {
        l->train_first[i + 1] = l->train_first[i] + l->src[i].n_windows;
        l->n_train_tokens += l->src[i].n_train;
        /* one source keeps the Fisher-Yates order of earlier versions (when small enough) */
        perm_init(&l->src[i].order, l->src[i].n_windows, seed, (uint64_t)i, n_src == 1);
    }
    l->n_windows = l->train_first[n_src];
    if (n_src >= 2) {
        double *w = moe_malloc(sizeof(double) * (size_t)n_src);
        const char **names = moe_malloc(sizeof(char *) * (size_t)n_src);
        for (int i = 0; i < n_src; i++) { w[i] = train[i].weight; names[i] = l->src[i].name; }
        int bad = mix_init(&l->mix, w, n_src, names, err);
        moe_free(w);
        moe_free(names);
        if (bad) goto fail;
        l->mix_count = moe_calloc(sizeof(uint64_t) * (size_t)n_src);
    }
    /* validation windows: the parts that hold some, in order */
    l->val_parts = moe_malloc(sizeof(LoaderPart *) * ((size_t)n_src + 1));
    l->val_first = moe_malloc(sizeof(size_t) * ((size_t)n_src + 2));
    l->val_first[0] = 0;
    if (val) {
        l->val_parts[l->n_val_parts++] = &l->val_src;
    } else {
        for (int i = 0; i < n_src; i++)
            if (l->src[i].n_val_windows) l->val_parts[l->n_val_parts++] = &l->src[i];
    }
    for (int k = 0; k < l->n_val_parts; k++) {
        l->val_first[k + 1] = l->val_first[k] + l->val_parts[k]->n_val_windows;
        l->n_val_tokens += l->val_parts[k]->n_val;
    }
    l->n_val_windows = l->val_first[l->n_val_parts];
    return 0;
fail:
    loader_free(l);
    return -1;
}

/* A corrupt id met while reading a window: nothing can travel up from inside a training
 * step, so say what and where (the shard, the token) and stop every rank. */
static void bad_token(const Shard *s, size_t idx) {
    fprintf(stderr, "moetrain: error: shard %s: token %zu has id %u, not below vocab_size %u\n"
            "hint: the shard is corrupt; regenerate it from the text (moetrain data encode) or "
            "restore it from a backup\n", s->path ? s->path : "?", idx, shard_token(s, idx),
            s->vocab_size);
    fflush(stderr);
    if (moe_abort_hook) moe_abort_hook();
    exit(1);
}

/* Tokens [off, off + n) of p's stream into out (n), across shard boundaries. */
static void part_read(const LoaderPart *p, size_t off, size_t n, int32_t *out) {
    /* the last shard whose start is <= off (binary search over the prefix sums) */
    int lo = 0, hi = p->n_shards - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (p->start[mid] <= off) lo = mid;
        else hi = mid - 1;
    }
    for (int s = lo; n > 0; s++) {
        ASSERT(s < p->n_shards, "read past the end of source %s", p->name);
        const Shard *sh = &p->shards[s];
        size_t in = off - p->start[s];
        if (in >= sh->n_tokens) continue;   /* an empty shard */
        size_t k = sh->n_tokens - in < n ? sh->n_tokens - in : n;
        size_t got = shard_read(sh, in, k, out);
        if (got != k) bad_token(sh, in + got);
        out += k;
        off += k;
        n -= k;
    }
}

/* The window starting at stream offset start: inputs[0..T), targets shifted by one
 * (LOSS_IGNORE where p's mask is 0). in and tgt are (T) each; the T+1 tokens are read into
 * tgt[-1..T) by way of in. */
static void copy_window(const Loader *l, const LoaderPart *p, size_t start, int32_t *in,
                        int32_t *tgt) {
    const int T = l->T;
    part_read(p, start, (size_t)T, in);
    for (int t = 0; t + 1 < T; t++) tgt[t] = in[t + 1];
    part_read(p, start + (size_t)T, 1, tgt + T - 1);
    if (p->mask) {
        const uint8_t *m = p->mask + start + 1;
        for (int t = 0; t < T; t++)
            if (!m[t]) tgt[t] = LOSS_IGNORE;
    }
}

void loader_next(Loader *l, int global_B, int row0, int nrows, int32_t *inputs, int32_t *targets) {
    ASSERT(global_B >= 1 && row0 >= 0 && nrows >= 0 && row0 + nrows <= global_B,
           "rows [%d, %d) outside the global batch of %d", row0, row0 + nrows, global_B);
    ASSERT(l->n_windows > 0, "loader_next on an uninitialised loader");
    const uint64_t nw = l->n_windows;
    const size_t T = (size_t)l->T;
    if (l->n_src == 1) {
        LoaderPart *p = &l->src[0];
        for (int r = 0; r < nrows; r++) {
            uint64_t q = l->cursor + (uint64_t)(row0 + r);
            size_t w = perm_at(&p->order, l->epoch + q / nw, (size_t)(q % nw));
            copy_window(l, p, w * T, inputs + (size_t)r * T, targets + (size_t)r * T);
        }
    } else {
        /* every rank walks the whole global batch's schedule (the counts must advance the
         * same everywhere) and reads only its own rows */
        const uint64_t g0 = l->epoch * nw + l->cursor;
        for (int j = 0; j < global_B; j++) {
            int s = mix_pick(&l->mix, g0 + (uint64_t)j, l->mix_count);
            uint64_t k = l->mix_count[s]++;
            if (j < row0 || j >= row0 + nrows) continue;
            LoaderPart *p = &l->src[s];
            size_t w = perm_at(&p->order, k / p->n_windows, (size_t)(k % p->n_windows));
            size_t r = (size_t)(j - row0);
            copy_window(l, p, w * T, inputs + r * T, targets + r * T);
        }
    }
    uint64_t q = l->cursor + (uint64_t)global_B;
    l->epoch += q / nw;
    l->cursor = q % nw;
}

bool loader_has_mask(const Loader *l) {
    for (int i = 0; i < l->n_src; i++)
        if (l->src[i].mask) return true;
    return l->has_val_src && l->val_src.mask;
}

size_t loader_train_windows(const Loader *l) { return l->n_windows; }
size_t loader_val_windows(const Loader *l) { return l->n_val_windows; }

/* The part k of first[0..n] (prefix sums) that holds window w: first[k] <= w < first[k+1]. */
static int find_part(const size_t *first, int n, size_t w) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (first[mid] <= w) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* Validation window k into in/tgt (T each). */
static void val_window(const Loader *l, size_t k, int32_t *in, int32_t *tgt) {
    int part = find_part(l->val_first, l->n_val_parts, k);
    const LoaderPart *p = l->val_parts[part];
    copy_window(l, p, p->val_begin + (k - l->val_first[part]) * (size_t)l->T, in, tgt);
}

void loader_val_batch(const Loader *l, int b_index, int B, int row0, int nrows, int32_t *inputs,
                      int32_t *targets) {
    ASSERT(l->n_val_windows > 0, "loader_val_batch without validation windows (val_fraction 0?)");
    ASSERT(b_index >= 0 && B >= 1 && row0 >= 0 && nrows >= 0 && row0 + nrows <= B,
           "bad validation batch %d rows [%d, %d) of %d", b_index, row0, row0 + nrows, B);
    for (int r = 0; r < nrows; r++) {
        size_t k = ((size_t)b_index * (size_t)B + (size_t)(row0 + r)) % l->n_val_windows;
        val_window(l, k, inputs + (size_t)r * (size_t)l->T, targets + (size_t)r * (size_t)l->T);
    }
}

void loader_window(const Loader *l, bool val, size_t w, int32_t *inputs, int32_t *targets) {
    const size_t nw = val ? l->n_val_windows : l->n_windows;
    ASSERT(w < nw, "loader_window %zu of %zu (%s)", w, nw, val ? "val" : "train");
    if (val) {
        val_window(l, w, inputs, targets);
        return;
    }
    int s = find_part(l->train_first, l->n_src, w);
    copy_window(l, &l->src[s], (w - l->train_first[s]) * (size_t)l->T, inputs, targets);
}

LoaderState loader_get_state(const Loader *l) {
    LoaderState st = {l->epoch, l->cursor};
    return st;
}

int loader_set_state(Loader *l, LoaderState st, MoeErr *err) {
    if (st.cursor >= l->n_windows) {
        moe_errorf(err, "data loader state (epoch %llu, cursor %llu) does not fit this corpus: "
                   "it has only %zu training windows per epoch", (unsigned long long)st.epoch,
                   (unsigned long long)st.cursor, l->n_windows);
        return moe_hintf(err, "resume with the same data shards, seq_len and val_fraction as "
                         "the checkpoint was trained with");
    }
    l->epoch = st.epoch;
    l->cursor = st.cursor;
    if (l->n_src >= 2) mix_counts(&l->mix, l->epoch * l->n_windows + l->cursor, l->mix_count);
    return 0;
}
