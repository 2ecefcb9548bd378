/* test_gemm.c: every backend and precision of gemm (autograd/gemm.h) against a naive
 * double-precision reference, on shapes that cover both transposes, strided operands,
 * alpha and beta, sizes that oneDNN's backend cuts into pieces, and the empty sum.
 *
 * Tolerance (argued, not fitted): each entry of C is a sum of K products plus the alpha
 * scaling and the beta term. Summed in fp32 in any order with exact or fused products, the
 * error is at most gamma_{K+2} (|alpha| sum_k |a_ik b_kj| + |beta c_ij|), gamma_n = n u /
 * (1 - n u), u = 2^-24 (Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed.,
 * sec. 3.1 and 3.5): the bound below is (K + 3) u (...). In bf16 the reference takes the
 * inputs rounded to bf16 (autograd/bf16.h): products of bf16 values are exact in fp32, so
 * the same bound holds against that reference. A wrong transpose, stride, piece offset,
 * alpha or beta is off by O(|a||b|), far outside it; and the bf16 results must differ from
 * the fp32 reference by more than the fp32 bound somewhere (the rounding really happens).
 */
#include "autograd/bf16.h"
#include "autograd/blas.h"
#include "autograd/gemm.h"
#include "core/pool.h"
#include "core/rng.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct Shape {
    bool ta, tb;
    int M, N, K;
    int pad;             /* extra columns of every stored operand (strides > width) */
    float alpha, beta;
} Shape;

/* 1, 15, 17, 100, 300, 1000 are cut into pieces by the oneDNN backend (round sizes are
 * multiples of 16 up to 256, of 64 up to 1024); 64, 256, 512 are single pieces. */
static const Shape SHAPES[] = {
    {false, false, 64, 64, 64, 0, 1.0f, 0.0f},
    {false, true, 100, 256, 32, 0, 1.0f, 0.0f},
    {true, false, 256, 17, 300, 3, 1.0f, 1.0f},
    {true, true, 15, 33, 100, 0, 0.5f, 0.0f},
    {false, false, 1, 512, 256, 5, 1.0f, -0.75f},
    {false, true, 1000, 64, 40, 0, 0.125f, 1.0f},
    {true, false, 64, 100, 1000, 1, 1.0f, 0.0f},
    {false, false, 300, 300, 7, 2, -1.0f, 0.5f},
};
#define N_SHAPES ((int)(sizeof SHAPES / sizeof SHAPES[0]))

typedef struct Case {
    Shape s;
    int lda, ldb, ldc, ar, ac, br, bc;
    float *A, *B, *C0, *C;
    double *ref, *bound;
} Case;

static void case_init(Case *c, const Shape *s, uint64_t seed) {
    memset(c, 0, sizeof *c);
    c->s = *s;
    c->ar = s->ta ? s->K : s->M;
    c->ac = s->ta ? s->M : s->K;
    c->br = s->tb ? s->N : s->K;
    c->bc = s->tb ? s->K : s->N;
    c->lda = c->ac + s->pad;
    c->ldb = c->bc + s->pad;
    c->ldc = s->N + s->pad;
    c->A = malloc(sizeof(float) * (size_t)c->ar * c->lda);
    c->B = malloc(sizeof(float) * (size_t)c->br * c->ldb);
    c->C0 = malloc(sizeof(float) * (size_t)s->M * c->ldc);
    c->C = malloc(sizeof(float) * (size_t)s->M * c->ldc);
    c->ref = malloc(sizeof(double) * (size_t)s->M * s->N);
    c->bound = malloc(sizeof(double) * (size_t)s->M * s->N);
    MoeRng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < (size_t)c->ar * c->lda; i++) c->A[i] = (float)(rng_uniform(&r) * 2 - 1);
    for (size_t i = 0; i < (size_t)c->br * c->ldb; i++) c->B[i] = (float)(rng_uniform(&r) * 2 - 1);
    for (size_t i = 0; i < (size_t)s->M * c->ldc; i++) c->C0[i] = (float)(rng_uniform(&r) * 2 - 1);
}

