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

/* An axis over [lo, hi]: ticks t[0..n) (at multiples of step for a linear axis). */
typedef struct {
    double lo, hi, step;
    int n;
    double t[24];
} Axis;

/* 1, 2 or 5 times a power of 10, close to raw. */
static double nice_step(double raw) {
    double mag = pow(10.0, floor(log10(raw)));
    double fr = raw / mag;
    return (fr < 1.5 ? 1.0 : fr < 3.0 ? 2.0 : fr < 7.0 ? 5.0 : 10.0) * mag;
}

/* A range that is not empty: an empty or non-finite one is widened around its value. */
static void widen(double *lo, double *hi) {
    if (!isfinite(*lo) || !isfinite(*hi)) *lo = 0, *hi = 1;
    if (!(*hi > *lo)) {
        double pad = fabs(*lo) > 0 ? fabs(*lo) * 0.1 : 1.0;
        *lo -= pad;
        *hi += pad;
    }
}

/* Ticks at the multiples of a->step inside [a->lo, a->hi]. */
static void axis_ticks(Axis *a) {
    a->n = 0;
    double first = ceil(a->lo / a->step - 1e-9);
    for (int i = 0; a->n < 24; i++) {
        double v = (first + i) * a->step;
        if (v > a->hi + a->step * 1e-6) break;
        if (fabs(v) < a->step * 1e-6) v = 0;
        a->t[a->n++] = v;
    }
}

/* Nice axis covering [lo, hi] with about `target` ticks at 1, 2 or 5 times a power of 10;
 * the ends are rounded out to ticks (y axes: the curves keep a margin). */
static void axis_nice(Axis *a, double lo, double hi, int target) {
    widen(&lo, &hi);
    a->step = nice_step((hi - lo) / target);
    a->lo = floor(lo / a->step + 1e-9) * a->step;
    a->hi = ceil(hi / a->step - 1e-9) * a->step;
    axis_ticks(a);
}

/* The same ticks, but the axis spans exactly [lo, hi] (x axes end at the data). */
static void axis_exact(Axis *a, double lo, double hi, int target) {
    widen(&lo, &hi);
    a->step = nice_step((hi - lo) / target);
    a->lo = lo;
    a->hi = hi;
    axis_ticks(a);
}

