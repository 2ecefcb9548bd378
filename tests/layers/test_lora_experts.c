/* test_lora_experts.c: LoRA on the experts and the router (layers/lora.h, autograd/ops.h
 * op_expert_lora_linear).
 * - op_expert_lora_linear, per-expert (A (E, r, in), B (E, out, r)) and shared (A (r, in),
 *   B (out, r)) adapters, with empty experts: forward against a naive double reference;
 *   dx, dA, dB (and dW when W trains) against central finite differences; a frozen W gets
 *   no gradient; an empty expert's adapter gradients stay zero;
 * - lora_linear_fp32 (the router's gate adapter) against the same reference, and its
 *   gradients;
 * - the model with w1/w2/w3 and gate adapters (per expert and shared): at step 0 (B = 0) the
 *   loss and logits equal the plain model's bit for bit; the trainable count follows the
 *   shapes (per expert E times the shared count); per-expert adapters live in the EXPERT
 *   block, shared ones and the gate's in the DENSE block; AdamW steps move every adapter
 *   and leave every base tensor's bits, with no allocation after the first step;
 *   whole-model finite differences
 *   for every adapter element; finetune_merge's plain model gives the adapted model's
 *   logits; the default targets (attention only) leave the expert path unchanged.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/blas.h"
#include "checkpoints/finetune.h"
#include "layers/lora.h"
#include "layers/model.h"
#include "optim/adamw.h"
#include "model_test.h"
#include "testutil.h"

/* Forward: float32 kernels vs a double reference on O(1) data, sums of ~10 terms: a few
 * eps_f32 (6e-8) per term, so 1e-5 + 1e-5 relative is ~10x above rounding and far below an
 * indexing or scaling bug (O(0.1)). */
#define FWD_ATOL 1e-5
#define FWD_RTOL 1e-5

/* ---------------- op_expert_lora_linear ---------------- */

typedef struct XCase {
    int E, din, dout, r;
    int32_t offs[5];
    bool shared, train_w;
} XCase;

static const XCase k_cases[] = {
    {3, 5, 4, 2, {0, 2, 2, 5}, false, false},      /* per expert, expert 1 empty */
    {3, 5, 4, 2, {0, 2, 2, 5}, true, false},       /* shared, expert 1 empty */
    {4, 3, 6, 3, {0, 0, 3, 3, 4}, false, true},    /* per expert, W trains too */
    {4, 3, 6, 1, {0, 1, 2, 4, 4}, true, true},     /* shared, rank 1, W trains */
};

/* y (M, out) = x W_e^T + s (x A_e^T) B_e^T per expert's rows, in double. */
static void xlora_ref(const XCase *c, const float *x, const float *w, const float *a,
                      const float *b, double s, float *y) {
    const int din = c->din, dout = c->dout, r = c->r;
    for (int e = 0; e < c->E; e++) {
        const float *we = w + (size_t)e * dout * din;
        const float *ae = c->shared ? a : a + (size_t)e * r * din;
        const float *be = c->shared ? b : b + (size_t)e * dout * r;
        for (int m = c->offs[e]; m < c->offs[e + 1]; m++)
            for (int o = 0; o < dout; o++) {
                double base = 0.0, ad = 0.0;
                for (int i = 0; i < din; i++) base += (double)x[m * din + i] * (double)we[o * din + i];
                for (int k = 0; k < r; k++) {
                    double u = 0.0;
                    for (int i = 0; i < din; i++) u += (double)x[m * din + i] * (double)ae[k * din + i];
                    ad += (double)be[o * r + k] * u;
                }
                y[m * dout + o] = (float)(base + s * ad);
            }
    }
}

static Tensor *build_xlora(Tape *t, Tensor **in, void *ctx) {
    const XCase *c = ctx;
    return op_expert_lora_linear(t, in[0], in[1], in[2], in[3], c->offs, c->E, 0.7f);
}

static void make_xcase(const XCase *c, Tensor **in, uint64_t seed) {
    const int M = c->offs[c->E];
    const int ws[3] = {c->E, c->dout, c->din};
    const int as[3] = {c->E, c->r, c->din}, bs[3] = {c->E, c->dout, c->r};
    in[0] = tt_tensor2(M, c->din, TENSOR_PARAM, "x");
    in[1] = tt_tensor(3, ws, c->train_w ? TENSOR_PARAM : TENSOR_FROZEN, "W");
    in[2] = tt_tensor(c->shared ? 2 : 3, as + c->shared, TENSOR_PARAM, "A");
    in[3] = tt_tensor(c->shared ? 2 : 3, bs + c->shared, TENSOR_PARAM, "B");
    for (int i = 0; i < 4; i++) tt_fill_uniform(in[i], seed + (uint64_t)i, -1.0f, 1.0f);
}

