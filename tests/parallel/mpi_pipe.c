/* mpi_pipe.c: the pipelined expert exchange (parallel/expert_pipe.h) and the two-stage route
 * (parallel/a2a.h) under mpirun -n R with expert parallelism EP (argv[1]).
 *
 * Every check runs the same distributed model on the same batch twice, once with the
 * blocking flat exchange (parallel.a2a_chunks = 1) and once with the setting under test, and
 * asserts the loss and every gradient BIT for bit: the pipelined op multiplies each expert's
 * rows with the same kernels and moves every row unchanged, and the two-stage route only
 * moves data, so no tolerance applies.
 *  - chunks 2, 3 and El (and 64, cut to El), with per-layer recomputation off and on, with
 *    shared experts (overlapped with the first chunks' transfer), with capacity drops, and
 *    with an expert no token picks (a -1e30 selection bias), so a chunk of empty experts
 *    and empty messages run;
 *  - the payload bytes counted for the chunked exchange equal the blocking one's (the same
 *    rows travel, cut differently);
 *  - with MOE_NODE_MAP set (ctest: "0,0,1,1" with -n 4): when the EP group spans nodes the
 *    two-stage route is in use (checked, so the comparison is not flat against flat) and
 *    equals the flat one bit for bit, blocking and chunked; when the group lies in one
 *    node it stays flat (already node-local).
 * Run by ctest as `mpirun -n 2 mpi_pipe 2`, `mpirun -n 4 mpi_pipe 4`, `mpirun -n 4 mpi_pipe 2`,
 * `mpirun -n 2 mpi_pipe 2` with MOE_TEST_PRECISION=bf16, and with MOE_NODE_MAP=0,0,1,1
 * `mpirun -n 4 mpi_pipe 4` / `mpi_pipe 2`.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/blas.h"
#include "autograd/gemm.h"
#include "layers/model.h"
#include "parallel/dp.h"
#include "parallel/exchange.h"
#include "testutil.h"

static Comm g_comm;
static int g_ep = 2;

enum { GB = 4, T = 5, E = 8 };

static ModelShape shape(void) {
    ModelShape s = {.V = 13, .C = 8, .L = 2, .H = 2, .Hkv = 1, .D = 4, .F = 6, .E = E, .K = 2,
                    .norm_eps = 1e-5f, .rope_theta = 10000.0f, .init_std = 0.3f,
                    .capacity_factor = 0.0f, .router_noise = true, .aux_coef = 0.01f,
                    .z_coef = 0.001f, .router = MOE_ROUTER_TOPK};
    return s;
}

/* Options of one comparison. */
typedef struct Case {
    int Fs;               /* shared experts' width */
    float capacity;       /* capacity factor (0 = dropless) */
    bool dead_expert;     /* expert 3 never chosen (selection bias -1e30) */
} Case;

/* One step's loss and gradient blocks. */
typedef struct Result {
    double loss;
    float *g[PBLOCK_COUNT];
    double a2a_bytes;
} Result;

static void result_free(Result *r) {
    for (int b = 0; b < PBLOCK_COUNT; b++) free(r->g[b]);
}

/* Forward + backward of the model m (this rank's rows of one batch) with exchange ex,
 * reduced over the ranks. */
static void run(Model *m, struct MoeExchange *ex, bool recompute, Result *res) {
    const Comm *c = &g_comm;
    int32_t in[GB * T], tg[GB * T];
    MoeRng r;
    rng_seed(&r, 77);   /* same batch on every rank */
    for (int i = 0; i < GB * T; i++) {
        in[i] = (int32_t)(rng_next(&r) % 13);
        tg[i] = (int32_t)(rng_next(&r) % 13);
    }
    const int Bl = GB / c->size, row0 = c->rank * Bl;
    m->exchange = ex;
    Tape t;
    tape_init(&t, 1 << 12);
    ModelOut out;
    const double b0 = comm_stat[COMM_ALLTOALL].bytes;
    for (int step = 0; step < 2; step++) {   /* the second on compacted arenas */
        StepCtx ctx = {.train = true, .seed = 3, .step = 5, .token_base = (long)row0 * T,
                       .loss_scale = 1.0f, .recompute = recompute};
        params_zero_grad(&m->ps);
        tape_reset(&t, true);
        model_forward(m, &t, in + row0 * T, tg + row0 * T, Bl, T, &ctx, &out);
        tape_backward(&t, out.loss, NULL);
        if (step == 0) tape_compact(&t);
    }
    res->a2a_bytes = comm_stat[COMM_ALLTOALL].bytes - b0;
    dp_reduce_grads(&m->ps, c);
    res->loss = (double)out.loss->data[0];
    for (int b = 0; b < PBLOCK_COUNT; b++) {
        res->g[b] = malloc(m->ps.blocks[b].n * sizeof(float) + 1);
        memcpy(res->g[b], m->ps.blocks[b].grad, m->ps.blocks[b].n * sizeof(float));
    }
    tape_free(&t);
}

/* Bitwise: loss and every parameter's gradient; returns the number of differences. */
static int compare(const Model *m, const Result *a, const Result *b, const char *what) {
    const Comm *c = &g_comm;
    int bad = 0;
    if (memcmp(&a->loss, &b->loss, sizeof a->loss)) {
        fprintf(stderr, "[rank %d] %s: loss %.9g vs %.9g\n", c->rank, what, a->loss, b->loss);
        bad++;
    }
    for (int i = 0; i < m->ps.count; i++) {
        const Param *p = &m->ps.p[i];
        if (memcmp(a->g[p->block] + p->off, b->g[p->block] + p->off, p->t.n * sizeof(float))) {
            fprintf(stderr, "[rank %d] %s: gradient of %s differs\n", c->rank, what, p->name);
            bad++;
        }
    }
    return bad;
}

