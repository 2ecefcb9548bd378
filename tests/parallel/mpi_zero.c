/* mpi_zero.c: the sharded optimizer (parallel/zero.h) under mpirun -n R with expert
 * parallelism EP (argv[1]). Every rank builds two copies of the same model on the same
 * layout, one with the unsharded optimizer (dp_reduce_grads, dp_grad_norm, AdamW over
 * everything) and one sharded (reduce-scatter, sliced AdamW, all-gather), and steps both on
 * the same batches:
 *  - the update given the same summed gradients is bit-identical: the sharded copy is fed
 *    the unsharded copy's all-reduced gradients and the unsharded clip factor, and after N
 *    steps every value on every rank, and every moment of every slice, equals the unsharded
 *    one bit for bit (AdamW is elementwise: the slicing changes no operation);
 *  - the sharded gradient norm equals the unsharded one to double rounding (the squares are
 *    the same floats added in another grouping);
 *  - end to end (each copy reduces its own gradients): reduce-scatter and all-reduce may sum
 *    the R contributions in different orders (MPI promises nothing); the summed gradients
 *    agree to float rounding and the losses after N steps to 1e-6 relative; with R = 2 each
 *    sum is one addition of two floats, which is commutative, so the whole run is
 *    bit-identical and is checked so;
 *  - gathering the moments for a checkpoint and cutting them again restores the slices
 *    exactly, and the gathered moments equal the unsharded copy's.
 * Run by ctest as `mpirun -n 4 mpi_zero EP` for EP = 1, 2, 4 and `mpirun -n 2 mpi_zero 1`.
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
#include "testutil.h"

static Comm g_comm;
static int g_ep = 1;

enum { GB = 4, T = 5, STEPS = 4 };

static ModelShape shape(void) {
    ModelShape s = {.V = 13, .C = 8, .L = 2, .H = 2, .Hkv = 1, .D = 4, .F = 6, .E = 4, .K = 2,
                    .norm_eps = 1e-5f, .rope_theta = 10000.0f, .init_std = 0.3f,
                    .capacity_factor = 0.0f, .router_noise = false, .aux_coef = 0.01f,
                    .z_coef = 0.001f, .router = MOE_ROUTER_TOPK};
    return s;
}

typedef struct Side {
    Model m;
    struct MoeExchange ex;
    Tape t;
} Side;

static void side_init(Side *s, const ModelShape *sh) {
    const Comm *c = &g_comm;
    const int El = sh->E / c->ep;
    model_init(&s->m, sh, c->ep_rank * El, El, 9);
    exchange_init(&s->ex, c, 1, false);
    if (c->size > 1) s->m.exchange = &s->ex;
    tape_init(&s->t, 1 << 20);
}

static void side_free(Side *s) {
    tape_free(&s->t);
    model_free(&s->m);
}

/* Forward + backward of step `step`'s batch (the same on every rank; this rank's rows):
 * local gradients in s, the rank's loss returned. */
static double grads(Side *s, int step) {
    const Comm *c = &g_comm;
    int32_t in[GB * T], tg[GB * T];
    MoeRng r;
    rng_seed(&r, 100 + (uint64_t)step);
    for (int i = 0; i < GB * T; i++) {
        in[i] = (int32_t)(rng_next(&r) % 13);
        tg[i] = (int32_t)(rng_next(&r) % 13);
    }
    const int Bl = GB / c->size, row0 = c->rank * Bl;
    StepCtx ctx = {.train = true, .seed = 3, .step = step, .token_base = (long)row0 * T,
                   .loss_scale = 1.0f};
    ModelOut out;
    params_zero_grad(&s->m.ps);
    tape_reset(&s->t, true);
    model_forward(&s->m, &s->t, in + row0 * T, tg + row0 * T, Bl, T, &ctx, &out);
    tape_backward(&s->t, out.loss, NULL);
    double loss = out.lm_loss + out.aux_loss + out.z_loss;
    comm_sum_world_d(c, &loss, 1);
    return loss / c->size;
}

static const AdamWConfig AC = {0.9f, 0.95f, 1e-8f, 0.1f};
/* a max norm the test model's gradients exceed (checked), so clipping is exercised */
static const float MAX_NORM = 0.05f;
static const float LR = 1e-2f;

