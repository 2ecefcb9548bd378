/* test_ops_expert.c: the grouped expert GEMMs of autograd/ops_expert.c: op_expert_linear
 * (empty experts included; a frozen W gets no gradient), op_swiglu_expert_linear and
 * op_gather_expert_up against naive double-precision references and central differences
 * for every PARAM input, and the fused ops bit for bit against their compositions.
 */
#include "ops_moe_test.h"

#include "autograd/blas.h"
#include "core/pool.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------- expert linear ---------------- */

typedef struct ExpCase { int E, din, dout; int32_t offs[5]; } ExpCase;
static const ExpCase k_exp_cases[] = {
    {3, 4, 3, {0, 2, 2, 5}},      /* expert 1 empty */
    {1, 3, 5, {0, 4}},            /* a single expert = a plain linear layer */
    {4, 2, 3, {0, 0, 3, 3, 4}},   /* leading and middle empty experts */
};

static Tensor *build_expert(Tape *t, Tensor **in, void *ctx) {
    const ExpCase *c = ctx;
    return op_expert_linear(t, in[0], in[1], c->offs, c->E);
}

START_TEST(test_expert_linear) {
    const ExpCase *c = &k_exp_cases[_i];
    const int M = c->offs[c->E];
    const int wshape[3] = {c->E, c->dout, c->din};
    Tensor *in[2];
    in[0] = tt_tensor2(M, c->din, TENSOR_PARAM, "x");
    in[1] = tt_tensor(3, wshape, TENSOR_PARAM, "W");
    tt_fill_normal(in[0], 30 + (uint64_t)_i, 1.0f);
    tt_fill_normal(in[1], 40 + (uint64_t)_i, 0.5f);
    float *ref = malloc(sizeof(float) * (size_t)M * c->dout);
    expert_linear_ref(in[0]->data, in[1]->data, c->offs, c->E, c->din, c->dout, ref);
    Tape tape;
    tape_init(&tape, 1 << 16);
    tape_reset(&tape, false);
    Tensor *y = op_expert_linear(&tape, in[0], in[1], c->offs, c->E);
    ck_assert_int_eq((int)tensor_rows(y), M);
    ck_assert_int_eq(tensor_cols(y), c->dout);
    ck_assert_msg(tt_max_err(y->data, ref, y->n, FWD_ATOL, FWD_RTOL) <= 1.0, "case %d fwd", _i);
    tape_free(&tape);
    /* bilinear in (x, W): FD error is rounding only, eps_f32 |f| / h ~ 1e-5 */
    int bad = tt_check_grad(build_expert, (void *)c, in, 2, 1e-2f, 1e-4, 1e-4, "expert_linear");
    ck_assert_msg(bad == 0, "case %d: %d mismatches", _i, bad);
    /* empty experts: their weight gradient stays exactly 0 (no sgemm, no garbage) */
    for (int e = 0; e < c->E; e++)
        if (c->offs[e] == c->offs[e + 1])
            for (int j = 0; j < c->dout * c->din; j++)
                ck_assert_msg(in[1]->grad[(size_t)e * c->dout * c->din + j] == 0.0f,
                              "empty expert %d has a gradient", e);
    free(ref);
    tt_free(in[0]);
    tt_free(in[1]);
}
END_TEST

START_TEST(test_expert_linear_frozen) {
    /* FROZEN W: no weight-gradient GEMM (W has no grad buffer: writing it would crash),
     * dx still correct. */
    const ExpCase *c = &k_exp_cases[0];
    const int wshape[3] = {c->E, c->dout, c->din};
    Tensor *in[2];
    in[0] = tt_tensor2(c->offs[c->E], c->din, TENSOR_PARAM, "x");
    in[1] = tt_tensor(3, wshape, TENSOR_FROZEN, "W");
    tt_fill_normal(in[0], 50, 1.0f);
    tt_fill_normal(in[1], 51, 0.5f);
    /* linear in x: rounding-only FD error as above */
    int bad = tt_check_grad(build_expert, (void *)c, in, 2, 1e-2f, 1e-4, 1e-4, "frozen W");
    ck_assert_int_eq(bad, 0);
    tt_free(in[0]);
    tt_free(in[1]);
}
END_TEST

