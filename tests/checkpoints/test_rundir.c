/* test_rundir.c: a run directory's ownership and checkpoint history (checkpoints/rundir.h),
 * on real checkpoint files of a tiny model (V=258 C=8 L=1 E=2) whose meta carries the
 * lineage under test; each test in its own mkdtemp directory.
 * - paths; the fresh-start check refuses metrics or checkpoint files (any state) and leaves
 *   the directory as it was; temporaries, tokens/ and an empty metrics.jsonl do not count;
 * - the lock: a second holder is refused naming pid and host; after release, and over a
 *   stale lock file, it is taken; the generation is 1 + the highest readable one;
 * - --resume auto: skips temporaries and unreadable files (noted with the error), takes the
 *   newest generation's tip over a newer step of an abandoned branch, refuses when only
 *   unreadable files exist, and reports "none" for an empty directory;
 * - retention keeps `keep` of the lineage and never deletes the resumed-from checkpoint,
 *   unreadable files, other branches or other runs; removes temporaries;
 * - set_parent only inside RUN/checkpoints; set_aside moves another branch's file of the
 *   same step out of the way without losing it.
 */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "autograd/blas.h"
#include "checkpoints/ckpt.h"
#include "checkpoints/rundir.h"
#include "core/fs.h"
#include "train/train.h"

static char g_dir[256];
static char g_run[300];   /* g_dir/run */
static char g_tok[300];
static Config g_c;
static Model g_m;

static void setup(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/moe_rundir_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(g_dir));
    snprintf(g_run, sizeof g_run, "%s/run", g_dir);
    snprintf(g_tok, sizeof g_tok, "%s/tok.bpe", g_dir);
    FILE *f = fopen(g_tok, "wb");
    ck_assert_ptr_nonnull(f);
    fputs("moetrain-bpe 1\nonly bytes to store\n", f);
    fclose(f);
    config_defaults(&g_c);
    g_c.model.vocab_size = 258;
    g_c.model.dim = 8;
    g_c.model.n_layers = 1;
    g_c.model.n_heads = 2;
    g_c.model.n_kv_heads = 1;
    g_c.model.head_dim = 4;
    g_c.moe.n_experts = 2;
    g_c.moe.top_k = 1;
    g_c.moe.hidden = 4;
    ModelShape s;
    config_model_shape(&g_c, &s);
    model_init(&g_m, &s, 0, 2, 1);
}

static void teardown(void) {
    model_free(&g_m);
    config_free(&g_c);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
}

static const char *ck_path(int64_t step) {
    static char p[400];
    ck_assert_int_eq(rundir_ckpt_path(g_run, step, p, sizeof p), 0);
    return p;
}

/* RUN/checkpoints/step_<step>.h5 of generation gen, resumed from (pg, ps). */
static void put(int64_t step, int64_t gen, int64_t pg, int64_t ps) {
    MoeErr err;
    ck_assert_int_eq(rundir_prepare(g_run, &err), 0);
    CkptMeta mt = {.step = step, .seed = 1, .lineage_gen = gen, .parent_gen = pg,
                   .parent_step = ps};
    ck_assert_msg(ckpt_save(ck_path(step), &g_c, &g_m, &mt, g_tok, false, &err) == 0, "%s",
                  err.msg);
}

/* A file under the checkpoint name that no reader accepts: the first bytes of a real one. */
static void put_truncated(int64_t step) {
    char tmp[400];
    snprintf(tmp, sizeof tmp, "%s/whole.h5", g_dir);
    MoeErr err;
    CkptMeta mt = {.step = step, .lineage_gen = 9};
    ck_assert_int_eq(ckpt_save(tmp, &g_c, &g_m, &mt, g_tok, false, &err), 0);
    ck_assert_int_eq(rundir_prepare(g_run, &err), 0);
    FILE *a = fopen(tmp, "rb"), *b = fopen(ck_path(step), "wb");
    ck_assert(a && b);
    char buf[3000];
    size_t k = fread(buf, 1, sizeof buf, a);
    ck_assert_uint_eq(fwrite(buf, 1, k, b), k);
    fclose(a);
    ck_assert_int_eq(fclose(b), 0);
    unlink(tmp);
}

static void put_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
}

static bool exists(const char *p) { return access(p, F_OK) == 0; }

/* Every entry under dir with its size and mtime, recursively, as one string (the "before"
 * and "after" of a refusal). */
