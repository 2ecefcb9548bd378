/* bench_progress.c: how a non-blocking collective advances while a rank computes, the
 * measurement behind the gradient reduction's choice of MPI_Test polling over a progress
 * thread (parallel/reduce.h, docs/performance.md).
 *
 *   mpirun -n R bench_progress [single|multiple] [--mb M] [--rounds N]
 *
 * Each rank computes K single-threaded sgemm products (n = 384, about the size of one
 * backward op of the models here) while an all-to-all of M MiB per rank (default 16) is in
 * flight, in three ways interleaved round by round (best round of N, default 7, reported):
 *   blocking   the products, then MPI_Alltoall
 *   polling    MPI_Ialltoall, MPI_Test after every product, MPI_Wait at the end
 *   thread     MPI_Ialltoall, a second thread calling MPI_Test until it completes
 *              (only with `multiple`: MPI_Init_thread(MPI_THREAD_MULTIPLE))
 * `single` initialises with MPI_THREAD_SINGLE (as moetrain does); running both shows what
 * MPI_THREAD_MULTIPLE costs the blocking and polling forms. Not a test: numbers depend on
 * the machine and its load.
 */
#include <cblas.h>
#include <mpi.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/blas.h"
#include "core/common.h"

enum { MODE_BLOCKING, MODE_POLLING, MODE_THREAD, MODES };
static const char *const mode_names[MODES] = {"blocking after", "MPI_Test polling",
                                              "progress thread"};

static MPI_Request g_req;

static void *progress(void *arg) {
    (void)arg;
    int f = 0;
    while (!f) MPI_Test(&g_req, &f, MPI_STATUS_IGNORE);
    return NULL;
}

int main(int argc, char **argv) {
    blas_init(argv);
    bool multiple = argc > 1 && !strcmp(argv[1], "multiple");
    double mb = 16;
    int rounds = 7;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mb") && i + 1 < argc) mb = atof(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
    }
    int prov = 0;
    MPI_Init_thread(&argc, &argv, multiple ? MPI_THREAD_MULTIPLE : MPI_THREAD_SINGLE, &prov);
    if (multiple && prov < MPI_THREAD_MULTIPLE) multiple = false;
    int R, me;
    MPI_Comm_size(MPI_COMM_WORLD, &R);
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    const size_t n = (size_t)(mb * 1048576.0 / 4) / (size_t)R * (size_t)R;
    float *s = moe_malloc(n * sizeof(float)), *r = moe_malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) s[i] = (float)i;
    const int N = 384, K = 60;
    float *A = moe_malloc(sizeof(float) * N * N), *B = moe_malloc(sizeof(float) * N * N);
    float *C = moe_malloc(sizeof(float) * N * N);
    for (int i = 0; i < N * N; i++) {
        A[i] = 1e-3f * (float)(i % 1000);
        B[i] = 1.0f;
    }
    const int cnt = (int)(n / (size_t)R);
    double best[MODES], comp[MODES], exposed[MODES];
    for (int m = 0; m < MODES; m++) best[m] = 1e30;
    for (int round = 0; round < rounds; round++)
        for (int m = 0; m < (multiple ? MODES : MODE_THREAD); m++) {
            MPI_Barrier(MPI_COMM_WORLD);
            const double t0 = moe_now();
            double tc, tm = 0;
            pthread_t th;
            int f = 0;
            if (m != MODE_BLOCKING) {
                const double q = moe_now();
                MPI_Ialltoall(s, cnt, MPI_FLOAT, r, cnt, MPI_FLOAT, MPI_COMM_WORLD, &g_req);
                tm += moe_now() - q;
                if (m == MODE_THREAD) pthread_create(&th, NULL, progress, NULL);
            }
            for (int k = 0; k < K; k++) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, A, N, B, N,
                            0.0f, C, N);
                if (m == MODE_POLLING && !f) {
                    const double q = moe_now();
                    MPI_Test(&g_req, &f, MPI_STATUS_IGNORE);
                    tm += moe_now() - q;
                }
            }
            tc = moe_now() - t0;
            const double q = moe_now();
            if (m == MODE_BLOCKING)
                MPI_Alltoall(s, cnt, MPI_FLOAT, r, cnt, MPI_FLOAT, MPI_COMM_WORLD);
            else if (m == MODE_THREAD) pthread_join(th, NULL);
            else if (!f) MPI_Wait(&g_req, MPI_STATUS_IGNORE);
            tm += moe_now() - q;
            double tot = moe_now() - t0;
            MPI_Allreduce(MPI_IN_PLACE, &tot, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
            if (tot < best[m]) {
                best[m] = tot;
                comp[m] = tc;
                exposed[m] = tm;
            }
        }
    if (me == 0) {
        printf("%d ranks, MPI_THREAD_%s, all-to-all of %.1f MiB per rank during %d sgemm of "
               "%d^3; best of %d rounds (slowest rank), rank 0's split:\n", R,
               multiple ? "MULTIPLE" : "SINGLE", mb, K, N, rounds);
        for (int m = 0; m < (multiple ? MODES : MODE_THREAD); m++)
            printf("  %-18s %.4f s (computing %.4f s, in MPI calls %.4f s)\n", mode_names[m],
                   best[m], comp[m], exposed[m]);
    }
    moe_free(s);
    moe_free(r);
    moe_free(A);
    moe_free(B);
    moe_free(C);
    MPI_Finalize();
    return 0;
}
