/* test_ops_route.c: the router gate ops of moe.router (autograd/ops_route.c): top-p
 * (dynamic) gating and expert-choice gating; and the router entropy penalty that goes with
 * top-p (autograd/ops_router_loss.c).
 * - forward against naive double-precision references written here (sort by probability,
 *   repeated selection per expert column) and hand-computed cases (ties, caps);
 * - the defining properties: top-p routes a mass >= p with the fewest experts (dropping the
 *   last one falls below p) and never more than the cap; expert choice gives every expert
 *   exactly its capacity (all N tokens when the capacity exceeds N);
 * - backward against central finite differences, on inputs whose selection provably does
 *   not change within the finite-difference step (checked, not assumed);
 * - no allocation after the first step, and grads accumulate.
 */
#include "autograd/blas.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------- naive references ---------------- */

/* p (E) = softmax(x) in double. */
static void softmax_ref(const float *x, int E, double *p) {
    double m = (double)x[0], z = 0.0;
    for (int e = 1; e < E; e++) m = (double)x[e] > m ? (double)x[e] : m;
    for (int e = 0; e < E; e++) z += exp((double)x[e] - m);
    for (int e = 0; e < E; e++) p[e] = exp((double)x[e] - m) / z;
}

/* Top-p by definition: sort experts by probability (stable selection: the lower index wins
 * a tie), take them until the running sum reaches top_p, at most kmax. Returns the count;
 * idx/gates (kmax) padded with -1 / 0. */
static int topp_ref(const float *h, int E, double top_p, int kmax, int32_t *idx, float *gates) {
    double p[16];
    int used[16] = {0};
    softmax_ref(h, E, p);
    double mass = 0.0;
    int k = 0;
    while (k < kmax && mass < top_p) {
        int best = -1;
        for (int e = 0; e < E; e++)
            if (!used[e] && (best < 0 || p[e] > p[best])) best = e;
        used[best] = 1;
        idx[k] = best;
        gates[k] = (float)p[best];
        mass += p[best];
        k++;
    }
    for (int j = k; j < kmax; j++) {
        idx[j] = -1;
        gates[j] = 0.0f;
    }
    return k;
}

/* Expert choice by definition: S = softmax rows; expert e takes, cap times, the untaken
 * token with the largest S[., e] (strict '>' keeps the lower token index on ties). */
static void ec_ref(const float *h, int N, int E, int cap, int32_t *idx, float *gates) {
    double *S = calloc((size_t)N * E, sizeof(double));
    int *taken = calloc((size_t)N, sizeof(int));
    for (int n = 0; n < N; n++) softmax_ref(h + (size_t)n * E, E, S + (size_t)n * E);
    for (int j = 0; j < N * E; j++) {
        idx[j] = -1;
        gates[j] = 0.0f;
    }
    for (int e = 0; e < E; e++) {
        memset(taken, 0, sizeof(int) * (size_t)N);
        for (int r = 0; r < cap && r < N; r++) {
            int best = -1;
            for (int n = 0; n < N; n++)
                if (!taken[n] && (best < 0 || S[n * E + e] > S[best * E + e])) best = n;
            taken[best] = 1;
            idx[best * E + e] = e;
            gates[best * E + e] = (float)S[best * E + e];
        }
    }
    free(S);
    free(taken);
}

/* Forward tolerance: float32 softmax (float exp, double sum) against double on O(1) logits:
 * a few eps_f32 (6e-8) relative per value; 1e-6 absolute + 1e-5 relative is 10x above that
 * and far below a wrong pick (gates differ by >= 1e-2 between experts in these tests). */
#define FWD_ATOL 1e-6
#define FWD_RTOL 1e-5

static Tape *new_tape(void) {
    Tape *t = malloc(sizeof *t);
    tape_init(t, 1 << 16);
    return t;
}

static void free_tape(Tape *t) {
    tape_free(t);
    free(t);
}

/* ---------------- top-p: forward and the defining property ---------------- */

