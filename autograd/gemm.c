/* gemm.c: the product's dispatch, the OpenBLAS backend (fp32, and bf16 emulated by rounding
 * the inputs), the per-worker scratch. See gemm.h. */
#include "autograd/gemm.h"
#include "autograd/gemm_internal.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/bf16.h"
#include "autograd/blas.h"
#include "core/alloc.h"
#include "core/error.h"
#include "core/pool.h"

static GemmBackend g_backend = GEMM_OPENBLAS;   /* never GEMM_AUTO once selected */
static GemmPrecision g_precision = GEMM_FP32;

static const char *const BACKEND_NAMES[GEMM_N_BACKENDS] = {"auto", "openblas", "onednn"};
static const char *const PRECISION_NAMES[GEMM_N_PRECISIONS] = {"fp32", "bf16"};

const char *gemm_backend_name(GemmBackend b) {
    return (unsigned)b < GEMM_N_BACKENDS ? BACKEND_NAMES[b] : "?";
}
const char *gemm_precision_name(GemmPrecision p) {
    return (unsigned)p < GEMM_N_PRECISIONS ? PRECISION_NAMES[p] : "?";
}
GemmBackend gemm_backend(void) { return g_backend; }
GemmPrecision gemm_precision(void) { return g_precision; }

static int g_fp32_depth;   /* gemm_fp32_begin nesting */
void gemm_fp32_begin(void) { g_fp32_depth++; }
void gemm_fp32_end(void) {
    ASSERT(g_fp32_depth > 0, "gemm_fp32_end without gemm_fp32_begin");
    g_fp32_depth--;
}

int gemm_threads_now(void) { return pool_in_task() ? 1 : pool_threads(); }

/* ---------------------------------------------------------------- scratch */

static struct {
    void *p;
    size_t cap;
} g_scratch[POOL_MAX_WORKERS][GEMM_SCRATCH_SLOTS];

void *gemm_scratch(int which, size_t bytes) {
    const int w = pool_worker_index();
    if (g_scratch[w][which].cap < bytes) {
        moe_free(g_scratch[w][which].p);
        size_t cap = g_scratch[w][which].cap + g_scratch[w][which].cap / 2;   /* x1.5 */
        if (cap < bytes) cap = bytes;
        g_scratch[w][which].p = moe_malloc(cap);
        g_scratch[w][which].cap = cap;
    }
    return g_scratch[w][which].p;
}

/* ---------------------------------------------------------------- bf16 stand-ins */

static struct {
    const float *f32;   /* NULL: free */
    size_t n;
    const uint16_t *bf16;
    bool owned;         /* a gemm_standin copy (buffer in g_own) */
} g_reg[GEMM_STANDINS];
static struct {
    uint16_t *p;
    size_t cap;
    bool busy;
} g_own[GEMM_STANDINS];

static int reg_find(const float *f32) {
    for (int i = 0; i < GEMM_STANDINS; i++)
        if (g_reg[i].f32 == f32) return i;
    return -1;
}

void gemm_bf16_register(const float *f32, size_t n, const uint16_t *bf16) {
    int i = reg_find(f32);
    if (i < 0) i = reg_find(NULL);
    ASSERT(i >= 0, "more than %d bf16 stand-ins registered", GEMM_STANDINS);
    g_reg[i].f32 = f32;
    g_reg[i].n = n;
    g_reg[i].bf16 = bf16;
    g_reg[i].owned = false;
}

void gemm_bf16_unregister(const float *f32) {
    const int i = reg_find(f32);
    if (i >= 0) memset(&g_reg[i], 0, sizeof g_reg[i]);
}

static struct {
    const float *f32[GEMM_LOCAL_STANDINS];   /* NULL: free */
    size_t n[GEMM_LOCAL_STANDINS];
    int used;
} g_local[POOL_MAX_WORKERS];

void gemm_local_standin(const float *x, size_t n) {
    if (g_precision != GEMM_BF16 || n == 0) return;
    const int w = pool_worker_index();
    const int i = g_local[w].used;
    ASSERT(i < GEMM_LOCAL_STANDINS, "more than %d local stand-ins", GEMM_LOCAL_STANDINS);
    /* slots 3.. of the worker's scratch (gemm_internal.h): the products' own slots 0-2
     * are used by the products that read these */
    uint16_t *h = gemm_scratch(3 + i, sizeof(uint16_t) * n);
    bf16_pack_flat(x, n, h);
    g_local[w].f32[i] = x;
    g_local[w].n[i] = n;
    g_local[w].used = i + 1;
}

void gemm_local_clear(void) {
    const int w = pool_worker_index();
    memset(&g_local[w], 0, sizeof g_local[w]);
}

const uint16_t *gemm_bf16_lookup(const float *x, int rows, int cols, int ld) {
    const size_t extent = (size_t)(rows - 1) * (size_t)ld + (size_t)cols;
    const int w = pool_worker_index();
    for (int i = 0; i < g_local[w].used; i++) {
        const float *b = g_local[w].f32[i];
        if (x >= b && x + extent <= b + g_local[w].n[i])
            return (const uint16_t *)gemm_scratch(3 + i, 0) + (x - b);
    }
    for (int i = 0; i < GEMM_STANDINS; i++) {
        const float *b = g_reg[i].f32;
        if (b && x >= b && x + extent <= b + g_reg[i].n) return g_reg[i].bf16 + (x - b);
    }
    return NULL;
}

