/* comm.h: process groups for data + expert parallelism over Open MPI.
 *
 * R ranks (MPI_COMM_WORLD) all do data parallelism: rank r takes rows
 * [r*B/R, (r+1)*B/R) of every global micro-batch. Expert parallelism groups consecutive ranks
 * in blocks of P (parallel.expert_parallel): EP group g = ranks [g*P, (g+1)*P); inside it,
 * rank q holds experts [q*E/P, (q+1)*E/P) of every MoE layer, and tokens travel to the rank
 * holding their expert by all-to-all. The R/P ranks holding the same experts (same q) form
 * that expert shard's "expert-data-parallel" (EDP) group.
 *
 * Gradients: dense (replicated) parameters are summed over all R ranks, expert parameters
 * over their EDP group only, then both are scaled by 1/R (each rank's loss is a mean over its
 * own tokens; the global loss is the mean of the R rank losses, and an expert replica's
 * gradient already sums the P ranks of its EP group).
 *
 * Nodes: ranks that share memory (MPI_Comm_split_type MPI_COMM_TYPE_SHARED) are one node;
 * the environment variable MOE_NODE_MAP (a node number per world rank, comma-separated,
 * e.g. "0,0,1,1") overrides that, so the hierarchical paths can be tested on one machine.
 * The hierarchy is usable (hier) when there are several nodes, every node has the same
 * number of ranks L, and each node's ranks are consecutive world ranks (node n = ranks
 * [n L, (n+1) L), as mpirun's default by-slot placement gives); then node_comm holds this
 * rank's node (local_rank in [0, L)) and cross_comm the ranks with the same local_rank on
 * every node (node index = rank in cross_comm). Otherwise hier is false and both are the
 * null communicator (flat collectives only).
 *
 * Started without mpirun (no Open MPI environment) the program runs as one rank without
 * calling MPI at all; every collective below is then a no-op.
 */
#ifndef MOE_COMM_H
#define MOE_COMM_H

#include <mpi.h>

#include "core/common.h"

typedef struct Comm {
    bool mpi;            /* MPI initialised (launched by mpirun) */
    int rank, size;      /* world rank and R */
    int ep, ep_rank;     /* expert-parallel group size P and this rank's index in it */
    int edp;             /* R / P: replicas of each expert shard */
    MPI_Comm world, ep_comm, edp_comm;   /* valid when mpi */
    int nodes, node, local_rank, local_size;  /* node layout (1 node of `size` ranks without
                                                 MPI) */
    bool hier;                               /* several equal nodes of consecutive ranks */
    MPI_Comm node_comm, cross_comm;          /* valid when hier */
} Comm;

/* MPI_Init when launched by mpirun (detected from the environment), else a 1-rank Comm.
 * Installs an abort hook so an ASSERT on any rank ends all of them. */
void comm_init(Comm *c, int *argc, char ***argv);
/* Build the EP/EDP groups. expert_parallel 0 = the largest size that divides both R and
 * n_experts, i.e. their gcd (min(R, n_experts) when one divides the other; 1 for a dense
 * model).
 * Fails (-1, err) when P does not divide R or n_experts, or micro_batch is not divisible by
 * R. Every rank computes the same verdict, so all return -1 together (no hang). */
int comm_setup(Comm *c, int expert_parallel, int n_experts, int micro_batch, MoeErr *err);
/* Find the node layout (called by comm_setup; every rank reaches the same verdict). A
 * malformed MOE_NODE_MAP (not R comma-separated integers in [0, R)) fails with -1 naming
 * the variable. */
int comm_nodes(Comm *c, MoeErr *err);
void comm_finalize(Comm *c);

/* In-place sums over the world, the EP group or the EDP group (no-ops on 1 rank). The float
 * ones are counted as gradient reduction (COMM_GRAD), the others as COMM_OTHER. */
void comm_sum_world_f(const Comm *c, float *x, size_t n);
void comm_sum_world_d(const Comm *c, double *x, size_t n);
void comm_sum_edp_f(const Comm *c, float *x, size_t n);
void comm_sum_ep_d(const Comm *c, double *x, size_t n);
void comm_sum_world_i32(const Comm *c, int32_t *x, size_t n);
/* Max of an int over the world (used to agree on failure). */
int comm_max_world_i(const Comm *c, int v);
void comm_barrier(const Comm *c);

/* Traffic and time of this rank since start, by kind of collective (read by the bench and
 * the cost model, docs/scaling.md):
 *   COMM_GRAD      gradient reduction: all-reduce, or reduce-scatter with the sharded
 *                  optimizer, of the parameter gradients
 *   COMM_GATHER    the sharded optimizer's all-gather of updated parameter slices
 *   COMM_ALLTOALL  the expert exchange: tokens to their experts and back, the gradients of
 *                  both, and the per-expert counts
 *   COMM_OTHER     small all-reduces: routing counts, losses, norms, agreement flags
 * bytes: payload bytes this rank SENT to other ranks. For an all-to-all that is exact (what
 *   went to each peer other than itself). For a library all-reduce, reduce-scatter or
 *   all-gather over a group of G ranks, whose algorithm MPI chooses, it is the volume of the
 *   bandwidth-optimal algorithm (ring): 2 (G-1)/G of the buffer for an all-reduce, (G-1)/G
 *   of the whole (G-slice) buffer for a reduce-scatter or all-gather.
 * calls: operations started.
 * wait: seconds this rank's thread spent inside the calls (blocking collectives, and the
 *   waits/tests of non-blocking ones): the communication time not hidden behind computation.
 * span: seconds from each operation's start to its completion being seen, summed (equal to
 *   wait for a blocking call).
 * comm_slots_offrank / comm_slots_fromrank: slots this rank routed to experts on other ranks,
 * and slots other ranks routed to its experts. */
enum { COMM_GRAD = 0, COMM_GATHER = 1, COMM_ALLTOALL = 2, COMM_OTHER = 3, COMM_KINDS = 4 };
typedef struct CommStat {
    double bytes, calls, wait, span;
} CommStat;
extern CommStat comm_stat[COMM_KINDS];
extern const char *const comm_kind_names[COMM_KINDS];
extern double comm_slots_offrank, comm_slots_fromrank;
/* Count one blocking operation of `kind` that sent `bytes` and took `seconds`. */
void comm_count(int kind, double bytes, double seconds);

#endif
