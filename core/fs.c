/* fs.c: checked file I/O. See fs.h. */
#include "core/fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"

bool fs_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int fs_mkdirs(const char *path, MoeErr *err) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        moe_errorf(err, "%s: path too long", path);
        return moe_hintf(err, "use a shorter path");
    }
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != 0) continue;
        char ch = *p;
        *p = 0;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
            moe_errorf(err, "%s: cannot create directory: %s", buf, strerror(errno));
            return moe_hintf(err, "check the permissions, or set run.dir to a writable place");
        }
        *p = ch;
        if (ch == 0) break;
    }
    return 0;
}


int fs_read_file(const char *path, uint8_t **buf, size_t *n, MoeErr *err) {
    *buf = NULL;
    *n = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        moe_errorf(err, "cannot open %s: %s", path, strerror(errno));
        return moe_hintf(err, "check the path (relative paths are relative to the working "
                         "directory) and its permissions");
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        moe_errorf(err, "%s is not a regular file", path);
        return moe_hintf(err, "give the path of a text file, not a directory or device");
    }
    size_t size = (size_t)st.st_size, got = 0;
    uint8_t *b = moe_malloc(size + 1);
    while (got < size) {
        ssize_t k = read(fd, b + got, size - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            moe_errorf(err, "cannot read %s: %s (read %zu of %zu bytes)", path,
                       k < 0 ? strerror(errno) : "file shrank while reading", got, size);
            moe_hintf(err, "check the disk and that no other program is writing the file");
            moe_free(b);
            close(fd);
            return -1;
        }
        got += (size_t)k;
    }
    close(fd);
    b[size] = 0;
    *buf = b;
    *n = size;
    return 0;
}

int fs_atomic_open(FsAtomicFile *af, const char *path, MoeErr *err) {
    memset(af, 0, sizeof *af);
    size_t n = strlen(path) + 32;
    af->tmp = moe_malloc(n);
    snprintf(af->tmp, n, "%s.tmp.%ld", path, (long)getpid());
    af->fp = fopen(af->tmp, "wb");
    if (!af->fp) {
        moe_errorf(err, "cannot create %s: %s", af->tmp, strerror(errno));
        moe_hintf(err, "check that the directory of %s exists and is writable", path);
        moe_free(af->tmp);
        af->tmp = NULL;
        return -1;
    }
    af->path = moe_strdup(path);
    return 0;
}

void fs_atomic_abort(FsAtomicFile *af) {
    if (af->fp) fclose(af->fp);
    if (af->tmp) unlink(af->tmp);
    moe_free(af->tmp);
    moe_free(af->path);
    memset(af, 0, sizeof *af);
}

int fs_atomic_commit(FsAtomicFile *af, MoeErr *err) {
    const char *step = "write";
    if (fflush(af->fp) != 0 || ferror(af->fp)) goto fail;
    step = "fsync";
    if (fsync(fileno(af->fp)) != 0) goto fail;
    step = "close";
    int rc = fclose(af->fp);
    af->fp = NULL;
    if (rc != 0) goto fail;
    if (fs_publish(af->tmp, af->path, err) != 0) {
        fs_atomic_abort(af);
        return -1;
    }
    moe_free(af->tmp);
    moe_free(af->path);
    memset(af, 0, sizeof *af);
    return 0;
fail:
    moe_errorf(err, "cannot write %s (%s failed: %s)", af->path, step, strerror(errno));
    moe_hintf(err, "check free disk space and permissions; the previous %s is unchanged", af->path);
    fs_atomic_abort(af);
    return -1;
}

/* fsync a file or directory by name, best effort (some file systems refuse directories). */
static void fsync_path(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

int fs_publish(const char *tmp, const char *path, MoeErr *err) {
    if (rename(tmp, path) != 0) {
        moe_errorf(err, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        return moe_hintf(err, "check free disk space and permissions; the previous %s is "
                         "unchanged", path);
    }
    char *dir = moe_strdup(path), *slash = strrchr(dir, '/');
    if (slash) *(slash == dir ? slash + 1 : slash) = 0;
    fsync_path(slash ? dir : ".");
    moe_free(dir);
    return 0;
}

int fs_temp_dir(const char *path, char *out, size_t cap, MoeErr *err) {
    if (snprintf(out, cap, "%s.tmp-XXXXXX", path) >= (int)cap || !mkdtemp(out)) {
        moe_errorf(err, "%s: cannot create the output directory: %s", path,
                   strlen(path) + 12 >= cap ? "path too long" : strerror(errno));
        out[0] = 0;
        return moe_hintf(err, "check that the parent directory exists and is writable");
    }
    return 0;
}

void fs_remove_dir_flat(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        char p[4096];
        while ((de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

int fs_publish_dir(const char *tmpdir, const char *path, bool replace, MoeErr *err) {
    mode_t um = umask(0);
    umask(um);
    chmod(tmpdir, 0777 & ~um);
    fsync_path(tmpdir);
    char old[4200] = "";
    struct stat st;
    if (replace && lstat(path, &st) == 0) {
        /* mkdtemp makes an empty directory with a fresh name; rename replaces an empty
         * directory atomically */
        snprintf(old, sizeof old, "%s.old-XXXXXX", path);
        const bool made = mkdtemp(old) != NULL;
        if (!made || rename(path, old) != 0) {
            moe_errorf(err, "%s: cannot move the old directory aside: %s", path,
                       strerror(errno));
            if (made) rmdir(old);
            return moe_hintf(err, "check that the parent directory is writable");
        }
    }
    if (fs_publish(tmpdir, path, err) != 0) {
        if (old[0] && rename(old, path) != 0)
            return moe_hintf(err, "the previous %s is in %s", path, old);
        if (!old[0])
            return moe_hintf(err, "remove %s if it was created meanwhile and try again", path);
        return -1;
    }
    if (old[0]) fs_remove_dir_flat(old);
    return 0;
}
