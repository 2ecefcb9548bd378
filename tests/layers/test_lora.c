/* test_lora.c: LoRA adapters (layers/lora.h) and a model fine-tuned with them.
 * - lora_linear's forward against a naive double reference (with and without dropout), its
 *   gradients (x, A, B) against central finite differences, and no gradient for the frozen W;
 * - the dropout mask: values, drop rate, determinism, and rows that depend only on the
 *   global token index (so a split over ranks draws the same mask);
 * - lora_merge against a naive reference, and the merged weight computing the adapter's
 *   function;
 * - the model: at step 0 (B = 0) the loss and logits equal the plain model's bit for bit;
 *   trainable count = L * sum over targets of r (d_in + d_out); grad/m/v exist only for the
 *   trainable tensors (bytes counted); after training steps every base tensor is
 *   bit-identical; whole-model finite differences for the trainable tensors (adapters, and
 *   adapters + unfrozen router and experts); evaluation has no dropout; no allocation after
 *   the first step; a merged plain model gives the LoRA model's logits;
 * - adapter checkpoints: only the trainable tensors are stored, they and their moments
 *   round-trip bit for bit, and mismatched file/model kinds are refused.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/blas.h"
#include "checkpoints/ckpt.h"
#include "checkpoints/finetune.h"
#include "layers/lora.h"
#include "layers/model.h"
#include "optim/adamw.h"
#include "model_test.h"
#include "testutil.h"

/* Forward tolerance, float32 kernels vs double references on O(1) data with sums of at
 * most ~10 terms: rounding is a few eps_f32 (6e-8) per term, so 1e-5 + 1e-5 relative is
 * ~10x above it and far below an indexing or scaling bug (errors of O(0.1)). */
#define FWD_ATOL 1e-5
#define FWD_RTOL 1e-5

/* ---------------- naive references ---------------- */

/* y (N, dout) = x w^T + s ((x * mask) a^T) b^T in double; mask NULL = ones. */
static void lora_ref(const float *x, const float *w, const float *a, const float *b,
                     const float *mask, int N, int din, int dout, int r, double s, float *y) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < dout; o++) {
            double base = 0.0, ad = 0.0;
            for (int i = 0; i < din; i++)
                base += (double)x[n * din + i] * (double)w[o * din + i];
            for (int k = 0; k < r; k++) {
                double u = 0.0;
                for (int i = 0; i < din; i++)
                    u += (double)x[n * din + i] * (mask ? (double)mask[n * din + i] : 1.0) *
                         (double)a[k * din + i];
                ad += (double)b[o * r + k] * u;
            }
            y[n * dout + o] = (float)(base + s * ad);
        }
}

/* ---------------- lora_linear ---------------- */

typedef struct LinCtx {
    float scale;
    LoraDrop drop;
} LinCtx;

static Tensor *build_lora(Tape *t, Tensor **in, void *ctx) {
    LinCtx *c = ctx;
    return lora_linear(t, in[0], in[1], in[2], in[3], c->scale, &c->drop);
}

enum { LN = 5, LDIN = 6, LDOUT = 4, LR = 3 };

static void make_linear(Tensor **in) {
    in[0] = tt_tensor2(LN, LDIN, TENSOR_PARAM, "x");
    in[1] = tt_tensor2(LDOUT, LDIN, TENSOR_FROZEN, "w");
    in[2] = tt_tensor2(LR, LDIN, TENSOR_PARAM, "a");
    in[3] = tt_tensor2(LDOUT, LR, TENSOR_PARAM, "b");
    for (int i = 0; i < 4; i++) tt_fill_uniform(in[i], 10 + (uint64_t)i, -1.0f, 1.0f);
}

