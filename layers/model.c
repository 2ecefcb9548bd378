/* model.c: parameters and forward pass of the Mixtral-style model. See model.h. */
#include "layers/model.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* a x b for a shape: tensor dimensions are ints. config_validate (configs/) refuses
 * configs whose products do not fit, so reaching the assert is a programmer error (a shape
 * built elsewhere); the product itself is taken in 64 bits, never overflowing. */
static int shape_mul(int a, int b, const char *what) {
    const int64_t p = (int64_t)a * b;
    ASSERT(p <= INT_MAX, "%s = %d x %d = %lld does not fit an int", what, a, b, (long long)p);
    return (int)p;
}

static int add2(ParamSet *ps, const char *name, int block, int a, int b, bool decay,
                ParamInit init, float std, int layer) {
    int shape[2] = {a, b};
    return params_add(ps, name, block, 2, shape, decay, init, std, layer);
}

void model_init(Model *m, const ModelShape *s, int e_first, int e_local, uint64_t seed) {
    model_init_lora(m, s, NULL, e_first, e_local, seed);
}

/* The input and output widths of target t (layers/lora.h): W is (dout, din). */
static void lora_dims(const ModelShape *s, int t, int *din, int *dout) {
    const int HD = shape_mul(s->H, s->D, "n_heads x head_dim");
    const int KD = shape_mul(s->Hkv, s->D, "n_kv_heads x head_dim");
    const int in[LORA_N_TARGETS] = {s->C, s->C, s->C, HD, s->C, s->F, s->C, s->C};
    const int out[LORA_N_TARGETS] = {HD, KD, KD, s->C, s->F, s->C, s->F, s->E};
    *din = in[t];
    *dout = out[t];
}

/* Module path of target t's weight in layer l, before ".lora_A.weight": attention
 * "self_attn.q_proj"; experts "block_sparse_moe.experts.{e}.w1" (per expert, a stacked
 * EXPERT tensor) or "block_sparse_moe.experts.w1" (shared); router "block_sparse_moe.gate". */
static void lora_module(const LoraSpec *lo, int l, int t, char *out, size_t cap) {
    const char *nm = lora_target_names[t];
    if (t < LORA_N_ATTN) snprintf(out, cap, "model.layers.%d.self_attn.%s", l, nm);
    else if (t == LORA_GATE) snprintf(out, cap, "model.layers.%d.block_sparse_moe.gate", l);
    else snprintf(out, cap, "model.layers.%d.block_sparse_moe.experts.%s%s", l,
                  lo->expert_shared ? "" : "{e}.", nm);
}

/* Adapters of every layer's targeted projections, declared after the base tensors, and
 * the base frozen except what the spec keeps trainable (layers/lora.h). Per-expert adapters
 * are stacked EXPERT tensors (E_local, r, d_in) and (E_local, d_out, r), initialised per
 * global expert index like the experts (params_init_values); all others DENSE. */
static void add_lora(Model *m, const LoraSpec *lo) {
    ParamSet *ps = &m->ps;
    const ModelShape *s = &m->s;
    const int n_base = ps->count;
    ASSERT(s->E > 0 || !(lo->targets & (LORA_EXPERT_MASK | (1u << LORA_GATE))),
           "expert and router adapters need experts");
    char mod[128], name[160];
    for (int l = 0; l < s->L; l++)
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            if (!(lo->targets & (1u << t))) continue;
            int din, dout;
            lora_dims(s, t, &din, &dout);
            lora_module(lo, l, t, mod, sizeof mod);
            const bool stacked = (LORA_EXPERT_MASK & (1u << t)) && !lo->expert_shared;
            const int blk = stacked ? PBLOCK_EXPERT : PBLOCK_DENSE;
            /* Kaiming-uniform bound 1/sqrt(d_in) (layers/lora.h) */
            snprintf(name, sizeof name, "%s.lora_A.weight", mod);
            const int sa[3] = {m->e_local, lo->rank, din}, sb[3] = {m->e_local, dout, lo->rank};
            m->layer[l].lora_a[t] = params_add(ps, name, blk, stacked ? 3 : 2, sa + !stacked,
                                               true, INIT_UNIFORM, 1.0f / sqrtf((float)din), l);
            snprintf(name, sizeof name, "%s.lora_B.weight", mod);
            m->layer[l].lora_b[t] = params_add(ps, name, blk, stacked ? 3 : 2, sb + !stacked,
                                               true, INIT_ZEROS, 0, l);
        }
    for (int i = 0; i < n_base; i++)
        params_set_trainable(ps, i, lora_base_trainable(ps->p[i].name, lo));
    m->lora = *lo;
}