static void snapshot(const char *dir, char *out, size_t cap) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "cd '%s' && find . -printf '%%p %%s %%T@\\n' | sort", dir);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    pclose(p);
}

/* log text of a memstream */
typedef struct Log { char *buf; size_t n; FILE *f; } Log;
static void log_open(Log *l) {
    l->buf = NULL;
    l->f = open_memstream(&l->buf, &l->n);
    ck_assert_ptr_nonnull(l->f);
}
static const char *log_text(Log *l) {
    fflush(l->f);
    return l->buf ? l->buf : "";
}
static void log_close(Log *l) {
    fclose(l->f);
    free(l->buf);
}

/* ---- paths ---- */

START_TEST(test_paths) {
    char p[64];
    ck_assert_int_eq(rundir_ckpt_dir("r", p, sizeof p), 0);
    ck_assert_str_eq(p, "r/checkpoints");
    ck_assert_int_eq(rundir_ckpt_path("r", 40, p, sizeof p), 0);
    ck_assert_str_eq(p, "r/checkpoints/step_00000040.h5");
    ck_assert_int_eq(rundir_ckpt_path("r", 40, p, 10), -1);
    MoeErr err;
    ck_assert_int_eq(rundir_prepare(g_run, &err), 0);
    char d[400];
    snprintf(d, sizeof d, "%s/checkpoints", g_run);
    ck_assert(exists(d));
}
END_TEST

/* ---- ownership ---- */

START_TEST(test_fresh_refused) {
    MoeErr err;
    RunDir rd;
    /* a directory that does not exist, or holds only what a fresh run may reuse */
    ck_assert_int_eq(rundir_check_fresh(g_run, &err), 0);
    char p[600], before[8192], after[8192];
    snprintf(p, sizeof p, "%s/tokens", g_run);
    ck_assert_int_eq(fs_mkdirs(p, &err), 0);
    snprintf(p, sizeof p, "%s/metrics.jsonl", g_run);
    put_text(p, "");
    ck_assert_int_eq(rundir_prepare(g_run, &err), 0);
    snprintf(p, sizeof p, "%s.tmp", ck_path(30));
    put_text(p, "partial");
    ck_assert_int_eq(rundir_check_fresh(g_run, &err), 0);
    /* metrics with content: refused, naming the directory and both ways on, nothing changed
     * (not even a lock file created) */
    snprintf(p, sizeof p, "%s/metrics.jsonl", g_run);
    put_text(p, "{\"step\":1}\n");
    snapshot(g_run, before, sizeof before);
    ck_assert_int_eq(rundir_open(&rd, g_run, true, &err), RUNDIR_REFUSED);
    ck_assert_msg(strstr(err.msg, g_run) && strstr(err.msg, "metrics.jsonl"), "%s", err.msg);
    ck_assert_msg(strstr(err.hint, "--resume auto") && strstr(err.hint, "--set run.dir="), "%s",
                  err.hint);
    snapshot(g_run, after, sizeof after);
    ck_assert_str_eq(before, after);
    snprintf(p, sizeof p, "%s/.lock", g_run);
    ck_assert(!exists(p));
    rundir_close(&rd);   /* safe after a failure */
    /* only a checkpoint file, even an unreadable one: refused too */
    snprintf(p, sizeof p, "%s/metrics.jsonl", g_run);
    unlink(p);
    put_text(ck_path(10), "junk");
    ck_assert_int_eq(rundir_check_fresh(g_run, &err), RUNDIR_REFUSED);
    ck_assert_msg(strstr(err.msg, "step_00000010.h5"), "%s", err.msg);
    /* resuming is not a fresh start */
    ck_assert_int_eq(rundir_open(&rd, g_run, false, &err), 0);
    rundir_close(&rd);
    /* an existing lock file (of an earlier run) is not modified by a refused fresh start */
    snprintf(p, sizeof p, "%s/eval.jsonl", g_run);
    put_text(p, "{\"step\":1,\"val_loss\":2}\n");
    snapshot(g_run, before, sizeof before);
    ck_assert_int_eq(rundir_open(&rd, g_run, true, &err), RUNDIR_REFUSED);
    snapshot(g_run, after, sizeof after);
    ck_assert_str_eq(before, after);
}
END_TEST

