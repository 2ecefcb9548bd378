/* common.h: what every moetrain file shares: errors (core/error.h), the allocator
 * (core/alloc.h), random numbers (core/rng.h) and the clock (core/clock.h), and the
 * dimension letters, fixed once for the whole code base:
 *     B batch (sequences), T sequence length, N = B*T tokens, C model width (dim),
 *     H query heads, Hkv key/value heads, D head dim, F expert hidden width, E experts,
 *     K experts per token, V vocab, L layers, R ranks; W attention window (0 = full),
 *     Fs total hidden width of the shared experts (0 = none).
 * Tensors are row-major and contiguous unless a comment says otherwise.
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

#endif
