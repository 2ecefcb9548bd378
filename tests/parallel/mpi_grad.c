/* mpi_grad.c: under mpirun -n R with expert parallelism EP (argv[1]), the gradients after
 * one step (all-to-all dispatch, all-reduces) equal those of one process holding every
 * expert and the whole global batch. Every rank builds both: the single-process reference
 * (no communication) and its own shard of the distributed model. Checked for the default
 * model and with the architecture options on (shared experts, replicated and all-reduced
 * with the dense block; a sliding window of 3 < T).
 * Also: with aux-loss-free balancing on, a few steps of routing + bias update leave every
 * rank with bit-identical biases, equal to the single process's (the loads are integer sums
 * over all ranks, whatever EP), and the same losses.
 * argv[2] names the router (moe.router; default topk), or sigmoid_seq (topk with sigmoid
 * scores x 2 from 1 of 2 expert groups, sequence-wise balance loss) or groups_global
 * (softmax from 1 of 2 groups, global balance loss), whose references are single passes. topp routes each token on its own,
 * so the reference is the same single pass. expert_choice selects among each rank's own
 * tokens (docs/architecture.md: per-rank micro-batch, not layout-invariant), so its reference runs the R
 * rank batches one after the other on the single process (loss scale 1/R each, grads
 * accumulated): what the distributed step must equal.
 * With per-layer recomputation the distributed gradients are bit-identical to those
 * without it.
 * With LOSS_IGNORE targets spread unevenly over the ranks (fine-tuning's prompt tokens),
 * each rank dividing its sum by the global count / R (StepCtx.lm_denom, train/train.c's
 * normalisation) gives the single process's mean over the whole batch's targets, loss and
 * gradients: a per-rank mean would weight the ranks' targets unequally.
 * argv[2] = lora: the same gradient check for a LoRA fine-tune with adapters on q, the
 * experts' w1/w2/w3 and the router's gate (dropout 0.1 on q and the gate), B random: per
 * expert (EXPERT-block adapters sharded with their experts, reduced over the expert-data
 * group) and shared across experts (DENSE-block adapters whose gradient sums every rank's
 * experts' rows in the dense all-reduce); only the adapters train.
 * The distributed gradients go through the trainer's reduction (parallel/reduce.h: owned
 * summation order, small buckets reduced during the backward).
 * Run by ctest as `mpirun -n 4 mpi_grad EP [ROUTER | lora]` for EP = 1, 2, 4 (EP = 1: pure
 * data parallel), and with MOE_TEST_A2A_CHUNKS=4 (the pipelined exchange,
 * parallel/expert_pipe.h) for EP = 2, 4.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/blas.h"
#include "autograd/gemm.h"
#include "layers/model.h"
#include "layers/router_bias.h"
#include "parallel/dp.h"
#include "parallel/exchange.h"
#include "parallel/reduce.h"
#include "testutil.h"

static Comm g_comm;
static struct MoeExchange g_ex;   /* MOE_TEST_A2A_CHUNKS (ctest): parallel.a2a_chunks */
static int g_ep = 1;
static int g_router = MOE_ROUTER_TOPK;
/* argv[2] sigmoid_seq / groups_global: the topk router with its variants (0 = none) */
static int g_variant;
static const LoraSpec *g_lora;   /* adapters on both models (NULL = none) */

static uint64_t fnv_name(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h;
}

/* The adapters' B (zero at init) set to values keyed by (name, global element index), so
 * every rank layout holds the same numbers; dropout on for the targets that take it. */
static void lora_values(Model *m) {
    if (!g_lora) return;
    m->lora.dropout = 0.1f;   /* q and gate only: expert adapters have none (lora.h) */
    for (int i = 0; i < m->ps.count; i++) {
        Param *p = &m->ps.p[i];
        if (!strstr(p->name, ".lora_B.")) continue;
        size_t j0 = 0;
        if (p->block == PBLOCK_EXPERT) j0 = (size_t)m->e_first * (p->t.n / (size_t)m->e_local);
        for (size_t j = 0; j < p->t.n; j++)
            p->t.data[j] = 0.6f * (float)moe_u01(moe_hash4(17, fnv_name(p->name), j0 + j, 0)) -
                           0.3f;
    }
}

enum { GB = 4, T = 5 };

