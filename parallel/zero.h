/* zero.h: the sharded ("distributed") optimizer, ZeRO stage 1 (Rajbhandari et al. 2020;
 * Megatron-Core's distributed optimizer), switched on by parallel.shard_optimizer.
 *
 * Each parameter block is replicated over a group of ranks: DENSE over the world (R ranks),
 * EXPERT over its expert-data-parallel group (comm.edp ranks; see comm.h). With sharding,
 * a block whose group has G > 1 ranks keeps its gradient buffer at full length, padded from
 * gn to gpad = gn rounded up to a multiple of 16 G (zeros that belong to no tensor), and is
 * cut into G equal contiguous slices of gpad / G positions; the group member with index i
 * owns slice i and holds the AdamW moments of that slice only (params_shard_block). A step:
 *   zero_reduce_grads   MPI_Reduce_scatter_block (sum) over the group: the member gets the
 *                       summed gradient of its slice (then scaled by 1/R as dp_reduce_grads
 *                       does); the rest of its gradient buffer is stale. The trainer sums
 *                       with parallel/reduce.h instead (the same slices, our own order of
 *                       addition, overlapping the backward); this is the library-order
 *                       reference the tests use
 *   zero_grad_norm      each rank's squares over its slices, summed over the world
 *   adamw_step_scaled   updates the values of the slice's positions only
 *   zero_gather_params  MPI_Allgather of the updated slices (through the gradient buffer,
 *                       in gradient layout), copied into every rank's full values
 * The weights stay full-size fp32 on every rank: the forward reads them (bf16 copies are
 * made per forward, autograd/gemm.h), so there is no separate master copy to split; what
 * sharding saves is (G - 1) / G of the two moments. A block with G = 1 (one rank, or
 * expert_parallel = R for the experts) is left as it is and goes through the unsharded
 * all-reduce. Every rank calls every function here, in the same order.
 */
#ifndef MOE_ZERO_H
#define MOE_ZERO_H

#include "autograd/params.h"
#include "parallel/comm.h"

/* Shard every block whose replica group has more than one rank (set-up time: allocates;
 * the current moments, e.g. just loaded from a checkpoint, are kept as slices). Returns the
 * number of blocks sharded (0 on one rank: sharding is then a no-op). */
int zero_shard(ParamSet *ps, const Comm *c);
/* Whether block b is sharded now. */
bool zero_block_sharded(const ParamSet *ps, int b);
/* Sum the gradients: reduce-scatter for sharded blocks, all-reduce for the others; both
 * scaled by 1/R. Replaces dp_reduce_grads when sharding. */
void zero_reduce_grads(ParamSet *ps, const Comm *c);
/* The global gradient norm after zero_reduce_grads (equal to dp_grad_norm's up to the
 * order of the double additions). Same value on every rank. */
double zero_grad_norm(const ParamSet *ps, const Comm *c);
/* After adamw_step_scaled: every rank's values of every sharded block become the owners'
 * updated slices (the gradient buffer is used as the transfer buffer and is left holding
 * values, not gradients: the next step zeroes it). */
void zero_gather_params(ParamSet *ps, const Comm *c);
/* For checkpoints: gather the moment slices back into full-size moments (every rank of the
 * group; allocates gpad floats twice per sharded block) so that ckpt_save and the expert
 * gather see the unsharded layout; zero_shard afterwards cuts them again. */
void zero_gather_moments(ParamSet *ps, const Comm *c);

#endif
