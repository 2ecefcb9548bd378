/* outguard.c: may a command write its output? See outguard.h. */
#include "train/outguard.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static bool same_file(const struct stat *a, const struct stat *b) {
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

/* True when the directory dir is p itself or one of the directories above p's canonical
 * path (symlinks resolved, so every route to the same place compares equal). */
static bool lies_inside(const char *p, const struct stat *dir) {
    char rp[PATH_MAX];
    if (!realpath(p, rp)) return false;
    for (;;) {
        struct stat st;
        if (stat(rp, &st) == 0 && same_file(&st, dir)) return true;
        char *slash = strrchr(rp, '/');
        if (!slash || (slash == rp && rp[1] == 0)) return false;   /* "/" was the last */
        slash[slash == rp ? 1 : 0] = 0;                           /* "/a" -> "/" */
    }
}

int outguard_check(const char *out, OutguardKind kind, const char *arg,
                   const char *const *inputs, int n_inputs, bool force, MoeErr *err) {
    struct stat ol, os;
    /* Anything but "exists" is the writer's to report (a missing parent directory, no
     * permission): it cannot be an input then. */
    if (lstat(out, &ol) != 0) return 0;
    const bool target = stat(out, &os) == 0;   /* false: a dangling symlink */
    for (int i = 0; target && i < n_inputs; i++) {
        struct stat is;
        if (!inputs[i] || stat(inputs[i], &is) != 0) continue;
        if (same_file(&is, &os)) {
            moe_errorf(err, "%s %s: is also an input of this command (the same file as %s)",
                       arg, out, inputs[i]);
            return moe_hintf(err, "choose another %s: an output never replaces one of the "
                                  "command's inputs, not even with --force", arg);
        }
        if (kind == OUTGUARD_DIR && S_ISDIR(os.st_mode) && lies_inside(inputs[i], &os)) {
            moe_errorf(err, "%s %s: the input %s lies inside this directory", arg, out,
                       inputs[i]);
            return moe_hintf(err, "choose another %s: replacing the directory would delete "
                                  "the input, so --force does not allow it", arg);
        }
        if (S_ISDIR(is.st_mode) && lies_inside(out, &is)) {
            moe_errorf(err, "%s %s: exists inside the input directory %s, whose files this "
                       "command reads", arg, out, inputs[i]);
            return moe_hintf(err, "choose another %s outside %s (a new file name there is "
                                  "fine too)", arg, inputs[i]);
        }
    }
    if (kind == OUTGUARD_FILE && target && S_ISDIR(os.st_mode)) {
        moe_errorf(err, "%s %s: is a directory", arg, out);
        return moe_hintf(err, "give %s a file name (e.g. %s/out), not a directory", arg, out);
    }
    if (kind == OUTGUARD_DIR && !S_ISDIR(ol.st_mode)) {
        moe_errorf(err, "%s %s: exists and is not a directory%s", arg, out,
                   S_ISLNK(ol.st_mode) ? " (a symbolic link)" : "");
        return moe_hintf(err, "choose a new directory name for %s (the output is a directory "
                              "that is created whole)", arg);
    }
    if (!force) {
        moe_errorf(err, "%s %s: already exists", arg, out);
        return moe_hintf(err, "pass --force to replace it, or choose another %s", arg);
    }
    return 0;
}

int outguard_cli(const char *out, OutguardKind kind, const char *arg,
                 const char *const *inputs, int n_inputs, bool force) {
    MoeErr err = {{0}, {0}};
    if (!outguard_check(out, kind, arg, inputs, n_inputs, force, &err)) return 0;
    fprintf(stderr, "moetrain: error: %s\n", err.msg);
    if (err.hint[0]) fprintf(stderr, "hint: %s\n", err.hint);
    return 2;
}
