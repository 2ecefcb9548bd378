/* upcycle.c: sparse upcycling of a dense checkpoint into an MoE model. See upcycle.h for
 * the method, the papers and the weight scaling. */
#include "checkpoints/upcycle.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "checkpoints/ckpt.h"

/* Keys of the counter-based draws (moe_randn_key's second word), so the router draw and the
 * expert noise never share a stream with each other or with model init / router noise. */
#define UPCYCLE_KEY_ROUTER 0x7570632d726f7574ULL   /* "upc-rout" */
#define UPCYCLE_KEY_NOISE  0x7570632d6e6f6973ULL   /* "upc-nois" */

void upcycle_opts_from_config(const Config *c, UpcycleOpts *o) {
    o->granularity = c->init.granularity;
    o->n_shared = c->moe.n_shared_experts;
    o->shared_hidden = c->moe.shared_hidden;
    o->router_init_std = (float)c->init.router_init_std;
    o->expert_noise = (float)c->init.expert_noise;
    o->seed = (uint64_t)c->train.seed;
}

/* Appends ", key: dense -> moe" to list (used for the shape mismatch message). */
static void note_diff(char *list, size_t cap, int *n, const char *key, double dense, double moe) {
    size_t used = strlen(list);
    if (used < cap)
        snprintf(list + used, cap - used, "%s%s: %g in the dense checkpoint, %g in the MoE "
                 "config", *n ? "; " : "", key, dense, moe);
    (*n)++;
}

/* Everything that must agree between the dense checkpoint's shape d and the MoE model's m
 * for granularity G. Fails (-1, err) naming every differing key. */
static int check_shapes(const char *path, const ModelShape *d, const ModelShape *m, int G,
                        MoeErr *err) {
    char list[768] = "";
    int n = 0;
#define SAME(key, fld) if (d->fld != m->fld) note_diff(list, sizeof list, &n, key, \
                                                       (double)d->fld, (double)m->fld)
    SAME("model.vocab_size", V);
    SAME("model.dim", C);
    SAME("model.n_layers", L);
    SAME("model.n_heads", H);
    SAME("model.n_kv_heads", Hkv);
    SAME("model.head_dim", D);
    SAME("model.norm_eps", norm_eps);
    SAME("model.rope_theta", rope_theta);
    SAME("model.sliding_window", W);
#undef SAME
    if (n) {
        moe_errorf(err, "%s: the dense checkpoint does not match the MoE model: %s", path, list);
        return moe_hintf(err, "upcycling keeps attention, embeddings and norms: copy the "
                              "model.* keys of the dense run's config into the MoE config");
    }
    if (m->E < 1) {
        moe_errorf(err, "%s: the MoE model has moe.n_experts = 0", path);
        return moe_hintf(err, "set moe.n_experts (a multiple of the granularity %d)", G);
    }
    if (G < 1 || m->E % G != 0) {
        moe_errorf(err, "%s: moe.n_experts = %d is not a multiple of the granularity %d", path,
                   m->E, G);
        return moe_hintf(err, "each of the n_experts / granularity copies of the dense FFN "
                              "holds all %d slices", G);
    }
    if (m->Fs > 0) {   /* shared experts take the first Fs dense units, the routed the rest */
        const int Fr = d->F - m->Fs;
        if (Fr < G) {
            moe_errorf(err, "%s: the shared experts' total width moe.n_shared_experts x "
                       "moe.shared_hidden = %d leaves %d of the dense FFN's %d hidden units for "
                       "%d routed slice(s)", path, m->Fs, Fr > 0 ? Fr : 0, d->F, G);
            return moe_hintf(err, "the shared experts start as a part of the dense FFN: make "
                                  "their total width smaller than %d", d->F);
        }
        if (Fr % G != 0 || m->F * G != Fr) {
            moe_errorf(err, "%s: moe.hidden = %d, but the dense hidden width %d minus the shared "
                       "width %d leaves %d units for granularity %d", path, m->F, d->F, m->Fs,
                       Fr, G);
            return moe_hintf(err, "the widths must add up: moe.hidden x granularity + "
                                  "n_shared_experts x shared_hidden = %d", d->F);
        }
        return 0;
    }
    if (d->F % G != 0) {
        moe_errorf(err, "%s: the dense FFN's hidden width moe.hidden = %d is not divisible by "
                   "the granularity %d", path, d->F, G);
        return moe_hintf(err, "pick a granularity that divides %d", d->F);
    }
    if (m->F * G != d->F) {
        moe_errorf(err, "%s: moe.hidden = %d in the MoE config, but the dense hidden width %d "
                   "/ granularity %d = %d", path, m->F, d->F, G, d->F / G);
        return moe_hintf(err, "set moe.hidden: %d (each expert is one 1/%d slice of the dense "
                              "FFN)", d->F / G, G);
    }
    return 0;
}

