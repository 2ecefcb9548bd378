/* outguard.h: the rule that no `moetrain` command destroys its inputs or silently replaces
 * a file.
 *
 * Every subcommand that writes a path the user named (tokenizer train --out, data encode
 * --out, export OUT, upcycle OUT_CKPT, logits --out, report --out) asks outguard_check
 * before it reads or computes anything. The writers themselves stay atomic (temporary,
 * fsync, rename); this only decides whether the name may be replaced at all.
 *
 * Identity is by device and inode (stat), not by spelling: ./a.txt and a.txt, a symlink to
 * an input and a hard link of it are all the input. Checked once, before the work starts:
 * a file swapped in between is not seen (the commands are not meant to race each other).
 *
 * Non-goals: locking, guarding outputs the trainer names itself (run.dir: see the run
 * directory's own rules), comparing file contents.
 */
#ifndef MOE_OUTGUARD_H
#define MOE_OUTGUARD_H

#include <stdbool.h>

#include "core/common.h"

typedef enum { OUTGUARD_FILE, OUTGUARD_DIR } OutguardKind;

/* May the command write out (a file, or a directory it creates whole) given that it reads
 * inputs[0..n_inputs) (files or directories; a directory stands for everything in it;
 * paths that do not exist are skipped: reading them fails later with its own message)?
 * arg names out on the command line for messages ("--out", "OUT", "OUT_CKPT").
 *
 * Refused whatever force says (returns -1, err names out and the input, hint says what to
 * do instead):
 *   - out is one of the inputs (same device and inode);
 *   - kind DIR: an input lies inside the existing directory out;
 *   - out exists inside an input directory (it may be one of the files read);
 *   - out exists with the wrong type (a directory where a file is written, or a
 *     non-directory where a directory is written): rename cannot replace it.
 * Refused unless force: out exists (lstat: a dangling symlink counts).
 * Returns 0 when out does not exist, or exists and force allows replacing it. */
int outguard_check(const char *out, OutguardKind kind, const char *arg,
                   const char *const *inputs, int n_inputs, bool force, MoeErr *err);

/* outguard_check for a command-line program: prints "moetrain: error: ..." and "hint: ..."
 * to stderr and returns the exit status 2 when refused (the fix is on the command line:
 * --force or another name), 0 when out may be written. */
int outguard_cli(const char *out, OutguardKind kind, const char *arg,
                 const char *const *inputs, int n_inputs, bool force);

#endif
