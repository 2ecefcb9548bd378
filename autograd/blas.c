/* blas.c: OpenBLAS start-up. See blas.h. */
#include "autograd/blas.h"

#include "core/common.h"
#include "core/pool.h"

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
     * default, on the cores our own split regions then need; 10 means 2^10 cycles (tuned
     * for training throughput on 2 cores). Only read at library load. */
    if (!getenv("OPENBLAS_THREAD_TIMEOUT")) {
        setenv("OPENBLAS_THREAD_TIMEOUT", "10", 1);
        restart = true;
    }
    /* oneDNN's OpenMP workers (autograd/gemm_onednn.c) spin after each product by default
     * (libgomp's spin count), on the cores the pool's regions then need: measured on 2
     * cores, attention and routing ran 2.5x and 3x slower than with passive waiting. Only
     * read when libgomp loads. */
    if (!getenv("OMP_WAIT_POLICY") && !getenv("GOMP_SPINCOUNT")) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
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
    pool_set_threads(openblas_get_num_threads(), openblas_set_num_threads);
}

int blas_set_threads(int n) {
    int old = openblas_get_num_threads();
    if (n != old) openblas_set_num_threads(n);
    pool_set_threads(n, openblas_set_num_threads);
    return old;
}
