/* reduce.c: the owned-order bucketed gradient reduction. See reduce.h.
 *
 * A block's buckets go through its stages in launch order: stage 0 is started at launch
 * (a program point every rank reaches in the same order: a mark's hook, or finish), stage
 * s > 0 when the bucket's stage s - 1 has completed on this rank and every earlier-launched
 * bucket has started stage s. Each stage has its own communicator (MPI_Comm_dup), so the
 * collectives on each communicator start in the same order on every rank whatever the
 * timing of the tests.
 *
 * Launching: a mark makes buckets ready; they are launched (stage 0 started) in a fixed
 * order as their staging slot frees, at that mark or at a later poll. Nothing here blocks
 * during the backward (only MPI_Test): a rank waiting inside the backward for a collective
 * of ours could deadlock against a rank waiting in the backward's own blocking collectives
 * (the expert all-to-all). Only grad_reduce_finish blocks (MPI_Waitany), when every rank
 * has left the backward and keeps starting whatever its completions allow.
 */
#include "parallel/reduce.h"

#include <limits.h>
#include <string.h>

#define GR_POLL_S 1e-4   /* at most one round of MPI_Test per 0.1 ms of backward */

enum { ST_A2A, ST_AG };   /* what a stage does */

typedef struct GrBucket {
    size_t lo, n;          /* block positions [lo, lo + n) */
    int ready;             /* launch once the backward passed mark `ready` (-1: at finish;
                              INT_MAX: at once, padding only) */
    int seq;               /* launch order, -1 before launch */
    int done;              /* stages completed */
    bool inflight;
    MPI_Request req;
    double t0;             /* the current stage's start */
    int *cnt;              /* (nstage x 4 x gmax) per stage: send counts, send displacements,
                              receive counts, receive displacements (alltoallv) or counts,
                              displacements (allgatherv) */
} GrBucket;

typedef struct GrBlock {
    int b;
    bool sharded, hier;
    int nstage;
    int kind[GR_STAGES];           /* ST_A2A or ST_AG */
    MPI_Comm comm[GR_STAGES];      /* owned duplicates, one per stage */
    int size[GR_STAGES], me[GR_STAGES];
    int gmax;                      /* largest stage group */
    size_t len;                    /* positions reduced: gn, or gpad when sharded */
    GrBucket *bk;                  /* (nb) */
    int nb;
    int *order;                    /* (nb) launch order: ready descending, index descending */
    int *seq;                      /* (nb) bucket launched at sequence number s */
    int nready;                    /* order[0 .. nready) may be launched */
    int nlaunched, first;          /* first: lowest sequence number not done */
    int next[GR_STAGES];           /* sequence number of the next bucket to start stage s */
    int *ints;                     /* owned storage of every bucket's cnt */
    float *slot[2];                /* stage-0 and stage-1 staging: nslot slots each */
    size_t slot_n[2];
    int nslot;
} GrBlock;

/* Near-equal split of n into p parts: part j is [j n / p, (j + 1) n / p), 16-aligned. */
static size_t split_at(size_t n, int p, int j) {
    size_t u = (n + 15) / 16;
    size_t x = u * (size_t)j / (size_t)p * 16;
    return x < n ? x : n;
}

static int *cnt_of(const GrBlock *k, const GrBucket *bu, int stage, int which) {
    return bu->cnt + ((size_t)stage * 4 + (size_t)which) * (size_t)k->gmax;
}

/* Fill bucket bu's count arrays for every stage (set-up). Returns the receive floats its
 * stage 0 and 1 need (out[0], out[1]). */
