/* test_attention.c: op_attention (fused causal GQA, optional sliding window) and
 * op_attention_docs (documents packed in a sequence, block-diagonal causal) against a naive
 * double-precision reference that builds the full masked score matrix, a causality
 * invariant, the window's and the documents' defining property (keys W or more positions
 * back, or in another document, have no influence at all, forward or backward, and every
 * key inside does), central finite differences for dq, dk, dv (with and without a window
 * and documents), one document equal to no documents bit for bit, and the
 * no-allocation-after-the-first-step property. */
#include "autograd/blas.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* W = 0: no window. doc: 0 = no documents (op_attention); > 0: a document begins at each
 * position t > 0 with probability 1/doc (seeded; doc = 1: every token alone); -1: the fixed
 * starts of k_fixed_starts, placed at and around the kernel's 64-row block edges. */
typedef struct AttCase { int B, T, H, Hkv, D, W, doc; } AttCase;

static const int k_fixed_starts[] = {1, 2, 5, 63, 64, 65, 100, 128, 129, 191};

/* The document layout of case c into start (B, T), or NULL when c has no documents. */
static int32_t *make_starts(AttCase c) {
    if (c.doc == 0) return NULL;
    int32_t *start = malloc(sizeof(int32_t) * (size_t)c.B * c.T);
    MoeRng rng;
    rng_seed(&rng, 4242 + (uint64_t)c.T * 31 + (uint64_t)c.doc);
    for (int b = 0; b < c.B; b++) {
        int32_t *st = start + (size_t)b * c.T;
        st[0] = 0;
        for (int t = 1; t < c.T; t++) {
            bool cut = false;
            if (c.doc > 0) cut = rng_uniform(&rng) * c.doc < 1.0;
            else   /* row b shifts the fixed starts by b, so rows differ */
                for (size_t f = 0; f < sizeof k_fixed_starts / sizeof *k_fixed_starts; f++)
                    cut = cut || t == k_fixed_starts[f] + b;
            st[t] = cut ? t : st[t - 1];
        }
    }
    return start;
}

/* Naive reference: for each (b, h, i) the full row of scores q_i . k_j / sqrt(D) over all j,
 * masked to -inf for j > i, with a window for j <= i - W (Mistral 7B's band: the W
 * positions i-W+1 .. i) and with documents for j < start[b, i] (another document), softmax
 * in double, then sum_j p_j v_j. start (B, T) or NULL. */
static void attention_ref(const float *q, const float *k, const float *v, AttCase c,
                          const int32_t *start, float *out) {
    const int HD = c.H * c.D, KD = c.Hkv * c.D;
    double *s = malloc(sizeof(double) * (size_t)c.T);
    for (int b = 0; b < c.B; b++)
        for (int h = 0; h < c.H; h++) {
            const int g = h / (c.H / c.Hkv);
            for (int i = 0; i < c.T; i++) {
                const float *qi = q + (size_t)(b * c.T + i) * HD + h * c.D;
                double m = -(double)INFINITY;
                for (int j = 0; j < c.T; j++) {
                    const float *kj = k + (size_t)(b * c.T + j) * KD + g * c.D;
                    double dot = 0.0;
                    for (int d = 0; d < c.D; d++) dot += (double)qi[d] * (double)kj[d];
                    const bool masked = j > i || (c.W > 0 && j <= i - c.W) ||
                                        (start && j < start[b * c.T + i]);
                    s[j] = masked ? -(double)INFINITY : dot / sqrt((double)c.D);
                    if (s[j] > m) m = s[j];
                }
                double z = 0.0;
                for (int j = 0; j < c.T; j++) {
                    s[j] = exp(s[j] - m);
                    z += s[j];
                }
                for (int d = 0; d < c.D; d++) {
                    double o = 0.0;
                    for (int j = 0; j < c.T; j++)
                        o += s[j] / z * (double)v[(size_t)(b * c.T + j) * KD + g * c.D + d];
                    out[(size_t)(b * c.T + i) * HD + h * c.D + d] = (float)o;
                }
            }
        }
    free(s);
}

