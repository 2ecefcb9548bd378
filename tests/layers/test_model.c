/* test_model.c: the whole model, end to end, on tiny shapes.
 * - gradients of every parameter (MoE and dense variants, and MoE with shared experts and a
 *   sliding window, and MoE routing with an aux-loss-free selection bias) against central
 *   differences of the total loss (LM + load-balancing + z-loss), router noise on;
 * - shared experts see every token: with the routed experts' down projections zeroed the
 *   FFN sub-block is exactly the shared SwiGLU (against a naive reference) for every token,
 *   and the shared weights get a gradient from every single token while a routed expert
 *   gets none from the tokens not routed to it;
 * - the load-balancing loss reads exactly coef at uniform router probabilities, and the
 *   z-loss matches a hand computation;
 * - k accumulated micro-batches give the same gradients as one big batch;
 * - a token seen only by ignored targets (LOSS_IGNORE; the last of each sequence in a dense
 *   causal model) changes neither the loss nor any gradient, bit for bit;
 * - a capacity limit drops exactly the overflow and counts it;
 * - after the first step nothing allocates (every router, with and without per-layer
 *   recomputation, with and without shared experts and a window);
 * - the routers of moe.router (topp, expert_choice): whole-model gradients, their
 *   statistics (experts per token, expert-choice capacity) and loss terms by hand;
 * - the topk variants (sigmoid scores, route scale, group-limited routing) with the global
 *   and sequence-wise balance losses: whole-model gradients.
 * Recomputation, the chunked head + loss and thread counts: test_model_recompute.c.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/blas.h"
#include "core/pool.h"
#include "layers/model.h"
#include "model_test.h"
#include "optim/adamw.h"
#include "testutil.h"


/* Central differences of the total loss for every parameter element. h = 1e-3 with the
 * loss in float32 (~1e-7 relative on a loss of ~2.4): FD noise ~ 2.4e-7/1e-3 = 2.4e-4, so
 * atol 1e-3; rtol 2e-2 covers the O(h^2) truncation on the curved parts (softmax, silu,
 * rmsnorm). A wrong factor or sign in any backward is off by far more than this. The
 * routing (top-k choice) is piecewise constant: with this seed no score pair sits within
 * h of a tie (if one did, that element would show a large mismatch, not a small one; the
 * shared-expert variants move layer 1's scores, and with seed 1234 one score pair of token
 * 9 sits within 1e-3 of a tie: its embedding row is off by 3-5% at h = 1e-3, 20-40% at
 * h = 3e-3 and within tolerance at h = 5e-4, a flip, not a wrong derivative; they use seed
 * 1237, which has no such pair). */
/* The topk variants and aux scopes a check applies (test_grad_moe_route sets it): 0 none;
 * 1 sigmoid scores, route scale 2, 2 groups with 1 kept, global scope; 2 softmax, 2 groups
 * with 1 kept, sequence scope. */
static int g_route_variant;

