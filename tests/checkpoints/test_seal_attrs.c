/* test_seal_attrs.c: what a checkpoint's HDF5 structures may say, past the seal
 * (checkpoints/ckpt.h "Integrity"), on the reference checkpoint of seal_fixture.h:
 * - format version 1 (no seal, earlier releases) still loads bit for bit, with one warning;
 *   a version 2 file without a seal, a sealed version 1 file and sealing a v1 file are
 *   refused;
 * - crafted attributes and datasets, re-sealed with ckpt_seal so that they get past the
 *   digest, are refused by every reader naming the attribute or dataset; the extreme values
 *   the bounds still allow round-trip.
 * Each test says which deliberate break of the code it was seen to catch ("Caught:").
 */
#include <check.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "autograd/blas.h"
#include "checkpoints/ckpt.h"
#include "checkpoints/h5io.h"
#include "checkpoints/seal.h"
#include "checkpoints/sha256.h"
#include "train/train.h"

#include "seal_fixture.h"

/* ---- format version 1: no seal ---- */

static herr_t copy_attr(hid_t loc, const char *name, const H5A_info_t *info, void *ctx) {
    (void)info;
    hid_t dst = *(hid_t *)ctx, a = H5Aopen(loc, name, H5P_DEFAULT);
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    size_t n = (size_t)H5Aget_storage_size(a);
    void *buf = calloc(n + 1, 1);
    ck_assert(buf && H5Aread(a, t, buf) >= 0);
    hid_t b = H5Acreate2(dst, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert(b >= 0 && H5Awrite(b, t, buf) >= 0);
    H5Aclose(b);
    free(buf);
    H5Sclose(sp);
    H5Tclose(t);
    H5Aclose(a);
    return 0;
}

static void put_i64(hid_t f, const char *name, int64_t v) {
    if (H5Aexists(f, name) > 0) ck_assert(H5Adelete(f, name) >= 0);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert(a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0);
    H5Aclose(a);
    H5Sclose(sp);
}

static void put_u64(hid_t f, const char *name, uint64_t v) {
    if (H5Aexists(f, name) > 0) ck_assert(H5Adelete(f, name) >= 0);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, H5T_STD_U64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert(a >= 0 && H5Awrite(a, H5T_NATIVE_UINT64, &v) >= 0);
    H5Aclose(a);
    H5Sclose(sp);
}

static void put_str(hid_t f, const char *name, const char *s) {
    if (H5Aexists(f, name) > 0) ck_assert(H5Adelete(f, name) >= 0);
    hid_t sp = H5Screate(H5S_SCALAR), t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(s) + 1);
    hid_t a = H5Acreate2(f, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert(a >= 0 && H5Awrite(a, t, s) >= 0);
    H5Aclose(a);
    H5Tclose(t);
    H5Sclose(sp);
}

/* A format version 1 file as earlier releases wrote it: the reference's objects and root
 * attributes copied into a new file without a user block (so without a seal), with
 * format_version 1 and without the lineage attributes (added after version 1). */
static void make_v1(const char *dst) {
    hid_t s = H5Fopen(g_ref, H5F_ACC_RDONLY, H5P_DEFAULT);
    ck_assert(s >= 0);
    int64_t d;
    MoeErr err;
    ck_assert_msg(h5io_create(dst, 0, &d, &err) == 0, "%s", err.msg);
    hid_t df = (hid_t)d;
    const char *objs[] = {"config", "tokenizer", "params", "optim"};
    for (int i = 0; i < 4; i++)
        ck_assert_msg(H5Ocopy(s, objs[i], df, objs[i], H5P_DEFAULT, H5P_DEFAULT) >= 0, "%s",
                      objs[i]);
    ck_assert(H5Aiterate2(s, H5_INDEX_NAME, H5_ITER_INC, NULL, copy_attr, &df) >= 0);
    put_i64(df, "format_version", 1);
    const char *later[] = {"lineage_gen", "parent_gen", "parent_step", "gnorm_ema_bits",
                           "gnorm_count"};
    for (int i = 0; i < 5; i++) ck_assert(H5Adelete(df, later[i]) >= 0);
    H5Fclose(s);
    ck_assert_msg(h5io_close(d, dst, &err) == 0, "%s", err.msg);
}

/* Values (which 0), first (1) or second (2) moments of every tensor identical. */
static bool same_copy(const Model *a, const Model *b, int which) {
    for (int i = 0; i < a->ps.count; i++) {
        const Param *p = &a->ps.p[i];
        const ParamBlock *x = &a->ps.blocks[p->block], *y = &b->ps.blocks[p->block];
        const size_t o = which == 0 ? p->off : p->goff;
        const float *u = which == 0 ? x->data : which == 1 ? x->m : x->v;
        const float *w = which == 0 ? y->data : which == 1 ? y->m : y->v;
        if (memcmp(u + o, w + o, p->t.n * sizeof(float)) != 0) return false;
    }
    return true;
}

/* Read fn's stderr output into out. */
static void with_stderr(const char *log, void (*fn)(void *), void *ctx, char *out, size_t cap) {
    fflush(stderr);
    int saved = dup(2), fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);
    fn(ctx);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    FILE *f = fopen(log, "rb");
    size_t k = fread(out, 1, cap - 1, f);
    out[k] = 0;
    fclose(f);
}

