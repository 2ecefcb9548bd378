/* tensor.c: tensor views, the arena and the tape. See tensor.h. */
#include "autograd/tensor.h"

#include <stdlib.h>
#include <string.h>

void tensor_view(Tensor *t, float *data, float *grad, int ndim, const int *shape,
                 TensorKind kind, const char *name) {
    ASSERT(ndim >= 1 && ndim <= TENSOR_MAX_DIMS, "ndim %d", ndim);
    memset(t, 0, sizeof *t);
    t->data = data;
    t->grad = grad;
    t->ndim = ndim;
    t->n = 1;
    for (int i = 0; i < ndim; i++) {
        ASSERT(shape[i] >= 0, "shape[%d] = %d", i, shape[i]);
        t->shape[i] = shape[i];
        t->n *= (size_t)shape[i];
    }
    t->kind = kind;
    t->requires_grad = (kind == TENSOR_PARAM);
    t->name = name;
}

size_t tensor_rows(const Tensor *t) {
    return t->n / (size_t)(t->shape[t->ndim - 1] ? t->shape[t->ndim - 1] : 1);
}
int tensor_cols(const Tensor *t) { return t->shape[t->ndim - 1]; }

/* ---- arena ---- */

void arena_init(Arena *a, size_t chunk_size) {
    memset(a, 0, sizeof *a);
    a->chunk_size = chunk_size ? chunk_size : ((size_t)64 << 20);
}

void arena_free(Arena *a) {
    for (int i = 0; i < a->n_chunks; i++) moe_free(a->chunks[i].base);
    moe_free(a->chunks);
    memset(a, 0, sizeof *a);
}

void *arena_alloc(Arena *a, size_t bytes) {
    size_t need = (bytes + MOE_ALIGN - 1) & ~(size_t)(MOE_ALIGN - 1);
    if (need == 0) need = MOE_ALIGN;
    /* Use the current chunk, else the next existing one that fits; the same sequence of
     * requests every step therefore lands in the same places without new chunks. */
    while (a->cur < a->n_chunks) {
        ArenaChunk *c = &a->chunks[a->cur];
        if (c->cap - c->used >= need) {
            void *p = c->base + c->used;
            c->used += need;
            size_t u = arena_used(a);
            if (u > a->high_water) a->high_water = u;
            return p;
        }
        a->cur++;
        if (a->cur < a->n_chunks) a->chunks[a->cur].used = 0;
    }
    size_t cap = need > a->chunk_size ? need : a->chunk_size;
    a->chunks = moe_realloc(a->chunks, sizeof(ArenaChunk) * (size_t)a->n_chunks,
                            sizeof(ArenaChunk) * (size_t)(a->n_chunks + 1));
    ArenaChunk *c = &a->chunks[a->n_chunks++];
    c->base = moe_malloc(cap);
    c->cap = cap;
    c->used = need;
    a->cur = a->n_chunks - 1;
    a->grows++;
    size_t u = arena_used(a);
    if (u > a->high_water) a->high_water = u;
    return c->base;
}

float *arena_floats(Arena *a, size_t n) { return arena_alloc(a, n * sizeof(float)); }

float *arena_zeros(Arena *a, size_t n) {
    float *p = arena_alloc(a, n * sizeof(float));
    memset(p, 0, n * sizeof(float));
    return p;
}

int32_t *arena_ints(Arena *a, size_t n) { return arena_alloc(a, n * sizeof(int32_t)); }

void arena_reset(Arena *a) {
    a->cur = 0;
    for (int i = 0; i < a->n_chunks; i++) a->chunks[i].used = 0;
}

void arena_compact(Arena *a) {
    if (a->n_chunks <= 1) return;
    size_t cap = a->high_water + a->high_water / 16;
    for (int i = 0; i < a->n_chunks; i++) moe_free(a->chunks[i].base);
    a->n_chunks = 1;
    a->chunks[0].base = moe_malloc(cap);
    a->chunks[0].cap = cap;
    a->chunks[0].used = 0;
    a->cur = 0;
    a->grows++;
}

