/* safetensors.c: safetensors writer and strict reader. See safetensors.h. */
#include "checkpoints/safetensors.h"

#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/fs.h"
#include "data/tokenizer.h"
#include "core/json.h"

/* A header larger than this is not something we wrote or can sensibly hold (the reference
 * implementation refuses 100 MB too). */
#define ST_MAX_HEADER ((size_t)100 << 20)

const char *st_dtype_name(StDtype d) {
    switch (d) {
    case ST_F32: return "F32";
    case ST_F16: return "F16";
    case ST_BF16: return "BF16";
    }
    return "?";
}

size_t st_dtype_size(StDtype d) { return d == ST_F32 ? 4 : 2; }

int st_dtype_parse(const char *s, StDtype *d) {
    if (!strcasecmp(s, "f32")) *d = ST_F32;
    else if (!strcasecmp(s, "f16")) *d = ST_F16;
    else if (!strcasecmp(s, "bf16")) *d = ST_BF16;
    else return -1;
    return 0;
}

/* ---- half-precision conversions ---- */

static uint32_t f32_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static float bits_f32(uint32_t u) {
    float x;
    memcpy(&x, &u, 4);
    return x;
}

uint16_t st_f32_to_bf16(float x) {
    uint32_t u = f32_bits(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);   /* quiet NaN */
    /* Round to nearest even on the 16 dropped bits. */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float st_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t st_f32_to_f16(float x) {
    uint32_t u = f32_bits(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);             /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);            /* rounds to >= 65520: inf */
    if (a < 0x38800000u) {
        /* Subnormal half (|x| < 2^-14) or zero: value = m * 2^-24 with m rounded to even. */
        if (a < 0x33000000u) return sign;                              /* < 2^-25: rounds to 0 */
        int e = (int)(a >> 23);                                        /* biased exponent */
        uint32_t mant = (a & 0x7fffffu) | 0x800000u;
        int shift = 126 - e;                                           /* 14..24 */
        uint32_t q = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    /* Normal: rebias exponent (127 -> 15) and round the 13 dropped mantissa bits to even. */
    uint32_t r = a - 0x38000000u;
    r += 0xfffu + ((r >> 13) & 1u);
    return (uint16_t)(sign | (r >> 13));
}

float st_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return bits_f32(sign | 0x7f800000u | (m << 13));
    if (e == 0) {
        float v = ldexpf((float)m, -24);
        return sign ? -v : v;
    }
    return bits_f32(sign | ((e + 112) << 23) | (m << 13));
}

/* ---- writing ---- */

static size_t tensor_elems(const StTensorIn *t) {
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    return n;
}

size_t st_tensor_bytes(const StTensorIn *t, StDtype d) { return tensor_elems(t) * st_dtype_size(d); }

/* Growable text buffer for the JSON header. */
typedef struct StBuf {
    char *p;
    size_t n, cap;
} StBuf;

