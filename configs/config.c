/* config.c: strict YAML configuration. See config.h for the contract and
 * README.md (Configuration) for the keys.
 *
 * Everything is driven by one key table (KEYS): name, section, type, field offset, range and
 * a one-line doc. Loading, --set overrides, range validation, to_yaml and the diffs all walk
 * that table, so a new key is one line here (plus its field and its doc row).
 *
 * The file is parsed with libyaml's document API (whole tree in memory, every node carries
 * its start mark); duplicate keys are detected here because libyaml keeps them.
 */
#include "configs/config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "layers/lora.h"

/* ---------------------------------------------------------------- key table */

typedef enum { T_INT, T_I64, T_FLOAT, T_BOOL, T_STR, T_LIST, T_ENUM } KeyType;

enum { S_MODEL, S_MOE, S_TRAIN, S_OPTIM, S_DATA, S_RUN, S_PARALLEL, S_CHECKPOINT, S_INIT,
       S_FINETUNE };
static const char *const SECTIONS[CONFIG_N_SECTIONS] = {
    "model", "moe", "train", "optim", "data", "run", "parallel", "checkpoint", "init",
    "finetune"};

enum {
    F_LO_OPEN = 1,   /* float lower bound is exclusive */
    F_HI_OPEN = 2,   /* float upper bound is exclusive */
    F_EVEN = 4,      /* integer must be even */
    F_SHAPE = 8,     /* changes the model shape (config_diff_shape) */
};

typedef struct KeySpec {
    int sec;
    const char *name;
    KeyType type;
    size_t off;       /* field offset in Config */
    size_t off_n;     /* T_LIST: offset of the size_t count */
    int64_t imin, imax;
    double fmin, fmax;
    unsigned flags;
    const char *doc;
    const char *const *choices;   /* T_ENUM: the names of values 0 .. imax */
} KeySpec;

#define KI(s, n, fld, lo, hi, fl, d) \
    {s, n, T_INT, offsetof(Config, fld), 0, lo, hi, 0, 0, fl, d, NULL}
#define KL(s, n, fld, lo, hi, fl, d) \
    {s, n, T_I64, offsetof(Config, fld), 0, lo, hi, 0, 0, fl, d, NULL}
#define KF(s, n, fld, lo, hi, fl, d) \
    {s, n, T_FLOAT, offsetof(Config, fld), 0, 0, 0, lo, hi, fl, d, NULL}
#define KB(s, n, fld, fl, d) {s, n, T_BOOL, offsetof(Config, fld), 0, 0, 0, 0, 0, fl, d, NULL}
#define KS(s, n, fld, d) {s, n, T_STR, offsetof(Config, fld), 0, 0, 0, 0, 0, 0, d, NULL}
#define KLS(s, n, fld, cnt, d) \
    {s, n, T_LIST, offsetof(Config, fld), offsetof(Config, cnt), 0, 0, 0, 0, 0, d, NULL}
/* An enumeration: written as one of the names, stored as its index (an int field). */
#define KE(s, n, fld, names, fl, d) \
    {s, n, T_ENUM, offsetof(Config, fld), 0, 0, \
     (int64_t)(sizeof(names) / sizeof(names)[0]) - 1, 0, 0, fl, d, names}

/* moe.router, in the order of CONFIG_ROUTER_* */
static const char *const ROUTERS[] = {"topk", "topp", "expert_choice"};

