/* safetensors.h: write and read Hugging Face safetensors files (our own code, no library).
 *
 * File layout (https://github.com/huggingface/safetensors, "Format"):
 *   u64 LE   N = header length in bytes
 *   N bytes  JSON object: {"__metadata__": {str: str}, NAME: {"dtype": "F32"|"F16"|"BF16",
 *            "shape": [d0, ...], "data_offsets": [begin, end]}, ...}; offsets are relative to
 *            the byte after the header; we pad the header with spaces so data starts 8-aligned
 *   data     the tensors, row-major, little-endian, back to back with no holes
 * A sharded model is model-0000k-of-0000N.safetensors files plus model.safetensors.index.json
 * ({"metadata": {"total_size": bytes}, "weight_map": {NAME: FILE}}).
 *
 * The reader trusts nothing: header length within the file, valid JSON, known dtype,
 * non-negative integer shape, end - begin == elements * dtype size, offsets inside the data
 * section, no overlaps and no holes. Every failure is a MoeErr naming the file and tensor.
 *
 * Non-goals: dtypes other than F32/F16/BF16 (I/U ints, F64, FP8), memory mapping, streaming
 * tensors larger than memory.
 */
#ifndef MOE_SAFETENSORS_H
#define MOE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/common.h"

#define ST_MAX_DIMS 4

typedef enum { ST_F32 = 0, ST_F16 = 1, ST_BF16 = 2 } StDtype;

/* "F32", "F16", "BF16"; bytes per element 4, 2, 2. */
const char *st_dtype_name(StDtype d);
size_t st_dtype_size(StDtype d);
/* Parses "f32"/"bf16"/"f16" (our command-line spelling, case-insensitive) or the file
 * spelling; returns 0, or -1 when unknown. */
int st_dtype_parse(const char *s, StDtype *d);

/* IEEE conversions, round to nearest even (NaN stays NaN, overflow goes to inf). */
uint16_t st_f32_to_f16(float x);
float st_f16_to_f32(uint16_t h);
uint16_t st_f32_to_bf16(float x);
float st_bf16_to_f32(uint16_t h);

/* One tensor to write: float32 values (borrowed) converted to the file dtype on write. */
typedef struct StTensorIn {
    const char *name;
    const float *data;            /* (prod shape) */
    int ndim;
    int64_t shape[ST_MAX_DIMS];
} StTensorIn;

/* Bytes tensor t takes in the file at dtype d. */
size_t st_tensor_bytes(const StTensorIn *t, StDtype d);

/* Write tensors[0..n) (in that order) as one safetensors file at path, atomically (temporary
 * + fsync + rename). metadata: NULL or a NULL-terminated list of key, value string pairs for
 * "__metadata__". Fails (-1, err naming the file and OS reason). */
int st_write_file(const char *path, const StTensorIn *tensors, size_t n, StDtype d,
                  const char *const *metadata, MoeErr *err);

/* Write the model into directory dir: one "model.safetensors" when the total data is at most
 * max_shard_bytes (0 = no limit), else shards "model-%05d-of-%05d.safetensors" (greedy, in
 * order, each shard at most max_shard_bytes unless one tensor alone is larger) plus
 * "model.safetensors.index.json". *n_shards receives the file count (1 = unsharded). */
int st_write_model(const char *dir, const StTensorIn *tensors, size_t n, StDtype d,
                   size_t max_shard_bytes, const char *const *metadata, int *n_shards,
                   MoeErr *err);

/* ---- reading ---- */

typedef struct StEntry {
    char *name;                   /* owned */
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t n;                     /* elements */
    size_t begin, end;            /* byte range inside the data section */
    int file;                     /* index into StModel.files (StFile: always 0) */
} StEntry;

typedef struct StFile {
    char *path;                   /* owned */
    uint8_t *buf;                 /* (size) the whole file, owned */
    size_t size;
    size_t data_off;              /* 8 + header length */
    StEntry *e;                   /* (n) owned, in header order */
    size_t n;
} StFile;

/* Read and validate one safetensors file (see the rules above). *f is overwritten; release
 * with st_close (also after a failure). */
int st_open(StFile *f, const char *path, MoeErr *err);
void st_close(StFile *f);

/* A model directory: the single file or every shard listed in the index. */
typedef struct StModel {
    StFile *files;                /* (n_files) owned */
    int n_files;
} StModel;

/* Open dir/model.safetensors.index.json and its shards (every weight_map entry must be in
 * the shard it names), or dir/model.safetensors when there is no index. Release with
 * st_model_close (also after a failure). */
int st_model_open(StModel *m, const char *dir, MoeErr *err);
void st_model_close(StModel *m);

/* Look a tensor up by name: returns its entry and sets *file, or NULL when absent. */
const StEntry *st_model_find(const StModel *m, const char *name, const StFile **file);

/* Copy tensor e of file f to out (n = e->n floats), converting to float32. */
void st_entry_to_f32(const StFile *f, const StEntry *e, float *out);

#endif
