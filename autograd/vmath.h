/* vmath.h: float exp and sigmoid written so that GCC and clang vectorise the loops that call
 * them (glibc's expf is a scalar call per element), and the vectorisable max and sums the
 * softmax, cross-entropy and RMSNorm loops use.
 *
 *   exp(x) = 2^n * e^r,   n = round(x / ln 2),   r = x - n ln 2 in [-ln2/2, ln2/2]
 *
 * n ln 2 is subtracted in two parts (Cody and Waite 1980) so r keeps full float precision;
 * e^r is the degree-7 minimax polynomial of Cephes' expf (S. Moshier, "Methods and Programs
 * for Mathematical Functions", 1989): relative error under 2 ulp over the float range (the
 * test checks it against double exp). 2^n is built in the exponent bits. Every step is
 * branch-free (selects only), which is what lets the loop vectorise.
 *
 * Edge cases: x < -87.3 (where exp underflows into denormals) returns 0; x > 88.7 returns
 * +inf; NaN stays NaN (the comparisons are false for NaN, so it flows through the
 * arithmetic), so the training loop's non-finite checks still see it.
 */
#ifndef MOE_VMATH_H
#define MOE_VMATH_H

#include <stdint.h>
#include <string.h>

static inline float vm_expf(float x) {
    const float lo = -87.33654f, hi = 88.72283f;
    const float xc = x < lo ? lo : (x > hi ? hi : x);
    /* round to nearest with the 1.5 * 2^23 shifter: t's low mantissa bits hold n */
    const float shifter = 12582912.0f;
    const float t = xc * 1.44269504088896341f + shifter;
    const float n = t - shifter;
    const float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    uint32_t tb;
    memcpy(&tb, &t, sizeof tb);
    /* n in [-126, 128]: build 2^n as (n + 127) << 23, split in two halves so n = 128
     * (x near hi) does not overflow the exponent field */
    const int32_t ni = (int32_t)(tb - 0x4B400000u);
    const int32_t n1 = ni >> 1, n2 = ni - n1;
    const uint32_t b1 = (uint32_t)(n1 + 127) << 23, b2 = (uint32_t)(n2 + 127) << 23;
    float s1, s2;
    memcpy(&s1, &b1, sizeof s1);
    memcpy(&s2, &b2, sizeof s2);
    const float y = p * s1 * s2;
    return x < lo ? 0.0f : (x > hi ? (float)__builtin_inff() : y);
}

/* 1 / (1 + e^-x): exp(-x) saturates to inf for x < -88.7 and 1/inf = 0, the right limit. */
static inline float vm_sigmoidf(float x) { return 1.0f / (1.0f + vm_expf(-x)); }

/* Max of n floats with 16 independent running maxima, so the loop vectorises (a single
 * running max is a serial chain). NaN entries are skipped here (callers meet them in the
 * exp that follows). -inf for n = 0. */
static inline float vm_max(const float *x, int n) {
    float m[16];
    for (int j = 0; j < 16; j++) m[j] = -__builtin_inff();
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) m[j] = x[i + j] > m[j] ? x[i + j] : m[j];
    for (; i < n; i++) m[0] = x[i] > m[0] ? x[i] : m[0];
    float mx = m[0];
    for (int j = 1; j < 16; j++) mx = m[j] > mx ? m[j] : mx;
    return mx;
}

/* Sum of n floats in double with 8 independent partial sums (vectorisable; a fixed order,
 * so the result does not depend on which thread computes it). */
static inline double vm_sum_f64(const float *x, int n) {
    double s[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += (double)x[i + j];
    for (; i < n; i++) s[0] += (double)x[i];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* Sum of squares of n floats in double, with the same 8 independent partials and the same
 * combining order as vm_sum_f64. */
static inline double vm_sumsq_f64(const float *x, size_t n) {
    double s[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += (double)x[i + j] * (double)x[i + j];
    for (; i < n; i++) s[0] += (double)x[i] * (double)x[i];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

#endif
