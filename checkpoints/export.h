/* export.h: export a checkpoint for other inference stacks, and load a model back from any
 * of the three forms (checkpoint, Hugging Face directory, GGUF file).
 *
 * Hugging Face (export_hf): a directory that transformers loads as MixtralForCausalLM
 * (LlamaForCausalLM for a dense model):
 *   model.safetensors (or model-0000k-of-0000N.safetensors + model.safetensors.index.json)
 *       every parameter under its HF name, experts one tensor per expert, the training-only
 *       router noise weights (noise_gate) left out; dtype f32, bf16 or f16
 *   config.json, generation_config.json
 *   tokenizer.json (byte-level BPE: vocab in GPT-2's byte-to-unicode alphabet, ranked merges
 *       "a b", ByteLevel pre-tokenizer (add_prefix_space false, use_regex true) and decoder,
 *       <|endoftext|> as a special added token), tokenizer_config.json,
 *       special_tokens_map.json
 * The directory is built as OUTDIR.tmp-XXXXXX next to OUTDIR, every file fsynced, then
 * renamed to OUTDIR: a failed export leaves nothing under OUTDIR. OUTDIR must not exist,
 * unless the caller asks to overwrite: then an existing OUTDIR that holds only regular
 * .json and .safetensors files (an earlier export) is replaced, the new directory in place
 * before the old one is removed (a failure leaves the old one).
 *
 * GGUF (export_gguf): one llama.cpp file, architecture "llama" (with llama.expert_count /
 * expert_used_count for MoE), tensors named like llama.cpp's (token_embd, blk.N.attn_q, ...,
 * blk.N.ffn_gate_inp, blk.N.ffn_{gate,up,down}_exps stacked experts outermost, output), the
 * tokenizer embedded (tokenizer.ggml.model "gpt2", pre "gpt-2"). llama.cpp's llama graph
 * applies RoPE to interleaved pairs (2i, 2i+1) while our weights use rotate-half pairs
 * (i, i + D/2), so the rows of every q and k head are permuted: new row 2j + s takes old
 * row s*D/2 + j (s in {0,1}, j < D/2), as convert_hf_to_gguf.py's permute does (k with
 * the kv head count). Norm gains and the router stay f32 in f16/q8_0 files.
 *
 * LoRA adapter checkpoints (checkpoints/finetune.h): export_hf and export_gguf load the
 * base the checkpoint names (checksum verified) and write the MERGED model, each adapted
 * weight replaced by W + (alpha/r) B A; export_peft writes the adapters alone in PEFT's
 * layout.
 *
 * Only moe.router: topk models export (the formats route top-k); others are refused.
 * Non-goals: exporting a checkpoint written by an expert-parallel run with missing experts
 * (ckpt files always hold all experts), tokenizers other than ours.
 */
#ifndef MOE_EXPORT_H
#define MOE_EXPORT_H

#include <stdbool.h>
#include <stddef.h>

#include "core/common.h"
#include "checkpoints/gguf.h"
#include "checkpoints/safetensors.h"
#include "data/tokenizer.h"
#include "layers/model.h"

typedef struct ExportHfOptions {
    StDtype dtype;             /* ST_F32 (default), ST_BF16, ST_F16 */
    size_t max_shard_bytes;    /* 0 = one model.safetensors */
    bool overwrite;            /* replace an existing outdir (export_dir_replaceable) */
} ExportHfOptions;

/* Export checkpoint ckpt_path to the new directory outdir. Fails (-1, err with hint) on an
 * unreadable/corrupt checkpoint, a model whose moe.router is not topk, an existing outdir
 * (without opt->overwrite; with it, one export_dir_replaceable refuses) or an unwritable
 * parent; then outdir is as it was and the temporary directory has been removed. */
int export_hf(const char *ckpt_path, const char *outdir, const ExportHfOptions *opt,
              MoeErr *err);

/* Export checkpoint ckpt_path to the GGUF file out_path (written atomically). type is
 * GGML_F32, GGML_F16 or GGML_Q8_0 (Q8_0 applies to matrices whose rows are multiples of 32,
 * other matrices become f16; norm gains and routers stay f32). Fails (-1, err), also for a
 * model whose moe.router is not topk. */
int export_gguf(const char *ckpt_path, const char *out_path, GgmlType type, MoeErr *err);

/* The adapters of a LoRA adapter checkpoint as a PEFT adapter directory outdir (new, built
 * as OUTDIR.tmp-XXXXXX and renamed like export_hf): adapter_model.safetensors with
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

/* ---- loading a model from a checkpoint, an HF export directory or a GGUF file ---- */

typedef enum { SRC_CKPT, SRC_HF, SRC_GGUF } ModelSourceKind;

typedef struct ModelSource {
    ModelSourceKind kind;
    Model model;               /* all experts local; capacity_factor 0 (kept for expert
                                  choice), router noise off; a LoRA adapter checkpoint:
                                  base + adapters (unmerged) */
    Tokenizer tok;             /* loaded when has_tok */
    bool has_tok;
    int context_len;           /* train.seq_len / max_position_embeddings / context_length */
} ModelSource;

/* Detect the kind (a directory = HF export, GGUF magic = GGUF, else HDF5 checkpoint) and
 * load the weights (GGUF q/k rows un-permuted, f16/bf16/q8_0 converted to f32) and the
 * tokenizer. Every expected tensor must be present with exactly the expected shape; errors
 * name the file and the tensor. Release with model_source_free (also after a failure). */
int model_source_load(ModelSource *src, const char *path, MoeErr *err);
void model_source_free(ModelSource *src);

/* The rotate-half -> interleaved row permutation used for GGUF q/k (and its inverse):
 * w (n_head*D, C) -> out (n_head*D, C); inverse = true undoes it. out must not alias w. */
void export_permute_rope_rows(const float *w, float *out, int n_head, int D, int C,
                              bool inverse);

#endif