static void make_inputs(AttCase c, TensorKind kind, uint64_t seed, Tensor **q, Tensor **k,
                        Tensor **v) {
    *q = tt_tensor2(c.B * c.T, c.H * c.D, kind, "q");
    *k = tt_tensor2(c.B * c.T, c.Hkv * c.D, kind, "k");
    *v = tt_tensor2(c.B * c.T, c.Hkv * c.D, kind, "v");
    tt_fill_normal(*q, seed, 1.0f);
    tt_fill_normal(*k, seed + 1, 1.0f);
    tt_fill_normal(*v, seed + 2, 1.0f);
}

static const AttCase k_cases[] = {
    {2, 5, 4, 2, 3, 0, 0},   /* GQA, two query heads per kv head, two sequences */
    {1, 7, 2, 2, 4, 0, 0},   /* MHA (Hkv == H) */
    {1, 1, 1, 1, 2, 0, 0},   /* a single token: P = [1], out = v */
    {2, 6, 3, 3, 5, 0, 0},   /* MHA, odd head count, D not a power of two */
    {1, 4, 6, 1, 2, 0, 0},   /* MQA: every query head shares one kv head */
    {1, 150, 2, 1, 2, 0, 0}, /* T > the kernel's 64-row query block: 3 blocks, the last
                                partial, so the skipped upper key blocks and the
                                block-diagonal mask are hit */
    {1, 128, 1, 1, 3, 0, 0}, /* T an exact multiple of the block */
    /* sliding windows */
    {2, 7, 4, 2, 3, 3, 0},    /* GQA, window 3 inside one query block */
    {1, 6, 2, 2, 4, 1, 0},    /* W = 1: each query sees only itself, out = v */
    {1, 150, 2, 1, 2, 20, 0}, /* W < block: later blocks start their keys inside the
                                 previous block (lo = i0 - 19), the band's edges inside each */
    {1, 200, 1, 1, 3, 70, 0}, /* W > block: the band spans two key blocks */
    {1, 130, 2, 1, 2, 64, 0}, /* W = the block exactly */
    {2, 5, 2, 1, 2, 9, 0},    /* W > T: nothing masked beyond causality */
    /* packed documents */
    {2, 9, 4, 2, 3, 0, 3},    /* GQA, short documents, two rows with different layouts */
    {1, 7, 2, 2, 4, 0, 1},    /* every token its own document: out = v */
    {1, 150, 2, 1, 2, 0, 30}, /* documents crossing the 64-row blocks: tiles cut at both */
    {2, 200, 1, 1, 2, 0, -1}, /* starts at 63, 64, 65, 128, 129, 191 (row 1: one later), one-
                                 and three-token documents */
    {2, 150, 2, 1, 2, 20, 40},/* documents and a window: a row sees the later of the two
                                 bounds */
    {1, 200, 1, 1, 2, 70, -1},/* a window wider than the block with the fixed starts */
};
#define N_CASES ((int)(sizeof k_cases / sizeof k_cases[0]))

