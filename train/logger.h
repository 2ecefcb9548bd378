/* logger.h: a training run's logs: run.dir/metrics.jsonl, run.dir/eval.jsonl (schema:
 * train/metrics.h), run.dir/config.yaml, and the lines on the terminal.
 *
 * Rank 0 only. The logs are appended to (a resumed run continues them); every line is
 * flushed and checked as it is written, so a full disk stops the run at that line, not at
 * the next checkpoint. On a terminal (not under mpirun) a progress bar is redrawn every
 * step; the full step lines come every train.log_every steps.
 * Non-goals: log rotation, other sinks (TensorBoard, wandb).
 */
#ifndef MOE_LOGGER_H
#define MOE_LOGGER_H

#include <stdbool.h>
#include <stdio.h>

#include "configs/config.h"
#include "layers/model.h"

typedef struct Logger {
    FILE *metrics;      /* run.dir/metrics.jsonl (owned) */
    FILE *evals;        /* run.dir/eval.jsonl (owned) */
    char metrics_path[4200], evals_path[4200];
    bool tty;           /* stdout is a terminal: progress bar */
    double t_start;     /* moe_now() at the first step, for the ETA (set by the caller) */
} Logger;

/* One optimizer step's figures (global: averaged or summed over the ranks). */
typedef struct StepLog {
    long step, steps;     /* steps done (this one included), train.steps */
    long tokens_seen;
    double loss, lm, aux, z, lr, gnorm, tok_s, mfu, dt;   /* see metrics.h for each */
    bool skipped;         /* non-finite loss or gradient: update skipped */
    bool spike;           /* gradient norm above spike_factor x its running mean */
    double gnorm_mean;    /* that running mean */
} StepLog;

/* Open (append) both logs in c->run.dir into lg (zeroed by the caller) and replace
 * run.dir/config.yaml atomically with c. mpi: plain lines (under mpirun stdout is the
 * launcher's pseudo-terminal). Fails (-1, err naming the file, with a hint); logger_close
 * then closes what was opened. */
int logger_open(Logger *lg, const Config *c, bool mpi, MoeErr *err);

/* A line of metrics.jsonl for step s, with m's expert statistics (m->stats: counts summed
 * over the micro-batches and ranks) and router bias; the progress bar; and, when print, the
 * full terminal lines. Fails (-1, err naming the file) when the write fails. */
int logger_step(Logger *lg, const StepLog *s, const Model *m, bool print, MoeErr *err);

/* A validation point: the terminal line (with the time since t_eval_start) and one line in
 * eval.jsonl and in metrics.jsonl. Fails (-1, err naming the file) when a write fails. */
int logger_eval(Logger *lg, long step, long steps, long tokens_seen, double val_loss,
                double t_eval_start, MoeErr *err);

/* Close both logs (safe on a zeroed or half-opened Logger). Everything was flushed and
 * checked line by line, but a failing close still fails: -1 with err naming the file. */
int logger_close(Logger *lg, MoeErr *err);

#endif