int svg_log_ticks(double lo, double hi, double *t, int cap) {
    static const double SETS[4][7] = {{1}, {1, 2, 5}, {1, 2, 3, 5}, {1, 2, 3, 4, 5, 6, 8}};
    static const int SET_N[4] = {1, 3, 4, 7};
    if (!(lo > 0) || !(hi > lo) || !isfinite(hi) || cap <= 0) return 0;
    int d0 = (int)floor(log10(lo)) - 1, d1 = (int)floor(log10(hi)) + 1;
    double eps = 1e-9 * hi;
    for (int s = 0; s < 4; s++) {
        int n = 0;
        for (int d = d0; d <= d1; d++)
            for (int k = 0; k < SET_N[s]; k++) {
                double v = SETS[s][k] * pow(10.0, d);
                n += v >= lo - eps && v <= hi + eps;
            }
        if (n < 3) continue;   /* too sparse: try a denser set */
        /* decades over a wide range: every k-th one, at most 8 */
        int every = s == 0 ? (n + 7) / 8 : 1, m = 0, seen = 0;
        for (int d = d0; d <= d1; d++)
            for (int k = 0; k < SET_N[s]; k++) {
                double v = SETS[s][k] * pow(10.0, d);
                if (v < lo - eps || v > hi + eps) continue;
                if (seen++ % every == 0 && m < cap) t[m++] = v;
            }
        return m;
    }
    /* less than a third of a decade: nice linear ticks */
    Axis a;
    axis_exact(&a, lo, hi, 4);
    int m = 0;
    for (int i = 0; i < a.n && m < cap; i++)
        if (a.t[i] > 0) t[m++] = a.t[i];
    return m;
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

/* Log tick label: the value itself (3, 0.02, 1e-05), SI suffix from 10k on. */
static void fmt_log_tick(char *b, size_t n, double v) {
    if (v >= 1e9) snprintf(b, n, "%.4gG", v / 1e9);
    else if (v >= 1e6) snprintf(b, n, "%.4gM", v / 1e6);
    else if (v >= 1e4) snprintf(b, n, "%.4gk", v / 1e3);
    else snprintf(b, n, "%.4g", v);
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

/* Legend entry width: line, gap, text at about 7 px a character, gap. */
static int legend_width(const SvgCurve *c) { return 40 + 7 * (int)strlen(c->label); }

/* Legend layout: the entries flow left to right and wrap; returns the number of rows. */
static int legend_rows(const SvgCurve *c, int nc) {
    int rows = nc ? 1 : 0, x = ML;
    for (int i = 0; i < nc; i++) {
        int w = legend_width(&c[i]);
        if (x + w > PW - MR && x > ML) rows++, x = ML;
        x += w;
    }
    return rows;
}

/* Value -> pixel mapping of one line plot. */
typedef struct {
    Axis ax, ay;
    int lg;              /* log y */
    double llo, lhi;     /* log10 range of y when lg */
    double x0, x1, y0, y1;
} Frame;

static double fx(const Frame *fr, double v) {
    return fr->x0 + (v - fr->ax.lo) / (fr->ax.hi - fr->ax.lo) * (fr->x1 - fr->x0);
}

static double fy(const Frame *fr, double v) {
    double t = fr->lg ? (log10(v) - fr->llo) / (fr->lhi - fr->llo)
                      : (v - fr->ay.lo) / (fr->ay.hi - fr->ay.lo);
    return fr->y0 - t * (fr->y0 - fr->y1);
}

/* The axes from the curves' finite points: x exactly min(0, smallest)..largest, y nice
 * (linear) or padded by 3% of the decades (log, with ticks from svg_log_ticks). */
static void frame_init(Frame *fr, const SvgPlot *p, const SvgCurve *c, int nc) {
    double xlo = HUGE_VAL, xhi = -HUGE_VAL, ylo = HUGE_VAL, yhi = -HUGE_VAL;
    for (int k = 0; k < nc; k++)
        for (size_t i = 0; i < c[k].n; i++) {
            double x = c[k].x[i], y = cy(&c[k], i);
            if (!isfinite(x) || !isfinite(y)) continue;
            xlo = fmin(xlo, x), xhi = fmax(xhi, x), ylo = fmin(ylo, y), yhi = fmax(yhi, y);
        }
    if (p->yref) ylo = fmin(ylo, *p->yref), yhi = fmax(yhi, *p->yref);
    axis_exact(&fr->ax, fmin(xlo, 0), xhi, 6);
    axis_nice(&fr->ay, ylo, yhi, 5);
    fr->lg = p->logy && ylo > 0;
    fr->llo = 0, fr->lhi = 1;
    if (fr->lg) {
        double pad = yhi > ylo ? 0.03 * (log10(yhi) - log10(ylo)) : 0.02;
        fr->llo = log10(ylo) - pad, fr->lhi = log10(yhi) + pad;
        fr->ay.n = svg_log_ticks(pow(10.0, fr->llo), pow(10.0, fr->lhi), fr->ay.t, 24);
    }
    fr->x0 = ML, fr->x1 = PW - MR, fr->y0 = MT + PH, fr->y1 = MT;
}

static void frame_axes(FILE *f, const Frame *fr, const SvgPlot *p) {
    fprintf(f, "<g class=\"grid\">\n");
    char b[64];
    for (int i = 0; i < fr->ay.n; i++) {
        double y = fy(fr, fr->ay.t[i]);
        if (fr->lg) fmt_log_tick(b, sizeof b, fr->ay.t[i]);
        else fmt_tick(b, sizeof b, fr->ay.t[i], &fr->ay);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
                   "<text class=\"yt\" x=\"%.1f\" y=\"%.1f\">%s</text>\n",
                fr->x0, y, fr->x1, y, fr->x0 - 6, y + 4, b);
    }
    for (int i = 0; i < fr->ax.n; i++) {
        double x = fx(fr, fr->ax.t[i]);
        fmt_tick(b, sizeof b, fr->ax.t[i], &fr->ax);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
                   "<text class=\"xt\" x=\"%.1f\" y=\"%.1f\">%s</text>\n",
                x, fr->y1, x, fr->y0, x, fr->y0 + 16, b);
    }
    fprintf(f, "</g>\n<rect class=\"frame\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
               "height=\"%.1f\"/>\n", fr->x0, fr->y1, fr->x1 - fr->x0, fr->y0 - fr->y1);
    fprintf(f, "<text class=\"xl\" x=\"%.1f\" y=\"%.1f\">", (fr->x0 + fr->x1) / 2,
            fr->y0 + 36);
    svg_put_esc(f, p->xlabel ? p->xlabel : "tokens seen");
    fprintf(f, "</text>\n<text class=\"yl\" transform=\"translate(16 %.1f) rotate(-90)\">",
            (fr->y0 + fr->y1) / 2);
    svg_put_esc(f, p->ylabel);
    fprintf(f, "</text>\n");
    if (p->yref) {
        double y = fy(fr, *p->yref);
        fprintf(f, "<line class=\"ref\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
                   "<text class=\"reft\" x=\"%.1f\" y=\"%.1f\">",
                fr->x0, y, fr->x1, y, fr->x1 - 4, y - 4);
        svg_put_esc(f, p->yref_label);
        fprintf(f, "</text>\n");
    }
}

