/* loader.c: training/validation windows over a token stream. See loader.h. */
#include "data/loader.h"

#include <math.h>
#include <string.h>

void loader_free(Loader *l) {
    if (!l) return;
    moe_free(l->owned);
    moe_free(l->perm);
    memset(l, 0, sizeof *l);
}

int loader_init(Loader *l, const uint16_t *const *spans, const size_t *lens, int n_spans, int T,
                double val_fraction, uint64_t seed, MoeErr *err) {
    memset(l, 0, sizeof *l);
    size_t n = 0;
    for (int i = 0; i < n_spans; i++) n += lens[i];
    if (n == 0) {
        moe_errorf(err, "the training data has zero tokens");
        return moe_hintf(err, "check that the data shards are not empty (re-run the tokenize "
                         "step on non-empty text files)");
    }
    if (T < 1) {
        moe_errorf(err, "sequence length T = %d must be at least 1", T);
        return moe_hintf(err, "set train.seq_len to a positive value");
    }
    if (!(val_fraction >= 0.0 && val_fraction < 1.0)) {
        moe_errorf(err, "data.val_fraction = %g is outside [0, 1)", val_fraction);
        return moe_hintf(err, "use a small fraction such as 0.05 (0 disables validation)");
    }
    size_t n_val = (size_t)floor(val_fraction * (double)n + 0.5);
    size_t n_train = n - n_val, need = (size_t)T + 1;
    if (n_train < need) {
        moe_errorf(err, "the training region has %zu tokens (of %zu, after holding out %zu for "
                   "validation), but one sequence needs seq_len + 1 = %zu", n_train, n, n_val, need);
        return moe_hintf(err, "lower train.seq_len or data.val_fraction, or add more text");
    }
    if (val_fraction > 0.0 && n_val < need) {
        moe_errorf(err, "the validation region has %zu tokens (data.val_fraction = %g of %zu), "
                   "but one sequence needs seq_len + 1 = %zu", n_val, val_fraction, n, need);
        return moe_hintf(err, "lower train.seq_len, raise data.val_fraction (or set it to 0 to "
                         "disable validation), or add more text");
    }
    size_t n_windows = (n_train - 1) / (size_t)T;
    if (n_windows > UINT32_MAX) {
        moe_errorf(err, "%zu training windows exceed the loader's limit of 2^32-1", n_windows);
        return moe_hintf(err, "raise train.seq_len or split the corpus into several runs");
    }
    if (n_spans == 1) {
        l->tokens = spans[0];
    } else {
        l->owned = moe_malloc(n * sizeof(uint16_t));
        size_t off = 0;
        for (int i = 0; i < n_spans; i++) {
            if (lens[i]) memcpy(l->owned + off, spans[i], lens[i] * sizeof(uint16_t));
            off += lens[i];
        }
        l->tokens = l->owned;
    }
    l->T = T;
    l->seed = seed;
    l->n_tokens = n;
    l->n_train = n_train;
    l->n_val = n_val;
    l->n_windows = n_windows;
    l->n_val_windows = n_val ? (n_val - 1) / (size_t)T : 0;
    l->perm = moe_malloc(n_windows * sizeof(uint32_t));
    l->perm_epoch = UINT64_MAX;
    return 0;
}

int loader_init_shards(Loader *l, const Shard *shards, int n_shards, int T, double val_fraction,
                       uint64_t seed, MoeErr *err) {
    memset(l, 0, sizeof *l);
    if (n_shards <= 0) {
        moe_errorf(err, "no data shards given");
        return moe_hintf(err, "list at least one token shard in the data section");
    }
    for (int i = 1; i < n_shards; i++) {
        if (shards[i].vocab_size != shards[0].vocab_size || shards[i].tok_hash != shards[0].tok_hash) {
            moe_errorf(err, "shards %s and %s were made by different tokenizers (vocab_size %u vs "
                       "%u, hash %016llx vs %016llx)", shards[0].path, shards[i].path,
                       shards[0].vocab_size, shards[i].vocab_size,
                       (unsigned long long)shards[0].tok_hash, (unsigned long long)shards[i].tok_hash);
            return moe_hintf(err, "re-encode all text with one tokenizer");
        }
    }
    const uint16_t **spans = moe_malloc((size_t)n_shards * sizeof *spans);
    size_t *lens = moe_malloc((size_t)n_shards * sizeof *lens);
    for (int i = 0; i < n_shards; i++) { spans[i] = shards[i].tokens; lens[i] = shards[i].n_tokens; }
    int rc = loader_init(l, (const uint16_t *const *)spans, lens, n_shards, T, val_fraction, seed, err);
    moe_free(spans);
    moe_free(lens);
    return rc;
}

