/* rundir.c: a run directory's ownership (lock, fresh-start check) and checkpoint history
 * (generations, lineage, --resume auto, retention). See rundir.h.
 *
 * Every history function starts from one listing of RUN/checkpoints: each step_N.h5 with its
 * meta (or the error that kept it from being read), sorted newest first by (generation,
 * step), unreadable files last. The lineage walk then only compares numbers.
 */
#include "checkpoints/rundir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "checkpoints/h5io.h"
#include "core/fs.h"

#define RUNDIR_PATH_MAX 4096
#define RUNDIR_NAME_MAX 256

/* ---- paths ---- */

int rundir_ckpt_dir(const char *run_dir, char *out, size_t cap) {
    int k = snprintf(out, cap, "%s/checkpoints", run_dir);
    return k < 0 || (size_t)k >= cap ? -1 : 0;
}

int rundir_ckpt_path(const char *run_dir, int64_t step, char *out, size_t cap) {
    int k = snprintf(out, cap, "%s/checkpoints/step_%08lld.h5", run_dir, (long long)step);
    return k < 0 || (size_t)k >= cap ? -1 : 0;
}

static int too_long(const char *run_dir, MoeErr *err) {
    moe_errorf(err, "%s: run directory path too long", run_dir);
    return moe_hintf(err, "use a shorter run.dir");
}

int rundir_prepare(const char *run_dir, MoeErr *err) {
    char buf[RUNDIR_PATH_MAX];
    if (rundir_ckpt_dir(run_dir, buf, sizeof buf)) return too_long(run_dir, err);
    return fs_mkdirs(buf, err);
}

/* ---- the listing ---- */

typedef struct Entry {
    char name[RUNDIR_NAME_MAX];
    int64_t name_step;   /* N of the name step_N.h5 */
    bool tmp;            /* step_N.h5.tmp: a writer's temporary */
    bool readable;       /* meta read (then meta is valid) */
    bool bad;            /* readable, but failed ckpt_verify */
    CkptMeta meta;
    char why[1024];      /* the error when !readable or bad */
} Entry;

typedef struct Listing {
    char dir[RUNDIR_PATH_MAX];   /* RUN/checkpoints */
    Entry *v;                    /* (n) newest first: readable by (gen, step), then the rest */
    size_t n;
} Listing;

/* "step_<digits>.h5" (tmp false) or "step_<digits>.h5.tmp" (tmp true); anything else 0. */
static int parse_step_name(const char *name, int64_t *step, bool *tmp) {
    if (strncmp(name, "step_", 5) != 0) return 0;
    const char *p = name + 5, *q = p;
    while (*q >= '0' && *q <= '9') q++;
    if (q == p || q - p > 18) return 0;
    if (strcmp(q, ".h5") == 0) *tmp = false;
    else if (strcmp(q, ".h5.tmp") == 0) *tmp = true;
    else return 0;
    *step = strtoll(p, NULL, 10);
    return 1;
}

static int cmp_entry(const void *a, const void *b) {
    const Entry *x = a, *y = b;
    int64_t gx = x->readable ? x->meta.lineage_gen : -1, gy = y->readable ? y->meta.lineage_gen : -1;
    if (gx != gy) return gx < gy ? 1 : -1;
    int64_t sx = x->readable ? x->meta.step : x->name_step;
    int64_t sy = y->readable ? y->meta.step : y->name_step;
    return sx < sy ? 1 : sx > sy ? -1 : strcmp(x->name, y->name);
}

static void entry_path(const Listing *l, const Entry *e, char *out, size_t cap) {
    snprintf(out, cap, "%s/%s", l->dir, e->name);
}

static void listing_free(Listing *l) {
    moe_free(l->v);
    memset(l, 0, sizeof *l);
}

/* List RUN/checkpoints (a missing directory is an empty listing) and read every checkpoint's
 * meta. Fails (-1, err) when the directory exists but cannot be read. */
