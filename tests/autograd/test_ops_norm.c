/* test_ops_norm.c: normalisation and position, autograd/ops_rmsnorm.c and ops_rope.c:
 * op_rmsnorm (double reference, a hand-computed row, central differences, the rows split
 * over the cores bit for bit) and op_rope / op_rope_inplace (double reference, the
 * rotation's properties, central differences, in place equal to out of place bit for bit)
 * and op_rope_docs (positions restarting at each packed document: double reference,
 * a document rotated as if alone in its sequence bit for bit, central differences).
 * Tolerances: ops_test.h.
 */
#include "ops_test.h"

#include "autograd/blas.h"
#include "core/pool.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------- rmsnorm ---------------- */

START_TEST(rmsnorm_forward_ref) {
    const int shapes[][2] = {{3, 5}, {1, 1}, {4, 17}};
    for (size_t s = 0; s < 3; s++) {
        int N = shapes[s][0], C = shapes[s][1];
        Tensor *x = rnd2(N, C, TENSOR_CONST, "x", 20 + s, -2, 2);
        Tensor *g = rnd2(1, C, TENSOR_CONST, "g", 30 + s, 0.5f, 1.5f);
        Tape t;
        new_tape(&t, false);
        Tensor *y = op_rmsnorm(&t, x, g, 1e-5f);
        float *r = malloc(sizeof(float) * (size_t)N * C);
        ref_rmsnorm(r, x->data, g->data, N, C, (double)1e-5f);
        expect_close(y->data, r, (size_t)N * C, RED_ATOL, RED_RTOL, "rmsnorm forward");
        free(r);
        tape_free(&t);
        tt_free(x);
        tt_free(g);
    }
}
END_TEST

/* Large enough (N*C >= 2^16) that rmsnorm splits its rows over the cores and sums the gain
 * gradient per row range (the suite also runs this with 2 threads): forward, dx and dg
 * against the closed forms in double. Tolerances: forward as RED_* (sums of C = 256 squares
 * in double, then a few float roundings); dx, dg: rtol 1e-4 / atol 1e-5, since dg sums
 * N = 300 float products per element (~300 * 2^-24 ~ 2e-5 relative to sum|terms|). */
START_TEST(rmsnorm_large_split) {
    const int N = 300, C = 256;
    const size_t n = (size_t)N * C;
    Tensor *x = rnd2(N, C, TENSOR_PARAM, "x", 40, -2, 2);
    Tensor *g = rnd2(1, C, TENSOR_PARAM, "g", 41, 0.5f, 1.5f);
    Tape t;
    new_tape(&t, true);
    Tensor *y = op_rmsnorm(&t, x, g, 1e-5f);
    float *ref = malloc(sizeof(float) * n), *dy = malloc(sizeof(float) * n);
    float *rdx = malloc(sizeof(float) * n);
    double *rdg = calloc((size_t)C, sizeof(double));
    ref_rmsnorm(ref, x->data, g->data, N, C, (double)1e-5f);
    expect_close(y->data, ref, n, RED_ATOL, RED_RTOL, "rmsnorm large forward");
    MoeRng rng;
    rng_seed(&rng, 42);
    for (size_t j = 0; j < n; j++) dy[j] = (float)(2.0 * rng_uniform(&rng) - 1.0);
    for (int r = 0; r < N; r++) {
        const float *xr = x->data + (size_t)r * C, *dyr = dy + (size_t)r * C;
        double ss = 0, dot = 0;
        for (int c = 0; c < C; c++) ss += (double)xr[c] * (double)xr[c];
        double rs = 1.0 / sqrt(ss / C + (double)1e-5f);
        for (int c = 0; c < C; c++) dot += (double)dyr[c] * (double)g->data[c] * (double)xr[c];
        for (int c = 0; c < C; c++) {
            rdx[(size_t)r * C + c] =
                (float)(rs * (double)g->data[c] * (double)dyr[c] -
                        (double)xr[c] * rs * rs * rs / C * dot);
            rdg[c] += (double)dyr[c] * (double)xr[c] * rs;
        }
    }
    tape_backward(&t, y, dy);
    expect_close(x->grad, rdx, n, 1e-5, 1e-4, "rmsnorm large dx");
    float *rdgf = malloc(sizeof(float) * (size_t)C);
    for (int c = 0; c < C; c++) rdgf[c] = (float)rdg[c];
    expect_close(g->grad, rdgf, (size_t)C, 1e-5, 1e-4, "rmsnorm large dg");
    tape_free(&t);
    free(ref);
    free(dy);
    free(rdx);
    free(rdg);
    free(rdgf);
    tt_free(x);
    tt_free(g);
}
END_TEST