/* Uniform integer in [0, n) without modulo bias (rejection of the short top range). */
static uint64_t rng_below(MoeRng *r, uint64_t n) {
    uint64_t limit = -n % n;  /* 2^64 mod n: values below it are rejected */
    for (;;) {
        uint64_t x = rng_next(r);
        if (x >= limit) return x % n;
    }
}

/* Make l->perm the window order of epoch e (Fisher-Yates; a pure function of seed and e). */
static void ensure_perm(Loader *l, uint64_t e) {
    if (l->perm_epoch == e) return;
    MoeRng rng;
    rng_seed(&rng, moe_hash4(l->seed, e, 0x6c6f61646572ULL /* "loader" */, 0));
    for (size_t i = 0; i < l->n_windows; i++) l->perm[i] = (uint32_t)i;
    for (size_t i = l->n_windows; i > 1; i--) {
        size_t j = (size_t)rng_below(&rng, i);
        uint32_t tmp = l->perm[i - 1];
        l->perm[i - 1] = l->perm[j];
        l->perm[j] = tmp;
    }
    l->perm_epoch = e;
}

void loader_set_mask(Loader *l, const uint8_t *mask) { l->mask = mask; }
bool loader_has_mask(const Loader *l) { return l->mask != NULL; }

/* inputs[0..T) = tok[start..], targets shifted by one (LOSS_IGNORE where masked). */
void loader_window(const Loader *l, size_t start, int32_t *in, int32_t *tgt) {
    ASSERT(start + (size_t)l->T < l->n_tokens, "window at %zu + %d outside %zu tokens", start,
           l->T, l->n_tokens);
    const uint16_t *w = l->tokens + start;
    for (int t = 0; t < l->T; t++) {
        in[t] = w[t];
        tgt[t] = w[t + 1];
    }
    if (l->mask) {
        const uint8_t *m = l->mask + start + 1;
        for (int t = 0; t < l->T; t++)
            if (!m[t]) tgt[t] = LOSS_IGNORE;
    }
}

void loader_next(Loader *l, int global_B, int row0, int nrows, int32_t *inputs, int32_t *targets) {
    ASSERT(global_B >= 1 && row0 >= 0 && nrows >= 0 && row0 + nrows <= global_B,
           "rows [%d, %d) outside the global batch of %d", row0, row0 + nrows, global_B);
    ASSERT(l->n_windows > 0, "loader_next on an uninitialised loader");
    uint64_t nw = l->n_windows;
    for (int r = 0; r < nrows; r++) {
        uint64_t p = l->cursor + (uint64_t)(row0 + r);
        ensure_perm(l, l->epoch + p / nw);
        size_t start = (size_t)l->perm[p % nw] * (size_t)l->T;
        loader_window(l, start, inputs + (size_t)r * (size_t)l->T,
                      targets + (size_t)r * (size_t)l->T);
    }
    uint64_t p = l->cursor + (uint64_t)global_B;
    l->epoch += p / nw;
    l->cursor = p % nw;
}

size_t loader_train_windows(const Loader *l) { return l->n_windows; }
size_t loader_val_windows(const Loader *l) { return l->n_val_windows; }

void loader_val_batch(const Loader *l, int b_index, int B, int row0, int nrows, int32_t *inputs,
                      int32_t *targets) {
    ASSERT(l->n_val_windows > 0, "loader_val_batch without validation windows (val_fraction 0?)");
    ASSERT(b_index >= 0 && B >= 1 && row0 >= 0 && nrows >= 0 && row0 + nrows <= B,
           "bad validation batch %d rows [%d, %d) of %d", b_index, row0, row0 + nrows, B);
    for (int r = 0; r < nrows; r++) {
        size_t k = ((size_t)b_index * (size_t)B + (size_t)(row0 + r)) % l->n_val_windows;
        loader_window(l, l->n_train + k * (size_t)l->T, inputs + (size_t)r * (size_t)l->T,
                    targets + (size_t)r * (size_t)l->T);
    }
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
    return 0;
}