START_TEST(test_linear_forward) {
    Tensor *in[4];
    make_linear(in);
    Tape tape;
    tape_init(&tape, 1 << 16);
    float ref[LN * LDOUT], mask[LN * LDIN];
    for (int drop = 0; drop < 2; drop++) {
        LinCtx c = {1.5f, {.p = drop ? 0.3f : 0.0f, .seed = 3, .step = 2, .layer = 1,
                           .target = LORA_V, .token_base = 40}};
        tape_reset(&tape, false);
        Tensor *y = build_lora(&tape, in, &c);
        if (drop) lora_dropout_mask(mask, LN, LDIN, &c.drop);
        lora_ref(in[0]->data, in[1]->data, in[2]->data, in[3]->data, drop ? mask : NULL, LN,
                 LDIN, LDOUT, LR, 1.5, ref);
        ck_assert_msg(tt_max_err(y->data, ref, LN * LDOUT, FWD_ATOL, FWD_RTOL) <= 1.0,
                      "lora_linear forward (dropout %d) differs from the reference", drop);
    }
    tape_free(&tape);
    for (int i = 0; i < 4; i++) tt_free(in[i]);
}
END_TEST

/* Central differences with h = 1e-2: the output is linear in each single element of x, A
 * and B, so the difference quotient has no truncation error; what is left is float32
 * rounding of the outputs (~1e-7 relative on O(1) values, summed over 20 outputs, divided by
 * 2h): ~1e-5. atol 1e-4 + rtol 1e-3 is 10x above that; a wrong scale, a missing mask or a
 * transposed product is off by O(0.1). */
START_TEST(test_linear_grad) {
    Tensor *in[4];
    make_linear(in);
    /* x as a CONST input too: the first layer's adapters see an input without gradient */
    Tensor *xc = tt_tensor2(LN, LDIN, TENSOR_CONST, "x const");
    memcpy(xc->data, in[0]->data, sizeof(float) * xc->n);
    for (int drop = 0; drop < 2; drop++)
        for (int cx = 0; cx < 2; cx++) {
            LinCtx c = {0.75f, {.p = drop ? 0.25f : 0.0f, .seed = 9, .step = 1, .layer = 0,
                                .target = LORA_Q, .token_base = 7}};
            Tensor *use[4] = {cx ? xc : in[0], in[1], in[2], in[3]};
            int bad = tt_check_grad(build_lora, &c, use, 4, 1e-2f, 1e-4, 1e-3, "lora_linear");
            ck_assert_msg(bad == 0, "dropout %d, x %s: %d mismatches", drop,
                          cx ? "const" : "param", bad);
        }
    /* the frozen weight has no gradient buffer: backward never writes one */
    ck_assert_ptr_null(in[1]->grad);
    tt_free(xc);
    for (int i = 0; i < 4; i++) tt_free(in[i]);
}
END_TEST

START_TEST(test_dropout_mask) {
    enum { N = 64, DIN = 64 };
    static float m1[N * DIN], m2[N * DIN], part[(N - 3) * DIN];
    const float p = 0.3f;
    LoraDrop d = {.p = p, .seed = 5, .step = 11, .layer = 2, .target = LORA_K, .token_base = 100};
    lora_dropout_mask(m1, N, DIN, &d);
    int zeros = 0;
    for (int j = 0; j < N * DIN; j++) {
        /* kept entries are exactly 1/(1-p), as the forward's inverted dropout requires */
        ck_assert(m1[j] == 0.0f || m1[j] == 1.0f / (1.0f - p));
        zeros += m1[j] == 0.0f;
    }
    /* 4096 Bernoulli(0.3) draws: std sqrt(0.21/4096) = 0.0072; +-0.04 is 5.5 sigma */
    ck_assert_msg(fabs((double)zeros / (N * DIN) - 0.3) < 0.04, "drop rate %g",
                  (double)zeros / (N * DIN));
    /* a pure function of the key */
    lora_dropout_mask(m2, N, DIN, &d);
    ck_assert(!memcmp(m1, m2, sizeof m1));
    /* rows are keyed by the global token: rows 3.. drawn with token_base + 3 are the same */
    LoraDrop d3 = d;
    d3.token_base += 3;
    lora_dropout_mask(part, N - 3, DIN, &d3);
    ck_assert(!memcmp(part, m1 + 3 * DIN, sizeof part));
    /* another step, layer or projection draws another mask */
    LoraDrop other[3] = {d, d, d};
    other[0].step++;
    other[1].layer++;
    other[2].target = LORA_V;
    for (int k = 0; k < 3; k++) {
        lora_dropout_mask(m2, N, DIN, &other[k]);
        int diff = 0;
        for (int j = 0; j < N * DIN; j++) diff += m1[j] != m2[j];
        ck_assert_msg(diff > N * DIN / 5, "variant %d: only %d entries differ", k, diff);
    }
}
END_TEST

