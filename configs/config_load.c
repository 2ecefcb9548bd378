/* config_load.c: reading a run configuration: config_load, config_load_text (YAML) and
 * config_set (one --set section.key=value override). See config.h for the contract.
 *
 * The YAML is parsed with libyaml's document API (the whole tree in memory, every node
 * with its start mark, so each error names FILE:LINE:COL); duplicate keys are found here
 * because libyaml keeps them. Each value is parsed by the type of its row in the key table
 * (config_keys.h), checked by the row's rule (cfg_check_range) and stored at the row's
 * field offset; where it came from is kept in Config.key_loc for later messages.
 * Non-goals: the required keys and cross-field rules (config_validate.c), environment
 * variables, includes or merges of several files, YAML 1.1 booleans.
 */
#include "configs/config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "configs/config_keys.h"

/* ---------------------------------------------------------------- hints for unknown names */

static void hint_unknown_section(MoeErr *err, const char *name) {
    const char *sug = cfg_closest(name, cfg_sections, CONFIG_N_SECTIONS);
    Buf b = {0};
    if (sug) cfg_buf_printf(&b, "did you mean '%s'? ", sug);
    cfg_buf_printf(&b, "allowed sections: ");
    for (int s = 0; s < CONFIG_N_SECTIONS; s++)
        cfg_buf_printf(&b, "%s%s", s ? ", " : "", cfg_sections[s]);
    moe_hintf(err, "%s", b.p);
    moe_free(b.p);
}

static void hint_unknown_key(MoeErr *err, int sec, const char *name) {
    const char *names[CONFIG_N_KEYS];
    int n = 0;
    for (int i = 0; i < CONFIG_N_KEYS; i++)
        if (cfg_keys[i].sec == sec && !(cfg_keys[i].flags & F_ALIAS)) names[n++] = cfg_keys[i].name;
    Buf b = {0};
    const char *sug = cfg_closest(name, names, n);
    int other = -1;
    for (int i = 0; i < CONFIG_N_KEYS && !sug; i++)
        if (strcmp(cfg_keys[i].name, name) == 0) other = cfg_keys[i].sec;
    if (sug) cfg_buf_printf(&b, "did you mean '%s'? ", sug);
    else if (other >= 0)
        cfg_buf_printf(&b, "'%s' belongs in section '%s'. ", name, cfg_sections[other]);
    cfg_buf_printf(&b, "allowed keys in section '%s': ", cfg_sections[sec]);
    for (int i = 0; i < n; i++) cfg_buf_printf(&b, "%s%s", i ? ", " : "", names[i]);
    moe_hintf(err, "%s", b.p);
    moe_free(b.p);
}

/* ---------------------------------------------------------------- parsing values */

/* Where a node came from: a file (line/col from the node's mark) or a --set argument. */
typedef struct Src { const char *file; const char *set; } Src;

static void src_loc(const Src *s, yaml_mark_t m, char *out, size_t cap) {
    if (s->set) snprintf(out, cap, "--set %s", s->set);
    else snprintf(out, cap, "%s:%zu:%zu", s->file, m.line + 1, m.column + 1);
}

static const char *node_kind(const yaml_node_t *n) {
    return n->type == YAML_MAPPING_NODE ? "a mapping" : n->type == YAML_SEQUENCE_NODE ? "a list"
                                                                                     : "a scalar";
}

static bool scalar_is_null(const yaml_node_t *n) {
    if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return false;
    const char *s = (const char *)n->data.scalar.value;
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
           !strcmp(s, "NULL");
}

/* Plain decimal integer, optional sign, no spaces, fits int64. */
static bool parse_int(const char *s, int64_t *out) {
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    if (!*p) return false;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9') return false;
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno == ERANGE) return false;
    *out = v;
    return true;
}

/* Finite decimal number (integers allowed); rejects hex, inf, nan. */
static bool parse_float(const char *s, double *out) {
    if (!*s || strpbrk(s, "xX")) return false;  /* strtod would take hex floats */
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end || errno == ERANGE || !isfinite(v)) return false;
    *out = v;
    return true;
}

/* Range check of a parsed value (ints and floats; strings need to be non-empty). */

/* A weighted list entry {path: P, weight: W} (node it, entry j of key path) into *out
 * (owned) and *w (> 0); weight may be left out (then 0: not given). Errors name the entry
 * and what it accepts. */