void gemm_standin(const float *x, size_t n) {
    if (g_precision != GEMM_BF16 || n == 0) return;
    int o = 0;
    while (o < GEMM_STANDINS && g_own[o].busy) o++;
    ASSERT(o < GEMM_STANDINS, "more than %d gemm_standin copies", GEMM_STANDINS);
    if (g_own[o].cap < n) {
        moe_free(g_own[o].p);
        g_own[o].p = moe_malloc(sizeof(uint16_t) * n);
        g_own[o].cap = n;
    }
    g_own[o].busy = true;
    bf16_pack_flat(x, n, g_own[o].p);
    gemm_bf16_register(x, n, g_own[o].p);
    g_reg[reg_find(x)].owned = true;
}

void gemm_standins_clear(void) {
    for (int i = 0; i < GEMM_STANDINS; i++)
        if (g_reg[i].owned) memset(&g_reg[i], 0, sizeof g_reg[i]);
    for (int o = 0; o < GEMM_STANDINS; o++) g_own[o].busy = false;
}

/* ---------------------------------------------------------------- selection */

static int g_onednn_state = -1;   /* -1 not tried, 0 unavailable, 1 started */
static const char *g_isa = "";
static bool g_native_bf16 = false;

bool gemm_onednn_available(const char **isa) {
    if (g_onednn_state < 0) g_onednn_state = onednn_start(&g_isa, &g_native_bf16) ? 1 : 0;
    if (isa) *isa = g_isa;
    return g_onednn_state == 1;
}

void gemm_onednn_version(char *buf, size_t cap) {
    const char *isa = "";
    const bool have = gemm_onednn_available(&isa);
    if (!onednn_version(buf, cap)) snprintf(buf, cap, "%s", isa);
    else if (have) {
        const size_t n = strlen(buf);
        snprintf(buf + n, cap - n, ", ISA %s", isa);
    }
}

bool gemm_native_bf16(void) { return gemm_onednn_available(NULL) && g_native_bf16; }

int gemm_select(GemmBackend backend, GemmPrecision precision, MoeErr *err) {
    const bool have = gemm_onednn_available(NULL);
    if (backend == GEMM_ONEDNN && !have) {
        moe_errorf(err, "compute.gemm = onednn, but %s", g_isa[0] ? g_isa
                   : "oneDNN is not available in this build");
        return moe_hintf(err, "install libdnnl-dev and rebuild (./setup.sh does both), or set "
                         "compute.gemm: openblas");
    }
    GemmBackend b = backend == GEMM_AUTO ? (have ? GEMM_ONEDNN : GEMM_OPENBLAS) : backend;
    if (precision == GEMM_BF16 && b == GEMM_ONEDNN && !g_native_bf16) {
        moe_errorf(err, "compute.precision = bf16, but this CPU has no native bf16 products "
                   "(oneDNN reports ISA %s: no AVX512-BF16 or AMX); emulated bf16 is slower "
                   "than fp32", g_isa);
        return moe_hintf(err, "train in fp32 (compute.precision: fp32), or set compute.gemm: "
                         "openblas to emulate bf16 numerics (inputs rounded, fp32 products, "
                         "no speed gain)");
    }
    if (precision == GEMM_BF16 && b == GEMM_OPENBLAS && backend == GEMM_AUTO) {
        moe_errorf(err, "compute.precision = bf16, but oneDNN is not available, and OpenBLAS "
                   "has no bf16 products (they would be emulated, no faster than fp32)");
        return moe_hintf(err, "install libdnnl-dev and rebuild (./setup.sh), or set "
                         "compute.gemm: openblas to emulate bf16 numerics on purpose");
    }
    g_backend = b;
    g_precision = precision;
    return 0;
}

void gemm_describe(char *buf, size_t cap) {
    if (g_backend == GEMM_ONEDNN) {
        char k[512];
        onednn_kernels(k, sizeof k);
        snprintf(buf, cap, "onednn %s, ISA %s, kernels %s", PRECISION_NAMES[g_precision],
                 g_isa, k[0] ? k : "(none made yet)");
    } else {
        snprintf(buf, cap, "openblas %s%s, core %s, %d thread(s)", PRECISION_NAMES[g_precision],
                 g_precision == GEMM_BF16 ? " (emulated: inputs rounded to bf16, fp32 sgemm; "
                 "no faster than fp32)" : "", blas_core_name(), blas_threads());
    }
}

/* ---------------------------------------------------------------- the product */

static void openblas_gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A,
                          int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* bf16 through OpenBLAS: the stored (rows, cols) blocks of A and B rounded into scratch. */
static void openblas_gemm_bf16(bool ta, bool tb, int M, int N, int K, float alpha,
                               const float *A, int lda, const float *B, int ldb, float beta,
                               float *C, int ldc) {
    const int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    /* (stand-ins are not read: rounding again gives their values) */
    float *a = gemm_scratch(0, sizeof(float) * (size_t)ar * (size_t)ac);
    float *b = gemm_scratch(1, sizeof(float) * (size_t)br * (size_t)bc);
    bf16_round_pack(A, ar, ac, lda, a);
    bf16_round_pack(B, br, bc, ldb, b);
    openblas_gemm(ta, tb, M, N, K, alpha, a, ac, b, bc, beta, C, ldc);
}

void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
          const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {   /* the empty sum: C = beta C (BLAS semantics, beta 0 writes zeros) */
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f
                                                                   : beta * C[(size_t)i * ldc + j];
        return;
    }
    const bool bf16 = g_precision == GEMM_BF16 && g_fp32_depth == 0;
    if (g_backend == GEMM_ONEDNN)
        onednn_gemm(bf16, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C,
                    ldc);
    else if (bf16)
        openblas_gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else
        openblas_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