static void model_case(Model *m, const Case *k) {
    const Comm *c = &g_comm;
    ModelShape s = shape();
    s.Fs = k->Fs;
    s.capacity_factor = k->capacity;
    const int El = s.E / c->ep;
    model_init(m, &s, c->ep_rank * El, El, 9);
    if (k->dead_expert) {
        m->use_router_bias = true;
        for (int l = 0; l < s.L; l++) m->router_bias[(size_t)l * s.E + 3] = -1e30f;
    }
}

/* The blocking flat exchange against `chunks` chunks (hier: two-stage routes) for one case;
 * both with and without recomputation. */
static void check_case(const Case *k, int chunks, bool hier) {
    const Comm *c = &g_comm;
    Model m;
    model_case(&m, k);
    struct MoeExchange ref, ex;
    exchange_init(&ref, c, 1, false);
    exchange_init(&ex, c, chunks, hier);
    if (hier && getenv("MOE_NODE_MAP"))
        ck_assert_msg(ex.group.hier == (c->ep > c->local_size),
                      "two-stage route %s for EP %d over nodes of %d",
                      ex.group.hier ? "used" : "not used", c->ep, c->local_size);
    char what[128];
    for (int rc = 0; rc < 2; rc++) {
        Result a, b;
        run(&m, &ref, rc == 1, &a);
        run(&m, &ex, rc == 1, &b);
        snprintf(what, sizeof what, "chunks %d%s, recompute %d, Fs %d, capacity %.2f, dead %d",
                 chunks, hier ? " two-stage" : "", rc, k->Fs, (double)k->capacity,
                 k->dead_expert);
        ck_assert_int_eq(compare(&m, &a, &b, what), 0);
        /* the same rows travel: the same payload (a two-stage route relays, so sends more) */
        if (!ex.group.hier)
            ck_assert_msg(a.a2a_bytes == b.a2a_bytes, "%s: %.0f bytes vs %.0f blocking", what,
                          b.a2a_bytes, a.a2a_bytes);
        else
            ck_assert_msg(b.a2a_bytes >= a.a2a_bytes, "%s: two-stage sent %.0f < flat %.0f",
                          what, b.a2a_bytes, a.a2a_bytes);
        result_free(&a);
        result_free(&b);
    }
    exchange_free(&ex);
    exchange_free(&ref);
    model_free(&m);
}

static const int g_chunks[] = {2, 3, 64};

START_TEST(test_chunks_plain) {
    Case k = {0};
    for (size_t i = 0; i < sizeof g_chunks / sizeof *g_chunks; i++) check_case(&k, g_chunks[i], false);
}
END_TEST

START_TEST(test_chunks_shared) {
    Case k = {.Fs = 6};
    for (size_t i = 0; i < sizeof g_chunks / sizeof *g_chunks; i++) check_case(&k, g_chunks[i], false);
}
END_TEST

START_TEST(test_chunks_capacity) {
    Case k = {.capacity = 0.5f};   /* ceil(N K / E * 0.5): most experts drop slots */
    for (size_t i = 0; i < sizeof g_chunks / sizeof *g_chunks; i++) check_case(&k, g_chunks[i], false);
}
END_TEST

START_TEST(test_chunks_dead_expert) {
    Case k = {.dead_expert = true, .Fs = 6};
    for (size_t i = 0; i < sizeof g_chunks / sizeof *g_chunks; i++) check_case(&k, g_chunks[i], false);
}
END_TEST

START_TEST(test_two_stage) {
    Case k = {.Fs = 6, .dead_expert = true};
    check_case(&k, 1, true);
    check_case(&k, 2, true);
    Case k2 = {.capacity = 0.5f};
    check_case(&k2, 64, true);
}
END_TEST

int main(int argc, char **argv) {
    blas_init(argv);
    comm_init(&g_comm, &argc, &argv);
    if (argc > 1) g_ep = atoi(argv[1]);
    MoeErr err;
    /* MOE_TEST_PRECISION=bf16 (ctest): products with bf16 inputs (OpenBLAS emulation, on
     * any CPU), where the bf16 stand-ins of the expert kernels are in play */
    const char *pr = getenv("MOE_TEST_PRECISION");
    if (gemm_select(GEMM_OPENBLAS, pr && !strcmp(pr, "bf16") ? GEMM_BF16 : GEMM_FP32, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        comm_finalize(&g_comm);
        return 1;
    }
    if (comm_setup(&g_comm, g_ep, E, GB, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        comm_finalize(&g_comm);
        return 1;
    }
    if (g_comm.rank == 0)
        printf("ranks %d, expert parallel %d, nodes %d of %d ranks%s, products %s\n",
               g_comm.size, g_comm.ep, g_comm.nodes, g_comm.local_size,
               g_comm.hier ? " (hierarchy)" : "", gemm_precision_name(gemm_precision()));
    Suite *s = suite_create("mpi_pipe");
    TCase *tc = tcase_create("pipe");
    tcase_set_timeout(tc, 60);
    if (getenv("MOE_NODE_MAP")) {
        tcase_add_test(tc, test_two_stage);
    } else {
        tcase_add_test(tc, test_chunks_plain);
        tcase_add_test(tc, test_chunks_shared);
        tcase_add_test(tc, test_chunks_capacity);
        tcase_add_test(tc, test_chunks_dead_expert);
    }
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
