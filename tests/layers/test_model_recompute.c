/* test_model_recompute.c: the whole model's step variants that must not change results,
 * on the tiny shapes of model_test.h: per-layer activation recomputation
 * (StepCtx.recompute) gives bit-identical losses, gradients and routing statistics, and a
 * smaller arena; the chunked head + loss (StepCtx.loss_chunk) matches the unchunked one;
 * 1 and 2 threads agree (the row loops split over the cores); the product backends agree,
 * and bf16 products stay within a stated bound of fp32.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/blas.h"
#include "autograd/gemm.h"
#include "core/pool.h"
#include "layers/model.h"
#include "model_test.h"
#include "optim/adamw.h"
#include "testutil.h"

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

/* One model step at 1 and at 2 threads. Our own row loops split over the cores
 * (embedding, residual adds, router noise, gather, combine, router entropy:
 * pool_parallel_range) are bit-identical at any thread count, and their tests compare them
 * bit for bit (test_ops, test_ops_moe, test_moe). The matrix products go through OpenBLAS,
 * which promises no bit-reproducibility across thread counts: its kernels may split K
 * differently (seen with the Haswell and Zen kernels, not with SkylakeX), so the model as a
 * whole is compared with a tolerance. N = 1024 tokens of C = 128 over E = 8 experts make
 * every split loop pass POOL_SPLIT_MIN; router noise on; dropless, then capacity 0.5 (a
 * quarter of the slots dropped).
 * Tolerance: a float32 product's rounding depends on its summation order by up to about
 * K * 2^-24 relative (K <= 128 here: ~1e-5), and two layers of forward and backward carry it
 * on, most in the layers nearest the input. Measured (2 threads vs 1): losses 1.1e-7
 * relative, every gradient tensor within 1e-5..3.5e-5 of its largest element with the
 * Haswell and Zen kernels, 0 with SkylakeX. So losses agree to 1e-5 relative and each
 * gradient tensor to 3e-4 of its largest element (ten times the largest seen); a split
 * that skips the last element of each later range of the residual add's gradient moved
 * the embedding gradient by 1.3e-2 (tried), a token routed to another expert by more.
 * Routing is decided by comparisons of logits whose differences are far above 1e-6 for
 * this seed: the expert counts and drops must agree exactly. */
static double grad_rel_diff(const float *a, const float *b, size_t n) {
    double dmax = 0, bmax = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]), m = fabs((double)b[i]);
        if (d > dmax) dmax = d;
        if (m > bmax) bmax = m;
    }
    return bmax > 0 ? dmax / bmax : dmax;
}

/* N random input and target ids below V (malloc'ed: free both), drawn from seed. */
static void random_batch(int32_t **in, int32_t **tg, int N, int V, uint64_t seed) {
    *in = malloc(sizeof(int32_t) * (size_t)N);
    *tg = malloc(sizeof(int32_t) * (size_t)N);
    MoeRng r;
    rng_seed(&r, seed);
    for (int i = 0; i < N; i++) {
        (*in)[i] = (int32_t)(rng_next(&r) % (uint64_t)V);
        (*tg)[i] = (int32_t)(rng_next(&r) % (uint64_t)V);
    }
}

START_TEST(test_threads_agree) {
    ModelShape s = {.V = 64, .C = 128, .L = 2, .H = 4, .Hkv = 2, .D = 32, .F = 32, .E = 8,
                    .K = 2, .norm_eps = 1e-5f, .rope_theta = 10000.0f, .init_std = 0.3f,
                    .router_noise = true, .aux_coef = 0.01f, .z_coef = 0.001f};
    const int B = 8, T = 128, N = B * T;
    int32_t *in, *tg;
    random_batch(&in, &tg, N, s.V, 17);
    const int keep = blas_threads();
    for (int cap = 0; cap < 2; cap++) {
        s.capacity_factor = cap ? 0.5f : 0.0f;
        Model m;
        model_init(&m, &s, 0, s.E, 808);
        RunResult a, b;
        blas_set_threads(1);
        run_steps(&m, in, tg, B, T, false, &a);
        blas_set_threads(2);
        run_steps(&m, in, tg, B, T, false, &b);
        const double la[4] = {a.loss, a.lm, a.aux, a.z}, lb[4] = {b.loss, b.lm, b.aux, b.z};
        for (int k = 0; k < 4; k++)
            ck_assert_msg(fabs(la[k] - lb[k]) <= 1e-5 * fabs(lb[k]),
                          "capacity %d: loss term %d differs: %.9g at 1 thread, %.9g at 2", cap,
                          k, la[k], lb[k]);
        double worst = 0;
        for (int i = 0; i < m.ps.count; i++) {
            const Param *p = &m.ps.p[i];
            double d = grad_rel_diff(a.grad[p->block] + p->off, b.grad[p->block] + p->off,
                                     p->t.n);
            if (d > worst) worst = d;
            ck_assert_msg(d <= 3e-4, "capacity %d: gradient of %s differs between 1 and 2 "
                          "threads by %.3g of its largest element", cap, p->name, d);
        }
        fprintf(stderr, "threads: capacity %d worst gradient difference %.3g\n", cap, worst);
        ck_assert(memcmp(a.st.count, b.st.count, sizeof(double) * (size_t)s.L * s.E) == 0);
        ck_assert(memcmp(a.st.dropped, b.st.dropped, sizeof(double) * (size_t)s.L) == 0);
        if (cap) ck_assert_double_gt(a.st.dropped[0] + a.st.dropped[1], 0);
        run_free(&a);
        run_free(&b);
        model_free(&m);
    }
    blas_set_threads(keep);
    free(in);
    free(tg);
}
END_TEST

