/* ckpt.c: checkpoint save/load over h5io. See ckpt.h for the file layout.
 *
 * Writing is organised so that an expert-parallel version only has to replace where the
 * expert tensors come from: ckpt_save = open the temporary, write the run state and the
 * dense parameters, then write_expert() once per (layer, tensor, expert) from plain float
 * pointers (today: slices of this rank's stacked tensors; later: buffers rank 0 gathered),
 * then commit. Loading builds a list of every dataset this rank expects, checks them all
 * (existence, type, shape) before reading anything, then reads.
 */
#include "checkpoints/ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoints/h5io.h"
#include "checkpoints/seal.h"
#include "core/fs.h"
#include "data/tokenizer.h"
#include "layers/lora.h"

#define CKPT_NAME_MAX 256
#define CKPT_ROUTER_BIAS "state/router_bias"

/* Group of each tensor kind inside the file, indexed by Copy. */
enum { COPY_DATA = 0, COPY_M = 1, COPY_V = 2, COPY_COUNT = 3 };
static const char *const COPY_GROUP[COPY_COUNT] = {"params", "optim/m", "optim/v"};

static bool is_stacked_expert(const Param *p) {
    return p->block == PBLOCK_EXPERT && strstr(p->name, "{e}") != NULL;
}

/* pattern with "{e}" replaced by the decimal global expert index e. */
static void expert_name(const char *pattern, int e, char *out, size_t cap) {
    const char *at = strstr(pattern, "{e}");
    ASSERT(at, "not an expert pattern: %s", pattern);
    snprintf(out, cap, "%.*s%d%s", (int)(at - pattern), pattern, e, at + 3);
}

static void dset_name(int copy, const char *name, char *out, size_t cap) {
    int k = snprintf(out, cap, "%s/%s", COPY_GROUP[copy], name);
    ASSERT(k > 0 && (size_t)k < cap, "dataset name too long: %s", name);
}

/* Where tensor p's values (COPY_DATA, at p->off) or moments (at p->goff) start. */
static float *tensor_copy(const ParamBlock *b, const Param *p, int copy) {
    return copy == COPY_DATA ? b->data + p->off : (copy == COPY_M ? b->m : b->v) + p->goff;
}

/* Which tensors of a model a file holds / a load reads: all (full checkpoints), the
 * trainable ones (adapter checkpoints), or all but the adapters (the base of a LoRA
 * model). */
enum { SEL_ALL, SEL_TRAINABLE, SEL_BASE };
static bool selected(const Param *p, int sel) {
    return sel == SEL_ALL || (sel == SEL_TRAINABLE ? p->trainable : !lora_is_adapter(p->name));
}

/* ---- writing ---- */

typedef struct Writer {
    int64_t file;
    const char *path;    /* the temporary's path, for messages */
    bool optim;          /* moments are written */
    bool adapter;        /* adapter checkpoint: trainable tensors only */
    MoeErr *err;
} Writer;

static int write_tensor(Writer *w, int copy, const char *name, const float *src, int ndim,
                        const uint64_t *dims) {
    char ds[CKPT_NAME_MAX];
    dset_name(copy, name, ds, sizeof ds);
    return h5io_write(w->file, w->path, ds, true, ndim, dims, src, w->err);
}

/* One expert's tensor (rows, cols) under its global index e: the values, and when
 * w->optim the two moments (m, v may then not be NULL). This is the unit an MPI gather
 * feeds: any rank's slice, received into a buffer on the writing rank, goes through here. */
static int write_expert(Writer *w, const char *pattern, int e, const float *data,
                        const float *m, const float *v, int rows, int cols) {
    char name[CKPT_NAME_MAX];
    expert_name(pattern, e, name, sizeof name);
    uint64_t dims[2] = {(uint64_t)rows, (uint64_t)cols};
    if (write_tensor(w, COPY_DATA, name, data, 2, dims)) return -1;
    if (w->optim && m && (write_tensor(w, COPY_M, name, m, 2, dims) ||
                          write_tensor(w, COPY_V, name, v, 2, dims)))
        return -1;
    return 0;
}

