/* mpi_cost.c: the cost model (train/costmodel.h) against the traffic counters
 * (parallel/comm.h) of real training steps, under `mpirun -n R mpi_cost EP SHARD RECOMPUTE
 * ACCUM`.
 *
 * A small config (mixtral_tiny's keys shrunk by --set: C 16, L 2, 8 experts top-2, one
 * shared expert) is planned by costmodel_estimate from the config alone, the model is built
 * on this layout and steps as the trainer steps (ACCUM micro-batches of forward + backward,
 * the gradient reduction, the norm, AdamW and, sharded, the all-gather). Per rank and step:
 *   - gradient reduction and parameter all-gather bytes equal the plan's exactly: they
 *     depend on sizes only (ring volume of the trainable floats, or of the padded buffer
 *     when sharded), and with R in {2, 4} every factor (G-1)/G is a dyadic fraction, so the
 *     doubles are exact whichever way they are multiplied;
 *   - all-to-all bytes equal the formula evaluated on the step's own routing (slots this
 *     rank routed off-rank and received, parallel/comm.h's counters): xfers (out + in) C 4
 *     plus the per-expert counts, exactly (integers times C times 4);
 *   - with the router zeroed and its noise on, every token's K experts are a uniformly
 *     random K-subset of E (the noise std is softplus(0) for every expert): the bytes are
 *     within 4 standard deviations of the uniform-routing plan. The deviation of the slot
 *     count from its mean is a sum of independent hypergeometric counts per token (how many
 *     of a token's K slots land on experts of another rank), whose variance is computed
 *     below; 4 sigma leaves a false failure below 1e-4 per check for any seed (6-8 %
 *     of the bytes; leaving out the (P-1)/P factor, the backward's transfers or the
 *     recomputation's third transfer moves the prediction by 33 % or more);
 *   - with a skewed router (every token prefers the experts at either end), the exact
 *     formula still holds; with rank-local routing (a selection bias towards the rank's own
 *     experts: no row leaves) the uniform plan is off by far more than its tolerance, so
 *     the uniform check can fail;
 *   - the small all-reduces are the plan's routing counts plus the norm's one or two
 *     doubles.
 * Each rank checks its own counters; the verdict is agreed over the world.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/blas.h"
#include "layers/model.h"
#include "optim/adamw.h"
#include "parallel/dp.h"
#include "parallel/exchange.h"
#include "parallel/zero.h"
#include "train/costmodel.h"
#include "testutil.h"

static Comm g_comm;
static int g_ep = 1, g_shard = 0, g_recompute = 0, g_accum = 1;

/* A failed check is recorded, not thrown: a rank leaving the test early would leave the
 * others waiting in the next collective. The verdict is agreed after the last step. */
static int g_bad;
#define EXPECT(cond, ...)                                                                   \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            g_bad++;                                                                        \
            fprintf(stderr, __VA_ARGS__);                                                   \
            fputc('\n', stderr);                                                            \
        }                                                                                   \
    } while (0)

enum { SEQ = 128, ROWS_PER_RANK = 2 };

