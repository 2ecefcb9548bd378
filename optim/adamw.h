/* adamw.h: AdamW with decoupled weight decay and global gradient-norm clipping; the
 * learning-rate schedules are optim/schedule.h (included here).
 *
 * AdamW: Loshchilov & Hutter 2019 (decoupled weight decay), Adam: Kingma & Ba 2015.
 *   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
 *   p -= lr * ( m/(1-b1^t) / (sqrt(v/(1-b2^t)) + eps) + wd * p )      (wd only if decay)
 * One flat loop per trainable tensor over its values (p->off) and its grad/m/v (p->goff).
 * Frozen parameters are skipped (they have no grad/m/v).
 * Non-goals: fused multi-tensor tricks, 8-bit states.
 */
#ifndef MOE_ADAMW_H
#define MOE_ADAMW_H

#include "autograd/params.h"
#include "optim/schedule.h"

typedef struct AdamWConfig {
    float beta1, beta2, eps, weight_decay;
} AdamWConfig;

/* One update with learning rate lr at optimizer step t (1-based, for bias correction). */
void adamw_step(ParamSet *ps, const AdamWConfig *cfg, float lr, long t);
/* The same update with every gradient read as g * gscale (the clip factor): bit-identical
 * to grad_scale(ps, gscale) followed by adamw_step, without the pass that rewrites the
 * gradients (which are left unscaled). */
void adamw_step_scaled(ParamSet *ps, const AdamWConfig *cfg, float lr, long t, float gscale);

/* Clip factor for a global norm: min(1, max_norm / (norm + 1e-6)); max_norm <= 0 -> 1. */
float grad_clip_factor(double norm, float max_norm);

#endif
