/* cmd_infer.h: the export and inference subcommands of `moetrain`.
 *
 *   moetrain export CKPT OUT --format hf|gguf [--dtype f32|bf16|f16|q8_0]
 *                   [--max-shard-size BYTES]
 *   moetrain sample MODEL --prompt TEXT [--max-tokens N] [--temperature T] [--top-p P]
 *                   [--seed S]
 *   moetrain logits MODEL --ids 1,2,3 [--out FILE]
 *   moetrain eval ...   (train/cmd_eval.h, included here for the dispatcher)
 *
 * MODEL is a run directory (its newest valid checkpoint, the one --resume auto continues,
 * named on stderr: checkpoints/rundir.h, rundir_resolve_model), a checkpoint (.h5), a
 * Hugging Face export directory or a GGUF file (checkpoints/export.h, model_source_load);
 * CKPT a run directory or a checkpoint. Each function takes the words after the
 * subcommand name (argv[0] is the first argument, not the subcommand) and returns the exit
 * status: 0 ok (or --help), 1 a user/environment error ("moetrain: error: ..." and
 * "hint: ..." on stderr), 2 a bad command line.
 */
#ifndef MOE_CMD_INFER_H
#define MOE_CMD_INFER_H

#include "train/cmd_eval.h"

int cmd_export(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_logits(int argc, char **argv);

#endif
