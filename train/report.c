/* report.c: `moetrain report`: metrics.jsonl -> one HTML page with inline SVG plots.
 *
 * Reading: each line of metrics.jsonl is parsed by train/json.c; objects with "loss" are
 * steps, objects with "val_loss" are validation points. Columns grow by doubling.
 * Drawing: every plot is computed from the data in one pass and written straight to the
 * output file. Line plots share one x axis quantity (tokens seen) so runs with different
 * batch sizes compare; curves longer than REPORT_MAX_POINTS keep each bucket's min and
 * max (spikes survive downsampling). Heatmaps average steps into at most
 * REPORT_MAX_COLUMNS columns and colour the share of routed slots with viridis
 * (perceptually uniform, readable in grey and by colour-blind readers); curves use the
 * Okabe-Ito palette for the same reason.
 * Non-goals: interactivity, JavaScript, fonts or styles from the network.
 */
#include "train/report.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/json.h"
#include "train/outguard.h"

/* ------------------------------------------------------------------------------------- */
/* loading                                                                                */

static const char *const COL_KEY[REPORT_NCOLS] = {
    "step", "tokens", "loss", "lm_loss", "aux_loss", "z_loss", "lr", "grad_norm",
    "tokens_per_s"};

static void grow_steps(RunData *r) {
    if (r->n < r->cap) return;
    size_t nc = r->cap ? r->cap * 2 : 256;
    for (int c = 0; c < REPORT_NCOLS; c++)
        r->col[c] = moe_realloc(r->col[c], r->cap * sizeof(double), nc * sizeof(double));
    r->skipped = moe_realloc(r->skipped, r->cap, nc);
    if (r->E > 0) {
        size_t le = (size_t)r->L * (size_t)r->E;
        r->load = moe_realloc(r->load, r->cap * le * sizeof(float), nc * le * sizeof(float));
        r->entropy = moe_realloc(r->entropy, r->cap * (size_t)r->L * sizeof(float),
                                 nc * (size_t)r->L * sizeof(float));
        r->experts = moe_realloc(r->experts, r->cap * (size_t)r->L * sizeof(float),
                                 nc * (size_t)r->L * sizeof(float));
    }
    r->cap = nc;
}

static void grow_val(RunData *r) {
    if (r->n_val < r->val_cap) return;
    size_t nc = r->val_cap ? r->val_cap * 2 : 64;
    r->val_step = moe_realloc(r->val_step, r->val_cap * sizeof(double), nc * sizeof(double));
    r->val_tokens = moe_realloc(r->val_tokens, r->val_cap * sizeof(double), nc * sizeof(double));
    r->val_loss = moe_realloc(r->val_loss, r->val_cap * sizeof(double), nc * sizeof(double));
    r->val_cap = nc;
}

static int is_num_array(const JsonValue *v) {
    if (!v || v->type != JSON_ARR) return 0;
    for (size_t i = 0; i < v->n; i++)
        if (v->items[i].type != JSON_NUM) return 0;
    return 1;
}

/* The first step with expert_load fixes (L, E); earlier steps get NaN rows. */
static int take_moe_fields(RunData *r, const JsonValue *o, const char *path, long line,
                           MoeErr *err) {
    const JsonValue *el = json_get(o, "expert_load");
    const JsonValue *en = json_get(o, "router_entropy");
    const JsonValue *ex = json_get(o, "experts_per_token");   /* absent before issue 11 */
    size_t i = r->n;
    if (!el) {
        if (r->E > 0) {
            size_t le = (size_t)r->L * (size_t)r->E;
            for (size_t k = 0; k < le; k++) r->load[i * le + k] = NAN;
            for (int l = 0; l < r->L; l++) r->entropy[i * (size_t)r->L + l] = NAN;
            for (int l = 0; l < r->L; l++) r->experts[i * (size_t)r->L + l] = NAN;
        }
        return 0;
    }
    if (el->type != JSON_ARR || el->n == 0 || el->items[0].type != JSON_ARR ||
        el->items[0].n == 0 || el->n > 4096 || el->items[0].n > 65536) {
        moe_errorf(err, "%s:%ld: expert_load is not a non-empty array of arrays", path, line);
        moe_hintf(err, "expert_load holds one array of shares per MoE layer");
        return -1;
    }
    int L = (int)el->n, E = (int)el->items[0].n;
    for (int l = 0; l < L; l++) {
        if (!is_num_array(&el->items[l]) || (int)el->items[l].n != E) {
            moe_errorf(err, "%s:%ld: expert_load[%d] is not an array of %d numbers", path,
                       line, l, E);
            moe_hintf(err, "every layer's expert_load lists one share per expert");
            return -1;
        }
    }
    if (r->E == 0) {
        /* first MoE line: allocate and back-fill earlier steps with NaN */
        size_t le = (size_t)L * (size_t)E;
        r->L = L;
        r->E = E;
        r->load = moe_malloc(r->cap * le * sizeof(float));
        r->entropy = moe_malloc(r->cap * (size_t)L * sizeof(float));
        r->experts = moe_malloc(r->cap * (size_t)L * sizeof(float));
        for (size_t k = 0; k < r->cap * le; k++) r->load[k] = NAN;
        for (size_t k = 0; k < r->cap * (size_t)L; k++) r->entropy[k] = NAN;
        for (size_t k = 0; k < r->cap * (size_t)L; k++) r->experts[k] = NAN;
    } else if (L != r->L || E != r->E) {
        moe_errorf(err, "%s:%ld: expert_load has %d layers x %d experts but earlier lines had "
                   "%d x %d", path, line, L, E, r->L, r->E);
        moe_hintf(err, "one metrics.jsonl holds one run; was the run directory reused for a "
                       "different model?");
        return -1;
    }
    size_t le = (size_t)L * (size_t)E;
    for (int l = 0; l < L; l++)
        for (int e = 0; e < E; e++)
            r->load[i * le + (size_t)l * E + e] = (float)el->items[l].items[e].num;
    for (int l = 0; l < L; l++) {
        float h = NAN;
        if (is_num_array(en) && l < (int)en->n) h = (float)en->items[l].num;
        r->entropy[i * (size_t)L + l] = h;
        float x = NAN;
        if (is_num_array(ex) && l < (int)ex->n) x = (float)ex->items[l].num;
        r->experts[i * (size_t)L + l] = x;
    }
    return 0;
}

