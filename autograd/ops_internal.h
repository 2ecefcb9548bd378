/* ops_internal.h: kernels and helpers shared by the op files of autograd/ (not part of the
 * op API, autograd/ops.h; nothing outside autograd/ includes it).
 *
 * A kernel is shared when two ops must do the same float operations per element, so that
 * a fused op is bit-identical to its composition: op_add's add (op_linear_residual,
 * op_combine_residual), op_swiglu's SwiGLU (op_swiglu_linear, op_swiglu_expert_linear),
 * op_linear's product (the LM head of op_linear_cross_entropy), the row gather and its
 * scatter-add (op_embedding, op_gather_rows, op_combine) and the row softmax (the router
 * gates and losses).
 */
#ifndef MOE_OPS_INTERNAL_H
#define MOE_OPS_INTERNAL_H

#include <stddef.h>

#include "autograd/tensor.h"
#include "core/pool.h"

/* ---------------- tape helpers (every op file) ---------------- */

/* Grad buffer of an input that should receive a gradient, else NULL. A FROZEN weight or a
 * CONST input is skipped even if someone attached a buffer to it. */
static inline float *grad_of(const Tensor *x) {
    return (x && x->requires_grad) ? x->grad : NULL;
}

/* A tape output with the same shape as x. */
static inline Tensor *tape_like(Tape *t, const Tensor *x, bool needs) {
    return tape_tensor(t, x->ndim, x->shape, needs);
}

/* A tape output of one element (1). */
static inline Tensor *tape_scalar(Tape *t, bool needs) {
    int one = 1;
    return tape_tensor(t, 1, &one, needs);
}

/* ---------------- documents (attention.c, ops_rope.c) ---------------- */

/* ASSERTs that start (B, T) is a layout of documents (ops.h, op_attention_docs): in each
 * row start[0] = 0 and every start[t] is t (a document begins) or start[t-1] (the same
 * one continues). O(B T), once per op call. */
static inline void op_doc_starts_check(const int32_t *start, int B, int T) {
    for (int b = 0; b < B; b++) {
        const int32_t *s = start + (size_t)b * T;
        ASSERT(s[0] == 0, "document starts: row %d begins at %d, not 0", b, (int)s[0]);
        for (int t = 1; t < T; t++)
            ASSERT(s[t] == t || s[t] == s[t - 1], "document starts: row %d position %d has "
                   "start %d (neither %d nor the previous %d)", b, t, (int)s[t], t,
                   (int)s[t - 1]);
    }
}

/* ---------------- ops_linear.c ---------------- */

/* y (N, out) = x (N, in) @ w^T, w (out, in): op_linear's forward, one gemm
 * (overwrites y). */
void linear_forward(float *y, const float *x, const float *w, int N, int in, int out);

/* ---------------- ops_elementwise.c ---------------- */

/* op_add's kernels, split into ranges over the cores (pool_parallel_range). add_run:
 * y (n) = a + b. add_grad_run: da (n) += dy, db (n) += dy (either NULL; da == db adds
 * twice). Call them outside pool_parallel_for. */
void add_run(float *y, const float *a, const float *b, size_t n);
void add_grad_run(float *da, float *db, const float *dy, size_t n);

/* y (n) = silu(a) * b, a and b (n). Single-threaded. */
void swiglu_forward(float *y, const float *a, const float *b, size_t n);
/* Inverts y = silu(a) b: da (n) += dy b silu'(a), db (n) += dy silu(a); either may be NULL.
 * Single-threaded. */
void swiglu_backward(float *da, float *db, const float *dy, const float *a, const float *b,
                     size_t n);
/* The forward (y != NULL; da, db, dy unused) or the backward (y == NULL) over n elements,
 * split into contiguous ranges over the cores when n >= POOL_SPLIT_MIN. Call it outside
 * pool_parallel_for. */
void swiglu_run(float *y, float *da, float *db, const float *dy, const float *a,
                const float *b, size_t n);

/* ---------------- ops_rows.c ---------------- */

/* rows_gather: y (M, C) = x[src[m]] for m < M, rows of x (., C); src in range (the caller
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

/* ---------------- ops_expert.c: shared by ops_expert_lora.c ---------------- */

/* Asserts offs (E+1) covers [0, M) in order (offs[0] = 0, monotone, offs[E] = M). */
void expert_offs_check(const int32_t *offs, int E, size_t M);
/* The experts by row count, busiest first, ties by index: order (E) from t's arena (the
 * order the tasks are claimed in, forward and backward). */
int32_t *expert_order(Tape *t, const int32_t *offs, int E);

/* ---------------- ops_router_loss.c ---------------- */

/* p (E) = softmax(x (E)), stable (the row max is subtracted, the sum is in double);
 * returns logsumexp(x). The load-balancing loss and the top-p / expert-choice gates. */
double softmax_row(const float *x, int E, float *p);
/* logsumexp(x (E)) in double, stable (the row max is subtracted). The z-loss and the
 * router entropy penalty. */
double logsumexp_row(const float *x, int E);

#endif
