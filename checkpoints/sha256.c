/* sha256.c: SHA-256 after FIPS 180-4. See sha256.h. */
#include "checkpoints/sha256.h"

#include <string.h>

/* 4.2.2: the first 32 bits of the fractional parts of the cube roots of the first 64
 * primes (tests/checkpoints/test_seal.c re-derives them). */
const uint32_t SHA256_K[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u,
    0x923f82a4u, 0xab1c5ed5u, 0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u,
    0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u, 0xe49b69c1u, 0xefbe4786u,
    0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u,
    0x06ca6351u, 0x14292967u, 0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u,
    0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u, 0xa2bfe8a1u, 0xa81a664bu,
    0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au,
    0x5b9cca4fu, 0x682e6ff3u, 0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u,
    0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u,
};

/* 5.3.3: the first 32 bits of the fractional parts of the square roots of the first 8
 * primes. */
const uint32_t SHA256_H0[8] = {
    0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
    0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u,
};

static inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

/* The six logical functions of 4.1.2. */
#define CH(x, y, z) (((x) & (y)) ^ (~(x) & (z)))
#define MAJ(x, y, z) (((x) & (y)) ^ ((x) & (z)) ^ ((y) & (z)))
#define BSIG0(x) (rotr(x, 2) ^ rotr(x, 13) ^ rotr(x, 22))
#define BSIG1(x) (rotr(x, 6) ^ rotr(x, 11) ^ rotr(x, 25))
#define SSIG0(x) (rotr(x, 7) ^ rotr(x, 18) ^ ((x) >> 3))
#define SSIG1(x) (rotr(x, 17) ^ rotr(x, 19) ^ ((x) >> 10))

/* One round of 6.2.2 step 3 with the working variables named by position: instead of
 * shifting h=g, g=f, ... every round, the next round is called with the names rotated,
 * so only d and h are written (d + T1 becomes the new e, T1 + T2 the new a). */
#define ROUND(a, b, c, d, e, f, g, h, t)                                  \
    do {                                                                  \
        uint32_t t1 = h + BSIG1(e) + CH(e, f, g) + SHA256_K[t] + w[t];    \
        uint32_t t2 = BSIG0(a) + MAJ(a, b, c);                            \
        d += t1;                                                          \
        h = t1 + t2;                                                      \
    } while (0)

/* 6.2.2: fold one 64-byte block into the hash value. */
static void compress(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64];
    for (int t = 0; t < 16; t++)   /* step 1: the message schedule, words big-endian */
        w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 |
               (uint32_t)p[4 * t + 2] << 8 | (uint32_t)p[4 * t + 3];
    for (int t = 16; t < 64; t++)
        w[t] = SSIG1(w[t - 2]) + w[t - 7] + SSIG0(w[t - 15]) + w[t - 16];
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int t = 0; t < 64; t += 8) {
        ROUND(a, b, c, d, e, f, g, k, t);
        ROUND(k, a, b, c, d, e, f, g, t + 1);
        ROUND(g, k, a, b, c, d, e, f, t + 2);
        ROUND(f, g, k, a, b, c, d, e, t + 3);
        ROUND(e, f, g, k, a, b, c, d, t + 4);
        ROUND(d, e, f, g, k, a, b, c, t + 5);
        ROUND(c, d, e, f, g, k, a, b, t + 6);
        ROUND(b, c, d, e, f, g, k, a, t + 7);
    }
    h[0] += a;   /* step 4: the intermediate hash value H(i) */
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += k;
}

void sha256_init(Sha256 *s) {
    memcpy(s->h, SHA256_H0, sizeof s->h);
    s->bytes = 0;
    s->fill = 0;
}

void sha256_update(Sha256 *s, const void *data, size_t n) {
    const uint8_t *p = data;
    s->bytes += n;
    if (s->fill) {   /* complete the waiting block first */
        size_t k = 64 - s->fill < n ? 64 - s->fill : n;
        memcpy(s->block + s->fill, p, k);
        s->fill += k;
        p += k;
        n -= k;
        if (s->fill < 64) return;
        compress(s->h, s->block);
        s->fill = 0;
    }
    for (; n >= 64; p += 64, n -= 64) compress(s->h, p);
    if (n) memcpy(s->block, p, n);
    s->fill = n;
}

void sha256_final(Sha256 *s, uint8_t out[SHA256_BYTES]) {
    /* 5.1.1: append the bit 1, then zeros up to 56 mod 64 bytes, then the message length
     * in bits as a 64-bit big-endian integer. */
    const uint64_t bits = s->bytes * 8;
    uint8_t pad[72] = {0x80};
    size_t np = (s->fill < 56 ? 56 : 120) - s->fill;
    for (int i = 0; i < 8; i++) pad[np + (size_t)i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_update(s, pad, np + 8);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(s->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)s->h[i];
    }
    sha256_init(s);
}

void sha256_hex(const uint8_t d[SHA256_BYTES], char out[SHA256_HEX]) {
    static const char HEX[] = "0123456789abcdef";
    for (int i = 0; i < SHA256_BYTES; i++) {
        out[2 * i] = HEX[d[i] >> 4];
        out[2 * i + 1] = HEX[d[i] & 15];
    }
    out[2 * SHA256_BYTES] = 0;
}
