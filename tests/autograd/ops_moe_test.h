/* ops_moe_test.h: what the MoE-op tests of tests/autograd/ share: naive double-precision
 * references (top-k gate, grouped expert GEMM, combine), well-separated router scores, the
 * forward tolerance, and the helpers of the split-over-the-cores checks.
 */
#ifndef MOE_TESTS_OPS_MOE_TEST_H
#define MOE_TESTS_OPS_MOE_TEST_H

#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------- naive references ---------------- */

/* Top-k by repeated selection of the best unused index: strict '>' keeps the lower index
 * on ties. gates = softmax over the chosen scores, in double. */
static inline void topk_ref(const float *h, int N, int E, int K, int32_t *idx, float *gates) {
    int *used = calloc((size_t)E, sizeof(int));
    for (int n = 0; n < N; n++) {
        const float *s = h + (size_t)n * E;
        memset(used, 0, sizeof(int) * (size_t)E);
        for (int k = 0; k < K; k++) {
            int best = -1;
            for (int e = 0; e < E; e++)
                if (!used[e] && (best < 0 || s[e] > s[best])) best = e;
            used[best] = 1;
            idx[n * K + k] = best;
        }
        double z = 0.0;
        for (int k = 0; k < K; k++) z += exp((double)s[idx[n * K + k]]);
        for (int k = 0; k < K; k++) gates[n * K + k] = (float)(exp((double)s[idx[n * K + k]]) / z);
    }
    free(used);
}

static inline void expert_linear_ref(const float *x, const float *w, const int32_t *offs, int E,
                              int din, int dout, float *y) {
    for (int e = 0; e < E; e++)
        for (int m = offs[e]; m < offs[e + 1]; m++)
            for (int o = 0; o < dout; o++) {
                double acc = 0.0;
                for (int i = 0; i < din; i++)
                    acc += (double)x[(size_t)m * din + i] *
                           (double)w[((size_t)e * dout + o) * din + i];
                y[(size_t)m * dout + o] = (float)acc;
            }
}

static inline void combine_ref(const float *ys, const float *gates, const int32_t *slot,
                               int N, int K, int C, float *y) {
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            double acc = 0.0;
            for (int k = 0; k < K; k++)
                if (slot[n * K + k] >= 0)
                    acc += (double)gates[n * K + k] * (double)ys[(size_t)slot[n * K + k] * C + c];
            y[(size_t)n * C + c] = (float)acc;
        }
}

/* Each row: a random permutation of 0, 0.5, 1.0, ... plus noise in [0, 0.1): gaps between
 * scores are >= 0.4, so a finite-difference step of 1e-2 never changes the top-k set (the
 * op is only piecewise smooth: differentiating across a change of set would be wrong). */
static inline void fill_separated(Tensor *h, uint64_t seed) {
    MoeRng r;
    rng_seed(&r, seed);
    const int E = tensor_cols(h);
    for (size_t n = 0; n < tensor_rows(h); n++) {
        float *row = h->data + n * E;
        for (int e = 0; e < E; e++) row[e] = 0.5f * (float)e;
        for (int e = E - 1; e > 0; e--) {
            int j = (int)(rng_next(&r) % (uint64_t)(e + 1));
            float tmp = row[e];
            row[e] = row[j];
            row[j] = tmp;
        }
        for (int e = 0; e < E; e++) row[e] += 0.1f * (float)rng_uniform(&r) - 1.0f;
    }
}

/* Forward tolerance for float32 kernels vs double references on O(1) data with sums of at
 * most ~10 terms: rounding is a few eps_f32 (6e-8) per term, so 1e-5 absolute plus 1e-5
 * relative is ~10x above it and far below any indexing bug (errors of O(0.1)). */
#define FWD_ATOL 1e-5
#define FWD_RTOL 1e-5


/* ---------------- row loops over the cores: bit-identical to the serial loops ----------------
 * Gather and combine split their rows over the cores (pool_parallel_range) once a loop's
 * work reaches POOL_SPLIT_MIN (2^16 streamed elements): each shape of these tests passes it
 * (noted per test). Every such test runs at 1 and 2 threads (blas_set_threads), whatever
 * the suite's thread count. The references are the serial loops written out with the same
 * float operations in the same order, so the comparisons are exact (memcmp; EXPECT_SAME
 * reads the thread count from the test's variable th). Gradients start from random values,
 * not 0: float addition is not associative, so adding a row's terms in another order than
 * the serial loop's changes some roundings and shows here. */

static inline void fill_grad(Tensor *x, uint64_t seed) {
    MoeRng r;
    rng_seed(&r, seed);
    for (size_t j = 0; j < x->n; j++) x->grad[j] = (float)(2.0 * rng_uniform(&r) - 1.0);
}

static inline float *random_floats(size_t n, uint64_t seed) {
    float *v = malloc(sizeof(float) * (n ? n : 1));
    MoeRng r;
    rng_seed(&r, seed);
    for (size_t j = 0; j < n; j++) v[j] = (float)(2.0 * rng_uniform(&r) - 1.0);
    return v;
}

#define EXPECT_SAME(a, b, n, what) \
    ck_assert_msg(memcmp((a), (b), sizeof(float) * (size_t)(n)) == 0, "%s differs (%d threads)", \
                  what, th)

#endif
