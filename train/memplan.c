/* memplan.c: per-rank memory plan of a training run and the refusal of one that cannot
 * fit. See memplan.h; the activation terms mirror layers/model.c's block and layers/moe.c. */
#include "train/memplan.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/ops.h"
#include "layers/lora.h"
#include "train/train.h"

/* Shapes as doubles: every product below stays exact enough and cannot overflow. */
typedef struct Dims {
    double V, C, L, H, Hkv, D, HD, KD, F, E, El, K, Fs, T, N;
    double W;      /* routed slots per token the router's index arrays hold */
    double M;      /* routed slots kept per micro-batch on the rank */
    double r;      /* LoRA rank, 0 = none */
    bool noise, aux, z, entropy, exchange, train_head;
    int router;
    unsigned targets;
    double dropout;
    bool expert_shared;   /* w1/w2/w3 adapters shared by the experts (DENSE) */
} Dims;

static void dims_of(const Config *c, int ranks, int ep, Dims *d) {
    ModelShape s;
    LoraSpec lo;
    config_model_shape(c, &s);
    config_lora_spec(c, &lo);
    memset(d, 0, sizeof *d);
    d->V = s.V, d->C = s.C, d->L = s.L, d->H = s.H, d->Hkv = s.Hkv, d->D = s.D;
    d->HD = d->H * d->D, d->KD = d->Hkv * d->D, d->F = s.F, d->E = s.E, d->K = s.K;
    d->Fs = s.Fs, d->El = s.E > 0 ? (double)(s.E / ep) : 0.0;
    d->T = c->train.seq_len;
    d->N = (double)(c->train.micro_batch / ranks) * d->T;
    d->router = s.router;
    if (s.E > 0) {
        const double N = d->N, E = d->E, K = d->K;
        const double cf = s.capacity_factor;
        if (s.router == CONFIG_ROUTER_TOPK) {
            d->W = K;
            /* balanced routing: every expert gets N K / E slots; a capacity below that
             * keeps ceil(N K / E cf) of them */
            d->M = cf > 0 ? fmin(N * K, E * fmax(1.0, ceil(N * K / E * cf))) : N * K;
        } else if (s.router == CONFIG_ROUTER_TOPP) {
            d->W = s.max_experts > 0 ? s.max_experts : E;
            d->M = N * d->W;   /* its cap: how many a token reaches varies while training */
        } else {
            d->W = E;          /* expert choice: each expert takes its capacity */
            d->M = E * fmin(N, fmax(1.0, ceil(N * K * (cf > 0 ? cf : 1.0) / E)));
        }
    }
    d->noise = s.E > 0 && s.router_noise;
    d->aux = s.E > 0 && s.aux_coef > 0 && s.router != CONFIG_ROUTER_EXPERT_CHOICE;
    d->z = s.E > 0 && s.z_coef > 0;
    d->entropy = s.E > 0 && s.router == CONFIG_ROUTER_TOPP && s.entropy_coef > 0;
    d->exchange = ranks > 1 && s.E > 0;   /* the trainer exchanges whenever R > 1 */
    d->r = lo.rank;
    d->targets = lo.rank > 0 ? lo.targets : 0;
    d->dropout = lo.dropout;
    d->expert_shared = lo.expert_shared;
    d->train_head = lo.rank == 0;   /* LoRA freezes the head */
}

/* Parameter elements: dense (replicated) and one rank's experts, and how many of them are
 * trainable (layers/model.c's declarations; lora_base_trainable's rule). */
