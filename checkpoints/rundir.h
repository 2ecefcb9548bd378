/* rundir.h: a run directory's ownership and checkpoint history.
 *
 * A run directory (run.dir) belongs to one run:
 *   RUN/.lock                            flock()ed by the training process that owns the
 *                                        directory; text "PID HOST START-TIME" of the last
 *                                        holder (never removed: see rundir_open)
 *   RUN/checkpoints/step_<8 digits>.h5   checkpoints (checkpoints/ckpt.h), named by step
 *   RUN/metrics.jsonl, eval.jsonl, config.yaml, tokens/   written by train/train.c
 *
 * Ownership. A training process takes the lock before it writes anything and holds it to the
 * end; a second live process is refused naming the holder. A fresh start (no --resume) is
 * refused in a directory that holds another run's checkpoints or metrics, before anything in
 * it is touched. Refusals return RUNDIR_REFUSED (the program exits 2).
 *
 * History. Checkpoint files are named by step, and a run may be resumed from any older
 * checkpoint (a branch), so the step alone does not say which file continues which run.
 * Every process that trains in the directory takes a generation G = 1 + the highest
 * lineage_gen among the checkpoints there (CkptMeta), and its checkpoints record G and the
 * (generation, step) of the checkpoint it resumed from. The LINEAGE of a checkpoint T is
 * the files of T's generation with step <= T.step, plus the lineage of T's parent; files of
 * generation 0 (no lineage attributes, e.g. files written by other commands) have
 * no parent and are ordered by step. `--resume auto` takes the tip of the newest generation,
 * and retention deletes only older members of the current lineage.
 *
 * Reading a run. The commands that take a model (sample, eval, logits, export, ckpt info)
 * accept a run directory and use the checkpoint --resume auto would continue
 * (rundir_resolve_model).
 *
 * "Readable" below means ckpt_read_meta succeeds (cheap: attributes only); a file is
 * verified (ckpt_verify, which may read the whole file) only before it is resumed from or
 * deleted.
 *
 * Non-goals: locking across hosts on file systems whose flock() is host-local; recovering
 * the lineage of a generation whose every checkpoint is unreadable.
 */
#ifndef MOE_RUNDIR_H
#define MOE_RUNDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/common.h"
#include "checkpoints/ckpt.h"

/* Returned (instead of -1) when the run directory is refused: nothing in it was changed. */
#define RUNDIR_REFUSED (-2)

/* One training process's hold on a run directory (rank 0 only). */
typedef struct RunDir {
    char *dir;            /* run.dir (owned copy) */
    int lock_fd;          /* RUN/.lock, flock()ed while locked */
    bool locked;
    int64_t gen;          /* this process's generation (>= 1) */
    int64_t parent_gen;   /* the checkpoint this process resumed from, when it lies in */
    int64_t parent_step;  /* RUN/checkpoints; (0, 0): none (a fresh start or a file elsewhere) */
} RunDir;

/* ---- paths ---- */

/* "RUN/checkpoints" into out. Returns 0, or -1 when it does not fit in cap. */
int rundir_ckpt_dir(const char *run_dir, char *out, size_t cap);
/* "RUN/checkpoints/step_00000040.h5" into out. Returns 0, or -1 when it does not fit. */
int rundir_ckpt_path(const char *run_dir, int64_t step, char *out, size_t cap);
/* mkdir -p RUN/checkpoints. Fails (-1, err naming the directory and the OS reason). */
int rundir_prepare(const char *run_dir, MoeErr *err);

/* ---- ownership ---- */

/* 0 when a fresh run may start in run_dir: it does not exist, or holds no metrics.jsonl /
 * eval.jsonl with content and no RUN/checkpoints/step_*.h5 (of any state; temporaries
 * "*.tmp" of a killed writer do not count). Otherwise RUNDIR_REFUSED with err naming the
 * directory, what it holds, and the ways on (--resume auto, or another run.dir). Reads only.
 * -1 (err) when the directory cannot be read. */
int rundir_check_fresh(const char *run_dir, MoeErr *err);