/* Reads the dense checkpoint's config and checks it is dense. *dc freed on failure. */
static int read_dense_config(const char *path, Config *dc, MoeErr *err) {
    memset(dc, 0, sizeof *dc);
    if (ckpt_read_config(path, dc, err)) return -1;
    if (dc->moe.n_experts != 0) {
        moe_errorf(err, "%s: not a dense checkpoint: its config has moe.n_experts = %d", path,
                   dc->moe.n_experts);
        config_free(dc);
        return moe_hintf(err, "upcycle the checkpoint of a dense run (moe.n_experts: 0, e.g. "
                              "configs/dense_tiny.yaml); an MoE checkpoint resumes with "
                              "--resume instead");
    }
    return 0;
}

/* Expert weights of one layer: local expert i (global e = e_first + i, copy e / G, slice
 * s = e % G) from the dense (Fd, C), (Fd, C), (C, Fd) w1, w3, w2, after the first Fs units
 * (the shared experts'); w2 scaled by G (header). */
static void fill_experts(Model *moe, int l, const float *d1, const float *d3, const float *d2,
                         const UpcycleOpts *o) {
    const ModelShape *s = &moe->s;
    const LayerParams *lp = &moe->layer[l];
    const int C = s->C, Fe = s->F, G = o->granularity, Fd = s->Fs + Fe * G;
    const float scale = (float)G;
    const size_t per = (size_t)Fe * (size_t)C;   /* elements of one expert's w1, w3 or w2 */
    d1 += (size_t)s->Fs * C;   /* rows [Fs, Fd) of w1 and w3, columns [Fs, Fd) of w2 */
    d3 += (size_t)s->Fs * C;
    d2 += s->Fs;
    float *w1 = moe->ps.p[lp->w1].t.data, *w3 = moe->ps.p[lp->w3].t.data,
          *w2 = moe->ps.p[lp->w2].t.data;
    for (int i = 0; i < moe->e_local; i++) {
        const int e = moe->e_first + i, sl = e % G;
        float *e1 = w1 + (size_t)i * per, *e3 = w3 + (size_t)i * per, *e2 = w2 + (size_t)i * per;
        /* w1, w3 (Fe, C): rows [sl Fe, (sl+1) Fe) of the routed part, contiguous */
        memcpy(e1, d1 + (size_t)sl * per, per * sizeof(float));
        memcpy(e3, d3 + (size_t)sl * per, per * sizeof(float));
        /* w2 (C, Fe): columns [sl Fe, (sl+1) Fe) of the routed part of the dense (C, Fd) */
        for (int c = 0; c < C; c++)
            for (int j = 0; j < Fe; j++)
                e2[(size_t)c * Fe + j] = scale * d2[(size_t)c * Fd + (size_t)sl * Fe + j];
        if (o->expert_noise > 0.0f) {
            float *t[3] = {e1, e3, e2};
            for (int k = 0; k < 3; k++)
                for (size_t j = 0; j < per; j++)
                    t[k][j] *= 1.0f + o->expert_noise *
                        moe_randn_key(o->seed, UPCYCLE_KEY_NOISE, (uint64_t)l * 3 + (uint64_t)k,
                                      (uint64_t)e * per + j);
        }
    }
}

/* Shared experts of layer l (when Fs > 0): the first Fs hidden units of the dense FFN
 * (width Fd), unscaled and without noise: rows [0, Fs) of w1, w3 (Fd, C), columns [0, Fs)
 * of w2 (C, Fd). */
static void fill_shared(Model *moe, int l, const float *d1, const float *d3, const float *d2,
                        int Fd) {
    const LayerParams *lp = &moe->layer[l];
    const int C = moe->s.C, Fs = moe->s.Fs;
    if (Fs == 0) return;
    memcpy(moe->ps.p[lp->sw1].t.data, d1, sizeof(float) * (size_t)Fs * C);
    memcpy(moe->ps.p[lp->sw3].t.data, d3, sizeof(float) * (size_t)Fs * C);
    float *s2 = moe->ps.p[lp->sw2].t.data;
    for (int c = 0; c < C; c++)
        memcpy(s2 + (size_t)c * Fs, d2 + (size_t)c * Fd, sizeof(float) * (size_t)Fs);
}

