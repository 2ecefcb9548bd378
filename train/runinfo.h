/* runinfo.h: run.dir/runs.jsonl, the record of every process start that trained in a run
 * directory: one JSON object per line, appended, so a resumed run adds a line and the first
 * line is the fresh start. Each line holds:
 *   time       seconds since 1970-01-01 UTC (as METRIC_TIME in train/metrics.h)
 *   start      the same as ISO 8601 UTC, "2024-05-01T12:34:56Z"
 *   host, pid, cwd     rank 0's
 *   argv       the command line, every word (relative paths are relative to cwd)
 *   resumed_from, step the checkpoint this process resumed from (null for a fresh start)
 *              and the step it started at
 *   ranks, expert_parallel, rank_hosts   the rank layout: R, P and the host of each rank
 *   version, commit, compiler, build, libraries{openblas, openblas_core, openblas_threads,
 *   hdf5, mpi, libyaml}, cpu, isa         train/buildinfo.h
 * Readers: people and scripts (`tail -1 RUN/runs.jsonl`); nothing in moetrain reads it back.
 * Non-goals: the config (run.dir/config.yaml holds the effective one), the metrics.
 */
#ifndef MOE_RUNINFO_H
#define MOE_RUNINFO_H

#include "core/common.h"
#include "parallel/comm.h"

typedef struct RunStart {
    int argc;
    char *const *argv;          /* (argc) the process's command line, borrowed */
    const char *resumed_from;   /* checkpoint path, or NULL for a fresh start */
    long step;                  /* the step this process starts from */
} RunStart;

/* Append this process start's line to RUN/runs.jsonl (created when missing). Collective:
 * every rank of comm calls it (the ranks' host names are gathered); rank 0 writes the line
 * with one write() on an O_APPEND descriptor, then fsyncs. Returns 0, or -1 on every rank
 * with err (rank 0's names the file and the OS reason) when the write failed. */
int runinfo_append(const char *run_dir, const RunStart *rs, const Comm *comm, MoeErr *err);

#endif
