/* test_ops_moe.c: the MoE ops (top-k gate, gather, combine, grouped expert GEMM alone and
 * fused with the SwiGLU or with the gather (both also bit for bit against their
 * compositions), load balancing and z-loss) against naive double-precision references or
 * hand-computed values, central finite differences for every PARAM input, a composed MoE
 * layer (route, gather, expert GEMM, combine) and the no-allocation-after-the-first-step
 * property; and the row loops split over the cores (gather, combine) and the reworked
 * router losses, at 1 and 2 threads, bit for bit against the serial loops written out
 * (repeated rows, dropped slots, empty inputs). */
#include "core/pool.h"
#include "testutil.h"

#include "autograd/blas.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------- naive references ---------------- */

/* Top-k by repeated selection of the best unused index: strict '>' keeps the lower index
 * on ties. gates = softmax over the chosen scores, in double. */
static void topk_ref(const float *h, int N, int E, int K, int32_t *idx, float *gates) {
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

static void expert_linear_ref(const float *x, const float *w, const int32_t *offs, int E,
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

static void combine_ref(const float *ys, const float *gates, const int32_t *slot, int N, int K,
                        int C, float *y) {
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
static void fill_separated(Tensor *h, uint64_t seed) {
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

/* ---------------- top-k gate ---------------- */

START_TEST(test_topk_forward) {
    const int N = 6, E = 5;
    Tensor *h = tt_tensor2(N, E, TENSOR_CONST, "h");
    tt_fill_normal(h, 1, 1.0f);
    /* row 0: a three-way tie at the top, row 1: all equal (ties -> lower index first). */
    const float tie0[5] = {1.0f, 3.0f, 3.0f, 0.0f, 3.0f};
    memcpy(h->data, tie0, sizeof tie0);
    for (int e = 0; e < E; e++) h->data[E + e] = 0.25f;
    Tape tape;
    tape_init(&tape, 1 << 16);
    for (int K = 1; K <= E; K++) {
        int32_t idx[6 * 5], idx_ref[6 * 5];
        float g_ref[6 * 5];
        tape_reset(&tape, false);
        Tensor *g = op_topk_gate(&tape, h, K, idx);
        topk_ref(h->data, N, E, K, idx_ref, g_ref);
        for (int j = 0; j < N * K; j++) ck_assert_int_eq(idx[j], idx_ref[j]);
        ck_assert_msg(tt_max_err(g->data, g_ref, (size_t)N * K, FWD_ATOL, FWD_RTOL) <= 1.0,
                      "K %d gates differ from reference", K);
        for (int n = 0; n < N; n++) {
            double s = 0.0;
            for (int k = 0; k < K; k++) s += (double)g->data[n * K + k];
            /* K float32 values each rounded at eps_f32: 1e-6 is ~3x K eps */
            ck_assert_msg(fabs(s - 1.0) <= 1e-6, "K %d row %d gates sum %.9g", K, n, s);
        }
        if (K == 1)   /* softmax over one score is exactly 1 */
            for (int n = 0; n < N; n++) ck_assert_msg(g->data[n] == 1.0f, "K=1 gate != 1");
    }
    /* hand-checked ties: row 0 = [1,3,3,0,3] picks 1, 2, 4 then 0; row 1 picks 0, 1, 2 */
    int32_t idx[6 * 3];
    tape_reset(&tape, false);
    Tensor *g = op_topk_gate(&tape, h, 3, idx);
    ck_assert_int_eq(idx[0], 1);
    ck_assert_int_eq(idx[1], 2);
    ck_assert_int_eq(idx[2], 4);
    ck_assert_int_eq(idx[3], 0);
    ck_assert_int_eq(idx[4], 1);
    ck_assert_int_eq(idx[5], 2);
    for (int k = 0; k < 3; k++)   /* equal scores -> equal gates 1/3 (1 ulp) */
        ck_assert_msg(fabsf(g->data[k] - 1.0f / 3.0f) <= 1e-7f, "tie gate %d", k);
    tape_free(&tape);
    tt_free(h);
}
END_TEST

typedef struct TopkCtx { int K; int32_t *idx; } TopkCtx;

static Tensor *build_topk(Tape *t, Tensor **in, void *ctx) {
    TopkCtx *c = ctx;
    return op_topk_gate(t, in[0], c->K, c->idx);
}

START_TEST(test_topk_grad) {
    const int N = 4, E = 6, Ks[3] = {1, 2, 4};
    const int K = Ks[_i];
    Tensor *h = tt_tensor2(N, E, TENSOR_PARAM, "h");
    fill_separated(h, 17 + (uint64_t)_i);
    int32_t idx[4 * 6];
    TopkCtx c = {K, idx};
    /* h = 1e-2: truncation h^2 |g'''| / 6 <= 2e-5 (softmax derivatives are O(1)); rounding
     * eps_f32 |f| / h ~ 6e-8 * 4 / 1e-2 ~ 2e-5. 1e-4 absolute plus 1e-3 relative. K = 1
     * has a zero gradient (the gate is the constant 1): both sides must be ~0. */
    int bad = tt_check_grad(build_topk, &c, &h, 1, 1e-2f, 1e-4, 1e-3, "topk_gate");
    ck_assert_msg(bad == 0, "K %d: %d mismatches", K, bad);
    tt_free(h);
}
END_TEST

/* ---------------- top-k gate with a selection bias ---------------- */

/* Naive reference of the biased gate: rank by h + b with topk_ref on a biased copy, then the
 * gates are the softmax (double) over the UNBIASED scores of the chosen experts. */
static void topk_bias_ref(const float *h, const float *bias, int N, int E, int K, int32_t *idx,
                          float *gates) {
    float *hb = malloc(sizeof(float) * (size_t)N * E);
    float *unused = malloc(sizeof(float) * (size_t)N * K);   /* topk_ref's biased gates */
    for (int n = 0; n < N; n++)
        for (int e = 0; e < E; e++) hb[n * E + e] = h[n * E + e] + bias[e];
    topk_ref(hb, N, E, K, idx, unused);
    for (int n = 0; n < N; n++) {
        double z = 0.0;
        for (int k = 0; k < K; k++) z += exp((double)h[n * E + idx[n * K + k]]);
        for (int k = 0; k < K; k++)
            gates[n * K + k] = (float)(exp((double)h[n * E + idx[n * K + k]]) / z);
    }
    free(unused);
    free(hb);
}

START_TEST(test_topk_bias_forward) {
    const int N = 6, E = 5;
    Tensor *h = tt_tensor2(N, E, TENSOR_CONST, "h");
    tt_fill_normal(h, 2, 1.0f);
    /* a bias as large as the scores: it must change some selections, or the test is idle */
    const float bias[5] = {1.5f, -0.7f, 0.0f, -1.2f, 0.4f};
    const float zero[5] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    Tape tape;
    tape_init(&tape, 1 << 16);
    int changed = 0;
    for (int K = 1; K <= E; K++) {
        int32_t idx[6 * 5], idx_ref[6 * 5], idx0[6 * 5];
        float g_ref[6 * 5];
        tape_reset(&tape, false);
        Tensor *g = op_topk_gate_bias(&tape, h, bias, K, idx);
        topk_bias_ref(h->data, bias, N, E, K, idx_ref, g_ref);
        for (int j = 0; j < N * K; j++) ck_assert_int_eq(idx[j], idx_ref[j]);
        ck_assert_msg(tt_max_err(g->data, g_ref, (size_t)N * K, FWD_ATOL, FWD_RTOL) <= 1.0,
                      "K %d biased gates differ from reference", K);
        Tensor *g0 = op_topk_gate(&tape, h, K, idx0);
        for (int j = 0; j < N * K; j++) changed += idx0[j] != idx[j];
        /* a zero bias is the plain gate, bit for bit (same scores, same order) */
        Tensor *gz = op_topk_gate_bias(&tape, h, zero, K, idx);
        for (int j = 0; j < N * K; j++) {
            ck_assert_int_eq(idx[j], idx0[j]);
            ck_assert_msg(gz->data[j] == g0->data[j], "zero bias changed gate %d", j);
        }
    }
    ck_assert_msg(changed > 0, "the bias changed no selection: the test proves nothing");
    /* hand-checked: h = [0, 1, 2, 3], b = [10, 0, 0, -10]: selection scores [10, 1, 2, -7]
     * pick experts 0 then 2 (expert 3, the largest score, is out); gates = softmax(h0, h2)
     * = (1, e^2) / (1 + e^2) */
    Tensor *h4 = tt_tensor2(1, 4, TENSOR_CONST, "h4");
    const float hv[4] = {0.0f, 1.0f, 2.0f, 3.0f}, bv[4] = {10.0f, 0.0f, 0.0f, -10.0f};
    memcpy(h4->data, hv, sizeof hv);
    int32_t ix[2];
    tape_reset(&tape, false);
    Tensor *g = op_topk_gate_bias(&tape, h4, bv, 2, ix);
    ck_assert_int_eq(ix[0], 0);
    ck_assert_int_eq(ix[1], 2);
    const double e2 = exp(2.0);
    /* two float32 exps and a division: 1e-7 is a few ulps of values < 1 */
    ck_assert_msg(fabs((double)g->data[0] - 1.0 / (1.0 + e2)) <= 1e-7, "gate0 %.9g",
                  (double)g->data[0]);
    ck_assert_msg(fabs((double)g->data[1] - e2 / (1.0 + e2)) <= 1e-7, "gate1 %.9g",
                  (double)g->data[1]);
    tape_free(&tape);
    tt_free(h4);
    tt_free(h);
}
END_TEST

typedef struct TopkBiasCtx { int K; const float *bias; int32_t *idx; } TopkBiasCtx;

static Tensor *build_topk_bias(Tape *t, Tensor **in, void *ctx) {
    TopkBiasCtx *c = ctx;
    return op_topk_gate_bias(t, in[0], c->bias, c->K, c->idx);
}

START_TEST(test_topk_bias_grad) {
    const int N = 4, E = 6, Ks[3] = {1, 2, 4};
    const int K = Ks[_i];
    Tensor *h = tt_tensor2(N, E, TENSOR_PARAM, "h");
    fill_separated(h, 27 + (uint64_t)_i);
    /* Bias steps of 3 exceed the spread of h (< 2.7), so the selection is the bias order
     * (experts 1, 4, 0, 5, ...) in every row with gaps >= 0.3 that a step of 1e-2 cannot
     * close; the chosen experts are mostly NOT the top-h ones, so the gradient must reach
     * the unbiased scores of whatever the bias chose. The bias is a constant (no gradient). */
    const float bias[6] = {9.0f, 15.0f, 3.0f, 0.0f, 12.0f, 6.0f};
    int32_t idx[4 * 6];
    TopkBiasCtx c = {K, bias, idx};
    /* same smooth softmax as test_topk_grad: 1e-4 absolute plus 1e-3 relative */
    int bad = tt_check_grad(build_topk_bias, &c, &h, 1, 1e-2f, 1e-4, 1e-3, "topk_gate_bias");
    ck_assert_msg(bad == 0, "K %d: %d mismatches", K, bad);
    /* experts the bias left out get exactly no gradient */
    for (int n = 0; n < N; n++)
        for (int e = 0; e < E; e++) {
            bool chosen = false;
            for (int k = 0; k < K; k++) chosen |= idx[n * K + k] == e;
            if (!chosen) ck_assert_msg(h->grad[n * E + e] == 0.0f, "dh[%d,%d] != 0", n, e);
        }
    ck_assert_int_eq(idx[0], 1);   /* the bias order, not h's */
    tt_free(h);
}
END_TEST

/* ---------------- gather rows ---------------- */

static const int32_t k_rows[7] = {3, 0, 3, 1, 4, 3, 0};   /* repeats: the scatter-add must sum */

static Tensor *build_gather(Tape *t, Tensor **in, void *ctx) {
    (void)ctx;
    return op_gather_rows(t, in[0], k_rows, 7);
}

START_TEST(test_gather) {
    const int N = 5, C = 3;
    Tensor *x = tt_tensor2(N, C, TENSOR_PARAM, "x");
    tt_fill_normal(x, 5, 1.0f);
    Tape tape;
    tape_init(&tape, 1 << 16);
    tape_reset(&tape, false);
    Tensor *y = op_gather_rows(&tape, x, k_rows, 7);
    ck_assert_int_eq((int)tensor_rows(y), 7);
    for (int m = 0; m < 7; m++)
        for (int c = 0; c < C; c++)   /* a copy: exact */
            ck_assert_msg(y->data[m * C + c] == x->data[k_rows[m] * C + c], "y[%d,%d]", m, c);
    tape_free(&tape);
    /* linear op: FD has no truncation error, only rounding eps_f32 |f| / h ~ 1e-5 */
    int bad = tt_check_grad(build_gather, NULL, &x, 1, 1e-2f, 1e-4, 1e-4, "gather_rows");
    ck_assert_int_eq(bad, 0);
    /* row 2 is never gathered: its gradient must be exactly 0 */
    for (int c = 0; c < C; c++) ck_assert_msg(x->grad[2 * C + c] == 0.0f, "dx[2] != 0");
    tt_free(x);
}
END_TEST

/* ---------------- combine ---------------- */

typedef struct CombineCtx { const int32_t *slot; int K; } CombineCtx;

static Tensor *build_combine(Tape *t, Tensor **in, void *ctx) {
    CombineCtx *c = ctx;
    return op_combine(t, in[0], in[1], c->slot, c->K);
}

START_TEST(test_combine) {
    const int N = 4, K = 2, M = 6, C = 3;
    /* token 1 lost its second slot, token 3 lost both (capacity drops) */
    const int32_t slot[8] = {0, 3, 1, -1, 2, 5, -1, -1};
    Tensor *in[2];
    in[0] = tt_tensor2(M, C, TENSOR_PARAM, "ys");
    in[1] = tt_tensor2(N, K, TENSOR_PARAM, "gates");
    tt_fill_normal(in[0], 8, 1.0f);
    tt_fill_uniform(in[1], 9, 0.1f, 0.9f);
    float ref[4 * 3];
    combine_ref(in[0]->data, in[1]->data, slot, N, K, C, ref);
    Tape tape;
    tape_init(&tape, 1 << 16);
    tape_reset(&tape, false);
    Tensor *y = op_combine(&tape, in[0], in[1], slot, K);
    ck_assert_msg(tt_max_err(y->data, ref, (size_t)N * C, FWD_ATOL, FWD_RTOL) <= 1.0,
                  "combine forward");
    for (int c = 0; c < C; c++) ck_assert_msg(y->data[3 * C + c] == 0.0f, "dropped token != 0");
    tape_free(&tape);
    CombineCtx cc = {slot, K};
    /* bilinear: linear in each single element, so FD error is rounding only (~1e-5) */
    int bad = tt_check_grad(build_combine, &cc, in, 2, 1e-2f, 1e-4, 1e-4, "combine");
    ck_assert_int_eq(bad, 0);
    /* dropped slots get exactly zero gradient; ys row 4 is used by no slot */
    ck_assert_msg(in[1]->grad[3] == 0.0f && in[1]->grad[6] == 0.0f && in[1]->grad[7] == 0.0f,
                  "dropped gate got a gradient");
    for (int c = 0; c < C; c++) ck_assert_msg(in[0]->grad[4 * C + c] == 0.0f, "unused ys row");
    tt_free(in[0]);
    tt_free(in[1]);
}
END_TEST

/* ---------------- expert linear ---------------- */

typedef struct ExpCase { int E, din, dout; int32_t offs[5]; } ExpCase;
static const ExpCase k_exp_cases[] = {
    {3, 4, 3, {0, 2, 2, 5}},      /* expert 1 empty */
    {1, 3, 5, {0, 4}},            /* a single expert = a plain linear layer */
    {4, 2, 3, {0, 0, 3, 3, 4}},   /* leading and middle empty experts */
};

static Tensor *build_expert(Tape *t, Tensor **in, void *ctx) {
    const ExpCase *c = ctx;
    return op_expert_linear(t, in[0], in[1], c->offs, c->E);
}

START_TEST(test_expert_linear) {
    const ExpCase *c = &k_exp_cases[_i];
    const int M = c->offs[c->E];
    const int wshape[3] = {c->E, c->dout, c->din};
    Tensor *in[2];
    in[0] = tt_tensor2(M, c->din, TENSOR_PARAM, "x");
    in[1] = tt_tensor(3, wshape, TENSOR_PARAM, "W");
    tt_fill_normal(in[0], 30 + (uint64_t)_i, 1.0f);
    tt_fill_normal(in[1], 40 + (uint64_t)_i, 0.5f);
    float *ref = malloc(sizeof(float) * (size_t)M * c->dout);
    expert_linear_ref(in[0]->data, in[1]->data, c->offs, c->E, c->din, c->dout, ref);
    Tape tape;
    tape_init(&tape, 1 << 16);
    tape_reset(&tape, false);
    Tensor *y = op_expert_linear(&tape, in[0], in[1], c->offs, c->E);
    ck_assert_int_eq((int)tensor_rows(y), M);
    ck_assert_int_eq(tensor_cols(y), c->dout);
    ck_assert_msg(tt_max_err(y->data, ref, y->n, FWD_ATOL, FWD_RTOL) <= 1.0, "case %d fwd", _i);
    tape_free(&tape);
    /* bilinear in (x, W): FD error is rounding only, eps_f32 |f| / h ~ 1e-5 */
    int bad = tt_check_grad(build_expert, (void *)c, in, 2, 1e-2f, 1e-4, 1e-4, "expert_linear");
    ck_assert_msg(bad == 0, "case %d: %d mismatches", _i, bad);
    /* empty experts: their weight gradient stays exactly 0 (no sgemm, no garbage) */
    for (int e = 0; e < c->E; e++)
        if (c->offs[e] == c->offs[e + 1])
            for (int j = 0; j < c->dout * c->din; j++)
                ck_assert_msg(in[1]->grad[(size_t)e * c->dout * c->din + j] == 0.0f,
                              "empty expert %d has a gradient", e);
    free(ref);
    tt_free(in[0]);
    tt_free(in[1]);
}
END_TEST

START_TEST(test_expert_linear_frozen) {
    /* FROZEN W: no weight-gradient GEMM (W has no grad buffer: writing it would crash),
     * dx still correct. */
    const ExpCase *c = &k_exp_cases[0];
    const int wshape[3] = {c->E, c->dout, c->din};
    Tensor *in[2];
    in[0] = tt_tensor2(c->offs[c->E], c->din, TENSOR_PARAM, "x");
    in[1] = tt_tensor(3, wshape, TENSOR_FROZEN, "W");
    tt_fill_normal(in[0], 50, 1.0f);
    tt_fill_normal(in[1], 51, 0.5f);
    /* linear in x: rounding-only FD error as above */
    int bad = tt_check_grad(build_expert, (void *)c, in, 2, 1e-2f, 1e-4, 1e-4, "frozen W");
    ck_assert_int_eq(bad, 0);
    tt_free(in[0]);
    tt_free(in[1]);
}
END_TEST

/* ---------------- grouped expert GEMM with a fused SwiGLU ---------------- */

/* y[rows of e] = (silu(a) b)[rows] W[e]^T, the activation in double (never rounded). */
static void swiglu_expert_ref(const float *a, const float *b, const float *w,
                              const int32_t *offs, int E, int F, int C, float *y) {
    for (int e = 0; e < E; e++)
        for (int m = offs[e]; m < offs[e + 1]; m++)
            for (int o = 0; o < C; o++) {
                double acc = 0.0;
                for (int f = 0; f < F; f++) {
                    const double x = (double)a[(size_t)m * F + f];
                    acc += x / (1.0 + exp(-x)) * (double)b[(size_t)m * F + f] *
                           (double)w[((size_t)e * C + o) * F + f];
                }
                y[(size_t)m * C + o] = (float)acc;
            }
}

static Tensor *build_swiglu_expert(Tape *t, Tensor **in, void *ctx) {
    const ExpCase *c = ctx;
    return op_swiglu_expert_linear(t, in[0], in[1], in[2], c->offs, c->E);
}

/* a, b (M, din) PARAM and W (E, dout, din) of the given kind for a case. */
static void swiglu_expert_inputs(const ExpCase *c, TensorKind wkind, uint64_t seed,
                                 Tensor **in) {
    const int M = c->offs[c->E];
    const int wshape[3] = {c->E, c->dout, c->din};
    in[0] = tt_tensor2(M, c->din, TENSOR_PARAM, "a");
    in[1] = tt_tensor2(M, c->din, TENSOR_PARAM, "b");
    in[2] = tt_tensor(3, wshape, wkind, "W");
    tt_fill_normal(in[0], seed, 1.0f);
    tt_fill_normal(in[1], seed + 1, 1.0f);
    tt_fill_normal(in[2], seed + 2, 0.5f);
}

START_TEST(test_swiglu_expert_forward) {
    const ExpCase *c = &k_exp_cases[_i];
    const int M = c->offs[c->E];
    Tensor *in[3];
    swiglu_expert_inputs(c, TENSOR_CONST, 60 + 3 * (uint64_t)_i, in);
    float *ref = malloc(sizeof(float) * (size_t)M * c->dout);
    swiglu_expert_ref(in[0]->data, in[1]->data, in[2]->data, c->offs, c->E, c->din, c->dout,
                      ref);
    Tape tape;
    tape_init(&tape, 1 << 16);
    tape_reset(&tape, false);
    Tensor *y = op_swiglu_expert_linear(&tape, in[0], in[1], in[2], c->offs, c->E);
    ck_assert_int_eq((int)tensor_rows(y), M);
    ck_assert_int_eq(tensor_cols(y), c->dout);
    /* sums of <= 4 terms whose factors carry one more rounding and one exp (<= 2 ulp) than
     * the plain expert GEMM's: still far inside FWD_* */
    ck_assert_msg(tt_max_err(y->data, ref, y->n, FWD_ATOL, FWD_RTOL) <= 1.0, "case %d fwd", _i);
    tape_free(&tape);
    free(ref);
    for (int k = 0; k < 3; k++) tt_free(in[k]);
}
END_TEST

/* Finite differences for da, db and dW on every case (all have empty experts but the
 * second), then with W FROZEN (no grad buffer: the op must form no dW) for da and db. */
START_TEST(test_swiglu_expert_grad) {
    const ExpCase *c = &k_exp_cases[_i];
    for (int frozen = 0; frozen < 2; frozen++) {
        Tensor *in[3];
        swiglu_expert_inputs(c, frozen ? TENSOR_FROZEN : TENSOR_PARAM, 70 + 3 * (uint64_t)_i,
                             in);
        /* smooth in a (silu), bilinear in (b, W): FD error ~ eps_f32 |f| / h plus
         * h^2 |f'''| / 6, i.e. ~1e-5 + 2e-5 |f'''|; 1e-3 absolute + 1e-2 relative is 10x
         * above it and 100x below a wrong factor 2 or sign on these O(0.1..1) gradients */
        int bad = tt_check_grad(build_swiglu_expert, (void *)c, in, 3, 1e-2f, 1e-3, 1e-2,
                                frozen ? "swiglu_expert frozen W" : "swiglu_expert");
        ck_assert_msg(bad == 0, "case %d frozen %d: %d mismatches", _i, frozen, bad);
        if (frozen) ck_assert_ptr_null(in[2]->grad);
        /* empty experts (m = 0 rows): their weight gradient stays exactly 0 */
        for (int e = 0; e < c->E && !frozen; e++)
            if (c->offs[e] == c->offs[e + 1])
                for (int j = 0; j < c->dout * c->din; j++)
                    ck_assert_msg(in[2]->grad[(size_t)e * c->dout * c->din + j] == 0.0f,
                                  "empty expert %d has a gradient", e);
        for (int k = 0; k < 3; k++) tt_free(in[k]);
    }
}
END_TEST

/* One recorded forward + backward (seeded with dy) of the fused op or of its composition
 * op_expert_linear(op_swiglu(a, b), W): output and grads copied out (NULL where not
 * required), arena use and grad-plan bytes. Between the op's forward and its backward a
 * second fused op on constant inputs overwrites the tape's scratch (as the next layer does
 * in a model), so a backward that did not recompute its activation would be wrong. The
 * second of two steps on one tape: it must allocate nothing. */
typedef struct SwiExpRun {
    float *y, *g[3];
    size_t arena, plan, allocs;
} SwiExpRun;

static void swiglu_expert_run(bool fused, const ExpCase *c, Tensor **in, Tensor **clobber,
                              const float *dy, SwiExpRun *r) {
    Tape t;
    tape_init(&t, 1 << 16);
    for (int step = 0; step < 2; step++) {
        for (int k = 0; k < 3; k++)
            if (in[k]->grad) memset(in[k]->grad, 0, sizeof(float) * in[k]->n);
        const size_t c0 = moe_alloc_calls();
        tape_reset(&t, true);
        Tensor *y = fused
            ? op_swiglu_expert_linear(&t, in[0], in[1], in[2], c->offs, c->E)
            : op_expert_linear(&t, op_swiglu(&t, in[0], in[1]), in[2], c->offs, c->E);
        r->arena = arena_used(&t.arena);
        (void)op_swiglu_expert_linear(&t, clobber[0], clobber[1], clobber[2], c->offs, c->E);
        tape_backward(&t, y, dy);
        r->allocs = moe_alloc_calls() - c0;
        if (step == 1) {
            r->y = malloc(sizeof(float) * y->n);
            memcpy(r->y, y->data, sizeof(float) * y->n);
        }
    }
    r->plan = tape_grad_plan_bytes(&t);
    for (int k = 0; k < 3; k++) {
        r->g[k] = NULL;
        if (!in[k]->requires_grad) continue;
        r->g[k] = malloc(sizeof(float) * in[k]->n);
        memcpy(r->g[k], in[k]->grad, sizeof(float) * in[k]->n);
    }
    tape_free(&t);
}

/* The fused op against its composition, bit for bit (no tolerance): per expert it runs
 * op_swiglu's kernel on the expert's rows and op_expert_linear's sgemm calls with the same
 * arguments (dact with beta 1 into zeros, as into the composition's zeroed activation
 * grad). A small case with an empty expert and a large one (M F > 2^16: the composition's
 * SwiGLU is split over the threads, the suite also runs with 2; expert 1 empty); every
 * input trainable, W FROZEN (carrying a grad buffer, which must stay zero), and a CONST
 * (only db and dW). The fused tape keeps M*F floats less activation and plans M*F floats
 * less gradient. */
START_TEST(test_swiglu_expert_matches_composition) {
    const ExpCase big = {4, 64, 40, {0, 520, 520, 900, 1100}};
    const ExpCase *cases[2] = {&k_exp_cases[0], &big};
    for (int s = 0; s < 2; s++)
        for (int v = 0; v < 3; v++) {
            const ExpCase *c = cases[s];
            const int M = c->offs[c->E];
            Tensor *in[3], *clobber[3];
            swiglu_expert_inputs(c, v == 1 ? TENSOR_FROZEN : TENSOR_PARAM, 90 + (uint64_t)s,
                                 in);
            if (v == 1) in[2]->grad = moe_calloc(sizeof(float) * in[2]->n);
            if (v == 2) in[0]->requires_grad = false;   /* a constant: no da */
            swiglu_expert_inputs(c, TENSOR_CONST, 95 + (uint64_t)s, clobber);
            for (int k = 0; k < 2; k++) clobber[k]->requires_grad = false;
            Tensor *dy = tt_tensor2(M, c->dout, TENSOR_CONST, "dy");
            tt_fill_normal(dy, 99, 1.0f);
            SwiExpRun f, u;
            swiglu_expert_run(true, c, in, clobber, dy->data, &f);
            if (v == 1)
                for (size_t j = 0; j < in[2]->n; j++)
                    ck_assert_msg(in[2]->grad[j] == 0.0f, "frozen W got a gradient");
            swiglu_expert_run(false, c, in, clobber, dy->data, &u);
            ck_assert_msg(memcmp(f.y, u.y, sizeof(float) * (size_t)M * c->dout) == 0,
                          "case %d variant %d: forward differs", s, v);
            for (int k = 0; k < 3; k++) {
                ck_assert_msg((f.g[k] == NULL) == !in[k]->requires_grad, "grad %d", k);
                if (f.g[k])
                    ck_assert_msg(memcmp(f.g[k], u.g[k], sizeof(float) * in[k]->n) == 0,
                                  "case %d variant %d: grad of %s differs", s, v,
                                  in[k]->name);
            }
            const size_t act = sizeof(float) * (size_t)M * c->din;
            ck_assert_msg(f.arena + act <= u.arena, "arena fused %zu, composition %zu",
                          f.arena, u.arena);
            ck_assert_msg(f.plan + act <= u.plan, "plan fused %zu, composition %zu", f.plan,
                          u.plan);
            ck_assert_uint_eq(f.allocs, 0);
            free(f.y);
            free(u.y);
            for (int k = 0; k < 3; k++) {
                free(f.g[k]);
                free(u.g[k]);
                tt_free(in[k]);
                tt_free(clobber[k]);
            }
            tt_free(dy);
        }
}
END_TEST

/* ---------------- gather fused into the up projections ---------------- */

/* rows (M) grouped by offs; tokens may repeat across experts (a token's K slots) and some
 * tokens have no slot (their dx must stay exactly 0). */
typedef struct UpCase { int N, C, F, E; int32_t offs[5]; const int32_t *rows; } UpCase;
static const int32_t k_up_rows0[6] = {0, 2, 3, 1, 2, 0};
static const int32_t k_up_rows1[4] = {4, 0, 1, 4};
static const UpCase k_up_cases[] = {
    {4, 3, 4, 3, {0, 3, 3, 6}, k_up_rows0},          /* expert 1 empty */
    {5, 2, 3, 4, {0, 0, 2, 2, 4}, k_up_rows1},       /* tokens 2, 3 unrouted */
};

/* h[m] = x[rows[m]] W[e]^T for the expert e owning slot m, in double. */
static void gather_expert_ref(const float *x, const int32_t *rows, const float *w,
                              const int32_t *offs, int E, int C, int F, float *h) {
    for (int e = 0; e < E; e++)
        for (int m = offs[e]; m < offs[e + 1]; m++)
            for (int f = 0; f < F; f++) {
                double acc = 0.0;
                for (int c = 0; c < C; c++)
                    acc += (double)x[(size_t)rows[m] * C + c] *
                           (double)w[((size_t)e * F + f) * C + c];
                h[(size_t)m * F + f] = (float)acc;
            }
}

/* x (N, C), W1, W3 (E, F, C) for a case; W1, W3 of the given kind. */
static void up_inputs(int N, int C, int F, int E, TensorKind wkind, uint64_t seed, Tensor **in) {
    const int wshape[3] = {E, F, C};
    in[0] = tt_tensor2(N, C, TENSOR_PARAM, "x");
    in[1] = tt_tensor(3, wshape, wkind, "W1");
    in[2] = tt_tensor(3, wshape, wkind, "W3");
    tt_fill_normal(in[0], seed, 1.0f);
    tt_fill_normal(in[1], seed + 1, 0.5f);
    tt_fill_normal(in[2], seed + 2, 0.5f);
}

START_TEST(test_gather_expert_up_forward) {
    const UpCase *c = &k_up_cases[_i];
    const int M = c->offs[c->E];
    Tensor *in[3];
    up_inputs(c->N, c->C, c->F, c->E, TENSOR_CONST, 110 + 3 * (uint64_t)_i, in);
    float *r1 = malloc(sizeof(float) * (size_t)M * c->F);
    float *r3 = malloc(sizeof(float) * (size_t)M * c->F);
    gather_expert_ref(in[0]->data, c->rows, in[1]->data, c->offs, c->E, c->C, c->F, r1);
    gather_expert_ref(in[0]->data, c->rows, in[2]->data, c->offs, c->E, c->C, c->F, r3);
    Tape tape;
    tape_init(&tape, 1 << 16);
    tape_reset(&tape, false);
    Tensor *h3 = NULL;
    Tensor *h1 = op_gather_expert_up(&tape, in[0], c->rows, in[1], in[2], c->offs, c->E, &h3);
    ck_assert_int_eq((int)tensor_rows(h1), M);
    ck_assert_int_eq(tensor_cols(h1), c->F);
    ck_assert_int_eq((int)tensor_rows(h3), M);
    ck_assert_int_eq(tape.n, 0);   /* nothing requires grad: nothing recorded */
    /* sums of <= 3 products: FWD_* as for the expert GEMM */
    ck_assert_msg(tt_max_err(h1->data, r1, h1->n, FWD_ATOL, FWD_RTOL) <= 1.0, "case %d h1", _i);
    ck_assert_msg(tt_max_err(h3->data, r3, h3->n, FWD_ATOL, FWD_RTOL) <= 1.0, "case %d h3", _i);
    tape_free(&tape);
    free(r1);
    free(r3);
    for (int k = 0; k < 3; k++) tt_free(in[k]);
}
END_TEST

/* swiglu(h1, h3): a consumer that treats the two outputs differently, so swapped or mixed
 * output grads show. */
static Tensor *build_gather_up(Tape *t, Tensor **in, void *ctx) {
    const UpCase *c = ctx;
    Tensor *h3 = NULL;
    Tensor *h1 = op_gather_expert_up(t, in[0], c->rows, in[1], in[2], c->offs, c->E, &h3);
    return op_swiglu(t, h1, h3);
}

/* Finite differences for dx, dW1 and dW3, then with W1, W3 FROZEN (no grad buffers) for dx.
 * Unrouted tokens and empty experts get exactly zero gradient. */
START_TEST(test_gather_expert_up_grad) {
    const UpCase *c = &k_up_cases[_i];
    for (int frozen = 0; frozen < 2; frozen++) {
        Tensor *in[3];
        up_inputs(c->N, c->C, c->F, c->E, frozen ? TENSOR_FROZEN : TENSOR_PARAM,
                  120 + 3 * (uint64_t)_i, in);
        /* the same smooth silu-times-bilinear loss as test_swiglu_expert_grad: 1e-3 absolute
         * + 1e-2 relative, 10x the FD error and 100x below a wrong factor or sign */
        int bad = tt_check_grad(build_gather_up, (void *)c, in, 3, 1e-2f, 1e-3, 1e-2,
                                frozen ? "gather_up frozen W" : "gather_up");
        ck_assert_msg(bad == 0, "case %d frozen %d: %d mismatches", _i, frozen, bad);
        for (int n = 0; n < c->N; n++) {
            bool routed = false;
            for (int m = 0; m < c->offs[c->E]; m++) routed |= c->rows[m] == n;
            for (int j = 0; j < c->C && !routed; j++)
                ck_assert_msg(in[0]->grad[(size_t)n * c->C + j] == 0.0f, "unrouted token %d", n);
        }
        for (int e = 0; e < c->E && !frozen; e++)
            if (c->offs[e] == c->offs[e + 1])
                for (int j = 0; j < c->F * c->C; j++)
                    ck_assert_msg(in[1]->grad[(size_t)e * c->F * c->C + j] == 0.0f &&
                                  in[2]->grad[(size_t)e * c->F * c->C + j] == 0.0f,
                                  "empty expert %d has a gradient", e);
        if (frozen) ck_assert(in[1]->grad == NULL && in[2]->grad == NULL);
        for (int k = 0; k < 3; k++) tt_free(in[k]);
    }
}
END_TEST

/* One recorded forward + backward of swiglu(h1, h3), seeded with dy, with (h1, h3) from the
 * fused op or from op_gather_rows + op_expert_linear (W1, then W3): output and grads copied
 * out, arena use and grad-plan bytes of the second of two steps (which must allocate
 * nothing). Between forward and backward a second fused op on constant inputs overwrites
 * the scratch. */
static void gather_up_run(bool fused, const UpCase *c, Tensor **in, Tensor **clobber,
                          const float *dy, SwiExpRun *r) {
    Tape t;
    tape_init(&t, 1 << 16);
    const int M = c->offs[c->E];
    for (int step = 0; step < 2; step++) {
        for (int k = 0; k < 3; k++)
            if (in[k]->grad) memset(in[k]->grad, 0, sizeof(float) * in[k]->n);
        const size_t c0 = moe_alloc_calls();
        tape_reset(&t, true);
        Tensor *h1, *h3;
        if (fused) {
            h1 = op_gather_expert_up(&t, in[0], c->rows, in[1], in[2], c->offs, c->E, &h3);
        } else {
            Tensor *xg = op_gather_rows(&t, in[0], c->rows, M);
            h1 = op_expert_linear(&t, xg, in[1], c->offs, c->E);
            h3 = op_expert_linear(&t, xg, in[2], c->offs, c->E);
        }
        r->arena = arena_used(&t.arena);
        Tensor *unused;
        (void)op_gather_expert_up(&t, clobber[0], c->rows, clobber[1], clobber[2], c->offs,
                                  c->E, &unused);
        Tensor *y = op_swiglu(&t, h1, h3);
        tape_backward(&t, y, dy);
        r->allocs = moe_alloc_calls() - c0;
        if (step == 1) {
            r->y = malloc(sizeof(float) * y->n);
            memcpy(r->y, y->data, sizeof(float) * y->n);
        }
    }
    r->plan = tape_grad_plan_bytes(&t);
    for (int k = 0; k < 3; k++) {
        r->g[k] = NULL;
        if (!in[k]->requires_grad) continue;
        r->g[k] = malloc(sizeof(float) * in[k]->n);
        memcpy(r->g[k], in[k]->grad, sizeof(float) * in[k]->n);
    }
    tape_free(&t);
}

/* The fused op against its composition, bit for bit (no tolerance): per expert the same
 * row copies and sgemm calls with the same arguments, dxg formed in the composition's order
 * (W3's product, then W1's, beta 1 into zeros) and scattered into dx in slot order. Cases:
 * the small one with an empty expert, and M = 1200 slots of 600 tokens over 4 experts
 * (expert 1 empty; run with 1 and 2 threads by the suite) with F = 1100, more than
 * OpenBLAS's inner-dimension block, so each sgemm adds into dxg in steps and the order of
 * the two products shows in the bits (swapping them fails here); every input trainable,
 * W1 and W3 FROZEN (with grad buffers that must stay zero), and x CONST (only dW1, dW3).
 * The fused tape keeps M*C floats less. */
START_TEST(test_gather_expert_up_matches_composition) {
    int32_t *big_rows = malloc(sizeof(int32_t) * 1200);
    MoeRng rng;
    rng_seed(&rng, 130);
    for (int m = 0; m < 1200; m++) big_rows[m] = (int32_t)(rng_next(&rng) % 600);
    const UpCase big = {600, 16, 1100, 4, {0, 400, 400, 900, 1200}, big_rows};
    const UpCase *cases[2] = {&k_up_cases[0], &big};
    for (int s = 0; s < 2; s++)
        for (int v = 0; v < 3; v++) {
            const UpCase *c = cases[s];
            const int M = c->offs[c->E];
            Tensor *in[3], *clobber[3];
            up_inputs(c->N, c->C, c->F, c->E, v == 1 ? TENSOR_FROZEN : TENSOR_PARAM,
                      140 + (uint64_t)s, in);
            if (v == 1)
                for (int k = 1; k < 3; k++) in[k]->grad = moe_calloc(sizeof(float) * in[k]->n);
            if (v == 2) in[0]->requires_grad = false;   /* a constant: no dx */
            up_inputs(c->N, c->C, c->F, c->E, TENSOR_CONST, 145 + (uint64_t)s, clobber);
            clobber[0]->requires_grad = false;
            Tensor *dy = tt_tensor2(M, c->F, TENSOR_CONST, "dy");
            tt_fill_normal(dy, 149, 1.0f);
            SwiExpRun f, u;
            gather_up_run(true, c, in, clobber, dy->data, &f);
            if (v == 1)
                for (int k = 1; k < 3; k++)
                    for (size_t j = 0; j < in[k]->n; j++)
                        ck_assert_msg(in[k]->grad[j] == 0.0f, "frozen %s got a gradient",
                                      in[k]->name);
            gather_up_run(false, c, in, clobber, dy->data, &u);
            ck_assert_msg(memcmp(f.y, u.y, sizeof(float) * (size_t)M * c->F) == 0,
                          "case %d variant %d: forward differs", s, v);
            for (int k = 0; k < 3; k++) {
                ck_assert_msg((f.g[k] == NULL) == !in[k]->requires_grad, "grad %d", k);
                if (f.g[k])
                    ck_assert_msg(memcmp(f.g[k], u.g[k], sizeof(float) * in[k]->n) == 0,
                                  "case %d variant %d: grad of %s differs", s, v,
                                  in[k]->name);
            }
            const size_t xg = sizeof(float) * (size_t)M * c->C;
            ck_assert_msg(f.arena + xg <= u.arena, "arena fused %zu, composition %zu",
                          f.arena, u.arena);
            /* dxg is scratch now, but in the composition its plan region need not add to
             * the peak (it is live only after h1's and h3's grads are consumed): not
             * larger is all the plan promises */
            ck_assert_msg(f.plan <= u.plan, "plan fused %zu, composition %zu", f.plan, u.plan);
            ck_assert_uint_eq(f.allocs, 0);
            free(f.y);
            free(u.y);
            for (int k = 0; k < 3; k++) {
                free(f.g[k]);
                free(u.g[k]);
                tt_free(in[k]);
                tt_free(clobber[k]);
            }
            tt_free(dy);
        }
    free(big_rows);
}
END_TEST

/* ---------------- load balance ---------------- */

START_TEST(test_load_balance_values) {
    const float coef = 0.01f;
    Tape tape;
    tape_init(&tape, 1 << 16);
    /* Perfectly uniform routing: p_ni = 1/E and f_i = 1/E, scale = coef E / N:
     * coef E/N * sum_i (1/E) * N (1/E) = coef * E * E (1/E^2) = coef. */
    {
        const int N = 8, E = 4;
        Tensor *lg = tt_tensor2(N, E, TENSOR_CONST, "logits");
        for (size_t j = 0; j < lg->n; j++) lg->data[j] = 0.7f;
        float f[4] = {0.25f, 0.25f, 0.25f, 0.25f};
        tape_reset(&tape, false);
        Tensor *out = op_load_balance(&tape, lg, f, coef * (float)E / (float)N);
        /* float32 result of a double sum: 1e-6 absolute is ~100 ulps of 0.01 */
        ck_assert_msg(fabs((double)out->data[0] - (double)coef) <= 1e-6, "uniform: %.9g",
                      (double)out->data[0]);
        tt_free(lg);
    }
    /* N = 2, E = 2, logits [[0, 0], [ln 3, 0]]: p_0 = (1/2, 1/2), p_1 = (3/4, 1/4);
     * P = sum_n p_n = (5/4, 3/4); f = (3/4, 1/4): sum_i f_i P_i = 15/16 + 3/16 = 9/8;
     * scale = coef E / N = coef, so out = 9/8 coef. */
    {
        Tensor *lg = tt_tensor2(2, 2, TENSOR_CONST, "logits");
        const float v[4] = {0.0f, 0.0f, logf(3.0f), 0.0f};
        memcpy(lg->data, v, sizeof v);
        float f[2] = {0.75f, 0.25f};
        tape_reset(&tape, false);
        Tensor *out = op_load_balance(&tape, lg, f, coef);
        /* ln 3 rounded to float32 perturbs p by ~1e-8; 1e-7 on 0.01125 is ~10 ulps */
        ck_assert_msg(fabs((double)out->data[0] - 1.125 * (double)coef) <= 1e-7, "hand: %.9g",
                      (double)out->data[0]);
        tt_free(lg);
    }
    tape_free(&tape);
}
END_TEST

typedef struct LbCtx { const float *f; float scale; } LbCtx;

static Tensor *build_lb(Tape *t, Tensor **in, void *ctx) {
    LbCtx *c = ctx;
    return op_load_balance(t, in[0], c->f, c->scale);
}

START_TEST(test_load_balance_copies_f) {
    /* f is copied at forward time: the caller may reuse its buffer before backward. */
    Tensor *lg = tt_tensor2(3, 3, TENSOR_PARAM, "logits");
    tt_fill_normal(lg, 61, 1.0f);
    float f[3] = {0.5f, 0.3f, 0.2f};
    float keep[9];
    Tape tape;
    tape_init(&tape, 1 << 16);
    for (int pass = 0; pass < 2; pass++) {
        memset(lg->grad, 0, sizeof(float) * lg->n);
        tape_reset(&tape, true);
        Tensor *out = op_load_balance(&tape, lg, f, 0.7f);
        if (pass == 1) f[0] = f[1] = f[2] = 9.0f;   /* clobber the caller's copy */
        tape_backward(&tape, out, NULL);
        if (pass == 0) memcpy(keep, lg->grad, sizeof keep);
        else f[0] = 0.5f, f[1] = 0.3f, f[2] = 0.2f;
    }
    for (int j = 0; j < 9; j++)
        ck_assert_msg(lg->grad[j] == keep[j], "backward read the caller's f (elt %d)", j);
    tape_free(&tape);
    tt_free(lg);
}
END_TEST

START_TEST(test_load_balance_grad) {
    const int N = 5, E = 4;
    Tensor *lg = tt_tensor2(N, E, TENSOR_PARAM, "logits");
    tt_fill_normal(lg, 60, 1.0f);
    const float f[4] = {0.4f, 0.1f, 0.3f, 0.2f};
    LbCtx c = {f, 0.5f};
    /* one smooth scalar of size ~1: truncation h^2 |f'''| / 6 ~ 1e-5, rounding
     * eps_f32 |f| / h ~ 6e-6; 1e-4 absolute plus 1e-3 relative */
    int bad = tt_check_grad(build_lb, &c, &lg, 1, 1e-2f, 1e-4, 1e-3, "load_balance");
    ck_assert_int_eq(bad, 0);
    tt_free(lg);
}
END_TEST

/* ---------------- z-loss ---------------- */

START_TEST(test_zloss_value) {
    /* N = 2, E = 2, logits [[0, 0], [ln 3, 0]]: lse_0 = ln(1 + 1) = ln 2,
     * lse_1 = ln(3 + 1) = ln 4 = 2 ln 2. scale = coef / N:
     * out = coef (ln^2 2 + 4 ln^2 2) / 2 = 2.5 coef ln^2 2. */
    const float coef = 0.001f;
    Tensor *lg = tt_tensor2(2, 2, TENSOR_CONST, "logits");
    const float v[4] = {0.0f, 0.0f, logf(3.0f), 0.0f};
    memcpy(lg->data, v, sizeof v);
    Tape tape;
    tape_init(&tape, 1 << 16);
    tape_reset(&tape, false);
    Tensor *out = op_zloss(&tape, lg, coef / 2.0f);
    const double want = 2.5 * (double)coef * log(2.0) * log(2.0);
    /* float32 ln 3 and scale: relative error ~1e-7; 1e-6 relative is ~10x that */
    ck_assert_msg(fabs((double)out->data[0] - want) <= 1e-6 * want, "zloss %.9g want %.9g",
                  (double)out->data[0], want);
    /* large logits must not overflow: lse of [100, 100] is 100 + ln 2 */
    const float big[4] = {100.0f, 100.0f, 100.0f, 100.0f};
    memcpy(lg->data, big, sizeof big);
    tape_reset(&tape, false);
    out = op_zloss(&tape, lg, 1.0f);
    const double lse = 100.0 + log(2.0);
    ck_assert_msg(fabs((double)out->data[0] - 2.0 * lse * lse) <= 1e-6 * 2.0 * lse * lse,
                  "zloss big %.9g", (double)out->data[0]);
    tape_free(&tape);
    tt_free(lg);
}
END_TEST

static Tensor *build_zloss(Tape *t, Tensor **in, void *ctx) {
    return op_zloss(t, in[0], *(const float *)ctx);
}

START_TEST(test_zloss_grad) {
    Tensor *lg = tt_tensor2(5, 4, TENSOR_PARAM, "logits");
    tt_fill_normal(lg, 70, 1.0f);
    float scale = 0.3f;
    /* smooth float32 scalar f ~ 3: truncation h^2 |f'''| / 6 ~ 1e-5; rounding one ulp of f
     * (2.4e-7) per evaluation / 2h = 1.2e-5 each. Observed worst 3e-5, so 1e-4 absolute
     * plus 1e-3 relative */
    int bad = tt_check_grad(build_zloss, &scale, &lg, 1, 1e-2f, 1e-4, 1e-3, "zloss");
    ck_assert_int_eq(bad, 0);
    tt_free(lg);
}
END_TEST

/* ---------------- a composed MoE layer ---------------- */

typedef struct MoeCtx { int N, C, E, K, cap; } MoeCtx;

/* Route -> gather -> expert GEMM -> combine, with a per-expert capacity (slots beyond it are
 * dropped), plus the two router losses (their backward runs with a zero seed). Routing
 * memory comes from the tape arena, as in layers/. Returns the layer output (N, C). */
static Tensor *build_moe(Tape *t, Tensor **in, void *ctx) {
    const MoeCtx *c = ctx;
    Tensor *x = in[0], *logits = in[1], *w = in[2];
    int32_t *idx = arena_ints(&t->arena, (size_t)c->N * c->K);
    Tensor *gates = op_topk_gate(t, logits, c->K, idx);
    int32_t *count = arena_ints(&t->arena, (size_t)c->E);
    int32_t *offs = arena_ints(&t->arena, (size_t)c->E + 1);
    int32_t *pos = arena_ints(&t->arena, (size_t)c->N * c->K);
    int32_t *slot = arena_ints(&t->arena, (size_t)c->N * c->K);
    memset(count, 0, sizeof(int32_t) * (size_t)c->E);
    for (int j = 0; j < c->N * c->K; j++) {
        pos[j] = count[idx[j]] < c->cap ? count[idx[j]]++ : -1;
    }
    offs[0] = 0;
    for (int e = 0; e < c->E; e++) offs[e + 1] = offs[e] + count[e];
    int32_t *rows = arena_ints(&t->arena, (size_t)offs[c->E] + 1);
    for (int j = 0; j < c->N * c->K; j++) {
        slot[j] = pos[j] < 0 ? -1 : offs[idx[j]] + pos[j];
        if (slot[j] >= 0) rows[slot[j]] = j / c->K;
    }
    Tensor *xs = op_gather_rows(t, x, rows, offs[c->E]);
    Tensor *ys = op_expert_linear(t, xs, w, offs, c->E);
    float f[8];
    for (int e = 0; e < c->E; e++) f[e] = (float)count[e] / (float)(c->N * c->K);
    op_load_balance(t, logits, f, 0.01f);
    op_zloss(t, logits, 0.001f);
    return op_combine(t, ys, gates, slot, c->K);
}

static void moe_inputs(const MoeCtx *c, Tensor **in) {
    const int wshape[3] = {c->E, c->C, c->C};
    in[0] = tt_tensor2(c->N, c->C, TENSOR_PARAM, "x");
    in[1] = tt_tensor2(c->N, c->E, TENSOR_PARAM, "logits");
    in[2] = tt_tensor(3, wshape, TENSOR_PARAM, "W");
    tt_fill_normal(in[0], 80, 1.0f);
    fill_separated(in[1], 81);
    tt_fill_normal(in[2], 82, 0.5f);
}

START_TEST(test_moe_layer_grad) {
    /* N*K = 12 slots over 4 experts with capacity 2: some slots are dropped */
    MoeCtx c = {6, 3, 4, 2, 2};
    Tensor *in[3];
    moe_inputs(&c, in);
    /* separated logits keep the routing fixed under +-h (see fill_separated); the rest is
     * the same smooth softmax/bilinear math as above: 1e-4 absolute plus 1e-3 relative
     * (observed worst error < 1e-5) */
    int bad = tt_check_grad(build_moe, &c, in, 3, 1e-2f, 1e-4, 1e-3, "moe_layer");
    ck_assert_int_eq(bad, 0);
    for (int j = 0; j < 3; j++) tt_free(in[j]);
}
END_TEST

START_TEST(test_no_growth_second_step) {
    MoeCtx c = {6, 3, 4, 2, 2};
    Tensor *in[3];
    moe_inputs(&c, in);
    Tape tape;
    tape_init(&tape, 1 << 12);   /* small chunks so any extra carving shows up as growth */
    size_t grows[2], ggrows[2], used[2], gused[2], calls[2];
    float *first[3];
    for (int j = 0; j < 3; j++) first[j] = malloc(sizeof(float) * in[j]->n);
    for (int step = 0; step < 2; step++) {
        tape_reset(&tape, true);
        size_t c0 = moe_alloc_calls();
        Tensor *out = build_moe(&tape, in, &c);
        tape_backward(&tape, out, NULL);
        calls[step] = moe_alloc_calls() - c0;
        grows[step] = tape.arena.grows;
        ggrows[step] = tape.grad_arena.grows;
        used[step] = arena_used(&tape.arena);
        gused[step] = arena_used(&tape.grad_arena);
        if (step == 0)
            for (int j = 0; j < 3; j++) memcpy(first[j], in[j]->grad, sizeof(float) * in[j]->n);
    }
    /* Parameter grads ACCUMULATE (+=) across steps until the optimizer zeroes them: after
     * two identical steps they are 2x the first (exact up to the summation order inside
     * sgemm with beta = 1: 1e-6 absolute + 1e-6 relative). An op that overwrites fails. */
    for (int j = 0; j < 3; j++) {
        for (size_t e = 0; e < in[j]->n; e++) first[j][e] *= 2.0f;
        ck_assert_msg(tt_max_err(in[j]->grad, first[j], in[j]->n, 1e-6, 1e-6) <= 1.0,
                      "grad of %s does not accumulate", in[j]->name);
        free(first[j]);
    }
    ck_assert_uint_eq(grows[1], grows[0]);
    ck_assert_uint_eq(ggrows[1], ggrows[0]);
    ck_assert_uint_eq(used[1], used[0]);
    ck_assert_uint_eq(gused[1], gused[0]);
    ck_assert_uint_eq(calls[1], 0);
    tape_free(&tape);
    for (int j = 0; j < 3; j++) tt_free(in[j]);
}
END_TEST

/* ---------------- row loops over the cores: bit-identical to the serial loops ----------------
 * Gather and combine split their rows over the cores (pool_parallel_range) once a loop's
 * work reaches POOL_SPLIT_MIN (2^16 streamed elements): each shape below passes it (noted
 * per test). Every test runs at 1 and 2 threads
 * (blas_set_threads), whatever the suite's thread count. The references are the serial
 * loops written out with the same float operations in the same order, so the comparisons
 * are exact (memcmp). Gradients start from random values, not 0: float addition is not
 * associative, so adding a row's terms in another order than the serial loop's changes
 * some roundings and shows here. */

static void fill_grad(Tensor *x, uint64_t seed) {
    MoeRng r;
    rng_seed(&r, seed);
    for (size_t j = 0; j < x->n; j++) x->grad[j] = (float)(2.0 * rng_uniform(&r) - 1.0);
}

static float *random_floats(size_t n, uint64_t seed) {
    float *v = malloc(sizeof(float) * (n ? n : 1));
    MoeRng r;
    rng_seed(&r, seed);
    for (size_t j = 0; j < n; j++) v[j] = (float)(2.0 * rng_uniform(&r) - 1.0);
    return v;
}

#define EXPECT_SAME(a, b, n, what) \
    ck_assert_msg(memcmp((a), (b), sizeof(float) * (size_t)(n)) == 0, "%s differs (%d threads)", \
                  what, th)

/* N = 700 token rows of C = 64; M = 1500 gathered rows (M C = 96,000): 1400 random rows
 * (tokens repeat), then token 5 forty times more (a long run) and token N-1 sixty times;
 * token 3 is never gathered (its gradient must stay as it was). M = 0: empty. */
START_TEST(test_gather_split) {
    const int N = 700, C = 64, M = 1500;
    int32_t *rows = malloc(sizeof(int32_t) * M);
    MoeRng r;
    rng_seed(&r, 81);
    for (int m = 0; m < M; m++) {
        rows[m] = m < 1400 ? (int32_t)(rng_next(&r) % (uint64_t)N) : m < 1440 ? 5 : N - 1;
        if (rows[m] == 3) rows[m] = 4;
    }
    Tensor *x = tt_tensor2(N, C, TENSOR_PARAM, "x");
    tt_fill_normal(x, 82, 1.0f);
    fill_grad(x, 83);
    float *g0 = malloc(sizeof(float) * x->n), *ref = malloc(sizeof(float) * x->n);
    memcpy(g0, x->grad, sizeof(float) * x->n);
    float *dy = random_floats((size_t)M * C, 84);
    /* serial reference: dx[rows[m]] += dy[m], m ascending */
    memcpy(ref, g0, sizeof(float) * x->n);
    for (int m = 0; m < M; m++)
        for (int c = 0; c < C; c++) ref[(size_t)rows[m] * C + c] += dy[(size_t)m * C + c];
    const int keep = blas_threads();
    for (int th = 1; th <= 2; th++) {
        blas_set_threads(th);
        Tape tape;
        tape_init(&tape, 1 << 16);
        memcpy(x->grad, g0, sizeof(float) * x->n);
        tt_poison_arena(&tape, (size_t)M * C + 4096, true);
        Tensor *y = op_gather_rows(&tape, x, rows, M);
        for (int m = 0; m < M; m++)
            EXPECT_SAME(y->data + (size_t)m * C, x->data + (size_t)rows[m] * C, C, "gathered row");
        tape_backward(&tape, y, dy);
        EXPECT_SAME(x->grad, ref, x->n, "gather dx");
        EXPECT_SAME(x->grad + 3 * C, g0 + 3 * C, C, "dx of the row never gathered");
        /* empty */
        memcpy(x->grad, g0, sizeof(float) * x->n);
        tape_reset(&tape, true);
        Tensor *e = op_gather_rows(&tape, x, rows, 0);
        ck_assert_int_eq((int)tensor_rows(e), 0);
        tape_backward(&tape, e, NULL);
        EXPECT_SAME(x->grad, g0, x->n, "dx after an empty gather");
        tape_free(&tape);
    }
    blas_set_threads(keep);
    tt_free(x);
    free(rows);
    free(g0);
    free(ref);
    free(dy);
}
END_TEST

/* N = 600 tokens, K = 3 slots, C = 64 (N K C = 115,200): about 20% of the slots dropped
 * (-1), token 7 lost all three. Case 0 (the MoE dispatch): the kept slots are a random
 * permutation of the M rows of ys. Case 1 (top-p / expert-choice gates pass slot = expert):
 * the kept slots pick from 40 ys rows, each serving ~36 slots, row 39 none. Forward: each
 * row from 0 adds g ys[slot] in k order. Backward: dys[slot] += g dy[n] in (n, k) order and
 * dg += (float) of the double dot, c ascending. N = 0: empty. */
/* op_combine_residual against op_add(r, op_combine(...)) bit for bit, at 1 and 2 threads:
 * output and the grads of r, ys and gates (all starting from random values, so a missing
 * or doubled dr shows), with dropped slots and a ys row shared by several slots; the fused
 * tape keeps N*C floats less (the combine's output is never kept). The fused op's forward
 * adds r to the finished slot sum and its backward adds dy into dr, op_add's operations. */
START_TEST(test_combine_residual_matches) {
    const int N = 500, K = 2, C = 48, M = 300;
    int32_t *slot = malloc(sizeof(int32_t) * N * K);
    MoeRng rng;
    rng_seed(&rng, 401);
    for (int j = 0; j < N * K; j++)
        slot[j] = rng_next(&rng) % 6 == 0 ? -1 : (int32_t)(rng_next(&rng) % (uint64_t)M);
    float *dy = random_floats((size_t)N * C, 402);
    float *res[2][4];
    size_t arena[2];
    const int keep = blas_threads();
    for (int th = 1; th <= 2; th++) {
        blas_set_threads(th);
        for (int fused = 0; fused < 2; fused++) {
            Tensor *r = tt_tensor2(N, C, TENSOR_PARAM, "r");
            Tensor *ys = tt_tensor2(M, C, TENSOR_PARAM, "ys");
            Tensor *g = tt_tensor2(N, K, TENSOR_PARAM, "g");
            tt_fill_normal(r, 403, 2.0f);
            tt_fill_normal(ys, 404, 1.0f);
            tt_fill_uniform(g, 405, 0.0f, 1.0f);
            fill_grad(r, 406);
            fill_grad(ys, 407);
            fill_grad(g, 408);
            Tape t;
            tape_init(&t, 1 << 16);
            tape_reset(&t, true);
            Tensor *y = fused ? op_combine_residual(&t, r, ys, g, slot, K)
                              : op_add(&t, r, op_combine(&t, ys, g, slot, K));
            arena[fused] = arena_used(&t.arena);
            tape_backward(&t, y, dy);
            Tensor *outs[4] = {y, r, ys, g};
            for (int k = 0; k < 4; k++) {
                const float *src = k == 0 ? y->data : outs[k]->grad;
                res[fused][k] = malloc(sizeof(float) * outs[k]->n);
                memcpy(res[fused][k], src, sizeof(float) * outs[k]->n);
            }
            const size_t sz[4] = {y->n, r->n, ys->n, g->n};
            tape_free(&t);
            tt_free(r);
            tt_free(ys);
            tt_free(g);
            if (!fused) continue;
            const char *what[4] = {"output", "dr", "dys", "dgates"};
            for (int k = 0; k < 4; k++) {
                EXPECT_SAME(res[1][k], res[0][k], sz[k], what[k]);
                free(res[0][k]);
                free(res[1][k]);
            }
        }
        ck_assert_msg(arena[1] + sizeof(float) * (size_t)N * C <= arena[0],
                      "arena fused %zu, composition %zu", arena[1], arena[0]);
    }
    blas_set_threads(keep);
    free(slot);
    free(dy);
}
END_TEST

START_TEST(test_combine_split) {
    const int N = 600, K = 3, C = 64;
    int32_t *slot = malloc(sizeof(int32_t) * N * K);
    MoeRng r;
    rng_seed(&r, 91 + (uint64_t)_i);
    int M = 0;
    for (int j = 0; j < N * K; j++)
        slot[j] = (rng_next(&r) % 5 == 0 || j / K == 7) ? -1 : M++;
    int32_t *perm = malloc(sizeof(int32_t) * M);
    for (int m = 0; m < M; m++) perm[m] = m;
    for (int m = M - 1; m > 0; m--) {
        const int i = (int)(rng_next(&r) % (uint64_t)(m + 1));
        const int32_t tmp = perm[m];
        perm[m] = perm[i];
        perm[i] = tmp;
    }
    for (int j = 0; j < N * K; j++)
        if (slot[j] >= 0) slot[j] = _i == 0 ? perm[slot[j]] : perm[slot[j]] % 39;
    if (_i == 1) M = 40;
    Tensor *ys = tt_tensor2(M, C, TENSOR_PARAM, "ys"), *g = tt_tensor2(N, K, TENSOR_PARAM, "g");
    tt_fill_normal(ys, 92, 1.0f);
    tt_fill_uniform(g, 93, 0.0f, 1.0f);
    fill_grad(ys, 94);
    fill_grad(g, 95);
    float *ys0 = malloc(sizeof(float) * ys->n), *g0 = malloc(sizeof(float) * g->n);
    memcpy(ys0, ys->grad, sizeof(float) * ys->n);
    memcpy(g0, g->grad, sizeof(float) * g->n);
    float *dy = random_floats((size_t)N * C, 96);
    float *yref = malloc(sizeof(float) * (size_t)N * C);
    float *dysref = malloc(sizeof(float) * ys->n), *dgref = malloc(sizeof(float) * g->n);
    memcpy(dysref, ys0, sizeof(float) * ys->n);
    memcpy(dgref, g0, sizeof(float) * g->n);
    for (int n = 0; n < N; n++) {
        float *y = yref + (size_t)n * C;
        for (int c = 0; c < C; c++) y[c] = 0.0f;
        for (int k = 0; k < K; k++) {
            const int32_t s = slot[n * K + k];
            if (s < 0) continue;
            const float gk = g->data[n * K + k];
            const float *x = ys->data + (size_t)s * C, *d = dy + (size_t)n * C;
            double dot = 0.0;
            for (int c = 0; c < C; c++) {
                y[c] += gk * x[c];
                dysref[(size_t)s * C + c] += gk * d[c];
                dot += (double)d[c] * (double)x[c];
            }
            dgref[n * K + k] += (float)dot;
        }
    }
    const int keep = blas_threads();
    for (int th = 1; th <= 2; th++) {
        blas_set_threads(th);
        Tape tape;
        tape_init(&tape, 1 << 16);
        memcpy(ys->grad, ys0, sizeof(float) * ys->n);
        memcpy(g->grad, g0, sizeof(float) * g->n);
        tt_poison_arena(&tape, (size_t)N * C + 4096, true);
        Tensor *y = op_combine(&tape, ys, g, slot, K);
        EXPECT_SAME(y->data, yref, (size_t)N * C, "combine forward");
        tape_backward(&tape, y, dy);
        EXPECT_SAME(ys->grad, dysref, ys->n, "combine dys");
        EXPECT_SAME(g->grad, dgref, g->n, "combine dgates");
        for (int k = 0; k < K; k++)   /* token 7: all slots dropped, gates untouched */
            ck_assert_msg(g->grad[7 * K + k] == g0[7 * K + k], "dropped gate changed");
        tape_free(&tape);
    }
    blas_set_threads(keep);
    /* empty: no tokens, no rows */
    Tensor *ys_e = tt_tensor2(0, C, TENSOR_PARAM, "ys0");
    Tensor *g_e = tt_tensor2(0, K, TENSOR_PARAM, "g0");
    Tape tape;
    tape_init(&tape, 1 << 16);
    tape_reset(&tape, true);
    Tensor *e = op_combine(&tape, ys_e, g_e, slot, K);
    ck_assert_int_eq((int)tensor_rows(e), 0);
    tape_backward(&tape, e, NULL);
    tape_free(&tape);
    tt_free(ys_e);
    tt_free(g_e);
    tt_free(ys);
    tt_free(g);
    free(slot);
    free(perm);
    free(ys0);
    free(g0);
    free(dy);
    free(yref);
    free(dysref);
    free(dgref);
}
END_TEST

/* The router losses over N = 3000 rows of E = 8 (not split: see ops_moe.c; the
 * load-balancing backward now reads the forward's softmax rows instead of recomputing
 * them), bit for bit against the serial loops: per row the stable softmax (max subtracted,
 * expf, sum in double, times the float inverse) or logsumexp (exp in double), summed over
 * rows in order. Backward: the load-balancing gradient scale p (f - <f, p>), the z-loss
 * gradient 2 c lse p with p = expf(x - lse). */
START_TEST(test_router_losses_rows) {
    const int N = 3000, E = 8;
    Tensor *lg = tt_tensor2(N, E, TENSOR_PARAM, "logits");
    tt_fill_normal(lg, 98, 2.0f);
    fill_grad(lg, 99);
    float *gr0 = malloc(sizeof(float) * lg->n), *dlb = malloc(sizeof(float) * lg->n);
    float *dz = malloc(sizeof(float) * lg->n), *p = malloc(sizeof(float) * lg->n);
    float *lse = malloc(sizeof(float) * N);
    memcpy(gr0, lg->grad, sizeof(float) * lg->n);
    const float f[8] = {0.2f, 0.1f, 0.05f, 0.15f, 0.1f, 0.1f, 0.2f, 0.1f};
    const float lb_scale = 0.37f, z_scale = 0.013f, seed_lb = 1.5f, seed_z = -0.75f;
    /* load balance */
    double total = 0.0;
    for (int n = 0; n < N; n++) {
        const float *x = lg->data + (size_t)n * E;
        float *pr = p + (size_t)n * E;
        float mx = x[0];
        for (int j = 1; j < E; j++) mx = x[j] > mx ? x[j] : mx;
        double sum = 0.0;
        for (int j = 0; j < E; j++) {
            pr[j] = expf(x[j] - mx);
            sum += (double)pr[j];
        }
        const float inv = (float)(1.0 / sum);
        for (int j = 0; j < E; j++) pr[j] *= inv;
        for (int j = 0; j < E; j++) total += (double)f[j] * (double)pr[j];
    }
    const float lb_ref = (float)((double)lb_scale * total);
    memcpy(dlb, gr0, sizeof(float) * lg->n);
    const float clb = seed_lb * lb_scale;
    for (int n = 0; n < N; n++) {
        const float *pr = p + (size_t)n * E;
        double fp = 0.0;
        for (int j = 0; j < E; j++) fp += (double)f[j] * (double)pr[j];
        for (int j = 0; j < E; j++) dlb[(size_t)n * E + j] += clb * pr[j] * (f[j] - (float)fp);
    }
    /* z-loss */
    total = 0.0;
    for (int n = 0; n < N; n++) {
        const float *x = lg->data + (size_t)n * E;
        float mx = x[0];
        for (int j = 1; j < E; j++) mx = x[j] > mx ? x[j] : mx;
        double sum = 0.0;
        for (int j = 0; j < E; j++) sum += exp((double)(x[j] - mx));
        const double l = (double)mx + log(sum);
        total += l * l;
        lse[n] = (float)l;
    }
    const float z_ref = (float)((double)z_scale * total);
    memcpy(dz, gr0, sizeof(float) * lg->n);
    const float cz = seed_z * z_scale;
    for (int n = 0; n < N; n++) {
        const float a = 2.0f * cz * lse[n];
        for (int j = 0; j < E; j++)
            dz[(size_t)n * E + j] += a * expf(lg->data[(size_t)n * E + j] - lse[n]);
    }
    const int keep = blas_threads();
    for (int th = 1; th <= 2; th++) {
        blas_set_threads(th);
        Tape tape;
        tape_init(&tape, 1 << 16);
        memcpy(lg->grad, gr0, sizeof(float) * lg->n);
        tt_poison_arena(&tape, (size_t)N * E + 4096, true);
        Tensor *out = op_load_balance(&tape, lg, f, lb_scale);
        EXPECT_SAME(out->data, &lb_ref, 1, "load-balancing loss");
        tape_backward(&tape, out, &seed_lb);
        EXPECT_SAME(lg->grad, dlb, lg->n, "load-balancing gradient");
        memcpy(lg->grad, gr0, sizeof(float) * lg->n);
        tt_poison_arena(&tape, (size_t)N * E + 4096, true);
        out = op_zloss(&tape, lg, z_scale);
        EXPECT_SAME(out->data, &z_ref, 1, "z-loss");
        tape_backward(&tape, out, &seed_z);
        EXPECT_SAME(lg->grad, dz, lg->n, "z-loss gradient");
        tape_free(&tape);
    }
    blas_set_threads(keep);
    tt_free(lg);
    free(gr0);
    free(dlb);
    free(dz);
    free(p);
    free(lse);
}
END_TEST

static Suite *ops_moe_suite(void) {
    Suite *s = suite_create("ops_moe");
    TCase *tc = tcase_create("topk_forward");
    tcase_add_test(tc, test_topk_forward);
    suite_add_tcase(s, tc);
    tc = tcase_create("topk_grad");
    tcase_add_loop_test(tc, test_topk_grad, 0, 3);
    suite_add_tcase(s, tc);
    tc = tcase_create("topk_bias");
    tcase_add_test(tc, test_topk_bias_forward);
    tcase_add_loop_test(tc, test_topk_bias_grad, 0, 3);
    suite_add_tcase(s, tc);
    tc = tcase_create("gather_rows");
    tcase_add_test(tc, test_gather);
    suite_add_tcase(s, tc);
    tc = tcase_create("combine");
    tcase_add_test(tc, test_combine);
    tcase_add_test(tc, test_combine_residual_matches);
    suite_add_tcase(s, tc);
    tc = tcase_create("expert_linear");
    tcase_add_loop_test(tc, test_expert_linear, 0,
                        (int)(sizeof k_exp_cases / sizeof k_exp_cases[0]));
    tcase_add_test(tc, test_expert_linear_frozen);
    suite_add_tcase(s, tc);
    tc = tcase_create("swiglu_expert_linear");
    tcase_add_loop_test(tc, test_swiglu_expert_forward, 0,
                        (int)(sizeof k_exp_cases / sizeof k_exp_cases[0]));
    tcase_add_loop_test(tc, test_swiglu_expert_grad, 0,
                        (int)(sizeof k_exp_cases / sizeof k_exp_cases[0]));
    tcase_add_test(tc, test_swiglu_expert_matches_composition);
    suite_add_tcase(s, tc);
    tc = tcase_create("gather_expert_up");
    tcase_add_loop_test(tc, test_gather_expert_up_forward, 0,
                        (int)(sizeof k_up_cases / sizeof k_up_cases[0]));
    tcase_add_loop_test(tc, test_gather_expert_up_grad, 0,
                        (int)(sizeof k_up_cases / sizeof k_up_cases[0]));
    tcase_add_test(tc, test_gather_expert_up_matches_composition);
    suite_add_tcase(s, tc);
    tc = tcase_create("load_balance");
    tcase_add_test(tc, test_load_balance_values);
    tcase_add_test(tc, test_load_balance_copies_f);
    tcase_add_test(tc, test_load_balance_grad);
    suite_add_tcase(s, tc);
    tc = tcase_create("zloss");
    tcase_add_test(tc, test_zloss_value);
    tcase_add_test(tc, test_zloss_grad);
    suite_add_tcase(s, tc);
    tc = tcase_create("moe_layer_grad");
    tcase_add_test(tc, test_moe_layer_grad);
    suite_add_tcase(s, tc);
    tc = tcase_create("no_alloc_and_accumulate");
    tcase_add_test(tc, test_no_growth_second_step);
    suite_add_tcase(s, tc);
    tc = tcase_create("split_bit_identical");
    tcase_add_test(tc, test_gather_split);
    tcase_add_loop_test(tc, test_combine_split, 0, 2);
    tcase_add_test(tc, test_router_losses_rows);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    SRunner *sr = srunner_create(ops_moe_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
