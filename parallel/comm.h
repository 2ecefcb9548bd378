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

/* In-place sums / means over the world, the EP group or the EDP group (no-ops on 1 rank). */
void comm_sum_world_f(const Comm *c, float *x, size_t n);
void comm_sum_world_d(const Comm *c, double *x, size_t n);
void comm_sum_edp_f(const Comm *c, float *x, size_t n);
void comm_sum_ep_d(const Comm *c, double *x, size_t n);
void comm_sum_world_i32(const Comm *c, int32_t *x, size_t n);
/* Max of an int over the world (used to agree on failure). */
int comm_max_world_i(const Comm *c, int v);
void comm_barrier(const Comm *c);

/* Traffic and time of this rank since start (read by the bench): bytes handed to
 * all-reduces (and to the sharded optimizer's reduce-scatters and all-gathers, zero.h),
 * bytes sent to OTHER ranks by all-to-alls, slots this rank routed to experts on other
 * ranks and slots other ranks routed to its experts, and seconds spent inside the
 * collectives. */
extern double comm_bytes_allreduce, comm_bytes_alltoall, comm_slots_offrank, comm_slots_fromrank;
extern double comm_time_allreduce, comm_time_alltoall;

#endif