/* x = [3, 4], g = [1, 1], eps = 0: mean(x^2) = (9 + 16) / 2 = 12.5, rms = sqrt(12.5)
 * = 3.5355339, y = [3, 4] / 3.5355339 = [0.8485281, 1.1313708]. */
START_TEST(rmsnorm_hand) {
    Tensor *x = tt_tensor2(1, 2, TENSOR_CONST, "x"), *g = tt_tensor2(1, 2, TENSOR_CONST, "g");
    x->data[0] = 3.0f;
    x->data[1] = 4.0f;
    g->data[0] = g->data[1] = 1.0f;
    Tape t;
    new_tape(&t, false);
    Tensor *y = op_rmsnorm(&t, x, g, 0.0f);
    EXPECT_NEAR(y->data[0], 0.8485281f, 1e-6f);
    EXPECT_NEAR(y->data[1], 1.1313708f, 1e-6f);
    tape_free(&t);
    tt_free(x);
    tt_free(g);
}
END_TEST

/* rmsnorm's f''' grows like 1/rms^3: inputs in [-1, 1] with C = 5 keep rms >~ 0.3 and the
 * truncation error below ~1e-3, hence atol 2e-3. */
START_TEST(rmsnorm_backward_fd) {
    Tensor *x = rnd2(3, 5, TENSOR_PARAM, "x", 21, -1, 1);
    Tensor *g = rnd2(1, 5, TENSOR_PARAM, "g", 22, 0.5f, 1.5f);
    float eps = 1e-5f;
    Tensor *in[2] = {x, g};
    ck_assert_int_eq(tt_check_grad(b_rmsnorm, &eps, in, 2, FD_H, 2e-3, FD_RTOL, "rmsnorm"), 0);
    tt_free(x);
    tt_free(g);
}
END_TEST

/* ---------------- rope ---------------- */

START_TEST(rope_forward_ref) {
    /* (B, T, nh, D, pos0): odd T and nh, a large position where a float angle would drift. */
    const int cfg[][5] = {{2, 3, 3, 4, 0}, {1, 5, 1, 8, 7}, {1, 2, 2, 6, 100000}};
    for (size_t s = 0; s < 3; s++) {
        int B = cfg[s][0], T = cfg[s][1], nh = cfg[s][2], D = cfg[s][3], pos0 = cfg[s][4];
        Tensor *x = rnd2(B * T, nh * D, TENSOR_CONST, "x", 40 + s, -1, 1);
        Tape t;
        new_tape(&t, false);
        Tensor *y = op_rope(&t, x, B, T, nh, D, 10000.0f, pos0);
        float *r = malloc(sizeof(float) * x->n);
        ref_rope(r, x->data, B, T, nh, D, 10000.0, pos0);
        /* A rotation of O(1) values: cos/sin rounded to float (2^-24) plus two products and a
         * sum: ~4 * 6e-8 absolute; EW tolerances apply. */
        expect_close(y->data, r, x->n, EW_ATOL, EW_RTOL, "rope forward");
        free(r);
        tape_free(&t);
        tt_free(x);
    }
}
END_TEST

/* Position 0 is the identity (cos 0 = 1, sin 0 = 0 exactly); each (i, i+D/2) pair keeps its
 * norm; one element by hand. */