static void sb_put(StBuf *b, const char *s, size_t len) {
    if (b->n + len + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 1024;
        while (nc < b->n + len + 1) nc *= 2;
        b->p = moe_realloc(b->p, b->cap, nc);
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = 0;
}

static void sb_printf(StBuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(StBuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    ASSERT(k >= 0 && (size_t)k < sizeof tmp, "sb_printf: %d bytes", k);
    sb_put(b, tmp, (size_t)k);
}

/* JSON string literal (our names and metadata are ASCII, but escape properly anyway). */
static void sb_json_str(StBuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            sb_put(b, e, 2);
        } else if (c < 0x20) {
            sb_printf(b, "\\u%04x", c);
        } else {
            sb_put(b, (const char *)&c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static int write_all(FILE *fp, const void *p, size_t n, const char *path, MoeErr *err) {
    if (n && fwrite(p, 1, n, fp) != n) {
        moe_errorf(err, "%s: write failed: %s", path, strerror(errno));
        return moe_hintf(err, "check free disk space and permissions");
    }
    return 0;
}

/* Convert and write one tensor in blocks (bounded scratch). */
static int write_tensor_data(FILE *fp, const StTensorIn *t, StDtype d, const char *path,
                             MoeErr *err) {
    size_t n = tensor_elems(t);
    if (d == ST_F32) return write_all(fp, t->data, n * 4, path, err);
    enum { BLK = 4096 };
    uint16_t buf[BLK];
    for (size_t i = 0; i < n; i += BLK) {
        size_t m = n - i < BLK ? n - i : BLK;
        for (size_t j = 0; j < m; j++)
            buf[j] = d == ST_F16 ? st_f32_to_f16(t->data[i + j]) : st_f32_to_bf16(t->data[i + j]);
        if (write_all(fp, buf, m * 2, path, err)) return -1;
    }
    return 0;
}

int st_write_file(const char *path, const StTensorIn *tensors, size_t n, StDtype d,
                  const char *const *metadata, MoeErr *err) {
    StBuf h = {0};
    sb_put(&h, "{", 1);
    bool first = true;
    if (metadata && metadata[0]) {
        sb_put(&h, "\"__metadata__\":{", 16);
        for (size_t i = 0; metadata[i]; i += 2) {
            if (i) sb_put(&h, ",", 1);
            sb_json_str(&h, metadata[i]);
            sb_put(&h, ":", 1);
            sb_json_str(&h, metadata[i + 1]);
        }
        sb_put(&h, "}", 1);
        first = false;
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const StTensorIn *t = &tensors[i];
        ASSERT(t->ndim >= 1 && t->ndim <= ST_MAX_DIMS, "st_write_file: %s ndim %d", t->name,
               t->ndim);
        if (!first) sb_put(&h, ",", 1);
        first = false;
        sb_json_str(&h, t->name);
        sb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(d));
        for (int k = 0; k < t->ndim; k++) sb_printf(&h, "%s%lld", k ? "," : "", (long long)t->shape[k]);
        size_t nb = st_tensor_bytes(t, d);
        sb_printf(&h, "],\"data_offsets\":[%zu,%zu]}", off, off + nb);
        off += nb;
    }
    sb_put(&h, "}", 1);
    /* Pad with spaces so the data section starts 8-byte aligned (allowed by the format). */
    while ((8 + h.n) % 8) sb_put(&h, " ", 1);

    FsAtomicFile af;
    if (fs_atomic_open(&af, path, err)) {
        moe_free(h.p);
        return -1;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)h.n >> (8 * i));
    int rc = write_all(af.fp, len8, 8, path, err);
    if (!rc) rc = write_all(af.fp, h.p, h.n, path, err);
    for (size_t i = 0; i < n && !rc; i++) rc = write_tensor_data(af.fp, &tensors[i], d, path, err);
    moe_free(h.p);
    if (rc) {
        fs_atomic_abort(&af);
        return -1;
    }
    return fs_atomic_commit(&af, err);
}

int st_write_model(const char *dir, const StTensorIn *tensors, size_t n, StDtype d,
                   size_t max_shard_bytes, const char *const *metadata, int *n_shards,
                   MoeErr *err) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += st_tensor_bytes(&tensors[i], d);
    char path[4096];
    if (max_shard_bytes == 0 || total <= max_shard_bytes) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        *n_shards = 1;
        return st_write_file(path, tensors, n, d, metadata, err);
    }
    /* Greedy split in tensor order: shard s = tensors [start[s], start[s+1]). */
    size_t *start = moe_malloc(sizeof(size_t) * (n + 1));
    int ns = 0;
    size_t cur = 0;
    for (size_t i = 0; i < n; i++) {
        size_t b = st_tensor_bytes(&tensors[i], d);
        if (i == 0 || (cur > 0 && cur + b > max_shard_bytes)) {
            start[ns++] = i;
            cur = 0;
        }
        cur += b;
    }
    start[ns] = n;
    int rc = 0;
    StBuf idx = {0};
    sb_printf(&idx, "{\n  \"metadata\": {\"total_size\": %zu},\n  \"weight_map\": {\n", total);
    for (int s = 0; s < ns && !rc; s++) {
        char fname[64];
        snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", s + 1, ns);
        snprintf(path, sizeof path, "%s/%s", dir, fname);
        rc = st_write_file(path, tensors + start[s], start[s + 1] - start[s], d, metadata, err);
        for (size_t i = start[s]; i < start[s + 1]; i++) {
            sb_put(&idx, "    ", 4);
            sb_json_str(&idx, tensors[i].name);
            sb_put(&idx, ": ", 2);
            sb_json_str(&idx, fname);
            sb_put(&idx, i + 1 < n ? ",\n" : "\n", i + 1 < n ? 2 : 1);
        }
    }
    sb_put(&idx, "  }\n}\n", 6);
    if (!rc) {
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        FsAtomicFile af;
        rc = fs_atomic_open(&af, path, err);
        if (!rc) {
            if (write_all(af.fp, idx.p, idx.n, path, err)) {
                fs_atomic_abort(&af);
                rc = -1;
            } else {
                rc = fs_atomic_commit(&af, err);
            }
        }
    }
    moe_free(idx.p);
    moe_free(start);
    *n_shards = ns;
    return rc;
}

