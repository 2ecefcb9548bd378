/* bench_train.c: training throughput of a config against the machine's sgemm rate,
 * measured in the same run; under mpirun also the communication volume.
 *
 *   [mpirun -n R] bench_train [CONFIG] [--steps N] [--warmup N] [--set k=v ...]
 *
 * 1. sgemm GFLOP/s on the model's own training-shaped products (train/mfu.h: every GEMM of
 *    one training step at this rank's batch, timed back to back with the same thread count),
 *    summed over ranks = the machine's rate for this layout.
 * 2. Training tokens/s (global): warm-up steps, then timed steps of forward + backward +
 *    gradient all-reduce + AdamW on random tokens (the data path is not part of the step).
 * 3. MFU = model FLOPs per token x tokens/s / sgemm rate (model_flops_per_token), the time
 *    split, allocations during the timed steps, peak allocated bytes.
 * 4. Peak resident memory of the process (VmHWM) next to the allocator's peak.
 * 5. LoRA fine-tuning (--set finetune.lora_rank=8 ...): the same step with adapters on a
 *    frozen, randomly initialised base (no init_from is read), to compare with the full
 *    fine-tuning step of the same config (lora_rank 0, every weight trained).
 * 6. With R > 1: bytes per step each rank sent through all-to-alls (to other ranks) and
 *    handed to all-reduces, against what the routing predicts: a rank sends C floats for
 *    each slot it routed to an expert on another rank (forward there, backward gradient
 *    back) and for each slot other ranks routed to its experts (forward result back,
 *    backward gradient there): 2 (out + in) C 4 bytes, counted from the routing; the
 *    uniform-routing estimate is 4 L N_rank K (P-1)/P C 4 bytes; all-reduce = dense block
 *    + expert block (if replicated).
 * Not a test: numbers depend on the machine and its load.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autograd/blas.h"
#include "layers/model.h"
#include "optim/adamw.h"
#include "parallel/dp.h"
#include "parallel/exchange.h"
#include "train/config.h"
#include "train/mfu.h"
#include "train/train.h"

/* CPU seconds used by this process so far (all its threads): on a machine shared with
 * other jobs this measures the work of a step where wall time measures the contention. */
static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Peak resident set size of this process (VmHWM in /proc/self/status), MiB; -1 if unknown. */
static double peak_rss_mib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1.0;
    char line[256];
    double kib = -1.0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kib = atof(line + 6);
    fclose(f);
    return kib < 0 ? -1.0 : kib / 1024.0;
}

