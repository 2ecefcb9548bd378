/* exchange.h: the expert-parallel token exchange, as two differentiable ops.
 *
 * Inside an EP group of P ranks each rank routes its own tokens and gathers the routed
 * slots grouped by GLOBAL expert (rows offs[e] .. offs[e+1] of xg belong to expert e), so
 * the slots for the experts of EP rank q are one contiguous block. Then
 *   op_exchange_to_experts:   MPI_Alltoallv sends each block to its owner; the owner
 *                             reorders what it received from source-major (source, expert,
 *                             row) to expert-major (expert, source, row), so each local
 *                             expert's rows are contiguous for one GEMM (offs_local);
 *   op_exchange_from_experts: the inverse: expert-major -> source-major -> Alltoallv back,
 *                             so each rank gets its slots' outputs in its original order.
 * The backward of each is the other's forward (gradients travel the opposite way). Nothing
 * is sent for an expert a token did not choose. Counts are exchanged first with one
 * MPI_Alltoall of E/P integers per peer (an MPI_Allgather of E per rank for two-stage
 * routes, whose relays need every pair's count).
 * These two ops are the blocking path (parallel.a2a_chunks = 1). With G > 1 chunks the plan
 * also cuts the local experts into G groups, each with its own routes, and
 * op_exchange_experts (parallel/expert_pipe.h) moves and multiplies them in a pipeline.
 * The transfers themselves are parallel/a2a.h's: flat, or in two stages (node first) when
 * parallel.hierarchical is on and the EP group spans whole nodes.
 */
#ifndef MOE_EXCHANGE_H
#define MOE_EXCHANGE_H

#include "autograd/ops.h"
#include "parallel/a2a.h"
#include "parallel/comm.h"

/* A zeroed struct with .comm set is the blocking flat exchange (chunks 0 reads as 1);
 * exchange_init chooses chunks and the two-stage route. */
struct MoeExchange {
    const Comm *comm;    /* borrowed */
    int chunks;          /* parallel.a2a_chunks: 1 = one blocking all-to-all each way; G > 1 =
                            the local experts in G groups, pipelined (parallel/expert_pipe.h) */
    A2aGroup group;      /* the EP group; group.hier: two-stage routes (parallel/a2a.h) */
    bool ready;          /* group filled (exchange_init, or lazily flat by exchange_plan) */
};

/* Fill ex for comm's EP group: chunks >= 1; hierarchical: use the two-stage route when the
 * EP group is several whole nodes (comm->hier and P a multiple of the node size L). Inside
 * one node (P <= L, L a multiple of P: consecutive ranks) the flat exchange is already
 * node-local, and a group that neither fills whole nodes nor fits in one stays flat.
 * Collective over the world (builds the group's node and cross-node communicators). */
void exchange_init(struct MoeExchange *ex, const Comm *comm, int chunks, bool hierarchical);
void exchange_free(struct MoeExchange *ex);

typedef struct ExchangePlan {
    int P, El, C;
    int G;                       /* chunks: groups of consecutive local experts */
    int *j0;                     /* (G+1) chunk c = local experts j0[c] .. j0[c+1]-1 */
    A2aRoute *disp, *comb;       /* (G) chunk c's dispatch (slots to their experts) and
                                    combine (outputs back) routes; the gradients travel
                                    the reverse ways on the same routes */
    int me;                      /* this rank's index in the EP group */
    int M_send, M_recv;          /* rows this rank sends / receives */
    int32_t *cnt_send;           /* (P, El) rows for expert q*El+j sent to rank q */
    int32_t *cnt_recv;           /* (P, El) rows for local expert j received from rank p */
    int *scount, *sdispl;        /* (P) floats sent to / displacement per peer */
    int *rcount, *rdispl;        /* (P) floats received from / displacement per peer */
    int32_t *perm;               /* (M_recv) staging row -> expert-major row; chunk c's
                                    staging rows are offs_local[j0[c]] .. offs_local[j0[c+1]]
                                    - 1, source-major inside the chunk */
    int32_t *offs_local;         /* (El+1) expert-major offsets of the local experts */
    float *buf;                  /* (max(M_send, M_recv), C) source-major staging */
    float *tmp;                  /* (M_send, C) receive buffer for accumulating backward */
    MPI_Comm comm;               /* the EP group */
} ExchangePlan;

/* Plan the exchange of the slots grouped by offs (E+1) of this rank: one count all-to-all
 * inside the EP group (an all-gather of every rank's counts for two-stage routes), then
 * ex->chunks chunks (at most El). Everything is carved from the tape's arena. */
ExchangePlan *exchange_plan(Tape *t, const struct MoeExchange *ex, const int32_t *offs, int E,
                            int C);

/* xg (M_send, C) grouped by global expert -> (M_recv, C) grouped by local expert. */
Tensor *op_exchange_to_experts(Tape *t, Tensor *xg, ExchangePlan *p);
/* y (M_recv, C) grouped by local expert -> (M_send, C) in xg's order. */
Tensor *op_exchange_from_experts(Tape *t, Tensor *y, ExchangePlan *p);

/* Sum expert counts (E) over all ranks (the load-balancing f_i and the logged load). */
void exchange_sum_counts(const struct MoeExchange *ex, int32_t *counts, int E);
/* Number of ranks (for the global token count). */
int exchange_ranks(const struct MoeExchange *ex);

#endif
