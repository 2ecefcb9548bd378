/* moe.c: the sparse MoE block. See moe.h for the formulas and references. */
#include "layers/moe.h"

#include "autograd/blas.h"
#include "core/pool.h"
#include "layers/regions.h"
#include "parallel/exchange.h"
#include "parallel/expert_pipe.h"

#include <math.h>
#include <string.h>

void moe_stats_init(MoeStats *st, int L, int E) {
    memset(st, 0, sizeof *st);
    st->L = L;
    st->E = E;
    int EE = E > 0 ? E : 1;
    st->count = moe_calloc(sizeof(double) * (size_t)L * (size_t)EE);
    st->dropped = moe_calloc(sizeof(double) * (size_t)L);
    st->entropy = moe_calloc(sizeof(double) * (size_t)L);
    st->tokens = moe_calloc(sizeof(double) * (size_t)L);
    st->experts = moe_calloc(sizeof(double) * (size_t)L);
    st->remote = moe_calloc(sizeof(double) * (size_t)L);
}

void moe_stats_reset(MoeStats *st) {
    int EE = st->E > 0 ? st->E : 1;
    memset(st->count, 0, sizeof(double) * (size_t)st->L * (size_t)EE);
    memset(st->dropped, 0, sizeof(double) * (size_t)st->L);
    memset(st->entropy, 0, sizeof(double) * (size_t)st->L);
    memset(st->tokens, 0, sizeof(double) * (size_t)st->L);
    memset(st->experts, 0, sizeof(double) * (size_t)st->L);
    memset(st->remote, 0, sizeof(double) * (size_t)st->L);
    st->calls = 0;
}

void moe_stats_free(MoeStats *st) {
    moe_free(st->count);
    moe_free(st->dropped);
    moe_free(st->entropy);
    moe_free(st->tokens);
    moe_free(st->experts);
    moe_free(st->remote);
    memset(st, 0, sizeof *st);
}

/* Group the N*K routed slots by expert. counts (E): slots routed to each expert before the
 * capacity cut; offs (E+1): prefix sum of the kept counts; rows (M): source token of each
 * kept slot, grouped by expert, token order inside a group; slot (N*K): index of (n,k) in
 * rows, or -1 when dropped or unused (idx -1: a top-p / expert-choice slot holding no
 * expert, not counted as dropped). Returns M (kept slots) and the dropped count. */
static int moe_plan(int N, int K, int E, const int32_t *idx, long cap, int32_t *counts,
                    int32_t *offs, int32_t *rows, int32_t *slot, int32_t *fill, long *dropped) {
    memset(counts, 0, sizeof(int32_t) * (size_t)E);
    for (int j = 0; j < N * K; j++)
        if (idx[j] >= 0) counts[idx[j]]++;
    offs[0] = 0;
    for (int e = 0; e < E; e++) {
        long kept = counts[e] < cap ? counts[e] : cap;
        offs[e + 1] = offs[e] + (int32_t)kept;
        fill[e] = 0;
    }
    long drop = 0;
    for (int n = 0; n < N; n++) {
        for (int k = 0; k < K; k++) {
            int e = idx[n * K + k];
            if (e < 0) {
                slot[n * K + k] = -1;
                continue;
            }
            int r = fill[e]++;
            if (offs[e] + r < offs[e + 1]) {
                rows[offs[e] + r] = n;
                slot[n * K + k] = offs[e] + r;
            } else {
                slot[n * K + k] = -1;
                drop++;
            }
        }
    }
    *dropped = drop;
    return offs[E];
}

/* ---- routers (moe.router): gates and idx (N, W), W slots per token, idx -1 unused ---- */

static int route_width(const MoeLayerArgs *a) {
    switch (a->router) {
    case MOE_ROUTER_TOPK: return a->K;
    case MOE_ROUTER_TOPP: return a->max_experts > 0 ? a->max_experts : a->E;
    case MOE_ROUTER_EXPERT_CHOICE: return a->E;
    }
    ASSERT(0, "unknown router %d", (int)a->router);
    return 0;
}

/* Expert-choice capacity per expert: Zhou et al. 2022 (sec. 3.1) k = n c / e with c the
 * mean experts per token, here c = K * capacity_factor (factor 0 read as 1, so the compute
 * matches top-K), rounded up and clamped to [1, N]. */