void model_init_lora(Model *m, const ModelShape *s, const LoraSpec *lora, int e_first,
                     int e_local, uint64_t seed) {
    memset(m, 0, sizeof *m);
    m->s = *s;
    m->e_first = e_first;
    m->e_local = e_local;
    ASSERT(s->H % s->Hkv == 0, "n_heads %d not a multiple of n_kv_heads %d", s->H, s->Hkv);
    ASSERT(s->E == 0 || (e_local >= 1 && e_first + e_local <= s->E), "expert range");
    ASSERT(s->Fs >= 0 && (s->Fs == 0 || s->E > 0) && s->W >= 0, "shared width %d (E %d), "
           "window %d", s->Fs, s->E, s->W);
    params_init(&m->ps);
    ParamSet *ps = &m->ps;
    const int C = s->C, F = s->F;
    const int HD = shape_mul(s->H, s->D, "n_heads x head_dim");
    const int KD = shape_mul(s->Hkv, s->D, "n_kv_heads x head_dim");
    const float std = s->init_std;
    /* Projections that write into the residual stream are scaled by 1/sqrt(2L) so the
     * residual variance does not grow with depth (GPT-2, Radford et al. 2019, sec. 2.3). */
    const float std_out = std / sqrtf(2.0f * (float)s->L);
    char name[128];

    m->embed = add2(ps, "model.embed_tokens.weight", PBLOCK_DENSE, s->V, C, true, INIT_NORMAL,
                    std, -1);
    m->layer = moe_calloc(sizeof(LayerParams) * (size_t)s->L);
    for (int l = 0; l < s->L; l++) {
        LayerParams *lp = &m->layer[l];
        for (int t = 0; t < LORA_N_TARGETS; t++) lp->lora_a[t] = lp->lora_b[t] = -1;
        int shape1[1] = {C};
#define NAME(fmt) (snprintf(name, sizeof name, "model.layers.%d." fmt, l), name)
        lp->attn_norm = params_add(ps, NAME("input_layernorm.weight"), PBLOCK_DENSE, 1, shape1,
                                   false, INIT_ONES, 0, l);
        lp->wq = add2(ps, NAME("self_attn.q_proj.weight"), PBLOCK_DENSE, HD, C, true,
                      INIT_NORMAL, std, l);
        lp->wk = add2(ps, NAME("self_attn.k_proj.weight"), PBLOCK_DENSE, KD, C, true,
                      INIT_NORMAL, std, l);
        lp->wv = add2(ps, NAME("self_attn.v_proj.weight"), PBLOCK_DENSE, KD, C, true,
                      INIT_NORMAL, std, l);
        lp->wo = add2(ps, NAME("self_attn.o_proj.weight"), PBLOCK_DENSE, C, HD, true,
                      INIT_NORMAL, std_out, l);
        lp->ffn_norm = params_add(ps, NAME("post_attention_layernorm.weight"), PBLOCK_DENSE, 1,
                                  shape1, false, INIT_ONES, 0, l);
        if (s->E > 0) {
            lp->router = add2(ps, NAME("block_sparse_moe.gate.weight"), PBLOCK_DENSE, s->E, C,
                              true, INIT_NORMAL, std, l);
            /* Shazeer et al. 2017 (appendix A) start the noise weights at zero: the noise
             * std softplus(0) = ln 2 then spreads early routing across experts. */
            lp->noise = add2(ps, NAME("block_sparse_moe.noise_gate.weight"), PBLOCK_DENSE,
                             s->E, C, true, INIT_ZEROS, 0, l);
            int s13[3] = {e_local, F, C}, s2[3] = {e_local, C, F};
            lp->w1 = params_add(ps, NAME("block_sparse_moe.experts.{e}.w1.weight"),
                                PBLOCK_EXPERT, 3, s13, true, INIT_NORMAL, std, l);
            lp->w3 = params_add(ps, NAME("block_sparse_moe.experts.{e}.w3.weight"),
                                PBLOCK_EXPERT, 3, s13, true, INIT_NORMAL, std, l);
            lp->w2 = params_add(ps, NAME("block_sparse_moe.experts.{e}.w2.weight"),
                                PBLOCK_EXPERT, 3, s2, true, INIT_NORMAL, std_out, l);
            lp->sw1 = lp->sw3 = lp->sw2 = -1;
            if (s->Fs > 0) {
                const int Fs = s->Fs;
                lp->sw1 = add2(ps, NAME("block_sparse_moe.shared_experts.gate_proj.weight"),
                               PBLOCK_DENSE, Fs, C, true, INIT_NORMAL, std, l);
                lp->sw3 = add2(ps, NAME("block_sparse_moe.shared_experts.up_proj.weight"),
                               PBLOCK_DENSE, Fs, C, true, INIT_NORMAL, std, l);
                lp->sw2 = add2(ps, NAME("block_sparse_moe.shared_experts.down_proj.weight"),
                               PBLOCK_DENSE, C, Fs, true, INIT_NORMAL, std_out, l);
            }
        } else {
            lp->router = lp->noise = -1;
            lp->sw1 = lp->sw3 = lp->sw2 = -1;
            lp->w1 = add2(ps, NAME("mlp.gate_proj.weight"), PBLOCK_DENSE, F, C, true,
                          INIT_NORMAL, std, l);
            lp->w3 = add2(ps, NAME("mlp.up_proj.weight"), PBLOCK_DENSE, F, C, true,
                          INIT_NORMAL, std, l);
            lp->w2 = add2(ps, NAME("mlp.down_proj.weight"), PBLOCK_DENSE, C, F, true,
                          INIT_NORMAL, std_out, l);
        }
#undef NAME
    }
    int shape1[1] = {C};
    m->final_norm = params_add(ps, "model.norm.weight", PBLOCK_DENSE, 1, shape1, false,
                               INIT_ONES, 0, -1);
    m->head = add2(ps, "lm_head.weight", PBLOCK_DENSE, s->V, C, true, INIT_NORMAL, std, -1);
    if (lora && lora->rank > 0) add_lora(m, lora);
    params_finalise(ps);
    params_init_values(ps, seed, e_first);
    moe_stats_init(&m->stats, s->L, s->E);
    if (s->E > 0) m->router_bias = moe_calloc(sizeof(float) * (size_t)s->L * (size_t)s->E);
    moe_stats_init(&m->recompute_stats, s->L, s->E);
}

