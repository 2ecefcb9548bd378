/* exchange.c: expert-parallel all-to-all ops. See exchange.h. */
#include "parallel/exchange.h"

#include <string.h>

static MPI_Comm ep_comm(const struct MoeExchange *ex) { return ex->comm->ep_comm; }

void exchange_init(struct MoeExchange *ex, const Comm *comm, int chunks, bool hierarchical) {
    memset(ex, 0, sizeof *ex);
    ex->comm = comm;
    ex->chunks = chunks > 0 ? chunks : 1;
    A2aGroup *g = &ex->group;
    g->comm = comm->ep_comm;
    g->P = comm->ep;
    g->me = comm->ep_rank;
    g->node = g->cross = MPI_COMM_NULL;
    const int L = comm->local_size;
    /* every rank takes the same branch: the layout and P are the same everywhere */
    if (hierarchical && comm->mpi && comm->hier && g->P > L && g->P % L == 0) {
        g->hier = true;
        g->L = L;
        g->Nn = g->P / L;
        g->l = comm->local_rank;
        g->n = g->me / L;
        /* the group is whole nodes: its node part is the node's communicator; its
         * cross-node part is cross_comm cut to the group (world rank order = node order) */
        MPI_Comm_dup(comm->node_comm, &g->node);
        MPI_Comm_split(comm->cross_comm, comm->rank / g->P, comm->rank, &g->cross);
    }
    ex->ready = true;
}

void exchange_free(struct MoeExchange *ex) {
    if (ex->group.node != MPI_COMM_NULL && ex->group.node) MPI_Comm_free(&ex->group.node);
    if (ex->group.cross != MPI_COMM_NULL && ex->group.cross) MPI_Comm_free(&ex->group.cross);
    memset(ex, 0, sizeof *ex);
}

/* The counts of every rank of the group, (P, E), for two-stage routes: one all-gather. */
static int32_t *gather_counts(Tape *t, const struct MoeExchange *ex, const int32_t *cnt, int E) {
    const int P = ex->group.P;
    int32_t *all = arena_ints(&t->arena, (size_t)P * E);
    double t0 = moe_now();
    MPI_Allgather(cnt, E, MPI_INT32_T, all, E, MPI_INT32_T, ep_comm(ex));
    comm_count(COMM_ALLTOALL, (double)(P - 1) * E * sizeof(int32_t), moe_now() - t0);
    return all;
}

/* Chunk c's routes. Dispatch: this rank sends peer q the rows of q's local experts j0 .. j1
 * (contiguous in xg at the global offset of expert q El + j0) and receives each source's
 * rows of its own experts j0 .. j1 into the chunk's staging rows, source-major. all (P, E):
 * every rank's counts (two-stage only, else NULL). */
static void chunk_routes(Tape *t, ExchangePlan *p, const A2aGroup *g, const int32_t *offs,
                         const int32_t *all, int c) {
    const int P = p->P, El = p->El, C = p->C, j0 = p->j0[c], j1 = p->j0[c + 1];
    int *sc = arena_alloc(&t->arena, sizeof(int) * 4 * (size_t)P);
    int *sd = sc + P, *rc = sc + 2 * P, *rd = sc + 3 * P;
    int ro = p->offs_local[j0];
    for (int q = 0; q < P; q++) {
        int s = 0, r = 0;
        for (int j = j0; j < j1; j++) {
            s += p->cnt_send[q * El + j];
            r += p->cnt_recv[q * El + j];
        }
        sc[q] = s * C;
        sd[q] = offs[q * El + j0] * C;
        rc[q] = r * C;
        rd[q] = ro * C;
        ro += r;
    }
    int32_t *mat = NULL;
    if (g->hier) {   /* floats p sends q in this chunk's dispatch */
        mat = arena_ints(&t->arena, (size_t)P * P);
        const int E = P * El;
        for (int a = 0; a < P; a++)
            for (int q = 0; q < P; q++) {
                int s = 0;
                for (int j = j0; j < j1; j++) s += all[(size_t)a * E + q * El + j];
                mat[(size_t)a * P + q] = s * C;
            }
    }
    a2a_route(&p->disp[c], &t->arena, g, sc, sd, rc, rd, mat);
    a2a_route_reverse(&p->comb[c], &t->arena, &p->disp[c], mat);
}

