/* expert_pipe.h: the expert-parallel exchange and the experts' SwiGLU FFN as one op,
 * pipelined over chunks of local experts so that transfers overlap products.
 *
 * The plan (parallel/exchange.h) cuts the El local experts into G chunks of consecutive
 * experts. Forward, on every rank of the EP group:
 *   post every chunk's dispatch (non-blocking all-to-alls, parallel/a2a.h; all at once, so
 *     that the handshakes of every chunk advance in the same progress calls: a transfer
 *     moves only while both ends are inside MPI, and a rank inside a product is not);
 *   run `overlap` (the shared experts: work that needs none of the exchanged rows);
 *   for chunk c: wait for dispatch c; put its rows in expert-major order; the chunk's
 *     experts' W1, W3, SwiGLU, W2 products (testing every transfer in flight between
 *     products, so MPI moves them); pack the outputs and post combine c;
 *   wait for every combine.
 * Backward is the mirror image: the output grads travel to the experts chunk by chunk
 * (dispatch routes), each chunk's expert backward runs while the next chunk's grads
 * travel, and each chunk's input grads are posted back (combine routes) as soon as they
 * are formed. With G = 1 it degenerates to dispatch, experts, combine.
 *
 * Results: every expert multiplies exactly the rows it multiplies in the unchunked path
 * (op_exchange_to_experts, op_expert_linear x2, op_swiglu_expert_linear,
 * op_exchange_from_experts), through the same kernels (autograd/expert_ffn.h), and every
 * row travels unchanged: outputs, input grads and weight grads are bit-identical to that
 * composition for any chunk count (tests/parallel/mpi_pipe.c).
 * Memory: keeps the received rows (M_recv, C) and h1, h3 (M_recv, F), as the composition
 * does (which also keeps its (M_recv, C) output); scratch from the tape's.
 */
#ifndef MOE_EXPERT_PIPE_H
#define MOE_EXPERT_PIPE_H

#include "parallel/exchange.h"

/* Work recorded on t while the first chunks travel (called once per forward, before the
 * op's own tensors are allocated); NULL for none. */
typedef void (*ExchangeOverlapFn)(Tape *t, void *ctx);

/* xg (M_send, C) grouped by global expert (exchange_plan's layout) -> (M_send, C): each
 * slot's expert output, in xg's order. w1, w3 (El, F, C); w2 (El, C, F). */
Tensor *op_exchange_experts(Tape *t, Tensor *xg, Tensor *w1, Tensor *w3, Tensor *w2,
                            ExchangePlan *p, ExchangeOverlapFn overlap, void *overlap_ctx);

#endif