START_TEST(test_merge) {
    Tensor *in[4];
    make_linear(in);
    const float s = 1.25f;
    float w2[LDOUT * LDIN], ref[LDOUT * LDIN];
    memcpy(w2, in[1]->data, sizeof w2);
    lora_merge(w2, in[2]->data, in[3]->data, LDOUT, LDIN, LR, s);
    for (int o = 0; o < LDOUT; o++)
        for (int i = 0; i < LDIN; i++) {
            double acc = 0.0;
            for (int k = 0; k < LR; k++)
                acc += (double)in[3]->data[o * LR + k] * (double)in[2]->data[k * LDIN + i];
            ref[o * LDIN + i] = (float)((double)in[1]->data[o * LDIN + i] + (double)s * acc);
        }
    ck_assert(tt_max_err(w2, ref, LDOUT * LDIN, FWD_ATOL, FWD_RTOL) <= 1.0);
    /* x W'^T equals the adapter's output without dropout */
    Tensor *wm = tt_tensor2(LDOUT, LDIN, TENSOR_FROZEN, "w'");
    memcpy(wm->data, w2, sizeof w2);
    Tape tape;
    tape_init(&tape, 1 << 16);
    tape_reset(&tape, false);
    Tensor *ym = op_linear(&tape, in[0], wm);
    Tensor *yl = lora_linear(&tape, in[0], in[1], in[2], in[3], s, NULL);
    ck_assert(tt_max_err(ym->data, yl->data, LN * LDOUT, FWD_ATOL, FWD_RTOL) <= 1.0);
    tape_free(&tape);
    tt_free(wm);
    for (int i = 0; i < 4; i++) tt_free(in[i]);
}
END_TEST

/* ---------------- the model ---------------- */

static LoraSpec all_targets(int rank, float dropout) {
    LoraSpec lo = {.rank = rank, .alpha = 2.0f * (float)rank, .dropout = dropout,
                   .targets = (1u << LORA_N_ATTN) - 1};
    return lo;
}

/* Fresh adapters (B = 0) add exactly zero: loss (training forward, router noise and adapter
 * dropout on) and logits equal the plain model's with the same seed, bit for bit. */
START_TEST(test_step0_bit_equal) {
    ModelShape s = tiny_shape(4);
    make_batch(s.V);
    LoraSpec lo = all_targets(3, 0.2f);
    Model plain, lm;
    model_init(&plain, &s, 0, s.E, 1234);
    model_init_lora(&lm, &s, &lo, 0, s.E, 1234);
    Tape t;
    tape_init(&t, 1 << 20);
    ModelOut o1, o2;
    double l1 = loss_of_mode(&plain, &t, true, true, 4, &o1);
    double l2 = loss_of_mode(&lm, &t, true, true, 4, &o2);
    ck_assert_msg(l1 == l2, "step-0 loss %.9g (plain) vs %.9g (LoRA)", l1, l2);
    ck_assert(o1.lm_loss == o2.lm_loss && o1.aux_loss == o2.aux_loss && o1.z_loss == o2.z_loss);
    float a[TB * TT * 11], b[TB * TT * 11];
    logits_of(&plain, &t, a);
    logits_of(&lm, &t, b);
    ck_assert(!memcmp(a, b, sizeof a));
    tape_free(&t);
    model_free(&plain);
    model_free(&lm);
}
END_TEST

/* Adapter sizes from the shape alone: q C -> H D, k and v C -> Hkv D, o H D -> C. */
static size_t expected_adapters(const ModelShape *s, int r, unsigned targets) {
    const size_t HD = (size_t)s->H * s->D, KD = (size_t)s->Hkv * s->D, C = (size_t)s->C;
    const size_t din[4] = {C, C, C, HD}, dout[4] = {HD, KD, KD, C};
    size_t n = 0;
    for (int t = 0; t < 4; t++)
        if (targets & (1u << t)) n += (size_t)r * (din[t] + dout[t]);
    return (size_t)s->L * n;
}

