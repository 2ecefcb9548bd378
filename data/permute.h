/* permute.h: the order in which an epoch visits a source's training windows.
 *
 * An epoch visits every one of n windows exactly once, in an order that is a pure function
 * of (key, epoch): position p of epoch e holds window perm_at(e, p).
 *
 * Two orders, picked by n and by the caller:
 * - Fisher-Yates (perm_fy): the order of earlier versions, kept bit for bit for a single
 *   source of at most PERM_FY_MAX windows. It stores the epoch's whole order (4 bytes per
 *   window, at most 4 MiB here) and redraws it from MoeRng seeded with
 *   moe_hash4(key, epoch, "loader", source) when the epoch changes.
 * - A keyed Feistel permutation (Black and Rogaway 2002, "Ciphers with arbitrary finite
 *   domains": a balanced Feistel network on the smallest even-bit power of two >= n, with
 *   cycle walking back into [0, n)). O(1) memory and no set-up, so the loader's memory and
 *   start-up do not grow with the corpus: used above PERM_FY_MAX windows and for every
 *   source of a mixture. Six rounds, each round function moe_hash4(key, epoch, round, half);
 *   cycle walking needs fewer than 4 rounds of the network per call on average (the domain
 *   is < 4n).
 * Either order is deterministic from (key, epoch) alone, so the loader's state stays two
 * integers per source (what a checkpoint stores).
 *
 * Non-goals: statistical quality beyond "looks shuffled" (training needs no cryptographic
 * strength), orders that change within an epoch.
 */
#ifndef MOE_PERMUTE_H
#define MOE_PERMUTE_H

#include "core/common.h"

#define PERM_FY_MAX ((size_t)1 << 20)   /* windows; the Fisher-Yates table is 4 MiB at most */

typedef struct WindowOrder {
    size_t n;              /* windows */
    uint64_t key;          /* the loader's seed */
    uint64_t source;       /* the source's index (part of the key) */
    bool fisher_yates;     /* else Feistel */
    uint32_t *perm;        /* (n) Fisher-Yates order of epoch perm_epoch, or NULL */
    uint64_t perm_epoch;   /* epoch perm holds; UINT64_MAX = none yet */
    int half_bits;         /* Feistel: each half has this many bits (2*half_bits >= log2 n) */
} WindowOrder;

/* Set up the order of n >= 1 windows; fisher_yates is honoured only when n <= PERM_FY_MAX
 * (else Feistel). Allocates the Fisher-Yates table here, never later. */
void perm_init(WindowOrder *o, size_t n, uint64_t key, uint64_t source, bool fisher_yates);
/* Release and zero; safe on a zeroed order. */
void perm_free(WindowOrder *o);
/* Window at position p (< n) of epoch e. Redraws the Fisher-Yates table when e differs
 * from the last epoch asked for (O(n) then, O(1) otherwise); never allocates. */
size_t perm_at(WindowOrder *o, uint64_t e, size_t p);

#endif
