/* alloc.c: the one allocator. See alloc.h. */
#include "core/alloc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

/* Every block carries a 64-byte header holding its size, so live bytes can be counted and
 * realloc can copy, and the pointer the C library returned (what free takes); the user
 * pointer stays 64-byte aligned. */
typedef struct { size_t n; void *orig; } AllocHead;
/* The counters are updated atomically (relaxed): pool tasks (data/encode.c's parallel
 * encoder) allocate from several threads at once. */
static size_t g_calls, g_live, g_peak;

static void out_of_memory(size_t n) {
    fprintf(stderr, "moetrain: out of memory allocating %zu bytes (live %zu bytes)\n", n,
            __atomic_load_n(&g_live, __ATOMIC_RELAXED));
    if (moe_abort_hook) moe_abort_hook();
    abort();
}

/* Count a new block of n bytes whose header is at h; returns the user pointer. */
static void *count_new(void *h, size_t n) {
    void *p = h;
    __atomic_fetch_add(&g_calls, 1, __ATOMIC_RELAXED);
    size_t live = __atomic_add_fetch(&g_live, n, __ATOMIC_RELAXED);
    size_t peak = __atomic_load_n(&g_peak, __ATOMIC_RELAXED);
    while (live > peak &&
           !__atomic_compare_exchange_n(&g_peak, &peak, live, 1, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {
    }
    return (char *)p + MOE_ALIGN;
}

void *moe_malloc(size_t n) {
    void *p = NULL;
    if (n == 0) n = 1;
    if (posix_memalign(&p, MOE_ALIGN, n + MOE_ALIGN) != 0 || !p) out_of_memory(n);
    ((AllocHead *)p)->n = n;
    ((AllocHead *)p)->orig = p;
    return count_new(p, n);
}

/* calloc, not malloc + memset: for a large block the C library maps fresh zero pages and
 * does not write them, so memory that is allocated but never touched (e.g. the full-size
 * AdamW moments params_finalise makes before the sharded optimizer cuts them to a slice,
 * parallel/zero.h) never becomes resident. */
void *moe_calloc(size_t n) {
    if (n == 0) n = 1;
    char *raw = calloc(1, n + 2 * MOE_ALIGN);
    if (!raw) out_of_memory(n);
    /* the header sits in the 64 bytes before the first 64-byte boundary past raw + 64 */
    char *user = (char *)(((uintptr_t)raw + 2 * MOE_ALIGN - 1) / MOE_ALIGN * MOE_ALIGN);
    AllocHead *h = (AllocHead *)(user - MOE_ALIGN);
    h->n = n;
    h->orig = raw;
    return count_new(h, n);
}

void moe_free(void *p) {
    if (!p) return;
    AllocHead *h = (AllocHead *)((char *)p - MOE_ALIGN);
    __atomic_fetch_sub(&g_live, h->n, __ATOMIC_RELAXED);
    free(h->orig);
}

void *moe_realloc(void *p, size_t old_n, size_t new_n) {
    void *q = moe_malloc(new_n);
    if (p) {
        memcpy(q, p, old_n < new_n ? old_n : new_n);
        moe_free(p);
    }
    return q;
}

char *moe_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = moe_malloc(n);
    memcpy(d, s, n);
    return d;
}

size_t moe_alloc_calls(void) { return __atomic_load_n(&g_calls, __ATOMIC_RELAXED); }
size_t moe_live_bytes(void) { return __atomic_load_n(&g_live, __ATOMIC_RELAXED); }
size_t moe_peak_bytes(void) { return __atomic_load_n(&g_peak, __ATOMIC_RELAXED); }
