/* upcycle_fixture.h: the fixture of test_upcycle.c and test_upcycle_init.c: a tiny dense
 * model (V=258 C=8 L=2 H=2 Hkv=1 D=4, dense hidden F=6) saved as a checkpoint, the MoE
 * models it upcycles into, and their logits on a fixed batch (TB x TT tokens), each test in
 * its own mkdtemp directory. Helpers are static inline: each test file uses a subset.
 */
#ifndef MOE_TEST_UPCYCLE_FIXTURE_H
#define MOE_TEST_UPCYCLE_FIXTURE_H

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoints/ckpt.h"
#include "checkpoints/upcycle.h"
#include "configs/config.h"
#include "layers/model.h"
#include "train/train.h"

static char g_dir[256];
static char g_tok[300];
static char g_dense[300];   /* the dense checkpoint of each test */

enum { TB = 2, TT = 5, TN = TB * TT, TV = 258 };
static int32_t g_in[TN];

static inline void tiny_dense_config(Config *c) {
    config_defaults(c);
    c->model = (ConfigModel){.vocab_size = TV, .dim = 8, .n_layers = 2, .n_heads = 2,
                             .n_kv_heads = 1, .head_dim = 4, .norm_eps = 1e-5,
                             .rope_theta = 10000.0, .init_std = 0.3};
    c->moe.n_experts = 0;
    c->moe.top_k = 2;
    c->moe.hidden = 6;
    c->moe.router_noise = true;   /* must not matter: evaluation turns noise off */
    c->train.seed = 4242;
    c->data.tokenizer = moe_strdup(g_tok);
}

static inline void build(Model *m, const Config *c, int e_first, int e_local, uint64_t seed) {
    ModelShape s;
    config_model_shape(c, &s);
    model_init(m, &s, e_first, e_local, seed);
}

static inline void setup(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/moe_upcycle_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(g_dir));
    snprintf(g_tok, sizeof g_tok, "%s/tok.bpe", g_dir);
    FILE *f = fopen(g_tok, "wb");
    ck_assert_ptr_nonnull(f);
    fputs("moetrain-bpe 1\nnot a real tokenizer, only bytes to store\n", f);
    fclose(f);
    snprintf(g_dense, sizeof g_dense, "%s/dense.h5", g_dir);
    MoeRng r;
    rng_seed(&r, 99);
    for (int i = 0; i < TN; i++) g_in[i] = (int32_t)(rng_next(&r) % (uint64_t)TV);
}

static inline void teardown(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
}

/* Writes the dense checkpoint g_dense (with optimizer state, step 300, like a real run's
 * final checkpoint) from a model initialised with std 0.3 (logits of order 1) and norm gains
 * away from 1. The model is returned in *m (model_free it), its config in *c. */
static inline void save_dense(Model *m, Config *c) {
    tiny_dense_config(c);
    build(m, c, 0, 0, 1);
    MoeRng r;
    rng_seed(&r, 5);
    for (int i = 0; i < m->ps.count; i++) {
        Param *p = &m->ps.p[i];
        if (p->init == INIT_ONES)
            for (size_t j = 0; j < p->t.n; j++) p->t.data[j] = 1.0f + 0.3f * rng_normal(&r);
    }
    CkptMeta mt = {.step = 300, .tokens_seen = 300 * 2048, .seed = 4242, .loader_epoch = 1,
                   .loader_cursor = 7, .loader_windows = 99, .tok_hash = 0x1234abcdULL};
    MoeErr err;
    int rc = ckpt_save(g_dense, c, m, &mt, g_tok, true, &err);
    ck_assert_msg(rc == 0, "dense save failed: %s", err.msg);
}

/* Logits (TN, TV) of model m on g_in at evaluation (targets NULL, router noise off). */
static inline void logits_of(Model *m, float *out) {
    Tape t;
    tape_init(&t, 1 << 20);
    tape_reset(&t, false);
    StepCtx ctx = {.train = false, .seed = 7, .step = 0, .token_base = 0, .loss_scale = 1.0f};
    ModelOut mo;
    model_forward(m, &t, g_in, NULL, TB, TT, &ctx, &mo);
    ck_assert_ptr_nonnull(mo.logits);
    memcpy(out, mo.logits->data, sizeof(float) * TN * TV);
    tape_free(&t);
}

/* max and mean |a - b| over TN*TV logits; also max |b| (the scale). */
static inline void diff_stats(const float *a, const float *b, double *mx, double *mean, double *scale) {
    *mx = *mean = *scale = 0.0;
    for (int i = 0; i < TN * TV; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > *mx) *mx = d;
        *mean += d;
        if (fabs((double)b[i]) > *scale) *scale = fabs((double)b[i]);
    }
    *mean /= TN * TV;
}

static inline UpcycleOpts opts(int G, float S, float X) {
    UpcycleOpts o = {.granularity = G, .router_init_std = S, .expert_noise = X, .seed = 11};
    return o;
}

/* The MoE model of the dense config c with E experts, top-k K, granularity G and ns shared
 * experts of width sh (routed width (F - ns sh) / G). */
static inline void build_moe_shared(Model *m, const Config *dense, int E, int K, int G, int ns, int sh,
                             int e_first, int e_local) {
    Config c;
    config_copy(&c, dense);
    c.moe.n_experts = E;
    c.moe.top_k = K;
    c.moe.hidden = (dense->moe.hidden - ns * sh) / G;
    c.moe.n_shared_experts = ns;
    c.moe.shared_hidden = sh;
    build(m, &c, e_first, e_local, 999);
    config_free(&c);
}

/* The MoE model of the dense config c with E experts, top-k K, granularity G. */
static inline void build_moe(Model *m, const Config *dense, int E, int K, int G, int e_first,
                      int e_local) {
    build_moe_shared(m, dense, E, K, G, 0, 0, e_first, e_local);
}

/* Upcycle g_dense into a fresh one-process MoE model (E, K, G, S, X) and return the max
 * abs logit difference to the dense logits ref; mean in *mean. */
static inline double upcycled_diff(const Config *dc, const float *ref, int E, int K, int G, float S,
                            float X, double *mean) {
    Model moe;
    build_moe(&moe, dc, E, K, G, 0, E);
    UpcycleOpts o = opts(G, S, X);
    MoeErr err;
    int rc = upcycle_into(g_dense, &moe, &o, &err);
    ck_assert_msg(rc == 0, "upcycle_into failed: %s", err.msg);
    float *lg = moe_malloc(sizeof(float) * TN * TV);
    logits_of(&moe, lg);
    double mx, scale;
    diff_stats(lg, ref, &mx, mean, &scale);
    ck_assert(isfinite(mx) && scale > 0.1);   /* the logits are not trivially small */
    moe_free(lg);
    model_free(&moe);
    return mx;
}

/* Tolerance of the equality tests: 1e-5 absolute on logits of order 1 (max |logit| > 0.1 is
 * asserted). The upcycled layer sums K gate-weighted expert outputs whose gates sum to 1
 * in float: rounding ~1e-7 relative per layer, far below 1e-5; a wrong slice, a missing
 * scale or a gate that does not sum to 1 moves logits by > 1e-3. */
#define LOGIT_ATOL 1e-5

#endif
