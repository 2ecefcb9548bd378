/* test_ops.c: the ops on the tape, together: a small model step through most dense ops
 * against central differences, gradients accumulating across tapes and in every backward
 * (a kernel that writes instead of adding shows), no arena growth after the first step,
 * and the activation-gradient liveness plan (tape_backward's plan: the same gradients bit
 * for bit as without it, less memory, re-planned when the graph changes). The ops one by
 * one: test_ops_linear.c, test_ops_elementwise.c, test_ops_norm.c, test_ops_rows.c,
 * test_ops_loss.c. Tolerances: ops_test.h.
 */
#include "ops_test.h"

#include "autograd/blas.h"
#include "core/pool.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------- tape plumbing ---------------- */

typedef struct {
    const int32_t *ids, *tgt;
    int N;
} ChainCtx;

/* A small model step through most ops: embedding -> rmsnorm -> linear -> swiglu -> rope
 * -> + residual -> softmax * x -> scale -> linear -> cross-entropy + mean(softplus). */
static Tensor *b_chain(Tape *t, Tensor **in, void *ctx) {
    const ChainCtx *c = ctx;
    Tensor *emb = in[0], *g = in[1], *w1 = in[2], *w2 = in[3], *wo = in[4];
    Tensor *h = op_embedding(t, emb, c->ids, c->N);           /* (N, 4) */
    Tensor *n = op_rmsnorm(t, h, g, 1e-5f);
    Tensor *a = op_linear(t, n, w1), *b = op_linear(t, n, w2); /* (N, 4) */
    Tensor *s = op_swiglu(t, a, b);
    Tensor *r = op_rope(t, s, 1, c->N, 1, 4, 10000.0f, 2);
    Tensor *x = op_add(t, h, r);
    Tensor *p = op_mul(t, op_softmax(t, x), x);
    Tensor *logits = op_linear(t, op_scale(t, p, 1.5f), wo);  /* (N, 5) */
    Tensor *ce = op_cross_entropy(t, logits, c->tgt, 0.5f, 0);
    return op_add(t, ce, op_mean(t, op_softplus(t, op_silu(t, logits))));
}

START_TEST(chain_backward_fd) {
    const int32_t ids[3] = {1, 4, 1}, tgt[3] = {0, -1, 3};
    ChainCtx c = {ids, tgt, 3};
    Tensor *emb = rnd2(6, 4, TENSOR_PARAM, "emb", 90, -1, 1);
    Tensor *g = rnd2(1, 4, TENSOR_PARAM, "g", 91, 0.5f, 1.5f);
    Tensor *w1 = rnd2(4, 4, TENSOR_PARAM, "w1", 92, -1, 1);
    Tensor *w2 = rnd2(4, 4, TENSOR_PARAM, "w2", 93, -1, 1);
    Tensor *wo = rnd2(5, 4, TENSOR_PARAM, "wo", 94, -1, 1);
    Tensor *in[5] = {emb, g, w1, w2, wo};
    /* Deeper composition: larger f''' than a single op, hence atol 2e-3. */
    ck_assert_int_eq(tt_check_grad(b_chain, &c, in, 5, FD_H, 2e-3, FD_RTOL, "chain"), 0);
    for (int i = 0; i < 5; i++) tt_free(in[i]);
}
END_TEST

/* One pass of linear -> sum on its own tape; W->grad accumulates (not overwritten). */
static void linear_pass(Tensor *x, Tensor *w) {
    Tape t;
    new_tape(&t, true);
    tape_backward(&t, op_sum(&t, op_linear(&t, x, w)), NULL);
    tape_free(&t);
}

