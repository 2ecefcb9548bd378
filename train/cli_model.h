/* cli_model.h: what the inference commands (train/cmd_infer.c: export, sample, logits;
 * train/cmd_eval.c: eval) share: their MODEL argument resolved and loaded, a forward pass
 * to logits, the NLL of one row, and the error and usage printing of those commands.
 *
 * Exit statuses: cli_fail returns 1 (a user or environment error: "moetrain: error: ..."
 * and "hint: ..." on stderr), cli_model_usage 2 (a bad command line: one line).
 * Non-goals: the training program's errors (train/main.c prints those).
 */
#ifndef MOE_CLI_MODEL_H
#define MOE_CLI_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "autograd/tensor.h"
#include "checkpoints/export_load.h"
#include "core/common.h"
#include "layers/model.h"

/* -h or --help */
bool cli_is_help(const char *a);
/* Print err (and its hint) on stderr; returns 1. */
int cli_fail(const MoeErr *err);
/* A bad command line of the command whose help text is help ("usage: moetrain CMD ..."):
 * one line "moetrain: MSG 'ARG' (see moetrain CMD --help)" (ARG may be NULL) through
 * train/cli.h; returns 2. */
int cli_model_usage(const char *msg, const char *arg, const char *help);
/* A whole decimal integer in [lo, hi] into *out; false (out untouched) otherwise. */
bool cli_parse_long(const char *s, long lo, long hi, long *out);

/* The MODEL argument as given into out (cap bytes): a run directory becomes its newest
 * valid checkpoint, named on stderr (rundir_resolve_model, checkpoints/rundir.h); anything
 * else is copied. Returns 0, or 1 after printing the error. */
int cli_resolve_model(const char *arg, char *out, size_t cap);

/* Load the model at path (a checkpoint, an HF export directory or a GGUF file) into src:
 * need_tok refuses a source without a tokenizer; tokenwise (sample: token by token)
 * refuses expert-choice routing, which needs every token of a pass, future ones included;
 * otherwise an expert-choice model gets a note on stderr (each window routed as one
 * batch). Returns 0, or 1 after printing the error (src is then freed). */
int cli_load_model(ModelSource *src, const char *path, bool need_tok, bool tokenwise);

/* Logits (T, V) of ids (T) through model_forward on t, reset as a non-recording tape
 * (owned by the caller): the training forward without router noise. The result lives in
 * t's arena until the next reset. */
const float *cli_forward_logits(Model *m, Tape *t, const int32_t *ids, int T);

/* -log softmax(row)[target] of one logits row (V), computed in double. */
double cli_nll_row(const float *row, int V, int target);

#endif
