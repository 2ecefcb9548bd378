/* params.c: parameter blocks. See params.h. */
#include "autograd/params.h"
#include "autograd/bf16.h"
#include "autograd/gemm.h"

#include "autograd/vmath.h"
#include "core/pool.h"

#include <stdio.h>
#include <string.h>

void params_init(ParamSet *ps) { memset(ps, 0, sizeof *ps); }

int params_add(ParamSet *ps, const char *name, int block, int ndim, const int *shape,
               bool decay, ParamInit init, float init_std, int layer) {
    ASSERT(!ps->finalised, "params_add after params_finalise (%s)", name);
    ASSERT(block >= 0 && block < PBLOCK_COUNT, "block %d", block);
    if (ps->count == ps->cap) {
        int ncap = ps->cap ? 2 * ps->cap : 64;
        ps->p = moe_realloc(ps->p, sizeof(Param) * (size_t)ps->cap, sizeof(Param) * (size_t)ncap);
        ps->cap = ncap;
    }
    Param *p = &ps->p[ps->count];
    memset(p, 0, sizeof *p);
    ASSERT(strlen(name) < sizeof p->name, "parameter name too long: %s", name);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->block = block;
    p->decay = decay;
    p->trainable = true;
    p->init = init;
    p->init_std = init_std;
    p->layer = layer;
    tensor_view(&p->t, NULL, NULL, ndim, shape, TENSOR_PARAM, p->name);
    p->off = ps->blocks[block].n;
    /* Keep every tensor 16-float (64-byte) aligned inside its block. */
    ps->blocks[block].n += (p->t.n + 15) & ~(size_t)15;
    return ps->count++;
}

static void point_tensor(ParamSet *ps, Param *p) {
    ParamBlock *b = &ps->blocks[p->block];
    p->t.data = b->data + p->off;
    p->t.grad = p->trainable ? b->grad + p->goff : NULL;
    p->t.kind = p->trainable ? TENSOR_PARAM : TENSOR_FROZEN;
    p->t.requires_grad = p->trainable;
    p->t.name = p->name;
}

/* Lay out block b's grad/m/v over its trainable tensors (same 16-float alignment as the
 * values, in declaration order, so with every tensor trainable goff == off) and allocate
 * them zeroed; frees the old ones. */
static void layout_grads(ParamSet *ps, int b) {
    ParamBlock *bl = &ps->blocks[b];
    moe_free(bl->grad);
    moe_free(bl->m);
    moe_free(bl->v);
    bl->gn = 0;
    for (int i = 0; i < ps->count; i++) {
        Param *p = &ps->p[i];
        if (p->block != b || !p->trainable) continue;
        p->goff = bl->gn;
        bl->gn += (p->t.n + 15) & ~(size_t)15;
    }
    size_t g = bl->gn ? bl->gn : 16;
    bl->gpad = bl->gn;
    bl->gstage = 0;
    bl->shard_lo = 0;
    bl->shard_n = bl->gn;
    bl->grad = moe_calloc(g * sizeof(float));
    bl->m = moe_calloc(g * sizeof(float));
    bl->v = moe_calloc(g * sizeof(float));
}

void params_finalise(ParamSet *ps) {
    ASSERT(!ps->finalised, "params_finalise twice");
    for (int b = 0; b < PBLOCK_COUNT; b++) {
        size_t n = ps->blocks[b].n ? ps->blocks[b].n : 16;
        ps->blocks[b].data = moe_calloc(n * sizeof(float));
        layout_grads(ps, b);
    }
    for (int i = 0; i < ps->count; i++) point_tensor(ps, &ps->p[i]);
    ps->finalised = true;
}

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h;
}

static void init_span(float *d, size_t n, ParamInit init, float std, uint64_t key) {
    MoeRng r;
    switch (init) {
    case INIT_ONES:
        for (size_t j = 0; j < n; j++) d[j] = 1.0f;
        break;
    case INIT_ZEROS:
        memset(d, 0, n * sizeof(float));
        break;
    case INIT_NORMAL:
        rng_seed(&r, key);
        for (size_t j = 0; j < n; j++) d[j] = std * rng_normal(&r);
        break;
    case INIT_UNIFORM:   /* std is the bound b: U(-b, b) */
        rng_seed(&r, key);
        for (size_t j = 0; j < n; j++) d[j] = std * (float)(2.0 * rng_uniform(&r) - 1.0);
        break;
    }
}

