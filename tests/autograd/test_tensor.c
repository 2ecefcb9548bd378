/* test_tensor.c: the tape machinery of autograd/tensor.c that is not an op: backward from
 * several outputs at once (tape_backward_multi), checkpointed segments (tape_checkpoint,
 * activation recomputation) and the per-tape scratch (tape_scratch).
 *
 * A checkpointed segment must give the SAME gradients as its ops recorded inline, bit for
 * bit: the recomputation does the same float operations on the same inputs, and its
 * backward accumulates into the same buffers in the same order. So most checks below are
 * memcmp against the inline graph, plus one finite-difference check (tolerances as in
 * ops_test.h: h = 1e-2, atol 2e-3 for the rmsnorm inside, rtol 1e-2) to show the inline
 * graph itself is the right gradient.
 */
#include "autograd/blas.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { N = 5, C = 4, F = 6, SEGS = 3 };

static Tensor *rnd2(int rows, int cols, TensorKind kind, const char *name, uint64_t seed,
                    float lo, float hi) {
    Tensor *x = tt_tensor2(rows, cols, kind, name);
    tt_fill_uniform(x, seed, lo, hi);
    return x;
}

/* ---- the segment: a small residual block with a side loss ---- */

typedef struct SegCtx {
    Tensor *g, *w1, *w3, *w2;   /* (C), (F, C), (F, C), (C, F) */
    int calls, recomputes;      /* fn calls seen, of which recomputations */
    bool fused;                 /* the FFN as op_swiglu_linear (activation in the scratch) */
} SegCtx;

/* out[0] (N, C) = x + w2 swiglu(w1 n, w3 n), n = rmsnorm(x) g; out[1] (1) = mean softplus of
 * the gate pre-activation (a second output, like a layer's auxiliary loss); out[2] NULL.
 * With c->fused the last two ops are op_swiglu_linear (same values, bit for bit). */
static void seg_fn(Tape *t, void *arg, bool recompute, Tensor *x, Tensor **out) {
    SegCtx *c = arg;
    c->calls++;
    c->recomputes += recompute;
    Tensor *n = op_rmsnorm(t, x, c->g, 1e-5f);
    Tensor *h1 = op_linear(t, n, c->w1);
    Tensor *h3 = op_linear(t, n, c->w3);
    Tensor *y = c->fused ? op_swiglu_linear(t, h1, h3, c->w2)
                         : op_linear(t, op_swiglu(t, h1, h3), c->w2);
    out[0] = op_add(t, x, y);
    out[1] = op_mean(t, op_softplus(t, h1));
    out[2] = NULL;
}

typedef struct GraphCtx {
    SegCtx seg;
    bool checkpoint;
    const int32_t *ids;
} GraphCtx;

/* inputs: emb (V=7, C), g, w1, w3, w2. loss = sum over segments of the side outputs + the
 * mean of the last output times itself (so every output grad is non-trivial). */
static Tensor *b_graph(Tape *t, Tensor **in, void *arg) {
    GraphCtx *gc = arg;
    gc->seg.g = in[1];
    gc->seg.w1 = in[2];
    gc->seg.w3 = in[3];
    gc->seg.w2 = in[4];
    Tensor *x = op_embedding(t, in[0], gc->ids, N);
    Tensor *side = NULL;
    for (int s = 0; s < SEGS; s++) {
        Tensor *o[3];
        if (gc->checkpoint) tape_checkpoint(t, seg_fn, &gc->seg, x, 3, o);
        else seg_fn(t, &gc->seg, false, x, o);
        ck_assert_ptr_null(o[2]);
        x = o[0];
        side = side ? op_add(t, side, o[1]) : o[1];
    }
    return op_add(t, side, op_mean(t, op_mul(t, x, x)));
}

static Tensor **graph_inputs(void) {
    static Tensor *in[5];
    in[0] = rnd2(7, C, TENSOR_PARAM, "emb", 11, -1, 1);
    in[1] = rnd2(1, C, TENSOR_PARAM, "g", 12, 0.5f, 1.5f);
    in[2] = rnd2(F, C, TENSOR_PARAM, "w1", 13, -1, 1);
    in[3] = rnd2(F, C, TENSOR_PARAM, "w3", 14, -1, 1);
    in[4] = rnd2(C, F, TENSOR_PARAM, "w2", 15, -1, 1);
    return in;
}

static const int32_t g_ids[N] = {1, 6, 1, 0, 3};

/* Parameter grads and loss of the second of two steps on one tape (the second re-uses the
 * plans and the compacted arenas, as training does). */