/* The opening of a curve's <path>: series attribute, run, stroke. */
static void path_open(FILE *f, const char *cls, const char *key, const SvgCurve *c) {
    fprintf(f, "<path%s%s%s %s=\"", cls ? " class=\"" : "", cls ? cls : "", cls ? "\"" : "",
            key);
    svg_put_esc(f, c->series);
    fprintf(f, "\" data-run=\"");
    svg_put_esc(f, c->run);
    fprintf(f, "\" stroke=\"%s\"", c->color);
    if (c->dash) fprintf(f, " stroke-dasharray=\"%s\"", c->dash);
}

/* The raw curve: points idx[0..m) (non-finite ones break the path), then data-v. */
static void raw_path(FILE *f, const Frame *fr, const SvgCurve *c, const size_t *idx,
                     size_t m, int smooth) {
    path_open(f, smooth ? "sm" : NULL, "data-series", c);
    fprintf(f, " d=\"");
    int pen = 0; /* 0: next point starts a new sub-path */
    for (size_t j = 0; j < m; j++) {
        size_t i = idx[j];
        double x = c->x[i], y = cy(c, i);
        if (!isfinite(x) || !isfinite(y)) {
            pen = 0;
            continue;
        }
        /* a lone point gets a zero-length segment so the round cap draws a dot */
        int lone = !pen && (j + 1 >= m || !isfinite(cy(c, idx[j + 1])) ||
                            !isfinite(c->x[idx[j + 1]]));
        fprintf(f, "%s%.1f %.1f%s", pen ? "L" : "M", fx(fr, x), fy(fr, y), lone ? "h0.01" : "");
        pen = 1;
    }
    fprintf(f, "\" data-v=\"");
    int first = 1;
    for (size_t j = 0; j < m; j++) {
        double x = c->x[idx[j]], y = cy(c, idx[j]);
        if (!isfinite(x) || !isfinite(y)) continue;
        fprintf(f, "%s%.9g,%.5g", first ? "" : " ", x, y);
        first = 0;
    }
    fprintf(f, "\"><title>");
    svg_put_esc(f, c->label);
    fprintf(f, "</title></path>\n");
    if (c->markers) {
        fprintf(f, "<g class=\"marks\" fill=\"%s\">", c->color);
        for (size_t j = 0; j < m; j++) {
            size_t i = idx[j];
            if (!isfinite(c->x[i]) || !isfinite(cy(c, i))) continue;
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\"/>", fx(fr, c->x[i]),
                    fy(fr, cy(c, i)));
        }
        fprintf(f, "</g>\n");
    }
}

/* The curve's EMA, evenly sampled to at most SVG_EMA_MAX_POINTS points; a step without a
 * value is passed over (the average carries on), not a gap. */