size_t arena_used(const Arena *a) {
    size_t u = 0;
    for (int i = 0; i < a->n_chunks && i <= a->cur; i++) u += a->chunks[i].used;
    return u;
}

/* ---- tape ---- */

void tape_init(Tape *t, size_t chunk_size) {
    memset(t, 0, sizeof *t);
    arena_init(&t->arena, chunk_size);
    arena_init(&t->grad_arena, chunk_size);
    t->record = true;
    t->plan_grads = true;
}

static void grad_plan_free(struct GradPlan *p);

void tape_free(Tape *t) {
    if (t->sub) {
        tape_free(t->sub);
        moe_free(t->sub);
    }
    grad_plan_free(t->plan);
    moe_free(t->scratch);
    moe_free(t->ops);
    arena_free(&t->arena);
    arena_free(&t->grad_arena);
    memset(t, 0, sizeof *t);
}

void tape_compact(Tape *t) {
    t->n = 0;
    arena_compact(&t->arena);
    if (t->sub) tape_compact(t->sub);
}

void tape_reset(Tape *t, bool record) {
    t->n = 0;
    arena_reset(&t->arena);
    arena_reset(&t->grad_arena);
    t->record = record;
}

Tensor *tape_tensor(Tape *t, int ndim, const int *shape, bool requires_grad) {
    Tensor *x = arena_alloc(&t->arena, sizeof(Tensor));
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    tensor_view(x, arena_floats(&t->arena, n ? n : 1), NULL, ndim, shape, TENSOR_ACT, NULL);
    x->requires_grad = requires_grad && t->record;
    return x;
}

Tensor *tape_tensor2(Tape *t, int rows, int cols, bool requires_grad) {
    int shape[2] = {rows, cols};
    return tape_tensor(t, 2, shape, requires_grad);
}

Tensor *tape_const(Tape *t, int ndim, const int *shape) {
    Tensor *x = tape_tensor(t, ndim, shape, false);
    x->kind = TENSOR_CONST;
    return x;
}

bool tape_needs_grad(const Tape *t, const Tensor *a, const Tensor *b, const Tensor *c) {
    if (!t->record) return false;
    return (a && a->requires_grad) || (b && b->requires_grad) || (c && c->requires_grad);
}

void tape_region(Tape *t, int region) {
    ASSERT(region >= 0 && region < TAPE_MAX_REGIONS, "region %d", region);
    if (t->profile) {
        double now = moe_now();
        t->fwd_time[t->region] += now - t->region_t0;
        t->region_t0 = now;
    }
    t->region = region;
}

TapeOp *tape_push(Tape *t, const char *name, BackwardFn bw, Tensor *out) {
    if (!t->record) return NULL;
    if (t->n == t->cap) {
        int ncap = t->cap ? 2 * t->cap : 256;
        t->ops = moe_realloc(t->ops, sizeof(TapeOp) * (size_t)t->cap,
                             sizeof(TapeOp) * (size_t)ncap);
        t->cap = ncap;
    }
    TapeOp *op = &t->ops[t->n++];
    memset(op, 0, sizeof *op);
    op->name = name;
    op->backward = bw;
    op->out = out;
    op->region = t->region;
    return op;
}

/* ---- activation-grad liveness plan (see tape_backward in tensor.h) ---- */

typedef struct GradPlan {
    int n, cap;               /* ops in the planned tape; capacity of the arrays below */
    const char **name;        /* (cap) op names: part of the signature */
    size_t *size;             /* (cap) floats of the op's output grad, 0 = no planned grad */
    int *last;                /* (cap) last consumer op (the interval's end), signature */
    size_t *off;              /* (cap) offset of the grad region in buf, floats */
    int *order;               /* (cap) planned ops sorted by last descending: zeroing order */
    int *tmp;                 /* (cap) scratch: new last consumers, then overlap lists */
    int n_order;
    const Tensor **hkey;      /* (hcap) open-addressing map out tensor -> op index */
    int *hval;                /* (hcap) */
    int hcap;
    size_t total;             /* floats the plan uses */
    float *buf;               /* (buf_cap) owned, 64-byte aligned */
    size_t buf_cap;
    bool valid;               /* the arrays describe a plan */
} GradPlan;

