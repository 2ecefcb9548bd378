/* test_model_docs.c: the whole model with documents packed in its sequences (Model.doc_mask,
 * data.doc_mask), on the tiny shapes of model_test.h (V = 11, end-of-text id 10).
 * - model_doc_starts on hand-made rows: the end-of-text token opens the document after it;
 * - a document's logits do not depend on what precedes it in the window: the same
 *   document after different prefixes (other lengths, other tokens, end-of-text tokens of
 *   their own) and alone at the start of a window gives the same logits, dense and MoE,
 *   with and without a sliding window, while without doc_mask they differ (so the
 *   comparison can fail);
 * - the KV-cache path (layers/infer.h, what `moetrain sample` runs) on the document alone
 *   gives the logits the packed forward gives it;
 * - per-layer recomputation with documents is bit-identical to keeping the activations
 *   (the layout is read again when the layers are recomputed in backward), and nothing
 *   allocates after the first step.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/blas.h"
#include "layers/infer.h"
#include "layers/model.h"
#include "model_test.h"
#include "testutil.h"

enum { EOT = 10 };   /* tiny_shape's V - 1, the end-of-text id of moetrain's tokenizer */

START_TEST(test_doc_starts_by_hand) {
    /* row 0: a EOT b c EOT EOT d -> documents [a], [EOT b c], [EOT], [EOT d];
     * row 1: EOT at position 0 opens the row's only document, as any row start does */
    const int32_t in[2 * 7] = {3, EOT, 4, 5, EOT, EOT, 6, EOT, 1, 2, 3, 4, 5, 6};
    const int32_t want[2 * 7] = {0, 1, 1, 1, 4, 5, 5, 0, 0, 0, 0, 0, 0, 0};
    int32_t got[2 * 7];
    model_doc_starts(in, 2, 7, EOT, got);
    for (int i = 0; i < 14; i++)
        ck_assert_msg(got[i] == want[i], "position %d: start %d, want %d", i, got[i], want[i]);
}
END_TEST

/* Logits (T, V) of one row through model_forward (no targets, evaluation: no router noise),
 * copied out of the tape's arena into a malloc'ed buffer. */
static float *row_logits(Model *m, const int32_t *ids, int T) {
    Tape t;
    tape_init(&t, 1 << 16);
    tape_reset(&t, false);
    StepCtx ctx = {.train = false, .loss_scale = 1.0f};
    ModelOut out;
    model_forward(m, &t, ids, NULL, 1, T, &ctx, &out);
    float *lg = malloc(sizeof(float) * (size_t)T * m->s.V);
    memcpy(lg, out.logits->data, sizeof(float) * (size_t)T * m->s.V);
    tape_free(&t);
    return lg;
}

/* The document [EOT 7 2 9 1 4 4 0 3 8 5 6] (12 tokens, long enough for a window of 3 to
 * mask inside it) after three prefixes: none (it opens the window), 4 tokens, and 9 tokens
 * holding end-of-text tokens of their own. Its logits must agree with doc_mask and must
 * not without it. */
static void check_independent(int E, int W) {
    static const int32_t doc[] = {EOT, 7, 2, 9, 1, 4, 4, 0, 3, 8, 5, 6};
    static const int32_t pre1[] = {1, 2, 3, 4};
    static const int32_t pre2[] = {5, EOT, 6, 6, 7, EOT, EOT, 8, 9};
    const int32_t *pres[3] = {NULL, pre1, pre2};
    const int npre[3] = {0, 4, 9}, nd = (int)(sizeof doc / sizeof doc[0]);
    ModelShape s = tiny_shape(E);
    s.W = W;
    Model m;
    model_init(&m, &s, 0, E, 4321);
    m.eot = EOT;
    const size_t V = (size_t)s.V;
    for (int masked = 1; masked >= 0; masked--) {
        m.doc_mask = masked;
        float *lg[3];
        for (int p = 0; p < 3; p++) {
            const int T = npre[p] + nd;
            int32_t ids[32];
            if (npre[p]) memcpy(ids, pres[p], sizeof(int32_t) * (size_t)npre[p]);
            memcpy(ids + npre[p], doc, sizeof doc);
            float *all = row_logits(&m, ids, T);
            lg[p] = malloc(sizeof(float) * (size_t)nd * V);
            memcpy(lg[p], all + (size_t)npre[p] * V, sizeof(float) * (size_t)nd * V);
            free(all);
        }
        /* With doc_mask every op on the document's rows sees the same values; only the
         * GEMMs' row count (T) differs between the windows, which may change how the BLAS
         * blocks a product but not what it sums: logits of O(1) agree to float rounding
         * over C = 8 and F = 6 terms, ~1e-6; 1e-5 + 1e-5 relative leaves room for other
         * BLAS kernels. Without the mask the prefix moves the logits by O(0.1) (the first
         * rows see other tokens, RoPE positions shift by 4 and 9): > 1e-3 somewhere. */
        for (int p = 1; p < 3; p++) {
            const double err = tt_max_err(lg[p], lg[0], (size_t)nd * V, 1e-5, 1e-5);
            if (masked)
                ck_assert_msg(err <= 1.0, "E=%d W=%d: the document's logits after prefix %d "
                              "differ from the document alone (err %g, > 1 = outside)", E, W,
                              p, err);
            else
                ck_assert_msg(tt_max_err(lg[p], lg[0], (size_t)nd * V, 1e-3, 0) > 1.0,
                              "E=%d W=%d: without doc_mask prefix %d changed nothing", E, W, p);
        }
        /* the sample path: the document alone through the KV cache, prefill of 5 tokens then
         * one at a time (the test of infer.h's own tolerance: float summation order) */
        if (masked) {
            InferCache ic;
            infer_init(&ic, &m, nd);
            float *kv = malloc(sizeof(float) * (size_t)nd * V);
            infer_step(&ic, &m, doc, 5, kv);
            for (int i = 5; i < nd; i++) infer_step(&ic, &m, doc + i, 1, kv + (size_t)i * V);
            ck_assert_msg(tt_max_err(kv, lg[2], (size_t)nd * V, 1e-5, 1e-5) <= 1.0,
                          "E=%d W=%d: KV-cache logits of the document differ from the packed "
                          "forward's", E, W);
            free(kv);
            infer_free(&ic);
        }
        for (int p = 0; p < 3; p++) free(lg[p]);
    }
    model_free(&m);
}

