/* expert_ffn.h: the experts' SwiGLU feed-forward on a chosen subset of experts, as plain
 * kernels (no tape), for ops outside autograd that schedule the experts themselves (the
 * pipelined exchange, parallel/expert_pipe.h, computes one chunk of experts while another
 * chunk's rows travel).
 *
 * Rows offs[e] .. offs[e+1]-1 of x belong to expert e; per expert e (m rows):
 *   forward:  h1_e = x_e W1_e^T, h3_e = x_e W3_e^T (m, F); y_e = (silu(h1_e) h3_e) W2_e^T
 *             (m, C)
 *   backward: dW2_e += dy_e^T act_e; dact_e = dy_e W2_e; dh1_e, dh3_e through the SwiGLU;
 *             dx_e = dh3_e W3_e + dh1_e W1_e; dW3_e += dh3_e^T x_e; dW1_e += dh1_e^T x_e.
 * These are the float operations, products and order of op_expert_linear (W1, then W3)
 * followed by op_swiglu_expert_linear (autograd/ops.h), forward and backward, with zeroed
 * activation grads: the same shapes through the same gemm calls, so the results are
 * bit-identical to that composition (tested by the pipelined exchange's tests).
 *
 * Threading: the experts of a call are tasks of one pool region (core/pool.h) of E tasks
 * (the tasks past the list do nothing), so each product's threading is the one
 * op_expert_linear gives it, whatever the subset. progress (when set) is called by worker 0,
 * the calling thread, after each of its products: the hook that keeps MPI transfers moving.
 */
#ifndef MOE_EXPERT_FFN_H
#define MOE_EXPERT_FFN_H

#include <stdbool.h>
#include <stdint.h>

typedef struct ExpertFfn {
    const float *x;            /* (M, C) rows grouped by expert (offs) */
    const float *w1, *w3;      /* (E, F, C) */
    const float *w2;           /* (E, C, F) */
    float *h1, *h3;            /* (M, F) forward: written; backward: read */
    float *act;                /* (M, F) scratch */
    float *y;                  /* (M, C) forward output */
    const float *dy;           /* (M, C) backward: grad of y */
    float *dh1, *dh3;          /* (M, F) backward scratch (zeroed here per expert) */
    float *dx;                 /* (M, C) backward: grad of x, written (not added), or NULL */
    float *dw1, *dw3, *dw2;    /* weight grads, added to, or NULL (not required) */
    const int32_t *offs;       /* (E+1) */
    int E, C, F;
    void (*progress)(void *ctx);   /* NULL, or called between products on worker 0 */
    void *progress_ctx;
} ExpertFfn;

/* Experts experts[0 .. n-1] (busiest first is best: the pool claims tasks in order). */
void expert_ffn_forward(const ExpertFfn *k, const int32_t *experts, int n);
void expert_ffn_backward(const ExpertFfn *k, const int32_t *experts, int n);

#endif