static int write_state(Writer *w, const Config *c, const Model *m, const CkptMeta *meta,
                       const char *tokenizer_path) {
    int64_t f = w->file;
    const char *p = w->path;
    MoeErr *err = w->err;
    if (h5io_attr_put_str(f, p, "magic", CKPT_MAGIC, err) ||
        h5io_attr_put_i64(f, p, "format_version", CKPT_FORMAT_VERSION, err) ||
        h5io_attr_put_i64(f, p, "step", meta->step, err) ||
        h5io_attr_put_i64(f, p, "tokens_seen", meta->tokens_seen, err) ||
        h5io_attr_put_u64(f, p, "seed", meta->seed, err) ||
        h5io_attr_put_u64(f, p, "loader_epoch", meta->loader_epoch, err) ||
        h5io_attr_put_u64(f, p, "loader_cursor", meta->loader_cursor, err) ||
        h5io_attr_put_u64(f, p, "loader_windows", meta->loader_windows, err) ||
        h5io_attr_put_u64(f, p, "tok_hash", meta->tok_hash, err) ||
        h5io_attr_put_i64(f, p, "n_experts", m->s.E, err) ||
        h5io_attr_put_i64(f, p, "has_optimizer", w->optim ? 1 : 0, err) ||
        h5io_attr_put_str(f, p, "config_name", c->name ? c->name : "default", err))
        return -1;
    uint64_t ema_bits;
    memcpy(&ema_bits, &meta->gnorm_ema, sizeof ema_bits);
    if (h5io_attr_put_i64(f, p, "lineage_gen", meta->lineage_gen, err) ||
        h5io_attr_put_i64(f, p, "parent_gen", meta->parent_gen, err) ||
        h5io_attr_put_i64(f, p, "parent_step", meta->parent_step, err) ||
        h5io_attr_put_u64(f, p, "gnorm_ema_bits", ema_bits, err) ||
        h5io_attr_put_i64(f, p, "gnorm_count", meta->gnorm_count, err))
        return -1;
    if (meta->adapter && (h5io_attr_put_str(f, p, "base_path", meta->base_path, err) ||
                          h5io_attr_put_u64(f, p, "base_checksum", meta->base_checksum, err)))
        return -1;
    char *yaml = config_to_yaml(c);
    uint64_t n = strlen(yaml);
    int rc = h5io_write(f, p, "config", false, 1, &n, yaml, err);
    moe_free(yaml);
    if (rc) return -1;
    uint8_t *tok = NULL;
    size_t tn = 0;
    if (fs_read_file(tokenizer_path, &tok, &tn, err)) return -1;
    n = tn;
    rc = h5io_write(f, p, "tokenizer", false, 1, &n, tok, err);
    moe_free(tok);
    return rc;
}

static int write_model(Writer *w, const Model *m) {
    if (h5io_group(w->file, w->path, "params", w->err)) return -1;
    if (w->optim && (h5io_group(w->file, w->path, "optim", w->err) ||
                     h5io_group(w->file, w->path, "optim/m", w->err) ||
                     h5io_group(w->file, w->path, "optim/v", w->err)))
        return -1;
    const ParamSet *ps = &m->ps;
    for (int i = 0; i < ps->count; i++) {
        const Param *p = &ps->p[i];
        const ParamBlock *b = &ps->blocks[p->block];
        if (!selected(p, w->adapter ? SEL_TRAINABLE : SEL_ALL)) continue;
        const bool moments = w->optim && p->trainable;
        if (is_stacked_expert(p)) {
            ASSERT(p->t.ndim == 3 && p->t.shape[0] == m->e_local, "expert tensor %s", p->name);
            const size_t per = (size_t)p->t.shape[1] * (size_t)p->t.shape[2];
            for (int e = 0; e < m->e_local; e++) {
                const size_t o = (size_t)e * per;
                if (write_expert(w, p->name, m->e_first + e, tensor_copy(b, p, COPY_DATA) + o,
                                 moments ? tensor_copy(b, p, COPY_M) + o : NULL,
                                 moments ? tensor_copy(b, p, COPY_V) + o : NULL,
                                 p->t.shape[1], p->t.shape[2]))
                    return -1;
            }
            continue;
        }
        uint64_t dims[4];
        for (int d = 0; d < p->t.ndim; d++) dims[d] = (uint64_t)p->t.shape[d];
        for (int copy = 0; copy < (moments ? COPY_COUNT : 1); copy++)
            if (write_tensor(w, copy, p->name, tensor_copy(b, p, copy), p->t.ndim, dims))
                return -1;
    }
    return 0;
}

