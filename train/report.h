/* report.h: the page of `moetrain report` (the command: train/cmd_report.h): one
 * self-contained HTML page of a run's (or several runs') metrics, drawn as inline SVG: loss
 * and validation loss, aux and z losses, learning rate, gradient norm, throughput, router
 * entropy, load imbalance and experts per token per layer, against the step, the tokens
 * seen or the wall-clock time (a switch on the page); a heatmap of expert load per layer
 * over time with dead and dominant experts named next to it (train/report_experts.h); and
 * the configuration: one run's config.yaml, or the keys that differ between several runs
 * (train/report_config.h).
 *
 * One file, nothing from the network: CSS and one small inline script
 * (train/report_assets.h: hover values, the state of the switches kept in the address's
 * #fragment, reloading while the page is live). Without the script everything but hover
 * and reloading still works: the switches are CSS (radio buttons and a checkbox).
 * The page is well-formed XML (XHTML syntax inside an HTML5 document, the script holds no
 * '<' or '&') so tests can check it with an XML well-formedness checker.
 * Non-goals: reading metrics written by other programs; plotting in the browser (every
 * view is drawn here, the switches only show and hide).
 *
 * Markup contract the tests rely on:
 *   - the x switch is <input type="radio" name="x" id="x-step|x-tokens|x-time"> (x-tokens
 *     checked; x-time disabled, with <p class="note" id="no-time"> saying why, when no run
 *     logged METRIC_TIME), the smoothing switch <input type="checkbox" id="ema">;
 *   - each line plot is drawn once per x: <svg data-plot="ID" data-x="step|tokens|time">
 *     (svg_line_plot; "time" only when some run has METRIC_TIME: seconds, minutes, hours or
 *     days since the run's first logged line) with ID in loss, aux_loss, z_loss, lr,
 *     grad_norm, tokens_per_s, router_entropy, load_imbalance, experts_per_token; a plot is
 *     left out when no run has a curve for it, and a run's curve when it does not apply:
 *     aux_loss and z_loss of a dense run or one whose values are all 0, experts_per_token
 *     of a run whose value never changes (top-k routing: K); <p class="note"
 *     id="left-out"> names what was left out and why;
 *   - each curve is one <path data-series="NAME" data-run="RUN" data-v=...> (NAME: loss,
 *     val_loss, aux_loss, z_loss, lr, grad_norm, tokens_per_s, router_entropy.lN,
 *     load_imbalance.lN, experts_per_token.lN) and, for all but lr and val_loss, one
 *     <path class="ema" data-ema="NAME" data-run="RUN"> (hidden until #ema is checked);
 *     a curve is left out when its run has no finite point for it;
 *   - each heatmap is <svg data-plot="expert_load" data-run="RUN" data-layer="N">
 *     holding E <g class="row" data-expert="e"> each with one <rect class="cell"> per
 *     time column (report_heatmap_columns(steps, E) columns, train/report_experts.h);
 *     flagged experts: ibid.;
 *   - a live page (report_write with reload_s > 0) has <meta name="moetrain-watch"
 *     content="SECONDS"/> and <p class="live">; a final page has neither;
 *   - the script sets data-report="ok" on <html> once it has run (and checked that hovering
 *     the first plot shows values), or data-report="error: ..." when it failed.
 */
#ifndef MOE_REPORT_H
#define MOE_REPORT_H

#include <stdbool.h>
#include <stddef.h>

#include "core/common.h"
#include "train/report_data.h"
#include "train/report_experts.h"   /* the heatmaps' size: report_heatmap_columns */

#define REPORT_MAX_POINTS 1000  /* per curve; longer curves are min/max downsampled (two
                                   points per pixel column of a 552 px plot area) */

/* Writes the HTML page for runs[0..n_runs) (each loaded, n >= 1) to out_path, crash-safe
 * (core/fs.h fs_atomic_*: nothing is left behind on failure, a reader sees the old page or
 * the new one) and mode 0644. reload_s > 0: a live page (`report --watch`) that reloads
 * itself every reload_s seconds; 0: the final page. Fails (-1, err naming the file, with
 * a hint). */
int report_write(const RunData *runs, int n_runs, const char *out_path, int reload_s,
                 MoeErr *err);

/* True when path starts the way every page report_write makes does: a report is derived
 * from its runs' files and can be made again at any time, so replacing one loses nothing. */
bool report_is_page(const char *path);

#endif
