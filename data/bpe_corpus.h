/* bpe_corpus.h: training a tokenizer on a large corpus: the files are read in blocks
 * (data/records.h: documents by record format, file documents in pieces at safe cuts), the
 * pre-tokens of each block are counted on all cores, and an optional byte budget samples
 * the corpus evenly instead of reading all of it into the counts.
 *
 * Counting is split into a fixed number of tasks per block (not one per core), each with
 * its own map, merged in task order: the counts, and so the tokenizer, are the same
 * whatever the thread count, and the same as counting each file whole (tok_train_buffers):
 * pieces cut at safe cuts pre-tokenize exactly as the whole text does.
 *
 * Sampling (max_bytes > 0 and below the corpus size): a running credit grows by
 * max_bytes/total per byte read; an item (a piece of about 256 KiB, or a record) the credit
 * covers is counted whole, otherwise the credit's worth of its start (cut after a space or
 * newline), and what is counted is taken from the credit. So about max_bytes bytes spread
 * evenly over every file (at least a part of every 256 KiB piece) are counted; every byte is
 * still read once (to hash the files for the trained_on record and to find the items).
 *
 * Non-goals: parallel merging (the merge loop, data/bpe_train.c, is sequential).
 */
#ifndef MOE_BPE_CORPUS_H
#define MOE_BPE_CORPUS_H

#include "data/progress.h"
#include "data/records.h"
#include "data/tokenizer.h"
#include "data/wordmap.h"

/* Train *t (zeroed first) with vocab_size tokens on paths[0..n) read in record format fmt;
 * max_bytes 0 = all bytes; progress (may be NULL) reports the counting pass. Records the
 * files in t->sources (trained_on: each whole file's size and tok_text_hash). Fails (-1,
 * err with a hint) on a missing, empty, unreadable or malformed file, or as tok_train. */
int tok_train_files(Tokenizer *t, const char *const *paths, int n, int vocab_size,
                    RecFormat fmt, uint64_t max_bytes, Progress *progress, MoeErr *err);

/* The merge loop on counted pre-tokens (words: key = pre-token bytes, val = count; taken
 * over and freed, also on failure). Implemented in data/bpe_train.c. Fails as tok_train. */
int tok_train_words(Tokenizer *t, WordMap *words, int vocab_size, MoeErr *err);

#endif
