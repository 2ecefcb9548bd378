/* test_report.c: `moetrain report`: the page (train/report.c, train/svg.c), the metrics
 * reader (train/report_data.c, core/json.c) and the command (train/cmd_report.c).
 *
 * The page is checked structurally, not by eye: a small XML well-formedness checker (tags
 * balanced and nested, attributes quoted and unique, entities valid, one root) parses the
 * whole document into a flat element list, and the tests then count the <svg> plots by
 * data-plot, the curves of each plot by (data-series, data-run) and the heatmap rows and
 * cells. Inputs: the recorded fixture (tests/train/fixtures/mixtral_tiny, the first steps
 * of a real configs/mixtral_tiny.yaml run) and synthetic runs written here (MoE with a NaN
 * skipped step, dense, single step, 5000 steps for downsampling), plus the error cases.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/blas.h"
#include "testutil.h"
#include "core/json.h"
#include "train/cmd_report.h"
#include "train/report.h"

/* ------------------------------------------------------------------------------------- */
/* a minimal XML well-formedness checker with a flat element list                         */

typedef struct {
    char name[32];
    int parent;       /* index of the parent element, -1 for the root */
    const char *attr; /* start of the attribute text inside the document (borrowed) */
    size_t attr_len;
} Elem;

typedef struct {
    Elem *e;
    int n, cap;
    char why[256];
} Doc;

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
static int xml_check(Doc *d, const char *s) {
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
static int attr(const Elem *e, const char *name, char *out, size_t cap) {
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

static int has_attr(const Elem *e, const char *name, const char *value) {
    char v[256];
    return attr(e, name, v, sizeof v) && !strcmp(v, value);
}

static int is_inside(const Doc *d, int i, int anc) {
    for (int p = d->e[i].parent; p >= 0; p = d->e[p].parent)
        if (p == anc) return 1;
    return 0;
}

/* Index of the single <svg data-plot=plot> (with data-run/data-layer when not NULL/-1);
 * -1 when there is none, -2 when there are several. */
static int find_svg(const Doc *d, const char *plot, const char *run, int layer) {
    int found = -1;
    char lb[16];
    snprintf(lb, sizeof lb, "%d", layer);
    for (int i = 0; i < d->n; i++) {
        if (strcmp(d->e[i].name, "svg") || !has_attr(&d->e[i], "data-plot", plot)) continue;
        if (run && !has_attr(&d->e[i], "data-run", run)) continue;
        if (layer >= 0 && !has_attr(&d->e[i], "data-layer", lb)) continue;
        if (found >= 0) return -2;
        found = i;
    }
    return found;
}

/* Sorted, comma-joined "series@run" list of the curves in svg i (paths with data-series). */
static void curve_set(const Doc *d, int svg, char *out, size_t cap) {
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

static int count_svgs(const Doc *d) {
    int k = 0;
    for (int i = 0; i < d->n; i++) k += !strcmp(d->e[i].name, "svg");
    return k;
}

/* Checks the heatmap svg has E rows of C cells each. */
static void check_heatmap(const Doc *d, const char *run, int layer, int E, int C) {
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

static char g_dir[256];

static void setup(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/moe_report_XXXXXX");
    ck_assert(mkdtemp(g_dir) != NULL);
}

static void teardown(void) {
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
}

static const char *tmp_path(const char *rel) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, rel);
    return buf[k];
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

static char *read_all(const char *path) {
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

/* Writes a synthetic MoE run: steps lines with L x E loads (skewed toward expert 0),
 * a NaN skipped step at nan_step (0 = none), validation points every val_every steps. */
static int g_experts_per_token = 0;   /* write_moe_run also writes experts_per_token */

static void write_moe_run(const char *name, int steps, int L, int E, int nan_step,
                          int val_every, const char *config) {
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/%s", g_dir, name);
    ck_assert(mkdir(dir, 0755) == 0);
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    FILE *f = fopen(path, "w");
    ck_assert(f != NULL);
    for (int s = 1; s <= steps; s++) {
        double loss = 8.0 / (1.0 + 0.01 * s);
        if (s == nan_step)
            fprintf(f, "{\"step\":%d,\"tokens\":%d,\"loss\":nan,\"lm_loss\":-nan,"
                       "\"aux_loss\":nan,\"z_loss\":nan,\"lr\":0.001,\"grad_norm\":inf,",
                    s, s * 512);
        else
            fprintf(f, "{\"step\":%d,\"tokens\":%d,\"loss\":%g,\"lm_loss\":%g,"
                       "\"aux_loss\":0.01,\"z_loss\":0.002,\"lr\":%g,\"grad_norm\":%g,",
                    s, s * 512, loss, loss - 0.01, 1e-3 * s / steps, 1.0 + (s % 7));
        fprintf(f, "\"tokens_per_s\":%d,\"mfu\":0,\"step_time\":0.5,\"skipped\":%s,"
                   "\"expert_load\":[", 1000 + s % 13, s == nan_step ? "true" : "false");
        for (int l = 0; l < L; l++) {
            fprintf(f, "%s[", l ? "," : "");
            for (int e = 0; e < E; e++)
                fprintf(f, "%s%.4f", e ? "," : "", e == 0 ? 0.5 : 0.5 / (E - 1));
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
            for (int l = 0; l < L; l++) fprintf(f, "%s%g", l ? "," : "", 1.0 + 0.01 * s);
        }
        fprintf(f, "]}\n");
        if (val_every && s % val_every == 0)
            fprintf(f, "{\"step\":%d,\"tokens\":%d,\"val_loss\":%g}\n", s, s * 512, loss + 0.1);
    }
    fclose(f);
    if (config) {
        snprintf(path, sizeof path, "%s/config.yaml", dir);
        write_file(path, config);
    }
}

static void write_dense_run(const char *name, int steps) {
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
static char *render(const char *const *dirs, int n, Doc *d) {
    RunData runs[8];
    MoeErr err;
    memset(&err, 0, sizeof err);
    ck_assert(n <= 8);
    for (int i = 0; i < n; i++)
        ck_assert_msg(report_load_run(&runs[i], dirs[i], &err) == 0, "load %s: %s", dirs[i],
                      err.msg);
    const char *out = tmp_path("out.html");
    ck_assert_msg(report_write(runs, n, out, &err) == 0, "write: %s", err.msg);
    for (int i = 0; i < n; i++) report_run_free(&runs[i]);
    char *html = read_all(out);
    ck_assert_msg(xml_check(d, html) == 0, "page is not well-formed: %s", d->why);
    ck_assert_msg(strstr(html, "http") == NULL, "page references http");
    ck_assert_msg(strstr(html, "<script") == NULL, "page has a <script>");
    ck_assert_msg(strstr(html, "<link") == NULL, "page links a resource");
    return html;
}

static void expect_curves(const Doc *d, const char *plot, const char *want) {
    int svg = find_svg(d, plot, NULL, -1);
    ck_assert_msg(svg >= 0, "plot %s: found %d svgs (want one)", plot, svg);
    char got[4096];
    curve_set(d, svg, got, sizeof got);
    ck_assert_msg(!strcmp(got, want), "plot %s curves\n got: %s\nwant: %s", plot, got, want);
}

/* ------------------------------------------------------------------------------------- */
/* the XML checker itself must be able to fail                                            */

START_TEST(test_xml_checker) {
    Doc d;
    ck_assert_int_eq(xml_check(&d, "<!DOCTYPE html>\n<a x=\"1\"><b/>t &amp; &#183;</a>"), 0);
    ck_assert_int_eq(d.n, 2);
    free(d.e);
    const char *bad[] = {"<a><b></a></b>", "<a x=1></a>", "<a>&nbsp;</a>", "<a>x < y</a>",
                         "<a></a><b></b>", "<a x=\"1\" x=\"2\"/>", "<a>", "<a></b>",
                         "<a x=\"<\"/>", "text"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(xml_check(&d, bad[i]) != 0, "accepted bad XML %s", bad[i]);
        free(d.e);
    }
}
END_TEST

/* ------------------------------------------------------------------------------------- */
/* JSON reader                                                                            */

START_TEST(test_json_accepts) {
    size_t live = moe_live_bytes();
    JsonValue v;
    MoeErr err;
    const char *s = " {\"a\":[1,-2.5e3,true,false,null,\"x\\n\\u00e9\\ud83d\\ude00\"],"
                    "\"b\":{},\"c\":[],\"n\":nan,\"m\":-inf,\"a\":7} ";
    ck_assert_msg(json_parse(&v, s, strlen(s), "f", 1, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(v.type, JSON_OBJ);
    ck_assert(json_get_num(&v, "a") == 7.0); /* last duplicate wins */
    const JsonValue *a = &v.items[0];
    ck_assert_int_eq((int)a->n, 6);
    ck_assert(a->items[1].num == -2500.0);
    ck_assert(a->items[2].b && !a->items[3].b && a->items[4].type == JSON_NULL);
    ck_assert_str_eq(a->items[5].str, "x\n\xc3\xa9\xf0\x9f\x98\x80");
    ck_assert(isnan(json_get_num(&v, "n")) && isinf(json_get_num(&v, "m")));
    ck_assert(isnan(json_get_num(&v, "missing")));
    json_free(&v);
    ck_assert_msg(moe_live_bytes() == live, "leak");
}
END_TEST

START_TEST(test_json_rejects) {
    size_t live = moe_live_bytes();
    /* each bad text and the 1-based column its error must name */
    const struct { const char *text; int col; } bad[] = {
        {"{\"a\":1,}", 8},      {"[1,2,]", 6},        {"{'a':1}", 2},
        {"{\"a\" 1}", 6},       {"[01]", 2},          {"[1.]", 4},
        {"[1e]", 4},            {"{\"a\":tru}", 6},   {"{\"a\":1} x", 9},
        {"\"abc", 5},           {"[\"\\q\"]", 4},     {"", 1},
        {"{\"a\":[1,2}", 10},   {"[nul]", 2},         {"\"\\ud800\"", 8},
        {"[1 2]", 4},           {"{\"a\":1", 7},      {"[truex]", 2},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        JsonValue v;
        MoeErr err;
        memset(&err, 0, sizeof err);
        int rc = json_parse(&v, bad[i].text, strlen(bad[i].text), "m.jsonl", 12, &err);
        ck_assert_msg(rc == -1, "accepted '%s'", bad[i].text);
        char want[64];
        snprintf(want, sizeof want, "m.jsonl:12:%d: ", bad[i].col);
        ck_assert_msg(strstr(err.msg, want) != NULL, "'%s': msg '%s' lacks '%s'", bad[i].text,
                      err.msg, want);
        ck_assert(v.type == JSON_NULL && v.n == 0);
    }
    /* nesting depth is capped, not a stack overflow */
    char deep[300];
    memset(deep, '[', sizeof deep - 1);
    deep[sizeof deep - 1] = 0;
    JsonValue v;
    MoeErr err;
    ck_assert(json_parse(&v, deep, strlen(deep), "d", 1, &err) == -1);
    ck_assert_msg(strstr(err.msg, "nesting") != NULL, "%s", err.msg);
    ck_assert_msg(moe_live_bytes() == live, "leak on error paths: %zu -> %zu", live,
                  moe_live_bytes());
}
END_TEST

/* ------------------------------------------------------------------------------------- */
/* rendering                                                                              */

/* The recorded run: every plot once, 4 layers x 8 experts, config escaped. */
START_TEST(test_fixture_report) {
    size_t live = moe_live_bytes();
    const char *dir = tt_source_path("tests/train/fixtures/mixtral_tiny");
    RunData r;
    MoeErr err;
    ck_assert_msg(report_load_run(&r, dir, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(r.L, 4);
    ck_assert_int_eq(r.E, 8);
    ck_assert_msg(r.n >= 100 && r.n_val >= 1, "fixture has %zu steps, %zu val points", r.n,
                  r.n_val);
    ck_assert(r.config && strstr(r.config, "n_experts: 8"));
    size_t n = r.n;
    report_run_free(&r);

    const char *dirs[] = {dir};
    Doc d;
    char *html = render(dirs, 1, &d);
    const char *plots[] = {"loss", "aux_loss", "z_loss", "lr", "grad_norm", "tokens_per_s",
                           "router_entropy", "load_imbalance"};
    for (int i = 0; i < 8; i++)
        ck_assert_msg(find_svg(&d, plots[i], NULL, -1) >= 0, "plot %s missing or repeated",
                      plots[i]);
    ck_assert_int_eq(count_svgs(&d), 8 + 4);
    expect_curves(&d, "loss", "loss@mixtral_tiny,val_loss@mixtral_tiny");
    expect_curves(&d, "lr", "lr@mixtral_tiny");
    expect_curves(&d, "router_entropy",
                  "router_entropy.l0@mixtral_tiny,router_entropy.l1@mixtral_tiny,"
                  "router_entropy.l2@mixtral_tiny,router_entropy.l3@mixtral_tiny");
    for (int l = 0; l < 4; l++)
        check_heatmap(&d, "mixtral_tiny", l, 8, (int)(n < REPORT_MAX_COLUMNS ? n : 400));
    ck_assert_int_eq((int)report_heatmap_columns(100000, 64), 200); /* 12800 cells / 64 */
    ck_assert_int_eq((int)report_heatmap_columns(100000, 8), 400);
    ck_assert_int_eq((int)report_heatmap_columns(7, 8), 7);
    /* config.yaml is shown, quotes and apostrophes escaped */
    ck_assert_msg(strstr(html, "tokenizer: &quot;data/tokenizer_4096.bpe&quot;") != NULL,
                  "config text missing or not escaped");
    ck_assert_msg(strstr(html, "config &#39;mixtral_tiny&#39;") != NULL, "apostrophe");
    free(html);
    free(d.e);
    ck_assert_msg(moe_live_bytes() == live, "leak: %zu -> %zu", live, moe_live_bytes());
}
END_TEST

/* MoE (with a NaN step and validation), dense (no expert_load, no validation) and a
 * single-step MoE run on one page. */
START_TEST(test_multi_run) {
    size_t live = moe_live_bytes();
    write_moe_run("moe", 10, 2, 4, 5, 4, "name: <script>alert(\"x\") & 'y'</script>\n");
    write_dense_run("dense", 6);
    write_moe_run("single", 1, 1, 3, 0, 0, NULL);
    const char *dirs[] = {tmp_path("moe"), tmp_path("dense"), tmp_path("single")};
    Doc d;
    char *html = render(dirs, 3, &d);
    expect_curves(&d, "loss", "loss@dense,loss@moe,loss@single,val_loss@moe");
    expect_curves(&d, "aux_loss", "aux_loss@dense,aux_loss@moe,aux_loss@single");
    expect_curves(&d, "lr", "lr@dense,lr@moe,lr@single");
    expect_curves(&d, "grad_norm", "grad_norm@dense,grad_norm@moe,grad_norm@single");
    expect_curves(&d, "tokens_per_s", "tokens_per_s@dense,tokens_per_s@moe,tokens_per_s@single");
    expect_curves(&d, "router_entropy",
                  "router_entropy.l0@moe,router_entropy.l0@single,router_entropy.l1@moe");
    expect_curves(&d, "load_imbalance",
                  "load_imbalance.l0@moe,load_imbalance.l0@single,load_imbalance.l1@moe");
    check_heatmap(&d, "moe", 0, 4, 10);
    check_heatmap(&d, "moe", 1, 4, 10);
    check_heatmap(&d, "single", 0, 3, 1);
    ck_assert_msg(find_svg(&d, "expert_load", "dense", -1) == -1, "dense run got a heatmap");
    ck_assert_int_eq(count_svgs(&d), 8 + 3);
    ck_assert_msg(strstr(html, "name: &lt;script&gt;alert(&quot;x&quot;) &amp; &#39;y&#39;"
                               "&lt;/script&gt;") != NULL, "config not escaped");
    ck_assert_msg(strstr(html, "no config.yaml") != NULL, "missing config not reported");
    free(html);
    free(d.e);
    ck_assert_msg(moe_live_bytes() == live, "leak: %zu -> %zu", live, moe_live_bytes());
}
END_TEST

/* experts_per_token (issue 11's routers): one curve per layer for the run that logs it, none
 * for a run written before the key existed; the plot is absent when no run has it (the
 * fixture test above counts exactly 8 + 4 plots). */
START_TEST(test_experts_per_token) {
    g_experts_per_token = 1;
    write_moe_run("topp", 6, 2, 4, 0, 0, NULL);
    g_experts_per_token = 0;
    write_moe_run("older", 6, 2, 4, 0, 0, NULL);
    const char *dirs[] = {tmp_path("topp"), tmp_path("older")};
    Doc d;
    char *html = render(dirs, 2, &d);
    expect_curves(&d, "experts_per_token", "experts_per_token.l0@topp,experts_per_token.l1@topp");
    ck_assert_int_eq(count_svgs(&d), 9 + 4);   /* 8 line plots + this one, 2 x 2 heatmaps */
    free(html);
    free(d.e);
}
END_TEST

/* Dense runs alone: no routing plots at all. The NaN step of a MoE run breaks its path. */
START_TEST(test_dense_only_and_gaps) {
    write_dense_run("dense", 3);
    const char *dirs[] = {tmp_path("dense")};
    Doc d;
    char *html = render(dirs, 1, &d);
    ck_assert_int_eq(find_svg(&d, "router_entropy", NULL, -1), -1);
    ck_assert_int_eq(find_svg(&d, "expert_load", NULL, -1), -1);
    ck_assert_int_eq(count_svgs(&d), 6);
    expect_curves(&d, "loss", "loss@dense");
    free(html);
    free(d.e);

    write_moe_run("gap", 9, 1, 2, 5, 0, NULL);
    const char *dirs2[] = {tmp_path("gap")};
    html = render(dirs2, 1, &d);
    int svg = find_svg(&d, "loss", NULL, -1);
    ck_assert(svg >= 0);
    char dd[4096];
    for (int i = svg + 1; i < d.n; i++)
        if (!strcmp(d.e[i].name, "path") && attr(&d.e[i], "d", dd, sizeof dd)) break;
    int moves = 0, lines = 0;
    for (const char *p = dd; *p; p++) moves += *p == 'M', lines += *p == 'L';
    /* steps 1-4 and 6-9: two sub-paths of 4 points */
    ck_assert_msg(moves == 2 && lines == 6, "path '%s': %d M, %d L", dd, moves, lines);
    free(html);
    free(d.e);
}
END_TEST

/* 5000 steps: each curve at most REPORT_MAX_POINTS points, heatmaps 400 columns. */
START_TEST(test_downsampling) {
    write_moe_run("long", 5000, 1, 2, 0, 1000, NULL);
    const char *dirs[] = {tmp_path("long")};
    Doc d;
    char *html = render(dirs, 1, &d);
    check_heatmap(&d, "long", 0, 2, REPORT_MAX_COLUMNS);
    int paths = 0;
    for (int i = 0; i < d.n; i++) {
        if (strcmp(d.e[i].name, "path")) continue;
        static char dd[200000];
        ck_assert(attr(&d.e[i], "d", dd, sizeof dd));
        int pts = 0;
        for (const char *p = dd; *p; p++) pts += *p == 'M' || *p == 'L';
        ck_assert_msg(pts >= 2 && pts <= REPORT_MAX_POINTS, "curve with %d points", pts);
        paths++;
    }
    /* loss, val_loss, aux_loss, z_loss, lr, grad_norm, tokens_per_s, entropy, imbalance */
    ck_assert_int_eq(paths, 9);
    ck_assert_msg(strlen(html) < 2000000, "page is %zu bytes", strlen(html));
    free(html);
    free(d.e);
}
END_TEST

/* ------------------------------------------------------------------------------------- */
/* errors                                                                                 */

START_TEST(test_missing_dir) {
    size_t live = moe_live_bytes();
    RunData r;
    MoeErr err;
    const char *dir = tmp_path("nope");
    ck_assert(report_load_run(&r, dir, &err) == -1);
    ck_assert_msg(strstr(err.msg, dir) && strstr(err.msg, "no such run directory"), "%s",
                  err.msg);
    ck_assert(err.hint[0]);
    ck_assert_msg(moe_live_bytes() == live, "leak");
    char *argv[] = {(char *)dir};
    ck_assert_int_eq(cmd_report(1, argv), 1);
    /* a directory without metrics.jsonl */
    ck_assert(mkdir(tmp_path("empty_dir"), 0755) == 0);
    ck_assert(report_load_run(&r, tmp_path("empty_dir"), &err) == -1);
    ck_assert_msg(strstr(err.msg, "metrics.jsonl: cannot open"), "%s", err.msg);
}
END_TEST

START_TEST(test_empty_metrics) {
    size_t live = moe_live_bytes();
    ck_assert(mkdir(tmp_path("e"), 0755) == 0);
    write_file(tmp_path("e/metrics.jsonl"), "\n");
    RunData r;
    MoeErr err;
    ck_assert(report_load_run(&r, tmp_path("e"), &err) == -1);
    char want[600];
    snprintf(want, sizeof want, "%s/e/metrics.jsonl has no steps", g_dir);
    ck_assert_msg(strstr(err.msg, want), "msg '%s' lacks '%s'", err.msg, want);
    ck_assert_msg(strstr(err.hint, "wait for the first step"), "hint '%s'", err.hint);
    /* only validation points is still no steps */
    write_file(tmp_path("e/metrics.jsonl"), "{\"step\":1,\"tokens\":5,\"val_loss\":3}\n");
    ck_assert(report_load_run(&r, tmp_path("e"), &err) == -1);
    ck_assert_msg(strstr(err.msg, "has no steps"), "%s", err.msg);
    ck_assert_msg(moe_live_bytes() == live, "leak");
}
END_TEST

START_TEST(test_malformed_line) {
    size_t live = moe_live_bytes();
    ck_assert(mkdir(tmp_path("m"), 0755) == 0);
    const char *ok = "{\"step\":1,\"tokens\":5,\"loss\":3,\"lr\":1}\n";
    char text[1024];
    snprintf(text, sizeof text, "%s%s{\"step\":3,\"loss\":3,}\n%s", ok, ok, ok);
    write_file(tmp_path("m/metrics.jsonl"), text);
    RunData r;
    MoeErr err;
    ck_assert(report_load_run(&r, tmp_path("m"), &err) == -1);
    char want[600];
    snprintf(want, sizeof want, "%s/m/metrics.jsonl:3:", g_dir);
    ck_assert_msg(strstr(err.msg, want), "msg '%s' lacks '%s'", err.msg, want);
    /* not an object / not a step */
    snprintf(text, sizeof text, "%s[1,2]\n", ok);
    write_file(tmp_path("m/metrics.jsonl"), text);
    ck_assert(report_load_run(&r, tmp_path("m"), &err) == -1);
    snprintf(want, sizeof want, "%s/m/metrics.jsonl:2:", g_dir);
    ck_assert_msg(strstr(err.msg, want), "msg '%s' lacks '%s'", err.msg, want);
    snprintf(text, sizeof text, "%s{\"step\":2,\"foo\":1}\n", ok);
    write_file(tmp_path("m/metrics.jsonl"), text);
    ck_assert(report_load_run(&r, tmp_path("m"), &err) == -1);
    ck_assert_msg(strstr(err.msg, want) && strstr(err.msg, "neither"), "%s", err.msg);
    /* expert_load changing shape */
    snprintf(text, sizeof text,
             "{\"step\":1,\"loss\":3,\"expert_load\":[[0.5,0.5]]}\n"
             "{\"step\":2,\"loss\":3,\"expert_load\":[[0.5,0.25,0.25]]}\n");
    write_file(tmp_path("m/metrics.jsonl"), text);
    ck_assert(report_load_run(&r, tmp_path("m"), &err) == -1);
    ck_assert_msg(strstr(err.msg, want) && strstr(err.msg, "1 layers x 3 experts"), "%s",
                  err.msg);
    /* a partial last line (the run is writing it) is ignored; a broken eval.jsonl is not */
    snprintf(text, sizeof text, "%s%s{\"step\":3,\"lo", ok, ok);
    write_file(tmp_path("m/metrics.jsonl"), text);
    ck_assert_msg(report_load_run(&r, tmp_path("m"), &err) == 0, "%s", err.msg);
    ck_assert_int_eq((int)r.n, 2);
    report_run_free(&r);
    write_file(tmp_path("m/eval.jsonl"), "{\"step\":1,\"val_loss\":2}\n{\"step\":2,\"val\n");
    ck_assert(report_load_run(&r, tmp_path("m"), &err) == -1);
    snprintf(want, sizeof want, "%s/m/eval.jsonl:2:", g_dir);
    ck_assert_msg(strstr(err.msg, want), "msg '%s' lacks '%s'", err.msg, want);
    ck_assert_msg(moe_live_bytes() == live, "leak: %zu -> %zu", live, moe_live_bytes());
}
END_TEST

START_TEST(test_command_line) {
    write_dense_run("a", 2);
    write_dense_run("b", 2);
    char *help[] = {"--help"};
    ck_assert_int_eq(cmd_report(1, help), 0);
    ck_assert_int_eq(cmd_report(0, NULL), 2);
    char *two[] = {(char *)tmp_path("a"), (char *)tmp_path("b")};
    ck_assert_int_eq(cmd_report(2, two), 2); /* several runs need --out */
    char *bad[] = {(char *)tmp_path("a"), "--bogus"};
    ck_assert_int_eq(cmd_report(2, bad), 2);
    char *one[] = {(char *)tmp_path("a")};
    ck_assert_int_eq(cmd_report(1, one), 0);
    ck_assert_msg(access(tmp_path("a/report.html"), R_OK) == 0, "default output missing");
    char *both[] = {(char *)tmp_path("a"), (char *)tmp_path("b"), "--out",
                    (char *)tmp_path("ab.html")};
    ck_assert_int_eq(cmd_report(4, both), 0);
    char *page = read_all(tmp_path("ab.html"));
    Doc d;
    ck_assert_msg(xml_check(&d, page) == 0, "%s", d.why);
    expect_curves(&d, "loss", "loss@a,loss@b");
    free(page);
    free(d.e);
}
END_TEST

static Suite *report_suite(void) {
    Suite *s = suite_create("report");
    TCase *tc = tcase_create("xml_checker");
    tcase_add_test(tc, test_xml_checker);
    suite_add_tcase(s, tc);
    tc = tcase_create("json");
    tcase_add_test(tc, test_json_accepts);
    tcase_add_test(tc, test_json_rejects);
    suite_add_tcase(s, tc);
    tc = tcase_create("render");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_fixture_report);
    tcase_add_test(tc, test_multi_run);
    tcase_add_test(tc, test_dense_only_and_gaps);
    tcase_add_test(tc, test_experts_per_token);
    tcase_add_test(tc, test_downsampling);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_missing_dir);
    tcase_add_test(tc, test_empty_metrics);
    tcase_add_test(tc, test_malformed_line);
    tcase_add_test(tc, test_command_line);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    SRunner *sr = srunner_create(report_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
