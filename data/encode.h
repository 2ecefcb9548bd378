/* encode.h: text files -> one token shard, on all cores, in bounded memory.
 *
 * Each file is read in blocks (data/records.h) and split into documents by its record
 * format; every document's ids are followed by the <|endoftext|> token (tok_eot), so files
 * and records inside files are separated by it. With the default format (file) the ids are
 * exactly those of earlier versions: each file encoded whole, then one end-of-text.
 * The items of a block are encoded in parallel (core/pool.h: contiguous runs of items per
 * task) and written in order, so the shard does not depend on the thread count. Memory is
 * O(block), not O(file): a block of text, its ids, and the shard writer's small buffer.
 *
 * Non-goals: de-duplication, filtering, shuffling documents.
 */
#ifndef MOE_ENCODE_H
#define MOE_ENCODE_H

#include "data/progress.h"
#include "data/records.h"
#include "data/shard.h"
#include "data/tokenizer.h"

typedef struct EncodeStats {
    uint64_t bytes;     /* text bytes read */
    uint64_t tokens;    /* ids written, end-of-text tokens included */
    uint64_t docs;      /* documents */
    double seconds;     /* wall time */
} EncodeStats;

/* Encode paths[0..n) (n >= 1) with t into a new shard at out_path (written atomically:
 * nothing at out_path changes on failure). fmt: the record format (REC_AUTO resolves per
 * file); chunk_bytes: piece size of file documents (0 = REC_CHUNK; tests make it small).
 * progress: a terminal report (may be NULL). st (may be NULL) receives the counts. Fails
 * (-1, err naming the file, with a hint) on a missing, unreadable, empty or malformed
 * file, or on I/O errors. */
int encode_files(const Tokenizer *t, const char *const *paths, int n, RecFormat fmt,
                 size_t chunk_bytes, const char *out_path, Progress *progress,
                 EncodeStats *st, MoeErr *err);

/* The size of the file at path and tok_text_hash of its bytes (what a tokenizer's
 * trained_on record holds), read in blocks (O(1) memory). Fails (-1, err naming the file). */
int encode_file_hash(const char *path, uint64_t *size, uint64_t *hash, MoeErr *err);

#endif