START_TEST(test_trainable_count) {
    ModelShape s = tiny_shape(4);
    const unsigned sets[3] = {15u, 1u | 4u, 8u};   /* all; q and v; o only */
    for (int r = 1; r <= 4; r += 3)
        for (int k = 0; k < 3; k++) {
            LoraSpec lo = all_targets(r, 0.0f);
            lo.targets = sets[k];
            Model m;
            model_init_lora(&m, &s, &lo, 0, s.E, 1);
            ck_assert_uint_eq(params_count(&m.ps, true), expected_adapters(&s, r, sets[k]));
            model_free(&m);
        }
    /* unfreezing adds the routers (2 (E, C) per layer) and the experts (3 (E, F, C)) */
    LoraSpec lo = all_targets(2, 0.0f);
    lo.train_router = lo.train_experts = true;
    Model m;
    model_init_lora(&m, &s, &lo, 0, s.E, 1);
    size_t want = expected_adapters(&s, 2, 15u) + (size_t)s.L * 2 * s.E * s.C +
                  (size_t)s.L * 3 * s.E * s.F * s.C;
    ck_assert_uint_eq(params_count(&m.ps, true), want);
    model_free(&m);
}
END_TEST

static size_t pad16(size_t n) { return (n + 15) / 16 * 16; }

/* The blocks of a plain model and of a LoRA model, counted from the shape: values for every
 * tensor (each padded to 16 floats), grad/m/v (3 floats per element) only for trainable
 * ones. Everything else the two models allocate (parameter table, layer table, statistics)
 * is the same, so the difference of allocated bytes is exactly the difference of blocks. */
START_TEST(test_no_optimizer_state_for_frozen) {
    ModelShape s = tiny_shape(4);
    LoraSpec lo = all_targets(3, 0.0f);
    const size_t C = (size_t)s.C, HD = (size_t)s.H * s.D, KD = (size_t)s.Hkv * s.D;
    size_t dense_layer = pad16(C) * 2 + pad16(HD * C) * 2 + pad16(KD * C) * 2 +
                        pad16((size_t)s.E * C) * 2;
    size_t nd = 2 * pad16((size_t)s.V * C) + pad16(C) + (size_t)s.L * dense_layer;
    size_t ne = (size_t)s.L * 3 * pad16((size_t)s.E * s.F * C);
    size_t na = (size_t)s.L * (pad16(3 * C) + pad16(HD * 3) + 2 * pad16(3 * C) +
                               2 * pad16(KD * 3) + pad16(3 * HD) + pad16(C * 3));
    size_t live0 = moe_live_bytes();
    Model plain, lm;
    model_init(&plain, &s, 0, s.E, 1);
    size_t bytes_plain = moe_live_bytes() - live0;
    live0 = moe_live_bytes();
    model_init_lora(&lm, &s, &lo, 0, s.E, 1);
    size_t bytes_lora = moe_live_bytes() - live0;
    ck_assert_uint_eq(lm.ps.blocks[PBLOCK_DENSE].gn, na);
    ck_assert_uint_eq(lm.ps.blocks[PBLOCK_EXPERT].gn, 0);
    size_t overhead_plain = bytes_plain - 4 * (nd + ne) - 12 * (nd + ne);
    /* LoRA: values of everything, grad/m/v of the adapters, plus the 16-float placeholder
     * each empty grad/m/v buffer gets (the expert block's) */
    size_t overhead_lora = bytes_lora - 4 * (nd + ne + na) - 12 * na - 12 * 16;
    ck_assert_uint_eq(overhead_lora, overhead_plain);
    for (int i = 0; i < lm.ps.count; i++) {
        const Param *p = &lm.ps.p[i];
        bool adapter = lora_is_adapter(p->name);
        ck_assert(p->trainable == adapter);
        ck_assert(adapter ? p->t.grad != NULL : (p->t.grad == NULL &&
                                                   p->t.kind == TENSOR_FROZEN));
    }
    model_free(&plain);
    model_free(&lm);
}
END_TEST

/* A few AdamW steps with weight decay on: every base tensor keeps its exact bits, the
 * adapters move, and after the first step nothing allocates. */