START_TEST(test_forward_matches_reference) {
    AttCase c = k_cases[_i];
    Tensor *q, *k, *v;
    make_inputs(c, TENSOR_CONST, 100 + (uint64_t)_i, &q, &k, &v);
    int32_t *start = make_starts(c);
    float *ref = malloc(sizeof(float) * (size_t)c.B * c.T * c.H * c.D);
    attention_ref(q->data, k->data, v->data, c, start, ref);
    Tape tape;
    tape_init(&tape, 1 << 16);
    tape_reset(&tape, false);
    Tensor *out = start ? op_attention_docs(&tape, q, k, v, c.B, c.T, c.H, c.Hkv, c.D, c.W, start)
                        : op_attention(&tape, q, k, v, c.B, c.T, c.H, c.Hkv, c.D, c.W);
    ck_assert_int_eq((int)out->n, c.B * c.T * c.H * c.D);
    /* float32 kernel vs double reference: outputs are convex combinations of v (|v| ~ 1-3),
     * each step rounds at eps_f32 ~ 6e-8 and softmax/expf add a few ulps; observed worst
     * error 2.4e-7. 1e-5 absolute plus 1e-5 relative leaves ~40x room for other BLAS
     * kernels (FMA, summation order) yet is far below any indexing or masking bug. */
    double err = tt_max_err(out->data, ref, out->n, 1e-5, 1e-5);
    ck_assert_msg(err <= 1.0, "case %d: forward err %g (>1 = outside tolerance)", _i, err);
    if (c.T == 1 || c.W == 1 || c.doc == 1) /* softmax over one score is exactly 1: out = v */
        for (int r = 0; r < c.B * c.T; r++)
            for (int h = 0; h < c.H; h++)
                for (int d = 0; d < c.D; d++)
                    ck_assert_msg(out->data[(size_t)r * c.H * c.D + h * c.D + d] ==
                                  v->data[(size_t)r * c.Hkv * c.D + (h / (c.H / c.Hkv)) * c.D + d],
                                  "one visible key: out != v");
    if (c.W >= c.T) { /* a window covering the sequence is the full causal kernel, bit for bit */
        Tensor *full = op_attention(&tape, q, k, v, c.B, c.T, c.H, c.Hkv, c.D, 0);
        ck_assert(!memcmp(full->data, out->data, sizeof(float) * out->n));
    }
    if (!start) { /* one document per row (all starts 0) is op_attention, bit for bit */
        int32_t *zero = calloc((size_t)c.B * c.T, sizeof(int32_t));
        Tensor *one = op_attention_docs(&tape, q, k, v, c.B, c.T, c.H, c.Hkv, c.D, c.W, zero);
        ck_assert(!memcmp(one->data, out->data, sizeof(float) * out->n));
        free(zero);
    }
    tape_free(&tape);
    free(start);
    free(ref);
    tt_free(q);
    tt_free(k);
    tt_free(v);
}
END_TEST

START_TEST(test_causal) {
    /* Changing k and v at position j of sequence 0 must leave every output at positions
     * i < j (and all of sequence 1) bit-identical: the masked probabilities are exactly 0.
     * It must change position j itself, or the test would prove nothing. */
    AttCase c = {2, 6, 4, 2, 3, 0, 0};
    const int j = 3, HD = c.H * c.D, KD = c.Hkv * c.D;
    Tensor *q, *k, *v;
    make_inputs(c, TENSOR_CONST, 7, &q, &k, &v);
    Tape tape;
    tape_init(&tape, 1 << 16);
    tape_reset(&tape, false);
    Tensor *o1 = op_attention(&tape, q, k, v, c.B, c.T, c.H, c.Hkv, c.D, 0);
    for (int d = 0; d < KD; d++) {
        k->data[(size_t)j * KD + d] += 1.5f;
        v->data[(size_t)j * KD + d] -= 2.0f;
    }
    Tensor *o2 = op_attention(&tape, q, k, v, c.B, c.T, c.H, c.Hkv, c.D, 0);
    for (int i = 0; i < j; i++)
        for (int d = 0; d < HD; d++)
            ck_assert_msg(o1->data[i * HD + d] == o2->data[i * HD + d],
                          "position %d changed when position %d was edited", i, j);
    for (size_t x = (size_t)c.T * HD; x < o1->n; x++)
        ck_assert_msg(o1->data[x] == o2->data[x], "sequence 1 changed (element %zu)", x);
    int changed = 0;
    for (int d = 0; d < HD; d++) changed += o1->data[j * HD + d] != o2->data[j * HD + d];
    ck_assert_int_eq(changed, HD);
    tape_free(&tape);
    tt_free(q);
    tt_free(k);
    tt_free(v);
}
END_TEST

