/* h5io.c: HDF5 calls turned into MoeErr reports. See h5io.h. */
#include "checkpoints/h5io.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <hdf5.h>

/* Chunks of at most 1 Mi elements (4 MiB of float32): large enough that the per-chunk
 * overhead (B-tree entry, Fletcher32 pass) is negligible, small enough that a reader never
 * needs a huge filter buffer. */
#define H5IO_CHUNK_ELEMS ((uint64_t)1 << 20)

void h5io_quiet(void) {
    /* libhdf5 1.10's atexit cleanup (H5F__close_cb) is not safe after a failed H5Fclose
     * (e.g. on a full disk): it is switched off. Every file we open is closed (or, on
     * failure, its temporary removed) by our own code, so nothing is lost. H5dont_atexit
     * only works before the library initialises, hence the guard. */
    static bool once = false;
    if (!once) {
        H5dont_atexit();
        once = true;
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

typedef struct Reason { char *out; size_t cap; bool got; } Reason;

static herr_t reason_cb(unsigned n, const H5E_error2_t *e, void *ctx) {
    (void)n;
    Reason *r = ctx;
    /* Walking upward, the first entry is the innermost one: where the failure was detected
     * (e.g. the Fletcher32 filter), which is the most telling. */
    if (!r->got && e->desc && e->desc[0]) {
        snprintf(r->out, r->cap, "%s", e->desc);
        r->got = true;
    }
    return 0;
}

void h5io_reason(char *out, size_t cap) {
    if (cap == 0) return;
    out[0] = 0;
    Reason r = {out, cap, false};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, reason_cb, &r);
    H5Eclear2(H5E_DEFAULT);
}

/* HDF5 clears its error stack on entry to every API call, so the reason must be taken
 * right after the failing call, before any cleanup call: sites call h5_catch() there and
 * h5_fail() formats "PATH: <what> (HDF5: <reason>)" later. */
static char g_why[512];

static void h5_catch(void) { h5io_reason(g_why, sizeof g_why); }

static int h5_fail(MoeErr *err, const char *path, const char *what) {
    int rc = g_why[0] ? moe_errorf(err, "%s: %s (HDF5: %s)", path, what, g_why)
                      : moe_errorf(err, "%s: %s", path, what);
    g_why[0] = 0;
    return rc;
}

static hid_t make_fapl(void) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0) return -1;
    /* Strong close: H5Fclose closes every object still open, so the file is complete on
     * disk when it returns (no handle can keep it half-open after an error path). The 1.8
     * format gives version-2 object headers and superblock, whose metadata is checksummed;
     * HDF5 1.8+ tools (h5ls, h5dump) read it. */
    if (H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0 ||
        H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18) < 0 ||
        H5Pset_fapl_sec2(fapl) < 0) {   /* POSIX I/O: its handle is the descriptor (open_ro) */
        H5Pclose(fapl);
        return -1;
    }
    return fapl;
}

int h5io_create(const char *path, uint64_t userblock, int64_t *file, MoeErr *err) {
    h5io_quiet();
    *file = -1;
    hid_t fapl = make_fapl(), fcpl = fapl >= 0 ? H5Pcreate(H5P_FILE_CREATE) : -1;
    if (fcpl < 0 || (userblock && H5Pset_userblock(fcpl, (hsize_t)userblock) < 0)) {
        h5_catch();
        if (fcpl >= 0) H5Pclose(fcpl);
        if (fapl >= 0) H5Pclose(fapl);
        return h5_fail(err, path, "cannot set up HDF5 file creation");
    }
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, fcpl, fapl);
    if (f < 0) h5_catch();
    H5Pclose(fcpl);
    H5Pclose(fapl);
    if (f < 0) {
        h5_fail(err, path, "cannot create HDF5 file");
        return moe_hintf(err, "check that the directory exists, is writable and has space");
    }
    *file = f;
    return 0;
}

