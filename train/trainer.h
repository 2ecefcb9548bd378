/* trainer.h: one training run's state (private to train/train.c and train/trainer.c), and
 * how a run starts.
 *
 * A run starts in one of four ways, decided by trainer_init from the options and config:
 * from scratch; resumed from a checkpoint (--resume PATH|auto: model, moments, step, loader
 * position and spike detector, any rank layout); from a dense checkpoint turned into experts
 * (init.upcycle_from, checkpoints/upcycle.h); or from a base model to fine-tune
 * (finetune.init_from, all weights or LoRA adapters on a frozen base, checkpoints/finetune.h).
 * Every verdict is agreed by all ranks (comm_max_world_i), so no rank waits for one that
 * gave up.
 * Non-goals: the step and the loop (train/train.c).
 */
#ifndef MOE_TRAINER_H
#define MOE_TRAINER_H

#include "checkpoints/rundir.h"
#include "configs/config.h"
#include "layers/model.h"
#include "optim/adamw.h"
#include "parallel/comm.h"
#include "parallel/exchange.h"
#include "parallel/reduce.h"
#include "train/dataset.h"

typedef struct Trainer {
    const Config *c;       /* borrowed */
    const Comm *comm;      /* borrowed */
    DataSet data;
    Model model;           /* this rank's dense tensors and its E/P experts */
    Tape tape;
    struct MoeExchange ex; /* model.exchange points here when R > 1 and E > 0 */
    int B, T, A;           /* global micro-batch, sequence length, accumulation */
    int Bl, row0;          /* this rank's rows of each global micro-batch */
    int32_t *in, *tg;      /* (A, Bl, T): a step's micro-batches, this rank's rows */
    AdamWConfig ac;
    LrSchedule sched;
    long step;             /* optimizer steps done */
    long tokens_seen;
    bool resumed;          /* state came from a checkpoint */
    char from[4096];       /* the checkpoint it resumed from ("" for none), every rank */
    int bad_run;           /* non-finite steps in a row */
    double gnorm_ema;      /* running mean of finite gradient norms (spike detection) */
    long gnorm_count;
    Model full;            /* rank 0 with expert parallelism: every expert, for saving */
    float *xfer;           /* (3, expert block) receive buffer for the expert gather */
    RunDir rd;             /* rank 0: the locked run directory, this process's generation */
    bool lora;             /* finetune.lora_rank > 0: adapter checkpoints on a frozen base */
    char base_path[1024];  /* LoRA: the base checkpoint and the checksum of its bytes */
    uint64_t base_sum;
    int zero_blocks;       /* parameter blocks whose moments are sharded (parallel/zero.h) */
    GradReduce gr;         /* the gradient reduction (parallel/reduce.h), set up by train_run
                              after the sharding */
} Trainer;

/* Returned (instead of -1) when the run is refused before it changed anything. */
#define TRAINER_REFUSED (-2)

/* Build tr (zeroed first) for c on the ranks of comm: rank 0 takes run.dir (its lock, and
 * for a fresh start the check that no other run's files are there) and picks the checkpoint
 * to resume from (resume: NULL, a path or "auto", see train.h); the data is opened (rank 0
 * first: it trains the tokenizer and encodes the text); the model, tape and buffers are made;
 * then the run starts by one of the four ways above (progress lines on rank 0's stdout).
 * Returns 0, TRAINER_REFUSED (run.dir refused, or stop_at > 0 not after the resumed step) or
 * -1 with err; the same on every rank. tr is then half-built: trainer_free it. */
int trainer_init(Trainer *tr, const Config *c, const Comm *comm, const char *resume,
                 long stop_at, MoeErr *err);
/* Free everything and release run.dir's lock; safe on a zeroed or half-built trainer. */
void trainer_free(Trainer *tr);

#endif
