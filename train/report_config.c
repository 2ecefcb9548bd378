/* report_config.c: see report_config.h. */
#include "train/report_config.h"

#include <string.h>

#include "configs/config.h"
#include "train/svg.h"

/* One run's effective config as (section.key, value) pairs, in config_to_yaml's order. */
typedef struct {
    int ok;              /* 0: no config.yaml or it could not be read (msg says why) */
    char msg[1100];
    int n;
    char (*key)[64];     /* (n) "section.key" */
    char **val;          /* (n) owned: the value as config_to_yaml writes it */
} KeyValues;

static void kv_free(KeyValues *kv) {
    for (int i = 0; i < kv->n; i++) moe_free(kv->val[i]);
    moe_free(kv->val);
    moe_free(kv->key);
    memset(kv, 0, sizeof *kv);
}

/* Splits config_to_yaml's text: "section:" lines, then "  key: VALUE   # doc" lines.
 * The doc comments of the key table hold no '#', so the value ends before the last one. */
static void kv_parse(KeyValues *kv, const char *yaml) {
    int cap = 2 * CONFIG_N_KEYS;
    kv->key = moe_calloc((size_t)cap * sizeof *kv->key);
    kv->val = moe_calloc((size_t)cap * sizeof *kv->val);
    char sec[32] = "";
    for (const char *p = yaml; *p && kv->n < cap;) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (p[0] != ' ' && p[0] != '#' && len > 1 && p[len - 1] == ':' && len - 1 < sizeof sec) {
            memcpy(sec, p, len - 1);
            sec[len - 1] = 0;
        } else if (!strncmp(p, "  ", 2) && sec[0]) {
            const char *colon = memchr(p, ':', len);
            const char *hash = NULL;
            for (const char *q = p; q < p + len; q++)
                if (*q == '#') hash = q;
            if (colon && colon[1] == ' ') {
                const char *v0 = colon + 2, *v1 = hash && hash > v0 ? hash : p + len;
                while (v1 > v0 && v1[-1] == ' ') v1--;
                snprintf(kv->key[kv->n], sizeof kv->key[0], "%s.%.*s", sec,
                         (int)(colon - p - 2), p + 2);
                kv->val[kv->n] = moe_malloc((size_t)(v1 - v0) + 1);
                memcpy(kv->val[kv->n], v0, (size_t)(v1 - v0));
                kv->val[kv->n][v1 - v0] = 0;
                kv->n++;
            }
        }
        p += len + (eol != NULL);
    }
}

static void kv_load(KeyValues *kv, const RunData *r) {
    memset(kv, 0, sizeof *kv);
    if (!r->config) {
        snprintf(kv->msg, sizeof kv->msg, "no config.yaml in this run directory");
        return;
    }
    char label[4200];
    snprintf(label, sizeof label, "%s/config.yaml", r->dir);
    Config c;
    MoeErr err;
    memset(&err, 0, sizeof err);
    if (config_load_text(&c, r->config, strlen(r->config), label, &err)) {
        snprintf(kv->msg, sizeof kv->msg, "%s", err.msg);
        return;
    }
    char *yaml = config_to_yaml(&c);
    kv_parse(kv, yaml);
    moe_free(yaml);
    config_free(&c);
    kv->ok = 1;
}

/* The value of key in kv, or NULL when kv does not list it. */
static const char *kv_get(const KeyValues *kv, const char *key) {
    for (int i = 0; i < kv->n; i++)
        if (!strcmp(kv->key[i], key)) return kv->val[i];
    return NULL;
}

static void diff_table(FILE *f, const RunData *runs, int nr) {
    KeyValues *kv = moe_calloc((size_t)nr * sizeof *kv);
    int readable = 0;
    for (int k = 0; k < nr; k++) {
        kv_load(&kv[k], &runs[k]);
        readable += kv[k].ok;
        if (!kv[k].ok) {
            fprintf(f, "<p class=\"note\">");
            svg_put_esc(f, runs[k].name);
            fprintf(f, ": left out of the comparison: ");
            svg_put_esc(f, kv[k].msg);
            fprintf(f, "</p>\n");
        }
    }
    /* every key any readable run lists, in the order they first appear */
    int nkeys = 0, cap = 0;
    char (*keys)[64] = NULL;
    for (int k = 0; k < nr; k++)
        for (int i = 0; i < kv[k].n; i++) {
            int seen = 0;
            for (int j = 0; j < nkeys && !seen; j++) seen = !strcmp(keys[j], kv[k].key[i]);
            if (seen) continue;
            if (nkeys == cap) {
                int nc = cap ? 2 * cap : 128;
                keys = moe_realloc(keys, (size_t)cap * sizeof *keys, (size_t)nc * sizeof *keys);
                cap = nc;
            }
            memcpy(keys[nkeys++], kv[k].key[i], sizeof keys[0]);
        }
    int ndiff = 0;
    for (int j = 0; j < nkeys; j++) {
        const char *first = NULL;
        int differs = 0, have_first = 0;
        for (int k = 0; k < nr; k++) {
            if (!kv[k].ok) continue;
            const char *v = kv_get(&kv[k], keys[j]);
            if (!have_first) first = v, have_first = 1;
            else if ((first == NULL) != (v == NULL) || (v && strcmp(first, v))) differs = 1;
        }
        if (!differs) continue;
        if (ndiff++ == 0) {
            fprintf(f, "<table class=\"config-diff\">\n<tr><th class=\"l\">key</th>");
            for (int k = 0; k < nr; k++) {
                fprintf(f, "<th class=\"l\">");
                svg_put_esc(f, runs[k].name);
                fprintf(f, "</th>");
            }
            fprintf(f, "</tr>\n");
        }
        fprintf(f, "<tr data-key=\"");
        svg_put_esc(f, keys[j]);
        fprintf(f, "\"><td class=\"l\">");
        svg_put_esc(f, keys[j]);
        fprintf(f, "</td>");
        for (int k = 0; k < nr; k++) {
            const char *v = kv[k].ok ? kv_get(&kv[k], keys[j]) : "?";
            fprintf(f, "<td class=\"l\">");
            svg_put_esc(f, v ? v : "(not set)");
            fprintf(f, "</td>");
        }
        fprintf(f, "</tr>\n");
    }
    if (ndiff) {
        fprintf(f, "</table>\n");
    } else if (readable > 1) {
        fprintf(f, "<p class=\"note\">The runs' configs are identical (every key, defaults "
                   "included).</p>\n");
    }
    if (readable > 1)
        fprintf(f, "<p class=\"note\">%d of %d keys differ between the %d runs whose "
                   "config.yaml could be read (defaults filled in; each run's whole file is "
                   "RUN_DIR/config.yaml).</p>\n", ndiff, nkeys, readable);
    moe_free(keys);
    for (int k = 0; k < nr; k++) kv_free(&kv[k]);
    moe_free(kv);
}

void report_config_section(FILE *f, const RunData *runs, int nr) {
    fprintf(f, "<h2>Configuration</h2>\n");
    if (nr > 1) {
        fprintf(f, "<p class=\"note\">The config keys whose values differ between the "
                   "runs.</p>\n");
        diff_table(f, runs, nr);
        return;
    }
    fprintf(f, "<h3>");
    svg_put_esc(f, runs[0].dir);
    fprintf(f, "/config.yaml</h3>\n");
    if (runs[0].config) {
        fprintf(f, "<pre class=\"config\">");
        svg_put_esc(f, runs[0].config);
        fprintf(f, "</pre>\n");
    } else {
        fprintf(f, "<p class=\"note\">(no config.yaml in this run directory)</p>\n");
    }
}
