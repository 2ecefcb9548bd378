/* infer.c: KV-cache inference. See infer.h. */
#include "layers/infer.h"

#include "autograd/blas.h"

#include <math.h>
#include <string.h>

void infer_init(InferCache *c, const Model *m, int max_T) {
    ASSERT(max_T >= 1, "infer_init: max_T %d", max_T);
    memset(c, 0, sizeof *c);
    c->L = m->s.L;
    c->max_T = max_T;
    c->KD = m->s.Hkv * m->s.D;
    size_t n = (size_t)c->L * max_T * c->KD;
    c->k = moe_malloc(sizeof(float) * n);
    c->v = moe_malloc(sizeof(float) * n);
    c->att = moe_malloc(sizeof(float) * (size_t)max_T);
    tape_init(&c->tape, 0);
}

void infer_free(InferCache *c) {
    if (!c) return;
    moe_free(c->k);
    moe_free(c->v);
    moe_free(c->att);
    if (c->max_T) tape_free(&c->tape);
    memset(c, 0, sizeof *c);
}

void infer_reset(InferCache *c) { c->pos = 0; }

/* out (n, H*D) for queries q (n, H*D) at positions pos0.. against cached k, v (pos0+n, KD)
 * of one layer: causal softmax(q k^T / sqrt(D)) v, query head h reading kv head h/(H/Hkv). */
static void attend(InferCache *c, const ModelShape *s, const float *q, const float *kc,
                   const float *vc, int pos0, int n, float *out) {
    const int H = s->H, D = s->D, G = s->H / s->Hkv, KD = c->KD;
    const float scale = 1.0f / sqrtf((float)D);
    for (int i = 0; i < n; i++) {
        const int T = pos0 + i + 1;   /* keys visible to this query */
        for (int h = 0; h < H; h++) {
            const float *qh = q + (size_t)i * H * D + (size_t)h * D;
            const int kvh = h / G;
            float mx = -INFINITY;
            for (int t = 0; t < T; t++) {
                const float *kt = kc + (size_t)t * KD + (size_t)kvh * D;
                float dot = 0.0f;
                for (int d = 0; d < D; d++) dot += qh[d] * kt[d];
                c->att[t] = dot * scale;
                mx = fmaxf(mx, c->att[t]);
            }
            double sum = 0.0;
            for (int t = 0; t < T; t++) {
                c->att[t] = expf(c->att[t] - mx);
                sum += (double)c->att[t];
            }
            const float inv = (float)(1.0 / sum);
            float *oh = out + (size_t)i * H * D + (size_t)h * D;
            memset(oh, 0, sizeof(float) * (size_t)D);
            for (int t = 0; t < T; t++) {
                const float p = c->att[t] * inv;
                const float *vt = vc + (size_t)t * KD + (size_t)kvh * D;
                for (int d = 0; d < D; d++) oh[d] += p * vt[d];
            }
        }
    }
}

static Tensor *P(Model *m, int idx) { return &m->ps.p[idx].t; }

static void infer_step_run(InferCache *c, Model *m, const int32_t *ids, int n, float *logits) {
    const ModelShape *s = &m->s;
    ASSERT(n >= 1 && c->pos + n <= c->max_T, "infer_step: %d + %d positions exceed the cache (%d)",
           c->pos, n, c->max_T);
    ASSERT(m->e_local == s->E, "infer_step: every expert must be local");
    Tape *t = &c->tape;
    tape_reset(t, false);
    const int pos0 = c->pos, KD = c->KD;
    Tensor *x = op_embedding(t, P(m, m->embed), ids, n);                 /* (n, C) */
    Tensor *aux = NULL, *z = NULL;
    for (int l = 0; l < s->L; l++) {
        const LayerParams *lp = &m->layer[l];
        Tensor *xn = op_rmsnorm(t, x, P(m, lp->attn_norm), s->norm_eps);
        Tensor *q = model_proj(m, t, l, LORA_Q, xn, NULL);                /* (n, H*D) */
        Tensor *k = model_proj(m, t, l, LORA_K, xn, NULL);                /* (n, KD) */
        Tensor *v = model_proj(m, t, l, LORA_V, xn, NULL);                /* (n, KD) */
        q = op_rope(t, q, 1, n, s->H, s->D, s->rope_theta, pos0);
        k = op_rope(t, k, 1, n, s->Hkv, s->D, s->rope_theta, pos0);
        float *kc = c->k + (size_t)l * c->max_T * KD, *vc = c->v + (size_t)l * c->max_T * KD;
        memcpy(kc + (size_t)pos0 * KD, k->data, sizeof(float) * (size_t)n * KD);
        memcpy(vc + (size_t)pos0 * KD, v->data, sizeof(float) * (size_t)n * KD);
        Tensor *o = tape_tensor2(t, n, s->H * s->D, false);
        attend(c, s, q->data, kc, vc, pos0, n, o->data);
        x = op_add(t, x, model_proj(m, t, l, LORA_O, o, NULL));
        Tensor *hn = op_rmsnorm(t, x, P(m, lp->ffn_norm), s->norm_eps);
        MoeLayerArgs a = {
            .layer = l, .L = s->L, .E = s->E, .K = s->K, .F = s->F,
            .e_first = m->e_first, .e_local = m->e_local,
            .capacity_factor = 0.0f,     /* inference is dropless */
            .noise = false,
        };
        Tensor *y = model_ffn(m, t, l, hn, &a, &aux, &z);
        x = op_add(t, x, y);
    }
    c->pos += n;
    if (!logits) return;
    Tensor *xf = op_rmsnorm(t, x, P(m, m->final_norm), s->norm_eps);
    Tensor *lg = op_linear(t, xf, P(m, m->head));                       /* (n, V) */
    memcpy(logits, lg->data, sizeof(float) * (size_t)n * s->V);
}

void infer_step(InferCache *c, Model *m, const int32_t *ids, int n, float *logits) {
    /* A few tokens make matrix-vector sized products: splitting those over threads costs
     * more than it saves (measured 139 -> 347 tokens/s decoding mixtral_tiny on 2 cores). */
    int old = n < 32 ? blas_set_threads(1) : -1;
    infer_step_run(c, m, ids, n, logits);
    if (old > 0) blas_set_threads(old);
}