/* ---- matrix-product backends and bf16 (autograd/gemm.h) ---- */

/* One step of the test_threads_agree model (2 threads) on the given product path. */
static void path_step(Model *m, const int32_t *in, const int32_t *tg, int B, int T,
                      GemmBackend be, GemmPrecision pr, RunResult *r) {
    MoeErr err;
    ck_assert_msg(gemm_select(be, pr, &err) == 0, "%s", err.msg);
    run_steps(m, in, tg, B, T, false, r);
    ck_assert_msg(gemm_select(GEMM_OPENBLAS, GEMM_FP32, &err) == 0, "%s", err.msg);
}

/* Worst per-tensor gradient difference of a against b (of b's largest element) and the
 * losses' relative difference. */
static double grads_worst(const Model *m, const RunResult *a, const RunResult *b,
                          const char **who) {
    double worst = 0;
    for (int i = 0; i < m->ps.count; i++) {
        const Param *p = &m->ps.p[i];
        const double d = grad_rel_diff(a->grad[p->block] + p->off, b->grad[p->block] + p->off,
                                       p->t.n);
        if (d > worst) {
            worst = d;
            *who = p->name;
        }
    }
    return worst;
}

/* Two paths that differ only in the order of fp32 additions. fp32 (oneDNN against
 * OpenBLAS): as 1 and 2 threads (test_threads_agree's tolerance and argument: 1e-5 relative
 * on the losses, 3e-4 of each gradient tensor's largest element, routing identical).
 * bf16 (oneDNN against OpenBLAS's emulation: the same rounded inputs, products exact in
 * fp32): an order difference of ~1e-6 relative in an activation flips its bf16 rounding
 * when it sits within that distance of a rounding boundary (a fraction ~1e-6 / 2^-9 ~ 5e-4
 * of the values), and each flip moves that input by one bf16 step, 2^-8 relative; top-k
 * choices could flip too, so the bf16 model selects all 4 of 4 experts (no discrete choice,
 * every MoE kernel still runs). Measured: losses 3.4e-7 relative, gradients within 2.5e-3
 * of each tensor's largest element; bounds 1e-4 and 1e-2. This also checks the bf16
 * stand-ins (weights, attention's Q, K, V) are fresh and placed right: a stale or
 * misplaced copy moves gradients by O(1). */
