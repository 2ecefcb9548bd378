/* test_ops_route_topk.c: the top-k routing variants (autograd/ops_route_topk.c:
 * op_topk_route) and the load-balancing loss with per-sequence f and sigmoid affinities
 * (autograd/ops_router_loss.c: op_load_balance_rows).
 * - a hand-computed group-limited case (the best single expert lies in a group whose top-2
 *   sum loses, so group-limited routing must skip it);
 * - forward against a naive double-precision reference written here (affinities, group
 *   scores by sorting each group, repeated strict-max selection, gates by the definition),
 *   over softmax / sigmoid, with and without groups, bias and scale;
 * - softmax, scale 1, no groups: equal to op_topk_gate_bias bit for bit;
 * - backward against central finite differences on inputs whose selection provably does not
 *   change within the step (the margin is computed and asserted);
 * - op_load_balance_rows against its formula computed here, and its gradient by finite
 *   differences.
 */
#include "autograd/blas.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { MAXE = 16 };

static Tape *new_tape(void) {
    Tape *t = malloc(sizeof *t);
    tape_init(t, 1 << 16);
    return t;
}

static void free_tape(Tape *t) {
    tape_free(t);
    free(t);
}

static double sig(double x) { return 1.0 / (1.0 + exp(-x)); }

/* ---------------- naive reference of op_topk_route ---------------- */

/* One row h (E): idx (K) and gates (K) by the definition in ops.h, in double. Returns the
 * selection margin: the smallest gap, in selection-score units, between a kept and a
 * dropped candidate (group scores and the K-th vs the best left-out allowed expert) or
 * between consecutive picks (their order is the slots' order). */
static double route_ref(const float *h, int E, const TopkRoute *r, int32_t *idx, float *gates) {
    double sel[MAXE], a[MAXE];
    int ok[MAXE];
    for (int e = 0; e < E; e++) {
        a[e] = r->sigmoid ? sig((double)h[e]) : (double)h[e];
        sel[e] = a[e] + (r->bias ? (double)r->bias[e] : 0.0);
        ok[e] = 1;
    }
    double margin = 1e9;
    if (r->topk_groups > 0) {
        const int G = r->n_groups, Eg = E / G;
        double m = sel[0], gs[MAXE];
        for (int e = 1; e < E; e++) m = sel[e] > m ? sel[e] : m;
        for (int g = 0; g < G; g++) {
            double v[MAXE];   /* the group's scores sorted descending */
            for (int j = 0; j < Eg; j++) v[j] = sel[g * Eg + j];
            for (int i = 1; i < Eg; i++)
                for (int j = i; j > 0 && v[j] > v[j - 1]; j--) {
                    double tmp = v[j];
                    v[j] = v[j - 1];
                    v[j - 1] = tmp;
                }
            const int top = Eg < 2 ? Eg : 2;
            gs[g] = 0.0;
            for (int j = 0; j < top; j++) gs[g] += r->sigmoid ? v[j] : exp(v[j] - m);
        }
        int gk[MAXE] = {0};
        for (int k = 0; k < r->topk_groups; k++) {
            int best = -1;
            for (int g = 0; g < G; g++)
                if (!gk[g] && (best < 0 || gs[g] > gs[best])) best = g;
            gk[best] = 1;
        }
        for (int g = 0; g < G; g++)
            for (int q = 0; q < G; q++)
                if (gk[g] && !gk[q]) margin = fmin(margin, gs[g] - gs[q]);
        for (int e = 0; e < E; e++) ok[e] = gk[e / Eg];
    }
    int used[MAXE] = {0};
    for (int k = 0; k < r->K; k++) {
        int best = -1;
        for (int e = 0; e < E; e++)
            if (ok[e] && !used[e] && (best < 0 || sel[e] > sel[best])) best = e;
        used[best] = 1;
        idx[k] = best;
    }
    for (int e = 0; e < E; e++)
        if (ok[e] && !used[e]) margin = fmin(margin, sel[idx[r->K - 1]] - sel[e]);
    for (int k = 0; k + 1 < r->K; k++)   /* the slots' order is part of the output */
        margin = fmin(margin, sel[idx[k]] - sel[idx[k + 1]]);
    double sum = 0.0, w[MAXE];
    for (int k = 0; k < r->K; k++) {
        w[k] = r->sigmoid ? a[idx[k]] : exp((double)h[idx[k]]);
        sum += w[k];
    }
    for (int k = 0; k < r->K; k++) gates[k] = (float)((double)r->scale * w[k] / sum);
    return margin;
}

static double logit(double p) { return log(p / (1.0 - p)); }

/* Sigmoid affinities by group of 2: (0.9, 0.1) sum 1.0, (0.6, 0.6) 1.2, (0.55, 0.55) 1.1,
 * (0.2, 0.2) 0.4. Two groups kept: 1 and 2; K = 3 takes 2, 3 (0.6, tie -> lower index)
 * then 4 (0.55), never expert 0 (0.9, the best alone). Gates 2.5 x (0.6, 0.6, 0.55) / 1.75.
 * Without groups: 0 (0.9), 2, 3. */
