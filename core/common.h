/* common.h: what every moetrain file shares: errors (core/error.h), the allocator
 * (core/alloc.h), random numbers (core/rng.h) and the clock (core/clock.h), and the
 * dimension letters, fixed once for the whole code base:
 *     B batch (sequences), T sequence length, N = B*T tokens, C model width (dim),
 *     H query heads, Hkv key/value heads, D head dim, F expert hidden width, E experts,
 *     K experts per token, V vocab, L layers, R ranks; W attention window (0 = full),
 *     Fs total hidden width of the shared experts (0 = none).
 * Tensors are row-major and contiguous unless a comment says otherwise. LOSS_IGNORE is the
 * target id the loss skips.
 */
#ifndef MOE_COMMON_H
#define MOE_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/rng.h"

/* A target id that the language-model loss ignores (autograd/ops.h): no loss, no gradient,
 * not counted in the mean. The loader writes it where a token is not trained on (a prompt
 * token of a fine-tuning record, data/sft.h). */
#define LOSS_IGNORE (-1)

#endif