static int route_ec_capacity(int N, const MoeLayerArgs *a) {
    const double f = a->capacity_factor > 0.0f ? (double)a->capacity_factor : 1.0;
    const double c = ceil((double)N * a->K * f / a->E);
    return c < 1.0 ? 1 : c > (double)N ? N : (int)c;
}

/* h (N, E) -> gates (N, W), filling idx (N, W) (arena). */
static Tensor *route_gates(Tape *t, Tensor *h, const MoeLayerArgs *a, int32_t *idx) {
    if (a->router == MOE_ROUTER_TOPP) return op_topp_gate(t, h, a->top_p, route_width(a), idx);
    if (a->router == MOE_ROUTER_EXPERT_CHOICE)
        return op_expert_choice_gate(t, h, route_ec_capacity((int)tensor_rows(h), a), idx);
    const bool unscaled = a->route_scale == 0.0f || a->route_scale == 1.0f;
    if (a->score == MOE_SCORE_SOFTMAX && a->topk_groups == 0 && unscaled)
        return op_topk_gate_bias(t, h, a->bias, a->K, idx);   /* bias NULL: plain top-k */
    const TopkRoute r = {.K = a->K, .sigmoid = a->score == MOE_SCORE_SIGMOID,
                         .scale = unscaled ? 1.0f : a->route_scale, .n_groups = a->n_groups,
                         .topk_groups = a->topk_groups, .bias = a->bias};
    return op_topk_route(t, h, &r, idx);
}

/* The f of the load-balancing loss by moe.aux_scope (moe.h), returned with *rows, the
 * tokens that share one of its rows: batch: f (E) as given (this call's counts, summed over
 * the ranks), *rows = N; sequence: one row per sequence of a->T tokens, the share of that
 * sequence's routed slots (idx (N, W), before capacity) going to each expert (DeepSeek-V3
 * eq. 18, f_i = E / (K T) x count, is E x this share: the E is in the loss's scale);
 * global: the share of the step's slots so far, a->step_count (E). Arena-carved. */
static const float *aux_shares(Tape *t, const MoeLayerArgs *a, const int32_t *idx, int N,
                               int W, const float *f, int *rows) {
    const int E = a->E;
    *rows = N;
    if (a->aux_scope == MOE_AUX_BATCH) return f;
    if (a->aux_scope == MOE_AUX_GLOBAL) {
        ASSERT(a->step_count != NULL, "aux scope global without the step's counts");
        double tot = 0.0;
        for (int e = 0; e < E; e++) tot += a->step_count[e];
        float *g = arena_floats(&t->arena, (size_t)E);
        for (int e = 0; e < E; e++) g[e] = tot > 0 ? (float)(a->step_count[e] / tot) : 0.0f;
        return g;
    }
    ASSERT(a->T >= 1 && N % a->T == 0, "aux scope sequence: T %d does not divide N %d", a->T,
           N);
    const int S = N / a->T;
    float *g = arena_floats(&t->arena, (size_t)S * E + 1);   /* (S, E) */
    int32_t *cnt = arena_ints(&t->arena, (size_t)E);
    for (int s = 0; s < S; s++) {
        memset(cnt, 0, sizeof(int32_t) * (size_t)E);
        long tot = 0;
        for (int n = s * a->T; n < (s + 1) * a->T; n++)
            for (int k = 0; k < W; k++) {
                const int e = idx[(size_t)n * W + k];
                if (e >= 0) {
                    cnt[e]++;
                    tot++;
                }
            }
        for (int e = 0; e < E; e++)
            g[(size_t)s * E + e] = tot > 0 ? (float)((double)cnt[e] / (double)tot) : 0.0f;
    }
    *rows = a->T;
    return g;
}

/* (token, EP rank other than this one) pairs among the routed slots idx (N, W): a token
 * whose K experts live on one other rank counts 1, not K (MoeStats.remote). */
static long remote_pairs(const int32_t *idx, int N, int W, int E, const MoeExchange *ex) {
    const int P = ex->comm->ep, me = ex->comm->ep_rank, El = E / P;
    long pairs = 0;
    for (int n = 0; n < N; n++)
        for (int k = 0; k < W; k++) {
            const int e = idx[(size_t)n * W + k];
            if (e < 0 || e / El == me) continue;
            bool seen = false;   /* an earlier slot of this token on the same rank */
            for (int j = 0; j < k && !seen; j++)
                seen = idx[(size_t)n * W + j] >= 0 && idx[(size_t)n * W + j] / El == e / El;
            pairs += !seen;
        }
    return pairs;
}

