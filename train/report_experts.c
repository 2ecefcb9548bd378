/* report_experts.c: see report_experts.h. */
#include "train/report_experts.h"

#include <math.h>
#include <string.h>

#include "train/svg.h"

size_t report_heatmap_columns(size_t n_steps, int E) {
    size_t c = n_steps < REPORT_MAX_COLUMNS ? n_steps : REPORT_MAX_COLUMNS;
    size_t by_cells = E > 0 ? REPORT_MAX_CELLS / (size_t)E : c;
    return c < by_cells ? c : (by_cells > 0 ? by_cells : 1);
}

int report_expert_flags(const RunData *r, int l, signed char *flag, int *steps_used) {
    const int E = r->E;
    const size_t le = (size_t)r->L * (size_t)E;
    const double dead = REPORT_DEAD_SHARE / E, dominant = REPORT_DOMINANT_SHARE / E;
    int used = 0, nflag = 0;
    for (int e = 0; e < E; e++) flag[e] = 0;
    /* walk back over the last REPORT_FLAG_STEPS steps that logged this layer's load;
     * an expert stays a candidate while every step so far agrees */
    unsigned char *cand_dead = moe_malloc(2 * (size_t)E), *cand_dom = cand_dead + E;
    memset(cand_dead, 1, 2 * (size_t)E);
    for (size_t i = r->n; i-- > 0 && used < REPORT_FLAG_STEPS;) {
        const float *s = r->load + i * le + (size_t)l * E;
        if (!isfinite(s[0])) continue;   /* a step without expert_load (NaN row) */
        for (int e = 0; e < E; e++) {
            double v = (double)s[e];
            if (!(v < dead)) cand_dead[e] = 0;
            if (!(v > dominant)) cand_dom[e] = 0;
        }
        used++;
    }
    if (used > 0)
        for (int e = 0; e < E; e++) {
            flag[e] = (signed char)(cand_dead[e] ? -1 : cand_dom[e] ? 1 : 0);
            nflag += flag[e] != 0;
        }
    moe_free(cand_dead);
    if (steps_used) *steps_used = used;
    return nflag;
}

/* The latest finite share of expert e in layer l. */
static double last_share(const RunData *r, int l, int e) {
    const size_t le = (size_t)r->L * (size_t)r->E;
    for (size_t i = r->n; i-- > 0;) {
        double v = (double)r->load[i * le + (size_t)l * r->E + e];
        if (isfinite(v)) return v;
    }
    return (double)NAN;
}

static void flag_list(FILE *f, const RunData *r, int l, const signed char *flag, int used) {
    fprintf(f, "<ul class=\"flags\">\n");
    for (int e = 0; e < r->E; e++) {
        if (!flag[e]) continue;
        int dead = flag[e] < 0;
        fprintf(f, "<li class=\"flag\" data-flag=\"%s\" data-run=\"", dead ? "dead" : "dominant");
        svg_put_esc(f, r->name);
        fprintf(f, "\" data-layer=\"%d\" data-expert=\"%d\"><b>layer %d, expert %d: %s</b>: "
                   "share %s %g/E = %.3g in each of the last %d logged steps (latest %.3g)"
                   "</li>\n",
                l, e, l, e, dead ? "dead" : "dominant", dead ? "below" : "above",
                dead ? REPORT_DEAD_SHARE : REPORT_DOMINANT_SHARE,
                (dead ? REPORT_DEAD_SHARE : REPORT_DOMINANT_SHARE) / r->E, used,
                last_share(r, l, e));
    }
    fprintf(f, "</ul>\n");
}

void report_expert_section(FILE *f, const RunData *runs, int nr) {
    int any = 0;
    for (int k = 0; k < nr; k++) any |= runs[k].E > 0;
    if (!any) return;
    fprintf(f, "<h2>Expert load</h2>\n<p class=\"note\">x: step, y: expert, colour: "
               "share of the layer's routed slots (steps averaged into at most %d "
               "columns; grey = no data). A bright row over a dark layer is an expert "
               "that took over; uniform routing is one even colour at 1/E. An expert is "
               "flagged (&#9664;) as <b>dead</b> when its share is below %g/E, or "
               "<b>dominant</b> when above %g/E, in each of the last %d logged steps.</p>\n",
            REPORT_MAX_COLUMNS, REPORT_DEAD_SHARE, REPORT_DOMINANT_SHARE, REPORT_FLAG_STEPS);
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
        signed char *flag = moe_malloc((size_t)r->E);
        fprintf(f, "<div class=\"plots\">\n");
        for (int l = 0; l < r->L; l++) {
            int used = 0, nflag = report_expert_flags(r, l, flag, &used);
            fprintf(f, "<div class=\"heatbox\">\n");
            svg_heatmap(f, r->name, l, r->col[REPORT_STEP], r->n, r->load + (size_t)l * r->E,
                        le, r->E, report_heatmap_columns(r->n, r->E), vmax, flag);
            if (nflag) flag_list(f, r, l, flag, used);
            fprintf(f, "</div>\n");
        }
        fprintf(f, "</div>\n");
        moe_free(flag);
    }
}
