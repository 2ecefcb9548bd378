/* ops_rows.c: the row gathers of autograd/ops.h, op_embedding (rows of a table by token
 * id) and op_gather_rows (rows of the activations by routing slot), and their shared
 * kernels (ops_internal.h): the row copy and the scatter-add that inverts it.
 *
 * Threading: the copies are split into row ranges over the cores (pool_parallel_range).
 * A scatter-add (dx[dst[m]] += dy[m], destinations repeat) is split by destination row:
 * the forward groups the sources by destination once (RowRuns, a stable counting sort),
 * and each destination row gets its additions in increasing m from one thread, the order
 * of the serial loop, so every result is bit-identical at any thread count.
 * Non-goals: gathers along other axes, strided rows.
 */
#include "autograd/ops.h"

#include "autograd/ops_internal.h"
#include "core/pool.h"

#include <string.h>

/* ---------------- row gather and scatter-add ---------------- */

typedef struct RowCopy {
    float *y;
    const float *x;
    const int32_t *src;
    int C;
} RowCopy;

static void row_copy_range(void *ctx, size_t lo, size_t hi) {
    const RowCopy *k = ctx;
    for (size_t m = lo; m < hi; m++)
        memcpy(k->y + m * k->C, k->x + (size_t)k->src[m] * k->C, sizeof(float) * k->C);
}

void rows_gather(float *y, const float *x, const int32_t *src, int M, int C) {
    RowCopy k = {y, x, src, C};
    pool_parallel_range((size_t)M, (size_t)M * C, row_copy_range, &k);
}

RowRuns row_runs_build(Arena *a, const int32_t *dst, int M, int n_dst) {
    RowRuns r = {arena_ints(a, (size_t)M + 1), arena_ints(a, (size_t)M + 1), 0};
    /* counting sort by destination, stable: sources keep increasing m inside a run */
    int32_t *next = arena_ints(a, (size_t)n_dst + 1);   /* scratch: write cursor per dst */
    memset(next, 0, sizeof(int32_t) * ((size_t)n_dst + 1));
    for (int m = 0; m < M; m++)
        if (dst[m] >= 0) next[dst[m] + 1]++;
    for (int d = 0; d < n_dst; d++) next[d + 1] += next[d];
    const int P = next[n_dst];   /* sources with a destination */
    for (int m = 0; m < M; m++)
        if (dst[m] >= 0) r.order[next[dst[m]]++] = m;
    r.run[0] = 0;
    for (int j = 1; j < P; j++)
        if (dst[r.order[j]] != dst[r.order[j - 1]]) r.run[++r.n_runs] = j;
    if (P > 0) r.run[++r.n_runs] = P;
    return r;
}

typedef struct RowScatter {
    const RowRuns *r;
    const int32_t *dst;
    float *dx;
    const float *dy, *w;
    int per_row, C;
} RowScatter;

/* Runs [lo, hi): each destination row is one run, so ranges of runs write disjoint rows. */
static void row_scatter_range(void *ctx, size_t lo, size_t hi) {
    const RowScatter *k = ctx;
    const int C = k->C;
    for (size_t u = lo; u < hi; u++) {
        const int32_t j0 = k->r->run[u], j1 = k->r->run[u + 1];
        float *d = k->dx + (size_t)k->dst[k->r->order[j0]] * C;
        for (int32_t j = j0; j < j1; j++) {
            const int32_t m = k->r->order[j];
            const float *s = k->dy + (size_t)(m / k->per_row) * C;
            if (k->w) {
                const float g = k->w[m];
                for (int c = 0; c < C; c++) d[c] += g * s[c];
            } else {
                for (int c = 0; c < C; c++) d[c] += s[c];
            }
        }
    }
}

void row_runs_scatter_add(const RowRuns *r, const int32_t *dst, float *dx, const float *dy,
                          const float *w, int per_row, int C) {
    RowScatter k = {r, dst, dx, dy, w, per_row, C};
    const size_t P = r->n_runs > 0 ? (size_t)r->run[r->n_runs] : 0;
    pool_parallel_range((size_t)r->n_runs, P * C, row_scatter_range, &k);
}