/* The window's defining property (sliding window W, Mistral 7B): query i's output does not
 * depend on keys/values at positions j <= i - W at all. Forward: editing k and v at
 * position j leaves every output row i >= j + W (and i < j, causality) bit-identical, and
 * changes every element of the rows j .. j+W-1 inside the window. Backward: seeding only
 * output row i, the gradients of k and v are exactly 0 outside i-W < j <= i and non-zero
 * at every position inside. T = 150 spans three query blocks so both kernels' key ranges
 * (lo > 0, band edges inside a block) are exercised; j is placed so that i >= j + W rows
 * exist in the same and in later blocks. */
START_TEST(test_window_excludes_far_keys) {
    const AttCase cases[] = {{1, 150, 4, 2, 3, 20, 0}, {2, 150, 2, 1, 2, 70, 0},
                             {1, 12, 2, 2, 3, 4, 0}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const AttCase c = cases[ci];
        const int HD = c.H * c.D, KD = c.Hkv * c.D, W = c.W;
        Tensor *q, *k, *v;
        make_inputs(c, TENSOR_CONST, 70 + ci, &q, &k, &v);
        Tape tape;
        tape_init(&tape, 1 << 16);
        tape_reset(&tape, false);
        for (int j = 1; j < c.T; j += c.T / 5 + 1) {
            Tensor *o1 = op_attention(&tape, q, k, v, c.B, c.T, c.H, c.Hkv, c.D, W);
            for (int d = 0; d < KD; d++) {
                k->data[(size_t)j * KD + d] += 1.5f;
                v->data[(size_t)j * KD + d] -= 2.0f;
            }
            Tensor *o2 = op_attention(&tape, q, k, v, c.B, c.T, c.H, c.Hkv, c.D, W);
            for (int d = 0; d < KD; d++) {   /* restore */
                k->data[(size_t)j * KD + d] -= 1.5f;
                v->data[(size_t)j * KD + d] += 2.0f;
            }
            for (int i = 0; i < c.T; i++) {
                int changed = 0;
                for (int d = 0; d < HD; d++)
                    changed += o1->data[(size_t)i * HD + d] != o2->data[(size_t)i * HD + d];
                if (i < j || i >= j + W)
                    ck_assert_msg(changed == 0, "W=%d: row %d changed when key %d was edited",
                                  W, i, j);
                else
                    ck_assert_msg(changed == HD, "W=%d: row %d (inside the window of key %d) "
                                  "changed in %d of %d elements", W, i, j, changed, HD);
            }
            /* other sequences never move */
            for (size_t x = (size_t)c.T * HD; x < o1->n; x++)
                ck_assert(o1->data[x] == o2->data[x]);
        }
        tape_free(&tape);
        tt_free(q);
        tt_free(k);
        tt_free(v);

        make_inputs(c, TENSOR_PARAM, 90 + ci, &q, &k, &v);
        tape_init(&tape, 1 << 16);
        for (int i = 0; i < c.T; i += c.T / 4 + 1) {
            memset(k->grad, 0, sizeof(float) * k->n);
            memset(v->grad, 0, sizeof(float) * v->n);
            memset(q->grad, 0, sizeof(float) * q->n);
            tape_reset(&tape, true);
            Tensor *out = op_attention(&tape, q, k, v, c.B, c.T, c.H, c.Hkv, c.D, W);
            float *seed = calloc(out->n, sizeof(float));
            for (int d = 0; d < HD; d++) seed[(size_t)i * HD + d] = 1.0f + 0.1f * (float)d;
            tape_backward(&tape, out, seed);
            free(seed);
            for (int j = 0; j < c.B * c.T; j++) {
                const bool inside = j <= i && j > i - W;
                int nz_k = 0, nz_v = 0;
                for (int d = 0; d < KD; d++) {
                    nz_k += k->grad[(size_t)j * KD + d] != 0.0f;
                    nz_v += v->grad[(size_t)j * KD + d] != 0.0f;
                }
                if (!inside)
                    ck_assert_msg(nz_k == 0 && nz_v == 0, "W=%d: seeding row %d gave key %d a "
                                  "gradient", W, i, j);
                else
                    ck_assert_msg(nz_v == KD && (j == i && i == 0 ? true : nz_k > 0),
                                  "W=%d: key %d inside the window of row %d has no gradient "
                                  "(%d k, %d v elements)", W, j, i, nz_k, nz_v);
            }
        }
        tape_free(&tape);
        tt_free(q);
        tt_free(k);
        tt_free(v);
    }
}
END_TEST

