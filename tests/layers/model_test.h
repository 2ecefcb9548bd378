/* model_test.h: what the whole-model tests of tests/layers/ share: a tiny model shape
 * (V = 11, C = 8, L = 2, H = 2, Hkv = 1, D = 4, F = 6, E experts), one fixed batch of
 * TB x TT tokens and targets (g_in, g_tg, filled by make_batch) and the training loss of
 * one forward (loss_of).
 */
#ifndef MOE_TESTS_MODEL_TEST_H
#define MOE_TESTS_MODEL_TEST_H

#include <stdbool.h>
#include <stdint.h>

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

static inline double loss_of(Model *m, Tape *t, bool record, ModelOut *out) {
    StepCtx ctx = {.train = true, .seed = 7, .step = 3, .token_base = 0,
                   .loss_scale = 1.0f};
    tape_reset(t, record);
    moe_stats_reset(&m->stats);
    model_forward(m, t, g_in, g_tg, TB, TT, &ctx, out);
    return (double)out->loss->data[0];
}

#endif