START_TEST(grad_accumulates_across_tapes) {
    Tensor *w = rnd2(4, 5, TENSOR_PARAM, "w", 100, -1, 1);
    Tensor *x1 = rnd2(3, 5, TENSOR_CONST, "x1", 101, -1, 1);
    Tensor *x2 = rnd2(2, 5, TENSOR_CONST, "x2", 102, -1, 1);
    float g1[20], g2[20], both[20];
    linear_pass(x1, w);
    memcpy(g1, w->grad, sizeof g1);
    memset(w->grad, 0, sizeof g1);
    linear_pass(x2, w);
    memcpy(g2, w->grad, sizeof g2);
    memset(w->grad, 0, sizeof g2);
    linear_pass(x1, w);
    linear_pass(x2, w);
    for (int j = 0; j < 20; j++) both[j] = g1[j] + g2[j];
    /* Same sgemm calls, one extra float addition: 2^-24 relative. */
    expect_close(w->grad, both, 20, EW_ATOL, EW_RTOL, "accumulated dW");
    /* And g1 itself is dy^T x with dy = ones: dW[o][k] = sum_n x1[n][k]. */
    float r1[20];
    for (int o = 0; o < 4; o++)
        for (int k = 0; k < 5; k++) {
            double s = 0;
            for (int n = 0; n < 3; n++) s += (double)x1->data[n * 5 + k];
            r1[o * 5 + k] = (float)s;
        }
    expect_close(g1, r1, 20, EW_ATOL, EW_RTOL, "dW of one pass");
    tt_free(w);
    tt_free(x1);
    tt_free(x2);
}
END_TEST

/* Every backward ACCUMULATES: with the input grads pre-filled with 0.5, a second backward
 * gives 0.5 + (the gradient from zeroed buffers). A kernel that writes (=) instead of += is
 * invisible to a single-op FD check, so each op is run here. */
static void check_accumulates(TTBuild build, void *ctx, Tensor **in, int n_in, const char *what) {
    float *g0[4];
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < n_in; i++)
            for (size_t j = 0; j < in[i]->n; j++) in[i]->grad[j] = pass ? 0.5f : 0.0f;
        Tape t;
        new_tape(&t, true);
        tape_backward(&t, op_sum(&t, build(&t, in, ctx)), NULL);
        tape_free(&t);
        for (int i = 0; i < n_in; i++) {
            if (pass == 0) {
                g0[i] = malloc(in[i]->n * sizeof(float));
                for (size_t j = 0; j < in[i]->n; j++) g0[i][j] = in[i]->grad[j] + 0.5f;
            } else {
                /* The same arithmetic plus one addition of 0.5: a few ulp of O(1) values. */
                expect_close(in[i]->grad, g0[i], in[i]->n, EW_ATOL, EW_RTOL, what);
                free(g0[i]);
            }
        }
    }
}

START_TEST(every_backward_accumulates) {
    Tensor *a = rnd2(3, 5, TENSOR_PARAM, "a", 110, -1, 1);
    Tensor *b = rnd2(3, 5, TENSOR_PARAM, "b", 111, -1, 1);
    Tensor *w = rnd2(4, 5, TENSOR_PARAM, "w", 112, -1, 1);
    Tensor *g = rnd2(1, 5, TENSOR_PARAM, "g", 113, 0.5f, 1.5f);
    Tensor *ab[2] = {a, b}, *aw[2] = {a, w}, *ag[2] = {a, g}, *a1[1] = {a}, *w1[1] = {w};
    float s = 1.5f, eps = 1e-5f;
    RopeCtx rc = {1, 3, 1, 4, 2, 10000.0f}; /* applied to r (3, 4) below */
    const int32_t ids[3] = {3, 0, 3}, tgt[3] = {4, -1, 0};
    EmbCtx ec = {ids, 3};
    CeCtx cc = {tgt, 0.5f, 0};
    check_accumulates(b_linear, NULL, aw, 2, "linear accumulates");
    check_accumulates(b_add, NULL, ab, 2, "add accumulates");
    check_accumulates(b_mul, NULL, ab, 2, "mul accumulates");
    check_accumulates(b_scale, &s, a1, 1, "scale accumulates");
    check_accumulates(b_silu, NULL, a1, 1, "silu accumulates");
    check_accumulates(b_swiglu, NULL, ab, 2, "swiglu accumulates");
    check_accumulates(b_softplus, NULL, a1, 1, "softplus accumulates");
    check_accumulates(b_rmsnorm, &eps, ag, 2, "rmsnorm accumulates");
    check_accumulates(b_embedding, &ec, w1, 1, "embedding accumulates");
    check_accumulates(b_softmax, NULL, a1, 1, "softmax accumulates");
    check_accumulates(b_cross_entropy, &cc, a1, 1, "cross_entropy accumulates");
    check_accumulates(b_sum, NULL, a1, 1, "sum accumulates");
    check_accumulates(b_mean, NULL, a1, 1, "mean accumulates");
    Tensor *r = rnd2(3, 4, TENSOR_PARAM, "r", 114, -1, 1), *r1[1] = {r};
    check_accumulates(b_rope, &rc, r1, 1, "rope accumulates");
    tt_free(a);
    tt_free(b);
    tt_free(w);
    tt_free(g);
    tt_free(r);
}
END_TEST

