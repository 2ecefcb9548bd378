/* sha256.h: SHA-256 (FIPS 180-4, "Secure Hash Standard", sections 4.1.2, 4.2.2, 5.1.1,
 * 5.3.3 and 6.2), streaming, for the whole-file digests of checkpoints (checkpoints/seal.h).
 *
 * Written from the standard: 512-bit blocks, big-endian words, the 64-round compression of
 * section 6.2.2, padding with a 1 bit, zeros and the 64-bit bit length (5.1.1). The output
 * is what coreutils' sha256sum prints, so a user can check a checkpoint by hand.
 *
 * Non-goals: SHA-224/384/512, HMAC, hardware SHA instructions (portable C only;
 * bench/bench_ckpt.c measures its throughput).
 */
#ifndef MOE_SHA256_H
#define MOE_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_BYTES 32
#define SHA256_HEX (2 * SHA256_BYTES + 1)   /* lowercase hex + NUL */

typedef struct Sha256 {
    uint32_t h[8];       /* the running hash value H(i) */
    uint64_t bytes;      /* message bytes absorbed so far */
    uint8_t block[64];   /* a partial block waiting for more input */
    size_t fill;         /* bytes in block, < 64 */
} Sha256;

/* The initial hash value of FIPS 180-4 5.3.3 (also what sha256_final leaves). */
void sha256_init(Sha256 *s);
/* Absorb n bytes of data (borrowed; n may be 0, data then may be NULL). */
void sha256_update(Sha256 *s, const void *data, size_t n);
/* Pad, finish and write the 32-byte digest to out; s is re-initialised. */
void sha256_final(Sha256 *s, uint8_t out[SHA256_BYTES]);
/* The digest as 64 lowercase hex characters + NUL (sha256sum's spelling). */
void sha256_hex(const uint8_t d[SHA256_BYTES], char out[SHA256_HEX]);

/* The round constants K (4.2.2) and initial value H(0) (5.3.3), for the test that
 * re-derives them from the cube and square roots of the first primes. */
extern const uint32_t SHA256_K[64];
extern const uint32_t SHA256_H0[8];

#endif
