/* progress.h: a one-line progress report for long data preparation (encode, tokenizer
 * training): bytes done of the total, MB/s and the time left, redrawn in place on stderr
 * at most 4 times a second, and only when stderr is a terminal (isatty): logs and pipes
 * get no carriage-return noise.
 *
 * Non-goals: several bars at once, progress of unknown totals.
 */
#ifndef MOE_PROGRESS_H
#define MOE_PROGRESS_H

#include "core/common.h"

typedef struct Progress {
    bool on;             /* stderr is a terminal */
    const char *what;    /* label, e.g. "encode" (borrowed) */
    uint64_t total;      /* bytes */
    double t0, last;     /* start and last redraw (moe_now) */
    bool drawn;          /* a line is on screen */
} Progress;

/* Start a report of total bytes under label what (borrowed). */
void progress_start(Progress *p, const char *what, uint64_t total);
/* done bytes of total so far: redraw when on and 0.25 s passed since the last redraw. */
void progress_update(Progress *p, uint64_t done);
/* Clear the line (when one was drawn). */
void progress_end(Progress *p);
/* "12.3 MB" style size into out. */
void progress_fmt_bytes(double bytes, char *out, size_t cap);

#endif