START_TEST(test_topp_hand) {
    /* p = (0.4, 0.3, 0.2, 0.1) from logits ln 4, ln 3, ln 2, ln 1 (permuted), and a row of
     * four equal logits (p = 1/4 each, exact in float). */
    const int E = 4;
    Tensor *h = tt_tensor2(2, E, TENSOR_CONST, "h");
    const float v[8] = {logf(2.0f), logf(4.0f), 0.0f, logf(3.0f), 0.5f, 0.5f, 0.5f, 0.5f};
    memcpy(h->data, v, sizeof v);
    Tape *t = new_tape();
    int32_t idx[2 * 4];
    /* 0.35: the top expert alone (0.4); 0.65: two (0.4 + 0.3); 0.75: three (0.9).
     * tie row: 0.5 = 1/4 + 1/4 exactly: two experts, lower indices first. */
    struct { float p; int n0; int32_t want0[4]; int n1; int32_t want1[4]; } cs[] = {
        {0.35f, 1, {1, -1, -1, -1}, 2, {0, 1, -1, -1}},
        {0.65f, 2, {1, 3, -1, -1}, 3, {0, 1, 2, -1}},
        {0.75f, 3, {1, 3, 0, -1}, 3, {0, 1, 2, -1}},
        {1.0f, 4, {1, 3, 0, 2}, 4, {0, 1, 2, 3}},
    };
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        tape_reset(t, false);
        Tensor *g = op_topp_gate(t, h, cs[c].p, E, idx);
        ck_assert_int_eq(tensor_cols(g), E);
        for (int k = 0; k < E; k++) {
            ck_assert_msg(idx[k] == cs[c].want0[k], "p %g row 0 slot %d: %d", (double)cs[c].p, k,
                          idx[k]);
            ck_assert_msg(idx[E + k] == cs[c].want1[k], "p %g row 1 slot %d: %d",
                          (double)cs[c].p, k, idx[E + k]);
        }
        /* gates are the probabilities themselves (not renormalised) */
        const float p0[4] = {0.2f, 0.4f, 0.1f, 0.3f};
        for (int k = 0; k < E; k++) {
            const float want = idx[k] >= 0 ? p0[idx[k]] : 0.0f;
            ck_assert_msg(fabsf(g->data[k] - want) <= 1e-6f, "gate %d = %g, want %g", k,
                          (double)g->data[k], (double)want);
            const float w1 = idx[E + k] >= 0 ? 0.25f : 0.0f;
            ck_assert_msg(fabsf(g->data[E + k] - w1) <= 1e-7f, "tie gate %d", k);
        }
    }
    /* the cap: p = 0.9 with at most 2 experts stops at 2 (mass 0.7 < 0.9) */
    int32_t idx2[2 * 2];
    tape_reset(t, false);
    Tensor *g = op_topp_gate(t, h, 0.9f, 2, idx2);
    ck_assert_int_eq(idx2[0], 1);
    ck_assert_int_eq(idx2[1], 3);
    ck_assert_msg(fabsf(g->data[0] + g->data[1] - 0.7f) <= 1e-6f, "capped mass");
    free_tape(t);
    tt_free(h);
}
END_TEST

