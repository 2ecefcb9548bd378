/* alloc.c: the one allocator. See alloc.h. */
#include "core/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

/* Every block carries a 64-byte header holding its size, so live bytes can be counted and
 * realloc can copy; the user pointer stays 64-byte aligned. */
typedef struct { size_t n; } AllocHead;
/* The counters are updated atomically (relaxed): pool tasks (data/encode.c's parallel
 * encoder) allocate from several threads at once. */
static size_t g_calls, g_live, g_peak;

void *moe_malloc(size_t n) {
    void *p = NULL;
    if (n == 0) n = 1;
    if (posix_memalign(&p, MOE_ALIGN, n + MOE_ALIGN) != 0 || !p) {
        fprintf(stderr, "moetrain: out of memory allocating %zu bytes (live %zu bytes)\n",
                n, __atomic_load_n(&g_live, __ATOMIC_RELAXED));
        if (moe_abort_hook) moe_abort_hook();
        abort();
    }
    ((AllocHead *)p)->n = n;
    __atomic_fetch_add(&g_calls, 1, __ATOMIC_RELAXED);
    size_t live = __atomic_add_fetch(&g_live, n, __ATOMIC_RELAXED);
    size_t peak = __atomic_load_n(&g_peak, __ATOMIC_RELAXED);
    while (live > peak &&
           !__atomic_compare_exchange_n(&g_peak, &peak, live, 1, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {
    }
    return (char *)p + MOE_ALIGN;
}

void *moe_calloc(size_t n) {
    void *p = moe_malloc(n);
    memset(p, 0, n);
    return p;
}

void moe_free(void *p) {
    if (!p) return;
    AllocHead *h = (AllocHead *)((char *)p - MOE_ALIGN);
    __atomic_fetch_sub(&g_live, h->n, __ATOMIC_RELAXED);
    free(h);
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
