/* gemm_internal.h: what gemm.c shares with its backends (gemm_onednn.c). Not for callers. */
#ifndef MOE_GEMM_INTERNAL_H
#define MOE_GEMM_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Per-worker scratch (core/pool.h pool_worker_index): slot `which` (0 .. GEMM_SCRATCH_SLOTS-1)
 * of the calling worker, grown to at least `bytes` (never shrunk; growth allocates, so a
 * step allocates only when a product is larger than every one before it), 64-byte aligned. */
#define GEMM_SCRATCH_SLOTS 6   /* 0, 1: operands; 2: oneDNN scratchpad; 3-5: local stand-ins */
void *gemm_scratch(int which, size_t bytes);

/* In bf16 precision: the registered bf16 copy of the stored block X (rows, cols) with row
 * stride ld, at X's offsets (same ld), or NULL when no registration holds all of it. */
const uint16_t *gemm_bf16_lookup(const float *x, int rows, int cols, int ld);

/* The thread count a product made now runs on: 1 inside a split region's task, else
 * pool_threads(). */
int gemm_threads_now(void);

/* oneDNN backend (gemm_onednn.c; in a build without oneDNN, onednn_start reports it is
 * not built in and the others are never reached). */
bool onednn_start(const char **isa, bool *native_bf16);
void onednn_gemm(bool bf16, bool ta, bool tb, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb, float beta, float *C,
                 int ldc);
/* "oneDNN X.Y.Z (runtime R)" (false without oneDNN). */
bool onednn_version(char *buf, size_t cap);
/* The distinct implementation names of the primitives made so far, ", "-separated. */
void onednn_kernels(char *buf, size_t cap);

#endif