START_TEST(test_topp_property) {
    /* Random rows (logits N(0, 1.5^2)), several p and caps: the op equals the reference and
     * every row satisfies the definition. */
    enum { N = 40, E = 6 };
    Tensor *h = tt_tensor2(N, E, TENSOR_CONST, "h");
    tt_fill_normal(h, 7, 1.5f);
    Tape *t = new_tape();
    const float ps[4] = {0.2f, 0.5f, 0.8f, 0.95f};
    const int caps[3] = {E, 3, 1};
    int counts_seen[E + 1] = {0};
    for (int pi = 0; pi < 4; pi++)
        for (int ci = 0; ci < 3; ci++) {
            const float top_p = ps[pi];
            const int kmax = caps[ci];
            int32_t idx[N * E], idx_ref[E];
            float g_ref[E];
            tape_reset(t, false);
            Tensor *g = op_topp_gate(t, h, top_p, kmax, idx);
            for (int n = 0; n < N; n++) {
                const int32_t *ix = idx + n * kmax;
                const float *gn = g->data + n * kmax;
                double p[E];
                softmax_ref(h->data + n * E, E, p);
                const int nref = topp_ref(h->data + n * E, E, (double)top_p, kmax, idx_ref, g_ref);
                /* a prefix sum within 1e-6 of p would make the reference ambiguous at float
                 * precision: these seeds have none (checked here, so the test cannot pass
                 * by luck of rounding) */
                double pre = 0.0;
                for (int k = 0; k < nref; k++) {
                    pre += p[idx_ref[k]];
                    ck_assert_msg(fabs(pre - (double)top_p) > 1e-6, "ambiguous test row %d", n);
                }
                int cnt = 0;
                double mass = 0.0, last = 0.0;
                for (int k = 0; k < kmax; k++) {
                    ck_assert_msg(ix[k] == idx_ref[k], "p %g cap %d row %d slot %d: %d vs %d",
                                  (double)top_p, kmax, n, k, ix[k], idx_ref[k]);
                    if (ix[k] < 0) {
                        ck_assert_msg(gn[k] == 0.0f, "unused slot with gate %g", (double)gn[k]);
                        continue;
                    }
                    ck_assert_msg(k == cnt, "unused slot before a used one in row %d", n);
                    ck_assert_msg(fabs((double)gn[k] - (double)g_ref[k]) <=
                                      FWD_ATOL + FWD_RTOL * fabs((double)g_ref[k]),
                                  "gate %d of row %d", k, n);
                    cnt++;
                    last = p[ix[k]];
                    mass += p[ix[k]];
                }
                /* the definition, in exact (double) probabilities */
                ck_assert_msg(cnt >= 1 && cnt <= kmax, "row %d took %d experts", n, cnt);
                /* below the cap the mass reaches p; at the cap it may fall short */
                if (cnt < kmax)
                    ck_assert_msg(mass >= (double)top_p, "row %d: mass %g < p", n, mass);
                ck_assert_msg(mass - last < (double)top_p, "row %d: %d experts are not minimal",
                              n, cnt);
                if (kmax == E) counts_seen[cnt]++;
            }
        }
    /* the data exercises the dynamic part: 1, 2 and 3+ experts all occur */
    ck_assert_int_gt(counts_seen[1], 0);
    ck_assert_int_gt(counts_seen[2], 0);
    ck_assert_int_gt(counts_seen[3] + counts_seen[4] + counts_seen[5] + counts_seen[6], 0);
    free_tape(t);
    tt_free(h);
}
END_TEST

START_TEST(test_topp_nan_row) {
    /* a NaN logit ranks last (as in top-k); the row still routes to valid experts */
    Tensor *h = tt_tensor2(1, 4, TENSOR_CONST, "h");
    const float v[4] = {0.0f, NAN, 1.0f, 0.5f};
    memcpy(h->data, v, sizeof v);
    Tape *t = new_tape();
    int32_t idx[4];
    tape_reset(t, false);
    op_topp_gate(t, h, 0.5f, 4, idx);
    ck_assert_int_eq(idx[0], 2);
    for (int k = 0; k < 4; k++) ck_assert(idx[k] >= -1 && idx[k] < 4);
    free_tape(t);
    tt_free(h);
}
END_TEST

/* ---------------- expert choice: forward and the defining property ---------------- */

START_TEST(test_expert_choice_forward) {
    enum { N = 9, E = 4 };
    Tensor *h = tt_tensor2(N, E, TENSOR_CONST, "h");
    tt_fill_normal(h, 11, 1.0f);
    /* rows 5 and 6 identical: equal scores in every column, so the lower token wins */
    memcpy(h->data + 6 * E, h->data + 5 * E, sizeof(float) * E);
    Tape *t = new_tape();
    const int caps[5] = {1, 2, 3, 9, 12};
    for (int c = 0; c < 5; c++) {
        const int cap = caps[c];
        int32_t idx[N * E], idx_ref[N * E];
        float g_ref[N * E];
        tape_reset(t, false);
        Tensor *g = op_expert_choice_gate(t, h, cap, idx);
        ec_ref(h->data, N, E, cap, idx_ref, g_ref);
        for (int j = 0; j < N * E; j++)
            ck_assert_msg(idx[j] == idx_ref[j], "cap %d: idx[%d] %d vs %d", cap, j, idx[j],
                          idx_ref[j]);
        ck_assert_msg(tt_max_err(g->data, g_ref, (size_t)N * E, FWD_ATOL, FWD_RTOL) <= 1.0,
                      "cap %d: gates differ", cap);
        /* the property: each expert takes exactly its capacity (all N tokens past N) */
        for (int e = 0; e < E; e++) {
            int took = 0;
            for (int n = 0; n < N; n++) took += idx[n * E + e] == e;
            ck_assert_msg(took == (cap < N ? cap : N), "cap %d: expert %d took %d", cap, e, took);
        }
        /* unchosen pairs: gate exactly 0 */
        for (int j = 0; j < N * E; j++)
            if (idx[j] < 0) ck_assert(g->data[j] == 0.0f);
    }
    /* all rows equal: every column ties everywhere, experts take tokens 0 .. cap-1 */
    for (int n = 1; n < N; n++) memcpy(h->data + n * E, h->data, sizeof(float) * E);
    int32_t idx[N * E];
    tape_reset(t, false);
    op_expert_choice_gate(t, h, 3, idx);
    for (int n = 0; n < N; n++)
        for (int e = 0; e < E; e++)
            ck_assert_int_eq(idx[n * E + e], n < 3 ? e : -1);
    free_tape(t);
    tt_free(h);
}
END_TEST

