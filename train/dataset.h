/* dataset.h: a run's data, ready for the loader.
 *
 * Prepares what data.* names: loads data.tokenizer, or trains it on data.text when the file
 * does not exist yet; opens data.shards and data.val_shards, refusing one encoded with
 * another vocabulary or tokenizer; encodes each data.text and data.val_text file into its
 * own cached shard run.dir/tokens/text-<hash>.tok (data/encode.h; the hash covers the
 * file's bytes, the tokenizer and the record format, so a change of any re-encodes that
 * file only); then hands the loader its sources (data/loader.h): without weights one
 * source, data.shards then data.text in order (the stream earlier versions trained on);
 * when any entry carries a weight, one source per entry (an entry without a weight counts
 * 1). data.val_text / data.val_shards, when given, are the validation source; otherwise
 * the loader holds out data.val_fraction of each source's tail. data.sft's fine-tuning
 * records (data/sft.h; alone, config_validate) are tokenized in memory instead, into one
 * stream with a loss mask: the loader's one source, whose last whole records (about
 * data.val_fraction of the tokens) validate.
 * A trained run's data can be opened again for scoring (`moetrain eval --split`):
 * dataset_open_run, from the config and tokenizer stored in its checkpoint, cuts the same
 * windows; dataset_window reads any one of them.
 * Non-goals: ordering and splitting the windows (the loader's).
 */
#ifndef MOE_DATASET_H
#define MOE_DATASET_H

#include <stdio.h>

#include "configs/config.h"
#include "data/loader.h"
#include "data/sft.h"
#include "data/shard.h"
#include "data/tokenizer.h"

typedef struct DataSet {
    Tokenizer tok;
    Shard *shards;      /* (n_shards) owned, open */
    int n_shards;
    Loader loader;      /* over shards[0..n_shards), or over sft's stream with its mask */
    SftData sft;        /* data.sft's records (n_records 0 without data.sft) */
    char tok_warning[1024];   /* "" or why the tokenizer looks made for other text (its
                                 trained_on record differs from data.text): the caller
                                 prints it as a warning */
    char tok_note[1024];      /* which tokenizer: trained here, or loaded (and on what) */
    char src_note[1024];      /* which tokens train: the sources and their weights */
    char val_note[1024];      /* which tokens validate, and from where */
} DataSet;

/* Print d's notes (tokenizer, training sources, validation), one line each, to f. */
void dataset_describe(const DataSet *d, FILE *f);

/* Open c's data into d (zeroed first), training the tokenizer and encoding the text first
 * when needed (progress lines on stdout; rank 0 goes first under MPI, the other ranks then
 * find the files made). A tokenizer that was loaded (not trained here) and records the
 * files it was trained on is compared with data.text's (tok_sources_match): a difference
 * fills d->tok_warning; a tokenizer without the record, or no data.text, is not judged.
 * Fails (-1, err naming the file, with a hint) on a missing or mismatched tokenizer or
 * shard or an unwritable run.dir; d is then half-built. */
int dataset_open(const Config *c, DataSet *d, MoeErr *err);
/* Close everything; safe on a zeroed or half-built set; leaves d zeroed. */
void dataset_free(DataSet *d);

/* Open the data of a trained run into d (zeroed first), as its trainer did, for scoring:
 * c is the config stored in one of its checkpoints (label: that file, for messages) with
 * run.dir set to where the run directory is now; tok_bytes (n) is the tokenizer file stored
 * in the checkpoint, used in place of data.tokenizer (which is neither read nor trained).
 * Every file of data.text, data.shards, data.val_text, data.val_shards and data.sft must
 * exist (err names the key, the file and that relative paths are relative to the directory
 * training ran in). Shards are checked as in dataset_open; each text file's cached encoding
 * run.dir/tokens/text-<hash>.tok is opened, or written again when it is missing (a line on
 * log); data.sft's records are read again. Fails (-1, err with a hint); d is then
 * half-built (dataset_free). */
int dataset_open_run(const Config *c, const char *label, const uint8_t *tok_bytes, size_t n,
                     FILE *log, DataSet *d, MoeErr *err);

typedef enum { DATASET_TRAIN, DATASET_VAL } DataSplit;

/* Window w of a split, cut as the loader cuts them (loader_window: training windows in
 * source order, validation windows as validation batches number them). inputs (T) and
 * targets (T, the inputs shifted by one; LOSS_IGNORE where the loss mask of data.sft says
 * so) overwritten. ASSERTs w is below loader_train_windows / loader_val_windows. */
void dataset_window(const DataSet *d, DataSplit split, size_t w, int32_t *inputs,
                    int32_t *targets);

/* Index in c's data.text of the file that is path (the same file, or one with identical
 * bytes), or -1 when none is (or a file cannot be read: then nothing can be said). */
int dataset_text_index(const Config *c, const char *path);

#endif
