/* train.h: the training loop of `moetrain CONFIG`.
 *
 * Owns one run: prepares the data (trains the tokenizer when its file is missing, encodes
 * the text files into a cached token shard), builds the model, then runs
 * train.steps optimizer steps of train.grad_accum micro-batches each, with logging
 * (terminal + metrics.jsonl/eval.jsonl in run.dir) and periodic validation.
 * Errors in the inputs come back as -1 with MoeErr set; main prints them and exits 1.
 */
#ifndef MOE_TRAIN_H
#define MOE_TRAIN_H

#include "train/config.h"
#include "layers/model.h"
#include "parallel/comm.h"

/* Fill a ModelShape from the config's model/moe sections. */
void train_model_shape(const Config *c, ModelShape *s);
/* Fill a LoraSpec from the config's finetune section (rank 0 = no adapters). */
void train_lora_spec(const Config *c, LoraSpec *s);

/* Run the training described by c (already validated) on the ranks of comm (groups set
 * up by comm_setup). opt->resume: NULL, a checkpoint path, or "auto" (newest complete
 * checkpoint in run.dir/checkpoints, or a fresh start when there is none). Checkpoints are
 * written every checkpoint.every steps, at the end, and on SIGINT/SIGTERM (after the
 * current step; then the run returns 0). Returns 0 on success, -1 with err (every rank returns -1 together;
 * rank 0's message is the one to print). */
typedef struct TrainOptions {
    const char *resume;   /* NULL, a checkpoint path, or "auto" */
    long stop_at;         /* > 0: save a checkpoint and return after this step (the schedule
                             still spans train.steps): for job time limits and tests */
} TrainOptions;

int train_run(const Config *c, const Comm *comm, const TrainOptions *opt, MoeErr *err);

#endif
