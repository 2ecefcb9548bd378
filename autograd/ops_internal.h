/* ops_internal.h: helpers shared by the op files of autograd/ (not part of the op API).
 *
 * softmax_row: p (E) = softmax(x (E)), stable (the row max is subtracted, the sum is in
 * double); returns logsumexp(x). Defined in ops_moe.c, used by the router losses there and
 * by the router gates of ops_route.c.
 */
#ifndef MOE_OPS_INTERNAL_H
#define MOE_OPS_INTERNAL_H

double softmax_row(const float *x, int E, float *p);

#endif
