/* report.c: see report.h.
 *
 * The page: a summary table, the switches (x axis, EMA), the line plots (one curve per run,
 * or per layer; each drawn once per x axis), the expert load heatmaps
 * (train/report_experts.h) and the configuration (train/report_config.h), drawn by
 * train/svg.h. Curves use the Okabe-Ito palette (readable by colour-blind readers).
 */
#include "train/report.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/fs.h"
#include "train/report_assets.h"
#include "train/report_config.h"
#include "train/report_experts.h"
#include "train/svg.h"

/* Okabe-Ito, without the yellow that vanishes on white. */
static const char *const PALETTE[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                      "#E69F00", "#56B4E9", "#000000", "#882255"};
#define NPAL ((int)(sizeof PALETTE / sizeof PALETTE[0]))
static const char *const DASHES[] = {NULL, "6 3", "2 3", "8 3 2 3"};
#define NDASH 4

/* Formats a value for tables: 4 significant digits, SI suffix above 10k. */
static void fmt_val(char *b, size_t n, double v) {
    if (!isfinite(v)) snprintf(b, n, "&#8211;");
    else if (fabs(v) >= 1e9) snprintf(b, n, "%.3gG", v / 1e9);
    else if (fabs(v) >= 1e6) snprintf(b, n, "%.3gM", v / 1e6);
    else if (fabs(v) >= 1e4) snprintf(b, n, "%.3gk", v / 1e3);
    else snprintf(b, n, "%.4g", v);
}

/* A duration in seconds as "42 s", "12 min 5 s", "3 h 20 min", "2 d 4 h"; "&#8211;" when
 * unknown. */
static void fmt_duration(char *b, size_t n, double s) {
    if (!isfinite(s) || s < 0) snprintf(b, n, "&#8211;");
    else if (s < 120) snprintf(b, n, "%.0f s", s);
    else if (s < 7200) snprintf(b, n, "%.0f min %.0f s", floor(s / 60), fmod(s, 60));
    else if (s < 172800) snprintf(b, n, "%.0f h %.0f min", floor(s / 3600), fmod(s, 3600) / 60);
    else snprintf(b, n, "%.0f d %.0f h", floor(s / 86400), fmod(s, 86400) / 3600);
}

/* ---- x axes ---------------------------------------------------------------------------- */

enum { X_STEP, X_TOKENS, X_TIME, NX };

/* One x axis: per run, x of its steps (n) and of its validation points (n_val); NULL when
 * the run has none (a run without METRIC_TIME on the time axis). */
typedef struct {
    const char *kind;     /* data-x */
    char label[96];
    const double **x, **xv;
} XAxis;

/* The page's derived data: the x axes and what the per-step arrays do not hold. */
typedef struct {
    const RunData *runs;
    int nr;
    XAxis xa[NX];
    int nx;               /* X_TIME is there when some run has METRIC_TIME */
    double **el, **elv;   /* (nr) owned: elapsed time of steps / validation points */
    float **imb;          /* (nr) owned: (n, L) max share x E per layer; NULL for dense */
    char left_out[1024];  /* what plots left out, for the note */
} Page;

/* The first finite METRIC_TIME of r (its steps and validation points), or NaN. */
static double first_time(const RunData *r) {
    double t0 = HUGE_VAL;
    for (size_t i = 0; i < r->n; i++) t0 = fmin(t0, r->col[REPORT_TIME][i]);
    for (size_t i = 0; i < r->n_val; i++) t0 = fmin(t0, r->val_time[i]);
    return isfinite(t0) ? t0 : (double)NAN;   /* fmin skips NaN: all NaN leaves HUGE_VAL */
}