START_TEST(test_groups_hand) {
    const int E = 8;
    const double p[8] = {0.9, 0.1, 0.6, 0.6, 0.55, 0.55, 0.2, 0.2};
    Tensor *h = tt_tensor2(1, E, TENSOR_CONST, "h");
    for (int e = 0; e < E; e++) h->data[e] = (float)logit(p[e]);
    Tape *t = new_tape();
    int32_t idx[3];
    TopkRoute r = {.K = 3, .sigmoid = true, .scale = 2.5f, .n_groups = 4, .topk_groups = 2};
    Tensor *g = op_topk_route(t, h, &r, idx);
    const int32_t want[3] = {2, 3, 4};
    const double wg[3] = {2.5 * 0.6 / 1.75, 2.5 * 0.6 / 1.75, 2.5 * 0.55 / 1.75};
    for (int k = 0; k < 3; k++) {
        ck_assert_int_eq(idx[k], want[k]);
        /* sigmoid of a float logit in float: ~1e-7 relative per affinity */
        ck_assert_msg(fabs((double)g->data[k] - wg[k]) <= 1e-6, "gate %d = %g, want %g", k,
                      (double)g->data[k], wg[k]);
    }
    tape_reset(t, false);
    r.topk_groups = 0;
    op_topk_route(t, h, &r, idx);
    ck_assert_int_eq(idx[0], 0);
    ck_assert_int_eq(idx[1], 2);
    ck_assert_int_eq(idx[2], 3);
    free_tape(t);
    tt_free(h);
}
END_TEST

/* Forward tolerance: float sigmoid / exp against double on O(1) logits, a few eps_f32 per
 * value; 1e-6 absolute + 1e-5 relative is 10x that, far below a wrong pick. */
#define FWD_ATOL 1e-6
#define FWD_RTOL 1e-5

START_TEST(test_route_forward) {
    enum { N = 64, E = 12 };
    Tensor *h = tt_tensor2(N, E, TENSOR_CONST, "h");
    tt_fill_normal(h, 11, 1.5f);
    float bias[E];
    for (int e = 0; e < E; e++) bias[e] = 0.05f * (float)((e * 7) % 5 - 2);
    Tape *t = new_tape();
    int32_t idx[N * 6], iref[6];
    float gref[6];
    const int Gs[3] = {0, 3, 4}, TGs[3] = {0, 2, 2};
    int cases = 0;
    for (int sg = 0; sg < 2; sg++)
        for (int gi = 0; gi < 3; gi++)
            for (int b = 0; b < 2; b++) {
                TopkRoute r = {.K = gi == 2 ? 4 : 5, .sigmoid = sg, .scale = b ? 2.5f : 1.0f,
                               .n_groups = Gs[gi], .topk_groups = TGs[gi],
                               .bias = b ? bias : NULL};
                tape_reset(t, false);
                Tensor *g = op_topk_route(t, h, &r, idx);
                for (int n = 0; n < N; n++) {
                    const double mg = route_ref(h->data + n * E, E, &r, iref, gref);
                    if (mg < 1e-5) continue;   /* a float-level tie: either pick is right */
                    for (int k = 0; k < r.K; k++) {
                        ck_assert_msg(idx[n * r.K + k] == iref[k],
                                      "sig %d G %d bias %d row %d slot %d: %d vs %d", sg,
                                      Gs[gi], b, n, k, idx[n * r.K + k], iref[k]);
                        ck_assert_msg(fabs((double)g->data[n * r.K + k] - (double)gref[k]) <=
                                          FWD_ATOL + FWD_RTOL * fabs((double)gref[k]),
                                      "gate row %d slot %d", n, k);
                    }
                    cases++;
                }
            }
    ck_assert_int_gt(cases, 12 * N - 12);   /* nearly every row was compared */
    /* the default case is op_topk_gate_bias bit for bit */
    TopkRoute r = {.K = 3, .scale = 1.0f, .bias = bias};
    int32_t idx2[N * 3];
    tape_reset(t, false);
    Tensor *a = op_topk_route(t, h, &r, idx);
    Tensor *b = op_topk_gate_bias(t, h, bias, 3, idx2);
    ck_assert(memcmp(idx, idx2, sizeof(int32_t) * N * 3) == 0);
    ck_assert(memcmp(a->data, b->data, sizeof(float) * N * 3) == 0);
    free_tape(t);
    tt_free(h);
}
END_TEST

/* ---------------- backward ---------------- */

typedef struct RouteCtx { TopkRoute r; int32_t *idx; } RouteCtx;

static Tensor *build_route(Tape *t, Tensor **in, void *ctx) {
    RouteCtx *c = ctx;
    return op_topk_route(t, in[0], &c->r, c->idx);
}

