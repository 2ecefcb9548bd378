/* infer.h: incremental inference with a KV cache (sampling), no autograd tape recording.
 *
 * infer_step runs n new tokens at positions pos .. pos+n-1 through the model, appending
 * their rotated keys and values to the cache, and returns their logits. The layer pieces are
 * the same op kernels model_forward uses (rmsnorm, linear, rope with a position offset,
 * moe_forward without noise, swiglu, the shared experts), run on a non-recording tape; only
 * attention is computed here, against the cached keys/values, so a prefill of T tokens
 * followed by single steps gives model_forward's logits up to float summation order (tested
 * in tests/checkpoints/test_infer.c).
 *
 * Sliding window (model s.W > 0; Mistral 7B, Jiang et al. 2023, sec. 2 "rolling buffer
 * cache"): a query at position p sees keys p - W < j <= p only, so the cache is a ring of W
 * positions (position j in slot j mod W) whatever the sequence length, and RoPE positions
 * keep counting past the training length. The new tokens of a step attend to the cached
 * positions and to their own keys straight from the step's (n, Hkv*D) rows; the cache is
 * written after each layer's attention, so a prefill longer than W needs no bigger ring.
 *
 * Documents (m->doc_mask, data.doc_mask): the cache holds one document, the sequence
 * model_forward would see after an end-of-text token: positions count from its first token
 * and nothing before it is attended. So an end-of-text id may only come at position 0; a
 * new document starts with infer_reset (ASSERTed; `moetrain sample` cuts a prompt at its
 * last end-of-text token, and generation stops at one).
 *
 * Non-goals: batching several sequences, expert parallelism, expert-choice routing (an
 * expert picks among all tokens of a batch, future ones included: there is no
 * token-by-token equivalent; the caller must refuse such a model); without a window the
 * cache does not slide (positions are limited to max_T).
 */
#ifndef MOE_INFER_H
#define MOE_INFER_H

#include "layers/model.h"

typedef struct InferCache {
    int L, cap, KD;           /* layers, positions held (W with a window, else max_T), Hkv*D */
    int W;                    /* the model's window (0 = full causal, no wrap-around) */
    int pos;                  /* positions run so far (the next token's RoPE position) */
    float *k, *v;             /* (L, cap, KD) each, owned; keys already rotated; position j
                                 in slot j (W = 0) or j mod W (ring) */
    float *att;               /* (cap) scratch scores, owned */
    Tape tape;                /* non-recording scratch for the layer ops */
} InferCache;

/* A cache for model m: without a window it holds max_T positions (the most infer_step may
 * run); with a window (m->s.W > 0) it is a ring of W positions and max_T is not a limit.
 * Release with infer_free. */
void infer_init(InferCache *c, const Model *m, int max_T);
void infer_free(InferCache *c);
/* Forget every cached position (start a new sequence). */
void infer_reset(InferCache *c);

/* Run ids (n) at positions c->pos .. c->pos+n-1 (ASSERTs they fit in max_T when the model
 * has no window); logits (n, V) are overwritten (logits may be NULL when only the cache is
 * wanted). Router noise off. */
void infer_step(InferCache *c, Model *m, const int32_t *ids, int n, float *logits);

#endif