/* ---------------- grouped expert GEMM with a fused SwiGLU ---------------- */

/* y[rows of e] = (silu(a) b)[rows] W[e]^T, the activation in double (never rounded). */
static void swiglu_expert_ref(const float *a, const float *b, const float *w,
                              const int32_t *offs, int E, int F, int C, float *y) {
    for (int e = 0; e < E; e++)
        for (int m = offs[e]; m < offs[e + 1]; m++)
            for (int o = 0; o < C; o++) {
                double acc = 0.0;
                for (int f = 0; f < F; f++) {
                    const double x = (double)a[(size_t)m * F + f];
                    acc += x / (1.0 + exp(-x)) * (double)b[(size_t)m * F + f] *
                           (double)w[((size_t)e * C + o) * F + f];
                }
                y[(size_t)m * C + o] = (float)acc;
            }
}

static Tensor *build_swiglu_expert(Tape *t, Tensor **in, void *ctx) {
    const ExpCase *c = ctx;
    return op_swiglu_expert_linear(t, in[0], in[1], in[2], c->offs, c->E);
}

/* a, b (M, din) PARAM and W (E, dout, din) of the given kind for a case. */
static void swiglu_expert_inputs(const ExpCase *c, TensorKind wkind, uint64_t seed,
                                 Tensor **in) {
    const int M = c->offs[c->E];
    const int wshape[3] = {c->E, c->dout, c->din};
    in[0] = tt_tensor2(M, c->din, TENSOR_PARAM, "a");
    in[1] = tt_tensor2(M, c->din, TENSOR_PARAM, "b");
    in[2] = tt_tensor(3, wshape, wkind, "W");
    tt_fill_normal(in[0], seed, 1.0f);
    tt_fill_normal(in[1], seed + 1, 1.0f);
    tt_fill_normal(in[2], seed + 2, 0.5f);
}

START_TEST(test_swiglu_expert_forward) {
    const ExpCase *c = &k_exp_cases[_i];
    const int M = c->offs[c->E];
    Tensor *in[3];
    swiglu_expert_inputs(c, TENSOR_CONST, 60 + 3 * (uint64_t)_i, in);
    float *ref = malloc(sizeof(float) * (size_t)M * c->dout);
    swiglu_expert_ref(in[0]->data, in[1]->data, in[2]->data, c->offs, c->E, c->din, c->dout,
                      ref);
    Tape tape;
    tape_init(&tape, 1 << 16);
    tape_reset(&tape, false);
    Tensor *y = op_swiglu_expert_linear(&tape, in[0], in[1], in[2], c->offs, c->E);
    ck_assert_int_eq((int)tensor_rows(y), M);
    ck_assert_int_eq(tensor_cols(y), c->dout);
    /* sums of <= 4 terms whose factors carry one more rounding and one exp (<= 2 ulp) than
     * the plain expert GEMM's: still far inside FWD_* */
    ck_assert_msg(tt_max_err(y->data, ref, y->n, FWD_ATOL, FWD_RTOL) <= 1.0, "case %d fwd", _i);
    tape_free(&tape);
    free(ref);
    for (int k = 0; k < 3; k++) tt_free(in[k]);
}
END_TEST

/* Finite differences for da, db and dW on every case (all have empty experts but the
 * second), then with W FROZEN (no grad buffer: the op must form no dW) for da and db. */
