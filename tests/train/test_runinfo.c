/* test_runinfo.c: run.dir/runs.jsonl (train/runinfo.h) and what it records of the build
 * (train/buildinfo.h).
 *
 * Each line must be strict JSON (read back with core/json.h, the reader moetrain's own
 * tools use), one object per process start, appended; the command line must come back
 * word for word whatever it holds (quotes, a newline, UTF-8). A write that cannot happen
 * fails with the file named. The end-to-end record (a resumed run adds a line, the rank
 * layout under mpirun) is tests/train/test_log.sh.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "autograd/blas.h"
#include "core/fs.h"
#include "core/json.h"
#include "train/buildinfo.h"
#include "train/runinfo.h"

static char g_dir[512];

static void make_dir(void) {
    const char *base = getenv("MOE_BUILD_DIR");
    snprintf(g_dir, sizeof g_dir, "%s/test_runinfo_%ld", base && *base ? base : "/tmp",
             (long)getpid());
    MoeErr err;
    ck_assert_msg(fs_mkdirs(g_dir, &err) == 0, "%s", err.msg);
}

static void remove_dir(void) {
    char path[600];
    snprintf(path, sizeof path, "%s/runs.jsonl", g_dir);
    unlink(path);
    rmdir(g_dir);
}

/* The n-th line (0-based) of runs.jsonl parsed into *v; returns the line count. */
static int read_line(int n, JsonValue *v) {
    char path[600];
    snprintf(path, sizeof path, "%s/runs.jsonl", g_dir);
    uint8_t *buf;
    size_t len;
    MoeErr err;
    ck_assert_msg(fs_read_file(path, &buf, &len, &err) == 0, "%s", err.msg);
    ck_assert_msg(len > 0 && buf[len - 1] == '\n', "runs.jsonl does not end with a newline");
    int lines = 0;
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != '\n') continue;
        if (lines == n)
            ck_assert_msg(json_parse(v, (const char *)buf + start, i - start, path, lines + 1,
                                     &err) == 0, "%s", err.msg);
        lines++;
        start = i + 1;
    }
    moe_free(buf);
    return lines;
}

static const char *str_of(const JsonValue *obj, const char *key) {
    const JsonValue *v = json_get(obj, key);
    ck_assert_msg(v && v->type == JSON_STR, "\"%s\" is not a string", key);
    return v->str;
}

/* Two starts, a fresh one and a resumed one: two lines, each strict JSON with every field;
 * argv word for word. Breaks seen caught: json_out_str replaced by a plain "%s" (the line
 * no longer parses), opening runs.jsonl with "w" semantics (O_TRUNC: one line left). */