static ModelShape shape(void) {
    ModelShape s = {.V = 13, .C = 8, .L = 2, .H = 2, .Hkv = 1, .D = 4, .F = 6, .E = 4, .K = 2,
                    .norm_eps = 1e-5f, .rope_theta = 10000.0f, .init_std = 0.3f,
                    .capacity_factor = 0.0f, .router_noise = true, .aux_coef = 0.01f,
                    .z_coef = 0.001f, .router = g_router, .top_p = 0.6f,
                    .entropy_coef = 0.01f};
    if (g_variant) {   /* 1 of 2 groups of 2 experts; sigmoid x 2 or softmax */
        s.score = g_variant == 1 ? MOE_SCORE_SIGMOID : MOE_SCORE_SOFTMAX;
        s.route_scale = g_variant == 1 ? 2.0f : 1.0f;
        s.n_groups = 2;
        s.topk_groups = 1;
        s.aux_scope = g_variant == 1 ? MOE_AUX_SEQUENCE : MOE_AUX_GLOBAL;
    }
    return s;
}

/* masked: targets LOSS_IGNORE unevenly (row 0 keeps 1 of its T, row 1 all, rows 2.. every
 * other one), and every call divides by the whole batch's count over the calls. */
static void check_grads_match_m(ModelShape s, bool masked) {
    int32_t in[GB * T], tg[GB * T];
    MoeRng r;
    rng_seed(&r, 42);   /* same batch on every rank */
    for (int i = 0; i < GB * T; i++) {
        in[i] = (int32_t)(rng_next(&r) % 13);
        tg[i] = (int32_t)(rng_next(&r) % 13);
    }
    int n_scored = 0;
    for (int i = 0; i < GB * T; i++) {
        const int row = i / T, col = i % T;
        if (masked && ((row == 0 && col != 2) || (row >= 2 && col % 2 == 1)))
            tg[i] = LOSS_IGNORE;
        n_scored += tg[i] != LOSS_IGNORE;
    }
    /* reference: one process, all experts, whole batch (expert choice: the R rank
     * batches in turn, see the file comment) */
    const Comm *c = &g_comm;
    int El = s.E / c->ep, Bl = GB / c->size, row0 = c->rank * Bl;
    Model ref;
    model_init_lora(&ref, &s, g_lora, 0, s.E, 9);
    lora_values(&ref);
    Tape t;
    tape_init(&t, 1 << 20);
    ModelOut out;
    StepCtx ctx = {.train = true, .seed = 3, .step = 5, .token_base = 0, .loss_scale = 1.0f};
    params_zero_grad(&ref.ps);
    double ref_loss = 0.0;
    const int parts = g_router == MOE_ROUTER_EXPERT_CHOICE ? c->size : 1;
    for (int b = 0; b < parts; b++) {
        const int rows = GB / parts;
        StepCtx bctx = ctx;
        bctx.token_base = (long)b * rows * T;
        bctx.loss_scale = 1.0f / (float)parts;
        bctx.lm_denom = masked ? (double)n_scored / parts : 0.0;
        tape_reset(&t, true);
        model_forward(&ref, &t, in + b * rows * T, tg + b * rows * T, rows, T, &bctx, &out);
        tape_backward(&t, out.loss, NULL);
        ref_loss += (out.lm_loss + out.aux_loss + out.z_loss) / parts;
    }
    Model dm;
    model_init_lora(&dm, &s, g_lora, c->ep_rank * El, El, 9);
    lora_values(&dm);
    if (c->size > 1) dm.exchange = &g_ex;
    StepCtx dctx = ctx;
    dctx.token_base = (long)row0 * T;
    dctx.lm_denom = masked ? (double)n_scored / c->size : 0.0;
    params_zero_grad(&dm.ps);
    tape_reset(&t, true);
    model_forward(&dm, &t, in + row0 * T, tg + row0 * T, Bl, T, &dctx, &out);
    /* the reduction the trainer runs: owned order, buckets of 32 floats (cutting tensors)
     * launched from the backward's marks (parallel/reduce.h) */
    GradReduce red;
    int *final_at = malloc(sizeof(int) * (size_t)dm.ps.count);
    model_grad_final_at(&dm, final_at);
    grad_reduce_init(&red, &dm.ps, c, 32, final_at, true);
    grad_reduce_begin(&red, false);
    t.hook = grad_reduce_hook;
    t.hook_ctx = &red;
    tape_backward(&t, out.loss, NULL);
    t.hook = NULL;
    grad_reduce_finish(&red);
    grad_reduce_free(&red);
    free(final_at);
    double loss = out.lm_loss + out.aux_loss + out.z_loss;
    comm_sum_world_d(c, &loss, 1);
    loss /= c->size;
    /* loss: mean over ranks of per-rank means = global mean; 1e-5 relative covers float32
     * sums in a different order */
    ck_assert_double_eq_tol(loss, ref_loss, 1e-5 * ref_loss);

    /* gradients: float32 sums in a different order (split batch, all-reduce); 1e-6 absolute
     * + 1e-4 relative is ~100 ulps of the larger entries, far below a missing or doubled
     * contribution (which is O(1) relative). */
    int bad = 0;
    for (int i = 0; i < dm.ps.count; i++) {
        Param *p = &dm.ps.p[i];
        Param *q = &ref.ps.p[i];
        ck_assert_str_eq(p->name, q->name);
        ck_assert(p->trainable == q->trainable);
        if (!p->trainable) continue;   /* a frozen base tensor has no gradient */
        const float *g = p->t.grad, *gr = q->t.grad;
        size_t n = p->t.n;
        if (p->block == PBLOCK_EXPERT) gr += (size_t)dm.e_first * (p->t.n / (size_t)El);
        double e = tt_max_err(g, gr, n, 1e-6, 1e-4);
        if (e > 1.0) {
            fprintf(stderr, "[rank %d] %s: gradient differs (max err %.3g)\n", c->rank,
                    p->name, e);
            bad++;
        }
    }
    ck_assert_int_eq(bad, 0);
    tape_free(&t);
    model_free(&dm);
    model_free(&ref);
}

