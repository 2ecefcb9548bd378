/* test_loader.c: the data loader (data/loader.c) over one source (no weights).
 *
 * The token stream is tok[i] = i (mod 65536), so a window's first input token is its start
 * offset and every expected value follows from the position alone. Mixtures, validation
 * sources and 32-bit shards: test_loader_mix.c. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/blas.h"
#include "data/loader.h"

enum { NTOK = 1000, T = 8 };
static uint16_t g_tok[NTOK];

static void fill_tokens(void) {
    for (int i = 0; i < NTOK; i++) g_tok[i] = (uint16_t)i;
}

/* The shard views loaders borrow: a ring of 16, more than any test holds at once. */
static Shard g_view[16];
static int g_next_view;

/* Loader over g_tok[0..n) as one shard (a view, vocab 65536) of one source. */
static void init_loader(Loader *l, size_t n, double val_fraction, uint64_t seed) {
    fill_tokens();
    Shard *s = &g_view[g_next_view++ % 16];
    shard_close(s);
    shard_view(s, g_tok, n, 2, 65536, 1, "g_tok");
    LoaderSource src = {s, 1, 1.0, "g_tok", NULL};
    MoeErr err;
    ck_assert_msg(loader_init(l, &src, 1, NULL, T, val_fraction, seed, &err) == 0, "%s", err.msg);
}

START_TEST(test_split_sizes) {
    Loader l;
    init_loader(&l, NTOK, 0.1, 1);
    /* 10% of 1000 = 100 validation tokens; 900 training tokens make (900-1)/8 = 112 windows
     * and 100 validation tokens (100-1)/8 = 12 windows */
    ck_assert_uint_eq(l.n_train_tokens, 900);
    ck_assert_uint_eq(l.n_val_tokens, 100);
    ck_assert_uint_eq(loader_train_windows(&l), 112);
    ck_assert_uint_eq(loader_val_windows(&l), 12);
    loader_free(&l);
    loader_free(&l);  /* idempotent on the zeroed struct */
}
END_TEST

START_TEST(test_windows_shifted) {
    Loader l;
    init_loader(&l, NTOK, 0.1, 5);
    int32_t in[4 * T], tg[4 * T];
    for (int step = 0; step < 60; step++) {
        loader_next(&l, 4, 0, 4, in, tg);
        for (int r = 0; r < 4; r++) {
            int32_t start = in[r * T];
            ck_assert_msg(start % T == 0, "window start %d not a multiple of T", start);
            ck_assert_int_le(start + T, 899);  /* target T-1 is token start+T, inside train */
            for (int t = 0; t < T; t++) {
                ck_assert_int_eq(in[r * T + t], start + t);
                ck_assert_int_eq(tg[r * T + t], start + t + 1);
            }
        }
    }
    loader_free(&l);
}
END_TEST

START_TEST(test_rank_slices_match) {
    /* one rank with global_B = 8 vs four ranks taking 2 rows each: same tokens, same state.
     * 112 windows / 8 per step: 30 steps cross two epoch boundaries. */
    Loader one, four[4];
    init_loader(&one, NTOK, 0.1, 77);
    for (int r = 0; r < 4; r++) init_loader(&four[r], NTOK, 0.1, 77);
    int32_t in1[8 * T], tg1[8 * T], in4[2 * T], tg4[2 * T];
    for (int step = 0; step < 30; step++) {
        loader_next(&one, 8, 0, 8, in1, tg1);
        for (int r = 0; r < 4; r++) {
            loader_next(&four[r], 8, 2 * r, 2, in4, tg4);
            ck_assert(memcmp(in4, in1 + 2 * r * T, sizeof in4) == 0);
            ck_assert(memcmp(tg4, tg1 + 2 * r * T, sizeof tg4) == 0);
            LoaderState a = loader_get_state(&one), b = loader_get_state(&four[r]);
            ck_assert(a.epoch == b.epoch && a.cursor == b.cursor);
        }
    }
    ck_assert_uint_eq(loader_get_state(&one).epoch, 2);  /* 240 windows = 2 epochs + 16 */
    ck_assert_uint_eq(loader_get_state(&one).cursor, 16);
    loader_free(&one);
    for (int r = 0; r < 4; r++) loader_free(&four[r]);
}
END_TEST