static void plan_bucket(const GrBlock *k, const ParamBlock *bl, GrBucket *bu, size_t need[2]) {
    need[0] = need[1] = 0;
    if (k->sharded) {
        /* owner j's slice [j S, (j + 1) S): each rank sends j the part of the range in it */
        const int G = k->size[0], me = k->me[0];
        const size_t S = bl->shard_n;
        int *sc = cnt_of(k, bu, 0, 0), *sd = cnt_of(k, bu, 0, 1);
        int *rc = cnt_of(k, bu, 0, 2), *rd = cnt_of(k, bu, 0, 3);
        size_t mine = 0;
        for (int j = 0; j < G; j++) {
            size_t a = (size_t)j * S, z = a + S;
            size_t lo = bu->lo > a ? bu->lo : a, hi = bu->lo + bu->n < z ? bu->lo + bu->n : z;
            size_t ov = hi > lo ? hi - lo : 0;
            sc[j] = (int)ov;
            sd[j] = (int)(ov ? lo - bu->lo : 0);
            if (j == me) mine = ov;
        }
        for (int j = 0; j < G; j++) {
            rc[j] = (int)mine;
            rd[j] = (int)(mine * (size_t)j);
        }
        need[0] = mine * (size_t)G;
        return;
    }
    /* stage 0: slices of the range over stage 0's group */
    const int P0 = k->size[0], m0 = k->me[0];
    int *sc = cnt_of(k, bu, 0, 0), *sd = cnt_of(k, bu, 0, 1);
    int *rc = cnt_of(k, bu, 0, 2), *rd = cnt_of(k, bu, 0, 3);
    for (int j = 0; j < P0; j++) {
        sd[j] = (int)split_at(bu->n, P0, j);
        sc[j] = (int)(split_at(bu->n, P0, j + 1) - (size_t)sd[j]);
    }
    for (int j = 0; j < P0; j++) {
        rc[j] = sc[m0];
        rd[j] = sc[m0] * j;
    }
    need[0] = (size_t)sc[m0] * (size_t)P0;
    /* the last stage: all-gather of the same slices */
    int *gc = cnt_of(k, bu, k->nstage - 1, 0), *gd = cnt_of(k, bu, k->nstage - 1, 1);
    memcpy(gc, sc, sizeof(int) * (size_t)P0);
    memcpy(gd, sd, sizeof(int) * (size_t)P0);
    if (!k->hier) return;
    /* stages 1 and 2: this member's slice (sc[m0] floats at sd[m0]) over the nodes */
    const size_t sl = (size_t)sc[m0];
    const int P1 = k->size[1], m1 = k->me[1];
    int *tc = cnt_of(k, bu, 1, 0), *td = cnt_of(k, bu, 1, 1);
    int *uc = cnt_of(k, bu, 1, 2), *ud = cnt_of(k, bu, 1, 3);
    for (int j = 0; j < P1; j++) {
        td[j] = (int)split_at(sl, P1, j);
        tc[j] = (int)(split_at(sl, P1, j + 1) - (size_t)td[j]);
    }
    for (int j = 0; j < P1; j++) {
        uc[j] = tc[m1];
        ud[j] = tc[m1] * j;
    }
    need[1] = (size_t)tc[m1] * (size_t)P1;
    memcpy(cnt_of(k, bu, 2, 0), tc, sizeof(int) * (size_t)P1);
    memcpy(cnt_of(k, bu, 2, 1), td, sizeof(int) * (size_t)P1);
}

/* Where stage s of bucket bu starts in the gradient (the alltoallv's send buffer and the
 * sums' destination base, or the all-gather's buffer). */
static float *stage_base(const GrBlock *k, const ParamBlock *bl, const GrBucket *bu, int s) {
    float *g = bl->grad + bu->lo;
    if (k->hier && (s == 1 || s == 2)) g += cnt_of(k, bu, 0, 1)[k->me[0]];
    return g;
}

/* Group of the block: size, index, communicator (as zero.c's group()). */
static void block_group(const Comm *c, int b, int *G, int *gi, MPI_Comm *mc) {
    if (b == PBLOCK_DENSE) {
        *G = c->size;
        *gi = c->rank;
        *mc = c->world;
    } else {
        *G = c->edp;
        *gi = 0;
        if (c->edp > 1) MPI_Comm_rank(c->edp_comm, gi);
        *mc = c->edp_comm;
    }
}

/* Split gc into this rank's node part (members ordered by group index) and the members
 * with the same local index on every node (ordered by node); true when every node holds
 * the same number M > 1 of members and there are N > 1 nodes (collective over gc). */
static bool split_nodes(const Comm *c, MPI_Comm gc, int gi, MPI_Comm *node, MPI_Comm *cross) {
    MPI_Comm_split(gc, c->node, gi, node);
    int M, mi;
    MPI_Comm_size(*node, &M);
    MPI_Comm_rank(*node, &mi);
    int mm[2] = {M, -M};
    MPI_Allreduce(MPI_IN_PLACE, mm, 2, MPI_INT, MPI_MAX, gc);
    MPI_Comm_split(gc, mi, c->node, cross);
    int N;
    MPI_Comm_size(*cross, &N);
    int nn[2] = {N, -N};
    MPI_Allreduce(MPI_IN_PLACE, nn, 2, MPI_INT, MPI_MAX, gc);
    bool ok = mm[0] == -mm[1] && nn[0] == -nn[1] && M > 1 && N > 1;
    if (!ok) {
        MPI_Comm_free(node);
        MPI_Comm_free(cross);
    }
    return ok;
}

