/* test_model.c: the whole model, end to end, on tiny shapes.
 * - gradients of every parameter (MoE and dense variants) against central differences of
 *   the total loss (LM + load-balancing + z-loss), router noise on;
 * - the load-balancing loss reads exactly coef at uniform router probabilities, and the
 *   z-loss matches a hand computation;
 * - k accumulated micro-batches give the same gradients as one big batch;
 * - a capacity limit drops exactly the overflow and counts it;
 * - after the first step nothing allocates (also with per-layer recomputation);
 * - recomputation (StepCtx.recompute) gives bit-identical losses, gradients and routing
 *   statistics, and a smaller arena; the chunked head + loss (StepCtx.loss_chunk) matches
 *   the unchunked one.
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
static void check_model_grads(int E) {
    ModelShape s = tiny_shape(E);
    make_batch(s.V);
    Model m;
    model_init(&m, &s, 0, E, 1234);
    Tape t;
    tape_init(&t, 1 << 20);
    ModelOut out;
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

START_TEST(test_grad_moe) { check_model_grads(4); }
END_TEST

START_TEST(test_grad_dense) { check_model_grads(0); }
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
    /* _i = 0: every activation kept; 1: recomputed per layer (the sub tape's arena, ops and
     * grad plan also settle in the first step) and the head + loss in chunks of 3 rows */
    ModelShape s = tiny_shape(4);
    make_batch(s.V);
    Model m;
    model_init(&m, &s, 0, 4, 1);
    Tape t;
    tape_init(&t, 1 << 10);   /* small chunks so the first step grows the arenas */
    AdamWConfig ac = {0.9f, 0.95f, 1e-8f, 0.1f};
    size_t calls_after_first = 0, grows = 0;
    for (int step = 0; step < 4; step++) {
        params_zero_grad(&m.ps);
        ModelOut out;
        StepCtx ctx = {.train = true, .seed = 7, .step = 3, .loss_scale = 1.0f,
                       .recompute = _i == 1, .loss_chunk = _i == 1 ? 3 : 0};
        tape_reset(&t, true);
        model_forward(&m, &t, g_in, g_tg, TB, TT, &ctx, &out);
        tape_backward(&t, out.loss, NULL);
        adamw_step(&m.ps, &ac, 1e-3f, step + 1);
        size_t g = t.arena.grows + (t.sub ? t.sub->arena.grows : 0);
        if (step == 0) {
            calls_after_first = moe_alloc_calls();
            grows = g;
            ck_assert_msg(t.arena.grows > 1, "chunk size too big to exercise several chunks");
        }
        ck_assert_uint_eq(g, grows);
    }
    ck_assert_uint_eq(moe_alloc_calls(), calls_after_first);
    tape_free(&t);
    model_free(&m);
}
END_TEST

/* ---- activation recomputation (StepCtx.recompute, tape_checkpoint) ---- */

typedef struct RunResult {
    float *grad[PBLOCK_COUNT];
    double loss, lm, aux, z;
    MoeStats st;
    size_t arena, plans;   /* arena high water (main + recompute tape), grad plans, bytes */
} RunResult;

static void run_free(RunResult *r) {
    for (int b = 0; b < PBLOCK_COUNT; b++) free(r->grad[b]);
    moe_stats_free(&r->st);
}

/* Two steps of forward + backward (the second on a compacted tape, as the trainer runs);
 * grads, losses and statistics of the second. */
static void run_steps(Model *m, const int32_t *in, const int32_t *tg, int B, int T,
                      bool recompute, RunResult *r) {
    Tape t;
    tape_init(&t, 1 << 16);
    ModelOut out;
    for (int step = 0; step < 2; step++) {
        StepCtx ctx = {.train = true, .seed = 7, .step = 3, .token_base = 40,
                       .loss_scale = 0.5f, .recompute = recompute};
        params_zero_grad(&m->ps);
        moe_stats_reset(&m->stats);
        tape_reset(&t, true);
        model_forward(m, &t, in, tg, B, T, &ctx, &out);
        tape_backward(&t, out.loss, NULL);
        if (step == 0) tape_compact(&t);
    }
    ck_assert_msg((t.sub != NULL) == recompute, "recompute %d but sub tape %p", recompute,
                  (void *)t.sub);
    r->loss = (double)out.loss->data[0];
    r->lm = out.lm_loss;
    r->aux = out.aux_loss;
    r->z = out.z_loss;
    for (int b = 0; b < PBLOCK_COUNT; b++) {
        size_t n = m->ps.blocks[b].n;
        r->grad[b] = malloc(n * sizeof(float) + 1);
        if (n) memcpy(r->grad[b], m->ps.blocks[b].grad, n * sizeof(float));
    }
    moe_stats_init(&r->st, m->stats.L, m->stats.E);
    int EE = m->stats.E > 0 ? m->stats.E : 1;
    memcpy(r->st.count, m->stats.count, sizeof(double) * (size_t)m->stats.L * (size_t)EE);
    memcpy(r->st.dropped, m->stats.dropped, sizeof(double) * (size_t)m->stats.L);
    memcpy(r->st.entropy, m->stats.entropy, sizeof(double) * (size_t)m->stats.L);
    memcpy(r->st.tokens, m->stats.tokens, sizeof(double) * (size_t)m->stats.L);
    r->st.calls = m->stats.calls;
    r->arena = t.arena.high_water + (t.sub ? t.sub->arena.high_water : 0);
    r->plans = tape_grad_plan_bytes(&t) + (t.sub ? tape_grad_plan_bytes(t.sub) : 0);
    tape_free(&t);
}

