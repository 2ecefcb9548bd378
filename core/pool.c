/* pool.c: the thread pool of split regions. See pool.h. */
#include "core/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"

/* The thread count set by pool_set_threads, and the hook that sets the threads of the
 * library whose calls run inside tasks. */
static int g_threads = 1;
static void (*g_inner)(int n) = NULL;

void pool_set_threads(int n, void (*inner_threads)(int n)) {
    g_threads = n < 1 ? 1 : n;
    g_inner = inner_threads;
}

int pool_threads(void) { return g_threads; }

int pool_workers(void) {
    return g_threads > POOL_MAX_WORKERS ? POOL_MAX_WORKERS : g_threads;
}

/* The region being run. One at a time: only the training thread calls pool_parallel_for,
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
    bool split;           /* more than one worker: tasks' libraries run single-threaded */
    int active;           /* helpers that joined and have not left */
} region;

/* The calling thread's place in the running region (pool_in_task, pool_worker_index). */
static _Thread_local bool t_in_task = false;
static _Thread_local int t_worker = 0;

bool pool_in_task(void) { return t_in_task; }
int pool_worker_index(void) { return t_in_task ? t_worker : 0; }

static void run_tasks(int worker) {
    t_in_task = region.split;
    t_worker = worker;
    for (;;) {
        const int i = atomic_fetch_add_explicit(&region.next, 1, memory_order_relaxed);
        if (i >= region.n_tasks) break;
        region.fn(region.ctx, i, worker);
    }
    t_in_task = false;
    t_worker = 0;
}

/* A helper thread (detached). arg packs (region number, worker index). It joins the region
 * only if that region is still open: on a machine whose other cores are busy a helper may
 * first run after the caller has done every task itself, and then it leaves at once
 * instead of the caller waiting for it to be scheduled. */
static void *helper_run(void *arg) {
    const uintptr_t a = (uintptr_t)arg;
    const unsigned long gen = (unsigned long)(a / POOL_MAX_WORKERS);
    const int worker = (int)(a % POOL_MAX_WORKERS);
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

void pool_parallel_for(int n_tasks, void (*fn)(void *ctx, int task, int worker), void *ctx) {
    int workers = pool_workers();
    if (workers > n_tasks) workers = n_tasks > 0 ? n_tasks : 1;
    if (workers > 1 && g_inner) g_inner(1);
    pthread_mutex_lock(&region_mu);
    ASSERT(!region.open, "pool_parallel_for called inside a parallel region");
    region.fn = fn;
    region.ctx = ctx;
    region.n_tasks = n_tasks;
    atomic_store_explicit(&region.next, 0, memory_order_relaxed);
    region.gen++;
    region.open = true;
    region.active = 0;
    region.split = workers > 1;
    const unsigned long gen = region.gen;
    pthread_mutex_unlock(&region_mu);
    if (workers > 1) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        for (int w = 1; w < workers; w++) {
            pthread_t th;   /* a thread that cannot start leaves its tasks to the caller */
            const uintptr_t a = (uintptr_t)(gen % (UINTPTR_MAX / POOL_MAX_WORKERS)) *
                                POOL_MAX_WORKERS + (uintptr_t)w;
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
    if (workers > 1 && g_inner) g_inner(g_threads);
}

#define POOL_RANGES_PER_WORKER 4

typedef struct RangeJob {
    PoolRangeFn fn;
    void *ctx;
    size_t n;
    int parts;
} RangeJob;

static void range_task(void *ctx, int task, int worker) {
    (void)worker;
    const RangeJob *r = ctx;
    size_t lo, hi;
    pool_range(r->n, task, r->parts, &lo, &hi);
    if (lo < hi) r->fn(r->ctx, lo, hi);
}

void pool_parallel_range(size_t n, size_t cost, PoolRangeFn fn, void *ctx) {
    const int workers = pool_workers();
    if (workers == 1 || n < 2 || cost < POOL_SPLIT_MIN) {
        fn(ctx, 0, n);   /* also n = 0: fn sees an empty range */
        return;
    }
    /* a few ranges per worker: when a helper starts late (its core busy), the caller has
     * only done its share of the ranges by then, not half of the loop */
    const size_t parts = (size_t)workers * POOL_RANGES_PER_WORKER;
    RangeJob r = {fn, ctx, n, parts < n ? (int)parts : (int)n};
    pool_parallel_for(r.parts, range_task, &r);
}
