/* cmd_upcycle.c: `moetrain upcycle DENSE OUT --experts E --top-k K ...`. See cmd_upcycle.h;
 * the method and its papers are in checkpoints/upcycle.h. */
#include "train/cmd_upcycle.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoints/ckpt.h"
#include "checkpoints/upcycle.h"
#include "train/cli.h"
#include "train/outguard.h"

static const char *UPCYCLE_HELP =
    "usage: moetrain upcycle DENSE_CKPT OUT_CKPT --experts E --top-k K\n"
    "                [--router-init-std S] [--expert-noise X] [--granularity G] [--seed N]\n"
    "                [--shared-experts NS] [--shared-hidden FS] [--force]\n"
    "\n"
    "Sparse upcycling: writes an MoE checkpoint whose every expert starts as a copy of the\n"
    "dense checkpoint's SwiGLU FFN (attention, norms, embeddings and head copied; router\n"
    "N(0, S), noise router zeros). The output has no optimizer state, step 0 and the loader\n"
    "at its start; continue training with `moetrain CONFIG --resume OUT_CKPT` (CONFIG with the\n"
    "output's moe.n_experts, moe.top_k, moe.hidden) or set init.upcycle_from in CONFIG.\n"
    "Experts are stored by global index, so any rank layout (mpirun, expert parallel) loads\n"
    "the file. With X = 0 and G = 1 the output computes exactly what the dense model did.\n"
    "\n"
    "options:\n"
    "  --experts E           experts per MoE layer (>= 1, a multiple of G)\n"
    "  --top-k K             experts per token, 1..E\n"
    "  --router-init-std S   std of the router's normal init (default 0.02; 0 = zeros)\n"
    "  --expert-noise X      multiply each expert weight by 1 + X N(0,1) (default 0)\n"
    "  --granularity G       split the dense FFN's hidden units into G slices of width F/G\n"
    "                        (fine-grained experts, He et al. 2024; default 1)\n"
    "  --shared-experts NS   NS always-active shared experts (DeepSeekMoE; default 0): they\n"
    "                        start as the first NS x FS hidden units of the dense FFN, the\n"
    "                        routed slices are cut from the rest\n"
    "  --shared-hidden FS    width of each shared expert (default 0 = the routed width, i.e.\n"
    "                        the dense FFN is cut into NS + G equal slices)\n"
    "  --seed N              seed of the router draw and the noise (default: train.seed of\n"
    "                        the dense run)\n"
    "  --force               replace an existing OUT_CKPT (never DENSE_CKPT itself)\n"
    "  -h, --help            this help\n";

static int is_help(const char *a) { return !strcmp(a, "-h") || !strcmp(a, "--help"); }

static int usage(const char *msg, const char *arg) {
    return arg ? cli_usage("upcycle", "%s '%s'", msg, arg) : cli_usage("upcycle", "%s", msg);
}

static bool parse_i64(const char *s, long long lo, long long *out) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno == ERANGE || v < lo || v > 1000000000LL) return false;
    *out = v;
    return true;
}

static bool parse_nonneg(const char *s, float *out) {
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno == ERANGE || !isfinite(v) || v < 0.0) return false;
    *out = (float)v;
    return true;
}

int cmd_upcycle(int argc, char **argv) {
    const char *pos[2] = {NULL, NULL};
    int npos = 0;
    long long E = 0, K = 0, G = 1, seed = -1, NS = 0, FS = 0;
    UpcycleOpts o = {.granularity = 1, .router_init_std = 0.02f, .expert_noise = 0.0f};
    bool force = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (is_help(a)) {
            fputs(UPCYCLE_HELP, stdout);
            return 0;
        }
        if (!strcmp(a, "--force")) {
            force = true;
            continue;
        }
        if (a[0] == '-' && a[1]) {
            if (i + 1 >= argc) {   /* the last word: a known option lacks its value */
                static const char *const known[] = {"--experts", "--top-k", "--granularity",
                    "--seed", "--shared-experts", "--shared-hidden", "--router-init-std",
                    "--expert-noise"};
                bool is_known = false;
                for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
                    is_known = is_known || !strcmp(a, known[k]);
                return usage(is_known ? "missing value after" : "unknown option", a);
            }
            const char *v = argv[++i];
            bool ok;
            if (!strcmp(a, "--experts")) ok = parse_i64(v, 1, &E);
            else if (!strcmp(a, "--top-k")) ok = parse_i64(v, 1, &K);
            else if (!strcmp(a, "--granularity")) ok = parse_i64(v, 1, &G);
            else if (!strcmp(a, "--seed")) ok = parse_i64(v, 0, &seed);
            else if (!strcmp(a, "--shared-experts")) ok = parse_i64(v, 0, &NS);
            else if (!strcmp(a, "--shared-hidden")) ok = parse_i64(v, 0, &FS);
            else if (!strcmp(a, "--router-init-std")) ok = parse_nonneg(v, &o.router_init_std);
            else if (!strcmp(a, "--expert-noise")) ok = parse_nonneg(v, &o.expert_noise);
            else return usage("unknown option", a);
            if (!ok) {
                char msg[160];
                snprintf(msg, sizeof msg, "%s needs %s, got", a,
                         !strcmp(a, "--router-init-std") || !strcmp(a, "--expert-noise")
                             ? "a number >= 0"
                             : !strcmp(a, "--seed") || !strcmp(a, "--shared-experts") ||
                                       !strcmp(a, "--shared-hidden")
                                   ? "an integer >= 0" : "an integer >= 1");
                return usage(msg, v);
            }
        } else if (npos < 2) {
            pos[npos++] = a;
        } else {
            return usage("unexpected argument", a);
        }
    }
    if (npos < 2) return usage("upcycle needs DENSE_CKPT and OUT_CKPT", NULL);
    if (E == 0 || K == 0) return usage("--experts and --top-k are required", NULL);
    if (K > E) return usage("--top-k must not exceed --experts", NULL);
    if (E % G != 0) return usage("--experts must be a multiple of --granularity", NULL);
    if (FS > 0 && NS == 0) return usage("--shared-hidden needs --shared-experts", NULL);
    /* the same file however spelled (./d.h5, a hard link): refused even with --force */
    int guard = outguard_cli(pos[1], OUTGUARD_FILE, "OUT_CKPT", pos, 1, force);
    if (guard) return guard;
    o.granularity = (int)G;
    o.n_shared = (int)NS;
    o.shared_hidden = (int)FS;

    MoeErr err = {{0}, {0}};
    if (seed < 0) {   /* default: the dense run's seed */
        Config dc;
        memset(&dc, 0, sizeof dc);
        if (ckpt_read_config(pos[0], &dc, &err)) goto fail;
        seed = (long long)dc.train.seed;
        config_free(&dc);
    }
    o.seed = (uint64_t)seed;
    if (upcycle_ckpt(pos[0], pos[1], (int)E, (int)K, &o, &err)) goto fail;
    printf("upcycled %s -> %s: %lld experts (%lld copies x granularity %lld), top-k %lld, "
           "router N(0, %g), expert noise %g, seed %lld; no optimizer state, step 0\n",
           pos[0], pos[1], E, E / G, G, K, (double)o.router_init_std, (double)o.expert_noise,
           seed);
    if (NS > 0)
        printf("  + %lld shared expert(s) (%s), from the dense FFN's first hidden units\n", NS,
               FS > 0 ? "width given by --shared-hidden" : "as wide as a routed expert");
    return 0;
fail:
    fprintf(stderr, "moetrain: error: %s\n", err.msg);
    if (err.hint[0]) fprintf(stderr, "hint: %s\n", err.hint);
    return 1;
}
