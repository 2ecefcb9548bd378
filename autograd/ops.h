/* ops.h: the differentiable ops. Each op_* computes its forward now (output carved from the
 * tape's arena) and, when the tape records and an input requires grad, pushes a TapeOp whose
 * backward ACCUMULATES into the inputs' grads. Inputs that do not require grad (FROZEN
 * weights, CONST tensors) get no gradient and their gradient work is skipped (a frozen
 * weight costs no weight-gradient GEMM).
 *
 * Every op's test (tests/autograd/) holds a plain-C naive reference of its forward and
 * checks the backward against finite differences. Every matrix product goes through
 * gemm (autograd/gemm.h).
 *
 * Files, one concept each (the sections below follow them):
 *   ops_linear.c       products: linear, linear + residual, SwiGLU + down projection
 *   ops_elementwise.c  add, mul, scale, silu, swiglu, softplus
 *   ops_rmsnorm.c      RMSNorm          ops_rope.c   rotary position embedding
 *   ops_rows.c         row gathers: embedding, gather_rows (and their scatter-add)
 *   ops_loss.c         softmax, cross-entropy, the fused LM head + loss
 *   ops_reduce.c       sum, mean
 *   attention.c        fused causal grouped-query attention, optional sliding window
 *                      and packed documents
 *   ops_moe.c          top-k gate (optional selection bias), combine
 *   ops_expert.c       grouped expert GEMMs, alone or fused with the SwiGLU or the gather
 *   ops_expert_lora.c  grouped expert GEMMs with LoRA adapters (per expert or shared)
 *   ops_route.c        top-p and expert-choice gates
 *   ops_router_loss.c  load-balancing loss, z-loss, router entropy
 * Kernels two files share (so that a fused op equals its composition bit for bit) are
 * declared in ops_internal.h.
 *
 * Shapes use the letters of core/common.h. "(N, C)" means a tensor whose rows() == N and
 * cols() == C; the ops check shapes with ASSERT (programmer errors).
 */
#ifndef MOE_OPS_H
#define MOE_OPS_H

#include "autograd/tensor.h"
#include "core/pool.h"

/* ---------------- ops_linear.c: matrix products ---------------- */

/* y (N, out) = x (N, in) @ W^T, W (out, in) in the [out, in] layout of Hugging Face weights.
 * backward: dx += dy @ W; dW += dy^T @ x (skipped when W does not require grad). */
Tensor *op_linear(Tape *t, Tensor *x, Tensor *w);
/* op_linear with fp32 products whatever compute.precision (gemm_fp32_begin): the router's
 * logits, whose top-k choice a bf16 rounding would flip (Fedus et al. 2021, Switch
 * Transformers, sec. 2.4 "selective precision": the router in float32). */
Tensor *op_linear_fp32(Tape *t, Tensor *x, Tensor *w);

/* y (N, out) = r + x @ W^T (a projection added to the residual stream r): op_add(r,
 * op_linear(x, W)) bit for bit, without keeping the product (backward never reads it).
 * backward: dr += dy; dx += dy @ W; dW += dy^T @ x (skipped when W does not require grad). */
Tensor *op_linear_residual(Tape *t, Tensor *r, Tensor *x, Tensor *w);

/* SwiGLU then the down projection, without keeping the activation:
 * y (N, out) = act @ W^T, act (N, F) = silu(a) * b, a, b (N, F), W (out, F).
 * act lives in the tape's scratch (tape_scratch) during the forward call only; backward
 * recomputes it from a and b (the op_swiglu kernel, so bit-identical), adds dW += dy^T act
 * (skipped when W does not require grad; then act is not recomputed), forms
 * dact = dy @ W in the scratch and adds op_swiglu's backward into da, db. Values and
 * gradients equal op_linear(op_swiglu(a, b), W) bit for bit; the tape keeps a, b and y
 * only (saves N*F floats of kept activation and the (N, F) activation grad). */
Tensor *op_swiglu_linear(Tape *t, Tensor *a, Tensor *b, Tensor *w);
/* ---------------- ops_elementwise.c ---------------- */

