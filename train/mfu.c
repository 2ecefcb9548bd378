/* mfu.c: see mfu.h. */
#include "train/mfu.h"

#include <cblas.h>

typedef struct Gemm { int m, n, k; bool ta, tb; int reps; } Gemm;

/* The three products of a linear layer y (N,out) = x (N,in) W^T, each repeated reps times. */
static int add_linear(Gemm *g, int n, int N, int in, int out, int reps) {
    g[n++] = (Gemm){N, out, in, false, true, reps};    /* forward */
    g[n++] = (Gemm){N, in, out, false, false, reps};   /* dx = dy W */
    g[n++] = (Gemm){out, in, N, true, false, reps};    /* dW = dy^T x */
    return n;
}

static double pass(const Gemm *g, int ng, const float *a, const float *b, float *c, double *fl) {
    double t0 = moe_now();
    *fl = 0;
    for (int i = 0; i < ng; i++) {
        for (int r = 0; r < g[i].reps; r++) {
            int lda = g[i].ta ? g[i].m : g[i].k, ldb = g[i].tb ? g[i].k : g[i].n;
            cblas_sgemm(CblasRowMajor, g[i].ta ? CblasTrans : CblasNoTrans,
                        g[i].tb ? CblasTrans : CblasNoTrans, g[i].m, g[i].n, g[i].k, 1.0f, a,
                        lda, b, ldb, 0.0f, c, g[i].n);
            *fl += 2.0 * g[i].m * g[i].n * g[i].k;
        }
    }
    return moe_now() - t0;
}

double mfu_sgemm_rate(const ModelShape *s, int N, int reps) {
    Gemm g[32];
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
    /* Buffers big enough for the largest operand of any product above. */
    size_t big = 0;
    for (int i = 0; i < ng; i++) {
        size_t mk = (size_t)g[i].m * g[i].k, kn = (size_t)g[i].k * g[i].n,
               mn = (size_t)g[i].m * g[i].n;
        if (mk > big) big = mk;
        if (kn > big) big = kn;
        if (mn > big) big = mn;
    }
    float *a = moe_malloc(big * sizeof(float)), *b = moe_malloc(big * sizeof(float)),
          *c = moe_malloc(big * sizeof(float));
    for (size_t i = 0; i < big; i++) {
        a[i] = 0.01f * (float)(i % 97) - 0.3f;
        b[i] = 0.02f * (float)(i % 89) - 0.5f;
    }
    double fl, best = 0;
    pass(g, ng, a, b, c, &fl);   /* warm-up: thread start, page faults */
    for (int r = 0; r < reps; r++) {
        double t = pass(g, ng, a, b, c, &fl);
        double rate = fl / t / 1e9;
        if (rate > best) best = rate;
    }
    moe_free(a);
    moe_free(b);
    moe_free(c);
    return best;
}
