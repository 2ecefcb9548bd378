/* progress.c: see progress.h. */
#include "data/progress.h"

#include <stdio.h>
#include <unistd.h>

#include "core/clock.h"

void progress_fmt_bytes(double b, char *out, size_t cap) {
    const char *unit[] = {"B", "kB", "MB", "GB", "TB"};
    int u = 0;
    while (b >= 1000.0 && u < 4) { b /= 1000.0; u++; }
    snprintf(out, cap, u ? "%.1f %s" : "%.0f %s", b, unit[u]);
}

void progress_start(Progress *p, const char *what, uint64_t total) {
    p->on = isatty(2) != 0;
    p->what = what;
    p->total = total;
    p->t0 = moe_now();
    p->last = p->t0 - 1.0;   /* the first update draws at once */
    p->drawn = false;
}

void progress_update(Progress *p, uint64_t done) {
    if (!p->on) return;
    double now = moe_now();
    if (now - p->last < 0.25) return;
    p->last = now;
    double dt = now - p->t0, rate = dt > 0 ? (double)done / dt : 0;
    char d[32], t[32], r[32];
    progress_fmt_bytes((double)done, d, sizeof d);
    progress_fmt_bytes((double)p->total, t, sizeof t);
    progress_fmt_bytes(rate, r, sizeof r);
    double left = rate > 0 && p->total > done ? (double)(p->total - done) / rate : 0;
    fprintf(stderr, "\r%s: %s of %s (%.0f%%), %s/s, ETA %.0f s   ", p->what, d, t,
            p->total ? 100.0 * (double)done / (double)p->total : 100.0, r, left);
    fflush(stderr);
    p->drawn = true;
}

void progress_end(Progress *p) {
    if (p->on && p->drawn) {
        fprintf(stderr, "\r%*s\r", 78, "");
        fflush(stderr);
    }
    p->drawn = false;
}