START_TEST(test_two_starts) {
    make_dir();
    Comm comm = {.mpi = false, .rank = 0, .size = 1, .ep = 1, .ep_rank = 0, .edp = 1};
    char *argv[] = {"moetrain", "c.yaml", "--set", "run.dir=a \"quoted\" dir\nnext line",
                    "caf\xc3\xa9", "back\\slash"};
    const int argc = (int)(sizeof argv / sizeof argv[0]);
    RunStart fresh = {argc, argv, NULL, 0};
    RunStart resumed = {2, argv, "runs/x/checkpoints/step_00000010.h5", 10};
    MoeErr err;
    double t0 = (double)time(NULL);
    ck_assert_msg(runinfo_append(g_dir, &fresh, &comm, &err) == 0, "%s", err.msg);
    ck_assert_msg(runinfo_append(g_dir, &resumed, &comm, &err) == 0, "%s", err.msg);
    JsonValue a, b;
    ck_assert_int_eq(read_line(0, &a), 2);
    read_line(1, &b);
    /* the command line, word for word */
    const JsonValue *av = json_get(&a, "argv");
    ck_assert(av && av->type == JSON_ARR);
    ck_assert_uint_eq(av->n, (size_t)argc);
    for (int i = 0; i < argc; i++) ck_assert_str_eq(av->items[i].str, argv[i]);
    ck_assert_uint_eq(json_get(&b, "argv")->n, 2);
    /* where it started from */
    ck_assert_int_eq(json_get(&a, "resumed_from")->type, JSON_NULL);
    ck_assert_str_eq(str_of(&b, "resumed_from"), "runs/x/checkpoints/step_00000010.h5");
    ck_assert(json_get_num(&a, "step") == 0 && json_get_num(&b, "step") == 10);
    /* when: the clock read by the test brackets it (1 s of slack for the whole-second
     * time() reading) */
    double t = json_get_num(&a, "time");
    ck_assert_msg(t >= t0 - 1 && t <= (double)time(NULL) + 1, "time %.3f, test at %.0f", t, t0);
    ck_assert_uint_eq(strlen(str_of(&a, "start")), 20);   /* 2024-05-01T12:34:56Z */
    /* where: host, pid, cwd, the rank layout */
    char host[256];
    ck_assert_int_eq(gethostname(host, sizeof host), 0);
    ck_assert_str_eq(str_of(&a, "host"), host);
    ck_assert(json_get_num(&a, "pid") == (double)getpid());
    char cwd[4096];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    ck_assert_str_eq(str_of(&a, "cwd"), cwd);
    ck_assert(json_get_num(&a, "ranks") == 1 && json_get_num(&a, "expert_parallel") == 1);
    const JsonValue *hosts = json_get(&a, "rank_hosts");
    ck_assert(hosts && hosts->type == JSON_ARR && hosts->n == 1);
    ck_assert_str_eq(hosts->items[0].str, host);
    /* what: the build and the libraries, as buildinfo_get reports them */
    BuildInfo bi;
    buildinfo_get(&bi);
    ck_assert_str_eq(str_of(&a, "version"), bi.version);
    ck_assert_str_eq(str_of(&a, "commit"), bi.commit);
    ck_assert_str_eq(str_of(&a, "compiler"), bi.compiler);
    const JsonValue *lib = json_get(&a, "libraries");
    ck_assert(lib && lib->type == JSON_OBJ);
    ck_assert_str_eq(str_of(lib, "openblas"), bi.openblas);
    ck_assert_str_eq(str_of(lib, "openblas_core"), bi.openblas_core);
    ck_assert_str_eq(str_of(lib, "hdf5"), bi.hdf5);
    ck_assert_str_eq(str_of(lib, "mpi"), bi.mpi);
    ck_assert_str_eq(str_of(lib, "libyaml"), bi.libyaml);
    ck_assert(json_get_num(lib, "openblas_threads") >= 1);
    const JsonValue *isa = json_get(&a, "isa");
    ck_assert(isa && isa->type == JSON_ARR);
    ck_assert_uint_eq(isa->n, (size_t)(bi.avx2 + bi.avx512f + bi.avx512bf16 + bi.amx_tile +
                                       bi.amx_bf16 + bi.amx_int8));
    json_free(&a);
    json_free(&b);
    remove_dir();
}
END_TEST

/* A run directory that cannot take the file: -1 naming runs.jsonl, with a hint. */
START_TEST(test_unwritable) {
    Comm comm = {.mpi = false, .rank = 0, .size = 1, .ep = 1, .ep_rank = 0, .edp = 1};
    char *argv[] = {"moetrain"};
    RunStart rs = {1, argv, NULL, 0};
    MoeErr err;
    ck_assert_int_eq(runinfo_append("/nonexistent/run/dir", &rs, &comm, &err), -1);
    ck_assert_msg(strstr(err.msg, "/nonexistent/run/dir/runs.jsonl"), "msg: %s", err.msg);
    ck_assert(err.hint[0] != 0);
}
END_TEST

/* The version text: the first line "moetrain VERSION", then one "name: value" line for
 * each of commit, compiler, openblas, hdf5, mpi, libyaml, cpu, isa (what test_usage.sh
 * and people read). */
START_TEST(test_version_text) {
    BuildInfo bi;
    buildinfo_get(&bi);
    char *mem = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&mem, &len);
    buildinfo_print(&bi, f);
    fclose(f);
    char first[64];
    snprintf(first, sizeof first, "moetrain %s\n", bi.version);
    ck_assert_msg(strncmp(mem, first, strlen(first)) == 0, "%s", mem);
    const char *keys[] = {"\ncommit:", "\ncompiler:", "\nopenblas:", "\nhdf5:", "\nmpi:",
                          "\nlibyaml:", "\ncpu:", "\nisa:"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        ck_assert_msg(strstr(mem, keys[i]), "no %s line in:\n%s", keys[i] + 1, mem);
    free(mem);
}
END_TEST

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    Suite *s = suite_create("runinfo");
    TCase *tc = tcase_create("runs_jsonl");
    tcase_add_test(tc, test_two_starts);
    tcase_add_test(tc, test_unwritable);
    tcase_add_test(tc, test_version_text);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
