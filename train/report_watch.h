/* report_watch.h: `moetrain report --watch`: keeps a report page up to date while its runs
 * write their metrics (the page: train/report.h; the command: train/cmd_report.h).
 *
 * Every `interval` seconds it looks at each run's metrics.jsonl, eval.jsonl and
 * config.yaml (size, mtime, inode: no reading); when one changed it loads the runs again
 * and rewrites the page, crash-safe (a browser reloading it sees the old page or the new
 * one), as a live page that reloads itself. It stops
 *   - on SIGINT or SIGTERM, or
 *   - when every run is done: no process holds its lock (RUN/.lock, which a training
 *     holds from start to end: checkpoints/rundir.h) and none of its files changed for
 *     report_watch_quiet(interval) seconds (the lock alone is not enough: a run written
 *     by a process that takes no lock, or a lock on a file system whose flock() is
 *     host-local);
 * and then writes the final page (no reloading) and returns. Before a run's first step
 * (metrics.jsonl missing or without a step) it waits for one; any other load error ends
 * the watch (after writing the last good data as the final page).
 *
 * The lock is probed with rundir_is_locked (checkpoints/rundir.h), released at once: while
 * a training holds it the probe fails and takes nothing; a training that starts in the same
 * microsecond as a successful probe would be refused (exit 2, retry): the probe runs only
 * after the quiet time, and the watch ends right after it succeeds, so once per watch.
 * Non-goals: following runs on other hosts (see above), inotify (polling a few files every
 * few seconds costs nothing and works on network file systems).
 */
#ifndef MOE_REPORT_WATCH_H
#define MOE_REPORT_WATCH_H

#include "core/common.h"

#define REPORT_WATCH_INTERVAL 5.0   /* default seconds between looks (--interval) */

/* Quiet time before a run with a free lock counts as done: max(3 x interval, 2) s. */
double report_watch_quiet(double interval);


/* Watches dirs[0..nd) and keeps out up to date (see above); interval in [0.1, 3600] s.
 * The page reloads every max(1, round(interval)) s while live. Prints one line per
 * rewrite and why it stopped to stdout. Returns 0 when it stopped (signal or runs done),
 * -1 (err, with hint) when loading a run or writing the page failed. SIGINT and SIGTERM
 * handlers are installed for the watch and the previous ones restored before returning. */
int report_watch(const char *const *dirs, int nd, const char *out, double interval,
                 MoeErr *err);

#endif
