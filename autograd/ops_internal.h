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

#include "autograd/tensor.h"
#include "core/pool.h"

double softmax_row(const float *x, int E, float *p);
double logsumexp_row(const float *x, int E);

/* op_add's elementwise kernels over the cores (defined in ops.c; shared with the ops that
 * add into the residual stream, op_linear_residual and op_combine_residual, so their sums
 * and gradients are op_add's bit for bit). add_run: y (n) = a + b. add_grad_run: da += dy,
 * db += dy (either NULL; da == db adds twice). Call them outside pool_parallel_for. */
void add_run(float *y, const float *a, const float *b, size_t n);
void add_grad_run(float *da, float *db, const float *dy, size_t n);

/* y (n) = silu(a) * b, a and b (n). Single-threaded. */
void swiglu_forward(float *y, const float *a, const float *b, size_t n);
/* Inverts y = silu(a) b: da (n) += dy b silu'(a), db (n) += dy silu(a); either may be NULL.
 * Single-threaded. */
void swiglu_backward(float *da, float *db, const float *dy, const float *a, const float *b,
                     size_t n);
/* The forward (y != NULL; da, db, dy unused) or the backward (y == NULL) over n elements,
 * split into contiguous ranges over the cores when n is large (POOL_SPLIT_MIN). Call it
 * outside pool_parallel_for. */
void swiglu_run(float *y, float *da, float *db, const float *dy, const float *a,
                const float *b, size_t n);

/* Row gather and its scatter-add over the cores (defined in ops.c; op_embedding,
 * op_gather_rows, op_combine).
 * rows_gather: y (M, C) = x[src[m]] for m < M, rows of x (., C); src in range (the caller
 * checks). Copies split over the cores (pool_parallel_range).
 * RowRuns: the M sources of a scatter-add into rows dst[m] grouped by destination, built
 * once in the forward (arena): order (P) = the P sources with dst[m] >= 0 sorted by
 * (dst[m], m) (dst[m] < 0: no destination, left out), run (n_runs + 1) = where each
 * destination's sources start in order (distinct destinations ascending).
 * row_runs_scatter_add: dx[dst[m]] += w[m] * dy[m / per_row] (rows of C; w NULL: no factor,
 * dx[dst[m]] += dy[m / per_row]) split over the runs: each destination row gets its
 * additions in increasing m, the order of the serial loop over m, from one thread, so the
 * result is bit-identical to that loop at any thread count. */
typedef struct RowRuns {
    int32_t *order;   /* (M) */
    int32_t *run;     /* (n_runs + 1) */
    int n_runs;
} RowRuns;

void rows_gather(float *y, const float *x, const int32_t *src, int M, int C);
/* dst (M) in [0, n_dst) or < 0. Carves order, run and an (n_dst + 1) scratch from a. */
RowRuns row_runs_build(Arena *a, const int32_t *dst, int M, int n_dst);
void row_runs_scatter_add(const RowRuns *r, const int32_t *dst, float *dx, const float *dy,
                          const float *w, int per_row, int C);

#endif