static void check_grads_match(ModelShape s) { check_grads_match_m(s, false); }

START_TEST(test_grads_match_single_process) { check_grads_match(shape()); }
END_TEST

START_TEST(test_grads_match_masked_targets) { check_grads_match_m(shape(), true); }
END_TEST

START_TEST(test_grads_match_shared_window) {
    ModelShape s = shape();
    s.Fs = 6;   /* e.g. 2 shared experts of width 3 */
    s.W = 3;
    check_grads_match(s);
}
END_TEST

static void check_lora(bool shared) {
    LoraSpec lo = {.rank = 2, .alpha = 3.0f, .expert_shared = shared,
                   .targets = (1u << LORA_Q) | LORA_EXPERT_MASK | (1u << LORA_GATE)};
    g_lora = &lo;
    check_grads_match(shape());
    g_lora = NULL;
}

START_TEST(test_grads_match_lora_per_expert) { check_lora(false); }
END_TEST

START_TEST(test_grads_match_lora_shared) { check_lora(true); }
END_TEST

START_TEST(test_router_bias_same_everywhere) {
    ModelShape s = shape();
    s.aux_coef = 0.0f;   /* the bias alone balances (and a wrong load shows in the bias first) */
    int32_t in[GB * T], tg[GB * T];
    MoeRng r;
    rng_seed(&r, 43);
    for (int i = 0; i < GB * T; i++) {
        in[i] = (int32_t)(rng_next(&r) % 13);
        tg[i] = (int32_t)(rng_next(&r) % 13);
    }
    const Comm *c = &g_comm;
    int El = s.E / c->ep, Bl = GB / c->size, row0 = c->rank * Bl;
    Model ref, dm;
    model_init(&ref, &s, 0, s.E, 9);
    model_init(&dm, &s, c->ep_rank * El, El, 9);
    ref.use_router_bias = dm.use_router_bias = true;
    if (c->size > 1) dm.exchange = &g_ex;
    Tape t;
    tape_init(&t, 1 << 20);
    const float rate = 0.3f;   /* large, so the bias changes the routing within 4 steps */
    const int n = s.L * s.E;
    float hi[2 * 4], lo[2 * 4];
    double grew = 0.0;   /* max |b| over the steps */
    for (int step = 0; step < 4; step++) {
        StepCtx ctx = {.train = true, .seed = 3, .step = step, .loss_scale = 1.0f};
        ModelOut out;
        moe_stats_reset(&ref.stats);
        tape_reset(&t, false);
        model_forward(&ref, &t, in, tg, GB, T, &ctx, &out);
        double ref_loss = out.lm_loss + out.aux_loss + out.z_loss;
        router_bias_update(ref.router_bias, ref.stats.count, s.L, s.E, rate);
        grew = fmax(grew, router_bias_max_abs(ref.router_bias, n));

        StepCtx dctx = ctx;
        dctx.token_base = (long)row0 * T;
        moe_stats_reset(&dm.stats);
        tape_reset(&t, false);
        model_forward(&dm, &t, in + row0 * T, tg + row0 * T, Bl, T, &dctx, &out);
        double loss = out.lm_loss + out.aux_loss + out.z_loss;
        comm_sum_world_d(c, &loss, 1);
        loss /= c->size;
        /* as the gradient test: float32 sums in another order */
        ck_assert_double_eq_tol(loss, ref_loss, 1e-5 * ref_loss);
        router_bias_update(dm.router_bias, dm.stats.count, s.L, s.E, rate);
        /* identical bits on every rank: max and min over the ranks agree with our value */
        if (c->mpi) {
            MPI_Allreduce(dm.router_bias, hi, n, MPI_FLOAT, MPI_MAX, c->world);
            MPI_Allreduce(dm.router_bias, lo, n, MPI_FLOAT, MPI_MIN, c->world);
        } else {
            memcpy(hi, dm.router_bias, sizeof(float) * (size_t)n);
            memcpy(lo, dm.router_bias, sizeof(float) * (size_t)n);
        }
        for (int j = 0; j < n; j++) {
            ck_assert_msg(hi[j] == lo[j] && hi[j] == dm.router_bias[j],
                          "step %d: rank %d bias[%d] = %.9g, range over ranks [%.9g, %.9g]",
                          step, c->rank, j, (double)dm.router_bias[j], (double)lo[j],
                          (double)hi[j]);
            ck_assert_msg(dm.router_bias[j] == ref.router_bias[j],
                          "step %d: bias[%d] = %.9g, single process %.9g", step, j,
                          (double)dm.router_bias[j], (double)ref.router_bias[j]);
        }
    }
    /* the test means something: the bias grew to at least one full step (at some step: with
     * sigmoid_seq a step of 0.3 in affinity units flips whole groups, and the bias swings
     * back to 0 every other step) */
    ck_assert(grew >= (double)rate);
    tape_free(&t);
    model_free(&dm);
    model_free(&ref);
}
END_TEST

