/* svg.c: see svg.h. */
#include "train/svg.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/common.h"

void svg_put_esc(FILE *f, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default:
            /* control characters other than tab/newline are not allowed in XML */
            if ((unsigned char)*s < 0x20 && *s != '\n' && *s != '\t') fputc('?', f);
            else fputc(*s, f);
        }
    }
}

/* An axis over [lo, hi]: ticks t[0..n) at multiples of step. */
typedef struct {
    double lo, hi, step;
    int n;
    double t[24];
} Axis;

/* Nice axis covering [lo, hi] with about `target` ticks at 1, 2 or 5 times a power of 10. */
static void axis_nice(Axis *a, double lo, double hi, int target) {
    if (!isfinite(lo) || !isfinite(hi)) lo = 0, hi = 1;
    if (!(hi > lo)) {
        double pad = fabs(lo) > 0 ? fabs(lo) * 0.1 : 1.0;
        lo -= pad;
        hi += pad;
    }
    double raw = (hi - lo) / target;
    double mag = pow(10.0, floor(log10(raw)));
    double fr = raw / mag;
    a->step = (fr < 1.5 ? 1.0 : fr < 3.0 ? 2.0 : fr < 7.0 ? 5.0 : 10.0) * mag;
    a->lo = floor(lo / a->step + 1e-9) * a->step;
    a->hi = ceil(hi / a->step - 1e-9) * a->step;
    a->n = 0;
    for (int i = 0; a->n < 24; i++) {
        double v = a->lo + i * a->step;
        if (v > a->hi + a->step * 1e-6) break;
        if (fabs(v) < a->step * 1e-6) v = 0;
        a->t[a->n++] = v;
    }
}

/* Tick label: SI suffix for large ranges, fixed decimals from the tick step otherwise. */
static void fmt_tick(char *b, size_t n, double v, const Axis *a) {
    double amax = fmax(fabs(a->lo), fabs(a->hi)), s = 1;
    const char *suf = "";
    if (amax >= 1e9) s = 1e9, suf = "G";
    else if (amax >= 1e6) s = 1e6, suf = "M";
    else if (amax >= 1e4) s = 1e3, suf = "k";
    double st = a->step / s;
    int dec = st >= 1 ? 0 : (int)ceil(-log10(st) - 1e-9);
    if (v == 0) {
        snprintf(b, n, "0");
    } else if (dec > 6) {
        /* tiny values: mantissa digits enough to tell neighbouring ticks apart */
        int digits = dec + (int)floor(log10(amax));
        snprintf(b, n, "%.*e", digits > 0 ? digits : 0, v);
    } else {
        snprintf(b, n, "%.*f%s", dec, v / s, suf);
    }
}

static double cy(const SvgCurve *c, size_t i) {
    return c->yf ? (double)c->yf[i * c->stride] : c->y[i];
}

size_t svg_curve_points(const SvgCurve *c) {
    size_t k = 0;
    for (size_t i = 0; i < c->n; i++)
        if (isfinite(c->x[i]) && isfinite(cy(c, i))) k++;
    return k;
}

/* Indices to draw, in order: every point when n <= max_points (non-finite ones included so
 * the path breaks there), else each bucket's min and max finite y.
 * idx has room for min(n, max_points) entries. */
static size_t pick_points(const SvgCurve *c, size_t max_points, size_t *idx) {
    if (c->n <= max_points) {
        for (size_t i = 0; i < c->n; i++) idx[i] = i;
        return c->n;
    }
    size_t nb = max_points / 2, k = 0;
    for (size_t b = 0; b < nb; b++) {
        size_t i0 = b * c->n / nb, i1 = (b + 1) * c->n / nb;
        size_t imin = SIZE_MAX, imax = SIZE_MAX;
        for (size_t i = i0; i < i1; i++) {
            double v = cy(c, i);
            if (!isfinite(v) || !isfinite(c->x[i])) continue;
            if (imin == SIZE_MAX || v < cy(c, imin)) imin = i;
            if (imax == SIZE_MAX || v > cy(c, imax)) imax = i;
        }
        if (imin == SIZE_MAX) continue;
        if (imin == imax) idx[k++] = imin;
        else if (imin < imax) idx[k++] = imin, idx[k++] = imax;
        else idx[k++] = imax, idx[k++] = imin;
    }
    return k;
}

#define PW 640         /* line plot width */
#define PH 230         /* plot area height */
#define ML 70          /* margins: left (y tick labels), right, top (title) */
#define MR 18
#define MT 36
#define MB 46          /* below the plot area: x ticks and x label */
#define LEG_ROW 18