START_TEST(test_swiglu_expert_grad) {
    const ExpCase *c = &k_exp_cases[_i];
    for (int frozen = 0; frozen < 2; frozen++) {
        Tensor *in[3];
        swiglu_expert_inputs(c, frozen ? TENSOR_FROZEN : TENSOR_PARAM, 70 + 3 * (uint64_t)_i,
                             in);
        /* smooth in a (silu), bilinear in (b, W): FD error ~ eps_f32 |f| / h plus
         * h^2 |f'''| / 6, i.e. ~1e-5 + 2e-5 |f'''|; 1e-3 absolute + 1e-2 relative is 10x
         * above it and 100x below a wrong factor 2 or sign on these O(0.1..1) gradients */
        int bad = tt_check_grad(build_swiglu_expert, (void *)c, in, 3, 1e-2f, 1e-3, 1e-2,
                                frozen ? "swiglu_expert frozen W" : "swiglu_expert");
        ck_assert_msg(bad == 0, "case %d frozen %d: %d mismatches", _i, frozen, bad);
        if (frozen) ck_assert_ptr_null(in[2]->grad);
        /* empty experts (m = 0 rows): their weight gradient stays exactly 0 */
        for (int e = 0; e < c->E && !frozen; e++)
            if (c->offs[e] == c->offs[e + 1])
                for (int j = 0; j < c->dout * c->din; j++)
                    ck_assert_msg(in[2]->grad[(size_t)e * c->dout * c->din + j] == 0.0f,
                                  "empty expert %d has a gradient", e);
        for (int k = 0; k < 3; k++) tt_free(in[k]);
    }
}
END_TEST

/* One recorded forward + backward (seeded with dy) of the fused op or of its composition
 * op_expert_linear(op_swiglu(a, b), W): output and grads copied out (NULL where not
 * required), arena use and grad-plan bytes. Between the op's forward and its backward a
 * second fused op on constant inputs overwrites the tape's scratch (as the next layer does
 * in a model), so a backward that did not recompute its activation would be wrong. The
 * second of two steps on one tape: it must allocate nothing. */
typedef struct SwiExpRun {
    float *y, *g[3];
    size_t arena, plan, allocs;
} SwiExpRun;

static void swiglu_expert_run(bool fused, const ExpCase *c, Tensor **in, Tensor **clobber,
                              const float *dy, SwiExpRun *r) {
    Tape t;
    tape_init(&t, 1 << 16);
    for (int step = 0; step < 2; step++) {
        for (int k = 0; k < 3; k++)
            if (in[k]->grad) memset(in[k]->grad, 0, sizeof(float) * in[k]->n);
        const size_t c0 = moe_alloc_calls();
        tape_reset(&t, true);
        Tensor *y = fused
            ? op_swiglu_expert_linear(&t, in[0], in[1], in[2], c->offs, c->E)
            : op_expert_linear(&t, op_swiglu(&t, in[0], in[1]), in[2], c->offs, c->E);
        r->arena = arena_used(&t.arena);
        (void)op_swiglu_expert_linear(&t, clobber[0], clobber[1], clobber[2], c->offs, c->E);
        tape_backward(&t, y, dy);
        r->allocs = moe_alloc_calls() - c0;
        if (step == 1) {
            r->y = malloc(sizeof(float) * y->n);
            memcpy(r->y, y->data, sizeof(float) * y->n);
        }
    }
    r->plan = tape_grad_plan_bytes(&t);
    for (int k = 0; k < 3; k++) {
        r->g[k] = NULL;
        if (!in[k]->requires_grad) continue;
        r->g[k] = malloc(sizeof(float) * in[k]->n);
        memcpy(r->g[k], in[k]->grad, sizeof(float) * in[k]->n);
    }
    tape_free(&t);
}

/* The fused op against its composition, bit for bit (no tolerance): per expert it runs
 * op_swiglu's kernel on the expert's rows and op_expert_linear's sgemm calls with the same
 * arguments (dact with beta 1 into zeros, as into the composition's zeroed activation
 * grad). A small case with an empty expert and a large one (M F > 2^16: the composition's
 * SwiGLU is split over the threads, the suite also runs with 2; expert 1 empty); every
 * input trainable, W FROZEN (carrying a grad buffer, which must stay zero), and a CONST
 * (only db and dW). The fused tape keeps M*F floats less activation and plans M*F floats
 * less gradient. */
