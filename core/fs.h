/* fs.h: checked file I/O: whole-file reads, the one crash-safe write (files and whole
 * directories), directories.
 *
 * Every failure is a MoeErr naming the path and the OS reason, with a hint.
 */
#ifndef MOE_FS_H
#define MOE_FS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/error.h"

/* Read a whole regular file into a new buffer (*buf owned by the caller, moe_free; one
 * spare NUL byte after the data). Fails (-1, err naming the file and the OS reason). */
int fs_read_file(const char *path, uint8_t **buf, size_t *n, MoeErr *err);

/* True when path names something that exists (stat succeeds). */
bool fs_exists(const char *path);

/* mkdir -p: create path and its missing parents. Fails (-1, err naming the directory that
 * could not be made, with a hint) on any error other than "exists". */
int fs_mkdirs(const char *path, MoeErr *err);

/* Crash-safe writer: fs_atomic_open creates "<path>.tmp.<pid>" in the same directory and
 * returns a FILE* in af->fp; write to it, then fs_atomic_commit flushes, fsyncs, closes and
 * publishes it over path (fs_publish). On any failure commit removes the temporary and
 * returns -1 with err; fs_atomic_abort discards an open temporary. Both leave af zeroed. */
typedef struct FsAtomicFile {
    FILE *fp;
    char *tmp;   /* owned */
    char *path;  /* owned copy */
} FsAtomicFile;
int fs_atomic_open(FsAtomicFile *af, const char *path, MoeErr *err);
int fs_atomic_commit(FsAtomicFile *af, MoeErr *err);
void fs_atomic_abort(FsAtomicFile *af);

/* The last step of every crash-safe write, for writers that produce the temporary
 * themselves (HDF5, directories): rename tmp over path, then fsync path's directory (best
 * effort: some file systems refuse to fsync a directory; the data is complete either way).
 * The caller has fsynced tmp's contents. A reader never sees a partial file under path.
 * Fails (-1, err naming both paths and the OS reason); then path is unchanged. */
int fs_publish(const char *tmp, const char *path, MoeErr *err);

/* ---- directories published whole (a directory of files appears complete or not at all) */

/* Make a fresh, empty directory "<path>.tmp-XXXXXX" next to path (mkdtemp: mode 0700 until
 * fs_publish_dir) and write its name to out (cap bytes). Fails (-1, err naming path and the
 * OS reason, with hint); out is then "". */
int fs_temp_dir(const char *path, char *out, size_t cap, MoeErr *err);

/* Remove dir and the entries directly inside it (not recursive: meant for a temporary or
 * replaced directory of plain files). Best effort, silent: what cannot be removed stays. */
void fs_remove_dir_flat(const char *dir);

/* Publish the complete directory tmpdir (from fs_temp_dir; every file in it fsynced, e.g.
 * written with fs_atomic_*) as path: give it the permissions mkdir would (0777 & ~umask),
 * fsync it, then fs_publish (rename, fsync of the parent). Without replace, path must not
 * exist. With replace and an existing path (a directory the caller has checked may go),
 * the old directory is first renamed aside to "<path>.old-XXXXXX" and removed
 * (fs_remove_dir_flat) only once tmpdir is in place; if tmpdir cannot be renamed the old one
 * is renamed back. Fails (-1, err); path is then as it was (or the hint names where the
 * old directory is) and tmpdir is left for the caller to remove. */
int fs_publish_dir(const char *tmpdir, const char *path, bool replace, MoeErr *err);

#endif