int h5io_open_ro(const char *path, const SealId *id, int64_t *file, MoeErr *err) {
    ASSERT(id, "h5io_open_ro needs the identity seal_verify returned for %s", path);
    h5io_quiet();
    *file = -1;
    hid_t fapl = make_fapl();
    if (fapl < 0) {
        h5_catch();
        return h5_fail(err, path, "cannot set up HDF5 file access");
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (f < 0) h5_catch();
    H5Pclose(fapl);
    if (f < 0) {
        h5_fail(err, path, "not a readable HDF5 file (truncated or corrupt?)");
        return moe_hintf(err, "the file is damaged or incomplete; resume from an older "
                              "checkpoint (moetrain ckpt info PATH checks one)");
    }
    /* The file libhdf5 opened by name must be the one verified: not renamed over, not
     * rewritten since. The default (sec2) driver's handle is the POSIX descriptor. */
    void *handle = NULL;
    if (H5Fget_vfd_handle(f, H5P_DEFAULT, &handle) < 0 || !handle ||
        !seal_same(*(int *)handle, id)) {
        H5Eclear2(H5E_DEFAULT);
        H5Fclose(f);
        moe_errorf(err, "%s: the file changed between its verification and its opening", path);
        return moe_hintf(err, "is another process writing or replacing it? retry once it "
                              "is done");
    }
    *file = f;
    return 0;
}

int h5io_close(int64_t file, const char *path, MoeErr *err) {
    if (file < 0) return 0;
    hid_t f = (hid_t)file;
    int rc = 0;
    errno = 0;
    if (H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) { rc = -1; h5_catch(); }
    /* the OS reason (ENOSPC, EFBIG, EDQUOT, EIO) survives HDF5's cascade of follow-up
     * errors in errno; HDF5's own innermost message is then less useful */
    int os = errno;
    if (H5Fclose(f) < 0) { rc = -1; h5_catch(); }
    if (rc && err) {
        if (os) {
            moe_errorf(err, "%s: cannot write the HDF5 file: %s", path, strerror(os));
            g_why[0] = 0;
        } else {
            h5_fail(err, path, "cannot flush/close HDF5 file");
        }
        moe_hintf(err, "check free disk space and quotas; the previous checkpoint is kept");
    }
    g_why[0] = 0;
    return rc;
}

int h5io_group(int64_t file, const char *path, const char *name, MoeErr *err) {
    hid_t g = H5Gcreate2((hid_t)file, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) {
        h5_catch();
        char what[300];
        snprintf(what, sizeof what, "cannot create group '%s'", name);
        return h5_fail(err, path, what);
    }
    H5Gclose(g);
    return 0;
}

static void shape_str(int ndim, const uint64_t *dims, char *out, size_t cap) {
    size_t k = (size_t)snprintf(out, cap, "(");
    for (int d = 0; d < ndim && k < cap; d++)
        k += (size_t)snprintf(out + k, cap - k, d ? ", %llu" : "%llu",
                              (unsigned long long)dims[d]);
    if (k < cap) snprintf(out + k, cap - k, ")");
}

int h5io_write(int64_t file, const char *path, const char *dset, bool is_float, int ndim,
               const uint64_t *dims, const void *buf, MoeErr *err) {
    ASSERT(ndim >= 1 && ndim <= 4, "ndim %d", ndim);
    hsize_t hd[4], maxd[4], chunk[4];
    /* Chunk shape: whole trailing dimensions while they fit the element budget, then a
     * slab of the leading one, so a chunk is one contiguous run of rows. */
    uint64_t budget = H5IO_CHUNK_ELEMS;
    for (int d = ndim - 1; d >= 0; d--) {
        hd[d] = maxd[d] = dims[d];
        uint64_t c = dims[d] < budget ? dims[d] : budget;
        if (c == 0) {
            c = 1;
            maxd[d] = H5S_UNLIMITED;  /* a chunked empty dataset needs room to grow */
        }
        chunk[d] = c;
        budget = budget / c ? budget / c : 1;
    }
    const char *step = "dataspace";
    hid_t space = -1, dcpl = -1, ds = -1;
    hid_t ftype = is_float ? H5T_IEEE_F32LE : H5T_STD_U8LE;
    hid_t mtype = is_float ? H5T_NATIVE_FLOAT : H5T_NATIVE_UCHAR;
    if ((space = H5Screate_simple(ndim, hd, maxd)) < 0) goto fail;
    step = "chunked Fletcher32 layout";
    if ((dcpl = H5Pcreate(H5P_DATASET_CREATE)) < 0) goto fail;
    if (H5Pset_chunk(dcpl, ndim, chunk) < 0 || H5Pset_fletcher32(dcpl) < 0) goto fail;
    step = "create";
    if ((ds = H5Dcreate2((hid_t)file, dset, ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT)) < 0)
        goto fail;
    step = "write";
    if (H5Sget_simple_extent_npoints(space) > 0 &&
        H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
        goto fail;
    H5Dclose(ds);
    H5Pclose(dcpl);
    H5Sclose(space);
    return 0;
fail:
    h5_catch();
    char what[400];
    snprintf(what, sizeof what, "dataset '%s': %s failed", dset, step);
    h5_fail(err, path, what);
    moe_hintf(err, "check free disk space and permissions");
    if (ds >= 0) H5Dclose(ds);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (space >= 0) H5Sclose(space);
    return -1;
}

int h5io_exists(int64_t file, const char *dset) {
    /* H5Lexists fails (rather than saying 0) when a parent group is missing: check each
     * prefix of the path in turn. */
    char buf[512];
    snprintf(buf, sizeof buf, "%s", dset);
    for (char *p = buf;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (H5Lexists((hid_t)file, buf, H5P_DEFAULT) <= 0) {
                H5Eclear2(H5E_DEFAULT);
                return 0;
            }
            if (c == 0) return 1;
            *p = c;
        }
    }
}

int h5io_shape(int64_t file, const char *path, const char *dset, int *ndim, uint64_t *dims,
               bool *is_float, MoeErr *err) {
    if (!h5io_exists(file, dset)) {
        moe_errorf(err, "%s: dataset '%s' is missing", path, dset);
        return moe_hintf(err, "the checkpoint is incomplete or was written for another model "
                              "(moetrain ckpt info %s lists it)", path);
    }
    hid_t ds = H5Dopen2((hid_t)file, dset, H5P_DEFAULT);
    if (ds < 0) {
        h5_catch();
        char what[400];
        snprintf(what, sizeof what, "'%s' is not a readable dataset", dset);
        return h5_fail(err, path, what);
    }
    hid_t space = H5Dget_space(ds), type = H5Dget_type(ds);
    int nd = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    hsize_t hd[32];
    int rc = 0;
    if (nd < 1 || nd > 4 || type < 0 || H5Sget_simple_extent_dims(space, hd, NULL) < 0) {
        h5_catch();
        char what[400];
        snprintf(what, sizeof what, "dataset '%s' has an unreadable or unsupported shape",
                 dset);
        rc = h5_fail(err, path, what);
    } else {
        /* Every dataset we write is fully written and uncompressed, so it stores at least
         * its declared bytes. A declared size beyond what is stored (a chunked dataset
         * whose chunks were never written takes no space) would have readers allocate
         * whatever the file claims: refuse it before anyone sizes a buffer from it. */
        uint64_t bytes = H5Tget_size(type);
        bool fits = bytes > 0;
        for (int d = 0; d < nd && fits; d++) {
            if (hd[d] != 0 && bytes > SIZE_MAX / 2 / hd[d]) fits = false;
            else bytes *= hd[d];
        }
        uint64_t stored = fits ? H5Dget_storage_size(ds) : 0;
        if (!fits || stored < bytes) {
            char what[400], shape[128];
            uint64_t sd[4];
            for (int d = 0; d < nd; d++) sd[d] = hd[d];
            shape_str(nd, sd, shape, sizeof shape);
            snprintf(what, sizeof what, "dataset '%s' declares shape %s but the file stores "
                     "only %llu bytes of it", dset, shape, (unsigned long long)stored);
            moe_errorf(err, "%s: %s", path, what);
            moe_hintf(err, "the file was not written (completely) by moetrain's checkpoint "
                           "writer; resume from an older checkpoint");
            rc = -1;
        } else {
            *ndim = nd;
            for (int d = 0; d < nd; d++) dims[d] = hd[d];
            *is_float = H5Tget_class(type) == H5T_FLOAT;
        }
    }
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    H5Dclose(ds);
    return rc;
}

int h5io_check(int64_t file, const char *path, const char *dset, bool is_float, int ndim,
               const uint64_t *dims, MoeErr *err) {
    int fnd = 0;
    uint64_t fd[4];
    bool ff = false;
    if (h5io_shape(file, path, dset, &fnd, fd, &ff, err)) return -1;
    if (ff != is_float) {
        moe_errorf(err, "%s: dataset '%s' is not %s", path, dset, is_float ? "float" : "bytes");
        return moe_hintf(err, "the file was not written by moetrain's checkpoint writer");
    }
    bool same = fnd == ndim;
    for (int d = 0; same && d < ndim; d++) same = fd[d] == dims[d];
    if (!same) {
        char a[128], b[128];
        shape_str(fnd, fd, a, sizeof a);
        shape_str(ndim, dims, b, sizeof b);
        moe_errorf(err, "%s: dataset '%s' has shape %s but the model expects %s", path, dset,
                   a, b);
        return moe_hintf(err, "the checkpoint was written for a different model shape; "
                              "compare its config (moetrain ckpt info %s) with yours", path);
    }
    return 0;
}

int h5io_read(int64_t file, const char *path, const char *dset, bool is_float, void *dst,
              MoeErr *err) {
    hid_t ds = H5Dopen2((hid_t)file, dset, H5P_DEFAULT);
    char what[400];
    if (ds < 0) {
        h5_catch();
        snprintf(what, sizeof what, "dataset '%s' cannot be opened", dset);
        return h5_fail(err, path, what);
    }
    hid_t space = H5Dget_space(ds);
    hssize_t np = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
    if (space >= 0) H5Sclose(space);
    herr_t rc = np < 0 ? -1 : 0;
    if (np > 0)
        rc = H5Dread(ds, is_float ? H5T_NATIVE_FLOAT : H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL,
                     H5P_DEFAULT, dst);
    if (rc < 0) h5_catch();
    H5Dclose(ds);
    if (rc < 0) {
        snprintf(what, sizeof what, "dataset '%s': read failed, checksum mismatch or corrupt "
                 "data", dset);
        h5_fail(err, path, what);
        return moe_hintf(err, "the file is damaged; resume from an older checkpoint");
    }
    return 0;
}

/* ---- attributes ---- */

static int attr_put(int64_t file, const char *path, const char *name, hid_t ftype, hid_t mtype,
                    const void *v, MoeErr *err) {
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = space >= 0 ? H5Acreate2((hid_t)file, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT)
                         : -1;
    herr_t rc = a >= 0 ? H5Awrite(a, mtype, v) : -1;
    if (rc < 0) h5_catch();
    if (a >= 0) H5Aclose(a);
    if (space >= 0) H5Sclose(space);
    if (rc < 0) {
        char what[300];
        snprintf(what, sizeof what, "cannot write attribute '%s'", name);
        return h5_fail(err, path, what);
    }
    return 0;
}

int h5io_attr_put_u64(int64_t file, const char *path, const char *name, uint64_t v,
                      MoeErr *err) {
    return attr_put(file, path, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &v, err);
}

int h5io_attr_put_i64(int64_t file, const char *path, const char *name, int64_t v,
                      MoeErr *err) {
    return attr_put(file, path, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v, err);
}

int h5io_attr_put_str(int64_t file, const char *path, const char *name, const char *s,
                      MoeErr *err) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0 || H5Tset_size(t, strlen(s) + 1) < 0 || H5Tset_strpad(t, H5T_STR_NULLTERM) < 0) {
        h5_catch();
        if (t >= 0) H5Tclose(t);
        return h5_fail(err, path, "cannot make a string type");
    }
    int rc = attr_put(file, path, name, t, t, s, err);
    H5Tclose(t);
    return rc;
}

