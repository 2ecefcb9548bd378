/* comm.c: process groups and reductions. See comm.h. */
#include "parallel/comm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

CommStat comm_stat[COMM_KINDS];
const char *const comm_kind_names[COMM_KINDS] = {"gradient reduction", "parameter all-gather",
                                                  "expert all-to-all", "small all-reduces"};
double comm_slots_offrank, comm_slots_fromrank;

void comm_count(int kind, double bytes, double seconds) {
    CommStat *s = &comm_stat[kind];
    s->bytes += bytes;
    s->calls += 1;
    s->wait += seconds;
    s->span += seconds;
}

static void abort_all(void) {
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (init && !fin) MPI_Abort(MPI_COMM_WORLD, 1);
}

void comm_init(Comm *c, int *argc, char ***argv) {
    memset(c, 0, sizeof *c);
    c->size = 1;
    c->ep = 1;
    c->edp = 1;
    c->nodes = 1;
    c->local_size = 1;
    c->node_comm = c->cross_comm = MPI_COMM_NULL;
    /* Only start MPI when a launcher set up a job; a plain `moetrain` run stays MPI-free. */
    if (getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK")) {
        /* funneled: the pipelined expert exchange (parallel/expert_pipe.h) tests its
         * transfers on the main thread while the pool's helper threads multiply; no other
         * thread calls MPI (Open MPI implements single and funneled alike) */
        int provided = 0;
        MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
        c->mpi = true;
        c->world = MPI_COMM_WORLD;
        MPI_Comm_rank(c->world, &c->rank);
        MPI_Comm_size(c->world, &c->size);
        moe_log_rank = c->rank;
        moe_abort_hook = abort_all;
    }
}

int comm_setup(Comm *c, int expert_parallel, int n_experts, int micro_batch, MoeErr *err) {
    const int R = c->size;
    int P = expert_parallel;
    if (n_experts == 0) {
        if (P > 1) {
            moe_errorf(err, "parallel.expert_parallel is %d but the model is dense "
                       "(moe.n_experts = 0)", P);
            return moe_hintf(err, "remove parallel.expert_parallel or set it to 0 or 1");
        }
        P = 1;
    } else if (P == 0) {
        P = R < n_experts ? R : n_experts;
        while (P > 1 && (R % P || n_experts % P)) P--;   /* largest valid size below */
    }
    if (R % P != 0 || (n_experts > 0 && n_experts % P != 0)) {
        moe_errorf(err, "parallel.expert_parallel = %d must divide both the rank count (%d) "
                   "and moe.n_experts (%d)", P, R, n_experts);
        return moe_hintf(err, "choose a common divisor of %d and %d, or 0 for automatic", R,
                         n_experts);
    }
    if (micro_batch % R != 0) {
        moe_errorf(err, "train.global_micro_batch = %d sequences cannot be split evenly over %d ranks",
                   micro_batch, R);
        return moe_hintf(err, "make train.global_micro_batch a multiple of %d (it is the global "
                         "batch; each rank takes micro_batch / ranks rows)", R);
    }
    c->ep = P;
    c->edp = R / P;
    c->ep_rank = c->rank % P;
    if (c->mpi) {
        MPI_Comm_split(c->world, c->rank / P, c->rank, &c->ep_comm);
        MPI_Comm_split(c->world, c->rank % P, c->rank, &c->edp_comm);
    }
    return comm_nodes(c, err);
}

/* Parse MOE_NODE_MAP into node[R]; -1 with err when malformed. */
static int parse_node_map(const char *s, int R, int *node, MoeErr *err) {
    const char *p = s;
    for (int r = 0; r < R; r++) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v >= R || (*end != ',' && *end != '\0') ||
            (*end == '\0' && r != R - 1) || (*end == ',' && r == R - 1)) {
            moe_errorf(err, "MOE_NODE_MAP=\"%s\" is not %d comma-separated node numbers "
                       "in [0, %d) (one per rank)", s, R, R);
            return moe_hintf(err, "e.g. MOE_NODE_MAP=%s for two nodes, or unset it to use "
                             "the machines' real layout", R == 4 ? "0,0,1,1" : "0,0,1,1,...");
        }
        node[r] = (int)v;
        p = end + 1;
    }
    return 0;
}

