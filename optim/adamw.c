/* adamw.c: AdamW and clipping. See adamw.h. */
#include "optim/adamw.h"

#include "autograd/vmath.h"
#include "core/pool.h"

#include <math.h>

typedef struct AdamTask {
    ParamSet *ps;
    const AdamWConfig *cfg;
    float lr, c1, c2;
    float gscale;   /* gradients are read as g * gscale (1: as they are) */
    int workers;
} AdamTask;

/* Worker w updates the part [n w / W, n (w+1) / W) of every trainable tensor's values in
 * its block's slice [shard_lo, shard_lo + shard_n) of gradient positions (the whole tensor
 * unless the optimizer is sharded: parallel/zero.h); the moments of position j sit at
 * m[j - shard_lo]. The same per-element arithmetic as one loop, so the result depends
 * neither on the thread split nor on the slicing. */
static void adamw_task(void *ctx, int task, int worker) {
    (void)worker;
    const AdamTask *a = ctx;
    const float b1 = a->cfg->beta1, b2 = a->cfg->beta2, eps = a->cfg->eps;
    const float lr = a->lr, c1 = a->c1, c2 = a->c2, gs = a->gscale;
    for (int i = 0; i < a->ps->count; i++) {
        const Param *p = &a->ps->p[i];
        if (!p->trainable) continue;
        const ParamBlock *bl = &a->ps->blocks[p->block];
        /* this tensor's positions inside the slice: [lo, hi) relative to p->goff */
        const size_t s0 = bl->shard_lo, s1 = bl->shard_lo + bl->shard_n;
        const size_t t0 = p->goff, t1 = p->goff + p->t.n;
        if (t1 <= s0 || t0 >= s1) continue;
        const size_t lo = t0 < s0 ? s0 - t0 : 0, hi = (t1 > s1 ? s1 : t1) - t0;
        size_t j0, j1;
        pool_range(hi - lo, task, a->workers, &j0, &j1);
        j0 += lo;
        j1 += lo;
        float *restrict w = bl->data + p->off;
        const float *restrict g = bl->grad + p->goff;
        /* m[j - lo], v[j - lo]: the moments of gradient position goff + j */
        float *restrict m = bl->m + (t0 + lo - s0);
        float *restrict v = bl->v + (t0 + lo - s0);
        const float wd = p->decay ? a->cfg->weight_decay : 0.0f;
        for (size_t j = j0; j < j1; j++) {
            const float gj = g[j] * gs;   /* exact when gs = 1 */
            float mj = b1 * m[j - lo] + (1.0f - b1) * gj;
            float vj = b2 * v[j - lo] + (1.0f - b2) * gj * gj;
            m[j - lo] = mj;
            v[j - lo] = vj;
            w[j] -= lr * ((mj * c1) / (sqrtf(vj * c2) + eps) + wd * w[j]);
        }
    }
}

void adamw_step_scaled(ParamSet *ps, const AdamWConfig *cfg, float lr, long t, float gscale) {
    ASSERT(t >= 1, "adamw step t=%ld (1-based)", t);
    params_bf16_drop(ps);   /* the weights change: their bf16 copies are stale until the
                               next forward refreshes them */
    /* Bias corrections in double: b^t underflows gracefully and stays accurate. */
    AdamTask a = {ps, cfg, lr, (float)(1.0 / (1.0 - pow((double)cfg->beta1, (double)t))),
                  (float)(1.0 / (1.0 - pow((double)cfg->beta2, (double)t))), gscale,
                  pool_workers()};
    /* One flat, memory-bound loop: split it over the cores (no BLAS inside). */
    pool_parallel_for(a.workers, adamw_task, &a);
}

void adamw_step(ParamSet *ps, const AdamWConfig *cfg, float lr, long t) {
    adamw_step_scaled(ps, cfg, lr, t, 1.0f);
}

float grad_clip_factor(double norm, float max_norm) {
    if (max_norm <= 0.0f || !(norm > (double)max_norm)) return 1.0f;
    return (float)((double)max_norm / (norm + 1e-6));
}