/* Router (E, C) of layer l, N(0, S) (zeros for S = 0), the same on every rank. Virtual
 * groups when K is a multiple of G: row c G + s = row c of an (E/G, C) draw, so a token's
 * top K are whole copies; otherwise (K < G, or G = 1) one independent row per expert, so
 * which K slices a token uses depends on the token (shared rows would always pick the
 * lowest-index slices of a group: ties go to the lower index). */
static void fill_router(Model *moe, int l, const UpcycleOpts *o) {
    const int C = moe->s.C, E = moe->s.E;
    const int G = moe->s.K % o->granularity == 0 ? o->granularity : 1;
    float *r = moe->ps.p[moe->layer[l].router].t.data;
    for (int e = 0; e < E; e++)
        for (int j = 0; j < C; j++) {
            const uint64_t key = (uint64_t)(e / G) * (uint64_t)C + (uint64_t)j;
            r[(size_t)e * C + j] = o->router_init_std > 0.0f
                ? o->router_init_std * moe_randn_key(o->seed, UPCYCLE_KEY_ROUTER, (uint64_t)l, key)
                : 0.0f;
        }
    float *nz = moe->ps.p[moe->layer[l].noise].t.data;
    memset(nz, 0, sizeof(float) * (size_t)E * (size_t)C);
}

int upcycle_into(const char *dense_ckpt, Model *moe, const UpcycleOpts *o, MoeErr *err) {
    Config dc;
    if (read_dense_config(dense_ckpt, &dc, err)) return -1;
    ModelShape ds;
    config_model_shape(&dc, &ds);
    config_free(&dc);
    if (check_shapes(dense_ckpt, &ds, &moe->s, o->granularity, err)) return -1;
    if (!(o->router_init_std >= 0.0f) || !(o->expert_noise >= 0.0f)) {
        moe_errorf(err, "upcycling: router_init_std = %g and expert_noise = %g must be >= 0",
                   (double)o->router_init_std, (double)o->expert_noise);
        return moe_hintf(err, "set init.router_init_std and init.expert_noise to numbers >= 0");
    }

    /* The dense model, read whole (it is replicated: every rank needs all of it). */
    Model dm;
    model_init(&dm, &ds, 0, 0, 0);
    if (ckpt_load(dense_ckpt, &dm, NULL, false, err)) {
        model_free(&dm);
        return -1;
    }
    ParamSet *ps = &moe->ps;
    for (int i = 0; i < ps->count; i++) {
        const Param *p = &ps->p[i];
        if (p->layer >= 0) {
            const LayerParams *lp = &moe->layer[p->layer];
            if (i == lp->router || i == lp->noise || i == lp->w1 || i == lp->w3 || i == lp->w2 ||
                i == lp->sw1 || i == lp->sw3 || i == lp->sw2)
                continue;
        }
        int j = params_find(&dm.ps, p->name);
        ASSERT(j >= 0, "dense model has no parameter '%s'", p->name);
        const Tensor *src = &dm.ps.p[j].t;
        ASSERT(src->n == p->t.n, "size of '%s': %zu vs %zu", p->name, src->n, p->t.n);
        memcpy(p->t.data, src->data, sizeof(float) * src->n);
    }
    for (int l = 0; l < moe->s.L; l++) {
        const LayerParams *dl = &dm.layer[l];
        fill_experts(moe, l, dm.ps.p[dl->w1].t.data, dm.ps.p[dl->w3].t.data,
                     dm.ps.p[dl->w2].t.data, o);
        fill_shared(moe, l, dm.ps.p[dl->w1].t.data, dm.ps.p[dl->w3].t.data,
                    dm.ps.p[dl->w2].t.data, ds.F);
        fill_router(moe, l, o);
    }
    model_free(&dm);
    return 0;
}