static void page_init(Page *pg, const RunData *runs, int nr) {
    memset(pg, 0, sizeof *pg);
    pg->runs = runs;
    pg->nr = nr;
    pg->el = moe_calloc((size_t)nr * sizeof *pg->el);
    pg->elv = moe_calloc((size_t)nr * sizeof *pg->elv);
    pg->imb = moe_calloc((size_t)nr * sizeof *pg->imb);
    for (int a = 0; a < NX; a++) {
        pg->xa[a].x = moe_calloc((size_t)nr * sizeof *pg->xa[a].x);
        pg->xa[a].xv = moe_calloc((size_t)nr * sizeof *pg->xa[a].xv);
    }
    pg->xa[X_STEP].kind = "step";
    snprintf(pg->xa[X_STEP].label, sizeof pg->xa[X_STEP].label, "step");
    pg->xa[X_TOKENS].kind = "tokens";
    snprintf(pg->xa[X_TOKENS].label, sizeof pg->xa[X_TOKENS].label, "tokens seen");
    double longest = 0;
    for (int k = 0; k < nr; k++) {
        const RunData *r = &runs[k];
        pg->xa[X_STEP].x[k] = r->col[REPORT_STEP];
        pg->xa[X_STEP].xv[k] = r->val_step;
        pg->xa[X_TOKENS].x[k] = r->col[REPORT_TOKENS];
        pg->xa[X_TOKENS].xv[k] = r->val_tokens;
        double t0 = first_time(r);
        if (!isfinite(t0)) continue;
        pg->el[k] = moe_malloc((r->n + 1) * sizeof(double));
        pg->elv[k] = moe_malloc((r->n_val + 1) * sizeof(double));
        for (size_t i = 0; i < r->n; i++) {
            pg->el[k][i] = r->col[REPORT_TIME][i] - t0;
            if (isfinite(pg->el[k][i])) longest = fmax(longest, pg->el[k][i]);
        }
        for (size_t i = 0; i < r->n_val; i++) pg->elv[k][i] = r->val_time[i] - t0;
    }
    /* one unit for every run, from the longest: readable tick labels */
    static const struct { double s; const char *name; } UNIT[] = {
        {1, "s"}, {60, "min"}, {3600, "h"}, {86400, "days"}};
    int u = longest < 180 ? 0 : longest < 3 * 3600 ? 1 : longest < 3 * 86400 ? 2 : 3;
    for (int k = 0; k < nr; k++) {
        if (!pg->el[k]) continue;
        for (size_t i = 0; i < runs[k].n; i++) pg->el[k][i] /= UNIT[u].s;
        for (size_t i = 0; i < runs[k].n_val; i++) pg->elv[k][i] /= UNIT[u].s;
        pg->xa[X_TIME].x[k] = pg->el[k];
        pg->xa[X_TIME].xv[k] = pg->elv[k];
        pg->nx = NX;
    }
    if (!pg->nx) pg->nx = X_TIME;
    pg->xa[X_TIME].kind = "time";
    snprintf(pg->xa[X_TIME].label, sizeof pg->xa[X_TIME].label,
             "wall-clock time since the run's first line (%s)", UNIT[u].name);
    /* load imbalance per layer: max share x E (1 = balanced) */
    for (int k = 0; k < nr; k++) {
        const RunData *r = &runs[k];
        if (r->E == 0) continue;
        size_t le = (size_t)r->L * (size_t)r->E;
        pg->imb[k] = moe_malloc((r->n * (size_t)r->L + 1) * sizeof(float));
        for (size_t i = 0; i < r->n; i++)
            for (int l = 0; l < r->L; l++) {
                float mx = NAN;
                for (int e = 0; e < r->E; e++) {
                    float v = r->load[i * le + (size_t)l * r->E + e];
                    if (isfinite(v) && !(v <= mx)) mx = v;
                }
                pg->imb[k][i * (size_t)r->L + l] = mx * (float)r->E;
            }
    }
}

static void page_free(Page *pg) {
    for (int k = 0; k < pg->nr; k++) {
        moe_free(pg->el[k]);
        moe_free(pg->elv[k]);
        moe_free(pg->imb[k]);
    }
    moe_free(pg->el);
    moe_free(pg->elv);
    moe_free(pg->imb);
    for (int a = 0; a < NX; a++) {
        moe_free(pg->xa[a].x);
        moe_free(pg->xa[a].xv);
    }
    memset(pg, 0, sizeof *pg);
}

/* ---- curves ---------------------------------------------------------------------------- */

typedef struct {
    SvgCurve c[256];
    int n;
} CurveSet;

/* Appends a curve over r's points; NULL (nothing appended) when the set is full, x is
 * NULL (the run has no such axis) or the curve has no finite point. */
static SvgCurve *add_curve(CurveSet *s, const char *series, const RunData *r,
                           const double *x, size_t n, const double *y, const float *yf,
                           size_t stride) {
    if (s->n >= (int)(sizeof s->c / sizeof s->c[0]) || !x) return NULL;
    SvgCurve *c = &s->c[s->n];
    memset(c, 0, sizeof *c);
    c->series = series;
    c->run = r->name;
    c->x = x;
    c->y = y;
    c->yf = yf;
    c->n = n;
    c->stride = stride;
    if (svg_curve_points(c) == 0) return NULL; /* nothing to draw: no path, no legend entry */
    s->n++;
    return c;
}