static const KeySpec KEYS[] = {
    KI(S_MODEL, "vocab_size", model.vocab_size, 258, 65536, F_SHAPE, "V: vocabulary size"),
    KI(S_MODEL, "dim", model.dim, 1, INT_MAX, F_SHAPE, "C: model width"),
    KI(S_MODEL, "n_layers", model.n_layers, 1, INT_MAX, F_SHAPE, "L: transformer blocks"),
    KI(S_MODEL, "n_heads", model.n_heads, 1, INT_MAX, F_SHAPE, "H: query heads"),
    KI(S_MODEL, "n_kv_heads", model.n_kv_heads, 1, INT_MAX, F_SHAPE,
       "Hkv: key/value heads, divides n_heads"),
    KI(S_MODEL, "head_dim", model.head_dim, 2, INT_MAX, F_SHAPE | F_EVEN,
       "D: head width, even (RoPE)"),
    KF(S_MODEL, "norm_eps", model.norm_eps, 0, HUGE_VAL, F_SHAPE | F_LO_OPEN,
       "RMSNorm epsilon"),
    KF(S_MODEL, "rope_theta", model.rope_theta, 0, HUGE_VAL, F_SHAPE | F_LO_OPEN, "RoPE base"),
    KF(S_MODEL, "init_std", model.init_std, 0, HUGE_VAL, F_SHAPE | F_LO_OPEN,
       "std of the normal weight init"),
    KI(S_MODEL, "sliding_window", model.sliding_window, 0, INT_MAX, F_SHAPE,
       "W: attend the last W positions; 0 = full causal"),

    KI(S_MOE, "n_experts", moe.n_experts, 0, INT_MAX, F_SHAPE, "E: experts; 0 = dense FFN"),
    KI(S_MOE, "top_k", moe.top_k, 1, INT_MAX, F_SHAPE, "K: experts per token, <= n_experts"),
    KI(S_MOE, "hidden", moe.hidden, 1, INT_MAX, F_SHAPE, "F: expert (or dense FFN) hidden"),
    KF(S_MOE, "capacity_factor", moe.capacity_factor, 0, HUGE_VAL, 0, "0 = dropless"),
    KB(S_MOE, "router_noise", moe.router_noise, 0, "noisy top-k gating in training"),
    KF(S_MOE, "aux_loss_coef", moe.aux_loss_coef, 0, HUGE_VAL, 0, "load-balancing loss"),
    KF(S_MOE, "z_loss_coef", moe.z_loss_coef, 0, HUGE_VAL, 0, "router z-loss"),
    KI(S_MOE, "n_shared_experts", moe.n_shared_experts, 0, INT_MAX, F_SHAPE,
       "always-active experts (DeepSeekMoE); 0 = none"),
    KI(S_MOE, "shared_hidden", moe.shared_hidden, 0, INT_MAX, F_SHAPE,
       "hidden width of each shared expert; 0 = hidden"),
    KF(S_MOE, "bias_update_rate", moe.bias_update_rate, 0, HUGE_VAL, 0,
       "aux-loss-free balancing bias step; 0 = off"),
    KE(S_MOE, "router", moe.router, ROUTERS, 0, "topk, topp or expert_choice"),
    KF(S_MOE, "top_p", moe.top_p, 0, 1, F_LO_OPEN, "topp: probability mass to reach"),
    KI(S_MOE, "max_experts", moe.max_experts, 0, INT_MAX, 0,
       "topp: experts per token at most; 0 = n_experts"),
    KF(S_MOE, "entropy_coef", moe.entropy_coef, 0, HUGE_VAL, 0,
       "topp: router entropy penalty"),

    KI(S_TRAIN, "seq_len", train.seq_len, 1, INT_MAX, 0, "T: tokens per sequence"),
    KI(S_TRAIN, "micro_batch", train.micro_batch, 1, INT_MAX, 0,
       "B: sequences per micro-batch (global)"),
    KI(S_TRAIN, "grad_accum", train.grad_accum, 1, INT_MAX, 0, "micro-batches per step"),
    KL(S_TRAIN, "steps", train.steps, 1, INT64_MAX, 0, "optimizer steps"),
    KL(S_TRAIN, "seed", train.seed, 0, INT64_MAX, 0, "init and data-order seed"),
    KL(S_TRAIN, "log_every", train.log_every, 1, INT64_MAX, 0, "steps between log lines"),
    KL(S_TRAIN, "eval_every", train.eval_every, 0, INT64_MAX, 0, "0 = only at the end"),
    KI(S_TRAIN, "eval_batches", train.eval_batches, 1, INT_MAX, 0, "validation batches"),
    KI(S_TRAIN, "max_bad_steps", train.max_bad_steps, 1, INT_MAX, 0,
       "non-finite steps in a row that stop the run"),
    KF(S_TRAIN, "spike_factor", train.spike_factor, 1, HUGE_VAL, 0,
       "grad norm above this x its running mean is logged as a spike"),
    KB(S_TRAIN, "recompute", train.recompute, 0,
       "recompute each layer's activations in backward (less memory)"),
    KI(S_TRAIN, "loss_chunk", train.loss_chunk, 0, INT_MAX, 0,
       "rows of the LM head + loss at once; 0 = all"),

    KF(S_OPTIM, "lr", optim.lr, 0, HUGE_VAL, F_LO_OPEN, "peak learning rate"),
    KF(S_OPTIM, "min_lr", optim.min_lr, 0, HUGE_VAL, 0, "final learning rate, <= lr"),
    KL(S_OPTIM, "warmup_steps", optim.warmup_steps, 0, INT64_MAX, 0, "linear warmup"),
    KF(S_OPTIM, "beta1", optim.beta1, 0, 1, F_HI_OPEN, "AdamW beta1"),
    KF(S_OPTIM, "beta2", optim.beta2, 0, 1, F_HI_OPEN, "AdamW beta2"),
    KF(S_OPTIM, "eps", optim.eps, 0, HUGE_VAL, F_LO_OPEN, "AdamW epsilon"),
    KF(S_OPTIM, "weight_decay", optim.weight_decay, 0, HUGE_VAL, 0, "decoupled weight decay"),
    KF(S_OPTIM, "grad_clip", optim.grad_clip, 0, HUGE_VAL, 0, "global-norm clip; 0 = off"),

    KS(S_DATA, "tokenizer", data.tokenizer, "BPE file; trained on text if missing"),
    KLS(S_DATA, "text", data.text, data.n_text, "raw text files"),
    KLS(S_DATA, "shards", data.shards, data.n_shards, "pre-encoded token shards"),
    KF(S_DATA, "val_fraction", data.val_fraction, 0, 0.5, F_LO_OPEN, "held-out fraction"),

    KS(S_RUN, "dir", run.dir, "run directory"),

    KI(S_PARALLEL, "expert_parallel", parallel.expert_parallel, 0, INT_MAX, 0,
       "EP group size; 0 = min(ranks, n_experts)"),

    KL(S_CHECKPOINT, "every", checkpoint.every, 0, INT64_MAX, 0,
       "steps between checkpoints; 0 = end/signal"),
    KI(S_CHECKPOINT, "keep", checkpoint.keep, 1, INT_MAX, 0, "checkpoints kept"),

    KS(S_INIT, "upcycle_from", init.upcycle_from, "dense checkpoint to upcycle from"),
    KF(S_INIT, "router_init_std", init.router_init_std, 0, HUGE_VAL, 0,
       "upcycled router N(0, std); 0 = zeros"),
    KF(S_INIT, "expert_noise", init.expert_noise, 0, HUGE_VAL, 0,
       "relative std of upcycled expert noise"),
    KI(S_INIT, "granularity", init.granularity, 1, INT_MAX, 0,
       "G: dense FFN split into G expert slices"),

    KS(S_FINETUNE, "init_from", finetune.init_from, "full checkpoint to fine-tune"),
    KI(S_FINETUNE, "lora_rank", finetune.lora_rank, 0, 65536, F_SHAPE,
       "LoRA rank r; 0 = full fine-tuning"),
    KF(S_FINETUNE, "lora_alpha", finetune.lora_alpha, 0, HUGE_VAL, F_LO_OPEN,
       "adapters scaled by alpha / r"),
    KF(S_FINETUNE, "lora_dropout", finetune.lora_dropout, 0, 1, F_HI_OPEN,
       "dropout on the adapter input"),
    {S_FINETUNE, "lora_targets", T_LIST, offsetof(Config, finetune.lora_targets),
     offsetof(Config, finetune.n_lora_targets), 0, 0, 0, 0, F_SHAPE,
     "projections with adapters", NULL},
    KB(S_FINETUNE, "train_router", finetune.train_router, F_SHAPE,
       "with LoRA: router stays trainable"),
    KB(S_FINETUNE, "train_experts", finetune.train_experts, F_SHAPE,
       "with LoRA: experts stay trainable"),
};
#define NKEYS ((int)(sizeof KEYS / sizeof KEYS[0]))
_Static_assert(sizeof KEYS / sizeof KEYS[0] == CONFIG_N_KEYS, "CONFIG_N_KEYS is out of date");

static int key_index(int sec, const char *name) {
    for (int i = 0; i < NKEYS; i++)
        if (KEYS[i].sec == sec && strcmp(KEYS[i].name, name) == 0) return i;
    return -1;
}