static int scan(const char *run_dir, Listing *l, MoeErr *err) {
    memset(l, 0, sizeof *l);
    if (rundir_ckpt_dir(run_dir, l->dir, sizeof l->dir)) return too_long(run_dir, err);
    DIR *d = opendir(l->dir);
    if (!d) {
        if (errno == ENOENT) return 0;
        moe_errorf(err, "%s: cannot read checkpoint directory: %s", l->dir, strerror(errno));
        return moe_hintf(err, "check the permissions of the run directory");
    }
    h5io_quiet();
    size_t cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        Entry e;
        memset(&e, 0, sizeof e);
        if (strlen(de->d_name) >= sizeof e.name ||
            !parse_step_name(de->d_name, &e.name_step, &e.tmp))
            continue;
        snprintf(e.name, sizeof e.name, "%s", de->d_name);
        if (!e.tmp) {
            char path[RUNDIR_PATH_MAX + RUNDIR_NAME_MAX];
            entry_path(l, &e, path, sizeof path);
            MoeErr me;
            e.readable = ckpt_read_meta(path, &e.meta, &me) == 0;
            if (!e.readable) snprintf(e.why, sizeof e.why, "%s", me.msg);
        }
        if (l->n == cap) {
            size_t nc = cap ? 2 * cap : 16;
            l->v = moe_realloc(l->v, cap * sizeof(Entry), nc * sizeof(Entry));
            cap = nc;
        }
        l->v[l->n++] = e;
    }
    closedir(d);
    if (l->n) qsort(l->v, l->n, sizeof(Entry), cmp_entry);
    return 0;
}

/* The parent recorded by generation g's files (any readable one: one process wrote them
 * all); false when none of them is left. */
static bool gen_parent(const Listing *l, int64_t g, int64_t *pg, int64_t *ps) {
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].readable && l->v[i].meta.lineage_gen == g) {
            *pg = l->v[i].meta.parent_gen;
            *ps = l->v[i].meta.parent_step;
            return true;
        }
    return false;
}

/* Is e on the lineage of the checkpoint (gen, step) whose generation resumed from (pg, ps)?
 * Walks up the parents; generation 0 has none, and a parent generation must be older (a
 * process's generation exceeds every one present when it started), which also bounds the
 * walk on a damaged history. */
static bool on_lineage(const Listing *l, const Entry *e, int64_t gen, int64_t step, int64_t pg,
                       int64_t ps) {
    if (!e->readable || e->tmp) return false;
    for (;;) {
        if (e->meta.lineage_gen == gen) return e->meta.step <= step;
        if (gen == 0 || (pg == 0 && ps == 0) || pg >= gen) return false;
        gen = pg;
        step = ps;
        if (gen > 0 && !gen_parent(l, gen, &pg, &ps)) pg = ps = 0;
    }
}

static bool is_tip_of(const Entry *e, int64_t gen, int64_t step) {
    return e->readable && e->meta.lineage_gen == gen && e->meta.step == step;
}

/* ---- ownership ---- */

/* Size of RUN/name, or 0 when it is missing or not a regular file with content. */
static long long content_size(const char *run_dir, const char *name) {
    char p[RUNDIR_PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/%s", run_dir, name);
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode) ? (long long)st.st_size : 0;
}

int rundir_check_fresh(const char *run_dir, MoeErr *err) {
    char dir[RUNDIR_PATH_MAX];
    if (rundir_ckpt_dir(run_dir, dir, sizeof dir)) return too_long(run_dir, err);
    size_t n_ckpt = 0;
    char newest[RUNDIR_NAME_MAX] = "";
    DIR *d = opendir(dir);
    if (!d && errno != ENOENT && errno != ENOTDIR) {
        moe_errorf(err, "%s: cannot read checkpoint directory: %s", dir, strerror(errno));
        return moe_hintf(err, "check the permissions of the run directory");
    }
    for (struct dirent *de; d && (de = readdir(d)) != NULL;) {
        /* any step_* that is not a writer's temporary: also damaged and set-aside files */
        size_t k = strlen(de->d_name);
        if (strncmp(de->d_name, "step_", 5) || (k >= 4 && !strcmp(de->d_name + k - 4, ".tmp")))
            continue;
        n_ckpt++;
        if (strcmp(de->d_name, newest) > 0) snprintf(newest, sizeof newest, "%s", de->d_name);
    }
    if (d) closedir(d);
    const bool metrics = content_size(run_dir, "metrics.jsonl") > 0;
    const bool evals = content_size(run_dir, "eval.jsonl") > 0;
    if (!n_ckpt && !metrics && !evals) return 0;
    char what[RUNDIR_NAME_MAX + 128];
    int k = snprintf(what, sizeof what, "%s%s%s", metrics ? "metrics.jsonl" : "",
                     metrics && evals ? ", " : "", evals ? "eval.jsonl" : "");
    if (n_ckpt)
        snprintf(what + k, sizeof what - (size_t)k, "%s%zu checkpoint file(s), the last %s",
                 k ? " and " : "", n_ckpt, newest);
    moe_errorf(err, "run.dir %s already holds a run (%s): a fresh start there would mix its "
               "files with that run's; nothing was changed", run_dir, what);
    moe_hintf(err, "continue that run with --resume auto, or start a new run in another "
              "directory: --set run.dir=NEW_DIR");
    return RUNDIR_REFUSED;
}