static void ema_path(FILE *f, const Frame *fr, const SvgCurve *c) {
    double *e = moe_malloc(c->n * sizeof *e);
    svg_ema(c->yf ? NULL : c->y, c->yf, c->yf ? c->stride : 1, c->n,
            svg_ema_weight(svg_curve_points(c)), e);
    size_t m = c->n < SVG_EMA_MAX_POINTS ? c->n : SVG_EMA_MAX_POINTS;
    for (int pass = 0; pass < 2; pass++) {   /* 0: the path, 1: its values */
        if (pass == 0) {
            path_open(f, "ema", "data-ema", c);
            fprintf(f, " d=\"");
        } else {
            fprintf(f, "\" data-v=\"");
        }
        int first = 1;
        for (size_t j = 0; j < m; j++) {
            size_t i = m > 1 ? j * (c->n - 1) / (m - 1) : 0;
            if (!isfinite(c->x[i]) || !isfinite(e[i])) continue;
            if (pass == 0) fprintf(f, "%s%.1f %.1f", first ? "M" : "L", fx(fr, c->x[i]),
                                   fy(fr, e[i]));
            else fprintf(f, "%s%.9g,%.5g", first ? "" : " ", c->x[i], e[i]);
            first = 0;
        }
    }
    fprintf(f, "\"/>\n");
    moe_free(e);
}

void svg_line_plot(FILE *f, const SvgPlot *p, const SvgCurve *c, int nc) {
    if (nc == 0) return;
    Frame fr;
    frame_init(&fr, p, c, nc);
    int H = MT + PH + MB + legend_rows(c, nc) * LEG_ROW + 6;
    fprintf(f, "<svg class=\"plot\" data-plot=\"%s\" data-x=\"%s\" data-x0=\"%.1f\" "
               "data-x1=\"%.1f\" data-xlo=\"%.9g\" data-xhi=\"%.9g\" width=\"%d\" "
               "height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\">\n",
            p->id, p->xkind ? p->xkind : "tokens", fr.x0, fr.x1, fr.ax.lo, fr.ax.hi, PW, H,
            PW, H);
    fprintf(f, "<title>");
    svg_put_esc(f, p->title);
    fprintf(f, "</title>\n<text class=\"title\" x=\"%d\" y=\"22\">", ML);
    svg_put_esc(f, p->title);
    fprintf(f, "</text>\n");
    frame_axes(f, &fr, p);
    size_t *idx = moe_malloc(p->max_points * sizeof *idx);
    for (int k = 0; k < nc; k++) {
        int smooth = p->smooth && !c[k].markers;
        raw_path(f, &fr, &c[k], idx, pick_points(&c[k], p->max_points, idx), smooth);
        if (smooth) ema_path(f, &fr, &c[k]);
    }
    moe_free(idx);
    /* legend below the x label */
    int lx = ML, ly = MT + PH + MB + 8;
    fprintf(f, "<g class=\"legend\">\n");
    for (int k = 0; k < nc; k++) {
        int w = legend_width(&c[k]);
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
}

void svg_ema(const double *y, const float *yf, size_t stride, size_t n, double w,
             double *out) {
    double s = 0, z = 0;   /* running sum and the weight it holds (1 - w^k) */
    for (size_t i = 0; i < n; i++) {
        double v = y ? y[i * stride] : (double)yf[i * stride];
        if (!isfinite(v)) {
            out[i] = (double)NAN;
            continue;
        }
        s = w * s + (1 - w) * v;
        z = w * z + (1 - w);
        out[i] = s / z;
    }
}

double svg_ema_weight(size_t n) {
    double tau = fmax(5.0, (double)n / 40.0);
    return 1.0 - 1.0 / tau;
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
                 const float *share, size_t stride, int E, size_t columns, double vmax,
                 const signed char *flag) {
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
        int flagged = flag && flag[e];
        if (E <= 32 || e % (E / 16) == 0 || flagged)
            fprintf(f, "<text class=\"yt%s\" x=\"%.1f\" y=\"%.1f\">expert %d</text>\n",
                    flagged ? " flagged" : "", x0 - 6, y + rh / 2 + 4, e);
        if (flagged)   /* a left-pointing triangle right of the row */
            fprintf(f, "<text class=\"flagm\" data-expert=\"%d\" x=\"%.1f\" y=\"%.1f\">"
                       "&#9664;</text>\n", e, x1 + 3, y + rh / 2 + 4);
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
