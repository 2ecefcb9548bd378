/* report_data.h: a run's logged metrics in memory, for `moetrain report` (train/report.h).
 *
 * Reads run.dir/metrics.jsonl and run.dir/eval.jsonl (schema: train/metrics.h) into columns,
 * and run.dir/config.yaml as text. Lines with METRIC_LOSS are steps, lines with
 * METRIC_VAL_LOSS validation points; columns grow by doubling.
 * Non-goals: metrics written by other programs; following a file as it grows (load again:
 * train/report_watch.h does, when the files change).
 */
#ifndef MOE_REPORT_DATA_H
#define MOE_REPORT_DATA_H

#include <stddef.h>

#include "core/common.h"

/* Per-step columns of a run (all (n) arrays, NaN where a line lacked the field). */
enum {
    REPORT_STEP, REPORT_TOKENS, REPORT_LOSS, REPORT_LM_LOSS, REPORT_AUX_LOSS, REPORT_Z_LOSS,
    REPORT_LR, REPORT_GRAD_NORM, REPORT_TOKENS_PER_S,
    REPORT_TIME,   /* wall-clock seconds since the epoch (NaN in runs written before
                      metrics.jsonl had METRIC_TIME) */
    REPORT_NCOLS
};

typedef struct RunData {
    char *dir;                  /* as given on the command line (owned) */
    char *name;                 /* legend name: the directory's base name (owned) */
    size_t n, cap;              /* training steps read */
    double *col[REPORT_NCOLS];  /* (n) each, see the enum */
    unsigned char *skipped;     /* (n) 1 when the step was skipped (non-finite loss/grads) */
    int L, E;                   /* MoE layers and experts; 0, 0 for a dense run */
    float *load;                /* (n, L, E) share of routed slots; NaN when missing */
    float *entropy;             /* (n, L) router entropy in nats; NaN when missing */
    float *experts;             /* (n, L) mean experts per token; NaN when missing */
    size_t n_val, val_cap;      /* validation points */
    double *val_step, *val_tokens, *val_loss; /* (n_val) */
    double *val_time;           /* (n_val) METRIC_TIME, NaN when absent */
    char *config;               /* config.yaml text (owned), NULL when absent */
} RunData;

/* Returned by report_load_run when the run has not logged a step yet (metrics.jsonl is
 * missing or holds no step): the one failure that waiting can cure. */
#define REPORT_NO_STEPS (-2)

/* Reads dir/metrics.jsonl (steps and validation points), dir/eval.jsonl when
 * metrics.jsonl has no validation points, and dir/config.yaml when present. A final line
 * without a newline that does not parse is ignored (the run is still writing it).
 * Fails (err says which FILE:LINE and why, with a hint): REPORT_NO_STEPS when metrics.jsonl
 * is missing or has no steps; -1 on a missing directory, an unreadable file, a malformed
 * line, a line that is neither a step nor a validation point, or an expert_load whose shape
 * changes. r is zeroed first and freed on failure. */
int report_load_run(RunData *r, const char *dir, MoeErr *err);
void report_run_free(RunData *r);  /* safe on a zeroed or half-loaded run */

/* report_load_run for dirs[0..n) into runs[0..n) (overwritten); two runs with the same
 * base name (a/x, b/x) are then named by their directories as given. On failure (the
 * first run's return value, err) every run is freed (zeroed). */
int report_load_runs(RunData *runs, const char *const *dirs, int n, MoeErr *err);

#endif
