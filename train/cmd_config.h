/* cmd_config.h: the `moetrain config` subcommand.
 *
 *   moetrain config keys      the reference of every config key, as Markdown, on stdout
 *                             (docs/configuration.md is this output)
 *   moetrain config --help | config keys --help
 */
#ifndef MOE_CMD_CONFIG_H
#define MOE_CMD_CONFIG_H

/* argv holds the words after `moetrain config` (argv[0] = "keys"). Returns the exit
 * status: 0 ok (or --help), 1 stdout could not be written, 2 a bad command line. */
int cmd_config(int argc, char **argv);

#endif
