/* report_testlib.c: see report_testlib.h. */
#include "report_testlib.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "train/report.h"

const char *g_x = "tokens";
int g_experts_per_token = 0;
double g_time = 0;
double (*g_load)(int step, int layer, int expert, int E) = NULL;

static int is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_' || c == ':' || c == '.';
}

/* Checks an entity at s (pointing at '&'); returns its length or 0 when invalid. */
static size_t entity_len(const char *s) {
    static const char *const named[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"};
    for (int i = 0; i < 5; i++)
        if (!strncmp(s, named[i], strlen(named[i]))) return strlen(named[i]);
    if (s[1] != '#') return 0;
    size_t i = 2;
    int hex = s[2] == 'x';
    if (hex) i++;
    size_t d0 = i;
    while ((hex ? strchr("0123456789abcdefABCDEF", s[i]) : strchr("0123456789", s[i])) && s[i])
        i++;
    return (i > d0 && s[i] == ';') ? i + 1 : 0;
}

static int doc_fail(Doc *d, const char *s, const char *p, const char *what) {
    int line = 1;
    for (const char *q = s; q < p; q++) line += *q == '\n';
    snprintf(d->why, sizeof d->why, "line %d: %s", line, what);
    return -1;
}

/* Parses the attribute list of a start tag between p and the closing '>' or '/>'.
 * Returns the position after the attributes or NULL. */
static const char *check_attrs(Doc *d, const char *s, const char *p) {
    char seen[64][32];
    int ns = 0;
    for (;;) {
        const char *ws = p;
        while (*p == ' ' || *p == '\n' || *p == '\t') p++;
        if (*p == '>' || (*p == '/' && p[1] == '>')) return p;
        if (p == ws) return doc_fail(d, s, p, "attributes must be separated by space"), NULL;
        const char *n0 = p;
        while (is_name_char(*p)) p++;
        if (p == n0) return doc_fail(d, s, p, "bad attribute name"), NULL;
        size_t nl = (size_t)(p - n0);
        if (nl >= 32 || ns >= 64) return doc_fail(d, s, p, "attribute too long/many"), NULL;
        for (int i = 0; i < ns; i++)
            if (strlen(seen[i]) == nl && !strncmp(seen[i], n0, nl))
                return doc_fail(d, s, p, "duplicate attribute"), NULL;
        memcpy(seen[ns], n0, nl);
        seen[ns++][nl] = 0;
        if (*p != '=') return doc_fail(d, s, p, "attribute without a value"), NULL;
        p++;
        char q = *p;
        if (q != '"' && q != '\'') return doc_fail(d, s, p, "unquoted attribute"), NULL;
        p++;
        while (*p && *p != q) {
            if (*p == '<') return doc_fail(d, s, p, "'<' in attribute value"), NULL;
            if (*p == '&') {
                size_t el = entity_len(p);
                if (!el) return doc_fail(d, s, p, "bad entity in attribute"), NULL;
                p += el;
            } else {
                p++;
            }
        }
        if (!*p) return doc_fail(d, s, p, "unterminated attribute value"), NULL;
        p++;
    }
}

/* Returns 0 when s is well-formed (an optional <!DOCTYPE ...> first); fills d. */
int xml_check(Doc *d, const char *s) {
    int stack[256], depth = 0, roots = 0;
    const char *p = s;
    memset(d, 0, sizeof *d);
    while (*p == ' ' || *p == '\n') p++;
    if (!strncmp(p, "<!DOCTYPE", 9)) {
        p = strchr(p, '>');
        if (!p) return doc_fail(d, s, s, "unterminated doctype");
        p++;
    }
    while (*p) {
        if (*p == '&') {
            size_t el = entity_len(p);
            if (!el) return doc_fail(d, s, p, "bad entity in text");
            p += el;
        } else if (*p != '<') {
            if (depth == 0 && !(*p == ' ' || *p == '\n' || *p == '\t'))
                return doc_fail(d, s, p, "text outside the root element");
            if (*p == '>' && p > s + 1 && p[-1] == ']' && p[-2] == ']')
                return doc_fail(d, s, p, "']]>' in text");
            p++;
        } else if (!strncmp(p, "<!--", 4)) {
            const char *e = strstr(p + 4, "-->");
            if (!e) return doc_fail(d, s, p, "unterminated comment");
            p = e + 3;
        } else if (p[1] == '/') {
            const char *n0 = p + 2, *q = n0;
            while (is_name_char(*q)) q++;
            if (depth == 0) return doc_fail(d, s, p, "end tag without a start tag");
            const Elem *top = &d->e[stack[depth - 1]];
            if ((size_t)(q - n0) != strlen(top->name) || strncmp(n0, top->name, (size_t)(q - n0)))
                return doc_fail(d, s, p, "end tag does not match the open element");
            while (*q == ' ') q++;
            if (*q != '>') return doc_fail(d, s, q, "bad end tag");
            depth--;
            p = q + 1;
        } else {
            const char *n0 = p + 1, *q = n0;
            while (is_name_char(*q)) q++;
            if (q == n0 || q - n0 >= 32) return doc_fail(d, s, p, "bad element name");
            if (depth == 0 && roots++) return doc_fail(d, s, p, "second root element");
            if (d->n == d->cap) {
                d->cap = d->cap ? d->cap * 2 : 1024;
                d->e = realloc(d->e, (size_t)d->cap * sizeof *d->e);
                ck_assert(d->e != NULL);
            }
            Elem *el = &d->e[d->n];
            memcpy(el->name, n0, (size_t)(q - n0));
            el->name[q - n0] = 0;
            el->parent = depth ? stack[depth - 1] : -1;
            el->attr = q;
            const char *a = check_attrs(d, s, q);
            if (!a) return -1;
            el->attr_len = (size_t)(a - q);
            int idx = d->n++;
            if (*a == '/') {
                p = a + 2;
            } else {
                if (depth >= 256) return doc_fail(d, s, p, "nesting too deep");
                stack[depth++] = idx;
                p = a + 1;
            }
        }
    }
    if (depth) return doc_fail(d, s, p, "unclosed element at end of document");
    if (!roots) return doc_fail(d, s, p, "no root element");
    return 0;
}

/* Value of attribute name of e into out (raw, entities not decoded); 0 when absent. */
int attr(const Elem *e, const char *name, char *out, size_t cap) {
    size_t nl = strlen(name);
    const char *p = e->attr, *end = e->attr + e->attr_len;
    while (p < end) {
        while (p < end && *p == ' ') p++;
        const char *n0 = p;
        while (p < end && *p != '=') p++;
        if (p >= end) break;
        char q = p[1];
        const char *v0 = p + 2, *v1 = memchr(v0, q, (size_t)(end - v0));
        if (!v1) break;
        if ((size_t)(p - n0) == nl && !strncmp(n0, name, nl)) {
            size_t vl = (size_t)(v1 - v0) < cap - 1 ? (size_t)(v1 - v0) : cap - 1;
            memcpy(out, v0, vl);
            out[vl] = 0;
            return 1;
        }
        p = v1 + 1;
    }
    return 0;
}

void elem_text(const Elem *e, char *out, size_t cap) {
    const char *p = strchr(e->attr + e->attr_len, '>');
    size_t n = 0;
    if (p && p[-1] != '/')
        for (p++; *p && *p != '<' && n + 1 < cap; p++) out[n++] = *p;
    out[n] = 0;
}

int has_attr(const Elem *e, const char *name, const char *value) {
    char v[256];
    return attr(e, name, v, sizeof v) && !strcmp(v, value);
}

int is_inside(const Doc *d, int i, int anc) {
    for (int p = d->e[i].parent; p >= 0; p = d->e[p].parent)
        if (p == anc) return 1;
    return 0;
}

/* Index of the single <svg data-plot=plot> (with data-run/data-layer when not NULL/-1);
 * -1 when there is none, -2 when there are several. */
int find_svg(const Doc *d, const char *plot, const char *run, int layer) {
    int found = -1;
    char lb[16], xv[16];
    snprintf(lb, sizeof lb, "%d", layer);
    for (int i = 0; i < d->n; i++) {
        if (strcmp(d->e[i].name, "svg") || !has_attr(&d->e[i], "data-plot", plot)) continue;
        if (run && !has_attr(&d->e[i], "data-run", run)) continue;
        if (layer >= 0 && !has_attr(&d->e[i], "data-layer", lb)) continue;
        if (attr(&d->e[i], "data-x", xv, sizeof xv) && strcmp(xv, g_x)) continue;
        if (found >= 0) return -2;
        found = i;
    }
    return found;
}

/* Sorted, comma-joined "series@run" list of the curves in svg i (paths with data-series). */
void curve_set(const Doc *d, int svg, char *out, size_t cap) {
    char items[256][96];
    int n = 0;
    for (int i = svg + 1; i < d->n && n < 256; i++) {
        if (!is_inside(d, i, svg)) break;
        char se[48], ru[48];
        if (strcmp(d->e[i].name, "path") || !attr(&d->e[i], "data-series", se, sizeof se))
            continue;
        ck_assert_msg(attr(&d->e[i], "data-run", ru, sizeof ru), "curve %s without data-run",
                      se);
        snprintf(items[n++], sizeof items[0], "%s@%s", se, ru);
    }
    for (int a = 0; a < n; a++)
        for (int b = a + 1; b < n; b++)
            if (strcmp(items[a], items[b]) > 0) {
                char t[96];
                memcpy(t, items[a], sizeof t);
                memcpy(items[a], items[b], sizeof t);
                memcpy(items[b], t, sizeof t);
            }
    out[0] = 0;
    size_t len = 0;
    for (int a = 0; a < n && len < cap; a++)
        len += (size_t)snprintf(out + len, cap - len, "%s%s", a ? "," : "", items[a]);
}

int count_svgs(const Doc *d) {
    int k = 0;
    char xv[16];
    for (int i = 0; i < d->n; i++)
        k += !strcmp(d->e[i].name, "svg") &&
             !(attr(&d->e[i], "data-x", xv, sizeof xv) && strcmp(xv, g_x));
    return k;
}

/* Checks the heatmap svg has E rows of C cells each. */
void check_heatmap(const Doc *d, const char *run, int layer, int E, int C) {
    int svg = find_svg(d, "expert_load", run, layer);
    ck_assert_msg(svg >= 0, "heatmap %s layer %d: found %d", run, layer, svg);
    int rows = 0;
    for (int i = svg + 1; i < d->n && is_inside(d, i, svg); i++) {
        if (strcmp(d->e[i].name, "g") || !has_attr(&d->e[i], "class", "row")) continue;
        char eb[16];
        snprintf(eb, sizeof eb, "%d", rows);
        ck_assert_msg(has_attr(&d->e[i], "data-expert", eb), "row %d has the wrong expert",
                      rows);
        int cells = 0;
        for (int j = i + 1; j < d->n && is_inside(d, j, i); j++)
            cells += !strcmp(d->e[j].name, "rect") && has_attr(&d->e[j], "class", "cell");
        ck_assert_msg(cells == C, "%s layer %d expert %d: %d cells, want %d", run, layer, rows,
                      cells, C);
        rows++;
    }
    ck_assert_msg(rows == E, "%s layer %d: %d rows, want %d", run, layer, rows, E);
}

/* ------------------------------------------------------------------------------------- */
/* fixtures                                                                               */

char g_dir[256];

void setup(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/moe_report_XXXXXX");
    ck_assert(mkdtemp(g_dir) != NULL);
}

void teardown(void) {
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
}

const char *tmp_path(const char *rel) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, rel);
    return buf[k];
}

