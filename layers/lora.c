/* lora.c: LoRA adapters. See lora.h for the formula and references. */
#include "layers/lora.h"
#include "autograd/gemm.h"


#include <string.h>

const char *const lora_target_names[LORA_N_TARGETS] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                       "w1", "w2", "w3", "gate"};

/* Salt for the dropout keys: the router noise uses the same counter RNG keyed by (seed,
 * step, layer, token), so the adapters' masks start from a different seed word. */
#define LORA_DROP_SALT 0x4c6f526144726f70ULL   /* "LoRaDrop" */

int lora_target_index(const char *name) {
    for (int t = 0; t < LORA_N_TARGETS; t++)
        if (!strcmp(name, lora_target_names[t])) return t;
    return -1;
}

bool lora_trains_expert_block(const LoraSpec *s) {
    return s->rank > 0 && (s->train_experts || ((s->targets & LORA_EXPERT_MASK) &&
                                                !s->expert_shared));
}

void lora_dropout_mask(float *mask, int N, int din, const LoraDrop *d) {
    ASSERT(d->p >= 0.0f && d->p < 1.0f, "lora dropout p = %g", (double)d->p);
    const uint64_t seed = moe_hash64((uint64_t)d->seed ^ LORA_DROP_SALT);
    /* attention: the first release's keys (layer * 4 + target); the others above them */
    const uint64_t which = d->target < LORA_N_ATTN
                               ? (uint64_t)d->layer * LORA_N_ATTN + (uint64_t)d->target
                               : (1ULL << 40) + (uint64_t)d->layer * LORA_N_TARGETS +
                                     (uint64_t)d->target;
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

/* Inverts y = x W^T + s (xd A^T) B^T with u = xd A^T, xd = x * mask (or x):
 *   dx += dy W + ((s dy B) A) * mask;  dW += dy^T x;  dB += s dy^T u;  dA += (s dy B)^T xd.
 * du = s dy B (N, r) goes to the scratch carved at forward time; with dropout the xd buffer
 * (read last by dA) is then reused for du A before it is masked into dx. */
static void lora_linear_bw_kernel(TapeOp *op) {
    Tensor *x = op->in[0], *w = op->in[1], *a = op->in[2], *b = op->in[3];
    const int N = op->i[0], din = op->i[1], dout = op->i[2], r = op->i[3];
    const float s = (float)op->f[0];
    const float *dy = op->out->grad, *u = op->aux[0], *mask = op->aux[3];
    float *du = op->aux[1], *xd = op->aux[2];
    const float *xa = xd ? xd : x->data;
    if (x->requires_grad)
        gemm(false, false, N, din, dout, 1.0f, dy, dout,
                    w->data, din, 1.0f, x->grad, din);
    if (w->requires_grad)
        gemm(true, false, dout, din, N, 1.0f, dy, dout,
                    x->data, din, 1.0f, w->grad, din);
    if (b->requires_grad)
        gemm(true, false, dout, r, N, s, dy, dout, u, r,
                    1.0f, b->grad, r);
    if (!a->requires_grad && !x->requires_grad) return;
    gemm(false, false, N, r, dout, s, dy, dout, b->data, r,
                0.0f, du, r);
    if (a->requires_grad)
        gemm(true, false, r, din, N, 1.0f, du, r, xa, din,
                    1.0f, a->grad, din);
    if (!x->requires_grad) return;
    if (!mask) {
        gemm(false, false, N, din, r, 1.0f, du, r, a->data,
                    din, 1.0f, x->grad, din);
        return;
    }
    gemm(false, false, N, din, r, 1.0f, du, r, a->data,
                din, 0.0f, xd, din);
    const size_t n = (size_t)N * din;
    for (size_t j = 0; j < n; j++) x->grad[j] += xd[j] * mask[j];
}

/* The kernel, its products in fp32 when the op was (lora_linear_fp32). */
static void lora_linear_bw(TapeOp *op) {
    if (op->i[4]) gemm_fp32_begin();
    lora_linear_bw_kernel(op);
    if (op->i[4]) gemm_fp32_end();
}

static Tensor *lora_linear_impl(Tape *t, Tensor *x, Tensor *w, Tensor *a, Tensor *b,
                                float scale, const LoraDrop *drop, bool fp32) {
    const int din = tensor_cols(x), dout = w->shape[0], r = a->shape[0];
    ASSERT(w->ndim == 2 && w->shape[1] == din && a->ndim == 2 && a->shape[1] == din &&
           b->ndim == 2 && b->shape[1] == r && b->shape[0] == dout,
           "lora: A (%d, %d), B (%d, %d), W (%d, %d), x cols %d", a->shape[0], a->shape[1],
           b->shape[0], b->shape[1], w->shape[0], w->shape[1], din);
    const size_t rows = tensor_rows(x);
    ASSERT(rows <= (size_t)INT32_MAX, "lora: %zu rows", rows);
    const int N = (int)rows;
    const bool needs = tape_needs_grad(t, x, w, a) || tape_needs_grad(t, b, NULL, NULL);
    int shape[TENSOR_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = dout;
    Tensor *y = tape_tensor(t, x->ndim, shape, needs);                 /* (N, d_out) */
    float *u = arena_floats(&t->arena, (size_t)N * r);                  /* (N, r) */
    float *mask = NULL, *xd = NULL;                                     /* (N, d_in) each */
    if (drop && drop->p > 0.0f) {
        mask = arena_floats(&t->arena, (size_t)N * din);
        xd = arena_floats(&t->arena, (size_t)N * din);
        lora_dropout_mask(mask, N, din, drop);
        for (size_t j = 0; j < (size_t)N * din; j++) xd[j] = x->data[j] * mask[j];
    }
    if (fp32) gemm_fp32_begin();
    if (N > 0) {
        /* y = x W^T; u = xd A^T; y += s u B^T (the adapter is added into the base output:
         * with B = 0 it adds exactly zero, so y keeps the base model's values) */
        gemm(false, true, N, dout, din, 1.0f, x->data, din,
                    w->data, din, 0.0f, y->data, dout);
        gemm(false, true, N, r, din, 1.0f,
                    xd ? xd : x->data, din, a->data, din, 0.0f, u, r);
        gemm(false, true, N, dout, r, scale, u, r, b->data,
                    r, 1.0f, y->data, dout);
    }
    if (fp32) gemm_fp32_end();
    if (needs && N > 0) {
        TapeOp *op = tape_push(t, "lora_linear", lora_linear_bw, y);
        op->in[0] = x;
        op->in[1] = w;
        op->in[2] = a;
        op->in[3] = b;
        op->f[0] = (double)scale;
        op->i[0] = N;
        op->i[1] = din;
        op->i[2] = dout;
        op->i[3] = r;
        op->i[4] = fp32;
        op->aux[0] = u;
        op->aux[1] = arena_floats(&t->arena, (size_t)N * r);   /* du scratch */
        op->aux[2] = xd;
        op->aux[3] = mask;
    }
    return y;
}

Tensor *lora_linear(Tape *t, Tensor *x, Tensor *w, Tensor *a, Tensor *b, float scale,
                    const LoraDrop *drop) {
    return lora_linear_impl(t, x, w, a, b, scale, drop, false);
}

Tensor *lora_linear_fp32(Tape *t, Tensor *x, Tensor *w, Tensor *a, Tensor *b, float scale,
                         const LoraDrop *drop) {
    return lora_linear_impl(t, x, w, a, b, scale, drop, true);
}

void lora_merge(float *w, const float *a, const float *b, int dout, int din, int r,
                float scale) {
    /* w (dout, din) = scale * b (dout, r) @ a (r, din) + 1 * w */
    gemm(false, false, dout, din, r, scale, b, r, a, din,
                1.0f, w, din);
}

void lora_merge_experts(float *w, const float *a, const float *b, int E, int dout, int din,
                        int r, float scale, bool shared) {
    const size_t wst = (size_t)dout * din, ast = shared ? 0 : (size_t)r * din,
                 bst = shared ? 0 : (size_t)dout * r;
    for (int e = 0; e < E; e++)
        lora_merge(w + (size_t)e * wst, a + (size_t)e * ast, b + (size_t)e * bst, dout, din, r,
                   scale);
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