/* The small config on this layout (mixtral_tiny's keys, shrunk). */
static void small_config(Config *c) {
    MoeErr err;
    memset(c, 0, sizeof *c);
    ck_assert_msg(config_load(c, tt_source_path("configs/mixtral_tiny.yaml"), &err) == 0,
                  "%s", err.msg);
    char sets[16][96];
    int n = 0;
    snprintf(sets[n++], 96, "model.vocab_size=300");
    snprintf(sets[n++], 96, "model.dim=16");
    snprintf(sets[n++], 96, "model.n_layers=2");
    snprintf(sets[n++], 96, "model.n_heads=2");
    snprintf(sets[n++], 96, "model.n_kv_heads=1");
    snprintf(sets[n++], 96, "model.head_dim=8");
    snprintf(sets[n++], 96, "moe.hidden=12");
    snprintf(sets[n++], 96, "moe.n_shared_experts=1");
    snprintf(sets[n++], 96, "train.seq_len=%d", SEQ);
    snprintf(sets[n++], 96, "train.global_micro_batch=%d", ROWS_PER_RANK * g_comm.size);
    snprintf(sets[n++], 96, "train.grad_accum=%d", g_accum);
    snprintf(sets[n++], 96, "train.recompute=%s", g_recompute ? "true" : "false");
    snprintf(sets[n++], 96, "parallel.expert_parallel=%d", g_ep);
    snprintf(sets[n++], 96, "parallel.shard_optimizer=%s", g_shard ? "true" : "false");
    for (int i = 0; i < n; i++)
        ck_assert_msg(config_set(c, sets[i], &err) == 0, "%s: %s", sets[i], err.msg);
    ck_assert_msg(config_validate(c, &err) == 0, "%s", err.msg);
}

typedef struct Run {
    Config c;
    ModelShape s;
    Model m;
    struct MoeExchange ex;
    Tape t;
    bool zero;
    CostPlan plan;
} Run;