START_TEST(test_state_resume) {
    Loader a, b;
    init_loader(&a, NTOK, 0.1, 3);
    int32_t in[5 * T], tg[5 * T], in2[5 * T], tg2[5 * T];
    for (int s = 0; s < 20; s++) loader_next(&a, 5, 0, 5, in, tg);  /* into epoch 0 -> 1 */
    LoaderState st = loader_get_state(&a);
    /* a fresh loader (its permutation cache empty) restored to the saved state */
    init_loader(&b, NTOK, 0.1, 3);
    MoeErr err;
    ck_assert_int_eq(loader_set_state(&b, st, &err), 0);
    for (int s = 0; s < 40; s++) {
        loader_next(&a, 5, 0, 5, in, tg);
        loader_next(&b, 5, 0, 5, in2, tg2);
        ck_assert_msg(memcmp(in, in2, sizeof in) == 0, "step %d differs after resume", s);
        ck_assert(memcmp(tg, tg2, sizeof tg) == 0);
    }
    /* a state that cannot belong to this corpus is refused */
    LoaderState bad = {0, 112};
    ck_assert_int_eq(loader_set_state(&b, bad, &err), -1);
    ck_assert_msg(strstr(err.msg, "112") != NULL, "msg: %s", err.msg);
    ck_assert(err.hint[0] != 0);
    loader_free(&a);
    loader_free(&b);
}
END_TEST

START_TEST(test_epoch_permutation) {
    Loader l;
    init_loader(&l, NTOK, 0.1, 11);
    enum { NW = 112 };
    int32_t order[3][NW];
    int32_t in[T], tg[T];
    for (int e = 0; e < 3; e++) {
        int seen[NW] = {0};
        for (int w = 0; w < NW; w++) {
            loader_next(&l, 1, 0, 1, in, tg);
            int idx = in[0] / T;
            ck_assert_int_lt(idx, NW);
            ck_assert_msg(!seen[idx], "epoch %d visits window %d twice", e, idx);
            seen[idx] = 1;
            order[e][w] = idx;
        }
        ck_assert_uint_eq(loader_get_state(&l).epoch, (uint64_t)e + 1);
    }
    /* shuffled, and differently each epoch */
    int identity = 1;
    for (int w = 0; w < NW; w++) identity &= order[0][w] == w;
    ck_assert(!identity);
    ck_assert(memcmp(order[0], order[1], sizeof order[0]) != 0);
    ck_assert(memcmp(order[1], order[2], sizeof order[1]) != 0);
    /* another seed gives another order */
    Loader m;
    init_loader(&m, NTOK, 0.1, 12);
    int32_t other[NW];
    for (int w = 0; w < NW; w++) { loader_next(&m, 1, 0, 1, in, tg); other[w] = in[0] / T; }
    ck_assert(memcmp(order[0], other, sizeof other) != 0);
    loader_free(&l);
    loader_free(&m);
}
END_TEST

START_TEST(test_shuffle_uniform) {
    /* 25 tokens, T = 8: (25-1)/8 = 3 windows. Over 600 epochs each of the 3! = 6 orders
     * should appear 100 times on average (binomial sd ~9.1); [60, 140] is > 4 sd either side,
     * and a Fisher-Yates that skips a swap reaches only some orders and fails it. */
    Loader l;
    init_loader(&l, 25, 0.0, 2024);
    ck_assert_uint_eq(loader_train_windows(&l), 3);
    int count[3][3][3] = {{{0}}};
    int32_t in[3 * T], tg[3 * T];
    for (int e = 0; e < 600; e++) {
        loader_next(&l, 3, 0, 3, in, tg);
        count[in[0] / T][in[T] / T][in[2 * T] / T]++;
    }
    int distinct = 0;
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 3; c++) {
                if (a == b || b == c || a == c) { ck_assert_int_eq(count[a][b][c], 0); continue; }
                ck_assert_msg(count[a][b][c] >= 60 && count[a][b][c] <= 140,
                              "order %d%d%d seen %d times in 600 epochs", a, b, c, count[a][b][c]);
                distinct++;
            }
    ck_assert_int_eq(distinct, 6);
    loader_free(&l);
}
END_TEST

START_TEST(test_no_alloc_in_next) {
    Loader l;
    init_loader(&l, NTOK, 0.1, 9);
    int32_t in[16 * T], tg[16 * T];
    size_t calls = moe_alloc_calls();
    for (int s = 0; s < 50; s++) loader_next(&l, 16, 3, 7, in, tg);  /* crosses epochs */
    loader_val_batch(&l, 0, 4, 0, 4, in, tg);
    ck_assert_uint_eq(moe_alloc_calls(), calls);
    loader_free(&l);
}
END_TEST

