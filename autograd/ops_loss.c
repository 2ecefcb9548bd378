/* ops_loss.c: row softmax and the language-model loss (autograd/ops.h): op_softmax,
 * op_cross_entropy, and the LM head fused with the loss, op_linear_cross_entropy (the
 * (N, V) logits buffer becomes the loss gradient in place) and
 * op_linear_cross_entropy_chunked (rows a chunk at a time: no (N, V) buffer at all).
 *
 * Every softmax subtracts its row max first (exp <= 1, no overflow) and sums in double.
 * Threading: op_softmax and op_cross_entropy are single-threaded loops; the fused head's
 * rows are split into pool_workers() ranges (pool_parallel_for), each summing its own loss
 * partial, added in range order afterwards: the partition, and so the last bits of the
 * loss, depend on the worker count; the gradients do not. The head products are
 * gemm calls (autograd/gemm.h).
 * The ignore label: a target LOSS_IGNORE (core/common.h) contributes nothing to the loss or
 * to any gradient (its row of the loss gradient is exactly zero), and is not counted in the
 * mean. The mean divides by `denom` when the caller gives one (> 0:
 * the count of non-ignored targets over a whole data-parallel, accumulated batch, so that
 * every call of it shares one denominator), else by this call's own count; with nothing to
 * divide by (no non-ignored target) the loss is 0 and no gradient flows.
 * Non-goals: label smoothing, class weights, a softmax over other axes.
 * Reference: llm.c's fused classifier (Karpathy 2024, train_gpt2.cu: the softmax, the
 * loss and its gradient in one pass over the logits).
 */
#include "autograd/gemm.h"
#include "autograd/ops.h"

#include "autograd/ops_internal.h"
#include "autograd/vmath.h"
#include "core/pool.h"

#include <math.h>
#include <string.h>

/* ---------------- softmax ---------------- */

/* y (N, M) = softmax of each row; subtracting the row max keeps exp() <= 1. */
static void softmax_forward(float *y, const float *x, int N, int M) {
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * M;
        float *yr = y + (size_t)n * M;
        float mx = -INFINITY;
        for (int m = 0; m < M; m++) mx = fmaxf(mx, xr[m]);
        double sum = 0.0;
        for (int m = 0; m < M; m++) {
            yr[m] = expf(xr[m] - mx);
            sum += (double)yr[m];
        }
        float inv = (float)(1.0 / sum);
        for (int m = 0; m < M; m++) yr[m] *= inv;
    }
}

/* Inverts the softmax Jacobian: dx_m += y_m (dy_m - sum_j dy_j y_j). */
static void softmax_backward(float *dx, const float *dy, const float *y, int N, int M) {
    for (int n = 0; n < N; n++) {
        const float *yr = y + (size_t)n * M, *dyr = dy + (size_t)n * M;
        float *dxr = dx + (size_t)n * M;
        double dot = 0.0;
        for (int m = 0; m < M; m++) dot += (double)dyr[m] * (double)yr[m];
        float d = (float)dot;
        for (int m = 0; m < M; m++) dxr[m] += yr[m] * (dyr[m] - d);
    }
}

static void op_softmax_bw(TapeOp *op) {
    float *dx = grad_of(op->in[0]);
    if (dx) softmax_backward(dx, op->out->grad, op->out->data, op->i[0], op->i[1]);
}

Tensor *op_softmax(Tape *t, Tensor *x) {
    int M = tensor_cols(x);
    size_t rows = tensor_rows(x);
    ASSERT(M > 0, "softmax: empty rows");
    ASSERT(rows <= (size_t)INT32_MAX, "softmax: %zu rows", rows);
    bool needs = tape_needs_grad(t, x, NULL, NULL);
    Tensor *y = tape_like(t, x, needs);
    softmax_forward(y->data, x->data, (int)rows, M);
    if (needs) {
        TapeOp *op = tape_push(t, "softmax", op_softmax_bw, y);
        op->in[0] = x;
        op->i[0] = (int)rows;
        op->i[1] = M;
    }
    return y;
}

/* ---------------- cross-entropy ---------------- */

/* The divisor of the mean: denom when given (> 0), else the call's own count (0: none). */
static double loss_divisor(double denom, int count) { return denom > 0 ? denom : count; }