static GrBlock *block_init(const GradReduce *g, int b, const int *final_at, bool hierarchical) {
    const Comm *c = g->comm;
    ParamSet *ps = g->ps;
    const ParamBlock *bl = &ps->blocks[b];
    int G, gi;
    MPI_Comm gc;
    block_group(c, b, &G, &gi, &gc);
    if (!c->mpi || G < 2 || bl->gn == 0) return NULL;
    GrBlock *k = moe_calloc(sizeof *k);
    k->b = b;
    k->sharded = bl->shard_n < bl->gpad;
    k->len = k->sharded ? bl->gpad : bl->gn;
    MPI_Comm node = MPI_COMM_NULL, cross = MPI_COMM_NULL;
    k->hier = hierarchical && c->hier && !k->sharded && split_nodes(c, gc, gi, &node, &cross);
    if (k->hier) {
        k->nstage = 4;
        MPI_Comm base[4] = {node, cross, cross, node};
        for (int s = 0; s < 4; s++) {
            MPI_Comm_dup(base[s], &k->comm[s]);
            k->kind[s] = s < 2 ? ST_A2A : ST_AG;
        }
        MPI_Comm_free(&node);
        MPI_Comm_free(&cross);
    } else {
        k->nstage = k->sharded ? 1 : 2;
        for (int s = 0; s < k->nstage; s++) {
            MPI_Comm_dup(gc, &k->comm[s]);
            k->kind[s] = s == 0 ? ST_A2A : ST_AG;
        }
    }
    for (int s = 0; s < k->nstage; s++) {
        MPI_Comm_size(k->comm[s], &k->size[s]);
        MPI_Comm_rank(k->comm[s], &k->me[s]);
        if (k->size[s] > k->gmax) k->gmax = k->size[s];
    }
    /* buckets: sharded ones 1/G as long, so an owner's receive (G copies of its part) stays
     * one bucket's size */
    size_t c0 = g->bucket ? g->bucket : GR_PIECE;
    if (k->sharded) c0 /= (size_t)G;
    c0 = c0 / 16 * 16;
    if (c0 < 16) c0 = 16;
    ASSERT(c0 < ((size_t)1 << 30), "bucket of %zu floats is past an MPI count", c0);
    k->nb = (int)((k->len + c0 - 1) / c0);
    k->bk = moe_calloc(sizeof(GrBucket) * (size_t)k->nb);
    k->order = moe_calloc(sizeof(int) * (size_t)k->nb);
    k->seq = moe_calloc(sizeof(int) * (size_t)k->nb);
    k->ints = moe_calloc(sizeof(int) * (size_t)k->nb * (size_t)k->nstage * 4 * (size_t)k->gmax);
    for (int i = 0; i < k->nb; i++) {
        GrBucket *bu = &k->bk[i];
        bu->lo = (size_t)i * c0;
        bu->n = k->len - bu->lo < c0 ? k->len - bu->lo : c0;
        bu->cnt = k->ints + (size_t)i * (size_t)k->nstage * 4 * (size_t)k->gmax;
        bu->ready = INT_MAX;
        bu->seq = -1;
        bu->req = MPI_REQUEST_NULL;
        size_t need[2];
        plan_bucket(k, bl, bu, need);
        for (int s = 0; s < 2; s++)
            if (need[s] > k->slot_n[s]) k->slot_n[s] = need[s];
    }
    /* readiness: the lowest final_at of the tensors a bucket overlaps */
    for (int i = 0; i < ps->count; i++) {
        const Param *p = &ps->p[i];
        if (p->block != b || !p->trainable || p->t.n == 0) continue;
        const int f = g->bucket ? final_at[i] : -1;
        const int i0 = (int)(p->goff / c0), i1 = (int)((p->goff + p->t.n - 1) / c0);
        for (int j = i0; j <= i1; j++)
            if (f < k->bk[j].ready) k->bk[j].ready = f;
    }
    for (int i = 0; i < k->nb; i++) k->order[i] = k->nb - 1 - i;
    /* stable insertion sort by ready, descending (index descending among equals) */
    for (int i = 1; i < k->nb; i++) {
        int v = k->order[i], j = i;
        while (j > 0 && k->bk[k->order[j - 1]].ready < k->bk[v].ready) {
            k->order[j] = k->order[j - 1];
            j--;
        }
        k->order[j] = v;
    }
    k->nslot = k->nb < GR_SLOTS ? k->nb : GR_SLOTS;
    for (int s = 0; s < 2; s++)
        if (k->slot_n[s])
            k->slot[s] = moe_calloc(sizeof(float) * k->slot_n[s] * (size_t)k->nslot);
    return k;
}