/* After the first step, the same forward + backward on a reset tape reuses the arena chunks:
 * no chunk is added and moe_malloc is never called. A 1 KiB chunk size forces several chunks
 * in the first step so the reuse path is exercised. */
START_TEST(no_growth_after_first_step) {
    const int32_t ids[3] = {1, 4, 1}, tgt[3] = {0, -1, 3};
    ChainCtx c = {ids, tgt, 3};
    Tensor *in[5] = {rnd2(6, 4, TENSOR_PARAM, "emb", 90, -1, 1),
                     rnd2(1, 4, TENSOR_PARAM, "g", 91, 0.5f, 1.5f),
                     rnd2(4, 4, TENSOR_PARAM, "w1", 92, -1, 1),
                     rnd2(4, 4, TENSOR_PARAM, "w2", 93, -1, 1),
                     rnd2(5, 4, TENSOR_PARAM, "wo", 94, -1, 1)};
    Tape t;
    tape_init(&t, 1024);
    size_t grows = 0, ggrows = 0, calls = 0, used = 0;
    for (int step = 0; step < 3; step++) {
        tape_reset(&t, true);
        Tensor *loss = b_chain(&t, in, &c);
        tape_backward(&t, loss, NULL);
        ck_assert(isfinite(loss->data[0]));
        if (step == 0) {
            ck_assert_msg(t.arena.grows > 1, "chunk size too big to exercise several chunks");
            grows = t.arena.grows;
            ggrows = t.grad_arena.grows;
            calls = moe_alloc_calls();
            used = arena_used(&t.arena);
        } else {
            ck_assert_uint_eq(t.arena.grows, grows);
            ck_assert_uint_eq(t.grad_arena.grows, ggrows);
            ck_assert_uint_eq(moe_alloc_calls(), calls);
            ck_assert_uint_eq(arena_used(&t.arena), used);
        }
    }
    tape_free(&t);
    for (int i = 0; i < 5; i++) tt_free(in[i]);
}
END_TEST

/* ---- activation-grad liveness plan (tape_backward with plan_grads) ---- */

/* A two-block transformer-like tape: every op kind that the model uses on the dense path,
 * residual streams consumed far apart, a dangling output and a loss built from several
 * terms, so regions really are shared and zeroed at different times. */
