/* gemm.h: every matrix product of the model goes through here.
 *
 *   C (M, N) = alpha * op(A) op(B) + beta * C,   op(X) = X or X^T
 *
 * Row-major: A is (M, K) with row stride lda (ta false) or stored (K, M) (ta true); B is
 * (K, N) with stride ldb (tb false) or stored (N, K) (tb true); C (M, N) with stride ldc.
 * fp32 inputs, fp32 accumulation and output. Today one backend, OpenBLAS's cblas_sgemm,
 * with its thread count (autograd/blas.h); inside a pool region (core/pool.h) that count
 * is 1, so a product made by a task runs on the task's thread.
 * The results of one call depend only on its arguments and the thread count, not on the
 * call's history: the same product repeated gives the same bits.
 */
#ifndef MOE_GEMM_H
#define MOE_GEMM_H

#include <stdbool.h>

void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
          const float *B, int ldb, float beta, float *C, int ldc);

#endif
