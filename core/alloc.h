/* alloc.h: the one allocator.
 *
 * 64-byte aligned, counts live bytes, their peak and the calls, aborts with the requested
 * size on failure (never returns NULL). The call counter is what the "no allocation in the
 * step" tests read.
 */
#ifndef MOE_ALLOC_H
#define MOE_ALLOC_H

#include <stddef.h>

#define MOE_ALIGN 64

void *moe_malloc(size_t n);
void *moe_calloc(size_t n);  /* zeroed; a large block's pages become resident only when
                               first written (the C library's calloc) */
void *moe_realloc(void *p, size_t old_n, size_t new_n); /* keeps min(old,new) bytes */
void moe_free(void *p);      /* NULL is fine */
char *moe_strdup(const char *s);
/* Statistics: number of moe_malloc/calloc/realloc calls so far, live and peak bytes. */
size_t moe_alloc_calls(void);
size_t moe_live_bytes(void);
size_t moe_peak_bytes(void);

#endif
