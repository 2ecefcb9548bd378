/* logger.h: a training run's logs: run.dir/metrics.jsonl, run.dir/eval.jsonl (schema:
 * train/metrics.h), run.dir/config.yaml, and the lines on the terminal.
 *
 * Rank 0 only. The logs are appended to (a resumed run continues them); every line is
 * flushed and checked as it is written, so a full disk stops the run at that line, not at
 * the next checkpoint.
 * Terminal: ONE line every train.log_every steps (and at steps 1 and the last): loss (with
 * the terms that apply: aux only with a load-balancing or entropy loss, z only with a
 * z-loss), lr, gradient norm, tokens/s, the model's achieved FLOP rate, and for MoE models
 * the worst layer's load max/mean and, when tokens can be dropped (a capacity limit, or
 * expert choice), the worst layer's share dropped; with a router other than topk the mean
 * experts per token; with aux-loss-free balancing the largest router bias; then the ETA. train.log_experts adds
 * the per-layer block under it. On a terminal (not under mpirun) a progress bar is redrawn
 * on the same line (\r) every step.
 * Warnings print when they happen, on any step: one line "warning: ..." on stderr (the
 * progress bar cleared first). logger_step warns of gradient-norm spikes and of a layer
 * dropping more than train.warn_dropped of its slots (once, until it falls to half that);
 * the training loop uses logger_warn for the rest.
 * Why no MFU on the terminal: its denominator, the sgemm rate measured once at start
 * (train/mfu.h), is lower than what the steps achieve when start-up met a busy moment (the
 * log showed MFU 1.28), and no peak rate that is never exceeded can be read from the
 * machine; the achieved rate needs no denominator. metrics.jsonl keeps "mfu" with that
 * documented meaning, and adds "model_tflops".
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
    bool log_experts;   /* train.log_experts */
    double warn_dropped, spike_factor;   /* train.warn_dropped, train.spike_factor */
    bool drop_warned;   /* the last step was above warn_dropped and was warned of */
} Logger;

/* One optimizer step's figures (global: averaged or summed over the ranks). */
typedef struct StepLog {
    long step, steps;     /* steps done (this one included), train.steps */
    long tokens_seen;
    double loss, lm, aux, z, lr, gnorm, tok_s, mfu, dt;   /* see metrics.h for each */
    double tflops;        /* model FLOPs per token x tok_s / 1e12 (METRIC_MODEL_TFLOPS) */
    bool skipped;         /* non-finite loss or gradient: update skipped */
    bool spike;           /* gradient norm above spike_factor x its running mean */
    double gnorm_mean;    /* that running mean */
} StepLog;

/* Print "warning: MSG" as one line on stderr, now, after clearing lg's progress bar (lg may
 * be NULL or zeroed: no bar). Any rank may call it; the message holds no newline. */
void logger_warn(const Logger *lg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Open (append) both logs in c->run.dir into lg (zeroed by the caller) and replace
 * run.dir/config.yaml atomically with c. mpi: plain lines (under mpirun stdout is the
 * launcher's pseudo-terminal). Fails (-1, err naming the file, with a hint); logger_close
 * then closes what was opened. */
int logger_open(Logger *lg, const Config *c, bool mpi, MoeErr *err);

/* A line of metrics.jsonl for step s, with m's expert statistics (m->stats: counts,
 * drops and tokens summed over the micro-batches and ranks) and router bias; the warnings
 * of this step (spike, drops); the progress bar; and, when print, the terminal line (and
 * the per-layer block with train.log_experts). Fails (-1, err naming the file) when the
 * write fails. */
int logger_step(Logger *lg, const StepLog *s, const Model *m, bool print, MoeErr *err);

/* A validation point: the terminal line (with the time since t_eval_start) and one line in
 * eval.jsonl and in metrics.jsonl. Fails (-1, err naming the file) when a write fails. */
int logger_eval(Logger *lg, long step, long steps, long tokens_seen, double val_loss,
                double t_eval_start, MoeErr *err);

/* Close both logs (safe on a zeroed or half-opened Logger). Everything was flushed and
 * checked line by line, but a failing close still fails: -1 with err naming the file. */
int logger_close(Logger *lg, MoeErr *err);

#endif