void grad_reduce_init(GradReduce *g, ParamSet *ps, const Comm *c, size_t bucket_floats,
                      const int *final_at, bool hierarchical) {
    memset(g, 0, sizeof *g);
    g->comm = c;
    g->ps = ps;
    g->bucket = bucket_floats;
    g->mark = INT_MAX;
    ASSERT(bucket_floats == 0 || final_at, "grad_reduce_init: buckets need final_at");
    if (c->size < 2) return;
    for (int b = 0; b < PBLOCK_COUNT; b++) {
        /* every rank takes part in the set-up collectives of a block it reduces: the
         * verdict (G, gn) is the same over the block's group */
        g->blk[b] = block_init(g, b, final_at, hierarchical);
    }
    size_t nb = 1;
    for (int b = 0; b < PBLOCK_COUNT; b++)
        if (g->blk[b]) nb += (size_t)g->blk[b]->nb;
    g->any = moe_calloc(sizeof(MPI_Request) * nb);
    g->any_b = moe_calloc(sizeof(int) * nb);
    g->any_q = moe_calloc(sizeof(int) * nb);
}

void grad_reduce_free(GradReduce *g) {
    for (int b = 0; b < PBLOCK_COUNT; b++) {
        GrBlock *k = g->blk[b];
        if (!k) continue;
        for (int s = 0; s < k->nstage; s++) MPI_Comm_free(&k->comm[s]);
        moe_free(k->bk);
        moe_free(k->order);
        moe_free(k->seq);
        moe_free(k->ints);
        moe_free(k->slot[0]);
        moe_free(k->slot[1]);
        moe_free(k);
    }
    moe_free(g->any);
    moe_free(g->any_b);
    moe_free(g->any_q);
    memset(g, 0, sizeof *g);
}

size_t grad_reduce_bucket_floats(double bucket_mb, const Comm *c) {
    if (bucket_mb < 0) bucket_mb = c->nodes > 1 ? GR_AUTO_MB : 0;
    return (size_t)(bucket_mb * 1048576.0 / sizeof(float));
}

size_t grad_reduce_staging_bytes(const GradReduce *g) {
    size_t n = 0;
    for (int b = 0; b < PBLOCK_COUNT; b++)
        if (g->blk[b])
            n += (g->blk[b]->slot_n[0] + g->blk[b]->slot_n[1]) * (size_t)g->blk[b]->nslot;
    return n * sizeof(float);
}

bool grad_reduce_block_hier(const GradReduce *g, int b) { return g->blk[b] && g->blk[b]->hier; }

/* The slot of the bucket with sequence number s for staging set t. */
static float *slot_of(const GrBlock *k, int t, int s) {
    return k->slot[t] + (size_t)(s % k->nslot) * k->slot_n[t];
}

/* Start stage s of bucket bu (sequence number q). */
static void stage_start(GradReduce *g, GrBlock *k, GrBucket *bu, int q, int s) {
    const ParamBlock *bl = &g->ps->blocks[k->b];
    float *base = stage_base(k, bl, bu, s);
    const int P = k->size[s];
    const int *c0 = cnt_of(k, bu, s, 0), *c1 = cnt_of(k, bu, s, 1);
    double bytes = 0;
    double t = moe_now();
    if (k->kind[s] == ST_A2A) {
        const int *c2 = cnt_of(k, bu, s, 2), *c3 = cnt_of(k, bu, s, 3);
        MPI_Ialltoallv(base, c0, c1, MPI_FLOAT, slot_of(k, s, q), c2, c3, MPI_FLOAT, k->comm[s],
                       &bu->req);
        for (int j = 0; j < P; j++)
            if (j != k->me[s]) bytes += 4.0 * c0[j];
    } else {
        MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, base, c0, c1, MPI_FLOAT, k->comm[s],
                        &bu->req);
        double tot = 0;
        for (int j = 0; j < P; j++) tot += c0[j];
        bytes = 4.0 * tot * (P - 1) / P;   /* ring volume (comm.h) */
    }
    const double now = moe_now();
    CommStat *st = &comm_stat[COMM_GRAD];
    st->bytes += bytes;
    st->calls += 1;
    st->wait += now - t;
    bu->t0 = t;
    bu->inflight = true;
}

