/* loader.h: deterministic, seeded, resumable batches of (input, target) windows, read in
 * place from memory-mapped shards.
 *
 * Sources. The training data is one or more sources; a source is a list of shards read as
 * one token stream (their concatenation, never copied: a token offset maps to (shard,
 * offset) by a binary search over the shards' prefix sums, so a window that spans the end of
 * one shard reads its tail there and its head from the next). A window is T+1 consecutive
 * tokens w of one source; input = w[0..T), target = w[1..T] (next token). Windows start at
 * multiples of T in the source's training region (n_windows = (n_train - 1) / T, so
 * consecutive windows share one token); a window never crosses from one source into another.
 *
 * Validation. Either a separate validation source (data.val_text / data.val_shards: all its
 * tokens validate), or, without one, the last round(val_fraction * n) tokens of each
 * training source. Validation windows are sequential and non-overlapping (starts at
 * multiples of T in each validation region, the regions in source order); batch b holds
 * windows b*B .. b*B+B-1 modulo loader_val_windows().
 *
 * One source (no weights, the default). Each epoch visits every window exactly once, in the
 * order of data/permute.h (Fisher-Yates, bit for bit the order of earlier versions, up to
 * 2^20 windows; a keyed Feistel permutation above, so that memory stays O(1)). The position
 * is the state {epoch, cursor}: two integers a checkpoint stores to resume exactly.
 *
 * Several sources (a weighted mixture). Window g of the run (g = epoch * n_windows + cursor,
 * n_windows the sum over the sources) comes from the source data/mixture.h schedules for
 * g; each source walks its own windows in its own epochs (Feistel order keyed by the seed
 * and the source's index), so a small source repeats sooner than a large one. The per-source
 * counts are a function of g (mix_counts), so the state is still {epoch, cursor}.
 *
 * Memory and start-up: O(number of shards and sources), not O(tokens): no token is copied
 * or read at init, the shards are mapped (page cache, not anonymous memory), and the only
 * per-window table is the Fisher-Yates order of a single source of at most 2^20 windows
 * (4 MiB). Ids are checked against the vocabulary as windows are read; a shard with an id
 * out of range stops the run with a message naming the shard and the token index.
 *
 * Loss mask (optional, per source: LoaderSource.mask). Where a source's mask[i] is 0, token
 * i of its stream is never a target: a window's target t is LOSS_IGNORE when the mask of
 * the token it names (stream offset start + t + 1) is 0 (fine-tuning records, data/sft.h:
 * only completion tokens are trained on). Inputs and the window order do not depend on it.
 * Without a mask every target is a token id.
 *
 * Data parallelism: loader_next consumes a whole global batch of global_B windows and writes
 * only the rows [row0, row0+nrows) of it, so R ranks taking disjoint row slices see exactly
 * the tokens one rank with the whole batch sees, and every rank's state stays identical.
 *
 * Non-goals: document-aware masking (the model's, data.doc_mask), shuffling within windows,
 * windows that start at document boundaries.
 */
#ifndef MOE_LOADER_H
#define MOE_LOADER_H

#include "core/common.h"
#include "data/mixture.h"
#include "data/permute.h"
#include "data/shard.h"

typedef struct LoaderState {
    uint64_t epoch;   /* completed passes of n_windows windows */
    uint64_t cursor;  /* windows consumed in the current pass, in [0, n_windows) */
} LoaderState;

/* What a source is made of (the caller's: borrowed for loader_init's call, the shards for
 * the loader's life). */
typedef struct LoaderSource {
    const Shard *shards;   /* (n_shards) read as one stream, in order */
    int n_shards;
    double weight;         /* sampling weight, > 0; read only when there are >= 2 sources */
    const char *name;      /* label for messages (copied) */
    const uint8_t *mask;   /* (the stream's n_tokens) loss mask, 0 = not a target, or NULL;
                              borrowed for the loader's life */
} LoaderSource;

