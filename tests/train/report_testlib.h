/* report_testlib.h: what the report tests (test_report.c: the reader, the command and the
 * page's plots; test_report_page.c: the page's switches, hover data, config diff, left-out
 * plots, log ticks and expert flags) share.
 *
 * - A small XML well-formedness checker (tags balanced and nested, attributes quoted and
 *   unique, entities valid, one root) that parses the whole page into a flat element list,
 *   and queries on it: attributes, the <svg> plots by data-plot (the variant drawn against
 *   g_x, "tokens" unless a test sets it), the curves of a plot, heatmap rows and cells.
 * - Synthetic runs written into a fresh temporary directory g_dir (setup/teardown) and
 *   render(), which loads run directories and writes and checks a page.
 */
#ifndef MOE_REPORT_TESTLIB_H
#define MOE_REPORT_TESTLIB_H

#include <stddef.h>

typedef struct {
    char name[32];
    int parent;       /* index of the parent element, -1 for the root */
    const char *attr; /* start of the attribute text inside the document (borrowed) */
    size_t attr_len;
} Elem;

typedef struct {
    Elem *e;          /* (n) malloc'ed: free(d.e) */
    int n, cap;
    char why[256];
} Doc;

/* Returns 0 when s is well-formed (an optional <!DOCTYPE ...> first); fills d. */
int xml_check(Doc *d, const char *s);
/* Value of attribute name of e into out (raw, entities not decoded); 0 when absent. */
int attr(const Elem *e, const char *name, char *out, size_t cap);
int has_attr(const Elem *e, const char *name, const char *value);
/* Whether element i lies inside element anc. */
int is_inside(const Doc *d, int i, int anc);
/* The text right after element i's start tag, up to the next '<', into out. */
void elem_text(const Elem *e, char *out, size_t cap);

/* Line plots are drawn once per x axis (data-x); find_svg and count_svgs see the ones of
 * g_x only (default "tokens"). */
extern const char *g_x;
/* Index of the single <svg data-plot=plot> (with data-run/data-layer when not NULL/-1);
 * -1 when there is none, -2 when there are several. */
int find_svg(const Doc *d, const char *plot, const char *run, int layer);
/* Sorted, comma-joined "series@run" list of the curves in svg i (paths with data-series). */
void curve_set(const Doc *d, int svg, char *out, size_t cap);
int count_svgs(const Doc *d);
/* Checks the heatmap svg has E rows of C cells each. */
void check_heatmap(const Doc *d, const char *run, int layer, int E, int C);
/* ck_asserts the single plot's curve set equals want. */
void expect_curves(const Doc *d, const char *plot, const char *want);

/* fixtures */
extern char g_dir[256];
void setup(void);      /* g_dir = a fresh temporary directory */
void teardown(void);   /* removes it */
const char *tmp_path(const char *rel);  /* g_dir/rel (one of 4 rotating buffers) */
void write_file(const char *path, const char *text);
char *read_all(const char *path);       /* malloc'ed, NUL-terminated */

/* What write_moe_run writes besides: experts_per_token (0 none, 1 changing, 2 always 2),
 * "time" (0 none, else g_time + 30 s per step), each expert's share (NULL: 0.5 for expert 0,
 * the rest spread evenly). Reset them after use. */
extern int g_experts_per_token;
extern double g_time;
extern double (*g_load)(int step, int layer, int expert, int E);

/* A synthetic MoE run g_dir/name: steps lines with L x E loads, a NaN skipped step at
 * nan_step (0 = none), validation points every val_every steps (0 = none), config.yaml
 * when config is not NULL. */
void write_moe_run(const char *name, int steps, int L, int E, int nan_step, int val_every,
                   const char *config);
/* A dense run g_dir/name (no expert_load; aux and z losses 0). */
void write_dense_run(const char *name, int steps);

/* Loads the run directories, renders them to g_dir/out.html and parses the page, which must
 * be well-formed, with one inline script and nothing loaded. Returns the page text (caller
 * frees) and fills d. */
char *render(const char *const *dirs, int n, Doc *d);

#endif
