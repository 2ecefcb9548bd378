/* gemm_onednn.c: the oneDNN backend of gemm (gemm.h), fp32 or bf16 inputs, fp32 output.
 *
 * A oneDNN matmul primitive is made for one exact shape (dims, strides, data types,
 * alpha, beta, thread count): making one JITs its kernels (0.2 - 3 ms measured), running a
 * made one costs ~1 us over the arithmetic. So primitives are kept in a table keyed by all
 * of that, made on first use and reused. A primitive with a run-time M would be made once,
 * but oneDNN 2.6 then falls back to its non-AMX gemm:jit kernels (measured: no AMX), so
 * instead every dimension is cut into pieces of few sizes (split_dim): the expert products,
 * whose token count changes every step, would otherwise make new primitives every step.
 * Pieces of M or N are products on row/column blocks (pointer offsets, no copies); pieces
 * of K are summed into C (beta 1 after the first), so at most a few dozen sizes per site
 * exist and the table stops growing after the first steps.
 *
 * bf16: A and B are rounded into per-worker bf16 scratch (autograd/bf16.h) once per call,
 * compact (the leading dimension becomes the row length), then cut into pieces as above.
 *
 * Threading: oneDNN (Debian's build) runs on OpenMP; its thread count is a per-thread
 * setting, set before each product to gemm_threads_now() (1 inside a pool task, so tasks'
 * products stay on their own thread). Each pool worker has its own stream and memory
 * objects; the scratchpad is per worker too (user-managed), so concurrent tasks share
 * nothing but the read-only primitives. The table is guarded by one mutex, held while a
 * missing primitive is made (only during the first steps).
 * Non-goals: oneDNN's threadpool runtime, weight-layout reorders (blocked formats for B).
 */
#include "autograd/gemm_internal.h"

#ifdef MOE_HAVE_ONEDNN

#include <dnnl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "autograd/bf16.h"
#include "core/alloc.h"
#include "core/error.h"
#include "core/pool.h"

/* libgomp's per-thread thread count (declared here: clang has no omp.h without libomp). */
extern void omp_set_num_threads(int n);
extern int omp_get_max_threads(void);

#define ONEDNN_TABLE 2048    /* table slots; at most half are filled (then: uncached) */
#define ONEDNN_KERNEL_NAMES 8

typedef struct Key {
    int M, N, K, lda, ldb, ldc, nthr;
    unsigned char ta, tb, bf16, pad_;
    float alpha, beta;
} Key;

typedef struct Prim {
    Key key;
    dnnl_primitive_t p;
    dnnl_memory_desc_t ma, mb, mc, ms;   /* ms: scratchpad */
    size_t scratch_bytes;
    dnnl_memory_t mem[POOL_MAX_WORKERS][4];   /* per worker: A, B, C, scratchpad */
} Prim;

static dnnl_engine_t g_engine;
static dnnl_stream_t g_stream[POOL_MAX_WORKERS];
static Prim **g_table;   /* (ONEDNN_TABLE) entries, NULL = free slot */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static char g_kernels[ONEDNN_KERNEL_NAMES][64];
static int g_n_kernels;

static const char *isa_name(dnnl_cpu_isa_t isa) {
    switch (isa) {
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx (AMX, AVX512-BF16)";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16 (AVX-512, AVX512-BF16)";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni (AVX-512)";
    case dnnl_cpu_isa_avx512_core: return "avx512_core (AVX-512)";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni (AVX2)";
    case dnnl_cpu_isa_avx2: return "avx2 (AVX2)";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_sse41: return "sse41";
    default: return "other";
    }
}

bool onednn_start(const char **isa, bool *native_bf16) {
    if (dnnl_engine_create(&g_engine, dnnl_cpu, 0) != dnnl_success) {
        *isa = "oneDNN could not create its CPU engine";
        *native_bf16 = false;
        return false;
    }
    const dnnl_cpu_isa_t i = dnnl_get_effective_cpu_isa();
    *isa = isa_name(i);
    *native_bf16 = i == dnnl_cpu_isa_avx512_core_amx || i == dnnl_cpu_isa_avx512_core_bf16;
    g_table = moe_calloc(ONEDNN_TABLE * sizeof(Prim *));
    return true;
}

bool onednn_version(char *buf, size_t cap) {
    const dnnl_version_t *v = dnnl_version();
    snprintf(buf, cap, "oneDNN %d.%d.%d (runtime %s)", v->major, v->minor, v->patch,
             v->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : "other");
    return true;
}

