/* dp.c: see dp.h. */
#include "parallel/dp.h"

#include <math.h>


void dp_reduce_grads(ParamSet *ps, const Comm *c) {
    if (c->size == 1) return;
    ParamBlock *d = &ps->blocks[PBLOCK_DENSE], *e = &ps->blocks[PBLOCK_EXPERT];
    comm_sum_world_f(c, d->grad, d->gn);   /* trainable tensors only */
    comm_sum_edp_f(c, e->grad, e->gn);
    grad_scale(ps, 1.0f / (float)c->size);
}

double dp_grad_norm(const ParamSet *ps, const Comm *c) {
    double dense = grad_sumsq_block(ps, PBLOCK_DENSE);
    double expert = grad_sumsq_block(ps, PBLOCK_EXPERT);
    comm_sum_ep_d(c, &expert, 1);
    return sqrt(dense + expert);
}