static void count_params(const Config *c, const Dims *d, double *held, double *trainable,
                         double *full, double *full_trainable) {
    LoraSpec lo;
    config_lora_spec(c, &lo);
    const double C = d->C;
    const double attn = 2 * C + 2 * C * d->HD + 2 * C * d->KD;    /* norms, q, k, v, o */
    const double router = d->E > 0 ? 2 * d->E * C : 0;            /* gate, noise gate */
    const double shared = 3 * d->Fs * C;
    const double dense_ffn = d->E > 0 ? 0 : 3 * d->F * C;
    const double expert1 = 3 * d->F * C;                           /* w1, w3, w2 */
    /* adapters (layers/lora.h): dense ones (attention, gate, shared expert pairs) and one
     * pair per expert (held with the experts) */
    double adapters = 0, ex_adapters = 0;
    const double din[LORA_N_TARGETS] = {C, C, C, d->HD, C, d->F, C, C};
    const double dout[LORA_N_TARGETS] = {d->HD, d->KD, d->KD, C, d->F, C, d->F, d->E};
    for (int t = 0; t < LORA_N_TARGETS; t++) {
        if (!(d->targets & (1u << t))) continue;
        const double n = d->r * (din[t] + dout[t]);
        if ((LORA_EXPERT_MASK & (1u << t)) && !d->expert_shared) ex_adapters += n;
        else adapters += n;
    }
    const double outer = 2 * d->V * C + C;                          /* embed, head, norm */
    const double dense = outer + d->L * (attn + router + shared + dense_ffn + adapters);
    *held = dense + d->L * d->El * (expert1 + ex_adapters);
    *full = dense + d->L * d->E * (expert1 + ex_adapters);
    if (lo.rank == 0) {
        *trainable = *held;
        *full_trainable = *full;
        return;
    }
    const double ffn_t = lo.train_experts ? shared + dense_ffn : 0;
    const double base_t = d->L * ((lo.train_router ? router : 0) + ffn_t + adapters);
    const double ex1 = (lo.train_experts ? expert1 : 0) + ex_adapters;
    *trainable = base_t + d->L * d->El * ex1;
    *full_trainable = base_t + d->L * d->E * ex1;
}

/* LoRA projection (layers/lora.c lora_linear): output, u and du (N, r), the dropout mask
 * and dropped input (N, d_in) each when training with dropout. */
static double lora_floats(const Dims *d, double din, double dout) {
    return d->N * dout + 2 * d->N * d->r + (d->dropout > 0 ? 2 * d->N * din : 0);
}

/* Floats one transformer block keeps for backward (training: recorded, noise on). */
static double block_floats(const Dims *d, double score) {
    const double N = d->N, C = d->C, T = d->T;
    /* attention sub-block: rmsnorm (out + rstd), q, k, v, RoPE tables (in place), the
     * attention output + lse + two score buffers, the output projection + residual */
    double a = N * C + N + 2 * T * d->D + d->N * d->HD + N * d->H + 2 * score;
    const double din[LORA_N_ATTN] = {C, C, C, d->HD}, dout[LORA_N_ATTN] = {d->HD, d->KD,
                                                                            d->KD, C};
    for (int t = 0; t < LORA_N_ATTN; t++) {
        const bool lora = d->targets & (1u << t);
        if (t == LORA_O) a += lora ? lora_floats(d, din[t], dout[t]) + N * C : N * C;
        else a += lora ? lora_floats(d, din[t], dout[t]) : N * dout[t];
    }
    /* feed-forward sub-block: rmsnorm, then the FFN */
    double f = N * C + N;
    if (d->E > 0) {
        const double E = d->E, M = d->M, W = d->W;
        f += N * E;                                   /* router logits */
        if (d->noise) f += 5 * N * E;                 /* noise logits, softplus, eps, mul, add */
        f += 3 * N * W + N * W;                       /* idx, rows, slot (ints); gates */
        if (d->router != CONFIG_ROUTER_TOPK) f += N * E;   /* softmax kept for backward */
        f += 2 * M * d->F + M * C;                    /* h1, h3, expert outputs */
        if (d->targets & (1u << LORA_GATE))            /* gate adapter: u, du, mask, xd */
            f += 2 * N * d->r + (d->dropout > 0 ? 2 * N * C : 0);
        if (d->targets & LORA_EXPERT_MASK) {           /* layers/moe.h MoeLora */
            if (!d->exchange) f += M * C;             /* the gathered rows, kept */
            for (int t = LORA_W1; t <= LORA_W3; t++)
                if (d->targets & (1u << t)) f += 2 * M * d->r;   /* u, du */
            if (d->targets & (1u << LORA_W2)) f += M * d->F;     /* the activation, kept */
        }
        f += 2 * M + 2 * N;                           /* row runs of the gather and combine */
        if (d->exchange) f += 3 * M * C;              /* gathered, received, returned rows */
        f += N * C;                                   /* combine (+ residual) */
        if (d->aux) f += N * E;                       /* load-balance softmax */
        if (d->z) f += N;
        if (d->entropy) f += 2 * N;
        f += 2 * N;                                   /* router entropy statistic (doubles) */
        if (d->Fs > 0) f += 2 * N * d->Fs + 3 * N * C;   /* shared h1, h3, output, two adds */
    } else {
        f += 2 * N * d->F + 2 * N * C;                /* h1, h3, output, residual add */
    }
    return a + f;
}

