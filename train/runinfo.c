/* runinfo.c: see runinfo.h. */
#include "train/runinfo.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "checkpoints/json_out.h"
#include "train/buildinfo.h"

#define HOST_CAP 256

static void put_str(FILE *f, const char *key, const char *val) {
    fprintf(f, ",\"%s\":", key);
    if (val) json_out_str(f, val, strlen(val));
    else fputs("null", f);
}

/* The line (with its '\n') into a new buffer (*out, *n; moe_free). hosts: (R, HOST_CAP). */
static void format_line(const RunStart *rs, const Comm *comm, const char *hosts, char **out,
                        size_t *n) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char iso[32], cwd[4096];
    strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (!getcwd(cwd, sizeof cwd)) snprintf(cwd, sizeof cwd, "unknown");
    char *mem = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&mem, &len);
    ASSERT(f, "open_memstream: %s", strerror(errno));
    fprintf(f, "{\"time\":%.3f", (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec);
    put_str(f, "start", iso);
    put_str(f, "host", hosts);
    fprintf(f, ",\"pid\":%ld", (long)getpid());
    put_str(f, "cwd", cwd);
    fprintf(f, ",\"argv\":[");
    for (int i = 0; i < rs->argc; i++) {
        if (i) fputc(',', f);
        json_out_str(f, rs->argv[i], strlen(rs->argv[i]));
    }
    fprintf(f, "]");
    put_str(f, "resumed_from", rs->resumed_from);
    fprintf(f, ",\"step\":%ld,\"ranks\":%d,\"expert_parallel\":%d,\"rank_hosts\":[", rs->step,
            comm->size, comm->ep);
    for (int r = 0; r < comm->size; r++) {
        const char *h = hosts + (size_t)r * HOST_CAP;
        if (r) fputc(',', f);
        json_out_str(f, h, strlen(h));
    }
    fprintf(f, "],");
    BuildInfo bi;
    buildinfo_get(&bi);
    buildinfo_json(&bi, f);
    fprintf(f, "}\n");
    ASSERT(fclose(f) == 0, "open_memstream close: %s", strerror(errno));
    /* moe_malloc'd copy: the one allocator owns what callers free */
    *out = moe_malloc(len);
    memcpy(*out, mem, len);
    *n = len;
    free(mem);
}

/* One write() of the whole line on an O_APPEND descriptor (no other writer interleaves a
 * line of this size), then fsync: a reader sees complete lines only. */
static int append_line(const char *path, const char *line, size_t n, MoeErr *err) {
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        moe_errorf(err, "%s: cannot open for appending: %s", path, strerror(errno));
        return moe_hintf(err, "check that run.dir is writable");
    }
    const char *why = NULL;
    ssize_t w = write(fd, line, n);
    if (w < 0) why = strerror(errno);
    else if ((size_t)w != n) why = "short write (disk full?)";
    else if (fsync(fd) != 0) why = strerror(errno);
    if (close(fd) != 0 && !why) why = strerror(errno);
    if (!why) return 0;
    moe_errorf(err, "%s: write failed: %s", path, why);
    return moe_hintf(err, "free space on run.dir's disk, then start again");
}

int runinfo_append(const char *run_dir, const RunStart *rs, const Comm *comm, MoeErr *err) {
    char me[HOST_CAP];
    if (gethostname(me, sizeof me) != 0) snprintf(me, sizeof me, "unknown");
    me[HOST_CAP - 1] = 0;
    char *hosts = moe_calloc((size_t)comm->size * HOST_CAP);
    if (comm->mpi)
        MPI_Gather(me, HOST_CAP, MPI_CHAR, hosts, HOST_CAP, MPI_CHAR, 0, comm->world);
    else
        memcpy(hosts, me, HOST_CAP);
    int bad = 0;
    if (comm->rank == 0) {
        char path[4200], *line = NULL;
        size_t n = 0;
        snprintf(path, sizeof path, "%s/runs.jsonl", run_dir);
        format_line(rs, comm, hosts, &line, &n);
        bad = append_line(path, line, n, err);
        moe_free(line);
    }
    moe_free(hosts);
    if (comm_max_world_i(comm, bad)) {
        if (!bad) moe_errorf(err, "rank 0 could not write %s/runs.jsonl", run_dir);
        return -1;
    }
    return 0;
}
