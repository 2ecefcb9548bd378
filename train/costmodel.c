/* costmodel.c: bytes and time of one optimizer step. See costmodel.h and docs/scaling.md. */
#include "train/costmodel.h"

#include <math.h>
#include <string.h>

#include "layers/model.h"
#include "parallel/comm.h"
#include "train/memplan.h"

void costmodel_cluster_defaults(CostCluster *k) {
    memset(k, 0, sizeof *k);
    k->ranks = 1;
    k->nodes = 1;
    k->net_gbps = 100.0;
    k->net_us = 5.0;
    k->shm_gbs = 20.0;
    k->shm_us = 1.0;
    k->node_tflops = 2.0;
    k->hidden = 0.0;
}

double costmodel_allreduce_bytes(double G, double bytes) {
    return G > 1 ? 2.0 * (G - 1.0) / G * bytes : 0.0;
}

double costmodel_shard_pad(double n, double G) {
    if (G <= 1) return n;
    const double unit = 16.0 * G;
    return ceil(n / unit) * unit;
}

double costmodel_exchange_bytes(double slots_out, double slots_in, int C, bool recompute) {
    return (recompute ? 3.0 : 2.0) * (slots_out + slots_in) * (double)C * 4.0;
}

/* A replica group as laid out on the nodes: G ranks, g of them on each node it spans, n
 * nodes spanned, c such groups sharing each node (their rings share its network link). */
typedef struct Group { double G, g, n, c; } Group;

/* The group of world rank 0 whose members are 0, stride, 2 stride, ... (G of them): its
 * members per node and nodes spanned, counted on the layout (node = rank / Ln). */
static Group group_of(int G, int stride, int Ln) {
    int n = 0, last = -1, gmax = 0, here = 0;
    for (int i = 0; i < G; i++) {
        const int node = i * stride / Ln;
        if (node != last) {
            n++;
            here = 0;
            last = node;
        }
        here++;
        if (here > gmax) gmax = here;
    }
    Group r = {G, gmax, n, (double)Ln / gmax};
    return r;
}

typedef struct Links { double net, net_s, shm, shm_s; } Links;   /* bytes/s, seconds */

/* Seconds and bytes through each node's network link of `phases` ring passes (2: an
 * all-reduce; 1: a reduce-scatter or an all-gather) over group q of S bytes per rank.
 * Flat: one ring in rank order, its 2 (G-1) steps paced by the slowest link (the network
 * link, shared by the c rings crossing it, once the group spans nodes). Hierarchical: the
 * pass inside each node over its g members (shared memory), the ring over the n nodes of
 * each member's 1/g slice (all g c members of a node through its link at once), and the
 * pass inside the node again for an all-reduce. */
static double ring_time(Group q, double S, double phases, bool hier, const Links *k,
                        double *net) {
    *net = 0;
    if (q.G <= 1 || S <= 0) return 0;
    if (q.n <= 1)
        return phases * (q.G - 1) * (S / q.G / k->shm + k->shm_s);
    if (!hier || q.g <= 1) {
        *net = q.c * phases * (q.G - 1) / q.G * S;
        const double bw = fmin(k->shm, k->net / q.c);
        return phases * (q.G - 1) * (S / q.G / bw + k->net_s);
    }
    const double inner = phases * (q.g - 1) * (S / q.g / k->shm + k->shm_s);
    *net = q.c * phases * (q.n - 1) / q.n * S;
    return inner + *net / k->net + phases * (q.n - 1) * k->net_s;
}

static int check_cluster(const Config *c, const CostCluster *k, MoeErr *err) {
    const char *bad = NULL;
    if (k->ranks < 1) bad = "--ranks must be at least 1";
    else if (k->nodes < 1 || k->ranks % k->nodes)
        bad = "--nodes must divide --ranks (every node holds the same number of ranks)";
    else if (!(k->net_gbps > 0) || !(k->shm_gbs > 0) || !(k->node_tflops > 0))
        bad = "--net-gbps, --shm-gbs and --node-tflops must be positive";
    else if (!(k->net_us >= 0) || !(k->shm_us >= 0))
        bad = "--net-us and --shm-us must be at least 0";
    else if (!(k->hidden >= 0 && k->hidden <= 1)) bad = "--hidden must be in [0, 1]";
    if (!bad) return 0;
    moe_errorf(err, "%s: %s (ranks %d, nodes %d)", c->path ? c->path : "config", bad, k->ranks,
               k->nodes);
    return moe_hintf(err, "see moetrain plan --help for the cluster options");
}

