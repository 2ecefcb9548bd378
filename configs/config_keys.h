/* config_keys.h: the key table of the run configuration and the per-key helpers that the
 * files of configs/ share (internal: not part of the config API, configs/config.h; only
 * configs/ includes it).
 *
 * One row per key (cfg_keys, grouped by section in section order): section, name, type,
 * the offset of its field in Config, range or choices, flags and a one-line doc. Loading
 * and --set (config_load.c), range validation (config_validate.c), to_yaml and the diffs
 * (config_yaml.c) and the reference (config_reference.c) all walk this table, so a new key
 * is one row in config_keys.c, its field in config.h and its default in config_defaults.
 * A renamed key keeps its old name as an F_ALIAS row right below the new one.
 */
#ifndef MOE_CONFIG_KEYS_H
#define MOE_CONFIG_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "configs/config.h"
#include "core/common.h"

typedef enum { T_INT, T_I64, T_FLOAT, T_BOOL, T_STR, T_LIST, T_ENUM } KeyType;

/* Section indices, in the order of cfg_sections. */
enum { S_MODEL, S_MOE, S_TRAIN, S_OPTIM, S_DATA, S_RUN, S_PARALLEL, S_COMPUTE, S_CHECKPOINT,
       S_INIT, S_FINETUNE };

enum {
    F_LO_OPEN = 1,   /* float lower bound is exclusive */
    F_HI_OPEN = 2,   /* float upper bound is exclusive */
    F_EVEN = 4,      /* integer must be even */
    F_SHAPE = 8,     /* changes the model shape (config_diff_shape) */
    F_ALIAS = 16,    /* an old name of the key in the row above (same field): read, never
                        written, compared or range-checked on its own (cfg_canonical) */
};

typedef struct KeySpec {
    int sec;                      /* S_* */
    const char *name;
    KeyType type;
    size_t off;                   /* field offset in Config */
    size_t off_n;                 /* T_LIST: offset of the size_t count */
    int64_t imin, imax;           /* T_INT, T_I64: range; T_ENUM: 0 .. last choice */
    double fmin, fmax;            /* T_FLOAT: range (open ends by flags) */
    unsigned flags;               /* F_* */
    const char *doc;              /* one line: the to_yaml comment and the reference */
    const char *const *choices;   /* T_ENUM: the names of values 0 .. imax */
    const char *default_doc;      /* the reference's default when config_defaults' value
                                     does not say it (NULL: that value) */
    size_t off_w;                 /* T_LIST whose entries may carry a sampling weight: offset
                                     of the double * weights array ((count) entries, 0 = no
                                     weight given; NULL when none has one); 0: plain list */
} KeySpec;

extern const KeySpec cfg_keys[CONFIG_N_KEYS];
extern const char *const cfg_sections[CONFIG_N_SECTIONS];       /* "model", "moe", ... */
extern const char *const cfg_section_docs[CONFIG_N_SECTIONS];   /* one line each */

/* Index in cfg_keys of key `name` of section sec, or -1. */
int cfg_key_index(int sec, const char *name);
/* S_* of the section called name, or -1. */
int cfg_section_index(const char *name);
/* The row a key's value and location belong to: ki itself, or for an F_ALIAS row the row
 * of the new name (the row above it). */
int cfg_canonical(int ki);

/* A growable NUL-terminated string: zero it to start; p (n chars) is owned, release it with
 * moe_free. cfg_buf_printf appends (aborts on allocation failure, like every allocation). */
typedef struct Buf { char *p; size_t n, cap; } Buf;
void cfg_buf_printf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The shortest %g form of v that reads back to the same double (integers without an
 * exponent: 10000, not 1e+04), into out (cap bytes). */
void cfg_fmt_double(double v, char *out, size_t cap);
/* Length (2..4) and codepoint of the UTF-8 sequence at p (p[0] >= 0x80), or 0 when it is
 * not valid UTF-8 (bad lead or continuation, overlong, surrogate, > U+10FFFF). */
int cfg_utf8_seq(const unsigned char *p, uint32_t *cp);
/* The value of key k in c as YAML text that config_load reads back exactly (appended to b);
 * an unset string is "null". */
void cfg_fmt_value(Buf *b, const Config *c, const KeySpec *k);
/* What key k accepts, e.g. "an integer in [1, 8]", "a number in [0, 1)", "one of a, b". */
void cfg_describe(const KeySpec *k, char *out, size_t cap);
/* The closest of names[0..n) to s within a small edit distance (did-you-mean), or NULL. */
const char *cfg_closest(const char *s, const char *const *names, int n);

/* A parsed value before it is stored: i (T_INT, T_I64, T_ENUM), f, b, s (T_STR) or
 * list[n] (T_LIST); owns s and list (cfg_value_free) unless it came from cfg_peek. */
typedef struct Value {
    int64_t i; double f; bool b; char *s; char **list; size_t n;
    double *w;   /* (n) weights of a weighted list's entries (0 = none given), or NULL */
} Value;
void cfg_value_free(Value *v);
/* The current value of key k in c as a borrowed Value (never freed; lists not read). */
Value cfg_peek(const Config *c, const KeySpec *k);
/* The per-key rule of k for v: range (ints, floats), choice index (enums), non-empty
 * (strings). Returns 0, or -1 with err set as "LOC: PATH: what is wrong" and the hint
 * "expected ...". */
int cfg_check_range(const KeySpec *k, const Value *v, const char *loc, const char *path,
                    MoeErr *err);

#endif
