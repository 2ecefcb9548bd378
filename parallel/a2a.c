/* a2a.c: blocking and non-blocking, flat and two-stage all-to-all. See a2a.h. */
#include "parallel/a2a.h"

#include <string.h>

static int *ints_copy(Arena *a, const int *v, int n) {
    int *o = arena_alloc(a, sizeof(int) * (size_t)(n > 0 ? n : 1));
    memcpy(o, v, sizeof(int) * (size_t)n);
    return o;
}

static int *ints_zero(Arena *a, int n) {
    int *o = arena_alloc(a, sizeof(int) * (size_t)(n > 0 ? n : 1));
    memset(o, 0, sizeof(int) * (size_t)(n > 0 ? n : 1));
    return o;
}

static float *floats_min1(Arena *a, long n) { return arena_floats(a, (size_t)(n > 0 ? n : 1)); }

/* The two-stage layout (a2a.h) of a route, from the whole group's matrix. */
static void route_hier(A2aRoute *r, Arena *a, const int32_t *mat) {
    const A2aGroup *g = r->g;
    const int P = g->P, L = g->L, Nn = g->Nn, l = g->l, n = g->n, me = g->me;
    r->pk1 = ints_zero(a, P);
    r->c1s = ints_zero(a, L);
    r->d1s = ints_zero(a, L);
    r->c1r = ints_zero(a, L);
    r->d1r = ints_zero(a, L);
    r->c2s = ints_zero(a, Nn);
    r->d2s = ints_zero(a, Nn);
    r->c2r = ints_zero(a, Nn);
    r->d2r = ints_zero(a, Nn);
    r->piece = ints_zero(a, L * Nn);
    long s1 = 0, r1 = 0, s2 = 0;
    int k = 0;
    for (int lp = 0; lp < L; lp++) {
        r->d1s[lp] = (int)s1;
        r->d1r[lp] = (int)r1;
        for (int m = 0; m < Nn; m++) {
            const int q = m * L + lp;
            ASSERT(r->sc[q] == mat[(size_t)me * P + q], "a2a: send count %d to %d is not the "
                   "matrix's %d", r->sc[q], q, mat[(size_t)me * P + q]);
            r->pk1[k++] = q;
            r->c1s[lp] += r->sc[q];
            r->piece[lp * Nn + m] = mat[(size_t)(n * L + lp) * P + m * L + l];
            r->c1r[lp] += r->piece[lp * Nn + m];
        }
        s1 += r->c1s[lp];
        r1 += r->c1r[lp];
    }
    for (int m = 0; m < Nn; m++) {
        r->d2s[m] = (int)s2;
        for (int lp = 0; lp < L; lp++) r->c2s[m] += r->piece[lp * Nn + m];
        s2 += r->c2s[m];
        for (int lp = 0; lp < L; lp++) {
            const int p = m * L + lp;
            ASSERT(r->rc[p] == mat[(size_t)p * P + me], "a2a: receive count %d from %d is not "
                   "the matrix's %d", r->rc[p], p, mat[(size_t)p * P + me]);
            if (lp > 0 && r->rd[p] != r->rd[p - 1] + r->rc[p - 1]) r->unpack = true;
            r->c2r[m] += r->rc[p];
        }
    }
    /* node m's block lands at rd[m L] when its sources are contiguous there (source-major),
     * else in r2, unpacked to rd afterwards */
    long o2 = 0;
    for (int m = 0; m < Nn; m++) {
        r->d2r[m] = r->unpack ? (int)o2 : r->rd[m * L];
        o2 += r->c2r[m];
    }
    r->r2 = r->unpack ? floats_min1(a, o2) : NULL;
    r->s1 = floats_min1(a, s1);
    r->r1 = floats_min1(a, r1);
    r->s2 = floats_min1(a, s2);
    double b = 0;
    for (int lp = 0; lp < L; lp++)
        if (lp != l) b += r->c1s[lp];
    for (int m = 0; m < Nn; m++)
        if (m != n) b += r->c2s[m];
    r->bytes = b * sizeof(float);
}

void a2a_route(A2aRoute *r, Arena *a, const A2aGroup *g, const int *sc, const int *sd,
               const int *rc, const int *rd, const int32_t *mat) {
    memset(r, 0, sizeof *r);
    r->g = g;
    r->sc = ints_copy(a, sc, g->P);
    r->sd = ints_copy(a, sd, g->P);
    r->rc = ints_copy(a, rc, g->P);
    r->rd = ints_copy(a, rd, g->P);
    if (g->hier) {
        ASSERT(mat != NULL, "a2a: a two-stage route needs the group's matrix");
        route_hier(r, a, mat);
        return;
    }
    double b = 0;
    for (int q = 0; q < g->P; q++)
        if (q != g->me) b += sc[q];
    r->bytes = b * sizeof(float);
}

void a2a_route_reverse(A2aRoute *rev, Arena *a, const A2aRoute *r, const int32_t *mat) {
    int32_t *tr = NULL;
    const int P = r->g->P;
    if (r->g->hier) {
        tr = arena_ints(a, (size_t)P * P);
        for (int p = 0; p < P; p++)
            for (int q = 0; q < P; q++) tr[(size_t)q * P + p] = mat[(size_t)p * P + q];
    }
    a2a_route(rev, a, r->g, r->rc, r->rd, r->sc, r->sd, tr);
}

static void count_wait(double seconds) { comm_stat[COMM_ALLTOALL].wait += seconds; }

