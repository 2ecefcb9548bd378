/* ops_internal.h: helpers shared by the op files of autograd/ (not part of the op API).
 *
 * softmax_row: p (E) = softmax(x (E)), stable (the row max is subtracted, the sum is in
 * double); returns logsumexp(x). Defined in ops_moe.c, used by the router losses there and
 * by the router gates of ops_route.c.
 * logsumexp_row: logsumexp(x (E)) in double, stable (the row max is subtracted); the z-loss
 * and the router entropy penalty. Defined in ops_moe.c.
 */
#ifndef MOE_OPS_INTERNAL_H
#define MOE_OPS_INTERNAL_H

double softmax_row(const float *x, int E, float *p);
double logsumexp_row(const float *x, int E);

#endif