/* The documents' defining property (op_attention_docs): query i's output does not depend
 * on any key/value outside its document [start_i, i] at all. Forward: editing k and v at
 * position j changes every element of exactly the rows i >= j of j's document inside the
 * window (i < j + W), and leaves every other row, of other documents and rows, bit-identical.
 * Backward: seeding only output row i, k and v get gradients exactly at the positions i
 * sees, max(start_i, i - W + 1) <= j <= i, and nowhere else. Cases: documents crossing the
 * kernel's 64-row blocks, the fixed starts at the block edges, and both with a window. */
START_TEST(test_documents_isolated) {
    const AttCase cases[] = {{1, 150, 4, 2, 3, 0, 30}, {2, 200, 2, 1, 2, 0, -1},
                             {2, 150, 2, 2, 3, 20, 40}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const AttCase c = cases[ci];
        const int HD = c.H * c.D, KD = c.Hkv * c.D, W = c.W > 0 ? c.W : c.T;
        int32_t *start = make_starts(c);
        Tensor *q, *k, *v;
        make_inputs(c, TENSOR_CONST, 170 + ci, &q, &k, &v);
        Tape tape;
        tape_init(&tape, 1 << 16);
        tape_reset(&tape, false);
        for (int j = 1; j < c.T; j += 13) {
            Tensor *o1 = op_attention_docs(&tape, q, k, v, c.B, c.T, c.H, c.Hkv, c.D, c.W, start);
            for (int d = 0; d < KD; d++) {
                k->data[(size_t)j * KD + d] += 1.5f;
                v->data[(size_t)j * KD + d] -= 2.0f;
            }
            Tensor *o2 = op_attention_docs(&tape, q, k, v, c.B, c.T, c.H, c.Hkv, c.D, c.W, start);
            for (int d = 0; d < KD; d++) {   /* restore */
                k->data[(size_t)j * KD + d] -= 1.5f;
                v->data[(size_t)j * KD + d] += 2.0f;
            }
            for (int i = 0; i < c.T; i++) {
                int changed = 0;
                for (int d = 0; d < HD; d++)
                    changed += o1->data[(size_t)i * HD + d] != o2->data[(size_t)i * HD + d];
                const bool sees = i >= j && i < j + W && start[i] <= j;
                ck_assert_msg(changed == (sees ? HD : 0), "case %zu: row %d (document start "
                              "%d) changed in %d of %d elements when key %d was edited", ci, i,
                              (int)start[i], changed, HD, j);
            }
            for (size_t x = (size_t)c.T * HD; x < o1->n; x++)   /* other rows never move */
                ck_assert(o1->data[x] == o2->data[x]);
        }
        tape_free(&tape);
        tt_free(q);
        tt_free(k);
        tt_free(v);

        make_inputs(c, TENSOR_PARAM, 190 + ci, &q, &k, &v);
        tape_init(&tape, 1 << 16);
        for (int i = 0; i < c.T; i += 11) {
            memset(k->grad, 0, sizeof(float) * k->n);
            memset(v->grad, 0, sizeof(float) * v->n);
            memset(q->grad, 0, sizeof(float) * q->n);
            tape_reset(&tape, true);
            Tensor *out = op_attention_docs(&tape, q, k, v, c.B, c.T, c.H, c.Hkv, c.D, c.W,
                                            start);
            float *seed = calloc(out->n, sizeof(float));
            for (int d = 0; d < HD; d++) seed[(size_t)i * HD + d] = 1.0f + 0.1f * (float)d;
            tape_backward(&tape, out, seed);
            free(seed);
            const int first = start[i] > i - W + 1 ? start[i] : i - W + 1;
            for (int j = 0; j < c.B * c.T; j++) {
                const bool inside = j <= i && j >= first;
                int nz_k = 0, nz_v = 0;
                for (int d = 0; d < KD; d++) {
                    nz_k += k->grad[(size_t)j * KD + d] != 0.0f;
                    nz_v += v->grad[(size_t)j * KD + d] != 0.0f;
                }
                if (!inside)
                    ck_assert_msg(nz_k == 0 && nz_v == 0, "case %zu: seeding row %d (document "
                                  "start %d) gave key %d a gradient", ci, i, (int)start[i], j);
                else /* a lone visible key has P = 1 exactly, so dS = 0 and dk = 0 */
                    ck_assert_msg(nz_v == KD && (first == i ? true : nz_k > 0),
                                  "case %zu: key %d, seen by row %d, has no gradient (%d k, "
                                  "%d v elements)", ci, j, i, nz_k, nz_v);
            }
        }
        tape_free(&tape);
        tt_free(q);
        tt_free(k);
        tt_free(v);
        free(start);
    }
}
END_TEST

