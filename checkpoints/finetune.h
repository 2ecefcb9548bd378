/* finetune.h: the base checkpoint of a fine-tuning run, and LoRA models from adapter
 * checkpoints.
 *
 * A fine-tuning run (config section finetune, docs/finetuning.md) starts from a
 * FULL checkpoint, finetune.init_from. With LoRA (finetune.lora_rank > 0) the base weights
 * stay frozen and the run's checkpoints are adapter checkpoints (checkpoints/ckpt.h:
 * CkptMeta.adapter): they hold the adapters, any base tensors the config unfroze and their
 * moments, plus the base's path and the checksum of its bytes (ckpt_file_checksum). Every
 * reader of an adapter checkpoint (resume, export, inference) reloads the base from that
 * path and refuses it when its checksum differs, showing both checksums.
 *
 * Checks on a base: the file exists (a missing base names the run that writes it when the
 * path looks like runs/NAME/checkpoints/...), it is a full checkpoint, its model shape
 * equals the fine-tuning config's (config_diff_model: model.*, moe.n_experts/top_k/hidden),
 * and, done by the callers, its tokenizer hash equals the run's.
 *
 * Non-goals: fine-tuning from an HF/GGUF export, stacking adapters on adapters.
 */
#ifndef MOE_FINETUNE_H
#define MOE_FINETUNE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/common.h"
#include "checkpoints/ckpt.h"
#include "layers/model.h"
#include "configs/config.h"

/* Fail (-1, err naming key and path, with a hint saying how to produce it) when the base
 * checkpoint path does not exist; key is what named it ("finetune.init_from"). */
int finetune_check_base_exists(const char *base, const char *key, MoeErr *err);

/* Load the base checkpoint into m (every tensor but the adapters, values only; m built
 * from c with the experts this rank holds), after the checks above. want_sum non-NULL:
 * the file's checksum must equal *want_sum, else fail showing both (expected_from names the
 * file that recorded it). *sum (if non-NULL) gets the checksum, *tok_hash (if non-NULL) the
 * base's tokenizer hash. Fails (-1, err) before touching m on every check. */
int finetune_load_base(const char *base, const char *key, const Config *c, Model *m,
                       const uint64_t *want_sum, const char *expected_from, uint64_t *sum,
                       uint64_t *tok_hash, MoeErr *err);

/* Build m (all experts, shape and LoRA spec from c = the adapter checkpoint's config) and
 * load it from the adapter checkpoint path (meta from ckpt_read_meta): base from
 * meta->base_path with its checksum verified, then the checkpoint's tensors. Release m with
 * model_free, also after a failure. */
int finetune_load_model(const char *path, const CkptMeta *meta, const Config *c, Model *m,
                        MoeErr *err);

/* A plain model (no adapters, all experts) computing what the LoRA model lm computes:
 * every base tensor copied, each adapted projection W replaced by W + (alpha/r) B A
 * (lora_merge). plain is built here; release it with model_free. */
void finetune_merge(const Model *lm, Model *plain);

#endif
