/* gguf.c: GGUF v3 writer and strict reader. See gguf.h. */
#include "checkpoints/gguf.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoints/safetensors.h"
#include "core/fs.h"
#include "data/tokenizer.h"

#define QK8_0 32
#define Q8_0_BLOCK 34   /* f16 scale + 32 int8 */

size_t gguf_type_bytes(GgmlType t, size_t n) {
    switch (t) {
    case GGML_F32: return 4 * n;
    case GGML_F16: return 2 * n;
    case GGML_Q8_0: return n / QK8_0 * Q8_0_BLOCK;
    }
    return 0;
}

void gguf_quantize_q8_0(const float *x, size_t n, uint8_t *out) {
    ASSERT(n % QK8_0 == 0, "q8_0: %zu values is not a multiple of 32", n);
    for (size_t b = 0; b < n / QK8_0; b++) {
        const float *xb = x + b * QK8_0;
        uint8_t *o = out + b * Q8_0_BLOCK;
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++) amax = fmaxf(amax, fabsf(xb[j]));
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t h = st_f32_to_f16(d);
        o[0] = (uint8_t)(h & 0xff);
        o[1] = (uint8_t)(h >> 8);
        for (int j = 0; j < QK8_0; j++) o[2 + j] = (uint8_t)(int8_t)lrintf(roundf(xb[j] * id));
    }
}

void gguf_dequantize_q8_0(const uint8_t *in, size_t n, float *x) {
    ASSERT(n % QK8_0 == 0, "q8_0: %zu values is not a multiple of 32", n);
    for (size_t b = 0; b < n / QK8_0; b++) {
        const uint8_t *p = in + b * Q8_0_BLOCK;
        float d = st_f16_to_f32((uint16_t)(p[0] | (p[1] << 8)));
        for (int j = 0; j < QK8_0; j++) x[b * QK8_0 + j] = d * (float)(int8_t)p[2 + j];
    }
}

/* ---- writer ---- */

static void kv_put(GgufWriter *w, const void *p, size_t n) {
    if (w->kv_n + n > w->kv_cap) {
        size_t nc = w->kv_cap ? w->kv_cap : 4096;
        while (nc < w->kv_n + n) nc *= 2;
        w->kv = moe_realloc(w->kv, w->kv_cap, nc);
        w->kv_cap = nc;
    }
    memcpy(w->kv + w->kv_n, p, n);
    w->kv_n += n;
}

static void kv_u32(GgufWriter *w, uint32_t v) {
    uint8_t b[4];
    for (int i = 0; i < 4; i++) b[i] = (uint8_t)(v >> (8 * i));
    kv_put(w, b, 4);
}

static void kv_u64(GgufWriter *w, uint64_t v) {
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
    kv_put(w, b, 8);
}

static void kv_string(GgufWriter *w, const char *s) {
    size_t n = strlen(s);
    kv_u64(w, n);
    kv_put(w, s, n);
}

static void kv_key(GgufWriter *w, const char *key, GgufType type) {
    kv_string(w, key);
    kv_u32(w, (uint32_t)type);
    w->n_kv++;
}

void gguf_w_init(GgufWriter *w, size_t alignment) {
    memset(w, 0, sizeof *w);
    w->alignment = alignment ? alignment : GGUF_DEFAULT_ALIGNMENT;
}

void gguf_w_free(GgufWriter *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_t; i++) {
        moe_free(w->t[i].name);
        moe_free(w->t[i].data);
    }
    moe_free(w->t);
    moe_free(w->kv);
    memset(w, 0, sizeof *w);
}

void gguf_w_u32(GgufWriter *w, const char *key, uint32_t v) {
    kv_key(w, key, GGUF_T_UINT32);
    kv_u32(w, v);
}

void gguf_w_i32(GgufWriter *w, const char *key, int32_t v) {
    kv_key(w, key, GGUF_T_INT32);
    kv_u32(w, (uint32_t)v);
}

void gguf_w_f32(GgufWriter *w, const char *key, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    kv_key(w, key, GGUF_T_FLOAT32);
    kv_u32(w, u);
}

void gguf_w_bool(GgufWriter *w, const char *key, bool v) {
    uint8_t b = v ? 1 : 0;
    kv_key(w, key, GGUF_T_BOOL);
    kv_put(w, &b, 1);
}

