/* blas.c: OpenBLAS start-up. See blas.h. */
#include "autograd/blas.h"

#include "autograd/common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
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

/* The region being run. One at a time: only the training thread calls blas_parallel_for,
 * and tasks never call it (asserted). Every field is read and written under region_mu,
 * except next (claimed with an atomic add by the threads inside the region). */
static pthread_mutex_t region_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t region_done = PTHREAD_COND_INITIALIZER;
static struct {
    void (*fn)(void *ctx, int task, int worker);
    void *ctx;
    int n_tasks;
    atomic_int next;      /* the next unclaimed task */
    unsigned long gen;    /* number of the region; a helper is started for one number */
    bool open;            /* helpers may still join */
    int active;           /* helpers that joined and have not left */
} region;

static void run_tasks(int worker) {
    for (;;) {
        const int i = atomic_fetch_add_explicit(&region.next, 1, memory_order_relaxed);
        if (i >= region.n_tasks) break;
        region.fn(region.ctx, i, worker);
    }
}

/* A helper thread (detached). arg packs (region number, worker index). It joins the region
 * only if that region is still open: on a machine whose other cores are busy a helper may
 * first run after the caller has done every task itself, and then it leaves at once
 * instead of the caller waiting for it to be scheduled. */
static void *helper_run(void *arg) {
    const uintptr_t a = (uintptr_t)arg;
    const unsigned long gen = (unsigned long)(a / BLAS_MAX_WORKERS);
    const int worker = (int)(a % BLAS_MAX_WORKERS);
    pthread_mutex_lock(&region_mu);
    const bool join = region.open && region.gen == gen;
    if (join) region.active++;
    pthread_mutex_unlock(&region_mu);
    if (!join) return NULL;
    run_tasks(worker);
    pthread_mutex_lock(&region_mu);
    if (--region.active == 0) pthread_cond_signal(&region_done);
    pthread_mutex_unlock(&region_mu);
    return NULL;
}

void blas_parallel_for(int n_tasks, void (*fn)(void *ctx, int task, int worker), void *ctx) {
    const int nt = openblas_get_num_threads();
    int workers = blas_workers();
    if (workers > n_tasks) workers = n_tasks > 0 ? n_tasks : 1;
    if (workers > 1) openblas_set_num_threads(1);
    pthread_mutex_lock(&region_mu);
    ASSERT(!region.open, "blas_parallel_for called inside a parallel region");
    region.fn = fn;
    region.ctx = ctx;
    region.n_tasks = n_tasks;
    atomic_store_explicit(&region.next, 0, memory_order_relaxed);
    region.gen++;
    region.open = true;
    region.active = 0;
    const unsigned long gen = region.gen;
    pthread_mutex_unlock(&region_mu);
    if (workers > 1) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        for (int w = 1; w < workers; w++) {
            pthread_t th;   /* a thread that cannot start leaves its tasks to the caller */
            const uintptr_t a = (uintptr_t)(gen % (UINTPTR_MAX / BLAS_MAX_WORKERS)) *
                                BLAS_MAX_WORKERS + (uintptr_t)w;
            (void)pthread_create(&th, &attr, helper_run, (void *)a);
        }
        pthread_attr_destroy(&attr);
    }
    /* the caller is worker 0; tasks are claimed from a shared counter, so whatever the
     * helpers have not claimed when it gets there, it runs itself */
    run_tasks(0);
    pthread_mutex_lock(&region_mu);
    region.open = false;   /* from here no helper joins; wait for those that did */
    while (region.active > 0) pthread_cond_wait(&region_done, &region_mu);
    pthread_mutex_unlock(&region_mu);
    if (workers > 1) openblas_set_num_threads(nt);
}

#define BLAS_RANGES_PER_WORKER 4

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
    /* a few ranges per worker: when a helper starts late (its core busy), the caller has
     * only done its share of the ranges by then, not half of the loop */
    const size_t parts = (size_t)workers * BLAS_RANGES_PER_WORKER;
    RangeJob r = {fn, ctx, n, parts < n ? (int)parts : (int)n};
    blas_parallel_for(r.parts, range_task, &r);
}