/* Per-layer recomputation under expert parallelism: the recomputed forward runs the
 * all-to-alls (and the count all-reduce) again, in the same order on every rank, so the
 * distributed step with recompute must give the loss and gradients of the same step
 * without it BIT for bit (same ranks, same operations), and hence also match the single
 * process within the tolerance above. */
START_TEST(test_recompute_matches_plain) {
    ModelShape s = shape();
    int32_t in[GB * T], tg[GB * T];
    MoeRng r;
    rng_seed(&r, 43);
    for (int i = 0; i < GB * T; i++) {
        in[i] = (int32_t)(rng_next(&r) % 13);
        tg[i] = (int32_t)(rng_next(&r) % 13);
    }
    const Comm *c = &g_comm;
    int El = s.E / c->ep, Bl = GB / c->size, row0 = c->rank * Bl;
    Model dm;
    model_init(&dm, &s, c->ep_rank * El, El, 9);
    if (c->size > 1) dm.exchange = &g_ex;
    float *g[2][PBLOCK_COUNT];
    double loss[2];
    for (int rc = 0; rc < 2; rc++) {
        Tape t;
        tape_init(&t, 1 << 12);
        ModelOut out;
        for (int step = 0; step < 2; step++) {   /* the second on compacted arenas */
            StepCtx ctx = {.train = true, .seed = 3, .step = 5, .token_base = (long)row0 * T,
                           .loss_scale = 1.0f, .recompute = rc == 1};
            params_zero_grad(&dm.ps);
            moe_stats_reset(&dm.stats);   /* one step each: the global scope's counts */
            tape_reset(&t, true);
            model_forward(&dm, &t, in + row0 * T, tg + row0 * T, Bl, T, &ctx, &out);
            tape_backward(&t, out.loss, NULL);
            if (step == 0) tape_compact(&t);
        }
        ck_assert((t.sub != NULL) == (rc == 1));
        dp_reduce_grads(&dm.ps, c);
        loss[rc] = (double)out.loss->data[0];
        for (int b = 0; b < PBLOCK_COUNT; b++) {
            g[rc][b] = malloc(dm.ps.blocks[b].n * sizeof(float) + 1);
            memcpy(g[rc][b], dm.ps.blocks[b].grad, dm.ps.blocks[b].n * sizeof(float));
        }
        tape_free(&t);
    }
    ck_assert_msg(loss[0] == loss[1], "[rank %d] loss %.9g without, %.9g with recompute",
                  c->rank, loss[0], loss[1]);
    int bad = 0;
    for (int i = 0; i < dm.ps.count; i++) {
        const Param *p = &dm.ps.p[i];
        if (memcmp(g[0][p->block] + p->off, g[1][p->block] + p->off, p->t.n * sizeof(float))) {
            fprintf(stderr, "[rank %d] %s: gradient differs with recompute\n", c->rank, p->name);
            bad++;
        }
    }
    ck_assert_int_eq(bad, 0);
    for (int rc = 0; rc < 2; rc++)
        for (int b = 0; b < PBLOCK_COUNT; b++) free(g[rc][b]);
    model_free(&dm);
}
END_TEST