START_TEST(rope_properties) {
    int B = 2, T = 3, nh = 2, D = 4;
    Tensor *x = rnd2(B * T, nh * D, TENSOR_CONST, "x", 41, -1, 1);
    Tape t;
    new_tape(&t, false);
    Tensor *y = op_rope(&t, x, B, T, nh, D, 10000.0f, 0);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < nh * D; c++) {
            size_t j = (size_t)(b * T) * nh * D + c; /* t = 0 row of sequence b */
            EXPECT_EQ(y->data[j], x->data[j]);
        }
    for (int row = 0; row < B * T; row++)
        for (int h = 0; h < nh; h++)
            for (int i = 0; i < D / 2; i++) {
                size_t o = (size_t)row * nh * D + h * D;
                double nx = hypot((double)x->data[o + i], (double)x->data[o + i + D / 2]);
                double ny = hypot((double)y->data[o + i], (double)y->data[o + i + D / 2]);
                ck_assert_msg(fabs(nx - ny) <= 1e-6 + 1e-6 * nx, "norm %g -> %g", nx, ny);
            }

    /* By hand: D = 4, base = 10000, pos0 = 7, x = [1, 2, 3, 4].
     * theta_0 = 7 * 10000^0 = 7 rad; theta_1 = 7 * 10000^(-2/4) = 7/100 = 0.07 rad.
     * y[0] = 1 cos 7 - 3 sin 7 = 0.753902 - 1.970960 = -1.217058
     * y[1] = 2 cos 0.07 - 4 sin 0.07 = 1.995102 - 0.279771 = 1.715331
     * y[2] = 3 cos 7 + 1 sin 7 = 2.261707 + 0.656987 = 2.918694
     * y[3] = 4 cos 0.07 + 2 sin 0.07 = 3.990204 + 0.139886 = 4.130090 */
    tape_reset(&t, false);
    Tensor *x1 = tt_tensor2(1, 4, TENSOR_CONST, "x1");
    for (int j = 0; j < 4; j++) x1->data[j] = (float)(j + 1);
    Tensor *y1 = op_rope(&t, x1, 1, 1, 1, 4, 10000.0f, 7);
    EXPECT_NEAR(y1->data[0], -1.217058f, 2e-6f);
    EXPECT_NEAR(y1->data[1], 1.715331f, 2e-6f);
    EXPECT_NEAR(y1->data[2], 2.918694f, 2e-6f);
    EXPECT_NEAR(y1->data[3], 4.130090f, 2e-6f);
    EXPECT_NEAR(y1->data[1], (float)(2 * cos(0.07) - 4 * sin(0.07)), 1e-6f);
    tape_free(&t);
    tt_free(x1);
    tt_free(x);
}
END_TEST

START_TEST(rope_backward_fd) {
    RopeCtx c = {2, 3, 1, 4, 5, 10000.0f};
    Tensor *x = rnd2(c.B * c.T, c.nh * c.D, TENSOR_PARAM, "x", 42, -1, 1);
    Tensor *in[1] = {x};
    ck_assert_int_eq(tt_check_grad(b_rope, &c, in, 1, FD_H, FD_ATOL, FD_RTOL, "rope"), 0);
    RopeCtx c2 = {1, 2, 3, 6, 0, 500.0f};
    Tensor *x2 = rnd2(c2.B * c2.T, c2.nh * c2.D, TENSOR_PARAM, "x2", 43, -1, 1);
    Tensor *in2[1] = {x2};
    ck_assert_int_eq(tt_check_grad(b_rope, &c2, in2, 1, FD_H, FD_ATOL, FD_RTOL, "rope nh=3"), 0);
    tt_free(x);
    tt_free(x2);
}
END_TEST

/* op_rope_inplace: the rotation written over its input's memory equals op_rope bit for bit
 * (same products and sums), forward and backward; finite differences through a copy
 * (op_scale by 1, whose backward never reads its output) so the FD re-runs see fresh x. */
static Tensor *b_rope_inplace(Tape *t, Tensor **in, void *ctx) {
    const RopeCtx *c = ctx;
    return op_rope_inplace(t, op_scale(t, in[0], 1.0f), c->B, c->T, c->nh, c->D, c->base,
                           c->pos0);
}