typedef struct V1Reads {
    const char *path;
    Model *m;
    CkptMeta meta;
    CkptInfo info;
    int bad;   /* readers that failed */
} V1Reads;

static void read_v1(void *ctx) {
    V1Reads *r = ctx;
    MoeErr err;
    Config c;
    uint8_t *tok = NULL;
    size_t tn = 0;
    r->bad = ckpt_read_meta(r->path, &r->meta, &err) != 0;
    r->bad += ckpt_verify(r->path, NULL, &err) != 0;
    r->bad += ckpt_read_config(r->path, &c, &err) != 0;
    config_free(&c);
    r->bad += ckpt_read_tokenizer(r->path, &tok, &tn, &err) != 0;
    moe_free(tok);
    r->bad += ckpt_load(r->path, r->m, NULL, true, &err) != 0;
    r->bad += ckpt_inspect(r->path, &r->info, &err) != 0;
    if (r->bad) fprintf(stderr, "FAILED: %s\n", err.msg);
}

/* Caught: refusing unsealed files outright (the v1 file did not load), warning on every
 * open instead of once per file (six warnings), and accepting a version 2 file without a
 * seal (a stripped seal would then be read unverified). */
START_TEST(test_v1_compat) {
    char v1[320], log[320], out[4096];
    snprintf(v1, sizeof v1, "%s/v1.h5", g_dir);
    snprintf(log, sizeof log, "%s/stderr.log", g_dir);
    make_v1(v1);
    Model m;
    build(&m, 9);
    V1Reads r = {.path = v1, .m = &m};
    with_stderr(log, read_v1, &r, out, sizeof out);
    ck_assert_msg(r.bad == 0, "a version 1 file does not read: %s", out);
    const char *w = strstr(out, "warning");
    ck_assert_msg(w && strstr(out, v1) && strstr(out, "format version 1") &&
                  !strstr(w + 1, "warning"), "want exactly one warning naming the file: %s",
                  out);
    ck_assert(same_copy(&g_m, &m, 0) && same_copy(&g_m, &m, 1) && same_copy(&g_m, &m, 2));
    CkptMeta want = ref_meta();
    ck_assert(r.meta.step == want.step && r.meta.loader_cursor == want.loader_cursor &&
              r.meta.tok_hash == want.tok_hash && r.meta.has_optimizer);
    ck_assert(r.meta.lineage_gen == 0 && r.meta.gnorm_count == 0);   /* absent: zero */
    ck_assert(r.info.format_version == 1 && !r.info.sealed);
    ckpt_info_free(&r.info);

    MoeErr err;
    ck_assert_int_eq(ckpt_seal(v1, &err), -1);   /* no user block to hold a seal */
    ck_assert_msg(strstr(err.msg, v1) && strstr(err.msg, "user block"), "%s", err.msg);

    /* ckpt_verify of a v1 file reads every dataset: a flipped data byte is found */
    int64_t f;
    bool sealed = true;
    SealId id;
    ck_assert_int_eq(seal_verify(v1, &sealed, &id, &err), 0);
    ck_assert(!sealed);
    ck_assert_int_eq(h5io_open_ro(v1, &id, &f, &err), 0);
    uint64_t addr = 0, sz = 0;
    ck_assert_int_eq(h5io_chunk_location(f, "optim/v/lm_head.weight", &addr, &sz), 0);
    h5io_close(f, v1, NULL);
    flip(v1, (long)(addr + sz / 2), 0x04);
    ck_assert_int_eq(ckpt_read_meta(v1, NULL, &err), 0);   /* unverifiable at this level */
    ck_assert_int_eq(ckpt_verify(v1, NULL, &err), -1);
    ck_assert_msg(strstr(err.msg, "optim/v/lm_head.weight") && strstr(err.msg, "Fletcher32"),
                  "%s", err.msg);

    /* an unsealed file claiming version 2 (a seal stripped), and a sealed one claiming 1 */
    make_v1(v1);
    hid_t h = H5Fopen(v1, H5F_ACC_RDWR, H5P_DEFAULT);
    put_i64(h, "format_version", 2);
    H5Fclose(h);
    ck_assert_int_eq(ckpt_read_meta(v1, NULL, &err), -1);
    ck_assert_msg(strstr(err.msg, "'format_version'") && strstr(err.msg, "no seal"), "%s",
                  err.msg);
    copy_file(g_ref, g_bad, -1, 0);
    h = H5Fopen(g_bad, H5F_ACC_RDWR, H5P_DEFAULT);
    put_i64(h, "format_version", 1);
    H5Fclose(h);
    ck_assert_msg(ckpt_seal(g_bad, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(ckpt_load(g_bad, &m, NULL, true, &err), -1);
    ck_assert_msg(strstr(err.msg, "'format_version'") && strstr(err.msg, "has a seal"), "%s",
                  err.msg);
    model_free(&m);
}
END_TEST

/* ---- crafted attributes and datasets, re-sealed ---- */

enum { E_I64, E_U64, E_F64, E_STR, E_DEL };
typedef struct Edit {   /* one root attribute replaced (kind E_*) by the matching value */
    const char *attr;
    int kind;
    int64_t i;
    uint64_t u;
    double d;
    const char *s;
} Edit;
typedef struct Craft { Edit e[2]; const char *named; } Craft;

static void apply_edit(hid_t f, const Edit *e) {
    if (!e->attr) return;
    uint64_t bits;
    switch (e->kind) {
    case E_I64: put_i64(f, e->attr, e->i); break;
    case E_U64: put_u64(f, e->attr, e->u); break;
    case E_F64:
        memcpy(&bits, &e->d, sizeof bits);
        put_u64(f, e->attr, bits);
        break;
    case E_STR: put_str(f, e->attr, e->s); break;
    default: ck_assert(H5Adelete(f, e->attr) >= 0); break;
    }
}

/* Every reader of g_bad fails naming the file and `named`. */
static void assert_named(const char *named, const char *what) {
    MoeErr err;
    CkptMeta meta;
    Config c;
    uint8_t *tok = NULL;
    size_t tn = 0;
    CkptInfo in;
    Model m;
    build(&m, 9);
    char quoted[96];
    snprintf(quoted, sizeof quoted, "'%s'", named);
    static const char *const NAMES[] = {"read_meta", "verify", "read_config", "read_tokenizer",
                                        "load", "load_base", "inspect"};
    for (int r = 0; r < 7; r++) {
        memset(&err, 0, sizeof err);
        int rc;
        switch (r) {
        case 0: rc = ckpt_read_meta(g_bad, &meta, &err); break;
        case 1: rc = ckpt_verify(g_bad, &meta, &err); break;
        case 2: rc = ckpt_read_config(g_bad, &c, &err); config_free(&c); break;
        case 3: rc = ckpt_read_tokenizer(g_bad, &tok, &tn, &err); moe_free(tok); break;
        case 4: rc = ckpt_load(g_bad, &m, NULL, false, &err); break;
        case 5: rc = ckpt_load_base(g_bad, &m, &err); break;
        default: rc = ckpt_inspect(g_bad, &in, &err); ckpt_info_free(&in); break;
        }
        ck_assert_msg(rc == -1, "%s: %s accepted it", what, NAMES[r]);
        ck_assert_msg(strstr(err.msg, g_bad) && strstr(err.msg, quoted) && err.hint[0],
                      "%s: %s: want %s named: %s", what, NAMES[r], quoted, err.msg);
    }
    model_free(&m);
}

/* Caught, each break by the first case it let through: the signed counter bound removed
 * (step -1), the unsigned one removed (loader_epoch 2^64-1, which is also the loader's "no
 * permutation yet" sentinel), the cursor check written `cursor > windows` (cursor 99 of 99
 * windows), the 0-or-1 check of has_optimizer removed (2), its /optim cross-check removed
 * (0 with moments present), and h5io_attr_get_str cutting long strings (a 2000-byte
 * config_name read as its first 255 bytes). */
START_TEST(test_crafted_attrs) {
    static char longs[2001];
    memset(longs, 'p', 2000);
    const double nan_v = nan(""), inf_v = HUGE_VAL;
    const Craft cases[] = {
        {{{"step", E_I64, .i = -1}}, "step"},
        {{{"step", E_I64, .i = ((int64_t)1 << 62) + 1}}, "step"},
        {{{"step", E_U64, .u = UINT64_MAX}}, "step"},   /* read as int64: clipped, refused */
        {{{"tokens_seen", E_I64, .i = -5}}, "tokens_seen"},
        {{{"loader_epoch", E_U64, .u = UINT64_MAX}}, "loader_epoch"},
        {{{"loader_windows", E_U64, .u = UINT64_MAX}}, "loader_windows"},
        {{{"loader_cursor", E_U64, .u = 99}}, "loader_cursor"},   /* windows is 99 */
        {{{"loader_cursor", E_U64, .u = UINT64_MAX}}, "loader_cursor"},
        {{{"loader_windows", E_U64, .u = 0}, {"loader_cursor", E_U64, .u = 5}}, "loader_cursor"},
        {{{"n_experts", E_I64, .i = -1}}, "n_experts"},
        {{{"n_experts", E_I64, .i = (int64_t)1 << 40}}, "n_experts"},
        {{{"format_version", E_I64, .i = 3}}, "format_version"},
        {{{"format_version", E_I64, .i = 0}}, "format_version"},
        {{{"format_version", E_I64, .i = -2}}, "format_version"},
        {{{"has_optimizer", E_I64, .i = 2}}, "has_optimizer"},
        {{{"has_optimizer", E_I64, .i = -1}}, "has_optimizer"},
        {{{"has_optimizer", E_I64, .i = 0}}, "has_optimizer"},   /* /optim is there */
        {{{"gnorm_count", E_I64, .i = -1}}, "gnorm_count"},
        {{{"gnorm_ema_bits", E_F64, .d = nan_v}}, "gnorm_ema_bits"},
        {{{"gnorm_ema_bits", E_F64, .d = inf_v}}, "gnorm_ema_bits"},
        {{{"gnorm_ema_bits", E_F64, .d = -1.0}}, "gnorm_ema_bits"},
        {{{"lineage_gen", E_I64, .i = -1}}, "lineage_gen"},
        {{{"parent_gen", E_I64, .i = -3}}, "parent_gen"},
        {{{"parent_step", E_I64, .i = INT64_MIN}}, "parent_step"},
        {{{"parent_step", E_DEL, .i = 0}}, "parent_step"},   /* lineage present but incomplete */
        {{{"magic", E_STR, .s = "moetrain-checkpoinX"}}, "magic"},
        {{{"config_name", E_STR, .s = longs}}, "config_name"},
        {{{"base_checksum", E_U64, .u = 7}, {"base_path", E_STR, .s = ""}}, "base_path"},
        {{{"base_checksum", E_U64, .u = 7}, {"base_path", E_STR, .s = longs}}, "base_path"},
        {{{"base_checksum", E_U64, .u = 7}}, "base_path"},   /* missing */
    };
    MoeErr err;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        copy_file(g_ref, g_bad, -1, 0);
        hid_t f = H5Fopen(g_bad, H5F_ACC_RDWR, H5P_DEFAULT);
        ck_assert(f >= 0);
        apply_edit(f, &cases[i].e[0]);
        apply_edit(f, &cases[i].e[1]);
        H5Fclose(f);
        ck_assert_msg(ckpt_seal(g_bad, &err) == 0, "%s", err.msg);
        char what[64];
        snprintf(what, sizeof what, "case %zu (%s)", i, cases[i].named);
        assert_named(cases[i].named, what);
    }
}
END_TEST

/* A dataset at name declaring dims (nothing written: the file stays small), or holding n
 * bytes when n > 0. */
static void replace_dataset(const char *name, int nd, const hsize_t *dims, size_t n) {
    copy_file(g_ref, g_bad, -1, 0);
    hid_t f = H5Fopen(g_bad, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert(f >= 0 && H5Ldelete(f, name, H5P_DEFAULT) >= 0);
    MoeErr err;
    if (n) {
        uint8_t *b = calloc(n, 1);
        uint64_t len = n;
        ck_assert_ptr_nonnull(b);
        ck_assert_msg(h5io_write((int64_t)f, g_bad, name, false, 1, &len, b, &err) == 0, "%s",
                      err.msg);
        free(b);
    } else {
        hsize_t chunk[5] = {1, 1, 1, 1, 1};
        hid_t sp = H5Screate_simple(nd, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
        H5Pset_chunk(dcpl, nd, chunk);
        hid_t ds = H5Dcreate2(f, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        ck_assert(ds >= 0);
        H5Dclose(ds);
        H5Pclose(dcpl);
        H5Sclose(sp);
    }
    H5Fclose(f);
    ck_assert_msg(ckpt_seal(g_bad, &err) == 0, "%s", err.msg);
}

/* Caught: the byte-dataset cap removed from read_bytes (the 16 MiB + 1 config was read and
 * handed to the YAML parser), and h5io_shape's declared-versus-stored check removed (the
 * (2^40, 8) tensor was then only refused as a shape mismatch, and ckpt_inspect would size a
 * buffer from it). */
START_TEST(test_crafted_datasets) {
    MoeErr err;
    Config c;
    CkptInfo in;
    Model m;
    build(&m, 9);
    const hsize_t huge[2] = {(hsize_t)1 << 40, 8}, five[5] = {2, 2, 2, 2, 2},
                  bytes[1] = {(hsize_t)1 << 40};
    replace_dataset("params/lm_head.weight", 2, huge, 0);
    ck_assert_int_eq(ckpt_load(g_bad, &m, NULL, false, &err), -1);
    ck_assert_msg(strstr(err.msg, "'params/lm_head.weight'") && strstr(err.msg, "declares"),
                  "%s", err.msg);
    ck_assert_int_eq(ckpt_inspect(g_bad, &in, &err), -1);
    ckpt_info_free(&in);
    ck_assert_msg(strstr(err.msg, "'params/lm_head.weight'"), "%s", err.msg);
    replace_dataset("params/lm_head.weight", 5, five, 0);
    ck_assert_int_eq(ckpt_load(g_bad, &m, NULL, false, &err), -1);
    ck_assert_msg(strstr(err.msg, "'params/lm_head.weight'"), "%s", err.msg);
    ck_assert_int_eq(ckpt_inspect(g_bad, &in, &err), -1);
    ckpt_info_free(&in);
    ck_assert_msg(strstr(err.msg, "'params/lm_head.weight'"), "%s", err.msg);

    replace_dataset("config", 1, bytes, 0);   /* declared, never stored */
    ck_assert_int_eq(ckpt_read_config(g_bad, &c, &err), -1);
    ck_assert_msg(strstr(err.msg, "'config'") && strstr(err.msg, g_bad), "%s", err.msg);
    replace_dataset("config", 1, NULL, ((size_t)16 << 20) + 1);   /* stored, too long */
    ck_assert_int_eq(ckpt_read_config(g_bad, &c, &err), -1);
    ck_assert_msg(strstr(err.msg, "'config'") && strstr(err.msg, "more than"), "%s", err.msg);
    ck_assert_int_eq(ckpt_inspect(g_bad, &in, &err), -1);
    ckpt_info_free(&in);
    ck_assert_msg(strstr(err.msg, "'config'"), "%s", err.msg);
    replace_dataset("tokenizer", 1, bytes, 0);
    uint8_t *tok = NULL;
    size_t tn = 0;
    ck_assert_int_eq(ckpt_read_tokenizer(g_bad, &tok, &tn, &err), -1);
    ck_assert_msg(strstr(err.msg, "'tokenizer'"), "%s", err.msg);
    model_free(&m);
}
END_TEST

/* The largest values the bounds allow, and a file saved without a loader (windows 0,
 * cursor 0), read back unchanged: the bounds refuse nothing ckpt_save can be asked to write
 * by the trainer. Caught: bounds written as `< 2^62` (step 2^62 refused). */
START_TEST(test_bounds_allow) {
    const int64_t top = (int64_t)1 << 62;
    CkptMeta mt = {.step = top, .tokens_seen = top, .seed = UINT64_MAX,
                   .loader_epoch = (uint64_t)top, .loader_cursor = (uint64_t)top - 1,
                   .loader_windows = (uint64_t)top, .tok_hash = UINT64_MAX,
                   .lineage_gen = top, .parent_gen = top, .parent_step = top,
                   .gnorm_ema = 1e300, .gnorm_count = top};
    MoeErr err;
    CkptMeta got;
    ck_assert_msg(ckpt_save(g_bad, &g_c, &g_m, &mt, g_tok, false, &err) == 0, "%s", err.msg);
    ck_assert_msg(ckpt_read_meta(g_bad, &got, &err) == 0, "%s", err.msg);
    ck_assert(got.step == top && got.loader_cursor == (uint64_t)top - 1 &&
              got.loader_epoch == (uint64_t)top && got.gnorm_ema == 1e300 &&
              got.parent_step == top && !got.has_optimizer);
    CkptMeta zero = {.step = 0};
    ck_assert_msg(ckpt_save(g_bad, &g_c, &g_m, &zero, g_tok, true, &err) == 0, "%s", err.msg);
    ck_assert_msg(ckpt_verify(g_bad, &got, &err) == 0, "%s", err.msg);
    ck_assert(got.loader_windows == 0 && got.loader_cursor == 0 && got.has_optimizer);
}
END_TEST

static Suite *seal_attrs_suite(void) {
    Suite *s = suite_create("seal_attrs");
    struct { const char *name; const TTest *fn; } cases[] = {
        {"v1_compat", test_v1_compat},
        {"crafted_attrs", test_crafted_attrs},
        {"crafted_datasets", test_crafted_datasets},
        {"bounds_allow", test_bounds_allow},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, cases[i].fn);
        tcase_set_timeout(tc, 120);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    SRunner *sr = srunner_create(seal_attrs_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
