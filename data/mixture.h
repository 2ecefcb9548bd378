/* mixture.h: which source each drawn training window comes from, for a weighted mixture of
 * sources (data.text / data.shards entries with weights).
 *
 * The schedule is deterministic and stateless in the window counter g (0, 1, 2, ... over
 * the whole run): it repeats every MIX_PERIOD = 65536 windows. Each period gives source i
 * exactly q_i slots, q_i the largest-remainder rounding of MIX_PERIOD * w_i / sum(w) (every
 * q_i >= 1, so a weight below 1/65536 of the total is refused), interleaved by the smooth
 * weighted round robin: slot u of a period goes to argmax_i ((u+1) q_i - P c_i(u)) (ties to
 * the lowest i), c_i(u) the slots source i already had in this period. So after any g
 * windows, source i has had within about one window of g w_i / sum(w) of them, and
 * every global batch holds the sources in proportion to their weights.
 *
 * Windows drawn from source i before counter g: mix_counts (O(S) plus at most one period
 * replayed: set-up and resume do not grow with the run's length or the corpus).
 *
 * Non-goals: random (binomial) source choice, changing weights within a run (a resume with
 * other weights continues with the new schedule from the same counter).
 */
#ifndef MOE_MIXTURE_H
#define MOE_MIXTURE_H

#include "core/common.h"

#define MIX_PERIOD 65536u

typedef struct Mixture {
    int S;              /* sources */
    int64_t *quota;     /* (S) q_i slots per period, sum MIX_PERIOD */
} Mixture;

/* Quotas for weights w (S >= 1 entries, each finite and > 0; names label messages).
 * Fails (-1, err naming the source) when a weight is not > 0 or is too small to get one
 * slot in a period. */
int mix_init(Mixture *m, const double *w, int S, const char *const *names, MoeErr *err);
void mix_free(Mixture *m);

/* The source of window g, given cnt (S): the windows each source had before g (as
 * mix_counts returns). Does not change cnt. */
int mix_pick(const Mixture *m, uint64_t g, const uint64_t *cnt);

/* cnt (S, overwritten): windows of each source among windows [0, g). */
void mix_counts(const Mixture *m, uint64_t g, uint64_t *cnt);

#endif