static void grad_plan_free(GradPlan *p) {
    if (!p) return;
    moe_free(p->name);
    moe_free(p->size);
    moe_free(p->last);
    moe_free(p->off);
    moe_free(p->order);
    moe_free(p->tmp);
    moe_free(p->hkey);
    moe_free(p->hval);
    moe_free(p->buf);
    moe_free(p);
}

/* Capacity for n ops (allocates only when the tape is longer than any before). */
static void grad_plan_reserve(GradPlan *p, int n) {
    if (n <= p->cap) return;
    int cap = p->cap ? p->cap : 64;
    while (cap < n) cap *= 2;
    moe_free(p->name);
    moe_free(p->size);
    moe_free(p->last);
    moe_free(p->off);
    moe_free(p->order);
    moe_free(p->tmp);
    moe_free(p->hkey);
    moe_free(p->hval);
    p->name = moe_malloc(sizeof(char *) * (size_t)cap);
    p->size = moe_malloc(sizeof(size_t) * (size_t)cap);
    p->last = moe_malloc(sizeof(int) * (size_t)cap);
    p->off = moe_malloc(sizeof(size_t) * (size_t)cap);
    p->order = moe_malloc(sizeof(int) * (size_t)cap);
    p->tmp = moe_malloc(sizeof(int) * (size_t)cap);
    p->hcap = 4 * cap;   /* power of two, load <= 1/4 */
    p->hkey = moe_malloc(sizeof(Tensor *) * (size_t)p->hcap);
    p->hval = moe_malloc(sizeof(int) * (size_t)p->hcap);
    p->cap = cap;
    p->valid = false;
}

static size_t ptr_hash(const Tensor *x, int hcap) {
    uint64_t h = (uint64_t)(uintptr_t)x * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & (size_t)(hcap - 1);
}

static void hmap_put(GradPlan *p, const Tensor *x, int v) {
    size_t h = ptr_hash(x, p->hcap);
    while (p->hkey[h]) h = (h + 1) & (size_t)(p->hcap - 1);
    p->hkey[h] = x;
    p->hval[h] = v;
}

static int hmap_get(const GradPlan *p, const Tensor *x) {
    size_t h = ptr_hash(x, p->hcap);
    while (p->hkey[h]) {
        if (p->hkey[h] == x) return p->hval[h];
        h = (h + 1) & (size_t)(p->hcap - 1);
    }
    return -1;
}

static const GradPlan *g_sort_plan;   /* qsort context (planning is single-threaded) */

static int cmp_size_desc(const void *a, const void *b) {
    const GradPlan *p = g_sort_plan;
    int i = *(const int *)a, j = *(const int *)b;
    if (p->size[i] != p->size[j]) return p->size[i] > p->size[j] ? -1 : 1;
    return i - j;
}

static int cmp_last_desc(const void *a, const void *b) {
    const GradPlan *p = g_sort_plan;
    int i = *(const int *)a, j = *(const int *)b;
    if (p->last[i] != p->last[j]) return p->last[j] - p->last[i];
    return j - i;
}

static int cmp_off_asc(const void *a, const void *b) {
    const GradPlan *p = g_sort_plan;
    int i = *(const int *)a, j = *(const int *)b;
    if (p->off[i] != p->off[j]) return p->off[i] < p->off[j] ? -1 : 1;
    return i - j;
}

/* Greedy interval allocation: ops by size descending; each goes at the lowest offset that
 * does not overlap a placed region whose interval [op, last] intersects its own. scratch
 * holds cap ints. O(n^2 log n) once per distinct tape. */
