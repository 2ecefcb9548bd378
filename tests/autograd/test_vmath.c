/* test_vmath.c: the vectorisable exp and sigmoid of autograd/vmath.h against double-precision
 * exp, over a stride of the float bit patterns where exp is a normal float, plus the edge cases
 * the training loop relies on (underflow to 0, overflow to inf, NaN propagates). */
#include "autograd/blas.h"
#include "autograd/vmath.h"

#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Error of y against the exact r, in units of the last place of r as a float. */
static double ulps(float y, double r) {
    return fabs((double)y - r) / ldexp(1.0, ilogb(r) - 23);
}

START_TEST(test_expf_accuracy) {
    /* 2 ulp: the bound the polynomial and the two-part reduction give (Cephes documents
     * 1-2 ulp for this scheme); glibc's expf is < 1 ulp, and the ops' tests compare against
     * references with relative tolerances of 1e-5 or looser, i.e. > 80 ulp. */
    double worst = 0.0;
    float at = 0.0f;
    /* every 61st bit pattern from +0 up to 88.5 (all binades, ~18M points), and its negation
     * down to -87 */
    for (uint32_t b = 0; b <= 0x42B10000u; b += 61) {
        float xp;
        memcpy(&xp, &b, sizeof xp);
        for (int sgn = 0; sgn < 2; sgn++) {
            float x = sgn ? -xp : xp;
            if (x < -87.0f) continue;
            double u = ulps(vm_expf(x), exp((double)x));
            if (u > worst) {
                worst = u;
                at = x;
            }
        }
    }
    ck_assert_msg(worst <= 2.0, "vm_expf error %.3f ulp at x = %.9g", worst, (double)at);
}
END_TEST

START_TEST(test_expf_edges) {
    ck_assert(vm_expf(0.0f) == 1.0f);
    ck_assert(vm_expf(-100.0f) == 0.0f);
    ck_assert(vm_expf(-INFINITY) == 0.0f);
    ck_assert(isinf(vm_expf(100.0f)) && vm_expf(100.0f) > 0.0f);
    ck_assert(isinf(vm_expf(INFINITY)));
    ck_assert(isnan(vm_expf(NAN)));
    /* the largest finite result: exp(88.72) = 3.38e38 < FLT_MAX, within 2 ulp */
    ck_assert(ulps(vm_expf(88.72f), exp((double)88.72f)) <= 2.0);
}
END_TEST

START_TEST(test_sigmoid) {
    /* 3 ulp-relative: sigmoid adds one rounding of 1 + e and one of the division to exp's. */
    for (float x = -30.0f; x <= 30.0f; x += 0.001f) {
        double r = 1.0 / (1.0 + exp(-(double)x));
        ck_assert_msg(fabs((double)vm_sigmoidf(x) - r) <= 3.0 * 1.2e-7 * r, "x = %g", (double)x);
    }
    ck_assert(vm_sigmoidf(-200.0f) == 0.0f);
    ck_assert(vm_sigmoidf(200.0f) == 1.0f);
    ck_assert(isnan(vm_sigmoidf(NAN)));
}
END_TEST

/* The point of the header: the same results in a loop the compiler vectorises as one by one. */
START_TEST(test_loop_equals_scalar) {
    enum { N = 4099 };
    static float x[N], y[N];
    for (int i = 0; i < N; i++) x[i] = (float)(i - N / 2) * 0.043f;
    for (int i = 0; i < N; i++) y[i] = vm_expf(x[i]);
    for (int i = 0; i < N; i++) {
        volatile float xi = x[i];
        ck_assert(y[i] == vm_expf(xi));
    }
}
END_TEST

/* The reductions: every length 0..40 (all tail cases of the 8- and 16-wide loops), max at
 * every position, and the double sum against a plain double loop (the same terms in a
 * different order: equal within 1e-15 relative, far below float resolution). */
START_TEST(test_reductions) {
    float x[40];
    for (int n = 0; n <= 40; n++) {
        for (int at = 0; at < n; at++) {
            for (int i = 0; i < n; i++) x[i] = (float)((i * 7) % 11) - 20.0f;
            x[at] = 5.0f;
            ck_assert_msg(vm_max(x, n) == 5.0f, "n %d max at %d", n, at);
        }
        double ref = 0.0;
        for (int i = 0; i < n; i++) {
            x[i] = 1.0f / (float)(i + 1);
            ref += (double)x[i];
        }
        ck_assert(fabs(vm_sum_f64(x, n) - ref) <= 1e-15 * fabs(ref));
    }
    ck_assert(isinf(vm_max(x, 0)) && vm_max(x, 0) < 0.0f);
    x[0] = NAN;
    x[1] = 3.0f;
    ck_assert(vm_max(x, 2) == 3.0f);   /* NaN skipped, as documented */
}
END_TEST

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    Suite *s = suite_create("vmath");
    TCase *tc = tcase_create("vmath");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_expf_accuracy);
    tcase_add_test(tc, test_expf_edges);
    tcase_add_test(tc, test_sigmoid);
    tcase_add_test(tc, test_loop_equals_scalar);
    tcase_add_test(tc, test_reductions);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
