/* finetune.c: base checkpoints of fine-tuning runs and LoRA models from adapter
 * checkpoints. See finetune.h. */
#include "checkpoints/finetune.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>


int finetune_check_base_exists(const char *base, const char *key, MoeErr *err) {
    struct stat st;
    if (stat(base, &st) == 0) return 0;
    moe_errorf(err, "%s: %s: the base checkpoint does not exist", key, base);
    /* runs/NAME/checkpoints/step_N.h5 is what `moetrain configs/NAME.yaml` writes */
    const char *r = strstr(base, "runs/"), *ck = r ? strstr(r + 5, "/checkpoints/") : NULL;
    if (ck && ck > r + 5 && !memchr(r + 5, '/', (size_t)(ck - r - 5)))
        return moe_hintf(err, "train the base model first: `moetrain configs/%.*s.yaml` "
                         "writes %.*s/checkpoints/; or point %s at an existing full "
                         "checkpoint", (int)(ck - r - 5), r + 5, (int)(ck - base), base, key);
    return moe_hintf(err, "train the base model first, or point %s at an existing full "
                     "checkpoint (RUN_DIR/checkpoints/step_*.h5)", key);
}

int finetune_load_base(const char *base, const char *key, const Config *c, Model *m,
                       const uint64_t *want_sum, const char *expected_from, uint64_t *sum,
                       uint64_t *tok_hash, MoeErr *err) {
    if (finetune_check_base_exists(base, key, err)) return -1;
    CkptMeta meta;
    if (ckpt_read_meta(base, &meta, err)) return -1;
    if (meta.adapter) {
        moe_errorf(err, "%s: %s is a LoRA adapter checkpoint, not a full model", key, base);
        return moe_hintf(err, "fine-tune from a full checkpoint (its own base is %s)",
                         meta.base_path);
    }
    Config bc;
    if (ckpt_read_config(base, &bc, err)) return -1;
    char diff[2048];
    int nd = config_diff_model(&bc, c, diff, sizeof diff);
    config_free(&bc);
    if (nd > 0) {
        moe_errorf(err, "%s: the base checkpoint %s has another model shape than the config: "
                   "%s", key, base, diff);
        return moe_hintf(err, "fine-tuning keeps the base's model.* and moe.n_experts / "
                              "top_k / hidden: copy them from the base run's config");
    }
    uint64_t s = 0;   /* reading the whole file: only when someone needs the checksum */
    if ((want_sum || sum) && ckpt_file_checksum(base, &s, err)) return -1;
    if (want_sum && s != *want_sum) {
        moe_errorf(err, "%s: the base checkpoint %s has changed: its checksum is %016" PRIx64
                   " but %s was trained on a base with checksum %016" PRIx64, key, base, s,
                   expected_from, *want_sum);
        return moe_hintf(err, "restore the base checkpoint the adapters were trained on (the "
                              "adapters only make sense on top of it)");
    }
    if (ckpt_load_base(base, m, err)) return -1;
    if (sum) *sum = s;
    if (tok_hash) *tok_hash = meta.tok_hash;
    return 0;
}

int finetune_load_model(const char *path, const CkptMeta *meta, const Config *c, Model *m,
                        MoeErr *err) {
    ModelShape s;
    LoraSpec lo;
    config_model_shape(c, &s);
    config_lora_spec(c, &lo);
    model_init_lora(m, &s, &lo, 0, s.E, 0);
    char key[1200];
    snprintf(key, sizeof key, "%s: base_path", path);
    uint64_t tok_hash = 0;
    if (finetune_load_base(meta->base_path, key, c, m, &meta->base_checksum, path, NULL,
                           &tok_hash, err))
        return -1;
    if (tok_hash != meta->tok_hash) {
        moe_errorf(err, "%s: the base checkpoint %s has another tokenizer than the adapters",
                   path, meta->base_path);
        return moe_hintf(err, "the base was replaced: restore the one the adapters were "
                              "trained on");
    }
    return ckpt_load(path, m, NULL, false, err);
}

static const float *tensor_of(const Model *m, int idx) { return m->ps.p[idx].t.data; }

void finetune_merge(const Model *lm, Model *plain) {
    ASSERT(lm->e_first == 0 && lm->e_local == lm->s.E, "merge needs every expert");
    model_init(plain, &lm->s, 0, lm->s.E, 0);
    for (int i = 0; i < plain->ps.count; i++) {
        Param *p = &plain->ps.p[i];
        int j = params_find(&lm->ps, p->name);
        ASSERT(j >= 0 && lm->ps.p[j].t.n == p->t.n, "merge: %s", p->name);
        memcpy(p->t.data, tensor_of(lm, j), sizeof(float) * p->t.n);
    }
    const LoraSpec *lo = &lm->lora;
    if (lo->rank == 0) return;
    const float scale = lo->alpha / (float)lo->rank;
    for (int l = 0; l < lm->s.L; l++) {
        const LayerParams *ll = &lm->layer[l], *pl = &plain->layer[l];
        const int w[LORA_N_TARGETS] = {pl->wq, pl->wk, pl->wv, pl->wo,
                                       pl->w1, pl->w2, pl->w3, pl->router};
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            if (ll->lora_a[t] < 0) continue;
            Tensor *W = &plain->ps.p[w[t]].t;
            const float *A = tensor_of(lm, ll->lora_a[t]), *B = tensor_of(lm, ll->lora_b[t]);
            if (W->ndim == 3)   /* experts (E, d_out, d_in): per expert or shared */
                lora_merge_experts(W->data, A, B, W->shape[0], W->shape[1], W->shape[2],
                                   lo->rank, scale, lm->ps.p[ll->lora_a[t]].t.ndim == 2);
            else
                lora_merge(W->data, A, B, W->shape[0], W->shape[1], lo->rank, scale);
        }
    }
}
