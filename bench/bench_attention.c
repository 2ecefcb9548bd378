/* bench_attention.c: the fused attention op (op_attention, forward + backward) alone, for
 * several sliding windows at one shape, to show what the window's block skipping saves;
 * with --doc-len N also each window with the sequences packed with documents of N tokens
 * (op_attention_docs, documents starting at multiples of N), to show what skipping the
 * blocks between documents saves.
 *
 *   bench_attention [--B 8] [--T 256] [--H 8] [--Hkv 4] [--D 32] [--reps 15] [--doc-len N]
 *                   [W ...]
 *
 * Defaults are mixtral_tiny's per-layer shapes; W defaults to 0 (full causal), 64 and 128.
 * The W values are timed interleaved (rep by rep) and the best of --reps is printed, which
 * is the least disturbed by other processes on a shared machine. Threads: OPENBLAS_NUM_THREADS
 * (the op splits (sequence, kv head) tasks over them). Not a test.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/blas.h"
#include "autograd/ops.h"
#include "core/pool.h"

static int arg_int(const char *s, const char *name) {
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < 0 || v > 1 << 20) {
        fprintf(stderr, "bench_attention: %s needs an integer in [0, 2^20], got '%s'\n", name, s);
        exit(2);
    }
    return (int)v;
}

int main(int argc, char **argv) {
    blas_init(argv);
    int B = 8, T = 256, H = 8, Hkv = 4, D = 32, reps = 15, nw = 0, doc_len = 0;
    int Ws[16];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int *dst = !strcmp(a, "--B") ? &B : !strcmp(a, "--T") ? &T : !strcmp(a, "--H") ? &H
                 : !strcmp(a, "--Hkv") ? &Hkv : !strcmp(a, "--D") ? &D
                 : !strcmp(a, "--reps") ? &reps : !strcmp(a, "--doc-len") ? &doc_len : NULL;
        if (dst && i + 1 < argc) *dst = arg_int(argv[++i], a);
        else if (a[0] != '-' && nw < 16) Ws[nw++] = arg_int(a, "W");
        else {
            fprintf(stderr, "usage: bench_attention [--B N] [--T N] [--H N] [--Hkv N] [--D N] "
                            "[--reps N] [--doc-len N] [W ...]\n");
            return 2;
        }
    }
    if (B < 1 || T < 1 || D < 1 || Hkv < 1 || H < Hkv || H % Hkv || reps < 1) {
        fprintf(stderr, "bench_attention: need B, T, D, reps >= 1 and Hkv dividing H\n");
        return 2;
    }
    if (nw == 0) {
        Ws[0] = 0, Ws[1] = 64, Ws[2] = 128;
        nw = 3;
    }
    const int N = B * T;
    int sq[2] = {N, H * D}, sk[2] = {N, Hkv * D};
    /* q, k, v with their grad buffers: data (n) then grad (n) each */
    const size_t nq = (size_t)N * H * D, nk = (size_t)N * Hkv * D;
    float *buf = moe_calloc(sizeof(float) * 2 * (nq + 2 * nk));
    Tensor q, k, v;
    tensor_view(&q, buf, buf + nq, 2, sq, TENSOR_PARAM, "q");
    tensor_view(&k, buf + 2 * nq, buf + 2 * nq + nk, 2, sk, TENSOR_PARAM, "k");
    tensor_view(&v, buf + 2 * nq + 2 * nk, buf + 2 * nq + 3 * nk, 2, sk, TENSOR_PARAM, "v");
    MoeRng r;
    rng_seed(&r, 1);
    for (size_t i = 0; i < nq; i++) q.data[i] = 0.5f * rng_normal(&r);
    for (size_t i = 0; i < nk; i++) k.data[i] = 0.5f * rng_normal(&r);
    for (size_t i = 0; i < nk; i++) v.data[i] = rng_normal(&r);
    /* documents of doc_len tokens: each position's document starts at the multiple below */
    int32_t *start = moe_malloc(sizeof(int32_t) * (size_t)N);
    for (int i = 0; i < N; i++) start[i] = doc_len > 0 ? i % T - (i % T) % doc_len : 0;
    const int nd = doc_len > 0 ? 2 : 1;   /* variants per W: plain, then with documents */
    Tape t;
    tape_init(&t, 0);
    double best[2][16];
    for (int w = 0; w < nw; w++) best[0][w] = best[1][w] = 1e30;
    for (int rep = 0; rep < reps + 1; rep++)   /* rep 0 warms the arena up, not timed */
        for (int w = 0; w < nw; w++)
            for (int d = 0; d < nd; d++) {
                tape_reset(&t, true);
                double t0 = moe_now();
                Tensor *o = op_attention_docs(&t, &q, &k, &v, B, T, H, Hkv, D, Ws[w],
                                              d ? start : NULL);
                tape_backward(&t, o, NULL);
                double dt = moe_now() - t0;
                if (rep > 0 && dt < best[d][w]) best[d][w] = dt;
            }
    printf("op_attention forward + backward, B %d T %d H %d Hkv %d D %d, best of %d, %d "
           "thread(s)\n", B, T, H, Hkv, D, reps, pool_workers());
    for (int w = 0; w < nw; w++) {
        printf("  W %-5d %8.2f ms  (%.2fx W %d)\n", Ws[w], 1e3 * best[0][w],
               best[0][w] / best[0][0], Ws[0]);
        if (doc_len > 0)
            printf("  W %-5d %8.2f ms  (%.2fx W %d) with documents of %d tokens\n", Ws[w],
                   1e3 * best[1][w], best[1][w] / best[0][0], Ws[0], doc_len);
    }
    tape_free(&t);
    moe_free(start);
    moe_free(buf);
    return 0;
}