/* loss = scale / d * sum_{n: tgt[n] != LOSS_IGNORE} (lse[n] - logits[n, tgt[n]]) with d =
 * loss_divisor(denom, count), lse = max + log(sum exp(x - max)) (no overflow). Writes lse (N)
 * (rows with an ignored target are skipped and left unset) and returns the loss (0 when d is
 * 0); *count gets the valid rows. */
static float cross_entropy_forward(float *lse, const float *logits, const int32_t *tgt, int N,
                                   int V, float scale, double denom, int *count) {
    double loss = 0.0;
    int cnt = 0;
    for (int n = 0; n < N; n++) {
        if (tgt[n] == LOSS_IGNORE) continue;
        const float *xr = logits + (size_t)n * V;
        float mx = -INFINITY;
        for (int v = 0; v < V; v++) mx = fmaxf(mx, xr[v]);
        double sum = 0.0;
        for (int v = 0; v < V; v++) sum += (double)expf(xr[v] - mx);
        double l = (double)mx + log(sum);
        lse[n] = (float)l;
        loss += l - (double)xr[tgt[n]];
        cnt++;
    }
    *count = cnt;
    const double d = loss_divisor(denom, cnt);
    return d > 0 ? (float)((double)scale * loss / d) : 0.0f;
}

/* Inverts the loss: dlogits[n] += (softmax(logits[n]) - onehot(tgt[n])) * k,
 * k = scale * dloss / divisor; ignored rows get nothing. */
static void cross_entropy_backward(float *dlogits, const float *logits, const float *lse,
                                   const int32_t *tgt, int N, int V, float k) {
    for (int n = 0; n < N; n++) {
        if (tgt[n] == LOSS_IGNORE) continue;
        const float *xr = logits + (size_t)n * V;
        float *dr = dlogits + (size_t)n * V;
        float l = lse[n];
        for (int v = 0; v < V; v++) dr[v] += expf(xr[v] - l) * k;
        dr[tgt[n]] -= k;
    }
}

static void op_cross_entropy_bw(TapeOp *op) {
    float *dx = grad_of(op->in[0]);
    const double d = op->f[1];
    if (!dx || op->i[2] == 0 || d <= 0) return;   /* no valid row: no gradient */
    float k = (float)(op->f[0] * (double)op->out->grad[0] / d);
    cross_entropy_backward(dx, op->in[0]->data, (const float *)op->aux[0],
                           (const int32_t *)op->aux[1], op->i[0], op->i[1], k);
}

Tensor *op_cross_entropy(Tape *t, Tensor *logits, const int32_t *targets, float scale,
                         double denom) {
    int V = tensor_cols(logits);
    size_t rows = tensor_rows(logits);
    ASSERT(V > 0, "cross_entropy: empty vocab");
    ASSERT(rows <= (size_t)INT32_MAX, "cross_entropy: %zu rows", rows);
    int N = (int)rows;
    for (int n = 0; n < N; n++)
        ASSERT(targets[n] >= LOSS_IGNORE && targets[n] < V,
               "cross_entropy: targets[%d] = %d outside [LOSS_IGNORE, V = %d)", n,
               (int)targets[n], V);
    bool needs = tape_needs_grad(t, logits, NULL, NULL);
    Tensor *y = tape_scalar(t, needs);
    float *lse = arena_floats(&t->arena, (size_t)N);
    int count = 0;
    y->data[0] = cross_entropy_forward(lse, logits->data, targets, N, V, scale, denom, &count);
    if (needs) {
        TapeOp *op = tape_push(t, "cross_entropy", op_cross_entropy_bw, y);
        op->in[0] = logits;
        op->i[0] = N;
        op->i[1] = V;
        op->i[2] = count;
        op->f[0] = (double)scale;
        op->f[1] = loss_divisor(denom, count);
        op->aux[0] = lse;
        op->aux[1] = (void *)targets; /* borrowed: valid until backward */
    }
    return y;
}

/* ---------------- fused head + loss ---------------- */

/* Fused LM head and cross-entropy: the (N, V) buffer holds the logits, and when recording
 * is then overwritten in place by d(loss)/d(logits) per unit upstream gradient,
 * (softmax - onehot) * scale / divisor, which is all backward needs: the logits never get
 * a separate gradient buffer and each exp is computed once (llm.c's fused classifier). */
