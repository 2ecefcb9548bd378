/* cli.h: usage errors of the command line, the same for every subcommand.
 *
 * A bad command line prints ONE line on stderr, what was wrong and where the help is:
 *   moetrain: unknown option '--foo' (see moetrain export --help)
 * and the command exits 2 (train/main.c). The full usage text is printed only when asked
 * for (--help, to stdout, exit 0).
 * Non-goals: parsing options (each command parses its own).
 */
#ifndef MOE_CLI_H
#define MOE_CLI_H

/* Print "moetrain: MSG (see moetrain[ CMD] --help)" on stderr; returns 2, the exit status.
 * cmd: the subcommand words ("export", "tokenizer train") or NULL for the training command.
 * The message should hold no newline. */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