/* Number of elements of attribute a (1 for a scalar, 0 for a null dataspace), -1 on error. */
static hssize_t attr_points(hid_t a) {
    hid_t sp = H5Aget_space(a);
    hssize_t n = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
    if (sp >= 0) H5Sclose(sp);
    return n;
}

static H5T_class_t attr_class(hid_t a) {
    hid_t t = H5Aget_type(a);
    H5T_class_t c = t >= 0 ? H5Tget_class(t) : H5T_NO_CLASS;
    if (t >= 0) H5Tclose(t);
    return c;
}

static int attr_get(int64_t file, const char *path, const char *name, hid_t mtype, void *v,
                    MoeErr *err) {
    htri_t ex = H5Aexists((hid_t)file, name);
    if (ex <= 0) {
        H5Eclear2(H5E_DEFAULT);
        moe_errorf(err, "%s: attribute '%s' is missing", path, name);
        return moe_hintf(err, "this is not a complete moetrain checkpoint");
    }
    hid_t a = H5Aopen((hid_t)file, name, H5P_DEFAULT);
    /* H5Aread writes every element: only one integer fits in *v */
    if (a >= 0 && (attr_points(a) != 1 || attr_class(a) != H5T_INTEGER)) {
        H5Aclose(a);
        moe_errorf(err, "%s: attribute '%s' is not a single integer", path, name);
        return moe_hintf(err, "this is not a moetrain checkpoint (or it is damaged)");
    }
    herr_t rc = a >= 0 ? H5Aread(a, mtype, v) : -1;
    if (rc < 0) h5_catch();
    if (a >= 0) H5Aclose(a);
    if (rc < 0) {
        char what[300];
        snprintf(what, sizeof what, "cannot read attribute '%s'", name);
        return h5_fail(err, path, what);
    }
    return 0;
}