static Tensor *b_plan(Tape *t, Tensor **in, void *ctx) {
    const ChainCtx *c = ctx;
    Tensor *emb = in[0], *g = in[1], *wq = in[2], *wk = in[3], *wo = in[4], *w1 = in[5];
    Tensor *x = op_embedding(t, emb, c->ids, c->N);              /* (N, 4) */
    for (int l = 0; l < 2; l++) {
        Tensor *n = op_rmsnorm(t, x, g, 1e-5f);
        Tensor *q = op_rope(t, op_linear(t, n, wq), 1, c->N, 2, 2, 10000.0f, 0);
        Tensor *k = op_rope(t, op_linear(t, n, wk), 1, c->N, 1, 2, 10000.0f, 0);
        Tensor *v = op_linear(t, n, wk);                          /* (N, 2) */
        Tensor *a = op_attention(t, q, k, v, 1, c->N, 2, 1, 2, 0); /* (N, 4) */
        x = op_add(t, x, op_linear(t, a, wo));
        Tensor *h = op_rmsnorm(t, x, g, 1e-5f);
        Tensor *f = op_swiglu(t, op_linear(t, h, w1), op_linear(t, h, wq));
        (void)op_silu(t, f);                                      /* never consumed */
        x = op_add(t, x, op_scale(t, op_mul(t, f, op_softmax(t, f)), 0.5f));
    }
    Tensor *ce = op_cross_entropy(t, op_linear(t, x, emb), c->tgt, 0.5f, 0);
    return op_add(t, ce, op_mean(t, op_softplus(t, x)));
}

/* Parameter grads of the second of two identical steps on one tape (the second re-uses
 * the first's plan), planned or not. */
static void plan_grads(TTBuild build, void *ctx, Tensor **in, int n_in, bool plan,
                       float **out) {
    Tape t;
    tape_init(&t, 1024);
    t.plan_grads = plan;
    for (int step = 0; step < 2; step++) {   /* step 2 re-uses the plan */
        for (int i = 0; i < n_in; i++) memset(in[i]->grad, 0, in[i]->n * sizeof(float));
        tape_reset(&t, true);
        tape_backward(&t, build(&t, in, ctx), NULL);
    }
    if (plan) ck_assert_msg(tape_grad_plan_bytes(&t) > 0, "no plan was made");
    tape_free(&t);
    for (int i = 0; i < n_in; i++) {
        out[i] = malloc(in[i]->n * sizeof(float));
        memcpy(out[i], in[i]->grad, in[i]->n * sizeof(float));
    }
}

static Tensor **plan_inputs(void) {
    static Tensor *in[6];
    in[0] = rnd2(6, 4, TENSOR_PARAM, "emb", 120, -1, 1);
    in[1] = rnd2(1, 4, TENSOR_PARAM, "g", 121, 0.5f, 1.5f);
    in[2] = rnd2(4, 4, TENSOR_PARAM, "wq", 122, -1, 1);
    in[3] = rnd2(2, 4, TENSOR_PARAM, "wk", 123, -1, 1);
    in[4] = rnd2(4, 4, TENSOR_PARAM, "wo", 124, -1, 1);
    in[5] = rnd2(4, 4, TENSOR_PARAM, "w1", 125, -1, 1);
    return in;
}

/* Planned and unplanned backward do the same float operations in the same order (a
 * region is zeroed before its first += exactly as a fresh zeroed buffer would be): the
 * parameter grads must be bit-identical. */
START_TEST(grad_plan_matches_unplanned) {
    const int32_t ids[5] = {1, 4, 1, 0, 5}, tgt[5] = {0, -1, 3, 5, 2};
    ChainCtx c = {ids, tgt, 5};
    Tensor **in = plan_inputs();
    float *ref[6], *got[6];
    plan_grads(b_plan, &c, in, 6, false, ref);
    plan_grads(b_plan, &c, in, 6, true, got);
    for (int i = 0; i < 6; i++) {
        ck_assert_msg(memcmp(ref[i], got[i], in[i]->n * sizeof(float)) == 0,
                      "planned grad of %s differs", in[i]->name);
        free(ref[i]);
        free(got[i]);
    }
    /* And the planned backward is right, not just consistent: finite differences. */
    ck_assert_int_eq(tt_check_grad(b_plan, &c, in, 6, FD_H, 2e-3, FD_RTOL, "plan"), 0);
    for (int i = 0; i < 6; i++) tt_free(in[i]);
}
END_TEST

