/* mpi_reduce.c: the owned-order, bucketed gradient reduction (parallel/reduce.h) under
 * mpirun -n R with expert parallelism EP (argv[1]); with MOE_NODE_MAP set (e.g. 0,0,1,1)
 * the hierarchical stages too. Every rank computes one step's local gradients of a small
 * model (its rows of a batch that is the same on every rank), then:
 *  - the spec: each block's reduced gradient equals, bit for bit, the sum the test forms
 *    itself from every group member's local gradient (gathered), in group-rank order, times
 *    1/R (flat), or node by node (nodes in order, each node's members in order) when the
 *    block goes through the hierarchical stages; flat and hierarchical agree within the
 *    float rounding bound of two summation orders; with a group of 2 the result equals the
 *    library all-reduce's (dp_reduce_grads) bit for bit, else within that bound;
 *  - buckets: for several bucket sizes, down to 16 floats (buckets that cut tensors), with
 *    the reduction running inside the backward (marks and progress hook, buckets launched
 *    before the backward ends), with and without per-layer recomputation, the gradients
 *    equal the reduction after the backward (bucket 0) bit for bit, in flat and in
 *    hierarchical mode;
 *  - sharded (ZeRO-1) and unsharded runs, each reducing its own gradients in buckets of
 *    different sizes, stay bit-identical in every parameter after STEPS AdamW steps
 *    (clipping off: the two gradient norms are the same squares added in another grouping,
 *    so a clip factor could differ in the last bit; the update itself is elementwise).
 * Run by ctest as `mpirun -n 4 mpi_reduce EP` for EP = 1, 2, 4, with MOE_NODE_MAP=0,0,1,1
 * for EP = 1, 2, and `mpirun -n 3 mpi_reduce 1` (a group of 3: uneven slices, an order
 * MPI_Allreduce does not promise).
 */
#include <check.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/blas.h"
#include "layers/model.h"
#include "optim/adamw.h"
#include "parallel/dp.h"
#include "parallel/exchange.h"
#include "parallel/reduce.h"
#include "parallel/zero.h"
#include "testutil.h"

static Comm g_comm;
static int g_ep = 1;

enum { GB = 12, T = 5, STEPS = 3 };

static ModelShape shape(void) {
    ModelShape s = {.V = 13, .C = 8, .L = 3, .H = 2, .Hkv = 1, .D = 4, .F = 6, .E = 4, .K = 2,
                    .norm_eps = 1e-5f, .rope_theta = 10000.0f, .init_std = 0.3f,
                    .capacity_factor = 0.0f, .router_noise = true, .aux_coef = 0.01f,
                    .z_coef = 0.001f, .router = MOE_ROUTER_TOPK};
    return s;
}

typedef struct Side {
    Model m;
    struct MoeExchange ex;
    Tape t;
    GradReduce gr;
    int *final_at;
} Side;

static void side_init(Side *s, const ModelShape *sh) {
    const Comm *c = &g_comm;
    const int El = sh->E / c->ep;
    memset(s, 0, sizeof *s);
    model_init(&s->m, sh, c->ep_rank * El, El, 9);
    s->ex.comm = c;
    if (c->size > 1) s->m.exchange = &s->ex;
    tape_init(&s->t, 1 << 20);
    s->final_at = malloc(sizeof(int) * (size_t)s->m.ps.count);
    model_grad_final_at(&s->m, s->final_at);
}

static void side_reducer(Side *s, size_t bucket, bool hier) {
    grad_reduce_free(&s->gr);
    grad_reduce_init(&s->gr, &s->m.ps, &g_comm, bucket, s->final_at, hier);
}

static void side_free(Side *s) {
    grad_reduce_free(&s->gr);
    free(s->final_at);
    tape_free(&s->t);
    model_free(&s->m);
}

/* Forward + backward of step `step`'s batch (this rank's rows); reduce: the backward runs
 * with s->gr's hook and the reduction is finished after it. Returns buckets launched
 * before the backward ended (0 without reduce). */
static int grads(Side *s, int step, bool reduce, bool recompute) {
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
                   .loss_scale = 1.0f, .recompute = recompute};
    ModelOut out;
    params_zero_grad(&s->m.ps);
    tape_reset(&s->t, true);
    model_forward(&s->m, &s->t, in + row0 * T, tg + row0 * T, Bl, T, &ctx, &out);
    if (reduce) {
        grad_reduce_begin(&s->gr, true);
        s->t.hook = grad_reduce_hook;
        s->t.hook_ctx = &s->gr;
    }
    tape_backward(&s->t, out.loss, NULL);
    s->t.hook = NULL;
    if (!reduce) return 0;
    const int launched = s->gr.launched_early;
    grad_reduce_finish(&s->gr);
    return launched;
}