/* The aux-loss-free balancing bias (L, E), replicated on every rank: written when the model
 * routes with it. */
static int write_router_bias(Writer *w, const Model *m) {
    if (!m->use_router_bias || !m->router_bias) return 0;
    uint64_t dims[2] = {(uint64_t)m->s.L, (uint64_t)m->s.E};
    if (h5io_group(w->file, w->path, "state", w->err)) return -1;
    return h5io_write(w->file, w->path, CKPT_ROUTER_BIAS, true, 2, dims, m->router_bias, w->err);
}

int ckpt_save(const char *path, const Config *c, const Model *m, const CkptMeta *meta,
              const char *tokenizer_path, bool with_optimizer, MoeErr *err) {
    h5io_quiet();
    ASSERT(tokenizer_path, "ckpt_save needs the tokenizer file");
    size_t tl = strlen(path) + 8;
    char *tmp = moe_malloc(tl);
    snprintf(tmp, tl, "%s.tmp", path);
    Writer w = {.file = -1, .path = tmp, .optim = with_optimizer, .adapter = meta->adapter,
                .err = err};
    /* Create the temporary ourselves first: the OS reason (no such directory, permission
     * denied) is clearer than HDF5's. */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        moe_errorf(err, "%s: cannot create checkpoint file: %s", tmp, strerror(errno));
        moe_hintf(err, "check that the directory of %s exists and is writable", path);
        moe_free(tmp);
        return -1;
    }
    close(fd);
    if (h5io_create(tmp, SEAL_BLOCK, &w.file, err)) goto fail;
    if (write_state(&w, c, m, meta, tokenizer_path)) goto fail;
    if (write_model(&w, m)) goto fail;
    if (write_router_bias(&w, m)) goto fail;
    int64_t f = w.file;
    w.file = -1;
    if (h5io_close(f, tmp, err)) goto fail;
    /* libhdf5 is done with the file: digest it into its user block (and fsync) */
    if (seal_write(tmp, err)) goto fail;
    if (fs_publish(tmp, path, err)) goto fail;
    moe_free(tmp);
    return 0;
fail:
    if (w.file >= 0) h5io_close(w.file, tmp, NULL);
    unlink(tmp);
    moe_free(tmp);
    return -1;
}

/* ---- reading ---- */

/* Bounds on the run-state attributes, so a crafted or damaged (and re-sealed) file is
 * refused by name instead of reaching code that trusts them. Counters (step, tokens_seen,
 * loader position, generations, gnorm_count) are at most 2^62: far beyond any run, and
 * low enough that the trainer's arithmetic on them (step + 1, tokens_seen += B*T*A,
 * epoch + windows / n_windows) cannot overflow, and that loader_epoch never equals the
 * loader's "no permutation yet" sentinel UINT64_MAX. The byte datasets are capped far above
 * any config (a few KiB of YAML) or tokenizer file (a BPE file of 65536 tokens is about a
 * MiB, a tokenizer.json of 200k tokens about 9 MiB), so a reader never allocates
 * what an absurd file declares. */
#define CKPT_MAX_COUNT ((uint64_t)1 << 62)
#define CKPT_MAX_CONFIG_BYTES ((uint64_t)16 << 20)
#define CKPT_MAX_TOKENIZER_BYTES ((uint64_t)256 << 20)

/* A checkpoint opened by open_checked: its format version and whether it is sealed, the
 * validated run state and the two attributes the loaders compare against the model. */
typedef struct Opened {
    int64_t file;
    int64_t version;
    bool sealed;
    CkptMeta meta;
    int64_t n_experts;
} Opened;

