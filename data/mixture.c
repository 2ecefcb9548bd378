/* mixture.c: the weighted source schedule. See mixture.h. */
#include "data/mixture.h"

#include <math.h>
#include <string.h>

int mix_init(Mixture *m, const double *w, int S, const char *const *names, MoeErr *err) {
    memset(m, 0, sizeof *m);
    ASSERT(S >= 1, "mix_init with %d sources", S);
    double total = 0;
    for (int i = 0; i < S; i++) {
        if (!(w[i] > 0) || !isfinite(w[i])) {
            moe_errorf(err, "data source %s has weight %g; a weight must be a finite number "
                       "> 0", names[i], w[i]);
            return moe_hintf(err, "give every weighted entry a positive weight (drop an "
                             "entry to leave its source out)");
        }
        total += w[i];
    }
    m->S = S;
    m->quota = moe_calloc(sizeof(int64_t) * (size_t)S);
    /* largest remainder: floors first, then one more slot to the largest fractional parts
     * (ties to the lower index), so the quotas sum to the period exactly */
    double *frac = moe_malloc(sizeof(double) * (size_t)S);
    int64_t given = 0;
    for (int i = 0; i < S; i++) {
        double exact = (double)MIX_PERIOD * (w[i] / total);
        m->quota[i] = (int64_t)floor(exact);
        frac[i] = exact - (double)m->quota[i];
        given += m->quota[i];
    }
    for (int64_t left = (int64_t)MIX_PERIOD - given; left > 0; left--) {
        int best = 0;
        for (int i = 1; i < S; i++) if (frac[i] > frac[best]) best = i;
        m->quota[best]++;
        frac[best] = -1.0;
    }
    moe_free(frac);
    for (int i = 0; i < S; i++) {
        if (m->quota[i] < 1) {
            moe_errorf(err, "data source %s has weight %g, less than 1/%u of the total weight "
                       "%g: it would never be sampled", names[i], w[i], MIX_PERIOD, total);
            mix_free(m);
            return moe_hintf(err, "raise its weight or leave the source out");
        }
    }
    return 0;
}

void mix_free(Mixture *m) {
    if (!m) return;
    moe_free(m->quota);
    memset(m, 0, sizeof *m);
}

int mix_pick(const Mixture *m, uint64_t g, const uint64_t *cnt) {
    const uint64_t period = g / MIX_PERIOD;
    const int64_t u = (int64_t)(g % MIX_PERIOD);
    int best = 0;
    int64_t best_v = INT64_MIN;
    for (int i = 0; i < m->S; i++) {
        /* slots source i had earlier in this period; (u+1) q_i <= 2^32, no overflow */
        int64_t in_period = (int64_t)(cnt[i] - period * (uint64_t)m->quota[i]);
        int64_t v = (u + 1) * m->quota[i] - (int64_t)MIX_PERIOD * in_period;
        if (v > best_v) { best_v = v; best = i; }
    }
    return best;
}

void mix_counts(const Mixture *m, uint64_t g, uint64_t *cnt) {
    const uint64_t period = g / MIX_PERIOD;
    for (int i = 0; i < m->S; i++) cnt[i] = period * (uint64_t)m->quota[i];
    for (uint64_t x = period * MIX_PERIOD; x < g; x++) cnt[mix_pick(m, x, cnt)]++;
}