/* Two-stage transfers whose stage 2 is not posted yet, in the order they started. A
 * collective must be started in the same order on every rank of its communicator; stage 1
 * completes in an order that varies from rank to rank, so stage 2 is posted strictly in
 * start order (the program order, the same everywhere): a transfer posts it when every
 * transfer started before it has. */
#define A2A_PENDING 512
static struct {
    A2a *q[A2A_PENDING];
    int head, n;
} g_pending;

/* Stage 1 seen complete: pack what arrived (l, m) into stage 2's order (m, l) and post it. */
static void post_stage2(A2a *x) {
    const A2aRoute *r = x->r;
    const int L = r->g->L, Nn = r->g->Nn;
    size_t o = 0;
    for (int m = 0; m < Nn; m++)
        for (int lp = 0; lp < L; lp++) {
            size_t src = (size_t)r->d1r[lp];
            for (int m2 = 0; m2 < m; m2++) src += (size_t)r->piece[lp * Nn + m2];
            const size_t k = (size_t)r->piece[lp * Nn + m];
            memcpy(r->s2 + o, r->r1 + src, sizeof(float) * k);
            o += k;
        }
    double t0 = moe_now();
    MPI_Ialltoallv(r->s2, r->c2s, r->d2s, MPI_FLOAT, r->unpack ? r->r2 : x->recv, r->c2r,
                   r->d2r, MPI_FLOAT, r->g->cross, &x->req);
    count_wait(moe_now() - t0);
    x->stage = 2;
}

/* Post the stage 2 of the pending transfers whose stage 1 is complete, in start order;
 * block: wait for stage 1 of each until `until` is posted (NULL: only test). */
static void advance_pending(const A2a *until) {
    while (g_pending.n > 0) {
        A2a *h = g_pending.q[g_pending.head];
        int done = 0;
        double t0 = moe_now();
        if (until) {
            MPI_Wait(&h->req, MPI_STATUS_IGNORE);
            done = 1;
        } else {
            MPI_Test(&h->req, &done, MPI_STATUS_IGNORE);
        }
        count_wait(moe_now() - t0);
        if (!done) return;
        g_pending.head = (g_pending.head + 1) % A2A_PENDING;
        g_pending.n--;
        post_stage2(h);
        if (h == until) return;
    }
}

void a2a_start(A2a *x, const A2aRoute *r, const float *send, float *recv) {
    x->r = r;
    x->send = send;
    x->recv = recv;
    x->t0 = moe_now();
    comm_stat[COMM_ALLTOALL].calls += 1;
    comm_stat[COMM_ALLTOALL].bytes += r->bytes;
    const A2aGroup *g = r->g;
    double t0;
    if (!g->hier) {
        t0 = moe_now();
        MPI_Ialltoallv(send, r->sc, r->sd, MPI_FLOAT, recv, r->rc, r->rd, MPI_FLOAT, g->comm,
                       &x->req);
    } else {
        size_t o = 0;
        for (int k = 0; k < g->P; k++) {
            const int q = r->pk1[k];
            memcpy(r->s1 + o, send + r->sd[q], sizeof(float) * (size_t)r->sc[q]);
            o += (size_t)r->sc[q];
        }
        t0 = moe_now();
        MPI_Ialltoallv(r->s1, r->c1s, r->d1s, MPI_FLOAT, r->r1, r->c1r, r->d1r, MPI_FLOAT,
                       g->node, &x->req);
        ASSERT(g_pending.n < A2A_PENDING, "a2a: more than %d two-stage transfers in flight",
               A2A_PENDING);
        g_pending.q[(g_pending.head + g_pending.n) % A2A_PENDING] = x;
        g_pending.n++;
    }
    x->stage = 1;
    count_wait(moe_now() - t0);
}

static void finish(A2a *x) {
    const A2aRoute *r = x->r;
    if (r->unpack) {   /* stage 2 arrived in r2, (m, l): each source to its place */
        size_t o = 0;
        for (int p = 0; p < r->g->P; p++) {
            memcpy(x->recv + r->rd[p], r->r2 + o, sizeof(float) * (size_t)r->rc[p]);
            o += (size_t)r->rc[p];
        }
    }
    x->stage = 0;
    comm_stat[COMM_ALLTOALL].span += moe_now() - x->t0;
}

bool a2a_test(A2a *x) {
    if (x->stage == 0) return true;
    if (x->r->g->hier) advance_pending(NULL);
    if (x->stage == 1) return false;   /* two-stage: stage 2 not posted yet */
    int done = 0;
    double t0 = moe_now();
    MPI_Test(&x->req, &done, MPI_STATUS_IGNORE);
    count_wait(moe_now() - t0);
    if (!done) return false;
    finish(x);
    return true;
}

void a2a_wait(A2a *x) {
    if (x->stage == 0) return;
    if (x->stage == 1 && x->r->g->hier) advance_pending(x);
    double t0 = moe_now();
    MPI_Wait(&x->req, MPI_STATUS_IGNORE);
    count_wait(moe_now() - t0);
    finish(x);
}

void a2a_run(const A2aRoute *r, const float *send, float *recv) {
    if (r->g->hier) {   /* counted by start/wait: wait = span, as a blocking call */
        A2a x;
        a2a_start(&x, r, send, recv);
        a2a_wait(&x);
        return;
    }
    double t0 = moe_now();
    MPI_Alltoallv(send, r->sc, r->sd, MPI_FLOAT, recv, r->rc, r->rd, MPI_FLOAT, r->g->comm);
    comm_count(COMM_ALLTOALL, r->bytes, moe_now() - t0);
}