typedef struct AttBuild {
    AttCase c;
    const int32_t *start;   /* (B, T) or NULL */
} AttBuild;

static Tensor *build_attention(Tape *t, Tensor **in, void *ctx) {
    const AttBuild *a = ctx;
    const AttCase *c = &a->c;
    if (a->start)
        return op_attention_docs(t, in[0], in[1], in[2], c->B, c->T, c->H, c->Hkv, c->D, c->W,
                                 a->start);
    return op_attention(t, in[0], in[1], in[2], c->B, c->T, c->H, c->Hkv, c->D, c->W);
}

START_TEST(test_grad_fd) {
    AttCase c = k_cases[_i];
    AttBuild ab = {c, make_starts(c)};
    Tensor *in[3];
    make_inputs(c, TENSOR_PARAM, 300 + (uint64_t)_i, &in[0], &in[1], &in[2]);
    /* h = 1e-2 on O(1) inputs: truncation error h^2 |f'''| / 6 ~ 2e-5 |f'''|; rounding of
     * the float32 forward eps_f32 * |f| / h ~ 6e-8 * 10 / 1e-2 ~ 6e-5 worst case (outputs
     * that do not depend on the perturbed element round identically and cancel). Observed
     * worst |analytic - numeric| is 2.4e-5, so 2e-4 absolute (8x margin) plus 1e-3 relative
     * for the larger derivatives, whose h^2 f''' term scales with them. A wrong backward
     * term (e.g. a missing Drow) is off by O(0.1). */
    int bad = tt_check_grad(build_attention, &ab, in, 3, 1e-2f, 2e-4, 1e-3, "attention");
    ck_assert_msg(bad == 0, "case %d: %d gradient elements mismatch", _i, bad);
    for (int x = 0; x < 3; x++) tt_free(in[x]);
    free((void *)ab.start);
}
END_TEST

