/* cmd_upcycle.h: the `moetrain upcycle` subcommand (sparse upcycling, checkpoints/upcycle.h).
 *
 *   moetrain upcycle DENSE_CKPT OUT_CKPT --experts E --top-k K [--router-init-std S]
 *                    [--expert-noise X] [--granularity G] [--seed N]
 *                    [--shared-experts NS] [--shared-hidden FS] [--force]
 *   moetrain upcycle --help
 */
#ifndef MOE_CMD_UPCYCLE_H
#define MOE_CMD_UPCYCLE_H

/* argv holds the words after `moetrain upcycle`. Writes OUT_CKPT (no optimizer state, step
 * 0) and prints a summary to stdout; errors go to stderr as "moetrain: error: ..." +
 * "hint: ...". Returns the exit status: 0 ok (or --help), 1 the dense checkpoint is
 * unreadable or does not fit (named), or the output cannot be written, 2 a bad command
 * line (unknown option, missing or malformed value, E/K/G that do not fit together) or a
 * refused OUT_CKPT (train/outguard.h: it exists without --force, or is DENSE_CKPT). */
int cmd_upcycle(int argc, char **argv);

#endif
