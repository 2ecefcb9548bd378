/* svg.h: inline SVG plots for the report page (train/report.c): line plots with axes that
 * end at the data, log axes with ticks near the data, a legend, hover data and an EMA of
 * each curve; heatmaps coloured with viridis.
 *
 * Output is well-formed XML (every text and attribute value escaped by svg_put_esc) with
 * the data-* attributes the report's markup contract names (train/report.h). Each plot is
 * computed from borrowed arrays in one pass and written straight to the FILE.
 * A line plot's curves share one x axis; a curve longer than the plot's max_points keeps
 * each bucket's minimum and maximum y, so spikes survive downsampling; a non-finite point
 * breaks the curve (a gap). Each drawn curve carries its points' values (data-v) for the
 * page's hover script (train/report_script.h). Heatmaps use viridis (perceptually uniform,
 * readable in grey and by colour-blind readers).
 * Non-goals: interactivity in SVG itself (the page's script and CSS do it), fonts or styles
 * from the network (the page's CSS styles the classes used here: plot, heat, title, grid,
 * frame, yt, xt, xl, yl, ref, reft, legend, marks, row, cell, tick, utick, scale, ema, sm,
 * flagged, flagm).
 */
#ifndef MOE_SVG_H
#define MOE_SVG_H

#include <stddef.h>
#include <stdio.h>

/* Writes s XML-escaped (text and attribute values alike); a control character other than
 * tab and newline, which XML does not allow, becomes '?'. */
void svg_put_esc(FILE *f, const char *s);

/* One curve of a line plot. Point i is (x[i], y[i]), or (x[i], yf[i * stride]) when yf is
 * set (a column of an (n, stride) float array). All pointers borrowed. */
typedef struct SvgCurve {
    const char *series;  /* data-series */
    const char *run;     /* data-run */
    char label[160];     /* legend text */
    const double *x;     /* (n) */
    const double *y;     /* (n) when yf is NULL */
    const float *yf;     /* (n * stride) alternative float source */
    size_t n, stride;
    const char *color, *dash;   /* stroke colour; stroke-dasharray or NULL (solid) */
    int markers;         /* draw a dot per point (validation points) */
} SvgCurve;

/* Points of c with finite x and y. */
size_t svg_curve_points(const SvgCurve *c);

/* A line plot's frame. */
typedef struct SvgPlot {
    const char *id;          /* data-plot */
    const char *title;       /* heading and <title> */
    const char *ylabel;
    const char *xkind;       /* data-x: what the curves' x is ("step", "tokens", "time") */
    const char *xlabel;      /* x axis label */
    const double *yref;      /* a dashed horizontal reference line, or NULL */
    const char *yref_label;
    int logy;                /* log-scale y (linear when a value is <= 0) */
    int smooth;              /* also draw each curve without markers as its EMA */
    size_t max_points;       /* per curve; longer curves are min/max downsampled */
} SvgPlot;

#define SVG_EMA_MAX_POINTS 150  /* points of an EMA path (it is smooth: evenly sampled) */

/* <svg class="plot" data-plot=ID data-x=XKIND data-x0 data-x1 data-xlo data-xhi> (the
 * x axis: pixels x0..x1 show values xlo..xhi, linear) with, per curve of c[0..nc), one
 * <path data-series data-run data-v="x,y x,y ..."> (data-v: the drawn points' values, in
 * the order of the path's points; class "sm" when smooth applies to it) and, with smooth,
 * one <path class="ema" data-ema=SERIES data-run data-v> (svg_ema, w from svg_ema_weight);
 * and a legend. The x axis spans min(0, smallest x) .. the largest x exactly; y is padded
 * to nice ticks (linear) or by 3% (log). Nothing when nc is 0. */
void svg_line_plot(FILE *f, const SvgPlot *p, const SvgCurve *c, int nc);

/* Ticks of a log axis over [lo, hi] (0 < lo < hi) into t[0..cap), ascending; returns
 * how many. Near the data: decades when the range spans several, else the densest of
 * {1}, {1,2,5}, {1,2,3,5}, {1,2,3,4,5,6,8} (times powers of 10) that puts at least 3 ticks
 * inside, else nice linear ticks (a range like 2.1..2.4); never more than cap. */
int svg_log_ticks(double lo, double hi, double *t, int cap);

/* Exponential moving average of y[0..n) (stride apart in y, or yf when y is NULL: one of
 * them is set) into out (n): out[i] = debiased EMA with weight w of the finite values up to
 * i (s = w s + (1 - w) y, divided by 1 - w^k after k values, so the start is not pulled
 * toward 0); NaN where y[i] is not finite (a gap, as in the raw curve). 0 <= w < 1. */
void svg_ema(const double *y, const float *yf, size_t stride, size_t n, double w,
             double *out);

/* The EMA weight for a curve of n finite points: time constant max(5, n / 40) points,
 * w = 1 - 1 / tau, so a long curve is smoothed over the same share of its length. */
double svg_ema_weight(size_t n);

/* <svg class="heat" data-plot="expert_load" data-run=RUN data-layer=LAYER>: E rows
 * (<g class="row" data-expert=e>) of `columns` cells over n steps; column k averages the
 * finite values of steps [k*n/columns, (k+1)*n/columns). Value of step i, expert e:
 * share[i * stride + e]; colour scale 0..vmax with 1/E marked. step (n) must be
 * increasing for the x axis to be meaningful; n >= 1, columns >= 1. flag (E) or NULL:
 * a non-zero flag[e] draws expert e's row label in the warning colour (class "flagged")
 * with a marker right of its row (class "flagm"); the words go next to the heatmap. */
void svg_heatmap(FILE *f, const char *run, int layer, const double *step, size_t n,
                 const float *share, size_t stride, int E, size_t columns, double vmax,
                 const signed char *flag);

#endif
