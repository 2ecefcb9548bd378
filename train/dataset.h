/* dataset.h: a run's data, ready for the loader.
 *
 * Prepares what data.* names: loads data.tokenizer, or trains it on data.text when the file
 * does not exist yet; opens data.shards, refusing one encoded with another vocabulary or
 * tokenizer; encodes data.text into one cached shard run.dir/tokens/text-<hash>.tok (the
 * hash covers the text and the tokenizer, so a change of either re-encodes); then splits the
 * windows into training and validation (data/loader.h).
 * Non-goals: streaming corpora; ordering and splitting the windows (the loader's).
 */
#ifndef MOE_DATASET_H
#define MOE_DATASET_H

#include "configs/config.h"
#include "data/loader.h"
#include "data/shard.h"
#include "data/tokenizer.h"

typedef struct DataSet {
    Tokenizer tok;
    Shard *shards;      /* (n_shards) owned, open */
    int n_shards;
    Loader loader;      /* over shards[0..n_shards) */
    char tok_warning[1024];   /* "" or why the tokenizer looks made for other text (its
                                 trained_on record differs from data.text): the caller
                                 prints it as a warning */
} DataSet;

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

#endif