/* ---- reading ---- */

void st_close(StFile *f) {
    if (!f) return;
    for (size_t i = 0; i < f->n; i++) moe_free(f->e[i].name);
    moe_free(f->e);
    moe_free(f->buf);
    moe_free(f->path);
    memset(f, 0, sizeof *f);
}

/* A JSON number that is an exact non-negative integer below 2^53. */
static bool json_uint(const JsonValue *v, size_t *out) {
    if (!v || v->type != JSON_NUM || !(v->num >= 0) || v->num > 9007199254740992.0 ||
        v->num != floor(v->num))
        return false;
    *out = (size_t)v->num;
    return true;
}

static int cmp_begin(const void *a, const void *b) {
    const StEntry *x = *(const StEntry *const *)a, *y = *(const StEntry *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

static int corrupt(MoeErr *err, const char *path) {
    (void)path;
    return moe_hintf(err, "the file is truncated or corrupt: export it again "
                          "(moetrain export CKPT OUTDIR --format hf)");
}

int st_open(StFile *f, const char *path, MoeErr *err) {
    memset(f, 0, sizeof *f);
    f->path = moe_strdup(path);
    if (fs_read_file(path, &f->buf, &f->size, err)) return -1;
    if (f->size < 8) {
        moe_errorf(err, "%s: %zu bytes is too short for a safetensors file (8-byte header "
                        "length missing)", path, f->size);
        return corrupt(err, path);
    }
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++) hl |= (uint64_t)f->buf[i] << (8 * i);
    if (hl > ST_MAX_HEADER || hl > f->size - 8) {
        moe_errorf(err, "%s: header length %llu exceeds the file (%zu bytes) or the 100 MB limit",
                   path, (unsigned long long)hl, f->size);
        return corrupt(err, path);
    }
    if (hl < 2 || f->buf[8] != '{') {
        moe_errorf(err, "%s: the header does not start with '{' (not a safetensors file)", path);
        return corrupt(err, path);
    }
    f->data_off = 8 + (size_t)hl;
    size_t data_size = f->size - f->data_off;
    JsonValue root;
    if (json_parse(&root, (const char *)f->buf + 8, (size_t)hl, path, 1, err)) {
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err->msg);
        moe_errorf(err, "%s: invalid JSON header: %s", path, msg);
        return corrupt(err, path);
    }
    int rc = -1;
    if (root.type != JSON_OBJ) {
        moe_errorf(err, "%s: the header is not a JSON object", path);
        corrupt(err, path);
        goto done;
    }
    f->e = moe_calloc(sizeof(StEntry) * (root.n ? root.n : 1));
    for (size_t i = 0; i < root.n; i++) {
        const char *name = root.keys[i];
        const JsonValue *v = &root.items[i];
        if (!strcmp(name, "__metadata__")) {
            if (v->type != JSON_OBJ) {
                moe_errorf(err, "%s: __metadata__ is not an object", path);
                corrupt(err, path);
                goto done;
            }
            continue;
        }
        StEntry *e = &f->e[f->n];
        const JsonValue *dt = json_get(v, "dtype"), *sh = json_get(v, "shape"),
                        *of = json_get(v, "data_offsets");
        if (v->type != JSON_OBJ || !dt || dt->type != JSON_STR || !sh || sh->type != JSON_ARR ||
            !of || of->type != JSON_ARR || of->n != 2) {
            moe_errorf(err, "%s: tensor '%s': needs \"dtype\" (string), \"shape\" (array) and "
                            "\"data_offsets\" ([begin, end])", path, name);
            corrupt(err, path);
            goto done;
        }
        if (!strcmp(dt->str, "F32")) e->dtype = ST_F32;
        else if (!strcmp(dt->str, "F16")) e->dtype = ST_F16;
        else if (!strcmp(dt->str, "BF16")) e->dtype = ST_BF16;
        else {
            moe_errorf(err, "%s: tensor '%s': dtype %s is not supported", path, name, dt->str);
            moe_hintf(err, "moetrain reads F32, F16 and BF16 tensors");
            goto done;
        }
        if (sh->n > ST_MAX_DIMS) {
            moe_errorf(err, "%s: tensor '%s': %zu dimensions (at most %d supported)", path, name,
                       sh->n, ST_MAX_DIMS);
            corrupt(err, path);
            goto done;
        }
        e->ndim = (int)sh->n;
        e->n = 1;
        for (size_t k = 0; k < sh->n; k++) {
            size_t d;
            if (!json_uint(&sh->items[k], &d) || d > ((size_t)1 << 40)) {
                moe_errorf(err, "%s: tensor '%s': shape[%zu] is not a non-negative integer",
                           path, name, k);
                corrupt(err, path);
                goto done;
            }
            e->shape[k] = (int64_t)d;
            if (d && e->n > ((size_t)1 << 50) / d) {
                moe_errorf(err, "%s: tensor '%s': shape too large", path, name);
                corrupt(err, path);
                goto done;
            }
            e->n *= d;
        }
        if (!json_uint(&of->items[0], &e->begin) || !json_uint(&of->items[1], &e->end) ||
            e->begin > e->end || e->end > data_size) {
            moe_errorf(err, "%s: tensor '%s': data_offsets [%g, %g] outside the %zu-byte data "
                            "section", path, name, of->items[0].num, of->items[1].num, data_size);
            corrupt(err, path);
            goto done;
        }
        if (e->end - e->begin != e->n * st_dtype_size(e->dtype)) {
            moe_errorf(err, "%s: tensor '%s': data_offsets span %zu bytes but shape x dtype "
                            "needs %zu", path, name, e->end - e->begin,
                       e->n * st_dtype_size(e->dtype));
            corrupt(err, path);
            goto done;
        }
        e->name = moe_strdup(name);
        f->n++;
    }
    /* The data section must be tiled exactly: sorted by begin, each starts where the
     * previous ended, the last ends at the end of the file. */
    {
        StEntry **ord = moe_malloc(sizeof(StEntry *) * (f->n ? f->n : 1));
        for (size_t i = 0; i < f->n; i++) ord[i] = &f->e[i];
        qsort(ord, f->n, sizeof *ord, cmp_begin);
        size_t at = 0;
        bool ok = true;
        const char *bad = NULL;
        for (size_t i = 0; i < f->n && ok; i++) {
            if (ord[i]->begin != at) {
                ok = false;
                bad = ord[i]->name;
            }
            at = ord[i]->end;
        }
        if (ok && at != data_size) {
            ok = false;
            bad = "(end of data)";
        }
        moe_free(ord);
        if (!ok) {
            moe_errorf(err, "%s: tensor data has a hole or an overlap at '%s' (the tensors "
                            "must tile the %zu-byte data section exactly)", path, bad, data_size);
            corrupt(err, path);
            goto done;
        }
    }
    for (size_t i = 0; i < f->n; i++) f->e[i].file = 0;
    rc = 0;
done:
    json_free(&root);
    return rc;
}

