/* report_data.h: a run's logged metrics in memory, for `moetrain report` (train/report.h).
 *
 * Reads run.dir/metrics.jsonl and run.dir/eval.jsonl (schema: train/metrics.h) into columns,
 * and run.dir/config.yaml as text. Lines with METRIC_LOSS are steps, lines with
 * METRIC_VAL_LOSS validation points; columns grow by doubling.
 * Non-goals: metrics written by other programs; following a file as it grows (load again).
 */
#ifndef MOE_REPORT_DATA_H
#define MOE_REPORT_DATA_H

#include <stddef.h>

#include "core/common.h"

/* Per-step columns of a run (all (n) arrays, NaN where a line lacked the field). */
enum {
    REPORT_STEP, REPORT_TOKENS, REPORT_LOSS, REPORT_LM_LOSS, REPORT_AUX_LOSS, REPORT_Z_LOSS,
    REPORT_LR, REPORT_GRAD_NORM, REPORT_TOKENS_PER_S, REPORT_NCOLS
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
    char *config;               /* config.yaml text (owned), NULL when absent */
} RunData;

/* Reads dir/metrics.jsonl (steps and validation points), dir/eval.jsonl when
 * metrics.jsonl has no validation points, and dir/config.yaml when present. A final line
 * without a newline that does not parse is ignored (the run is still writing it).
 * Fails (-1, err says which FILE:LINE and why, with a hint) on a missing directory or
 * metrics.jsonl, a malformed line, a line that is neither a step nor a validation point,
 * an expert_load whose shape changes, or a file with no steps. r is zeroed first and
 * freed on failure. */
int report_load_run(RunData *r, const char *dir, MoeErr *err);
void report_run_free(RunData *r);  /* safe on a zeroed or half-loaded run */

#endif
