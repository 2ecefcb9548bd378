/* a2a.h: one all-to-all of floats inside the expert-parallel group, blocking or
 * non-blocking, flat or in two stages (node first), with its traffic counted as
 * COMM_ALLTOALL (parallel/comm.h).
 *
 * A route says, for the P ranks of the group, how many floats this rank sends to each peer
 * and from where in its send buffer, and how many it receives from each peer and where in
 * its receive buffer (MPI_Alltoallv's four arrays). Routes and their staging buffers are
 * built once per MoE layer call and carved from the tape's arena (parallel/exchange.c).
 *
 * Flat: one MPI_Ialltoallv (or MPI_Alltoallv for a blocking transfer) over the group.
 * Two-stage (A2aGroup.hier: the group is whole nodes of L ranks, Nn = P / L of them; EP
 * rank q = n L + l sits on node n with local index l):
 *   stage 1, inside the node: rank (n, l) sends to its node peer (n, l') everything it has
 *     for the ranks (m, l') of every node m, packed (l', m);
 *   stage 2, across nodes: rank (n, l') forwards to (m, l') what its node's L ranks have
 *     for it, packed (m, l), one message per pair of nodes and local index.
 *   What arrives from node n holds sources (n, 0) .. (n, L-1) in that order; it lands in
 *   place when the receive layout is source-major there, else in a staging buffer copied
 *   to each source's place at completion. Either way the bytes and places are the flat
 *   transfer's. Collectives must start in the same order on every rank of a communicator:
 *   stage 2s are posted in the order their transfers started (a queue of the transfers
 *   still in stage 1), whatever order each rank sees their stage 1s complete in. Stage 2 is posted when stage 1 is seen complete (a2a_test / a2a_wait), so a
 *   non-blocking two-stage transfer advances only when tested.
 *
 * Progress: Open MPI moves a non-blocking collective's data only inside MPI calls on the
 * same process (there is no progress thread in the default build), so a caller that
 * computes while transfers are in flight calls a2a_test on them between pieces of work.
 *
 * Accounting (comm.h's definitions): bytes = floats sent to OTHER ranks (both stages for a
 * two-stage transfer: the relayed data is sent twice), calls = transfers started, wait =
 * seconds inside the MPI calls (post, tests, waits), span = start to completion seen.
 */
#ifndef MOE_A2A_H
#define MOE_A2A_H

#include "autograd/tensor.h"
#include "parallel/comm.h"

/* The group a route runs over. */
typedef struct A2aGroup {
    MPI_Comm comm;       /* the EP group (P ranks) */
    int P, me;           /* group size and this rank's index */
    bool hier;           /* two-stage: the group is Nn whole nodes of L ranks */
    int L, Nn, l, n;     /* ranks per node, nodes, this rank's local index and node */
    MPI_Comm node, cross;   /* the group's ranks on this node (L); the ranks with local
                               index l on the group's nodes (Nn); valid when hier */
} A2aGroup;

/* One transfer's route. counts and displacements in floats. */
typedef struct A2aRoute {
    const A2aGroup *g;
    int *sc, *sd;        /* (P) floats to peer q and their offset in the send buffer */
    int *rc, *rd;        /* (P) floats from peer p and their offset in the receive buffer */
    double bytes;        /* payload bytes sent to other ranks (both stages) */
    /* two-stage only (NULL otherwise) */
    int *pk1;            /* (P) send-buffer pieces in stage-1 order (l', m): peer q */
    float *s1, *r1, *s2; /* stage-1 send (packed), stage-1 receive, stage-2 send (packed) */
    int *c1s, *d1s, *c1r, *d1r;   /* (L) stage-1 counts/offsets in s1 and r1 */
    int *c2s, *d2s, *c2r, *d2r;   /* (Nn) stage-2 counts/offsets in s2 and the receive buf */
    int *piece;          /* (L, Nn) floats from node peer l for node m, in r1 (l-major) */
    bool unpack;         /* the receive layout is not source-major: stage 2 lands in r2 */
    float *r2;           /* stage-2 receive (sources in order), when unpack */
} A2aRoute;

/* Build a route. sc/sd/rc/rd (P) are copied. mat (P, P): floats rank p sends rank q in
 * this transfer, for every pair (read only for a two-stage group; may be NULL when flat).
 * Carved from a. */
void a2a_route(A2aRoute *r, Arena *a, const A2aGroup *g, const int *sc, const int *sd,
               const int *rc, const int *rd, const int32_t *mat);
/* The reverse route (what r receives is sent back where it came from): sc<->rc, sd<->rd,
 * mat transposed. */
void a2a_route_reverse(A2aRoute *rev, Arena *a, const A2aRoute *r, const int32_t *mat);

/* A transfer in flight. */
typedef struct A2a {
    const A2aRoute *r;
    const float *send;
    float *recv;
    MPI_Request req;
    int stage;           /* 0 done, 1 stage 1 (or the flat transfer) in flight, 2 stage 2 */
    double t0;           /* start */
} A2a;

/* Blocking transfer: send -> recv by route r. */
void a2a_run(const A2aRoute *r, const float *send, float *recv);
/* Non-blocking: post the transfer; send must stay unchanged and recv unread until done. */
void a2a_start(A2a *x, const A2aRoute *r, const float *send, float *recv);
/* Advance it (MPI_Test; a two-stage transfer posts stage 2 here); true when complete. A
 * completed transfer tests true without calling MPI. */
bool a2a_test(A2a *x);
/* Block until it completes. */
void a2a_wait(A2a *x);

#endif