START_TEST(rope_inplace_matches) {
    const int cfg[][5] = {{2, 3, 3, 4, 0}, {1, 2, 2, 6, 100000}};
    for (size_t s = 0; s < 2; s++) {
        int B = cfg[s][0], T = cfg[s][1], nh = cfg[s][2], D = cfg[s][3], pos0 = cfg[s][4];
        Tensor *x = rnd2(B * T, nh * D, TENSOR_PARAM, "x", 60 + s, -1, 1);
        Tensor *x2 = rnd2(B * T, nh * D, TENSOR_PARAM, "x2", 60 + s, -1, 1);
        Tensor *r = rnd2(B * T, nh * D, TENSOR_CONST, "r", 70 + s, -1, 1);
        Tape t;
        new_tape(&t, true);
        Tensor *y = op_rope(&t, x, B, T, nh, D, 10000.0f, pos0);
        tape_backward(&t, y, r->data);
        float *ref = malloc(x->n * sizeof(float));   /* y lives in the arena: keep a copy */
        memcpy(ref, y->data, x->n * sizeof(float));
        tape_reset(&t, true);
        Tensor *y2 = op_rope_inplace(&t, x2, B, T, nh, D, 10000.0f, pos0);
        ck_assert_ptr_eq(y2->data, x2->data);
        ck_assert_ptr_ne(y2, x2);
        tape_backward(&t, y2, r->data);
        ck_assert(memcmp(ref, y2->data, x->n * sizeof(float)) == 0);
        ck_assert(memcmp(x->grad, x2->grad, x->n * sizeof(float)) == 0);
        free(ref);
        tape_free(&t);
        tt_free(x);
        tt_free(x2);
        tt_free(r);
    }
    RopeCtx c = {2, 3, 2, 4, 5, 10000.0f};
    Tensor *x = rnd2(c.B * c.T, c.nh * c.D, TENSOR_PARAM, "x", 62, -1, 1);
    Tensor *in[1] = {x};
    ck_assert_int_eq(tt_check_grad(b_rope_inplace, &c, in, 1, FD_H, FD_ATOL, FD_RTOL,
                                   "rope in place"), 0);
    tt_free(x);
}
END_TEST

/* ---------------- rope with documents ---------------- */

/* Row b of a (B, T) document layout: documents begin at position 0 and at the positions
 * listed (each < T), every row the same. */
static int32_t *doc_starts(int B, int T, const int *begins, int n) {
    int32_t *st = malloc(sizeof(int32_t) * (size_t)B * T);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            bool begin = t == 0;
            for (int k = 0; k < n; k++) begin = begin || begins[k] == t;
            st[(size_t)b * T + t] = begin ? t : st[(size_t)b * T + t - 1];
        }
    return st;
}

typedef struct { int B, T, nh, D; float base; const int32_t *start; bool in_place; } RopeDocCtx;
static Tensor *b_rope_docs(Tape *t, Tensor **in, void *ctx) {
    const RopeDocCtx *c = ctx;
    /* in place through a copy (op_scale by 1), so that the FD re-runs see fresh x */
    Tensor *x = c->in_place ? op_scale(t, in[0], 1.0f) : in[0];
    return op_rope_docs(t, x, c->B, c->T, c->nh, c->D, c->base, c->start, c->in_place);
}

/* Each token rotated at t - start[t], its position in its document, against the double
 * reference applied token by token (EW tolerances, as rope_forward_ref); a token that opens
 * a document is at position 0, the identity, exactly; out of place and in place agree bit
 * for bit. Documents of 1, 3 and 4 tokens and a last one of 3. */
START_TEST(rope_docs_forward_ref) {
    const int B = 2, T = 11, nh = 2, D = 6, begins[] = {1, 4, 8};
    int32_t *st = doc_starts(B, T, begins, 3);
    Tensor *x = rnd2(B * T, nh * D, TENSOR_CONST, "x", 80, -1, 1);
    Tape t;
    new_tape(&t, false);
    Tensor *y = op_rope_docs(&t, x, B, T, nh, D, 10000.0f, st, false);
    float *r = malloc(sizeof(float) * x->n);
    const size_t row = (size_t)nh * D;
    for (int n = 0; n < B * T; n++) {
        const int pos = n % T - st[n];
        ref_rope(r + n * row, x->data + n * row, 1, 1, nh, D, 10000.0, pos);
        if (pos == 0)
            ck_assert(!memcmp(y->data + n * row, x->data + n * row, row * sizeof(float)));
    }
    expect_close(y->data, r, x->n, EW_ATOL, EW_RTOL, "rope docs forward");
    Tensor *x2 = rnd2(B * T, nh * D, TENSOR_CONST, "x2", 80, -1, 1);
    Tensor *y2 = op_rope_docs(&t, x2, B, T, nh, D, 10000.0f, st, true);
    ck_assert(!memcmp(y->data, y2->data, x->n * sizeof(float)));
    free(r);
    free(st);
    tape_free(&t);
    tt_free(x);
    tt_free(x2);
}
END_TEST