/* Whether a plot's curve applies to a run (see report.h: what is left out). */
typedef int (*Applies)(const RunData *r, const float *data);

/* aux and z losses: only a MoE run whose values are not all 0 */
static int moe_nonzero(const RunData *r, const double *y) {
    if (r->E == 0) return 0;
    for (size_t i = 0; i < r->n; i++)
        if (isfinite(y[i]) && y[i] != 0) return 1;
    return 0;
}

/* experts per token: only when it changes (top-k routing logs K at every step) */
static int varies(const RunData *r, const float *data) {
    float first = NAN;
    for (size_t i = 0; i < r->n * (size_t)r->L; i++) {
        if (!isfinite(data[i])) continue;
        if (!isfinite(first)) first = data[i];
        else if (fabsf(data[i] - first) > 1e-6f * fmaxf(1.0f, fabsf(first))) return 1;
    }
    return 0;
}

/* Appends "what of run, run (why)" to the left-out note. */
static void note_left_out(Page *pg, const char *what, const char *why, const char *const *names,
                          int n) {
    if (n == 0) return;
    size_t len = strlen(pg->left_out), cap = sizeof pg->left_out;
    len += (size_t)snprintf(pg->left_out + len, cap - len, "%s%s of ", len ? "; " : "", what);
    for (int i = 0; i < n && len < cap; i++)
        len += (size_t)snprintf(pg->left_out + len, cap - len, "%s%s", i ? ", " : "", names[i]);
    if (len < cap) snprintf(pg->left_out + len, cap - len, " (%s)", why);
}

/* One simple per-step metric: one curve per run, on each x axis. only: NULL or whether
 * the metric applies to the run (moe_nonzero). */
static void metric_plot(FILE *f, Page *pg, int colid, const char *id, const char *title,
                        const char *ylabel, int smooth,
                        int (*only)(const RunData *r, const double *y), const char *why) {
    const char *skipped[64];
    int ns = 0;
    for (int a = 0; a < pg->nx; a++) {
        CurveSet *s = moe_calloc(sizeof *s);
        for (int k = 0; k < pg->nr; k++) {
            const RunData *r = &pg->runs[k];
            if (only && !only(r, r->col[colid])) {
                if (a == 0 && ns < 64) skipped[ns++] = r->name;
                continue;
            }
            SvgCurve *c = add_curve(s, id, r, pg->xa[a].x[k], r->n, r->col[colid], NULL, 1);
            if (!c) continue;
            c->color = PALETTE[k % NPAL];
            snprintf(c->label, sizeof c->label, "%s", pg->nr > 1 ? r->name : id);
        }
        SvgPlot p = {.id = id, .title = title, .ylabel = ylabel, .xkind = pg->xa[a].kind,
                     .xlabel = pg->xa[a].label, .smooth = smooth,
                     .max_points = REPORT_MAX_POINTS};
        svg_line_plot(f, &p, s->c, s->n);
        moe_free(s);
    }
    if (why && ns) note_left_out(pg, ylabel, why, skipped, ns);
}

/* Per-layer curves from an (n, L) float array per run (entropy, imbalance, experts per
 * token); only: NULL or whether the run's array applies (varies). */