static int bad_attr(MoeErr *err, const char *path, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int bad_attr(MoeErr *err, const char *path, const char *name, const char *fmt, ...) {
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    moe_errorf(err, "%s: attribute '%s' %s", path, name, what);
    return moe_hintf(err, "moetrain never writes such a value: the file was crafted or edited; "
                          "resume from another checkpoint");
}

static int check_count(const char *path, const char *name, int64_t v, MoeErr *err) {
    if (v >= 0 && (uint64_t)v <= CKPT_MAX_COUNT) return 0;
    return bad_attr(err, path, name, "is %lld, outside [0, 2^62]", (long long)v);
}

static int check_ucount(const char *path, const char *name, uint64_t v, MoeErr *err) {
    if (v <= CKPT_MAX_COUNT) return 0;
    return bad_attr(err, path, name, "is %llu, above 2^62", (unsigned long long)v);
}

/* Read and validate the run state (the root attributes besides magic and version). */
static int read_meta(int64_t f, const char *path, CkptMeta *meta, int64_t *n_experts,
                     MoeErr *err) {
    CkptMeta t;
    memset(&t, 0, sizeof t);
    if (h5io_attr_get_i64(f, path, "step", &t.step, err) ||
        h5io_attr_get_i64(f, path, "tokens_seen", &t.tokens_seen, err) ||
        h5io_attr_get_u64(f, path, "seed", &t.seed, err) ||
        h5io_attr_get_u64(f, path, "loader_epoch", &t.loader_epoch, err) ||
        h5io_attr_get_u64(f, path, "loader_cursor", &t.loader_cursor, err) ||
        h5io_attr_get_u64(f, path, "loader_windows", &t.loader_windows, err) ||
        h5io_attr_get_u64(f, path, "tok_hash", &t.tok_hash, err))
        return -1;
    if (check_count(path, "step", t.step, err) ||
        check_count(path, "tokens_seen", t.tokens_seen, err) ||
        check_ucount(path, "loader_epoch", t.loader_epoch, err) ||
        check_ucount(path, "loader_windows", t.loader_windows, err))
        return -1;
    /* the loader's position inside an epoch (LoaderState.cursor < n_windows); a file saved
     * without a loader (upcycle, tests) has no windows and cursor 0 */
    if (t.loader_windows ? t.loader_cursor >= t.loader_windows : t.loader_cursor != 0)
        return bad_attr(err, path, "loader_cursor", "is %llu, not below loader_windows = %llu",
                        (unsigned long long)t.loader_cursor,
                        (unsigned long long)t.loader_windows);
    int64_t has_opt = 0, ne = 0;
    if (h5io_attr_get_i64(f, path, "has_optimizer", &has_opt, err) ||
        h5io_attr_get_i64(f, path, "n_experts", &ne, err))
        return -1;
    if (has_opt != 0 && has_opt != 1)
        return bad_attr(err, path, "has_optimizer", "is %lld, not 0 or 1", (long long)has_opt);
    const bool moments = h5io_exists(f, "optim/m") && h5io_exists(f, "optim/v");
    if (has_opt ? !moments : h5io_exists(f, "optim"))
        return bad_attr(err, path, "has_optimizer", "is %lld but the file %s", (long long)has_opt,
                        has_opt ? "lacks /optim/m or /optim/v" : "holds /optim");
    t.has_optimizer = has_opt == 1;
    if (ne < 0 || ne > INT_MAX)
        return bad_attr(err, path, "n_experts", "is %lld, outside [0, %d]", (long long)ne,
                        INT_MAX);
    char name[256];   /* as ckpt_read_config reads it */
    if (h5io_attr_get_str(f, path, "config_name", name, sizeof name, err)) return -1;
    t.has_router_bias = h5io_exists(f, CKPT_ROUTER_BIAS) == 1;
    if (h5io_attr_exists(f, "lineage_gen")) {   /* absent in files of older versions */
        uint64_t ema_bits = 0;
        if (h5io_attr_get_i64(f, path, "lineage_gen", &t.lineage_gen, err) ||
            h5io_attr_get_i64(f, path, "parent_gen", &t.parent_gen, err) ||
            h5io_attr_get_i64(f, path, "parent_step", &t.parent_step, err) ||
            h5io_attr_get_u64(f, path, "gnorm_ema_bits", &ema_bits, err) ||
            h5io_attr_get_i64(f, path, "gnorm_count", &t.gnorm_count, err))
            return -1;
        memcpy(&t.gnorm_ema, &ema_bits, sizeof t.gnorm_ema);
        if (check_count(path, "lineage_gen", t.lineage_gen, err) ||
            check_count(path, "parent_gen", t.parent_gen, err) ||
            check_count(path, "parent_step", t.parent_step, err) ||
            check_count(path, "gnorm_count", t.gnorm_count, err))
            return -1;
        /* a running mean of finite gradient norms: finite and >= 0 */
        if (!isfinite(t.gnorm_ema) || t.gnorm_ema < 0.0)
            return bad_attr(err, path, "gnorm_ema_bits", "holds %g, not a finite norm >= 0",
                            t.gnorm_ema);
    }
    if (h5io_attr_exists(f, "base_checksum")) {   /* an adapter checkpoint */
        t.adapter = true;
        if (h5io_attr_get_u64(f, path, "base_checksum", &t.base_checksum, err) ||
            h5io_attr_get_str(f, path, "base_path", t.base_path, sizeof t.base_path, err))
            return -1;
        if (!t.base_path[0]) return bad_attr(err, path, "base_path", "is empty");
    }
    if (meta) *meta = t;
    if (n_experts) *n_experts = ne;
    return 0;
}

/* Checkpoints of format version 1 carry no seal: say once per file and process (and only on
 * rank 0 under MPI, where every rank reads the same file) that their HDF5 structures go
 * unverified; the file is still read. */
static void warn_unsealed(const char *path, const SealId *id) {
    if (moe_log_rank > 0) return;
    enum { N = 16 };
    static SealId warned[N];
    static size_t n, next;
    for (size_t i = 0; i < n; i++)
        if (warned[i].dev == id->dev && warned[i].ino == id->ino) return;
    warned[next] = *id;
    next = (next + 1) % N;
    if (n < N) n++;
    fprintf(stderr, "moetrain: warning: %s: format version 1 checkpoint, written before "
            "whole-file digests: HDF5's own structures in it are read unverified\n", path);
}

/* Verify path (seal_verify: every byte, before libhdf5 reads any), open it, check magic and
 * format version against the seal, and read and validate the run state into o. */
static int open_checked(const char *path, Opened *o, MoeErr *err) {
    memset(o, 0, sizeof *o);
    o->file = -1;
    SealId id;
    if (seal_verify(path, &o->sealed, &id, err)) return -1;
    if (h5io_open_ro(path, &id, &o->file, err)) return -1;
    char magic[64];
    if (h5io_attr_get_str(o->file, path, "magic", magic, sizeof magic, err)) goto fail;
    if (strcmp(magic, CKPT_MAGIC) != 0) {
        moe_errorf(err, "%s: attribute 'magic' is '%s', not '%s'", path, magic, CKPT_MAGIC);
        moe_hintf(err, "this HDF5 file is not a moetrain checkpoint");
        goto fail;
    }
    if (h5io_attr_get_i64(o->file, path, "format_version", &o->version, err)) goto fail;
    if (o->sealed != (o->version == CKPT_FORMAT_VERSION) || o->version < 1 ||
        o->version > CKPT_FORMAT_VERSION) {
        if (o->version == CKPT_FORMAT_VERSION || (o->sealed && o->version == 1)) {
            moe_errorf(err, "%s: attribute 'format_version' is %lld but the file has %s "
                       "(only version %d files are sealed)", path, (long long)o->version,
                       o->sealed ? "a seal" : "no seal", CKPT_FORMAT_VERSION);
            moe_hintf(err, "the file was edited or its first %d bytes replaced; it cannot be "
                           "trusted, resume from another checkpoint", SEAL_BLOCK);
        } else {
            moe_errorf(err, "%s: attribute 'format_version' is %lld: this moetrain reads "
                       "checkpoint format versions 1 and %d", path, (long long)o->version,
                       CKPT_FORMAT_VERSION);
            moe_hintf(err, "use the moetrain version that wrote it, or another checkpoint");
        }
        goto fail;
    }
    if (read_meta(o->file, path, &o->meta, &o->n_experts, err)) goto fail;
    if (!o->sealed) warn_unsealed(path, &id);
    return 0;
fail:
    h5io_close(o->file, path, NULL);
    o->file = -1;
    return -1;
}

int ckpt_read_meta(const char *path, CkptMeta *meta, MoeErr *err) {
    Opened o;
    if (open_checked(path, &o, err)) return -1;
    h5io_close(o.file, path, NULL);
    if (meta) *meta = o.meta;
    return 0;
}

/* A whole 1-D byte dataset of at most max bytes into a new NUL-terminated buffer. */
static int read_bytes(int64_t f, const char *path, const char *dset, uint64_t max,
                      uint8_t **out, size_t *n, MoeErr *err) {
    int nd = 0;
    uint64_t dims[4];
    bool fl = false;
    if (h5io_shape(f, path, dset, &nd, dims, &fl, err)) return -1;
    if (nd != 1 || fl) {
        moe_errorf(err, "%s: dataset '%s' is not a byte string", path, dset);
        return moe_hintf(err, "the file was not written by moetrain's checkpoint writer");
    }
    if (dims[0] > max) {
        moe_errorf(err, "%s: dataset '%s' holds %llu bytes, more than the %llu it may have",
                   path, dset, (unsigned long long)dims[0], (unsigned long long)max);
        return moe_hintf(err, "the file was not written by moetrain's checkpoint writer");
    }
    uint8_t *b = moe_malloc((size_t)dims[0] + 1);
    if (h5io_read(f, path, dset, false, b, err)) {
        moe_free(b);
        return -1;
    }
    b[dims[0]] = 0;
    *out = b;
    *n = (size_t)dims[0];
    return 0;
}

int ckpt_read_config(const char *path, Config *c, MoeErr *err) {
    memset(c, 0, sizeof *c);
    Opened o;
    if (open_checked(path, &o, err)) return -1;
    uint8_t *text = NULL;
    size_t n = 0;
    char name[256];
    int rc = read_bytes(o.file, path, "config", CKPT_MAX_CONFIG_BYTES, &text, &n, err);
    if (!rc) rc = h5io_attr_get_str(o.file, path, "config_name", name, sizeof name, err);
    h5io_close(o.file, path, NULL);
    if (!rc) rc = config_load_text(c, (const char *)text, n, path, err);
    moe_free(text);
    if (rc) return -1;
    moe_free(c->name);
    c->name = moe_strdup(name);
    return 0;
}

int ckpt_read_tokenizer(const char *path, uint8_t **bytes, size_t *n, MoeErr *err) {
    *bytes = NULL;
    *n = 0;
    Opened o;
    if (open_checked(path, &o, err)) return -1;
    int rc = read_bytes(o.file, path, "tokenizer", CKPT_MAX_TOKENIZER_BYTES, bytes, n, err);
    h5io_close(o.file, path, NULL);
    return rc;
}

/* One dataset the loading rank expects: where it goes and its shape. */
typedef struct Expect {
    char dset[CKPT_NAME_MAX];
    float *dst;
    int ndim;
    uint64_t dims[4];
} Expect;

typedef struct ExpectList { Expect *v; size_t n, cap; } ExpectList;

static void expect_add(ExpectList *l, int copy, const char *name, float *dst, int ndim,
                       const int *shape) {
    if (l->n == l->cap) {
        size_t nc = l->cap ? 2 * l->cap : 64;
        l->v = moe_realloc(l->v, l->cap * sizeof(Expect), nc * sizeof(Expect));
        l->cap = nc;
    }
    Expect *x = &l->v[l->n++];
    dset_name(copy, name, x->dset, sizeof x->dset);
    x->dst = dst;
    x->ndim = ndim;
    for (int d = 0; d < ndim; d++) x->dims[d] = (uint64_t)shape[d];
}

static void expect_model(ExpectList *l, Model *m, bool optim, int sel) {
    ParamSet *ps = &m->ps;
    for (int i = 0; i < ps->count; i++) {
        Param *p = &ps->p[i];
        ParamBlock *b = &ps->blocks[p->block];
        if (!selected(p, sel)) continue;
        int ncopy = optim && p->trainable ? COPY_COUNT : 1;
        for (int copy = 0; copy < ncopy; copy++) {
            float *base = tensor_copy(b, p, copy);
            if (!is_stacked_expert(p)) {
                expect_add(l, copy, p->name, base, p->t.ndim, p->t.shape);
                continue;
            }
            const size_t per = (size_t)p->t.shape[1] * (size_t)p->t.shape[2];
            for (int e = 0; e < m->e_local; e++) {
                char name[CKPT_NAME_MAX];
                expert_name(p->name, m->e_first + e, name, sizeof name);
                expect_add(l, copy, name, base + (size_t)e * per, 2, p->t.shape + 1);
            }
        }
    }
}

/* Shared by ckpt_load and ckpt_load_base: check the file against m, then read the
 * selected tensors (and moments). */
static int load_sel(const char *path, Model *m, CkptMeta *meta, bool load_optimizer, bool base,
                    MoeErr *err) {
    Opened o;
    if (open_checked(path, &o, err)) return -1;
    const int64_t f = o.file, ne = o.n_experts;
    const CkptMeta t = o.meta;
    ExpectList l = {0};
    if (ne != m->s.E) {
        moe_errorf(err, "%s: checkpoint has %lld experts, the model %d", path, (long long)ne,
                   m->s.E);
        moe_hintf(err, "moe.n_experts must match the checkpoint's config");
        goto fail;
    }
    const bool lora = m->lora.rank > 0;
    if (t.adapter && (base || !lora)) {
        moe_errorf(err, "%s: this is a LoRA adapter checkpoint (base %s): it holds only the "
                   "adapters, not a whole model", path, t.base_path);
        moe_hintf(err, "%s", base ? "finetune.init_from must name a full checkpoint (e.g. the "
                  "base run's), not another fine-tuning run's" : "load it through its LoRA "
                  "config (moetrain export / logits / --resume read the base themselves)");
        goto fail;
    }
    if (!t.adapter && lora && !base) {
        moe_errorf(err, "%s: this is a full checkpoint, but the model has LoRA adapters "
                   "(finetune.lora_rank %d)", path, m->lora.rank);
        moe_hintf(err, "a LoRA run starts from its base with finetune.init_from and resumes "
                       "only its own adapter checkpoints");
        goto fail;
    }
    if (load_optimizer && !t.has_optimizer) {
        moe_errorf(err, "%s: the checkpoint has no optimizer state", path);
        moe_hintf(err, "it was saved for inference/export; load it without optimizer state "
                       "(fresh AdamW moments) or pick a training checkpoint");
        goto fail;
    }
    expect_model(&l, m, load_optimizer, base ? SEL_BASE : t.adapter ? SEL_TRAINABLE : SEL_ALL);
    /* All checks first, so a mismatched file leaves the model untouched. */
    for (size_t i = 0; i < l.n; i++)
        if (h5io_check(f, path, l.v[i].dset, true, l.v[i].ndim, l.v[i].dims, err)) goto fail;
    if (t.has_router_bias) {
        uint64_t dims[2] = {(uint64_t)m->s.L, (uint64_t)m->s.E};
        if (m->s.E == 0) {
            moe_errorf(err, "%s: dataset '%s' is present but the model is dense", path,
                       CKPT_ROUTER_BIAS);
            moe_hintf(err, "the file was not written by moetrain's checkpoint writer");
            goto fail;
        }
        if (h5io_check(f, path, CKPT_ROUTER_BIAS, true, 2, dims, err)) goto fail;
    }
    for (size_t i = 0; i < l.n; i++)
        if (h5io_read(f, path, l.v[i].dset, true, l.v[i].dst, err)) goto fail;
    if (t.has_router_bias) {
        if (h5io_read(f, path, CKPT_ROUTER_BIAS, true, m->router_bias, err)) goto fail;
        m->use_router_bias = true;
    } else if (m->router_bias) {
        memset(m->router_bias, 0, sizeof(float) * (size_t)m->s.L * (size_t)m->s.E);
    }
    moe_free(l.v);
    h5io_close(f, path, NULL);
    if (meta) *meta = t;
    return 0;
fail:
    moe_free(l.v);
    h5io_close(f, path, NULL);
    return -1;
}

int ckpt_load(const char *path, Model *m, CkptMeta *meta, bool load_optimizer, MoeErr *err) {
    return load_sel(path, m, meta, load_optimizer, false, err);
}

int ckpt_load_base(const char *path, Model *m, MoeErr *err) {
    return load_sel(path, m, NULL, false, true, err);
}

int ckpt_file_checksum(const char *path, uint64_t *sum, MoeErr *err) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        moe_errorf(err, "%s: cannot open: %s", path, strerror(errno));
        return moe_hintf(err, "check the path and its permissions");
    }
    enum { CHUNK = 1 << 20 };
    uint8_t *buf = moe_malloc(CHUNK);
    uint64_t h = 1469598103934665603ULL, len = 0;
    size_t got;
    while ((got = fread(buf, 1, CHUNK, fp)) > 0) {
        len += got;
        for (size_t i = 0; i < got; i += 8) {
            uint64_t w = 0;
            for (size_t k = 0; k < 8 && i + k < got; k++) w |= (uint64_t)buf[i + k] << (8 * k);
            h = moe_hash64(h ^ w);
        }
        /* a chunk ends on a word boundary (CHUNK % 8 == 0) unless it is the last one */
    }
    int bad = ferror(fp);
    fclose(fp);
    moe_free(buf);
    if (bad) {
        moe_errorf(err, "%s: read failed", path);
        return moe_hintf(err, "check the file and the disk");
    }
    *sum = moe_hash64(h ^ len);
    return 0;
}

