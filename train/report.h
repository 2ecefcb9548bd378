/* report.h: the page of `moetrain report` (the command: train/cmd_report.h): one
 * self-contained HTML page of a run's (or several runs') metrics, drawn as inline SVG: loss
 * and validation loss against tokens seen, aux and z losses, learning rate, gradient norm,
 * throughput, router entropy, load imbalance and experts per token per layer, a heatmap of
 * expert load per layer over time, and each run's config.yaml.
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

#include <stdbool.h>
#include <stddef.h>

#include "core/common.h"
#include "train/report_data.h"

#define REPORT_MAX_POINTS 2000  /* per curve; longer curves are min/max downsampled */
#define REPORT_MAX_COLUMNS 400  /* time columns per heatmap; steps are averaged per column */
#define REPORT_MAX_CELLS 12800  /* cells per heatmap (E x columns): many experts, fewer columns */

/* Time columns of a heatmap of n_steps steps and E experts:
 * min(n_steps, REPORT_MAX_COLUMNS, REPORT_MAX_CELLS / E), at least 1. */
size_t report_heatmap_columns(size_t n_steps, int E);

/* Writes the HTML page for runs[0..n_runs) (each loaded, n >= 1) to out_path, crash-safe
 * (core/fs.h fs_atomic_*: nothing is left behind on failure) and mode 0644. Fails (-1, err
 * naming the file, with a hint). */
int report_write(const RunData *runs, int n_runs, const char *out_path, MoeErr *err);

/* True when path starts the way every page report_write makes does: a report is derived
 * from its runs' files and can be made again at any time, so replacing one loses nothing. */
bool report_is_page(const char *path);

#endif
