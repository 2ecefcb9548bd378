/* bf16.c: the packing loops of bf16.h. */
#include "autograd/bf16.h"

#include "core/pool.h"

typedef struct PackJob {
    const float *x;
    int cols, ld;
    uint16_t *h;   /* bf16 output, or NULL */
    float *f;      /* rounded-float output, or NULL */
} PackJob;

static void pack_rows(void *ctx, size_t lo, size_t hi) {
    const PackJob *j = ctx;
    for (size_t r = lo; r < hi; r++) {
        const float *x = j->x + r * (size_t)j->ld;
        if (j->h) {
            uint16_t *y = j->h + r * (size_t)j->cols;
            for (int c = 0; c < j->cols; c++) y[c] = bf16_from_f32(x[c]);
        } else {
            float *y = j->f + r * (size_t)j->cols;
            for (int c = 0; c < j->cols; c++) y[c] = bf16_round(x[c]);
        }
    }
}

static void pack(const float *x, int rows, int cols, int ld, uint16_t *h, float *f) {
    PackJob j = {x, cols, ld, h, f};
    const size_t n = (size_t)rows * (size_t)cols;
    if (pool_in_task()) pack_rows(&j, 0, (size_t)rows);
    else pool_parallel_range((size_t)rows, n, pack_rows, &j);
}

void bf16_pack(const float *x, int rows, int cols, int ld, uint16_t *y) {
    pack(x, rows, cols, ld, y, NULL);
}

void bf16_round_pack(const float *x, int rows, int cols, int ld, float *y) {
    pack(x, rows, cols, ld, NULL, y);
}

void bf16_pack_flat(const float *x, size_t n, uint16_t *y) {
    const size_t rows = n / 4096, rest = n - rows * 4096;
    if (rows) pack(x, (int)rows, 4096, 4096, y, NULL);
    if (rest) pack(x + rows * 4096, 1, (int)rest, (int)rest, y + rows * 4096, NULL);
}
