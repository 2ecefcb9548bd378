/* ops_internal.h: helpers shared by the op files of autograd/ (not part of the op API).
 *
 * softmax_row: p (E) = softmax(x (E)), stable (the row max is subtracted, the sum is in
 * double); returns logsumexp(x). Defined in ops_moe.c, used by the router losses there and
 * by the router gates of ops_route.c.
 * logsumexp_row: logsumexp(x (E)) in double, stable (the row max is subtracted); the z-loss
 * and the router entropy penalty. Defined in ops_moe.c.
 * swiglu_forward / swiglu_backward / swiglu_run: the SwiGLU elementwise kernels of op_swiglu
 * (defined in ops.c), shared with the fused SwiGLU + down-projection ops (op_swiglu_linear in
 * ops.c, op_swiglu_expert_linear in ops_moe.c) so that they do the same float operations per
 * element: the fused ops' activations and gradients are bit-identical to op_swiglu's.
 */
#ifndef MOE_OPS_INTERNAL_H
#define MOE_OPS_INTERNAL_H

#include <stddef.h>

double softmax_row(const float *x, int E, float *p);
double logsumexp_row(const float *x, int E);

/* y (n) = silu(a) * b, a and b (n). Single-threaded. */
void swiglu_forward(float *y, const float *a, const float *b, size_t n);
/* Inverts y = silu(a) b: da (n) += dy b silu'(a), db (n) += dy silu(a); either may be NULL.
 * Single-threaded. */
void swiglu_backward(float *da, float *db, const float *dy, const float *a, const float *b,
                     size_t n);
/* The forward (y != NULL; da, db, dy unused) or the backward (y == NULL) over n elements,
 * split into contiguous ranges over the cores when n is large (BLAS_SPLIT_MIN). Call it
 * outside blas_parallel_for. */
void swiglu_run(float *y, float *da, float *db, const float *dy, const float *a,
                const float *b, size_t n);

#endif