/* One source inside the loader. */
typedef struct LoaderPart {
    const Shard *shards;   /* (n_shards) borrowed */
    int n_shards;
    size_t *start;         /* (n_shards + 1) token offset of each shard in the stream */
    size_t n_tokens;       /* of the whole stream */
    size_t n_train;        /* tokens [0, n_train) train */
    size_t n_val;          /* tokens [val_begin, val_begin + n_val) validate */
    size_t val_begin;
    size_t n_windows;      /* training windows, (n_train - 1) / T, or 0 when n_train == 0 */
    size_t n_val_windows;  /* validation windows, (n_val - 1) / T, or 0 when n_val == 0 */
    WindowOrder order;     /* the epochs' window order (training sources only) */
    const uint8_t *mask;   /* (n_tokens) borrowed loss mask, or NULL */
    char *name;            /* owned */
} LoaderPart;

typedef struct Loader {
    int T;                    /* sequence length */
    uint64_t seed;
    int n_src;                /* training sources */
    LoaderPart *src;          /* (n_src) */
    LoaderPart val_src;       /* the separate validation source, when has_val_src */
    bool has_val_src;
    Mixture mix;              /* n_src >= 2: the source schedule */
    uint64_t *mix_count;      /* (n_src) windows drawn from each source before the cursor */
    size_t *train_first;      /* (n_src + 1) prefix sums of the sources' n_windows */
    int n_val_parts;          /* parts holding validation windows, in order */
    const LoaderPart **val_parts;  /* (n_val_parts) borrowed from src / val_src */
    size_t *val_first;        /* (n_val_parts + 1) prefix sums of their n_val_windows */
    size_t n_windows;         /* training windows, summed over the sources */
    size_t n_val_windows;     /* validation windows, summed */
    size_t n_train_tokens;    /* tokens in the training regions, summed */
    size_t n_val_tokens;      /* tokens in the validation regions, summed */
    uint64_t epoch, cursor;   /* the state, see LoaderState */
} Loader;

/* Plan a loader over the training sources train (n_src >= 1) and, when val is not NULL, the
 * separate validation source val (then val_fraction is not used). All allocation happens
 * here; no token is read. Fails (-1, err with hint naming the source, *l left zeroed) when T
 * < 1, a source has no shards or zero tokens, val_fraction is outside [0, 1), a training
 * region has fewer than T+1 tokens, a validation region (val_fraction > 0, or a val source)
 * has fewer than T+1 tokens, the shards disagree on vocab_size or tokenizer hash, or (n_src
 * >= 2) a weight is not > 0 or too small to be sampled (mixture.h). State starts at {0, 0}. */
int loader_init(Loader *l, const LoaderSource *train, int n_src, const LoaderSource *val, int T,
                double val_fraction, uint64_t seed, MoeErr *err);

/* Release and zero. Safe on a zeroed or half-built loader. */
void loader_free(Loader *l);

/* Consume the next global_B training windows (crossing epochs as needed) and write rows
 * [row0, row0+nrows) of that global batch: inputs (nrows, T) and targets (nrows, T),
 * overwritten. Never allocates. ASSERTs 0 <= row0, nrows >= 0, row0 + nrows <= global_B. */
void loader_next(Loader *l, int global_B, int row0, int nrows, int32_t *inputs, int32_t *targets);

/* Whether some source has a loss mask (targets may be LOSS_IGNORE). */
bool loader_has_mask(const Loader *l);

/* Number of training windows per epoch (summed over sources) and of validation windows. */
size_t loader_train_windows(const Loader *l);
size_t loader_val_windows(const Loader *l);

/* Validation batch b_index of batch size B: rows [row0, row0+nrows) into inputs/targets
 * (nrows, T), overwritten; window (b_index*B + row) mod loader_val_windows(). Does not touch
 * the training state and never allocates. ASSERTs there are validation windows and the row
 * range is inside [0, B). */
void loader_val_batch(const Loader *l, int b_index, int B, int row0, int nrows, int32_t *inputs,
                      int32_t *targets);

/* Window w of a split in source order (training: source 0's windows [0, n_windows_0) from
 * its first token, then source 1's, ...; validation: as loader_val_batch numbers them):
 * inputs (T) and targets (T, LOSS_IGNORE where the source's mask says so) overwritten.
 * ASSERTs w is below the split's window count. */
void loader_window(const Loader *l, bool val, size_t w, int32_t *inputs, int32_t *targets);

/* The resumable position. set_state fails (-1, err) when cursor >= n_windows, i.e. the state
 * was saved over a different corpus or seq_len. */
LoaderState loader_get_state(const Loader *l);
int loader_set_state(Loader *l, LoaderState st, MoeErr *err);

#endif