static void grad_plan_assign(GradPlan *p, int *scratch) {
    int m = 0;
    for (int i = 0; i < p->n; i++)
        if (p->size[i]) p->order[m++] = i;
    p->n_order = m;
    g_sort_plan = p;
    qsort(p->order, (size_t)m, sizeof(int), cmp_size_desc);
    size_t total = 0;
    for (int a = 0; a < m; a++) {
        const int i = p->order[a];
        int nc = 0;
        for (int b = 0; b < a; b++) {
            const int j = p->order[b];
            if (j <= p->last[i] && i <= p->last[j]) scratch[nc++] = j;   /* closed overlap */
        }
        qsort(scratch, (size_t)nc, sizeof(int), cmp_off_asc);
        size_t off = 0;
        for (int b = 0; b < nc; b++) {
            const int j = scratch[b];
            if (off + p->size[i] <= p->off[j]) break;
            const size_t end = p->off[j] + p->size[j];
            if (end > off) off = end;
        }
        p->off[i] = off;
        if (off + p->size[i] > total) total = off + p->size[i];
    }
    qsort(p->order, (size_t)m, sizeof(int), cmp_last_desc);
    p->total = total;
    p->valid = true;
}

/* Plans (or re-uses the plan for) the activation grads of t and points them into the
 * buffer. Regions are not zeroed here. Allocates only on a new, larger tape. */
static GradPlan *grad_plan_apply(Tape *t, int n_out, Tensor *const *outs) {
    if (!t->plan) t->plan = moe_calloc(sizeof(GradPlan));
    GradPlan *p = t->plan;
    const int n = t->n;
    grad_plan_reserve(p, n + 1);
    memset(p->hkey, 0, sizeof(Tensor *) * (size_t)p->hcap);
    /* Signature of this tape: names, planned sizes, last consumers. */
    bool same = p->valid && p->n == n;
    for (int i = 0; i < n; i++) {
        const Tensor *o = t->ops[i].out;
        size_t sz = 0;
        if (o && o->kind == TENSOR_ACT && o->requires_grad && !o->grad) {
            sz = (o->n ? o->n : 1);
            sz = (sz + 15) & ~(size_t)15;   /* keep every region 64-byte aligned */
            if (hmap_get(p, o) < 0) hmap_put(p, o, i);
            else sz = 0;                    /* the same tensor output twice: plan once */
        }
        if (same && (p->name[i] != t->ops[i].name || p->size[i] != sz)) same = false;
        p->name[i] = t->ops[i].name;
        p->size[i] = sz;
    }
    int *last = p->tmp;     /* the new last consumers, compared with the plan's below */
    for (int i = 0; i < n; i++) last[i] = -1;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < TAPE_MAX_IN; k++) {
            const Tensor *x = t->ops[i].in[k];
            int j = x ? hmap_get(p, x) : -1;
            if (j >= 0 && j < i && i > last[j]) last[j] = i;
        }
    for (int i = 0; i < n; i++)
        if (last[i] < 0) last[i] = n - 1;                  /* never consumed */
    for (int k = 0; k < n_out; k++) {
        const int j = hmap_get(p, outs[k]);
        if (j >= 0) last[j] = n - 1;                       /* seeded: live from the start */
    }
    for (int i = 0; i < n; i++) {
        if (same && p->last[i] != last[i]) same = false;
        p->last[i] = last[i];
    }
    p->n = n;
    if (!same) {
        grad_plan_assign(p, p->tmp);
        if (p->total > p->buf_cap) {
            /* The first plan gets exactly its size; a later, larger one (e.g. capacity-
             * limited routing changing the expert rows) 1/8 headroom so it settles. */
            size_t cap = p->buf_cap ? p->total + p->total / 8 : p->total;
            moe_free(p->buf);
            p->buf = moe_malloc(sizeof(float) * (cap ? cap : 1));
            p->buf_cap = cap;
        }
    }
    for (int a = 0; a < p->n_order; a++) {
        const int i = p->order[a];
        t->ops[i].out->grad = p->buf + p->off[i];
    }
    return p;
}

float *tape_scratch(Tape *t, size_t n) {
    if (n < 16) n = 16;   /* never NULL, even for an empty op */
    if (n > t->scratch_cap) {
        const size_t cap = t->scratch_cap ? n + n / 8 : n;
        moe_free(t->scratch);
        t->scratch = moe_malloc(sizeof(float) * cap);
        t->scratch_cap = cap;
    }
    return t->scratch;
}

size_t tape_scratch_bytes(const Tape *t) {
    return t->scratch_cap * sizeof(float) + (t->sub ? tape_scratch_bytes(t->sub) : 0);
}