void model_free(Model *m) {
    params_free(&m->ps);
    moe_free(m->layer);
    moe_stats_free(&m->stats);
    moe_free(m->router_bias);
    moe_stats_free(&m->recompute_stats);
    memset(m, 0, sizeof *m);
}

const char *const model_region_names[REGION_COUNT] = {
    "embedding, norms, residuals", "attention (q/k/v/o, RoPE, softmax)",
    "router + dispatch (incl. all-to-all)", "experts (SwiGLU GEMMs)", "LM head + loss"};

static Tensor *P(Model *m, int idx) { return &m->ps.p[idx].t; }

Tensor *model_proj(Model *m, Tape *t, int l, int target, Tensor *x, const StepCtx *ctx) {
    const LayerParams *lp = &m->layer[l];
    const int w = target == LORA_Q ? lp->wq : target == LORA_K ? lp->wk
                : target == LORA_V ? lp->wv : lp->wo;
    if (lp->lora_a[target] < 0) return op_linear(t, x, P(m, w));
    const LoraSpec *lo = &m->lora;
    LoraDrop d = {.p = ctx && ctx->train ? lo->dropout : 0.0f, .seed = ctx ? ctx->seed : 0,
                  .step = ctx ? ctx->step : 0, .layer = l, .target = target,
                  .token_base = ctx ? ctx->token_base : 0};
    return lora_linear(t, x, P(m, w), P(m, lp->lora_a[target]), P(m, lp->lora_b[target]),
                       lo->alpha / (float)lo->rank, &d);
}