void params_init_values(ParamSet *ps, uint64_t seed, int e_first) {
    for (int i = 0; i < ps->count; i++) {
        Param *p = &ps->p[i];
        uint64_t key = moe_hash4(seed, fnv1a(p->name), 0, 0);
        if (p->block == PBLOCK_EXPERT && strstr(p->name, "{e}")) {
            /* Stacked experts: each expert's slice has its own key from its GLOBAL index,
             * so the values do not depend on which rank holds it. */
            size_t per = p->t.n / (size_t)p->t.shape[0];
            for (int e = 0; e < p->t.shape[0]; e++)
                init_span(p->t.data + (size_t)e * per, per, p->init, p->init_std,
                          moe_hash4(seed, fnv1a(p->name), 1, (uint64_t)(e_first + e)));
        } else {
            init_span(p->t.data, p->t.n, p->init, p->init_std, key);
        }
    }
}

/* Zeroing is memory-bound: 8 fixed ranges over the cores use every core's bandwidth. */
typedef struct ZeroTask {
    float *g;
    size_t n;
} ZeroTask;

static void zero_task(void *ctx, int task, int worker) {
    (void)worker;
    const ZeroTask *k = ctx;
    size_t j0, j1;
    pool_range(k->n, task, 8, &j0, &j1);
    memset(k->g + j0, 0, (j1 - j0) * sizeof(float));
}

void params_zero_grad(ParamSet *ps) {
    for (int b = 0; b < PBLOCK_COUNT; b++) {
        if (!ps->blocks[b].grad) continue;
        ZeroTask k = {ps->blocks[b].grad, ps->blocks[b].gpad};
        if (k.n < POOL_SPLIT_MIN) memset(k.g, 0, k.n * sizeof(float));
        else pool_parallel_for(8, zero_task, &k);
    }
}

void params_set_trainable(ParamSet *ps, int idx, bool trainable) {
    ASSERT(idx >= 0 && idx < ps->count, "param index %d", idx);
    Param *p = &ps->p[idx];
    if (p->trainable == trainable) return;
    p->trainable = trainable;
    if (!ps->finalised) return;
    layout_grads(ps, p->block);
    for (int i = 0; i < ps->count; i++)
        if (ps->p[i].block == p->block) point_tensor(ps, &ps->p[i]);
}

void params_shard_block(ParamSet *ps, int b, int parts, int index, size_t stage) {
    ASSERT(parts >= 1 && index >= 0 && index < parts, "shard %d of %d", index, parts);
    ParamBlock *bl = &ps->blocks[b];
    ASSERT(bl->shard_lo == 0 && bl->shard_n >= bl->gn, "block %d: moments already sharded", b);
    const size_t unit = 16 * (size_t)parts;
    const size_t gpad = parts == 1 ? bl->gn : (bl->gn + unit - 1) / unit * unit;
    if (gpad != bl->gpad || stage != bl->gstage) {
        float *g = moe_calloc((gpad + stage ? gpad + stage : 16) * sizeof(float));
        memcpy(g, bl->grad, bl->gn * sizeof(float));
        moe_free(bl->grad);
        bl->grad = g;
        bl->gpad = gpad;
        bl->gstage = stage;
        for (int i = 0; i < ps->count; i++)
            if (ps->p[i].block == b) point_tensor(ps, &ps->p[i]);
    }
    const size_t n = gpad / (size_t)parts, lo = (size_t)index * n;
    float *m = moe_calloc((n ? n : 16) * sizeof(float));
    float *v = moe_calloc((n ? n : 16) * sizeof(float));
    const size_t keep = lo < bl->gn ? (lo + n < bl->gn ? n : bl->gn - lo) : 0;
    memcpy(m, bl->m + lo, keep * sizeof(float));
    memcpy(v, bl->v + lo, keep * sizeof(float));
    moe_free(bl->m);
    moe_free(bl->v);
    bl->m = m;
    bl->v = v;
    bl->shard_lo = lo;
    bl->shard_n = n;
}