void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

char *read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot read %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    ck_assert(s && fread(s, 1, (size_t)n, f) == (size_t)n);
    s[n] = 0;
    fclose(f);
    return s;
}


void write_moe_run(const char *name, int steps, int L, int E, int nan_step, int val_every,
                   const char *config) {
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/%s", g_dir, name);
    ck_assert(mkdir(dir, 0755) == 0);
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    FILE *f = fopen(path, "w");
    ck_assert(f != NULL);
    for (int s = 1; s <= steps; s++) {
        double loss = 8.0 / (1.0 + 0.01 * s);
        fprintf(f, "{\"step\":%d,\"tokens\":%d,", s, s * 512);
        if (g_time) fprintf(f, "\"time\":%.3f,", g_time + 30.0 * s);
        if (s == nan_step)
            fprintf(f, "\"loss\":nan,\"lm_loss\":-nan,"
                       "\"aux_loss\":nan,\"z_loss\":nan,\"lr\":0.001,\"grad_norm\":inf,");
        else
            fprintf(f, "\"loss\":%g,\"lm_loss\":%g,"
                       "\"aux_loss\":0.01,\"z_loss\":0.002,\"lr\":%g,\"grad_norm\":%g,",
                    loss, loss - 0.01, 1e-3 * s / steps, 1.0 + (s % 7));
        fprintf(f, "\"tokens_per_s\":%d,\"mfu\":0,\"step_time\":0.5,\"skipped\":%s,"
                   "\"expert_load\":[", 1000 + s % 13, s == nan_step ? "true" : "false");
        for (int l = 0; l < L; l++) {
            fprintf(f, "%s[", l ? "," : "");
            for (int e = 0; e < E; e++)
                fprintf(f, "%s%.4f", e ? "," : "",
                        g_load ? g_load(s, l, e, E) : e == 0 ? 0.5 : 0.5 / (E - 1));
            fprintf(f, "]");
        }
        fprintf(f, "],\"load_max_over_mean\":[");
        for (int l = 0; l < L; l++) fprintf(f, "%s%g", l ? "," : "", 0.5 * E);
        fprintf(f, "],\"dropped\":[");
        for (int l = 0; l < L; l++) fprintf(f, "%s0", l ? "," : "");
        fprintf(f, "],\"router_entropy\":[");
        for (int l = 0; l < L; l++) fprintf(f, "%s%g", l ? "," : "", 1.0 + 0.1 * l);
        if (g_experts_per_token) {
            fprintf(f, "],\"experts_per_token\":[");
            for (int l = 0; l < L; l++)
                fprintf(f, "%s%g", l ? "," : "", g_experts_per_token == 2 ? 2.0 : 1.0 + 0.01 * s);
        }
        fprintf(f, "]}\n");
        if (val_every && s % val_every == 0 && g_time)
            fprintf(f, "{\"step\":%d,\"tokens\":%d,\"time\":%.3f,\"val_loss\":%g}\n", s,
                    s * 512, g_time + 30.0 * s, loss + 0.1);
        else if (val_every && s % val_every == 0)
            fprintf(f, "{\"step\":%d,\"tokens\":%d,\"val_loss\":%g}\n", s, s * 512,
                    loss + 0.1);
    }
    fclose(f);
    if (config) {
        snprintf(path, sizeof path, "%s/config.yaml", dir);
        write_file(path, config);
    }
}