/* Reads one .jsonl file. want_steps: accept step objects (metrics.jsonl) or only
 * validation points (eval.jsonl). */
static int read_jsonl(RunData *r, const char *path, int want_steps, MoeErr *err) {
    FILE *f = fopen(path, "r");
    if (!f) {
        moe_errorf(err, "%s: cannot open: %s", path, strerror(errno));
        moe_hintf(err, "a run directory holds metrics.jsonl, written by `moetrain CONFIG` "
                       "from its first step on");
        return -1;
    }
    char *buf = NULL;
    size_t bufcap = 0;
    ssize_t len;
    long line = 0;
    int rc = -1;
    JsonValue o;
    memset(&o, 0, sizeof o);
    while ((len = getline(&buf, &bufcap, f)) >= 0) {
        line++;
        int complete = len > 0 && buf[len - 1] == '\n';
        size_t k = 0;
        while (k < (size_t)len && (buf[k] == ' ' || buf[k] == '\t' || buf[k] == '\r' ||
                                   buf[k] == '\n'))
            k++;
        if (k == (size_t)len) continue; /* blank line */
        if (json_parse(&o, buf, (size_t)len, path, line, err)) {
            if (!complete) break; /* the run is writing this line right now */
            goto fail;
        }
        if (o.type != JSON_OBJ) {
            moe_errorf(err, "%s:%ld: expected a JSON object per line", path, line);
            moe_hintf(err, "each line is one {...} object written by moetrain");
            goto fail;
        }
        double step = json_get_num(&o, "step");
        if (!isfinite(step)) {
            moe_errorf(err, "%s:%ld: the object has no numeric \"step\"", path, line);
            moe_hintf(err, "each line is one {\"step\": ...} object written by moetrain");
            goto fail;
        }
        if (json_get(&o, "val_loss")) {
            grow_val(r);
            r->val_step[r->n_val] = step;
            r->val_tokens[r->n_val] = json_get_num(&o, "tokens");
            r->val_loss[r->n_val] = json_get_num(&o, "val_loss");
            r->n_val++;
        } else if (want_steps && json_get(&o, "loss")) {
            grow_steps(r);
            for (int c = 0; c < REPORT_NCOLS; c++) r->col[c][r->n] = json_get_num(&o, COL_KEY[c]);
            const JsonValue *sk = json_get(&o, "skipped");
            r->skipped[r->n] = sk && sk->type == JSON_BOOL && sk->b;
            if (take_moe_fields(r, &o, path, line, err)) goto fail;
            r->n++;
        } else {
            moe_errorf(err, "%s:%ld: the object is neither a step (no \"loss\") nor a "
                       "validation point (no \"val_loss\")", path, line);
            moe_hintf(err, "is this a metrics file written by moetrain?");
            goto fail;
        }
        json_free(&o);
    }
    if (ferror(f)) {
        moe_errorf(err, "%s: read error: %s", path, strerror(errno));
        moe_hintf(err, "check the disk and the file's permissions");
        goto fail;
    }
    rc = 0;
fail:
    json_free(&o);
    free(buf); /* getline's buffer comes from the C allocator */
    fclose(f);
    return rc;
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *s = moe_malloc(cap);
    size_t got;
    while ((got = fread(s + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n - 1 == 0) {
            s = moe_realloc(s, cap, cap * 2);
            cap *= 2;
        }
    }
    s[n] = 0;
    fclose(f);
    return s;
}

static char *base_name(const char *dir) {
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && dir[b - 1] != '/') b--;
    char *s = moe_malloc(n - b + 1);
    memcpy(s, dir + b, n - b);
    s[n - b] = 0;
    return s;
}

