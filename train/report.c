/* report.c: see report.h.
 *
 * The page: a summary table, the line plots (one curve per run, or per layer), the expert
 * load heatmaps per run and layer, and each run's config.yaml, drawn by train/svg.h. Curves
 * use the Okabe-Ito palette (readable by colour-blind readers).
 */
#include "train/report.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/fs.h"
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

size_t report_heatmap_columns(size_t n_steps, int E) {
    size_t c = n_steps < REPORT_MAX_COLUMNS ? n_steps : REPORT_MAX_COLUMNS;
    size_t by_cells = E > 0 ? REPORT_MAX_CELLS / (size_t)E : c;
    return c < by_cells ? c : (by_cells > 0 ? by_cells : 1);
}

typedef struct {
    SvgCurve c[256];
    int n;
} CurveSet;

/* Appends a curve over r's points; NULL (nothing appended) when the set is full or the
 * curve has no finite point. */
static SvgCurve *add_curve(CurveSet *s, const char *series, const RunData *r,
                           const double *x, size_t n, const double *y, const float *yf,
                           size_t stride) {
    if (s->n >= (int)(sizeof s->c / sizeof s->c[0])) return NULL;
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
        svg_put_esc(f, r->name);
        fprintf(f, "</td><td class=\"l\">");
        svg_put_esc(f, r->dir);
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
        SvgCurve *c = add_curve(s, id, r, r->col[REPORT_TOKENS], r->n, r->col[colid], NULL, 1);
        if (!c) continue;
        c->color = PALETTE[k % NPAL];
        snprintf(c->label, sizeof c->label, "%s", nr > 1 ? r->name : id);
    }
    SvgPlot p = {.id = id, .title = title, .ylabel = ylabel, .max_points = REPORT_MAX_POINTS};
    svg_line_plot(f, &p, s->c, s->n);
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
            SvgCurve *c = add_curve(s, names[l], r, r->col[REPORT_TOKENS], r->n, NULL,
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
    SvgPlot p = {.id = id, .title = title, .ylabel = ylabel, .yref = yref,
                 .yref_label = yref_label, .max_points = REPORT_MAX_POINTS};
    svg_line_plot(f, &p, s->c, s->n);
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
        svg_put_esc(f, runs[k].name);
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
        SvgCurve *c = add_curve(s, "loss", r, r->col[REPORT_TOKENS], r->n, r->col[REPORT_LOSS],
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
    SvgPlot loss_plot = {.id = "loss",
                         .title = "Loss (train: total incl. aux and z; validation: LM)",
                         .ylabel = "loss (log scale)", .logy = 1,
                         .max_points = REPORT_MAX_POINTS};
    svg_line_plot(f, &loss_plot, s->c, s->n);
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
        /* K for top-k; varies with moe.router topp; absent from older runs' metrics */
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
                svg_put_esc(f, r->name);
                fprintf(f, "</h3>\n");
            }
            fprintf(f, "<div class=\"plots\">\n");
            for (int l = 0; l < r->L; l++)
                svg_heatmap(f, r->name, l, r->col[REPORT_STEP], r->n, r->load + (size_t)l * r->E,
                            le, r->E, report_heatmap_columns(r->n, r->E), vmax);
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
        svg_put_esc(f, runs[k].dir);
        fprintf(f, "/config.yaml</h3>\n");
        if (runs[k].config) {
            fprintf(f, "<pre class=\"config\">");
            svg_put_esc(f, runs[k].config);
            fprintf(f, "</pre>\n");
        } else {
            fprintf(f, "<p class=\"note\">(no config.yaml in this run directory)</p>\n");
        }
    }
    fprintf(f, "</body>\n</html>\n");
}

int report_write(const RunData *runs, int n_runs, const char *out_path, MoeErr *err) {
    FsAtomicFile af;
    if (fs_atomic_open(&af, out_path, err)) return -1;
    write_page(af.fp, runs, n_runs);   /* a failed write sets the error flag: commit checks */
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