void write_dense_run(const char *name, int steps) {
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/%s", g_dir, name);
    ck_assert(mkdir(dir, 0755) == 0);
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    FILE *f = fopen(path, "w");
    ck_assert(f != NULL);
    for (int s = 1; s <= steps; s++)
        fprintf(f, "{\"step\":%d,\"tokens\":%d,\"loss\":%g,\"lm_loss\":%g,\"aux_loss\":0,"
                   "\"z_loss\":0,\"lr\":0.001,\"grad_norm\":1.5,\"tokens_per_s\":2000,"
                   "\"mfu\":0,\"step_time\":0.25,\"skipped\":false}\n",
                s, s * 1024, 7.0 - 0.1 * s, 7.0 - 0.1 * s);
    fclose(f);
}

/* Loads the run directories, renders them to out.html and parses the page. Returns the
 * page text (caller frees) and fills d. */
char *render(const char *const *dirs, int n, Doc *d) {
    RunData runs[8];
    MoeErr err;
    memset(&err, 0, sizeof err);
    ck_assert(n <= 8);
    for (int i = 0; i < n; i++)
        ck_assert_msg(report_load_run(&runs[i], dirs[i], &err) == 0, "load %s: %s", dirs[i],
                      err.msg);
    const char *out = tmp_path("out.html");
    ck_assert_msg(report_write(runs, n, out, 0, &err) == 0, "write: %s", err.msg);
    for (int i = 0; i < n; i++) report_run_free(&runs[i]);
    char *html = read_all(out);
    ck_assert_msg(xml_check(d, html) == 0, "page is not well-formed: %s", d->why);
    ck_assert_msg(strstr(html, "http") == NULL, "page references http");
    /* one inline script, nothing loaded */
    const char *sc = strstr(html, "<script");
    ck_assert_msg(sc && !strncmp(sc, "<script>", 8), "page has no inline <script>");
    ck_assert_msg(strstr(sc + 1, "<script") == NULL, "page has two scripts");
    ck_assert_msg(strstr(html, " src=") == NULL, "page loads something (src=)");
    ck_assert_msg(strstr(html, "<link") == NULL, "page links a resource");
    return html;
}

void expect_curves(const Doc *d, const char *plot, const char *want) {
    int svg = find_svg(d, plot, NULL, -1);
    ck_assert_msg(svg >= 0, "plot %s: found %d svgs (want one)", plot, svg);
    char got[4096];
    curve_set(d, svg, got, sizeof got);
    ck_assert_msg(!strcmp(got, want), "plot %s curves\n got: %s\nwant: %s", plot, got, want);
}

