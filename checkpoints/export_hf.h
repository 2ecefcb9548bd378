/* export_hf.h: a checkpoint as a Hugging Face model directory, and LoRA adapters as a PEFT
 * adapter directory.
 *
 * Model directory (export_hf), loaded by transformers as MixtralForCausalLM (an MoE),
 * MistralForCausalLM (dense with model.sliding_window) or LlamaForCausalLM (dense):
 *   model.safetensors (or model-0000k-of-0000N.safetensors + model.safetensors.index.json)
 *       every parameter under its HF name (export_names.h), dtype f32, bf16 or f16
 *   config.json, generation_config.json
 *   tokenizer.json (export_tokenizer.h), tokenizer_config.json, special_tokens_map.json
 * A LoRA adapter checkpoint (checkpoints/finetune.h) is written MERGED: its base is loaded
 * (checksum verified) and each adapted weight replaced by W + (alpha/r) B A.
 *
 * Both directories are built as OUTDIR.tmp-XXXXXX next to OUTDIR, every file fsynced, then
 * published whole (core/fs.h fs_publish_dir): a failed export leaves nothing under OUTDIR.
 * OUTDIR must not exist, unless the caller asks to overwrite: then an existing OUTDIR that
 * export_dir_replaceable accepts (an earlier export) is replaced, the new directory in place
 * before the old one is removed (a failure leaves the old one).
 *
 * Non-goals: models the format cannot express (export_ckpt.h), tokenizers other than ours.
 */
#ifndef MOE_EXPORT_HF_H
#define MOE_EXPORT_HF_H

#include <stdbool.h>
#include <stddef.h>

#include "checkpoints/safetensors.h"
#include "core/common.h"

typedef struct ExportHfOptions {
    StDtype dtype;             /* ST_F32 (default), ST_BF16, ST_F16 */
    size_t max_shard_bytes;    /* 0 = one model.safetensors */
    bool overwrite;            /* replace an existing outdir (export_dir_replaceable) */
} ExportHfOptions;

/* Export checkpoint ckpt_path to the new directory outdir. Fails (-1, err with hint) on an
 * unreadable/corrupt checkpoint, a model the format cannot express (export_ckpt.h), a
 * tokenizer with two tokens of the same bytes, an existing outdir (without opt->overwrite;
 * with it, one export_dir_replaceable refuses) or an unwritable parent; then outdir is as it
 * was and the temporary directory has been removed. */
int export_hf(const char *ckpt_path, const char *outdir, const ExportHfOptions *opt,
              MoeErr *err);

/* The adapters of a LoRA adapter checkpoint as a PEFT adapter directory outdir (new, built
 * and published like export_hf): adapter_model.safetensors with
 * "base_model.model.model.layers.{l}.self_attn.{q,k,v,o}_proj.lora_A.weight" (r, d_in) and
 * "...lora_B.weight" (d_out, r) in dtype, and adapter_config.json (peft_type LORA,
 * task_type CAUSAL_LM, r, lora_alpha, lora_dropout, target_modules, bias "none",
 * fan_in_fan_out false, base_model_name_or_path = the base checkpoint's path). The base is
 * not read. overwrite as ExportHfOptions.overwrite. Fails (-1, err) on a full checkpoint,
 * on a run that also trained base tensors (PEFT adapters cannot hold them: export merged
 * instead), and like export_hf. */
int export_peft(const char *ckpt_path, const char *outdir, StDtype dtype, bool overwrite,
                MoeErr *err);

/* May an export with overwrite replace outdir? 0 when outdir does not exist or is a
 * directory (not a symlink) holding only regular files named *.json or *.safetensors
 * (what export_hf and export_peft write); else -1 with err naming the first other entry
 * (so --force never deletes a directory of the user's own files). */
int export_dir_replaceable(const char *outdir, MoeErr *err);

#endif
