/* schedule.c: the learning-rate schedules. See schedule.h. */
#include "optim/schedule.h"

#include <math.h>

long lr_wsd_decay_steps(const LrSchedule *s) {
    long d = (long)llround(s->decay_fraction * (double)s->total);
    if (d < 1) d = 1;
    return d > s->total ? s->total : d;
}

/* min_lr + (lr - min_lr) factor, in double like the cosine. */
static float between(const LrSchedule *s, double factor) {
    return (float)((double)s->min_lr + ((double)s->lr - (double)s->min_lr) * factor);
}

float lr_at(const LrSchedule *s, long step) {
    if (s->warmup > 0 && step < s->warmup)
        return s->lr * (float)(step + 1) / (float)s->warmup;
    if (s->kind == LR_CONSTANT) return s->lr;
    if (s->kind == LR_WSD) {
        long start = s->total - lr_wsd_decay_steps(s);
        if (start < s->warmup) start = s->warmup;
        const long span = s->total - start;
        if (span <= 0 || step < start) return s->lr;
        double p = (double)(step - start + 1) / (double)span;
        return between(s, 1.0 - (p > 1.0 ? 1.0 : p));
    }
    long span = s->total - 1 - s->warmup;
    if (span <= 0) return s->lr;
    double progress = (double)(step - s->warmup) / (double)span;
    if (progress > 1.0) progress = 1.0;
    if (s->kind == LR_LINEAR) return between(s, 1.0 - progress);
    /* cosine: the expression of the original schedule, kept bit for bit */
    double cosine = 0.5 * (1.0 + cos(M_PI * progress));
    return (float)((double)s->min_lr + ((double)s->lr - (double)s->min_lr) * cosine);
}