/* cases: 0 softmax scale 2 groups; 1 sigmoid; 2 sigmoid scale 2.5 groups + bias */
START_TEST(test_route_grad) {
    enum { N = 6, E = 8 };
    static const float bias[E] = {0.02f, -0.03f, 0.01f, 0.0f, -0.01f, 0.03f, -0.02f, 0.0f};
    RouteCtx c = {.r = {.K = 3, .sigmoid = _i > 0, .scale = _i == 1 ? 1.0f : _i == 0 ? 2.0f
                                                                                    : 2.5f,
                        .n_groups = _i != 1 ? 4 : 0, .topk_groups = _i != 1 ? 2 : 0,
                        .bias = _i == 2 ? bias : NULL}};
    Tensor *h = tt_tensor2(N, E, TENSOR_PARAM, "h");
    /* the first seed whose rows all keep their selection under the FD step: a step of 1e-3
     * moves a logit by 1e-3 (a sigmoid by < 2.5e-4, a group's softmax score by < 2e-3 of
     * its value); a margin of 5e-3 keeps every choice fixed (searched, then asserted) */
    int32_t idx[N * 3], iref[3];
    float gref[3];
    double margin = 0.0;
    for (uint64_t seed = 1; seed < 200 && margin <= 5e-3; seed++) {
        tt_fill_normal(h, seed, 1.2f);
        margin = 1e9;
        for (int n = 0; n < N; n++)
            margin = fmin(margin, route_ref(h->data + n * E, E, &c.r, iref, gref));
    }
    ck_assert_msg(margin > 5e-3, "no test data far from a switch");
    c.idx = idx;
    /* h = 1e-3: truncation h^2 |g'''| / 6 ~ 1e-7; rounding eps_f32 |f| / h ~ 1e-4 on a sum
     * of 18 weighted gates of size <= 2.5: 3e-4 absolute + 1e-3 relative */
    int bad = tt_check_grad(build_route, &c, &h, 1, 1e-3f, 3e-4, 1e-3, "topk_route");
    ck_assert_msg(bad == 0, "case %d: %d mismatches", _i, bad);
    tt_free(h);
}
END_TEST

/* ---------------- load balance with rows and sigmoid ---------------- */

typedef struct LbCtx { const float *f; int rows; bool sigmoid; float scale; } LbCtx;

static Tensor *build_lb(Tape *t, Tensor **in, void *ctx) {
    LbCtx *c = ctx;
    return op_load_balance_rows(t, in[0], c->f, c->rows, c->sigmoid, c->scale);
}

/* out = scale sum_n sum_i f[n / rows, i] q_ni with q the softmax or normalised sigmoid,
 * computed here in double; then the gradient by finite differences. */
START_TEST(test_load_balance_rows) {
    enum { N = 12, E = 5, ROWS = 4 };
    const bool sigmoid = _i == 1;
    Tensor *x = tt_tensor2(N, E, TENSOR_PARAM, "x");
    tt_fill_normal(x, 5 + (uint64_t)_i, 1.3f);
    float f[(N / ROWS) * E];
    for (int j = 0; j < (N / ROWS) * E; j++) f[j] = (float)((j * 5 + 3) % 7) / 10.0f;
    const float scale = 0.7f;
    double want = 0.0;
    for (int n = 0; n < N; n++) {
        double q[E], z = 0.0;
        for (int i = 0; i < E; i++) {
            q[i] = sigmoid ? sig((double)x->data[n * E + i]) : exp((double)x->data[n * E + i]);
            z += q[i];
        }
        for (int i = 0; i < E; i++) want += (double)f[(n / ROWS) * E + i] * q[i] / z;
    }
    want *= (double)scale;
    Tape *t = new_tape();
    Tensor *out = op_load_balance_rows(t, x, f, ROWS, sigmoid, scale);
    /* float affinities summed in double: 1e-6 relative */
    ck_assert_msg(fabs((double)out->data[0] - want) <= 1e-6 * fabs(want), "%g vs %g",
                  (double)out->data[0], want);
    free_tape(t);
    LbCtx c = {f, ROWS, sigmoid, scale};
    /* smooth in x: h = 1e-3, truncation ~1e-7, rounding eps_f32 |out| / h ~ 1e-4 (|out|
     * ~ 2): 3e-4 absolute + 1e-3 relative */
    int bad = tt_check_grad(build_lb, &c, &x, 1, 1e-3f, 3e-4, 1e-3, "load_balance_rows");
    ck_assert_int_eq(bad, 0);
    tt_free(x);
}
END_TEST

static Suite *ops_route_topk_suite(void) {
    Suite *s = suite_create("ops_route_topk");
    TCase *tc = tcase_create("forward");
    tcase_add_test(tc, test_groups_hand);
    tcase_add_test(tc, test_route_forward);
    suite_add_tcase(s, tc);
    tc = tcase_create("backward");
    tcase_add_loop_test(tc, test_route_grad, 0, 3);
    suite_add_tcase(s, tc);
    tc = tcase_create("load_balance_rows");
    tcase_add_loop_test(tc, test_load_balance_rows, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    SRunner *sr = srunner_create(ops_route_topk_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