START_TEST(test_expert_lora_forward) {
    const XCase *c = &k_cases[_i];
    Tensor *in[4];
    make_xcase(c, in, 100 + (uint64_t)_i * 10);
    const int M = c->offs[c->E];
    float *ref = malloc(sizeof(float) * (size_t)M * c->dout);
    xlora_ref(c, in[0]->data, in[1]->data, in[2]->data, in[3]->data, 0.7, ref);
    Tape tape;
    tape_init(&tape, 1 << 16);
    tape_reset(&tape, false);
    Tensor *y = build_xlora(&tape, in, (void *)c);
    ck_assert_int_eq((int)tensor_rows(y), M);
    ck_assert_msg(tt_max_err(y->data, ref, y->n, FWD_ATOL, FWD_RTOL) <= 1.0, "case %d", _i);
    /* B = 0: exactly the base grouped product (op_expert_linear), bit for bit */
    memset(in[3]->data, 0, sizeof(float) * in[3]->n);
    tape_reset(&tape, false);
    Tensor *y0 = build_xlora(&tape, in, (void *)c);
    Tensor *yb = op_expert_linear(&tape, in[0], in[1], c->offs, c->E);
    ck_assert(!memcmp(y0->data, yb->data, sizeof(float) * y0->n));
    tape_free(&tape);
    free(ref);
    for (int i = 0; i < 4; i++) tt_free(in[i]);
}
END_TEST

/* Central differences, h = 1e-2: y is linear in each single element of x, W, A and B, so
 * the quotient has no truncation error, only float32 rounding of O(1) outputs summed over
 * ~30 of them and divided by 2h (~1e-5): atol 1e-4 + rtol 1e-3 is 10x above that; a wrong
 * expert slice, scale or transpose is off by O(0.1). */
START_TEST(test_expert_lora_grad) {
    const XCase *c = &k_cases[_i];
    Tensor *in[4];
    make_xcase(c, in, 200 + (uint64_t)_i * 10);
    int bad = tt_check_grad(build_xlora, (void *)c, in, 4, 1e-2f, 1e-4, 1e-3, "expert lora");
    ck_assert_msg(bad == 0, "case %d: %d mismatches", _i, bad);
    if (!c->train_w) ck_assert_ptr_null(in[1]->grad);   /* frozen W: no gradient at all */
    /* an empty expert's own adapters get no gradient */
    if (!c->shared)
        for (int e = 0; e < c->E; e++) {
            if (c->offs[e] != c->offs[e + 1]) continue;
            const size_t na = (size_t)c->r * c->din, nb = (size_t)c->dout * c->r;
            for (size_t j = 0; j < na; j++) ck_assert(in[2]->grad[e * na + j] == 0.0f);
            for (size_t j = 0; j < nb; j++) ck_assert(in[3]->grad[e * nb + j] == 0.0f);
        }
    for (int i = 0; i < 4; i++) tt_free(in[i]);
}
END_TEST

/* ---------------- lora_linear_fp32 (the gate adapter) ---------------- */

static Tensor *build_fp32(Tape *t, Tensor **in, void *ctx) {
    const LoraDrop *d = ctx;
    return lora_linear_fp32(t, in[0], in[1], in[2], in[3], 1.25f, d);
}

START_TEST(test_gate_lora_fp32) {
    enum { N = 4, C = 6, E = 5, R = 2 };
    Tensor *in[4];
    in[0] = tt_tensor2(N, C, TENSOR_PARAM, "x");
    in[1] = tt_tensor2(E, C, TENSOR_FROZEN, "Wg");
    in[2] = tt_tensor2(R, C, TENSOR_PARAM, "A");
    in[3] = tt_tensor2(E, R, TENSOR_PARAM, "B");
    for (int i = 0; i < 4; i++) tt_fill_uniform(in[i], 300 + (uint64_t)i, -1.0f, 1.0f);
    /* the reference: one "expert" holding every row is the plain LoRA product */
    XCase one = {1, C, E, R, {0, N}, true, false};
    float ref[N * E];
    xlora_ref(&one, in[0]->data, in[1]->data, in[2]->data, in[3]->data, 1.25, ref);
    LoraDrop none = {.p = 0.0f};
    Tape tape;
    tape_init(&tape, 1 << 16);
    tape_reset(&tape, false);
    Tensor *y = build_fp32(&tape, in, &none);
    ck_assert(tt_max_err(y->data, ref, N * E, FWD_ATOL, FWD_RTOL) <= 1.0);
    tape_free(&tape);
    /* gradients with and without dropout (the gate's inputs have token identity); linear
     * in each element: the tolerance of test_expert_lora_grad */
    LoraDrop drop = {.p = 0.3f, .seed = 5, .step = 2, .layer = 1, .target = LORA_GATE,
                     .token_base = 9};
    ck_assert_int_eq(tt_check_grad(build_fp32, &none, in, 4, 1e-2f, 1e-4, 1e-3, "gate"), 0);
    ck_assert_int_eq(tt_check_grad(build_fp32, &drop, in, 4, 1e-2f, 1e-4, 1e-3, "gate drop"),
                     0);
    /* the gate's dropout keys differ from every attention target's */
    float m1[N * C], m2[N * C];
    lora_dropout_mask(m1, N, C, &drop);
    for (int t = 0; t < LORA_N_ATTN; t++)
        for (int l = 0; l < 8; l++) {
            LoraDrop d = drop;
            d.target = t;
            d.layer = l;
            lora_dropout_mask(m2, N, C, &d);
            ck_assert(memcmp(m1, m2, sizeof m1) != 0);
        }
    for (int i = 0; i < 4; i++) tt_free(in[i]);
}
END_TEST