size_t tape_grad_plan_bytes(const Tape *t) {
    return t->plan && t->plan->valid ? t->plan->total * sizeof(float) : 0;
}

/* A mark's backward is never run: tape_backward recognises marks by it and calls the hook. */
static void mark_bw(TapeOp *op) { (void)op; }

void tape_backward(Tape *t, Tensor *out, const float *seed) {
    tape_backward_multi(t, 1, &out, &seed);
}

void tape_backward_multi(Tape *t, int n_out, Tensor *const *outs, const float *const *seeds) {
    ASSERT(t->record, "tape_backward on a tape that did not record");
    ASSERT(n_out >= 1, "backward from %d outputs", n_out);
    for (int k = 0; k < n_out; k++)
        ASSERT(outs[k]->requires_grad, "backward from a tensor that does not require grad "
               "(output %d)", k);
    GradPlan *p = NULL;
    int z = 0;   /* next entry of p->order to zero */
    if (t->plan_grads && t->n > 0) {
        p = grad_plan_apply(t, n_out, outs);
        /* Regions first written by the seed (interval end n-1) are zeroed now. */
        while (z < p->n_order && p->last[p->order[z]] == t->n - 1) {
            const int i = p->order[z++];
            memset(p->buf + p->off[i], 0, sizeof(float) * p->size[i]);
        }
    } else {
        /* Grads of activations: carved in forward order, zeroed. Parameters keep theirs. */
        for (int i = 0; i < t->n; i++) {
            Tensor *o = t->ops[i].out;
            if (o && o->kind == TENSOR_ACT && o->requires_grad && !o->grad)
                o->grad = arena_zeros(&t->grad_arena, o->n ? o->n : 1);
        }
    }
    for (int k = 0; k < n_out; k++) {
        Tensor *out = outs[k];
        ASSERT(out->grad, "output %d of backward has no grad buffer (not produced on this "
               "tape)", k);
        if (seeds[k]) {
            for (size_t j = 0; j < out->n; j++) out->grad[j] += seeds[k][j];
        } else {
            for (size_t j = 0; j < out->n; j++) out->grad[j] += 1.0f;
        }
    }
    for (int i = t->n - 1; i >= 0; i--) {
        /* Zero the regions whose first writer is this op's backward (their last consumer). */
        while (p && z < p->n_order && p->last[p->order[z]] == i) {
            const int j = p->order[z++];
            memset(p->buf + p->off[j], 0, sizeof(float) * p->size[j]);
        }
        TapeOp *op = &t->ops[i];
        if (op->out && op->out->requires_grad && op->backward) {
            double t0 = t->profile ? moe_now() : 0.0;
            op->backward(op);
            if (t->profile && op->region >= 0) t->bwd_time[op->region] += moe_now() - t0;
            if (t->hook) t->hook(t->hook_ctx, TAPE_HOOK_PROGRESS);
        } else if (!op->out && op->backward == mark_bw && t->hook) {
            t->hook(t->hook_ctx, op->i[0]);
        }
    }
}

void tape_mark(Tape *t, int id) {
    ASSERT(id >= 0, "tape_mark id %d", id);
    TapeOp *op = tape_push(t, "mark", mark_bw, NULL);
    if (op) op->i[0] = id;
}

/* ---- activation recomputation (see tensor.h) ---- */

/* What a checkpoint op needs to run its segment again; carved from the outer tape's arena. */
typedef struct Segment {
    Tape *t;                          /* the tape holding the checkpoint op */
    SegmentFn fn;
    void *ctx;
    int n_out;
    int region;                       /* t's profile region when the segment started */
    Tensor *out[TAPE_SEG_MAX_OUT];    /* the outputs' copies in t's arena (NULL: none) */
} Segment;

static Tape *tape_sub(Tape *t) {
    ASSERT(!t->is_sub, "checkpointed segments do not nest");
    if (!t->sub) {
        t->sub = moe_malloc(sizeof(Tape));
        tape_init(t->sub, t->arena.chunk_size);
        t->sub->is_sub = true;
    }
    t->sub->plan_grads = t->plan_grads;
    t->sub->profile = t->profile;
    return t->sub;
}

