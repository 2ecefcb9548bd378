/* bf16.h: bfloat16 (1 sign, 8 exponent, 7 stored mantissa bits: the top half of an IEEE
 * float32) conversions, owned here so every path rounds the same way.
 *
 * f32 -> bf16 rounds to nearest, ties to even (the rounding of Kalamkar et al. 2019, "A
 * Study of BFLOAT16 for Deep Learning Training", sec. 3, and of VCVTNEPS2BF16 on normal
 * numbers); a NaN stays a (quiet) NaN; subnormals are rounded like any other value (not
 * flushed, unlike VCVTNEPS2BF16), so the result depends only on the input bits. Relative
 * rounding error <= 2^-8 for normal values (8 significant bits).
 * bf16 -> f32 is exact (appends 16 zero bits).
 * A product of two bf16 values is exact in f32 (8 x 8 = 16 significant bits <= 24), so a
 * bf16 product with f32 accumulation differs from the f32 product of the rounded inputs
 * only by the order of the f32 additions.
 */
#ifndef MOE_BF16_H
#define MOE_BF16_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint16_t bf16_from_f32(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    const uint32_t quiet_nan = (u >> 16) | 0x40u;
    return (uint16_t)((u & 0x7FFFFFFFu) > 0x7F800000u ? quiet_nan : rounded);
}

static inline float bf16_to_f32(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* x rounded to the nearest bf16 value, as a float. */
static inline float bf16_round(float f) { return bf16_to_f32(bf16_from_f32(f)); }

/* Compact copies of a strided (rows, cols) block (row stride ld >= cols) into (rows, cols)
 * with stride cols: bf16 values, or floats rounded to bf16 values. Split over the cores
 * when large and called outside a pool task (core/pool.h); each element's result does not
 * depend on the split. */
void bf16_pack(const float *x, int rows, int cols, int ld, uint16_t *y);
void bf16_round_pack(const float *x, int rows, int cols, int ld, float *y);
/* bf16_pack of n contiguous floats (any n), in rows of 4096 so a large array splits over
 * the cores. */
void bf16_pack_flat(const float *x, size_t n, uint16_t *y);

#endif
