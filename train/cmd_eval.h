/* cmd_eval.h: the `moetrain eval` subcommand.
 *
 *   moetrain eval MODEL --text FILE [--ctx N] [--stride S] [--score-second-half]
 *   moetrain eval MODEL --split val|train [--windows N|all]
 *
 * MODEL is a run directory (its newest valid checkpoint, named on stderr), a checkpoint,
 * a Hugging Face export directory or a GGUF file. --text scores a text file (sliding
 * windows, or llama-perplexity's protocol), with a warning when the file is one of the
 * run's training texts; --split scores a checkpoint's own training or validation windows,
 * the latter the ones the trainer's val_loss is measured on. Prints the protocol, the
 * windows and tokens scored, and "mean NLL X nats/token, perplexity Y" on stdout;
 * progress on stderr when it is a terminal.
 * argv[0] is the first word after `eval`. Returns the exit status: 0 ok (or --help), 1 a
 * user/environment error ("moetrain: error: ..." and "hint: ..." on stderr), 2 a bad
 * command line.
 */
#ifndef MOE_CMD_EVAL_H
#define MOE_CMD_EVAL_H

int cmd_eval(int argc, char **argv);

#endif