/* ---- inspection ---- */

typedef struct InspectCtx {
    int64_t f;
    const char *path;
    CkptInfo *info;
    MoeErr *err;
} InspectCtx;

static int inspect_one(const char *dset, void *ctx) {
    InspectCtx *x = ctx;
    int nd = 0;
    uint64_t dims[4];
    bool fl = false;
    if (h5io_shape(x->f, x->path, dset, &nd, dims, &fl, x->err)) return -1;
    size_t n = 1;
    for (int d = 0; d < nd; d++) n *= (size_t)dims[d];
    void *buf = moe_malloc(n * (fl ? sizeof(float) : 1) + 1);
    int rc = h5io_read(x->f, x->path, dset, fl, buf, x->err);
    moe_free(buf);
    if (rc) return -1;
    CkptInfo *in = x->info;
    in->n_datasets++;
    if (strncmp(dset, "params/", 7) == 0) {
        in->n_params += n;
        if (strstr(dset, ".experts.")) in->n_params_expert += n;
        else in->n_params_dense += n;
    } else if (strncmp(dset, "optim/", 6) == 0) {
        in->n_optim += n;
    } else if (strcmp(dset, "tokenizer") == 0) {
        in->tokenizer_bytes = n;
    }
    return 0;
}

int ckpt_inspect(const char *path, CkptInfo *info, MoeErr *err) {
    memset(info, 0, sizeof *info);
    Opened o;
    if (open_checked(path, &o, err)) return -1;
    uint8_t *text = NULL;
    InspectCtx x = {.f = o.file, .path = path, .info = info, .err = err};
    info->meta = o.meta;
    if (read_bytes(o.file, path, "config", CKPT_MAX_CONFIG_BYTES, &text, &info->config_len,
                   err) ||
        h5io_each_dataset(o.file, path, inspect_one, &x, err)) {
        moe_free(text);
        h5io_close(o.file, path, NULL);
        return -1;
    }
    info->format_version = (int)o.version;
    info->sealed = o.sealed;
    info->n_experts = (int)o.n_experts;
    info->has_optimizer = o.meta.has_optimizer;
    info->config_text = (char *)text;
    h5io_close(o.file, path, NULL);
    return 0;
}

int ckpt_verify(const char *path, CkptMeta *meta, MoeErr *err) {
    Opened o;
    if (open_checked(path, &o, err)) return -1;
    int rc = 0;
    if (!o.sealed) {
        /* no digest: read every dataset, so that at least each Fletcher32 checksum is
         * checked (the best a version 1 file allows) */
        CkptInfo scratch;
        memset(&scratch, 0, sizeof scratch);
        InspectCtx x = {.f = o.file, .path = path, .info = &scratch, .err = err};
        rc = h5io_each_dataset(o.file, path, inspect_one, &x, err);
    }
    h5io_close(o.file, path, NULL);
    if (!rc && meta) *meta = o.meta;
    return rc;
}

int ckpt_seal(const char *path, MoeErr *err) { return seal_write(path, err); }

void ckpt_info_free(CkptInfo *info) {
    moe_free(info->config_text);
    memset(info, 0, sizeof *info);
}