/* The shared experts of model_ffn, run by moe_forward as its overlap work (moe.h). */
typedef struct SharedFfn {
    Model *m;
    const LayerParams *lp;
    Tensor *hn;                /* (N, C) */
    Tensor *ys;                /* (N, C) output, set by shared_ffn */
} SharedFfn;

static void shared_ffn(Tape *t, void *ctx) {
    SharedFfn *s = ctx;
    Model *m = s->m;
    const LayerParams *lp = s->lp;
    /* Shared experts: every token, no gate (DeepSeekMoE sec. 3.2); replicated weights, so
     * no exchange and their gradients are all-reduced with the dense block. */
    const int region = t->region;
    tape_region(t, REGION_EXPERTS);
    Tensor *s1 = op_linear(t, s->hn, P(m, lp->sw1));                 /* (N, Fs) */
    Tensor *s3 = op_linear(t, s->hn, P(m, lp->sw3));                 /* (N, Fs) */
    s->ys = op_swiglu_linear(t, s1, s3, P(m, lp->sw2));              /* (N, C) */
    tape_region(t, region);
}

Tensor *model_ffn(Model *m, Tape *t, int l, Tensor *hn, const MoeLayerArgs *a, Tensor **aux,
                  Tensor **z) {
    const LayerParams *lp = &m->layer[l];
    Tensor *res = a->residual;
    if (m->s.E > 0) {
        MoeLayerArgs ab = *a;   /* training, evaluation and KV-cache decoding all pass here */
        ab.bias = m->use_router_bias ? m->router_bias + (size_t)l * m->s.E : NULL;
        MoeLora lo = {.scale = m->lora.rank > 0 ? m->lora.alpha / (float)m->lora.rank : 0.0f,
                      .gate_drop = {.p = a->lora_dropout, .seed = a->seed, .step = a->step,
                                    .layer = l, .target = LORA_GATE,
                                    .token_base = a->token_base}};
        bool any = false;
        for (int g = LORA_W1; g < LORA_N_TARGETS; g++) {
            if (lp->lora_a[g] < 0) continue;
            Tensor *A = P(m, lp->lora_a[g]), *B = P(m, lp->lora_b[g]);
            if (g == LORA_GATE) lo.gate_a = A, lo.gate_b = B;
            else lo.a[g - LORA_W1] = A, lo.b[g - LORA_W1] = B;
            any = true;
        }
        ab.lora = any ? &lo : NULL;
        SharedFfn sh = {m, lp, hn, NULL};
        if (m->s.Fs > 0) {
            ab.residual = NULL;   /* added after the shared experts' output */
            ab.overlap = shared_ffn;   /* while the routed experts' rows travel */
            ab.overlap_ctx = &sh;
        }
        Tensor *y = moe_forward(t, hn, P(m, lp->router), P(m, lp->noise), P(m, lp->w1),
                                P(m, lp->w3), P(m, lp->w2), &ab, m->exchange, &m->stats, aux, z);
        if (m->s.Fs == 0) return y;   /* the combine added the residual */
        ASSERT(sh.ys != NULL, "layer %d: moe_forward did not run the shared experts", l);
        tape_region(t, REGION_OTHER);
        y = op_add(t, y, sh.ys);
        return res ? op_add(t, res, y) : y;
    }
    tape_region(t, REGION_EXPERTS);
    Tensor *h1 = op_linear(t, hn, P(m, lp->w1));
    Tensor *h3 = op_linear(t, hn, P(m, lp->w3));
    Tensor *y = op_swiglu_linear(t, h1, h3, P(m, lp->w2));   /* act recomputed in backward */
    tape_region(t, REGION_OTHER);
    return res ? op_add(t, res, y) : y;
}