static void run_init(Run *r) {
    small_config(&r->c);
    config_model_shape(&r->c, &r->s);
    CostCluster k;
    costmodel_cluster_defaults(&k);
    k.ranks = g_comm.size;
    MoeErr err;
    ck_assert_msg(costmodel_estimate(&r->c, &k, &r->plan, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(r->plan.P, g_comm.ep);   /* the plan's layout is comm_setup's */
    const int El = r->s.E / g_comm.ep;
    model_init(&r->m, &r->s, g_comm.ep_rank * El, El, 11);
    exchange_init(&r->ex, &g_comm, 1, false);   /* the blocking flat exchange */
    r->m.exchange = &r->ex;
    r->zero = g_shard && zero_shard(&r->m.ps, &g_comm) > 0;
    tape_init(&r->t, 1 << 20);
}

static void run_free(Run *r) {
    tape_free(&r->t);
    model_free(&r->m);
    config_free(&r->c);
}

/* One optimizer step as train/train.c runs it; *slots gets this rank's (out, in) slots. */
static void step(Run *r, int st, double slots[2]) {
    const Comm *c = &g_comm;
    const int T = SEQ, Bl = ROWS_PER_RANK, N = Bl * T;
    int32_t in[ROWS_PER_RANK * SEQ], tg[ROWS_PER_RANK * SEQ];
    const double o0 = comm_slots_offrank, i0 = comm_slots_fromrank;
    params_zero_grad(&r->m.ps);
    for (int a = 0; a < g_accum; a++) {
        MoeRng rng;
        rng_seed(&rng, 1000 + 97 * (uint64_t)st + 13 * (uint64_t)a + 7 * (uint64_t)c->rank);
        for (int i = 0; i < N; i++) {
            in[i] = (int32_t)(rng_next(&rng) % (uint64_t)r->s.V);
            tg[i] = (int32_t)(rng_next(&rng) % (uint64_t)r->s.V);
        }
        StepCtx ctx = {.train = true, .seed = 5, .step = st,
                       .token_base = ((long)a * c->size + c->rank) * N,
                       .loss_scale = 1.0f / (float)g_accum,
                       .recompute = r->c.train.recompute};
        ModelOut out;
        tape_reset(&r->t, true);
        model_forward(&r->m, &r->t, in, tg, Bl, T, &ctx, &out);
        tape_backward(&r->t, out.loss, NULL);
    }
    if (r->zero) zero_reduce_grads(&r->m.ps, c);
    else dp_reduce_grads(&r->m.ps, c);
    const double gn = r->zero ? zero_grad_norm(&r->m.ps, c) : dp_grad_norm(&r->m.ps, c);
    const AdamWConfig ac = {0.9f, 0.95f, 1e-8f, 0.1f};
    adamw_step_scaled(&r->m.ps, &ac, 1e-3f, st + 1, grad_clip_factor(gn, 1.0f));
    if (r->zero) zero_gather_params(&r->m.ps, c);
    /* the counters see every exchange plan: with recomputation each layer plans twice */
    slots[0] = (comm_slots_offrank - o0) / r->plan.plans;
    slots[1] = (comm_slots_fromrank - i0) / r->plan.plans;
}

/* Counters since `before`, by kind. */
static void delta(const CommStat before[COMM_KINDS], double d[COMM_KINDS]) {
    for (int k = 0; k < COMM_KINDS; k++) d[k] = comm_stat[k].bytes - before[k].bytes;
}

/* Standard deviation of the all-to-all row bytes of one step under uniformly random
 * K-subsets: per token, the slots landing on experts of another rank (out) or, for the
 * P-1 other ranks' tokens, on this rank's El experts (in) are hypergeometric. */
static double uniform_sigma(const Run *r) {
    const double E = r->s.E, K = r->s.K, P = g_comm.ep, El = E / P, L = r->s.L;
    const double tokens = (double)g_accum * ROWS_PER_RANK * SEQ * L;   /* token-layers */
    const double fo = (E - El) / E, fi = El / E, shrink = (E - K) / (E - 1);
    const double var = tokens * K * fo * (1 - fo) * shrink +
                       (P - 1) * tokens * K * fi * (1 - fi) * shrink;
    return r->plan.xfers * r->s.C * 4.0 * sqrt(var);
}

/* Check this step's counters against the plan; returns |measured - uniform| / sigma. */
static double check_step(Run *r, int st, bool uniform) {
    CommStat before[COMM_KINDS];
    memcpy(before, comm_stat, sizeof before);
    double slots[2], d[COMM_KINDS];
    step(r, st, slots);
    delta(before, d);
    const CostPlan *p = &r->plan;
    /* sizes only: exact */
    EXPECT(d[COMM_GRAD] == p->grad_dense + p->grad_expert,
                  "rank %d: gradient reduction sent %.0f bytes, the plan says %.0f",
                  g_comm.rank, d[COMM_GRAD], p->grad_dense + p->grad_expert);
    EXPECT(d[COMM_GATHER] == p->gather, "rank %d: all-gather sent %.0f, plan %.0f",
                  g_comm.rank, d[COMM_GATHER], p->gather);
    /* the formula on this step's routing: exact */
    const double routed = costmodel_exchange_bytes(slots[0], slots[1], r->s.C, g_recompute) +
                          p->a2a_counts;
    EXPECT(d[COMM_ALLTOALL] == routed, "rank %d: all-to-all sent %.0f bytes, the "
                  "routing (%.0f out, %.0f in) gives %.0f", g_comm.rank, d[COMM_ALLTOALL],
                  slots[0], slots[1], routed);
    /* the routing counts and the gradient norm's doubles (1 over the EP group; 2 over the
     * world when sharded: ring volume at most 2 x 16 bytes) */
    EXPECT(d[COMM_OTHER] >= p->other && d[COMM_OTHER] <= p->other + 48.0,
                  "rank %d: small all-reduces %.0f bytes, routing counts %.0f",
                  g_comm.rank, d[COMM_OTHER], p->other);
    const double dev = fabs(d[COMM_ALLTOALL] - (p->a2a_rows + p->a2a_counts));
    const double sigma = uniform_sigma(r);
    if (g_comm.rank == 0 || getenv("MOE_TEST_VERBOSE"))
        printf("rank %d step %d (%s routing): all-to-all %.0f bytes (uniform plan %.0f, "
               "%.2f sigma of %.0f), gradient %.0f, all-gather %.0f, small %.0f (plan %.0f)\n",
               g_comm.rank, st, uniform ? "uniform" : "skewed", d[COMM_ALLTOALL],
               p->a2a_rows + p->a2a_counts, sigma > 0 ? dev / sigma : 0.0, sigma,
               d[COMM_GRAD], d[COMM_GATHER], d[COMM_OTHER], p->other);
    return sigma > 0 ? dev / sigma : (dev > 0 ? (double)INFINITY : 0.0);
}

/* Routing of every layer: router weights zero (uniform through the noise, kind 0); rows
 * w_e = (E/2 - e - 1/2) v for one fixed v, noise off, so every token prefers the experts
 * at one end (kind 1); or zero weights, noise off and a selection bias (layers/
 * router_bias.h) that makes each rank's tokens choose the experts it holds (kind 2: no row
 * leaves the rank, against (P-1)/P under uniform routing). */
static void set_router(Run *r, int kind) {
    const int E = r->s.E, C = r->s.C, El = E / g_comm.ep;
    r->m.s.router_noise = kind == 0;
    r->m.use_router_bias = kind == 2;
    for (int l = 0; l < r->s.L; l++) {
        float *w = r->m.ps.p[r->m.layer[l].router].t.data;
        for (int e = 0; e < E; e++) {
            for (int c = 0; c < C; c++)
                w[(size_t)e * C + c] =
                    kind == 1 ? (float)((E / 2.0 - e - 0.5) * (c % 3 == 0 ? 1.0 : -0.5)) : 0.0f;
            r->m.router_bias[(size_t)l * E + e] = e / El == g_comm.ep_rank ? 10.0f : 0.0f;
        }
    }
}

START_TEST(test_counters_match_plan) {
    Run r;
    run_init(&r);
    double z = 0;
    for (int st = 0; st < 3; st++) {
        set_router(&r, 0);   /* AdamW moves the router off zero: reset before each step */
        z = fmax(z, check_step(&r, st, true));
    }
    if (g_comm.ep > 1)
        EXPECT(z <= 4.0, "rank %d: all-to-all %.2f sigma off the uniform plan", g_comm.rank, z);
    else
        EXPECT(z == 0.0, "rank %d: expert_parallel 1 exchanged rows", g_comm.rank);
    /* skewed routing: the exact formula still holds (checked in check_step) */
    set_router(&r, 1);
    check_step(&r, 3, false);
    /* rank-local routing: the uniform plan is far off, so its check can fail */
    set_router(&r, 2);
    const double zl = check_step(&r, 4, false);
    if (g_comm.ep > 1)
        EXPECT(zl > 8.0, "rank %d: rank-local routing is within %.1f sigma of uniform: the "
               "uniform check could not fail", g_comm.rank, zl);
    run_free(&r);
    ck_assert_int_eq(comm_max_world_i(&g_comm, g_bad), 0);
}
END_TEST

int main(int argc, char **argv) {
    blas_init(argv);
    comm_init(&g_comm, &argc, &argv);
    if (argc > 1) g_ep = atoi(argv[1]);
    if (argc > 2) g_shard = atoi(argv[2]);
    if (argc > 3) g_recompute = atoi(argv[3]);
    if (argc > 4) g_accum = atoi(argv[4]);
    MoeErr err;
    if (comm_setup(&g_comm, g_ep, 8, ROWS_PER_RANK * g_comm.size, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        comm_finalize(&g_comm);
        return 1;
    }
    if (g_comm.rank == 0)
        printf("ranks %d, expert parallel %d, shard %d, recompute %d, grad_accum %d\n",
               g_comm.size, g_comm.ep, g_shard, g_recompute, g_accum);
    Suite *s = suite_create("mpi_cost");
    TCase *tc = tcase_create("cost");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_counters_match_plan);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);   /* MPI and fork do not mix */
    srunner_run_all(sr, g_comm.rank == 0 || getenv("MOE_TEST_VERBOSE") ? CK_NORMAL : CK_SILENT);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    failed = comm_max_world_i(&g_comm, failed);
    comm_finalize(&g_comm);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
