/* zero.c: the sharded optimizer. See zero.h. */
#include "parallel/zero.h"

#include <math.h>
#include <string.h>

/* The reduce-scatter runs in pieces of at most ZERO_PIECE floats in all (each rank's part
 * of a piece: ZERO_PIECE / G): the R slices' next parts are packed into the staging area at
 * the end of the gradient buffer and reduce-scattered from there into the slice. One call
 * over the whole buffer made Open MPI 4.1 hold temporaries of its full size (measured:
 * +104 MiB resident per rank on mixtral_tiny at -n 4); in pieces they stay under 8 MiB.
 * The all-gather goes the same way (received into the staging area, copied out). The
 * extra pass over the pieces is memory-bound and small against the transfer. */
#define ZERO_PIECE ((size_t)1 << 21)

static size_t piece_of(size_t shard_n, int parts) {
    size_t s = ZERO_PIECE / (size_t)parts / 16 * 16;
    return s < 16 ? 16 : (s < shard_n ? s : shard_n);
}

/* Block b's replica group: its size G, this rank's index in it and its communicator.
 * False when the block is not to be sharded (no MPI, G = 1, or no trainable tensor). */
static bool group(const ParamSet *ps, const Comm *c, int b, int *parts, int *index,
                  MPI_Comm *mc) {
    *parts = 1;
    *index = 0;
    *mc = MPI_COMM_NULL;
    if (!c->mpi || ps->blocks[b].gn == 0) return false;
    if (b == PBLOCK_DENSE) {
        *parts = c->size;
        *index = c->rank;
        *mc = c->world;
    } else {
        *parts = c->edp;
        if (c->edp > 1) MPI_Comm_rank(c->edp_comm, index);
        else *index = 0;
        *mc = c->edp_comm;
    }
    return *parts > 1;
}

bool zero_block_sharded(const ParamSet *ps, int b) {
    const ParamBlock *bl = &ps->blocks[b];
    return bl->shard_n < bl->gpad;
}

int zero_shard(ParamSet *ps, const Comm *c) {
    int n = 0;
    for (int b = 0; b < PBLOCK_COUNT; b++) {
        int parts, index;
        MPI_Comm mc;
        if (!group(ps, c, b, &parts, &index, &mc)) continue;
        ASSERT(ps->blocks[b].gn / 16 / (size_t)parts < ((size_t)1 << 26),
               "block %d: a slice of %zu floats is past an MPI count", b, ps->blocks[b].gn);
        const size_t gn = ps->blocks[b].gn, unit = 16 * (size_t)parts;
        const size_t shard_n = (gn + unit - 1) / unit * unit / (size_t)parts;
        params_shard_block(ps, b, parts, index, piece_of(shard_n, parts) * (size_t)parts);
        n++;
    }
    return n;
}

void zero_reduce_grads(ParamSet *ps, const Comm *c) {
    if (c->size == 1) return;
    const float inv = 1.0f / (float)c->size;
    for (int b = 0; b < PBLOCK_COUNT; b++) {
        ParamBlock *bl = &ps->blocks[b];
        if (!zero_block_sharded(ps, b)) {
            if (b == PBLOCK_DENSE) comm_sum_world_f(c, bl->grad, bl->gn);
            else comm_sum_edp_f(c, bl->grad, bl->gn);
            grad_scale_range(ps, b, 0, bl->gn, inv);
            continue;
        }
        int parts, index;
        MPI_Comm mc;
        group(ps, c, b, &parts, &index, &mc);
        double t0 = moe_now();
        const size_t n = bl->shard_n, piece = piece_of(n, parts);
        float *stage = bl->grad + bl->gpad;
        for (size_t k = 0; k < n; k += piece) {
            const size_t len = n - k < piece ? n - k : piece;
            for (int r = 0; r < parts; r++)
                memcpy(stage + (size_t)r * len, bl->grad + (size_t)r * n + k,
                       len * sizeof(float));
            MPI_Reduce_scatter_block(stage, bl->grad + bl->shard_lo + k, (int)len, MPI_FLOAT,
                                     MPI_SUM, mc);
        }
        comm_count(COMM_GRAD, 4.0 * (double)(bl->gpad - n), moe_now() - t0);
        grad_scale_range(ps, b, bl->shard_lo, bl->shard_n, inv);
    }
}