/* flock the open lock file; RUNDIR_REFUSED naming the holder when another process has it. */
static int take_lock(int fd, const char *run_dir, const char *lock, MoeErr *err) {
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) return 0;
    if (errno != EWOULDBLOCK) {
        moe_errorf(err, "%s: cannot lock: %s", lock, strerror(errno));
        return moe_hintf(err, "put run.dir on a file system that supports flock()");
    }
    char text[256] = "", host[128] = "?", when[64] = "?";
    long pid = 0;
    ssize_t got = pread(fd, text, sizeof text - 1, 0);
    text[got > 0 ? got : 0] = 0;
    if (sscanf(text, "%ld %127s %63s", &pid, host, when) >= 2)
        moe_errorf(err, "run.dir %s is in use by another training: pid %ld on host %s "
                   "(started %s; it holds %s)", run_dir, pid, host, when, lock);
    else
        moe_errorf(err, "run.dir %s is in use by another training (it holds %s, which does "
                   "not say which process yet)", run_dir, lock);
    moe_hintf(err, "wait for that run to end (or stop it), or train in another directory: "
              "--set run.dir=NEW_DIR");
    return RUNDIR_REFUSED;
}

/* "PID HOST START-TIME\n" into the locked file (replacing a former holder's text). */
static int write_holder(int fd, const char *lock, MoeErr *err) {
    char host[128] = "unknown", when[64] = "unknown", text[256];
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "unknown");
    host[sizeof host - 1] = 0;
    time_t now = time(NULL);
    struct tm tm;
    if (gmtime_r(&now, &tm)) strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    int n = snprintf(text, sizeof text, "%ld %s %s\n", (long)getpid(), host, when);
    if (n < 0 || (size_t)n >= sizeof text) n = (int)strlen(text);
    if (ftruncate(fd, 0) != 0 || pwrite(fd, text, (size_t)n, 0) != (ssize_t)n) {
        moe_errorf(err, "%s: cannot write: %s", lock, strerror(errno));
        return moe_hintf(err, "check free disk space and the permissions of run.dir");
    }
    return 0;
}

int rundir_open(RunDir *rd, const char *run_dir, bool fresh, MoeErr *err) {
    memset(rd, 0, sizeof *rd);
    rd->lock_fd = -1;
    char lock[RUNDIR_PATH_MAX];
    if (snprintf(lock, sizeof lock, "%s/.lock", run_dir) >= (int)sizeof lock)
        return too_long(run_dir, err);
    /* An existing lock file is locked before the fresh check (so a live run is reported as
     * such) without changing it; a missing one is created only after the check passed. */
    int rc = 0, fd = open(lock, O_RDWR | O_CLOEXEC);
    if (fd < 0 && errno != ENOENT) {
        moe_errorf(err, "%s: cannot open: %s", lock, strerror(errno));
        return moe_hintf(err, "check that run.dir (%s) is a writable directory", run_dir);
    }
    if (fd >= 0 && (rc = take_lock(fd, run_dir, lock, err))) goto fail;
    if (fresh && (rc = rundir_check_fresh(run_dir, err))) goto fail;
    if (fd < 0) {
        if ((rc = fs_mkdirs(run_dir, err))) goto fail;
        fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) {
            moe_errorf(err, "%s: cannot create: %s", lock, strerror(errno));
            moe_hintf(err, "check that run.dir (%s) is a writable directory", run_dir);
            return -1;
        }
        if ((rc = take_lock(fd, run_dir, lock, err))) goto fail;
        /* another run may have started between the check and the lock */
        if (fresh && (rc = rundir_check_fresh(run_dir, err))) goto fail;
    }
    if ((rc = write_holder(fd, lock, err))) goto fail;
    Listing l;
    if ((rc = scan(run_dir, &l, err))) goto fail;
    int64_t top = 0;
    for (size_t i = 0; i < l.n; i++)
        if (l.v[i].readable && l.v[i].meta.lineage_gen > top) top = l.v[i].meta.lineage_gen;
    listing_free(&l);
    rd->dir = moe_strdup(run_dir);
    rd->lock_fd = fd;
    rd->locked = true;
    rd->gen = top + 1;
    return 0;