static int parse_weighted(yaml_document_t *d, yaml_node_t *it, const Src *src, const char *path,
                          size_t j, char **out, double *w, MoeErr *err) {
    char loc[1100];
    const char *hint = "write the entry as a path, or as {path: a.txt, weight: 0.3} (a weight "
                       "is a number > 0 and at most 1e9, relative to the other entries')";
    *out = NULL;
    *w = 0;
    for (yaml_node_pair_t *p = it->data.mapping.pairs.start; p < it->data.mapping.pairs.top;
         p++) {
        yaml_node_t *kn = yaml_document_get_node(d, p->key);
        yaml_node_t *vn = yaml_document_get_node(d, p->value);
        src_loc(src, kn->start_mark, loc, sizeof loc);
        const char *key = kn->type == YAML_SCALAR_NODE ? (const char *)kn->data.scalar.value : "";
        bool scalar = vn->type == YAML_SCALAR_NODE && !scalar_is_null(vn) &&
                      strlen((const char *)vn->data.scalar.value) == vn->data.scalar.length;
        if (strcmp(key, "path") == 0 || strcmp(key, "weight") == 0)
            src_loc(src, vn->start_mark, loc, sizeof loc);   /* a bad value: point at it */
        if (!strcmp(key, "path")) {
            if (!scalar || *out) {
                moe_free(*out);
                *out = NULL;
                moe_errorf(err, "%s: %s[%zu].path: %s", loc, path, j,
                           scalar ? "given twice" : "expected a non-empty string");
                return moe_hintf(err, "%s", hint);
            }
            *out = moe_strdup((const char *)vn->data.scalar.value);
        } else if (!strcmp(key, "weight")) {
            double f = 0;
            if (!scalar || vn->data.scalar.style != YAML_PLAIN_SCALAR_STYLE ||
                !parse_float((const char *)vn->data.scalar.value, &f) || !(f > 0) || f > 1e9) {
                moe_free(*out);
                *out = NULL;
                moe_errorf(err, "%s: %s[%zu].weight: expected a number > 0 and <= 1e9, got "
                           "'%s'", loc, path, j,
                           scalar ? (const char *)vn->data.scalar.value : node_kind(vn));
                return moe_hintf(err, "%s", hint);
            }
            *w = f;
        } else {
            moe_free(*out);
            *out = NULL;
            moe_errorf(err, "%s: %s[%zu]: unknown key '%s' (an entry has path and weight)", loc,
                       path, j, key);
            return moe_hintf(err, "%s", hint);
        }
    }
    if (!*out) {
        src_loc(src, it->start_mark, loc, sizeof loc);
        moe_errorf(err, "%s: %s[%zu]: the entry has no path", loc, path, j);
        return moe_hintf(err, "%s", hint);
    }
    return 0;
}