static void case_free(Case *c) {
    free(c->A);
    free(c->B);
    free(c->C0);
    free(c->C);
    free(c->ref);
    free(c->bound);
}

static float a_at(const Case *c, int i, int k) {
    return c->s.ta ? c->A[(size_t)k * c->lda + i] : c->A[(size_t)i * c->lda + k];
}
static float b_at(const Case *c, int k, int j) {
    return c->s.tb ? c->B[(size_t)j * c->ldb + k] : c->B[(size_t)k * c->ldb + j];
}

/* The reference in double, inputs rounded to bf16 first when bf16. */
static void case_reference(Case *c, bool bf16) {
    const Shape *s = &c->s;
    for (int i = 0; i < s->M; i++)
        for (int j = 0; j < s->N; j++) {
            double sum = 0, mag = 0;
            for (int k = 0; k < s->K; k++) {
                double a = a_at(c, i, k), b = b_at(c, k, j);
                if (bf16) {
                    a = bf16_round((float)a);
                    b = bf16_round((float)b);
                }
                sum += a * b;
                mag += fabs(a * b);
            }
            const double c0 = c->C0[(size_t)i * c->ldc + j], al = s->alpha, be = s->beta;
            c->ref[(size_t)i * s->N + j] = al * sum + be * c0;
            c->bound[(size_t)i * s->N + j] =
                (s->K + 3) * ldexp(1.0, -24) * (fabs(al) * mag + fabs(be * c0));
        }
}

static void case_run(Case *c) {
    const Shape *s = &c->s;
    memcpy(c->C, c->C0, sizeof(float) * (size_t)s->M * c->ldc);
    if (s->beta == 0.0f)   /* beta 0: C is not read (BLAS), so NaN there must not leak */
        for (size_t i = 0; i < (size_t)s->M * c->ldc; i++) c->C[i] = NAN;
    gemm(s->ta, s->tb, s->M, s->N, s->K, s->alpha, c->A, c->lda, c->B, c->ldb, s->beta, c->C,
         c->ldc);
}

/* Worst |C - ref| / bound over C; also checks the padding columns of C were not written. */
static double case_check(const Case *c, const char *what) {
    const Shape *s = &c->s;
    double worst = 0;
    for (int i = 0; i < s->M; i++) {
        for (int j = 0; j < s->N; j++) {
            const double e = fabs((double)c->C[(size_t)i * c->ldc + j] -
                                  c->ref[(size_t)i * s->N + j]);
            const double b = c->bound[(size_t)i * s->N + j] + 1e-30;
            ck_assert_msg(isfinite(c->C[(size_t)i * c->ldc + j]), "%s: C[%d,%d] not finite",
                          what, i, j);
            if (e / b > worst) worst = e / b;
        }
        for (int j = s->N; j < c->ldc; j++)
            if (s->beta != 0.0f)
                ck_assert_msg(c->C[(size_t)i * c->ldc + j] == c->C0[(size_t)i * c->ldc + j],
                              "%s: padding C[%d,%d] written", what, i, j);
    }
    return worst;
}

/* The available (backend, precision) paths. */
typedef struct Path { GemmBackend b; GemmPrecision p; } Path;
static int paths(Path *out) {
    int n = 0;
    out[n++] = (Path){GEMM_OPENBLAS, GEMM_FP32};
    out[n++] = (Path){GEMM_OPENBLAS, GEMM_BF16};
    if (gemm_onednn_available(NULL)) {
        out[n++] = (Path){GEMM_ONEDNN, GEMM_FP32};
        if (gemm_native_bf16()) out[n++] = (Path){GEMM_ONEDNN, GEMM_BF16};
    }
    return n;
}

static void select_path(Path p) {
    MoeErr err;
    ck_assert_msg(gemm_select(p.b, p.p, &err) == 0, "select: %s", err.msg);
}

