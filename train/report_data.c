/* report_data.c: see report_data.h. */
#include "train/report_data.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/json.h"
#include "train/metrics.h"

/* the metrics.jsonl key of each column */
static const char *const COL_KEY[REPORT_NCOLS] = {
    METRIC_STEP, METRIC_TOKENS, METRIC_LOSS, METRIC_LM_LOSS, METRIC_AUX_LOSS, METRIC_Z_LOSS,
    METRIC_LR, METRIC_GRAD_NORM, METRIC_TOKENS_PER_S, METRIC_TIME};

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
    r->val_time = moe_realloc(r->val_time, r->val_cap * sizeof(double), nc * sizeof(double));
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
    const JsonValue *el = json_get(o, METRIC_EXPERT_LOAD);
    const JsonValue *en = json_get(o, METRIC_ROUTER_ENTROPY);
    const JsonValue *ex = json_get(o, METRIC_EXPERTS_PER_TOKEN);   /* optional */
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
        moe_errorf(err, "%s:%ld: %s is not a non-empty array of arrays", path, line,
                   METRIC_EXPERT_LOAD);
        moe_hintf(err, "%s holds one array of shares per MoE layer", METRIC_EXPERT_LOAD);
        return -1;
    }
    int L = (int)el->n, E = (int)el->items[0].n;
    for (int l = 0; l < L; l++) {
        if (!is_num_array(&el->items[l]) || (int)el->items[l].n != E) {
            moe_errorf(err, "%s:%ld: %s[%d] is not an array of %d numbers", path, line,
                       METRIC_EXPERT_LOAD, l, E);
            moe_hintf(err, "every layer's %s lists one share per expert", METRIC_EXPERT_LOAD);
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
        moe_errorf(err, "%s:%ld: %s has %d layers x %d experts but earlier lines had %d x %d",
                   path, line, METRIC_EXPERT_LOAD, L, E, r->L, r->E);
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
        double step = json_get_num(&o, METRIC_STEP);
        if (!isfinite(step)) {
            moe_errorf(err, "%s:%ld: the object has no numeric \"%s\"", path, line,
                       METRIC_STEP);
            moe_hintf(err, "each line is one {\"%s\": ...} object written by moetrain",
                      METRIC_STEP);
            goto fail;
        }
        if (json_get(&o, METRIC_VAL_LOSS)) {
            grow_val(r);
            r->val_step[r->n_val] = step;
            r->val_tokens[r->n_val] = json_get_num(&o, METRIC_TOKENS);
            r->val_loss[r->n_val] = json_get_num(&o, METRIC_VAL_LOSS);
            r->val_time[r->n_val] = json_get_num(&o, METRIC_TIME);
            r->n_val++;
        } else if (want_steps && json_get(&o, METRIC_LOSS)) {
            grow_steps(r);
            for (int c = 0; c < REPORT_NCOLS; c++) r->col[c][r->n] = json_get_num(&o, COL_KEY[c]);
            const JsonValue *sk = json_get(&o, METRIC_SKIPPED);
            r->skipped[r->n] = sk && sk->type == JSON_BOOL && sk->b;
            if (take_moe_fields(r, &o, path, line, err)) goto fail;
            r->n++;
        } else {
            moe_errorf(err, "%s:%ld: the object is neither a step (no \"%s\") nor a "
                       "validation point (no \"%s\")", path, line, METRIC_LOSS,
                       METRIC_VAL_LOSS);
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
    int rc = -1;
    if (access(path, F_OK) != 0 && errno == ENOENT) rc = REPORT_NO_STEPS; /* not started */
    if (read_jsonl(r, path, 1, err)) goto fail;
    if (r->n == 0) {
        rc = REPORT_NO_STEPS;
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
    uint8_t *text = NULL;   /* optional: absent (or not a regular file) leaves NULL */
    size_t len = 0;
    if (fs_read_file(path, &text, &len, NULL) == 0) r->config = (char *)text;
    return 0;
fail:
    report_run_free(r);
    return rc;
}

int report_load_runs(RunData *runs, const char *const *dirs, int n, MoeErr *err) {
    for (int i = 0; i < n; i++) memset(&runs[i], 0, sizeof runs[i]);
    for (int i = 0; i < n; i++) {
        int rc = report_load_run(&runs[i], dirs[i], err);
        if (rc) {
            for (int k = 0; k < i; k++) report_run_free(&runs[k]);
            return rc;
        }
    }
    for (int a = 0; a < n; a++)
        for (int b = a + 1; b < n; b++)
            if (!strcmp(runs[a].name, runs[b].name)) {
                for (int c = 0; c < n; c++) {
                    moe_free(runs[c].name);
                    runs[c].name = moe_strdup(runs[c].dir);
                }
                return 0;
            }
    return 0;
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
    moe_free(r->val_time);
    moe_free(r->config);
    memset(r, 0, sizeof *r);
}
