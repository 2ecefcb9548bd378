/* lora.c: LoRA adapters. See lora.h for the formula and references. */
#include "layers/lora.h"

#include <cblas.h>
#include <string.h>

const char *const lora_target_names[LORA_N_TARGETS] = {"q_proj", "k_proj", "v_proj",
                                                       "o_proj"};

/* Salt for the dropout keys: the router noise uses the same counter RNG keyed by (seed,
 * step, layer, token), so the adapters' masks start from a different seed word. */
#define LORA_DROP_SALT 0x4c6f526144726f70ULL   /* "LoRaDrop" */

int lora_target_index(const char *name) {
    for (int t = 0; t < LORA_N_TARGETS; t++)
        if (!strcmp(name, lora_target_names[t])) return t;
    return -1;
}

void lora_dropout_mask(float *mask, int N, int din, const LoraDrop *d) {
    ASSERT(d->p >= 0.0f && d->p < 1.0f, "lora dropout p = %g", (double)d->p);
    const uint64_t seed = moe_hash64((uint64_t)d->seed ^ LORA_DROP_SALT);
    const uint64_t which = (uint64_t)d->layer * LORA_N_TARGETS + (uint64_t)d->target;
    const float keep = 1.0f / (1.0f - d->p);
    for (int n = 0; n < N; n++) {
        const uint64_t row = (uint64_t)(d->token_base + n) * (uint64_t)din;
        float *mr = mask + (size_t)n * din;
        for (int j = 0; j < din; j++) {
            double u = moe_u01(moe_hash4(seed, (uint64_t)d->step, which, row + (uint64_t)j));
            mr[j] = u < (double)d->p ? 0.0f : keep;
        }
    }
}

Tensor *lora_linear(Tape *t, Tensor *x, Tensor *w, Tensor *a, Tensor *b, float scale,
                    const LoraDrop *drop) {
    const int din = tensor_cols(x), r = a->shape[0];
    ASSERT(a->ndim == 2 && a->shape[1] == din && b->ndim == 2 && b->shape[1] == r &&
           b->shape[0] == w->shape[0], "lora: A (%d, %d), B (%d, %d), W (%d, %d), x cols %d",
           a->shape[0], a->shape[1], b->shape[0], b->shape[1], w->shape[0], w->shape[1], din);
    Tensor *y = op_linear(t, x, w);                          /* (N, d_out) base */
    Tensor *xa = x;                                          /* (N, d_in) adapter input */
    if (drop && drop->p > 0.0f) {
        Tensor *mask = tape_const(t, x->ndim, x->shape);     /* (N, d_in) */
        lora_dropout_mask(mask->data, (int)tensor_rows(x), din, drop);
        xa = op_mul(t, x, mask);
    }
    /* Scaling the rank-r intermediate instead of the (N, d_out) output: s B(Ax) = B(s Ax)
     * in exact arithmetic, and the small tensor is cheaper to scale. */
    Tensor *u = op_scale(t, op_linear(t, xa, a), scale);    /* (N, r) */
    return op_add(t, y, op_linear(t, u, b));                 /* (N, d_out) */
}

void lora_merge(float *w, const float *a, const float *b, int dout, int din, int r,
                float scale) {
    /* w (dout, din) = scale * b (dout, r) @ a (r, din) + 1 * w */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, dout, din, r, scale, b, r, a, din,
                1.0f, w, din);
}

bool lora_is_adapter(const char *name) {
    return strstr(name, ".lora_A.") != NULL || strstr(name, ".lora_B.") != NULL;
}

bool lora_base_trainable(const char *name, const LoraSpec *s) {
    if (s->train_router && (strstr(name, "block_sparse_moe.gate.") || strstr(name, "noise_gate")))
        return true;
    if (s->train_experts && (strstr(name, ".experts.") || strstr(name, ".mlp.") ||
                             strstr(name, "shared_experts")))
        return true;
    return false;
}