ExchangePlan *exchange_plan(Tape *t, const struct MoeExchange *ex, const int32_t *offs, int E,
                            int C) {
    const int P = ex->comm->ep, El = E / P;
    struct MoeExchange flat;
    if (!ex->ready) {   /* a bare {.comm} struct: the blocking flat exchange */
        exchange_init(&flat, ex->comm, 1, false);
        ex = &flat;
    }
    ExchangePlan *p = arena_alloc(&t->arena, sizeof *p);
    memset(p, 0, sizeof *p);
    p->P = P;
    p->El = El;
    p->C = C;
    p->cnt_send = arena_ints(&t->arena, (size_t)P * El);
    p->cnt_recv = arena_ints(&t->arena, (size_t)P * El);
    for (int e = 0; e < E; e++) p->cnt_send[e] = offs[e + 1] - offs[e];
    const int32_t *all = NULL;
    if (ex->group.hier) {
        all = gather_counts(t, ex, p->cnt_send, E);
        for (int q = 0; q < P; q++)
            for (int j = 0; j < El; j++)
                p->cnt_recv[q * El + j] = all[(size_t)q * E + ex->comm->ep_rank * El + j];
    } else {
        double t0 = moe_now();
        MPI_Alltoall(p->cnt_send, El, MPI_INT32_T, p->cnt_recv, El, MPI_INT32_T, ep_comm(ex));
        comm_count(COMM_ALLTOALL, (double)(P - 1) * El * sizeof(int32_t), moe_now() - t0);
    }
    p->me = ex->comm->ep_rank;
    p->scount = arena_alloc(&t->arena, sizeof(int) * (size_t)P);
    p->sdispl = arena_alloc(&t->arena, sizeof(int) * (size_t)P);
    p->rcount = arena_alloc(&t->arena, sizeof(int) * (size_t)P);
    p->rdispl = arena_alloc(&t->arena, sizeof(int) * (size_t)P);
    int so = 0, ro = 0;
    for (int q = 0; q < P; q++) {
        int s = 0, r = 0;
        for (int j = 0; j < El; j++) {
            s += p->cnt_send[q * El + j];
            r += p->cnt_recv[q * El + j];
        }
        p->scount[q] = s * C;
        p->sdispl[q] = so * C;
        p->rcount[q] = r * C;
        p->rdispl[q] = ro * C;
        so += s;
        ro += r;
    }
    p->M_send = so;
    p->M_recv = ro;
    comm_slots_offrank += (double)(so - p->scount[p->me] / C);
    comm_slots_fromrank += (double)(ro - p->rcount[p->me] / C);
    /* expert-major layout of what arrives: local expert j holds, in source order, the rows
     * every source p sent for it. */
    p->offs_local = arena_ints(&t->arena, (size_t)El + 1);
    p->offs_local[0] = 0;
    for (int j = 0; j < El; j++) {
        int n = 0;
        for (int q = 0; q < P; q++) n += p->cnt_recv[q * El + j];
        p->offs_local[j + 1] = p->offs_local[j] + n;
    }
    /* chunks: G groups of consecutive local experts, by index (sender and receiver must
     * agree on them without knowing each other's row counts) */
    p->G = ex->chunks < El ? ex->chunks : El;
    if (p->G < 1) p->G = 1;
    p->j0 = arena_alloc(&t->arena, sizeof(int) * (size_t)(p->G + 1));
    for (int c = 0; c <= p->G; c++) p->j0[c] = (int)((long)El * c / p->G);
    p->perm = arena_ints(&t->arena, (size_t)(ro > 0 ? ro : 1));
    for (int c = 0; c < p->G; c++) {
        int src = p->offs_local[p->j0[c]];
        for (int q = 0; q < P; q++) {
            for (int j = p->j0[c]; j < p->j0[c + 1]; j++) {
                int before = 0;   /* rows for expert j from sources before q */
                for (int q2 = 0; q2 < q; q2++) before += p->cnt_recv[q2 * El + j];
                for (int r = 0; r < p->cnt_recv[q * El + j]; r++)
                    p->perm[src++] = p->offs_local[j] + before + r;
            }
        }
    }
    p->disp = arena_alloc(&t->arena, sizeof(A2aRoute) * (size_t)p->G);
    p->comb = arena_alloc(&t->arena, sizeof(A2aRoute) * (size_t)p->G);
    /* the routes borrow the group: keep a copy in the arena (flat may be on the stack) */
    A2aGroup *g = arena_alloc(&t->arena, sizeof *g);
    *g = ex->group;
    for (int c = 0; c < p->G; c++) chunk_routes(t, p, g, offs, all, c);
    int mx = so > ro ? so : ro;
    p->buf = arena_floats(&t->arena, (size_t)(mx > 0 ? mx : 1) * C);
    p->tmp = arena_floats(&t->arena, (size_t)(so > 0 ? so : 1) * C);
    p->comm = ep_comm(ex);
    return p;
}

