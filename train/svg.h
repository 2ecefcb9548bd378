/* svg.h: inline SVG plots for the report page (train/report.c): line plots with nice axes
 * and a legend, and heatmaps coloured with viridis.
 *
 * Output is well-formed XML (every text and attribute value escaped by svg_put_esc) with
 * the data-* attributes the report's markup contract names (train/report.h). Each plot is
 * computed from borrowed arrays in one pass and written straight to the FILE.
 * A line plot's curves share one x axis; a curve longer than the plot's max_points keeps
 * each bucket's minimum and maximum y, so spikes survive downsampling; a non-finite point
 * breaks the curve (a gap). Heatmaps use viridis (perceptually uniform, readable in grey
 * and by colour-blind readers).
 * Non-goals: interactivity, fonts or styles from the network (the page's CSS styles the
 * classes used here: plot, heat, title, grid, frame, yt, xt, xl, yl, ref, reft, legend,
 * marks, row, cell, tick, utick, scale).
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
    const char *ylabel;      /* the x axis is always "tokens seen" */
    const double *yref;      /* a dashed horizontal reference line, or NULL */
    const char *yref_label;
    int logy;                /* log-scale y (linear when a value is <= 0) */
    size_t max_points;       /* per curve; longer curves are min/max downsampled */
} SvgPlot;

/* <svg class="plot" data-plot=ID> with one <path data-series data-run> per curve of
 * c[0..nc) and a legend; nothing when nc is 0. */
void svg_line_plot(FILE *f, const SvgPlot *p, const SvgCurve *c, int nc);

/* <svg class="heat" data-plot="expert_load" data-run=RUN data-layer=LAYER>: E rows
 * (<g class="row" data-expert=e>) of `columns` cells over n steps; column k averages the
 * finite values of steps [k*n/columns, (k+1)*n/columns). Value of step i, expert e:
 * share[i * stride + e]; colour scale 0..vmax with 1/E marked. step (n) must be
 * increasing for the x axis to be meaningful; n >= 1, columns >= 1. */
void svg_heatmap(FILE *f, const char *run, int layer, const double *step, size_t n,
                 const float *share, size_t stride, int E, size_t columns, double vmax);

#endif
