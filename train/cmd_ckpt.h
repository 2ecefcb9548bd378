/* cmd_ckpt.h: the `moetrain ckpt` subcommand.
 *
 *   moetrain ckpt info PATH     summary of a checkpoint + full checksum verification; PATH
 *                               may be a run directory (its newest valid checkpoint)
 *   moetrain ckpt --help
 */
#ifndef MOE_CMD_CKPT_H
#define MOE_CMD_CKPT_H

/* argv holds the words after `moetrain ckpt` (argv[0] = "info", argv[1] = PATH).
 * Prints to stdout; errors go to stderr as "moetrain: error: ..." + "hint: ...".
 * Returns the exit status: 0 ok (or --help), 1 the checkpoint is unreadable, incomplete or
 * corrupt, 2 a bad command line. */
int cmd_ckpt(int argc, char **argv);

#endif