/* The recomputed forward does the same float operations on the same inputs (the router
 * noise is keyed by seed, step, layer and token, not drawn from a stream), and the
 * segment's backward accumulates into the same buffers in the same order: losses and every
 * gradient are BIT-identical to the run that keeps all activations, and the routing
 * statistics count each forward once. E = 4 with noise, aux and z losses; E = 0 (dense);
 * E = 4 with a capacity limit that drops slots. */
static void check_recompute_identical(int E, float capacity) {
    ModelShape s = tiny_shape(E);
    s.L = 3;
    s.capacity_factor = capacity;
    make_batch(s.V);
    Model m;
    model_init(&m, &s, 0, E, 4321);
    RunResult a, b;
    run_steps(&m, g_in, g_tg, TB, TT, false, &a);
    run_steps(&m, g_in, g_tg, TB, TT, true, &b);
    ck_assert_msg(a.loss == b.loss && a.lm == b.lm && a.aux == b.aux && a.z == b.z,
                  "losses differ: %.9g/%.9g %.9g/%.9g %.9g/%.9g %.9g/%.9g", a.loss, b.loss, a.lm,
                  b.lm, a.aux, b.aux, a.z, b.z);
    for (int i = 0; i < m.ps.count; i++) {
        const Param *p = &m.ps.p[i];
        ck_assert_msg(memcmp(a.grad[p->block] + p->off, b.grad[p->block] + p->off,
                             p->t.n * sizeof(float)) == 0,
                      "E=%d capacity %g: gradient of %s differs with recompute", E,
                      (double)capacity, p->name);
    }
    int EE = E > 0 ? E : 1;
    ck_assert_int_eq(a.st.calls, b.st.calls);
    ck_assert(memcmp(a.st.count, b.st.count, sizeof(double) * (size_t)s.L * (size_t)EE) == 0);
    ck_assert(memcmp(a.st.dropped, b.st.dropped, sizeof(double) * (size_t)s.L) == 0);
    ck_assert(memcmp(a.st.entropy, b.st.entropy, sizeof(double) * (size_t)s.L) == 0);
    ck_assert(memcmp(a.st.tokens, b.st.tokens, sizeof(double) * (size_t)s.L) == 0);
    if (capacity > 0) ck_assert_double_gt(a.st.dropped[0] + a.st.dropped[1], 0);
    run_free(&a);
    run_free(&b);
    model_free(&m);
}

START_TEST(test_recompute_identical_moe) { check_recompute_identical(4, 0.0f); }
END_TEST

START_TEST(test_recompute_identical_dense) { check_recompute_identical(0, 0.0f); }
END_TEST

START_TEST(test_recompute_identical_capacity) { check_recompute_identical(4, 0.5f); }
END_TEST

/* What recomputation is for: on a model whose layers dominate its activations (L = 4,
 * N = 64 tokens), the arena (kept tensors + one layer) is under half of keeping every
 * layer (an estimate from the sizes gives ~0.3), the activation-grad plans do not grow by
 * more than the few (N, C) grads of the kept layer outputs, and a forward-only pass with
 * recompute gives bit-identical logits in a smaller arena too. */