void gguf_w_str(GgufWriter *w, const char *key, const char *v) {
    kv_key(w, key, GGUF_T_STRING);
    kv_string(w, v);
}

void gguf_w_arr_str(GgufWriter *w, const char *key, const char *const *strs, size_t n) {
    kv_key(w, key, GGUF_T_ARRAY);
    kv_u32(w, GGUF_T_STRING);
    kv_u64(w, n);
    for (size_t i = 0; i < n; i++) kv_string(w, strs[i]);
}

void gguf_w_arr_i32(GgufWriter *w, const char *key, const int32_t *vals, size_t n) {
    kv_key(w, key, GGUF_T_ARRAY);
    kv_u32(w, GGUF_T_INT32);
    kv_u64(w, n);
    for (size_t i = 0; i < n; i++) kv_u32(w, (uint32_t)vals[i]);
}

void gguf_w_tensor(GgufWriter *w, const char *name, int ndim, const uint64_t *ne, GgmlType type,
                   const float *data) {
    ASSERT(ndim >= 1 && ndim <= GGUF_MAX_DIMS, "gguf tensor %s: ndim %d", name, ndim);
    ASSERT(type != GGML_Q8_0 || ne[0] % QK8_0 == 0, "gguf tensor %s: q8_0 needs ne[0] %% 32 == 0",
           name);
    if (w->n_t == w->t_cap) {
        size_t nc = w->t_cap ? 2 * w->t_cap : 64;
        w->t = moe_realloc(w->t, sizeof(GgufWTensor) * w->t_cap, sizeof(GgufWTensor) * nc);
        w->t_cap = nc;
    }
    GgufWTensor *t = &w->t[w->n_t++];
    memset(t, 0, sizeof *t);
    t->name = moe_strdup(name);
    t->ndim = ndim;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        t->ne[i] = ne[i];
        n *= (size_t)ne[i];
    }
    t->type = type;
    t->nbytes = gguf_type_bytes(type, n);
    t->data = moe_malloc(t->nbytes ? t->nbytes : 1);
    if (type == GGML_F32) {
        memcpy(t->data, data, n * 4);
    } else if (type == GGML_F16) {
        for (size_t i = 0; i < n; i++) {
            uint16_t h = st_f32_to_f16(data[i]);
            t->data[2 * i] = (uint8_t)(h & 0xff);
            t->data[2 * i + 1] = (uint8_t)(h >> 8);
        }
    } else {
        gguf_quantize_q8_0(data, n, t->data);
    }
}

static size_t pad_to(size_t x, size_t a) { return (x + a - 1) / a * a; }

static int fwrite_chk(FILE *fp, const void *p, size_t n, const char *path, MoeErr *err) {
    if (n && fwrite(p, 1, n, fp) != n) {
        moe_errorf(err, "%s: write failed: %s", path, strerror(errno));
        return moe_hintf(err, "check free disk space and permissions");
    }
    return 0;
}

int gguf_w_save(const GgufWriter *w, const char *path, MoeErr *err) {
    /* Header + kv + tensor infos go into one buffer (a scratch writer reuses kv_put). */
    GgufWriter h;
    gguf_w_init(&h, w->alignment);
    kv_put(&h, "GGUF", 4);
    kv_u32(&h, GGUF_VERSION);
    kv_u64(&h, w->n_t);
    kv_u64(&h, w->n_kv);
    kv_put(&h, w->kv, w->kv_n);
    size_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const GgufWTensor *t = &w->t[i];
        kv_string(&h, t->name);
        kv_u32(&h, (uint32_t)t->ndim);
        for (int k = 0; k < t->ndim; k++) kv_u64(&h, t->ne[k]);
        kv_u32(&h, (uint32_t)t->type);
        kv_u64(&h, off);
        off = pad_to(off + t->nbytes, w->alignment);
    }
    static const uint8_t zeros[64] = {0};
    size_t hpad = pad_to(h.kv_n, w->alignment) - h.kv_n;
    ASSERT(w->alignment <= sizeof zeros, "alignment %zu", w->alignment);
    FsAtomicFile af;
    if (fs_atomic_open(&af, path, err)) {
        gguf_w_free(&h);
        return -1;
    }
    int rc = fwrite_chk(af.fp, h.kv, h.kv_n, path, err);
    if (!rc) rc = fwrite_chk(af.fp, zeros, hpad, path, err);
    for (size_t i = 0; i < w->n_t && !rc; i++) {
        rc = fwrite_chk(af.fp, w->t[i].data, w->t[i].nbytes, path, err);
        size_t p = pad_to(w->t[i].nbytes, w->alignment) - w->t[i].nbytes;
        if (!rc) rc = fwrite_chk(af.fp, zeros, p, path, err);
    }
    gguf_w_free(&h);
    if (rc) {
        fs_atomic_abort(&af);
        return -1;
    }
    return fs_atomic_commit(&af, err);
}