static int section_index(const char *name) {
    for (int s = 0; s < CONFIG_N_SECTIONS; s++)
        if (strcmp(SECTIONS[s], name) == 0) return s;
    return -1;
}

/* ---------------------------------------------------------------- growable string */

typedef struct { char *p; size_t n, cap; } Buf;

static void buf_printf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(Buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int need = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    ASSERT(need >= 0, "vsnprintf failed on format '%s'", fmt);
    if (b->n + (size_t)need + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + (size_t)need + 1) cap *= 2;
        b->p = moe_realloc(b->p, b->cap, cap);
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    b->n += (size_t)need;
}

/* ---------------------------------------------------------------- value formatting */

/* Shortest %g form that reads back to the same double, so to_yaml round-trips exactly. */
static void fmt_double(double v, char *out, size_t cap) {
    if (v == floor(v) && fabs(v) < 1e15) {  /* 10000, not 1e+04 */
        snprintf(out, cap, "%.0f", v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, cap, "%.*g", prec, v);
        if (strtod(out, NULL) == v) return;
    }
}

/* Length (2..4) and codepoint of the UTF-8 sequence at p (p[0] >= 0x80), or 0 when it is
 * not valid UTF-8 (bad lead or continuation, overlong, surrogate, > U+10FFFF). */
static int utf8_seq(const unsigned char *p, uint32_t *cp) {
    int len = p[0] >= 0xF0 && p[0] <= 0xF4 ? 4 : p[0] >= 0xE0 ? 3 : p[0] >= 0xC2 ? 2 : 0;
    if (len == 0 || p[0] > 0xF4) return 0;
    uint32_t v = p[0] & (0x7Fu >> len);
    for (int k = 1; k < len; k++) {
        if ((p[k] & 0xC0) != 0x80) return 0;  /* also stops at the NUL */
        v = (v << 6) | (p[k] & 0x3Fu);
    }
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (v < min[len] || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return len;
}

/* A YAML double-quoted string that libyaml reads back to exactly s: escapes ", \, and every
 * codepoint YAML does not allow raw in a stream (C0/C1 controls, DEL, U+FEFF, U+FFFE/FFFF)
 * or would fold as a line break (U+0085, U+2028, U+2029). Other valid UTF-8 passes through;
 * a byte that is not valid UTF-8 (only possible in a name taken from a file path) becomes
 * \xNN, i.e. the codepoint U+00NN: the closest YAML can say. */
static void fmt_quoted(Buf *b, const char *s) {
    buf_printf(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        uint32_t cp = *p;
        int len = *p < 0x80 ? 1 : utf8_seq(p, &cp);
        if (len == 0) len = 1;  /* invalid byte: cp stays the byte value */
        if (cp == '"' || cp == '\\') buf_printf(b, "\\%c", (char)cp);
        else if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F)) buf_printf(b, "\\x%02x", (unsigned)cp);
        else if (cp == 0x2028 || cp == 0x2029 || cp == 0xFEFF || cp == 0xFFFE || cp == 0xFFFF)
            buf_printf(b, "\\u%04x", (unsigned)cp);
        else if (len == 1 && cp >= 0x80) buf_printf(b, "\\x%02x", (unsigned)cp);
        else buf_printf(b, "%.*s", len, (const char *)p);
        p += len;
    }
    buf_printf(b, "\"");
}

/* The value of key k in c as YAML text (appended to b). */
static void fmt_value(Buf *b, const Config *c, const KeySpec *k) {
    const char *base = (const char *)c + k->off;
    char num[64];
    switch (k->type) {
    case T_INT: buf_printf(b, "%d", *(const int *)base); break;
    case T_I64: buf_printf(b, "%lld", (long long)*(const int64_t *)base); break;
    case T_FLOAT:
        fmt_double(*(const double *)base, num, sizeof num);
        buf_printf(b, "%s", num);
        break;
    case T_BOOL: buf_printf(b, "%s", *(const bool *)base ? "true" : "false"); break;
    case T_ENUM: {
        int v = *(const int *)base;
        if (v >= 0 && v <= k->imax) buf_printf(b, "%s", k->choices[v]);
        else buf_printf(b, "%d", v);   /* only after a direct edit; validate rejects it */
        break;
    }
    case T_STR: {
        const char *s = *(char *const *)base;
        if (s) fmt_quoted(b, s);
        else buf_printf(b, "null");  /* unset optional string; to_yaml leaves it out */
        break;
    }
    case T_LIST: {
        char *const *l = *(char **const *)base;
        size_t n = *(const size_t *)((const char *)c + k->off_n);
        buf_printf(b, "[");
        for (size_t i = 0; i < n; i++) {
            if (i) buf_printf(b, ", ");
            fmt_quoted(b, l[i]);
        }
        buf_printf(b, "]");
        break;
    }
    }
}

/* "an integer in [1, 8]", "a number in [0, 1)", ... : what key k accepts. */
static void describe(const KeySpec *k, char *out, size_t cap) {
    char lo[32], hi[32];
    switch (k->type) {
    case T_INT:
    case T_I64: {
        int64_t top = k->type == T_INT ? INT_MAX : INT64_MAX;
        const char *what = (k->flags & F_EVEN) ? "an even integer" : "an integer";
        if (k->imax == top) snprintf(out, cap, "%s >= %lld", what, (long long)k->imin);
        else snprintf(out, cap, "%s in [%lld, %lld]", what, (long long)k->imin,
                      (long long)k->imax);
        break;
    }
    case T_FLOAT:
        fmt_double(k->fmin, lo, sizeof lo);
        fmt_double(k->fmax, hi, sizeof hi);
        if (isinf(k->fmax))
            snprintf(out, cap, "a number %s %s", (k->flags & F_LO_OPEN) ? ">" : ">=", lo);
        else
            snprintf(out, cap, "a number in %c%s, %s%c", (k->flags & F_LO_OPEN) ? '(' : '[',
                     lo, hi, (k->flags & F_HI_OPEN) ? ')' : ']');
        break;
    case T_BOOL: snprintf(out, cap, "true or false"); break;
    case T_ENUM: {
        size_t n = (size_t)snprintf(out, cap, "one of ");
        for (int64_t i = 0; i <= k->imax && n < cap; i++)
            n += (size_t)snprintf(out + n, cap - n, "%s%s", i ? ", " : "", k->choices[i]);
        break;
    }
    case T_STR: snprintf(out, cap, "a non-empty string"); break;
    case T_LIST:
        snprintf(out, cap, "a list of strings such as [a.txt, b.txt] ([] for none)");
        break;
    }
}