START_TEST(test_swiglu_expert_matches_composition) {
    const ExpCase big = {4, 64, 40, {0, 520, 520, 900, 1100}};
    const ExpCase *cases[2] = {&k_exp_cases[0], &big};
    for (int s = 0; s < 2; s++)
        for (int v = 0; v < 3; v++) {
            const ExpCase *c = cases[s];
            const int M = c->offs[c->E];
            Tensor *in[3], *clobber[3];
            swiglu_expert_inputs(c, v == 1 ? TENSOR_FROZEN : TENSOR_PARAM, 90 + (uint64_t)s,
                                 in);
            if (v == 1) in[2]->grad = moe_calloc(sizeof(float) * in[2]->n);
            if (v == 2) in[0]->requires_grad = false;   /* a constant: no da */
            swiglu_expert_inputs(c, TENSOR_CONST, 95 + (uint64_t)s, clobber);
            for (int k = 0; k < 2; k++) clobber[k]->requires_grad = false;
            Tensor *dy = tt_tensor2(M, c->dout, TENSOR_CONST, "dy");
            tt_fill_normal(dy, 99, 1.0f);
            SwiExpRun f, u;
            swiglu_expert_run(true, c, in, clobber, dy->data, &f);
            if (v == 1)
                for (size_t j = 0; j < in[2]->n; j++)
                    ck_assert_msg(in[2]->grad[j] == 0.0f, "frozen W got a gradient");
            swiglu_expert_run(false, c, in, clobber, dy->data, &u);
            ck_assert_msg(memcmp(f.y, u.y, sizeof(float) * (size_t)M * c->dout) == 0,
                          "case %d variant %d: forward differs", s, v);
            for (int k = 0; k < 3; k++) {
                ck_assert_msg((f.g[k] == NULL) == !in[k]->requires_grad, "grad %d", k);
                if (f.g[k])
                    ck_assert_msg(memcmp(f.g[k], u.g[k], sizeof(float) * in[k]->n) == 0,
                                  "case %d variant %d: grad of %s differs", s, v,
                                  in[k]->name);
            }
            const size_t act = sizeof(float) * (size_t)M * c->din;
            ck_assert_msg(f.arena + act <= u.arena, "arena fused %zu, composition %zu",
                          f.arena, u.arena);
            ck_assert_msg(f.plan + act <= u.plan, "plan fused %zu, composition %zu", f.plan,
                          u.plan);
            ck_assert_uint_eq(f.allocs, 0);
            free(f.y);
            free(u.y);
            for (int k = 0; k < 3; k++) {
                free(f.g[k]);
                free(u.g[k]);
                tt_free(in[k]);
                tt_free(clobber[k]);
            }
            tt_free(dy);
        }
}
END_TEST

/* ---------------- gather fused into the up projections ---------------- */

/* rows (M) grouped by offs; tokens may repeat across experts (a token's K slots) and some
 * tokens have no slot (their dx must stay exactly 0). */
typedef struct UpCase { int N, C, F, E; int32_t offs[5]; const int32_t *rows; } UpCase;
static const int32_t k_up_rows0[6] = {0, 2, 3, 1, 2, 0};
static const int32_t k_up_rows1[4] = {4, 0, 1, 4};
static const UpCase k_up_cases[] = {
    {4, 3, 4, 3, {0, 3, 3, 6}, k_up_rows0},          /* expert 1 empty */
    {5, 2, 3, 4, {0, 0, 2, 2, 4}, k_up_rows1},       /* tokens 2, 3 unrouted */
};

/* h[m] = x[rows[m]] W[e]^T for the expert e owning slot m, in double. */
static void gather_expert_ref(const float *x, const int32_t *rows, const float *w,
                              const int32_t *offs, int E, int C, int F, float *h) {
    for (int e = 0; e < E; e++)
        for (int m = offs[e]; m < offs[e + 1]; m++)
            for (int f = 0; f < F; f++) {
                double acc = 0.0;
                for (int c = 0; c < C; c++)
                    acc += (double)x[(size_t)rows[m] * C + c] *
                           (double)w[((size_t)e * F + f) * C + c];
                h[(size_t)m * F + f] = (float)acc;
            }
}

/* x (N, C), W1, W3 (E, F, C) for a case; W1, W3 of the given kind. */
static void up_inputs(int N, int C, int F, int E, TensorKind wkind, uint64_t seed, Tensor **in) {
    const int wshape[3] = {E, F, C};
    in[0] = tt_tensor2(N, C, TENSOR_PARAM, "x");
    in[1] = tt_tensor(3, wshape, wkind, "W1");
    in[2] = tt_tensor(3, wshape, wkind, "W3");
    tt_fill_normal(in[0], seed, 1.0f);
    tt_fill_normal(in[1], seed + 1, 0.5f);
    tt_fill_normal(in[2], seed + 2, 0.5f);
}

