/* mpi_nodes.c: the node layout of comm_nodes (parallel/comm.h) from MOE_NODE_MAP.
 *
 * Run under mpirun -n 4 with argv[1] naming the case; the test sets MOE_NODE_MAP itself
 * before comm_setup (every rank the same) and checks the layout against what the map says,
 * computed here from the case's own table, and that node_comm / cross_comm hold exactly the
 * ranks they should (a sum of 1 << rank over each communicator names its members):
 *   blocks       "0,0,1,1": 2 nodes of 2, hierarchical
 *   renumbered   "3,3,0,0": 2 nodes (any numbers below R name the nodes)
 *   one          "1,1,1,1": one node, not hierarchical
 *   interleaved  "0,1,0,1": 2 nodes, but not consecutive: flat
 *   unequal      "0,0,0,1": 2 nodes of 3 and 1: flat
 *   bad          "0,0,1": too short: comm_setup fails on every rank, naming the variable
 *   real         unset: the real layout; all ranks of a test run share one machine
 * Prints "N passed, N failed"; exits non-zero on a failure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/blas.h"
#include "parallel/comm.h"

static int g_pass, g_fail;
static void check(int cond, const char *what) {
    if (cond) {
        g_pass++;
    } else {
        g_fail++;
        fprintf(stderr, "FAIL: %s\n", what);
    }
}

static int members(MPI_Comm mc) {
    int me, sum = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    int bit = 1 << me;
    MPI_Allreduce(&bit, &sum, 1, MPI_INT, MPI_SUM, mc);
    return sum;
}

int main(int argc, char **argv) {
    blas_init(argv);
    const char *which = argc > 1 ? argv[1] : "blocks";
    static const struct { const char *name, *map; int nodes; bool hier; } cases[] = {
        {"blocks", "0,0,1,1", 2, true},     {"renumbered", "3,3,0,0", 2, true},
        {"one", "1,1,1,1", 1, false},       {"interleaved", "0,1,0,1", 2, false},
        {"unequal", "0,0,0,1", 2, false},   {"bad", "0,0,1", 0, false},
        {"real", NULL, 1, false},
    };
    int k = -1;
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++)
        if (!strcmp(cases[i].name, which)) k = i;
    if (k < 0) {
        fprintf(stderr, "mpi_nodes: unknown case %s\n", which);
        return 2;
    }
    if (cases[k].map) setenv("MOE_NODE_MAP", cases[k].map, 1);
    else unsetenv("MOE_NODE_MAP");
    Comm c;
    comm_init(&c, &argc, &argv);
    MoeErr err;
    memset(&err, 0, sizeof err);
    int rc = comm_setup(&c, 1, 4, c.size, &err);
    if (!strcmp(which, "bad")) {
        check(rc != 0, "a short map fails");
        check(strstr(err.msg, "MOE_NODE_MAP") != NULL, "the message names MOE_NODE_MAP");
    } else {
        check(rc == 0, "comm_setup succeeds");
        check(c.nodes == cases[k].nodes, "node count");
        check(c.hier == cases[k].hier, "hierarchical or flat");
        if (c.hier) {
            const int L = c.size / c.nodes;
            check(c.local_size == L && c.node == c.rank / L && c.local_rank == c.rank % L,
                  "node and local rank");
            int node_bits = 0, cross_bits = 0;
            for (int r = 0; r < c.size; r++) {
                if (r / L == c.rank / L) node_bits |= 1 << r;
                if (r % L == c.rank % L) cross_bits |= 1 << r;
            }
            check(members(c.node_comm) == node_bits, "node_comm holds the node's ranks");
            check(members(c.cross_comm) == cross_bits,
                  "cross_comm holds one rank per node, same local rank");
            int nr;
            MPI_Comm_rank(c.cross_comm, &nr);
            check(nr == c.node, "node index is the rank in cross_comm");
        } else {
            check(c.node_comm == MPI_COMM_NULL && c.cross_comm == MPI_COMM_NULL,
                  "no hierarchical communicators when flat");
        }
    }
    int fails = comm_max_world_i(&c, g_fail);
    if (c.rank == 0) printf("mpi_nodes %s: %d passed, %d failed\n", which, g_pass, fails);
    comm_finalize(&c);
    return fails ? 1 : 0;
}