int report_load_run(RunData *r, const char *dir, MoeErr *err) {
    char path[4096];
    struct stat st;
    memset(r, 0, sizeof *r);
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        moe_errorf(err, "%s: %s", dir, stat(dir, &st) != 0 ? "no such run directory"
                                                            : "is not a directory");
        moe_hintf(err, "give the run.dir of a training run (default runs/<config name>); "
                       "it holds metrics.jsonl and config.yaml");
        return -1;
    }
    r->dir = moe_strdup(dir);
    r->name = base_name(dir);
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    if (read_jsonl(r, path, 1, err)) goto fail;
    if (r->n == 0) {
        moe_errorf(err, "%s has no steps", path);
        moe_hintf(err, "the run has not logged a step yet (metrics.jsonl gets one line per "
                       "optimizer step); wait for the first step or check the run's output");
        goto fail;
    }
    if (r->n_val == 0) {
        snprintf(path, sizeof path, "%s/eval.jsonl", dir);
        if (access(path, R_OK) == 0 && read_jsonl(r, path, 0, err)) goto fail;
    }
    snprintf(path, sizeof path, "%s/config.yaml", dir);
    r->config = read_text(path);
    return 0;
fail:
    report_run_free(r);
    return -1;
}

void report_run_free(RunData *r) {
    if (!r) return;
    moe_free(r->dir);
    moe_free(r->name);
    for (int c = 0; c < REPORT_NCOLS; c++) moe_free(r->col[c]);
    moe_free(r->skipped);
    moe_free(r->load);
    moe_free(r->entropy);
    moe_free(r->experts);
    moe_free(r->val_step);
    moe_free(r->val_tokens);
    moe_free(r->val_loss);
    moe_free(r->config);
    memset(r, 0, sizeof *r);
}

/* ------------------------------------------------------------------------------------- */
/* drawing helpers                                                                        */

/* Okabe-Ito, without the yellow that vanishes on white. */
static const char *const PALETTE[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                      "#E69F00", "#56B4E9", "#000000", "#882255"};
#define NPAL ((int)(sizeof PALETTE / sizeof PALETTE[0]))
static const char *const DASHES[] = {NULL, "6 3", "2 3", "8 3 2 3"};
#define NDASH 4

