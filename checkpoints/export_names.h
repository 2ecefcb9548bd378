/* export_names.h: where each parameter of a model goes in the export formats, shared by the
 * writers (export_hf.h, export_gguf.h) and the reader (export_load.h).
 *
 * Hugging Face: our parameter names are Mixtral's (Llama's for a dense model) already; a
 * stacked expert tensor "model.layers.l.block_sparse_moe.experts.{e}.w1.weight" (E, F, C) is
 * one tensor per expert with {e} the expert's index. The training-only router noise weights
 * (noise_gate) are not exported.
 *
 * GGUF (llama.cpp's llama architecture): token_embd, output_norm, output, and per block
 * blk.N.attn_{norm,q,k,v,output}, blk.N.ffn_norm, blk.N.ffn_gate_inp (router),
 * blk.N.ffn_{gate,up,down}_exps (experts stacked, expert outermost) or blk.N.ffn_{gate,up,
 * down} (dense), each ".weight". llama.cpp's llama graph applies RoPE to interleaved pairs
 * (2i, 2i+1) while our weights use rotate-half pairs (i, i + D/2), so the rows of every q and
 * k head are permuted: new row 2j + s takes old row s*D/2 + j (s in {0, 1}, j < D/2), as
 * convert_hf_to_gguf.py's permute does (k with the kv head count).
 */
#ifndef MOE_EXPORT_NAMES_H
#define MOE_EXPORT_NAMES_H

#include <stdbool.h>
#include <stddef.h>

#include "layers/model.h"

/* true for the tensors no export holds: the router noise weights (noise_gate). */
bool export_skips(const Param *p);

/* The HF name of expert e of the stacked pattern "...experts.{e}...." (a name without "{e}"
 * is copied unchanged) into out (cap bytes). */
void export_hf_expert_name(const char *pattern, int e, char *out, size_t cap);

/* llama.cpp's name of parameter p of a model of shape s (stacked experts: one tensor) into
 * out (cap bytes). Returns false for tensors that are not exported (export_skips); ASSERTs
 * on a parameter the model does not have. *rope_heads > 0 when the rows need the rope
 * permutation with that many heads (H for q, Hkv for k), else 0. */
bool export_gguf_name(const Param *p, const ModelShape *s, char *out, size_t cap,
                      int *rope_heads);

/* The rotate-half -> interleaved row permutation used for GGUF q/k (inverse = true undoes
 * it): w (n_head*D, C) -> out (n_head*D, C). out must not alias w; D even. */
void export_permute_rope_rows(const float *w, float *out, int n_head, int D, int C,
                              bool inverse);

#endif