START_TEST(test_gather_expert_up_forward) {
    const UpCase *c = &k_up_cases[_i];
    const int M = c->offs[c->E];
    Tensor *in[3];
    up_inputs(c->N, c->C, c->F, c->E, TENSOR_CONST, 110 + 3 * (uint64_t)_i, in);
    float *r1 = malloc(sizeof(float) * (size_t)M * c->F);
    float *r3 = malloc(sizeof(float) * (size_t)M * c->F);
    gather_expert_ref(in[0]->data, c->rows, in[1]->data, c->offs, c->E, c->C, c->F, r1);
    gather_expert_ref(in[0]->data, c->rows, in[2]->data, c->offs, c->E, c->C, c->F, r3);
    Tape tape;
    tape_init(&tape, 1 << 16);
    tape_reset(&tape, false);
    Tensor *h3 = NULL;
    Tensor *h1 = op_gather_expert_up(&tape, in[0], c->rows, in[1], in[2], c->offs, c->E, &h3);
    ck_assert_int_eq((int)tensor_rows(h1), M);
    ck_assert_int_eq(tensor_cols(h1), c->F);
    ck_assert_int_eq((int)tensor_rows(h3), M);
    ck_assert_int_eq(tape.n, 0);   /* nothing requires grad: nothing recorded */
    /* sums of <= 3 products: FWD_* as for the expert GEMM */
    ck_assert_msg(tt_max_err(h1->data, r1, h1->n, FWD_ATOL, FWD_RTOL) <= 1.0, "case %d h1", _i);
    ck_assert_msg(tt_max_err(h3->data, r3, h3->n, FWD_ATOL, FWD_RTOL) <= 1.0, "case %d h3", _i);
    tape_free(&tape);
    free(r1);
    free(r3);
    for (int k = 0; k < 3; k++) tt_free(in[k]);
}
END_TEST

/* swiglu(h1, h3): a consumer that treats the two outputs differently, so swapped or mixed
 * output grads show. */
static Tensor *build_gather_up(Tape *t, Tensor **in, void *ctx) {
    const UpCase *c = ctx;
    Tensor *h3 = NULL;
    Tensor *h1 = op_gather_expert_up(t, in[0], c->rows, in[1], in[2], c->offs, c->E, &h3);
    return op_swiglu(t, h1, h3);
}

/* Finite differences for dx, dW1 and dW3, then with W1, W3 FROZEN (no grad buffers) for dx.
 * Unrouted tokens and empty experts get exactly zero gradient. */
START_TEST(test_gather_expert_up_grad) {
    const UpCase *c = &k_up_cases[_i];
    for (int frozen = 0; frozen < 2; frozen++) {
        Tensor *in[3];
        up_inputs(c->N, c->C, c->F, c->E, frozen ? TENSOR_FROZEN : TENSOR_PARAM,
                  120 + 3 * (uint64_t)_i, in);
        /* the same smooth silu-times-bilinear loss as test_swiglu_expert_grad: 1e-3 absolute
         * + 1e-2 relative, 10x the FD error and 100x below a wrong factor or sign */
        int bad = tt_check_grad(build_gather_up, (void *)c, in, 3, 1e-2f, 1e-3, 1e-2,
                                frozen ? "gather_up frozen W" : "gather_up");
        ck_assert_msg(bad == 0, "case %d frozen %d: %d mismatches", _i, frozen, bad);
        for (int n = 0; n < c->N; n++) {
            bool routed = false;
            for (int m = 0; m < c->offs[c->E]; m++) routed |= c->rows[m] == n;
            for (int j = 0; j < c->C && !routed; j++)
                ck_assert_msg(in[0]->grad[(size_t)n * c->C + j] == 0.0f, "unrouted token %d", n);
        }
        for (int e = 0; e < c->E && !frozen; e++)
            if (c->offs[e] == c->offs[e + 1])
                for (int j = 0; j < c->F * c->C; j++)
                    ck_assert_msg(in[1]->grad[(size_t)e * c->F * c->C + j] == 0.0f &&
                                  in[2]->grad[(size_t)e * c->F * c->C + j] == 0.0f,
                                  "empty expert %d has a gradient", e);
        if (frozen) ck_assert(in[1]->grad == NULL && in[2]->grad == NULL);
        for (int k = 0; k < 3; k++) tt_free(in[k]);
    }
}
END_TEST