/* src rows (source-major, M_send) -> alltoallv -> staging (source-major, M_recv) ->
 * permuted into out (expert-major). accumulate: out += instead of out =. The blocking path:
 * one all-to-all per planned chunk, in order (G > 1 here only when the layer cannot take
 * the pipelined op: expert adapters). */
static void forward_move(const ExchangePlan *p, const float *src, float *out, bool accumulate) {
    for (int c = 0; c < p->G; c++) a2a_run(&p->disp[c], src, p->buf);
    const size_t C = (size_t)p->C;
    for (int r = 0; r < p->M_recv; r++) {
        float *dst = out + (size_t)p->perm[r] * C;
        const float *s = p->buf + (size_t)r * C;
        if (accumulate) for (size_t c = 0; c < C; c++) dst[c] += s[c];
        else memcpy(dst, s, C * sizeof(float));
    }
}

/* src (expert-major, M_recv) -> staging (source-major) -> alltoallv back -> out (M_send). */
static void backward_move(const ExchangePlan *p, const float *src, float *out, bool accumulate,
                          float *tmp) {
    const size_t C = (size_t)p->C;
    for (int r = 0; r < p->M_recv; r++)
        memcpy(p->buf + (size_t)r * C, src + (size_t)p->perm[r] * C, C * sizeof(float));
    float *dst = accumulate ? tmp : out;
    for (int c = 0; c < p->G; c++) a2a_run(&p->comb[c], p->buf, dst);
    if (accumulate)
        for (size_t i = 0; i < (size_t)p->M_send * C; i++) out[i] += tmp[i];
}

static void to_experts_bw(TapeOp *op) {
    ExchangePlan *p = op->aux[0];
    Tensor *x = op->in[0];
    /* forward was x -> experts; its gradient travels experts -> x */
    if (x->requires_grad) backward_move(p, op->out->grad, x->grad, true, p->tmp);
}

static void from_experts_bw(TapeOp *op) {
    ExchangePlan *p = op->aux[0];
    Tensor *y = op->in[0];
    /* forward was experts -> senders; its gradient travels senders -> experts */
    if (y->requires_grad) forward_move(p, op->out->grad, y->grad, true);
}

Tensor *op_exchange_to_experts(Tape *t, Tensor *xg, ExchangePlan *p) {
    ASSERT((int)tensor_rows(xg) == p->M_send && tensor_cols(xg) == p->C,
           "exchange: xg has %zu x %d, plan %d x %d", tensor_rows(xg), tensor_cols(xg),
           p->M_send, p->C);
    Tensor *out = tape_tensor2(t, p->M_recv, p->C, tape_needs_grad(t, xg, NULL, NULL));
    forward_move(p, xg->data, out->data, false);
    if (out->requires_grad) {
        TapeOp *op = tape_push(t, "exchange_to_experts", to_experts_bw, out);
        op->in[0] = xg;
        op->aux[0] = p;
    }
    return out;
}

Tensor *op_exchange_from_experts(Tape *t, Tensor *y, ExchangePlan *p) {
    ASSERT((int)tensor_rows(y) == p->M_recv && tensor_cols(y) == p->C,
           "exchange: y has %zu x %d, plan %d x %d", tensor_rows(y), tensor_cols(y),
           p->M_recv, p->C);
    Tensor *out = tape_tensor2(t, p->M_send, p->C, tape_needs_grad(t, y, NULL, NULL));
    backward_move(p, y->data, out->data, false, NULL);
    if (out->requires_grad) {
        TapeOp *op = tape_push(t, "exchange_from_experts", from_experts_bw, out);
        op->in[0] = y;
        op->aux[0] = p;
    }
    return out;
}

void exchange_sum_counts(const struct MoeExchange *ex, int32_t *counts, int E) {
    comm_sum_world_i32(ex->comm, counts, (size_t)E);
}

int exchange_ranks(const struct MoeExchange *ex) { return ex->comm->size; }
