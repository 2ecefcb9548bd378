/* blas.h: OpenBLAS start-up and the one threading helper.
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

/* Run fn(ctx, task, worker) for task = 0 .. n_tasks-1 on blas_threads() workers (the
 * caller is worker 0, the others are threads started for this call). Workers claim tasks
 * in index order from a shared counter, so tasks of unequal cost balance themselves: list
 * the costly ones first (longest-processing-time order). The call returns when every task
 * has run and every helper that took a part has left; a helper the system schedules only
 * after that (its core busy with another process) finds the region closed and exits
 * without touching it, so a busy core costs the caller nothing but doing the tasks itself
 * (no thread is left spinning either). Which worker runs a task varies from run to run:
 * a task must write only its own outputs (worker indexes per-worker scratch only). One
 * region at a time: call it from one thread, never from inside a task.
 * While it runs OpenBLAS is set to one thread, so each task's sgemm calls are
 * single-threaded: one threading layer per region (many small products split over the
 * cores beat each small product split over the cores). */
void blas_parallel_for(int n_tasks, void (*fn)(void *ctx, int task, int worker), void *ctx);
/* Below this many elements a flat loop is not worth a thread (elementwise kernels, norms). */
#define BLAS_SPLIT_MIN ((size_t)1 << 16)
/* Part `task` of `parts` equal contiguous ranges of [0, n): [*lo, *hi). The ranges depend
 * only on (n, parts), never on which worker runs them. */
static inline void blas_range(size_t n, int task, int parts, size_t *lo, size_t *hi) {
    *lo = n * (size_t)task / (size_t)parts;
    *hi = n * (size_t)(task + 1) / (size_t)parts;
}
/* Flat loops whose iterations write disjoint outputs (rows, elements) and read no output of
 * another iteration: fn(ctx, lo, hi) runs [lo, hi) of [0, n). blas_parallel_range cuts
 * [0, n) into 4 ranges per worker (blas_range), one task each, when the loop's cost is at
 * least BLAS_SPLIT_MIN and n >= 2, else runs fn(ctx, 0, n) on the caller. cost estimates the
 * loop's work in streamed float elements; an element that calls a libm function (expf,
 * log1pf, log, cos) counts BLAS_COST_LIBM (measured: ~20-40 ns each against ~1 ns for an
 * element of a streamed add). Each iteration does the same float operations wherever the
 * cuts fall, so results do not depend on the thread count; a reduction over iterations
 * stores per-iteration partials and sums them afterwards in index order. */
typedef void (*BlasRangeFn)(void *ctx, size_t lo, size_t hi);
#define BLAS_COST_LIBM ((size_t)16)
void blas_parallel_range(size_t n, size_t cost, BlasRangeFn fn, void *ctx);
/* Set OpenBLAS's thread count; returns the previous one. */
int blas_set_threads(int n);
/* Workers blas_parallel_for uses (>= 1): per-worker scratch is sized by it. */
int blas_workers(void);

#endif
