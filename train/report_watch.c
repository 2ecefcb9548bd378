/* report_watch.c: see report_watch.h. */
#include "train/report_watch.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "checkpoints/rundir.h"
#include "train/report.h"
#include "train/report_data.h"

static volatile sig_atomic_t g_stop;   /* the signal that stops the watch, 0 = none */

static void on_signal(int sig) { g_stop = sig; }

double report_watch_quiet(double interval) { return fmax(3.0 * interval, 2.0); }

/* What a look at one file sees; all zero when it does not exist. */
typedef struct {
    long long size, mtime_ns, ino;
} FileMark;

static const char *const WATCHED[3] = {"metrics.jsonl", "eval.jsonl", "config.yaml"};

/* Marks of the watched files of dirs[0..nd) into m (nd x 3); returns 1 when any differs
 * from what m held. */
static int look(const char *const *dirs, int nd, FileMark *m) {
    int changed = 0;
    for (int i = 0; i < nd; i++)
        for (int k = 0; k < 3; k++) {
            char path[4200];
            struct stat st;
            FileMark now = {0, 0, 0};
            snprintf(path, sizeof path, "%s/%s", dirs[i], WATCHED[k]);
            if (stat(path, &st) == 0)
                now = (FileMark){(long long)st.st_size,
                                 (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec,
                                 (long long)st.st_ino};
            FileMark *old = &m[i * 3 + k];
            if (memcmp(old, &now, sizeof now)) changed = 1;
            *old = now;
        }
    return changed;
}

/* Sleeps s seconds, waking early when a stop signal arrives. */
static void nap(double s) {
    double end = moe_now() + s;
    while (!g_stop) {
        double left = end - moe_now();
        if (left <= 0) break;
        double d = fmin(left, 0.1);
        struct timespec ts = {(time_t)d, (long)((d - floor(d)) * 1e9)};
        nanosleep(&ts, NULL);   /* EINTR on a signal: the loop checks g_stop */
    }
}

static void say_steps(const char *what, const char *out, const RunData *runs, int nd) {
    printf("%s %s (", what, out);
    for (int i = 0; i < nd; i++) printf("%s%s: %zu steps", i ? ", " : "", runs[i].name, runs[i].n);
    printf(")\n");
    fflush(stdout);
}

int report_watch(const char *const *dirs, int nd, const char *out, double interval,
                 MoeErr *err) {
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;   /* no SA_RESTART: a sleep ends at once */
    sigemptyset(&sa.sa_mask);
    g_stop = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    const int reload_s = interval < 1.5 ? 1 : (int)lround(interval);
    const double quiet = report_watch_quiet(interval);
    FileMark *marks = moe_calloc((size_t)nd * 3 * sizeof *marks);
    RunData *cur = moe_calloc((size_t)nd * sizeof *cur), *next = moe_calloc((size_t)nd * sizeof *next);
    int have = 0, waiting = 0, rc = 0, done = 0;
    double last_change = moe_now();
    look(dirs, nd, marks);
    for (int first = 1; !g_stop; first = 0) {
        if (!first) {
            nap(interval);
            if (g_stop) break;
        }
        if (first || look(dirs, nd, marks)) {
            last_change = moe_now();
            int lr = report_load_runs(next, dirs, nd, err);
            if (lr == REPORT_NO_STEPS && !have) {
                if (!waiting) printf("waiting for the first step: %s\n", err->msg);
                fflush(stdout);
                waiting = 1;
                continue;
            }
            if (lr) {
                rc = -1;
                break;
            }
            for (int i = 0; i < nd; i++) report_run_free(&cur[i]);
            RunData *t = cur;
            cur = next, next = t, have = 1;
            if (report_write(cur, nd, out, reload_s, err)) {
                rc = -1;
                break;
            }
            say_steps("updated", out, cur, nd);
            continue;
        }
        if (!have || moe_now() - last_change < quiet) continue;
        int locked = 0;
        for (int i = 0; i < nd && !locked; i++) locked = rundir_is_locked(dirs[i]);
        if (!locked) {
            done = 1;
            break;
        }
    }
    if (have) {
        /* the final page: no reloading, also after an error (the last good data) */
        MoeErr werr;
        memset(&werr, 0, sizeof werr);
        if (report_write(cur, nd, out, 0, rc ? &werr : err)) {
            if (!rc) rc = -1;
        } else if (!rc) {
            say_steps(done ? "the run finished (its lock is free and nothing changed for "
                             "a while); final page"
                           : "stopped; final page",
                      out, cur, nd);
        }
    } else if (!rc) {
        printf("stopped before any step was logged: no page written\n");
    }
    for (int i = 0; i < nd; i++) {
        report_run_free(&cur[i]);
        report_run_free(&next[i]);
    }
    moe_free(cur);
    moe_free(next);
    moe_free(marks);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return rc;
}