static float run_graph(Tensor **in, bool checkpoint, bool plan, bool fused, float **grads,
                       Tape *keep) {
    GraphCtx gc = {.checkpoint = checkpoint, .ids = g_ids};
    gc.seg.fused = fused;
    Tape t;
    tape_init(&t, 1024);
    t.plan_grads = plan;
    float loss = 0;
    for (int step = 0; step < 2; step++) {
        for (int i = 0; i < 5; i++) memset(in[i]->grad, 0, in[i]->n * sizeof(float));
        tape_reset(&t, true);
        Tensor *l = b_graph(&t, in, &gc);
        loss = l->data[0];
        tape_backward(&t, l, NULL);
        if (step == 0) tape_compact(&t);
    }
    /* every segment ran once forward and once again in backward, per step */
    ck_assert_int_eq(gc.seg.calls, checkpoint ? 4 * SEGS : 2 * SEGS);
    ck_assert_int_eq(gc.seg.recomputes, checkpoint ? 2 * SEGS : 0);
    for (int i = 0; i < 5; i++) {
        grads[i] = malloc(in[i]->n * sizeof(float));
        memcpy(grads[i], in[i]->grad, in[i]->n * sizeof(float));
    }
    if (keep) *keep = t;
    else tape_free(&t);
    return loss;
}

START_TEST(checkpoint_matches_inline) {
    Tensor **in = graph_inputs();
    for (int plan = 0; plan < 2; plan++) {
        float *ref[5], *got[5];
        float l0 = run_graph(in, false, plan, false, ref, NULL);
        float l1 = run_graph(in, true, plan, false, got, NULL);
        ck_assert_msg(l0 == l1, "loss %.9g inline, %.9g checkpointed", (double)l0, (double)l1);
        for (int i = 0; i < 5; i++) {
            ck_assert_msg(memcmp(ref[i], got[i], in[i]->n * sizeof(float)) == 0,
                          "plan %d: grad of %s differs when checkpointed", plan, in[i]->name);
            free(ref[i]);
            free(got[i]);
        }
    }
    /* and the inline graph's gradient is right: finite differences */
    GraphCtx gc = {.checkpoint = true, .ids = g_ids};
    ck_assert_int_eq(tt_check_grad(b_graph, &gc, in, 5, 1e-2f, 2e-3, 1e-2, "checkpoint"), 0);
    for (int i = 0; i < 5; i++) tt_free(in[i]);
}
END_TEST

/* The outer tape keeps only the segments' inputs and output copies: its arena holds none of
 * the rmsnorm/linear/swiglu activations, which live on the sub tape one segment at a time. */
START_TEST(checkpoint_bounds_memory) {
    Tensor **in = graph_inputs();
    float *g[5];
    Tape a, b;
    run_graph(in, false, true, false, g, &a);
    for (int i = 0; i < 5; i++) free(g[i]);
    run_graph(in, true, true, false, g, &b);
    for (int i = 0; i < 5; i++) free(g[i]);
    ck_assert_ptr_null(a.sub);
    ck_assert_ptr_nonnull(b.sub);
    /* per segment inline: 8 activations of up to (N, F) plus saved state; checkpointed: one
     * segment's on the sub tape, the outer arena one (N, C) copy and a scalar per segment */
    size_t inline_bytes = a.arena.high_water;
    size_t ckpt_bytes = b.arena.high_water + b.sub->arena.high_water;
    ck_assert_msg(ckpt_bytes < inline_bytes, "checkpointed %zu bytes, inline %zu", ckpt_bytes,
                  inline_bytes);
    ck_assert_msg(b.sub->arena.high_water * 2 < inline_bytes,
                  "the sub tape holds more than one segment: %zu of %zu bytes",
                  b.sub->arena.high_water, inline_bytes);
    tape_free(&a);
    tape_free(&b);
    for (int i = 0; i < 5; i++) tt_free(in[i]);
}
END_TEST

/* A segment whose input requires no grad (a constant) still gives its parameters their
 * gradients; a forward-only tape runs each segment once and records nothing. */