/* One block's arguments; with recomputation they are read again in backward, so they are
 * copied (with the StepCtx) into the tape's arena. */
typedef struct LayerCtx {
    Model *m;
    int l, B, T;
    StepCtx ctx;
    bool loss;        /* targets given: the layer's aux and z loss terms are computed */
    const int32_t *start;   /* (B, T) document layout in the tape's arena, or NULL */
} LayerCtx;

/* Transformer block l (a SegmentFn, autograd/tensor.h): x (N, C) -> out[0] (N, C) =
 * x + attn(rmsnorm(x)), then + ffn(rmsnorm(.)); out[1], out[2]: the layer's aux and z loss
 * terms (1) or NULL. A recomputation routes into a scratch MoeStats, so the statistics
 * count each forward once. */
static void model_layer(Tape *t, void *arg, bool recompute, Tensor *x, Tensor **out) {
    const LayerCtx *lc = arg;
    Model *m = lc->m;
    const ModelShape *s = &m->s;
    const StepCtx *ctx = &lc->ctx;
    const int l = lc->l, B = lc->B, T = lc->T;
    const LayerParams *lp = &m->layer[l];
    const float ls = ctx->loss_scale;
    /* attention sub-block */
    Tensor *xn = op_rmsnorm(t, x, P(m, lp->attn_norm), s->norm_eps);
    tape_region(t, REGION_ATTENTION);
    Tensor *q = model_proj(m, t, l, LORA_Q, xn, ctx);             /* (N, H*D) */
    Tensor *k = model_proj(m, t, l, LORA_K, xn, ctx);             /* (N, Hkv*D) */
    Tensor *v = model_proj(m, t, l, LORA_V, xn, ctx);             /* (N, Hkv*D) */
    /* in place: the projections' backward reads their inputs, never their outputs */
    if (lc->start) {   /* packed documents: positions restart, attention stays inside */
        q = op_rope_docs(t, q, B, T, s->H, s->D, s->rope_theta, lc->start, true);
        k = op_rope_docs(t, k, B, T, s->Hkv, s->D, s->rope_theta, lc->start, true);
    } else {
        q = op_rope_inplace(t, q, B, T, s->H, s->D, s->rope_theta, ctx->pos0);
        k = op_rope_inplace(t, k, B, T, s->Hkv, s->D, s->rope_theta, ctx->pos0);
    }
    Tensor *o = op_attention_docs(t, q, k, v, B, T, s->H, s->Hkv, s->D, s->W,
                                  lc->start);                    /* (N, H*D) */
    if (lp->lora_a[LORA_O] < 0) {   /* x + o Wo^T; the product is not kept */
        x = op_linear_residual(t, x, o, P(m, lp->wo));
        tape_region(t, REGION_OTHER);
    } else {
        Tensor *ao = model_proj(m, t, l, LORA_O, o, ctx);
        tape_region(t, REGION_OTHER);
        x = op_add(t, x, ao);
    }
    /* feed-forward sub-block */
    Tensor *hn = op_rmsnorm(t, x, P(m, lp->ffn_norm), s->norm_eps);
    MoeLayerArgs a = {
        .layer = l, .L = s->L, .E = s->E, .K = s->K, .F = s->F,
        .e_first = m->e_first, .e_local = m->e_local,
        .capacity_factor = s->capacity_factor,
        .noise = ctx->train && s->router_noise,
        .seed = ctx->seed, .step = ctx->step, .token_base = ctx->token_base,
        .aux_scale = lc->loss ? s->aux_coef * ls / (float)s->L : 0.0f,
        .z_scale = lc->loss ? s->z_coef * ls / (float)s->L : 0.0f,
        .router = (MoeRouter)s->router, .top_p = s->top_p, .max_experts = s->max_experts,
        .entropy_scale = lc->loss ? s->entropy_coef * ls / (float)s->L : 0.0f,
        .score = (MoeScore)s->score, .route_scale = s->route_scale,
        .n_groups = s->n_groups, .topk_groups = s->topk_groups,
        .aux_scope = (MoeAuxScope)s->aux_scope, .T = T,
        /* the real statistics' row, also while a recomputation routes into scratch ones */
        .step_count = s->E > 0 ? m->stats.count + (size_t)l * s->E : NULL,
        .residual = x,   /* the block's output x + ffn(hn) is formed inside model_ffn */
        .lora_dropout = ctx->train ? m->lora.dropout : 0.0f,
    };
    Tensor *aux = NULL, *z = NULL;
    MoeStats keep = m->stats;
    if (recompute) m->stats = m->recompute_stats;
    Tensor *y = model_ffn(m, t, l, hn, &a, &aux, &z);
    if (recompute) {
        m->recompute_stats = m->stats;
        m->stats = keep;
    }
    tape_region(t, REGION_OTHER);
    out[0] = y;
    out[1] = aux;
    out[2] = z;
}

