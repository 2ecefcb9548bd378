/* cmd_plan.c: `moetrain plan CONFIG ...`. See cmd_plan.h; the formulas are in
 * train/costmodel.c. */
#include "train/cmd_plan.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "configs/config.h"
#include "train/cli.h"
#include "train/costmodel.h"

static const char *PLAN_HELP =
    "usage: moetrain plan CONFIG [--set section.key=value ...] [--ranks R] [--nodes N]\n"
    "                     [--net-gbps X] [--net-us Y] [--shm-gbs X] [--shm-us Y]\n"
    "                     [--node-tflops Z] [--hidden H]\n"
    "\n"
    "Plans one optimizer step of CONFIG on R ranks spread over N nodes (ranks placed by slot:\n"
    "node n holds ranks n R/N .. (n+1) R/N - 1), from the config alone: the layout\n"
    "(parallel.expert_parallel as training would choose it), the memory of a rank, the bytes\n"
    "each rank sends per step by kind (gradient reduction, the sharded optimizer's parameter\n"
    "all-gather, the expert all-to-all under uniform routing, the routing-count all-reduces;\n"
    "the same definitions as the counters bench_train reports), the bytes leaving each node,\n"
    "and the predicted step time: compute at the node's sustained rate, communication from\n"
    "bandwidth and latency per message, a share of it hidden behind compute. The layout keys\n"
    "are config keys: --set parallel.expert_parallel=P, --set parallel.shard_optimizer=true,\n"
    "--set parallel.hierarchical=false. docs/scaling.md derives every formula.\n"
    "\n"
    "options:\n"
    "  --set section.key=value  override one config key (repeatable), as for training\n"
    "  --ranks R          ranks in all (default 1)\n"
    "  --nodes N          nodes, dividing R (default 1)\n"
    "  --net-gbps X       network bandwidth of a node, each direction, Gb/s (default 100)\n"
    "  --net-us Y         latency of a network message, microseconds (default 5)\n"
    "  --shm-gbs X        bandwidth of a rank's transfers inside a node, GB/s (default 20)\n"
    "  --shm-us Y         latency of a message inside a node, microseconds (default 1)\n"
    "  --node-tflops Z    sustained training TFLOP/s of one node (default 2): its matrix\n"
    "                     product rate times the MFU it reaches (bench_train measures both)\n"
    "  --hidden H         share of the communication time hidden behind compute, 0..1\n"
    "                     (default 0: every collective blocks)\n"
    "  -h, --help         this help\n";

static bool is_help(const char *a) { return !strcmp(a, "-h") || !strcmp(a, "--help"); }

static bool parse_num(const char *s, double *out) {
    char *end = NULL;
    errno = 0;
    const double v = strtod(s, &end);
    if (!*s || *end || errno == ERANGE || !isfinite(v)) return false;
    *out = v;
    return true;
}

static bool parse_int(const char *s, int *out) {
    char *end = NULL;
    errno = 0;
    const long v = strtol(s, &end, 10);
    if (!*s || *end || errno == ERANGE || v < 1 || v > 1000000) return false;
    *out = (int)v;
    return true;
}

static const char *human(double b, char *buf, size_t cap) {
    if (b >= 1e9) snprintf(buf, cap, "%.3f GB", b / 1e9);
    else if (b >= 1e6) snprintf(buf, cap, "%.3f MB", b / 1e6);
    else if (b >= 1e3) snprintf(buf, cap, "%.3f kB", b / 1e3);
    else snprintf(buf, cap, "%.0f B", b);
    return buf;
}

