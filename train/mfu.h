/* mfu.h: the machine's sgemm rate on a model's own training-shaped products, the
 * denominator of model FLOPs utilisation (MFU).
 *
 * The products are every GEMM one training step performs: forward y = x W^T and backward
 * dx = dy W, dW = dy^T x for q/k/v/o, the two routers, the experts at their mean load
 * N*K/E rows (or the dense FFN), and the LM head; timed back to back with the current
 * thread count. MFU = model_flops_per_token x tokens/s / rate.
 */
#ifndef MOE_MFU_H
#define MOE_MFU_H

#include "layers/model.h"

/* The products of one training step for N tokens and their operand buffers (owned). */
typedef struct MfuGemm { int m, n, k; bool ta, tb; int reps; } MfuGemm;
typedef struct MfuSet {
    MfuGemm g[32];
    int ng;
    float *a, *b, *c;   /* owned: big enough for the largest operand */
    double flops;       /* of one pass */
} MfuSet;

/* Lists the products and allocates their buffers (call outside the step). */
void mfu_set_init(MfuSet *m, const ModelShape *s, int N);
void mfu_set_free(MfuSet *m);
/* One timed pass over every product, seconds. */
double mfu_set_pass(MfuSet *m);

/* GFLOP/s of gemm (autograd/gemm.h) over the training-shaped products for N tokens, best of reps
 * timed passes after one warm-up pass. Allocates its own buffers (call outside the step). */
double mfu_sgemm_rate(const ModelShape *s, int N, int reps);

/* GFLOP/s of gemm on one large square product C (n, n) = A B (fp32 arrays, the current
 * backend and precision, pool_threads() threads): best of reps timed calls after one
 * warm-up. Allocates its own buffers. The peak a path reaches on this machine, the
 * denominator of MFU against the hardware rather than against the model's shapes. */
double mfu_square_rate(int n, int reps);

#endif
