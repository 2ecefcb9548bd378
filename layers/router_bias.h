/* router_bias.h: auxiliary-loss-free load balancing, the bias update.
 *
 * Wang et al. 2024, "Auxiliary-Loss-Free Load Balancing Strategy for Mixture-of-Experts"
 * (arXiv:2408.15664, Algorithm 1), used by DeepSeek-V3 (arXiv:2412.19437, sec. 2.1.2): each
 * MoE layer keeps a bias b (E) that is added to the router scores only to CHOOSE the top-k
 * experts (op_topk_gate_bias); the gate values stay those of the unbiased scores. b is state,
 * not a parameter: no gradient, no AdamW, no weight decay. After every optimizer step, with
 * load_i the slots routed to expert i during that step (all micro-batches, all ranks: the
 * counts MoeStats holds, before any capacity cut):
 *     b_i += rate * sign(mean_j load_j - load_i)      over-loaded experts lose, idle ones gain
 *     b   -= mean_i b_i                               mean-centred (b sums to ~0 per layer)
 * Centring does not change any selection (a constant shift of all scores) but keeps b from
 * drifting. Here b is added to the router LOGITS h = x Wg^T (+ noise), the scores our top-k
 * ranks, so rate is in logit units (the papers add it to sigmoid/softmax affinities); with
 * moe.score: sigmoid it is added to the sigmoid affinities instead (op_topk_route), as in
 * DeepSeek-V3, so rate is in affinity units there.
 *
 * The model holds b (Model.router_bias, (L, E)); checkpoints store it as /state/router_bias.
 * Every rank calls the update with the same global counts in the same order, so every rank
 * holds bit-identical b.
 */
#ifndef MOE_ROUTER_BIAS_H
#define MOE_ROUTER_BIAS_H

#include <stddef.h>

/* One update of every layer's bias: b (L, E) in place, from count (L, E) slots routed per
 * expert in the step (non-negative integers held in doubles), rate >= 0 (moe.bias_update_rate;
 * 0 leaves b unchanged). Allocates nothing. sign(0) = 0: an expert exactly at the mean load
 * keeps its bias (before centring). */
void router_bias_update(float *b, const double *count, int L, int E, float rate);

/* max_e |b_e| over one layer's bias b (E) (the log's bias range). */
double router_bias_max_abs(const float *b, int E);

#endif