void model_doc_starts(const int32_t *inputs, int B, int T, int32_t eot, int32_t *start) {
    for (int b = 0; b < B; b++) {
        const int32_t *in = inputs + (size_t)b * T;
        int32_t *st = start + (size_t)b * T;
        st[0] = 0;
        for (int t = 1; t < T; t++) st[t] = in[t] == eot ? t : st[t - 1];
    }
}

void model_forward(Model *m, Tape *t, const int32_t *inputs, const int32_t *targets, int B,
                   int T, const StepCtx *ctx, ModelOut *out) {
    const ModelShape *s = &m->s;
    const int N = shape_mul(B, T, "tokens B x T");
    memset(out, 0, sizeof *out);
    params_bf16_refresh(&m->ps);   /* bf16 precision: the weights' copies, once per pass */
    int32_t *start = NULL;   /* (B, T): lives until the tape's next reset, as backward needs */
    if (m->doc_mask) {
        ASSERT(ctx->pos0 == 0, "model_forward: documents with pos0 %d", ctx->pos0);
        start = arena_ints(&t->arena, (size_t)N);
        model_doc_starts(inputs, B, T, m->eot, start);
    }

    Tensor *x = op_embedding(t, P(m, m->embed), inputs, N);          /* (N, C) */
    Tensor *aux = NULL, *z = NULL;
    const float ls = ctx->loss_scale;
    for (int l = 0; l < s->L; l++) {
        LayerCtx lc = {m, l, B, T, *ctx, targets != NULL, start};
        Tensor *o[3];   /* block output (N, C), aux and z loss terms (1) or NULL */
        tape_mark(t, l);   /* backward past here: layer l's gradients are final */
        if (ctx->recompute) {
            LayerCtx *kept = arena_alloc(&t->arena, sizeof lc);
            *kept = lc;
            tape_checkpoint(t, model_layer, kept, x, 3, o);
        } else {
            model_layer(t, &lc, false, x, o);
        }
        x = o[0];
        if (o[1]) aux = aux ? op_add(t, aux, o[1]) : o[1];
        if (o[2]) z = z ? op_add(t, z, o[2]) : o[2];
    }
    if (s->E > 0) m->stats.calls++;
    Tensor *xf = op_rmsnorm(t, x, P(m, m->final_norm), s->norm_eps);
    tape_region(t, REGION_HEAD);
    if (!targets) {
        out->logits = op_linear(t, xf, P(m, m->head));              /* (N, V) */
        tape_region(t, REGION_OTHER);
        return;
    }
    /* fused head + loss: logits are kept only when not training (out->logits NULL then) */
    Tensor *lm = ctx->loss_chunk > 0
                     ? op_linear_cross_entropy_chunked(t, xf, P(m, m->head), targets, ls,
                                                       ctx->lm_denom, ctx->loss_chunk)
                     : op_linear_cross_entropy(t, xf, P(m, m->head), targets, ls,
                                               ctx->lm_denom, &out->logits);
    Tensor *loss = lm;
    out->lm_loss = (double)lm->data[0] / (double)ls;
    if (aux) {
        out->aux_loss = (double)aux->data[0] / (double)ls;
        loss = op_add(t, loss, aux);
    }
    if (z) {
        out->z_loss = (double)z->data[0] / (double)ls;
        loss = op_add(t, loss, z);
    }
    out->loss = loss;
    tape_region(t, REGION_OTHER);
}