/* Bit-different values of block b between two models (trainable tensors only). */
static long value_diffs(const Model *a, const Model *b) {
    long n = 0;
    for (int i = 0; i < a->ps.count; i++) {
        const Param *p = &a->ps.p[i], *q = &b->ps.p[i];
        n += memcmp(p->t.data, q->t.data, p->t.n * sizeof(float)) != 0;
    }
    return n;
}

/* Moments of b's slices against a's full moments, bit for bit: mismatching positions. */
static long moment_diffs(const Model *a, const Model *b) {
    long n = 0;
    for (int k = 0; k < PBLOCK_COUNT; k++) {
        const ParamBlock *x = &a->ps.blocks[k], *y = &b->ps.blocks[k];
        const size_t cnt = y->shard_lo >= x->gn ? 0
                         : (y->shard_lo + y->shard_n > x->gn ? x->gn - y->shard_lo : y->shard_n);
        n += memcmp(x->m + y->shard_lo, y->m, cnt * sizeof(float)) != 0;
        n += memcmp(x->v + y->shard_lo, y->v, cnt * sizeof(float)) != 0;
    }
    return n;
}

START_TEST(test_same_gradients_same_update) {
    const Comm *c = &g_comm;
    ModelShape sh = shape();
    Side a, b;
    side_init(&a, &sh);
    side_init(&b, &sh);
    const int nsh = zero_shard(&b.m.ps, c);
    /* dense blocks are always replicated over R > 1 ranks; experts when EP < R */
    ck_assert_int_eq(nsh, c->size == 1 ? 0 : (c->edp > 1 ? 2 : 1));
    bool clipped = false;
    for (int step = 0; step < STEPS; step++) {
        grads(&a, step);
        dp_reduce_grads(&a.m.ps, c);
        /* the sharded copy gets the all-reduced gradients: only the update path differs */
        for (int k = 0; k < PBLOCK_COUNT; k++)
            memcpy(b.m.ps.blocks[k].grad, a.m.ps.blocks[k].grad,
                   a.m.ps.blocks[k].gn * sizeof(float));
        const double na = dp_grad_norm(&a.m.ps, c), nb = zero_grad_norm(&b.m.ps, c);
        /* the same squares in double, grouped differently: a few double ulps */
        ck_assert_double_eq_tol(nb, na, 1e-12 * na);
        const float clip = grad_clip_factor(na, MAX_NORM);
        clipped |= clip < 1.0f;
        adamw_step_scaled(&a.m.ps, &AC, LR, step + 1, clip);
        adamw_step_scaled(&b.m.ps, &AC, LR, step + 1, clip);
        zero_gather_params(&b.m.ps, c);
    }
    ck_assert(clipped);
    ck_assert_int_eq(comm_max_world_i(c, (int)value_diffs(&a.m, &b.m)), 0);
    ck_assert_int_eq(comm_max_world_i(c, (int)moment_diffs(&a.m, &b.m)), 0);
    /* checkpoint round trip: gathered moments are the full ones; cut again, the same */
    zero_gather_moments(&b.m.ps, c);
    for (int k = 0; k < PBLOCK_COUNT; k++) {
        const ParamBlock *x = &a.m.ps.blocks[k], *y = &b.m.ps.blocks[k];
        ck_assert(!zero_block_sharded(&b.m.ps, k));
        ck_assert_int_eq(memcmp(x->m, y->m, x->gn * sizeof(float)), 0);
        ck_assert_int_eq(memcmp(x->v, y->v, x->gn * sizeof(float)), 0);
    }
    ck_assert_int_eq(zero_shard(&b.m.ps, c), nsh);
    ck_assert_int_eq(comm_max_world_i(c, (int)moment_diffs(&a.m, &b.m)), 0);
    side_free(&a);
    side_free(&b);
}
END_TEST

