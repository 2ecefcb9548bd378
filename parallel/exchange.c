/* exchange.c: expert-parallel all-to-all ops. See exchange.h. */
#include "parallel/exchange.h"

#include <string.h>

static MPI_Comm ep_comm(const struct MoeExchange *ex) { return ex->comm->ep_comm; }

ExchangePlan *exchange_plan(Tape *t, const struct MoeExchange *ex, const int32_t *offs, int E,
                            int C) {
    const int P = ex->comm->ep, El = E / P;
    ExchangePlan *p = arena_alloc(&t->arena, sizeof *p);
    memset(p, 0, sizeof *p);
    p->P = P;
    p->El = El;
    p->C = C;
    p->cnt_send = arena_ints(&t->arena, (size_t)P * El);
    p->cnt_recv = arena_ints(&t->arena, (size_t)P * El);
    for (int e = 0; e < E; e++) p->cnt_send[e] = offs[e + 1] - offs[e];
    double t0 = moe_now();
    MPI_Alltoall(p->cnt_send, El, MPI_INT32_T, p->cnt_recv, El, MPI_INT32_T, ep_comm(ex));
    comm_count(COMM_ALLTOALL, (double)(P - 1) * El * sizeof(int32_t), moe_now() - t0);
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
    p->perm = arena_ints(&t->arena, (size_t)(ro > 0 ? ro : 1));
    int src = 0;
    for (int q = 0; q < P; q++) {
        for (int j = 0; j < El; j++) {
            int before = 0;   /* rows for expert j from sources before q */
            for (int q2 = 0; q2 < q; q2++) before += p->cnt_recv[q2 * El + j];
            for (int r = 0; r < p->cnt_recv[q * El + j]; r++)
                p->perm[src++] = p->offs_local[j] + before + r;
        }
    }
    int mx = so > ro ? so : ro;
    p->buf = arena_floats(&t->arena, (size_t)(mx > 0 ? mx : 1) * C);
    p->tmp = arena_floats(&t->arena, (size_t)(so > 0 ? so : 1) * C);
    p->comm = ep_comm(ex);
    return p;
}

/* src rows (source-major, M_send) -> alltoallv -> staging (source-major, M_recv) ->
 * permuted into out (expert-major). accumulate: out += instead of out =. */
static void forward_move(const ExchangePlan *p, MPI_Comm comm, const float *src, float *out,
                         bool accumulate) {
    double t0 = moe_now();
    MPI_Alltoallv(src, p->scount, p->sdispl, MPI_FLOAT, p->buf, p->rcount, p->rdispl,
                  MPI_FLOAT, comm);
    comm_count(COMM_ALLTOALL, (double)(p->M_send * p->C - p->scount[p->me]) * sizeof(float),
               moe_now() - t0);
    const size_t C = (size_t)p->C;
    for (int r = 0; r < p->M_recv; r++) {
        float *dst = out + (size_t)p->perm[r] * C;
        const float *s = p->buf + (size_t)r * C;
        if (accumulate) for (size_t c = 0; c < C; c++) dst[c] += s[c];
        else memcpy(dst, s, C * sizeof(float));
    }
}

/* src (expert-major, M_recv) -> staging (source-major) -> alltoallv back -> out (M_send). */
static void backward_move(const ExchangePlan *p, MPI_Comm comm, const float *src, float *out,
                          bool accumulate, float *tmp) {
    const size_t C = (size_t)p->C;
    for (int r = 0; r < p->M_recv; r++)
        memcpy(p->buf + (size_t)r * C, src + (size_t)p->perm[r] * C, C * sizeof(float));
    float *dst = accumulate ? tmp : out;
    double t0 = moe_now();
    MPI_Alltoallv(p->buf, p->rcount, p->rdispl, MPI_FLOAT, dst, p->scount, p->sdispl,
                  MPI_FLOAT, comm);
    comm_count(COMM_ALLTOALL, (double)(p->M_recv * p->C - p->rcount[p->me]) * sizeof(float),
               moe_now() - t0);
    if (accumulate)
        for (size_t i = 0; i < (size_t)p->M_send * C; i++) out[i] += tmp[i];
}

static void to_experts_bw(TapeOp *op) {
    ExchangePlan *p = op->aux[0];
    Tensor *x = op->in[0];
    /* forward was x -> experts; its gradient travels experts -> x */
    if (x->requires_grad) backward_move(p, p->comm, op->out->grad, x->grad, true, p->tmp);
}

static void from_experts_bw(TapeOp *op) {
    ExchangePlan *p = op->aux[0];
    Tensor *y = op->in[0];
    /* forward was experts -> senders; its gradient travels senders -> experts */
    if (y->requires_grad) forward_move(p, p->comm, op->out->grad, y->grad, true);
}

Tensor *op_exchange_to_experts(Tape *t, Tensor *xg, ExchangePlan *p) {
    ASSERT((int)tensor_rows(xg) == p->M_send && tensor_cols(xg) == p->C,
           "exchange: xg has %zu x %d, plan %d x %d", tensor_rows(xg), tensor_cols(xg),
           p->M_send, p->C);
    Tensor *out = tape_tensor2(t, p->M_recv, p->C, tape_needs_grad(t, xg, NULL, NULL));
    forward_move(p, p->comm, xg->data, out->data, false);
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
    backward_move(p, p->comm, y->data, out->data, false, NULL);
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