START_TEST(test_validation_batches) {
    Loader l;
    init_loader(&l, NTOK, 0.1, 1);
    /* 12 validation windows starting at 900, 908, ..., 988; batch b of B=5 holds windows
     * 5b .. 5b+4 (mod 12) */
    int32_t in[5 * T], tg[5 * T];
    for (int b = 0; b < 4; b++) {
        loader_val_batch(&l, b, 5, 0, 5, in, tg);
        for (int r = 0; r < 5; r++) {
            int k = (5 * b + r) % 12;
            for (int t = 0; t < T; t++) {
                ck_assert_int_eq(in[r * T + t], 900 + k * T + t);
                ck_assert_int_eq(tg[r * T + t], 900 + k * T + t + 1);
            }
        }
    }
    /* a row slice is the same rows of the full batch */
    int32_t in2[2 * T], tg2[2 * T];
    loader_val_batch(&l, 1, 5, 2, 2, in2, tg2);
    loader_val_batch(&l, 1, 5, 0, 5, in, tg);
    ck_assert(memcmp(in2, in + 2 * T, sizeof in2) == 0);
    ck_assert(memcmp(tg2, tg + 2 * T, sizeof tg2) == 0);
    /* validation does not move the training state */
    ck_assert_uint_eq(loader_get_state(&l).cursor, 0);
    loader_free(&l);
}
END_TEST

START_TEST(test_multi_span_concat) {
    /* three shards (one of a single token, so windows span two boundaries) read as one
     * stream, with the middle one stored as 32-bit ids: the same windows as one shard */
    fill_tokens();
    static uint32_t wide[1];
    wide[0] = g_tok[300];
    Shard sh[3];
    shard_view(&sh[0], g_tok, 300, 2, 65536, 1, "a");
    shard_view(&sh[1], wide, 1, 4, 65536, 1, "b");
    shard_view(&sh[2], g_tok + 301, 699, 2, 65536, 1, "c");
    LoaderSource src = {sh, 3, 1.0, "abc", NULL};
    Loader a, b;
    MoeErr err;
    ck_assert_int_eq(loader_init(&a, &src, 1, NULL, T, 0.1, 21, &err), 0);
    init_loader(&b, NTOK, 0.1, 21);
    int32_t in[6 * T], tg[6 * T], in2[6 * T], tg2[6 * T];
    for (int s = 0; s < 30; s++) {
        loader_next(&a, 6, 0, 6, in, tg);
        loader_next(&b, 6, 0, 6, in2, tg2);
        ck_assert(memcmp(in, in2, sizeof in) == 0 && memcmp(tg, tg2, sizeof tg) == 0);
    }
    loader_free(&a);
    loader_free(&b);
    for (int i = 0; i < 3; i++) shard_close(&sh[i]);
}
END_TEST

static void expect_init_error(size_t n, double val_fraction, const char *w1, const char *w2) {
    fill_tokens();
    Shard sh;
    shard_view(&sh, g_tok, n, 2, 65536, 1, "g_tok");
    LoaderSource src = {&sh, 1, 1.0, "g_tok", NULL};
    Loader l;
    MoeErr err;
    ck_assert_int_eq(loader_init(&l, &src, 1, NULL, T, val_fraction, 1, &err), -1);
    ck_assert_msg(strstr(err.msg, w1) != NULL, "want \"%s\" in: %s", w1, err.msg);
    ck_assert_msg(!w2 || strstr(err.msg, w2) != NULL, "want \"%s\" in: %s", w2, err.msg);
    ck_assert(err.hint[0] != 0);
    ck_assert_ptr_null(l.src);   /* left zeroed */
    shard_close(&sh);
}

START_TEST(test_too_short) {
    /* 8 tokens, T = 8: a window needs 9 */
    expect_init_error(8, 0.0, "8 tokens", "9");
    /* 9 tokens is exactly one window */
    Loader l;
    init_loader(&l, 9, 0.0, 1);
    ck_assert_uint_eq(loader_train_windows(&l), 1);
    loader_free(&l);
    /* 100 tokens, 10% validation = 10 tokens > 9: fine; 5% = 5 tokens: too few */
    init_loader(&l, 100, 0.1, 1);
    ck_assert_uint_eq(loader_val_windows(&l), 1);
    loader_free(&l);
    expect_init_error(100, 0.05, "validation", "5 tokens");
    /* zero tokens, bad fraction */
    expect_init_error(0, 0.1, "zero tokens", NULL);
    expect_init_error(100, 1.0, "val_fraction", NULL);
    expect_init_error(100, -0.1, "val_fraction", NULL);
}
END_TEST

/* A loss mask: targets are LOSS_IGNORE exactly where mask[position of the target token] is
 * 0, in training and validation windows, and the inputs and the window order are those of
 * the unmasked loader (the same seed). The masked source is two shards (500 + 500 tokens),
 * so the mask, indexed by stream offset, is also checked across a shard boundary; a
 * separate validation source carries its own mask. */
