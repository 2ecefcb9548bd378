/* shard.h: token shards, the binary files the loader trains on.
 *
 * Format version 2 (written by this build; little-endian, 40-byte header, then the tokens):
 *   offset  0  char[8]   magic "MOETOK1\0"
 *   offset  8  uint32    version = 2
 *   offset 12  uint32    vocab_size V, in [1, 2^31]
 *   offset 16  uint64    n_tokens
 *   offset 24  uint64    tokenizer hash (tok_hash of the tokenizer that made the shard)
 *   offset 32  uint32    token width in bytes: 2 (uint16 ids) when V <= 65536, else 4
 *   offset 36  uint32    reserved, 0
 *   offset 40  uint16 or uint32 tokens[n_tokens]
 * The file size must be exactly 40 + width*n_tokens.
 * Format version 1 (still read): the same first 32 bytes with version = 1 and V <= 65536,
 * then uint16 tokens at offset 32; size 32 + 2*n_tokens.
 *
 * Written atomically (tmp, fsync, rename) by a streaming writer (ShardWriter: the header's
 * count is patched at the end, so a writer never holds the tokens in memory). Opened with a
 * read-only memory map whose header and size are validated: O(1) in the shard's length, so
 * opening a 10^9-token shard costs what opening a small one does and reads no token page.
 * The ids are checked where they are read (shard_read, a handful per training window) or,
 * for tools and fuzzers, all at once (shard_check_ids).
 *
 * Non-goals: compression, an index of document boundaries (documents are separated by the
 * <|endoftext|> token, data/encode.h).
 */
#ifndef MOE_SHARD_H
#define MOE_SHARD_H

#include "core/common.h"
#include "data/tokenizer.h"

#define SHARD_MAGIC "MOETOK1"  /* 7 chars + the NUL = 8 bytes */
#define SHARD_VERSION 2u       /* written; version 1 is still read */
#define SHARD_HEADER_BYTES 40u
#define SHARD_V1_HEADER_BYTES 32u
#define SHARD_MAX_VOCAB16 65536u            /* largest V stored with 2-byte ids */
#define SHARD_MAX_VOCAB (1u << 31)          /* largest V at all (4-byte ids) */

typedef struct Shard {
    const void *tokens;      /* (n_tokens) uint16 or uint32 ids (width); a view into the
                                mapping (or the caller's memory: shard_view), valid until
                                shard_close */
    size_t n_tokens;
    int width;               /* bytes per id: 2 or 4 */
    int version;             /* format version of the file (1 or 2); 2 for a view */
    uint32_t vocab_size;     /* V from the header */
    uint64_t tok_hash;       /* tokenizer hash from the header */
    void *map;               /* the mapping (NULL for a view, an empty or unopened shard) */
    size_t map_len;          /* bytes mapped */
    char *path;              /* owned copy, for error messages */
} Shard;

/* Token width for a vocabulary of V ids: 2 when V <= 65536, else 4. */
static inline int shard_width_for(uint32_t vocab) { return vocab <= SHARD_MAX_VOCAB16 ? 2 : 4; }

/* Id i of s (i < n_tokens; not range-checked against vocab_size: see shard_read). */
static inline uint32_t shard_token(const Shard *s, size_t i) {
    return s->width == 2 ? ((const uint16_t *)s->tokens)[i] : ((const uint32_t *)s->tokens)[i];
}

/* Copy ids [off, off+n) of s into out (n, overwritten). Returns n when every id is below
 * vocab_size, else the index (relative to off) of the first one that is not (out then
 * holds the ids up to it). ASSERTs off + n <= n_tokens. */
size_t shard_read(const Shard *s, size_t off, size_t n, int32_t *out);

/* Streaming writer: open, put ids in any number of calls, commit (or abort). The file
 * appears at path only on a successful commit (path unchanged otherwise). */
typedef struct ShardWriter {
    void *af;                /* owned FsAtomicFile (opaque here) */
    uint32_t vocab;
    int width;
    uint64_t tok_hash;
    size_t n;                /* ids written so far */
    char *path;              /* owned copy, for messages */
} ShardWriter;
/* Fails (-1, err) when vocab is 0 or > 2^31, or the temporary cannot be created. */
int shard_writer_open(ShardWriter *w, const char *path, uint32_t vocab, uint64_t tok_hash,
                      MoeErr *err);
/* Append ids (n, borrowed). Fails (-1, err naming the id's index in the file and its
 * value; the writer is then aborted) when an id is outside [0, vocab), or on I/O errors. */
int shard_writer_put(ShardWriter *w, const int32_t *ids, size_t n, MoeErr *err);
/* Patch the header's count, flush, fsync and publish. Fails (-1, err); the writer is
 * closed either way (zeroed). */
int shard_writer_commit(ShardWriter *w, MoeErr *err);
/* Discard the temporary. Safe on a zeroed or finished writer. */
void shard_writer_abort(ShardWriter *w);

/* Write ids (n, borrowed, each in [0, vocab)) to path atomically in format version 2 (the
 * width shard_width_for(vocab)). Fails (-1, err) when vocab is 0 or > 2^31, an id is out
 * of range (naming its index and value; nothing is written), or on I/O errors (path
 * unchanged). */
int shard_write(const char *path, const int32_t *ids, size_t n, uint32_t vocab, uint64_t tok_hash,
                MoeErr *err);

/* Map path read-only into *s (zeroed or closed before) and validate magic, version (1 or 2),
 * vocab, width and size; O(1) in the number of tokens (ids are not read). Errors name the
 * file (and sizes) with a hint; *s is left zeroed on failure. */
int shard_open(Shard *s, const char *path, MoeErr *err);

/* Check every id of s is below vocab_size (reads the whole shard). Fails (-1, err naming
 * the file, the token index and the value). */
int shard_check_ids(const Shard *s, MoeErr *err);

/* Make *s a view of tokens (n ids of width 2 or 4 bytes, borrowed: they must outlive s)
 * as if a shard file held them; label names it in messages. ASSERTs the width. */
void shard_view(Shard *s, const void *tokens, size_t n, int width, uint32_t vocab,
                uint64_t tok_hash, const char *label);

/* Unmap and zero. Safe on a zeroed or already-closed shard. */
void shard_close(Shard *s);

#endif