/* ---------------- embedding ---------------- */

/* y (N, C) = w[ids[n]], w (V, C): rows copied over the cores. */
static void embedding_forward(float *y, const float *w, const int32_t *ids, int N, int C) {
    rows_gather(y, w, ids, N, C);
}

/* Inverts the row gather: dw[ids[n]] += dy[n] (scatter-add; repeated ids accumulate in
 * increasing n, the serial loop's order: the runs of the forward's RowRuns, over the cores). */
static void embedding_backward(float *dw, const float *dy, const int32_t *ids,
                               const RowRuns *runs, int C) {
    row_runs_scatter_add(runs, ids, dw, dy, NULL, 1, C);
}

static void op_embedding_bw(TapeOp *op) {
    float *dw = grad_of(op->in[0]);
    if (dw)
        embedding_backward(dw, op->out->grad, (const int32_t *)op->aux[0],
                           (const RowRuns *)op->aux[1], op->i[1]);
}

Tensor *op_embedding(Tape *t, Tensor *w, const int32_t *ids, int N) {
    ASSERT(w->ndim == 2, "embedding: table must be 2-D (V, C), got %d dims", w->ndim);
    ASSERT(N >= 0, "embedding: N %d", N);
    int V = w->shape[0], C = w->shape[1];
    for (int n = 0; n < N; n++)
        ASSERT(ids[n] >= 0 && ids[n] < V, "embedding: ids[%d] = %d outside [0, %d)", n,
               (int)ids[n], V);
    bool needs = tape_needs_grad(t, w, NULL, NULL);
    Tensor *y = tape_tensor2(t, N, C, needs);
    embedding_forward(y->data, w->data, ids, N, C);
    if (needs) {
        TapeOp *op = tape_push(t, "embedding", op_embedding_bw, y);
        op->in[0] = w;
        op->i[0] = N;
        op->i[1] = C;
        op->aux[0] = (void *)ids; /* borrowed: valid until backward (ops.h contract) */
        /* positions grouped by id for the split scatter-add (arena) */
        RowRuns *runs = arena_alloc(&t->arena, sizeof *runs);
        *runs = row_runs_build(&t->arena, ids, N, V);
        op->aux[1] = runs;
    }
    return y;
}

/* ---------------- gather rows ---------------- */

static void gather_rows_backward(TapeOp *op) {
    Tensor *x = op->in[0], *out = op->out;
    if (!x->requires_grad) return;
    /* y[m] = x[rows[m]]  =>  dx[rows[m]] += dy[m]. Rows repeat (a token sits in up to K
     * slots): split by destination row, each row's additions in increasing m (RowRuns). */
    row_runs_scatter_add(op->aux[1], op->aux[0], x->grad, out->grad, NULL, 1, tensor_cols(x));
}

Tensor *op_gather_rows(Tape *t, Tensor *x, const int32_t *rows, int M) {
    const size_t N = tensor_rows(x);
    const int C = tensor_cols(x);
    ASSERT(M >= 0, "M %d", M);
    const bool need = tape_needs_grad(t, x, NULL, NULL);
    Tensor *out = tape_tensor2(t, M, C, need);
    for (int m = 0; m < M; m++)
        ASSERT(rows[m] >= 0 && (size_t)rows[m] < N, "rows[%d] = %d not in [0, %zu)", m,
               rows[m], N);
    rows_gather(out->data, x->data, rows, M, C);
    if (need) {
        TapeOp *op = tape_push(t, "gather_rows", gather_rows_backward, out);
        op->in[0] = x;
        op->i[0] = M;
        op->aux[0] = (void *)rows;   /* borrowed, read-only */
        RowRuns *runs = arena_alloc(&t->arena, sizeof *runs);   /* slots grouped by token */
        *runs = row_runs_build(&t->arena, rows, M, (int)N);
        op->aux[1] = runs;
    }
    return out;
}