static void layer_plot(FILE *f, Page *pg, float *const *data, const char *id,
                       const char *title, const char *ylabel, const double *yref,
                       const char *yref_label, Applies only, const char *why) {
    static char names[64][48];
    const char *skipped[64];
    int ns = 0;
    for (int a = 0; a < pg->nx; a++) {
        CurveSet *s = moe_calloc(sizeof *s);
        for (int k = 0; k < pg->nr; k++) {
            const RunData *r = &pg->runs[k];
            if (!data[k]) continue;
            if (only && !only(r, data[k])) {
                if (a == 0 && ns < 64) skipped[ns++] = r->name;
                continue;
            }
            for (int l = 0; l < r->L && l < 64; l++) {
                snprintf(names[l], sizeof names[l], "%s.l%d", id, l);
                SvgCurve *c = add_curve(s, names[l], r, pg->xa[a].x[k], r->n, NULL,
                                        data[k] + l, (size_t)r->L);
                if (!c) continue;
                if (pg->nr > 1) {
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
        SvgPlot p = {.id = id, .title = title, .ylabel = ylabel, .xkind = pg->xa[a].kind,
                     .xlabel = pg->xa[a].label, .yref = yref, .yref_label = yref_label,
                     .smooth = 1, .max_points = REPORT_MAX_POINTS};
        svg_line_plot(f, &p, s->c, s->n);
        moe_free(s);
    }
    if (why && ns) note_left_out(pg, ylabel, why, skipped, ns);
}

/* loss: train (solid) and validation (dashed, dots) per run */
static void loss_plot(FILE *f, const Page *pg) {
    for (int a = 0; a < pg->nx; a++) {
        CurveSet *s = moe_calloc(sizeof *s);
        for (int k = 0; k < pg->nr; k++) {
            const RunData *r = &pg->runs[k];
            int many = pg->nr > 1;
            SvgCurve *c = add_curve(s, "loss", r, pg->xa[a].x[k], r->n, r->col[REPORT_LOSS],
                                    NULL, 1);
            if (c) {
                c->color = PALETTE[(many ? k : 0) % NPAL];
                snprintf(c->label, sizeof c->label, "%s%strain loss", many ? r->name : "",
                         many ? " " : "");
            }
            c = add_curve(s, "val_loss", r, pg->xa[a].xv[k], r->n_val, r->val_loss, NULL, 1);
            if (c) {
                c->color = PALETTE[(many ? k : 1) % NPAL];
                c->dash = "6 3";
                c->markers = 1;
                snprintf(c->label, sizeof c->label, "%s%svalidation loss",
                         many ? r->name : "", many ? " " : "");
            }
        }
        SvgPlot p = {.id = "loss", .title = "Loss (train: total incl. aux and z; validation: LM)",
                     .ylabel = "loss (log scale)", .xkind = pg->xa[a].kind,
                     .xlabel = pg->xa[a].label, .logy = 1, .smooth = 1,
                     .max_points = REPORT_MAX_POINTS};
        svg_line_plot(f, &p, s->c, s->n);
        moe_free(s);
    }
}

/* ---- the page -------------------------------------------------------------------------- */

static void summary_table(FILE *f, const RunData *runs, int nr) {
    fprintf(f, "<table>\n<tr><th class=\"l\">run</th><th class=\"l\">directory</th>"
               "<th class=\"l\">model</th><th>steps</th><th>last step</th><th>tokens</th>"
               "<th>wall-clock</th><th>last loss</th><th>best val loss</th><th>skipped</th>"
               "<th>mean tokens/s</th><th>flagged experts</th></tr>\n");
    for (int k = 0; k < nr; k++) {
        const RunData *r = &runs[k];
        double last = (double)NAN, best = HUGE_VAL, tps = 0, tok = (double)NAN;
        double t1 = (double)NAN;
        size_t skipped = 0, ntps = 0;
        for (size_t i = 0; i < r->n; i++) {
            double v = r->col[REPORT_LOSS][i];
            if (isfinite(v)) last = v;
            if (r->skipped[i] || !isfinite(v)) skipped++;
            if (isfinite(r->col[REPORT_TOKENS][i])) tok = r->col[REPORT_TOKENS][i];
            if (isfinite(r->col[REPORT_TIME][i])) t1 = r->col[REPORT_TIME][i];
            /* the first step includes warm-up costs; leave it out when there are others */
            double t = r->col[REPORT_TOKENS_PER_S][i];
            if (isfinite(t) && (i > 0 || r->n == 1)) tps += t, ntps++;
        }
        for (size_t i = 0; i < r->n_val; i++) {
            if (isfinite(r->val_loss[i]) && r->val_loss[i] < best) best = r->val_loss[i];
            if (isfinite(r->val_time[i]) && !(r->val_time[i] <= t1)) t1 = r->val_time[i];
        }
        int dead = 0, dominant = 0;
        if (r->E > 0) {
            signed char *flag = moe_malloc((size_t)r->E);
            for (int l = 0; l < r->L; l++) {
                report_expert_flags(r, l, flag, NULL);
                for (int e = 0; e < r->E; e++) dead += flag[e] < 0, dominant += flag[e] > 0;
            }
            moe_free(flag);
        }
        char b[7][48];
        fmt_val(b[0], sizeof b[0], r->col[REPORT_STEP][r->n - 1]);
        fmt_val(b[1], sizeof b[1], tok);
        fmt_val(b[2], sizeof b[2], last);
        fmt_val(b[3], sizeof b[3], isfinite(best) ? best : (double)NAN);
        fmt_val(b[4], sizeof b[4], ntps ? tps / (double)ntps : (double)NAN);
        fmt_duration(b[5], sizeof b[5], t1 - first_time(r));
        if (r->E == 0) snprintf(b[6], sizeof b[6], "&#8211;");
        else if (dead + dominant == 0) snprintf(b[6], sizeof b[6], "none");
        else snprintf(b[6], sizeof b[6], "%d dead, %d dominant", dead, dominant);
        fprintf(f, "<tr><td class=\"l\"><span style=\"color:%s\">&#9632;</span> ",
                PALETTE[k % NPAL]);
        svg_put_esc(f, r->name);
        fprintf(f, "</td><td class=\"l\">");
        svg_put_esc(f, r->dir);
        if (r->E > 0)
            fprintf(f, "</td><td class=\"l\">MoE: %d layers &#215; %d experts", r->L, r->E);
        else
            fprintf(f, "</td><td class=\"l\">dense (no expert_load)");
        fprintf(f, "</td><td>%zu</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td>"
                   "<td>%zu</td><td>%s</td><td>%s</td></tr>\n",
                r->n, b[0], b[1], b[5], b[2], b[3], skipped, b[4], b[6]);
    }
    fprintf(f, "</table>\n");
}

/* The switches: siblings before .content, so the CSS can show and hide with them. */
static void controls(FILE *f, const Page *pg) {
    fprintf(f, "<span class=\"ctl\">x axis:</span>\n");
    static const char *const NAME[NX] = {"step", "tokens seen", "wall-clock time"};
    for (int a = 0; a < NX; a++)
        fprintf(f, "<input type=\"radio\" class=\"ctl\" name=\"x\" id=\"x-%s\"%s%s/>"
                   "<label class=\"ctl\" for=\"x-%s\">%s</label>\n",
                pg->xa[a].kind, a == X_TOKENS ? " checked=\"checked\"" : "",
                a >= pg->nx ? " disabled=\"disabled\"" : "", pg->xa[a].kind, NAME[a]);
    fprintf(f, "<input type=\"checkbox\" class=\"ctl\" id=\"ema\"/><label class=\"ctl\" "
               "for=\"ema\">EMA smoothing</label>\n");
}

static void notes(FILE *f, const Page *pg) {
    fprintf(f, "<p class=\"note\">Curves longer than %d points are downsampled keeping each "
               "bucket's minimum and maximum. Gaps are skipped steps (non-finite loss or "
               "gradients). Hover a plot for values. EMA smoothing: debiased exponential "
               "moving average with a time constant of max(5, n/40) logged points (the raw "
               "curve stays, faded).</p>\n", REPORT_MAX_POINTS);
    const char *without[64];
    int nw = 0;
    for (int k = 0; k < pg->nr && nw < 64; k++)
        if (!pg->el[k]) without[nw++] = pg->runs[k].name;
    if (nw == 0) return;
    if (nw == pg->nr)
        fprintf(f, "<p class=\"note\" id=\"no-time\">No wall-clock axis: %s metrics.jsonl "
                   "has no \"time\" field (written by a moetrain from before it logged the "
                   "time of each line).</p>\n", nw > 1 ? "these runs'" : "this run's");
    else {
        fprintf(f, "<p class=\"note\" id=\"no-time\">Not on the wall-clock axis (no \"time\" "
                   "in metrics.jsonl: written before moetrain logged it): ");
        for (int i = 0; i < nw; i++) {
            if (i) fputs(", ", f);
            svg_put_esc(f, without[i]);
        }
        fprintf(f, ".</p>\n");
    }
}

/* How every page starts: also how cmd_report recognises a page it may regenerate. */
static const char PAGE_START[] =
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n"
    "<title>moetrain report: ";

static void write_page(FILE *f, const RunData *runs, int nr, int reload_s) {
    Page pg;
    page_init(&pg, runs, nr);
    fputs(PAGE_START, f);
    for (int k = 0; k < nr; k++) {
        if (k) fputs(", ", f);
        svg_put_esc(f, runs[k].name);
    }
    fprintf(f, "</title>\n");
    if (reload_s > 0) fprintf(f, "<meta name=\"moetrain-watch\" content=\"%d\"/>\n", reload_s);
    fprintf(f, "<style>\n%s</style>\n</head>\n<body>\n<h1>moetrain report</h1>\n", REPORT_CSS);
    if (reload_s > 0) {
        char when[32] = "?";
        time_t now = time(NULL);
        struct tm tm;
        if (localtime_r(&now, &tm)) strftime(when, sizeof when, "%H:%M:%S", &tm);
        fprintf(f, "<p class=\"live\">Live: written at %s by <code>moetrain report "
                   "--watch</code> while the run writes metrics; this page reloads itself "
                   "every %d s.</p>\n", when, reload_s);
    }
    summary_table(f, runs, nr);
    controls(f, &pg);
    fprintf(f, "<div class=\"content\">\n");
    notes(f, &pg);

    fprintf(f, "<h2>Training curves</h2>\n<div class=\"plots\">\n");
    loss_plot(f, &pg);
    metric_plot(f, &pg, REPORT_AUX_LOSS, "aux_loss", "Load-balancing loss (aux)", "aux loss",
                1, moe_nonzero, "dense, or 0 at every step");
    metric_plot(f, &pg, REPORT_Z_LOSS, "z_loss", "Router z-loss", "z loss", 1, moe_nonzero,
                "dense, or 0 at every step");
    metric_plot(f, &pg, REPORT_LR, "lr", "Learning rate", "learning rate", 0, NULL, NULL);
    metric_plot(f, &pg, REPORT_GRAD_NORM, "grad_norm", "Gradient norm (before clipping)",
                "grad norm", 1, NULL, NULL);
    metric_plot(f, &pg, REPORT_TOKENS_PER_S, "tokens_per_s", "Throughput", "tokens / s", 1,
                NULL, NULL);
    fprintf(f, "</div>\n");

    /* routing: entropy, max/mean load and experts per token per layer */
    int any_moe = 0, same_e = 1;
    float **ent = moe_calloc((size_t)nr * sizeof *ent);
    float **ept = moe_calloc((size_t)nr * sizeof *ept);
    for (int k = 0; k < nr; k++) {
        const RunData *r = &runs[k];
        if (r->E == 0) continue;
        if (any_moe && r->E != runs[any_moe - 1].E) same_e = 0;
        if (!any_moe) any_moe = k + 1;
        ent[k] = r->entropy;
        ept[k] = r->experts;
    }
    if (any_moe) {
        fprintf(f, "<h2>Routing</h2>\n<div class=\"plots\">\n");
        double lnE = log((double)runs[any_moe - 1].E), one = 1.0;
        layer_plot(f, &pg, ent, "router_entropy", "Router entropy per layer",
                   "entropy (nats)", same_e ? &lnE : NULL, "uniform routing: ln E", NULL, NULL);
        layer_plot(f, &pg, pg.imb, "load_imbalance",
                   "Load imbalance per layer (max expert share / mean share)", "max / mean",
                   &one, "perfect balance", NULL, NULL);
        /* K for top-k (left out); varies with moe.router topp and expert_choice; absent
         * from older runs' metrics */
        layer_plot(f, &pg, ept, "experts_per_token", "Experts per token per layer",
                   "experts / token", NULL, NULL, varies,
                   "the same at every step: top-k routing");
        fprintf(f, "</div>\n");
    }
    moe_free(ent);
    moe_free(ept);
    if (pg.left_out[0]) {
        fprintf(f, "<p class=\"note\" id=\"left-out\">Left out, as they do not apply: ");
        svg_put_esc(f, pg.left_out);
        fprintf(f, ".</p>\n");
    }
    report_expert_section(f, runs, nr);
    report_config_section(f, runs, nr);
    fprintf(f, "</div>\n<div id=\"tip\" class=\"tip\"></div><div id=\"cursor\" "
               "class=\"cursor\"></div>\n<script>\n%s</script>\n</body>\n</html>\n", REPORT_JS);
    page_free(&pg);
}

int report_write(const RunData *runs, int n_runs, const char *out_path, int reload_s,
                 MoeErr *err) {
    FsAtomicFile af;
    if (fs_atomic_open(&af, out_path, err)) return -1;
    write_page(af.fp, runs, n_runs, reload_s); /* a failed write sets the error flag: commit checks */
    if (fs_atomic_commit(&af, err)) return -1;
    /* a report is for sharing: readable by all whatever the umask */
    chmod(out_path, 0644);
    return 0;
}

bool report_is_page(const char *path) {
    char head[sizeof PAGE_START];
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    size_t n = fread(head, 1, sizeof PAGE_START - 1, f);
    fclose(f);
    return n == sizeof PAGE_START - 1 && !memcmp(head, PAGE_START, n);
}
