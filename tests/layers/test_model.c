/* test_model.c: the whole model, end to end, on tiny shapes.
 * - gradients of every parameter (MoE and dense variants, and MoE routing with an
 *   aux-loss-free selection bias) against central differences of the total loss (LM +
 *   load-balancing + z-loss), router noise on;
 * - the load-balancing loss reads exactly coef at uniform router probabilities, and the
 *   z-loss matches a hand computation;
 * - k accumulated micro-batches give the same gradients as one big batch;
 * - a capacity limit drops exactly the overflow and counts it;
 * - after the first step nothing allocates.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/model.h"
#include "optim/adamw.h"
#include "testutil.h"

static ModelShape tiny_shape(int E) {
    ModelShape s = {.V = 11, .C = 8, .L = 2, .H = 2, .Hkv = 1, .D = 4, .F = 6, .E = E,
                    .K = E > 0 ? 2 : 0, .norm_eps = 1e-5f, .rope_theta = 10000.0f,
                    .init_std = 0.3f, .capacity_factor = 0.0f, .router_noise = true,
                    .aux_coef = 0.01f, .z_coef = 0.001f};
    return s;
}

enum { TB = 2, TT = 5 };
static int32_t g_in[TB * TT], g_tg[TB * TT];

static void make_batch(int V) {
    MoeRng r;
    rng_seed(&r, 99);
    for (int i = 0; i < TB * TT; i++) {
        g_in[i] = (int32_t)(rng_next(&r) % (uint64_t)V);
        g_tg[i] = (int32_t)(rng_next(&r) % (uint64_t)V);
    }
}

static double loss_of(Model *m, Tape *t, bool record, ModelOut *out) {
    StepCtx ctx = {.train = true, .seed = 7, .step = 3, .token_base = 0,
                   .loss_scale = 1.0f};
    tape_reset(t, record);
    moe_stats_reset(&m->stats);
    model_forward(m, t, g_in, g_tg, TB, TT, &ctx, out);
    return (double)out->loss->data[0];
}

/* Central differences of the total loss for every parameter element. h = 1e-3 with the
 * loss in float32 (~1e-7 relative on a loss of ~2.4): FD noise ~ 2.4e-7/1e-3 = 2.4e-4, so
 * atol 1e-3; rtol 2e-2 covers the O(h^2) truncation on the curved parts (softmax, silu,
 * rmsnorm). A wrong factor or sign in any backward is off by far more than this. The
 * routing (top-k choice) is piecewise constant: with this seed no score pair sits within
 * h of a tie (if one did, that element would show a large mismatch, not a small one). */
static void check_model_grads(int E, bool bias) {
    ModelShape s = tiny_shape(E);
    make_batch(s.V);
    Model m;
    model_init(&m, &s, 0, E, 1234);
    if (bias) {   /* a constant selection bias (no gradient): the gates' gradients stay */
        m.use_router_bias = true;
        for (int j = 0; j < s.L * E; j++) m.router_bias[j] = 0.4f * (float)((j * 5) % 7) - 1.2f;
    }
    Tape t;
    tape_init(&t, 1 << 20);
    ModelOut out;
    if (bias) {   /* the bias must change the routing, or this case is test_grad_moe again */
        m.use_router_bias = false;
        loss_of(&m, &t, false, &out);
        double plain[2 * 4];
        memcpy(plain, m.stats.count, sizeof plain);
        m.use_router_bias = true;
        loss_of(&m, &t, false, &out);
        ck_assert_msg(memcmp(plain, m.stats.count, sizeof plain) != 0,
                      "the bias changed no expert load");
    }
    params_zero_grad(&m.ps);
    loss_of(&m, &t, true, &out);
    tape_backward(&t, out.loss, NULL);
    float *ana[PBLOCK_COUNT];
    for (int b = 0; b < PBLOCK_COUNT; b++) {
        ana[b] = moe_malloc(m.ps.blocks[b].n * sizeof(float));
        memcpy(ana[b], m.ps.blocks[b].grad, m.ps.blocks[b].n * sizeof(float));
    }
    const float h = 1e-3f;
    int bad = 0, checked = 0;
    for (int i = 0; i < m.ps.count; i++) {
        Param *p = &m.ps.p[i];
        for (size_t j = 0; j < p->t.n; j++) {
            float keep = p->t.data[j];
            p->t.data[j] = keep + h;
            double fp = loss_of(&m, &t, false, &out);
            p->t.data[j] = keep - h;
            double fm = loss_of(&m, &t, false, &out);
            p->t.data[j] = keep;
            double num = (fp - fm) / (2.0 * (double)h);
            double a = (double)ana[p->block][p->off + j];
            checked++;
            if (!(fabs(a - num) <= 1e-3 + 2e-2 * fabs(num))) {
                if (bad < 8)
                    fprintf(stderr, "E=%d %s[%zu]: analytic %.6g numeric %.6g\n", E, p->name, j,
                            a, num);
                bad++;
            }
        }
    }
    ck_assert_int_gt(checked, 500);
    ck_assert_int_eq(bad, 0);
    for (int b = 0; b < PBLOCK_COUNT; b++) moe_free(ana[b]);
    tape_free(&t);
    model_free(&m);
}