/* y = a + b, same shape (residual connections, loss sums of scalars). */
Tensor *op_add(Tape *t, Tensor *a, Tensor *b);
/* y = a * b elementwise, same shape. */
Tensor *op_mul(Tape *t, Tensor *a, Tensor *b);
/* y = s * x, s a constant. */
Tensor *op_scale(Tape *t, Tensor *x, float s);
/* y = silu(x) = x * sigmoid(x). */
Tensor *op_silu(Tape *t, Tensor *x);
/* y = silu(a) * b, fused SwiGLU gate; a, b same shape (M, F). */
Tensor *op_swiglu(Tape *t, Tensor *a, Tensor *b);
/* y = softplus(x) = log(1 + exp(x)), computed without overflow. */
Tensor *op_softplus(Tape *t, Tensor *x);

/* ---------------- ops_rmsnorm.c, ops_rope.c: normalisation and position ---------------- */

/* y (N, C) = x / sqrt(mean(x^2) + eps) * g, g (C). Saves rstd (N). */
Tensor *op_rmsnorm(Tape *t, Tensor *x, Tensor *g, float eps);

/* Rotary position embedding, rotate-half layout (dimension i pairs with i + D/2, as in
 * Hugging Face Llama/Mixtral): x (B*T, nh*D) viewed as (B, T, nh, D); token (b, t) has
 * position pos0 + t. theta_i = pos * base^(-2i/D), i < D/2:
 *   y[i] = x[i] cos - x[i+D/2] sin,  y[i+D/2] = x[i+D/2] cos + x[i] sin.
 * backward applies the inverse rotation. */
Tensor *op_rope(Tape *t, Tensor *x, int B, int T, int nh, int D, float base, int pos0);
/* The same rotation written over x's data (the output is a new tensor, with its own grad,
 * that shares x's memory): saves a copy of the projections. Only valid when no backward
 * reads x's values, i.e. x is consumed by this op alone and its producer's backward does not
 * read its output (true of op_linear). Bit-identical results to op_rope. */
Tensor *op_rope_inplace(Tape *t, Tensor *x, int B, int T, int nh, int D, float base, int pos0);
/* The same rotation with positions restarting at each document of a packed sequence:
 * token (b, t) has position t - start[b*T + t], start (B, T) a layout of documents as in
 * op_attention_docs (borrowed, read again in backward). in_place as op_rope_inplace.
 * start NULL is op_rope / op_rope_inplace with pos0 = 0, bit for bit; so is a token whose
 * document starts at 0 (the same cos/sin table row). */
Tensor *op_rope_docs(Tape *t, Tensor *x, int B, int T, int nh, int D, float base,
                     const int32_t *start, bool in_place);

/* ---------------- ops_rows.c: row gathers ---------------- */

/* y (N, C) = W[ids[n]], W (V, C), ids (N) in [0, V). ids is borrowed and must stay valid
 * until backward (it is read there). backward: dW[ids[n]] += dy[n]. */
Tensor *op_embedding(Tape *t, Tensor *w, const int32_t *ids, int N);

/* y (M, C) = x[rows[m]], rows (M) in [0, N) (borrowed, valid until backward).
 * backward: dx[rows[m]] += dy[m] (scatter-add). */
Tensor *op_gather_rows(Tape *t, Tensor *x, const int32_t *rows, int M);

/* ---------------- ops_loss.c: softmax and the language-model loss ---------------- */

/* Row-wise softmax over the last dimension: x (N, M) -> y (N, M). */
Tensor *op_softmax(Tape *t, Tensor *x);

/* The language-model loss over targets (N): an id in [0, V), or LOSS_IGNORE (core/common.h),
 * which contributes nothing to the loss or to any gradient (its logits row gets exactly
 * zero gradient, whatever its values) and is not counted. The result is
 *   scale / d * sum over the non-ignored n of -log softmax(logits[n])[targets[n]]
 * with d = denom when denom > 0, else this call's count of non-ignored targets: a caller
 * that splits one batch over ranks and accumulated micro-batches passes the same denom
 * (the global count, divided by the number of calls, see train/train.c) to every call, so
 * the mean is over the whole batch's targets. With d = 0 (no target at all) the loss is 0
 * and no gradient flows. ASSERTs LOSS_IGNORE <= targets[n] < V. */

