/* common.h: the few things every moetrain file shares.
 *
 * - ASSERT: always-on check for programmer errors (never compiled out). Prints file:line,
 *   the message and the MPI rank (if set), then aborts (under MPI, every rank).
 * - moe_malloc / moe_calloc / moe_free: the one allocator. 64-byte aligned, counts live
 *   bytes and calls, aborts with the requested size on failure. The call counter is what the
 *   "no allocation in the step" tests read.
 * - Dimension letters, fixed once for the whole code base:
 *     B batch (sequences), T sequence length, N = B*T tokens, C model width (dim),
 *     H query heads, Hkv key/value heads, D head dim, F expert hidden width, E experts,
 *     K experts per token, V vocab, L layers, R ranks; W attention window (0 = full),
 *     Fs total hidden width of the shared experts (0 = none).
 *   Tensors are row-major and contiguous unless a comment says otherwise.
 *
 * User and environment errors are not asserts: they return a status with a message
 * (see moe_errorf) up to train/, which prints it with a hint and exits non-zero.
 */
#ifndef MOE_COMMON_H
#define MOE_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define MOE_ALIGN 64

/* Rank printed by ASSERT; parallel/ sets it after MPI_Init. */
extern int moe_log_rank;
/* Called by ASSERT before abort(); parallel/ installs MPI_Abort so every rank stops. */
extern void (*moe_abort_hook)(void);

void moe_assert_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

#define ASSERT(cond, ...) \
    do { if (!(cond)) moe_assert_fail(__FILE__, __LINE__, #cond, __VA_ARGS__); } while (0)

/* Aligned allocation; aborts (with the size) on failure, never returns NULL for n > 0. */
void *moe_malloc(size_t n);
void *moe_calloc(size_t n);  /* zeroed */
void *moe_realloc(void *p, size_t old_n, size_t new_n); /* keeps min(old,new) bytes */
void moe_free(void *p);      /* NULL is fine */
char *moe_strdup(const char *s);
/* Statistics: number of moe_malloc/calloc/realloc calls so far and live bytes. */
size_t moe_alloc_calls(void);
size_t moe_live_bytes(void);
size_t moe_peak_bytes(void);

/* Error status for user/environment errors: a message buffer filled by moe_errorf.
 * Functions that can fail on bad input return int (0 = ok, -1 = error) and take MoeErr *. */
typedef struct MoeErr {
    char msg[1024];   /* what was wrong and where (file:line:col, key, dataset) */
    char hint[512];   /* how to fix it; may be empty */
} MoeErr;
int moe_errorf(MoeErr *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int moe_hintf(MoeErr *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* mkdir -p: create path and its missing parents. Fails (-1, err naming the directory that
 * could not be made, with a hint) on any error other than "exists". */
int moe_mkdirs(const char *path, MoeErr *err);

/* Monotonic wall clock in seconds. */
double moe_now(void);

/* Counter-based RNG (splitmix64 on a key): a pure function of its inputs, so random
 * numbers do not depend on the order they are drawn in or on the rank layout. */
uint64_t moe_hash64(uint64_t x);
uint64_t moe_hash4(uint64_t a, uint64_t b, uint64_t c, uint64_t d);
/* Uniform in (0,1) from a 64-bit value (never exactly 0 or 1). */
double moe_u01(uint64_t bits);
/* Standard normal from a counter key (Box-Muller on two hashed uniforms). */
float moe_randn_key(uint64_t a, uint64_t b, uint64_t c, uint64_t d);

/* Sequential RNG for initialisation and data order (xoshiro256**); state is 4 words so it
 * can be checkpointed. */
typedef struct MoeRng { uint64_t s[4]; } MoeRng;
void rng_seed(MoeRng *r, uint64_t seed);
uint64_t rng_next(MoeRng *r);
double rng_uniform(MoeRng *r);     /* [0,1) */
float rng_normal(MoeRng *r);       /* N(0,1) */

#endif
