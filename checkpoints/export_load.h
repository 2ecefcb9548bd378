/* export_load.h: load a model for inference from any of the three forms: a checkpoint, a
 * Hugging Face export directory (export_hf.h) or a GGUF file (export_gguf.h).
 *
 * An export is read back only as moetrain writes it: the tensor names and shapes of
 * export_names.h, the hyper-parameters of config.json or the llama.* GGUF keys, the
 * tokenizer of export_tokenizer.h. Every expected tensor must be present with exactly the
 * expected shape; errors name the file and the tensor.
 *
 * Non-goals: exports of other tools (other architectures, tokenizers, tied embeddings),
 * quantisation types the GGUF reader does not know.
 */
#ifndef MOE_EXPORT_LOAD_H
#define MOE_EXPORT_LOAD_H

#include <stdbool.h>

#include "core/common.h"
#include "data/tokenizer.h"
#include "layers/model.h"

typedef enum { SRC_CKPT, SRC_HF, SRC_GGUF } ModelSourceKind;

typedef struct ModelSource {
    ModelSourceKind kind;
    Model model;               /* all experts local; capacity_factor 0 (kept for expert
                                  choice), router noise off; a LoRA adapter checkpoint:
                                  base + adapters (unmerged); a checkpoint's data.doc_mask
                                  (an export carries none: one causal sequence) */
    Tokenizer tok;             /* loaded when has_tok */
    bool has_tok;
    int context_len;           /* train.seq_len / max_position_embeddings / context_length */
    int gemm, precision;       /* a checkpoint's compute.gemm / compute.precision (GemmBackend,
                                  GemmPrecision of autograd/gemm.h); auto / fp32 for exports */
} ModelSource;

/* Detect the kind (a directory = HF export, GGUF magic = GGUF, else HDF5 checkpoint) and
 * load the weights (GGUF q/k rows un-permuted, f16/bf16/q8_0 converted to f32) and the
 * tokenizer (optional in an export: has_tok says whether there was one). Fails (-1, err
 * naming the file and the tensor or key). Release with model_source_free (also after a
 * failure). */
int model_source_load(ModelSource *src, const char *path, MoeErr *err);
void model_source_free(ModelSource *src);

#endif