static void op_linear_ce_bw(TapeOp *op) {
    Tensor *x = op->in[0], *w = op->in[1];
    const float *dl = op->aux[0];
    const int N = op->i[0], C = op->i[1], V = op->i[2];
    const float g = op->out->grad[0];
    float *dx = grad_of(x), *dw = grad_of(w);
    /* inverts logits = x W^T with dlogits = g * dl */
    if (dx)
        gemm(false, false, N, C, V, g, dl, V, w->data, C,
                    1.0f, dx, C);
    if (dw)
        gemm(true, false, V, C, N, g, dl, V, x->data, C,
                    1.0f, dw, C);
}

typedef struct LceTask {
    float *L;                 /* (N, V) logits in, loss gradient out (when needs) */
    const int32_t *targets;
    int N, V;
    float k;                  /* scale / divisor (0 when there is none) */
    bool needs;
    double loss[POOL_MAX_WORKERS];   /* per task: sum of (lse - logit[target]) */
    int workers;
} LceTask;

/* Rows [N w / W, N (w+1) / W): loss terms, and (when recording) the rows overwritten by
 * (softmax - onehot) * k. */
static void linear_ce_rows(void *ctx, int task, int worker) {
    (void)worker;
    LceTask *a = ctx;
    size_t lo, hi;
    pool_range((size_t)a->N, task, a->workers, &lo, &hi);
    const int V = a->V, k0 = (int)lo, k1 = (int)hi;
    const float k = a->k;
    double loss = 0.0;
    for (int n = k0; n < k1; n++) {
        float *r = a->L + (size_t)n * V;
        const int tg = a->targets[n];
        if (tg == LOSS_IGNORE) {
            if (a->needs) memset(r, 0, sizeof(float) * (size_t)V);   /* no gradient */
            continue;
        }
        const float mx = vm_max(r, V);
        const float at = r[tg];
        double sum;
        if (a->needs) {
            for (int v = 0; v < V; v++) r[v] = vm_expf(r[v] - mx);
            sum = vm_sum_f64(r, V);
            const float inv = (float)(1.0 / sum) * k;
            for (int v = 0; v < V; v++) r[v] *= inv;
            r[tg] -= k;
        } else {
            /* the logits are the caller's output: exponentiate a chunk at a time */
            float e[256];
            sum = 0.0;
            for (int v0 = 0; v0 < V; v0 += 256) {
                const int m = V - v0 < 256 ? V - v0 : 256;
                for (int v = 0; v < m; v++) e[v] = vm_expf(r[v0 + v] - mx);
                sum += vm_sum_f64(e, m);
            }
        }
        loss += (double)mx + log(sum) - (double)at;
    }
    a->loss[task] = loss;
}

Tensor *op_linear_cross_entropy(Tape *t, Tensor *x, Tensor *w, const int32_t *targets,
                                float scale, double denom, Tensor **logits) {
    ASSERT(w->ndim == 2, "linear_cross_entropy: weight must be 2-D");
    const int C = tensor_cols(x), V = w->shape[0];
    ASSERT(w->shape[1] == C, "linear_cross_entropy: x cols %d != W in %d", C, w->shape[1]);
    size_t rows = tensor_rows(x);
    ASSERT(rows <= (size_t)INT32_MAX, "linear_cross_entropy: %zu rows", rows);
    const int N = (int)rows;
    int count = 0;
    for (int n = 0; n < N; n++) {
        ASSERT(targets[n] >= LOSS_IGNORE && targets[n] < V,
               "linear_cross_entropy: targets[%d] = %d outside [LOSS_IGNORE, V = %d)", n,
               (int)targets[n], V);
        count += targets[n] != LOSS_IGNORE;
    }
    const bool needs = tape_needs_grad(t, x, w, NULL);
    Tensor *L = tape_tensor2(t, N, V, false);                      /* (N, V) */
    Tensor *y = tape_scalar(t, needs);
    if (N > 0) linear_forward(L->data, x->data, w->data, N, C, V);
    const double d = loss_divisor(denom, count);
    LceTask task = {L->data, targets, N, V, d > 0 ? scale / (float)d : 0.0f, needs,
                    {0.0}, pool_workers()};
    /* rows are independent: split them over the cores (no BLAS inside) */
    pool_parallel_for(task.workers, linear_ce_rows, &task);
    double loss = 0.0;
    for (int j = 0; j < task.workers; j++) loss += task.loss[j];   /* fixed order */
    y->data[0] = d > 0 ? (float)((double)scale * loss / d) : 0.0f;
    if (logits) *logits = needs ? NULL : L;
    if (needs && N > 0) {
        TapeOp *op = tape_push(t, "linear_cross_entropy", op_linear_ce_bw, y);
        op->in[0] = x;
        op->in[1] = w;
        op->i[0] = N;
        op->i[1] = C;
        op->i[2] = V;
        op->aux[0] = L->data;
    }
    return y;
}