static void check_model_grads_opts(int E, int Fs, int W, uint64_t seed, bool bias,
                                   int router) {
    ModelShape s = tiny_shape(E);
    s.router = router;
    s.top_p = 0.5f;
    s.entropy_coef = 0.05f;   /* large enough that a wrong entropy gradient shows */
    s.Fs = Fs;
    s.W = W;
    if (g_route_variant) {
        s.score = g_route_variant == 1 ? MOE_SCORE_SIGMOID : MOE_SCORE_SOFTMAX;
        s.route_scale = g_route_variant == 1 ? 2.0f : 1.0f;
        s.n_groups = 2;
        s.topk_groups = 1;
        s.aux_scope = g_route_variant == 1 ? MOE_AUX_GLOBAL : MOE_AUX_SEQUENCE;
    }
    make_batch(s.V);
    Model m;
    model_init(&m, &s, 0, E, seed);
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
                    fprintf(stderr, "E=%d Fs=%d W=%d %s[%zu]: analytic %.6g numeric %.6g\n", E,
                            Fs, W, p->name, j, a, num);
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

static void check_model_grads(int E, int Fs, int W, uint64_t seed, bool bias) {
    check_model_grads_opts(E, Fs, W, seed, bias, MOE_ROUTER_TOPK);
}

START_TEST(test_grad_moe) { check_model_grads(4, 0, 0, 1234, false); }
END_TEST

START_TEST(test_grad_moe_bias) { check_model_grads(4, 0, 0, 1234, true); }
END_TEST

START_TEST(test_grad_dense) { check_model_grads(0, 0, 0, 1234, false); }
END_TEST

/* Shared experts (2 of width 3 = Fs 6), alone and with a window of 2 (T = 5, so it
 * masks): the shared SwiGLU's and the windowed attention's gradients inside the whole
 * model (every parameter, the shared gate/up/down projections included). */
START_TEST(test_grad_moe_shared_window) {
    check_model_grads(4, 6, 0, 1237, false);
    check_model_grads(4, 6, 2, 1237, false);
}
END_TEST

START_TEST(test_grad_dense_window) { check_model_grads(0, 0, 3, 1234, false); }
END_TEST

/* ---- shared experts see every token ---- */

static double silu_d(double x) { return x / (1.0 + exp(-x)); }

/* The FFN sub-block of a one-layer model with shared experts on random inputs hn (N, C):
 * 1. routed w2 = 0: out[n] = w2s (silu(w1s x_n) * w3s x_n) for EVERY n, against a naive
 *    double reference. Tolerance 1e-5 + 1e-4 relative: float32 sgemm over C = 8 and Fs = 6
 *    terms of O(1) values rounds at ~1e-6; a dropped token or a missing term is O(0.1).
 * 2. seeding the gradient of token n alone: the shared w1s, w3s, w2s all get a non-zero
 *    gradient, for every n; routed expert e's w1 gets one only if n was routed to e (the
 *    contrast that makes 2 a test of "always active"). */
START_TEST(test_shared_experts_see_every_token) {
    ModelShape s = tiny_shape(4);
    s.L = 1;
    s.Fs = 6;
    s.router_noise = false;
    enum { N = 9 };
    const int C = s.C, Fs = s.Fs;
    Model m;
    model_init(&m, &s, 0, 4, 21);
    const LayerParams *lp = &m.layer[0];
    Tensor *hn = tt_tensor2(N, C, TENSOR_CONST, "hn");
    tt_fill_normal(hn, 5, 1.0f);
    MoeLayerArgs a = {.layer = 0, .L = 1, .E = 4, .K = 2, .F = s.F, .e_first = 0, .e_local = 4};
    Tape t;
    tape_init(&t, 1 << 16);

    /* 1: routed experts silenced */
    Tensor *w2 = &m.ps.p[lp->w2].t;
    float *keep = moe_malloc(sizeof(float) * w2->n);
    memcpy(keep, w2->data, sizeof(float) * w2->n);
    memset(w2->data, 0, sizeof(float) * w2->n);
    tape_reset(&t, false);
    Tensor *aux = NULL, *z = NULL;
    Tensor *y = model_ffn(&m, &t, 0, hn, &a, &aux, &z);
    const float *w1s = m.ps.p[lp->sw1].t.data, *w3s = m.ps.p[lp->sw3].t.data,
                *w2s = m.ps.p[lp->sw2].t.data;
    float ref[N * 8];
    for (int n = 0; n < N; n++) {
        double h[16];
        for (int f = 0; f < Fs; f++) {
            double g = 0.0, u = 0.0;
            for (int c = 0; c < C; c++) {
                g += (double)w1s[f * C + c] * (double)hn->data[n * C + c];
                u += (double)w3s[f * C + c] * (double)hn->data[n * C + c];
            }
            h[f] = silu_d(g) * u;
        }
        for (int c = 0; c < C; c++) {
            double o = 0.0;
            for (int f = 0; f < Fs; f++) o += (double)w2s[c * Fs + f] * h[f];
            ref[n * C + c] = (float)o;
        }
    }
    ck_assert_double_le(tt_max_err(y->data, ref, (size_t)N * C, 1e-5, 1e-4), 1.0);
    for (int n = 0; n < N; n++) {   /* and no token is trivially zero */
        double nrm = 0.0;
        for (int c = 0; c < C; c++) nrm += fabs((double)ref[n * C + c]);
        ck_assert_double_gt(nrm, 1e-3);
    }
    memcpy(w2->data, keep, sizeof(float) * w2->n);
    moe_free(keep);

    /* 2: per-token gradients */
    const int shared[3] = {lp->sw1, lp->sw3, lp->sw2};
    int32_t idx_seen[4] = {0};
    for (int n = 0; n < N; n++) {
        params_zero_grad(&m.ps);
        tape_reset(&t, true);
        aux = z = NULL;
        moe_stats_reset(&m.stats);
        y = model_ffn(&m, &t, 0, hn, &a, &aux, &z);
        float *seed = moe_calloc(sizeof(float) * (size_t)N * C);
        for (int c = 0; c < C; c++) seed[n * C + c] = 1.0f;
        tape_backward(&t, y, seed);
        moe_free(seed);
        for (int k = 0; k < 3; k++) {
            const Tensor *g = &m.ps.p[shared[k]].t;
            int nz = 0;
            for (size_t j = 0; j < g->n; j++) nz += g->grad[j] != 0.0f;
            ck_assert_msg(nz > 0, "token %d gave no gradient to %s", n, m.ps.p[shared[k]].name);
        }
        /* routed: expert e's w1 slice has a gradient iff token n chose e (the stats count
         * this forward's routing: 2 slots for the one call) */
        const Tensor *g1 = &m.ps.p[lp->w1].t;
        const size_t per = g1->n / 4;
        int with_grad = 0;
        for (int e = 0; e < 4; e++) {
            int nz = 0;
            for (size_t j = 0; j < per; j++) nz += g1->grad[(size_t)e * per + j] != 0.0f;
            if (nz) {
                with_grad++;
                idx_seen[e]++;
            }
        }
        ck_assert_int_eq(with_grad, s.K);   /* exactly the K chosen experts, not all 4 */
    }
    tt_free(hn);
    tape_free(&t);
    model_free(&m);
}
END_TEST

/* The same whole-model check with top-p routing (p = 0.5: tokens take 1..4 experts, the
 * entropy penalty in aux) and with expert choice (each of the 4 experts takes
 * ceil(10 * 2 / 4) = 5 of the 10 tokens; no load-balancing term). */
START_TEST(test_grad_moe_topp) { check_model_grads_opts(4, 0, 0, 1234, false, MOE_ROUTER_TOPP); }
END_TEST

/* The same with the topk variants (autograd/ops_route_topk.c) and aux scopes: sigmoid
 * gates scaled by 2 from 1 of 2 groups with the global balance loss (one call: the step's
 * counts are this call's), and softmax from 1 of 2 groups with the per-sequence loss. */
START_TEST(test_grad_moe_route) {
    g_route_variant = 1 + _i;
    check_model_grads_opts(4, 0, 0, 1234, false, MOE_ROUTER_TOPK);
    g_route_variant = 0;
}
END_TEST

START_TEST(test_grad_moe_expert_choice) {
    check_model_grads_opts(4, 0, 0, 1234, false, MOE_ROUTER_EXPERT_CHOICE);
}
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

/* Routers with a zero router (uniform probabilities 1/8, noise off), by hand:
 * - topp, p = 0.5: every token takes experts 0..3 (ties -> lower index; 4/8 = 0.5 reaches
 *   p exactly in float), so 4 experts per token; aux = load balancing (coef at uniform P,
 *   whatever f is) + entropy coef * ln 8 (the entropy of a uniform distribution);
 * - expert_choice: no load-balancing term (aux = 0); each expert takes exactly
 *   ceil(N K / E) = ceil(10 * 2 / 8) = 3 tokens: 3 * 8 / 10 = 2.4 experts per token; the
 *   ties go to the lowest token indices 0, 1, 2, so tokens 3..9 have no expert (dropped 7);
 * - topk: K = 2 experts per token.
 * The z-loss is the same for all: coef_z (ln 8)^2. Tolerances: float32 sums of a handful
 * of terms, 1e-6 relative. */
START_TEST(test_router_stats_uniform) {
    const int routers[3] = {MOE_ROUTER_TOPK, MOE_ROUTER_TOPP, MOE_ROUTER_EXPERT_CHOICE};
    const double lnE = log(8.0), want_experts[3] = {2.0, 4.0, 2.4};
    for (int r = 0; r < 3; r++) {
        ModelShape s = tiny_shape(8);
        s.router_noise = false;
        s.router = routers[r];
        s.top_p = 0.5f;
        s.entropy_coef = 0.02f;
        make_batch(s.V);
        Model m;
        model_init(&m, &s, 0, 8, 5);
        for (int l = 0; l < s.L; l++) {
            Tensor *w = &m.ps.p[m.layer[l].router].t;
            memset(w->data, 0, w->n * sizeof(float));
        }
        Tape t;
        tape_init(&t, 1 << 20);
        ModelOut out;
        loss_of(&m, &t, true, &out);
        const double want_aux = r == 0 ? 0.01 : r == 1 ? 0.01 + 0.02 * lnE : 0.0;
        ck_assert_msg(fabs(out.aux_loss - want_aux) <= 1e-6 * want_aux + 1e-12,
                      "router %d: aux %.9g want %.9g", r, out.aux_loss, want_aux);
        ck_assert_double_eq_tol(out.z_loss, 0.001 * lnE * lnE, 1e-8);
        for (int l = 0; l < s.L; l++) {
            ck_assert_msg(fabs(m.stats.experts[l] - want_experts[r]) <= 1e-12,
                          "router %d layer %d: %.6g experts per token", r, l, m.stats.experts[l]);
            if (r == 2) {
                for (int e = 0; e < 8; e++)
                    ck_assert_double_eq(m.stats.count[(size_t)l * 8 + e], 3);
                ck_assert_double_eq(m.stats.dropped[l], 7);
            } else {
                ck_assert_double_eq(m.stats.dropped[l], 0);
            }
        }
        tape_backward(&t, out.loss, NULL);
        ck_assert(isfinite(sqrt(grad_sumsq_block(&m.ps, PBLOCK_DENSE))));
        tape_free(&t);
        model_free(&m);
    }
}
END_TEST

/* Expert choice on random routers: every expert takes exactly its capacity in every layer
 * (ceil(10 * 2 * 1.5 / 4) = 8 with capacity_factor 1.5), whatever the scores. */
START_TEST(test_expert_choice_capacity) {
    ModelShape s = tiny_shape(4);
    s.router = MOE_ROUTER_EXPERT_CHOICE;
    s.capacity_factor = 1.5f;
    make_batch(s.V);
    Model m;
    model_init(&m, &s, 0, 4, 21);
    Tape t;
    tape_init(&t, 1 << 20);
    ModelOut out;
    loss_of(&m, &t, true, &out);
    for (int l = 0; l < s.L; l++)
        for (int e = 0; e < 4; e++)
            ck_assert_msg(m.stats.count[(size_t)l * 4 + e] == 8, "layer %d expert %d took %g",
                          l, e, m.stats.count[(size_t)l * 4 + e]);
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

/* Fine-tuning's masking end to end: in a dense model (no router, whose load-balancing loss
 * would see every token) the last input token of a sequence is seen only by its own
 * position (causal attention), whose target is ignored. Two batches that differ only in
 * those tokens, with more targets ignored elsewhere and the loss divided by a given count,
 * give bit-identical losses and gradients: an ignored position adds exact zeros (the same
 * arithmetic on both); a changed input with a live target is seen (checked, so the test can
 * fail). */
START_TEST(test_ignored_tokens_change_nothing) {
    ModelShape s = tiny_shape(0);
    make_batch(s.V);
    Model m;
    model_init(&m, &s, 0, 0, 4321);
    Tape t;
    tape_init(&t, 1 << 20);
    int32_t in[3][TB * TT], tg[TB * TT];
    memcpy(tg, g_tg, sizeof tg);
    tg[1] = LOSS_IGNORE;   /* a prompt token inside the first sequence, too */
    for (int b = 0; b < TB; b++) tg[b * TT + TT - 1] = LOSS_IGNORE;
    for (int k = 0; k < 3; k++) memcpy(in[k], g_in, sizeof g_in);
    for (int b = 0; b < TB; b++) in[1][b * TT + TT - 1] = (g_in[b * TT + TT - 1] + 3) % s.V;
    in[2][TT - 2] = (g_in[TT - 2] + 3) % s.V;   /* seen by a live target */
    const size_t n = m.ps.blocks[PBLOCK_DENSE].n;
    float *g[3], loss[3];
    for (int k = 0; k < 3; k++) {
        params_zero_grad(&m.ps);
        StepCtx ctx = {.train = true, .seed = 7, .step = 3, .loss_scale = 0.5f,
                       .lm_denom = 4.0};
        ModelOut out;
        tape_reset(&t, true);
        model_forward(&m, &t, in[k], tg, TB, TT, &ctx, &out);
        tape_backward(&t, out.loss, NULL);
        loss[k] = out.loss->data[0];
        g[k] = moe_malloc(n * sizeof(float));
        memcpy(g[k], m.ps.blocks[PBLOCK_DENSE].grad, n * sizeof(float));
    }
    ck_assert_msg(isfinite(loss[0]) && loss[0] == loss[1], "loss %.9g vs %.9g", (double)loss[0],
                  (double)loss[1]);
    ck_assert_msg(!memcmp(g[0], g[1], n * sizeof(float)), "a gradient differs");
    ck_assert_msg(loss[2] != loss[0] && memcmp(g[0], g[2], n * sizeof(float)),
                  "a changed token under a live target changed nothing");
    for (int k = 0; k < 3; k++) moe_free(g[k]);
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
    /* _i = router + 3 * recompute: the three routers (MOE_ROUTER_TOPK, _TOPP,
     * _EXPERT_CHOICE), each with every activation kept and recomputed per layer with the
     * head + loss in chunks of 3 rows (the sub tape's arena, ops and grad plan also settle
     * in the first step); each for the default model and with shared experts + a window. */
    const int router = _i % 3;
    const bool rec = _i >= 3;
    for (int opt = 0; opt < 2; opt++) {
        ModelShape s = tiny_shape(4);
        s.router = router;
        s.top_p = 0.5f;
        s.entropy_coef = 0.01f;
        s.Fs = opt ? 6 : 0;
        s.W = opt ? 2 : 0;
        make_batch(s.V);
        Model m;
        model_init(&m, &s, 0, 4, 1);
        Tape t;
        tape_init(&t, 1 << 10);   /* small chunks so the first step grows the arenas */
        AdamWConfig ac = {0.9f, 0.95f, 1e-8f, 0.1f};
        /* Top-p routes a varying number of slots, so its expert activations vary from step
         * to step (bounded by N x max_experts per layer): the arena may grow in a step that
         * routes more slots than every earlier one, and only then. Fixed-size routers
         * never allocate after the first step. */
        double peak_slots = 0.0;
        for (int step = 0; step < 4; step++) {
            params_zero_grad(&m.ps);
            moe_stats_reset(&m.stats);
            ModelOut out;
            StepCtx ctx = {.train = true, .seed = 7, .step = 3, .loss_scale = 1.0f,
                           .recompute = rec, .loss_chunk = rec ? 3 : 0};
            const size_t before = moe_alloc_calls();
            tape_reset(&t, true);
            model_forward(&m, &t, g_in, g_tg, TB, TT, &ctx, &out);
            tape_backward(&t, out.loss, NULL);
            adamw_step(&m.ps, &ac, 1e-3f, step + 1);
            if (step == 0)
                ck_assert_msg(t.arena.grows > 1, "chunk size too big to exercise several chunks");
            double slots = 0.0;
            for (int l = 0; l < s.L; l++) slots += m.stats.experts[l];
            if (step > 0 && (router != MOE_ROUTER_TOPP || slots <= peak_slots))
                ck_assert_uint_eq(moe_alloc_calls(), before);
            if (slots > peak_slots) peak_slots = slots;
        }
        tape_free(&t);
        model_free(&m);
    }
}
END_TEST

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("gradients");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_grad_moe);
    tcase_add_test(tc, test_grad_moe_bias);
    tcase_add_test(tc, test_grad_dense);
    tcase_add_test(tc, test_grad_moe_shared_window);
    tcase_add_test(tc, test_grad_dense_window);
    tcase_add_test(tc, test_grad_moe_topp);
    tcase_add_loop_test(tc, test_grad_moe_route, 0, 2);
    tcase_add_test(tc, test_grad_moe_expert_choice);
    suite_add_tcase(s, tc);
    tc = tcase_create("shared_experts");
    tcase_add_test(tc, test_shared_experts_see_every_token);
    suite_add_tcase(s, tc);
    tc = tcase_create("routers");
    tcase_add_test(tc, test_router_stats_uniform);
    tcase_add_test(tc, test_expert_choice_capacity);
    suite_add_tcase(s, tc);
    tc = tcase_create("aux_losses");
    tcase_add_test(tc, test_aux_losses_uniform);
    suite_add_tcase(s, tc);
    tc = tcase_create("invariants");
    tcase_add_test(tc, test_grad_accumulation_equals_big_batch);
    tcase_add_test(tc, test_ignored_tokens_change_nothing);
    tcase_add_test(tc, test_capacity_drops_overflow);
    tcase_add_loop_test(tc, test_no_allocation_after_first_step, 0, 6);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