/* Legend layout: the entries flow left to right and wrap; returns the number of rows. */
static int legend_rows(const SvgCurve *c, int nc) {
    int rows = nc ? 1 : 0, x = ML;
    for (int i = 0; i < nc; i++) {
        int w = 34 + 7 * (int)strlen(c[i].label);
        if (x + w > PW - MR && x > ML) rows++, x = ML;
        x += w;
    }
    return rows;
}

/* With logy the ticks are the nice linear values inside the range. */
void svg_line_plot(FILE *f, const SvgPlot *p, const SvgCurve *c, int nc) {
    if (nc == 0) return;
    const double *yref = p->yref;
    double xlo = HUGE_VAL, xhi = -HUGE_VAL, ylo = HUGE_VAL, yhi = -HUGE_VAL;
    for (int k = 0; k < nc; k++)
        for (size_t i = 0; i < c[k].n; i++) {
            double x = c[k].x[i], y = cy(&c[k], i);
            if (!isfinite(x) || !isfinite(y)) continue;
            xlo = fmin(xlo, x), xhi = fmax(xhi, x), ylo = fmin(ylo, y), yhi = fmax(yhi, y);
        }
    if (yref) ylo = fmin(ylo, *yref), yhi = fmax(yhi, *yref);
    Axis ax, ay;
    axis_nice(&ax, fmin(xlo, 0), xhi, 6);
    axis_nice(&ay, ylo, yhi, 5);
    int lg = p->logy && ylo > 0;
    double llo = 0, lhi = 1;
    if (lg) {
        axis_nice(&ay, ylo, yhi, 4);
        double pad = log10(yhi) > log10(ylo) ? 0.03 * (log10(yhi) - log10(ylo)) : 0.02;
        llo = log10(ylo) - pad, lhi = log10(yhi) + pad;
        int k = 0; /* keep the ticks inside the padded range */
        for (int i = 0; i < ay.n; i++)
            if (ay.t[i] > 0 && log10(ay.t[i]) >= llo && log10(ay.t[i]) <= lhi)
                ay.t[k++] = ay.t[i];
        ay.n = k;
    }
    int rows = legend_rows(c, nc);
    int H = MT + PH + MB + rows * LEG_ROW + 6;
    double x0 = ML, x1 = PW - MR, y0 = MT + PH, y1 = MT;
#define SX(v) (x0 + ((v) - ax.lo) / (ax.hi - ax.lo) * (x1 - x0))
#define SY(v) (y0 - (lg ? (log10(v) - llo) / (lhi - llo) : ((v) - ay.lo) / (ay.hi - ay.lo)) \
                          * (y0 - y1))
    fprintf(f, "<svg class=\"plot\" data-plot=\"%s\" width=\"%d\" height=\"%d\" "
               "viewBox=\"0 0 %d %d\" role=\"img\">\n", p->id, PW, H, PW, H);
    fprintf(f, "<title>");
    svg_put_esc(f, p->title);
    fprintf(f, "</title>\n<text class=\"title\" x=\"%d\" y=\"22\">", ML);
    svg_put_esc(f, p->title);
    fprintf(f, "</text>\n<g class=\"grid\">\n");
    char b[64];
    for (int i = 0; i < ay.n; i++) {
        double y = SY(ay.t[i]);
        fmt_tick(b, sizeof b, ay.t[i], &ay);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
                   "<text class=\"yt\" x=\"%.1f\" y=\"%.1f\">%s</text>\n",
                x0, y, x1, y, x0 - 6, y + 4, b);
    }
    for (int i = 0; i < ax.n; i++) {
        double x = SX(ax.t[i]);
        fmt_tick(b, sizeof b, ax.t[i], &ax);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
                   "<text class=\"xt\" x=\"%.1f\" y=\"%.1f\">%s</text>\n",
                x, y1, x, y0, x, y0 + 16, b);
    }
    fprintf(f, "</g>\n<rect class=\"frame\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
               "height=\"%.1f\"/>\n", x0, y1, x1 - x0, y0 - y1);
    fprintf(f, "<text class=\"xl\" x=\"%.1f\" y=\"%.1f\">tokens seen</text>\n",
            (x0 + x1) / 2, y0 + 36);
    fprintf(f, "<text class=\"yl\" transform=\"translate(16 %.1f) rotate(-90)\">",
            (y0 + y1) / 2);
    svg_put_esc(f, p->ylabel);
    fprintf(f, "</text>\n");
    if (yref) {
        fprintf(f, "<line class=\"ref\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
                   "<text class=\"reft\" x=\"%.1f\" y=\"%.1f\">",
                x0, SY(*yref), x1, SY(*yref), x1 - 4, SY(*yref) - 4);
        svg_put_esc(f, p->yref_label);
        fprintf(f, "</text>\n");
    }
    size_t *idx = moe_malloc(p->max_points * sizeof *idx);
    for (int k = 0; k < nc; k++) {
        size_t m = pick_points(&c[k], p->max_points, idx);
        fprintf(f, "<path data-series=\"%s\" data-run=\"", c[k].series);
        svg_put_esc(f, c[k].run);
        fprintf(f, "\" stroke=\"%s\"", c[k].color);
        if (c[k].dash) fprintf(f, " stroke-dasharray=\"%s\"", c[k].dash);
        fprintf(f, " d=\"");
        int pen = 0; /* 0: next point starts a new sub-path */
        for (size_t j = 0; j < m; j++) {
            size_t i = idx[j];
            double x = c[k].x[i], y = cy(&c[k], i);
            if (!isfinite(x) || !isfinite(y)) {
                pen = 0;
                continue;
            }
            /* a lone point gets a zero-length segment so the round cap draws a dot */
            int lone = !pen && (j + 1 >= m || !isfinite(cy(&c[k], idx[j + 1])) ||
                                !isfinite(c[k].x[idx[j + 1]]));
            fprintf(f, "%s%.1f %.1f%s", pen ? "L" : "M", SX(x), SY(y), lone ? "h0.01" : "");
            pen = 1;
        }
        fprintf(f, "\"><title>");
        svg_put_esc(f, c[k].label);
        fprintf(f, "</title></path>\n");
        if (c[k].markers) {
            fprintf(f, "<g class=\"marks\" fill=\"%s\">", c[k].color);
            for (size_t j = 0; j < m; j++) {
                size_t i = idx[j];
                if (!isfinite(c[k].x[i]) || !isfinite(cy(&c[k], i))) continue;
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\"/>", SX(c[k].x[i]),
                        SY(cy(&c[k], i)));
            }
            fprintf(f, "</g>\n");
        }
    }
    moe_free(idx);
    /* legend below the x label */
    int lx = ML, ly = MT + PH + MB + 8;
    fprintf(f, "<g class=\"legend\">\n");
    for (int k = 0; k < nc; k++) {
        int w = 34 + 7 * (int)strlen(c[k].label);
        if (lx + w > PW - MR && lx > ML) lx = ML, ly += LEG_ROW;
        fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\"", lx, ly,
                lx + 24, ly, c[k].color);
        if (c[k].dash) fprintf(f, " stroke-dasharray=\"%s\"", c[k].dash);
        fprintf(f, "/>");
        if (c[k].markers)
            fprintf(f, "<circle cx=\"%d\" cy=\"%d\" r=\"3\" fill=\"%s\"/>", lx + 12, ly,
                    c[k].color);
        fprintf(f, "<text x=\"%d\" y=\"%d\">", lx + 30, ly + 4);
        svg_put_esc(f, c[k].label);
        fprintf(f, "</text>\n");
        lx += w;
    }
    fprintf(f, "</g>\n</svg>\n");
