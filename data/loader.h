/* loader.h: deterministic, seeded, resumable batches of (input, target) windows.
 *
 * The token stream is the concatenation of the given spans (or shards). Its last
 * round(val_fraction * n) tokens are the validation region, the rest the training region.
 * A window is T+1 consecutive tokens w; input = w[0..T), target = w[1..T] (next token).
 *
 * Training: windows start at multiples of T inside the training region
 * (n_windows = (n_train - 1) / T, so consecutive windows share one token). Each epoch visits
 * every window exactly once in a Fisher-Yates order drawn from MoeRng seeded with
 * moe_hash4(seed, epoch, ...). The position in that sequence is the state {epoch, cursor}:
 * two integers a checkpoint stores to resume exactly.
 *
 * Data parallelism: loader_next consumes a whole global batch of global_B windows and writes
 * only the rows [row0, row0+nrows) of it, so R ranks taking disjoint row slices see exactly
 * the tokens one rank with the whole batch sees, and every rank's state stays identical.
 *
 * Validation: sequential non-overlapping windows (starts at multiples of T in the validation
 * region), batch b holding windows b*B .. b*B+B-1 modulo loader_val_windows().
 *
 * Loss mask (optional, loader_set_mask): where mask[i] is 0, token i is never a target:
 * a window's target t is LOSS_IGNORE when mask[start + t + 1] is 0 (fine-tuning records,
 * data/sft.h: only completion tokens are trained on). Without a mask every target is a
 * token id.
 *
 * Non-goals: document-aware masking or packing, shuffling within windows, streaming corpora
 * larger than memory/address space (shards are memory-mapped whole).
 */
#ifndef MOE_LOADER_H
#define MOE_LOADER_H

#include "core/common.h"
#include "data/shard.h"

typedef struct LoaderState {
    uint64_t epoch;   /* completed passes over the training windows */
    uint64_t cursor;  /* windows consumed in the current epoch, in [0, n_windows) */
} LoaderState;

typedef struct Loader {
    int T;                    /* sequence length */
    uint64_t seed;
    const uint16_t *tokens;   /* (n_tokens) train region then validation region; a view, or owned */
    uint16_t *owned;          /* (n_tokens) concatenation buffer when there were several spans */
    const uint8_t *mask;      /* (n_tokens) borrowed loss mask (0 = not a target), or NULL */
    size_t n_tokens;
    size_t n_train;           /* tokens [0, n_train) are training */
    size_t n_val;             /* tokens [n_train, n_tokens) are validation */
    size_t n_windows;         /* training windows, (n_train - 1) / T */
    size_t n_val_windows;     /* validation windows, (n_val - 1) / T, or 0 when n_val == 0 */
    uint32_t *perm;           /* (n_windows) window order of epoch perm_epoch */
    uint64_t perm_epoch;      /* epoch perm holds; UINT64_MAX = none yet */
    uint64_t epoch, cursor;   /* the state, see LoaderState */
} Loader;

/* Plan a loader over the concatenation of spans[i] (lens[i] tokens each, borrowed: they must
 * outlive the loader unless n_spans > 1, in which case they are copied once here). All
 * allocation happens here. Fails (-1, err with hint, *l left zeroed) when there are no
 * tokens, T < 1, val_fraction is outside [0, 1), the training region has fewer than T+1
 * tokens, or val_fraction > 0 and the validation region has fewer than T+1 tokens, or there
 * are more than 2^32-1 windows. State starts at {0, 0}. */
int loader_init(Loader *l, const uint16_t *const *spans, const size_t *lens, int n_spans, int T,
                double val_fraction, uint64_t seed, MoeErr *err);

/* Same over opened shards (borrowed; keep them open while the loader lives). Also fails when
 * the shards disagree on vocab_size or tokenizer hash. */
int loader_init_shards(Loader *l, const Shard *shards, int n_shards, int T, double val_fraction,
                       uint64_t seed, MoeErr *err);

/* Borrow mask (n_tokens entries, 0 = the token is not a loss target; it must outlive the
 * loader) for every window from now on: training and validation targets are LOSS_IGNORE
 * where it is 0. NULL removes it. */
void loader_set_mask(Loader *l, const uint8_t *mask);
/* Whether a mask is set (targets may be LOSS_IGNORE). */
bool loader_has_mask(const Loader *l);

/* Window at token start of the stream: inputs (T) = tokens [start, start + T), targets (T)
 * the tokens one further, or LOSS_IGNORE where the mask says so; overwritten. ASSERTs the
 * window is inside the stream. */
void loader_window(const Loader *l, size_t start, int32_t *inputs, int32_t *targets);

/* Release and zero. Safe on a zeroed or half-built loader. */
void loader_free(Loader *l);

/* Consume the next global_B training windows (crossing epochs as needed) and write rows
 * [row0, row0+nrows) of that global batch: inputs (nrows, T) and targets (nrows, T),
 * overwritten. Never allocates. ASSERTs 0 <= row0, nrows >= 0, row0 + nrows <= global_B. */
void loader_next(Loader *l, int global_B, int row0, int nrows, int32_t *inputs, int32_t *targets);

/* Number of training windows per epoch and of validation windows (0 if val_fraction == 0). */
size_t loader_train_windows(const Loader *l);
size_t loader_val_windows(const Loader *l);

/* Validation batch b_index of batch size B: rows [row0, row0+nrows) into inputs/targets
 * (nrows, T), overwritten; window (b_index*B + row) mod loader_val_windows(). Does not touch
 * the training state and never allocates. ASSERTs there are validation windows and the row
 * range is inside [0, B). */
void loader_val_batch(const Loader *l, int b_index, int B, int row0, int nrows, int32_t *inputs,
                      int32_t *targets);

/* The resumable position. set_state fails (-1, err) when cursor >= n_windows, i.e. the state
 * was saved over a different corpus or seq_len. */
LoaderState loader_get_state(const Loader *l);
int loader_set_state(Loader *l, LoaderState st, MoeErr *err);

#endif