/* One recorded forward + backward of swiglu(h1, h3), seeded with dy, with (h1, h3) from the
 * fused op or from op_gather_rows + op_expert_linear (W1, then W3): output and grads copied
 * out, arena use and grad-plan bytes of the second of two steps (which must allocate
 * nothing). Between forward and backward a second fused op on constant inputs overwrites
 * the scratch. */
static void gather_up_run(bool fused, const UpCase *c, Tensor **in, Tensor **clobber,
                          const float *dy, SwiExpRun *r) {
    Tape t;
    tape_init(&t, 1 << 16);
    const int M = c->offs[c->E];
    for (int step = 0; step < 2; step++) {
        for (int k = 0; k < 3; k++)
            if (in[k]->grad) memset(in[k]->grad, 0, sizeof(float) * in[k]->n);
        const size_t c0 = moe_alloc_calls();
        tape_reset(&t, true);
        Tensor *h1, *h3;
        if (fused) {
            h1 = op_gather_expert_up(&t, in[0], c->rows, in[1], in[2], c->offs, c->E, &h3);
        } else {
            Tensor *xg = op_gather_rows(&t, in[0], c->rows, M);
            h1 = op_expert_linear(&t, xg, in[1], c->offs, c->E);
            h3 = op_expert_linear(&t, xg, in[2], c->offs, c->E);
        }
        r->arena = arena_used(&t.arena);
        Tensor *unused;
        (void)op_gather_expert_up(&t, clobber[0], c->rows, clobber[1], clobber[2], c->offs,
                                  c->E, &unused);
        Tensor *y = op_swiglu(&t, h1, h3);
        tape_backward(&t, y, dy);
        r->allocs = moe_alloc_calls() - c0;
        if (step == 1) {
            r->y = malloc(sizeof(float) * y->n);
            memcpy(r->y, y->data, sizeof(float) * y->n);
        }
    }
    r->plan = tape_grad_plan_bytes(&t);
    for (int k = 0; k < 3; k++) {
        r->g[k] = NULL;
        if (!in[k]->requires_grad) continue;
        r->g[k] = malloc(sizeof(float) * in[k]->n);
        memcpy(r->g[k], in[k]->grad, sizeof(float) * in[k]->n);
    }
    tape_free(&t);
}

/* The fused op against its composition, bit for bit (no tolerance): per expert the same
 * row copies and sgemm calls with the same arguments, dxg formed in the composition's order
 * (W3's product, then W1's, beta 1 into zeros) and scattered into dx in slot order. Cases:
 * the small one with an empty expert, and M = 1200 slots of 600 tokens over 4 experts
 * (expert 1 empty; run with 1 and 2 threads by the suite) with F = 1100, more than
 * OpenBLAS's inner-dimension block, so each sgemm adds into dxg in steps and the order of
 * the two products shows in the bits (swapping them fails here); every input trainable,
 * W1 and W3 FROZEN (with grad buffers that must stay zero), and x CONST (only dW1, dW3).
 * The fused tape keeps M*C floats less. */
