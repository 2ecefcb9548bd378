/* permute.c: window orders. See permute.h. */
#include "data/permute.h"

#include <string.h>

#include "core/rng.h"

#define PERM_TAG 0x6c6f61646572ULL   /* "loader": the Fisher-Yates seed of earlier versions */
#define FEISTEL_ROUNDS 6

void perm_init(WindowOrder *o, size_t n, uint64_t key, uint64_t source, bool fisher_yates) {
    ASSERT(n >= 1, "perm_init over zero windows");
    memset(o, 0, sizeof *o);
    o->n = n;
    o->key = key;
    o->source = source;
    o->fisher_yates = fisher_yates && n <= PERM_FY_MAX;
    o->perm_epoch = UINT64_MAX;
    if (o->fisher_yates) {
        o->perm = moe_malloc(n * sizeof(uint32_t));
    } else {
        int bits = 2;   /* even, >= 2, with 2^bits >= n */
        while (bits < 64 && ((uint64_t)1 << bits) < (uint64_t)n) bits += 2;
        o->half_bits = bits / 2;
    }
}

void perm_free(WindowOrder *o) {
    if (!o) return;
    moe_free(o->perm);
    memset(o, 0, sizeof *o);
}

/* Uniform integer in [0, n) without modulo bias (rejection of the short top range). */
static uint64_t rng_below(MoeRng *r, uint64_t n) {
    uint64_t limit = -n % n;  /* 2^64 mod n: values below it are rejected */
    for (;;) {
        uint64_t x = rng_next(r);
        if (x >= limit) return x % n;
    }
}

/* The Fisher-Yates order of epoch e, exactly as earlier versions drew it. */
static void draw_fy(WindowOrder *o, uint64_t e) {
    MoeRng rng;
    rng_seed(&rng, moe_hash4(o->key, e, PERM_TAG, o->source));
    for (size_t i = 0; i < o->n; i++) o->perm[i] = (uint32_t)i;
    for (size_t i = o->n; i > 1; i--) {
        size_t j = (size_t)rng_below(&rng, i);
        uint32_t tmp = o->perm[i - 1];
        o->perm[i - 1] = o->perm[j];
        o->perm[j] = tmp;
    }
    o->perm_epoch = e;
}

/* One pass of the balanced Feistel network over [0, 2^(2h)): a bijection of that domain. */
static uint64_t feistel(const WindowOrder *o, uint64_t e, uint64_t x) {
    const int h = o->half_bits;
    const uint64_t mask = h >= 64 ? ~0ULL : (((uint64_t)1 << h) - 1);
    uint64_t l = (x >> h) & mask, r = x & mask;
    for (uint64_t round = 0; round < FEISTEL_ROUNDS; round++) {
        uint64_t f = moe_hash4(o->key ^ (o->source * 0x9e3779b97f4a7c15ULL), e, round, r) & mask;
        uint64_t nl = r;
        r = l ^ f;
        l = nl;
    }
    return (l << h) | r;
}

size_t perm_at(WindowOrder *o, uint64_t e, size_t p) {
    ASSERT(p < o->n, "perm_at position %zu of %zu", p, o->n);
    if (o->fisher_yates) {
        if (o->perm_epoch != e) draw_fy(o, e);
        return o->perm[p];
    }
    /* cycle walking: the orbit of p under the bijection returns into [0, n) */
    uint64_t x = p;
    do x = feistel(o, e, x); while (x >= o->n);
    return (size_t)x;
}