START_TEST(test_grad_moe) { check_model_grads(4, false); }
END_TEST

START_TEST(test_grad_moe_bias) { check_model_grads(4, true); }
END_TEST

START_TEST(test_grad_dense) { check_model_grads(0, false); }
END_TEST

/* With all router weights zero every token's router probabilities are uniform (P_i = 1/E)
 * and its logsumexp is ln E, so, whatever f is (sum_i f_i = 1):
 *   aux = coef * E * sum_i f_i / E = coef            (per layer; averaged over layers: coef)
 *   z   = coef_z * mean_n (ln E)^2 = coef_z * (ln 8)^2
 * Tolerance 1e-6 relative: float32 sums of a handful of terms. */
START_TEST(test_aux_losses_uniform) {
    ModelShape s = tiny_shape(8);
    s.router_noise = false;
    make_batch(s.V);
    Model m;
    model_init(&m, &s, 0, 8, 5);
    for (int l = 0; l < s.L; l++) {
        Tensor *r = &m.ps.p[m.layer[l].router].t;
        memset(r->data, 0, r->n * sizeof(float));
    }
    Tape t;
    tape_init(&t, 1 << 20);
    ModelOut out;
    StepCtx ctx = {.train = true, .seed = 7, .step = 0,
                   .loss_scale = 1.0f};
    tape_reset(&t, true);
    model_forward(&m, &t, g_in, g_tg, TB, TT, &ctx, &out);
    ck_assert_double_eq_tol(out.aux_loss, 0.01, 1e-8);
    double lnE = log(8.0);
    ck_assert_double_eq_tol(out.z_loss, 0.001 * lnE * lnE, 1e-8);
    /* total = lm + aux + z */
    ck_assert_double_eq_tol((double)out.loss->data[0], out.lm_loss + out.aux_loss + out.z_loss,
                            1e-5);
    tape_free(&t);
    model_free(&m);
}
END_TEST

/* One batch of 2*B sequences vs two accumulated micro-batches of B (loss_scale 1/2,
 * token_base so the router noise keys match). The load-balancing loss is excluded (its
 * f_i * P_i product is not additive over micro-batches, by definition); LM and z losses
 * are means over tokens, so the gradients must agree up to float32 summation order:
 * tolerance 1e-5 + 1e-3 relative. */
