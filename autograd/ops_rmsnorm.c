/* ops_rmsnorm.c: op_rmsnorm (autograd/ops.h), y (N, C) = x / sqrt(mean(x^2) + eps) * g.
 *
 * The mean of squares is accumulated in double; the forward saves rstd (N) for backward.
 * Threading: rows are independent. When N*C >= POOL_SPLIT_MIN and N >= RMS_CHUNKS, the rows
 * are cut into RMS_CHUNKS fixed ranges run over the cores (pool_parallel_for); the gain
 * gradient is summed per range into its own (C) partial and the partials are added in
 * range order, so the result does not depend on the thread count.
 * Non-goals: LayerNorm (mean subtraction, bias), normalising over other axes.
 * Reference: Zhang & Sennrich 2019, "Root Mean Square Layer Normalization", eq. 4.
 */
#include "autograd/ops.h"

#include "autograd/ops_internal.h"
#include "autograd/vmath.h"
#include "core/pool.h"

#include <math.h>
#include <string.h>

/* ---------------- rmsnorm ---------------- */

/* Fixed row ranges of a split forward or backward (see the file comment); the gain
 * gradient has one (C) partial per range. */
#define RMS_CHUNKS 8

/* Rows [n0, n1): y (N, C) = x * rstd[n] * g, rstd (N) = 1 / sqrt(mean(x^2) + eps); the mean
 * of squares is accumulated in double (C can be thousands, and x^2 spans a wide range). */
static void rmsnorm_rows(float *y, float *rstd, const float *x, const float *g, int n0, int n1,
                         int C, float eps) {
    for (int n = n0; n < n1; n++) {
        const float *xr = x + (size_t)n * C;
        float *yr = y + (size_t)n * C;
        const double sum = vm_sumsq_f64(xr, (size_t)C);   /* vectorised partials */
        float r = (float)(1.0 / sqrt(sum / C + (double)eps));
        rstd[n] = r;
        for (int c = 0; c < C; c++) yr[c] = xr[c] * r * g[c];
    }
}

/* Inverts y_c = g_c x_c r, r = (mean(x^2) + eps)^-1/2, dr/dx_c = -r^3 x_c / C:
 *   dx_c += r g_c dy_c - x_c r^3 / C * sum_j dy_j g_j x_j;   dg_c += sum_n dy_nc x_nc r_n. */
static void rmsnorm_backward_rows(float *dx, float *dg, const float *dy, const float *x,
                                  const float *g, const float *rstd, int n0, int n1, int C) {
    for (int n = n0; n < n1; n++) {
        const float *xr = x + (size_t)n * C, *dyr = dy + (size_t)n * C;
        float r = rstd[n];
        if (dx) {
            float *dxr = dx + (size_t)n * C;
            double dp[8] = {0};
            int c = 0;
            for (; c + 8 <= C; c += 8)
                for (int j = 0; j < 8; j++)
                    dp[j] += (double)dyr[c + j] * (double)g[c + j] * (double)xr[c + j];
            for (; c < C; c++) dp[0] += (double)dyr[c] * (double)g[c] * (double)xr[c];
            double dot = ((dp[0] + dp[1]) + (dp[2] + dp[3])) + ((dp[4] + dp[5]) + (dp[6] + dp[7]));
            float k = (float)(dot * (double)r * (double)r * (double)r / C);
            for (c = 0; c < C; c++) dxr[c] += r * g[c] * dyr[c] - k * xr[c];
        }
        if (dg)
            for (int c = 0; c < C; c++) dg[c] += dyr[c] * xr[c] * r;
    }
}

typedef struct RmsTask {
    float *y, *rstd, *dx, *dg_part;   /* dg_part (RMS_CHUNKS, C), zeroed, or NULL */
    const float *x, *g, *dy;
    int N, C, chunks;
    float eps;
} RmsTask;

static void rmsnorm_task(void *ctx, int task, int worker) {
    (void)worker;
    const RmsTask *k = ctx;
    size_t lo, hi;
    pool_range((size_t)k->N, task, k->chunks, &lo, &hi);
    const int n0 = (int)lo, n1 = (int)hi;
    if (k->y) rmsnorm_rows(k->y, k->rstd, k->x, k->g, n0, n1, k->C, k->eps);
    else
        rmsnorm_backward_rows(k->dx, k->dg_part ? k->dg_part + (size_t)task * k->C : NULL, k->dy,
                              k->x, k->g, k->rstd, n0, n1, k->C);
}

static int rms_chunks(int N, int C) {
    return (size_t)N * (size_t)C >= POOL_SPLIT_MIN && N >= RMS_CHUNKS ? RMS_CHUNKS : 1;
}

static void op_rmsnorm_bw(TapeOp *op) {
    Tensor *x = op->in[0], *g = op->in[1];
    const int N = op->i[0], C = op->i[1];
    float *dx = grad_of(x), *dg = grad_of(g);
    if (!dx && !dg) return;
    RmsTask k = {NULL, (float *)op->aux[0], dx, NULL, x->data, g->data, op->out->grad, N, C,
                 rms_chunks(N, C), 0.0f};
    if (k.chunks == 1) {
        rmsnorm_backward_rows(dx, dg, k.dy, k.x, k.g, k.rstd, 0, N, C);
        return;
    }
    if (dg) {
        k.dg_part = op->aux[1];
        memset(k.dg_part, 0, sizeof(float) * (size_t)RMS_CHUNKS * C);
    }
    pool_parallel_for(k.chunks, rmsnorm_task, &k);
    if (dg)
        for (int j = 0; j < RMS_CHUNKS; j++)
            for (int c = 0; c < C; c++) dg[c] += k.dg_part[(size_t)j * C + c];
}

Tensor *op_rmsnorm(Tape *t, Tensor *x, Tensor *g, float eps) {
    int C = tensor_cols(x);
    size_t rows = tensor_rows(x);
    ASSERT(g->n == (size_t)C, "rmsnorm: g has %zu elements, x has %d cols", g->n, C);
    ASSERT(rows <= (size_t)INT32_MAX, "rmsnorm: %zu rows", rows);
    ASSERT(eps >= 0.0f, "rmsnorm: eps %g < 0", (double)eps);
    int N = (int)rows;
    bool needs = tape_needs_grad(t, x, g, NULL);
    Tensor *y = tape_like(t, x, needs);
    float *rstd = arena_floats(&t->arena, (size_t)N);
    RmsTask k = {y->data, rstd, NULL, NULL, x->data, g->data, NULL, N, C, rms_chunks(N, C), eps};
    if (k.chunks == 1) rmsnorm_rows(y->data, rstd, x->data, g->data, 0, N, C, eps);
    else pool_parallel_for(k.chunks, rmsnorm_task, &k);
    if (needs) {
        TapeOp *op = tape_push(t, "rmsnorm", op_rmsnorm_bw, y);
        op->in[0] = x;
        op->in[1] = g;
        op->f[0] = (double)eps;
        op->i[0] = N;
        op->i[1] = C;
        op->aux[0] = rstd;
        /* (RMS_CHUNKS, C) gain-gradient partials of the split backward */
        op->aux[1] = k.chunks > 1 ? arena_floats(&t->arena, (size_t)RMS_CHUNKS * C) : NULL;
    }
    return y;
}