/* Converts node n (of document d) into a value of key k; type errors only. */
static int parse_node(const KeySpec *k, yaml_document_t *d, yaml_node_t *n, const Src *src,
                      const char *path, Value *v, MoeErr *err) {
    char loc[1100], want[128];
    src_loc(src, n->start_mark, loc, sizeof loc);
    cfg_describe(k, want, sizeof want);
    memset(v, 0, sizeof *v);

    if (k->type == T_LIST) {
        if (n->type != YAML_SEQUENCE_NODE) {
            moe_errorf(err, "%s: %s: expected a list of strings, got %s%s", loc, path,
                       scalar_is_null(n) ? "no value" : node_kind(n),
                       n->type == YAML_SCALAR_NODE && !scalar_is_null(n)
                           ? " (write [x] for one item)" : "");
            return moe_hintf(err, "expected %s", want);
        }
        size_t cnt = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
        v->list = moe_calloc((cnt ? cnt : 1) * sizeof(char *));
        for (size_t j = 0; j < cnt; j++) {
            yaml_node_t *it = yaml_document_get_node(d, n->data.sequence.items.start[j]);
            char iloc[1100];
            src_loc(src, it->start_mark, iloc, sizeof iloc);
            if (k->off_w && it->type == YAML_MAPPING_NODE) {
                if (!v->w) v->w = moe_calloc((cnt ? cnt : 1) * sizeof(double));
                if (parse_weighted(d, it, src, path, j, &v->list[j], &v->w[j], err)) {
                    v->n = j;
                    cfg_value_free(v);
                    return -1;
                }
                v->n = j + 1;
                continue;
            }
            if (it->type != YAML_SCALAR_NODE || scalar_is_null(it) ||
                strlen((const char *)it->data.scalar.value) != it->data.scalar.length) {
                moe_errorf(err, "%s: %s[%zu]: expected a non-empty string, got %s", iloc, path, j,
                           it->type == YAML_SCALAR_NODE ? "no value" : node_kind(it));
                cfg_value_free(v);
                return moe_hintf(err, "expected %s", want);
            }
            v->list[j] = moe_strdup((const char *)it->data.scalar.value);
            v->n = j + 1;
        }
        v->n = cnt;
        return 0;
    }

    if (n->type != YAML_SCALAR_NODE) {
        moe_errorf(err, "%s: %s: expected %s, got %s", loc, path, want, node_kind(n));
        return moe_hintf(err, "expected %s", want);
    }
    const char *s = (const char *)n->data.scalar.value;
    bool plain = n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    if (scalar_is_null(n)) {
        moe_errorf(err, "%s: %s: missing value", loc, path);
        return moe_hintf(err, "expected %s (delete the key to keep the default)", want);
    }
    if (strlen(s) != n->data.scalar.length) {
        moe_errorf(err, "%s: %s: value contains a NUL byte", loc, path);
        return moe_hintf(err, "expected %s", want);
    }
    if (k->type == T_STR) {
        v->s = moe_strdup(s);
        return 0;
    }
    if (k->type == T_ENUM) {   /* a name, plain or quoted */
        for (int64_t i = 0; i <= k->imax; i++)
            if (!strcmp(s, k->choices[i])) {
                v->i = i;
                return 0;
            }
        const char *sug = cfg_closest(s, k->choices, (int)k->imax + 1);
        moe_errorf(err, "%s: %s: unknown value '%s'", loc, path, s);
        if (sug) return moe_hintf(err, "did you mean '%s'? expected %s", sug, want);
        return moe_hintf(err, "expected %s", want);
    }
    if (!plain) {
        moe_errorf(err, "%s: %s: expected %s, got the quoted string \"%s\"", loc, path, want, s);
        return moe_hintf(err, "expected %s; numbers and booleans are written without quotes",
                         want);
    }
    switch (k->type) {
    case T_INT:
    case T_I64:
        if (!parse_int(s, &v->i)) {
            double f;
            moe_errorf(err, "%s: %s: expected an integer, got '%s'", loc, path, s);
            if (parse_float(s, &f))
                return moe_hintf(err, "expected %s (a whole number: no decimal point or "
                                      "exponent)", want);
            return moe_hintf(err, "expected %s", want);
        }
        return 0;
    case T_FLOAT:
        if (!parse_float(s, &v->f)) {
            moe_errorf(err, "%s: %s: expected a number, got '%s'", loc, path, s);
            return moe_hintf(err, "expected %s (decimal, e.g. 0.001 or 1e-3; no inf/nan)", want);
        }
        return 0;
    case T_BOOL:
        if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) v->b = true;
        else if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) v->b = false;
        else {
            moe_errorf(err, "%s: %s: expected true or false, got '%s'", loc, path, s);
            return moe_hintf(err, "write true or false (yes/no/on/off/1/0 are not accepted)");
        }
        return 0;
    default: break;
    }
    ASSERT(0, "unreachable key type %d", (int)k->type);
    return -1;
}


/* Moves v into the field of key k (frees the old owned value). */
static void store(Config *c, const KeySpec *k, Value *v) {
    char *base = (char *)c + k->off;
    switch (k->type) {
    case T_INT: *(int *)base = (int)v->i; break;
    case T_I64: *(int64_t *)base = v->i; break;
    case T_FLOAT: *(double *)base = v->f; break;
    case T_BOOL: *(bool *)base = v->b; break;
    case T_ENUM: *(int *)base = (int)v->i; break;
    case T_STR:
        moe_free(*(char **)base);
        *(char **)base = v->s;
        v->s = NULL;
        break;
    case T_LIST: {
        char ***lp = (char ***)base;
        size_t *np = (size_t *)((char *)c + k->off_n);
        for (size_t j = 0; j < *np; j++) moe_free((*lp)[j]);
        moe_free(*lp);
        *lp = v->list;
        *np = v->n;
        if (k->off_w) {   /* the weights travel with their list (NULL: none given) */
            double **wp = (double **)((char *)c + k->off_w);
            moe_free(*wp);
            *wp = v->w;
            v->w = NULL;
        }
        v->list = NULL;
        v->n = 0;
        break;
    }
    }
}