START_TEST(test_grad_accumulation_equals_big_batch) {
    ModelShape s = tiny_shape(4);
    s.aux_coef = 0.0f;
    enum { B2 = 4, T = 5 };
    int32_t in[B2 * T], tg[B2 * T];
    MoeRng r;
    rng_seed(&r, 3);
    for (int i = 0; i < B2 * T; i++) {
        in[i] = (int32_t)(rng_next(&r) % 11);
        tg[i] = (int32_t)(rng_next(&r) % 11);
    }
    Model m;
    model_init(&m, &s, 0, 4, 77);
    Tape t;
    tape_init(&t, 1 << 20);
    ModelOut out;
    params_zero_grad(&m.ps);
    StepCtx big = {.train = true, .seed = 1, .step = 2, .token_base = 0,
                   .loss_scale = 1.0f};
    tape_reset(&t, true);
    model_forward(&m, &t, in, tg, B2, T, &big, &out);
    tape_backward(&t, out.loss, NULL);
    size_t n = m.ps.blocks[0].n, ne = m.ps.blocks[1].n;
    float *g1 = moe_malloc(n * sizeof(float)), *g1e = moe_malloc(ne * sizeof(float));
    memcpy(g1, m.ps.blocks[0].grad, n * sizeof(float));
    memcpy(g1e, m.ps.blocks[1].grad, ne * sizeof(float));

    params_zero_grad(&m.ps);
    for (int a = 0; a < 2; a++) {
        StepCtx c = {.train = true, .seed = 1, .step = 2, .token_base = (long)a * (B2 / 2) * T,
                     .loss_scale = 0.5f};
        tape_reset(&t, true);
        model_forward(&m, &t, in + a * (B2 / 2) * T, tg + a * (B2 / 2) * T, B2 / 2, T, &c, &out);
        tape_backward(&t, out.loss, NULL);
    }
    ck_assert_double_le(tt_max_err(m.ps.blocks[0].grad, g1, n, 1e-5, 1e-3), 1.0);
    ck_assert_double_le(tt_max_err(m.ps.blocks[1].grad, g1e, ne, 1e-5, 1e-3), 1.0);
    moe_free(g1);
    moe_free(g1e);
    tape_free(&t);
    model_free(&m);
}
END_TEST

/* capacity_factor 0.5 with N*K = 20 slots over E = 4 experts: cap = ceil(20/4*0.5) = 3,
 * so at most 12 slots are kept; dropped = 20 - sum_e min(count_e, 3). */
START_TEST(test_capacity_drops_overflow) {
    ModelShape s = tiny_shape(4);
    s.capacity_factor = 0.5f;
    s.L = 1;
    make_batch(s.V);
    Model m;
    model_init(&m, &s, 0, 4, 11);
    Tape t;
    tape_init(&t, 1 << 20);
    ModelOut out;
    loss_of(&m, &t, true, &out);
    double kept = 0, routed = 0;
    for (int e = 0; e < 4; e++) {
        double c = m.stats.count[e];
        routed += c;
        kept += c < 3 ? c : 3;
    }
    ck_assert_double_eq(routed, 20);
    ck_assert_double_eq(m.stats.dropped[0], routed - kept);
    ck_assert_double_gt(m.stats.dropped[0], 0);
    /* backward still runs through the dropped slots (they contribute nothing) */
    tape_backward(&t, out.loss, NULL);
    ck_assert(isfinite(sqrt(grad_sumsq_block(&m.ps, PBLOCK_DENSE))));
    tape_free(&t);
    model_free(&m);
}
END_TEST

/* After the first step, forward + backward + AdamW allocate nothing (the arena and the op
 * list keep their memory). */
START_TEST(test_no_allocation_after_first_step) {
    ModelShape s = tiny_shape(4);
    make_batch(s.V);
    Model m;
    model_init(&m, &s, 0, 4, 1);
    Tape t;
    tape_init(&t, 1 << 16);   /* small chunks so the first step grows the arena */
    AdamWConfig ac = {0.9f, 0.95f, 1e-8f, 0.1f};
    size_t calls_after_first = 0;
    for (int step = 0; step < 4; step++) {
        params_zero_grad(&m.ps);
        ModelOut out;
        loss_of(&m, &t, true, &out);
        tape_backward(&t, out.loss, NULL);
        adamw_step(&m.ps, &ac, 1e-3f, step + 1);
        if (step == 0) calls_after_first = moe_alloc_calls();
    }
    ck_assert_uint_eq(moe_alloc_calls(), calls_after_first);
    tape_free(&t);
    model_free(&m);
}
END_TEST

int main(void) {
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("gradients");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_grad_moe);
    tcase_add_test(tc, test_grad_moe_bias);
    tcase_add_test(tc, test_grad_dense);
    suite_add_tcase(s, tc);
    tc = tcase_create("aux_losses");
    tcase_add_test(tc, test_aux_losses_uniform);
    suite_add_tcase(s, tc);
    tc = tcase_create("invariants");
    tcase_add_test(tc, test_grad_accumulation_equals_big_batch);
    tcase_add_test(tc, test_capacity_drops_overflow);
    tcase_add_test(tc, test_no_allocation_after_first_step);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
