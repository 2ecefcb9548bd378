/* train.h: the training loop of `moetrain CONFIG`.
 *
 * Owns one run: prepares the data (trains the tokenizer when its file is missing, encodes
 * the text files into a cached token shard), builds the model, then runs
 * train.steps optimizer steps of train.grad_accum micro-batches each, with logging
 * (terminal + metrics.jsonl/eval.jsonl in run.dir) and periodic validation.
 * Every start appends its line to run.dir/runs.jsonl (train/runinfo.h). Warnings (train/
 * logger.h) come when they happen: at start for a tokenizer trained on other text than
 * data.text and for train.steps < optim.warmup_steps; then any step's gradient spike,
 * skipped non-finite step, or drops above train.warn_dropped.
 * Errors in the inputs come back as -1 with MoeErr set; main prints them and exits 1. A run
 * that is refused before it changed anything (a run.dir that belongs to another run or is in
 * use, see checkpoints/rundir.h; a --stop-at at or below the resumed step) comes back as
 * TRAIN_REFUSED; main exits 2.
 */
#ifndef MOE_TRAIN_H
#define MOE_TRAIN_H

#include "configs/config.h"
#include "layers/model.h"
#include "parallel/comm.h"

/* Run the training described by c (already validated) on the ranks of comm (groups set
 * up by comm_setup). opt->resume: NULL (a fresh start: refused when run.dir holds another
 * run's checkpoints or metrics), a checkpoint path, or "auto" (rundir_find_resume: the tip
 * of the newest run in run.dir/checkpoints; a fresh start when there is no checkpoint file;
 * refused when there are only unreadable ones). Rank 0 holds run.dir's lock for the whole
 * run. Checkpoints are written every checkpoint.every steps, at the end, and on
 * SIGINT/SIGTERM (after the current step; then the run returns 0). Every write to the logs is
 * checked: a failed one stops the run. Returns 0 on success, TRAIN_REFUSED or -1 with err
 * (every rank returns the same, except that a failure to close the logs at the very end is
 * rank 0's alone; rank 0's message is the one to print). */
#define TRAIN_REFUSED (-2)
typedef struct TrainOptions {
    const char *resume;   /* NULL, a checkpoint path, or "auto" */
    long stop_at;         /* > 0: save a checkpoint and return after this step (the schedule
                             still spans train.steps): for job time limits and tests */
    int argc;             /* the process's command line, recorded in run.dir/runs.jsonl */
    char *const *argv;    /* (argc) borrowed; NULL: none */
} TrainOptions;

int train_run(const Config *c, const Comm *comm, const TrainOptions *opt, MoeErr *err);

#endif