START_TEST(test_base_frozen_after_training) {
    ModelShape s = tiny_shape(4);
    make_batch(s.V);
    LoraSpec lo = all_targets(2, 0.1f);
    Model m;
    model_init_lora(&m, &s, &lo, 0, s.E, 3);
    const ParamBlock *d = &m.ps.blocks[PBLOCK_DENSE], *e = &m.ps.blocks[PBLOCK_EXPERT];
    float *d0 = moe_malloc(d->n * sizeof(float)), *e0 = moe_malloc(e->n * sizeof(float));
    memcpy(d0, d->data, d->n * sizeof(float));
    memcpy(e0, e->data, e->n * sizeof(float));
    Tape t;
    tape_init(&t, 1 << 16);
    AdamWConfig ac = {0.9f, 0.95f, 1e-8f, 0.1f};
    size_t calls = 0;
    for (int step = 0; step < 4; step++) {
        params_zero_grad(&m.ps);
        ModelOut out;
        loss_of_mode(&m, &t, true, true, 4, &out);
        tape_backward(&t, out.loss, NULL);
        adamw_step(&m.ps, &ac, 1e-2f, step + 1);
        if (step == 0) calls = moe_alloc_calls();
    }
    ck_assert_uint_eq(moe_alloc_calls(), calls);
    int moved = 0;
    for (int i = 0; i < m.ps.count; i++) {
        const Param *p = &m.ps.p[i];
        const float *before = (p->block == PBLOCK_DENSE ? d0 : e0) + p->off;
        bool same = !memcmp(before, p->t.data, p->t.n * sizeof(float));
        if (lora_is_adapter(p->name)) moved += !same;
        else ck_assert_msg(same, "base tensor %s changed", p->name);
    }
    ck_assert_int_eq(moved, 2 * 4 * s.L);   /* every A and every B */
    tape_free(&t);
    moe_free(d0);
    moe_free(e0);
    model_free(&m);
}
END_TEST

/* Central differences of the total loss for every trainable element (B random so dA is
 * not zero), training forward with router noise and adapter dropout. Same tolerance and
 * reasoning as test_model's: h = 1e-3 on a float32 loss of ~2.4 gives FD noise ~2.4e-4
 * (atol 1e-3), rtol 2e-2 covers O(h^2) truncation on the curved parts. */
static void check_grads(const LoraSpec *lo) {
    ModelShape s = tiny_shape(4);
    make_batch(s.V);
    Model m;
    model_init_lora(&m, &s, lo, 0, s.E, 1234);
    randomise_lora_b(&m, 77);
    Tape t;
    tape_init(&t, 1 << 20);
    ModelOut out;
    params_zero_grad(&m.ps);
    loss_of_mode(&m, &t, true, true, 4, &out);
    tape_backward(&t, out.loss, NULL);
    const float h = 1e-3f;
    int bad = 0, checked = 0;
    for (int i = 0; i < m.ps.count; i++) {
        Param *p = &m.ps.p[i];
        if (!p->trainable) continue;
        for (size_t j = 0; j < p->t.n; j++) {
            float keep = p->t.data[j];
            p->t.data[j] = keep + h;
            double fp = loss_of_mode(&m, &t, false, true, 4, &out);
            p->t.data[j] = keep - h;
            double fm = loss_of_mode(&m, &t, false, true, 4, &out);
            p->t.data[j] = keep;
            double num = (fp - fm) / (2.0 * (double)h), a = (double)p->t.grad[j];
            checked++;
            if (!(fabs(a - num) <= 1e-3 + 2e-2 * fabs(num))) {
                if (bad < 8)
                    fprintf(stderr, "%s[%zu]: analytic %.6g numeric %.6g\n", p->name, j, a, num);
                bad++;
            }
        }
    }
    ck_assert_int_eq(checked, (int)params_count(&m.ps, true));
    ck_assert_int_eq(bad, 0);
    tape_free(&t);
    model_free(&m);
}

START_TEST(test_model_grads_adapters) {
    LoraSpec lo = all_targets(2, 0.2f);
    check_grads(&lo);
}
END_TEST

START_TEST(test_model_grads_unfrozen) {
    LoraSpec lo = all_targets(2, 0.0f);
    lo.targets = (1u << LORA_Q) | (1u << LORA_O);
    lo.train_router = lo.train_experts = true;
    check_grads(&lo);
}
END_TEST