START_TEST(test_document_independent_dense) { check_independent(0, 0); }
END_TEST
START_TEST(test_document_independent_moe) { check_independent(4, 0); }
END_TEST
START_TEST(test_document_independent_window) {
    check_independent(0, 3);
    check_independent(4, 5);
}
END_TEST

/* Two steps of forward + backward on a batch of two rows with documents, per-layer
 * recomputation on and off: loss and every gradient bit-identical (the same kernels on the
 * same values; recomputation runs each layer's forward again in backward, reading the
 * document layout the forward carved), and the second step allocates nothing. */
START_TEST(test_recompute_same_with_documents) {
    enum { B = 2, T = 70 };   /* T > 64: the attention's row tiles cut at block and documents */
    ModelShape s = tiny_shape(4);
    Model m;
    model_init(&m, &s, 0, 4, 99);
    m.doc_mask = true;
    m.eot = EOT;
    int32_t in[B * T], tg[B * T];
    MoeRng r;
    rng_seed(&r, 5);
    for (int i = 0; i < B * T; i++) {
        in[i] = (int32_t)(rng_next(&r) % (uint64_t)s.V);   /* EOT ~ 1 in 11: short documents */
        tg[i] = (int32_t)(rng_next(&r) % (uint64_t)s.V);
    }
    float *g[2];
    double loss[2];
    for (int rc = 0; rc < 2; rc++) {
        Tape t;
        tape_init(&t, 1 << 16);
        ModelOut out;
        size_t calls = 0;
        for (int step = 0; step < 2; step++) {
            StepCtx ctx = {.train = true, .seed = 7, .step = 3, .loss_scale = 1.0f,
                           .recompute = rc == 1};
            params_zero_grad(&m.ps);
            const size_t c0 = moe_alloc_calls();
            tape_reset(&t, true);
            model_forward(&m, &t, in, tg, B, T, &ctx, &out);
            tape_backward(&t, out.loss, NULL);
            calls = moe_alloc_calls() - c0;
            if (step == 0) tape_compact(&t);
        }
        ck_assert_msg(calls == 0, "recompute %d: %zu allocations in the second step", rc, calls);
        loss[rc] = (double)out.loss->data[0];
        const size_t n = m.ps.blocks[PBLOCK_DENSE].n;
        g[rc] = malloc(sizeof(float) * n);
        memcpy(g[rc], m.ps.blocks[PBLOCK_DENSE].grad, sizeof(float) * n);
        tape_free(&t);
    }
    ck_assert(loss[0] == loss[1]);
    ck_assert(!memcmp(g[0], g[1], sizeof(float) * m.ps.blocks[PBLOCK_DENSE].n));
    free(g[0]);
    free(g[1]);
    model_free(&m);
}
END_TEST

static Suite *docs_suite(void) {
    Suite *s = suite_create("model_docs");
    TCase *tc = tcase_create("documents");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_doc_starts_by_hand);
    tcase_add_test(tc, test_document_independent_dense);
    tcase_add_test(tc, test_document_independent_moe);
    tcase_add_test(tc, test_document_independent_window);
    tcase_add_test(tc, test_recompute_same_with_documents);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    SRunner *sr = srunner_create(docs_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