/* Floats of the largest set of activation gradients live at once in one block's backward
 * (the liveness plan, autograd/tensor.h): the FFN's hidden gradients with the output's and
 * the residual stream's, or the attention's q/k/v/output gradients. */
static double block_grad_floats(const Dims *d) {
    const double N = d->N, C = d->C;
    const double attn = N * (2 * d->HD + 2 * d->KD + 2 * C);
    double ffn;
    if (d->E > 0) {
        ffn = 2 * d->M * d->F + d->M * C + N * C + (d->exchange ? 2 * d->M * C : 0);
        /* a w2 adapter keeps the activation: its gradient is live with h1's and h3's */
        if (d->targets & (1u << LORA_W2))
            ffn = 3 * d->M * d->F + N * C + (d->exchange ? 2 * d->M * C : 0);
        if (d->Fs > 0) ffn = fmax(ffn + N * C, 2 * N * d->Fs + 3 * N * C);
    } else {
        ffn = 2 * N * d->F + 2 * N * C;
    }
    return fmax(attn, ffn);
}

/* Floats of the tape scratch: its largest request (the SwiGLU activation, the gathered
 * expert inputs, the output projection's product) with the 1/8 headroom it grows by. */
static double scratch_floats(const Dims *d) {
    double m = d->N * d->C;
    if (d->E > 0 && (d->targets & LORA_EXPERT_MASK)) {
        /* expert adapters: no fused gather (xg is kept); the fused SwiGLU unless w2 */
        if (!(d->targets & (1u << LORA_W2))) m = fmax(m, d->M * d->F);
    } else if (d->E > 0) {
        m = fmax(m, fmax(d->M * d->F, d->M * d->C));
    }
    else m = fmax(m, d->N * d->F);
    if (d->Fs > 0) m = fmax(m, d->N * d->Fs);
    return 1.125 * m;
}

