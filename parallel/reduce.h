/* reduce.h: the data-parallel gradient reduction with our own order of summation, in
 * buckets that overlap the backward pass.
 *
 * What is summed: each parameter block over its replica group of G ranks (DENSE: the world;
 * EXPERT: the expert-data-parallel group, comm.h), then scaled by 1/R, as dp_reduce_grads
 * and zero_reduce_grads do. How: every position x of the block's gradient is summed by ONE
 * rank of the group, in group-rank order,
 *     s(x) = ((g_0(x) + g_1(x)) + g_2(x)) + ... + g_{G-1}(x),   then s(x) (1/R)  (float)
 * whatever bucket x falls in, so the result does not depend on the bucket size nor on
 * whether the optimizer is sharded. A bucket is a contiguous range [lo, lo + n) of the
 * block's gradient buffer (declaration order). Unsharded, the range is cut into G near-equal
 * slices; MPI_Ialltoallv sends slice j of every rank's gradient to group member j, which sums
 * its G received copies in the order above, then MPI_Iallgatherv gives everyone every
 * slice. Sharded (parallel/zero.h), member j owns the fixed slice [j S, (j + 1) S) of the
 * padded buffer: the alltoallv sends each owner the part of the range inside its slice and
 * the owner keeps the sums (the rest of its gradient buffer is stale, as with
 * zero_reduce_grads). For G = 2 the sum is a + b, as MPI_Allreduce's, so two ranks give the
 * same bits as before; for G >= 3 the order is ours, not the library's.
 *
 * Hierarchical (parallel.hierarchical, and Comm.hier: several nodes of L ranks each), for
 * an UNSHARDED block whose group has the same number M > 1 of members on every one of
 * N > 1 nodes: (1) alltoallv inside the node over M slices and the M local sums in local
 * order, (2) on this member's slice, alltoallv across the nodes (the members with the same
 * local index) over N sub-slices and the N node sums in node order, (3) all-gather of the
 * sub-slices across nodes, (4) all-gather of the slices inside the node. The sum is then
 *     s(x) = sum over nodes n = 0..N-1 (in order) of [sum over local members m = 0..M-1
 *            (in order) of g_{n,m}(x)],
 * a different association from the flat order (so hierarchical and flat agree to rounding,
 * not bitwise), still independent of the bucket size. Only the inter-node stages' bytes
 * cross nodes: 2 (N-1)/N of 1/M of the block per rank instead of 2 (G-1)/G of the block.
 * Sharded blocks stay flat (their owner slices do not follow the node layout).
 *
 * Overlap: with bucket_floats > 0, the caller marks the start of each layer's forward on
 * the tape (tape_mark(t, layer)) and installs grad_reduce_hook for the LAST backward of the
 * step. A bucket is launched when the backward has passed the mark of the lowest layer any
 * of its tensors belongs to (final_at below); between ops the hook polls the outstanding
 * requests (MPI_Test), which is what advances Open MPI's non-blocking collectives (libnbc
 * progresses only inside MPI calls), and starts each bucket's next stage in bucket order
 * (every stage has its own duplicated communicator, so the start order on each is the
 * same on every rank). grad_reduce_finish launches what is left and waits for everything;
 * with bucket_floats = 0 it does all the work there (after the backward, as before), in
 * pieces of GR_PIECE floats.
 * Memory: GR_SLOTS staging slots per block of one bucket's receive size each (a bucket holds
 * its slot until its own sums are done; a ready bucket whose slot is busy leaves at a later
 * poll, never blocking the backward),
 * allocated here at set-up, with the requests and count arrays: the step allocates nothing.
 * Counted as COMM_GRAD (comm.h): bytes exact for the alltoallv stages, ring volume for the
 * all-gathers; wait = time inside MPI calls made here; span = each stage's start to its
 * completion being seen.
 */
#ifndef MOE_REDUCE_H
#define MOE_REDUCE_H

#include "autograd/params.h"
#include "parallel/comm.h"

#define GR_PIECE ((size_t)1 << 21)   /* floats per piece with bucket_floats = 0 (8 MiB) */
#define GR_SLOTS 4                   /* buckets in flight per block */
#define GR_STAGES 4                  /* stages of a bucket, at most (hierarchical) */

struct GrBlock;

typedef struct GradReduce {
    const Comm *comm;
    ParamSet *ps;
    size_t bucket;            /* floats per bucket, 0 = after the backward */
    bool armed;               /* between grad_reduce_begin and grad_reduce_finish */
    bool check_local;         /* sum the squares of this rank's own gradients at launch */
    double local_sumsq;       /* ... here (before the reduction overwrote them) */
    int mark;                 /* lowest mark passed in this backward (INT_MAX: none) */
    int launched_early;       /* buckets released by marks in this backward (not by finish);
                                 each leaves as soon as a staging slot is free */
    double last_poll;         /* moe_now() of the last MPI_Test round */
    struct GrBlock *blk[PBLOCK_COUNT];   /* owned; NULL: not reduced (G = 1 or empty) */
    MPI_Request *any;         /* (all buckets) scratch for MPI_Waitany ... */
    int *any_b, *any_q;       /* ... and which block and launch number each request is */
} GradReduce;

/* parallel.bucket_mb in floats: negative = automatic (GR_AUTO_MB when c spans several
 * nodes, else 0: within one machine the transfers are copies by the same busy cores). */
#define GR_AUTO_MB 16
size_t grad_reduce_bucket_floats(double bucket_mb, const Comm *c);
/* Bytes of the staging slots (for memory reports). */
size_t grad_reduce_staging_bytes(const GradReduce *g);
/* Set up the reduction of ps over c's groups (after zero_shard if sharding; collective:
 * every rank calls it). bucket_floats 0: reduce after the backward. final_at[i] (ps->count)
 * is the mark after which parameter i's gradient is final (a layer index), or -1 for "only
 * at the end of the backward"; only read when bucket_floats > 0 (then may not be NULL).
 * hierarchical: use the node stages where they apply (see above). */
void grad_reduce_init(GradReduce *g, ParamSet *ps, const Comm *c, size_t bucket_floats,
                      const int *final_at, bool hierarchical);
void grad_reduce_free(GradReduce *g);
/* Whether block b goes through the hierarchical stages. */
bool grad_reduce_block_hier(const GradReduce *g, int b);
/* Before the step's LAST backward: arm the buckets (check_local: also sum this rank's
 * squared gradients as they are launched, for the numerical health check). */
void grad_reduce_begin(GradReduce *g, bool check_local);
/* The TapeHook for that backward (ctx = the GradReduce): marks launch buckets, progress
 * calls poll (at most every GR_POLL_S seconds). */
void grad_reduce_hook(void *ctx, int mark);
/* After the backward: launch the rest, wait for all, scale by 1/R (every block, reduced or
 * not). Afterwards the gradients are what dp_reduce_grads (unsharded) or
 * zero_reduce_grads (sharded: this rank's slices) would give, summed in the order above. */
void grad_reduce_finish(GradReduce *g);

#endif