/* ---------------- the model ---------------- */

#define MOE_TARGETS (LORA_EXPERT_MASK | (1u << LORA_GATE))

static LoraSpec moe_spec(int rank, bool shared, float dropout) {
    LoraSpec lo = {.rank = rank, .alpha = 2.0f * (float)rank, .dropout = dropout,
                   .targets = MOE_TARGETS | (1u << LORA_Q), .expert_shared = shared};
    return lo;
}

/* Fresh adapters add exactly zero: the training loss (router noise and the gate adapter's
 * dropout on) and the logits equal the plain model's, bit for bit, per expert and shared. */
START_TEST(test_step0_bit_equal) {
    ModelShape s = tiny_shape(4);
    make_batch(s.V);
    LoraSpec lo = moe_spec(3, _i == 1, 0.0f);
    Model plain, lm;
    model_init(&plain, &s, 0, s.E, 1234);
    model_init_lora(&lm, &s, &lo, 0, s.E, 1234);
    Tape t;
    tape_init(&t, 1 << 20);
    ModelOut o1, o2;
    double l1 = loss_of_mode(&plain, &t, true, true, 4, &o1);
    double l2 = loss_of_mode(&lm, &t, true, true, 4, &o2);
    ck_assert_msg(l1 == l2, "step-0 loss %.9g (plain) vs %.9g (LoRA)", l1, l2);
    float a[TB * TT * 11], b[TB * TT * 11];
    logits_of(&plain, &t, a);
    logits_of(&lm, &t, b);
    ck_assert(!memcmp(a, b, sizeof a));
    tape_free(&t);
    model_free(&plain);
    model_free(&lm);
}
END_TEST

/* Adapter sizes from the shapes: w1, w3 C -> F, w2 F -> C (times E per expert, once
 * shared), gate C -> E, q C -> H D; and the blocks they live in. */
START_TEST(test_counts_and_blocks) {
    ModelShape s = tiny_shape(4);
    const size_t C = 8, F = 6, E = 4, HD = 8, r = 2, L = 2;
    for (int sh = 0; sh < 2; sh++) {
        LoraSpec lo = moe_spec((int)r, sh, 0.0f);
        Model m;
        model_init_lora(&m, &s, &lo, 0, s.E, 1);
        const size_t experts = 3 * r * (C + F) * (sh ? 1 : E);
        const size_t dense = r * (C + E) + r * (C + HD) + (sh ? experts : 0);
        ck_assert_uint_eq(params_count(&m.ps, true), L * ((sh ? 0 : experts) + dense));
        size_t in_block[PBLOCK_COUNT] = {0};
        for (int i = 0; i < m.ps.count; i++)
            if (m.ps.p[i].trainable) in_block[m.ps.p[i].block] += m.ps.p[i].t.n;
        ck_assert_uint_eq(in_block[PBLOCK_EXPERT], sh ? 0 : L * experts);
        ck_assert_uint_eq(in_block[PBLOCK_DENSE], L * dense);
        ck_assert(lora_trains_expert_block(&lo) == !sh);
        const int i = params_find(&m.ps, sh ? "model.layers.1.block_sparse_moe.experts.w2.lora_B.weight"
                                            : "model.layers.1.block_sparse_moe.experts.{e}.w2.lora_B.weight");
        ck_assert_int_ge(i, 0);
        ck_assert_int_eq(m.ps.p[i].t.ndim, sh ? 2 : 3);
        ck_assert_int_eq(m.ps.p[i].t.shape[sh ? 0 : 1], (int)C);   /* B of w2: (C, r) */
        ck_assert(params_find(&m.ps, "model.layers.0.block_sparse_moe.gate.lora_A.weight") >= 0);
        model_free(&m);
    }
}
END_TEST