START_TEST(checkpoint_const_input_and_forward_only) {
    Tensor **in = graph_inputs();
    Tensor *x = rnd2(N, C, TENSOR_CONST, "x", 21, -1, 1);
    float *ref[4], *got[4];
    for (int ck = 0; ck < 2; ck++) {
        SegCtx sc = {in[1], in[2], in[3], in[4], 0, 0, false};
        for (int i = 1; i < 5; i++) memset(in[i]->grad, 0, in[i]->n * sizeof(float));
        Tape t;
        tape_init(&t, 1024);
        tape_reset(&t, true);
        Tensor *o[3];
        if (ck) tape_checkpoint(&t, seg_fn, &sc, x, 3, o);
        else seg_fn(&t, &sc, false, x, o);
        tape_backward(&t, op_add(&t, op_sum(&t, o[0]), o[1]), NULL);
        float **dst = ck ? got : ref;
        for (int i = 1; i < 5; i++) {
            dst[i - 1] = malloc(in[i]->n * sizeof(float));
            memcpy(dst[i - 1], in[i]->grad, in[i]->n * sizeof(float));
        }
        /* forward only */
        sc.calls = 0;
        tape_reset(&t, false);
        if (ck) tape_checkpoint(&t, seg_fn, &sc, x, 3, o);
        else seg_fn(&t, &sc, false, x, o);
        ck_assert_int_eq(t.n, 0);
        ck_assert_int_eq(sc.calls, 1);
        ck_assert(!o[0]->requires_grad && !o[1]->requires_grad);
        tape_free(&t);
    }
    for (int i = 0; i < 4; i++) {
        ck_assert_msg(memcmp(ref[i], got[i], in[i + 1]->n * sizeof(float)) == 0,
                      "grad of %s differs with a constant input", in[i + 1]->name);
        free(ref[i]);
        free(got[i]);
    }
    tt_free(x);
    for (int i = 0; i < 5; i++) tt_free(in[i]);
}
END_TEST

/* tape_backward_multi from y1 = x W^T and y2 = y1 * y1 with seeds r1, r2 equals the backward
 * of the scalar sum(r1 y1) + sum(r2 y2): y1's grad is r1 (its seed) and then y2's
 * contribution in both, so the results agree bit for bit. */
START_TEST(backward_multi_equals_scalar_loss) {
    Tensor *x = rnd2(3, 4, TENSOR_PARAM, "x", 31, -1, 1);
    Tensor *w = rnd2(5, 4, TENSOR_PARAM, "w", 32, -1, 1);
    Tensor *r1 = rnd2(3, 5, TENSOR_CONST, "r1", 33, -1, 1);
    Tensor *r2 = rnd2(3, 5, TENSOR_CONST, "r2", 34, -1, 1);
    float *ref[2];
    Tape t;
    tape_init(&t, 1024);
    tape_reset(&t, true);
    Tensor *y1 = op_linear(&t, x, w), *y2 = op_mul(&t, y1, y1);
    tape_backward(&t, op_add(&t, op_sum(&t, op_mul(&t, r1, y1)), op_sum(&t, op_mul(&t, r2, y2))),
                  NULL);
    Tensor *p[2] = {x, w};
    for (int i = 0; i < 2; i++) {
        ref[i] = malloc(p[i]->n * sizeof(float));
        memcpy(ref[i], p[i]->grad, p[i]->n * sizeof(float));
        memset(p[i]->grad, 0, p[i]->n * sizeof(float));
    }
    tape_reset(&t, true);
    y1 = op_linear(&t, x, w);
    y2 = op_mul(&t, y1, y1);
    Tensor *outs[2] = {y1, y2};
    const float *seeds[2] = {r1->data, r2->data};
    tape_backward_multi(&t, 2, outs, seeds);
    for (int i = 0; i < 2; i++) {
        ck_assert_msg(memcmp(ref[i], p[i]->grad, p[i]->n * sizeof(float)) == 0,
                      "grad of %s differs", p[i]->name);
        free(ref[i]);
    }
    tape_free(&t);
    tt_free(x);
    tt_free(w);
    tt_free(r1);
    tt_free(r2);
}
END_TEST

/* With profiling, the segment's time is attributed to the regions its ops ran in (forward
 * into fwd_time, the recomputation and its backward into bwd_time), never to region -1. */
static void seg_regions(Tape *t, void *arg, bool recompute, Tensor *x, Tensor **out) {
    (void)recompute;
    SegCtx *c = arg;
    tape_region(t, 2);
    Tensor *h = op_linear(t, x, c->w1);
    tape_region(t, 3);
    out[0] = op_linear(t, op_silu(t, h), c->w2);
}

START_TEST(checkpoint_profile_regions) {
    Tensor **in = graph_inputs();
    Tensor *x = rnd2(N, C, TENSOR_PARAM, "x", 41, -1, 1);
    SegCtx sc = {in[1], in[2], in[3], in[4], 0, 0, false};
    Tape t;
    tape_init(&t, 1024);
    t.profile = true;
    tape_reset(&t, true);
    t.region = 1;
    t.region_t0 = moe_now();
    Tensor *o[1];
    tape_checkpoint(&t, seg_regions, &sc, x, 1, o);
    ck_assert_int_eq(t.region, 3);   /* the outer tape continues in the segment's last region */
    tape_backward(&t, op_sum(&t, o[0]), NULL);
    ck_assert(t.fwd_time[2] > 0 && t.fwd_time[3] > 0);
    ck_assert(t.bwd_time[2] > 0 && t.bwd_time[3] > 0);
    for (int r = 4; r < TAPE_MAX_REGIONS; r++) ck_assert(t.fwd_time[r] == 0 && t.bwd_time[r] == 0);
    tape_free(&t);
    tt_free(x);
    for (int i = 0; i < 5; i++) tt_free(in[i]);
}
END_TEST