/* ---- reader ---- */

typedef struct Cur {
    const GgufFile *f;
    size_t pos;
    MoeErr *err;
} Cur;

static int trunc_err(Cur *c, size_t need, const char *what) {
    moe_errorf(c->err, "%s: truncated at byte %zu: %s needs %zu bytes but the file has %zu",
               c->f->path, c->pos, what, need, c->f->size - c->pos);
    return moe_hintf(c->err, "the file is incomplete or corrupt: export it again");
}

static int rd(Cur *c, void *out, size_t n, const char *what) {
    if (n > c->f->size - c->pos) return trunc_err(c, n, what);
    memcpy(out, c->f->buf + c->pos, n);
    c->pos += n;
    return 0;
}

static int rd_u32(Cur *c, uint32_t *v, const char *what) {
    uint8_t b[4] = {0};
    if (rd(c, b, 4, what)) return -1;
    *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return 0;
}

static int rd_u64(Cur *c, uint64_t *v, const char *what) {
    uint8_t b[8] = {0};
    if (rd(c, b, 8, what)) return -1;
    *v = 0;
    for (int i = 0; i < 8; i++) *v |= (uint64_t)b[i] << (8 * i);
    return 0;
}

/* A string: length-checked; returns its bytes' offset. */
static int rd_str(Cur *c, size_t *off, size_t *len, const char *what) {
    uint64_t n;
    if (rd_u64(c, &n, what)) return -1;
    if (n > c->f->size - c->pos) return trunc_err(c, (size_t)n, what);
    *off = c->pos;
    *len = (size_t)n;
    c->pos += (size_t)n;
    return 0;
}

static size_t scalar_size(GgufType t) {
    switch (t) {
    case GGUF_T_UINT8: case GGUF_T_INT8: case GGUF_T_BOOL: return 1;
    case GGUF_T_UINT16: case GGUF_T_INT16: return 2;
    case GGUF_T_UINT32: case GGUF_T_INT32: case GGUF_T_FLOAT32: return 4;
    case GGUF_T_UINT64: case GGUF_T_INT64: case GGUF_T_FLOAT64: return 8;
    default: return 0;
    }
}

void gguf_close(GgufFile *f) {
    if (!f) return;
    for (size_t i = 0; i < f->n_kv; i++) {
        moe_free(f->kv[i].key);
        moe_free(f->kv[i].str_off);
    }
    for (size_t i = 0; i < f->n_t; i++) moe_free(f->t[i].name);
    moe_free(f->kv);
    moe_free(f->t);
    moe_free(f->buf);
    moe_free(f->path);
    memset(f, 0, sizeof *f);
}

static char *dup_n(const uint8_t *p, size_t n) {
    char *s = moe_malloc(n + 1);
    memcpy(s, p, n);
    s[n] = 0;
    return s;
}

static int cmp_off(const void *a, const void *b) {
    const GgufTensorInfo *x = *(const GgufTensorInfo *const *)a, *y = *(const GgufTensorInfo *const *)b;
    return (x->off > y->off) - (x->off < y->off);
}

