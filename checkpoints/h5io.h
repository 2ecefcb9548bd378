/* h5io.h: the small HDF5 layer under checkpoints/ (internal to checkpoints/, not a public
 * contract of the module: use ckpt.h).
 *
 * Turns HDF5 calls into MoeErr reports that name the file and the dataset or attribute,
 * with HDF5's innermost error description appended ("data error detected by Fletcher32
 * checksum", "truncated file: eof = ..."). Every dataset written here is chunked with the
 * Fletcher32 filter; files use the 1.8 object-header format (checksummed metadata).
 * Handles are HDF5 hid_t values kept as int64_t so ckpt.h needs no HDF5 header.
 */
#ifndef MOE_H5IO_H
#define MOE_H5IO_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "core/common.h"
#include "checkpoints/seal.h"

/* Switch off HDF5's automatic error-stack printing and its atexit cleanup (process-wide;
 * idempotent). */
void h5io_quiet(void);

/* HDF5's innermost error description of the failure just seen (or "" when the stack is
 * empty) into out; clears the stack. */
void h5io_reason(char *out, size_t cap);

/* Create path (truncating) for writing, with a user block of userblock bytes at its start
 * (0: none; else a power of two >= 512) that HDF5 leaves alone (checkpoints/seal.h fills
 * it). Fails (-1, err "PATH: ...") with HDF5's reason; *file is -1 on failure. */
int h5io_create(const char *path, uint64_t userblock, int64_t *file, MoeErr *err);
/* Open path read-only. id is what seal_verify returned for path (required: libhdf5 must
 * only ever parse verified bytes, or a legacy file the caller accepted); the open fails
 * unless the file libhdf5 opened is that same file, unchanged. Fails (-1, err "PATH: ...")
 * with HDF5's reason; *file is -1 on failure. */
int h5io_open_ro(const char *path, const SealId *id, int64_t *file, MoeErr *err);
/* Flush and close (strong close degree: every object handle goes with it). Safe on -1.
 * Returns -1 with err when the close (the final write) failed. */
int h5io_close(int64_t file, const char *path, MoeErr *err);

/* Create the group at name (e.g. "optim/m"; parents must exist). */
int h5io_group(int64_t file, const char *path, const char *name, MoeErr *err);

/* Write a chunked, Fletcher32-checksummed dataset at dset (full path inside the file, e.g.
 * "params/lm_head.weight") of ndim (<= 4) dims from buf (borrowed): float32 when is_float
 * (buf holds native floats), else uint8 bytes. A zero-sized dims[0] is allowed. */
int h5io_write(int64_t file, const char *path, const char *dset, bool is_float, int ndim,
               const uint64_t *dims, const void *buf, MoeErr *err);

/* 1 when dset exists as a link (and all its parent groups exist), 0 when not. */
int h5io_exists(int64_t file, const char *dset);

/* Check that dset exists, is float (is_float) or integer, has exactly ndim dims equal to
 * dims. Errors: "PATH: dataset 'dset' is missing" / "... has shape (a, b) but the model
 * expects (c, d)" / "... is not float32", each with a hint. */
int h5io_check(int64_t file, const char *path, const char *dset, bool is_float, int ndim,
               const uint64_t *dims, MoeErr *err);

/* Shape of dset: *ndim and dims[0..*ndim) (at most 4), and whether its type is float. */
int h5io_shape(int64_t file, const char *path, const char *dset, int *ndim, uint64_t *dims,
               bool *is_float, MoeErr *err);

/* Read the whole of dset into dst (native float or uint8 bytes, sized by the caller from
 * h5io_shape/h5io_check). A checksum mismatch fails here: "PATH: dataset 'dset': read
 * failed (data error detected by Fletcher32 checksum)". */
int h5io_read(int64_t file, const char *path, const char *dset, bool is_float, void *dst,
              MoeErr *err);

/* Root attributes. Strings are fixed-length, NUL-terminated. */
int h5io_attr_put_u64(int64_t file, const char *path, const char *name, uint64_t v, MoeErr *err);
int h5io_attr_put_i64(int64_t file, const char *path, const char *name, int64_t v, MoeErr *err);
int h5io_attr_put_str(int64_t file, const char *path, const char *name, const char *s,
                      MoeErr *err);
int h5io_attr_get_u64(int64_t file, const char *path, const char *name, uint64_t *v, MoeErr *err);
int h5io_attr_get_i64(int64_t file, const char *path, const char *name, int64_t *v, MoeErr *err);
/* 1 when the root attribute name exists, 0 when not (optional attributes). */
int h5io_attr_exists(int64_t file, const char *name);
/* Reads the string and a NUL into out; a string of cap bytes or more fails (-1, err
 * naming the attribute) rather than being cut. */
int h5io_attr_get_str(int64_t file, const char *path, const char *name, char *out, size_t cap,
                      MoeErr *err);

/* Every dataset in the file: calls fn(name, ctx) for each full path (e.g. "params/x"), in
 * HDF5's name order. Stops and returns -1 (err set) when fn returns non-zero. */
int h5io_each_dataset(int64_t file, const char *path, int (*fn)(const char *dset, void *ctx),
                      void *ctx, MoeErr *err);

/* Offset from the start of the file (user block included) and size of dset's first chunk
 * (for tests that corrupt it). */
int h5io_chunk_location(int64_t file, const char *dset, uint64_t *addr, uint64_t *size);

#endif