/* The fused SwiGLU + down projection inside checkpointed segments: its forward, the
 * recomputation and its backward all borrow the SUB tape's scratch (the outer tape never
 * runs it, so it allocates none); losses and gradients equal the unfused inline graph bit
 * for bit, with and without the grad plan, inline and checkpointed. */
START_TEST(scratch_fused_op_in_checkpoint) {
    Tensor **in = graph_inputs();
    for (int plan = 0; plan < 2; plan++) {
        float *ref[5], *got[5];
        const float l0 = run_graph(in, false, plan, false, ref, NULL);
        for (int ck = 0; ck < 2; ck++) {
            Tape t;
            const float l1 = run_graph(in, ck, plan, true, got, &t);
            ck_assert_msg(l0 == l1, "loss %.9g unfused, %.9g fused (checkpoint %d)", (double)l0,
                          (double)l1, ck);
            for (int i = 0; i < 5; i++) {
                ck_assert_msg(memcmp(ref[i], got[i], in[i]->n * sizeof(float)) == 0,
                              "plan %d checkpoint %d: grad of %s differs", plan, ck,
                              in[i]->name);
                free(got[i]);
            }
            /* the scratch holds one (N, F) activation, on the tape that ran the op */
            const Tape *owner = ck ? t.sub : &t;
            ck_assert_uint_eq(owner->scratch_cap, N * F < 16 ? 16 : N * F);
            if (ck) ck_assert_ptr_null(t.scratch);
            ck_assert_uint_eq(tape_scratch_bytes(&t), sizeof(float) * owner->scratch_cap);
            tape_free(&t);
        }
        for (int i = 0; i < 5; i++) free(ref[i]);
    }
    for (int i = 0; i < 5; i++) tt_free(in[i]);
}
END_TEST

/* tape_scratch: allocated on the first request (exactly), the same buffer for any request
 * up to its size (no allocation), a larger request grows it with 1/8 headroom, and a
 * request of 0 still gets a valid pointer. */
START_TEST(scratch_growth) {
    Tape t;
    tape_init(&t, 1024);
    ck_assert_uint_eq(tape_scratch_bytes(&t), 0);
    size_t c0 = moe_alloc_calls();
    float *p = tape_scratch(&t, 100);
    ck_assert_uint_eq(moe_alloc_calls() - c0, 1);
    ck_assert_uint_eq(t.scratch_cap, 100);
    ck_assert_uint_eq((uintptr_t)p % MOE_ALIGN, 0);
    p[99] = 1.0f;   /* all of it is usable (ASan would see an overrun) */
    c0 = moe_alloc_calls();
    ck_assert_ptr_eq(tape_scratch(&t, 100), p);
    ck_assert_ptr_eq(tape_scratch(&t, 3), p);
    ck_assert_ptr_nonnull(tape_scratch(&t, 0));
    ck_assert_uint_eq(moe_alloc_calls() - c0, 0);
    float *q = tape_scratch(&t, 160);
    ck_assert_uint_eq(moe_alloc_calls() - c0, 1);
    ck_assert_uint_eq(t.scratch_cap, 160 + 160 / 8);
    q[159] = 2.0f;
    ck_assert_uint_eq(tape_scratch_bytes(&t), sizeof(float) * (160 + 160 / 8));
    tape_free(&t);
}
END_TEST

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    Suite *s = suite_create("tensor");
    TCase *tc = tcase_create("backward_multi");
    tcase_add_test(tc, backward_multi_equals_scalar_loss);
    suite_add_tcase(s, tc);
    tc = tcase_create("checkpoint");
    tcase_add_test(tc, checkpoint_matches_inline);
    tcase_add_test(tc, checkpoint_bounds_memory);
    tcase_add_test(tc, checkpoint_const_input_and_forward_only);
    tcase_add_test(tc, checkpoint_profile_regions);
    suite_add_tcase(s, tc);
    tc = tcase_create("scratch");
    tcase_add_test(tc, scratch_fused_op_in_checkpoint);
    tcase_add_test(tc, scratch_growth);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