/* ---------------- gradients ---------------- */

typedef struct ToppCtx { float p; int kmax; int32_t *idx; } ToppCtx;

static Tensor *build_topp(Tape *t, Tensor **in, void *ctx) {
    ToppCtx *c = ctx;
    return op_topp_gate(t, in[0], c->p, c->kmax, c->idx);
}

/* How far the rows of h are from a change of the top-p selection: the smallest distance
 * between a prefix mass (probability order) and p, and between the last chosen and the
 * first unchosen probability. A logit step d moves each probability by at most ~d, so the
 * chosen sets stay fixed under finite-difference steps well below this margin. */
static double topp_margin(const Tensor *h, float top_p) {
    const int E = tensor_cols(h);
    double margin = 1e9;
    for (size_t n = 0; n < tensor_rows(h); n++) {
        double p[16];
        int32_t idx[16];
        float g[16];
        softmax_ref(h->data + n * E, E, p);
        topp_ref(h->data + n * E, E, (double)top_p, E, idx, g);
        double pre = 0.0;
        for (int k = 0; k < E && idx[k] >= 0; k++) {
            pre += p[idx[k]];
            margin = fmin(margin, fabs(pre - (double)top_p));
        }
        int cnt = 0;
        while (cnt < E && idx[cnt] >= 0) cnt++;
        for (int e = 0; e < E && cnt < E; e++) {   /* last chosen vs every unchosen */
            int chosen = 0;
            for (int k = 0; k < cnt; k++) chosen |= idx[k] == e;
            if (!chosen) margin = fmin(margin, p[idx[cnt - 1]] - p[e]);
        }
    }
    return margin;
}

/* The same for expert choice: in every column, the gap between the cap-th and the
 * (cap+1)-th largest S. */
static double ec_margin(const Tensor *h, int cap) {
    const int E = tensor_cols(h), N = (int)tensor_rows(h);
    double *S = calloc((size_t)N * E, sizeof(double)), *col = calloc((size_t)N, sizeof(double));
    double gap = 1e9;
    for (int n = 0; n < N; n++) softmax_ref(h->data + (size_t)n * E, E, S + (size_t)n * E);
    for (int e = 0; e < E && cap < N; e++) {
        for (int n = 0; n < N; n++) col[n] = S[n * E + e];
        for (int i = 0; i < N; i++)   /* descending insertion sort */
            for (int j = i; j > 0 && col[j] > col[j - 1]; j--) {
                double tmp = col[j];
                col[j] = col[j - 1];
                col[j - 1] = tmp;
            }
        gap = fmin(gap, col[cap - 1] - col[cap]);
    }
    free(S);
    free(col);
    return gap;
}

START_TEST(test_topp_grad) {
    const int N = 5, E = 5;
    const float ps[3] = {0.3f, 0.6f, 0.85f};
    const uint64_t seeds[3] = {22, 22, 21};   /* chosen for the margin asserted below */
    const float top_p = ps[_i];
    Tensor *h = tt_tensor2(N, E, TENSOR_PARAM, "h");
    tt_fill_normal(h, seeds[_i], 1.2f);
    /* FD step 1e-3 moves a probability by < 1e-3 per perturbed logit; 5e-3 of margin keeps
     * every row's selection fixed (asserted, so a failing gradient cannot hide behind a
     * changed routing) */
    ck_assert_msg(topp_margin(h, top_p) > 5e-3, "test data too close to a switch: %g",
                  topp_margin(h, top_p));
    int32_t idx[5 * 5];
    ToppCtx c = {top_p, E, idx};
    /* h = 1e-3: truncation h^2 |g'''| / 6 ~ 1e-7 (softmax derivatives O(1)); rounding
     * eps_f32 |f| / h ~ 6e-8 * 2 / 1e-3 ~ 1e-4 on a sum of ~25 weighted gates. 3e-4 absolute
     * plus 1e-3 relative. */
    int bad = tt_check_grad(build_topp, &c, &h, 1, 1e-3f, 3e-4, 1e-3, "topp_gate");
    ck_assert_msg(bad == 0, "p %g: %d mismatches", (double)top_p, bad);
    tt_free(h);
}
END_TEST