/* Parses, checks and stores one key (an alias into its new name's field); records where it
 * came from under the new name's row. */
static int set_key(Config *c, int ki, yaml_document_t *d, yaml_node_t *n, const Src *src,
                   MoeErr *err) {
    const KeySpec *k = &cfg_keys[ki];
    char path[64], loc[1100];
    snprintf(path, sizeof path, "%s.%s", cfg_sections[k->sec], k->name);
    src_loc(src, n->start_mark, loc, sizeof loc);
    Value v;
    if (parse_node(k, d, n, src, path, &v, err)) return -1;
    if (cfg_check_range(k, &v, loc, path, err)) {
        cfg_value_free(&v);
        return -1;
    }
    store(c, k, &v);
    cfg_value_free(&v);
    const int kc = cfg_canonical(ki);
    moe_free(c->key_loc[kc]);
    c->key_loc[kc] = moe_strdup(loc);
    return 0;
}

/* train.tokens > 0 and train.steps not given: steps = ceil(tokens / (global_micro_batch x
 * seq_len x grad_accum)) (config.h). tokens_reset: train.tokens was just set to 0 by
 * --set, so a derived steps goes back to the default. Each factor is already >= 1. */
static void apply_token_budget(Config *c, bool tokens_reset) {
    if (c->key_loc[cfg_key_index(S_TRAIN, "steps")]) return;   /* given: it stands */
    if (c->train.tokens <= 0) {
        if (tokens_reset) {
            Config d;
            config_defaults(&d);
            c->train.steps = d.train.steps;
            config_free(&d);
        }
        return;
    }
    const int64_t per_pass = (int64_t)c->train.micro_batch * c->train.seq_len;  /* < 2^62 */
    if (per_pass > INT64_MAX / c->train.grad_accum) {
        c->train.steps = 1;   /* one step holds more tokens than any budget */
        return;
    }
    const int64_t per_step = per_pass * c->train.grad_accum;
    c->train.steps = c->train.tokens / per_step + (c->train.tokens % per_step != 0);
}

/* ---------------------------------------------------------------- YAML documents */

/* Parses text into *doc (the single document of the stream). Syntax errors are reported
 * at libyaml's problem mark. */
static int parse_yaml(const char *text, size_t len, const Src *src, yaml_document_t *doc,
                      MoeErr *err) {
    yaml_parser_t p;
    ASSERT(yaml_parser_initialize(&p), "yaml_parser_initialize failed (out of memory)");
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    if (!yaml_parser_load(&p, doc)) {
        char loc[1100];
        src_loc(src, p.problem_mark, loc, sizeof loc);
        if (p.context)
            moe_errorf(err, "%s: YAML syntax error: %s %s", loc, p.problem ? p.problem : "?",
                       p.context);
        else
            moe_errorf(err, "%s: YAML syntax error: %s", loc, p.problem ? p.problem : "?");
        moe_hintf(err, "%s", src->set
                  ? "write --set section.key=value with a scalar or a flow list like [a, b]"
                  : "indent with spaces (no tabs), put a space after each ':', and quote "
                    "strings containing ': ' or '#'");
        yaml_parser_delete(&p);
        return -1;
    }
    /* A second document would be silently ignored: reject it. */
    yaml_document_t extra;
    if (yaml_parser_load(&p, &extra)) {
        yaml_node_t *r = yaml_document_get_root_node(&extra);
        if (r) {
            char loc[1100];
            src_loc(src, r->start_mark, loc, sizeof loc);
            moe_errorf(err, "%s: a second YAML document ('---') is not allowed", loc);
            moe_hintf(err, "put all sections in one document");
            yaml_document_delete(&extra);
            yaml_document_delete(doc);
            yaml_parser_delete(&p);
            return -1;
        }
        yaml_document_delete(&extra);
    } else {
        char loc[1100];
        src_loc(src, p.problem_mark, loc, sizeof loc);
        moe_errorf(err, "%s: YAML syntax error: %s", loc, p.problem ? p.problem : "?");
        moe_hintf(err, "only one YAML document is allowed");
        yaml_document_delete(doc);
        yaml_parser_delete(&p);
        return -1;
    }
    yaml_parser_delete(&p);
    return 0;
}