void st_entry_to_f32(const StFile *f, const StEntry *e, float *out) {
    const uint8_t *p = f->buf + f->data_off + e->begin;
    if (e->dtype == ST_F32) {
        memcpy(out, p, e->n * 4);
        return;
    }
    for (size_t i = 0; i < e->n; i++) {
        uint16_t h = (uint16_t)(p[2 * i] | (p[2 * i + 1] << 8));
        out[i] = e->dtype == ST_F16 ? st_f16_to_f32(h) : st_bf16_to_f32(h);
    }
}

void st_model_close(StModel *m) {
    if (!m) return;
    for (int i = 0; i < m->n_files; i++) st_close(&m->files[i]);
    moe_free(m->files);
    memset(m, 0, sizeof *m);
}

int st_model_open(StModel *m, const char *dir, MoeErr *err) {
    memset(m, 0, sizeof *m);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    FILE *probe = fopen(path, "rb");
    if (!probe) {
        m->files = moe_calloc(sizeof(StFile));
        m->n_files = 1;
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        return st_open(&m->files[0], path, err);
    }
    fclose(probe);
    uint8_t *buf = NULL;
    size_t n = 0;
    if (fs_read_file(path, &buf, &n, err)) return -1;
    JsonValue root;
    if (json_parse(&root, (const char *)buf, n, path, 1, err)) {
        moe_free(buf);
        return -1;
    }
    moe_free(buf);
    int rc = -1;
    const JsonValue *wm = json_get(&root, "weight_map");
    if (!wm || wm->type != JSON_OBJ || wm->n == 0) {
        moe_errorf(err, "%s: no \"weight_map\" object", path);
        moe_hintf(err, "the index is corrupt: export the model again");
        goto done;
    }
    /* Distinct shard files in order of first mention. */
    m->files = moe_calloc(sizeof(StFile) * wm->n);
    char **names = moe_calloc(sizeof(char *) * wm->n);
    int nn = 0;
    for (size_t i = 0; i < wm->n; i++) {
        const JsonValue *v = &wm->items[i];
        if (v->type != JSON_STR || strchr(v->str, '/') || !v->str[0]) {
            moe_errorf(err, "%s: weight_map['%s'] is not a plain file name", path, wm->keys[i]);
            moe_hintf(err, "the index is corrupt: export the model again");
            goto names_done;
        }
        int k = 0;
        while (k < nn && strcmp(names[k], v->str)) k++;
        if (k == nn) {
            names[nn++] = v->str;
            char sp[4096];
            snprintf(sp, sizeof sp, "%s/%s", dir, v->str);
            m->n_files = nn;
            if (st_open(&m->files[k], sp, err)) goto names_done;
        }
        /* The tensor must be in the shard the index names. */
        const StFile *sf = &m->files[k];
        size_t j = 0;
        while (j < sf->n && strcmp(sf->e[j].name, wm->keys[i])) j++;
        if (j == sf->n) {
            moe_errorf(err, "%s: tensor '%s' is listed in shard %s but not found there", path,
                       wm->keys[i], v->str);
            moe_hintf(err, "the index and the shards do not match: export the model again");
            goto names_done;
        }
    }
    for (int k = 0; k < nn; k++)
        for (size_t j = 0; j < m->files[k].n; j++) m->files[k].e[j].file = k;
    rc = 0;
names_done:
    moe_free(names);
done:
    json_free(&root);
    return rc;
}

const StEntry *st_model_find(const StModel *m, const char *name, const StFile **file) {
    for (int k = 0; k < m->n_files; k++)
        for (size_t j = 0; j < m->files[k].n; j++)
            if (!strcmp(m->files[k].e[j].name, name)) {
                if (file) *file = &m->files[k];
                return &m->files[k].e[j];
            }
    return NULL;
}
