/* rng.c: counter-based and sequential RNGs. See rng.h. */
#include "core/rng.h"

#include <math.h>

/* splitmix64 finaliser (Steele, Lea, Flood 2014). */
uint64_t moe_hash64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

uint64_t moe_hash4(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
    uint64_t h = moe_hash64(a);
    h = moe_hash64(h ^ b);
    h = moe_hash64(h ^ c);
    return moe_hash64(h ^ d);
}

double moe_u01(uint64_t bits) {
    /* 53 random bits, shifted by half an ulp so the result is in (0,1). */
    return ((double)(bits >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

float moe_randn_key(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
    uint64_t h = moe_hash4(a, b, c, d);
    double u1 = moe_u01(h), u2 = moe_u01(moe_hash64(h ^ 0x5bd1e995ULL));
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void rng_seed(MoeRng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) { x = moe_hash64(x); r->s[i] = x; }
}

/* xoshiro256** (Blackman and Vigna 2018). */
uint64_t rng_next(MoeRng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t; s[3] = rotl(s[3], 45);
    return result;
}

double rng_uniform(MoeRng *r) { return (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0); }

float rng_normal(MoeRng *r) {
    double u1 = moe_u01(rng_next(r)), u2 = moe_u01(rng_next(r));
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}