START_TEST(test_end_to_end) {
    const Comm *c = &g_comm;
    ModelShape sh = shape();
    Side a, b;
    side_init(&a, &sh);
    side_init(&b, &sh);
    zero_shard(&b.m.ps, c);
    double la = 0, lb = 0;
    long gdiff = 0;
    double gmax = 0;
    float *absg[PBLOCK_COUNT];
    for (int k = 0; k < PBLOCK_COUNT; k++)
        absg[k] = malloc((a.m.ps.blocks[k].gn + 1) * sizeof(float));
    for (int step = 0; step < STEPS; step++) {
        la = grads(&a, step);
        lb = grads(&b, step);
        /* sum over the ranks of |local gradient|: the scale of the rounding error bound */
        for (int k = 0; k < PBLOCK_COUNT; k++) {
            const ParamBlock *x = &a.m.ps.blocks[k];
            for (size_t j = 0; j < x->gn; j++) absg[k][j] = fabsf(x->grad[j]);
            if (k == PBLOCK_DENSE) comm_sum_world_f(c, absg[k], x->gn);
            else comm_sum_edp_f(c, absg[k], x->gn);
        }
        dp_reduce_grads(&a.m.ps, c);
        zero_reduce_grads(&b.m.ps, c);
        /* this rank's slices of the summed gradients against the all-reduced ones, at the
         * first step (later the weights, hence the local gradients, may differ by rounding) */
        for (int k = 0; k < PBLOCK_COUNT && step == 0; k++) {
            const ParamBlock *x = &a.m.ps.blocks[k], *y = &b.m.ps.blocks[k];
            const size_t hi = y->shard_lo + y->shard_n < x->gn ? y->shard_lo + y->shard_n
                                                               : x->gn;
            for (size_t j = y->shard_lo; j < hi; j++) {
                const double d = fabs((double)x->grad[j] - (double)y->grad[j]);
                gdiff += x->grad[j] != y->grad[j];
                /* two float sums of the same R terms in different orders: each is within
                 * u sum|g_r| of the exact sum (u = 2^-24, Higham's bound for
                 * recursive summation), so they differ by at most twice that; scaled by
                 * 1/R afterwards (exact: R is a power of two here) */
                const double bound = 2.0 * (c->size - 1) * 0x1p-24 * (double)absg[k][j] /
                                     c->size;
                ck_assert_msg(d <= bound * 1.0001 + 1e-30,
                              "gradient %zu of block %d: %.9g vs %.9g", j, k, (double)x->grad[j],
                              (double)y->grad[j]);
                if (d > gmax) gmax = d;
            }
        }
        const double na = dp_grad_norm(&a.m.ps, c), nb = zero_grad_norm(&b.m.ps, c);
        adamw_step_scaled(&a.m.ps, &AC, LR, step + 1, grad_clip_factor(na, MAX_NORM));
        adamw_step_scaled(&b.m.ps, &AC, LR, step + 1, grad_clip_factor(nb, MAX_NORM));
        zero_gather_params(&b.m.ps, c);
    }
    for (int k = 0; k < PBLOCK_COUNT; k++) free(absg[k]);
    la = grads(&a, STEPS);
    lb = grads(&b, STEPS);
    double all[1] = {(double)gdiff};
    comm_sum_world_d(c, all, 1);
    if (c->rank == 0)
        printf("end to end, %d ranks, EP %d: %.0f summed-gradient entries differ in some bit "
               "at step 1 (rank 0's largest difference %.3g); loss after %d steps %.9g "
               "unsharded, %.9g sharded\n", c->size,
               c->ep, all[0], gmax, STEPS, la, lb);
    /* after STEPS updates from gradients equal to float rounding: Adam normalises each
     * update, so a rounding difference in a near-zero gradient can move a weight by up to
     * lr; the loss averages over all weights: 1e-6 relative is far below the effect of one
     * skipped or doubled update (~lr relative) */
    ck_assert_double_eq_tol(lb, la, 1e-6 * fabs(la));
    if (c->size == 2) {   /* one commutative float addition per sum: bit-identical */
        ck_assert(all[0] == 0);
        ck_assert_int_eq(comm_max_world_i(c, (int)value_diffs(&a.m, &b.m)), 0);
        ck_assert(la == lb);
    }
    side_free(&a);
    side_free(&b);
}
END_TEST

int main(int argc, char **argv) {
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    comm_init(&g_comm, &argc, &argv);
    if (argc > 1) g_ep = atoi(argv[1]);
    MoeErr err;
    if (comm_setup(&g_comm, g_ep, 4, GB, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        comm_finalize(&g_comm);
        return 1;
    }
    if (g_comm.rank == 0)
        printf("ranks %d, expert parallel %d (experts replicated over %d)\n", g_comm.size,
               g_comm.ep, g_comm.edp);
    Suite *s = suite_create("mpi_zero");
    TCase *tc = tcase_create("zero");
    tcase_add_test(tc, test_same_gradients_same_update);
    tcase_add_test(tc, test_end_to_end);
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