size_t params_count(const ParamSet *ps, bool trainable_only) {
    size_t n = 0;
    for (int i = 0; i < ps->count; i++)
        if (!trainable_only || ps->p[i].trainable) n += ps->p[i].t.n;
    return n;
}

int params_find(const ParamSet *ps, const char *name) {
    for (int i = 0; i < ps->count; i++)
        if (strcmp(ps->p[i].name, name) == 0) return i;
    return -1;
}

void params_bf16_refresh(ParamSet *ps) {
    if (gemm_precision() != GEMM_BF16) return;
    for (int b = 0; b < PBLOCK_COUNT; b++) {
        ParamBlock *pb = &ps->blocks[b];
        if (!pb->n) continue;
        if (!pb->bf16) pb->bf16 = moe_malloc(sizeof(uint16_t) * pb->n);
        bf16_pack_flat(pb->data, pb->n, pb->bf16);
        gemm_bf16_register(pb->data, pb->n, pb->bf16);
    }
}

void params_bf16_drop(ParamSet *ps) {
    for (int b = 0; b < PBLOCK_COUNT; b++)
        if (ps->blocks[b].bf16) gemm_bf16_unregister(ps->blocks[b].data);
}

void params_free(ParamSet *ps) {
    for (int b = 0; b < PBLOCK_COUNT; b++) {
        if (ps->blocks[b].bf16) gemm_bf16_unregister(ps->blocks[b].data);
        moe_free(ps->blocks[b].bf16);
        moe_free(ps->blocks[b].data);
        moe_free(ps->blocks[b].grad);
        moe_free(ps->blocks[b].m);
        moe_free(ps->blocks[b].v);
    }
    moe_free(ps->p);
    memset(ps, 0, sizeof *ps);
}

/* The trainable gradients of a block are one contiguous buffer (grad, gn floats: tensors at
 * goff, zero padding between them), so the norm and the scaling are flat loops over it, cut
 * into GRAD_CHUNKS fixed ranges run over the cores. Each range sums its squares in double
 * with 8 independent partials (vectorisable) and the ranges are added in order: the norm
 * does not depend on the thread count. */
#define GRAD_CHUNKS 16

typedef struct GradTask {
    float *g;
    size_t n;
    float scale;          /* grad_scale: the factor */
    double part[GRAD_CHUNKS];   /* grad_sumsq: one sum per range */
    bool sumsq;
} GradTask;

static void grad_task(void *ctx, int task, int worker) {
    (void)worker;
    GradTask *k = ctx;
    size_t j0, j1;
    pool_range(k->n, task, GRAD_CHUNKS, &j0, &j1);
    float *g = k->g;
    if (!k->sumsq) {
        for (size_t j = j0; j < j1; j++) g[j] *= k->scale;
        return;
    }
    k->part[task] = vm_sumsq_f64(g + j0, j1 - j0);
}

double grad_sumsq_block(const ParamSet *ps, int block) {
    return grad_sumsq_range(ps, block, 0, ps->blocks[block].gn);
}

double grad_sumsq_range(const ParamSet *ps, int block, size_t lo, size_t n) {
    const ParamBlock *bl = &ps->blocks[block];
    if (!bl->grad || n == 0) return 0.0;
    ASSERT(lo + n <= bl->gpad, "gradient range [%zu, %zu) past %zu", lo, lo + n, bl->gpad);
    GradTask k = {bl->grad + lo, n, 1.0f, {0}, true};
    pool_parallel_for(GRAD_CHUNKS, grad_task, &k);
    double s = 0.0;
    for (int c = 0; c < GRAD_CHUNKS; c++) s += k.part[c];
    return s;
}

void grad_scale(ParamSet *ps, float s) {
    for (int b = 0; b < PBLOCK_COUNT; b++) grad_scale_range(ps, b, 0, ps->blocks[b].gn, s);
}

void grad_scale_range(ParamSet *ps, int block, size_t lo, size_t n, float s) {
    ParamBlock *bl = &ps->blocks[block];
    if (!bl->grad || n == 0) return;
    ASSERT(lo + n <= bl->gpad, "gradient range [%zu, %zu) past %zu", lo, lo + n, bl->gpad);
    GradTask k = {bl->grad + lo, n, s, {0}, false};
    pool_parallel_for(GRAD_CHUNKS, grad_task, &k);
}