double zero_grad_norm(const ParamSet *ps, const Comm *c) {
    const bool dsh = zero_block_sharded(ps, PBLOCK_DENSE);
    const bool esh = zero_block_sharded(ps, PBLOCK_EXPERT);
    const ParamBlock *d = &ps->blocks[PBLOCK_DENSE], *e = &ps->blocks[PBLOCK_EXPERT];
    /* a sharded block's squares are partial sums over this rank's slice, completed by a
     * world sum (the expert slices of all EDP groups partition every expert exactly
     * once); an unsharded expert block is summed over its EP group as dp_grad_norm does */
    double w[2] = {grad_sumsq_range(ps, PBLOCK_DENSE, d->shard_lo, d->shard_n),
                   grad_sumsq_range(ps, PBLOCK_EXPERT, e->shard_lo, e->shard_n)};
    if (!esh) comm_sum_ep_d(c, &w[1], 1);
    if (dsh || esh) {
        double x[2] = {dsh ? w[0] : 0.0, esh ? w[1] : 0.0};
        comm_sum_world_d(c, x, 2);
        if (dsh) w[0] = x[0];
        if (esh) w[1] = x[1];
    }
    return sqrt(w[0] + w[1]);
}

void zero_gather_params(ParamSet *ps, const Comm *c) {
    for (int b = 0; b < PBLOCK_COUNT; b++) {
        if (!zero_block_sharded(ps, b)) continue;
        ParamBlock *bl = &ps->blocks[b];
        int parts, index;
        MPI_Comm mc;
        group(ps, c, b, &parts, &index, &mc);
        const size_t s0 = bl->shard_lo, s1 = bl->shard_lo + bl->shard_n;
        /* pack this rank's updated values into its slice, in gradient layout */
        for (int i = 0; i < ps->count; i++) {
            const Param *p = &ps->p[i];
            if (p->block != b || !p->trainable) continue;
            const size_t t0 = p->goff, t1 = p->goff + p->t.n;
            if (t1 <= s0 || t0 >= s1) continue;
            const size_t lo = t0 < s0 ? s0 - t0 : 0, hi = (t1 > s1 ? s1 : t1) - t0;
            memcpy(bl->grad + t0 + lo, bl->data + p->off + lo, (hi - lo) * sizeof(float));
        }
        double t0 = moe_now();
        /* in pieces through the staging area, as the reduce-scatter (ZERO_PIECE) */
        const size_t n = bl->shard_n, piece = piece_of(n, parts);
        float *stage = bl->grad + bl->gpad;
        for (size_t k = 0; k < n; k += piece) {
            const size_t len = n - k < piece ? n - k : piece;
            MPI_Allgather(bl->grad + bl->shard_lo + k, (int)len, MPI_FLOAT, stage, (int)len,
                          MPI_FLOAT, mc);
            for (int r = 0; r < parts; r++)
                if (r != index)
                    memcpy(bl->grad + (size_t)r * n + k, stage + (size_t)r * len,
                           len * sizeof(float));
        }
        comm_count(COMM_GATHER, 4.0 * (double)(bl->gpad - n), moe_now() - t0);
        for (int i = 0; i < ps->count; i++) {
            const Param *p = &ps->p[i];
            if (p->block != b || !p->trainable) continue;
            memcpy(bl->data + p->off, bl->grad + p->goff, p->t.n * sizeof(float));
        }
    }
}

void zero_gather_moments(ParamSet *ps, const Comm *c) {
    for (int b = 0; b < PBLOCK_COUNT; b++) {
        if (!zero_block_sharded(ps, b)) continue;
        ParamBlock *bl = &ps->blocks[b];
        int parts, index;
        MPI_Comm mc;
        group(ps, c, b, &parts, &index, &mc);
        float *full[2] = {moe_calloc(bl->gpad * sizeof(float)),
                          moe_calloc(bl->gpad * sizeof(float))};
        float *slice[2] = {bl->m, bl->v};
        for (int k = 0; k < 2; k++) {
            memcpy(full[k] + bl->shard_lo, slice[k], bl->shard_n * sizeof(float));
            MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, full[k], (int)bl->shard_n,
                          MPI_FLOAT, mc);
            moe_free(slice[k]);
        }
        bl->m = full[0];
        bl->v = full[1];
        bl->shard_lo = 0;
        bl->shard_n = bl->gpad;
    }
}
