/* export_ckpt.h: a checkpoint as the model an export writes or inference runs, and what the
 * export formats cannot express.
 *
 * The formats (export_hf.h, export_gguf.h) describe Mixtral / Llama / Mistral models routed
 * by "top num_experts_per_tok experts, softmax over them". A checkpoint whose model computes
 * something those files cannot say is refused, never exported into a file that silently
 * computes something else: shared experts, a router other than topk, a non-zero expert
 * selection bias (aux-loss-free balancing), and for GGUF a sliding window.
 */
#ifndef MOE_EXPORT_CKPT_H
#define MOE_EXPORT_CKPT_H

#include <stdbool.h>

#include "configs/config.h"
#include "core/common.h"
#include "data/tokenizer.h"
#include "layers/model.h"

typedef enum { EXPORT_HF, EXPORT_GGUF } ExportFormat;

/* Read the config (*c, zeroed before; config_free it), the weights (m: all experts; built
 * here, model_free it, also after a failure) and the stored tokenizer (*tok, zeroed before;
 * tok_free it) of the checkpoint path. An adapter checkpoint is loaded on top of its base
 * (checkpoints/finetune.h, checksum verified); with merge its adapters are then folded into
 * the weights, so m is a plain model (what the exporters write), otherwise m keeps them
 * (inference runs base + adapters). Fails (-1, err naming the file) on an unreadable or
 * inconsistent checkpoint (a tokenizer whose size is not model.vocab_size). */
int export_read_ckpt(const char *path, Config *c, Model *m, Tokenizer *tok, bool merge,
                     MoeErr *err);

/* 0 when format can express the model m of config c read from path (export_read_ckpt);
 * else -1 with err naming the config key, the format and a hint. Checked in this order:
 * shared experts (moe.n_shared_experts > 0), for GGUF model.sliding_window > 0, a non-zero
 * router bias (an all-zero one changes nothing), moe.router other than topk. */
int export_check_expressible(const char *path, const Config *c, const Model *m,
                             ExportFormat format, MoeErr *err);

#endif