/* That loss of logits (N, V) -> scalar (1). Fused, numerically stable (log-sum-exp with
 * the row max); saves lse (N). */
Tensor *op_cross_entropy(Tape *t, Tensor *logits, const int32_t *targets, float scale,
                         double denom);

/* Fused LM head + that loss: logits (N, V) = x (N, C) W^T with W (V, C). When recording,
 * the logits buffer is overwritten in place by the loss gradient (no separate (N, V) grad
 * buffer, one exp per element) and *logits (if given) is set to NULL; otherwise *logits
 * gets the (N, V) logits. Equal to op_cross_entropy(op_linear(x, W)). */
Tensor *op_linear_cross_entropy(Tape *t, Tensor *x, Tensor *w, const int32_t *targets,
                                float scale, double denom, Tensor **logits);

/* The same loss with the rows processed `chunk` at a time through a (chunk, V) buffer, so no
 * (N, V) logits exist (for training with a large vocabulary). When recording, each chunk's
 * loss gradient is multiplied out at once into dX (N, C) and dW (V, C) (summed over chunks),
 * both saved for backward, which adds g dX and g dW: memory (chunk V + N C + V C) floats
 * instead of N V. The logits are never returned. Same loss and gradients as
 * op_linear_cross_entropy up to float32 summation order (dW is a sum over chunks). */
Tensor *op_linear_cross_entropy_chunked(Tape *t, Tensor *x, Tensor *w, const int32_t *targets,
                                        float scale, double denom, int chunk);

/* ---------------- ops_reduce.c ---------------- */

/* Sum / mean of all elements -> scalar (1). */
Tensor *op_sum(Tape *t, Tensor *x);
Tensor *op_mean(Tape *t, Tensor *x);

/* ---------------- attention.c ---------------- */

/* Causal grouped-query self-attention, fused (scores never leave the kernel):
 * q (B*T, H*D), k (B*T, Hkv*D), v (B*T, Hkv*D) viewed as (B, T, heads, D); query head h
 * uses kv head h / (H/Hkv). out (B*T, H*D) = softmax(q k^T / sqrt(D) + mask) v, where
 * query i sees keys j <= i, and with a sliding window W > 0 only i - W < j <= i (W keys
 * counting itself; Mistral 7B / Hugging Face convention); W = 0 is full causal attention.
 * Saves lse (B, H, T); backward recomputes the probabilities from q, k and lse. */
Tensor *op_attention(Tape *t, Tensor *q, Tensor *k, Tensor *v, int B, int T, int H, int Hkv,
                     int D, int W);
/* The same with documents packed in each sequence (block-diagonal causal mask): query i of
 * row b sees only keys j with start[b*T + i] <= j (and the causal and window bounds), where
 * start (B, T) gives each position's document's first position: start[b*T] = 0 and each
 * start[b*T + t] is t (a document begins at t) or start[b*T + t - 1] (ASSERTed). Borrowed,
 * read again in backward. The work of masked key blocks is skipped (query rows go in
 * tiles that stop at each document's start). start NULL, or one document per row (all 0),
 * is op_attention bit for bit. */
Tensor *op_attention_docs(Tape *t, Tensor *q, Tensor *k, Tensor *v, int B, int T, int H,
                          int Hkv, int D, int W, const int32_t *start);
/* Floats of one of op_attention's per-worker score buffers for sequences of T tokens (it
 * carves one in forward and, when recording, a second for backward): pool_workers() blocks
 * of min(T, 64) query rows x T keys. For memory plans (train/memplan.h). */
size_t op_attention_score_floats(int T);

/* ---------------- ops_moe.c: top-k gate and combine ---------------- */

/* Top-k gating: h (N, E) router scores -> gates (N, K) = softmax over the K largest scores
 * of each row (equal to softmax -> top-k -> renormalise). The chosen experts are written to
 * idx (N, K) (caller-owned, descending score order, ties broken by lower expert index).
 * backward: dh[n, idx[n,k]] += softmax Jacobian applied to dgates. */
