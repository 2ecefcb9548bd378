/* gguf.h: write and read GGUF version 3 files (the llama.cpp / ggml model format).
 *
 * Layout (ggml docs/gguf.md), all little-endian:
 *   u32 magic "GGUF", u32 version (3), u64 tensor_count, u64 kv_count
 *   kv_count x { string key, u32 value_type, value }
 *       string = u64 length + bytes (no NUL); array = u32 elem_type, u64 count, elems
 *   tensor_count x { string name, u32 n_dims, u64 ne[n_dims] (innermost first: ne[0] is
 *       the number of columns of a row-major [rows, cols] matrix), u32 ggml_type,
 *       u64 offset (from the start of the data section, multiple of the alignment) }
 *   padding to general.alignment (default 32), then the tensor data
 * Tensor types supported: F32 (0), F16 (1), Q8_0 (8: blocks of 32 values = f16 scale d +
 * 32 int8 q, x = d * q, 34 bytes a block; quantised as d = max|x| / 127, q = round(x / d)).
 *
 * The reader checks magic, version, counts against the file size, every string and array
 * length, value types, tensor dims and types, that offsets are aligned and every tensor's
 * bytes lie inside the file, and that no two tensors overlap; errors name the file, the
 * key or tensor, and the byte offset.
 *
 * Non-goals: GGUF v1/v2, big-endian files, k-quants and other quantisation types.
 */
#ifndef MOE_GGUF_H
#define MOE_GGUF_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "core/common.h"

#define GGUF_VERSION 3
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4

typedef enum {
    GGUF_T_UINT8 = 0, GGUF_T_INT8 = 1, GGUF_T_UINT16 = 2, GGUF_T_INT16 = 3,
    GGUF_T_UINT32 = 4, GGUF_T_INT32 = 5, GGUF_T_FLOAT32 = 6, GGUF_T_BOOL = 7,
    GGUF_T_STRING = 8, GGUF_T_ARRAY = 9, GGUF_T_UINT64 = 10, GGUF_T_INT64 = 11,
    GGUF_T_FLOAT64 = 12, GGUF_T_COUNT = 13
} GgufType;

typedef enum { GGML_F32 = 0, GGML_F16 = 1, GGML_Q8_0 = 8 } GgmlType;

/* Bytes of n values (n a multiple of 32 for Q8_0) of type t. */
size_t gguf_type_bytes(GgmlType t, size_t n);
/* Quantise / dequantise Q8_0: n values (multiple of 32) <-> n/32 blocks of 34 bytes. */
void gguf_quantize_q8_0(const float *x, size_t n, uint8_t *out);
void gguf_dequantize_q8_0(const uint8_t *in, size_t n, float *x);

/* ---- writer: collect key/values and tensors, then save once ---- */

typedef struct GgufWTensor {
    char *name;                  /* owned */
    int ndim;
    uint64_t ne[GGUF_MAX_DIMS];  /* innermost first */
    GgmlType type;
    uint8_t *data;               /* (nbytes) owned, already converted */
    size_t nbytes;
} GgufWTensor;

typedef struct GgufWriter {
    uint8_t *kv;                 /* (kv_n) serialised key/value pairs, owned */
    size_t kv_n, kv_cap;
    uint64_t n_kv;
    GgufWTensor *t;              /* (n_t) owned */
    size_t n_t, t_cap;
    size_t alignment;
} GgufWriter;

void gguf_w_init(GgufWriter *w, size_t alignment);
void gguf_w_free(GgufWriter *w);
void gguf_w_u32(GgufWriter *w, const char *key, uint32_t v);
void gguf_w_i32(GgufWriter *w, const char *key, int32_t v);
void gguf_w_f32(GgufWriter *w, const char *key, float v);
void gguf_w_bool(GgufWriter *w, const char *key, bool v);
void gguf_w_str(GgufWriter *w, const char *key, const char *v);
/* Arrays: strs[0..n) NUL-terminated strings; vals[0..n) int32. */
void gguf_w_arr_str(GgufWriter *w, const char *key, const char *const *strs, size_t n);
void gguf_w_arr_i32(GgufWriter *w, const char *key, const int32_t *vals, size_t n);
/* Add a tensor from float32 data (borrowed; converted and copied now). ne innermost first,
 * product of ne = number of floats; Q8_0 needs ne[0] % 32 == 0 (ASSERTed). */
void gguf_w_tensor(GgufWriter *w, const char *name, int ndim, const uint64_t *ne, GgmlType type,
                   const float *data);
/* Write the file atomically (temporary + fsync + rename). Fails (-1, err). */
int gguf_w_save(const GgufWriter *w, const char *path, MoeErr *err);

/* ---- reader ---- */

typedef struct GgufKv {
    char *key;                   /* owned */
    GgufType type;
    GgufType arr_type;           /* for ARRAY */
    uint64_t arr_n;              /* for ARRAY */
    size_t off;                  /* file offset of the value (array: of the first element) */
    size_t *str_off;             /* ARRAY of STRING: (arr_n) offsets of each string's length */
} GgufKv;

typedef struct GgufTensorInfo {
    char *name;                  /* owned */
    int ndim;
    uint64_t ne[GGUF_MAX_DIMS];
    GgmlType type;
    size_t n;                    /* elements */
    size_t off;                  /* absolute file offset of the data */
    size_t nbytes;
} GgufTensorInfo;

typedef struct GgufFile {
    char *path;                  /* owned */
    uint8_t *buf;                /* (size) the whole file, owned */
    size_t size;
    uint32_t version;
    GgufKv *kv;                  /* (n_kv) owned */
    size_t n_kv;
    GgufTensorInfo *t;           /* (n_t) owned */
    size_t n_t;
    size_t alignment, data_off;
} GgufFile;

/* Read and validate a GGUF file (see above). Release with gguf_close (also after failure). */
int gguf_open(GgufFile *f, const char *path, MoeErr *err);
void gguf_close(GgufFile *f);

/* Key lookup: index or -1. Typed getters fail (-1, err naming the key) when the key is
 * missing or has another type; integer getters accept any integer type whose value fits. */
int gguf_find(const GgufFile *f, const char *key);
int gguf_get_u32(const GgufFile *f, const char *key, uint32_t *v, MoeErr *err);
int gguf_get_f32(const GgufFile *f, const char *key, float *v, MoeErr *err);
/* String value: *s points into the file (not NUL-terminated), *len its length. */
int gguf_get_str(const GgufFile *f, const char *key, const char **s, size_t *len, MoeErr *err);
/* Element i of a string array kv (index from gguf_find). */
void gguf_arr_str(const GgufFile *f, int kv, size_t i, const char **s, size_t *len);

/* Tensor lookup: info or NULL. gguf_tensor_to_f32 converts (dequantises) all its values. */
const GgufTensorInfo *gguf_find_tensor(const GgufFile *f, const char *name);
void gguf_tensor_to_f32(const GgufFile *f, const GgufTensorInfo *t, float *out);

#endif