int h5io_attr_exists(int64_t file, const char *name) {
    htri_t ex = H5Aexists((hid_t)file, name);
    if (ex < 0) H5Eclear2(H5E_DEFAULT);
    return ex > 0;
}

int h5io_attr_get_u64(int64_t file, const char *path, const char *name, uint64_t *v,
                      MoeErr *err) {
    return attr_get(file, path, name, H5T_NATIVE_UINT64, v, err);
}

int h5io_attr_get_i64(int64_t file, const char *path, const char *name, int64_t *v,
                      MoeErr *err) {
    return attr_get(file, path, name, H5T_NATIVE_INT64, v, err);
}

int h5io_attr_get_str(int64_t file, const char *path, const char *name, char *out, size_t cap,
                      MoeErr *err) {
    ASSERT(cap > 0, "cap 0");
    out[0] = 0;
    htri_t ex = H5Aexists((hid_t)file, name);
    if (ex <= 0) {
        H5Eclear2(H5E_DEFAULT);
        moe_errorf(err, "%s: attribute '%s' is missing", path, name);
        return moe_hintf(err, "this is not a moetrain checkpoint");
    }
    hid_t a = H5Aopen((hid_t)file, name, H5P_DEFAULT);
    hid_t ft = a >= 0 ? H5Aget_type(a) : -1;
    int rc = -1;
    /* one fixed-length string: H5Aread writes size * points bytes into buf */
    if (ft >= 0 && H5Tget_class(ft) == H5T_STRING && H5Tis_variable_str(ft) == 0 &&
        attr_points(a) == 1) {
        size_t n = H5Tget_size(ft);
        char *buf = moe_calloc(n + 1);
        hid_t mt = H5Tcopy(ft);
        if (mt >= 0 && H5Aread(a, mt, buf) >= 0) {
            rc = strlen(buf) < cap ? 0 : 1;   /* never hand on a silently cut string */
            if (rc == 0) memcpy(out, buf, strlen(buf) + 1);
        } else {
            h5_catch();
        }
        if (mt >= 0) H5Tclose(mt);
        moe_free(buf);
    }
    if (ft >= 0) H5Tclose(ft);
    if (a >= 0) H5Aclose(a);
    if (rc == 1) {
        moe_errorf(err, "%s: attribute '%s' is longer than the %zu bytes it may have", path,
                   name, cap - 1);
        return moe_hintf(err, "this is not a checkpoint moetrain wrote (or it was edited)");
    }
    if (rc) {
        char what[300];
        snprintf(what, sizeof what, "attribute '%s' is not a readable string", name);
        return h5_fail(err, path, what);
    }
    return 0;
}

