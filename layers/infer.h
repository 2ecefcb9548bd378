/* infer.h: incremental inference with a KV cache (sampling), no autograd tape recording.
 *
 * infer_step runs n new tokens at positions pos .. pos+n-1 through the model, appending
 * their rotated keys and values to the cache, and returns their logits. The layer pieces are
 * the same op kernels model_forward uses (rmsnorm, linear, rope with a position offset,
 * moe_forward without noise, swiglu), run on a non-recording tape; only attention is
 * computed here, against the cached keys/values, so a prefill of T tokens followed by single
 * steps gives model_forward's logits up to float summation order (tested in
 * tests/checkpoints/test_export.c).
 *
 * Non-goals: batching several sequences, sliding the cache past max_T, expert parallelism,
 * expert-choice routing (an expert picks among all tokens of a batch, future ones included:
 * there is no token-by-token equivalent; the caller must refuse such a model).
 */
#ifndef MOE_INFER_H
#define MOE_INFER_H

#include "layers/model.h"

typedef struct InferCache {
    int L, max_T, KD;         /* layers, capacity in positions, Hkv*D */
    int pos;                  /* positions filled */
    float *k, *v;             /* (L, max_T, KD) each, owned; keys already rotated */
    float *att;               /* (max_T) scratch scores, owned */
    Tape tape;                /* non-recording scratch for the layer ops */
} InferCache;

/* A cache for model m holding up to max_T positions. Release with infer_free. */
void infer_init(InferCache *c, const Model *m, int max_T);
void infer_free(InferCache *c);
/* Forget every cached position (start a new sequence). */
void infer_reset(InferCache *c);

/* Run ids (n) at positions c->pos .. c->pos+n-1 (ASSERTs they fit in max_T); logits (n, V)
 * are overwritten (logits may be NULL when only the cache is wanted). Router noise off. */
void infer_step(InferCache *c, Model *m, const int32_t *ids, int n, float *logits);

#endif