/* Copies of the gradient blocks (gpad floats each). */
static void save(const Side *s, float *out[PBLOCK_COUNT]) {
    for (int k = 0; k < PBLOCK_COUNT; k++) {
        const ParamBlock *bl = &s->m.ps.blocks[k];
        out[k] = malloc((bl->gpad + 1) * sizeof(float));
        memcpy(out[k], bl->grad, bl->gpad * sizeof(float));
    }
}

static void drop(float *g[PBLOCK_COUNT]) {
    for (int k = 0; k < PBLOCK_COUNT; k++) free(g[k]);
}

/* Positions of block k where a and b differ in some bit, over [lo, hi). */
static long diffs(const float *a, const float *b, size_t lo, size_t hi) {
    long n = 0;
    for (size_t j = lo; j < hi; j++) n += memcmp(a + j, b + j, sizeof(float)) != 0;
    return n;
}

static void group_of(int k, MPI_Comm *gc, int *G) {
    *gc = k == PBLOCK_DENSE ? g_comm.world : g_comm.edp_comm;
    *G = k == PBLOCK_DENSE ? g_comm.size : g_comm.edp;
}

/* The spec, formed here: every member's local gradient (gathered) summed in group order,
 * or node by node when node_first, times 1/R. expect (gn), absum: sum of |g| (the
 * rounding bound's scale). */
static void spec_sum(int k, const float *local, size_t gn, bool node_first, float *expect,
                     double *absum) {
    MPI_Comm gc;
    int G;
    group_of(k, &gc, &G);
    float *all = malloc(sizeof(float) * gn * (size_t)G + 4);
    int *world = malloc(sizeof(int) * (size_t)G);
    MPI_Allgather(local, (int)gn, MPI_FLOAT, all, (int)gn, MPI_FLOAT, gc);
    MPI_Allgather(&g_comm.rank, 1, MPI_INT, world, 1, MPI_INT, gc);
    const float inv = 1.0f / (float)g_comm.size;
    const int L = g_comm.hier ? g_comm.local_size : g_comm.size;
    for (size_t x = 0; x < gn; x++) {
        double ab = 0;
        for (int j = 0; j < G; j++) ab += fabs((double)all[(size_t)j * gn + x]);
        absum[x] = ab;
        if (!node_first) {
            float s = all[x];
            for (int j = 1; j < G; j++) s += all[(size_t)j * gn + x];
            expect[x] = s * inv;
            continue;
        }
        float tot = 0;
        bool first_node = true;
        for (int n = 0; n < g_comm.size / L; n++) {
            float part = 0;
            bool first = true;
            for (int j = 0; j < G; j++) {
                if (world[j] / L != n) continue;
                part = first ? all[(size_t)j * gn + x] : part + all[(size_t)j * gn + x];
                first = false;
            }
            if (first) continue;
            tot = first_node ? part : tot + part;
            first_node = false;
        }
        expect[x] = tot * inv;
    }
    free(all);
    free(world);
}

START_TEST(test_owned_order) {
    const Comm *c = &g_comm;
    ModelShape sh = shape();
    Side a;
    side_init(&a, &sh);
    float *local[PBLOCK_COUNT], *lib[PBLOCK_COUNT];
    grads(&a, 0, false, false);
    save(&a, local);
    dp_reduce_grads(&a.m.ps, c);   /* the library all-reduce, for comparison */
    save(&a, lib);
    float *flat[PBLOCK_COUNT] = {NULL, NULL};
    for (int h = 0; h < (c->hier ? 2 : 1); h++) {
        side_reducer(&a, 0, h == 1);
        grads(&a, 0, true, false);
        for (int k = 0; k < PBLOCK_COUNT; k++) {
            const ParamBlock *bl = &a.m.ps.blocks[k];
            MPI_Comm gc;
            int G;
            group_of(k, &gc, &G);
            if (G < 2 || bl->gn == 0) {
                /* not reduced: scaled by 1/R only */
                for (size_t x = 0; x < bl->gn; x++)
                    ck_assert(bl->grad[x] == local[k][x] * (1.0f / (float)c->size));
                continue;
            }
            const bool nf = grad_reduce_block_hier(&a.gr, k);
            /* with MOE_NODE_MAP=0,0,1,1 the world nests (2 nodes x 2); an EDP group of
             * one rank per node does not */
            if (h == 0 || k == PBLOCK_DENSE) ck_assert(nf == (h == 1));
            float *expect = malloc(sizeof(float) * bl->gn + 4);
            double *absum = malloc(sizeof(double) * bl->gn + 8);
            spec_sum(k, local[k], bl->gn, nf, expect, absum);
            long d = diffs(expect, bl->grad, 0, bl->gn);
            ck_assert_msg(comm_max_world_i(c, (int)d) == 0, "block %d (%s): %ld positions "
                          "differ from the sum in the owned order", k, nf ? "hier" : "flat", d);
            /* against the library all-reduce and flat against hierarchical: two float
             * sums of the same G terms in different orders differ by at most 2 (G-1) u
             * sum|g| (u = 2^-24, recursive summation, Higham), then times 1/R */
            const float *other = h == 0 ? lib[k] : flat[k];
            for (size_t x = 0; x < bl->gn; x++) {
                const double bound = 2.0 * (G - 1) * 0x1p-24 * absum[x] / c->size;
                ck_assert_msg(fabs((double)other[x] - (double)bl->grad[x]) <= bound * 1.0001,
                              "block %d position %zu: %.9g vs %.9g", k, x, (double)other[x],
                              (double)bl->grad[x]);
            }
            if (G == 2 && h == 0)   /* a + b: commutative, the library's bits */
                ck_assert_int_eq(diffs(lib[k], bl->grad, 0, bl->gn), 0);
            free(expect);
            free(absum);
        }
        if (h == 0) save(&a, flat);
    }
    if (flat[0]) drop(flat);
    drop(local);
    drop(lib);
    side_free(&a);
}
END_TEST