void onednn_kernels(char *buf, size_t cap) {
    pthread_mutex_lock(&g_mu);
    buf[0] = 0;
    size_t n = 0;
    for (int i = 0; i < g_n_kernels && n + 1 < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%s", i ? ", " : "", g_kernels[i]);
    pthread_mutex_unlock(&g_mu);
}

static uint64_t key_hash(const Key *k) {
    uint64_t h = 1469598103934665603ULL;
    const unsigned char *p = (const unsigned char *)k;
    for (size_t i = 0; i < sizeof *k; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

static void check(dnnl_status_t s, const char *what) {
    ASSERT(s == dnnl_success, "oneDNN %s failed (status %d)", what, (int)s);
}

static void prim_destroy(Prim *e) {
    for (int w = 0; w < POOL_MAX_WORKERS; w++)
        for (int j = 0; j < 4; j++)
            if (e->mem[w][j]) dnnl_memory_destroy(e->mem[w][j]);
    dnnl_primitive_destroy(e->p);
    memset(e, 0, sizeof *e);
}

/* Make the primitive of key k into e (under g_mu). */
static void prim_make(Prim *e, const Key *k) {
    const dnnl_data_type_t in = k->bf16 ? dnnl_bf16 : dnnl_f32;
    dnnl_dims_t da = {k->M, k->K}, db = {k->K, k->N}, dc = {k->M, k->N};
    dnnl_dims_t sa = {k->ta ? 1 : k->lda, k->ta ? k->lda : 1};
    dnnl_dims_t sb = {k->tb ? 1 : k->ldb, k->tb ? k->ldb : 1};
    dnnl_dims_t sc = {k->ldc, 1};
    memset(e, 0, sizeof *e);
    check(dnnl_memory_desc_init_by_strides(&e->ma, 2, da, in, sa), "A descriptor");
    check(dnnl_memory_desc_init_by_strides(&e->mb, 2, db, in, sb), "B descriptor");
    check(dnnl_memory_desc_init_by_strides(&e->mc, 2, dc, dnnl_f32, sc), "C descriptor");
    dnnl_matmul_desc_t md;
    check(dnnl_matmul_desc_init(&md, &e->ma, &e->mb, NULL, &e->mc), "matmul descriptor");
    dnnl_primitive_attr_t attr;
    check(dnnl_primitive_attr_create(&attr), "attribute");
    check(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "scratchpad");
    if (k->alpha != 1.0f)
        check(dnnl_primitive_attr_set_output_scales(attr, 1, 0, &k->alpha), "output scale");
    dnnl_post_ops_t po = NULL;
    if (k->beta != 0.0f) {
        check(dnnl_post_ops_create(&po), "post-ops");
        check(dnnl_post_ops_append_sum(po, k->beta), "sum post-op");
        check(dnnl_primitive_attr_set_post_ops(attr, po), "post-ops");
    }
    dnnl_primitive_desc_t pd;
    check(dnnl_primitive_desc_create(&pd, &md, attr, g_engine, NULL), "matmul creation");
    const char *impl = "";
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    bool seen = false;
    for (int i = 0; i < g_n_kernels; i++) seen |= strcmp(g_kernels[i], impl) == 0;
    if (!seen && g_n_kernels < ONEDNN_KERNEL_NAMES)
        snprintf(g_kernels[g_n_kernels++], sizeof g_kernels[0], "%s", impl);
    e->ms = *dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    e->scratch_bytes = dnnl_memory_desc_get_size(&e->ms);
    check(dnnl_primitive_create(&e->p, pd), "primitive");
    dnnl_primitive_desc_destroy(pd);
    if (po) dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
    e->key = *k;
}

/* The table entry of k, made if missing; when the table holds ONEDNN_TABLE / 2 shapes
 * already (a model whose sites have very many shapes), k is made into *tmp instead, which
 * the caller destroys after the product (slow: the kernels are made every call; warned
 * once). */
static int g_filled;
static Prim *prim_get(const Key *k, Prim *tmp) {
    pthread_mutex_lock(&g_mu);
    size_t i = (size_t)(key_hash(k) % ONEDNN_TABLE);
    while (g_table[i] && memcmp(&g_table[i]->key, k, sizeof *k) != 0)
        i = (i + 1) % ONEDNN_TABLE;
    Prim *e = g_table[i];
    if (!e) {
        if (g_filled < ONEDNN_TABLE / 2) {
            e = g_table[i] = moe_malloc(sizeof(Prim));
            prim_make(e, k);
            g_filled++;
        } else {
            if (g_filled++ == ONEDNN_TABLE / 2)
                fprintf(stderr, "gemm: more than %d product shapes; oneDNN kernels of new "
                        "shapes are made at each call from now on (slow)\n", ONEDNN_TABLE / 2);
            prim_make(tmp, k);
            e = tmp;
        }
    }
    pthread_mutex_unlock(&g_mu);
    return e;
}

/* Run e on the calling worker with the given operand addresses. */
static void prim_run(Prim *e, const void *a, const void *b, float *c) {
    const int w = pool_worker_index();
    if (!g_stream[w]) check(dnnl_stream_create(&g_stream[w], g_engine, dnnl_stream_default_flags),
                            "stream");
    dnnl_memory_t *m = e->mem[w];
    if (!m[0]) {
        check(dnnl_memory_create(&m[0], &e->ma, g_engine, DNNL_MEMORY_NONE), "memory A");
        check(dnnl_memory_create(&m[1], &e->mb, g_engine, DNNL_MEMORY_NONE), "memory B");
        check(dnnl_memory_create(&m[2], &e->mc, g_engine, DNNL_MEMORY_NONE), "memory C");
        check(dnnl_memory_create(&m[3], &e->ms, g_engine, DNNL_MEMORY_NONE), "memory scratch");
    }
    check(dnnl_memory_set_data_handle(m[0], (void *)a), "set A");
    check(dnnl_memory_set_data_handle(m[1], (void *)b), "set B");
    check(dnnl_memory_set_data_handle(m[2], c), "set C");
    check(dnnl_memory_set_data_handle(m[3], e->scratch_bytes ? gemm_scratch(2, e->scratch_bytes)
                                                             : NULL), "set scratch");
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, m[0]}, {DNNL_ARG_WEIGHTS, m[1]},
                               {DNNL_ARG_DST, m[2]}, {DNNL_ARG_SCRATCHPAD, m[3]}};
    check(dnnl_primitive_execute(e->p, g_stream[w], 4, args), "matmul");
}

/* Cut d into pieces of "round" sizes, largest first: the largest size <= the rest among
 * multiples of 16 up to 256, of 64 up to 1024, of 256 up to 4096, of 1024 beyond; a rest
 * below 16 is its own piece. So a dimension that is already round is one piece, and any
 * d takes at most ~4 pieces of at most ~60 + 15 distinct sizes. Returns the count. */
static int split_dim(int d, int *len) {
    int n = 0;
    while (d > 0) {
        int q = d < 16 ? d : d <= 256 ? d / 16 * 16 : d <= 1024 ? d / 64 * 64
                : d <= 4096 ? d / 256 * 256 : d / 1024 * 1024;
        len[n++] = q;
        d -= q;
    }
    return n;
}

void onednn_gemm(bool bf16, bool ta, bool tb, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb, float beta, float *C,
                 int ldc) {
    const int nthr = gemm_threads_now();
    if (omp_get_max_threads() != nthr) omp_set_num_threads(nthr);
    const void *a = A, *b = B;
    size_t es = sizeof(float);
    if (bf16) {   /* registered stand-ins, or compact bf16 copies of the stored blocks */
        const int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
        const uint16_t *ha = gemm_bf16_lookup(A, ar, ac, lda);
        const uint16_t *hb = gemm_bf16_lookup(B, br, bc, ldb);
        if (!ha) {
            uint16_t *h = gemm_scratch(0, sizeof(uint16_t) * (size_t)ar * (size_t)ac);
            bf16_pack(A, ar, ac, lda, h);
            ha = h;
            lda = ac;
        }
        if (!hb) {
            uint16_t *h = gemm_scratch(1, sizeof(uint16_t) * (size_t)br * (size_t)bc);
            bf16_pack(B, br, bc, ldb, h);
            hb = h;
            ldb = bc;
        }
        a = ha;
        b = hb;
        es = sizeof(uint16_t);
    }
    int lm[40], ln[40], lk[40];
    const int pm = split_dim(M, lm), pn = split_dim(N, ln), pk = split_dim(K, lk);
    for (int im = 0, m0 = 0; im < pm; m0 += lm[im++])
        for (int in = 0, n0 = 0; in < pn; n0 += ln[in++])
            for (int ik = 0, k0 = 0; ik < pk; k0 += lk[ik++]) {
                const Key k = {lm[im], ln[in], lk[ik], lda, ldb, ldc, nthr,
                               ta, tb, bf16, 0, alpha, ik == 0 ? beta : 1.0f};
                Prim tmp, *e = prim_get(&k, &tmp);
                const size_t ao = ta ? (size_t)k0 * lda + m0 : (size_t)m0 * lda + k0;
                const size_t bo = tb ? (size_t)n0 * ldb + k0 : (size_t)k0 * ldb + n0;
                prim_run(e, (const char *)a + ao * es, (const char *)b + bo * es,
                         C + (size_t)m0 * ldc + n0);
                if (e == &tmp) prim_destroy(&tmp);
            }
}

#else /* no oneDNN in this build */

bool onednn_start(const char **isa, bool *native_bf16) {
    *isa = "oneDNN is not built in (libdnnl-dev was missing at configure time)";
    *native_bf16 = false;
    return false;
}
void onednn_gemm(bool bf16, bool ta, bool tb, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb, float beta, float *C,
                 int ldc) {
    (void)bf16, (void)ta, (void)tb, (void)M, (void)N, (void)K, (void)alpha, (void)A;
    (void)lda, (void)B, (void)ldb, (void)beta, (void)C, (void)ldc;
    ASSERT(0, "onednn_gemm called without oneDNN");
}
void onednn_kernels(char *buf, size_t cap) {
    if (cap) buf[0] = 0;
}
bool onednn_version(char *buf, size_t cap) {
    if (cap) buf[0] = 0;
    return false;
}

#endif