int upcycle_config(const Config *dense, const char *dense_path, int E, int K,
                   const UpcycleOpts *o, Config *out, MoeErr *err) {
    memset(out, 0, sizeof *out);
    const int G = o->granularity;
    if (dense->moe.n_experts != 0) {
        moe_errorf(err, "%s: not a dense checkpoint: its config has moe.n_experts = %d",
                   dense_path, dense->moe.n_experts);
        return moe_hintf(err, "upcycle the checkpoint of a dense run (moe.n_experts: 0)");
    }
    if (G < 1 || E < 1 || E % G != 0 || K < 1 || K > E) {
        moe_errorf(err, "upcycling: experts %d, top-k %d, granularity %d do not fit", E, K, G);
        return moe_hintf(err, "need granularity >= 1, experts a multiple of the granularity "
                              "and 1 <= top-k <= experts");
    }
    const int Fd = dense->moe.hidden, ns = o->n_shared, sh = o->shared_hidden;
    int F;   /* the routed experts' width */
    if (ns < 0 || sh < 0) {
        moe_errorf(err, "upcycling: %d shared experts of width %d", ns, sh);
        return moe_hintf(err, "need shared experts >= 0 and a shared width >= 0");
    }
    if (ns == 0) {
        if (Fd % G != 0) {
            moe_errorf(err, "%s: the dense FFN's hidden width moe.hidden = %d is not divisible "
                       "by the granularity %d", dense_path, Fd, G);
            return moe_hintf(err, "pick a granularity that divides %d", Fd);
        }
        F = Fd / G;
    } else if (sh == 0) {   /* shared experts as wide as the routed ones: Fd = (ns + G) F */
        if (Fd % (ns + G) != 0) {
            moe_errorf(err, "%s: the dense FFN's hidden width moe.hidden = %d does not split "
                       "into %d shared + %d routed slices of equal width", dense_path, Fd, ns,
                       G);
            return moe_hintf(err, "pick shared experts + granularity dividing %d, or give "
                                  "the shared width", Fd);
        }
        F = Fd / (ns + G);
    } else {
        const long long Fr = (long long)Fd - (long long)ns * sh;
        if (Fr < G || Fr % G != 0) {
            moe_errorf(err, "%s: the dense FFN's hidden width moe.hidden = %d minus %d shared "
                       "experts x %d leaves %lld units, not a positive multiple of the "
                       "granularity %d", dense_path, Fd, ns, sh, Fr, G);
            return moe_hintf(err, "the widths must add up: routed width x granularity + "
                                  "shared experts x shared width = %d", Fd);
        }
        F = (int)(Fr / G);
    }
    config_copy(out, dense);
    out->moe.n_experts = E;
    out->moe.top_k = K;
    out->moe.hidden = F;
    out->moe.n_shared_experts = ns;
    out->moe.shared_hidden = sh;
    moe_free(out->init.upcycle_from);
    out->init.upcycle_from = moe_strdup(dense_path);
    out->init.granularity = G;
    out->init.router_init_std = (double)o->router_init_std;
    out->init.expert_noise = (double)o->expert_noise;
    return 0;
}

int upcycle_ckpt(const char *dense_ckpt, const char *out_path, int E, int K,
                 const UpcycleOpts *o, MoeErr *err) {
    Config dc, mc;
    Model m;
    memset(&mc, 0, sizeof mc);
    memset(&m, 0, sizeof m);
    uint8_t *tok = NULL;
    size_t tn = 0;
    char tok_path[4200];
    bool tok_written = false;
    CkptMeta dm;
    if (read_dense_config(dense_ckpt, &dc, err)) return -1;
    int rc = upcycle_config(&dc, dense_ckpt, E, K, o, &mc, err);
    config_free(&dc);
    if (rc || ckpt_read_meta(dense_ckpt, &dm, err)) goto fail;

    ModelShape s;
    config_model_shape(&mc, &s);
    model_init(&m, &s, 0, E, (uint64_t)mc.train.seed);
    if (upcycle_into(dense_ckpt, &m, o, err)) goto fail;

    /* ckpt_save stores a tokenizer FILE's bytes: pass the dense checkpoint's through a
     * temporary next to the output (removed on every path). */
    if (ckpt_read_tokenizer(dense_ckpt, &tok, &tn, err)) goto fail;
    snprintf(tok_path, sizeof tok_path, "%s.tokenizer.tmp", out_path);
    FILE *f = fopen(tok_path, "wb");
    if (!f) {
        moe_errorf(err, "%s: cannot create: %s", tok_path, strerror(errno));
        moe_hintf(err, "the directory of the output checkpoint must exist and be writable");
        goto fail;
    }
    tok_written = true;
    bool bad = fwrite(tok, 1, tn, f) != tn;
    if (fclose(f) || bad) {
        moe_errorf(err, "%s: cannot write the tokenizer copy", tok_path);
        moe_hintf(err, "check free space in the output directory");
        goto fail;
    }
    CkptMeta meta = {.step = 0, .tokens_seen = 0, .seed = (uint64_t)mc.train.seed,
                     .loader_epoch = 0, .loader_cursor = 0,
                     .loader_windows = dm.loader_windows, .tok_hash = dm.tok_hash};
    if (ckpt_save(out_path, &mc, &m, &meta, tok_path, false, err)) goto fail;
    unlink(tok_path);
    moe_free(tok);
    model_free(&m);
    config_free(&mc);
    return 0;
fail:
    if (tok_written) unlink(tok_path);
    moe_free(tok);
    if (m.layer) model_free(&m);
    config_free(&mc);
    return -1;
}
