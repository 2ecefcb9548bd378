/* test_moe_aux.c: the load-balancing loss of the MoE block (layers/moe.h) under each
 * moe.aux_scope and moe.score, against its formula computed here from scratch: logits
 * x Wg^T in double, the top-K experts by sorting, the counts, then
 *   batch     coef E sum_i f_i P_i            f_i = count_i / (N K), P_i = mean_n q_ni
 *   sequence  coef E mean_s sum_i f_si P_si   the same inside each sequence of T tokens
 *             (DeepSeek-V3, arXiv:2412.19437, eqs. 17-20)
 *   global    coef E sum_i F_i P_i            F over the step's micro-batches so far (two
 *             calls here: the second call's F counts both; Qiu et al. 2025)
 * with q = softmax(logits) or, for sigmoid scores, the normalised affinities
 * sigmoid(l_i) / sum_j sigmoid(l_j) (DeepSeek-V3 eq. 19). Tiny sizes; one process (the
 * rank layouts: tests/parallel/test_route_layout.sh).
 */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/blas.h"
#include "layers/moe.h"
#include "testutil.h"

enum { B = 3, T = 4, N = B * T, C = 5, E = 6, K = 2, F = 3 };

typedef struct Block {
    Tensor *x[2], *router, *w1, *w3, *w2;
} Block;

static void block_init(Block *b) {
    for (int i = 0; i < 2; i++) {
        b->x[i] = tt_tensor2(N, C, TENSOR_CONST, "x");
        tt_fill_normal(b->x[i], 41 + (uint64_t)i, 1.0f);
    }
    b->router = tt_tensor2(E, C, TENSOR_CONST, "router");
    tt_fill_normal(b->router, 43, 0.8f);
    const int s13[3] = {E, F, C}, s2[3] = {E, C, F};
    b->w1 = tt_tensor(3, s13, TENSOR_CONST, "w1");
    b->w3 = tt_tensor(3, s13, TENSOR_CONST, "w3");
    b->w2 = tt_tensor(3, s2, TENSOR_CONST, "w2");
    tt_fill_normal(b->w1, 44, 0.3f);
    tt_fill_normal(b->w3, 45, 0.3f);
    tt_fill_normal(b->w2, 46, 0.3f);
}

static void block_free(Block *b) {
    for (int i = 0; i < 2; i++) tt_free(b->x[i]);
    tt_free(b->router);
    tt_free(b->w1);
    tt_free(b->w3);
    tt_free(b->w2);
}

/* Logits l (N, E) of x in double, the affinities q (N, E) and the counts (N, E) 0/1 of the
 * top-K per row; asserts that no row is within 1e-4 of a tie at the K-th place (so the
 * float routing cannot pick differently). */
static void reference(const Block *b, int which, bool sigmoid, double *q, int *chosen) {
    for (int n = 0; n < N; n++) {
        double l[E], z = 0.0;
        for (int e = 0; e < E; e++) {
            l[e] = 0.0;
            for (int c = 0; c < C; c++)
                l[e] += (double)b->x[which]->data[n * C + c] * (double)b->router->data[e * C + c];
        }
        for (int e = 0; e < E; e++) {
            q[n * E + e] = sigmoid ? 1.0 / (1.0 + exp(-l[e])) : exp(l[e]);
            z += q[n * E + e];
        }
        for (int e = 0; e < E; e++) q[n * E + e] /= z;
        double s[E];   /* sorted descending */
        memcpy(s, l, sizeof s);
        for (int i = 1; i < E; i++)
            for (int j = i; j > 0 && s[j] > s[j - 1]; j--) {
                double tmp = s[j];
                s[j] = s[j - 1];
                s[j - 1] = tmp;
            }
        ck_assert_msg(s[K - 1] - s[K] > 1e-4, "test data near a tie in row %d", n);
        for (int e = 0; e < E; e++) chosen[n * E + e] = l[e] >= s[K - 1];
    }
}