/* dst[x] = (((src_0[x] + src_1[x]) + ...) + src_{p-1}[x]) (x scale when scaled), the parts
 * src_j = src + j n: the fixed order of reduce.h. */
static void sum_parts(float *dst, const float *src, int p, size_t n, bool scaled, float scale) {
    if (n == 0) return;   /* an empty slice (more ranks than positions): src may be NULL */
    memcpy(dst, src, n * sizeof(float));
    for (int j = 1; j < p; j++) {
        const float *s = src + (size_t)j * n;
        for (size_t x = 0; x < n; x++) dst[x] += s[x];
    }
    if (scaled)
        for (size_t x = 0; x < n; x++) dst[x] *= scale;
}

/* Stage s of bucket bu (sequence number q) has completed here: its local work. */
static void stage_done(GradReduce *g, GrBlock *k, GrBucket *bu, int q, int s) {
    const ParamBlock *bl = &g->ps->blocks[k->b];
    comm_stat[COMM_GRAD].span += moe_now() - bu->t0;
    bu->inflight = false;
    bu->req = MPI_REQUEST_NULL;
    if (k->kind[s] == ST_A2A) {
        const int *sc = cnt_of(k, bu, s, 0), *sd = cnt_of(k, bu, s, 1);
        const int *rc = cnt_of(k, bu, s, 2);
        const int me = k->me[s];
        const bool last_sum = k->hier ? s == 1 : true;
        float *dst = stage_base(k, bl, bu, s) + sd[me];
        if (k->sharded) dst = bl->grad + bu->lo + (rc[0] ? (size_t)sd[me] : 0);
        (void)sc;
        sum_parts(dst, slot_of(k, s, q), k->size[s], (size_t)rc[0], last_sum,
                  1.0f / (float)g->comm->size);
    }
    bu->done++;
}

static void try_launch(GradReduce *g, GrBlock *k);

/* One round over block k's launched buckets: test the ones in flight, start the stages that
 * may start. Never blocks. Returns the stages completed. */
static int block_poll(GradReduce *g, GrBlock *k) {
    int changed = 0;
    try_launch(g, k);
    for (int q = k->first; q < k->nlaunched; q++) {
        GrBucket *bu = &k->bk[k->seq[q]];
        if (bu->inflight) {
            int flag = 0;
            double t = moe_now();
            MPI_Test(&bu->req, &flag, MPI_STATUS_IGNORE);
            comm_stat[COMM_GRAD].wait += moe_now() - t;
            if (!flag) continue;
            stage_done(g, k, bu, q, bu->done);
            changed++;
        }
        const int s = bu->done;
        if (s < k->nstage && k->next[s] == q) {
            /* stage 1 (hierarchical) needs its slot: the bucket nslot earlier must be past
             * its stage 1; else try again at the next poll */
            if (s == 1 && k->hier && q >= k->nslot && k->bk[k->seq[q - k->nslot]].done < 2)
                continue;
            stage_start(g, k, bu, q, s);
            k->next[s]++;
        }
    }
    while (k->first < k->nlaunched && k->bk[k->seq[k->first]].done == k->nstage) k->first++;
    try_launch(g, k);
    return changed;
}

/* Rounds over every block while stages keep completing (a stage started in one round,
 * between ranks of one machine, often completes at the next test: several stages of a
 * bucket can pass at one poll), at most GR_ROUNDS. */
#define GR_ROUNDS 8
static void poll_all(GradReduce *g) {
    for (int r = 0; r < GR_ROUNDS; r++) {
        int changed = 0;
        for (int b = 0; b < PBLOCK_COUNT; b++)
            if (g->blk[b]) changed += block_poll(g, g->blk[b]);
        if (!changed) break;
    }
    g->last_poll = moe_now();
}

