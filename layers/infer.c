/* infer.c: KV-cache inference. See infer.h. */
#include "layers/infer.h"

#include "autograd/blas.h"

#include <limits.h>
#include <math.h>
#include <string.h>

void infer_init(InferCache *c, const Model *m, int max_T) {
    ASSERT(max_T >= 1 && m->s.W >= 0, "infer_init: max_T %d, window %d", max_T, m->s.W);
    memset(c, 0, sizeof *c);
    c->L = m->s.L;
    c->W = m->s.W;
    c->cap = c->W > 0 ? c->W : max_T;
    c->KD = m->s.Hkv * m->s.D;
    size_t n = (size_t)c->L * c->cap * c->KD;
    c->k = moe_malloc(sizeof(float) * n);
    c->v = moe_malloc(sizeof(float) * n);
    c->att = moe_malloc(sizeof(float) * (size_t)c->cap);
    tape_init(&c->tape, 0);
}

void infer_free(InferCache *c) {
    if (!c) return;
    moe_free(c->k);
    moe_free(c->v);
    moe_free(c->att);
    if (c->cap) tape_free(&c->tape);
    memset(c, 0, sizeof *c);
}

void infer_reset(InferCache *c) { c->pos = 0; }

/* Row of key/value position j (< pos0 + n) for one layer: a cached position (slot j or
 * j mod W) or one of this step's new rows kn (n, KD). */
static const float *kv_row(const InferCache *c, const float *cache, const float *kn, int pos0,
                           int j) {
    if (j >= pos0) return kn + (size_t)(j - pos0) * c->KD;
    return cache + (size_t)(c->W > 0 ? j % c->W : j) * c->KD;
}

/* out (n, H*D) for queries q (n, H*D) at positions pos0.. of one layer, against the cached
 * positions (kc, vc) and this step's own keys/values kn, vn (n, KD): softmax(q k^T /
 * sqrt(D)) v over the keys j with first <= j <= p (first = p - W + 1 with a window, else
 * 0), query head h reading kv head h/(H/Hkv). */
static void attend(InferCache *c, const ModelShape *s, const float *q, const float *kc,
                   const float *vc, const float *kn, const float *vn, int pos0, int n,
                   float *out) {
    const int H = s->H, D = s->D, G = s->H / s->Hkv, W = c->W;
    const float scale = 1.0f / sqrtf((float)D);
    for (int i = 0; i < n; i++) {
        const int p = pos0 + i, first = W > 0 && p >= W ? p - W + 1 : 0;
        const int nt = p - first + 1;   /* keys visible to this query */
        for (int h = 0; h < H; h++) {
            const float *qh = q + (size_t)i * H * D + (size_t)h * D;
            const int kvh = h / G;
            float mx = -INFINITY;
            for (int t = 0; t < nt; t++) {
                const float *kt = kv_row(c, kc, kn, pos0, first + t) + (size_t)kvh * D;
                float dot = 0.0f;
                for (int d = 0; d < D; d++) dot += qh[d] * kt[d];
                c->att[t] = dot * scale;
                mx = fmaxf(mx, c->att[t]);
            }
            double sum = 0.0;
            for (int t = 0; t < nt; t++) {
                c->att[t] = expf(c->att[t] - mx);
                sum += (double)c->att[t];
            }
            const float inv = (float)(1.0 / sum);
            float *oh = out + (size_t)i * H * D + (size_t)h * D;
            memset(oh, 0, sizeof(float) * (size_t)D);
            for (int t = 0; t < nt; t++) {
                const float pt = c->att[t] * inv;
                const float *vt = kv_row(c, vc, vn, pos0, first + t) + (size_t)kvh * D;
                for (int d = 0; d < D; d++) oh[d] += pt * vt[d];
            }
        }
    }
}

/* Store this step's rows kn (n, KD) at positions pos0 .. pos0+n-1 of one layer's cache;
 * with a ring only the last W of them (earlier ones are out of every later window). */
static void cache_store(const InferCache *c, float *cache, const float *kn, int pos0, int n) {
    const int start = c->W > 0 && n > c->W ? pos0 + n - c->W : pos0;
    for (int j = start; j < pos0 + n; j++)
        memcpy(cache + (size_t)(c->W > 0 ? j % c->W : j) * c->KD,
               kn + (size_t)(j - pos0) * c->KD, sizeof(float) * (size_t)c->KD);
}

static Tensor *P(Model *m, int idx) { return &m->ps.p[idx].t; }

static void infer_step_run(InferCache *c, Model *m, const int32_t *ids, int n, float *logits) {
    const ModelShape *s = &m->s;
    ASSERT(n >= 1 && n <= INT_MAX - c->pos && (c->W > 0 || c->pos + n <= c->cap),
           "infer_step: %d + %d positions exceed the cache (%d)", c->pos, n, c->cap);
    ASSERT(c->W == s->W, "infer_step: cache made for window %d, model has %d", c->W, s->W);
    ASSERT(m->e_local == s->E, "infer_step: every expert must be local");
    ASSERT(s->router != MOE_ROUTER_EXPERT_CHOICE,
           "infer_step: expert-choice routing is not causal (callers refuse it)");
    for (int i = 0; m->doc_mask && i < n; i++)   /* documents: layers/infer.h */
        ASSERT(ids[i] != m->eot || c->pos + i == 0, "infer_step: end-of-text token at "
               "position %d of a document-masked model (infer_reset first)", c->pos + i);
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
        float *kc = c->k + (size_t)l * c->cap * KD, *vc = c->v + (size_t)l * c->cap * KD;
        Tensor *o = tape_tensor2(t, n, s->H * s->D, false);
        attend(c, s, q->data, kc, vc, k->data, v->data, pos0, n, o->data);
        /* after attention: with a ring, this step's rows may overwrite slots it still read */
        cache_store(c, kc, k->data, pos0, n);
        cache_store(c, vc, v->data, pos0, n);
        x = op_add(t, x, model_proj(m, t, l, LORA_O, o, NULL));
        Tensor *hn = op_rmsnorm(t, x, P(m, lp->ffn_norm), s->norm_eps);
        MoeLayerArgs a = {
            .layer = l, .L = s->L, .E = s->E, .K = s->K, .F = s->F,
            .e_first = m->e_first, .e_local = m->e_local,
            .capacity_factor = 0.0f,     /* inference is dropless */
            .noise = false,
            /* the trained router; expert choice never gets here (it needs a whole batch,
               `moetrain sample` refuses it) */
            .router = (MoeRouter)s->router, .top_p = s->top_p, .max_experts = s->max_experts,
            .score = (MoeScore)s->score, .route_scale = s->route_scale,
            .n_groups = s->n_groups, .topk_groups = s->topk_groups,
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
    /* Fewer than 32 tokens make matrix-vector sized products: splitting those over threads
     * costs more than it saves, so they run on one thread (the threshold tuned for
     * decoding). */
    int old = n < 32 ? blas_set_threads(1) : -1;
    infer_step_run(c, m, ids, n, logits);
    if (old > 0) blas_set_threads(old);
}