fail:
    if (fd >= 0) close(fd);   /* releases the flock */
    return rc;
}

bool rundir_is_locked(const char *run_dir) {
    char lock[RUNDIR_PATH_MAX];
    if (snprintf(lock, sizeof lock, "%s/.lock", run_dir) >= (int)sizeof lock) return false;
    int fd = open(lock, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    const bool held = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    close(fd);   /* releases the shared lock when the probe got it */
    return held;
}

void rundir_close(RunDir *rd) {
    if (rd->locked) close(rd->lock_fd);
    moe_free(rd->dir);
    memset(rd, 0, sizeof *rd);
    rd->lock_fd = -1;
}

/* ---- history ---- */

/* The newest valid checkpoint of run_dir (rundir_find_resume's choice), shared by --resume
 * auto and the commands that read a run (rundir_resolve_model). who prefixes the notes on
 * log ("--resume auto"); for_resume words the refusal for the trainer. *step gets the
 * chosen checkpoint's step. Returns as rundir_find_resume. */
static int find_newest(const char *run_dir, char *out, size_t cap, FILE *log, const char *who,
                       bool for_resume, int64_t *step, MoeErr *err) {
    if (cap) out[0] = 0;
    Listing l;
    if (scan(run_dir, &l, err)) return -1;
    size_t n_files = 0;
    const Entry *tip = NULL, *chosen = NULL;
    for (size_t i = 0; i < l.n; i++) {
        if (l.v[i].tmp) continue;
        n_files++;
        if (!tip && l.v[i].readable) tip = &l.v[i];
    }
    if (n_files == 0) {
        listing_free(&l);
        return 1;
    }
    char path[RUNDIR_PATH_MAX + RUNDIR_NAME_MAX];
    /* the tip, then its ancestors newest first: the listing's order restricted to its lineage */
    for (size_t i = 0; tip && i < l.n && !chosen; i++) {
        Entry *e = &l.v[i];
        if (!on_lineage(&l, e, tip->meta.lineage_gen, tip->meta.step, tip->meta.parent_gen,
                        tip->meta.parent_step))
            continue;
        entry_path(&l, e, path, sizeof path);
        MoeErr ve;
        if (ckpt_verify(path, NULL, &ve) == 0) chosen = e;
        else {
            e->bad = true;
            snprintf(e->why, sizeof e->why, "%s", ve.msg);
        }
    }
    if (!chosen) {
        char names[900] = "";
        size_t k = 0;
        for (size_t i = 0; i < l.n && k < sizeof names - 1; i++)
            if (!l.v[i].tmp && (!l.v[i].readable || l.v[i].bad))
                k += (size_t)snprintf(names + k, sizeof names - k, "%s%s", k ? ", " : "",
                                      l.v[i].name);
        const Entry *first = NULL;
        for (size_t i = 0; i < l.n && !first; i++)
            if (!l.v[i].tmp && (!l.v[i].readable || l.v[i].bad)) first = &l.v[i];
        if (for_resume) {
            moe_errorf(err, "%s: --resume auto found checkpoint files but none it can resume "
                       "from: %s (%s); it will not start from scratch over them", l.dir, names,
                       first ? first->why : "no usable checkpoint");
            moe_hintf(err, "move the bad file(s) out of %s (or remove them), or name the "
                      "checkpoint to continue from with --resume PATH", l.dir);
        } else {
            moe_errorf(err, "%s: run directory without a valid checkpoint: %s (%s)", run_dir,
                       names, first ? first->why : "no usable checkpoint");
            moe_hintf(err, "give a checkpoint file instead of the run directory, or wait for "
                      "the run to write one (checkpoint.every)");
        }
        listing_free(&l);
        return RUNDIR_REFUSED;
    }
    entry_path(&l, chosen, path, sizeof path);
    if (snprintf(out, cap, "%s", path) >= (int)cap) {
        if (cap) out[0] = 0;
        listing_free(&l);
        moe_errorf(err, "%s: path too long", path);
        return moe_hintf(err, "use a shorter run.dir");
    }
    for (size_t i = 0; log && i < l.n; i++) {
        const Entry *e = &l.v[i];
        if (e == chosen || e->tmp || e->name_step <= chosen->name_step) continue;
        if (!e->readable)
            fprintf(log, "%s: skipped %s: unreadable: %s\n", who, e->name, e->why);
        else if (e->bad)
            fprintf(log, "%s: skipped %s: does not verify: %s\n", who, e->name, e->why);
        else
            fprintf(log, "%s: skipped %s (generation %lld): not on the lineage of "
                    "%s (generation %lld, the newest run): an abandoned branch\n", who, e->name,
                    (long long)e->meta.lineage_gen, chosen->name,
                    (long long)chosen->meta.lineage_gen);
    }
    if (log && chosen != tip)
        fprintf(log, "%s: the newest checkpoint %s (generation %lld) does not "
                "verify: continuing from its newest readable ancestor %s\n", who, tip->name,
                (long long)tip->meta.lineage_gen, chosen->name);
    if (log) fflush(log);
    if (step) *step = chosen->meta.step;
    listing_free(&l);
    return 0;
}

int rundir_find_resume(const char *run_dir, char *out, size_t cap, FILE *log, MoeErr *err) {
    return find_newest(run_dir, out, cap, log, "--resume auto", true, NULL, err);
}

/* Is path/name an existing entry of the given kind (directory or regular file)? */
static bool has_entry(const char *path, const char *name, bool dir) {
    char p[RUNDIR_PATH_MAX + 32];
    if (snprintf(p, sizeof p, "%s/%s", path, name) >= (int)sizeof p) return false;
    struct stat st;
    return stat(p, &st) == 0 && (dir ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode));
}