/* Router noise and the statistics' router entropy (moe.h), row ranges over the cores
 * (pool_parallel_range): every element is a pure function of its row, the entropy sum is
 * taken afterwards in row order, so both are bit-identical at any thread count. */
typedef struct MoeRows {
    const MoeLayerArgs *a;
    float *eps;          /* noise: (N, E) */
    const float *clean;  /* entropy: logits (N, E) */
    double *ent;         /* entropy: (N) per row */
    int E;
} MoeRows;

static void noise_rows(void *ctx, size_t lo, size_t hi) {
    const MoeRows *r = ctx;
    const MoeLayerArgs *a = r->a;
    const int E = r->E;
    for (size_t n = lo; n < hi; n++)
        for (int e = 0; e < E; e++)
            r->eps[n * E + e] = moe_randn_key(
                a->seed, (uint64_t)a->step, (uint64_t)a->layer,
                (uint64_t)(a->token_base + (long)n) * (uint64_t)E + (uint64_t)e);
}

/* exp of a row kept for its second use when E is at most this (exp is a pure function:
 * the kept value is what calling it again returns) */
#define MOE_ENT_KEEP 64

static void entropy_rows(void *ctx, size_t lo, size_t hi) {
    const MoeRows *r = ctx;
    const int E = r->E;
    const bool keep = E <= MOE_ENT_KEEP;
    double ex[MOE_ENT_KEEP];
    for (size_t n = lo; n < hi; n++) {
        const float *l = r->clean + n * E;
        float mx = l[0];
        for (int e = 1; e < E; e++) mx = l[e] > mx ? l[e] : mx;
        double s = 0, se = 0;
        for (int e = 0; e < E; e++) {
            const double v = exp((double)(l[e] - mx));
            if (keep) ex[e] = v;
            s += v;
        }
        for (int e = 0; e < E; e++) {
            double p = (keep ? ex[e] : exp((double)(l[e] - mx))) / s;
            if (p > 0) se -= p * log(p);
        }
        r->ent[n] = se;
    }
}

void moe_router_noise(float *eps, int N, int E, const MoeLayerArgs *a) {
    MoeRows r = {.a = a, .eps = eps, .E = E};   /* log, cos per element */
    pool_parallel_range((size_t)N, (size_t)N * E * 2 * POOL_COST_LIBM, noise_rows, &r);
}

double moe_router_entropy(const float *clean, int N, int E, double *ent) {
    MoeRows r = {.clean = clean, .ent = ent, .E = E};   /* 2 exp + log per element */
    pool_parallel_range((size_t)N, (size_t)N * E * 3 * POOL_COST_LIBM, entropy_rows, &r);
    double sum = 0;
    for (int n = 0; n < N; n++) sum += ent[n];
    return sum;
}

/* The up projections' product with W (E_l, F, C) of the rows xin (M, C), with its adapter
 * i (0 = w1, 2 = w3) when there is one. */
static Tensor *expert_up(Tape *t, Tensor *xin, Tensor *w, const MoeLora *lo, int i,
                         const int32_t *offs, int E) {
    if (lo && lo->a[i]) return op_expert_lora_linear(t, xin, w, lo->a[i], lo->b[i], offs, E,
                                                     lo->scale);
    return op_expert_linear(t, xin, w, offs, E);
}

/* The experts on their grouped rows xin (M, C) -> (M, C): SwiGLU of the up projections,
 * then the down projection (fused, the activation not kept, unless w2 has an adapter). */
static Tensor *experts_unfused(Tape *t, Tensor *xin, Tensor *w1, Tensor *w3, Tensor *w2,
                               const MoeLora *lo, const int32_t *offs, int E) {
    Tensor *h1 = expert_up(t, xin, w1, lo, 0, offs, E);                 /* (M, F) */
    Tensor *h3 = expert_up(t, xin, w3, lo, 2, offs, E);                 /* (M, F) */
    if (lo && lo->a[1]) {
        Tensor *act = op_swiglu(t, h1, h3);                             /* (M, F) */
        return op_expert_lora_linear(t, act, w2, lo->a[1], lo->b[1], offs, E, lo->scale);
    }
    return op_swiglu_expert_linear(t, h1, h3, w2, offs, E);            /* (M, C) */
}

