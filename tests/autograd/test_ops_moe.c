/* test_ops_moe.c: the top-k gate and the combine of autograd/ops_moe.c: the gate (with and
 * without a selection bias) against a naive double-precision reference and central
 * differences, the combine against a reference and central differences, op_combine_residual
 * bit for bit against op_add(r, op_combine(...)), the combine's rows split over the cores
 * at 1 and 2 threads bit for bit against the serial loops (dropped slots, shared rows,
 * empty inputs); and a composed MoE layer (route, gather, expert GEMM, combine): central
 * differences and no allocation after the first step.
 */
#include "ops_moe_test.h"

#include "autograd/blas.h"
#include "core/pool.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

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


/* N = 600 tokens, K = 3 slots, C = 64 (N K C = 115,200): about 20% of the slots dropped
 * (-1), token 7 lost all three. Case 0 (the MoE dispatch): the kept slots are a random
 * permutation of the M rows of ys. Case 1 (top-p / expert-choice gates pass slot = expert):
 * the kept slots pick from 40 ys rows, each serving ~36 slots, row 39 none. Forward: each
 * row from 0 adds g ys[slot] in k order. Backward: dys[slot] += g dy[n] in (n, k) order and
 * dg += (float) of the double dot, c ascending. N = 0: empty. */
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


/* ---------------- suite */

static Suite *ops_moe_suite(void) {
    Suite *s = suite_create("ops_moe");
    TCase *tc;
    tc = tcase_create("topk_forward");
    tcase_add_test(tc, test_topk_forward);
    suite_add_tcase(s, tc);
    tc = tcase_create("topk_grad");
    tcase_add_loop_test(tc, test_topk_grad, 0, 3);
    suite_add_tcase(s, tc);
    tc = tcase_create("topk_bias");
    tcase_add_test(tc, test_topk_bias_forward);
    tcase_add_loop_test(tc, test_topk_bias_grad, 0, 3);
    suite_add_tcase(s, tc);
    tc = tcase_create("combine");
    tcase_add_test(tc, test_combine);
    tcase_add_test(tc, test_combine_residual_matches);
    suite_add_tcase(s, tc);
    tc = tcase_create("moe_layer_grad");
    tcase_add_test(tc, test_moe_layer_grad);
    suite_add_tcase(s, tc);
    tc = tcase_create("no_alloc_and_accumulate");
    tcase_add_test(tc, test_no_growth_second_step);
    suite_add_tcase(s, tc);
    tc = tcase_create("split_bit_identical");
    tcase_add_loop_test(tc, test_combine_split, 0, 2);
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
