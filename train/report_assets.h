/* report_assets.h: the report page's inline style sheet and script (train/report.h).
 *
 * REPORT_CSS styles the page and the SVG classes of train/svg.h, and does the switches
 * without any script: the radio buttons #x-step, #x-tokens, #x-time show the line plots
 * drawn against that x (svg[data-x]) and hide the others; the checkbox #ema shows the EMA
 * paths (path.ema) and fades the raw curves they smooth (path.sm).
 *
 * REPORT_JS, run at the end of the body:
 *   - hover: over a line plot, a cursor line and a box (#tip) with the x value and each
 *     visible curve's value at the point nearest the pointer (from the paths' data-v);
 *   - keeps the switches in the address's #fragment ("#x=step;ema"), so a reload (and a
 *     copied link) shows the same view; data-view on <html> holds the same text;
 *   - while the page is live (<meta name="moetrain-watch" content="S">) reloads it every
 *     S seconds;
 *   - checks itself once: hovers the middle of the first visible plot and sets
 *     data-report="ok" on <html> when that showed values, else data-report="error: ...",
 *     and data-hovered="PLOT@X: N values" (what it hovered and saw);
 *     a later uncaught error sets data-report-error.
 * Both are plain text for an XHTML-compatible page: no '<' and no '&' (tests check).
 * Non-goals: drawing (every view is drawn by train/svg.c), anything from the network.
 */
#ifndef MOE_REPORT_ASSETS_H
#define MOE_REPORT_ASSETS_H

extern const char REPORT_CSS[];
extern const char REPORT_JS[];

#endif