static void print_plan(const Config *c, const CostCluster *k, const CostPlan *p) {
    char b1[32], b2[32], b3[32];
    printf("plan of %s on %d rank(s), %d node(s) x %d ranks: expert_parallel %d, expert "
           "replicas %d, shard_optimizer %s, hierarchical %s\n", c->path ? c->path : "config",
           p->R, p->nodes, p->Ln, p->P, p->G_e, p->shard ? "true" : "false",
           p->hier ? "true" : "false");
    printf("model: %.4g M parameters, %.4g M active per token; trainable per rank: dense "
           "%.4g M, experts %.4g M\n", p->n_params / 1e6, p->n_active / 1e6, p->n_dense / 1e6,
           p->n_expert / 1e6);
    printf("per rank and micro-batch: %.0f tokens, %.0f routed slots per MoE layer; %d "
           "micro-batch(es) per step; memory plan %s per rank\n", p->tokens, p->slots, p->A,
           human(p->memory, b1, sizeof b1));
    printf("bytes sent per rank per step:\n");
    printf("  %-24s %14.0f  %s (dense %s over %d ranks, experts %s over %d)\n",
           "gradient reduction", p->grad_dense + p->grad_expert,
           human(p->grad_dense + p->grad_expert, b1, sizeof b1),
           human(p->grad_dense, b2, sizeof b2), p->R, human(p->grad_expert, b3, sizeof b3),
           p->G_e);
    printf("  %-24s %14.0f  %s\n", "parameter all-gather", p->gather,
           human(p->gather, b1, sizeof b1));
    printf("  %-24s %14.0f  %s (rows %s, x %.0f transfers, uniform routing%s; counts %s)\n",
           "expert all-to-all", p->a2a_rows + p->a2a_counts,
           human(p->a2a_rows + p->a2a_counts, b1, sizeof b1), human(p->a2a_rows, b2, sizeof b2),
           p->xfers, p->two_stage ? ", two-stage route: rows for other nodes sent twice" : "",
           human(p->a2a_counts, b3, sizeof b3));
    printf("  %-24s %14.0f  %s (routing counts)\n", "small all-reduces", p->other,
           human(p->other, b1, sizeof b1));
    printf("bytes leaving each node per step: gradient reduction %s, all-gather %s, "
           "all-to-all %s\n", human(p->net_grad, b1, sizeof b1),
           human(p->net_gather, b2, sizeof b2), human(p->net_a2a, b3, sizeof b3));
    printf("time per step (%.4g Gb/s and %.4g us between nodes, %.4g GB/s and %.4g us inside, "
           "%.4g TFLOP/s per node, %.0f %% of communication hidden):\n", k->net_gbps,
           k->net_us, k->shm_gbs, k->shm_us, k->node_tflops, 100.0 * k->hidden);
    printf("  %-24s %10.4f s (%.4g TFLOP per rank)\n", "compute", p->t_compute,
           p->flops / 1e12);
    printf("  %-24s %10.4f s\n", "gradient reduction", p->t_grad);
    printf("  %-24s %10.4f s\n", "parameter all-gather", p->t_gather);
    printf("  %-24s %10.4f s\n", "expert all-to-all", p->t_a2a);
    printf("  %-24s %10.4f s\n", "small all-reduces", p->t_other);
    printf("  %-24s %10.4f s (communication %.4f s = %.1f %% of compute + communication; "
           "%.0f tokens/s)\n", "step", p->t_step, p->t_comm,
           100.0 * p->t_comm / (p->t_compute + p->t_comm > 0 ? p->t_compute + p->t_comm : 1),
           p->tokens_per_s);
}

int cmd_plan(int argc, char **argv) {
    if (argc < 1) return cli_usage("plan", "plan needs a config file");
    const char *path = NULL;
    CostCluster k;
    costmodel_cluster_defaults(&k);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (is_help(a)) {
            fputs(PLAN_HELP, stdout);
            return 0;
        }
        if (a[0] != '-') {
            if (path) return cli_usage("plan", "only one config file may be given ('%s', then "
                                       "'%s')", path, a);
            path = a;
            continue;
        }
        static const char *const opts[] = {"--set", "--ranks", "--nodes", "--net-gbps",
                                           "--net-us", "--shm-gbs", "--shm-us",
                                           "--node-tflops", "--hidden"};
        bool known = false;
        for (size_t j = 0; j < sizeof opts / sizeof opts[0]; j++) known |= !strcmp(a, opts[j]);
        if (!known) return cli_usage("plan", "unknown option '%s'", a);
        if (i + 1 >= argc) return cli_usage("plan", "missing value after '%s'", a);
        const char *v = argv[++i];
        bool ok = true;
        if (!strcmp(a, "--set")) continue;   /* applied after the file is read */
        else if (!strcmp(a, "--ranks")) ok = parse_int(v, &k.ranks);
        else if (!strcmp(a, "--nodes")) ok = parse_int(v, &k.nodes);
        else if (!strcmp(a, "--net-gbps")) ok = parse_num(v, &k.net_gbps) && k.net_gbps > 0;
        else if (!strcmp(a, "--net-us")) ok = parse_num(v, &k.net_us) && k.net_us >= 0;
        else if (!strcmp(a, "--shm-gbs")) ok = parse_num(v, &k.shm_gbs) && k.shm_gbs > 0;
        else if (!strcmp(a, "--shm-us")) ok = parse_num(v, &k.shm_us) && k.shm_us >= 0;
        else if (!strcmp(a, "--node-tflops"))
            ok = parse_num(v, &k.node_tflops) && k.node_tflops > 0;
        else ok = parse_num(v, &k.hidden) && k.hidden >= 0 && k.hidden <= 1;
        if (!ok)
            return cli_usage("plan", "%s needs %s, got '%s'", a,
                             !strcmp(a, "--ranks") || !strcmp(a, "--nodes")
                                 ? "an integer in [1, 1000000]"
                             : !strcmp(a, "--hidden") ? "a number in [0, 1]"
                             : !strcmp(a, "--net-us") || !strcmp(a, "--shm-us")
                                 ? "a number >= 0" : "a number > 0", v);
    }
    if (!path) return cli_usage("plan", "no config file given");
    Config c;
    MoeErr err;
    memset(&c, 0, sizeof c);
    int rc = config_load(&c, path, &err);
    for (int i = 0; !rc && i < argc; i++)
        if (!strcmp(argv[i], "--set")) rc = config_set(&c, argv[++i], &err);
    if (!rc) rc = config_validate(&c, &err);
    CostPlan p;
    if (!rc) rc = costmodel_estimate(&c, &k, &p, &err);
    if (rc) {
        fprintf(stderr, "moetrain: error: %s\n", err.msg);
        if (err.hint[0]) fprintf(stderr, "hint: %s\n", err.hint);
        config_free(&c);
        return 1;
    }
    print_plan(&c, &k, &p);
    config_free(&c);
    return fflush(stdout) ? 1 : 0;
}