/* Take run_dir for this process: *rd is overwritten. With fresh, first rundir_check_fresh.
 * Then mkdir -p run_dir, flock RUN/.lock (exclusive, non-blocking) and write "PID HOST
 * START-TIME" into it; a lock file whose holder is gone (the flock succeeds) is taken over.
 * Nothing is created or written before both checks pass (a refused fresh start leaves the
 * directory byte for byte as it was). Sets rd->gen = 1 + the highest lineage_gen among the
 * readable checkpoints; parent (0, 0). Fails: RUNDIR_REFUSED when another live process
 * holds the lock (err names its pid and host) or the fresh check refuses; -1 (err) on an OS
 * error. On failure *rd holds nothing (rundir_close is still safe). The lock file is never
 * removed: unlinking it would let a process that opened the old file and one that creates
 * a new one both hold "the" lock. */
int rundir_open(RunDir *rd, const char *run_dir, bool fresh, MoeErr *err);

/* Release the lock and free rd; safe on a zeroed or failed RunDir. */
void rundir_close(RunDir *rd);

/* Does a live process hold run_dir's lock now (the training that owns it)? Probes RUN/.lock
 * with a shared non-blocking flock, released at once; false when the lock is free, the file
 * is missing or cannot be probed. Changes nothing. */
bool rundir_is_locked(const char *run_dir);

/* ---- history ---- */

/* The checkpoint `--resume auto` continues: the tip of the newest run = the readable
 * checkpoint with the highest (lineage_gen, step); when it fails ckpt_verify, its newest
 * ancestor on its lineage that passes. Writes the path to out and returns 0; notes (when log
 * is not NULL) every file with a higher step that was passed over and why (unreadable, with
 * the error; or another branch than the tip's). Returns 1 (out = "") when RUN/checkpoints
 * holds no step_*.h5 at all (a fresh start is then right). Returns RUNDIR_REFUSED when
 * checkpoint files exist but none can be resumed (err names the files and the ways on: move
 * them away, or --resume PATH); -1 (err) when the directory cannot be read or out is too
 * small. Never starts anything from scratch itself. */
int rundir_find_resume(const char *run_dir, char *out, size_t cap, FILE *log, MoeErr *err);

/* A command's model argument (sample, eval, logits, export, ckpt info) into out (cap bytes):
 * a path that is not a directory, or a directory holding config.json (a Hugging Face
 * export), is copied as it is (its loader reports what is wrong with it); a directory
 * holding checkpoints/ is a run directory and becomes the checkpoint `--resume auto` would
 * continue (rundir_find_resume's choice: its newest run's tip, or the newest ancestor that
 * verifies), named on note (when not NULL) as "moetrain: note: RUN: using its newest valid
 * checkpoint PATH (step N)" after a note for every newer file passed over and why. Fails
 * (-1, err): a directory that is neither (naming both forms), a run directory whose
 * checkpoints/ holds no step_*.h5 yet or none that verifies, out too small. */
int rundir_resolve_model(const char *path, char *out, size_t cap, FILE *note, MoeErr *err);

/* Record the checkpoint this process resumed from (its path and meta): when path lies in
 * RUN/checkpoints it becomes rd's parent (meta->lineage_gen, meta->step); a file elsewhere
 * is no part of this directory's history and leaves the parent (0, 0). */
void rundir_set_parent(RunDir *rd, const char *path, const CkptMeta *meta);

/* Call before writing the checkpoint of `step`: when RUN/checkpoints/step_N.h5 already
 * exists and is not this process's (another branch, or unreadable), it is renamed to
 * step_N.gen<G>.h5 (step_N.unreadable.h5), which no history function lists, and the rename
 * is noted on log. Fails (-1, err) when the rename fails. */
int rundir_set_aside(const RunDir *rd, int64_t step, FILE *log, MoeErr *err);

/* Retention after this process saved the checkpoint of tip_step: of the checkpoints on its
 * lineage, keep the `keep` (>= 1) newest and delete the older ones, except the checkpoint
 * this process resumed from and any that fails ckpt_verify (noted on log). Files on no
 * lineage of this process (other branches, unreadable ones, anything not named step_N.h5)
 * are never touched; left-over step_*.h5.tmp of a killed writer are removed (only the lock
 * holder writes here). Call only from the process holding the lock, after its save
 * returned. Fails (-1, err) when a file cannot be removed or the directory read. */
int rundir_rotate(const RunDir *rd, int64_t tip_step, int keep, FILE *log, MoeErr *err);

#endif