/* A mapping key must be a scalar; returns its text or reports an error. */
static const char *key_text(yaml_node_t *kn, const Src *src, const char *where, MoeErr *err) {
    if (kn->type != YAML_SCALAR_NODE) {
        char loc[1100];
        src_loc(src, kn->start_mark, loc, sizeof loc);
        moe_errorf(err, "%s: %s: a key must be a plain name, got %s", loc, where,
                   node_kind(kn));
        moe_hintf(err, "write 'name: value'");
        return NULL;
    }
    return (const char *)kn->data.scalar.value;
}

/* Rejects a key repeated in one mapping (libyaml keeps both). */
static int check_duplicate(yaml_document_t *d, yaml_node_t *map, yaml_node_pair_t *pair,
                           const char *name, const char *path, const Src *src, MoeErr *err) {
    for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < pair; q++) {
        yaml_node_t *qk = yaml_document_get_node(d, q->key);
        if (qk->type == YAML_SCALAR_NODE && !strcmp((const char *)qk->data.scalar.value, name)) {
            yaml_node_t *kn = yaml_document_get_node(d, pair->key);
            char loc[1100];
            src_loc(src, kn->start_mark, loc, sizeof loc);
            moe_errorf(err, "%s: %s: duplicate key", loc, path);
            return moe_hintf(err, "first set at %s:%zu:%zu; keep only one of them", src->file,
                             qk->start_mark.line + 1, qk->start_mark.column + 1);
        }
    }
    return 0;
}