/* ---------------------------------------------------------------- did-you-mean */

static size_t edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63) return 64;
    size_t row[64];
    for (size_t j = 0; j <= lb; j++) row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* Closest of names[0..n) to s within a small distance, or NULL. */
static const char *closest(const char *s, const char *const *names, int n) {
    const char *best = NULL;
    size_t bd = (size_t)-1, limit = strlen(s) / 3 + 1;
    if (limit > 3) limit = 3;
    for (int i = 0; i < n; i++) {
        size_t d = edit_distance(s, names[i]);
        if (d < bd) { bd = d; best = names[i]; }
    }
    return bd <= limit ? best : NULL;
}

static void hint_unknown_section(MoeErr *err, const char *name) {
    const char *sug = closest(name, SECTIONS, CONFIG_N_SECTIONS);
    Buf b = {0};
    if (sug) buf_printf(&b, "did you mean '%s'? ", sug);
    buf_printf(&b, "allowed sections: ");
    for (int s = 0; s < CONFIG_N_SECTIONS; s++) buf_printf(&b, "%s%s", s ? ", " : "", SECTIONS[s]);
    moe_hintf(err, "%s", b.p);
    moe_free(b.p);
}

static void hint_unknown_key(MoeErr *err, int sec, const char *name) {
    const char *names[CONFIG_N_KEYS];
    int n = 0;
    for (int i = 0; i < NKEYS; i++)
        if (KEYS[i].sec == sec) names[n++] = KEYS[i].name;
    Buf b = {0};
    const char *sug = closest(name, names, n);
    int other = -1;
    for (int i = 0; i < NKEYS && !sug; i++)
        if (strcmp(KEYS[i].name, name) == 0) other = KEYS[i].sec;
    if (sug) buf_printf(&b, "did you mean '%s'? ", sug);
    else if (other >= 0) buf_printf(&b, "'%s' belongs in section '%s'. ", name, SECTIONS[other]);
    buf_printf(&b, "allowed keys in section '%s': ", SECTIONS[sec]);
    for (int i = 0; i < n; i++) buf_printf(&b, "%s%s", i ? ", " : "", names[i]);
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

/* A parsed, range-checked value before it is stored; owns s / list. */
typedef struct Value { int64_t i; double f; bool b; char *s; char **list; size_t n; } Value;

static void value_free(Value *v) {
    moe_free(v->s);
    for (size_t j = 0; j < v->n; j++) moe_free(v->list[j]);
    moe_free(v->list);
    memset(v, 0, sizeof *v);
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
static int check_range(const KeySpec *k, const Value *v, const char *loc, const char *path,
                       MoeErr *err) {
    char want[128];
    describe(k, want, sizeof want);
    if (k->type == T_ENUM) {
        if (v->i < k->imin || v->i > k->imax) {
            moe_errorf(err, "%s: %s: value %lld is not a valid choice", loc, path,
                       (long long)v->i);
            return moe_hintf(err, "expected %s", want);
        }
    } else if (k->type == T_INT || k->type == T_I64) {
        if (v->i < k->imin || v->i > k->imax) {
            moe_errorf(err, "%s: %s: value %lld is out of range", loc, path, (long long)v->i);
            return moe_hintf(err, "expected %s", want);
        }
        if ((k->flags & F_EVEN) && (v->i % 2)) {
            moe_errorf(err, "%s: %s: value %lld is odd", loc, path, (long long)v->i);
            return moe_hintf(err, "expected %s (RoPE rotates pairs of dimensions)", want);
        }
    } else if (k->type == T_FLOAT) {
        bool lo_ok = (k->flags & F_LO_OPEN) ? v->f > k->fmin : v->f >= k->fmin;
        bool hi_ok = (k->flags & F_HI_OPEN) ? v->f < k->fmax : v->f <= k->fmax;
        if (!lo_ok || !hi_ok || !isfinite(v->f)) {
            char num[32];
            fmt_double(v->f, num, sizeof num);
            moe_errorf(err, "%s: %s: value %s is out of range", loc, path, num);
            return moe_hintf(err, "expected %s", want);
        }
    } else if (k->type == T_STR) {
        if (!v->s || !*v->s) {
            moe_errorf(err, "%s: %s: empty string", loc, path);
            return moe_hintf(err, "expected %s", want);
        }
    }
    return 0;
}

/* Converts node n (of document d) into a value of key k; type errors only. */
static int parse_node(const KeySpec *k, yaml_document_t *d, yaml_node_t *n, const Src *src,
                      const char *path, Value *v, MoeErr *err) {
    char loc[1100], want[128];
    src_loc(src, n->start_mark, loc, sizeof loc);
    describe(k, want, sizeof want);
    memset(v, 0, sizeof *v);

    if (k->type == T_LIST) {
        if (n->type != YAML_SEQUENCE_NODE) {
            moe_errorf(err, "%s: %s: expected a list of strings, got %s%s", loc, path,
                       scalar_is_null(n) ? "no value" : node_kind(n),
                       n->type == YAML_SCALAR_NODE && !scalar_is_null(n) ? " (write [x] for one item)" : "");
            return moe_hintf(err, "expected %s", want);
        }
        size_t cnt = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
        v->list = moe_calloc((cnt ? cnt : 1) * sizeof(char *));
        for (size_t j = 0; j < cnt; j++) {
            yaml_node_t *it = yaml_document_get_node(d, n->data.sequence.items.start[j]);
            char iloc[1100];
            src_loc(src, it->start_mark, iloc, sizeof iloc);
            if (it->type != YAML_SCALAR_NODE || scalar_is_null(it) ||
                strlen((const char *)it->data.scalar.value) != it->data.scalar.length) {
                moe_errorf(err, "%s: %s[%zu]: expected a non-empty string, got %s", iloc, path, j,
                           it->type == YAML_SCALAR_NODE ? "no value" : node_kind(it));
                value_free(v);
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
        const char *sug = closest(s, k->choices, (int)k->imax + 1);
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
        v->list = NULL;
        v->n = 0;
        break;
    }
    }
}

/* The current value of key k in c as a borrowed Value (for range re-checks). */
static Value peek(const Config *c, const KeySpec *k) {
    const char *base = (const char *)c + k->off;
    Value v = {0};
    switch (k->type) {
    case T_INT: v.i = *(const int *)base; break;
    case T_I64: v.i = *(const int64_t *)base; break;
    case T_FLOAT: v.f = *(const double *)base; break;
    case T_BOOL: v.b = *(const bool *)base; break;
    case T_ENUM: v.i = *(const int *)base; break;
    case T_STR: v.s = *(char *const *)base; break;
    case T_LIST: break;
    }
    return v;
}

/* Parses, checks and stores one key; records where it came from. */
static int set_key(Config *c, int ki, yaml_document_t *d, yaml_node_t *n, const Src *src,
                   MoeErr *err) {
    const KeySpec *k = &KEYS[ki];
    char path[64], loc[1100];
    snprintf(path, sizeof path, "%s.%s", SECTIONS[k->sec], k->name);
    src_loc(src, n->start_mark, loc, sizeof loc);
    Value v;
    if (parse_node(k, d, n, src, path, &v, err)) return -1;
    if (check_range(k, &v, loc, path, err)) {
        value_free(&v);
        return -1;
    }
    store(c, k, &v);
    value_free(&v);
    moe_free(c->key_loc[ki]);
    c->key_loc[ki] = moe_strdup(loc);
    return 0;
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
        int s = section_index(sname);
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
            int ki = key_index(s, kname);
            if (ki < 0) {
                src_loc(src, kn->start_mark, loc, sizeof loc);
                moe_errorf(err, "%s: %s: unknown key", loc, path);
                hint_unknown_key(err, s, kname);
                return -1;
            }
            if (set_key(c, ki, d, vn, src, err)) return -1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- public API */

static void set_str(char **dst, const char *s) {
    moe_free(*dst);
    *dst = s ? moe_strdup(s) : NULL;
}

void config_defaults(Config *c) {
    memset(c, 0, sizeof *c);
    c->name = moe_strdup("default");
    c->model = (ConfigModel){.vocab_size = 4096, .dim = 256, .n_layers = 4, .n_heads = 8,
                             .n_kv_heads = 4, .head_dim = 32, .norm_eps = 1e-5,
                             .rope_theta = 10000.0, .init_std = 0.02};
    c->moe = (ConfigMoe){.n_experts = 8, .top_k = 2, .hidden = 512, .capacity_factor = 0.0,
                         .router_noise = true, .aux_loss_coef = 0.01, .z_loss_coef = 0.001,
                         .router = CONFIG_ROUTER_TOPK, .top_p = 0.4, .max_experts = 0,
                         .entropy_coef = 1e-4};
    c->train = (ConfigTrain){.seq_len = 256, .micro_batch = 8, .grad_accum = 1, .steps = 1000,
                             .seed = 1337, .log_every = 10, .eval_every = 100,
                             .eval_batches = 8, .max_bad_steps = 5, .spike_factor = 5.0};
    c->optim = (ConfigOptim){.lr = 1e-3, .min_lr = 1e-4, .warmup_steps = 100, .beta1 = 0.9,
                             .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1, .grad_clip = 1.0};
    c->data.val_fraction = 0.1;
    c->run.dir = moe_strdup("runs/default");
    c->parallel.expert_parallel = 0;
    c->checkpoint = (ConfigCheckpoint){.every = 0, .keep = 3};
    c->init = (ConfigInit){.upcycle_from = NULL, .router_init_std = 0.02, .expert_noise = 0.0,
                           .granularity = 1};
    c->finetune = (ConfigFinetune){.init_from = NULL, .lora_rank = 0, .lora_alpha = 16.0,
                                   .lora_dropout = 0.0};
    c->finetune.lora_targets = moe_calloc(LORA_N_TARGETS * sizeof(char *));
    for (int t = 0; t < LORA_N_TARGETS; t++)
        c->finetune.lora_targets[t] = moe_strdup(lora_target_names[t]);
    c->finetune.n_lora_targets = LORA_N_TARGETS;
}

void config_free(Config *c) {
    if (!c) return;
    moe_free(c->path);
    moe_free(c->name);
    moe_free(c->data.tokenizer);
    for (size_t i = 0; i < c->data.n_text; i++) moe_free(c->data.text[i]);
    moe_free(c->data.text);
    for (size_t i = 0; i < c->data.n_shards; i++) moe_free(c->data.shards[i]);
    moe_free(c->data.shards);
    moe_free(c->run.dir);
    moe_free(c->init.upcycle_from);
    moe_free(c->finetune.init_from);
    for (size_t i = 0; i < c->finetune.n_lora_targets; i++) moe_free(c->finetune.lora_targets[i]);
    moe_free(c->finetune.lora_targets);
    for (int i = 0; i < CONFIG_N_KEYS; i++) moe_free(c->key_loc[i]);
    for (int i = 0; i < CONFIG_N_SECTIONS; i++) moe_free(c->section_loc[i]);
    memset(c, 0, sizeof *c);
}

static char **copy_list(char *const *l, size_t n) {
    if (!l) return NULL;
    char **r = moe_calloc((n ? n : 1) * sizeof(char *));
    for (size_t i = 0; i < n; i++) r[i] = moe_strdup(l[i]);
    return r;
}

void config_copy(Config *dst, const Config *src) {
    *dst = *src;
    dst->path = src->path ? moe_strdup(src->path) : NULL;
    dst->name = src->name ? moe_strdup(src->name) : NULL;
    dst->data.tokenizer = src->data.tokenizer ? moe_strdup(src->data.tokenizer) : NULL;
    dst->data.text = copy_list(src->data.text, src->data.n_text);
    dst->data.shards = copy_list(src->data.shards, src->data.n_shards);
    dst->run.dir = src->run.dir ? moe_strdup(src->run.dir) : NULL;
    dst->init.upcycle_from = src->init.upcycle_from ? moe_strdup(src->init.upcycle_from) : NULL;
    dst->finetune.init_from = src->finetune.init_from ? moe_strdup(src->finetune.init_from)
                                                      : NULL;
    dst->finetune.lora_targets = copy_list(src->finetune.lora_targets,
                                           src->finetune.n_lora_targets);
    for (int i = 0; i < CONFIG_N_KEYS; i++)
        dst->key_loc[i] = src->key_loc[i] ? moe_strdup(src->key_loc[i]) : NULL;
    for (int i = 0; i < CONFIG_N_SECTIONS; i++)
        dst->section_loc[i] = src->section_loc[i] ? moe_strdup(src->section_loc[i]) : NULL;
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
    int dir_key = key_index(S_RUN, "dir");
    if (!c->key_loc[dir_key]) {
        Buf b = {0};
        buf_printf(&b, "runs/%s", c->name);
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
        moe_errorf(err, "%s: cannot read config file%s", path, bad ? "" : ": it contains NUL bytes");
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
        int len = *p < 0x80 ? 1 : utf8_seq(p, &cp);
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
    const KeySpec *k = &KEYS[ki];
    char path[64], loc[1100];
    snprintf(path, sizeof path, "%s.%s", SECTIONS[k->sec], k->name);
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
    if (check_range(k, &v, loc, path, err)) {
        value_free(&v);
        return -1;
    }
    store(c, k, &v);
    value_free(&v);
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
    int s = section_index(sname);
    if (s < 0) {
        moe_errorf(err, "--set %s: %s: unknown section", assignment, sname);
        hint_unknown_section(err, sname);
        return -1;
    }
    int ki = key_index(s, kname);
    if (ki < 0) {
        moe_errorf(err, "--set %s: %s: unknown key", assignment, path);
        hint_unknown_key(err, s, kname);
        return -1;
    }
    const char *val = eq + 1;
    if (KEYS[ki].type == T_STR) return set_string(c, ki, assignment, val, err);
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
        describe(&KEYS[ki], want, sizeof want);
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
    return rc;
}

/* Location for a message about keys a and b: a --set override of either (it is what most
 * likely broke the rule), else the first one that has a source, else the config file. */
static const char *loc_of(const Config *c, int a, int b) {
    if (a >= 0 && c->key_loc[a] && !strncmp(c->key_loc[a], "--set ", 6)) return c->key_loc[a];
    if (b >= 0 && c->key_loc[b] && !strncmp(c->key_loc[b], "--set ", 6)) return c->key_loc[b];
    if (a >= 0 && c->key_loc[a]) return c->key_loc[a];
    if (b >= 0 && c->key_loc[b]) return c->key_loc[b];
    return c->path ? c->path : "(defaults)";
}

/* The finetune section's cross-field rules (see config.h). */
static int validate_finetune(const Config *c, MoeErr *err) {
    const ConfigFinetune *f = &c->finetune;
    int kif = key_index(S_FINETUNE, "init_from"), kr = key_index(S_FINETUNE, "lora_rank"),
        kt = key_index(S_FINETUNE, "lora_targets"), kup = key_index(S_INIT, "upcycle_from");
    if (f->init_from && c->init.upcycle_from) {
        moe_errorf(err, "%s: finetune.init_from, init.upcycle_from: a run starts from a "
                   "checkpoint to fine-tune or from a dense checkpoint to upcycle, not both",
                   loc_of(c, kif, kup));
        return moe_hintf(err, "remove one of the two keys (to fine-tune an upcycled model, "
                              "upcycle first with `moetrain upcycle` and fine-tune its output)");
    }
    if (f->lora_rank > 0 && !f->init_from) {
        moe_errorf(err, "%s: finetune.lora_rank, finetune.init_from: LoRA adapters "
                   "(lora_rank = %d) need a base checkpoint", loc_of(c, kr, kif), f->lora_rank);
        return moe_hintf(err, "set finetune.init_from to the checkpoint to fine-tune (e.g. "
                              "runs/mixtral_tiny/checkpoints/step_00001000.h5), or "
                              "finetune.lora_rank to 0");
    }
    for (size_t i = 0; i < f->n_lora_targets; i++) {
        const char *name = f->lora_targets[i];
        if (lora_target_index(name) < 0) {
            const char *sug = closest(name, lora_target_names, LORA_N_TARGETS);
            moe_errorf(err, "%s: finetune.lora_targets[%zu]: unknown projection '%s'",
                       loc_of(c, kt, -1), i, name);
            return moe_hintf(err, "%s%s%sallowed: q_proj, k_proj, v_proj, o_proj",
                             sug ? "did you mean '" : "", sug ? sug : "", sug ? "'? " : "");
        }
        for (size_t j = 0; j < i; j++)
            if (!strcmp(f->lora_targets[j], name)) {
                moe_errorf(err, "%s: finetune.lora_targets[%zu]: '%s' is listed twice",
                           loc_of(c, kt, -1), i, name);
                return moe_hintf(err, "list each projection once");
            }
    }
    if (f->lora_rank > 0 && f->n_lora_targets == 0) {
        moe_errorf(err, "%s: finetune.lora_targets, finetune.lora_rank: the list is empty but "
                   "lora_rank = %d asks for adapters", loc_of(c, kt, kr), f->lora_rank);
        return moe_hintf(err, "list at least one of q_proj, k_proj, v_proj, o_proj (or set "
                              "finetune.lora_rank to 0)");
    }
    return 0;
}

/* Tensor dimensions and the counts kernels loop over are ints (autograd/tensor.h): the
 * products they are made of are checked here in 64 bits, so that no int overflow is
 * reachable from a config that validates (layers/model.c asserts the same). Each factor is
 * already in [1, INT_MAX]. */
static int validate_products(const Config *c, MoeErr *err) {
    const ConfigModel *m = &c->model;
    const ConfigMoe *e = &c->moe;
    const int64_t B = c->train.micro_batch, T = c->train.seq_len;
    int kh = key_index(S_MODEL, "n_heads"), kd = key_index(S_MODEL, "head_dim"),
        kkv = key_index(S_MODEL, "n_kv_heads"), kb = key_index(S_TRAIN, "micro_batch"),
        kt = key_index(S_TRAIN, "seq_len");
    const int64_t hd = (int64_t)m->n_heads * m->head_dim;
    if (hd > INT_MAX) {
        moe_errorf(err, "%s: model.n_heads, model.head_dim: n_heads x head_dim = %d x %d = "
                   "%lld exceeds %d (the width of the queries and of the attention output)",
                   loc_of(c, kh, kd), m->n_heads, m->head_dim, (long long)hd, INT_MAX);
        return moe_hintf(err, "lower model.n_heads or model.head_dim");
    }
    /* routed slots per token: top-k's K, top-p's cap, every expert under expert choice */
    const int64_t w = e->n_experts == 0 ? 1
                    : e->router == CONFIG_ROUTER_TOPK ? e->top_k
                    : e->router == CONFIG_ROUTER_TOPP && e->max_experts > 0 ? e->max_experts
                    : e->n_experts;
    if (B * T > INT_MAX) {
        moe_errorf(err, "%s: train.micro_batch, train.seq_len: %lld x %lld = %lld tokens per "
                   "micro-batch exceed %d", loc_of(c, kb, kt), (long long)B, (long long)T,
                   (long long)(B * T), INT_MAX);
        return moe_hintf(err, "lower train.micro_batch or train.seq_len (train.grad_accum "
                              "makes a larger batch out of several micro-batches)");
    }
    if (B * T * w > INT_MAX) {
        moe_errorf(err, "%s: train.micro_batch, train.seq_len: %lld tokens per micro-batch x "
                   "%lld routed slots per token (moe.top_k, moe.max_experts or moe.n_experts "
                   "by moe.router) = %lld exceed %d", loc_of(c, kb, kt), (long long)(B * T),
                   (long long)w, (long long)(B * T * w), INT_MAX);
        return moe_hintf(err, "lower train.micro_batch or train.seq_len (train.grad_accum "
                              "makes a larger batch out of several micro-batches)");
    }
    if (B * m->n_kv_heads > INT_MAX) {   /* attention's (sequence, kv head) tasks */
        moe_errorf(err, "%s: train.micro_batch, model.n_kv_heads: %lld x %d exceeds %d",
                   loc_of(c, kb, kkv), (long long)B, m->n_kv_heads, INT_MAX);
        return moe_hintf(err, "lower train.micro_batch or model.n_kv_heads");
    }
    return 0;
}

int config_validate(const Config *c, MoeErr *err) {
    for (int i = 0; i < NKEYS; i++) {
        char path[64];
        snprintf(path, sizeof path, "%s.%s", SECTIONS[KEYS[i].sec], KEYS[i].name);
        Value v = peek(c, &KEYS[i]);
        if (KEYS[i].type == T_STR && !v.s) continue;  /* optional; tokenizer: below */
        if (check_range(&KEYS[i], &v, loc_of(c, i, -1), path, err)) return -1;
    }
    int ktext = key_index(S_DATA, "text"),
        kshards = key_index(S_DATA, "shards");
    const char *data_loc = c->section_loc[S_DATA];
    char fallback[1100];
    snprintf(fallback, sizeof fallback, "%s:1:1", c->path ? c->path : "(defaults)");
    if (!c->data.tokenizer) {
        moe_errorf(err, "%s: data.tokenizer: required key is missing", data_loc ? data_loc
                                                                                : fallback);
        return moe_hintf(err, "set data.tokenizer to a BPE file path, e.g. "
                              "data/tokenizer_4096.bpe (trained on data.text if missing)");
    }
    if (c->data.n_text == 0 && c->data.n_shards == 0) {
        const char *l = c->key_loc[ktext] ? c->key_loc[ktext]
                      : c->key_loc[kshards] ? c->key_loc[kshards]
                      : data_loc ? data_loc : fallback;
        moe_errorf(err, "%s: data.text, data.shards: both are empty", l);
        return moe_hintf(err, "list at least one text file (data.text: [corpus.txt]) or "
                              "token shard (data.shards: [...])");
    }
    int kh = key_index(S_MODEL, "n_heads"), kkv = key_index(S_MODEL, "n_kv_heads");
    if (c->model.n_heads % c->model.n_kv_heads != 0) {
        moe_errorf(err, "%s: model.n_kv_heads, model.n_heads: n_kv_heads = %d does not divide "
                   "n_heads = %d", loc_of(c, kkv, kh), c->model.n_kv_heads, c->model.n_heads);
        return moe_hintf(err, "each kv head serves n_heads/n_kv_heads query heads; pick "
                              "n_kv_heads among the divisors of %d", c->model.n_heads);
    }
    if (validate_products(c, err)) return -1;
    int ke = key_index(S_MOE, "n_experts"), kk = key_index(S_MOE, "top_k");
    if (c->moe.n_experts > 0 && c->moe.top_k > c->moe.n_experts) {
        moe_errorf(err, "%s: moe.top_k, moe.n_experts: top_k = %d exceeds n_experts = %d",
                   loc_of(c, kk, ke), c->moe.top_k, c->moe.n_experts);
        return moe_hintf(err, "expected moe.top_k to be an integer in [1, %d]",
                         c->moe.n_experts);
    }
    int ksh = key_index(S_MOE, "n_shared_experts");
    if (c->moe.n_shared_experts > 0 && c->moe.n_experts == 0) {
        moe_errorf(err, "%s: moe.n_shared_experts, moe.n_experts: %d shared expert(s) need "
                   "routed experts, n_experts is 0", loc_of(c, ksh, ke),
                   c->moe.n_shared_experts);
        return moe_hintf(err, "a dense model (n_experts: 0) has one FFN already: set "
                              "moe.n_shared_experts: 0, or moe.n_experts > 0");
    }
    const long long shw = c->moe.shared_hidden > 0 ? c->moe.shared_hidden : c->moe.hidden;
    if ((long long)c->moe.n_shared_experts * shw > INT_MAX) {
        moe_errorf(err, "%s: moe.n_shared_experts, moe.shared_hidden: %d shared experts of "
                   "width %lld exceed %d hidden units in total", loc_of(c, ksh, -1),
                   c->moe.n_shared_experts, shw, INT_MAX);
        return moe_hintf(err, "use fewer or narrower shared experts");
    }
    int kmx = key_index(S_MOE, "max_experts");
    if (c->moe.n_experts > 0 && c->moe.max_experts > c->moe.n_experts) {
        moe_errorf(err, "%s: moe.max_experts, moe.n_experts: max_experts = %d exceeds "
                   "n_experts = %d", loc_of(c, kmx, ke), c->moe.max_experts, c->moe.n_experts);
        return moe_hintf(err, "expected moe.max_experts in [0, %d] (0 = no cap below "
                              "n_experts)", c->moe.n_experts);
    }
    int kbr = key_index(S_MOE, "bias_update_rate"), kro = key_index(S_MOE, "router");
    if (c->moe.n_experts > 0 && c->moe.bias_update_rate > 0.0 &&
        c->moe.router != CONFIG_ROUTER_TOPK) {
        moe_errorf(err, "%s: moe.bias_update_rate, moe.router: the selection bias balances "
                   "top-k routing, the router is '%s'", loc_of(c, kbr, kro),
                   c->moe.router == CONFIG_ROUTER_TOPP ? "topp" : "expert_choice");
        return moe_hintf(err, "use moe.router: topk with the bias, or set "
                              "moe.bias_update_rate: 0 (expert choice is balanced by "
                              "construction; top-p has no fixed K to bias)");
    }
    int kup = key_index(S_INIT, "upcycle_from"), kg = key_index(S_INIT, "granularity");
    if (c->init.upcycle_from && c->moe.n_experts == 0) {
        moe_errorf(err, "%s: init.upcycle_from, moe.n_experts: upcycling needs an MoE model, "
                   "n_experts is 0", loc_of(c, kup, ke));
        return moe_hintf(err, "set moe.n_experts (a multiple of init.granularity) or remove "
                              "init.upcycle_from");
    }
    if (c->init.upcycle_from && c->moe.n_experts % c->init.granularity != 0) {
        moe_errorf(err, "%s: moe.n_experts, init.granularity: n_experts = %d is not a multiple "
                   "of granularity = %d", loc_of(c, kg, ke), c->moe.n_experts,
                   c->init.granularity);
        return moe_hintf(err, "each of the n_experts/granularity copies of the dense FFN holds "
                              "all %d slices", c->init.granularity);
    }
    if (validate_finetune(c, err)) return -1;
    int klr = key_index(S_OPTIM, "lr"), kmin = key_index(S_OPTIM, "min_lr");
    if (c->optim.min_lr > c->optim.lr) {
        char a[32], b[32];
        fmt_double(c->optim.min_lr, a, sizeof a);
        fmt_double(c->optim.lr, b, sizeof b);
        moe_errorf(err, "%s: optim.min_lr, optim.lr: min_lr = %s exceeds lr = %s",
                   loc_of(c, kmin, klr), a, b);
        return moe_hintf(err, "expected optim.min_lr in [0, %s]", b);
    }
    return 0;
}

char *config_to_yaml(const Config *c) {
    Buf b = {0};
    buf_printf(&b, "# moetrain config '%s' (complete, effective values)\n",
               c->name ? c->name : "default");
    for (int s = 0; s < CONFIG_N_SECTIONS; s++) {
        buf_printf(&b, "%s:\n", SECTIONS[s]);
        for (int i = 0; i < NKEYS; i++) {
            const KeySpec *k = &KEYS[i];
            if (k->sec != s) continue;
            if (k->type == T_STR && !peek(c, k).s) continue;  /* unset tokenizer/upcycle_from */
            size_t start = b.n;
            buf_printf(&b, "  %s: ", k->name);
            fmt_value(&b, c, k);
            size_t w = b.n - start;
            buf_printf(&b, "%*s# %s\n", w < 36 ? (int)(36 - w) : 1, "", k->doc);
        }
    }
    return b.p;
}

/* skip_sec: a section left out of the comparison, or -1. */
static int diff(const Config *a, const Config *b, bool shape, int skip_sec, char *out,
                size_t cap) {
    int count = 0;
    size_t used = 0;
    if (out && cap) out[0] = 0;
    for (int i = 0; i < NKEYS; i++) {
        const KeySpec *k = &KEYS[i];
        if (((k->flags & F_SHAPE) != 0) != shape || k->sec == skip_sec) continue;
        Buf va = {0}, vb = {0};
        fmt_value(&va, a, k);
        fmt_value(&vb, b, k);
        if (strcmp(va.p, vb.p) != 0) {
            if (out && used < cap) {
                int w = snprintf(out + used, cap - used, "%s%s.%s: %s -> %s", count ? ", " : "",
                                 SECTIONS[k->sec], k->name, va.p, vb.p);
                used = w < 0 ? cap : used + (size_t)w;
            }
            count++;
        }
        moe_free(va.p);
        moe_free(vb.p);
    }
    return count;
}

int config_diff_shape(const Config *a, const Config *b, char *out, size_t cap) {
    return diff(a, b, true, -1, out, cap);
}

int config_diff_other(const Config *a, const Config *b, char *out, size_t cap) {
    return diff(a, b, false, -1, out, cap);
}

int config_diff_model(const Config *a, const Config *b, char *out, size_t cap) {
    return diff(a, b, true, S_FINETUNE, out, cap);
}

/* ---------------------------------------------------------------- narrow types */

void config_model_shape(const Config *c, ModelShape *s) {
    memset(s, 0, sizeof *s);
    s->V = c->model.vocab_size;
    s->C = c->model.dim;
    s->L = c->model.n_layers;
    s->H = c->model.n_heads;
    s->Hkv = c->model.n_kv_heads;
    s->D = c->model.head_dim;
    s->F = c->moe.hidden;
    s->E = c->moe.n_experts;
    s->K = c->moe.n_experts > 0 ? c->moe.top_k : 0;
    s->norm_eps = (float)c->model.norm_eps;
    s->rope_theta = (float)c->model.rope_theta;
    s->init_std = (float)c->model.init_std;
    s->capacity_factor = (float)c->moe.capacity_factor;
    s->router_noise = c->moe.router_noise;
    s->aux_coef = (float)c->moe.aux_loss_coef;
    s->z_coef = (float)c->moe.z_loss_coef;
    s->W = c->model.sliding_window;
    s->Fs = c->moe.n_experts > 0 ? c->moe.n_shared_experts *
            (c->moe.shared_hidden > 0 ? c->moe.shared_hidden : c->moe.hidden) : 0;
    s->router = c->moe.router == CONFIG_ROUTER_TOPP ? MOE_ROUTER_TOPP
              : c->moe.router == CONFIG_ROUTER_EXPERT_CHOICE ? MOE_ROUTER_EXPERT_CHOICE
              : MOE_ROUTER_TOPK;
    s->top_p = (float)c->moe.top_p;
    s->max_experts = c->moe.max_experts;
    s->entropy_coef = (float)c->moe.entropy_coef;
}

void config_lora_spec(const Config *c, LoraSpec *s) {
    memset(s, 0, sizeof *s);
    const ConfigFinetune *f = &c->finetune;
    s->rank = f->lora_rank;
    s->alpha = (float)f->lora_alpha;
    s->dropout = (float)f->lora_dropout;
    for (size_t i = 0; i < f->n_lora_targets; i++) {
        int t = lora_target_index(f->lora_targets[i]);
        if (t >= 0) s->targets |= 1u << t;
    }
    s->train_router = f->train_router;
    s->train_experts = f->train_experts;
}
