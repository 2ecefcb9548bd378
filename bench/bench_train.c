/* bench_train.c: training throughput of a config against the machine's sgemm rate,
 * measured in the same run; under mpirun also the communication volume.
 *
 *   [mpirun -n R] bench_train [CONFIG] [--steps N] [--warmup N] [--set k=v ...]
 *                             [--compare k=v ...] [--doc-len N]
 *
 * 1. sgemm GFLOP/s on the model's own training-shaped products (train/mfu.h: every GEMM of
 *    one training step at this rank's batch, with the same thread count), summed over ranks
 *    = the machine's rate for this layout: one pass at start (which also measures the
 *    OpenBLAS buffers), then one pass after each timed training step.
 * 2. Warm-up steps, then timed rounds of: a training step of forward + backward + gradient
 *    all-reduce + AdamW on random tokens (the data path is not part of the step), a pass
 *    over the sgemm set, and a forward-only evaluation of the same batch (as the trainer
 *    evaluates: no recording, no router noise). Interleaving them makes MFU and the
 *    evaluation/training ratio ratios of rates measured in the same seconds: on a shared
 *    machine whose speed drifts by tens of percent over a minute, rates timed minutes apart
 *    are not comparable.
 * 3. MFU = model FLOPs per token x tokens/s / sgemm rate (model_flops_per_token), against
 *    the mean rate of the interleaved passes and against the best single pass (a lower
 *    bound); also the least disturbed figures: the fastest step against the fastest pass,
 *    the fastest evaluation against the fastest step (a shared machine's load comes in
 *    bursts: the minimum of each is the least disturbed, as timeit advises); the time
 *    split of training (forward + backward per region) and of evaluation;
 *    allocations during the timed rounds, peak allocated bytes.
 * 4. The memory split of rank 0: its peak resident set (VmHWM, counted from after the
 *    rate table of 0, read after the warm-up steps and one evaluation, before the sgemm
 *    set's operands exist) as the sum of named parts: the program with its shared
 *    libraries, MPI and the product libraries' kernels and buffers (resident after the rate
 *    table, whose matrices are freed and trimmed), the growth over the sgemm-rate run,
 *    the parameters, the gradients and the optimizer state (two AdamW moments: this rank's
 *    slices with parallel.shard_optimizer), the tape arenas and the activation-gradient
 *    plans at their high-water marks, and the measured rest; then every rank's bytes of
 *    parameters, gradients and optimizer state (gathered to rank 0).
 * 0. At start, every product path the machine has (OpenBLAS fp32, oneDNN fp32 and bf16):
 *    the best rate on a 2048^3 product (the path's peak here) and on the model's own
 *    training-shaped products, with the ISA and kernel names; MFU is also given against the
 *    peak of the configured path (its precision's peak as measured, not a data sheet's).
 * 5. --compare k=v (train.recompute, train.loss_chunk, data.doc_mask, compute.gemm,
 *    compute.precision, parallel.a2a_chunks or parallel.hierarchical, the keys that only
 *    change how a step runs; several --compare
 *    options all apply to the second setting, e.g. compute.gemm=onednn and
 *    compute.precision=bf16 against --set compute.gemm=openblas): after 1-4, the same model also steps in that setting on a
 *    second tape, the two settings' timed steps interleaved one by one, so both tokens/s
 *    come from the same minutes of a shared machine; the second setting's arena and plan
 *    bytes are printed. --doc-len N makes the random tokens documents of N tokens on
 *    average (each token is the end-of-text id V-1 with probability 1/N), which is what
 *    data.doc_mask cuts the sequences at; default: no end-of-text tokens (one document).
 *    The routing keys moe.score, route_scale, n_groups, topk_groups and aux_scope compare
 *    the same way (they change no parameter: the model routes by each setting in turn);
 *    under mpirun each setting's all-to-all bytes per step (rank 0) are printed, e.g.
 *    group-limited routing against plain top-k: --set moe.n_groups=4 --set
 *    moe.topk_groups=1 --compare moe.topk_groups=0 --compare moe.n_groups=0.
 * 6. LoRA fine-tuning (--set finetune.lora_rank=8 ...): the same step with adapters on a
 *    frozen, randomly initialised base (no init_from is read), to compare with the full
 *    fine-tuning step of the same config (lora_rank 0, every weight trained). CPU seconds
 *    per step are printed next to wall time: on a shared machine they measure the work.
 * 7. With R > 1: bytes per step each rank sent through all-to-alls (to other ranks) and
 *    handed to all-reduces, against what the routing predicts: a rank sends C floats for
 *    each slot it routed to an expert on another rank (forward there, backward gradient
 *    back) and for each slot other ranks routed to its experts (forward result back,
 *    backward gradient there): 2 (out + in) C 4 bytes, counted from the routing; the
 *    uniform-routing estimate is 4 L N_rank K (P-1)/P C 4 bytes; all-reduce = dense block
 *    + expert block (if replicated). The all-to-all's exposed time (seconds inside MPI
 *    calls, parallel/comm.h "wait") against its span (start to completion, summed over the
 *    transfers, which overlap one another when chunked); with --compare
 *    parallel.a2a_chunks=N both settings' exposed time and the share of the first's exposed
 *    time the second no longer spends (the all-to-all hidden by the pipelining).
 * Not a test: numbers depend on the machine and its load.
 */
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "autograd/blas.h"
#include "autograd/gemm.h"
#include "core/pool.h"
#include "layers/model.h"
#include "optim/adamw.h"
#include "layers/router_bias.h"
#include "parallel/dp.h"
#include "parallel/exchange.h"
#include "parallel/reduce.h"
#include "parallel/zero.h"
#include "configs/config.h"
#include "train/mfu.h"
#include "train/train.h"

/* Resident set now (VmRSS of /proc/self/status) and at its peak (ru_maxrss), bytes. */
static double rss_now(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = atof(line + 6);
    if (f) fclose(f);
    return kb * 1024.0;
}