/* ---- iteration ---- */

typedef struct Names { char **v; size_t n, cap; } Names;

static herr_t visit_cb(hid_t g, const char *name, const H5L_info_t *info, void *ctx) {
    if (info->type != H5L_TYPE_HARD) return 0;
    hid_t o = H5Oopen(g, name, H5P_DEFAULT);
    if (o < 0) return -1;
    bool is_ds = H5Iget_type(o) == H5I_DATASET;
    H5Oclose(o);
    if (!is_ds) return 0;
    Names *ns = ctx;
    if (ns->n == ns->cap) {
        size_t nc = ns->cap ? 2 * ns->cap : 64;
        ns->v = moe_realloc(ns->v, ns->cap * sizeof(char *), nc * sizeof(char *));
        ns->cap = nc;
    }
    ns->v[ns->n++] = moe_strdup(name);
    return 0;
}

int h5io_each_dataset(int64_t file, const char *path, int (*fn)(const char *dset, void *ctx),
                      void *ctx, MoeErr *err) {
    /* Collect the names first, then call fn outside the HDF5 traversal (fn reads data). */
    Names ns = {0};
    int rc = 0;
    if (H5Lvisit((hid_t)file, H5_INDEX_NAME, H5_ITER_INC, visit_cb, &ns) < 0) {
        h5_catch();
        rc = h5_fail(err, path, "cannot list the datasets");
    }
    for (size_t i = 0; i < ns.n && rc == 0; i++)
        if (fn(ns.v[i], ctx)) rc = -1;
    for (size_t i = 0; i < ns.n; i++) moe_free(ns.v[i]);
    moe_free(ns.v);
    return rc;
}

int h5io_chunk_location(int64_t file, const char *dset, uint64_t *addr, uint64_t *size) {
    hid_t ds = H5Dopen2((hid_t)file, dset, H5P_DEFAULT);
    if (ds < 0) return -1;
    hsize_t off[32];
    unsigned mask = 0;
    haddr_t a = 0;
    hsize_t sz = 0, ub = 0;
    hid_t space = H5Dget_space(ds), fcpl = H5Fget_create_plist((hid_t)file);
    herr_t rc = space >= 0 ? H5Dget_chunk_info(ds, space, 0, off, &mask, &a, &sz) : -1;
    if (rc >= 0 && (fcpl < 0 || H5Pget_userblock(fcpl, &ub) < 0)) rc = -1;
    if (fcpl >= 0) H5Pclose(fcpl);
    if (space >= 0) H5Sclose(space);
    H5Dclose(ds);
    H5Eclear2(H5E_DEFAULT);
    if (rc < 0) return -1;
    *addr = a + ub;   /* HDF5 addresses start after the user block */
    *size = sz;
    return 0;
}
