/* mpi_ep_gather.c: ep_gather_experts puts every expert on world rank 0, bit for bit.
 *
 * Run under mpirun with R ranks and expert parallelism P (argument; R a multiple of P). A
 * store of one dense tensor (4, 3) and two stacked expert tensors, w1 (E, 5, 3) trainable
 * and w2 (E, 3, 5) frozen (no moments), E = 8. Every rank fills its slice from the GLOBAL
 * expert index (value = 1000 e + element index; m = -value; v = 2 value), ranks of other
 * EP groups with junk that must not arrive. After the gather rank 0's full store must hold
 * exactly the formula for all E experts (moments of the trainable tensor only), its dense
 * block rank 0's values and moments. Prints "N passed, N failed"; exits non-zero on a
 * failure (seen to fail with the slices placed in reverse rank order). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/blas.h"
#include "autograd/params.h"
#include "parallel/comm.h"
#include "parallel/ep_gather.h"

enum { E = 8 };
static int g_pass, g_fail;
static void check(int cond, const char *what, long i) {
    if (cond) g_pass++;
    else if (g_fail++ < 5) fprintf(stderr, "FAIL: %s at %ld\n", what, i);
}

static void declare(ParamSet *ps, int e_local) {
    params_init(ps);
    int d[2] = {4, 3}, w1[3] = {e_local, 5, 3}, w2[3] = {e_local, 3, 5};
    params_add(ps, "dense.weight", PBLOCK_DENSE, 2, d, true, INIT_ZEROS, 0, 0);
    params_add(ps, "experts.{e}.w1.weight", PBLOCK_EXPERT, 3, w1, true, INIT_ZEROS, 0, 0);
    int i2 = params_add(ps, "experts.{e}.w2.weight", PBLOCK_EXPERT, 3, w2, true, INIT_ZEROS,
                        0, 0);
    params_set_trainable(ps, i2, false);
    params_finalise(ps);
}

int main(int argc, char **argv) {
    blas_init(argv);
    Comm c;
    comm_init(&c, &argc, &argv);
    MoeErr err;
    int ep = argc > 1 ? atoi(argv[1]) : 2;
    if (comm_setup(&c, ep, E, c.size, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        comm_finalize(&c);
        return 1;
    }
    const int el = E / c.ep, e_first = c.ep_rank * el;
    ParamSet local, full;
    declare(&local, el);
    const bool group0 = c.rank < c.ep;
    for (int i = 0; i < local.count; i++) {
        const Param *p = &local.p[i];
        ParamBlock *b = &local.blocks[p->block];
        const size_t per = p->block == PBLOCK_EXPERT ? p->t.n / (size_t)el : p->t.n;
        for (size_t j = 0; j < p->t.n; j++) {
            const int e = p->block == PBLOCK_EXPERT ? e_first + (int)(j / per) : 0;
            float v = group0 ? (float)(1000 * e + (long)(j % per) + 100000 * i) : -7.0f;
            if (p->block == PBLOCK_DENSE && c.rank != 0) v = -9.0f;   /* rank 0's must win */
            b->data[p->off + j] = v;
            if (p->trainable) {
                b->m[p->goff + j] = -v;
                b->v[p->goff + j] = 2 * v;
            }
        }
    }
    float *xfer = NULL;
    if (c.rank == 0) {
        declare(&full, E);
        xfer = calloc(3 * local.blocks[PBLOCK_EXPERT].n, sizeof(float));
    }
    ep_gather_experts(&local, c.rank == 0 ? &full : NULL, xfer, &c);
    if (c.rank == 0) {
        for (int i = 0; i < full.count; i++) {
            const Param *p = &full.p[i];
            const ParamBlock *b = &full.blocks[p->block];
            const size_t per = p->block == PBLOCK_EXPERT ? p->t.n / (size_t)E : p->t.n;
            for (size_t j = 0; j < p->t.n; j++) {
                const int e = p->block == PBLOCK_EXPERT ? (int)(j / per) : 0;
                const float v = (float)(1000 * e + (long)(j % per) + 100000 * i);
                check(b->data[p->off + j] == v, p->name, (long)j);
                if (p->trainable) {
                    check(b->m[p->goff + j] == -v, "first moment", (long)j);
                    check(b->v[p->goff + j] == 2 * v, "second moment", (long)j);
                }
            }
        }
        check(!full.p[2].trainable, "the frozen tensor stays frozen", 0);
        printf("ranks %d, expert parallel %d: %d passed, %d failed\n", c.size, c.ep, g_pass,
               g_fail);
        params_free(&full);
        free(xfer);
    }
    params_free(&local);
    int bad = comm_max_world_i(&c, g_fail > 0);
    comm_finalize(&c);
    return bad ? 1 : 0;
}
