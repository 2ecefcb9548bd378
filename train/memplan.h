/* memplan.h: what a training run will hold in memory, per rank, computed from the config
 * before anything is allocated, and the refusal of a run that cannot fit the machine.
 *
 * The estimate follows what the trainer allocates (bench_train's memory split names the same
 * parts):
 *   - parameters (float32 values of every tensor this rank holds: the replicated dense ones
 *     and its E/P experts), their gradients and the two AdamW moments (trainable tensors
 *     only: a LoRA run keeps the frozen base as values alone);
 *   - activations: the tape arena's high water, i.e. what one micro-batch's forward keeps
 *     for backward, summed op by op from the shapes (layers/model.c's block: norms, q/k/v,
 *     attention output and its per-worker score buffers, residuals, router logits and noise,
 *     the expert hidden states h1 and h3 of the routed slots and the expert outputs, LoRA's
 *     intermediates; then the head: the (N, V) logits, or the chunk buffer and the saved
 *     dX/dW of train.loss_chunk). With train.recompute each block keeps only its output on
 *     the main tape and one block's activations live on the recomputation tape;
 *   - activation gradients (the liveness-shared plan: about one block's largest gradients at
 *     once) and the tape scratch (the largest fused intermediate, with the 1/8 headroom the
 *     scratch grows by);
 *   - with expert parallelism, rank 0 assembles a full model (every expert, with moments)
 *     and a transfer buffer before each checkpoint;
 *   - the program and its libraries: a fixed part (the binary, shared libraries, the tape's
 *     op lists; MEMPLAN_FIXED_BYTES, plus MEMPLAN_MPI_BYTES per rank under mpirun for Open
 *     MPI's buffers) and a part that grows with the model (OpenBLAS's packing buffers,
 *     HDF5's copy of a tensor while a checkpoint is written, the heap's slack:
 *     MEMPLAN_GROWTH of the terms above). The three constants are measured: the peak
 *     resident set of `moetrain` on a tiny config (20 MiB), mixtral_tiny with and without
 *     recomputation (1 and 2 OpenBLAS threads) and under mpirun -n 2.
 * The routed slots per rank are taken as the balanced N x K (top-p: its cap; expert choice:
 * the capacity), which is what dropless routing averages to; a skewed step can hold more.
 * Not counted: token data (mapped shard files, pages the kernel can drop), the tokenizer
 * and page-cache effects.
 *
 * Machine memory: physical RAM (sysconf) or, when lower, the cgroup limit (v2
 * /sys/fs/cgroup/memory.max, v1 /sys/fs/cgroup/memory/memory.limit_in_bytes). The ranks
 * started on one machine share it, so their plans are summed per machine.
 */
#ifndef MOE_MEMPLAN_H
#define MOE_MEMPLAN_H

#include <stddef.h>

#include "core/common.h"
#include "parallel/comm.h"
#include "configs/config.h"

#define MEMPLAN_FIXED_BYTES (20.0 * 1048576.0)   /* program, libraries, op lists */
#define MEMPLAN_MPI_BYTES (16.0 * 1048576.0)     /* per rank under mpirun (R > 1) */
#define MEMPLAN_GROWTH 0.05                      /* library buffers that grow with the model */

typedef struct MemPlan {
    /* bytes one rank holds (doubles: an absurd config must not overflow the arithmetic) */
    double params;        /* values of every tensor the rank holds */
    double grads;         /* gradients of the trainable ones */
    double moments;       /* AdamW m and v of the trainable ones */
    double activations;   /* tape arenas: kept for backward (+ the recomputation tape's) */
    double act_grads;     /* activation-gradient plans + tape scratch */
    double gather;        /* rank 0 under expert parallelism: full model + transfer buffer */
    double fixed;         /* program and libraries: fixed + MPI + growth (see above) */
    double total;         /* the sum */
    double n_params, n_trainable;   /* elements held by the rank / trainable among them */
    double tokens;        /* tokens per micro-batch on the rank (micro_batch / R x seq_len) */
    double slots;         /* routed expert slots per micro-batch on the rank (0 dense) */
} MemPlan;

/* The plan of world rank `rank` among `ranks` ranks with expert-parallel groups of ep
 * (as comm_setup lays them out). c must have passed config_validate; ranks divides
 * train.micro_batch and ep divides ranks and n_experts (comm_setup's checks). */
void memplan_estimate(const Config *c, int ranks, int ep, int rank, MemPlan *p);

/* A cgroup memory limit file's text ("max\n", "1073741824\n") -> bytes, or 0 when it
 * sets no limit ("max", a v1 "unlimited" value >= 2^62, unreadable text). */
double memplan_parse_limit(const char *text);

/* Bytes this machine lets the process use: physical RAM, or the cgroup limit when lower.
 * *source (may be NULL) is set to a static description ("physical RAM", "cgroup limit
 * /sys/fs/cgroup/memory.max"). */
double memplan_machine_bytes(const char **source);

/* The verdict, separated from the machine for tests: need = the plans of the ranks_here
 * ranks on the machine summed, avail = memplan_machine_bytes. Returns 0 when need <=
 * avail, else -1 with err naming the sizes, the keys that set them (model.*, moe.*,
 * train.micro_batch, train.seq_len) and the levers (train.recompute, a smaller
 * train.micro_batch, more ranks). p is this rank's plan, for the split in the message. */
int memplan_fits(const Config *c, const MemPlan *p, int ranks_here, double need, double avail,
                 const char *source, MoeErr *err);

/* The step cmd_train runs after config_validate and comm_setup, on every rank together:
 * estimate this rank's plan, sum it over the ranks of this machine, print the plan (rank 0,
 * stdout) and decide with memplan_fits (the worst machine decides for all ranks, so every
 * rank returns the same). Returns 0 or -1 with err (identical on every rank). */
int memplan_check(const Config *c, const Comm *comm, MoeErr *err);

#endif
