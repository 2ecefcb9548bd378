/* report.h: `moetrain report`: one self-contained HTML page of a run's (or several runs')
 * metrics, drawn as inline SVG: loss and validation loss against tokens seen, aux and z
 * losses, learning rate, gradient norm, throughput, router entropy and load imbalance per
 * layer, a heatmap of expert load per layer over time, and each run's config.yaml.
 *
 * Non-goals: JavaScript, external resources, live updates (re-run the command), reading
 * metrics written by other programs. The page is well-formed XML (XHTML syntax inside an
 * HTML5 document) so tests can check it with an XML well-formedness checker.
 *
 * Markup contract the tests rely on:
 *   - each line plot is <svg data-plot="ID"> with ID in loss, aux_loss, z_loss, lr,
 *     grad_norm, tokens_per_s, router_entropy, load_imbalance, experts_per_token; a plot
 *     is left out when no run has a finite value for it;
 *   - each curve is one <path data-series="NAME" data-run="RUN"> (NAME: loss, val_loss,
 *     aux_loss, z_loss, lr, grad_norm, tokens_per_s, router_entropy.lN,
 *     load_imbalance.lN, experts_per_token.lN); a curve is left out when its run has no
 *     finite point for it;
 *   - each heatmap is <svg data-plot="expert_load" data-run="RUN" data-layer="N">
 *     holding E <g class="row" data-expert="e"> each with one <rect class="cell"> per
 *     time column (report_heatmap_columns(steps, E) columns).
 */
#ifndef MOE_REPORT_H
#define MOE_REPORT_H

#include <stddef.h>

#include "core/common.h"

#define REPORT_MAX_POINTS 2000  /* per curve; longer curves are min/max downsampled */
#define REPORT_MAX_COLUMNS 400  /* time columns per heatmap; steps are averaged per column */
#define REPORT_MAX_CELLS 12800  /* cells per heatmap (E x columns): many experts, fewer columns */

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

/* Time columns of a heatmap of n_steps steps and E experts:
 * min(n_steps, REPORT_MAX_COLUMNS, REPORT_MAX_CELLS / E), at least 1. */
size_t report_heatmap_columns(size_t n_steps, int E);

/* Writes the HTML page for runs[0..n_runs) to out_path (temp file, fsync, rename; nothing
 * is left behind on failure). */
int report_write(const RunData *runs, int n_runs, const char *out_path, MoeErr *err);

/* The subcommand: moetrain report RUN_DIR [RUN_DIR...] [--out FILE.html] [--force] | --help.
 * argv[0] is the first argument after "report". The output (default RUN_DIR/report.html)
 * goes through train/outguard.h with the runs' metrics.jsonl, eval.jsonl and config.yaml
 * as inputs; an existing file that is a page this writer made counts as --force (a
 * report is regenerated from its runs at any time; that is its normal use), any other
 * existing file needs --force. Returns the exit code: 0 ok (and --help), 1
 * user/environment error (printed with a hint), 2 bad command line or refused output. */
int cmd_report(int argc, char **argv);

#endif