/* Evaluation (train = false) draws no dropout: the logits of a dropout-0.5 model equal
 * those of the same adapters without dropout, bit for bit. */
START_TEST(test_eval_without_dropout) {
    ModelShape s = tiny_shape(4);
    make_batch(s.V);
    LoraSpec with = all_targets(2, 0.5f), without = all_targets(2, 0.0f);
    Model a, b;
    model_init_lora(&a, &s, &with, 0, s.E, 5);
    model_init_lora(&b, &s, &without, 0, s.E, 5);
    randomise_lora_b(&a, 1);
    randomise_lora_b(&b, 1);
    Tape t;
    tape_init(&t, 1 << 20);
    float la[TB * TT * 11], lb[TB * TT * 11];
    logits_of(&a, &t, la);
    logits_of(&b, &t, lb);
    ck_assert(!memcmp(la, lb, sizeof la));
    /* and training with dropout does change the loss (the mask is really applied) */
    ModelOut o;
    ck_assert(loss_of_mode(&a, &t, false, true, 4, &o) !=
              loss_of_mode(&b, &t, false, true, 4, &o));
    tape_free(&t);
    model_free(&a);
    model_free(&b);
}
END_TEST

/* finetune_merge's plain model computes the LoRA model's logits. 1e-5 absolute: the merged
 * product sums in another order (x W' vs x W + s B (A x)), a few eps_f32 on O(1) logits. */
START_TEST(test_merged_logits) {
    ModelShape s = tiny_shape(4);
    make_batch(s.V);
    LoraSpec lo = all_targets(3, 0.0f);
    lo.targets = (1u << LORA_K) | (1u << LORA_V) | (1u << LORA_O) | (1u << LORA_Q);
    Model lm, plain;
    model_init_lora(&lm, &s, &lo, 0, s.E, 8);
    randomise_lora_b(&lm, 2);
    finetune_merge(&lm, &plain);
    ck_assert_int_eq(plain.lora.rank, 0);
    Tape t;
    tape_init(&t, 1 << 20);
    float a[TB * TT * 11], b[TB * TT * 11];
    logits_of(&lm, &t, a);
    logits_of(&plain, &t, b);
    ck_assert(tt_max_err(b, a, sizeof a / sizeof a[0], 1e-5, 0.0) <= 1.0);
    /* and the adapters matter: the base model alone is far off */
    Model base;
    model_init(&base, &s, 0, s.E, 8);
    logits_of(&base, &t, b);
    ck_assert(tt_max_err(b, a, sizeof a / sizeof a[0], 1e-3, 0.0) > 1.0);
    tape_free(&t);
    model_free(&lm);
    model_free(&plain);
    model_free(&base);
}
END_TEST

/* ---------------- adapter checkpoints ---------------- */