/* The plan shares memory: it is smaller than one buffer per activation grad. */
START_TEST(grad_plan_shares_memory) {
    const int32_t ids[5] = {1, 4, 1, 0, 5}, tgt[5] = {0, -1, 3, 5, 2};
    ChainCtx c = {ids, tgt, 5};
    Tensor **in = plan_inputs();
    Tape t;
    tape_init(&t, 1 << 20);
    t.plan_grads = false;
    tape_reset(&t, true);
    tape_backward(&t, b_plan(&t, in, &c), NULL);
    size_t unplanned = arena_used(&t.grad_arena);
    t.plan_grads = true;
    tape_reset(&t, true);
    tape_backward(&t, b_plan(&t, in, &c), NULL);
    size_t planned = tape_grad_plan_bytes(&t);
    ck_assert_msg(planned > 0 && planned < unplanned / 2, "planned %zu vs unplanned %zu bytes",
                  planned, unplanned);
    tape_free(&t);
    for (int i = 0; i < 6; i++) tt_free(in[i]);
}
END_TEST

/* One tape object alternating between two different graphs re-plans each time (the
 * signature differs) and stays exact; backward from an intermediate that a later op also
 * consumes keeps its seed (its region is live from the start). */
START_TEST(grad_plan_replans) {
    const int32_t ids[3] = {1, 4, 1}, tgt[3] = {0, -1, 3};
    ChainCtx c = {ids, tgt, 3};
    Tensor *in5[5] = {rnd2(6, 4, TENSOR_PARAM, "emb", 90, -1, 1),
                      rnd2(1, 4, TENSOR_PARAM, "g", 91, 0.5f, 1.5f),
                      rnd2(4, 4, TENSOR_PARAM, "w1", 92, -1, 1),
                      rnd2(4, 4, TENSOR_PARAM, "w2", 93, -1, 1),
                      rnd2(5, 4, TENSOR_PARAM, "wo", 94, -1, 1)};
    float *ref[5];
    plan_grads(b_chain, &c, in5, 5, false, ref);
    Tape t;
    tape_init(&t, 1024);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 5; i++) memset(in5[i]->grad, 0, in5[i]->n * sizeof(float));
        /* A different graph in between: y = linear(x, w1) is the backward root, and is
         * consumed afterwards by an add whose output is never used. */
        tape_reset(&t, true);
        Tensor *h = op_embedding(&t, in5[0], ids, 3);
        Tensor *y = op_linear(&t, h, in5[2]);
        (void)op_add(&t, op_mul(&t, y, y), h);
        tape_backward(&t, y, NULL);
        /* dW1 = ones^T h: row o of dW1 is the column sums of h. */
        for (int k = 0; k < 4; k++) {
            double s = 0;
            for (int n = 0; n < 3; n++) s += (double)h->data[n * 4 + k];
            EXPECT_NEAR(in5[2]->grad[k], s, 1e-5);
        }
        for (int i = 0; i < 5; i++) memset(in5[i]->grad, 0, in5[i]->n * sizeof(float));
        tape_reset(&t, true);
        tape_backward(&t, b_chain(&t, in5, &c), NULL);
        for (int i = 0; i < 5; i++)
            ck_assert_msg(memcmp(ref[i], in5[i]->grad, in5[i]->n * sizeof(float)) == 0,
                          "round %d: grad of %s differs after a re-plan", round, in5[i]->name);
    }
    tape_free(&t);
    for (int i = 0; i < 5; i++) {
        free(ref[i]);
        tt_free(in5[i]);
    }
}
END_TEST


/* ---------------- suite */

static Suite *ops_suite(void) {
    Suite *s = suite_create("ops");
    struct { const char *name; const TTest *tests[5]; } cases[] = {
        {"tape", {chain_backward_fd, grad_accumulates_across_tapes, every_backward_accumulates,
                  no_growth_after_first_step, NULL}},
        {"grad_plan", {grad_plan_matches_unplanned, grad_plan_shares_memory, grad_plan_replans,
                       NULL}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        for (int j = 0; j < 5 && cases[i].tests[j]; j++) tcase_add_test(tc, cases[i].tests[j]);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    SRunner *sr = srunner_create(ops_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
