/* export_gguf.h: a checkpoint as one GGUF file for llama.cpp.
 *
 * Architecture "llama" (with llama.expert_count / expert_used_count for an MoE), tensors
 * named and laid out as llama.cpp's (export_names.h: stacked experts outermost, q and k rows
 * permuted to interleaved RoPE pairs), the tokenizer embedded (tokenizer.ggml.model "gpt2",
 * pre "gpt-2"; export_tokenizer.h). Norm gains and the router stay f32 in f16/q8_0 files.
 * A LoRA adapter checkpoint is written merged, as export_hf does.
 *
 * Non-goals: models the format cannot express (export_ckpt.h: shared experts, sliding
 * windows, routers other than topk, a router bias), k-quants.
 */
#ifndef MOE_EXPORT_GGUF_H
#define MOE_EXPORT_GGUF_H

#include "checkpoints/gguf.h"
#include "core/common.h"

/* Export checkpoint ckpt_path to the GGUF file out_path (written atomically). type is
 * GGML_F32, GGML_F16 or GGML_Q8_0 (Q8_0 applies to matrices whose rows are multiples of 32,
 * other matrices become f16; norm gains and routers stay f32). Fails (-1, err) on an
 * unreadable checkpoint or a model the format cannot express; out_path is then unchanged. */
int export_gguf(const char *ckpt_path, const char *out_path, GgmlType type, MoeErr *err);

#endif