START_TEST(test_grad_frozen_inputs_skipped) {
    /* Only v trainable: q and k must not be touched (they have no grad buffer) and dv must
     * still match finite differences. */
    AttCase c = {2, 5, 4, 2, 3, 0, 0};
    AttBuild ab = {c, NULL};
    Tensor *in[3];
    make_inputs(c, TENSOR_CONST, 11, &in[0], &in[1], &in[2]);
    tt_free(in[2]);
    in[2] = tt_tensor2(c.B * c.T, c.Hkv * c.D, TENSOR_PARAM, "v");
    tt_fill_normal(in[2], 13, 1.0f);
    /* same reasoning as test_grad_fd; f is linear in v so only rounding error remains */
    int bad = tt_check_grad(build_attention, &ab, in, 3, 1e-2f, 2e-4, 1e-3, "attention dv");
    ck_assert_int_eq(bad, 0);
    for (int x = 0; x < 3; x++) tt_free(in[x]);
}
END_TEST

START_TEST(test_no_growth_second_step) {
    AttCase c = {2, 70, 4, 2, 3, 9, 10};   /* two query blocks, a window, documents */
    int32_t *start = make_starts(c);
    Tensor *q, *k, *v;
    make_inputs(c, TENSOR_PARAM, 21, &q, &k, &v);
    Tape tape;
    tape_init(&tape, 1 << 12);   /* small chunks so a leak into new chunks would show */
    size_t grows[2], gg[2], calls[2], used[2];
    float out0 = 0.0f;
    Tensor *in[3] = {q, k, v};
    float *first[3];
    for (int j = 0; j < 3; j++) first[j] = malloc(sizeof(float) * in[j]->n);
    for (int step = 0; step < 2; step++) {
        tape_reset(&tape, true);
        size_t c0 = moe_alloc_calls();
        Tensor *out = op_attention_docs(&tape, q, k, v, c.B, c.T, c.H, c.Hkv, c.D, c.W, start);
        tape_backward(&tape, out, NULL);
        calls[step] = moe_alloc_calls() - c0;
        grows[step] = tape.arena.grows;
        gg[step] = tape.grad_arena.grows;
        used[step] = arena_used(&tape.arena);
        if (step == 0) out0 = out->data[7];
        else ck_assert_msg(out->data[7] == out0, "second step differs");
        if (step == 0)
            for (int j = 0; j < 3; j++) memcpy(first[j], in[j]->grad, sizeof(float) * in[j]->n);
    }
    /* Grads ACCUMULATE across steps: after two identical steps they are 2x the first (up to
     * the summation order inside sgemm with beta = 1: 1e-6 absolute + 1e-6 relative). */
    for (int j = 0; j < 3; j++) {
        for (size_t e = 0; e < in[j]->n; e++) first[j][e] *= 2.0f;
        ck_assert_msg(tt_max_err(in[j]->grad, first[j], in[j]->n, 1e-6, 1e-6) <= 1.0,
                      "grad of %s does not accumulate", in[j]->name);
        free(first[j]);
    }
    ck_assert_uint_eq(grows[1], grows[0]);
    ck_assert_uint_eq(gg[1], gg[0]);
    ck_assert_uint_eq(used[1], used[0]);
    ck_assert_uint_eq(calls[1], 0);
    tape_free(&tape);
    free(start);
    tt_free(q);
    tt_free(k);
    tt_free(v);
}
END_TEST

static Suite *attention_suite(void) {
    Suite *s = suite_create("attention");
    TCase *tc = tcase_create("forward_vs_reference");
    tcase_add_loop_test(tc, test_forward_matches_reference, 0, N_CASES);
    suite_add_tcase(s, tc);
    tc = tcase_create("causality");
    tcase_add_test(tc, test_causal);
    tcase_add_test(tc, test_window_excludes_far_keys);
    tcase_add_test(tc, test_documents_isolated);
    suite_add_tcase(s, tc);
    tc = tcase_create("grad_fd");
    tcase_add_loop_test(tc, test_grad_fd, 0, N_CASES);
    tcase_add_test(tc, test_grad_frozen_inputs_skipped);
    suite_add_tcase(s, tc);
    tc = tcase_create("no_alloc_and_accumulate");
    tcase_add_test(tc, test_no_growth_second_step);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    SRunner *sr = srunner_create(attention_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