Tensor *moe_forward(Tape *t, Tensor *x, Tensor *router, Tensor *noise, Tensor *w1, Tensor *w3,
                    Tensor *w2, const MoeLayerArgs *a, MoeExchange *ex, MoeStats *st,
                    Tensor **aux, Tensor **z) {
    const int N = (int)tensor_rows(x), E = a->E, K = a->K;
    ASSERT(ex != NULL || (a->e_first == 0 && a->e_local == E),
           "without an exchange every expert must be local");

    tape_region(t, REGION_ROUTER);
    const MoeLora *lo = a->lora;
    Tensor *clean = lo && lo->gate_a                                    /* (N, E) */
                        ? lora_linear_fp32(t, x, router, lo->gate_a, lo->gate_b, lo->scale,
                                           &lo->gate_drop)
                        : op_linear_fp32(t, x, router);
    Tensor *h = clean;
    if (a->noise) {
        Tensor *std = op_softplus(t, op_linear_fp32(t, x, noise));       /* (N, E) */
        int shape[2] = {N, E};
        Tensor *eps = tape_const(t, 2, shape);
        moe_router_noise(eps->data, N, E, a);
        h = op_add(t, clean, op_mul(t, eps, std));
    }

    const int W = route_width(a);                                   /* slots per token */
    const bool ec = a->router == MOE_ROUTER_EXPERT_CHOICE;
    int32_t *idx = arena_ints(&t->arena, (size_t)N * W);
    Tensor *gates = route_gates(t, h, a, idx);                      /* (N, W) */

    int32_t *counts = arena_ints(&t->arena, (size_t)E);
    int32_t *offs = arena_ints(&t->arena, (size_t)E + 1);
    int32_t *fill = arena_ints(&t->arena, (size_t)E);
    int32_t *rows = arena_ints(&t->arena, (size_t)N * W);
    int32_t *slot = arena_ints(&t->arena, (size_t)N * W);
    long cap = (long)N * W;
    if (a->capacity_factor > 0.0f && !ec) {   /* expert choice: the capacity is the routing */
        cap = (long)ceil((double)N * K / E * (double)a->capacity_factor);
        if (cap < 1) cap = 1;
    }
    long dropped = 0;
    int M = moe_plan(N, W, E, idx, cap, counts, offs, rows, slot, fill, &dropped);
    if (ec)   /* nothing is dropped; count the tokens no expert chose instead */
        for (int n = 0; n < N; n++) {
            int any = 0;
            for (int k = 0; k < W; k++) any |= idx[(size_t)n * W + k] >= 0;
            dropped += !any;
        }

    const int C = tensor_cols(x);
    Tensor *ye;
    if (ex) {
        /* Expert parallel: slots travel to the ranks holding their experts and back. */
        Tensor *xg = op_gather_rows(t, x, rows, M);                 /* (M, C) */
        ExchangePlan *plan = exchange_plan(t, ex, offs, E, C);
        const bool adapters = lo && (lo->a[0] || lo->a[1] || lo->a[2]);
        if (plan->G > 1 && !adapters) {
            /* chunks of local experts: the transfers of one overlap another's products,
             * and the overlap work (shared experts) the first chunks' travel (expert
             * adapters take the blocking path: the pipelined op has no adapter products) */
            tape_region(t, REGION_EXPERTS);
            ye = op_exchange_experts(t, xg, w1, w3, w2, plan, a->overlap,
                                     a->overlap_ctx);                /* (M, C) */
            tape_region(t, REGION_ROUTER);
        } else {
            /* the overlap work at the same place on the tape as the pipelined op puts it
             * (before the exchange), so both paths add the grads of x in the same order */
            if (a->overlap) a->overlap(t, a->overlap_ctx);
            tape_region(t, REGION_ROUTER);
            Tensor *xr = op_exchange_to_experts(t, xg, plan);      /* (M_recv, C) */
            tape_region(t, REGION_EXPERTS);
            Tensor *yl = experts_unfused(t, xr, w1, w3, w2, lo, plan->offs_local, plan->El);
            tape_region(t, REGION_ROUTER);
            ye = op_exchange_from_experts(t, yl, plan);             /* (M, C) */
        }
    } else if (lo && (lo->a[0] || lo->a[1] || lo->a[2])) {
        /* expert adapters: the adapters' products read the gathered rows, so they are kept */
        Tensor *xg = op_gather_rows(t, x, rows, M);                 /* (M, C) */
        tape_region(t, REGION_EXPERTS);
        ye = experts_unfused(t, xg, w1, w3, w2, lo, offs, E);        /* (M, C) */
        if (a->overlap) a->overlap(t, a->overlap_ctx);   /* where model_ffn had it */
        tape_region(t, REGION_ROUTER);
    } else {
        tape_region(t, REGION_EXPERTS);
        /* neither the gathered rows (M, C) nor the SwiGLU activation (M, F) is kept: both
         * are recomputed in backward (from x and rows; from h1 and h3) */
        Tensor *h3;
        Tensor *h1 = op_gather_expert_up(t, x, rows, w1, w3, offs, E, &h3); /* (M, F) x2 */
        ye = op_swiglu_expert_linear(t, h1, h3, w2, offs, E);       /* (M, C) */
        if (a->overlap) a->overlap(t, a->overlap_ctx);   /* where model_ffn had it */
        tape_region(t, REGION_ROUTER);
    }
    Tensor *y = op_combine_residual(t, a->residual, ye, gates, slot, W);   /* (N, C) */

    /* f_i: share of ALL ranks' routed slots chosen for expert i (before capacity), so
     * the loss is the same number whatever the rank count (N*R*K slots for topk; a varying
     * number for topp). Each rank's loss terms are means over its own N tokens: the mean
     * over ranks (what the gradient all-reduce computes) is then the global loss. */
    int R = 1;
    if (ex) {
        exchange_sum_counts(ex, counts, E);
        R = exchange_ranks(ex);
    }
    long routed = 0;
    for (int e = 0; e < E; e++) routed += counts[e];
    /* Statistics (outside the kernels): counts, drops, router entropy of softmax(clean).
     * Before the losses: the global aux scope reads the step's counts including these. */
    if (st) {
        double *ent_row = arena_alloc(&t->arena, sizeof(double) * (N > 0 ? N : 1));   /* (N) */
        const double ent = moe_router_entropy(clean->data, N, E, ent_row);
        /* counts are global here when expert parallel (summed above) */
        for (int e = 0; e < E; e++) st->count[(size_t)a->layer * E + e] += counts[e];
        st->dropped[a->layer] += (double)dropped;
        st->entropy[a->layer] += ent / N;
        st->tokens[a->layer] += N;
        st->experts[a->layer] += (double)routed / ((double)N * R);
        if (ex) st->remote[a->layer] += (double)remote_pairs(idx, N, W, E, ex);
    }
    float *f = arena_floats(&t->arena, (size_t)E);
    for (int e = 0; e < E; e++)
        f[e] = routed > 0 ? (float)((double)counts[e] / (double)routed) : 0.0f;
    if (a->aux_scale > 0.0f && !ec) {   /* expert choice is balanced by construction */
        const float sc = a->aux_scale * (float)E / (float)N;
        Tensor *lb;
        if (a->aux_scope == MOE_AUX_BATCH && a->score == MOE_SCORE_SOFTMAX) {
            lb = op_load_balance(t, clean, f, sc);   /* the default, bit for bit */
        } else {
            int frows = N;   /* tokens sharing one row of fs */
            const float *fs = aux_shares(t, a, idx, N, W, f, &frows);
            lb = op_load_balance_rows(t, clean, fs, frows, a->score == MOE_SCORE_SIGMOID, sc);
        }
        *aux = *aux ? op_add(t, *aux, lb) : lb;
    }
    if (a->router == MOE_ROUTER_TOPP && a->entropy_scale > 0.0f) {
        /* Huang et al. 2024's dynamic loss: mean router entropy, part of aux */
        Tensor *el = op_router_entropy(t, clean, a->entropy_scale / (float)N);
        *aux = *aux ? op_add(t, *aux, el) : el;
    }
    if (a->z_scale > 0.0f) {
        Tensor *zl = op_zloss(t, clean, a->z_scale / (float)N);
        *z = *z ? op_add(t, *z, zl) : zl;
    }
    return y;
}