/* Run the segment on the reset sub tape s; with profiling its region times start at zero. */
static void segment_run(Tape *s, const Segment *g, bool recompute, bool record, Tensor *x,
                        Tensor **out) {
    tape_reset(s, record);
    if (s->profile) {
        memset(s->fwd_time, 0, sizeof s->fwd_time);
        memset(s->bwd_time, 0, sizeof s->bwd_time);
        s->region = g->region;
        s->region_t0 = moe_now();
    }
    for (int k = 0; k < TAPE_SEG_MAX_OUT; k++) out[k] = NULL;
    g->fn(s, g->ctx, recompute, x, out);
    ASSERT(out[0] != NULL, "segment set no first output");
    if (s->profile) tape_region(s, s->region);   /* close the last region */
}

static void checkpoint_bw(TapeOp *op) {
    const Segment *g = op->aux[0];
    Tape *t = g->t, *s = t->sub;
    /* The leaf shares x's data and grad: the segment's backward accumulates into x->grad
     * in the same order as if its ops were on t. */
    Tensor leaf = *op->in[0];
    Tensor *so[TAPE_SEG_MAX_OUT];
    s->hook = t->hook;   /* progress calls reach the caller from inside the segment too */
    s->hook_ctx = t->hook_ctx;
    segment_run(s, g, true, true, &leaf, so);
    Tensor *outs[TAPE_SEG_MAX_OUT];
    const float *seeds[TAPE_SEG_MAX_OUT];
    int n = 0;
    for (int k = 0; k < g->n_out; k++) {
        if (!g->out[k] || !g->out[k]->requires_grad) continue;
        ASSERT(so[k] && so[k]->n == g->out[k]->n && so[k]->requires_grad,
               "recomputed segment output %d differs from the first run", k);
        outs[n] = so[k];
        seeds[n++] = g->out[k]->grad;
    }
    tape_backward_multi(s, n, outs, seeds);
    if (t->profile)
        for (int r = 0; r < TAPE_MAX_REGIONS; r++)
            t->bwd_time[r] += s->fwd_time[r] + s->bwd_time[r];
}

void tape_checkpoint(Tape *t, SegmentFn fn, void *ctx, Tensor *x, int n_out, Tensor **out) {
    ASSERT(n_out >= 1 && n_out <= TAPE_SEG_MAX_OUT, "segment with %d outputs", n_out);
    Tape *s = tape_sub(t);
    if (t->profile) tape_region(t, t->region);   /* t's time so far goes to its region */
    Segment *g = arena_alloc(&t->arena, sizeof *g);
    memset(g, 0, sizeof *g);
    g->t = t;
    g->fn = fn;
    g->ctx = ctx;
    g->n_out = n_out;
    g->region = t->region;
    Tensor *so[TAPE_SEG_MAX_OUT];
    /* Recording here only tells which outputs require grad; s is reset before backward. */
    segment_run(s, g, false, t->record, x, so);
    if (t->profile) {
        for (int r = 0; r < TAPE_MAX_REGIONS; r++) t->fwd_time[r] += s->fwd_time[r];
        t->region = s->region;
        t->region_t0 = moe_now();
    }
    for (int k = 0; k < n_out; k++) {
        out[k] = NULL;
        if (!so[k]) continue;
        out[k] = tape_tensor(t, so[k]->ndim, so[k]->shape, so[k]->requires_grad);
        memcpy(out[k]->data, so[k]->data, sizeof(float) * so[k]->n);
        g->out[k] = out[k];
    }
    if (!out[0]->requires_grad) {
        for (int k = 1; k < n_out; k++)
            ASSERT(!out[k] || !out[k]->requires_grad,
                   "segment output %d requires grad but output 0 does not", k);
        return;
    }
    /* Extra outputs first: their grads are then live when the checkpoint's backward runs. */
    for (int k = 1; k < n_out; k++)
        if (out[k] && out[k]->requires_grad) tape_push(t, "segment_output", NULL, out[k]);
    TapeOp *op = tape_push(t, "checkpoint", checkpoint_bw, out[0]);
    op->in[0] = x;
    op->aux[0] = g;
    op->region = -1;   /* checkpoint_bw adds the segment's own region times */
}
