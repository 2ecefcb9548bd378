/* gemm.h: every matrix product of the model goes through here.
 *
 *   C (M, N) = alpha * op(A) op(B) + beta * C,   op(X) = X or X^T
 *
 * Row-major: A is (M, K) with row stride lda (ta false) or stored (K, M) (ta true); B is
 * (K, N) with stride ldb (tb false) or stored (N, K) (tb true); C (M, N) with stride ldc.
 * Inputs and outputs are fp32 arrays; C is fp32 and accumulated in fp32.
 *
 * Backends and precisions are chosen once per process (gemm_select; config keys
 * compute.gemm and compute.precision):
 * - GEMM_OPENBLAS: cblas_sgemm, the reference and the fallback.
 * - GEMM_ONEDNN:   oneDNN's matmul (Intel's open library; its JIT kernels pick the ISA at run
 *                  time: AVX-512, AVX512-BF16, AMX), see gemm_onednn.c.
 * - GEMM_FP32: fp32 inputs. GEMM_BF16: A and B are rounded to bfloat16 (autograd/bf16.h)
 *   before the product; products of bf16 values are exact in fp32 and sums are fp32, so
 *   the result is the fp32 product of the rounded inputs up to the order of the additions.
 *   OpenBLAS has no bf16 product: with it, bf16 is emulated (inputs rounded, fp32 sgemm),
 *   numerically bf16 but no faster than fp32, and said so in the log (gemm_describe).
 *
 * Threading: outside a pool region a product uses pool_threads() threads (OpenBLAS's
 * pthreads, or oneDNN's OpenMP team); inside a task of a split region (core/pool.h) it runs
 * on the task's thread alone: one threading layer per region.
 * The results of one call depend only on its arguments, the backend, the precision, the
 * thread count and the CPU's kernels, not on the call's history: the same product repeated
 * gives the same bits.
 */
#ifndef MOE_GEMM_H
#define MOE_GEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef enum { GEMM_AUTO, GEMM_OPENBLAS, GEMM_ONEDNN, GEMM_N_BACKENDS } GemmBackend;
typedef enum { GEMM_FP32, GEMM_BF16, GEMM_N_PRECISIONS } GemmPrecision;

void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
          const float *B, int ldb, float beta, float *C, int ldc);

/* Choose the backend and precision of every later gemm call (process-wide; call between
 * products, not while a region runs). GEMM_AUTO: oneDNN when it is built in and its engine
 * starts, else OpenBLAS (the fast path measured in docs/performance.md; decided without
 * timing, so two runs of a config use the same kernels). Fails (-1, err with hint, the
 * previous choice kept) when oneDNN is asked for but not built in or cannot start, or when
 * bf16 is asked for with GEMM_AUTO or GEMM_ONEDNN on a CPU without native bf16 products
 * (AVX512-BF16 or AMX): there oneDNN would emulate them, slower than fp32; OpenBLAS bf16
 * (emulated, logged) stays available for numerics. */
int gemm_select(GemmBackend backend, GemmPrecision precision, MoeErr *err);
GemmBackend gemm_backend(void);
GemmPrecision gemm_precision(void);
const char *gemm_backend_name(GemmBackend b);      /* "auto", "openblas", "onednn" */
const char *gemm_precision_name(GemmPrecision p);  /* "fp32", "bf16" */

/* bf16 stand-ins. In bf16 precision a product rounds its fp32 operands into scratch at
 * every call; an array many products read (the weights, attention's Q, K and V) can be
 * rounded once instead. While [f32, f32 + n) is registered with its bf16 copy (bf16[i] ==
 * bf16_from_f32(f32[i]) for every i, the caller's promise, kept until unregistered), a
 * product whose stored operand block lies inside it reads the copy at the same offsets:
 * the results are bit-identical with and without (tested). Register and unregister
 * outside split regions; GEMM_STANDINS registrations at once. No effect in fp32. */
#define GEMM_STANDINS 8
void gemm_bf16_register(const float *f32, size_t n, const uint16_t *bf16);
void gemm_bf16_unregister(const float *f32);
/* The same with a copy the gemm layer makes and owns (bf16 precision only; a no-op in
 * fp32): rounds x (n contiguous floats) once, in parallel, and registers it. The copies'
 * buffers are kept for reuse (allocation only when a larger array comes). Drop them with
 * gemm_standins_clear() before x changes. */
void gemm_standin(const float *x, size_t n);
void gemm_standins_clear(void);

/* The same inside a task of a split region, for the calling worker's products only: x
 * (n contiguous floats) rounded once into a per-worker buffer (GEMM_LOCAL_STANDINS at
 * once), read by this worker's products until gemm_local_clear(), which the task calls
 * before it returns. For an operand a task multiplies twice (an expert's gathered rows by
 * W1 and by W3). No effect in fp32. */
#define GEMM_LOCAL_STANDINS 3
void gemm_local_standin(const float *x, size_t n);
void gemm_local_clear(void);

/* Products made between gemm_fp32_begin() and gemm_fp32_end() take fp32 inputs whatever the
 * precision (the router's logits: op_linear_fp32). Pairs nest; call them outside split
 * regions. */
void gemm_fp32_begin(void);
void gemm_fp32_end(void);

/* One line naming what the products run on: backend, precision, ISA, and the kernels used
 * so far (oneDNN implementation names, e.g. "brg:avx512_core_amx_bf16"), or OpenBLAS's
 * core name; "(emulated)" for bf16 through OpenBLAS. */
void gemm_describe(char *buf, size_t cap);

/* True when oneDNN is built in and starts (engine created) on this machine; *isa then
 * names the instruction set its kernels use ("avx512_core_amx", ...). */
bool gemm_onednn_available(const char **isa);
/* "oneDNN 2.6.3 (runtime OMP, ISA ...)", or why it is not available (moetrain --version). */
void gemm_onednn_version(char *buf, size_t cap);
/* True when the CPU multiplies bf16 natively (AVX512-BF16 or AMX, as oneDNN reports). */
bool gemm_native_bf16(void);

#endif