Tensor *op_topk_gate(Tape *t, Tensor *h, int K, int32_t *idx);
/* The same with a selection-only bias (E) (auxiliary-loss-free balancing, Wang et al. 2024;
 * DeepSeek-V3 sec. 2.1.2): experts are ranked by h[n] + bias (same tie rule), the gates stay
 * the softmax over the chosen experts' UNBIASED scores h[n, idx[n,k]]. bias is a constant
 * read only during this call (no gradient); the backward is op_topk_gate's. bias NULL is
 * op_topk_gate. */
Tensor *op_topk_gate_bias(Tape *t, Tensor *h, const float *bias, int K, int32_t *idx);

/* Combine expert outputs: y (N, C) = sum_k gates[n,k] * ys[slot[n,k]] over k with
 * slot[n,k] >= 0 (slot < 0: the slot was dropped by the capacity limit and contributes 0).
 * ys (M, C), gates (N, K), slot (N, K) borrowed until backward.
 * backward: dys[slot] += gate * dy[n]; dgates[n,k] += <dy[n], ys[slot]>. */
Tensor *op_combine(Tape *t, Tensor *ys, Tensor *gates, const int32_t *slot, int K);
/* y (N, C) = r + combine(ys, gates, slot): the combine added to the residual stream r
 * (N, C), op_add(r, op_combine(...)) bit for bit without keeping the combine's output
 * (the add never needed it). r NULL is op_combine. backward: dr += dy, then op_combine's. */
Tensor *op_combine_residual(Tape *t, Tensor *r, Tensor *ys, Tensor *gates,
                            const int32_t *slot, int K);

/* ---------------- ops_expert.c: grouped expert GEMMs ---------------- */

/* Grouped expert GEMM: rows offs[e] .. offs[e+1]-1 of x (M, in) belong to expert e, and
 * y[rows] = x[rows] @ W[e]^T with W (E, out, in). One sgemm per non-empty expert.
 * offs (E+1) borrowed until backward; offs[0] = 0, offs[E] = M. */
Tensor *op_expert_linear(Tape *t, Tensor *x, Tensor *w, const int32_t *offs, int E);

/* The experts' SwiGLU and down projection without keeping the activation (op_swiglu_linear
 * per expert): a, b (M, F) the gate and up projections (rows grouped by offs as above),
 * W (E, C, F); y[rows of e] (M, C) = act[rows] @ W[e]^T with act = silu(a) * b in the
 * tape's scratch during the call only. One task per non-empty expert (busiest first, as
 * op_expert_linear), each doing its rows' SwiGLU and its sgemm. backward, per expert:
 * act recomputed (op_swiglu's kernel), dW[e] += dy^T act (skipped when W does not require
 * grad), dact = dy W[e] over act, then op_swiglu's backward into da, db. Values and
 * gradients equal op_expert_linear(op_swiglu(a, b), W, offs, E) bit for bit; the tape keeps
 * a, b and y only. offs (E+1) borrowed until backward. */
Tensor *op_swiglu_expert_linear(Tape *t, Tensor *a, Tensor *b, Tensor *w, const int32_t *offs,
                                int E);

/* The gather and the experts' two up projections without keeping the gathered rows:
 * xg (M, C) = x[rows] with x (N, C), rows (M) in [0, N) grouped by expert as offs says
 * (op_gather_rows), h1 (M, F) = xg[rows of e] @ W1[e]^T (returned) and *h3 (M, F) the same
 * with W3; W1, W3 (E, F, C). xg lives in the tape's scratch during the call only. backward
 * re-gathers it, adds dW3 += dh3^T xg, dW1 += dh1^T xg (each skipped when frozen), forms
 * dxg = dh3 W3 + dh1 W1 in the scratch and scatter-adds it into dx. Values and gradients
 * equal op_gather_rows then op_expert_linear with W1, then with W3, bit for bit; the tape
 * keeps h1 and h3 only (saves M*C floats; the (M, C) grad of xg is scratch too, which
 * helps only if it was live at the grad plan's peak). h1 and h3 require grad iff
 * any of x, W1, W3 does. *h3 is carried by a no-backward op recorded just before this one
 * (see tape_backward's contract). rows (M) and offs (E+1) borrowed until backward. */
Tensor *op_gather_expert_up(Tape *t, Tensor *x, const int32_t *rows, Tensor *w1, Tensor *w3,
                            const int32_t *offs, int E, Tensor **h3);