#undef SX
#undef SY
}

/* Viridis, 9 stops (matplotlib's table sampled at k/8). */
static void viridis(double t, char *b, size_t n) {
    static const unsigned char V[9][3] = {
        {68, 1, 84},    {71, 44, 122},  {59, 82, 139},  {44, 114, 142}, {33, 145, 140},
        {40, 174, 128}, {94, 201, 98},  {173, 220, 48}, {253, 231, 37}};
    if (!isfinite(t)) {
        snprintf(b, n, "#dddddd");
        return;
    }
    t = fmin(fmax(t, 0.0), 1.0) * 8.0;
    int i = (int)t;
    if (i > 7) i = 7;
    double u = t - i;
    int rgb[3];
    for (int k = 0; k < 3; k++) rgb[k] = (int)lround(V[i][k] + u * (V[i + 1][k] - V[i][k]));
    snprintf(b, n, "#%02x%02x%02x", rgb[0], rgb[1], rgb[2]);
}

#define HW 640   /* heatmap width */
#define HMB 62   /* below the heatmap: step ticks, label, colour bar */

void svg_heatmap(FILE *f, const char *run, int layer, const double *step, size_t n,
                 const float *share, size_t stride, int E, size_t columns, double vmax) {
    const int l = layer;
    const size_t C = columns;
    double rh = fmin(22.0, fmax(8.0, 180.0 / E));
    int H = MT + (int)ceil(rh * E) + HMB;
    double x0 = ML, x1 = HW - MR, y1 = MT, y0 = MT + rh * E;
    double slo = step[0], shi = step[n - 1] + 1;
    if (!(shi > slo)) shi = slo + 1; /* steps out of order: keep the scale finite */
    Axis ax;
    axis_nice(&ax, slo, shi, 6);
    /* the cells fill the frame exactly; ticks outside the data range are dropped */
#define HX(v) (x0 + ((v) - slo) / (shi - slo) * (x1 - x0))
    fprintf(f, "<svg class=\"heat\" data-plot=\"expert_load\" data-run=\"");
    svg_put_esc(f, run);
    fprintf(f, "\" data-layer=\"%d\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "role=\"img\">\n<title>", l, HW, H, HW, H);
    svg_put_esc(f, run);
    fprintf(f, ": expert load, layer %d</title>\n<text class=\"title\" x=\"%d\" y=\"22\">",
            l, ML);
    svg_put_esc(f, run);
    fprintf(f, " &#183; layer %d &#183; share of routed slots per expert</text>\n", l);
    char col[16], b[64];
    for (int e = 0; e < E; e++) {
        double y = y1 + rh * e;
        fprintf(f, "<g class=\"row\" data-expert=\"%d\">", e);
        for (size_t c = 0; c < C; c++) {
            size_t i0 = c * n / C, i1 = (c + 1) * n / C;
            double sum = 0;
            size_t k = 0;
            for (size_t i = i0; i < i1; i++) {
                float v = share[i * stride + (size_t)e];
                if (isfinite(v)) sum += (double)v, k++;
            }
            viridis(k ? sum / (double)k / vmax : (double)NAN, col, sizeof col);
            double xa = HX(step[i0]), xb = i1 < n ? HX(step[i1]) : x1;
            /* +0.4 px overlap hides anti-aliasing seams between neighbouring cells */
            fprintf(f, "<rect class=\"cell\" x=\"%.1f\" y=\"%.1f\" width=\"%.2f\" "
                       "height=\"%.2f\" fill=\"%s\"/>", xa, y, fmax(xb - xa, 0.1) + 0.4,
                    rh + (e + 1 < E ? 0.4 : 0.0), col);
        }
        fprintf(f, "</g>\n");
        if (E <= 32 || e % (E / 16) == 0)
            fprintf(f, "<text class=\"yt\" x=\"%.1f\" y=\"%.1f\">expert %d</text>\n", x0 - 6,
                    y + rh / 2 + 4, e);
    }
    fprintf(f, "<rect class=\"frame\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
               "height=\"%.1f\"/>\n", x0, y1, x1 - x0, y0 - y1);
    for (int i = 0; i < ax.n; i++) {
        if (ax.t[i] < slo || ax.t[i] > shi) continue;
        double x = HX(ax.t[i]);
        fmt_tick(b, sizeof b, ax.t[i], &ax);
        fprintf(f, "<line class=\"tick\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
                   "<text class=\"xt\" x=\"%.1f\" y=\"%.1f\">%s</text>\n",
                x, y0, x, y0 + 4, x, y0 + 16, b);
    }
    fprintf(f, "<text class=\"xl\" x=\"%.1f\" y=\"%.1f\">step</text>\n", x0 + 60, y0 + 36);
    /* colour bar: 0 .. vmax, with the uniform share 1/E marked */
    double bx0 = x1 - 240, bx1 = x1, by = y0 + 26;
    for (int k = 0; k < 48; k++) {
        viridis((k + 0.5) / 48.0, col, sizeof col);
        fprintf(f, "<rect class=\"scale\" x=\"%.1f\" y=\"%.1f\" width=\"%.2f\" height=\"9\" "
                   "fill=\"%s\"/>", bx0 + (bx1 - bx0) * k / 48.0, by, (bx1 - bx0) / 48.0 + 0.4,
                col);
    }
    double xu = bx0 + (bx1 - bx0) * (1.0 / E) / vmax;
    fprintf(f, "\n<line class=\"utick\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" "
               "y2=\"%.1f\"/>", xu, by - 4, xu, by + 13);
    fprintf(f, "<text class=\"xt\" x=\"%.1f\" y=\"%.1f\">0</text>", bx0, by + 22);
    fprintf(f, "<text class=\"xt\" x=\"%.1f\" y=\"%.1f\">1/E = %.3g</text>", xu, by + 22,
            1.0 / E);
    fprintf(f, "<text class=\"xt\" x=\"%.1f\" y=\"%.1f\">%.3g</text>", bx1, by + 22, vmax);
    fprintf(f, "<text class=\"yt\" x=\"%.1f\" y=\"%.1f\">share</text>\n</svg>\n", bx0 - 8,
            by + 9);
#undef HX
}
