/* blas.h: OpenBLAS start-up and its thread count (which the pool, core/pool.h, follows).
 *
 * Two settings can only be made before OpenBLAS initialises (at program load), through the
 * environment, so blas_init re-executes the program once with them set:
 * - OPENBLAS_CORETYPE: Debian 12's OpenBLAS (0.3.21) falls back to the SSE3 "Prescott"
 *   kernels on CPUs newer than it knows (e.g. family 6 model 207 Xeons), 2-3x slower than
 *   the AVX-512/AVX2 kernels the CPU runs fine;
 * - OPENBLAS_THREAD_TIMEOUT: idle workers otherwise spin for 2^28 cycles after each
 *   product, stealing the cores from the regions we split ourselves.
 * A variable the user already set is left alone.
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
