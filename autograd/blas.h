/* blas.h: OpenBLAS start-up and its thread count (which the pool, core/pool.h, follows).
 *
 * Two settings can only be made before OpenBLAS initialises (at program load), through the
 * environment, so blas_init re-executes the program once with them set:
 * - OPENBLAS_CORETYPE: an OpenBLAS that does not know the CPU's model falls back to generic
 *   SSE3 kernels ("Prescott" and the like) although the CPU runs its AVX-512 or AVX2
 *   kernels, which are much faster;
 * - OPENBLAS_THREAD_TIMEOUT: idle workers otherwise spin for 2^28 cycles after each
 *   product, taking the cores from the regions the pool splits.
 * A variable the user already set is left alone.
 * Non-goals: other BLAS libraries' start-up (the thread hooks are OpenBLAS's).
 */
#ifndef MOE_BLAS_H
#define MOE_BLAS_H

#include <stddef.h>

/* Call first thing in main. Sets OPENBLAS_THREAD_TIMEOUT=10 when unset, and, when
 * OPENBLAS_CORETYPE is unset and OpenBLAS chose a generic fallback core on a CPU with
 * AVX-512 (SkylakeX kernels) or AVX2 (Haswell kernels), that too; if it set anything it
 * re-executes /proc/self/exe with argv (once: the second start finds both set). If the
 * re-exec fails it returns and the program runs as started. */
void blas_init(char **argv);
/* The OpenBLAS kernel set in use and its thread count. */
const char *blas_core_name(void);
int blas_threads(void);

/* Set OpenBLAS's thread count, and the pool's (core/pool.h) with it; returns the previous
 * one. */
int blas_set_threads(int n);

#endif
