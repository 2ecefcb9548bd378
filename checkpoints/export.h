/* export.h: exporting a checkpoint for other inference stacks, and loading a model back from
 * any of the three forms. The contract is in the parts; this header gathers them for the
 * programs (train/cmd_infer.c) that use all of them:
 *   export_hf.h        Hugging Face model directory (safetensors + config + tokenizer.json),
 *                      PEFT adapter directory
 *   export_gguf.h      one GGUF file for llama.cpp
 *   export_load.h      ModelSource: a checkpoint, HF directory or GGUF file for inference
 * and, below them, export_ckpt.h (a checkpoint as the model an export writes; what the
 * formats cannot express), export_names.h (tensor names and the GGUF RoPE row order) and
 * export_tokenizer.h (the tokenizer's vocabulary forms).
 *
 * Only moe.router: topk models with softmax scores, route scale 1 and no group limit export
 * (the formats route softmax top-k); others are refused (export_ckpt.h).
 * Non-goals: exporting a checkpoint written by an expert-parallel run with missing experts
 * (ckpt files always hold all experts), tokenizers other than ours.
 */
#ifndef MOE_EXPORT_H
#define MOE_EXPORT_H

#include "checkpoints/export_gguf.h"
#include "checkpoints/export_hf.h"
#include "checkpoints/export_load.h"

#endif