/* The resident set's high-water mark (VmHWM), bytes; rss_peak_reset starts it again from
 * the current resident set (Linux: 5 written to /proc/self/clear_refs), so buffers of the
 * product-rate table, freed before training, do not count in the training's peak. */
static double rss_peak(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kb = atof(line + 6);
    if (f) fclose(f);
    if (kb == 0) {   /* no /proc: the process's peak */
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        kb = (double)ru.ru_maxrss;
    }
    return kb * 1024.0;
}
static void rss_peak_reset(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
}

/* A product path (autograd/gemm.h) and its rates. */
typedef struct GemmPath { GemmBackend b; GemmPrecision p; } GemmPath;

/* Rank 0 prints, for every path this machine has (OpenBLAS fp32; oneDNN fp32 and, with
 * native bf16, bf16), the best rate on a 2048^3 product and on the model's training-shaped
 * products, and returns the square rate of the configured path (the peak its precision
 * reaches here: MFU's hardware denominator). Leaves the configured path selected. */
static double path_table(const ModelShape *s, int N, GemmPath cfg, bool root) {
    GemmPath ps[3];
    int np = 0;
    ps[np++] = (GemmPath){GEMM_OPENBLAS, GEMM_FP32};
    if (gemm_onednn_available(NULL)) {
        ps[np++] = (GemmPath){GEMM_ONEDNN, GEMM_FP32};
        if (gemm_native_bf16()) ps[np++] = (GemmPath){GEMM_ONEDNN, GEMM_BF16};
    }
    MoeErr err;
    double peak = 0;
    if (root) printf("matrix products, best of 3, %d thread(s): 2048^3 square | this model's "
                     "training-shaped products\n", pool_threads());
    for (int i = 0; i < np; i++) {
        gemm_select(ps[i].b, ps[i].p, &err);
        const double sq = mfu_square_rate(2048, 3), sh = mfu_sgemm_rate(s, N, 3);
        char how[512];
        gemm_describe(how, sizeof how);
        if (root) printf("  %-8s %-4s %8.1f | %8.1f GFLOP/s   %s\n", gemm_backend_name(ps[i].b),
                         gemm_precision_name(ps[i].p), sq, sh, how);
        if (ps[i].b == cfg.b && ps[i].p == cfg.p) peak = sq;
    }
    if (gemm_select(cfg.b, cfg.p, &err) == 0 && peak == 0) peak = mfu_square_rate(2048, 3);
    return peak;
}

static double mib(double bytes) { return bytes / 1048576.0; }

/* Arena high-water and plan bytes of a tape and its recomputation tape. */
static double tape_arena_bytes(const Tape *t) { return (double)t->arena.high_water; }
static double sub_arena_bytes(const Tape *t) {
    return t->sub ? (double)t->sub->arena.high_water : 0.0;
}
static double plan_bytes(const Tape *t) {
    return (double)tape_grad_plan_bytes(t) + (t->sub ? (double)tape_grad_plan_bytes(t->sub) : 0);
}

typedef struct Bench {
    Model *m;
    const Comm *comm;
    const int32_t *in, *tgt;
    int Bl, T, N;
    AdamWConfig ac;
    float bias_rate;   /* moe.bias_update_rate when the model balances with a bias, else 0 */
    bool zero;         /* parallel.shard_optimizer sharded a block (parallel/zero.h) */
    GradReduce *gr;    /* the gradient reduction of the setting being stepped */
} Bench;

/* CPU seconds used by this process so far (all its threads): on a machine shared with
 * other jobs this measures the work of a step where wall time measures the contention. */
static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A step's times (seconds) and, under mpirun, its traffic (rank 0's counters, parallel/). */
typedef struct StepTimes {
    double f, b, r, o, all, cpu;
    double a2a, ar, slots, slin, ta2a, tar;   /* bytes, routed slots out/in, seconds */
    double remote;   /* (token, other rank) pairs routed (MoeStats.remote), all layers */
    CommStat kind[COMM_KINDS];                /* the counters' growth, by kind */
    double sa2a;                              /* all-to-all span (parallel/comm.h), s */
} StepTimes;

/* a2a: the expert exchange; ar: gradient reduction + the sharded optimizer's all-gather
 * (parallel/comm.h) */
static void comm_counters(double c[7]) {
    c[0] = comm_stat[COMM_ALLTOALL].bytes;
    c[1] = comm_stat[COMM_GRAD].bytes + comm_stat[COMM_GATHER].bytes;
    c[2] = comm_slots_offrank;
    c[3] = comm_slots_fromrank;
    c[4] = comm_stat[COMM_ALLTOALL].wait;
    c[5] = comm_stat[COMM_GRAD].wait + comm_stat[COMM_GATHER].wait;
    c[6] = comm_stat[COMM_ALLTOALL].span;
}

/* One training step (forward, backward, gradient all-reduce + norm, AdamW) on tape t;
 * adds its times to acc when acc is not NULL. Step 0 of a tape compacts its arena after. */