START_TEST(test_backends_agree) {
    if (!gemm_onednn_available(NULL)) {
        fprintf(stderr, "oneDNN not built in: nothing to compare\n");
        return;
    }
    const int B = 8, T = 128, N = B * T;
    int32_t *in, *tg;
    random_batch(&in, &tg, N, 64, 17);
    const int keep = blas_set_threads(2);
    for (int bf = 0; bf < 2; bf++) {
        if (bf && !gemm_native_bf16()) continue;
        const GemmPrecision pr = bf ? GEMM_BF16 : GEMM_FP32;
        /* fp32: top-2 of 8 (routing identical); bf16: every expert selected (top-4 of 4),
         * see below */
        ModelShape s = {.V = 64, .C = 128, .L = 2, .H = 4, .Hkv = 2, .D = 32, .F = 32,
                        .E = bf ? 4 : 8, .K = bf ? 4 : 2, .norm_eps = 1e-5f,
                        .rope_theta = 10000.0f, .init_std = 0.02f, .router_noise = true,
                        .aux_coef = 0.01f, .z_coef = 0.001f};
        Model m;
        model_init(&m, &s, 0, s.E, 808);
        RunResult a, b;
        path_step(&m, in, tg, B, T, GEMM_OPENBLAS, pr, &a);
        path_step(&m, in, tg, B, T, GEMM_ONEDNN, pr, &b);
        const char *who = "";
        const double w = grads_worst(&m, &a, &b, &who);
        fprintf(stderr, "backends %s: loss %.3g relative, worst gradient difference %.3g "
                "(%s)\n", gemm_precision_name(pr), fabs(a.loss - b.loss) / fabs(b.loss), w, who);
        const double tol_loss = bf ? 1e-4 : 1e-5, tol_grad = bf ? 1e-2 : 3e-4;
        ck_assert_msg(fabs(a.loss - b.loss) <= tol_loss * fabs(b.loss), "%s: loss %.9g "
                      "openblas, %.9g onednn", gemm_precision_name(pr), a.loss, b.loss);
        ck_assert_msg(w <= tol_grad, "%s: gradient of %s differs between OpenBLAS and oneDNN "
                      "by %.3g of its largest element", gemm_precision_name(pr), who, w);
        ck_assert(memcmp(a.st.count, b.st.count, sizeof(double) * (size_t)s.L * s.E) == 0);
        run_free(&a);
        run_free(&b);
        model_free(&m);
    }
    blas_set_threads(keep);
    free(in);
    free(tg);
}
END_TEST

/* bf16 against fp32 on the whole model, dense and MoE (all 4 of 4 experts selected, so
 * no top-k choice flips; the router's logits are fp32 in both: op_linear_fp32). Each
 * product's inputs carry relative rounding errors up to 2^-9 each (8 significant bits), so
 * a product term is off by up to 2^-8 ~ 3.9e-3 relative; over sums of random-signed terms
 * the errors partly cancel, and two layers forward and backward carry them on. Measured
 * (init_std 0.02 as the shipped configs): losses 1.3e-5 relative, gradients within 7.9e-3
 * of each tensor's largest element. Bounds: losses 1e-3, each gradient tensor 5e-2 (six
 * times the largest seen; 13 bf16 steps). And the difference must exceed 1e-4: fp32
 * products (rounding skipped) agree with fp32 to ~1e-6 (test_backends_agree). */
START_TEST(test_bf16_near_fp32) {
    const int B = 4, T = 64, N = B * T;
    int32_t *in, *tg;
    random_batch(&in, &tg, N, 64, 23);
    for (int moe = 0; moe < 2; moe++) {
        ModelShape s = {.V = 64, .C = 128, .L = 2, .H = 4, .Hkv = 2, .D = 32, .F = 32,
                        .E = moe ? 4 : 0, .K = moe ? 4 : 0, .norm_eps = 1e-5f,
                        .rope_theta = 10000.0f, .init_std = 0.02f, .router_noise = true,
                        .aux_coef = 0.01f, .z_coef = 0.001f};
        if (!moe) s.F = 64;
        Model m;
        model_init(&m, &s, 0, s.E, 808);
        RunResult a, b;
        path_step(&m, in, tg, B, T, GEMM_OPENBLAS, GEMM_FP32, &a);
        path_step(&m, in, tg, B, T, GEMM_OPENBLAS, GEMM_BF16, &b);
        const char *who = "";
        const double w = grads_worst(&m, &b, &a, &who);
        fprintf(stderr, "bf16 vs fp32 (%s): loss %.3g relative, worst gradient difference "
                "%.3g (%s)\n", moe ? "MoE" : "dense", fabs(a.loss - b.loss) / fabs(a.loss), w,
                who);
        ck_assert_msg(fabs(a.loss - b.loss) <= 1e-3 * fabs(a.loss), "loss %.9g fp32, %.9g "
                      "bf16", a.loss, b.loss);
        ck_assert_msg(w <= 5e-2, "gradient of %s: bf16 differs from fp32 by %.3g of its "
                      "largest element", who, w);
        ck_assert_msg(w > 1e-4, "bf16 gradients within %.3g of fp32: inputs not rounded?", w);
        run_free(&a);
        run_free(&b);
        model_free(&m);
    }
    free(in);
    free(tg);
}
END_TEST

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

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    Suite *s = suite_create("model_recompute");
    TCase *tc;
    tc = tcase_create("recompute");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_recompute_identical_moe);
    tcase_add_test(tc, test_threads_agree);
    tcase_add_test(tc, test_backends_agree);
    tcase_add_test(tc, test_bf16_near_fp32);
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