int comm_nodes(Comm *c, MoeErr *err) {
    c->nodes = 1;
    c->node = 0;
    c->local_rank = c->rank;
    c->local_size = c->size;
    c->hier = false;
    if (!c->mpi || c->size == 1) return 0;
    const int R = c->size;
    int *node = moe_calloc((size_t)R * sizeof(int));
    const char *map = getenv("MOE_NODE_MAP");
    int bad = 0;
    if (map && *map) {
        bad = parse_node_map(map, R, node, err);
    } else {
        /* the real layout: node number = lowest world rank sharing memory with me */
        MPI_Comm shared;
        MPI_Comm_split_type(c->world, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &shared);
        int lowest = c->rank;
        MPI_Allreduce(MPI_IN_PLACE, &lowest, 1, MPI_INT, MPI_MIN, shared);
        MPI_Comm_free(&shared);
        MPI_Allgather(&lowest, 1, MPI_INT, node, 1, MPI_INT, c->world);
    }
    if (comm_max_world_i(c, bad ? 1 : 0)) {
        moe_free(node);
        if (!bad) {
            moe_errorf(err, "MOE_NODE_MAP is malformed on another rank");
            return moe_hintf(err, "give every rank the same MOE_NODE_MAP");
        }
        return -1;
    }
    /* Equal nodes of consecutive ranks: node ids change only at multiples of L. */
    int L = 1;
    while (L < R && node[L] == node[0]) L++;
    bool ok = R % L == 0;
    int nodes = R / L;
    for (int r = 0; ok && r < R; r++)
        ok = node[r] == node[r / L * L] && (r % L != 0 || r == 0 || node[r] != node[r - 1]);
    /* node numbers may repeat non-consecutively (0,1,0,1): not a block layout */
    for (int a = 0; ok && a < nodes; a++)
        for (int b = a + 1; ok && b < nodes; b++) ok = node[a * L] != node[b * L];
    if (ok && nodes > 1) {
        c->nodes = nodes;
        c->node = c->rank / L;
        c->local_rank = c->rank % L;
        c->local_size = L;
        c->hier = true;
        MPI_Comm_split(c->world, c->node, c->rank, &c->node_comm);
        MPI_Comm_split(c->world, c->local_rank, c->rank, &c->cross_comm);
    } else if (!ok) {
        int distinct = 0;
        for (int r = 0; r < R; r++) {
            bool seen = false;
            for (int q = 0; q < r && !seen; q++) seen = node[q] == node[r];
            distinct += !seen;
        }
        c->nodes = distinct;
        if (c->rank == 0)
            printf("parallel: %d nodes of unequal size or non-consecutive ranks; collectives "
                   "stay flat (place ranks by slot with equal counts per node for the "
                   "hierarchical paths)\n", distinct);
    }
    moe_free(node);
    return 0;
}

void comm_finalize(Comm *c) {
    if (!c->mpi) return;
    if (c->ep_comm) MPI_Comm_free(&c->ep_comm);
    if (c->edp_comm) MPI_Comm_free(&c->edp_comm);
    if (c->node_comm != MPI_COMM_NULL) MPI_Comm_free(&c->node_comm);
    if (c->cross_comm != MPI_COMM_NULL) MPI_Comm_free(&c->cross_comm);
    MPI_Finalize();
    c->mpi = false;
}

/* Sum in place over comm; counted as `kind` (the float sums are the gradient reductions,
 * the rest small all-reduces). MPI counts are int: reduce in pieces of at most 2^30
 * elements. */
static void sum(MPI_Comm comm, int kind, void *x, size_t n, MPI_Datatype t, size_t elem) {
    char *p = x;
    int G;
    MPI_Comm_size(comm, &G);
    double t0 = moe_now();
    const double bytes = 2.0 * (G - 1) / G * (double)n * (double)elem;   /* ring volume */
    while (n > 0) {
        int k = n > ((size_t)1 << 30) ? 1 << 30 : (int)n;
        MPI_Allreduce(MPI_IN_PLACE, p, k, t, MPI_SUM, comm);
        p += (size_t)k * elem;
        n -= (size_t)k;
    }
    comm_count(kind, bytes, moe_now() - t0);
}

void comm_sum_world_f(const Comm *c, float *x, size_t n) {
    if (c->mpi && c->size > 1) sum(c->world, COMM_GRAD, x, n, MPI_FLOAT, sizeof(float));
}
void comm_sum_world_d(const Comm *c, double *x, size_t n) {
    if (c->mpi && c->size > 1) sum(c->world, COMM_OTHER, x, n, MPI_DOUBLE, sizeof(double));
}
void comm_sum_edp_f(const Comm *c, float *x, size_t n) {
    if (c->mpi && c->edp > 1) sum(c->edp_comm, COMM_GRAD, x, n, MPI_FLOAT, sizeof(float));
}
void comm_sum_ep_d(const Comm *c, double *x, size_t n) {
    if (c->mpi && c->ep > 1) sum(c->ep_comm, COMM_OTHER, x, n, MPI_DOUBLE, sizeof(double));
}
void comm_sum_world_i32(const Comm *c, int32_t *x, size_t n) {
    if (c->mpi && c->size > 1) sum(c->world, COMM_OTHER, x, n, MPI_INT32_T, sizeof(int32_t));
}

int comm_max_world_i(const Comm *c, int v) {
    if (!c->mpi || c->size == 1) return v;
    int out = v;
    MPI_Allreduce(&v, &out, 1, MPI_INT, MPI_MAX, c->world);
    return out;
}

void comm_barrier(const Comm *c) {
    if (c->mpi && c->size > 1) MPI_Barrier(c->world);
}