static void bench_step(const Bench *bn, Tape *t, const StepCtx *proto, int st, StepTimes *acc) {
    comm_barrier(bn->comm);
    double x0[7];
    comm_counters(x0);
    CommStat k0[COMM_KINDS];
    memcpy(k0, comm_stat, sizeof k0);
    double t0 = moe_now(), c0 = cpu_seconds();
    params_zero_grad(&bn->m->ps);
    double remote0 = 0.0;
    for (int l = 0; l < bn->m->stats.L; l++) remote0 += bn->m->stats.remote[l];
    tape_reset(t, true);
    t->region_t0 = moe_now();
    t->region = REGION_OTHER;
    StepCtx ctx = *proto;
    ctx.step = st;
    ModelOut out;
    model_forward(bn->m, t, bn->in, bn->tgt, bn->Bl, bn->T, &ctx, &out);
    double t1 = moe_now();
    /* as the trainer: the buckets leave during the backward (parallel/reduce.h) */
    grad_reduce_begin(bn->gr, false);
    if (bn->gr->bucket && bn->comm->size > 1) {
        t->hook = grad_reduce_hook;
        t->hook_ctx = bn->gr;
    }
    tape_backward(t, out.loss, NULL);
    t->hook = NULL;
    double t2 = moe_now();
    double remote = 0.0;   /* this step's, read before the bias update resets the stats */
    for (int l = 0; l < bn->m->stats.L; l++) remote += bn->m->stats.remote[l];
    grad_reduce_finish(bn->gr);
    double gn = bn->zero ? zero_grad_norm(&bn->m->ps, bn->comm)
                         : dp_grad_norm(&bn->m->ps, bn->comm);
    (void)gn;
    double t3 = moe_now();
    adamw_step(&bn->m->ps, &bn->ac, 1e-4f, st + 1);
    if (bn->zero) zero_gather_params(&bn->m->ps, bn->comm);   /* timed with the optimizer */
    Model *m = bn->m;
    if (m->use_router_bias) {   /* aux-loss-free balancing, timed with the optimizer */
        router_bias_update(m->router_bias, m->stats.count, m->s.L, m->s.E, bn->bias_rate);
        moe_stats_reset(&m->stats);
    }
    double t4 = moe_now();
    if (st == 0) tape_compact(t);   /* as the trainer does after its first step */
    if (acc) {
        acc->f += t1 - t0;
        acc->b += t2 - t1;
        acc->r += t3 - t2;
        acc->o += t4 - t3;
        acc->all += t4 - t0;
        acc->cpu += cpu_seconds() - c0;
        double x1[7];
        comm_counters(x1);
        acc->a2a += x1[0] - x0[0];
        acc->ar += x1[1] - x0[1];
        acc->slots += x1[2] - x0[2];
        acc->slin += x1[3] - x0[3];
        acc->ta2a += x1[4] - x0[4];
        acc->tar += x1[5] - x0[5];
        acc->remote += remote - remote0;
        for (int k = 0; k < COMM_KINDS; k++) {
            acc->kind[k].bytes += comm_stat[k].bytes - k0[k].bytes;
            acc->kind[k].calls += comm_stat[k].calls - k0[k].calls;
            acc->kind[k].wait += comm_stat[k].wait - k0[k].wait;
            acc->kind[k].span += comm_stat[k].span - k0[k].span;
        }
        acc->sa2a += x1[6] - x0[6];
    }
}

/* One forward-only evaluation of the batch on tape t (no recording, no router noise), as
 * the trainer evaluates; returns its wall seconds and adds its forward region times to split
 * (when not NULL), leaving t's training split as it was. */
static double bench_eval(const Bench *bn, Tape *t, const StepCtx *proto, double *split) {
    double keep[TAPE_MAX_REGIONS];
    memcpy(keep, t->fwd_time, sizeof keep);
    comm_barrier(bn->comm);
    const double t0 = moe_now();
    tape_reset(t, false);
    t->region_t0 = t0;
    t->region = REGION_OTHER;
    ModelOut out;
    model_forward(bn->m, t, bn->in, bn->tgt, bn->Bl, bn->T, proto, &out);
    tape_region(t, REGION_OTHER);   /* closes the last region */
    const double dt = moe_now() - t0;
    for (int r = 0; r < REGION_COUNT; r++) {
        if (split) split[r] += t->fwd_time[r] - keep[r];
        t->fwd_time[r] = keep[r];
    }
    return dt;
}

/* Rank 0's counters by kind per step (parallel/comm.h: bytes sent, calls, wait = time
 * blocked in MPI, span = each operation's start to its completion being seen, summed over
 * operations that may run at the same time). */
static void print_kinds(const StepTimes *a, int steps) {
    printf("communication by kind, rank 0 per step: MB sent | calls | wait s (exposed) | "
           "span s\n");
    for (int k = 0; k < COMM_KINDS; k++)
        printf("  %-22s %9.2f | %6.0f | %.4f | %.4f\n", comm_kind_names[k],
               a->kind[k].bytes / steps / 1e6, a->kind[k].calls / steps, a->kind[k].wait / steps,
               a->kind[k].span / steps);
}

static const char *setting_name(const StepCtx *c, bool doc_mask, char *buf, size_t cap) {
    snprintf(buf, cap, "train.recompute=%s train.loss_chunk=%d data.doc_mask=%s",
             c->recompute ? "true" : "false", c->loss_chunk, doc_mask ? "true" : "false");
    return buf;
}

/* The routing keys a --compare may change on one model (they change no parameter). */
static bool routing_key(const char *kv) {
    static const char *const keys[] = {"moe.score=", "moe.route_scale=", "moe.n_groups=",
                                       "moe.topk_groups=", "moe.aux_scope="};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (!strncmp(kv, keys[i], strlen(keys[i]))) return true;
    return false;
}

/* Routes m like shape s: its routing fields only. */
static void set_routing(Model *m, const ModelShape *s) {
    m->s.score = s->score;
    m->s.route_scale = s->route_scale;
    m->s.n_groups = s->n_groups;
    m->s.topk_groups = s->topk_groups;
    m->s.aux_scope = s->aux_scope;
}

static const char *routing_name(const ModelShape *s, char *buf, size_t cap) {
    static const char *const scopes[] = {"batch", "sequence", "global"};
    snprintf(buf, cap, "moe.score=%s moe.route_scale=%g moe.n_groups=%d moe.topk_groups=%d "
             "moe.aux_scope=%s", s->score ? "sigmoid" : "softmax",
             s->route_scale > 0.0f ? (double)s->route_scale : 1.0, s->n_groups, s->topk_groups,
             scopes[s->aux_scope]);
    return buf;
}

