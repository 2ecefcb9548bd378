/* dp.h: data-parallel gradient reduction and the global gradient norm.
 *
 * Dense (replicated) gradients are summed over all R ranks with one all-reduce over the
 * whole DENSE block; expert gradients over their expert-data-parallel group with one
 * all-reduce over the EXPERT block; both are then scaled by 1/R (see comm.h for why 1/R for
 * experts too), in the order of additions Open MPI chooses. The trainer reduces with
 * parallel/reduce.h instead (its own order, in buckets overlapping the backward); this
 * library reduction is kept as the reference the tests compare with. dp_grad_norm is the
 * trainer's norm for unsharded runs. Every rank calls these, in the same order.
 */
#ifndef MOE_DP_H
#define MOE_DP_H

#include "autograd/params.h"
#include "parallel/comm.h"

/* Reduce the gradients in place (no-op on one rank). */
void dp_reduce_grads(ParamSet *ps, const Comm *c);
/* Global L2 norm of the trainable gradients after dp_reduce_grads: the dense part is the
 * same on every rank, the expert part is summed over the EP group (each EP rank holds
 * different experts; the EDP replicas are equal). Same value on every rank. */
double dp_grad_norm(const ParamSet *ps, const Comm *c);

#endif