/* Block until some request in flight completes (then handle it). False when none is. */
static bool wait_some(GradReduce *g) {
    int n = 0;
    for (int b = 0; b < PBLOCK_COUNT; b++) {
        GrBlock *k = g->blk[b];
        if (!k) continue;
        for (int q = k->first; q < k->nlaunched; q++) {
            GrBucket *bu = &k->bk[k->seq[q]];
            if (!bu->inflight) continue;
            g->any_b[n] = b;
            g->any_q[n] = q;
            g->any[n++] = bu->req;
        }
    }
    if (n == 0) return false;
    int idx = MPI_UNDEFINED;
    double t = moe_now();
    MPI_Waitany(n, g->any, &idx, MPI_STATUS_IGNORE);
    comm_stat[COMM_GRAD].wait += moe_now() - t;
    if (idx != MPI_UNDEFINED) {
        GrBlock *k = g->blk[g->any_b[idx]];
        GrBucket *bu = &k->bk[k->seq[g->any_q[idx]]];
        stage_done(g, k, bu, g->any_q[idx], bu->done);
    }
    return true;
}

/* Launch block k's ready buckets, in order, while their stage-0 slot is free (the bucket
 * nslot launches earlier is past its stage 0). Never blocks. */
static void try_launch(GradReduce *g, GrBlock *k) {
    while (k->nlaunched < k->nready) {
        const int q = k->nlaunched;
        if (q >= k->nslot && k->bk[k->seq[q - k->nslot]].done < 1) return;
        const int i = k->order[q];
        GrBucket *bu = &k->bk[i];
        if (g->check_local) g->local_sumsq += grad_sumsq_range(g->ps, k->b, bu->lo, bu->n);
        bu->seq = q;
        k->seq[q] = i;
        k->nlaunched++;
        stage_start(g, k, bu, q, 0);
        k->next[0]++;
    }
}

/* Every bucket whose ready level is at least `level` may be launched now. */
static void make_ready(GradReduce *g, int level) {
    for (int b = 0; b < PBLOCK_COUNT; b++) {
        GrBlock *k = g->blk[b];
        if (!k) continue;
        while (k->nready < k->nb && k->bk[k->order[k->nready]].ready >= level) k->nready++;
        try_launch(g, k);
    }
}

void grad_reduce_begin(GradReduce *g, bool check_local) {
    g->armed = true;
    g->check_local = check_local;
    g->local_sumsq = 0;
    g->mark = INT_MAX;
    g->launched_early = 0;
    for (int b = 0; b < PBLOCK_COUNT; b++) {
        GrBlock *k = g->blk[b];
        if (!k) continue;
        k->nready = k->nlaunched = k->first = 0;
        memset(k->next, 0, sizeof k->next);
        for (int i = 0; i < k->nb; i++) {
            k->bk[i].seq = -1;
            k->bk[i].done = 0;
            k->bk[i].inflight = false;
        }
    }
}

void grad_reduce_hook(void *ctx, int mark) {
    GradReduce *g = ctx;
    if (!g->armed || !g->bucket) return;
    if (mark >= 0) {
        g->mark = mark;
        for (int b = 0; b < PBLOCK_COUNT; b++)
            if (g->blk[b]) g->launched_early -= g->blk[b]->nready;
        make_ready(g, mark);
        for (int b = 0; b < PBLOCK_COUNT; b++)
            if (g->blk[b]) g->launched_early += g->blk[b]->nready;
        poll_all(g);
    } else if (moe_now() - g->last_poll >= GR_POLL_S) {
        poll_all(g);
    }
}

void grad_reduce_finish(GradReduce *g) {
    const Comm *c = g->comm;
    if (c->size < 2) {
        g->armed = false;
        return;
    }
    if (!g->armed) grad_reduce_begin(g, false);
    make_ready(g, INT_MIN);
    for (;;) {
        poll_all(g);   /* also launches what the freed slots allow */
        if (!wait_some(g)) break;
    }
    for (int b = 0; b < PBLOCK_COUNT; b++) {
        GrBlock *k = g->blk[b];
        if (k) {
            ASSERT(k->first == k->nb, "block %d: %d of %d buckets reduced", b, k->first, k->nb);
            continue;
        }
        /* not reduced (a group of one): scaled only, as dp_reduce_grads does */
        const ParamBlock *bl = &g->ps->blocks[b];
        if (g->check_local) g->local_sumsq += grad_sumsq_range(g->ps, b, 0, bl->gn);
        grad_scale_range(g->ps, b, 0, bl->gn, 1.0f / (float)c->size);
    }
    g->armed = false;
}