void memplan_estimate(const Config *c, int ranks, int ep, int rank, MemPlan *p) {
    Dims d;
    dims_of(c, ranks, ep, &d);
    memset(p, 0, sizeof *p);
    double full = 0, full_trainable = 0;
    count_params(c, &d, &p->n_params, &p->n_trainable, &full, &full_trainable);
    p->params = 4 * p->n_params;
    p->grads = 4 * p->n_trainable;
    p->moments = 8 * p->n_trainable;
    if (c->parallel.shard_optimizer && ranks > 1) {
        /* parallel/zero.h: dense moments split over all ranks, the experts' over the
         * ranks / ep holding the same experts; the gradients gain a staging area of at most
         * 8 MiB per sharded block (padding: under 16 floats per rank, not counted) */
        LoraSpec lo;
        config_lora_spec(c, &lo);
        double ex_t = lo.rank == 0 || lo.train_experts ? d.L * d.El * 3 * d.F * d.C : 0;
        if (lo.rank > 0 && !lo.expert_shared)   /* per-expert adapters */
            for (int t = LORA_W1; t <= LORA_W3; t++)
                if (lo.targets & (1u << t))
                    ex_t += d.L * d.El * lo.rank * (d.C + d.F);
        const double dense_t = p->n_trainable - ex_t;
        const int edp = ranks / ep;
        p->moments = 8 * (dense_t / ranks + (edp > 1 ? ex_t / edp : ex_t));
        p->grads += (dense_t > 0 ? 8.0 * 1048576 : 0) + (edp > 1 && ex_t > 0 ? 8.0 * 1048576 : 0);
    }
    p->tokens = d.N;
    p->slots = d.M;

    const double N = d.N, C = d.C;
    const double score = (double)op_attention_score_floats(c->train.seq_len);
    const double block = block_floats(&d, score);
    /* outside the blocks: the embedding output and its row runs, the final rmsnorm, the
     * fused head + loss ((N, V) logits, or a chunk of rows with the saved dX, dW) */
    double outer = N * C + 2 * N + d.V + N * C + N;
    const double R = c->train.loss_chunk;
    if (R > 0) outer += fmin(R, N) * d.V + N * C + (d.train_head ? d.V * C : 0);
    else outer += N * d.V + N;
    double act, grads;
    if (c->train.recompute) {
        /* the main tape keeps each block's output; one block lives on the second tape */
        act = outer + d.L * N * C + block;
        grads = block_grad_floats(&d) + 2 * N * C;
    } else {
        act = outer + d.L * block;
        grads = block_grad_floats(&d);
    }
    p->activations = 4 * act;
    p->act_grads = 4 * (grads + scratch_floats(&d));
    LoraSpec lo;
    config_lora_spec(c, &lo);
    if (rank == 0 && ep > 1 && d.E > 0 && !(lo.rank > 0 && !lora_trains_expert_block(&lo))) {
        double expert_local = d.L * d.El * 3 * d.F * C;   /* the EXPERT block (xfer) */
        if (lo.rank > 0 && !lo.expert_shared)
            for (int t = LORA_W1; t <= LORA_W3; t++)
                if (lo.targets & (1u << t)) expert_local += d.L * d.El * lo.rank * (C + d.F);
        p->gather = 4 * full + 12 * full_trainable + 12 * expert_local;
    }
    const double model = p->params + p->grads + p->moments + p->activations + p->act_grads +
                         p->gather;
    p->fixed = MEMPLAN_FIXED_BYTES + (ranks > 1 ? MEMPLAN_MPI_BYTES : 0.0) +
               MEMPLAN_GROWTH * model;
    p->total = model + p->fixed;
}

double memplan_parse_limit(const char *text) {
    char *end;
    double v = strtod(text, &end);
    if (end == text || !(v > 0) || v >= 4611686018427387904.0) return 0;   /* 2^62: none */
    while (*end == ' ' || *end == '\n') end++;
    return *end ? 0 : v;
}

static const char *const SOURCES[3] = {"physical RAM", "cgroup limit /sys/fs/cgroup/memory.max",
                                       "cgroup limit "
                                       "/sys/fs/cgroup/memory/memory.limit_in_bytes"};

static double read_limit(const char *path) {
    char buf[64] = "";
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return memplan_parse_limit(buf);
}

/* Index into SOURCES of what limits the process, and the bytes. */
static double machine_bytes(int *which) {
    const double ram = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    double best = ram > 0 ? ram : HUGE_VAL;
    *which = 0;
    const double lim[2] = {read_limit("/sys/fs/cgroup/memory.max"),
                           read_limit("/sys/fs/cgroup/memory/memory.limit_in_bytes")};
    for (int i = 0; i < 2; i++)
        if (lim[i] > 0 && lim[i] < best) {
            best = lim[i];
            *which = i + 1;
        }
    return best;
}

double memplan_machine_bytes(const char **source) {
    int which;
    double b = machine_bytes(&which);
    if (source) *source = SOURCES[which];
    return b;
}

static const char *fmt_bytes(double b, char *out, size_t cap) {
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    int u = 0;
    while (b >= 1024.0 && u < 6) {
        b /= 1024.0;
        u++;
    }
    snprintf(out, cap, b < 1e6 ? "%.1f %s" : "%.3g %s", b, unit[u]);
    return out;
}

