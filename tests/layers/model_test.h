/* model_test.h: what the whole-model tests of tests/layers/ share: a tiny model shape
 * (V = 11, C = 8, L = 2, H = 2, Hkv = 1, D = 4, F = 6, E experts), one fixed batch of
 * TB x TT tokens and targets (g_in, g_tg, filled by make_batch), the loss of one forward
 * (loss_of, loss_of_mode), the logits of an evaluation forward (logits_of) and random
 * LoRA B matrices (randomise_lora_b) so that adapters contribute.
 */
#ifndef MOE_TESTS_MODEL_TEST_H
#define MOE_TESTS_MODEL_TEST_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "layers/model.h"
#include "testutil.h"

static inline ModelShape tiny_shape(int E) {
    ModelShape s = {.V = 11, .C = 8, .L = 2, .H = 2, .Hkv = 1, .D = 4, .F = 6, .E = E,
                    .K = E > 0 ? 2 : 0, .norm_eps = 1e-5f, .rope_theta = 10000.0f,
                    .init_std = 0.3f, .capacity_factor = 0.0f, .router_noise = true,
                    .aux_coef = 0.01f, .z_coef = 0.001f};
    return s;
}

enum { TB = 2, TT = 5 };
static int32_t g_in[TB * TT], g_tg[TB * TT];

static inline void make_batch(int V) {
    MoeRng r;
    rng_seed(&r, 99);
    for (int i = 0; i < TB * TT; i++) {
        g_in[i] = (int32_t)(rng_next(&r) % (uint64_t)V);
        g_tg[i] = (int32_t)(rng_next(&r) % (uint64_t)V);
    }
}

/* The loss of one forward of the batch, as in training (router noise, LoRA dropout) when
 * train, else as in evaluation; recorded on t when record; the batch's first token has
 * global index token_base (it keys the dropout masks and router noise). */
static inline double loss_of_mode(Model *m, Tape *t, bool record, bool train, int token_base,
                                  ModelOut *out) {
    StepCtx ctx = {.train = train, .seed = 7, .step = 3, .token_base = token_base,
                   .loss_scale = 1.0f};
    tape_reset(t, record);
    moe_stats_reset(&m->stats);
    model_forward(m, t, g_in, g_tg, TB, TT, &ctx, out);
    return (double)out->loss->data[0];
}

static inline double loss_of(Model *m, Tape *t, bool record, ModelOut *out) {
    return loss_of_mode(m, t, record, true, 0, out);
}

/* logits (TB*TT, V) of an evaluation forward into out */
static inline void logits_of(Model *m, Tape *t, float *out) {
    StepCtx ctx = {.train = false, .seed = 7, .loss_scale = 1.0f};
    ModelOut o;
    tape_reset(t, false);
    model_forward(m, t, g_in, NULL, TB, TT, &ctx, &o);
    memcpy(out, o.logits->data, sizeof(float) * o.logits->n);
}

/* Every LoRA B matrix (".lora_B." in its name) drawn from N(0, 0.3^2), keyed by seed. */
static inline void randomise_lora_b(Model *m, uint64_t seed) {
    MoeRng r;
    rng_seed(&r, seed);
    for (int i = 0; i < m->ps.count; i++) {
        Param *p = &m->ps.p[i];
        if (!strstr(p->name, ".lora_B.")) continue;
        for (size_t j = 0; j < p->t.n; j++) p->t.data[j] = 0.3f * rng_normal(&r);
    }
}

#endif
