/* cmd_tokenizer.h: the `moetrain tokenizer info` and `moetrain tokenizer encode` subcommands
 * (`tokenizer train` is in train/main.c).
 *
 *   moetrain tokenizer info FILE
 *       one line naming the tokenizer (tok_describe): kind, tokens, merges, pattern, end of
 *       text. FILE is a moetrain .bpe or a Hugging Face tokenizer.json.
 *   moetrain tokenizer encode --tokenizer FILE [TEXT_FILE]
 *       the ids of TEXT_FILE's bytes (standard input when absent), space-separated on one
 *       line of stdout; no end-of-text token is added. For checking ids against another
 *       implementation (tools/hf_tokenizer_check.py).
 * argv[0] is the word after `tokenizer` ("info" / "encode"). Returns the exit status: 0 ok
 * (or --help), 1 a user error ("moetrain: error: ..." and "hint: ..." on stderr), 2 a bad
 * command line.
 */
#ifndef MOE_CMD_TOKENIZER_H
#define MOE_CMD_TOKENIZER_H

int cmd_tokenizer_info(int argc, char **argv);
int cmd_tokenizer_encode(int argc, char **argv);

#endif
