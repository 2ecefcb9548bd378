/* schedule.h: the learning-rate schedules: linear warmup, then one of
 *   cosine    cosine decay from lr to min_lr at the last step (Loshchilov & Hutter 2017,
 *             SGDR without restarts)
 *   wsd       warmup-stable-decay: lr until the last D = round(decay_fraction x total)
 *             steps (at least 1), which decay linearly to min_lr (Hu et al. 2024,
 *             MiniCPM; Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training
 *             Beyond Fixed Training Durations")
 *   linear    linear decay from lr to min_lr at the last step
 *   constant  lr after warmup
 * The learning rate is a pure function of the 0-based optimizer step: a resumed run
 * continues the schedule where it stopped.
 * Non-goals: restarts, schedules on tokens rather than steps (train.tokens is turned into
 * steps first), per-group learning rates.
 */
#ifndef MOE_SCHEDULE_H
#define MOE_SCHEDULE_H

typedef enum { LR_COSINE = 0, LR_WSD = 1, LR_LINEAR = 2, LR_CONSTANT = 3 } LrKind;

typedef struct LrSchedule {
    float lr, min_lr;       /* peak and floor, 0 <= min_lr <= lr */
    long warmup, total;     /* warmup steps >= 0; steps of the run >= 1 */
    LrKind kind;            /* LR_COSINE when zero-initialised */
    double decay_fraction;  /* LR_WSD: share of total spent in the final decay, (0, 1] */
} LrSchedule;

/* The learning rate at 0-based step. Warmup (every kind): lr (step + 1) / warmup for
 * step < warmup. After it, by kind, with p the progress of the decay clamped to [0, 1] (a
 * step past the end stays at the last value):
 *   cosine    min_lr + (lr - min_lr) (1 + cos(pi p)) / 2,  p = (step - warmup) /
 *             (total - 1 - warmup): lr right after warmup, min_lr at step total - 1
 *   linear    min_lr + (lr - min_lr) (1 - p), p as for cosine
 *   wsd       lr before step S = max(total - D, warmup), D = lr_wsd_decay_steps; from S on
 *             min_lr + (lr - min_lr) (1 - p), p = (step - S + 1) / (total - S): every decay
 *             step is below lr and step total - 1 is at min_lr
 *   constant  lr
 * A schedule with no step after warmup (total - 1 <= warmup) stays at lr. */
float lr_at(const LrSchedule *s, long step);

/* LR_WSD's decay length D = round(decay_fraction x total), at least 1, at most total. */
long lr_wsd_decay_steps(const LrSchedule *s);

#endif