START_TEST(test_adapter_checkpoint) {
    char dir[] = "/tmp/moe-lora-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char tok[256], full[256], ad[256];
    snprintf(tok, sizeof tok, "%s/tok.bpe", dir);
    snprintf(full, sizeof full, "%s/full.h5", dir);
    snprintf(ad, sizeof ad, "%s/adapter.h5", dir);
    FILE *f = fopen(tok, "w");
    fputs("stand-in tokenizer bytes", f);
    fclose(f);
    ModelShape s = tiny_shape(4);
    Config c;
    config_defaults(&c);
    LoraSpec lo = all_targets(2, 0.0f);
    lo.train_router = true;
    MoeErr err;
    /* a full base checkpoint, and a LoRA model trained one step on top of it */
    Model base, lm, back;
    model_init(&base, &s, 0, s.E, 21);
    CkptMeta meta = {.step = 0, .seed = 1};
    ck_assert_msg(ckpt_save(full, &c, &base, &meta, tok, false, &err) == 0, "%s", err.msg);
    model_init_lora(&lm, &s, &lo, 0, s.E, 22);
    ck_assert_msg(ckpt_load_base(full, &lm, &err) == 0, "%s", err.msg);
    make_batch(s.V);
    Tape t;
    tape_init(&t, 1 << 20);
    ModelOut out;
    params_zero_grad(&lm.ps);
    loss_of_mode(&lm, &t, true, true, 4, &out);
    tape_backward(&t, out.loss, NULL);
    AdamWConfig ac = {0.9f, 0.95f, 1e-8f, 0.1f};
    adamw_step(&lm.ps, &ac, 1e-2f, 1);
    CkptMeta am = {.step = 1, .seed = 1, .adapter = true, .base_checksum = 0x1234abcdULL};
    snprintf(am.base_path, sizeof am.base_path, "%s", full);
    ck_assert_msg(ckpt_save(ad, &c, &lm, &am, tok, true, &err) == 0, "%s", err.msg);
    /* the file: the trainable tensors only, and the base attributes */
    CkptInfo info;
    ck_assert(ckpt_inspect(ad, &info, &err) == 0);
    ck_assert(info.meta.adapter && info.meta.base_checksum == 0x1234abcdULL);
    ck_assert_str_eq(info.meta.base_path, full);
    ck_assert_uint_eq(info.n_params, params_count(&lm.ps, true));
    ck_assert_uint_eq(info.n_optim, 2 * params_count(&lm.ps, true));
    ckpt_info_free(&info);
    /* base + adapter file into a fresh LoRA model: values and moments bit for bit */
    model_init_lora(&back, &s, &lo, 0, s.E, 99);
    ck_assert(ckpt_load_base(full, &back, &err) == 0);
    CkptMeta rm;
    ck_assert_msg(ckpt_load(ad, &back, &rm, true, &err) == 0, "%s", err.msg);
    ck_assert(rm.adapter && rm.step == 1);
    for (int b = 0; b < PBLOCK_COUNT; b++) {
        const ParamBlock *x = &lm.ps.blocks[b], *y = &back.ps.blocks[b];
        ck_assert(!memcmp(x->data, y->data, x->n * sizeof(float)));
        ck_assert(!memcmp(x->m, y->m, x->gn * sizeof(float)));
        ck_assert(!memcmp(x->v, y->v, x->gn * sizeof(float)));
    }
    /* refusals: the adapter file as a base, into a plain model; a full file into LoRA */
    Model plain;
    model_init(&plain, &s, 0, s.E, 1);
    ck_assert(ckpt_load_base(ad, &back, &err) != 0);
    ck_assert(strstr(err.msg, "adapter checkpoint") != NULL);
    ck_assert(ckpt_load(ad, &plain, NULL, false, &err) != 0);
    ck_assert(strstr(err.msg, "adapter checkpoint") != NULL);
    ck_assert(ckpt_load(full, &back, NULL, false, &err) != 0);
    ck_assert(strstr(err.msg, "full checkpoint") != NULL);
    /* the checksum is of the bytes: a copy has the same, one changed byte another */
    uint64_t s1 = 0, s2 = 0;
    ck_assert(ckpt_file_checksum(full, &s1, &err) == 0);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "cp %s %s/copy.h5 && printf 'x' >> %s/copy.h5", full, dir, dir);
    ck_assert(system(cmd) == 0);
    snprintf(cmd, sizeof cmd, "%s/copy.h5", dir);
    ck_assert(ckpt_file_checksum(cmd, &s2, &err) == 0);
    ck_assert(s1 != s2);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert(system(cmd) == 0);
    tape_free(&t);
    model_free(&plain);
    model_free(&base);
    model_free(&lm);
    model_free(&back);
    config_free(&c);
}
END_TEST

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    Suite *s = suite_create("lora");
    TCase *tc = tcase_create("op");
    tcase_add_test(tc, test_linear_forward);
    tcase_add_test(tc, test_linear_grad);
    tcase_add_test(tc, test_dropout_mask);
    tcase_add_test(tc, test_merge);
    suite_add_tcase(s, tc);
    tc = tcase_create("model");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_step0_bit_equal);
    tcase_add_test(tc, test_trainable_count);
    tcase_add_test(tc, test_no_optimizer_state_for_frozen);
    tcase_add_test(tc, test_base_frozen_after_training);
    tcase_add_test(tc, test_model_grads_adapters);
    tcase_add_test(tc, test_model_grads_unfrozen);
    tcase_add_test(tc, test_eval_without_dropout);
    tcase_add_test(tc, test_merged_logits);
    suite_add_tcase(s, tc);
    tc = tcase_create("checkpoint");
    tcase_add_test(tc, test_adapter_checkpoint);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