START_TEST(test_mask) {
    Loader l, plain;
    init_loader(&plain, NTOK, 0.1, 5);
    static uint8_t mask[NTOK];
    for (int i = 0; i < NTOK; i++) mask[i] = (uint8_t)(i % 3 != 0 && i % 7 != 2);
    ck_assert(!loader_has_mask(&plain));
    static Shard two[2];
    shard_view(&two[0], g_tok, 500, 2, 65536, 1, "g_tok[0:500]");
    shard_view(&two[1], g_tok + 500, 500, 2, 65536, 1, "g_tok[500:]");
    LoaderSource src = {two, 2, 1.0, "g_tok", mask};
    MoeErr err;
    ck_assert_msg(loader_init(&l, &src, 1, NULL, T, 0.1, 5, &err) == 0, "%s", err.msg);
    ck_assert(loader_has_mask(&l));
    int32_t in[4 * T], tg[4 * T], in2[4 * T], tg2[4 * T];
    int ignored = 0;
    for (int step = 0; step < 40; step++) {   /* crosses an epoch of 112 windows */
        loader_next(&l, 4, 0, 4, in, tg);
        loader_next(&plain, 4, 0, 4, in2, tg2);
        ck_assert(memcmp(in, in2, sizeof in) == 0);
        for (int j = 0; j < 4 * T; j++) {
            const int pos = in[j] + 1;   /* the target's position in the stream (tok[i] = i) */
            ck_assert_int_eq(tg[j], mask[pos] ? tg2[j] : LOSS_IGNORE);
            ck_assert_int_eq(tg2[j], pos);
            ignored += tg[j] == LOSS_IGNORE;
        }
    }
    ck_assert_int_gt(ignored, 0);
    for (int b = 0; b < 3; b++) {
        loader_val_batch(&l, b, 4, 0, 4, in, tg);
        for (int j = 0; j < 4 * T; j++) {
            const int pos = in[j] + 1;
            ck_assert_int_ge(pos, 901);
            ck_assert_int_eq(tg[j], mask[pos] ? pos : LOSS_IGNORE);
        }
    }
    /* loader_window: training window 62 holds tokens [496, 504], across the two shards */
    loader_window(&l, false, 62, in, tg);
    for (int t = 0; t < T; t++) {
        ck_assert_int_eq(in[t], 496 + t);
        ck_assert_int_eq(tg[t], mask[497 + t] ? 497 + t : LOSS_IGNORE);
    }
    loader_free(&l);
    /* a separate validation source: its own mask, indexed from its own first token */
    static uint8_t vmask[200];
    for (int i = 0; i < 200; i++) vmask[i] = (uint8_t)(i % 2);
    Shard *ts = &g_view[g_next_view++ % 16], *vs = &g_view[g_next_view++ % 16];
    shard_close(ts);
    shard_close(vs);
    shard_view(ts, g_tok, 800, 2, 65536, 1, "train");
    shard_view(vs, g_tok + 800, 200, 2, 65536, 1, "val");
    LoaderSource tsrc = {ts, 1, 1.0, "train", NULL}, vsrc = {vs, 1, 1.0, "val", vmask};
    ck_assert_msg(loader_init(&l, &tsrc, 1, &vsrc, T, 0.0, 5, &err) == 0, "%s", err.msg);
    ck_assert(loader_has_mask(&l));
    loader_next(&l, 4, 0, 4, in, tg);
    for (int j = 0; j < 4 * T; j++) ck_assert_int_eq(tg[j], in[j] + 1);   /* no mask */
    for (size_t w = 0; w < loader_val_windows(&l); w++) {
        loader_window(&l, true, w, in, tg);
        for (int t = 0; t < T; t++) {
            const int pos = in[t] + 1 - 800;   /* in the validation source */
            ck_assert_int_eq(tg[t], vmask[pos] ? pos + 800 : LOSS_IGNORE);
        }
    }
    loader_free(&l);
    loader_free(&plain);
    shard_close(&two[0]);
    shard_close(&two[1]);
}
END_TEST

static Suite *loader_suite(void) {
    Suite *s = suite_create("loader");
    struct { const char *name; const TTest *fn; } cases[] = {
        {"split_sizes", test_split_sizes},
        {"windows_shifted", test_windows_shifted},
        {"rank_slices_match", test_rank_slices_match},
        {"state_resume", test_state_resume},
        {"epoch_permutation", test_epoch_permutation},
        {"shuffle_uniform", test_shuffle_uniform},
        {"no_alloc_in_next", test_no_alloc_in_next},
        {"validation_batches", test_validation_batches},
        {"multi_span_concat", test_multi_span_concat},
        {"too_short", test_too_short},
        {"mask", test_mask},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].fn);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    SRunner *sr = srunner_create(loader_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
