/* pool.h: split regions over the cores: a loop's tasks or ranges run on pool_workers()
 * threads (the caller and helpers started per region). No OpenMP; one region at a time.
 */
#ifndef MOE_POOL_H
#define MOE_POOL_H

#include <stdbool.h>
#include <stddef.h>

#define POOL_MAX_WORKERS 16

/* The thread count regions use (>= 1; autograd/blas.c sets it to OpenBLAS's), and the
 * function that sets the thread count of the library called inside tasks (NULL: none):
 * regions set it to 1 while they run and back to n after. */
void pool_set_threads(int n, void (*inner_threads)(int n));
int pool_threads(void);
/* Workers a region uses: min(pool_threads(), POOL_MAX_WORKERS); per-worker scratch is
 * sized by it. */
int pool_workers(void);

/* Run fn(ctx, task, worker) for task = 0 .. n_tasks-1 on pool_workers() workers (the
 * caller is worker 0, the others are threads started for this call). Workers claim tasks
 * in index order from a shared counter, so tasks of unequal cost balance themselves: list
 * the costly ones first (longest-processing-time order). The call returns when every task
 * has run and every helper that took a part has left; a helper the system schedules only
 * after that (its core busy with another process) finds the region closed and exits
 * without touching it, so a busy core costs the caller nothing but doing the tasks itself
 * (no thread is left spinning either). Which worker runs a task varies from run to run:
 * a task must write only its own outputs (worker indexes per-worker scratch only). One
 * region at a time: call it from one thread, never from inside a task.
 * While it runs, the inner library (OpenBLAS, through the hook given to pool_set_threads)
 * is set to one thread, so each task's products are single-threaded: one threading layer
 * per region (many small products split over the cores beat each small product split over
 * the cores). */
void pool_parallel_for(int n_tasks, void (*fn)(void *ctx, int task, int worker), void *ctx);
/* True on a thread while it runs a task of a region split over more than one worker (the
 * caller's included), false elsewhere (and in a region run by the caller alone, where the
 * inner library keeps its thread count): a library called inside a task runs single-threaded (autograd/gemm.c uses it
 * for oneDNN, whose OpenMP thread count is a per-thread setting). */
bool pool_in_task(void);
/* The worker index of the calling thread inside a region (0 outside regions): per-worker
 * state of a library (streams, scratch) can be indexed by it, as one region runs at a time
 * and its workers have distinct indexes. */
int pool_worker_index(void);

/* Below this many elements a flat loop is not worth a thread (elementwise kernels, norms). */
#define POOL_SPLIT_MIN ((size_t)1 << 16)
/* Part `task` of `parts` equal contiguous ranges of [0, n): [*lo, *hi). The ranges depend
 * only on (n, parts), never on which worker runs them. */
static inline void pool_range(size_t n, int task, int parts, size_t *lo, size_t *hi) {
    *lo = n * (size_t)task / (size_t)parts;
    *hi = n * (size_t)(task + 1) / (size_t)parts;
}
/* Flat loops whose iterations write disjoint outputs (rows, elements) and read no output of
 * another iteration: fn(ctx, lo, hi) runs [lo, hi) of [0, n). pool_parallel_range cuts
 * [0, n) into 4 ranges per worker (pool_range), one task each, when the loop's cost is at
 * least POOL_SPLIT_MIN and n >= 2, else runs fn(ctx, 0, n) on the caller. cost estimates the
 * loop's work in streamed float elements; an element that calls a libm function (expf,
 * log1pf, log, cos) counts POOL_COST_LIBM elements (a libm call costs one to two orders
 * of magnitude more than a streamed add). Each iteration does the same float operations
 * wherever the cuts fall, so results do not depend on the thread count; a reduction over
 * iterations stores per-iteration partials and sums them afterwards in index order. */
typedef void (*PoolRangeFn)(void *ctx, size_t lo, size_t hi);
#define POOL_COST_LIBM ((size_t)16)
void pool_parallel_range(size_t n, size_t cost, PoolRangeFn fn, void *ctx);

#endif