int gguf_open(GgufFile *f, const char *path, MoeErr *err) {
    memset(f, 0, sizeof *f);
    f->path = moe_strdup(path);
    if (fs_read_file(path, &f->buf, &f->size, err)) return -1;
    Cur c = {f, 0, err};
    uint8_t magic[4];
    if (rd(&c, magic, 4, "magic")) return -1;
    if (memcmp(magic, "GGUF", 4)) {
        moe_errorf(err, "%s: not a GGUF file (magic bytes are not \"GGUF\")", path);
        return moe_hintf(err, "give a .gguf file written by `moetrain export --format gguf`");
    }
    uint64_t nt, nkv;
    if (rd_u32(&c, &f->version, "version") || rd_u64(&c, &nt, "tensor_count") ||
        rd_u64(&c, &nkv, "kv_count"))
        return -1;
    if (f->version != GGUF_VERSION) {
        moe_errorf(err, "%s: GGUF version %u is not supported (only version 3)", path, f->version);
        return moe_hintf(err, "re-export the model with moetrain");
    }
    /* Each kv needs at least 12 bytes and each tensor info at least 24: bound the counts by
     * the file size before allocating. */
    if (nkv > f->size / 12 || nt > f->size / 24) {
        moe_errorf(err, "%s: truncated or corrupt: %llu keys and %llu tensors cannot fit in %zu bytes",
                   path, (unsigned long long)nkv, (unsigned long long)nt, f->size);
        return moe_hintf(err, "the file is corrupt: export it again");
    }
    f->kv = moe_calloc(sizeof(GgufKv) * (nkv ? nkv : 1));
    f->t = moe_calloc(sizeof(GgufTensorInfo) * (nt ? nt : 1));
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    for (uint64_t i = 0; i < nkv; i++) {
        size_t ko, kl;
        uint32_t ty;
        if (rd_str(&c, &ko, &kl, "key")) return -1;
        GgufKv *kv = &f->kv[f->n_kv++];
        kv->key = dup_n(f->buf + ko, kl);
        /* keys are unique (lookups are by name): a repeated key is a corrupt file */
        for (size_t j = 0; j + 1 < f->n_kv; j++) {
            if (strcmp(f->kv[j].key, kv->key) == 0) {
                moe_errorf(err, "%s: key '%s' appears twice (byte %zu)", path, kv->key, ko);
                return moe_hintf(err, "the file is corrupt: export it again");
            }
        }
        if (rd_u32(&c, &ty, kv->key)) return -1;
        if (ty >= GGUF_T_COUNT) {
            moe_errorf(err, "%s: key '%s' has unknown value type %u (byte %zu)", path, kv->key, ty,
                       c.pos - 4);
            return moe_hintf(err, "the file is corrupt: export it again");
        }
        kv->type = (GgufType)ty;
        if (ty == GGUF_T_STRING) {
            size_t so, sl;
            kv->off = c.pos;
            if (rd_str(&c, &so, &sl, kv->key)) return -1;
        } else if (ty == GGUF_T_ARRAY) {
            uint32_t at;
            uint64_t an;
            if (rd_u32(&c, &at, kv->key) || rd_u64(&c, &an, kv->key)) return -1;
            if (at >= GGUF_T_COUNT || at == GGUF_T_ARRAY) {
                moe_errorf(err, "%s: array '%s' has unsupported element type %u", path, kv->key, at);
                return moe_hintf(err, "the file is corrupt: export it again");
            }
            kv->arr_type = (GgufType)at;
            kv->arr_n = an;
            kv->off = c.pos;
            if (at == GGUF_T_STRING) {
                if (an > (f->size - c.pos) / 8) return trunc_err(&c, (size_t)an * 8, kv->key);
                kv->str_off = moe_malloc(sizeof(size_t) * (an ? an : 1));
                for (uint64_t k = 0; k < an; k++) {
                    size_t so, sl;
                    kv->str_off[k] = c.pos;
                    if (rd_str(&c, &so, &sl, kv->key)) return -1;
                }
            } else {
                size_t es = scalar_size((GgufType)at);
                if (an > (f->size - c.pos) / es) return trunc_err(&c, (size_t)an * es, kv->key);
                c.pos += (size_t)an * es;
            }
        } else {
            kv->off = c.pos;
            size_t es = scalar_size((GgufType)ty);
            if (es > f->size - c.pos) return trunc_err(&c, es, kv->key);
            c.pos += es;
        }
    }
    int ai = gguf_find(f, "general.alignment");
    if (ai >= 0) {
        uint32_t a;
        if (gguf_get_u32(f, "general.alignment", &a, err)) return -1;
        if (a == 0 || (a & (a - 1)) || a > 4096) {
            moe_errorf(err, "%s: general.alignment %u is not a power of two <= 4096", path, a);
            return moe_hintf(err, "the file is corrupt: export it again");
        }
        f->alignment = a;
    }
    for (uint64_t i = 0; i < nt; i++) {
        size_t no, nl;
        if (rd_str(&c, &no, &nl, "tensor name")) return -1;
        GgufTensorInfo *t = &f->t[f->n_t++];
        t->name = dup_n(f->buf + no, nl);
        uint32_t nd, ty;
        if (rd_u32(&c, &nd, t->name)) return -1;
        if (nd < 1 || nd > GGUF_MAX_DIMS) {
            moe_errorf(err, "%s: tensor '%s' has %u dimensions (1..%d allowed)", path, t->name, nd,
                       GGUF_MAX_DIMS);
            return moe_hintf(err, "the file is corrupt: export it again");
        }
        t->ndim = (int)nd;
        t->n = 1;
        for (uint32_t k = 0; k < nd; k++) {
            if (rd_u64(&c, &t->ne[k], t->name)) return -1;
            if (t->ne[k] > ((uint64_t)1 << 40) || (t->ne[k] && t->n > ((size_t)1 << 50) / t->ne[k])) {
                moe_errorf(err, "%s: tensor '%s' has an impossible size ne[%u] = %llu", path,
                           t->name, k, (unsigned long long)t->ne[k]);
                return moe_hintf(err, "the file is corrupt: export it again");
            }
            t->n *= (size_t)t->ne[k];
        }
        uint64_t off;
        if (rd_u32(&c, &ty, t->name) || rd_u64(&c, &off, t->name)) return -1;
        if (ty != GGML_F32 && ty != GGML_F16 && ty != GGML_Q8_0) {
            moe_errorf(err, "%s: tensor '%s' has ggml type %u; only F32 (0), F16 (1) and Q8_0 (8) "
                            "are supported", path, t->name, ty);
            return moe_hintf(err, "export with --dtype f32, f16 or q8_0");
        }
        t->type = (GgmlType)ty;
        if (t->type == GGML_Q8_0 && t->ne[0] % QK8_0) {
            moe_errorf(err, "%s: tensor '%s': Q8_0 rows of %llu values are not whole blocks of 32",
                       path, t->name, (unsigned long long)t->ne[0]);
            return moe_hintf(err, "the file is corrupt: export it again");
        }
        if (off % f->alignment) {
            moe_errorf(err, "%s: tensor '%s': data offset %llu is not a multiple of the "
                            "alignment %zu", path, t->name, (unsigned long long)off, f->alignment);
            return moe_hintf(err, "the file is corrupt: export it again");
        }
        t->off = (size_t)off;   /* relative for now */
        t->nbytes = gguf_type_bytes(t->type, t->n);
    }
    f->data_off = pad_to(c.pos, f->alignment);
    if (f->data_off > f->size) {
        c.pos = f->size;
        return trunc_err(&c, f->data_off - f->size, "padding before the tensor data");
    }
    size_t data_size = f->size - f->data_off;
    for (size_t i = 0; i < f->n_t; i++) {
        GgufTensorInfo *t = &f->t[i];
        if (t->off > data_size || t->nbytes > data_size - t->off) {
            moe_errorf(err, "%s: tensor '%s': bytes [%zu, %zu) of the data section lie beyond "
                            "its end (%zu bytes): the file is truncated", path, t->name, t->off,
                       t->off + t->nbytes, data_size);
            return moe_hintf(err, "the file is incomplete or corrupt: export it again");
        }
        t->off += f->data_off;
    }
    /* No two tensors may share bytes. */
    GgufTensorInfo **ord = moe_malloc(sizeof(GgufTensorInfo *) * (f->n_t ? f->n_t : 1));
    for (size_t i = 0; i < f->n_t; i++) ord[i] = &f->t[i];
    qsort(ord, f->n_t, sizeof *ord, cmp_off);
    for (size_t i = 1; i < f->n_t; i++)
        if (ord[i]->off < ord[i - 1]->off + ord[i - 1]->nbytes) {
            moe_errorf(err, "%s: tensors '%s' and '%s' overlap", path, ord[i - 1]->name,
                       ord[i]->name);
            moe_free(ord);
            return moe_hintf(err, "the file is corrupt: export it again");
        }
    moe_free(ord);
    return 0;
}