START_TEST(test_gather_expert_up_matches_composition) {
    int32_t *big_rows = malloc(sizeof(int32_t) * 1200);
    MoeRng rng;
    rng_seed(&rng, 130);
    for (int m = 0; m < 1200; m++) big_rows[m] = (int32_t)(rng_next(&rng) % 600);
    const UpCase big = {600, 16, 1100, 4, {0, 400, 400, 900, 1200}, big_rows};
    const UpCase *cases[2] = {&k_up_cases[0], &big};
    for (int s = 0; s < 2; s++)
        for (int v = 0; v < 3; v++) {
            const UpCase *c = cases[s];
            const int M = c->offs[c->E];
            Tensor *in[3], *clobber[3];
            up_inputs(c->N, c->C, c->F, c->E, v == 1 ? TENSOR_FROZEN : TENSOR_PARAM,
                      140 + (uint64_t)s, in);
            if (v == 1)
                for (int k = 1; k < 3; k++) in[k]->grad = moe_calloc(sizeof(float) * in[k]->n);
            if (v == 2) in[0]->requires_grad = false;   /* a constant: no dx */
            up_inputs(c->N, c->C, c->F, c->E, TENSOR_CONST, 145 + (uint64_t)s, clobber);
            clobber[0]->requires_grad = false;
            Tensor *dy = tt_tensor2(M, c->F, TENSOR_CONST, "dy");
            tt_fill_normal(dy, 149, 1.0f);
            SwiExpRun f, u;
            gather_up_run(true, c, in, clobber, dy->data, &f);
            if (v == 1)
                for (int k = 1; k < 3; k++)
                    for (size_t j = 0; j < in[k]->n; j++)
                        ck_assert_msg(in[k]->grad[j] == 0.0f, "frozen %s got a gradient",
                                      in[k]->name);
            gather_up_run(false, c, in, clobber, dy->data, &u);
            ck_assert_msg(memcmp(f.y, u.y, sizeof(float) * (size_t)M * c->F) == 0,
                          "case %d variant %d: forward differs", s, v);
            for (int k = 0; k < 3; k++) {
                ck_assert_msg((f.g[k] == NULL) == !in[k]->requires_grad, "grad %d", k);
                if (f.g[k])
                    ck_assert_msg(memcmp(f.g[k], u.g[k], sizeof(float) * in[k]->n) == 0,
                                  "case %d variant %d: grad of %s differs", s, v,
                                  in[k]->name);
            }
            const size_t xg = sizeof(float) * (size_t)M * c->C;
            ck_assert_msg(f.arena + xg <= u.arena, "arena fused %zu, composition %zu",
                          f.arena, u.arena);
            /* dxg is scratch now, but in the composition its plan region need not add to
             * the peak (it is live only after h1's and h3's grads are consumed): not
             * larger is all the plan promises */
            ck_assert_msg(f.plan <= u.plan, "plan fused %zu, composition %zu", f.plan, u.plan);
            ck_assert_uint_eq(f.allocs, 0);
            free(f.y);
            free(u.y);
            for (int k = 0; k < 3; k++) {
                free(f.g[k]);
                free(u.g[k]);
                tt_free(in[k]);
                tt_free(clobber[k]);
            }
            tt_free(dy);
        }
    free(big_rows);
}
END_TEST


/* ---------------- suite */

static Suite *ops_expert_suite(void) {
    Suite *s = suite_create("ops_expert");
    TCase *tc;
    tc = tcase_create("expert_linear");
    tcase_add_loop_test(tc, test_expert_linear, 0,
                        (int)(sizeof k_exp_cases / sizeof k_exp_cases[0]));
    tcase_add_test(tc, test_expert_linear_frozen);
    suite_add_tcase(s, tc);
    tc = tcase_create("swiglu_expert_linear");
    tcase_add_loop_test(tc, test_swiglu_expert_forward, 0,
                        (int)(sizeof k_exp_cases / sizeof k_exp_cases[0]));
    tcase_add_loop_test(tc, test_swiglu_expert_grad, 0,
                        (int)(sizeof k_exp_cases / sizeof k_exp_cases[0]));
    tcase_add_test(tc, test_swiglu_expert_matches_composition);
    suite_add_tcase(s, tc);
    tc = tcase_create("gather_expert_up");
    tcase_add_loop_test(tc, test_gather_expert_up_forward, 0,
                        (int)(sizeof k_up_cases / sizeof k_up_cases[0]));
    tcase_add_loop_test(tc, test_gather_expert_up_grad, 0,
                        (int)(sizeof k_up_cases / sizeof k_up_cases[0]));
    tcase_add_test(tc, test_gather_expert_up_matches_composition);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    SRunner *sr = srunner_create(ops_expert_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
