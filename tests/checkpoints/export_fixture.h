/* export_fixture.h: the fixture of test_export.c and test_infer.c: a tiny model (V=300 C=32
 * L=2 H=4 Hkv=2 D=8 F=48 E=4 K=2, and its dense twin) with distinct random values, its
 * checkpoint and a real 300-token tokenizer, each test in its own mkdtemp directory.
 * Helpers are static inline: each test file uses a subset.
 */
#ifndef MOE_TEST_EXPORT_FIXTURE_H
#define MOE_TEST_EXPORT_FIXTURE_H

#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoints/ckpt.h"
#include "data/tokenizer.h"
#include "train/train.h"

static char g_dir[256];
static char g_tok[300];
static char g_ckpt[300];

static inline void setup(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/moe_export_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(g_dir));
    snprintf(g_tok, sizeof g_tok, "%s/tok.bpe", g_dir);
    snprintf(g_ckpt, sizeof g_ckpt, "%s/ref.h5", g_dir);
    /* A real 300-token tokenizer (43 merges) trained on a few sentences. */
    static const char *text =
        "the quick brown fox jumps over the lazy dog. the dog sleeps, the fox runs.\n"
        "To be, or not to be, that is the question: whether 'tis nobler in the mind\n"
        "to suffer the slings and arrows of outrageous fortune, or to take arms.\n";
    const uint8_t *bufs[1] = {(const uint8_t *)text};
    size_t lens[1] = {strlen(text)};
    Tokenizer t;
    memset(&t, 0, sizeof t);
    MoeErr err;
    ck_assert_msg(tok_train_buffers(&t, bufs, lens, 1, 300, &err) == 0, "%s", err.msg);
    ck_assert_msg(tok_save(&t, g_tok, &err) == 0, "%s", err.msg);
    tok_free(&t);
}

static inline void teardown(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
}

static inline void tiny_config(Config *c, int E) {
    config_defaults(c);
    c->model.vocab_size = 300;
    c->model.dim = 32;
    c->model.n_layers = 2;
    c->model.n_heads = 4;
    c->model.n_kv_heads = 2;
    c->model.head_dim = 8;
    c->model.norm_eps = 1e-5;
    c->model.rope_theta = 500.0;
    c->moe.n_experts = E;
    c->moe.top_k = 2;
    c->moe.hidden = 48;
    c->train.seq_len = 16;
    c->train.seed = 4242;
    c->data.tokenizer = moe_strdup(g_tok);
}

/* Checkpoint of a model with distinct random values everywhere (norm gains too, so a
 * misplaced tensor cannot hide). The model stays built in *m for comparisons. */
static inline void save_ref_with(Model *m, Config *c, int E, int W, int n_shared) {
    tiny_config(c, E);
    c->model.sliding_window = W;
    c->moe.n_shared_experts = n_shared;
    c->moe.shared_hidden = n_shared ? 20 : 0;
    ModelShape s;
    config_model_shape(c, &s);
    model_init(m, &s, 0, s.E, 7);
    MoeRng r;
    rng_seed(&r, 99);
    for (int b = 0; b < PBLOCK_COUNT; b++)
        for (size_t i = 0; i < m->ps.blocks[b].n; i++)
            m->ps.blocks[b].data[i] = 0.3f * rng_normal(&r);
    CkptMeta mt = {.step = 5, .seed = 4242};
    MoeErr err;
    ck_assert_msg(ckpt_save(g_ckpt, c, m, &mt, g_tok, false, &err) == 0, "%s", err.msg);
}

static inline void save_ref(Model *m, Config *c, int E) { save_ref_with(m, c, E, 0, 0); }

static inline bool exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* Logits (T, V) of model m on ids (copied into out). */
static inline void logits_of(Model *m, const int32_t *ids, int T, float *out) {
    Tape t;
    tape_init(&t, 0);
    tape_reset(&t, false);
    StepCtx ctx = {.train = false, .loss_scale = 1.0f};
    ModelOut o;
    model_forward(m, &t, ids, NULL, 1, T, &ctx, &o);
    memcpy(out, o.logits->data, sizeof(float) * (size_t)T * m->s.V);
    tape_free(&t);
}

/* Every parameter but the router noise equal bit for bit. */
static inline void assert_same_params(const Model *a, const Model *b) {
    ck_assert_int_eq(a->ps.count, b->ps.count);
    for (int i = 0; i < a->ps.count; i++) {
        const Param *p = &a->ps.p[i], *q = &b->ps.p[i];
        ck_assert_str_eq(p->name, q->name);
        if (strstr(p->name, "noise_gate")) continue;
        ck_assert_msg(p->t.n == q->t.n && !memcmp(p->t.data, q->t.data, 4 * p->t.n),
                      "%s differs", p->name);
    }
}

static const int32_t IDS[12] = {1, 280, 45, 7, 299, 100, 32, 101, 256, 270, 13, 2};


static inline void write_bytes(const char *p, const uint8_t *b, size_t n) {
    FILE *f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(b, 1, n, f), n);
    fclose(f);
}

#endif