/* The positions restart: a document starting at s in a packed row is rotated exactly as
 * op_rope rotates it alone at pos0 = 0 (the same table rows), bit for bit, values and
 * gradients; one document per row (all starts 0), and start NULL, are op_rope itself. */
START_TEST(rope_docs_restart_exact) {
    const int T = 12, nh = 3, D = 4, s = 5, begins[] = {s};
    int32_t *st = doc_starts(1, T, begins, 1);
    int32_t *zero = calloc((size_t)T, sizeof(int32_t));
    Tensor *x = rnd2(T, nh * D, TENSOR_PARAM, "x", 81, -1, 1);
    Tensor *doc = rnd2(T - s, nh * D, TENSOR_PARAM, "doc", 82, -1, 1);
    Tensor *r = rnd2(T, nh * D, TENSOR_CONST, "r", 83, -1, 1);
    const size_t row = (size_t)nh * D;
    memcpy(doc->data, x->data + s * row, (T - s) * row * sizeof(float));
    Tape t;
    new_tape(&t, true);
    Tensor *y = op_rope_docs(&t, x, 1, T, nh, D, 10000.0f, st, false);
    tape_backward(&t, y, r->data);
    float *packed = malloc(sizeof(float) * x->n);
    memcpy(packed, y->data, sizeof(float) * x->n);
    tape_reset(&t, true);
    Tensor *yd = op_rope(&t, doc, 1, T - s, nh, D, 10000.0f, 0);
    tape_backward(&t, yd, r->data + s * row);
    ck_assert(!memcmp(packed + s * row, yd->data, (T - s) * row * sizeof(float)));
    ck_assert(!memcmp(x->grad + s * row, doc->grad, (T - s) * row * sizeof(float)));
    /* without a document start the same tokens sit at positions s.. and rotate otherwise */
    tape_reset(&t, false);
    Tensor *yp = op_rope(&t, x, 1, T, nh, D, 10000.0f, 0);
    ck_assert(memcmp(yp->data + s * row, yd->data, (T - s) * row * sizeof(float)) != 0);
    Tensor *y0 = op_rope_docs(&t, x, 1, T, nh, D, 10000.0f, zero, false);
    Tensor *yn = op_rope_docs(&t, x, 1, T, nh, D, 10000.0f, NULL, false);
    ck_assert(!memcmp(yp->data, y0->data, x->n * sizeof(float)));
    ck_assert(!memcmp(yp->data, yn->data, x->n * sizeof(float)));
    free(packed);
    free(st);
    free(zero);
    tape_free(&t);
    tt_free(x);
    tt_free(doc);
    tt_free(r);
}
END_TEST

/* Central differences through op_rope_docs, out of place and in place (FD_* tolerances, as
 * rope_backward_fd: the rotation is linear in x, so only rounding remains). */
START_TEST(rope_docs_backward_fd) {
    const int B = 2, T = 7, begins[] = {2, 3, 6};
    int32_t *st = doc_starts(B, T, begins, 3);
    for (int ip = 0; ip < 2; ip++) {
        RopeDocCtx c = {B, T, 2, 4, 10000.0f, st, ip == 1};
        Tensor *x = rnd2(B * T, c.nh * c.D, TENSOR_PARAM, "x", 84 + (uint64_t)ip, -1, 1);
        Tensor *in[1] = {x};
        ck_assert_int_eq(tt_check_grad(b_rope_docs, &c, in, 1, FD_H, FD_ATOL, FD_RTOL,
                                       ip ? "rope docs in place" : "rope docs"), 0);
        tt_free(x);
    }
    free(st);
}
END_TEST

/* ---------------- suite */

static Suite *ops_norm_suite(void) {
    Suite *s = suite_create("ops_norm");
    struct { const char *name; const TTest *tests[5]; } cases[] = {
        {"rmsnorm", {rmsnorm_forward_ref, rmsnorm_hand, rmsnorm_backward_fd, rmsnorm_large_split,
                     NULL}},
        {"rope", {rope_forward_ref, rope_properties, rope_backward_fd, rope_inplace_matches, NULL}},
        {"rope_docs", {rope_docs_forward_ref, rope_docs_restart_exact, rope_docs_backward_fd,
                       NULL}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        for (int j = 0; j < 5 && cases[i].tests[j]; j++) tcase_add_test(tc, cases[i].tests[j]);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    SRunner *sr = srunner_create(ops_norm_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
