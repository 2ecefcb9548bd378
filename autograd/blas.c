/* blas.c: OpenBLAS start-up. See blas.h. */
#include "autograd/blas.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* OpenBLAS extensions (declared in its cblas.h in newer versions; declared here so the
 * code does not depend on which header variant is installed). */
extern char *openblas_get_corename(void);
extern int openblas_get_num_threads(void);
extern void openblas_set_num_threads(int n);

const char *blas_core_name(void) { return openblas_get_corename(); }
int blas_threads(void) { return openblas_get_num_threads(); }

/* The generic fallback kernels OpenBLAS 0.3.21 picks for CPUs it does not know. */
static bool generic_core(const char *core) {
    return core && (strcasecmp(core, "prescott") == 0 || strcasecmp(core, "core2") == 0 ||
                    strcasecmp(core, "nehalem") == 0 || strcasecmp(core, "katmai") == 0);
}

void blas_init(char **argv) {
    bool restart = false;
    /* Idle OpenBLAS workers spin (sched_yield) for 2^28 cycles after each product by
     * default, on the cores our own split regions then need: measured on mixtral_tiny,
     * 2 cores, 2454 -> 3373 tokens/s with 2^10. Only read at library load. */
    if (!getenv("OPENBLAS_THREAD_TIMEOUT")) {
        setenv("OPENBLAS_THREAD_TIMEOUT", "10", 1);
        restart = true;
    }
    if (!getenv("OPENBLAS_CORETYPE") && generic_core(openblas_get_corename())) {
        __builtin_cpu_init();
        const char *want = __builtin_cpu_supports("avx512f") ? "SkylakeX"
                           : __builtin_cpu_supports("avx2")  ? "Haswell"
                                                             : NULL;
        if (want) {
            setenv("OPENBLAS_CORETYPE", want, 1);
            restart = true;
        }
    }
    if (restart) execv("/proc/self/exe", argv);
    /* exec failed: carry on with the library as it started */
}

#define BLAS_MAX_WORKERS 16

int blas_set_threads(int n) {
    int old = openblas_get_num_threads();
    if (n != old) openblas_set_num_threads(n);
    return old;
}

int blas_workers(void) {
    int n = openblas_get_num_threads();
    return n < 1 ? 1 : n > BLAS_MAX_WORKERS ? BLAS_MAX_WORKERS : n;
}

typedef struct Job {
    void (*fn)(void *ctx, int task, int worker);
    void *ctx;
    int n_tasks, worker;
    atomic_int *next;   /* shared: the next unclaimed task */
} Job;

static void *job_run(void *arg) {
    Job *j = arg;
    for (;;) {
        const int i = atomic_fetch_add_explicit(j->next, 1, memory_order_relaxed);
        if (i >= j->n_tasks) break;
        j->fn(j->ctx, i, j->worker);
    }
    return NULL;
}

void blas_parallel_for(int n_tasks, void (*fn)(void *ctx, int task, int worker), void *ctx) {
    const int nt = openblas_get_num_threads();
    int workers = blas_workers();
    if (workers > n_tasks) workers = n_tasks > 0 ? n_tasks : 1;
    Job jobs[BLAS_MAX_WORKERS];
    pthread_t th[BLAS_MAX_WORKERS];
    bool started[BLAS_MAX_WORKERS] = {false};
    if (workers > 1) openblas_set_num_threads(1);
    atomic_int next = 0;
    for (int w = 0; w < workers; w++)
        jobs[w] = (Job){fn, ctx, n_tasks, w, &next};
    for (int w = 1; w < workers; w++)
        started[w] = pthread_create(&th[w], NULL, job_run, &jobs[w]) == 0;
    job_run(&jobs[0]);
    for (int w = 1; w < workers; w++) {
        if (started[w]) pthread_join(th[w], NULL);
        else job_run(&jobs[w]);   /* could not start a thread: do its share here */
    }
    if (workers > 1) openblas_set_num_threads(nt);
}

typedef struct RangeJob {
    BlasRangeFn fn;
    void *ctx;
    size_t n;
    int parts;
} RangeJob;

static void range_task(void *ctx, int task, int worker) {
    (void)worker;
    const RangeJob *r = ctx;
    size_t lo, hi;
    blas_range(r->n, task, r->parts, &lo, &hi);
    if (lo < hi) r->fn(r->ctx, lo, hi);
}

void blas_parallel_range(size_t n, size_t cost, BlasRangeFn fn, void *ctx) {
    const int workers = blas_workers();
    if (workers == 1 || n < 2 || cost < BLAS_SPLIT_MIN) {
        fn(ctx, 0, n);   /* also n = 0: fn sees an empty range */
        return;
    }
    RangeJob r = {fn, ctx, n, (size_t)workers < n ? workers : (int)n};
    blas_parallel_for(r.parts, range_task, &r);
}
