/* ep_gather.h: every expert on one rank, for writing a checkpoint under expert parallelism.
 *
 * With P = c->ep > 1 the world ranks 0..P-1 (EP group 0) hold every expert once: rank q
 * holds experts [q*E/P, (q+1)*E/P) of each stacked expert tensor (comm.h). The gather puts
 * the values and both AdamW moments of all E experts, and rank 0's dense block, into one
 * parameter store on world rank 0, laid out for all E experts. Ranks 1..P-1 send their
 * EXPERT block (values, m, v with tags 1, 2, 3) to rank 0, which receives them in rank
 * order. Only copies: the result is bit for bit what the ranks hold.
 *
 * Non-goals: gathering to any rank other than 0, gathering gradients, reading the EDP
 * replicas (ranks >= P hold copies of group 0's experts).
 */
#ifndef MOE_EP_GATHER_H
#define MOE_EP_GATHER_H

#include "autograd/params.h"
#include "parallel/comm.h"

/* local: this rank's store (E/P experts in each stacked expert tensor, tensor i of local is
 * tensor i of full). full (rank 0 only; ignored elsewhere): the same parameters declared for
 * all E experts, with the same trainable flags; its DENSE block has local's layout. xfer
 * (rank 0 only): scratch of 3 * local->blocks[PBLOCK_EXPERT].n floats.
 * Rank 0 overwrites full's values and m/v of both blocks (gradients untouched); ranks 1..P-1
 * only send; ranks >= P do nothing. Call on every rank when c->mpi and c->ep > 1; world
 * ranks 0..P-1 must call it together (blocking point-to-point; MPI errors abort). */
void ep_gather_experts(const ParamSet *local, ParamSet *full, float *xfer, const Comm *c);

#endif