int memplan_fits(const Config *c, const MemPlan *p, int ranks_here, double need, double avail,
                 const char *source, MoeErr *err) {
    if (need <= avail) return 0;
    char a[32], b[32], s1[32], s2[32];
    const double state = p->params + p->grads + p->moments + p->gather;
    const double act = p->activations + p->act_grads;
    moe_errorf(err, "%s: the planned memory, %s for %d rank(s) on this machine, exceeds the %s "
               "it allows (%s); per rank: parameters, gradients and AdamW moments %s "
               "(model.*, moe.n_experts, moe.hidden), activations %s (train.global_micro_batch, "
               "train.seq_len)", c->path ? c->path : "config", fmt_bytes(need, a, sizeof a),
               ranks_here, fmt_bytes(avail, b, sizeof b), source,
               fmt_bytes(state, s1, sizeof s1), fmt_bytes(act, s2, sizeof s2));
    if (act >= state)
        return moe_hintf(err, "set train.recompute: true (keeps one block's activations, not "
                              "all), a smaller train.global_micro_batch (train.grad_accum keeps the "
                              "batch), or spread the batch over more ranks (mpirun on more "
                              "machines); or a smaller model");
    return moe_hintf(err, "a smaller model (model.dim, model.n_layers, model.vocab_size, "
                          "moe.n_experts, moe.hidden), or more ranks on more machines "
                          "(parallel.expert_parallel splits the experts); train.recompute: "
                          "true and a smaller train.global_micro_batch shrink only the activations");
}

static void print_plan(const Config *c, const Comm *comm, const MemPlan *p, int here,
                       double need, double avail, const char *source) {
    char b[32];
    printf("memory plan per rank (rank 0 of %d, %.0f tokens per micro-batch, train.recompute "
           "%s):\n", comm->size, p->tokens, c->train.recompute ? "true" : "false");
    printf("  %-44s %12s (%.4g M)\n", "parameters", fmt_bytes(p->params, b, sizeof b),
           p->n_params / 1e6);
    printf("  %-44s %12s (%.4g M trainable)\n", "gradients", fmt_bytes(p->grads, b, sizeof b),
           p->n_trainable / 1e6);
    printf("  %-44s %12s\n", "AdamW moments", fmt_bytes(p->moments, b, sizeof b));
    printf("  %-44s %12s\n", "activations kept for backward",
           fmt_bytes(p->activations, b, sizeof b));
    printf("  %-44s %12s\n", "activation gradients and scratch",
           fmt_bytes(p->act_grads, b, sizeof b));
    if (p->gather > 0)
        printf("  %-44s %12s\n", "full model for checkpoints (rank 0, EP)",
               fmt_bytes(p->gather, b, sizeof b));
    printf("  %-44s %12s\n", "program, libraries and their buffers",
           fmt_bytes(p->fixed, b, sizeof b));
    printf("  %-44s %12s", "total", fmt_bytes(p->total, b, sizeof b));
    printf("; %d rank(s) on this machine: %s", here, fmt_bytes(need, b, sizeof b));
    printf(" of %s (%s)\n", fmt_bytes(avail, b, sizeof b), source);
    fflush(stdout);
}

int memplan_check(const Config *c, const Comm *comm, MoeErr *err) {
    MemPlan p;
    memplan_estimate(c, comm->size, comm->ep, comm->rank, &p);
    int which;
    /* [need of this machine's ranks, machine bytes, ranks here, source]: the machine with
     * the largest need / bytes decides, the same verdict on every rank */
    double m[4] = {p.total, machine_bytes(&which), 1, 0};
    m[3] = which;
    if (comm->mpi) {
        MPI_Comm node;
        int here;
        MPI_Comm_split_type(comm->world, MPI_COMM_TYPE_SHARED, comm->rank, MPI_INFO_NULL,
                            &node);
        MPI_Allreduce(MPI_IN_PLACE, &m[0], 1, MPI_DOUBLE, MPI_SUM, node);
        MPI_Comm_size(node, &here);
        MPI_Comm_free(&node);
        m[2] = here;
        struct { double v; int r; } in = {m[0] / m[1], comm->rank}, worst;
        MPI_Allreduce(&in, &worst, 1, MPI_DOUBLE_INT, MPI_MAXLOC, comm->world);
        MPI_Bcast(m, 4, MPI_DOUBLE, worst.r, comm->world);
    }
    if (comm->rank == 0) print_plan(c, comm, &p, (int)m[2], m[0], m[1], SOURCES[(int)m[3]]);
    return memplan_fits(c, &p, (int)m[2], m[0], m[1], SOURCES[(int)m[3]], err);
}