START_TEST(test_recompute_saves_memory) {
    ModelShape s = {.V = 64, .C = 32, .L = 4, .H = 4, .Hkv = 2, .D = 8, .F = 64, .E = 4,
                    .K = 2, .norm_eps = 1e-5f, .rope_theta = 10000.0f, .init_std = 0.1f,
                    .capacity_factor = 0.0f, .router_noise = true, .aux_coef = 0.01f,
                    .z_coef = 0.001f};
    enum { B = 2, T = 32 };
    int32_t in[B * T], tg[B * T];
    MoeRng r;
    rng_seed(&r, 8);
    for (int i = 0; i < B * T; i++) {
        in[i] = (int32_t)(rng_next(&r) % (uint64_t)s.V);
        tg[i] = (int32_t)(rng_next(&r) % (uint64_t)s.V);
    }
    Model m;
    model_init(&m, &s, 0, s.E, 3);
    RunResult a, b;
    run_steps(&m, in, tg, B, T, false, &a);
    run_steps(&m, in, tg, B, T, true, &b);
    ck_assert_msg(b.arena < a.arena / 2, "arena with recompute %zu, without %zu", b.arena,
                  a.arena);
    const size_t NC = (size_t)B * T * s.C * sizeof(float);
    ck_assert_msg(b.plans <= a.plans + 3 * NC, "grad plans with recompute %zu, without %zu",
                  b.plans, a.plans);
    for (int bl = 0; bl < PBLOCK_COUNT; bl++)
        ck_assert(memcmp(a.grad[bl], b.grad[bl], m.ps.blocks[bl].n * sizeof(float)) == 0);
    /* forward only: logits */
    float *logits[2];
    size_t used[2];
    for (int rc = 0; rc < 2; rc++) {
        Tape t;
        tape_init(&t, 1 << 16);
        tape_reset(&t, false);
        StepCtx ctx = {.train = false, .seed = 7, .loss_scale = 1.0f, .recompute = rc == 1};
        ModelOut out;
        model_forward(&m, &t, in, NULL, B, T, &ctx, &out);
        logits[rc] = malloc(out.logits->n * sizeof(float));
        memcpy(logits[rc], out.logits->data, out.logits->n * sizeof(float));
        used[rc] = t.arena.high_water + (t.sub ? t.sub->arena.high_water : 0);
        tape_free(&t);
    }
    ck_assert(memcmp(logits[0], logits[1], (size_t)B * T * s.V * sizeof(float)) == 0);
    ck_assert_msg(used[1] < used[0] / 2, "forward-only arena %zu with recompute, %zu without",
                  used[1], used[0]);
    free(logits[0]);
    free(logits[1]);
    run_free(&a);
    run_free(&b);
    model_free(&m);
}
END_TEST

/* StepCtx.loss_chunk: the head + loss over 3 rows at a time (N = 10: chunks 3, 3, 3, 1)
 * gives the loss and gradients of the unchunked head up to float32 summation order (the
 * head's dW is a sum over chunks): 1e-6 absolute + 1e-4 relative, ~100 ulps of the larger
 * entries; a chunk counted twice or missed is off by O(10%). With recompute on as well. */
START_TEST(test_loss_chunk_matches) {
    ModelShape s = tiny_shape(4);
    make_batch(s.V);
    Model m;
    model_init(&m, &s, 0, 4, 99);
    float *g[2][PBLOCK_COUNT];
    double loss[2];
    for (int ck = 0; ck < 2; ck++) {
        Tape t;
        tape_init(&t, 1 << 16);
        StepCtx ctx = {.train = true, .seed = 7, .step = 3, .loss_scale = 1.0f,
                       .recompute = ck == 1, .loss_chunk = ck ? 3 : 0};
        ModelOut out;
        params_zero_grad(&m.ps);
        tape_reset(&t, true);
        model_forward(&m, &t, g_in, g_tg, TB, TT, &ctx, &out);
        ck_assert(ck || out.logits == NULL);
        tape_backward(&t, out.loss, NULL);
        loss[ck] = (double)out.loss->data[0];
        for (int b = 0; b < PBLOCK_COUNT; b++) {
            g[ck][b] = malloc(m.ps.blocks[b].n * sizeof(float) + 1);
            memcpy(g[ck][b], m.ps.blocks[b].grad, m.ps.blocks[b].n * sizeof(float));
        }
        tape_free(&t);
    }
    ck_assert_double_eq_tol(loss[1], loss[0], 1e-6 * fabs(loss[0]));
    for (int b = 0; b < PBLOCK_COUNT; b++) {
        ck_assert_double_le(tt_max_err(g[1][b], g[0][b], m.ps.blocks[b].n, 1e-6, 1e-4), 1.0);
        free(g[0][b]);
        free(g[1][b]);
    }
    model_free(&m);
}
END_TEST

int main(void) {
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("gradients");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_grad_moe);
    tcase_add_test(tc, test_grad_dense);
    suite_add_tcase(s, tc);
    tc = tcase_create("aux_losses");
    tcase_add_test(tc, test_aux_losses_uniform);
    suite_add_tcase(s, tc);
    tc = tcase_create("invariants");
    tcase_add_test(tc, test_grad_accumulation_equals_big_batch);
    tcase_add_test(tc, test_capacity_drops_overflow);
    tcase_add_loop_test(tc, test_no_allocation_after_first_step, 0, 2);
    suite_add_tcase(s, tc);
    tc = tcase_create("recompute");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_recompute_identical_moe);
    tcase_add_test(tc, test_recompute_identical_dense);
    tcase_add_test(tc, test_recompute_identical_capacity);
    tcase_add_test(tc, test_recompute_saves_memory);
    tcase_add_test(tc, test_loss_chunk_matches);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