int main(int argc, char **argv) {
    blas_init(argv);
    Comm comm;
    comm_init(&comm, &argc, &argv);
    const bool root = comm.rank == 0;
    const char *path = "configs/mixtral_tiny.yaml";
    int steps = 10, warmup = 3;   /* step 1 compacts the arena, step 2 faults its pages in */
    Config c;
    MoeErr err;
    memset(&c, 0, sizeof c);
    int first = 1;
    if (argc > 1 && argv[1][0] != '-') { path = argv[1]; first = 2; }
    if (config_load(&c, path, &err)) {
        fprintf(stderr, "bench_train: %s\n", err.msg);
        return 1;
    }
    for (int i = first; i < argc; i++) {
        if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc) warmup = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--set") && i + 1 < argc) {
            if (config_set(&c, argv[++i], &err)) {
                fprintf(stderr, "bench_train: %s\n", err.msg);
                return 1;
            }
        } else {
            fprintf(stderr, "usage: bench_train [CONFIG] [--steps N] [--warmup N] [--set k=v]\n");
            return 2;
        }
    }
    if (comm_setup(&comm, c.parallel.expert_parallel, c.moe.n_experts, c.train.micro_batch,
                   &err)) {
        if (root) fprintf(stderr, "bench_train: %s\n", err.msg);
        comm_finalize(&comm);
        return 1;
    }
    ModelShape s;
    train_model_shape(&c, &s);
    const int B = c.train.micro_batch, T = c.train.seq_len, Bl = B / comm.size, N = Bl * T;
    if (root)
        printf("config %s: %d rank(s), expert parallel %d, %d tokens per rank per step, "
               "OpenBLAS core %s, %d thread(s) per rank\n", path, comm.size, comm.ep, N,
               blas_core_name(), blas_threads());

    /* ---- 1. sgemm rate on the training-shaped products ---- */
    double gflops = mfu_sgemm_rate(&s, N, 3);
    comm_sum_world_d(&comm, &gflops, 1);
    if (root) printf("sgemm on the model's training-shaped products: %.1f GFLOP/s\n", gflops);

    /* ---- 2. training steps ---- */
    Model m;
    int El = s.E > 0 ? s.E / comm.ep : 0;
    LoraSpec lo;
    train_lora_spec(&c, &lo);
    model_init_lora(&m, &s, &lo, comm.ep_rank * El, El, 1);
    if (root)
        printf("%s: %zu of %zu parameters trainable on rank 0\n",
               lo.rank > 0 ? "LoRA fine-tuning (frozen random base)" : "every weight trained",
               params_count(&m.ps, true), params_count(&m.ps, false));
    struct MoeExchange ex = {.comm = &comm};
    if (comm.size > 1 && s.E > 0) m.exchange = &ex;
    Tape t;
    tape_init(&t, 0);
    t.profile = true;
    int32_t *in = moe_malloc(sizeof(int32_t) * (size_t)N), *tgt = moe_malloc(sizeof(int32_t) * (size_t)N);
    MoeRng rng;
    rng_seed(&rng, 5 + (uint64_t)comm.rank);
    for (int i = 0; i < N; i++) {
        in[i] = (int32_t)(rng_next(&rng) % (uint64_t)s.V);
        tgt[i] = (int32_t)(rng_next(&rng) % (uint64_t)s.V);
    }
    AdamWConfig ac = {0.9f, 0.95f, 1e-8f, 0.1f};
    double tf = 0, tb = 0, tr = 0, to = 0, tall = 0, tcpu = 0;
    double a2a0 = 0, ar0 = 0, slots0 = 0, slin0 = 0, ta2a0 = 0, tar0 = 0;
    size_t calls0 = 0;
    for (int st = 0; st < warmup + steps; st++) {
        if (st == warmup) {
            memset(t.fwd_time, 0, sizeof t.fwd_time);
            memset(t.bwd_time, 0, sizeof t.bwd_time);
            calls0 = moe_alloc_calls();
            a2a0 = comm_bytes_alltoall;
            ar0 = comm_bytes_allreduce;
            slots0 = comm_slots_offrank;
            slin0 = comm_slots_fromrank;
            ta2a0 = comm_time_alltoall;
            tar0 = comm_time_allreduce;
        }
        comm_barrier(&comm);
        double t0 = moe_now(), c0 = cpu_seconds();
        params_zero_grad(&m.ps);
        tape_reset(&t, true);
        t.region_t0 = moe_now();
        t.region = REGION_OTHER;
        StepCtx ctx = {.train = true, .seed = 1, .step = st,
                       .token_base = (long)comm.rank * N, .loss_scale = 1.0f};
        ModelOut out;
        model_forward(&m, &t, in, tgt, Bl, T, &ctx, &out);
        double t1 = moe_now();
        tape_backward(&t, out.loss, NULL);
        double t2 = moe_now();
        dp_reduce_grads(&m.ps, &comm);
        double gn = dp_grad_norm(&m.ps, &comm);
        (void)gn;
        double t3 = moe_now();
        adamw_step(&m.ps, &ac, 1e-4f, st + 1);
        double t4 = moe_now();
        if (st == 0) tape_compact(&t);   /* as the trainer does after its first step */
        if (st >= warmup) {
            tf += t1 - t0; tb += t2 - t1; tr += t3 - t2; to += t4 - t3; tall += t4 - t0;
            tcpu += cpu_seconds() - c0;
        }
    }
    double tok_s = (double)B * T * steps / tall;
    double fpt = lora_flops_per_token(&s, &lo, T);   /* = model_flops_per_token without LoRA */
    double a2a = (comm_bytes_alltoall - a2a0) / steps, ar = (comm_bytes_allreduce - ar0) / steps;
    double slots = (comm_slots_offrank - slots0) / steps;
    double slin = (comm_slots_fromrank - slin0) / steps;
    double ta2a = (comm_time_alltoall - ta2a0) / steps, tar = (comm_time_allreduce - tar0) / steps;
    size_t allocs = moe_alloc_calls() - calls0;
    /* forward-only evaluation: same batch, no tape recording, no router noise */
    t.profile = false;   /* the time split above is of training steps only */
    double te0 = moe_now();
    for (int st = 0; st < steps; st++) {
        tape_reset(&t, false);
        StepCtx ectx = {.train = false, .seed = 1, .token_base = (long)comm.rank * N,
                        .loss_scale = 1.0f};
        ModelOut eout;
        model_forward(&m, &t, in, tgt, Bl, T, &ectx, &eout);
    }
    double eval_tok_s = (double)B * T * steps / (moe_now() - te0);
    if (root) {
        printf("training: %.0f tokens/s over %d steps (%.3f s/step: forward %.3f, backward "
               "%.3f, gradient all-reduce + norm %.3f, optimizer %.3f)\n", tok_s, steps,
               tall / steps, tf / steps, tb / steps, tr / steps, to / steps);
        printf("CPU time: %.3f s per step on rank 0 (all its threads; wall time above)\n",
               tcpu / steps);
        printf("time split per step (forward + backward):\n");
        for (int r = 0; r < REGION_COUNT; r++)
            printf("  %-38s %.3f s (%.3f + %.3f)\n", model_region_names[r],
                   (t.fwd_time[r] + t.bwd_time[r]) / steps, t.fwd_time[r] / steps,
                   t.bwd_time[r] / steps);
        printf("  %-38s %.3f s\n", "optimizer (AdamW)", to / steps);
        printf("  %-38s %.3f s (all-to-all %.3f inside router + dispatch, gradient "
               "all-reduce %.3f)\n", "communication", ta2a + tar, ta2a, tar);
        printf("forward-only evaluation: %.0f tokens/s = %.2fx training tokens/s\n",
               eval_tok_s, eval_tok_s / tok_s);
        printf("model FLOPs/token %.3g -> %.1f GFLOP/s achieved; MFU = %.3f\n", fpt,
               fpt * tok_s / 1e9, fpt * tok_s / 1e9 / gflops);
        printf("allocations during timed steps (rank 0): %zu; peak allocated %.1f MiB "
               "(parameters %.1f MiB + grads and moments %.1f MiB, activation arena %.1f MiB "
               "in %d chunk(s), activation-gradient plan %.1f MiB); peak resident %.1f MiB\n",
               allocs, (double)moe_peak_bytes() / 1048576.0,
               4.0 * (double)(m.ps.blocks[0].n + m.ps.blocks[1].n) / 1048576.0,
               12.0 * (double)(m.ps.blocks[0].gn + m.ps.blocks[1].gn) / 1048576.0,
               (double)t.arena.high_water / 1048576.0, t.arena.n_chunks,
               (double)tape_grad_plan_bytes(&t) / 1048576.0, peak_rss_mib());
        if (comm.size > 1) {
            double P = comm.ep, uniform = 4.0 * s.L * N * s.K * (P - 1) / P * s.C * 4.0;
            double routed = 2.0 * (slots + slin) * s.C * 4.0;
            double ar_pred = 4.0 * (double)m.ps.blocks[PBLOCK_DENSE].gn +
                             (comm.edp > 1 ? 4.0 * (double)m.ps.blocks[PBLOCK_EXPERT].gn : 0.0);
            printf("rank 0 per step: all-to-all %.2f MB sent (routing predicts %.2f MB: %.0f "
                   "slots out + %.0f in, x 2 transfers x C floats; uniform routing %.2f MB) "
                   "in %.3f s\n", a2a / 1e6, routed / 1e6, slots, slin, uniform / 1e6, ta2a);
            printf("rank 0 per step: all-reduce %.2f MB handed to MPI (dense %.2f MB + "
                   "expert %.2f MB = %.2f MB predicted) in %.3f s\n", ar / 1e6,
                   4.0 * (double)m.ps.blocks[PBLOCK_DENSE].gn / 1e6,
                   comm.edp > 1 ? 4.0 * (double)m.ps.blocks[PBLOCK_EXPERT].gn / 1e6 : 0.0,
                   ar_pred / 1e6, tar);
        }
    }
    tape_free(&t);
    model_free(&m);
    moe_free(in);
    moe_free(tgt);
    config_free(&c);
    comm_finalize(&comm);
    return 0;
}
