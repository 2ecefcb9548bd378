/* mpi_grad.c: under mpirun -n R with expert parallelism EP (argv[1]), the gradients after
 * one step (all-to-all dispatch, all-reduces) equal those of one process holding every
 * expert and the whole global batch. Every rank builds both: the single-process reference
 * (no communication) and its own shard of the distributed model.
 * With per-layer recomputation the distributed gradients are bit-identical to those
 * without it. Run by ctest as `mpirun -n 4 mpi_grad EP` for EP = 1, 2, 4.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/model.h"
#include "parallel/dp.h"
#include "parallel/exchange.h"
#include "testutil.h"

static Comm g_comm;
static int g_ep = 1;

enum { GB = 4, T = 5 };

static ModelShape shape(void) {
    ModelShape s = {.V = 13, .C = 8, .L = 2, .H = 2, .Hkv = 1, .D = 4, .F = 6, .E = 4, .K = 2,
                    .norm_eps = 1e-5f, .rope_theta = 10000.0f, .init_std = 0.3f,
                    .capacity_factor = 0.0f, .router_noise = true, .aux_coef = 0.01f,
                    .z_coef = 0.001f};
    return s;
}

START_TEST(test_grads_match_single_process) {
    ModelShape s = shape();
    int32_t in[GB * T], tg[GB * T];
    MoeRng r;
    rng_seed(&r, 42);   /* same batch on every rank */
    for (int i = 0; i < GB * T; i++) {
        in[i] = (int32_t)(rng_next(&r) % 13);
        tg[i] = (int32_t)(rng_next(&r) % 13);
    }
    /* reference: one process, all experts, whole batch */
    Model ref;
    model_init(&ref, &s, 0, s.E, 9);
    Tape t;
    tape_init(&t, 1 << 20);
    ModelOut out;
    StepCtx ctx = {.train = true, .seed = 3, .step = 5, .token_base = 0, .loss_scale = 1.0f};
    params_zero_grad(&ref.ps);
    tape_reset(&t, true);
    model_forward(&ref, &t, in, tg, GB, T, &ctx, &out);
    tape_backward(&t, out.loss, NULL);
    double ref_loss = out.lm_loss + out.aux_loss + out.z_loss;

    /* distributed: this rank's experts and rows */
    const Comm *c = &g_comm;
    int El = s.E / c->ep, Bl = GB / c->size, row0 = c->rank * Bl;
    Model dm;
    model_init(&dm, &s, c->ep_rank * El, El, 9);
    struct MoeExchange ex = {.comm = c};
    if (c->size > 1) dm.exchange = &ex;
    StepCtx dctx = ctx;
    dctx.token_base = (long)row0 * T;
    params_zero_grad(&dm.ps);
    tape_reset(&t, true);
    model_forward(&dm, &t, in + row0 * T, tg + row0 * T, Bl, T, &dctx, &out);
    tape_backward(&t, out.loss, NULL);
    dp_reduce_grads(&dm.ps, c);
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
    struct MoeExchange ex = {.comm = c};
    if (c->size > 1) dm.exchange = &ex;
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
    comm_init(&g_comm, &argc, &argv);
    if (argc > 1) g_ep = atoi(argv[1]);
    MoeErr err;
    if (comm_setup(&g_comm, g_ep, 4, GB, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        comm_finalize(&g_comm);
        return 1;
    }
    if (g_comm.rank == 0)
        printf("ranks %d, expert parallel %d\n", g_comm.size, g_comm.ep);
    Suite *s = suite_create("mpi_grad");
    TCase *tc = tcase_create("grads");
    tcase_add_test(tc, test_grads_match_single_process);
    tcase_add_test(tc, test_recompute_matches_plain);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);   /* MPI and fork do not mix */
    srunner_run_all(sr, g_comm.rank == 0 ? CK_NORMAL : CK_SILENT);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    failed = comm_max_world_i(&g_comm, failed);
    comm_finalize(&g_comm);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