/* ---------------- chunked head + loss ---------------- */

/* Chunked variant (ops.h): rows go through the (chunk, V) buffer in blocks; when recording,
 * each block's loss gradient is turned at once into its rows of dX = dlogits W (saved, (N, C))
 * and its share of dW = dlogits^T x (summed over blocks into a saved (V, C)), so no (N, V)
 * buffer exists. Backward only adds g * dX and g * dW (g = upstream grad of the loss). */
static void op_linear_ce_chunked_bw(TapeOp *op) {
    Tensor *x = op->in[0], *w = op->in[1];
    const float *dX = op->aux[0], *dW = op->aux[1];
    const float g = op->out->grad[0];
    float *dx = grad_of(x), *dw = grad_of(w);
    /* inverts loss(x W^T): d/dx = g dlogits W, d/dW = g dlogits^T x (summed in forward) */
    if (dx && dX) for (size_t j = 0; j < x->n; j++) dx[j] += g * dX[j];
    if (dw && dW) for (size_t j = 0; j < w->n; j++) dw[j] += g * dW[j];
}

Tensor *op_linear_cross_entropy_chunked(Tape *t, Tensor *x, Tensor *w, const int32_t *targets,
                                        float scale, double denom, int chunk) {
    ASSERT(w->ndim == 2, "linear_cross_entropy_chunked: weight must be 2-D");
    ASSERT(chunk >= 1, "linear_cross_entropy_chunked: chunk %d", chunk);
    const int C = tensor_cols(x), V = w->shape[0];
    ASSERT(w->shape[1] == C, "linear_cross_entropy_chunked: x cols %d != W in %d", C,
           w->shape[1]);
    size_t rows = tensor_rows(x);
    ASSERT(rows <= (size_t)INT32_MAX, "linear_cross_entropy_chunked: %zu rows", rows);
    const int N = (int)rows;
    int count = 0;
    for (int n = 0; n < N; n++) {
        ASSERT(targets[n] >= LOSS_IGNORE && targets[n] < V,
               "linear_cross_entropy_chunked: targets[%d] = %d outside [LOSS_IGNORE, V = %d)",
               n, (int)targets[n], V);
        count += targets[n] != LOSS_IGNORE;
    }
    const bool needs = tape_needs_grad(t, x, w, NULL);
    const int R = chunk < N ? chunk : (N > 0 ? N : 1);
    Tensor *y = tape_scalar(t, needs);
    float *L = arena_floats(&t->arena, (size_t)R * V);                    /* (R, V) scratch */
    float *dX = needs && x->requires_grad ? arena_floats(&t->arena, (size_t)N * C + 1) : NULL;
    float *dW = needs && w->requires_grad ? arena_zeros(&t->arena, (size_t)V * C) : NULL;
    const double d = loss_divisor(denom, count);
    const float k = d > 0 ? scale / (float)d : 0.0f;
    double loss = 0.0;
    for (int r0 = 0; r0 < N; r0 += R) {
        const int m = N - r0 < R ? N - r0 : R;
        const float *xr = x->data + (size_t)r0 * C;
        linear_forward(L, xr, w->data, m, C, V);
        LceTask task = {L, targets + r0, m, V, k, needs, {0.0}, pool_workers()};
        pool_parallel_for(task.workers, linear_ce_rows, &task);
        for (int j = 0; j < task.workers; j++) loss += task.loss[j];   /* fixed order */
        /* L now holds this block's d(loss)/d(logits) per unit upstream gradient */
        if (dX)
            gemm(false, false, m, C, V, 1.0f, L, V,
                        w->data, C, 0.0f, dX + (size_t)r0 * C, C);
        if (dW)
            gemm(true, false, V, C, m, 1.0f, L, V, xr, C,
                        1.0f, dW, C);
    }
    y->data[0] = d > 0 ? (float)((double)scale * loss / d) : 0.0f;
    if (needs && N > 0) {
        TapeOp *op = tape_push(t, "linear_cross_entropy_chunked", op_linear_ce_chunked_bw, y);
        op->in[0] = x;
        op->in[1] = w;
        op->i[0] = chunk;
        op->aux[0] = dX;
        op->aux[1] = dW;
    }
    return y;
}