void model_grad_final_at(const Model *m, int *final_at) {
    const ParamSet *ps = &m->ps;
    bool seen_layer = false;   /* layer -1 tensors declared after the layers are read after */
    for (int i = 0; i < ps->count; i++) {
        const int l = ps->p[i].layer;
        if (l >= 0) seen_layer = true;
        final_at[i] = l >= 0 ? l : (seen_layer ? m->s.L - 1 : -1);
    }
}

double model_active_params(const ModelShape *s) {
    double C = s->C, HD = (double)s->H * s->D, KD = (double)s->Hkv * s->D;
    double attn = C * HD * 2 + C * KD * 2;
    double ffn = s->E > 0 ? (double)s->K * 3.0 * C * s->F + 2.0 * s->E * C : 3.0 * C * s->F;
    ffn += 3.0 * C * s->Fs;   /* shared experts: every token */
    return s->L * (attn + ffn) + (double)s->V * C;
}

double model_flops_per_token(const ModelShape *s, int T) {
    const int Tk = s->W > 0 && s->W < T ? s->W : T;   /* keys a query attends, at most */
    return 6.0 * model_active_params(s) + 12.0 * s->L * (double)Tk * s->H * s->D;
}

double model_flops_per_token_lora(const ModelShape *m, const LoraSpec *s, int T) {
    if (s->rank == 0) return model_flops_per_token(m, T);
    const double C = m->C, HD = (double)m->H * m->D, KD = (double)m->Hkv * m->D;
    /* per token: the attention and gate adapters once, the expert ones for each of the K
     * experts it reaches (per-expert or shared alike) */
    const double din[LORA_N_TARGETS] = {C, C, C, HD, C, m->F, C, C};
    const double dout[LORA_N_TARGETS] = {HD, KD, KD, C, m->F, C, m->F, m->E};
    double adapters = 0.0;
    for (int t = 0; t < LORA_N_TARGETS; t++)
        if (s->targets & (1u << t))
            adapters += (LORA_EXPERT_MASK & (1u << t) ? (double)m->K : 1.0) * (double)s->rank *
                        (din[t] + dout[t]);
    double router = m->E > 0 ? 2.0 * m->E * C : 0.0;
    double experts = (m->E > 0 ? (double)m->K : 1.0) * 3.0 * C * m->F;
    double trained = m->L * ((s->train_router ? router : 0.0) +
                             (s->train_experts ? experts : 0.0) + adapters);
    return 4.0 * model_active_params(m) + 2.0 * trained + 4.0 * m->L * adapters +
           12.0 * m->L * (double)T * m->H * m->D;
}
