/* report_experts.h: the expert-load part of the report page (train/report.h): per run and
 * MoE layer a heatmap of each expert's share of the routed slots over time (train/svg.h),
 * and next to it, in words, the experts that are dead or dominant now.
 *
 * An expert is flagged from the last REPORT_FLAG_STEPS logged steps that have its layer's
 * expert_load (fewer when the run has fewer): dead when its share is below
 * REPORT_DEAD_SHARE / E in every one of them, dominant when it is above
 * REPORT_DOMINANT_SHARE / E in every one (1/E is the share of perfectly uniform routing).
 * Every one, not the mean: a single quiet or busy step is noise, a streak is a trend.
 * Non-goals: judging the past (the heatmap shows it), capacity drops (metrics "dropped").
 */
#ifndef MOE_REPORT_EXPERTS_H
#define MOE_REPORT_EXPERTS_H

#include <stddef.h>
#include <stdio.h>

#include "train/report_data.h"

#define REPORT_MAX_COLUMNS 400  /* time columns per heatmap; steps are averaged per column */
#define REPORT_MAX_CELLS 12800  /* cells per heatmap (E x columns): many experts, fewer columns */

/* Time columns of a heatmap of n_steps steps and E experts:
 * min(n_steps, REPORT_MAX_COLUMNS, REPORT_MAX_CELLS / E), at least 1. */
size_t report_heatmap_columns(size_t n_steps, int E);

#define REPORT_FLAG_STEPS 10        /* the last N logged steps an expert is judged on */
#define REPORT_DEAD_SHARE 0.1       /* x 1/E: share below it in each of them = dead */
#define REPORT_DOMINANT_SHARE 3.0   /* x 1/E: share above it in each of them = dominant */

/* flag (E) for layer l of the MoE run r (r->E > 0, 0 <= l < r->L): -1 dead, +1 dominant,
 * 0 neither; *steps_used (when not NULL) = how many steps were judged (0: no step has
 * this layer's load, nothing flagged). Returns how many experts are flagged. */
int report_expert_flags(const RunData *r, int l, signed char *flag, int *steps_used);

/* The "Expert load" section for the MoE runs among runs[0..nr): a note on reading the
 * heatmaps, then per run (a heading when nr > 1) and layer a <div class="heatbox"> with the
 * heatmap (report_heatmap_columns columns) and, when experts are flagged, <ul class="flags"> with one
 * <li data-flag="dead|dominant" data-run=RUN data-layer=L data-expert=e> per expert naming
 * the layer, the expert, the threshold and its latest share. Nothing when no run is MoE. */
void report_expert_section(FILE *f, const RunData *runs, int nr);

#endif