int gguf_find(const GgufFile *f, const char *key) {
    for (size_t i = 0; i < f->n_kv; i++)
        if (!strcmp(f->kv[i].key, key)) return (int)i;
    return -1;
}

static int missing(const GgufFile *f, const char *key, const char *want, MoeErr *err) {
    moe_errorf(err, "%s: key '%s' is missing or not %s", f->path, key, want);
    return moe_hintf(err, "export the model with `moetrain export --format gguf`");
}

int gguf_get_u32(const GgufFile *f, const char *key, uint32_t *v, MoeErr *err) {
    int i = gguf_find(f, key);
    if (i < 0) return missing(f, key, "an integer", err);
    const GgufKv *kv = &f->kv[i];
    const uint8_t *p = f->buf + kv->off;
    uint64_t u = 0;
    int64_t s = 0;
    bool sgn = false;
    switch (kv->type) {
    case GGUF_T_UINT8: u = p[0]; break;
    case GGUF_T_UINT16: u = (uint64_t)(p[0] | p[1] << 8); break;
    case GGUF_T_UINT32: u = (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24; break;
    case GGUF_T_UINT64: for (int k = 0; k < 8; k++) u |= (uint64_t)p[k] << (8 * k); break;
    case GGUF_T_INT32: {
        uint32_t w = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        int32_t x;
        memcpy(&x, &w, 4);
        s = x;
        sgn = true;
        break;
    }
    case GGUF_T_INT64: {
        uint64_t w = 0;
        for (int k = 0; k < 8; k++) w |= (uint64_t)p[k] << (8 * k);
        memcpy(&s, &w, 8);
        sgn = true;
        break;
    }
    default: return missing(f, key, "an integer", err);
    }
    if (sgn) {
        if (s < 0) return missing(f, key, "a non-negative integer", err);
        u = (uint64_t)s;
    }
    if (u > UINT32_MAX) return missing(f, key, "a 32-bit integer", err);
    *v = (uint32_t)u;
    return 0;
}

int gguf_get_f32(const GgufFile *f, const char *key, float *v, MoeErr *err) {
    int i = gguf_find(f, key);
    if (i < 0 || f->kv[i].type != GGUF_T_FLOAT32) return missing(f, key, "a float32", err);
    const uint8_t *p = f->buf + f->kv[i].off;
    uint32_t w = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    memcpy(v, &w, 4);
    return 0;
}

static void str_at(const GgufFile *f, size_t off, const char **s, size_t *len) {
    uint64_t n = 0;
    for (int k = 0; k < 8; k++) n |= (uint64_t)f->buf[off + k] << (8 * k);
    *len = (size_t)n;
    *s = (const char *)f->buf + off + 8;
}

int gguf_get_str(const GgufFile *f, const char *key, const char **s, size_t *len, MoeErr *err) {
    int i = gguf_find(f, key);
    if (i < 0 || f->kv[i].type != GGUF_T_STRING) return missing(f, key, "a string", err);
    str_at(f, f->kv[i].off, s, len);
    return 0;
}

void gguf_arr_str(const GgufFile *f, int kv, size_t i, const char **s, size_t *len) {
    ASSERT(kv >= 0 && (size_t)kv < f->n_kv && f->kv[kv].type == GGUF_T_ARRAY &&
           f->kv[kv].arr_type == GGUF_T_STRING && i < f->kv[kv].arr_n, "gguf_arr_str(%d, %zu)",
           kv, i);
    str_at(f, f->kv[kv].str_off[i], s, len);
}

const GgufTensorInfo *gguf_find_tensor(const GgufFile *f, const char *name) {
    for (size_t i = 0; i < f->n_t; i++)
        if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}

void gguf_tensor_to_f32(const GgufFile *f, const GgufTensorInfo *t, float *out) {
    const uint8_t *p = f->buf + t->off;
    if (t->type == GGML_F32) {
        memcpy(out, p, t->n * 4);
    } else if (t->type == GGML_F16) {
        for (size_t i = 0; i < t->n; i++) out[i] = st_f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
    } else {
        gguf_dequantize_q8_0(p, t->n, out);
    }
}
