/* mfu.c: see mfu.h. */
#include "train/mfu.h"
#include "autograd/gemm.h"


/* The three products of a linear layer y (N,out) = x (N,in) W^T, each repeated reps times. */
static int add_linear(MfuGemm *g, int n, int N, int in, int out, int reps) {
    g[n++] = (MfuGemm){N, out, in, false, true, reps};    /* forward */
    g[n++] = (MfuGemm){N, in, out, false, false, reps};   /* dx = dy W */
    g[n++] = (MfuGemm){out, in, N, true, false, reps};    /* dW = dy^T x */
    return n;
}

double mfu_set_pass(MfuSet *m) {
    const MfuGemm *g = m->g;
    double t0 = moe_now();
    for (int i = 0; i < m->ng; i++) {
        for (int r = 0; r < g[i].reps; r++) {
            int lda = g[i].ta ? g[i].m : g[i].k, ldb = g[i].tb ? g[i].k : g[i].n;
            gemm(g[i].ta, g[i].tb, g[i].m, g[i].n, g[i].k, 1.0f, m->a, lda, m->b, ldb, 0.0f,
                 m->c, g[i].n);
        }
    }
    return moe_now() - t0;
}

void mfu_set_init(MfuSet *m, const ModelShape *s, int N) {
    MfuGemm *g = m->g;
    int ng = 0;
    const int HD = s->H * s->D, KD = s->Hkv * s->D;
    ng = add_linear(g, ng, N, s->C, HD, s->L);                 /* q */
    ng = add_linear(g, ng, N, s->C, KD, 2 * s->L);             /* k, v */
    ng = add_linear(g, ng, N, HD, s->C, s->L);                 /* o */
    if (s->E > 0) {
        int rows = (int)((long)N * s->K / s->E);               /* mean expert load */
        if (rows < 1) rows = 1;
        ng = add_linear(g, ng, N, s->C, s->E, 2 * s->L);       /* router + noise router */
        ng = add_linear(g, ng, rows, s->C, s->F, 2 * s->L * s->E);   /* w1, w3 */
        ng = add_linear(g, ng, rows, s->F, s->C, s->L * s->E);       /* w2 */
        if (s->Fs > 0) {   /* shared experts: every token */
            ng = add_linear(g, ng, N, s->C, s->Fs, 2 * s->L);
            ng = add_linear(g, ng, N, s->Fs, s->C, s->L);
        }
    } else {
        ng = add_linear(g, ng, N, s->C, s->F, 2 * s->L);
        ng = add_linear(g, ng, N, s->F, s->C, s->L);
    }
    ng = add_linear(g, ng, N, s->C, s->V, 1);                  /* head */
    m->ng = ng;
    /* Buffers big enough for the largest operand of any product above. */
    size_t big = 0;
    m->flops = 0;
    for (int i = 0; i < ng; i++) {
        size_t mk = (size_t)g[i].m * g[i].k, kn = (size_t)g[i].k * g[i].n,
               mn = (size_t)g[i].m * g[i].n;
        if (mk > big) big = mk;
        if (kn > big) big = kn;
        if (mn > big) big = mn;
        m->flops += 2.0 * g[i].m * g[i].n * g[i].k * g[i].reps;
    }
    m->a = moe_malloc(big * sizeof(float));
    m->b = moe_malloc(big * sizeof(float));
    m->c = moe_malloc(big * sizeof(float));
    for (size_t i = 0; i < big; i++) {
        m->a[i] = 0.01f * (float)(i % 97) - 0.3f;
        m->b[i] = 0.02f * (float)(i % 89) - 0.5f;
    }
}

void mfu_set_free(MfuSet *m) {
    moe_free(m->a);
    moe_free(m->b);
    moe_free(m->c);
    m->a = m->b = m->c = NULL;
}

double mfu_sgemm_rate(const ModelShape *s, int N, int reps) {
    MfuSet m;
    mfu_set_init(&m, s, N);
    double best = 0;
    mfu_set_pass(&m);   /* warm-up: thread start, page faults */
    for (int r = 0; r < reps; r++) {
        double rate = m.flops / mfu_set_pass(&m) / 1e9;
        if (rate > best) best = rate;
    }
    mfu_set_free(&m);
    return best;
}

double mfu_square_rate(int n, int reps) {
    const size_t nn = (size_t)n * (size_t)n;
    float *a = moe_malloc(sizeof(float) * nn), *b = moe_malloc(sizeof(float) * nn),
          *c = moe_malloc(sizeof(float) * nn);
    for (size_t i = 0; i < nn; i++) {   /* values in [-1, 1): no denormals, no overflow */
        a[i] = (float)((int)(i * 2654435761u % 2001u) - 1000) * 1e-3f;
        b[i] = (float)((int)(i * 40503u % 2001u) - 1000) * 1e-3f;
    }
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {
        const double t0 = moe_now();
        gemm(false, false, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        const double dt = moe_now() - t0;
        if (r > 0 && dt < best) best = dt;
    }
    moe_free(a);
    moe_free(b);
    moe_free(c);
    return 2.0 * (double)n * (double)n * (double)n / best / 1e9;
}
