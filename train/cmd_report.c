/* cmd_report.c: see cmd_report.h. */
#include "train/cmd_report.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/cli.h"
#include "train/outguard.h"
#include "train/report.h"
#include "train/report_data.h"
#include "train/report_watch.h"

static const char *const REPORT_HELP =
    "usage: moetrain report RUN_DIR [RUN_DIR...] [--out FILE.html] [--force]\n"
    "                       [--watch [--interval SECONDS]]\n"
    "\n"
    "Writes one self-contained HTML page (inline SVG and a small inline script; nothing\n"
    "from the network) with the run's loss and validation loss, aux and z losses, learning\n"
    "rate, gradient norm, throughput, router entropy, load imbalance and experts per token\n"
    "per layer against the step, the tokens seen or the wall-clock time (a switch on the\n"
    "page), with an EMA smoothing switch and values on hover; a heatmap of expert load per\n"
    "layer over time, with dead and dominant experts named next to it; and config.yaml.\n"
    "Several run directories go on one page: line plots overlay one curve per run,\n"
    "heatmaps are drawn per run, and the configuration shows only the keys that differ.\n"
    "Reads RUN_DIR/metrics.jsonl, RUN_DIR/eval.jsonl and RUN_DIR/config.yaml; works on a\n"
    "run that is still training.\n"
    "\n"
    "options:\n"
    "  --out FILE.html   where to write the page (written atomically); default\n"
    "                    RUN_DIR/report.html for one run, required for several. An earlier\n"
    "                    moetrain report there is replaced; any other file needs --force;\n"
    "                    a file the report reads never is\n"
    "  --force           replace an existing FILE.html that is not a moetrain report\n"
    "  --watch           keep the page up to date while the runs write metrics: rewrite it\n"
    "                    when their files change (the page reloads itself meanwhile); stop\n"
    "                    on Ctrl-C, or once no training holds the runs' lock (RUN_DIR/.lock)\n"
    "                    and nothing changed for 3 intervals; then write the final page\n"
    "                    (no reloading). Waits for a run's first step\n"
    "  --interval S      seconds between looks at the files with --watch (default 5,\n"
    "                    0.1 to 3600)\n"
    "  -h, --help        this help\n";

static int report_usage(const char *msg) { return cli_usage("report", "%s", msg); }

/* The output guard (train/outguard.h) for out, given the run directories: the files the
 * report reads are its inputs; an earlier report may be replaced without --force. */
static int check_output(const char *out, const char *const *dirs, int nd, bool force) {
    char (*in)[4200] = moe_calloc((size_t)nd * 3 * sizeof *in);
    const char **inp = moe_calloc((size_t)nd * 3 * sizeof *inp);
    int n = 0;
    for (int i = 0; i < nd; i++) {
        static const char *const files[3] = {"metrics.jsonl", "eval.jsonl", "config.yaml"};
        for (int k = 0; k < 3; k++) {
            snprintf(in[n], sizeof in[n], "%s/%s", dirs[i], files[k]);
            inp[n] = in[n];
            n++;
        }
    }
    int rc = outguard_cli(out, OUTGUARD_FILE, "--out", inp, n, force || report_is_page(out));
    moe_free(inp);
    moe_free(in);
    return rc;
}

static int print_err(const MoeErr *err) {
    fprintf(stderr, "moetrain: error: %s\n", err->msg);
    if (err->hint[0]) fprintf(stderr, "hint: %s\n", err->hint);
    return 1;
}

int cmd_report(int argc, char **argv) {
    const char *out = NULL, *interval_arg = NULL;
    const char **dirs = moe_calloc((size_t)(argc > 0 ? argc : 1) * sizeof *dirs);
    int nd = 0, rc = 2;
    bool force = false, watch = false;
    char msg[256];
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(REPORT_HELP, stdout);
            rc = 0;
            goto done;
        }
        if (!strcmp(argv[i], "--force")) {
            force = true;
        } else if (!strcmp(argv[i], "--watch")) {
            watch = true;
        } else if (!strcmp(argv[i], "--out") || !strcmp(argv[i], "--interval")) {
            const char **dst = argv[i][2] == 'o' ? &out : &interval_arg;
            if (i + 1 >= argc) {
                snprintf(msg, sizeof msg, "%s needs a value", argv[i]);
                rc = report_usage(msg);
                goto done;
            }
            if (*dst) {
                snprintf(msg, sizeof msg, "%s given twice", argv[i]);
                rc = report_usage(msg);
                goto done;
            }
            *dst = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            snprintf(msg, sizeof msg, "unknown option '%s'", argv[i]);
            rc = report_usage(msg);
            goto done;
        } else {
            dirs[nd++] = argv[i];
        }
    }
    double interval = REPORT_WATCH_INTERVAL;
    if (interval_arg) {
        char *end;
        interval = strtod(interval_arg, &end);
        if (!watch) {
            rc = report_usage("--interval applies to --watch only");
            goto done;
        }
        if (end == interval_arg || *end || !(interval >= 0.1 && interval <= 3600)) {
            snprintf(msg, sizeof msg, "--interval '%s': want seconds from 0.1 to 3600",
                     interval_arg);
            rc = report_usage(msg);
            goto done;
        }
    }
    if (nd == 0) {
        rc = report_usage("no run directory given");
        goto done;
    }
    if (nd > 1 && !out) {
        rc = report_usage("--out FILE.html is required with several runs");
        goto done;
    }
    char def[4096];
    if (!out) {   /* the one run directory */
        snprintf(def, sizeof def, "%s/report.html", dirs[0]);
        out = def;
    }
    rc = check_output(out, dirs, nd, force);
    if (rc) goto done;
    MoeErr err;
    memset(&err, 0, sizeof err);
    if (watch) {
        rc = report_watch(dirs, nd, out, interval, &err) ? print_err(&err) : 0;
        goto done;
    }
    RunData *runs = moe_calloc((size_t)nd * sizeof *runs);
    if (report_load_runs(runs, dirs, nd, &err) || report_write(runs, nd, out, 0, &err)) {
        rc = print_err(&err);
    } else {
        printf("wrote %s (%d run%s", out, nd, nd > 1 ? "s" : "");
        for (int i = 0; i < nd; i++)
            printf("%s %s: %zu steps", i ? "," : ";", runs[i].name, runs[i].n);
        printf(")\n");
        rc = 0;
    }
    for (int i = 0; i < nd; i++) report_run_free(&runs[i]);
    moe_free(runs);
done:
    moe_free(dirs);
    return rc;
}