START_TEST(test_paths_match_reference) {
    Path ps[4];
    const int np = paths(ps);
    for (int pi = 0; pi < np; pi++) {
        select_path(ps[pi]);
        const bool bf16 = ps[pi].p == GEMM_BF16;
        for (int si = 0; si < N_SHAPES; si++) {
            Case c;
            case_init(&c, &SHAPES[si], 100 + (uint64_t)si);
            case_reference(&c, bf16);
            case_run(&c);
            char what[160];
            snprintf(what, sizeof what, "%s %s shape %d (%s%s %dx%dx%d)",
                     gemm_backend_name(ps[pi].b), gemm_precision_name(ps[pi].p), si,
                     c.s.ta ? "T" : "N", c.s.tb ? "T" : "N", c.s.M, c.s.N, c.s.K);
            const double w = case_check(&c, what);
            ck_assert_msg(w <= 1.0, "%s: error %.3g x the bound", what, w);
            if (bf16 && c.s.K >= 32) {
                /* the rounding happened: against the fp32 reference some entry is off by
                 * more than the fp32 bound (bf16 inputs carry relative errors of ~2^-9) */
                case_reference(&c, false);
                double worst32 = 0;
                for (int i = 0; i < c.s.M; i++)
                    for (int j = 0; j < c.s.N; j++) {
                        const double e = fabs((double)c.C[(size_t)i * c.ldc + j] -
                                              c.ref[(size_t)i * c.s.N + j]);
                        const double r = e / (c.bound[(size_t)i * c.s.N + j] + 1e-30);
                        if (r > worst32) worst32 = r;
                    }
                ck_assert_msg(worst32 > 4.0, "%s: bf16 result within the fp32 bound (%.3g): "
                              "inputs not rounded?", what, worst32);
            }
            case_free(&c);
        }
    }
    select_path((Path){GEMM_OPENBLAS, GEMM_FP32});
}
END_TEST

/* Products made inside a split region's tasks run single-threaded: same bound, and the
 * same call repeated gives the same bits (no history in the results). */
typedef struct TaskCtx { Case *c; } TaskCtx;
static void run_task(void *ctx, int task, int worker) {
    (void)worker;
    TaskCtx *t = ctx;
    case_run(&t->c[task]);
}

START_TEST(test_inside_tasks_and_repeat) {
    Path ps[4];
    const int np = paths(ps);
    const int keep = blas_set_threads(2);
    for (int pi = 0; pi < np; pi++) {
        select_path(ps[pi]);
        Case c[4];
        for (int i = 0; i < 4; i++) {
            case_init(&c[i], &SHAPES[i + 2], 7 + (uint64_t)i);
            case_reference(&c[i], ps[pi].p == GEMM_BF16);
        }
        TaskCtx t = {c};
        pool_parallel_for(4, run_task, &t);
        for (int i = 0; i < 4; i++) {
            char what[96];
            snprintf(what, sizeof what, "%s %s in task %d", gemm_backend_name(ps[pi].b),
                     gemm_precision_name(ps[pi].p), i);
            ck_assert_msg(case_check(&c[i], what) <= 1.0, "%s: outside the bound", what);
            float *first = malloc(sizeof(float) * (size_t)c[i].s.M * c[i].ldc);
            memcpy(first, c[i].C, sizeof(float) * (size_t)c[i].s.M * c[i].ldc);
            pool_parallel_for(4, run_task, &t);
            ck_assert_msg(memcmp(first, c[i].C, sizeof(float) * (size_t)c[i].s.M * c[i].ldc)
                          == 0, "%s: a repeated product gave other bits", what);
            free(first);
        }
        for (int i = 0; i < 4; i++) case_free(&c[i]);
    }
    blas_set_threads(keep);
    select_path((Path){GEMM_OPENBLAS, GEMM_FP32});
}
END_TEST

