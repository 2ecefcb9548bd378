/* cmd_report.c: see cmd_report.h. */
#include "train/cmd_report.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "train/cli.h"
#include "train/outguard.h"
#include "train/report.h"

static const char *const REPORT_HELP =
    "usage: moetrain report RUN_DIR [RUN_DIR...] [--out FILE.html] [--force]\n"
    "\n"
    "Writes one self-contained HTML page (inline SVG, no JavaScript, no network) with the\n"
    "run's loss and validation loss against tokens seen, aux and z losses, learning rate,\n"
    "gradient norm, throughput, router entropy and load imbalance per layer, a heatmap of\n"
    "expert load per layer over time, and config.yaml. Several run directories go on one\n"
    "page: line plots overlay one curve per run, heatmaps are drawn per run.\n"
    "Reads RUN_DIR/metrics.jsonl, RUN_DIR/eval.jsonl and RUN_DIR/config.yaml; works on a\n"
    "run that is still training.\n"
    "\n"
    "options:\n"
    "  --out FILE.html   where to write the page (written atomically); default\n"
    "                    RUN_DIR/report.html for one run, required for several. An earlier\n"
    "                    moetrain report there is replaced; any other file needs --force;\n"
    "                    a file the report reads never is\n"
    "  --force           replace an existing FILE.html that is not a moetrain report\n"
    "  -h, --help        this help\n";

static int report_usage(const char *msg) { return cli_usage("report", "%s", msg); }

/* The output guard (train/outguard.h) for out, given the run directories among argv: the
 * files the report reads are its inputs; an earlier report may be replaced without --force. */
static int check_output(const char *out, int argc, char **argv, int nd, bool force) {
    char (*in)[4200] = moe_calloc((size_t)nd * 3 * sizeof *in);
    const char **inp = moe_calloc((size_t)nd * 3 * sizeof *inp);
    int n = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--out")) {
            i++;
            continue;
        }
        if (argv[i][0] == '-') continue;
        static const char *const files[3] = {"metrics.jsonl", "eval.jsonl", "config.yaml"};
        for (int k = 0; k < 3; k++) {
            snprintf(in[n], sizeof in[n], "%s/%s", argv[i], files[k]);
            inp[n] = in[n];
            n++;
        }
    }
    int rc = outguard_cli(out, OUTGUARD_FILE, "--out", inp, n, force || report_is_page(out));
    moe_free(inp);
    moe_free(in);
    return rc;
}

int cmd_report(int argc, char **argv) {
    const char *out = NULL;
    int nd = 0;
    bool force = false;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(REPORT_HELP, stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--force")) {
            force = true;
        } else if (!strcmp(argv[i], "--out")) {
            if (i + 1 >= argc) return report_usage("--out needs a file name");
            if (out) return report_usage("--out given twice");
            out = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            char msg[256];
            snprintf(msg, sizeof msg, "unknown option '%s'", argv[i]);
            return report_usage(msg);
        } else {
            nd++;
        }
    }
    if (nd == 0) return report_usage("no run directory given");
    if (nd > 1 && !out) return report_usage("--out FILE.html is required with several runs");
    char def[4096];
    if (!out) {   /* the one run directory */
        for (int i = 0; i < argc && !out; i++)
            if (argv[i][0] != '-') {
                snprintf(def, sizeof def, "%s/report.html", argv[i]);
                out = def;
            }
    }
    int guard = check_output(out, argc, argv, nd, force);
    if (guard) return guard;
    RunData *runs = moe_calloc((size_t)nd * sizeof *runs);
    MoeErr err;
    memset(&err, 0, sizeof err);
    int k = 0, rc = 1;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--out")) {
            i++;
            continue;
        }
        if (!strcmp(argv[i], "--force")) continue;
        if (report_load_run(&runs[k], argv[i], &err)) goto done;
        k++;
    }
    /* two runs with the same base name (a/x, b/x) are told apart by their full paths */
    for (int a = 0; a < nd; a++)
        for (int b = a + 1; b < nd; b++)
            if (!strcmp(runs[a].name, runs[b].name)) {
                for (int c = 0; c < nd; c++) {
                    moe_free(runs[c].name);
                    runs[c].name = moe_strdup(runs[c].dir);
                }
                a = b = nd;
            }
    if (report_write(runs, nd, out, &err)) goto done;
    printf("wrote %s (%d run%s", out, nd, nd > 1 ? "s" : "");
    for (int i = 0; i < nd; i++)
        printf("%s %s: %zu steps", i ? "," : ";", runs[i].name, runs[i].n);
    printf(")\n");
    rc = 0;
done:
    if (rc) {
        fprintf(stderr, "moetrain: error: %s\n", err.msg);
        if (err.hint[0]) fprintf(stderr, "hint: %s\n", err.hint);
    }
    for (int i = 0; i < nd; i++) report_run_free(&runs[i]);
    moe_free(runs);
    return rc;
}