START_TEST(test_buckets_bitwise) {
    const Comm *c = &g_comm;
    ModelShape sh = shape();
    Side a;
    side_init(&a, &sh);
    const size_t sizes[] = {16, 48, 96, 1000, (size_t)1 << 20};
    for (int h = 0; h < (c->hier ? 2 : 1); h++) {
        side_reducer(&a, 0, h == 1);
        float *ref[PBLOCK_COUNT];
        grads(&a, 1, true, false);
        save(&a, ref);
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
            for (int rc = 0; rc < 2; rc++) {
                side_reducer(&a, sizes[i], h == 1);
                const int early = grads(&a, 1, true, rc == 1);
                long d = 0;
                for (int k = 0; k < PBLOCK_COUNT; k++)
                    d += diffs(ref[k], a.m.ps.blocks[k].grad, 0, a.m.ps.blocks[k].gn);
                ck_assert_msg(comm_max_world_i(c, (int)d) == 0, "bucket %zu floats%s%s: %ld "
                              "positions differ from the reduction after the backward",
                              sizes[i], rc ? ", recompute" : "", h ? ", hierarchical" : "", d);
                /* the small buckets leave during the backward: the marks work */
                if (sizes[i] <= 96 && c->size > 1)
                    ck_assert_msg(early > 0, "bucket %zu: nothing launched before the end "
                                  "of the backward", sizes[i]);
            }
        drop(ref);
    }
    side_free(&a);
}
END_TEST

static const AdamWConfig AC = {0.9f, 0.95f, 1e-8f, 0.1f};
static const float LR = 1e-2f;

START_TEST(test_sharded_params_bitwise) {
    const Comm *c = &g_comm;
    ModelShape sh = shape();
    Side a, b;
    side_init(&a, &sh);
    side_init(&b, &sh);
    zero_shard(&b.m.ps, c);
    /* flat: sharded blocks do not take the node stages (reduce.h), so the unsharded
     * copy must not either to be comparable bit for bit */
    side_reducer(&a, 48, false);
    side_reducer(&b, 16, false);
    for (int step = 0; step < STEPS; step++) {
        grads(&a, step, true, false);
        grads(&b, step, true, false);
        for (int k = 0; k < PBLOCK_COUNT; k++) {   /* b's slices are a's sums */
            const ParamBlock *x = &a.m.ps.blocks[k], *y = &b.m.ps.blocks[k];
            const size_t hi = y->shard_lo + y->shard_n < x->gn ? y->shard_lo + y->shard_n
                                                               : x->gn;
            if (y->shard_lo < hi)
                ck_assert_int_eq(diffs(x->grad, y->grad, y->shard_lo, hi), 0);
        }
        adamw_step_scaled(&a.m.ps, &AC, LR, step + 1, 1.0f);
        adamw_step_scaled(&b.m.ps, &AC, LR, step + 1, 1.0f);
        zero_gather_params(&b.m.ps, c);
    }
    long n = 0;
    for (int i = 0; i < a.m.ps.count; i++)
        n += memcmp(a.m.ps.p[i].t.data, b.m.ps.p[i].t.data,
                    a.m.ps.p[i].t.n * sizeof(float)) != 0;
    ck_assert_msg(comm_max_world_i(c, (int)n) == 0, "%ld tensors differ after %d steps", n,
                  STEPS);
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
        printf("ranks %d, expert parallel %d (experts replicated over %d), %d node(s)%s\n",
               g_comm.size, g_comm.ep, g_comm.edp, g_comm.nodes,
               g_comm.hier ? " (hierarchical stages tested)" : "");
    Suite *s = suite_create("mpi_reduce");
    TCase *tc = tcase_create("reduce");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_owned_order);
    tcase_add_test(tc, test_buckets_bitwise);
    tcase_add_test(tc, test_sharded_params_bitwise);
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
