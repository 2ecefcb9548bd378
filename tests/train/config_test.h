/* config_test.h: what the config tests share (tests/train/test_config*.c): a scratch
 * directory for YAML files, the expected-error checks, and a main that makes and removes
 * the directory around the suite. */
#ifndef MOE_CONFIG_TEST_H
#define MOE_CONFIG_TEST_H

#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/blas.h"
#include "configs/config.h"

static char g_dir[256];

/* Writes text to g_dir/name and returns the path (static buffer, one at a time). */
static inline const char *write_yaml(const char *name, const char *text) {
    static char path[512];
    ck_assert_msg(g_dir[0], "temp dir not created");
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
    return path;
}

static inline const char *source_path(const char *rel) {
    static char path[1024];
    const char *root = getenv("MOE_SOURCE_DIR");
    ck_assert_msg(root && *root, "MOE_SOURCE_DIR is not set (ctest sets it to the repo root)");
    snprintf(path, sizeof path, "%s/%s", root, rel);
    ck_assert_msg(access(path, R_OK) == 0, "missing shipped file %s", path);
    return path;
}

#define DATA_OK "data:\n  tokenizer: t.bpe\n  text: [a.txt]\n"

/* Loads yaml (then validates, if loading succeeded) and expects an error whose message
 * contains "<file>:<line>:<col>" (loc "L:C"), the key path, and whose hint contains hint. */
static inline void expect_error(const char *yaml, const char *loc, const char *key, const char *hint) {
    size_t live = moe_live_bytes();
    const char *path = write_yaml("bad.yaml", yaml);
    Config c;
    MoeErr err = {{0}, {0}};
    int rc = config_load(&c, path, &err);
    if (rc == 0) {
        rc = config_validate(&c, &err);
        config_free(&c);
    }
    ck_assert_msg(rc == -1, "expected an error for:\n%s", yaml);
    char want[600];
    snprintf(want, sizeof want, "%s:%s: ", path, loc);
    ck_assert_msg(strstr(err.msg, want) != NULL, "msg '%s' lacks location '%s'", err.msg, want);
    ck_assert_msg(strstr(err.msg, key) != NULL, "msg '%s' lacks key '%s'", err.msg, key);
    ck_assert_msg(strstr(err.hint, hint) != NULL, "hint '%s' lacks '%s'", err.hint, hint);
    ck_assert_msg(moe_live_bytes() == live, "leak on the error path: %zu -> %zu bytes", live,
                  moe_live_bytes());
}

static inline void expect_set_error(Config *c, const char *arg, const char *in_msg, const char *in_hint) {
    MoeErr err = {{0}, {0}};
    ck_assert_msg(config_set(c, arg, &err) == -1, "'%s' should fail", arg);
    ck_assert_msg(strstr(err.msg, in_msg) != NULL, "msg '%s' lacks '%s'", err.msg, in_msg);
    ck_assert_msg(strstr(err.hint, in_hint) != NULL, "hint '%s' lacks '%s'", err.hint, in_hint);
}

/* Run suite s in a fresh scratch directory (g_dir), then remove the files the (forked)
 * tests wrote there and the directory; returns the exit status. */
static inline int config_test_main(Suite *s, char **argv) {
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    snprintf(g_dir, sizeof g_dir, "/tmp/moe_test_config_XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    DIR *d = opendir(g_dir);   /* flat */
    for (struct dirent *e; d && (e = readdir(d));) {
        char p[600];
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
        unlink(p);
    }
    if (d) closedir(d);
    rmdir(g_dir);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