int main(int argc, char **argv) {
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    comm_init(&g_comm, &argc, &argv);
    if (argc > 1) g_ep = atoi(argv[1]);
    const bool lora = argc > 2 && !strcmp(argv[2], "lora");
    if (argc > 2) g_router = !strcmp(argv[2], "topp")            ? MOE_ROUTER_TOPP
                           : !strcmp(argv[2], "expert_choice") ? MOE_ROUTER_EXPERT_CHOICE
                                                                : MOE_ROUTER_TOPK;
    if (argc > 2)
        g_variant = !strcmp(argv[2], "sigmoid_seq") ? 1 : !strcmp(argv[2], "groups_global") ? 2 : 0;
    MoeErr err;
    /* MOE_TEST_GEMM / MOE_TEST_PRECISION (ctest sets them): the products' backend and
     * precision (autograd/gemm.h), for reference and distributed model alike */
    const char *be = getenv("MOE_TEST_GEMM"), *pr = getenv("MOE_TEST_PRECISION");
    if ((be && !strcmp(be, "onednn") && !gemm_onednn_available(NULL)) ||
        (pr && !strcmp(pr, "bf16") && be && !strcmp(be, "onednn") && !gemm_native_bf16())) {
        if (g_comm.rank == 0) printf("skipped: %s %s not available here\n", be, pr ? pr : "");
        comm_finalize(&g_comm);
        return 77;   /* ctest SKIP_RETURN_CODE */
    }
    if (gemm_select(be && !strcmp(be, "onednn") ? GEMM_ONEDNN : GEMM_OPENBLAS,
                    pr && !strcmp(pr, "bf16") ? GEMM_BF16 : GEMM_FP32, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        comm_finalize(&g_comm);
        return 1;
    }
    if (comm_setup(&g_comm, g_ep, 4, GB, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        comm_finalize(&g_comm);
        return 1;
    }
    const char *ch = getenv("MOE_TEST_A2A_CHUNKS");
    exchange_init(&g_ex, &g_comm, ch ? atoi(ch) : 1, false);
    if (g_comm.rank == 0)
        printf("ranks %d, expert parallel %d, router %s, products %s %s, a2a chunks %d\n",
               g_comm.size, g_comm.ep, argc > 2 ? argv[2] : "topk",
               gemm_backend_name(gemm_backend()), gemm_precision_name(gemm_precision()),
               g_ex.chunks);
    Suite *s = suite_create("mpi_grad");
    TCase *tc = tcase_create("grads");
    if (lora) {
        tcase_add_test(tc, test_grads_match_lora_per_expert);
        tcase_add_test(tc, test_grads_match_lora_shared);
        goto run;
    }
    tcase_add_test(tc, test_grads_match_single_process);
    tcase_add_test(tc, test_grads_match_shared_window);
    tcase_add_test(tc, test_grads_match_masked_targets);
    /* the selection bias balances top-k routing only (config_validate refuses the others) */
    if (g_router == MOE_ROUTER_TOPK) tcase_add_test(tc, test_router_bias_same_everywhere);
    tcase_add_test(tc, test_recompute_matches_plain);
run:
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);   /* MPI and fork do not mix */
    srunner_run_all(sr, g_comm.rank == 0 ? CK_NORMAL : CK_SILENT);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    failed = comm_max_world_i(&g_comm, failed);
    exchange_free(&g_ex);
    comm_finalize(&g_comm);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