/* ---------------- ops_expert_lora.c: grouped expert GEMMs with adapters ---------------- */

/* LoRA (Hu et al. 2021, layers/lora.h) on a grouped expert product: rows offs[e] ..
 * offs[e+1]-1 of x (M, in) belong to expert e and
 *   y[rows] (M, out) = x[rows] W[e]^T + scale * (x[rows] A_e^T) B_e^T,   W (E, out, in)
 * with per-expert adapters A (E, r, in), B (E, out, r) (A_e = A[e]), or shared ones
 * A (r, in), B (out, r) (2-D: A_e = A for every e). The adapter is added into the base
 * product's output (B = 0 adds exactly zero). Kept: u = x A_e^T (M, r) and a du scratch
 * (M, r). backward (accumulates; each only for an input that requires grad):
 *   du = scale dy B_e;  dx += dy W[e] + du A_e;  dW[e] += dy^T x;  dB_e += scale dy^T u;
 *   dA_e += du^T x.
 * Per expert, one task per non-empty expert (op_expert_linear's order and threading; an
 * empty expert's dA_e, dB_e stay as they were); shared adapters: the base per expert, the
 * adapter as four products over all M rows (dA, dB sum over the experts). offs (E+1)
 * borrowed until backward; offs[0] = 0, offs[E] = M. No dropout (layers/lora.h). */
Tensor *op_expert_lora_linear(Tape *t, Tensor *x, Tensor *w, Tensor *a, Tensor *b,
                              const int32_t *offs, int E, float scale);

/* ---------------- ops_route.c: the top-p and expert-choice gates ---------------- */

/* Top-p (dynamic) gating (Huang et al. 2024, arXiv:2403.07652, sec. 3): p = softmax(h[n])
 * over the E experts; experts are taken in descending order (ties -> lower index) until
 * their summed p reaches top_p, at least 1 and at most kmax. h (N, E) -> gates (N, kmax):
 * the chosen experts' p, NOT renormalised, then 0; idx (N, kmax) caller-owned (valid until
 * backward): the chosen experts, then -1. top_p in (0, 1], 1 <= kmax <= E.
 * backward: dh[n, j] += [j picked] g dg - p_nj sum_k g_nk dg_nk (softmax Jacobian). */
Tensor *op_topp_gate(Tape *t, Tensor *h, float top_p, int kmax, int32_t *idx);

/* Expert-choice gating (Zhou et al. 2022, arXiv:2202.09368, sec. 3.1): S = softmax(h) (N, E)
 * over experts; each expert e takes the cap tokens with the largest S[., e] (ties -> lower
 * token index; every token when cap >= N), so a token gets 0..E experts. h (N, E) ->
 * gates (N, E): S[n, e] where expert e took token n, else 0; idx (N, E) caller-owned (valid
 * until backward): e where taken, else -1. backward as op_topp_gate. */
Tensor *op_expert_choice_gate(Tape *t, Tensor *h, int cap, int32_t *idx);

/* ---------------- ops_router_loss.c: router auxiliary losses ---------------- */

/* Load-balancing loss contribution (Switch Transformer, Fedus et al. 2022, eq. 4):
 * out (1) = scale * sum_i f[i] * sum_n softmax(logits[n])_i, logits (N, E), f (E) constant
 * (the fraction of routed slots per expert). With scale = coef * E / N this is
 * coef * E * sum_i f_i P_i. f is copied. */
Tensor *op_load_balance(Tape *t, Tensor *logits, const float *f, float scale);

/* Router z-loss contribution (ST-MoE, Zoph et al. 2022, eq. 5):
 * out (1) = scale * sum_n logsumexp(logits[n])^2, logits (N, E); scale = coef / N. */
Tensor *op_zloss(Tape *t, Tensor *logits, float scale);

/* Router entropy penalty (the "dynamic loss" of Huang et al. 2024, sec. 3):
 * out (1) = scale * sum_n H(softmax(logits[n])), H(p) = -sum_i p_i ln p_i, logits (N, E);
 * scale = coef / N. backward: dlogits_nj += -scale p_nj (ln p_nj + H_n). */
Tensor *op_router_entropy(Tape *t, Tensor *logits, float scale);

#endif
