/* test_moe.c: the row loops of the MoE block that run over the cores (layers/moe.h): the
 * router noise and the routing statistics' entropy, at 1 and 2 threads, bit for bit against
 * the serial loops written out here. (The block as a whole: tests/layers/test_model.c,
 * tests/autograd/test_ops_moe.c.)
 *
 * Both split their rows once N E times the libm cost passes POOL_SPLIT_MIN (2^16): N = 2000
 * rows of E >= 8 pass it by far. The noise is a function of its key alone and the entropy
 * sum is taken in row order, so the results must be exactly the serial ones (memcmp, no
 * tolerance). */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/blas.h"
#include "core/pool.h"
#include "layers/moe.h"
#include "testutil.h"

enum { RN = 2000 };

/* eps[n, e] = N(0,1) keyed by (seed, step, layer, (token_base + n) E + e), as moe.h states;
 * a token base past 2^31 / E checks the key is formed in 64 bits. */
START_TEST(test_router_noise_split) {
    const int RE = 8;
    const MoeLayerArgs a = {.layer = 2, .E = RE, .seed = 1337, .step = 41,
                            .token_base = 300000000L};
    float *ref = malloc(sizeof(float) * RN * RE), *got = malloc(sizeof(float) * RN * RE);
    for (int n = 0; n < RN; n++)
        for (int e = 0; e < RE; e++)
            ref[n * RE + e] = moe_randn_key(1337, 41, 2,
                                            (uint64_t)(300000000L + n) * RE + (uint64_t)e);
    const int keep = blas_threads();
    for (int th = 1; th <= 2; th++) {
        blas_set_threads(th);
        for (int j = 0; j < RN * RE; j++) got[j] = NAN;   /* an element left unwritten shows */
        moe_router_noise(got, RN, RE, &a);
        ck_assert_msg(memcmp(got, ref, sizeof(float) * RN * RE) == 0,
                      "router noise differs from the serial loop (%d threads)", th);
    }
    blas_set_threads(keep);
    /* N = 0: nothing written, nothing read */
    moe_router_noise(got, 0, RE, &a);
    free(ref);
    free(got);
}
END_TEST

/* Entropy of softmax(l) per row: max subtracted, exp in double, -sum p log p over p > 0;
 * summed over rows in order. Row 0 is one-hot (a logit 1000 above the rest: the other p
 * underflow to 0 and are skipped, entropy exactly 0), row 1 uniform (entropy ln E).
 * E = 8, then E = 80 (past the 64 exps the kernel keeps per row: it calls exp again). */
START_TEST(test_router_entropy_split) {
    const int RE = _i == 0 ? 8 : 80;
    Tensor *lg = tt_tensor2(RN, RE, TENSOR_CONST, "clean");
    tt_fill_normal(lg, 31, 2.0f);
    for (int e = 0; e < RE; e++) {
        lg->data[e] = e == 3 ? 1000.0f : 0.0f;
        lg->data[RE + e] = 0.5f;
    }
    double ref = 0;
    for (int n = 0; n < RN; n++) {
        const float *l = lg->data + (size_t)n * RE;
        float mx = l[0];
        for (int e = 1; e < RE; e++) mx = l[e] > mx ? l[e] : mx;
        double s = 0, se = 0;
        for (int e = 0; e < RE; e++) s += exp((double)(l[e] - mx));
        for (int e = 0; e < RE; e++) {
            double p = exp((double)(l[e] - mx)) / s;
            if (p > 0) se -= p * log(p);
        }
        ref += se;
    }
    double *rows = malloc(sizeof(double) * RN);
    const int keep = blas_threads();
    for (int th = 1; th <= 2; th++) {
        blas_set_threads(th);
        for (int n = 0; n < RN; n++) rows[n] = (double)NAN;   /* a row left unwritten shows */
        const double got = moe_router_entropy(lg->data, RN, RE, rows);
        ck_assert_msg(memcmp(&got, &ref, sizeof got) == 0,
                      "entropy sum %.17g, serial loop %.17g (%d threads)", got, ref, th);
        ck_assert_msg(rows[0] == 0.0, "one-hot row: entropy %.17g", rows[0]);
        /* uniform row: ln E up to the rounding of E terms p log p in double (~E 2^-53) */
        ck_assert_msg(fabs(rows[1] - log((double)RE)) <= 1e-14, "uniform row: %.17g", rows[1]);
    }
    blas_set_threads(keep);
    ck_assert_msg(moe_router_entropy(lg->data, 0, RE, rows) == 0.0, "no rows: 0");
    free(rows);
    tt_free(lg);
}
END_TEST

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    Suite *s = suite_create("moe");
    TCase *tc = tcase_create("split_rows");
    tcase_add_test(tc, test_router_noise_split);
    tcase_add_loop_test(tc, test_router_entropy_split, 0, 2);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