typedef struct EcCtx { int cap; int32_t *idx; } EcCtx;

static Tensor *build_ec(Tape *t, Tensor **in, void *ctx) {
    EcCtx *c = ctx;
    return op_expert_choice_gate(t, in[0], c->cap, c->idx);
}

START_TEST(test_expert_choice_grad) {
    enum { N = 6, E = 3, CAP = 2 };
    Tensor *h = tt_tensor2(N, E, TENSOR_PARAM, "h");
    tt_fill_normal(h, 32, 1.5f);   /* seed chosen for the margin asserted below */
    /* the selection is fixed under the FD step (< 1e-3 per probability) with this margin */
    ck_assert_msg(ec_margin(h, CAP) > 5e-3, "test data too close to a switch: %g",
                  ec_margin(h, CAP));
    int32_t idx[N * E];
    EcCtx c = {CAP, idx};
    /* same smooth softmax math and step as the top-p check: 3e-4 absolute + 1e-3 relative */
    int bad = tt_check_grad(build_ec, &c, &h, 1, 1e-3f, 3e-4, 1e-3, "expert_choice_gate");
    ck_assert_int_eq(bad, 0);
    tt_free(h);
}
END_TEST

/* ---------------- router entropy ---------------- */

START_TEST(test_router_entropy_value) {
    Tape *t = new_tape();
    Tensor *lg = tt_tensor2(3, 2, TENSOR_CONST, "logits");
    /* rows: [0, ln 3] -> p = (1/4, 3/4), H = ln 4 - (3/4) ln 3; [5, 5] -> H = ln 2;
     * [0, -200] -> p = (1, e^-200 ~ 0): H = 0 up to 200 e^-200, and no NaN from 0 * ln 0 */
    const float v[6] = {0.0f, logf(3.0f), 5.0f, 5.0f, 0.0f, -200.0f};
    memcpy(lg->data, v, sizeof v);
    tape_reset(t, false);
    Tensor *out = op_router_entropy(t, lg, 0.5f);
    const double want = 0.5 * (log(4.0) - 0.75 * log(3.0) + log(2.0));
    /* float32 ln 3 and the float result: ~1e-7 relative; 1e-6 relative is 10x that */
    ck_assert_msg(fabs((double)out->data[0] - want) <= 1e-6 * want, "H %.9g want %.9g",
                  (double)out->data[0], want);
    /* uniform rows over E = 8: H = ln 8 each */
    Tensor *u = tt_tensor2(4, 8, TENSOR_CONST, "u");
    for (size_t j = 0; j < u->n; j++) u->data[j] = -3.0f;
    tape_reset(t, false);
    out = op_router_entropy(t, u, 0.25f);
    ck_assert_msg(fabs((double)out->data[0] - log(8.0)) <= 1e-6 * log(8.0), "uniform %.9g",
                  (double)out->data[0]);
    free_tape(t);
    tt_free(lg);
    tt_free(u);
}
END_TEST

static Tensor *build_entropy(Tape *t, Tensor **in, void *ctx) {
    return op_router_entropy(t, in[0], *(const float *)ctx);
}

START_TEST(test_router_entropy_grad) {
    Tensor *lg = tt_tensor2(5, 4, TENSOR_PARAM, "logits");
    tt_fill_normal(lg, 41, 1.0f);
    lg->data[3] = -30.0f;   /* a near-zero probability: the ln p = x - lse path */
    float scale = 0.3f;
    /* smooth scalar of size ~2: truncation h^2 |f'''| / 6 ~ 2e-5 at h = 1e-2; rounding one
     * ulp of f (2.4e-7) / 2h ~ 1e-5: 1e-4 absolute plus 1e-3 relative */
    int bad = tt_check_grad(build_entropy, &scale, &lg, 1, 1e-2f, 1e-4, 1e-3, "router_entropy");
    ck_assert_int_eq(bad, 0);
    tt_free(lg);
}
END_TEST