/* Writes s HTML/XML-escaped (text and attribute values alike). */
static void put_esc(FILE *f, const char *s) {
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

/* Formats a value for tables: 4 significant digits, SI suffix above 10k. */
static void fmt_val(char *b, size_t n, double v) {
    if (!isfinite(v)) snprintf(b, n, "&#8211;");
    else if (fabs(v) >= 1e9) snprintf(b, n, "%.3gG", v / 1e9);
    else if (fabs(v) >= 1e6) snprintf(b, n, "%.3gM", v / 1e6);
    else if (fabs(v) >= 1e4) snprintf(b, n, "%.3gk", v / 1e3);
    else snprintf(b, n, "%.4g", v);
}

/* One curve of a line plot; x and y are borrowed, stride lets y walk a (n, L) column. */
typedef struct {
    const char *series;  /* data-series */
    const char *run;     /* data-run */
    char label[160];     /* legend text */
    const double *x;     /* (n) */
    const double *y;     /* (n) when yf is NULL */
    const float *yf;     /* (n * stride) alternative float source */
    size_t n, stride;
    const char *color, *dash;
    int markers;         /* draw a dot per point (validation points) */
} Curve;

static double cy(const Curve *c, size_t i) {
    return c->yf ? (double)c->yf[i * c->stride] : c->y[i];
}

static size_t count_finite(const Curve *c) {
    size_t k = 0;
    for (size_t i = 0; i < c->n; i++)
        if (isfinite(c->x[i]) && isfinite(cy(c, i))) k++;
    return k;
}

/* Indices to draw, in order: every point when n <= REPORT_MAX_POINTS (non-finite ones
 * included so the path breaks there), else each bucket's min and max finite y.
 * idx has room for min(n, REPORT_MAX_POINTS) entries. */
static size_t pick_points(const Curve *c, size_t *idx) {
    if (c->n <= REPORT_MAX_POINTS) {
        for (size_t i = 0; i < c->n; i++) idx[i] = i;
        return c->n;
    }
    size_t nb = REPORT_MAX_POINTS / 2, k = 0;
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
static int legend_rows(const Curve *c, int nc) {
    int rows = nc ? 1 : 0, x = ML;
    for (int i = 0; i < nc; i++) {
        int w = 34 + 7 * (int)strlen(c[i].label);
        if (x + w > PW - MR && x > ML) rows++, x = ML;
        x += w;
    }
    return rows;
}

/* logy: log-scale y axis (ticks at the nice linear values inside the range); falls back
 * to linear when a value is <= 0. */
static void line_plot(FILE *f, const char *id, const char *title, const char *ylabel,
                      const Curve *c, int nc, const double *yref, const char *yref_label,
                      int logy) {
    if (nc == 0) return;
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
    int lg = logy && ylo > 0;
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
               "viewBox=\"0 0 %d %d\" role=\"img\">\n", id, PW, H, PW, H);
    fprintf(f, "<title>");
    put_esc(f, title);
    fprintf(f, "</title>\n<text class=\"title\" x=\"%d\" y=\"22\">", ML);
    put_esc(f, title);
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
    put_esc(f, ylabel);
    fprintf(f, "</text>\n");
    if (yref) {
        fprintf(f, "<line class=\"ref\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
                   "<text class=\"reft\" x=\"%.1f\" y=\"%.1f\">",
                x0, SY(*yref), x1, SY(*yref), x1 - 4, SY(*yref) - 4);
        put_esc(f, yref_label);
        fprintf(f, "</text>\n");
    }
    size_t *idx = moe_malloc(REPORT_MAX_POINTS * sizeof *idx);
    for (int k = 0; k < nc; k++) {
        size_t m = pick_points(&c[k], idx);
        fprintf(f, "<path data-series=\"%s\" data-run=\"", c[k].series);
        put_esc(f, c[k].run);
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
        put_esc(f, c[k].label);
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
        put_esc(f, c[k].label);
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

size_t report_heatmap_columns(size_t n_steps, int E) {
    size_t c = n_steps < REPORT_MAX_COLUMNS ? n_steps : REPORT_MAX_COLUMNS;
    size_t by_cells = E > 0 ? REPORT_MAX_CELLS / (size_t)E : c;
    return c < by_cells ? c : (by_cells > 0 ? by_cells : 1);
}

/* Column c of a heatmap covers steps [c*n/C, (c+1)*n/C). */
static void heatmap(FILE *f, const RunData *r, int l, double vmax) {
    int E = r->E;
    size_t n = r->n, C = report_heatmap_columns(n, E);
    double rh = fmin(22.0, fmax(8.0, 180.0 / E));
    int H = MT + (int)ceil(rh * E) + HMB;
    double x0 = ML, x1 = HW - MR, y1 = MT, y0 = MT + rh * E;
    const double *step = r->col[REPORT_STEP];
    double slo = step[0], shi = step[n - 1] + 1;
    if (!(shi > slo)) shi = slo + 1; /* steps out of order: keep the scale finite */
    Axis ax;
    axis_nice(&ax, slo, shi, 6);
    /* the cells fill the frame exactly; ticks outside the data range are dropped */
#define HX(v) (x0 + ((v) - slo) / (shi - slo) * (x1 - x0))
    fprintf(f, "<svg class=\"heat\" data-plot=\"expert_load\" data-run=\"");
    put_esc(f, r->name);
    fprintf(f, "\" data-layer=\"%d\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "role=\"img\">\n<title>", l, HW, H, HW, H);
    put_esc(f, r->name);
    fprintf(f, ": expert load, layer %d</title>\n<text class=\"title\" x=\"%d\" y=\"22\">",
            l, ML);
    put_esc(f, r->name);
    fprintf(f, " &#183; layer %d &#183; share of routed slots per expert</text>\n", l);
    char col[16], b[64];
    size_t le = (size_t)r->L * (size_t)E;
    for (int e = 0; e < E; e++) {
        double y = y1 + rh * e;
        fprintf(f, "<g class=\"row\" data-expert=\"%d\">", e);
        for (size_t c = 0; c < C; c++) {
            size_t i0 = c * n / C, i1 = (c + 1) * n / C;
            double sum = 0;
            size_t k = 0;
            for (size_t i = i0; i < i1; i++) {
                float v = r->load[i * le + (size_t)l * E + e];
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

/* ------------------------------------------------------------------------------------- */
/* the page                                                                               */

typedef struct {
    Curve c[256];
    int n;
} CurveSet;

static Curve *add_curve(CurveSet *s, const char *series, const RunData *r, const double *x,
                        size_t n, const double *y, const float *yf, size_t stride) {
    if (s->n >= (int)(sizeof s->c / sizeof s->c[0])) return NULL;
    Curve *c = &s->c[s->n];
    memset(c, 0, sizeof *c);
    c->series = series;
    c->run = r->name;
    c->x = x;
    c->y = y;
    c->yf = yf;
    c->n = n;
    c->stride = stride;
    if (count_finite(c) == 0) return NULL; /* nothing to draw: no path, no legend entry */
    s->n++;
    return c;
}

static const char *const CSS =
    "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;"
    "margin:24px;color:#222;background:#fff;max-width:1400px}\n"
    "h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;"
    "border-bottom:1px solid #ddd;padding-bottom:4px}h3{font-size:15px;margin:16px 0 6px}\n"
    "p.note{color:#555;font-size:13px;margin:4px 0}\n"
    "table{border-collapse:collapse;font-size:13px}th,td{padding:4px 10px;"
    "border-bottom:1px solid #e5e5e5;text-align:right}th{background:#f4f4f4}"
    "td.l,th.l{text-align:left}\n"
    ".plots{display:flex;flex-wrap:wrap;gap:12px 20px}\n"
    "svg{background:#fff;border:1px solid #e5e5e5;border-radius:4px}\n"
    "svg text{font-size:12px;fill:#333}svg text.title{font-size:14px;font-weight:600}\n"
    "svg .yt{text-anchor:end}svg .xt,svg .xl,svg .yl{text-anchor:middle}\n"
    "svg .xl,svg .yl{fill:#555}\n"
    ".grid line{stroke:#ebebeb;stroke-width:1}.frame{fill:none;stroke:#999}\n"
    ".tick{stroke:#666}.utick{stroke:#000;stroke-width:2}"
    ".ref{stroke:#888;stroke-dasharray:4 4}"
    "svg text.reft{text-anchor:end;fill:#666;font-size:11px}\n"
    "path[data-series]{fill:none;stroke-width:1.8;stroke-linejoin:round;"
    "stroke-linecap:round}\n"
    ".legend line{stroke-width:2.5}\n"
    "pre{background:#f6f8fa;border:1px solid #e5e5e5;padding:10px;font-size:12px;"
    "max-height:520px;overflow:auto}\n";

static void summary_table(FILE *f, const RunData *runs, int nr) {
    fprintf(f, "<table>\n<tr><th class=\"l\">run</th><th class=\"l\">directory</th>"
               "<th class=\"l\">model</th><th>steps</th><th>last step</th><th>tokens</th>"
               "<th>last loss</th><th>best val loss</th><th>skipped</th>"
               "<th>mean tokens/s</th></tr>\n");
    for (int k = 0; k < nr; k++) {
        const RunData *r = &runs[k];
        double last = (double)NAN, best = HUGE_VAL, tps = 0, tok = (double)NAN;
        size_t skipped = 0, ntps = 0;
        for (size_t i = 0; i < r->n; i++) {
            double v = r->col[REPORT_LOSS][i];
            if (isfinite(v)) last = v;
            if (r->skipped[i] || !isfinite(v)) skipped++;
            if (isfinite(r->col[REPORT_TOKENS][i])) tok = r->col[REPORT_TOKENS][i];
            /* the first step includes warm-up costs; leave it out when there are others */
            double t = r->col[REPORT_TOKENS_PER_S][i];
            if (isfinite(t) && (i > 0 || r->n == 1)) tps += t, ntps++;
        }
        for (size_t i = 0; i < r->n_val; i++)
            if (isfinite(r->val_loss[i]) && r->val_loss[i] < best) best = r->val_loss[i];
        char b[6][48];
        fmt_val(b[0], sizeof b[0], r->col[REPORT_STEP][r->n - 1]);
        fmt_val(b[1], sizeof b[1], tok);
        fmt_val(b[2], sizeof b[2], last);
        fmt_val(b[3], sizeof b[3], isfinite(best) ? best : (double)NAN);
        fmt_val(b[4], sizeof b[4], ntps ? tps / (double)ntps : (double)NAN);
        fprintf(f, "<tr><td class=\"l\"><span style=\"color:%s\">&#9632;</span> ",
                PALETTE[k % NPAL]);
        put_esc(f, r->name);
        fprintf(f, "</td><td class=\"l\">");
        put_esc(f, r->dir);
        if (r->E > 0)
            fprintf(f, "</td><td class=\"l\">MoE: %d layers &#215; %d experts", r->L, r->E);
        else
            fprintf(f, "</td><td class=\"l\">dense (no expert_load)");
        fprintf(f, "</td><td>%zu</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td>"
                   "<td>%zu</td><td>%s</td></tr>\n",
                r->n, b[0], b[1], b[2], b[3], skipped, b[4]);
    }
    fprintf(f, "</table>\n");
}

/* One simple per-step metric: one curve per run. */
static void metric_plot(FILE *f, const RunData *runs, int nr, int colid, const char *id,
                        const char *title, const char *ylabel) {
    CurveSet *s = moe_calloc(sizeof *s);
    for (int k = 0; k < nr; k++) {
        const RunData *r = &runs[k];
        Curve *c = add_curve(s, id, r, r->col[REPORT_TOKENS], r->n, r->col[colid], NULL, 1);
        if (!c) continue;
        c->color = PALETTE[k % NPAL];
        snprintf(c->label, sizeof c->label, "%s", nr > 1 ? r->name : id);
    }
    line_plot(f, id, title, ylabel, s->c, s->n, NULL, NULL, 0);
    moe_free(s);
}

/* Per-layer curves from an (n, L) float array per run (entropy, imbalance). */
static void layer_plot(FILE *f, const RunData *runs, int nr, float *const *data,
                       const char *id, const char *title, const char *ylabel,
                       const double *yref, const char *yref_label) {
    static char names[64][48];
    CurveSet *s = moe_calloc(sizeof *s);
    for (int k = 0; k < nr; k++) {
        const RunData *r = &runs[k];
        if (!data[k]) continue;
        for (int l = 0; l < r->L && l < 64; l++) {
            snprintf(names[l], sizeof names[l], "%s.l%d", id, l);
            Curve *c = add_curve(s, names[l], r, r->col[REPORT_TOKENS], r->n, NULL,
                                 data[k] + l, (size_t)r->L);
            if (!c) continue;
            if (nr > 1) {
                c->color = PALETTE[k % NPAL];
                c->dash = DASHES[l % NDASH];
                snprintf(c->label, sizeof c->label, "%s layer %d", r->name, l);
            } else {
                c->color = PALETTE[l % NPAL];
                c->dash = DASHES[(l / NPAL) % NDASH];
                snprintf(c->label, sizeof c->label, "layer %d", l);
            }
        }
    }
    line_plot(f, id, title, ylabel, s->c, s->n, yref, yref_label, 0);
    moe_free(s);
}

/* How every page starts: also how cmd_report recognises a page it may regenerate. */
static const char PAGE_START[] =
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n"
    "<title>moetrain report: ";

static void write_page(FILE *f, const RunData *runs, int nr) {
    fputs(PAGE_START, f);
    for (int k = 0; k < nr; k++) {
        if (k) fputs(", ", f);
        put_esc(f, runs[k].name);
    }
    fprintf(f, "</title>\n<style>\n%s</style>\n</head>\n<body>\n<h1>moetrain report</h1>\n",
            CSS);
    fprintf(f, "<p class=\"note\">Line plots are against tokens seen; curves longer than %d "
               "points are downsampled keeping each bucket's minimum and maximum. Gaps are "
               "skipped steps (non-finite loss or gradients).</p>\n", REPORT_MAX_POINTS);
    summary_table(f, runs, nr);

    /* loss: train (solid) and validation (dashed, dots) per run */
    CurveSet *s = moe_calloc(sizeof *s);
    for (int k = 0; k < nr; k++) {
        const RunData *r = &runs[k];
        Curve *c = add_curve(s, "loss", r, r->col[REPORT_TOKENS], r->n, r->col[REPORT_LOSS],
                             NULL, 1);
        if (c) {
            c->color = PALETTE[(nr > 1 ? k : 0) % NPAL];
            snprintf(c->label, sizeof c->label, "%s%strain loss", nr > 1 ? r->name : "",
                     nr > 1 ? " " : "");
        }
        c = add_curve(s, "val_loss", r, r->val_tokens, r->n_val, r->val_loss, NULL, 1);
        if (c) {
            c->color = PALETTE[(nr > 1 ? k : 1) % NPAL];
            c->dash = "6 3";
            c->markers = 1;
            snprintf(c->label, sizeof c->label, "%s%svalidation loss", nr > 1 ? r->name : "",
                     nr > 1 ? " " : "");
        }
    }
    fprintf(f, "<h2>Training curves</h2>\n<div class=\"plots\">\n");
    line_plot(f, "loss", "Loss (train: total incl. aux and z; validation: LM)",
              "loss (log scale)", s->c, s->n, NULL, NULL, 1);
    moe_free(s);
    metric_plot(f, runs, nr, REPORT_AUX_LOSS, "aux_loss", "Load-balancing loss (aux)",
                "aux loss");
    metric_plot(f, runs, nr, REPORT_Z_LOSS, "z_loss", "Router z-loss", "z loss");
    metric_plot(f, runs, nr, REPORT_LR, "lr", "Learning rate", "learning rate");
    metric_plot(f, runs, nr, REPORT_GRAD_NORM, "grad_norm", "Gradient norm (before clipping)",
                "grad norm");
    metric_plot(f, runs, nr, REPORT_TOKENS_PER_S, "tokens_per_s", "Throughput", "tokens / s");
    fprintf(f, "</div>\n");

    /* routing: entropy and max/mean load per layer, derived imbalance arrays */
    int any_moe = 0, same_e = 1;
    float **imb = moe_calloc((size_t)nr * sizeof *imb);
    float **ent = moe_calloc((size_t)nr * sizeof *ent);
    float **ept = moe_calloc((size_t)nr * sizeof *ept);
    for (int k = 0; k < nr; k++) {
        const RunData *r = &runs[k];
        if (r->E == 0) continue;
        if (any_moe && r->E != runs[any_moe - 1].E) same_e = 0;
        if (!any_moe) any_moe = k + 1;
        ent[k] = r->entropy;
        ept[k] = r->experts;
        size_t le = (size_t)r->L * (size_t)r->E;
        imb[k] = moe_malloc(r->n * (size_t)r->L * sizeof(float));
        for (size_t i = 0; i < r->n; i++)
            for (int l = 0; l < r->L; l++) {
                float mx = NAN;
                for (int e = 0; e < r->E; e++) {
                    float v = r->load[i * le + (size_t)l * r->E + e];
                    if (isfinite(v) && !(v <= mx)) mx = v;
                }
                imb[k][i * (size_t)r->L + l] = mx * (float)r->E;
            }
    }
    if (any_moe) {
        fprintf(f, "<h2>Routing</h2>\n<div class=\"plots\">\n");
        double lnE = log((double)runs[any_moe - 1].E), one = 1.0;
        layer_plot(f, runs, nr, ent, "router_entropy", "Router entropy per layer",
                   "entropy (nats)", same_e ? &lnE : NULL, "uniform routing: ln E");
        layer_plot(f, runs, nr, imb, "load_imbalance",
                   "Load imbalance per layer (max expert share / mean share)", "max / mean",
                   &one, "perfect balance");
        /* K for top-k; varies with moe.router topp (issue 11); older runs lack it */
        layer_plot(f, runs, nr, ept, "experts_per_token", "Experts per token per layer",
                   "experts / token", NULL, NULL);
        fprintf(f, "</div>\n");
        fprintf(f, "<h2>Expert load</h2>\n<p class=\"note\">x: step, y: expert, colour: "
                   "share of the layer's routed slots (steps averaged into at most %d "
                   "columns; grey = no data). A bright row over a dark layer is an expert "
                   "that took over; uniform routing is one even colour at 1/E.</p>\n",
                   REPORT_MAX_COLUMNS);
        for (int k = 0; k < nr; k++) {
            const RunData *r = &runs[k];
            if (r->E == 0) continue;
            double vmax = 2.0 / r->E;
            size_t le = (size_t)r->L * (size_t)r->E;
            for (size_t i = 0; i < r->n * le; i++)
                if (isfinite(r->load[i]) && (double)r->load[i] > vmax) vmax = (double)r->load[i];
            if (nr > 1) {
                fprintf(f, "<h3>");
                put_esc(f, r->name);
                fprintf(f, "</h3>\n");
            }
            fprintf(f, "<div class=\"plots\">\n");
            for (int l = 0; l < r->L; l++) heatmap(f, r, l, vmax);
            fprintf(f, "</div>\n");
        }
    }
    for (int k = 0; k < nr; k++) moe_free(imb[k]);
    moe_free(imb);
    moe_free(ent);
    moe_free(ept);

    fprintf(f, "<h2>Configuration</h2>\n");
    for (int k = 0; k < nr; k++) {
        fprintf(f, "<h3>");
        put_esc(f, runs[k].dir);
        fprintf(f, "/config.yaml</h3>\n");
        if (runs[k].config) {
            fprintf(f, "<pre class=\"config\">");
            put_esc(f, runs[k].config);
            fprintf(f, "</pre>\n");
        } else {
            fprintf(f, "<p class=\"note\">(no config.yaml in this run directory)</p>\n");
        }
    }
    fprintf(f, "</body>\n</html>\n");
}

int report_write(const RunData *runs, int n_runs, const char *out_path, MoeErr *err) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", out_path) >= (int)sizeof tmp) {
        moe_errorf(err, "%s: path too long", out_path);
        moe_hintf(err, "use a shorter --out path");
        return -1;
    }
    int fd = mkstemp(tmp);
    if (fd < 0) {
        moe_errorf(err, "%s: cannot create: %s", tmp, strerror(errno));
        moe_hintf(err, "check that the output directory exists and is writable");
        return -1;
    }
    FILE *f = fdopen(fd, "w");
    if (!f) {
        moe_errorf(err, "%s: cannot open: %s", tmp, strerror(errno));
        moe_hintf(err, "check that the output directory exists and is writable");
        close(fd);
        unlink(tmp);
        return -1;
    }
    write_page(f, runs, n_runs);
    int bad = ferror(f) || fflush(f) != 0 || fsync(fileno(f)) != 0;
    int eno = errno;
    if (fclose(f) != 0) bad = 1;
    if (bad || rename(tmp, out_path) != 0) {
        if (!bad) eno = errno;
        unlink(tmp);
        moe_errorf(err, "%s: cannot write: %s", out_path, strerror(eno));
        moe_hintf(err, "check free disk space and that the directory is writable");
        return -1;
    }
    /* mkstemp creates 0600; a report is for sharing */
    chmod(out_path, 0644);
    return 0;
}

/* ------------------------------------------------------------------------------------- */
/* the subcommand                                                                         */

static const char *const REPORT_HELP =
    "usage: moetrain report RUN_DIR [RUN_DIR...] [--out FILE.html] [--force]\n"
    "\n"
    "Writes one self-contained HTML page (inline SVG, no JavaScript, no network) with the\n"
    "run's loss and validation loss against tokens seen, aux and z losses, learning rate,\n"
    "gradient norm, throughput, router entropy and load imbalance per layer, a heatmap of\n"
    "expert load per layer over time, and config.yaml. Several run directories go on one\n"
    "page: line plots overlay one curve per run, heatmaps are drawn per run.\n"
    "Reads RUN_DIR/metrics.jsonl, RUN_DIR/eval.jsonl and RUN_DIR/config.yaml; works on a\n"
    "run that is still training.\n"
    "\n"
    "options:\n"
    "  --out FILE.html   where to write the page (written atomically); default\n"
    "                    RUN_DIR/report.html for one run, required for several. An earlier\n"
    "                    moetrain report there is replaced; any other file needs --force;\n"
    "                    a file the report reads never is\n"
    "  --force           replace an existing FILE.html that is not a moetrain report\n"
    "  -h, --help        this help\n";

static int report_usage(const char *msg) {
    fprintf(stderr, "moetrain: %s\n\n%s", msg, REPORT_HELP);
    return 2;
}

/* True when path starts like a page write_page made: a report is derived from its runs'
 * files and can be made again at any time, so regenerating one loses nothing. */
static bool is_report_page(const char *path) {
    char head[sizeof PAGE_START];
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    size_t n = fread(head, 1, sizeof PAGE_START - 1, f);
    fclose(f);
    return n == sizeof PAGE_START - 1 && !memcmp(head, PAGE_START, n);
}

/* The output guard (train/outguard.h) for out, given the run directories among argv: the
 * files the report reads are its inputs; an earlier report may be replaced without --force. */
static int check_output(const char *out, int argc, char **argv, int nd, bool force) {
    char (*in)[4200] = moe_calloc((size_t)nd * 3 * sizeof *in);
    const char **inp = moe_calloc((size_t)nd * 3 * sizeof *inp);
    int n = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--out")) {
            i++;
            continue;
        }
        if (argv[i][0] == '-') continue;
        static const char *const files[3] = {"metrics.jsonl", "eval.jsonl", "config.yaml"};
        for (int k = 0; k < 3; k++) {
            snprintf(in[n], sizeof in[n], "%s/%s", argv[i], files[k]);
            inp[n] = in[n];
            n++;
        }
    }
    int rc = outguard_cli(out, OUTGUARD_FILE, "--out", inp, n, force || is_report_page(out));
    moe_free(inp);
    moe_free(in);
    return rc;
}

int cmd_report(int argc, char **argv) {
    const char *out = NULL;
    int nd = 0;
    bool force = false;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(REPORT_HELP, stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--force")) {
            force = true;
        } else if (!strcmp(argv[i], "--out")) {
            if (i + 1 >= argc) return report_usage("--out needs a file name");
            if (out) return report_usage("--out given twice");
            out = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            char msg[256];
            snprintf(msg, sizeof msg, "unknown option '%s'", argv[i]);
            return report_usage(msg);
        } else {
            nd++;
        }
    }
    if (nd == 0) return report_usage("no run directory given");
    if (nd > 1 && !out) return report_usage("--out FILE.html is required with several runs");
    char def[4096];
    if (!out) {   /* the one run directory */
        for (int i = 0; i < argc && !out; i++)
            if (argv[i][0] != '-') {
                snprintf(def, sizeof def, "%s/report.html", argv[i]);
                out = def;
            }
    }
    int guard = check_output(out, argc, argv, nd, force);
    if (guard) return guard;
    RunData *runs = moe_calloc((size_t)nd * sizeof *runs);
    MoeErr err;
    memset(&err, 0, sizeof err);
    int k = 0, rc = 1;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--out")) {
            i++;
            continue;
        }
        if (!strcmp(argv[i], "--force")) continue;
        if (report_load_run(&runs[k], argv[i], &err)) goto done;
        k++;
    }
    /* two runs with the same base name (a/x, b/x) are told apart by their full paths */
    for (int a = 0; a < nd; a++)
        for (int b = a + 1; b < nd; b++)
            if (!strcmp(runs[a].name, runs[b].name)) {
                for (int c = 0; c < nd; c++) {
                    moe_free(runs[c].name);
                    runs[c].name = moe_strdup(runs[c].dir);
                }
                a = b = nd;
            }
    if (report_write(runs, nd, out, &err)) goto done;
    printf("wrote %s (%d run%s", out, nd, nd > 1 ? "s" : "");
    for (int i = 0; i < nd; i++)
        printf("%s %s: %zu steps", i ? "," : ";", runs[i].name, runs[i].n);
    printf(")\n");
    rc = 0;
done:
    if (rc) {
        fprintf(stderr, "moetrain: error: %s\n", err.msg);
        if (err.hint[0]) fprintf(stderr, "hint: %s\n", err.hint);
    }
    for (int i = 0; i < nd; i++) report_run_free(&runs[i]);
    moe_free(runs);
    return rc;
}