/* Registered bf16 stand-ins give the same bits as rounding at each call. */
START_TEST(test_standins_bit_identical) {
    Path ps[4];
    const int np = paths(ps);
    for (int pi = 0; pi < np; pi++) {
        if (ps[pi].p != GEMM_BF16) continue;
        select_path(ps[pi]);
        for (int si = 0; si < N_SHAPES; si++) {
            Case c;
            case_init(&c, &SHAPES[si], 300 + (uint64_t)si);
            case_run(&c);
            const size_t nc = (size_t)c.s.M * c.ldc;
            float *plain = malloc(sizeof(float) * nc);
            memcpy(plain, c.C, sizeof(float) * nc);
            gemm_standin(c.A, (size_t)c.ar * c.lda);   /* A through gemm's own copy */
            const size_t nb = (size_t)c.br * c.ldb;   /* B through a caller's copy */
            uint16_t *hb = malloc(sizeof(uint16_t) * nb);
            for (size_t i = 0; i < nb; i++) hb[i] = bf16_from_f32(c.B[i]);
            gemm_bf16_register(c.B, nb, hb);
            case_run(&c);
            gemm_bf16_unregister(c.B);
            gemm_standins_clear();
            ck_assert_msg(memcmp(plain, c.C, sizeof(float) * nc) == 0,
                          "%s shape %d: stand-ins changed the result",
                          gemm_backend_name(ps[pi].b), si);
            /* and a wrong stand-in is read (the lookup is live): zeros give C = beta C0 */
            memset(hb, 0, sizeof(uint16_t) * nb);
            gemm_bf16_register(c.B, nb, hb);
            case_run(&c);
            gemm_bf16_unregister(c.B);
            if (ps[pi].b == GEMM_ONEDNN && c.s.beta == 0.0f)
                ck_assert_msg(c.C[0] == 0.0f, "shape %d: registered copy not read", si);
            free(hb);
            free(plain);
            case_free(&c);
        }
    }
    select_path((Path){GEMM_OPENBLAS, GEMM_FP32});
}
END_TEST

/* K = 0: C = beta C (beta 0 writes zeros), as BLAS; M = 0 or N = 0: nothing. */
START_TEST(test_empty_sum) {
    Path ps[4];
    const int np = paths(ps);
    for (int pi = 0; pi < np; pi++) {
        select_path(ps[pi]);
        float C[6] = {1, 2, 3, 4, 5, 6}, A[1] = {9}, B[1] = {9};
        gemm(false, false, 2, 3, 0, 1.0f, A, 1, B, 3, 0.5f, C, 3);
        for (int i = 0; i < 6; i++) ck_assert(C[i] == 0.5f * (float)(i + 1));
        gemm(false, false, 2, 3, 0, 1.0f, A, 1, B, 3, 0.0f, C, 3);
        for (int i = 0; i < 6; i++) ck_assert(C[i] == 0.0f);
        C[0] = 7;
        gemm(false, false, 0, 3, 4, 1.0f, A, 4, B, 3, 0.0f, C, 3);
        ck_assert(C[0] == 7);
    }
    select_path((Path){GEMM_OPENBLAS, GEMM_FP32});
}
END_TEST

/* What the log says; bf16 through OpenBLAS is named as emulated. */
START_TEST(test_describe) {
    char buf[512];
    select_path((Path){GEMM_OPENBLAS, GEMM_BF16});
    gemm_describe(buf, sizeof buf);
    ck_assert_msg(strstr(buf, "openblas bf16") && strstr(buf, "emulated"), "%s", buf);
    if (gemm_onednn_available(NULL)) {
        select_path((Path){GEMM_AUTO, GEMM_FP32});
        ck_assert_int_eq(gemm_backend(), GEMM_ONEDNN);
        float a[256], c[256];
        for (int i = 0; i < 256; i++) a[i] = 1.0f;
        gemm(false, false, 16, 16, 16, 1.0f, a, 16, a, 16, 0.0f, c, 16);
        ck_assert(c[0] == 16.0f);
        gemm_describe(buf, sizeof buf);
        ck_assert_msg(strstr(buf, "onednn fp32") && strstr(buf, "ISA") &&
                      strstr(buf, "brg") != NULL, "%s", buf);
    }
    select_path((Path){GEMM_OPENBLAS, GEMM_FP32});
}
END_TEST

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);
    Suite *s = suite_create("gemm");
    TCase *tc = tcase_create("gemm");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_paths_match_reference);
    tcase_add_test(tc, test_inside_tasks_and_repeat);
    tcase_add_test(tc, test_standins_bit_identical);
    tcase_add_test(tc, test_empty_sum);
    tcase_add_test(tc, test_describe);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