START_TEST(test_lock) {
    MoeErr err;
    RunDir a, b;
    ck_assert_int_eq(rundir_open(&a, g_run, true, &err), 0);   /* creates the directory */
    ck_assert(a.locked);
    ck_assert_int_eq(a.gen, 1);
    char lock[400], text[256], pid[200], host[128];
    snprintf(lock, sizeof lock, "%s/.lock", g_run);
    FILE *f = fopen(lock, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(fgets(text, sizeof text, f));
    fclose(f);
    snprintf(pid, sizeof pid, "%ld ", (long)getpid());
    ck_assert_msg(strncmp(text, pid, strlen(pid)) == 0, "lock file: %s", text);
    ck_assert_int_eq(gethostname(host, sizeof host), 0);
    /* a second holder (another open file description: flock conflicts even in one process) */
    ck_assert_int_eq(rundir_open(&b, g_run, false, &err), RUNDIR_REFUSED);
    snprintf(pid, sizeof pid, "pid %ld", (long)getpid());
    ck_assert_msg(strstr(err.msg, pid) && strstr(err.msg, host) && strstr(err.msg, g_run),
                  "%s", err.msg);
    ck_assert(!b.locked);
    rundir_close(&a);
    /* released: taken; a stale lock file (holder gone) is taken over and rewritten */
    put_text(lock, "999999 elsewhere 2001-01-01T00:00:00Z\n");
    ck_assert_int_eq(rundir_open(&b, g_run, false, &err), 0);
    f = fopen(lock, "r");
    ck_assert_ptr_nonnull(fgets(text, sizeof text, f));
    fclose(f);
    snprintf(pid, sizeof pid, "%ld %s ", (long)getpid(), host);
    ck_assert_msg(strncmp(text, pid, strlen(pid)) == 0, "lock file: %s", text);
    rundir_close(&b);
    rundir_close(&b);   /* twice is fine */
}
END_TEST

START_TEST(test_generation) {
    put(10, 1, 0, 0);
    put(20, 3, 1, 10);
    put(30, 2, 1, 10);
    put_truncated(40);   /* its generation cannot be read: ignored */
    MoeErr err;
    RunDir rd;
    ck_assert_int_eq(rundir_open(&rd, g_run, false, &err), 0);
    ck_assert_int_eq(rd.gen, 4);
    ck_assert_int_eq(rd.parent_gen, 0);
    /* the parent is recorded for a file in RUN/checkpoints (by any spelling of its path) */
    CkptMeta m = {.step = 20, .lineage_gen = 3};
    char p[600];
    snprintf(p, sizeof p, "%s/../run/checkpoints/step_00000020.h5", g_run);
    rundir_set_parent(&rd, p, &m);
    ck_assert_int_eq(rd.parent_gen, 3);
    ck_assert_int_eq(rd.parent_step, 20);
    /* ... but not for a file elsewhere: it is no part of this directory's history */
    snprintf(p, sizeof p, "%s/elsewhere.h5", g_dir);
    put_text(p, "x");
    rundir_set_parent(&rd, p, &m);
    ck_assert_int_eq(rd.parent_gen, 0);
    ck_assert_int_eq(rd.parent_step, 0);
    rundir_close(&rd);
}
END_TEST

/* ---- --resume auto ---- */

START_TEST(test_resume_skips_damaged) {
    char got[400], p[600];
    MoeErr err;
    ck_assert_int_eq(rundir_find_resume(g_run, got, sizeof got, NULL, &err), 1);   /* no dir */
    ck_assert_str_eq(got, "");
    ck_assert_int_eq(rundir_prepare(g_run, &err), 0);
    ck_assert_int_eq(rundir_find_resume(g_run, got, sizeof got, NULL, &err), 1);   /* empty */
    snprintf(p, sizeof p, "%s.tmp", ck_path(40));   /* a killed writer's: not a checkpoint */
    put_text(p, "partial");
    ck_assert_int_eq(rundir_find_resume(g_run, got, sizeof got, NULL, &err), 1);
    put(10, 1, 0, 0);
    put(20, 1, 0, 0);
    put_truncated(30);           /* newer but unreadable */
    put_text(ck_path(50), "junk");   /* not HDF5 */
    Log log;
    log_open(&log);
    ck_assert_int_eq(rundir_find_resume(g_run, got, sizeof got, log.f, &err), 0);
    ck_assert_str_eq(got, ck_path(20));
    const char *t = log_text(&log);
    ck_assert_msg(strstr(t, "skipped step_00000030.h5: unreadable: ") &&
                  strstr(t, "skipped step_00000050.h5: unreadable: ") &&
                  !strstr(t, "step_00000040") && !strstr(t, "step_00000010"), "%s", t);
    log_close(&log);
}
END_TEST

START_TEST(test_resume_newest_branch) {
    /* run 1 saved 10..40; a branch resumed from 20 and stopped at 30 (run 1's 30 was set
     * aside under another name); then a run resumed from the branch saved 35 */
    put(10, 1, 0, 0);
    put(20, 1, 0, 0);
    put(40, 1, 0, 0);
    put(30, 2, 1, 20);
    char got[400];
    MoeErr err;
    Log log;
    log_open(&log);
    ck_assert_int_eq(rundir_find_resume(g_run, got, sizeof got, log.f, &err), 0);
    ck_assert_str_eq(got, ck_path(30));
    ck_assert_msg(strstr(log_text(&log), "skipped step_00000040.h5 (generation 1): not on the "
                         "lineage of step_00000030.h5 (generation 2") &&
                  strstr(log_text(&log), "abandoned branch"), "%s", log_text(&log));
    log_close(&log);
    put(33, 3, 2, 30);
    put(35, 3, 2, 30);
    ck_assert_int_eq(rundir_find_resume(g_run, got, sizeof got, NULL, &err), 0);
    ck_assert_str_eq(got, ck_path(35));
    /* the tip of the newest run unreadable: the newest readable file of its lineage, not the
     * abandoned branch's newer step */
    put_truncated(35);
    log_open(&log);
    ck_assert_int_eq(rundir_find_resume(g_run, got, sizeof got, log.f, &err), 0);
    ck_assert_str_eq(got, ck_path(33));
    ck_assert_msg(strstr(log_text(&log), "skipped step_00000035.h5: unreadable") &&
                  strstr(log_text(&log), "skipped step_00000040.h5 (generation 1)"), "%s",
                  log_text(&log));
    log_close(&log);
    /* generation 0 (files without the attributes) is older than any generation */
    put(45, 0, 0, 0);
    ck_assert_int_eq(rundir_find_resume(g_run, got, sizeof got, NULL, &err), 0);
    ck_assert_str_eq(got, ck_path(33));
}
END_TEST

START_TEST(test_resume_refuses_unreadable) {
    put_truncated(20);
    put_text(ck_path(30), "junk");
    char got[400] = "x";
    MoeErr err;
    ck_assert_int_eq(rundir_find_resume(g_run, got, sizeof got, NULL, &err), RUNDIR_REFUSED);
    ck_assert_str_eq(got, "");
    ck_assert_msg(strstr(err.msg, "step_00000020.h5") && strstr(err.msg, "step_00000030.h5"),
                  "%s", err.msg);
    ck_assert_msg(strstr(err.hint, "--resume PATH") && strstr(err.hint, "move"), "%s",
                  err.hint);
    ck_assert(exists(ck_path(20)) && exists(ck_path(30)));
}
END_TEST

/* ---- retention ---- */

START_TEST(test_rotate) {
    MoeErr err;
    /* another run's file of an older version (generation 0), run 1 (10..40), and this
     * process, generation 2, resumed from run 1's 20 and saved 22, 24, 26 */
    put(5, 0, 0, 0);
    put(10, 1, 0, 0);
    put(20, 1, 0, 0);
    put(30, 1, 0, 0);
    put(40, 1, 0, 0);
    put(22, 2, 1, 20);
    put(24, 2, 1, 20);
    put(26, 2, 1, 20);
    put_truncated(23);
    char p[600], dir[400];
    snprintf(p, sizeof p, "%s.tmp", ck_path(28));
    put_text(p, "partial");
    ck_assert_int_eq(rundir_ckpt_dir(g_run, dir, sizeof dir), 0);
    snprintf(p, sizeof p, "%s/notes.txt", dir);
    put_text(p, "mine");
    RunDir rd = {.dir = moe_strdup(g_run), .lock_fd = -1, .gen = 2, .parent_gen = 1,
                 .parent_step = 20};
    ck_assert_int_eq(rundir_rotate(&rd, 26, 1, NULL, &err), 0);
    ck_assert(exists(ck_path(26)));                            /* the newest of the lineage */
    ck_assert(!exists(ck_path(24)) && !exists(ck_path(22)));   /* older lineage members */
    ck_assert(exists(ck_path(20)));                            /* resumed from */
    ck_assert(!exists(ck_path(10)));                           /* older lineage member */
    ck_assert(exists(ck_path(30)) && exists(ck_path(40)));     /* another branch */
    ck_assert(exists(ck_path(23)));                            /* unreadable */
    ck_assert(exists(ck_path(5)));                             /* another run (gen 0) */
    snprintf(p, sizeof p, "%s.tmp", ck_path(28));
    ck_assert(!exists(p));                                     /* a killed writer's */
    snprintf(p, sizeof p, "%s/notes.txt", dir);
    ck_assert(exists(p));                                      /* not ours */
    /* keep 2 after the next save */
    put(28, 2, 1, 20);
    put(29, 2, 1, 20);
    ck_assert_int_eq(rundir_rotate(&rd, 29, 2, NULL, &err), 0);
    ck_assert(exists(ck_path(29)) && exists(ck_path(28)) && !exists(ck_path(26)));
    ck_assert(exists(ck_path(20)));
    rundir_close(&rd);
    /* a run that resumed a generation-0 file continues that history */
    RunDir r0 = {.dir = moe_strdup(g_run), .lock_fd = -1, .gen = 3, .parent_gen = 0,
                 .parent_step = 5};
    put(3, 0, 0, 0);
    put(7, 3, 0, 5);
    put(8, 3, 0, 5);
    ck_assert_int_eq(rundir_rotate(&r0, 8, 1, NULL, &err), 0);
    ck_assert(exists(ck_path(8)) && !exists(ck_path(7)) && !exists(ck_path(3)));
    ck_assert(exists(ck_path(5)));   /* resumed from */
    rundir_close(&r0);
}
END_TEST

START_TEST(test_set_aside) {
    MoeErr err;
    put(30, 1, 0, 0);
    put(40, 2, 1, 20);
    put_truncated(50);
    RunDir rd = {.dir = moe_strdup(g_run), .lock_fd = -1, .gen = 2, .parent_gen = 1,
                 .parent_step = 20};
    Log log;
    log_open(&log);
    ck_assert_int_eq(rundir_set_aside(&rd, 30, log.f, &err), 0);
    ck_assert_int_eq(rundir_set_aside(&rd, 40, log.f, &err), 0);   /* its own: stays */
    ck_assert_int_eq(rundir_set_aside(&rd, 50, log.f, &err), 0);
    ck_assert_int_eq(rundir_set_aside(&rd, 60, log.f, &err), 0);   /* nothing there */
    char p[400];
    ck_assert(!exists(ck_path(30)) && exists(ck_path(40)) && !exists(ck_path(50)));
    snprintf(p, sizeof p, "%s/checkpoints/step_00000030.gen1.h5", g_run);
    ck_assert(exists(p));
    ck_assert_int_eq(ckpt_read_meta(p, NULL, &err), 0);
    snprintf(p, sizeof p, "%s/checkpoints/step_00000050.unreadable.h5", g_run);
    ck_assert(exists(p));
    ck_assert_msg(strstr(log_text(&log), "step_00000030.gen1.h5") &&
                  !strstr(log_text(&log), "step_00000040"), "%s", log_text(&log));
    log_close(&log);
    /* set aside again at the same step: a new name, nothing overwritten */
    put(30, 1, 0, 0);
    ck_assert_int_eq(rundir_set_aside(&rd, 30, NULL, &err), 0);
    snprintf(p, sizeof p, "%s/checkpoints/step_00000030.gen1.1.h5", g_run);
    ck_assert(exists(p));
    rundir_close(&rd);
}
END_TEST

static Suite *rundir_suite(void) {
    Suite *s = suite_create("rundir");
    struct { const char *name; const TTest *fn; } cases[] = {
        {"paths", test_paths},
        {"fresh_refused", test_fresh_refused},
        {"lock", test_lock},
        {"generation", test_generation},
        {"resume_skips_damaged", test_resume_skips_damaged},
        {"resume_newest_branch", test_resume_newest_branch},
        {"resume_refuses_unreadable", test_resume_refuses_unreadable},
        {"rotate", test_rotate},
        {"set_aside", test_set_aside},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, cases[i].fn);
        tcase_set_timeout(tc, 60);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    SRunner *sr = srunner_create(rundir_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