/* ---------------- composed: gate -> combine, no allocation after step 1 ---------------- */

/* top-p and expert-choice gates feed op_combine through slot = idx (the expert rows are the
 * experts themselves here, ys (E, C)): unused slots (-1) contribute nothing and get no
 * gradient. */
typedef struct PipeCtx { int router; int32_t *idx; } PipeCtx;

static Tensor *build_pipe(Tape *t, Tensor **in, void *ctx) {
    PipeCtx *c = ctx;
    const int E = tensor_cols(in[0]);
    Tensor *g = c->router == 0 ? op_topp_gate(t, in[0], 0.6f, E, c->idx)
                               : op_expert_choice_gate(t, in[0], 2, c->idx);
    return op_combine(t, in[1], g, c->idx, tensor_cols(g));
}

START_TEST(test_pipe_no_alloc) {
    enum { N = 5, E = 4, C = 3 };
    Tensor *in[2];
    in[0] = tt_tensor2(N, E, TENSOR_PARAM, "h");
    in[1] = tt_tensor2(E, C, TENSOR_PARAM, "ys");
    tt_fill_normal(in[0], 52, 1.0f);   /* seed chosen for the margin asserted below */
    tt_fill_normal(in[1], 53, 1.0f);
    /* routing fixed under the FD step (see the gradient tests) */
    const double margin = _i == 0 ? topp_margin(in[0], 0.6f) : ec_margin(in[0], 2);
    ck_assert_msg(margin > 5e-3, "test data too close to a switch: %g", margin);
    int32_t idx[N * E];
    PipeCtx pc = {_i, idx};
    Tape tape;
    tape_init(&tape, 1 << 12);   /* small chunks: extra carving shows up as growth */
    size_t calls[2], used[2];
    float first[N * E];
    for (int step = 0; step < 2; step++) {
        tape_reset(&tape, true);
        size_t c0 = moe_alloc_calls();
        Tensor *out = build_pipe(&tape, in, &pc);
        tape_backward(&tape, out, NULL);
        calls[step] = moe_alloc_calls() - c0;
        used[step] = arena_used(&tape.arena);
        if (step == 0) memcpy(first, in[0]->grad, sizeof first);
    }
    ck_assert_uint_eq(calls[1], 0);
    ck_assert_uint_eq(used[1], used[0]);
    /* grads accumulate: two identical steps give 2x, up to the order of the float sums
     * (1e-6 absolute + 1e-6 relative); an op that overwrites gives 1x and fails */
    for (int j = 0; j < N * E; j++) first[j] *= 2.0f;
    ck_assert_msg(tt_max_err(in[0]->grad, first, (size_t)N * E, 1e-6, 1e-6) <= 1.0,
                  "dh does not accumulate");
    tape_free(&tape);
    /* bilinear in (gates, ys) after a smooth gate: the tolerances of the gate checks */
    int bad = tt_check_grad(build_pipe, &pc, in, 2, 1e-3f, 3e-4, 1e-3, "gate+combine");
    ck_assert_int_eq(bad, 0);
    tt_free(in[0]);
    tt_free(in[1]);
}
END_TEST

static Suite *ops_route_suite(void) {
    Suite *s = suite_create("ops_route");
    TCase *tc = tcase_create("topp_forward");
    tcase_add_test(tc, test_topp_hand);
    tcase_add_test(tc, test_topp_property);
    tcase_add_test(tc, test_topp_nan_row);
    suite_add_tcase(s, tc);
    tc = tcase_create("expert_choice_forward");
    tcase_add_test(tc, test_expert_choice_forward);
    suite_add_tcase(s, tc);
    tc = tcase_create("gradients");
    tcase_add_loop_test(tc, test_topp_grad, 0, 3);
    tcase_add_test(tc, test_expert_choice_grad);
    suite_add_tcase(s, tc);
    tc = tcase_create("router_entropy");
    tcase_add_test(tc, test_router_entropy_value);
    tcase_add_test(tc, test_router_entropy_grad);
    suite_add_tcase(s, tc);
    tc = tcase_create("composed");
    tcase_add_loop_test(tc, test_pipe_no_alloc, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    SRunner *sr = srunner_create(ops_route_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