static int load_document(Config *c, yaml_document_t *d, const Src *src, MoeErr *err) {
    yaml_node_t *root = yaml_document_get_root_node(d);
    if (!root) return 0;  /* empty file: all defaults */
    char loc[1100];
    if (root->type != YAML_MAPPING_NODE) {
        if (root->type == YAML_SCALAR_NODE && scalar_is_null(root)) return 0;
        src_loc(src, root->start_mark, loc, sizeof loc);
        moe_errorf(err, "%s: the top level must be a mapping of sections, got %s", loc,
                   node_kind(root));
        hint_unknown_section(err, "");
        return -1;
    }
    for (yaml_node_pair_t *sp = root->data.mapping.pairs.start;
         sp < root->data.mapping.pairs.top; sp++) {
        yaml_node_t *skn = yaml_document_get_node(d, sp->key);
        yaml_node_t *svn = yaml_document_get_node(d, sp->value);
        const char *sname = key_text(skn, src, "top level", err);
        if (!sname) return -1;
        if (check_duplicate(d, root, sp, sname, sname, src, err)) return -1;
        src_loc(src, skn->start_mark, loc, sizeof loc);
        int s = cfg_section_index(sname);
        if (s < 0) {
            moe_errorf(err, "%s: %s: unknown section", loc, sname);
            hint_unknown_section(err, sname);
            return -1;
        }
        moe_free(c->section_loc[s]);
        c->section_loc[s] = moe_strdup(loc);
        if (svn->type == YAML_SCALAR_NODE && scalar_is_null(svn)) continue;  /* empty section */
        if (svn->type != YAML_MAPPING_NODE) {
            src_loc(src, svn->start_mark, loc, sizeof loc);
            moe_errorf(err, "%s: %s: a section must be a mapping of keys, got %s", loc, sname,
                       node_kind(svn));
            hint_unknown_key(err, s, "");
            return -1;
        }
        for (yaml_node_pair_t *kp = svn->data.mapping.pairs.start;
             kp < svn->data.mapping.pairs.top; kp++) {
            yaml_node_t *kn = yaml_document_get_node(d, kp->key);
            yaml_node_t *vn = yaml_document_get_node(d, kp->value);
            const char *kname = key_text(kn, src, sname, err);
            if (!kname) return -1;
            char path[256];
            snprintf(path, sizeof path, "%s.%s", sname, kname);
            if (check_duplicate(d, svn, kp, kname, path, src, err)) return -1;
            int ki = cfg_key_index(s, kname);
            if (ki < 0) {
                src_loc(src, kn->start_mark, loc, sizeof loc);
                moe_errorf(err, "%s: %s: unknown key", loc, path);
                hint_unknown_key(err, s, kname);
                return -1;
            }
            /* c started from the defaults: a location under the new name's row means the
             * other name of the same key came earlier in this file */
            const int kc = cfg_canonical(ki);
            if (c->key_loc[kc]) {
                const int other = kc == ki ? ki + 1 : kc;
                src_loc(src, kn->start_mark, loc, sizeof loc);
                moe_errorf(err, "%s: %s: the same key as %s.%s (%s is its old name), given "
                           "at %s", loc, path, sname, cfg_keys[other].name,
                           cfg_keys[kc + 1].name, c->key_loc[kc]);
                return moe_hintf(err, "keep one of them: %s.%s", sname, cfg_keys[kc].name);
            }
            if (set_key(c, ki, d, vn, src, err)) return -1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- config_load, config_set */

static void set_str(char **dst, const char *s) {
    moe_free(*dst);
    *dst = s ? moe_strdup(s) : NULL;
}

/* "configs/mixtral_tiny.yaml" -> "mixtral_tiny" */
static char *config_name_of(const char *path) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    char *name = moe_strdup(*b ? b : "config");
    char *dot = strrchr(name, '.');
    if (dot && dot != name) *dot = 0;
    return name;
}

int config_load_text(Config *c, const char *text, size_t len, const char *label, MoeErr *err) {
    config_defaults(c);
    set_str(&c->path, label);
    moe_free(c->name);
    c->name = config_name_of(label);
    Src src = {.file = label, .set = NULL};
    yaml_document_t doc;
    if (parse_yaml(text, len, &src, &doc, err)) goto fail;
    int rc = load_document(c, &doc, &src, err);
    yaml_document_delete(&doc);
    if (rc) goto fail;
    apply_token_budget(c, false);
    int dir_key = cfg_key_index(S_RUN, "dir");
    if (!c->key_loc[dir_key]) {
        Buf b = {0};
        cfg_buf_printf(&b, "runs/%s", c->name);
        moe_free(c->run.dir);
        c->run.dir = b.p;
    }
    return 0;
fail:
    config_free(c);
    return -1;
}

int config_load(Config *c, const char *path, MoeErr *err) {
    memset(c, 0, sizeof *c);
    FILE *f = fopen(path, "rb");
    if (!f) {
        moe_errorf(err, "%s: cannot open config file: %s", path, strerror(errno));
        return moe_hintf(err, "check the path; shipped configs are in configs/ "
                              "(e.g. configs/mixtral_tiny.yaml)");
    }
    size_t n = 0, cap = 4096;
    char *text = moe_malloc(cap);
    size_t got;
    while ((got = fread(text + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            text = moe_realloc(text, cap, 2 * cap);
            cap *= 2;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (bad || memchr(text, 0, n)) {
        moe_free(text);
        moe_errorf(err, "%s: cannot read config file%s", path,
                   bad ? "" : ": it contains NUL bytes");
        return moe_hintf(err, "a config is a UTF-8 YAML text file");
    }
    int rc = config_load_text(c, text, n, path, err);
    moe_free(text);
    return rc;
}


/* Byte offset of the character with index chars in the UTF-8 text s (libyaml's marks count
 * characters), or strlen(s) when s is shorter. */
static size_t byte_offset(const char *s, size_t chars) {
    size_t i = 0;
    for (size_t ch = 0; s[i] && ch < chars; ch++) {
        i++;
        while (((unsigned char)s[i] & 0xC0) == 0x80) i++;   /* continuation bytes */
    }
    return i;
}

static bool valid_utf8(const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        uint32_t cp;
        int len = *p < 0x80 ? 1 : cfg_utf8_seq(p, &cp);
        if (len == 0) return false;
        p += len;
    }
    return true;
}

/* A string key set from the command line: the text after '=' is the value, whole (a path
 * may hold " #", which YAML would read as a comment), unless the whole text is one YAML
 * quoted scalar ("...", '...'), whose quotes and escapes are then read as YAML does. */
static int set_string(Config *c, int ki, const char *assignment, const char *val,
                      MoeErr *err) {
    const KeySpec *k = &cfg_keys[ki];
    char path[64], loc[1100];
    snprintf(path, sizeof path, "%s.%s", cfg_sections[k->sec], k->name);
    snprintf(loc, sizeof loc, "--set %s", assignment);
    Value v = {0};
    if (val[0] == '"' || val[0] == '\'') {
        Src src = {.file = "--set", .set = assignment};
        yaml_document_t doc;
        MoeErr ignored;
        if (!parse_yaml(val, strlen(val), &src, &doc, &ignored)) {
            yaml_node_t *r = yaml_document_get_root_node(&doc);
            if (r && r->type == YAML_SCALAR_NODE &&
                r->data.scalar.style != YAML_PLAIN_SCALAR_STYLE &&
                byte_offset(val, r->end_mark.index) == strlen(val)) {
                int rc = set_key(c, ki, &doc, r, &src, err);
                yaml_document_delete(&doc);
                return rc;
            }
            yaml_document_delete(&doc);
        }
    }
    if (!valid_utf8(val)) {
        moe_errorf(err, "%s: %s: the value is not valid UTF-8", loc, path);
        return moe_hintf(err, "the config is stored as YAML text, which must be UTF-8");
    }
    v.s = moe_strdup(val);
    if (cfg_check_range(k, &v, loc, path, err)) {
        cfg_value_free(&v);
        return -1;
    }
    store(c, k, &v);
    cfg_value_free(&v);
    moe_free(c->key_loc[ki]);
    c->key_loc[ki] = moe_strdup(loc);
    return 0;
}

int config_set(Config *c, const char *assignment, MoeErr *err) {
    const char *eq = strchr(assignment, '=');
    const char *dot = eq ? memchr(assignment, '.', (size_t)(eq - assignment)) : NULL;
    if (!eq || !dot) {
        moe_errorf(err, "--set %s: expected section.key=value", assignment);
        return moe_hintf(err, "for example --set model.dim=512 or --set data.text=[a.txt,b.txt]");
    }
    char sname[64], kname[64], path[160];
    size_t sl = (size_t)(dot - assignment), kl = (size_t)(eq - dot - 1);
    if (sl >= sizeof sname || kl >= sizeof kname) {
        moe_errorf(err, "--set %s: key name too long", assignment);
        hint_unknown_section(err, "");
        return -1;
    }
    memcpy(sname, assignment, sl);
    sname[sl] = 0;
    memcpy(kname, dot + 1, kl);
    kname[kl] = 0;
    snprintf(path, sizeof path, "%s.%s", sname, kname);
    int s = cfg_section_index(sname);
    if (s < 0) {
        moe_errorf(err, "--set %s: %s: unknown section", assignment, sname);
        hint_unknown_section(err, sname);
        return -1;
    }
    int ki = cfg_key_index(s, kname);
    if (ki < 0) {
        moe_errorf(err, "--set %s: %s: unknown key", assignment, path);
        hint_unknown_key(err, s, kname);
        return -1;
    }
    const char *val = eq + 1;
    if (cfg_keys[ki].type == T_STR) return set_string(c, ki, assignment, val, err);
    /* Other keys: one YAML scalar or flow list ([a, b]), taken whole: text after it that
     * YAML would drop as a comment (" #...") is refused rather than silently cut. */
    const bool hash = strstr(val, " #") || strstr(val, "\t#") || val[0] == '#';
    Src src = {.file = "--set", .set = assignment};
    yaml_document_t doc;
    if (parse_yaml(val, strlen(val), &src, &doc, err)) {
        if (hash)
            moe_hintf(err, "' #' starts a YAML comment: quote a list item that holds it, "
                           "e.g. --set '%s=[\"runs/exp #1/a.txt\"]'", path);
        return -1;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    int rc;
    if (!root) {
        char want[128];
        cfg_describe(&cfg_keys[ki], want, sizeof want);
        moe_errorf(err, "--set %s: %s: missing value", assignment, path);
        rc = moe_hintf(err, "expected %s%s", want, hash ? " (' #' starts a YAML comment)"
                                                        : "");
    } else {
        const char *rest = val + byte_offset(val, root->end_mark.index);
        rest += strspn(rest, " \t\r\n");
        if (*rest) {
            moe_errorf(err, "--set %s: %s: the value would be cut before '%s' (YAML reads it "
                       "as a comment)", assignment, path, rest);
            rc = moe_hintf(err, "a --set value is taken whole: remove the trailing text, or "
                                "quote a list item that holds ' #' (\"a #1.txt\")");
        } else {
            rc = set_key(c, ki, &doc, root, &src, err);
        }
    }
    yaml_document_delete(&doc);
    /* train.tokens or a factor of its product: steps follows (config.h) */
    const int kc = cfg_canonical(ki);
    if (!rc && (kc == cfg_key_index(S_TRAIN, "tokens") ||
                kc == cfg_key_index(S_TRAIN, "global_micro_batch") ||
                kc == cfg_key_index(S_TRAIN, "seq_len") ||
                kc == cfg_key_index(S_TRAIN, "grad_accum")))
        apply_token_budget(c, kc == cfg_key_index(S_TRAIN, "tokens"));
    return rc;
}

