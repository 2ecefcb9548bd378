/* shard.h: token shards, the binary files the loader trains on.
 *
 * Format (little-endian, 32-byte header, then the tokens):
 *   offset  0  char[8]   magic "MOETOK1\0"
 *   offset  8  uint32    version = 1
 *   offset 12  uint32    vocab_size V (<= 65536, so ids fit uint16)
 *   offset 16  uint64    n_tokens
 *   offset 24  uint64    tokenizer hash (tok_hash of the tokenizer that made the shard)
 *   offset 32  uint16    tokens[n_tokens]
 * The file size must be exactly 32 + 2*n_tokens. Written atomically (tmp, fsync, rename);
 * opened with a read-only memory map and fully validated (every id < V) before use.
 *
 * Non-goals: compression, random access to document boundaries (documents are separated by
 * the <|endoftext|> token), vocabularies above 65536.
 */
#ifndef MOE_SHARD_H
#define MOE_SHARD_H

#include "core/common.h"
#include "data/tokenizer.h"

#define SHARD_MAGIC "MOETOK1"  /* 7 chars + the NUL = 8 bytes */
#define SHARD_VERSION 1u
#define SHARD_HEADER_BYTES 32u
#define SHARD_MAX_VOCAB 65536u

typedef struct Shard {
    const uint16_t *tokens;  /* (n_tokens) view into the mapping; valid until shard_close */
    size_t n_tokens;
    uint32_t vocab_size;     /* V from the header */
    uint64_t tok_hash;       /* tokenizer hash from the header */
    void *map;               /* the mapping (NULL for an empty or unopened shard) */
    size_t map_len;          /* bytes mapped */
    char *path;              /* owned copy, for error messages */
} Shard;

/* Write ids (n, borrowed, each in [0, vocab)) to path atomically. Fails (-1, err) when
 * vocab is 0 or > 65536, an id is out of range (naming its index and value; nothing is
 * written), or on I/O errors (path unchanged). */
int shard_write(const char *path, const int32_t *ids, size_t n, uint32_t vocab, uint64_t tok_hash,
                MoeErr *err);

/* Map path read-only into *s (zeroed or closed before) and validate magic, version, vocab,
 * size (== 32 + 2*n_tokens) and every id < vocab_size. Errors name the file (and sizes, or
 * the token index and value) with a hint; *s is left zeroed on failure. */
int shard_open(Shard *s, const char *path, MoeErr *err);

/* Unmap and zero. Safe on a zeroed or already-closed shard. */
void shard_close(Shard *s);

/* Encode the text files paths[0..n) with t into one shard at out_path, appending the
 * <|endoftext|> token after each file (document). Fails (-1, err with hint) on a missing,
 * unreadable or empty file ("FILE is empty"), a tokenizer with V > 65536, or I/O errors. */
int shard_encode_files(const Tokenizer *t, const char *const *paths, int n, const char *out_path,
                       MoeErr *err);

#endif
