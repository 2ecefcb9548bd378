/* costmodel.h: what one optimizer step of a config sends between ranks, and how long it
 * takes on a stated cluster, computed from the config's shape alone (docs/scaling.md is
 * the derivation, with the sources of each formula).
 *
 * Bytes follow the definitions of the traffic counters (parallel/comm.h): payload bytes a
 * rank SENDS to other ranks; a library all-reduce over G ranks counts the ring volume
 * 2 (G-1)/G of its buffer, a reduce-scatter or all-gather (G-1)/G, an all-to-all its exact
 * per-peer bytes. Per rank and per optimizer step (grad_accum micro-batches):
 *   gradient reduction (COMM_GRAD)   dense block 2 (R-1)/R 4 n_dense over all R ranks, expert
 *                                    block 2 (G_e-1)/G_e 4 n_expert over the G_e = R/P ranks
 *                                    holding the same experts; sharded (parallel.
 *                                    shard_optimizer): the reduce-scatter's (G-1)/G 4 gpad
 *                                    of the padded buffer gpad = n rounded up to 16 G
 *   parameter all-gather (COMM_GATHER) sharded only: (G-1)/G 4 gpad per block
 *   expert all-to-all (COMM_ALLTOALL) per MoE layer and micro-batch: xfers (out + in) C 4
 *                                    bytes of routed rows (xfers = 2: the forward's dispatch
 *                                    and combine and their gradients; 3 with train.recompute,
 *                                    whose backward runs the forward's exchange again) plus
 *                                    plans (P-1) E/P 4 bytes of per-expert counts (plans = 1,
 *                                    2 with recompute); under uniform routing out = in =
 *                                    M (P-1)/P with M the kept slots of the rank's N tokens;
 *                                    on the two-stage route (hierarchical, the EP group Nn
 *                                    whole nodes of Ln ranks) a row for another node is sent
 *                                    twice (relayed inside its node first): out = in =
 *                                    M ((Ln-1)/Ln + (Nn-1)/Nn)
 *   small all-reduces (COMM_OTHER)   the routing counts: plans 2 (R-1)/R 4 E per MoE layer
 *                                    and micro-batch (the losses, norms and statistics of a
 *                                    step, O(L) doubles, are left out)
 * Placement: node n holds ranks [n Ln, (n+1) Ln) (mpirun's by-slot order, parallel/comm.h),
 * Ln = R / nodes. Time: ring collectives (Patarasuk and Yuan 2009), pairwise all-to-all, an
 * alpha-beta cost per message (Hockney 1994) with one network link per node shared by its
 * ranks and a shared-memory path inside a node; compute at a stated sustained FLOP/s per
 * node; a stated fraction of the communication hidden behind compute.
 */
#ifndef MOE_COSTMODEL_H
#define MOE_COSTMODEL_H

#include "core/common.h"
#include "configs/config.h"

/* The cluster a plan is evaluated on (defaults: costmodel_cluster_defaults). */
typedef struct CostCluster {
    int ranks;           /* R >= 1 */
    int nodes;           /* >= 1, divides R */
    double net_gbps;     /* network bandwidth of one node, each direction, Gb/s (> 0) */
    double net_us;       /* latency of one network message, microseconds (>= 0) */
    double shm_gbs;      /* shared-memory bandwidth of one rank inside a node, GB/s (> 0) */
    double shm_us;       /* latency of one message inside a node, microseconds (>= 0) */
    double node_tflops;  /* sustained training FLOP/s of one node, TFLOP/s (> 0) */
    double hidden;       /* share of the communication time hidden behind compute, [0, 1] */
} CostCluster;

/* 1 rank, 1 node; 100 Gb/s and 5 us between nodes; 20 GB/s and 1 us inside; 2 TFLOP/s a
 * node; nothing hidden. */
void costmodel_cluster_defaults(CostCluster *k);

typedef struct CostPlan {
    int R, P, G_e, nodes, Ln, A;   /* ranks, expert parallel, expert replicas, nodes, ranks
                                      per node, micro-batches per step */
    bool shard, hier;              /* sharded optimizer; hierarchical (several nodes) */
    double n_params, n_active;     /* whole model; matmul parameters active per token */
    double n_dense, n_expert;      /* trainable floats of one rank: dense block, its experts */
    double pad_dense, pad_expert;  /* their padded lengths when sharded (else n) */
    double tokens;                 /* N: tokens of one rank per micro-batch */
    double slots;                  /* M: routed slots one rank keeps per MoE layer and micro-
                                      batch (uniform routing; top-p: its cap) */
    double xfers, plans;           /* transfers of each routed row; exchange plans per layer */
    bool two_stage;                /* the exchange takes the two-stage route (parallel/a2a.h):
                                      hierarchical, the EP group several whole nodes */
    double relay;                  /* rows sent per row of the flat route (1, or more on
                                      the two-stage route) */
    /* bytes one rank sends per optimizer step, by counter (parallel/comm.h) */
    double grad_dense, grad_expert;   /* COMM_GRAD = their sum */
    double gather;                    /* COMM_GATHER */
    double a2a_rows, a2a_counts;      /* COMM_ALLTOALL = their sum (uniform routing) */
    double other;                     /* COMM_OTHER: routing counts */
    /* bytes that leave one node per optimizer step through its network link */
    double net_grad, net_gather, net_a2a;
    /* seconds per optimizer step */
    double flops;                     /* FLOPs of one rank per step (with recomputation) */
    double t_compute, t_grad, t_gather, t_a2a, t_other, t_comm, t_step;
    double tokens_per_s;              /* global */
    double memory;                    /* bytes one rank holds (train/memplan.h, rank 1) */
} CostPlan;

/* Ring all-reduce volume over G ranks of `bytes`: 2 (G-1)/G bytes (0 for G = 1). */
double costmodel_allreduce_bytes(double G, double bytes);
/* Padded length of a block of n floats sharded over G ranks: n rounded up to 16 G (n when
 * G = 1; parallel/zero.c). */
double costmodel_shard_pad(double n, double G);
/* Bytes of routed rows one rank sends through the expert all-to-alls when, summed over its
 * forward passes' exchange plans, it routed slots_out slots to experts on other ranks and
 * received slots_in from them: xfers (out + in) C 4 with xfers = 2, or 3 with
 * recomputation (whose slots counters see every plan twice: pass the counters divided by
 * 2 then). */
double costmodel_exchange_bytes(double slots_out, double slots_in, int C, bool recompute);

/* The plan of config c (validated) on cluster k; the layout follows comm_setup
 * (parallel.expert_parallel, 0 = automatic). -1 with err when the layout is impossible
 * (P does not divide R or E, R does not divide the micro-batch, nodes does not divide R,
 * a cluster figure out of range). */
int costmodel_estimate(const Config *c, const CostCluster *k, CostPlan *p, MoeErr *err);

#endif