int main(int argc, char **argv) {
    blas_init(argv);
    Comm comm;
    comm_init(&comm, &argc, &argv);
    const bool root = comm.rank == 0;
    const char *path = "configs/mixtral_tiny.yaml";
    int steps = 10, warmup = 3;   /* step 1 compacts the arena, step 2 faults its pages in */
    int doc_len = 0;              /* --doc-len: mean synthetic document length, 0 = none */
    Config c;
    MoeErr err;
    memset(&c, 0, sizeof c);
    const char *compares[8];   /* --compare k=v, all applied to the second setting */
    int n_compare = 0;
    const char *compare = NULL;
    int first = 1;
    if (argc > 1 && argv[1][0] != '-') { path = argv[1]; first = 2; }
    if (config_load(&c, path, &err)) {
        fprintf(stderr, "bench_train: %s\n", err.msg);
        return 1;
    }
    for (int i = first; i < argc; i++) {
        if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc) warmup = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--doc-len") && i + 1 < argc) doc_len = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--set") && i + 1 < argc) {
            if (config_set(&c, argv[++i], &err)) {
                fprintf(stderr, "bench_train: %s\n", err.msg);
                return 1;
            }
        } else if (!strcmp(argv[i], "--compare") && i + 1 < argc && n_compare < 8) {
            compare = compares[n_compare++] = argv[++i];
        } else {
            fprintf(stderr, "usage: bench_train [CONFIG] [--steps N] [--warmup N] [--set k=v] "
                    "[--compare k=v] [--doc-len N]\n");
            return 2;
        }
    }
    Config c2;   /* the --compare setting */
    config_copy(&c2, &c);
    for (int ci = 0; ci < n_compare; ci++) {
        compare = compares[ci];
        if (strncmp(compare, "train.recompute=", 16) && strncmp(compare, "train.loss_chunk=", 17) &&
            strncmp(compare, "data.doc_mask=", 14) && strncmp(compare, "compute.gemm=", 13) &&
            strncmp(compare, "compute.precision=", 18) &&
            strncmp(compare, "parallel.bucket_mb=", 19) &&
            strncmp(compare, "parallel.a2a_chunks=", 20) &&
            strncmp(compare, "parallel.hierarchical=", 22) && !routing_key(compare)) {
            fprintf(stderr, "bench_train: --compare %s: only train.recompute, train.loss_chunk, "
                    "data.doc_mask, compute.gemm, compute.precision, parallel.bucket_mb, "
                    "parallel.a2a_chunks, parallel.hierarchical and the routing keys moe.score, "
                    "route_scale, n_groups, topk_groups, aux_scope can be compared on one "
                    "model\n", compare);
            return 2;
        }
        if (config_set(&c2, compare, &err)) {
            fprintf(stderr, "bench_train: --compare: %s\n", err.msg);
            return 1;
        }
    }
    /* the routing keys' cross-field rules (a bad combination would trip the ops' asserts) */
    if (config_validate(&c, &err) || config_validate(&c2, &err)) {
        fprintf(stderr, "bench_train: %s\n", err.msg);
        return 1;
    }
    const GemmPath path1 = {(GemmBackend)c.compute.gemm, (GemmPrecision)c.compute.precision};
    GemmPath path2 = {(GemmBackend)c2.compute.gemm, (GemmPrecision)c2.compute.precision};
    if (gemm_select(path2.b, path2.p, &err) == 0) path2.b = gemm_backend();   /* auto: which */
    if (gemm_select(path1.b, path1.p, &err)) {
        if (root) fprintf(stderr, "bench_train: %s\n", err.msg);
        comm_finalize(&comm);
        return 1;
    }
    const GemmPath gp = {gemm_backend(), gemm_precision()};   /* auto resolved */
    if (comm_setup(&comm, c.parallel.expert_parallel, c.moe.n_experts, c.train.micro_batch,
                   &err)) {
        if (root) fprintf(stderr, "bench_train: %s\n", err.msg);
        comm_finalize(&comm);
        return 1;
    }
    ModelShape s;
    config_model_shape(&c, &s);
    const int B = c.train.micro_batch, T = c.train.seq_len, Bl = B / comm.size, N = Bl * T;
    if (root)
        printf("config %s: %d rank(s), expert parallel %d, %d tokens per rank per step, "
               "OpenBLAS core %s, %d thread(s) per rank\n", path, comm.size, comm.ep, N,
               blas_core_name(), blas_threads());

    /* ---- 0. every product path's rates; the peak of the configured one ---- */
    double peak_rate = path_table(&s, N, gp, root);
    comm_sum_world_d(&comm, &peak_rate, 1);
    malloc_trim(0);     /* the table's buffers are freed: return them to the system, */
    rss_peak_reset();   /* so they count neither in the resident set nor in its peak */
    const double rss_start = rss_now();
    char how[512];
    gemm_describe(how, sizeof how);
    if (root)
        printf("this run's products: %s; peak %.1f GFLOP/s (2048^3, summed over ranks)\n", how,
               peak_rate);

    /* ---- 1. sgemm rate on the training-shaped products ---- */
    double gflops = mfu_sgemm_rate(&s, N, 1);
    const double rss_blas = rss_now() - rss_start;
    comm_sum_world_d(&comm, &gflops, 1);
    if (root)
        printf("sgemm on the model's training-shaped products, one pass at start: %.1f "
               "GFLOP/s\n", gflops);

    /* ---- 2. training steps ---- */
    Model m;
    int El = s.E > 0 ? s.E / comm.ep : 0;
    LoraSpec lo;
    config_lora_spec(&c, &lo);
    model_init_lora(&m, &s, &lo, comm.ep_rank * El, El, 1);
    if (root)
        printf("%s: %zu of %zu parameters trainable on rank 0\n",
               lo.rank > 0 ? "LoRA fine-tuning (frozen random base)" : "every weight trained",
               params_count(&m.ps, true), params_count(&m.ps, false));
    const int zero_blocks = c.parallel.shard_optimizer ? zero_shard(&m.ps, &comm) : 0;
    if (root && c.parallel.shard_optimizer)
        printf("parallel.shard_optimizer: %d block(s) sharded (dense %s, experts %s)\n",
               zero_blocks, zero_block_sharded(&m.ps, PBLOCK_DENSE) ? "over all ranks" : "no",
               zero_block_sharded(&m.ps, PBLOCK_EXPERT) ? "over the EDP group" : "no");
    struct MoeExchange ex, ex2;   /* the configured exchange and the --compare one */
    exchange_init(&ex, &comm, c.parallel.a2a_chunks, c.parallel.hierarchical);
    exchange_init(&ex2, &comm, c2.parallel.a2a_chunks, c2.parallel.hierarchical);
    if (comm.size > 1 && s.E > 0) m.exchange = &ex;
    m.use_router_bias = s.E > 0 && c.moe.bias_update_rate > 0;   /* as the trainer */
    m.doc_mask = c.data.doc_mask;
    m.eot = s.V - 1;   /* the end-of-text id of moetrain's tokenizer (data/tokenizer.h) */
    Tape t;
    tape_init(&t, 0);
    t.profile = true;
    int32_t *in = moe_malloc(sizeof(int32_t) * (size_t)N), *tgt = moe_malloc(sizeof(int32_t) * (size_t)N);
    MoeRng rng;
    rng_seed(&rng, 5 + (uint64_t)comm.rank);
    int n_docs = 0;   /* end-of-text tokens in the inputs */
    for (int i = 0; i < N; i++) {
        /* with --doc-len, end-of-text tokens only where drawn below */
        in[i] = (int32_t)(rng_next(&rng) % (uint64_t)(doc_len > 0 ? s.V - 1 : s.V));
        tgt[i] = (int32_t)(rng_next(&rng) % (uint64_t)s.V);
        if (doc_len > 0 && rng_uniform(&rng) * doc_len < 1.0) {
            in[i] = m.eot;
            n_docs++;
        }
    }
    if (root && doc_len > 0)
        printf("--doc-len %d: %d end-of-text tokens in rank 0's %d input tokens (%d rows)\n",
               doc_len, n_docs, N, Bl);
    int *final_at = moe_calloc(sizeof(int) * (size_t)(m.ps.count + 1));
    model_grad_final_at(&m, final_at);
    GradReduce gr1, gr2;   /* the setting's and the --compare setting's reduction */
    grad_reduce_init(&gr1, &m.ps, &comm, grad_reduce_bucket_floats(c.parallel.bucket_mb, &comm),
                     final_at, c.parallel.hierarchical);
    grad_reduce_init(&gr2, &m.ps, &comm, grad_reduce_bucket_floats(c2.parallel.bucket_mb, &comm),
                     final_at, c2.parallel.hierarchical);
    moe_free(final_at);
    if (root && comm.size > 1)
        printf("gradient reduction: %d node(s), dense block %s, experts %s; buckets %s\n",
               comm.nodes, grad_reduce_block_hier(&gr1, PBLOCK_DENSE) ? "node first" : "flat",
               grad_reduce_block_hier(&gr1, PBLOCK_EXPERT) ? "node first" : "flat",
               gr1.bucket ? "during the backward" : "after the backward (0)");
    Bench bn = {&m, &comm, in, tgt, Bl, T, N, {0.9f, 0.95f, 1e-8f, 0.1f},
                (float)c.moe.bias_update_rate, zero_blocks > 0, &gr1};
    const StepCtx proto = {.train = true, .seed = 1, .token_base = (long)comm.rank * N,
                           .loss_scale = 1.0f, .recompute = c.train.recompute,
                           .loss_chunk = c.train.loss_chunk};
    StepTimes acc = {0};
    const StepCtx eproto = {.train = false, .seed = 1, .token_base = (long)comm.rank * N,
                            .loss_scale = 1.0f, .recompute = c.train.recompute,
                            .loss_chunk = c.train.loss_chunk};
    /* warm-up steps and one evaluation; the peak resident set is read after them, before
     * the sgemm set's operand buffers exist */
    for (int st = 0; st < warmup; st++) bench_step(&bn, &t, &proto, st, NULL);
    double eval_fwd[REGION_COUNT] = {0}, te = 0;
    bench_eval(&bn, &t, &eproto, NULL);
    const double peak = rss_peak(), peak_alloc = (double)moe_peak_bytes();
    /* timed rounds: a training step, one pass over the sgemm set, a forward-only evaluation,
     * in turn, so the three rates come from the same minutes of a shared machine */
    MfuSet ms;
    mfu_set_init(&ms, &s, N);
    mfu_set_pass(&ms);   /* faults the operand pages in */
    double tg = 0, best_pass = 0;
    memset(t.fwd_time, 0, sizeof t.fwd_time);
    memset(t.bwd_time, 0, sizeof t.bwd_time);
    const size_t calls0 = moe_alloc_calls();
    double min_step = 1e30, min_eval = 1e30;   /* the least disturbed round of each */
    for (int st = warmup; st < warmup + steps; st++) {
        const double all0 = acc.all;
        bench_step(&bn, &t, &proto, st, &acc);
        if (acc.all - all0 < min_step) min_step = acc.all - all0;
        comm_barrier(&comm);   /* the ranks time their passes together, as they train */
        const double tp = mfu_set_pass(&ms);
        tg += tp;
        if (ms.flops / tp / 1e9 > best_pass) best_pass = ms.flops / tp / 1e9;
        const double de = bench_eval(&bn, &t, &eproto, eval_fwd);
        te += de;
        if (de < min_eval) min_eval = de;
    }
    mfu_set_free(&ms);
    double gflops_mean = ms.flops * steps / tg / 1e9, gflops_best = best_pass;
    comm_sum_world_d(&comm, &gflops_mean, 1);
    comm_sum_world_d(&comm, &gflops_best, 1);
    const double tf = acc.f, tb = acc.b, tr = acc.r, to = acc.o, tall = acc.all;
    double tok_s = (double)B * T * steps / tall;
    double fpt = model_flops_per_token_lora(&s, &lo, T);   /* = model_flops_per_token without LoRA */
    /* the training steps' traffic only (the evaluations exchange too) */
    double a2a = acc.a2a / steps, ar = acc.ar / steps, slots = acc.slots / steps;
    double slin = acc.slin / steps, ta2a = acc.ta2a / steps, tar = acc.tar / steps;
    double sa2a = acc.sa2a / steps;
    size_t allocs = moe_alloc_calls() - calls0;
    double eval_tok_s = (double)B * T * steps / te;
    /* rank 0's fastest step and evaluation (steps end on a barrier, so all ranks agree) */
    const double best_tok_s = (double)B * T / min_step, best_eval_tok_s = (double)B * T / min_eval;
    /* every rank's parameter, gradient and optimizer-state bytes (they differ with
     * sharding and with uneven expert slices), gathered to rank 0 */
    const ParamBlock *pb0 = &m.ps.blocks[0], *pb1 = &m.ps.blocks[1];
    /* gradients: the buffers, the sharded optimizer's staging and the reduction's slots;
     * [3]: the peak resident set read above */
    double mem_mine[4] = {4.0 * (double)(pb0->n + pb1->n),
                          4.0 * (double)(pb0->gpad + pb0->gstage + pb1->gpad + pb1->gstage) +
                              (double)grad_reduce_staging_bytes(&gr1),
                          8.0 * (double)(pb0->shard_n + pb1->shard_n), peak};
    double *mem_all = moe_calloc(sizeof(double) * 4 * (size_t)comm.size);
    if (comm.mpi) MPI_Gather(mem_mine, 4, MPI_DOUBLE, mem_all, 4, MPI_DOUBLE, 0, comm.world);
    else memcpy(mem_all, mem_mine, sizeof mem_mine);
    if (root) {
        printf("training: %.0f tokens/s over %d steps (%.3f s/step: forward %.3f, backward "
               "%.3f, gradient all-reduce + norm %.3f, optimizer %.3f)\n", tok_s, steps,
               tall / steps, tf / steps, tb / steps, tr / steps, to / steps);
        printf("CPU time: %.3f s per step on rank 0 (all its threads; wall time above)\n",
               acc.cpu / steps);
        printf("time split per step (forward + backward):\n");
        for (int r = 0; r < REGION_COUNT; r++)
            printf("  %-38s %.3f s (%.3f + %.3f)\n", model_region_names[r],
                   (t.fwd_time[r] + t.bwd_time[r]) / steps, t.fwd_time[r] / steps,
                   t.bwd_time[r] / steps);
        printf("  %-38s %.3f s\n", "optimizer (AdamW)", to / steps);
        printf("  %-38s %.3f s (all-to-all %.3f inside router + dispatch, gradient "
               "reduction %.3f), exposed (waiting in MPI)\n", "communication", ta2a + tar,
               ta2a, tar);
        printf("forward-only evaluation: %.0f tokens/s = %.2fx training tokens/s; per step:\n",
               eval_tok_s, eval_tok_s / tok_s);
        for (int r = 0; r < REGION_COUNT; r++)
            printf("  %-38s %.3f s (training forward %.3f s)\n", model_region_names[r],
                   eval_fwd[r] / steps, t.fwd_time[r] / steps);
        printf("sgemm on the training-shaped products, one pass after each timed step: "
               "%.1f GFLOP/s (best pass %.1f)\n", gflops_mean, gflops_best);
        printf("model FLOPs/token %.3g -> %.1f GFLOP/s achieved; MFU = %.3f (%.3f against "
               "the best pass)\n", fpt, fpt * tok_s / 1e9, fpt * tok_s / 1e9 / gflops_mean,
               fpt * tok_s / 1e9 / gflops_best);
        printf("MFU against the peak of %s %s on a 2048^3 product (%.1f GFLOP/s): %.3f\n",
               gemm_backend_name(gp.b), gemm_precision_name(gp.p), peak_rate,
               fpt * tok_s / 1e9 / peak_rate);
        printf("least disturbed rounds: fastest step %.0f tokens/s, MFU %.3f against the best "
               "pass; fastest evaluation %.0f tokens/s = %.2fx the fastest step\n", best_tok_s,
               fpt * best_tok_s / 1e9 / gflops_best, best_eval_tok_s,
               best_eval_tok_s / best_tok_s);
        char name[96];
        printf("allocations during timed steps (rank 0): %zu; peak allocated (moe_malloc) "
               "%.1f MiB\n", allocs, mib(peak_alloc));
        const double scratch = (double)tape_scratch_bytes(&t);   /* with its sub tape's */
        const double parts[9] = {
            rss_start, rss_blas, mem_mine[0], mem_mine[1], mem_mine[2],
            tape_arena_bytes(&t), sub_arena_bytes(&t), plan_bytes(&t), scratch};
        const char *const part_names[9] = {
            "program, libraries, MPI, product kernels (at start)",
            "product-library buffers (growth over sgemm-rate run)",
            "parameters (fp32 values, every tensor)",
            "gradients (trainable; + staging areas)",
            "optimizer state (AdamW m + v; this rank's slice)",
            "tape arena (kept activations, high water)",
            "recomputation arena (one layer, high water)",
            "activation-gradient plans",
            "tape scratch (SwiGLU and gathered rows, recomputed)"};
        double sum = 0;
        printf("memory (rank 0, %s): peak resident %.1f MiB =\n",
               setting_name(&proto, m.doc_mask, name, sizeof name), mib(peak));
        for (int i = 0; i < 9; i++) {
            printf("  %-52s %7.1f MiB\n", part_names[i], mib(parts[i]));
            sum += parts[i];
        }
        printf("  %-52s %7.1f MiB\n", "rest (heap: tape ops, threads, batch; measured)",
               mib(peak - sum));
        printf("model state per rank (parallel.shard_optimizer %s): bytes of parameters | "
               "gradients (+ reduction staging) | optimizer state | peak resident MiB\n",
               c.parallel.shard_optimizer ? "true" : "false");
        for (int r = 0; r < comm.size; r++)
            printf("  rank %d: %.0f | %.0f | %.0f | %.1f\n", r, mem_all[4 * r],
                   mem_all[4 * r + 1], mem_all[4 * r + 2], mib(mem_all[4 * r + 3]));
        if (comm.size > 1) {
            /* with recompute the forward's exchange runs again in backward: 3 transfers per
             * slot, and the slot counters count both exchange plans */
            const double xfers = proto.recompute ? 3.0 : 2.0, plans = proto.recompute ? 2.0 : 1.0;
            slots /= plans;
            slin /= plans;
            double P = comm.ep, uniform = 2.0 * xfers * s.L * N * s.K * (P - 1) / P * s.C * 4.0;
            double routed = xfers * (slots + slin) * s.C * 4.0;
            /* bytes sent by a ring over G ranks (parallel/comm.h): 2 (G-1)/G of a block's
             * gradient buffer, the gn trainable floats, or the padded gpad when sharded
             * (reduce-scatter + all-gather, (G-1)/G each); dense G = R, experts G = EDP */
            double ar_pred = 0;
            for (int b = 0; b < PBLOCK_COUNT; b++) {
                const double G = b == PBLOCK_DENSE ? comm.size : comm.edp;
                const ParamBlock *pb = &m.ps.blocks[b];
                const double len = zero_block_sharded(&m.ps, b) ? (double)pb->gpad
                                                                : (double)pb->gn;
                ar_pred += 2.0 * (G - 1.0) / G * 4.0 * len;
            }
            printf("rank 0 per step: all-to-all %.2f MB sent (routing predicts %.2f MB: %.0f "
                   "slots out + %.0f in, x %.0f transfers x C floats; uniform routing %.2f MB) "
                   "in %.3f s\n", a2a / 1e6, routed / 1e6, slots, slin, xfers, uniform / 1e6,
                   ta2a);
            printf("rank 0 per step: all-to-all exposed (wait) %.3f s of span %.3f s (start to "
                   "completion, summed over transfers; parallel.a2a_chunks %d%s): %.0f%% of the "
                   "span hidden\n", ta2a, sa2a, ex.chunks,
                   ex.group.hier ? ", two-stage" : "", sa2a > 0 ? 100.0 * (1.0 - ta2a / sa2a) : 0.0);
            printf("rank 0 per step: gradient %s %.2f MB sent (ring volume of dense %.2f MB "
                   "over %d ranks + expert %.2f MB over %d: %.2f MB predicted) in %.3f s\n",
                   zero_blocks ? "reduce-scatter + all-gather" : "all-reduce", ar / 1e6,
                   4.0 * (double)m.ps.blocks[PBLOCK_DENSE].gn / 1e6, comm.size,
                   4.0 * (double)m.ps.blocks[PBLOCK_EXPERT].gn / 1e6, comm.edp, ar_pred / 1e6,
                   tar);
            print_kinds(&acc, steps);
        }
    }
    if (compare) {
        /* the second setting on its own tape; steps of the two alternate */
        StepCtx proto2 = proto;
        proto2.recompute = c2.train.recompute;
        proto2.loss_chunk = c2.train.loss_chunk;
        Tape t2;
        tape_init(&t2, 0);
        t.profile = false;
        StepTimes a1 = {0}, a2 = {0};
        const bool dm1 = c.data.doc_mask, dm2 = c2.data.doc_mask;
        ModelShape s2;   /* the routing of the second setting */
        config_model_shape(&c2, &s2);
        m.doc_mask = dm2;
        set_routing(&m, &s2);
        gemm_select(path2.b, path2.p, &err);
        bn.gr = &gr2;
        struct MoeExchange *x1 = m.exchange, *x2 = m.exchange ? &ex2 : NULL;
        m.exchange = x2;
        for (int st = 0; st < warmup; st++) bench_step(&bn, &t2, &proto2, st, NULL);
        for (int st = warmup; st < warmup + steps; st++) {
            m.doc_mask = dm1;
            set_routing(&m, &s);
            m.exchange = x1;
            gemm_select(gp.b, gp.p, &err);
            bn.gr = &gr1;
            bench_step(&bn, &t, &proto, st, &a1);
            m.doc_mask = dm2;
            set_routing(&m, &s2);
            m.exchange = x2;
            gemm_select(path2.b, path2.p, &err);
            bn.gr = &gr2;
            bench_step(&bn, &t2, &proto2, st, &a2);
        }
        bn.gr = &gr1;
        m.exchange = x1;
        gemm_select(gp.b, gp.p, &err);
        set_routing(&m, &s);
        if (root) {
            char n1[96], n2[96], r1[160], r2[160];
            const double k1 = (double)B * T * steps / a1.all, k2 = (double)B * T * steps / a2.all;
            printf("comparison over %d interleaved steps each (same model and batch):\n", steps);
            printf("  %s compute.gemm=%s compute.precision=%s\n    %6.0f tokens/s (forward %.3f, "
                   "backward %.3f s/step, CPU %.3f s/step); arena %.1f + %.1f MiB, grad plans "
                   "%.1f MiB\n", setting_name(&proto, dm1, n1, sizeof n1),
                   gemm_backend_name(gp.b), gemm_precision_name(gp.p), k1,
                   a1.f / steps, a1.b / steps, a1.cpu / steps, mib(tape_arena_bytes(&t)),
                   mib(sub_arena_bytes(&t)), mib(plan_bytes(&t)));
            printf("  %s compute.gemm=%s compute.precision=%s\n    %6.0f tokens/s (forward %.3f, "
                   "backward %.3f s/step, CPU %.3f s/step); arena %.1f + %.1f MiB, grad plans "
                   "%.1f MiB\n", setting_name(&proto2, dm2, n2, sizeof n2),
                   gemm_backend_name(path2.b), gemm_precision_name(path2.p), k2,
                   a2.f / steps, a2.b / steps, a2.cpu / steps, mib(tape_arena_bytes(&t2)),
                   mib(sub_arena_bytes(&t2)), mib(plan_bytes(&t2)));
            /* the routing of each setting and, under mpirun, rank 0's all-to-all bytes per
             * step (what group-limited routing is for) */
            printf("  routing, first: %s\n  routing, second: %s\n", routing_name(&s, r1, sizeof r1),
                   routing_name(&s2, r2, sizeof r2));
            if (comm.size > 1)
                printf("  rank 0 all-to-all per step: first %.3f MB, second %.3f MB sent (ratio "
                       "%.3f; %.0f vs %.0f slots routed to other ranks)\n", a1.a2a / steps / 1e6,
                       a2.a2a / steps / 1e6, a1.a2a > 0 ? a2.a2a / a1.a2a : 0.0,
                       a1.slots / steps, a2.slots / steps);
            if (comm.size > 1)   /* what the routing would cost with one row per token and rank */
                printf("  a token-deduplicating exchange (one row per token and destination rank) "
                       "would send %.0f vs %.0f rows: %.3f and %.3f of the slots above\n",
                       a1.remote / steps, a2.remote / steps,
                       a1.slots > 0 ? a1.remote / a1.slots : 0.0,
                       a2.slots > 0 ? a2.remote / a2.slots : 0.0);
            printf("  tokens/s ratio second/first %.3f; peak resident now %.1f MiB (both tapes)\n",
                   k2 / k1, mib(rss_peak()));
            if (comm.size > 1) {
                const CommStat *g1 = &a1.kind[COMM_GRAD], *g2 = &a2.kind[COMM_GRAD];
                printf("  gradient reduction per step: first parallel.bucket_mb=%g "
                       "hierarchical=%s: %.4f s exposed (span %.4f s), step %.4f s; second "
                       "parallel.bucket_mb=%g hierarchical=%s: %.4f s exposed (span %.4f s), "
                       "step %.4f s\n", (double)gr1.bucket * 4 / 1048576.0,
                       c.parallel.hierarchical ? "true" : "false", g1->wait / steps,
                       g1->span / steps, a1.all / steps, (double)gr2.bucket * 4 / 1048576.0,
                       c2.parallel.hierarchical ? "true" : "false", g2->wait / steps,
                       g2->span / steps, a2.all / steps);
                /* hidden: of the time the reduction costs when it runs blocking after the
                 * backward (the bucket_mb = 0 setting's exposed wait, measured in the same
                 * minutes), the part the bucketed setting no longer waits for; "saved" is
                 * the step time actually gained per second of that blocking reduction (it
                 * also pays for communication that slows the backward's computation) */
                const bool b1 = gr1.bucket > 0, b2 = gr2.bucket > 0;
                if (b1 != b2) {
                    const StepTimes *ov = b1 ? &a1 : &a2, *bl = b1 ? &a2 : &a1;
                    const double w0 = bl->kind[COMM_GRAD].wait, w1 = ov->kind[COMM_GRAD].wait;
                    printf("  communication hidden (gradient reduction): %.1f%% = 1 - exposed "
                           "%.4f s / blocking %.4f s per step; step time saved %.4f s per "
                           "step = %.1f%% of the blocking reduction\n",
                           100.0 * (1.0 - w1 / w0), w1 / steps, w0 / steps,
                           (bl->all - ov->all) / steps, 100.0 * (bl->all - ov->all) / w0);
                }
            }
            if (comm.size > 1 && s.E > 0) {
                /* exposed = seconds inside MPI (parallel/comm.h wait); hidden against the
                 * first setting: the share of its exposed all-to-all time the second no
                 * longer waits for */
                const struct MoeExchange *xs[2] = {&ex, &ex2};
                const StepTimes *as[2] = {&a1, &a2};
                for (int k = 0; k < 2; k++)
                    printf("  all-to-all, parallel.a2a_chunks %d%s: exposed %.4f s/step of span "
                           "%.4f s/step (%.0f%% of the span hidden), %.2f MB/step, step %.4f "
                           "s\n", xs[k]->chunks, xs[k]->group.hier ? " two-stage" : "",
                           as[k]->ta2a / steps, as[k]->sa2a / steps,
                           as[k]->sa2a > 0 ? 100.0 * (1.0 - as[k]->ta2a / as[k]->sa2a) : 0.0,
                           as[k]->a2a / steps / 1e6, as[k]->all / steps);
                printf("  exposed all-to-all of the second / the first: %.3f (%.0f%% hidden)\n",
                       a1.ta2a > 0 ? a2.ta2a / a1.ta2a : 0.0,
                       a1.ta2a > 0 ? 100.0 * (1.0 - a2.ta2a / a1.ta2a) : 0.0);
            }
        }
        tape_free(&t2);
    }
    grad_reduce_free(&gr1);
    grad_reduce_free(&gr2);
    tape_free(&t);
    model_free(&m);
    exchange_free(&ex2);
    exchange_free(&ex);
    config_free(&c2);
    moe_free(mem_all);
    moe_free(in);
    moe_free(tgt);
    config_free(&c);
    comm_finalize(&comm);
    return 0;
}