/* A few AdamW steps with weight decay: every base tensor (experts and router included)
 * keeps its exact bits, every adapter A and B moves, and after the first step nothing
 * allocates (the adapters' products and saved state come from the tape's arena). */
START_TEST(test_base_frozen_no_alloc) {
    ModelShape s = tiny_shape(4);
    make_batch(s.V);
    LoraSpec lo = moe_spec(2, _i == 1, 0.0f);
    Model m;
    model_init_lora(&m, &s, &lo, 0, s.E, 3);
    float *keep[PBLOCK_COUNT];
    for (int b = 0; b < PBLOCK_COUNT; b++) {
        keep[b] = moe_malloc(m.ps.blocks[b].n * sizeof(float) + 1);
        memcpy(keep[b], m.ps.blocks[b].data, m.ps.blocks[b].n * sizeof(float));
    }
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
    int moved = 0, adapters = 0;
    for (int i = 0; i < m.ps.count; i++) {
        const Param *p = &m.ps.p[i];
        const bool same = !memcmp(keep[p->block] + p->off, p->t.data, p->t.n * sizeof(float));
        if (lora_is_adapter(p->name)) adapters++, moved += !same;
        else ck_assert_msg(same, "base tensor %s changed", p->name);
    }
    ck_assert_int_eq(adapters, 2 * 5 * s.L);   /* q, w1, w2, w3, gate: A and B each */
    ck_assert_int_eq(moved, adapters);
    tape_free(&t);
    for (int b = 0; b < PBLOCK_COUNT; b++) moe_free(keep[b]);
    model_free(&m);
}
END_TEST

/* Central differences of the total loss for every adapter element (B random so dA is not
 * zero), training forward with router noise and the gate's dropout (expert adapters take
 * none). test_lora's tolerance and reasoning: h = 1e-3 on a float32 loss of ~2.4 gives FD
 * noise ~2.4e-4 (atol 1e-3), rtol 2e-2 covers O(h^2) truncation on the curved parts. */
START_TEST(test_model_grads) {
    ModelShape s = tiny_shape(4);
    make_batch(s.V);
    LoraSpec lo = moe_spec(2, _i == 1, 0.0f);
    Model m;
    model_init_lora(&m, &s, &lo, 0, s.E, 1234);
    m.lora.dropout = 0.2f;   /* the gate's adapter only (config_validate's rule) */
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
END_TEST

/* finetune_merge folds every adapter (per expert, shared, gate) into its weight: the plain
 * model's logits equal the adapted model's within 1e-5 absolute (the merged product sums
 * in another order, a few eps_f32 on O(1) logits), and the adapters matter (the base alone
 * is off by more than 1e-3). */
START_TEST(test_merged_logits) {
    ModelShape s = tiny_shape(4);
    make_batch(s.V);
    LoraSpec lo = moe_spec(3, _i == 1, 0.0f);
    Model lm, plain, base;
    model_init_lora(&lm, &s, &lo, 0, s.E, 8);
    randomise_lora_b(&lm, 2);
    finetune_merge(&lm, &plain);
    model_init(&base, &s, 0, s.E, 8);
    Tape t;
    tape_init(&t, 1 << 20);
    float a[TB * TT * 11], b[TB * TT * 11];
    logits_of(&lm, &t, a);
    logits_of(&plain, &t, b);
    ck_assert(tt_max_err(b, a, sizeof a / sizeof a[0], 1e-5, 0.0) <= 1.0);
    logits_of(&base, &t, b);
    ck_assert(tt_max_err(b, a, sizeof a / sizeof a[0], 1e-3, 0.0) > 1.0);
    tape_free(&t);
    model_free(&lm);
    model_free(&plain);
    model_free(&base);
}
END_TEST

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    Suite *s = suite_create("lora_experts");
    TCase *tc = tcase_create("op");
    const int n = (int)(sizeof k_cases / sizeof k_cases[0]);
    tcase_add_loop_test(tc, test_expert_lora_forward, 0, n);
    tcase_add_loop_test(tc, test_expert_lora_grad, 0, n);
    tcase_add_test(tc, test_gate_lora_fp32);
    suite_add_tcase(s, tc);
    tc = tcase_create("model");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_step0_bit_equal, 0, 2);   /* per expert, shared */
    tcase_add_test(tc, test_counts_and_blocks);
    tcase_add_loop_test(tc, test_base_frozen_no_alloc, 0, 2);
    tcase_add_loop_test(tc, test_model_grads, 0, 2);
    tcase_add_loop_test(tc, test_merged_logits, 0, 2);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