int rundir_resolve_model(const char *path, char *out, size_t cap, FILE *note, MoeErr *err) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode) || has_entry(path, "config.json", false)) {
        if (snprintf(out, cap, "%s", path) >= (int)cap) {
            if (cap) out[0] = 0;
            moe_errorf(err, "%s: path too long", path);
            return moe_hintf(err, "use a shorter path");
        }
        return 0;
    }
    if (!has_entry(path, "checkpoints", true)) {
        moe_errorf(err, "%s: a directory that is neither a Hugging Face export (it has no "
                   "config.json) nor a run directory (it has no checkpoints/)", path);
        return moe_hintf(err, "give a run directory (runs/NAME), a checkpoint file "
                         "(runs/NAME/checkpoints/step_N.h5), an HF export directory or a "
                         ".gguf file");
    }
    char who[RUNDIR_PATH_MAX + 32];
    snprintf(who, sizeof who, "moetrain: note: %s", path);
    int64_t step = 0;
    int rc = find_newest(path, out, cap, note, who, false, &step, err);
    if (rc == 1) {
        moe_errorf(err, "%s: run directory without a checkpoint yet (%s/checkpoints holds no "
                   "step_*.h5)", path, path);
        return moe_hintf(err, "wait for the run's first checkpoint (checkpoint.every; a "
                         "stopped run saves one on SIGINT/SIGTERM), or give a checkpoint "
                         "file");
    }
    if (rc) return -1;
    if (note) {
        fprintf(note, "moetrain: note: %s: using its newest valid checkpoint %s (step %lld)\n",
                path, out, (long long)step);
        fflush(note);
    }
    return 0;
}