int costmodel_estimate(const Config *c, const CostCluster *k, CostPlan *p, MoeErr *err) {
    memset(p, 0, sizeof *p);
    p->relay = 1.0;
    if (check_cluster(c, k, err)) return -1;
    /* the layout exactly as comm_setup makes it (a Comm without MPI of R ranks) */
    Comm cm;
    memset(&cm, 0, sizeof cm);
    cm.size = k->ranks;
    if (comm_setup(&cm, c->parallel.expert_parallel, c->moe.n_experts, c->train.micro_batch,
                   err))
        return -1;
    ModelShape s;
    LoraSpec lo;
    config_model_shape(c, &s);
    config_lora_spec(c, &lo);
    const int R = k->ranks, P = cm.ep;
    p->R = R;
    p->P = P;
    p->G_e = cm.edp;
    p->nodes = k->nodes;
    p->Ln = R / k->nodes;
    p->A = c->train.grad_accum;
    p->shard = c->parallel.shard_optimizer && R > 1;
    p->hier = c->parallel.hierarchical && k->nodes > 1;
    const double C = s.C, L = s.L, E = s.E, K = s.K, A = p->A;
    const double El = s.E > 0 ? (double)(s.E / P) : 0.0;

    /* parameters: the memory plan's count of the tensors one rank holds (rank 1: rank 0
     * also gathers the experts for checkpoints) */
    MemPlan mp;
    memplan_estimate(c, R, P, R > 1 ? 1 : 0, &mp);
    p->memory = mp.total;
    const double expert1 = 3.0 * s.F * C;   /* w1, w3, w2 of one expert */
    p->n_params = mp.n_params + L * (E - El) * expert1;
    p->n_active = model_active_params(&s);
    p->n_expert = lo.rank == 0 || lo.train_experts ? L * El * expert1 : 0.0;
    p->n_dense = mp.n_trainable - p->n_expert;
    p->pad_dense = p->shard ? costmodel_shard_pad(p->n_dense, R) : p->n_dense;
    p->pad_expert = p->shard ? costmodel_shard_pad(p->n_expert, p->G_e) : p->n_expert;
    if (p->n_dense == 0) p->pad_dense = 0;   /* zero.c shards no empty block */
    if (p->n_expert == 0) p->pad_expert = 0;

    /* gradient reduction and the sharded optimizer's all-gather (per block, per step) */
    const double Gd = R, Ge = p->G_e;
    if (p->shard) {
        p->grad_dense = (Gd - 1) / Gd * 4.0 * p->pad_dense;
        p->grad_expert = (Ge - 1) / Ge * 4.0 * p->pad_expert;
        p->gather = p->grad_dense + p->grad_expert;
    } else {
        p->grad_dense = costmodel_allreduce_bytes(Gd, 4.0 * p->n_dense);
        p->grad_expert = costmodel_allreduce_bytes(Ge, 4.0 * p->n_expert);
    }

    /* the expert exchange: the trainer exchanges whenever R > 1 (P = 1 sends nothing) */
    p->tokens = (double)(c->train.micro_batch / R) * c->train.seq_len;
    const double N = p->tokens;
    p->xfers = c->train.recompute ? 3.0 : 2.0;
    p->plans = c->train.recompute ? 2.0 : 1.0;
    if (s.E > 0) {
        const double cf = s.capacity_factor;
        if (s.router == MOE_ROUTER_TOPK)   /* each expert keeps at most ceil(N K / E cf) */
            p->slots = cf > 0 ? fmin(N * K, E * fmax(1.0, ceil(N * K / E * cf))) : N * K;
        else if (s.router == MOE_ROUTER_TOPP)
            p->slots = N * (s.max_experts > 0 ? s.max_experts : E);
        else
            p->slots = E * fmin(N, fmax(1.0, ceil(N * K * (cf > 0 ? cf : 1.0) / E)));
    }
    if (s.E > 0 && R > 1) {
        const double off = p->slots * (P - 1.0) / P;   /* uniform: (P-1)/P leave the rank */
        p->a2a_rows = A * L * costmodel_exchange_bytes(off, off, s.C, c->train.recompute);
        /* the two-stage route (parallel/a2a.h; parallel/exchange.c takes it when the EP
         * group is Nn > 1 whole nodes): stage 1 sends the rows for the Ln - 1 other local
         * indices, (Ln-1)/Ln of the slots; stage 2 forwards what the node's Ln ranks hold
         * for the same local index on the Nn - 1 other nodes, Ln M / P per node = (Nn-1)/Nn
         * of the slots: rows for other nodes are sent twice */
        p->two_stage = p->hier && P > p->Ln && P % p->Ln == 0;
        if (p->two_stage) {
            const double Lg = p->Ln, Nn = P / p->Ln;
            p->relay = ((Lg - 1.0) / Lg + (Nn - 1.0) / Nn) / ((P - 1.0) / P);
            p->a2a_rows *= p->relay;
        }
        p->a2a_counts = A * L * p->plans * (P - 1.0) * El * 4.0;
        p->other = A * L * p->plans * costmodel_allreduce_bytes(R, 4.0 * E);
    }

    /* time */
    const Links lk = {k->net_gbps * 1e9 / 8.0, k->net_us * 1e-6, k->shm_gbs * 1e9,
                      k->shm_us * 1e-6};
    const int Ln = p->Ln;
    double net;
    const Group gd = group_of(R, 1, Ln), ge = group_of(p->G_e, P, Ln);
    const double ph = p->shard ? 1.0 : 2.0;   /* sharded: reduce-scatter here, gather below */
    const double Sd = 4.0 * p->pad_dense, Se = 4.0 * p->pad_expert;
    p->t_grad = ring_time(gd, Sd, ph, p->hier, &lk, &net);
    p->net_grad = net;
    p->t_grad += ring_time(ge, Se, ph, p->hier, &lk, &net);
    p->net_grad += net;
    if (p->shard) {
        p->t_gather = ring_time(gd, Sd, 1, p->hier, &lk, &net);
        p->net_gather = net;
        p->t_gather += ring_time(ge, Se, 1, p->hier, &lk, &net);
        p->net_gather += net;
    }
    if (s.E > 0 && R > 1 && P > 1) {
        /* share of a rank's peers in its EP group that sit on other nodes, averaged */
        double far = 0, same = 0;
        for (int r = 0; r < R; r++) {
            const int g0 = r / P * P, n0 = r / Ln * Ln;
            const int lo_ = g0 > n0 ? g0 : n0, hi = g0 + P < n0 + Ln ? g0 + P : n0 + Ln;
            same += hi - lo_;
            far += (double)(P - (hi - lo_)) / (P - 1.0);
        }
        far /= R;
        same /= R;   /* Lp: members of the EP group on the rank's node */
        /* the flat route's bytes: the two-stage route sends more, not more across nodes */
        const double bytes = p->a2a_rows / p->relay + p->a2a_counts;
        p->net_a2a = Ln * far * bytes;
        const double calls = A * L * (2.0 * p->xfers + p->plans);
        double intra = (1.0 - far) * bytes, lat;
        if (p->hier && far > 0) {   /* rows for other nodes take one more hop inside */
            intra = bytes;
            lat = calls * ((P / same - 1.0) * lk.net_s + 2.0 * (same - 1.0) * lk.shm_s);
        } else {
            lat = calls * ((P - same) * lk.net_s + (same - 1.0) * lk.shm_s);
        }
        p->t_a2a = fmax(p->net_a2a / lk.net, intra / lk.shm) + lat;
    }
    if (s.E > 0 && R > 1) {   /* small all-reduces: latency of recursive doubling */
        const double calls = A * L * p->plans;
        const double steps_net = k->nodes > 1 ? ceil(log2((double)k->nodes)) : 0;
        const double steps_shm = Ln > 1 ? ceil(log2((double)Ln)) : 0;
        p->t_other = calls * (k->nodes > 1 && !p->hier
                                  ? ceil(log2((double)R)) * lk.net_s
                                  : steps_net * lk.net_s + (p->hier ? 2.0 : 1.0) *
                                                               steps_shm * lk.shm_s);
    }
    /* compute: the model FLOPs of the rank's tokens, plus one more forward (a third of
     * them) with recomputation */
    const double fpt = model_flops_per_token_lora(&s, &lo, c->train.seq_len);
    p->flops = A * N * fpt * (c->train.recompute ? 4.0 / 3.0 : 1.0);
    p->t_compute = p->flops / (k->node_tflops * 1e12 / Ln);
    p->t_comm = p->t_grad + p->t_gather + p->t_a2a + p->t_other;
    p->t_step = fmax(p->t_compute + (1.0 - k->hidden) * p->t_comm, fmax(p->t_compute,
                                                                           p->t_comm));
    p->tokens_per_s = A * N * R / p->t_step;
    return 0;
}