static double run(const Block *b, int which, MoeLayerArgs *a, MoeStats *st, Tape *t) {
    tape_reset(t, false);
    Tensor *aux = NULL, *z = NULL;
    moe_forward(t, b->x[which], b->router, b->router, b->w1, b->w3, b->w2, a, NULL, st, &aux,
                &z);
    ck_assert_ptr_nonnull(aux);
    return (double)aux->data[0];
}

/* _i: 0 softmax, 1 sigmoid */
START_TEST(test_aux_scopes) {
    const bool sigmoid = _i == 1;
    const double coef = 0.3;
    Block b;
    block_init(&b);
    Tape t;
    tape_init(&t, 1 << 16);
    MoeStats st;
    moe_stats_init(&st, 1, E);
    MoeLayerArgs a = {.layer = 0, .L = 1, .E = E, .K = K, .F = F, .e_first = 0, .e_local = E,
                      .aux_scale = (float)coef, .score = sigmoid ? MOE_SCORE_SIGMOID
                                                                 : MOE_SCORE_SOFTMAX,
                      .T = T, .step_count = st.count};
    double q[2][N * E];
    int ch[2][N * E];
    reference(&b, 0, sigmoid, q[0], ch[0]);
    reference(&b, 1, sigmoid, q[1], ch[1]);

    /* batch */
    double want = 0.0;
    for (int e = 0; e < E; e++) {
        double f = 0.0, P = 0.0;
        for (int n = 0; n < N; n++) {
            f += ch[0][n * E + e];
            P += q[0][n * E + e];
        }
        want += (f / (N * K)) * (P / N);
    }
    want *= coef * E;
    a.aux_scope = MOE_AUX_BATCH;
    double got = run(&b, 0, &a, NULL, &t);
    /* float logits and affinities against double: 1e-5 relative */
    ck_assert_msg(fabs(got - want) <= 1e-5 * want, "batch: %.8g vs %.8g", got, want);
    const double batch = got;

    /* sequence: per sequence, then the mean */
    want = 0.0;
    for (int s = 0; s < B; s++)
        for (int e = 0; e < E; e++) {
            double f = 0.0, P = 0.0;
            for (int n = s * T; n < (s + 1) * T; n++) {
                f += ch[0][n * E + e];
                P += q[0][n * E + e];
            }
            want += (f / (T * K)) * (P / T) / B;
        }
    want *= coef * E;
    a.aux_scope = MOE_AUX_SEQUENCE;
    got = run(&b, 0, &a, NULL, &t);
    ck_assert_msg(fabs(got - want) <= 1e-5 * want, "sequence: %.8g vs %.8g", got, want);
    /* the two scopes differ on this data (else the test could not tell them apart) */
    ck_assert_msg(fabs(got - batch) > 1e-3 * want, "sequence equals batch here");

    /* global: two micro-batches; the statistics accumulate the step's counts */
    a.aux_scope = MOE_AUX_GLOBAL;
    double g[2];
    for (int m = 0; m < 2; m++) g[m] = run(&b, m, &a, &st, &t);
    for (int m = 0; m < 2; m++) {
        want = 0.0;
        for (int e = 0; e < E; e++) {
            double f = 0.0, P = 0.0;
            for (int mm = 0; mm <= m; mm++)
                for (int n = 0; n < N; n++) f += ch[mm][n * E + e];
            for (int n = 0; n < N; n++) P += q[m][n * E + e];
            want += (f / ((m + 1) * N * K)) * (P / N);
        }
        want *= coef * E;
        ck_assert_msg(fabs(g[m] - want) <= 1e-5 * want, "global call %d: %.8g vs %.8g", m,
                      g[m], want);
    }
    ck_assert_msg(fabs(g[0] - batch) <= 1e-6 * batch, "global's first call is batch");

    moe_stats_free(&st);
    tape_free(&t);
    block_free(&b);
}
END_TEST

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    Suite *s = suite_create("moe_aux");
    TCase *tc = tcase_create("scopes");
    tcase_add_loop_test(tc, test_aux_scopes, 0, 2);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
