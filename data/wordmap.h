/* wordmap.h: the hash containers of the BPE tokenizer (data/tokenizer.c, data/bpe_train.c):
 * a map from byte strings to int64 values (pre-token counts while training, the per-call
 * pre-token cache while encoding), and the two helpers both users share: array growth and
 * FNV-1a.
 *
 * Non-goals: deletion, iteration order other than insertion order, thread safety (one map
 * per training run or per encode call).
 */
#ifndef MOE_WORDMAP_H
#define MOE_WORDMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/common.h"

/* Open-addressing map from byte strings to an int64 value; keys live in an arena. Entries
 * are numbered 0..n-1 in insertion order; a zeroed struct is an empty map. */
typedef struct WordMap {
    uint32_t *slots;     /* (cap) entry index + 1; 0 = empty */
    size_t cap;          /* power of two */
    size_t n, ecap;      /* entries, entry capacity */
    uint64_t *hash;      /* (n) */
    size_t *key_off;     /* (n) into arena */
    uint32_t *key_len;   /* (n) */
    int64_t *val;        /* (n) the values, 0 when added */
    uint8_t *arena;      /* (arena_n) every key's bytes, in insertion order */
    size_t arena_n, arena_cap;
} WordMap;

/* Index of key[0..len)'s entry (key borrowed, copied into the arena); adds it with value 0
 * if absent and sets *added accordingly. ASSERTs below 2^32 entries. Pointers into the map
 * (val, arena) may move on an insertion. */
size_t wordmap_get(WordMap *m, const uint8_t *key, size_t len, bool *added);

/* Release everything m owns and zero it. */
void wordmap_free(WordMap *m);

/* Grow the array *p (elements of elem bytes, capacity *cap) to hold at least need elements
 * (capacity doubles from 16; contents kept, moe_realloc). */
void wordmap_grow(void **p, size_t *cap, size_t need, size_t elem);

/* FNV-1a over data[0..n), continuing from h (start with WORDMAP_FNV_OFFSET). */
uint64_t wordmap_fnv1a(uint64_t h, const void *data, size_t n);
#define WORDMAP_FNV_OFFSET 0xcbf29ce484222325ULL

#endif
