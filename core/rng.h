/* rng.h: random numbers.
 *
 * Counter-based (splitmix64 on a key): a pure function of its inputs, so random numbers do
 * not depend on the order they are drawn in or on the rank layout (router noise, LoRA
 * dropout). Sequential (xoshiro256**) for initialisation and data order; its state is 4
 * words so it can be checkpointed.
 */
#ifndef MOE_RNG_H
#define MOE_RNG_H

#include <stdint.h>

uint64_t moe_hash64(uint64_t x);
uint64_t moe_hash4(uint64_t a, uint64_t b, uint64_t c, uint64_t d);
/* Uniform in (0,1) from a 64-bit value (never exactly 0 or 1). */
double moe_u01(uint64_t bits);
/* Standard normal from a counter key (Box-Muller on two hashed uniforms). */
float moe_randn_key(uint64_t a, uint64_t b, uint64_t c, uint64_t d);

typedef struct MoeRng { uint64_t s[4]; } MoeRng;
void rng_seed(MoeRng *r, uint64_t seed);
uint64_t rng_next(MoeRng *r);
double rng_uniform(MoeRng *r);     /* [0,1) */
float rng_normal(MoeRng *r);       /* N(0,1) */

#endif