void rundir_set_parent(RunDir *rd, const char *path, const CkptMeta *meta) {
    rd->parent_gen = rd->parent_step = 0;
    char dir[RUNDIR_PATH_MAX], real_dir[PATH_MAX], real_file[PATH_MAX];
    if (rundir_ckpt_dir(rd->dir, dir, sizeof dir) || !realpath(dir, real_dir) ||
        !realpath(path, real_file))
        return;
    char *slash = strrchr(real_file, '/');
    if (!slash) return;
    *slash = 0;
    if (strcmp(real_file, real_dir) != 0) return;
    rd->parent_gen = meta->lineage_gen;
    rd->parent_step = meta->step;
}

int rundir_set_aside(const RunDir *rd, int64_t step, FILE *log, MoeErr *err) {
    char path[RUNDIR_PATH_MAX], aside[RUNDIR_PATH_MAX + 64];
    if (rundir_ckpt_path(rd->dir, step, path, sizeof path)) return too_long(rd->dir, err);
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    CkptMeta m;
    MoeErr me;
    const bool readable = ckpt_read_meta(path, &m, &me) == 0;
    if (readable && m.lineage_gen == rd->gen) return 0;   /* this process's own file */
    char tag[48];
    if (readable) snprintf(tag, sizeof tag, "gen%lld", (long long)m.lineage_gen);
    else snprintf(tag, sizeof tag, "unreadable");
    const size_t base = strlen(path) - 3;   /* without ".h5" */
    for (int k = 0;; k++) {
        if (k) snprintf(aside, sizeof aside, "%.*s.%s.%d.h5", (int)base, path, tag, k);
        else snprintf(aside, sizeof aside, "%.*s.%s.h5", (int)base, path, tag);
        if (stat(aside, &st) != 0) break;
        if (k == 1000) {
            moe_errorf(err, "%s: no free name to set it aside", path);
            return moe_hintf(err, "clean up %s.*.h5", path);
        }
    }
    if (rename(path, aside) != 0) {
        moe_errorf(err, "%s: cannot rename to %s: %s", path, aside, strerror(errno));
        return moe_hintf(err, "check the permissions of the run directory");
    }
    if (log) {
        if (readable)
            fprintf(log, "note: %s is generation %lld's (a branch this run does not continue): "
                    "kept as %s\n", path, (long long)m.lineage_gen, aside);
        else
            fprintf(log, "note: %s is unreadable (%s): kept as %s\n", path, me.msg, aside);
        fflush(log);
    }
    return 0;
}

int rundir_rotate(const RunDir *rd, int64_t tip_step, int keep, FILE *log, MoeErr *err) {
    ASSERT(keep >= 1, "rundir_rotate keep %d", keep);
    Listing l;
    if (scan(rd->dir, &l, err)) return -1;
    char path[RUNDIR_PATH_MAX + RUNDIR_NAME_MAX];
    int kept = 0, rc = 0;
    for (size_t i = 0; i < l.n && !rc; i++) {
        const Entry *e = &l.v[i];
        entry_path(&l, e, path, sizeof path);
        if (!e->tmp) {
            if (!on_lineage(&l, e, rd->gen, tip_step, rd->parent_gen, rd->parent_step)) continue;
            if (kept < keep || is_tip_of(e, rd->gen, tip_step)) {
                kept++;
                continue;
            }
            if ((rd->parent_gen || rd->parent_step) &&
                is_tip_of(e, rd->parent_gen, rd->parent_step))
                continue;   /* the checkpoint this process resumed from */
            MoeErr ve;
            if (ckpt_verify(path, NULL, &ve) != 0) {
                if (log) fprintf(log, "note: not removing old checkpoint %s: it does not "
                                 "verify (%s)\n", path, ve.msg);
                continue;
            }
        }
        if (unlink(path) != 0 && errno != ENOENT) {
            moe_errorf(err, "%s: cannot remove old checkpoint: %s", path, strerror(errno));
            moe_hintf(err, "check the permissions of %s", l.dir);
            rc = -1;
        }
    }
    if (log) fflush(log);
    listing_free(&l);
    return rc;
}
