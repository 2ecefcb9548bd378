/* test_ops_rows.c: the row gathers of autograd/ops_rows.c: op_embedding and
 * op_gather_rows (forward, the scatter-add backward with repeated rows against central
 * differences or by hand) and their copies and scatter-adds split over the cores, at 1 and
 * 2 threads, bit for bit against the serial loops (repeated rows, rows never gathered,
 * empty inputs). Tolerances: ops_test.h; the split checks: ops_moe_test.h.
 */
#include "ops_moe_test.h"
#include "ops_test.h"

#include "autograd/blas.h"
#include "core/pool.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------- embedding ---------------- */

START_TEST(embedding_forward_backward) {
    Tensor *w = rnd2(5, 3, TENSOR_PARAM, "w", 50, -1, 1);
    const int32_t ids[7] = {4, 0, 2, 4, 4, 1, 0}; /* repeats: the scatter-add must accumulate */
    Tape t;
    new_tape(&t, false);
    Tensor *y = op_embedding(&t, w, ids, 7);
    ck_assert_int_eq(y->shape[0], 7);
    ck_assert_int_eq(y->shape[1], 3);
    for (int n = 0; n < 7; n++)
        for (int c = 0; c < 3; c++) EXPECT_EQ(y->data[n * 3 + c], w->data[ids[n] * 3 + c]);
    tape_free(&t);
    EmbCtx c = {ids, 7};
    Tensor *in[1] = {w};
    ck_assert_int_eq(tt_check_grad(b_embedding, &c, in, 1, FD_H, FD_ATOL, FD_RTOL, "embedding"),
                     0);
    /* Row 3 is never looked up: its gradient stays exactly 0. */
    for (int k = 0; k < 3; k++) EXPECT_EQ(w->grad[3 * 3 + k], 0.0f);
    tt_free(w);
}
END_TEST

/* Split over the cores (the copy and the scatter-add, pool_parallel_range; N C = 96,000 >
 * POOL_SPLIT_MIN): N = 1000 positions of C = 96 over V = 50 ids, so ids repeat ~20 times,
 * id 7 at the 300 positions 100..399 (one long run), id 13 never (its gradient row must
 * stay as it was); N = 0 empty. At 1 and 2 threads, bit for bit against the serial loop
 * dw[ids[n]] += dy[n], n ascending, from a random starting gradient: float addition is not
 * associative, so adding a row's terms in another order would change some roundings. */
START_TEST(embedding_split) {
    const int V = 50, N = 1000, C = 96;
    int32_t *ids = malloc(sizeof(int32_t) * N);
    MoeRng r;
    rng_seed(&r, 51);
    for (int n = 0; n < N; n++) {
        ids[n] = n >= 100 && n < 400 ? 7 : (int32_t)(rng_next(&r) % (uint64_t)V);
        if (ids[n] == 13) ids[n] = 12;
    }
    Tensor *w = rnd2(V, C, TENSOR_PARAM, "w", 52, -1, 1);
    float *g0 = malloc(sizeof(float) * w->n), *ref = malloc(sizeof(float) * w->n);
    float *dy = malloc(sizeof(float) * (size_t)N * C);
    for (size_t j = 0; j < w->n; j++) g0[j] = (float)(2.0 * rng_uniform(&r) - 1.0);
    for (size_t j = 0; j < (size_t)N * C; j++) dy[j] = (float)(2.0 * rng_uniform(&r) - 1.0);
    memcpy(ref, g0, sizeof(float) * w->n);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) ref[(size_t)ids[n] * C + c] += dy[(size_t)n * C + c];
    const int keep = blas_threads();
    for (int th = 1; th <= 2; th++) {
        blas_set_threads(th);
        Tape t;
        tape_init(&t, 1 << 16);
        memcpy(w->grad, g0, sizeof(float) * w->n);
        tt_poison_arena(&t, (size_t)N * C + 4096, true);
        Tensor *y = op_embedding(&t, w, ids, N);
        for (int n = 0; n < N; n++)
            ck_assert_msg(memcmp(y->data + (size_t)n * C, w->data + (size_t)ids[n] * C,
                                 sizeof(float) * C) == 0, "row %d (%d threads)", n, th);
        tape_backward(&t, y, dy);
        ck_assert_msg(memcmp(w->grad, ref, sizeof(float) * w->n) == 0,
                      "embedding dW differs from the serial loop (%d threads)", th);
        tape_reset(&t, true);
        Tensor *e = op_embedding(&t, w, ids, 0);
        ck_assert_int_eq((int)tensor_rows(e), 0);
        tape_backward(&t, e, NULL);
        ck_assert_msg(memcmp(w->grad, ref, sizeof(float) * w->n) == 0, "empty lookup wrote");
        tape_free(&t);
    }
    blas_set_threads(keep);
    tt_free(w);
    free(ids);
    free(g0);
    free(ref);
    free(dy);
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

/* ---------------- suite */

static Suite *ops_rows_suite(void) {
    Suite *s = suite_create("ops_rows");
    TCase *tc = tcase_create("embedding");
    tcase_add_test(tc, embedding_forward_backward);
    tcase_add_test(tc, embedding_split);
    suite_add_tcase(s, tc);
    tc = tcase_create("gather_rows");
    tcase_add_test(tc, test_gather);
    tcase_add_test(tc, test_gather_split);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    SRunner *sr = srunner_create(ops_rows_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
