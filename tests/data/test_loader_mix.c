/* test_loader_mix.c: the loader over several sources (data/loader.c with data/mixture.c and
 * data/permute.c): weighted mixture proportions, per-source epochs, exact resume, identical
 * rows for 1 and R ranks, the separate validation source, 32-bit ids, the Feistel order
 * above 2^20 windows, and a corrupt id stopping the run.
 *
 * Source s's stream is tok[i] = s * 10000 + i, so a window's first input names its source
 * (value / 10000) and its start (value % 10000) by position alone. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/blas.h"
#include "data/loader.h"

enum { T = 8, NS = 3 };
static const size_t LEN[NS] = {801, 3201, 1601};   /* 100, 400, 200 windows of T = 8 */
static uint32_t g_tok[NS][4000];
static Shard g_sh[NS];

static void make_sources(LoaderSource *src, const double *w) {
    for (int s = 0; s < NS; s++) {
        for (size_t i = 0; i < LEN[s]; i++) g_tok[s][i] = (uint32_t)(s * 10000 + (int)i);
        shard_close(&g_sh[s]);
        shard_view(&g_sh[s], g_tok[s], LEN[s], 4, 40000, 7, "src");
        src[s] = (LoaderSource){&g_sh[s], 1, w[s], s == 0 ? "a" : s == 1 ? "b" : "c", NULL};
    }
}

static void init_mix(Loader *l, const double *w, double vf, uint64_t seed) {
    LoaderSource src[NS];
    make_sources(src, w);
    MoeErr err;
    ck_assert_msg(loader_init(l, src, NS, NULL, T, vf, seed, &err) == 0, "%s", err.msg);
}

START_TEST(test_mixture_proportions) {
    /* weights 5 : 3 : 2 over sources of 100, 400 and 200 windows (so the small source
     * repeats: its epochs are its own). 10,000 windows in global batches of 100. */
    const double w[NS] = {5, 3, 2};
    Loader l;
    init_mix(&l, w, 0.0, 42);
    ck_assert_uint_eq(loader_train_windows(&l), 700);
    int32_t in[100 * T], tg[100 * T];
    long count[NS] = {0};
    int seen[NS][400];
    memset(seen, 0, sizeof seen);
    for (int step = 0; step < 100; step++) {
        loader_next(&l, 100, 0, 100, in, tg);
        long batch[NS] = {0};
        for (int r = 0; r < 100; r++) {
            int s = in[r * T] / 10000, start = in[r * T] % 10000;
            ck_assert_int_lt(s, NS);
            ck_assert_int_eq(start % T, 0);
            for (int t = 0; t < T; t++) {
                ck_assert_int_eq(in[r * T + t], s * 10000 + start + t);
                ck_assert_int_eq(tg[r * T + t], s * 10000 + start + t + 1);
            }
            count[s]++;
            batch[s]++;
            /* each source's first epoch visits each of its windows once */
            if (count[s] <= (long)l.src[s].n_windows) {
                ck_assert_msg(!seen[s][start / T], "source %d repeats window %d in epoch 0", s,
                              start / T);
                seen[s][start / T] = 1;
            }
        }
        /* every global batch holds the sources in proportion: 50, 30, 20 of 100 (the
         * schedule's error is below one window per source) */
        for (int s = 0; s < NS; s++)
            ck_assert_msg(labs(batch[s] - (long)(100 * w[s] / 10)) <= 1, "step %d: source %d "
                          "has %ld of 100", step, s, batch[s]);
    }
    /* the criterion: within 2% of the weights over 10,000 windows (the schedule is
     * exact to about one window, far inside it) */
    for (int s = 0; s < NS; s++) {
        double p = (double)count[s] / 10000.0;
        ck_assert_msg(p > w[s] / 10 - 0.02 && p < w[s] / 10 + 0.02, "source %d: %.4f of the "
                      "windows for weight %.2f", s, p, w[s] / 10);
    }
    loader_free(&l);
}
END_TEST

START_TEST(test_mixture_resume_and_ranks) {
    /* one rank, 4 ranks of row slices, and a loader restored from the state at step 700,
     * past the schedule's first 65536-window period (batches of 96 windows) */
    const double w[NS] = {1, 2.5, 0.5};
    Loader one, four[4], back;
    init_mix(&one, w, 0.1, 9);
    for (int r = 0; r < 4; r++) init_mix(&four[r], w, 0.1, 9);
    int32_t in1[96 * T], tg1[96 * T], in4[24 * T], tg4[24 * T];
    LoaderState mid = {0, 0};
    for (int step = 0; step < 760; step++) {
        if (step == 700) mid = loader_get_state(&one);
        loader_next(&one, 96, 0, 96, in1, tg1);
        for (int r = 0; r < 4; r++) {
            loader_next(&four[r], 96, 24 * r, 24, in4, tg4);
            ck_assert_msg(memcmp(in4, in1 + 24 * r * T, sizeof in4) == 0, "step %d rank %d",
                          step, r);
            ck_assert(memcmp(tg4, tg1 + 24 * r * T, sizeof tg4) == 0);
            LoaderState a = loader_get_state(&one), b = loader_get_state(&four[r]);
            ck_assert(a.epoch == b.epoch && a.cursor == b.cursor);
        }
    }
    ck_assert_uint_gt(mid.epoch * loader_train_windows(&one) + mid.cursor, MIX_PERIOD);
    /* replay from the saved state: a fresh loader, set_state, the same 60 batches */
    Loader ref;
    init_mix(&ref, w, 0.1, 9);
    MoeErr err;
    for (int step = 0; step < 700; step++) loader_next(&ref, 96, 0, 96, in1, tg1);
    init_mix(&back, w, 0.1, 9);
    ck_assert_msg(loader_set_state(&back, mid, &err) == 0, "%s", err.msg);
    for (int step = 0; step < 60; step++) {
        int32_t in2[96 * T], tg2[96 * T];
        loader_next(&ref, 96, 0, 96, in1, tg1);
        loader_next(&back, 96, 0, 96, in2, tg2);
        ck_assert_msg(memcmp(in1, in2, sizeof in2) == 0, "step %d differs after resume", step);
        ck_assert(memcmp(tg1, tg2, sizeof tg2) == 0);
    }
    loader_free(&one);
    loader_free(&ref);
    loader_free(&back);
    for (int r = 0; r < 4; r++) loader_free(&four[r]);
}
END_TEST

START_TEST(test_mixture_seed_and_errors) {
    const double w[NS] = {1, 1, 1};
    Loader a, b;
    init_mix(&a, w, 0.0, 1);
    init_mix(&b, w, 0.0, 2);
    int32_t ia[64 * T], ib[64 * T], tg[64 * T];
    loader_next(&a, 64, 0, 64, ia, tg);
    loader_next(&b, 64, 0, 64, ib, tg);
    ck_assert(memcmp(ia, ib, sizeof ia) != 0);   /* another seed, another order */
    loader_free(&a);
    loader_free(&b);
    /* a weight that is not > 0, or too small to get a slot, is refused naming the source */
    LoaderSource src[NS];
    MoeErr err;
    Loader l;
    const double bad[NS] = {1, 0, 1};
    make_sources(src, bad);
    ck_assert_int_eq(loader_init(&l, src, NS, NULL, T, 0.0, 1, &err), -1);
    ck_assert_msg(strstr(err.msg, "source b") && strstr(err.msg, "weight 0"), "%s", err.msg);
    const double tiny[NS] = {1e6, 1, 1e6};
    make_sources(src, tiny);
    ck_assert_int_eq(loader_init(&l, src, NS, NULL, T, 0.0, 1, &err), -1);
    ck_assert_msg(strstr(err.msg, "source b") && strstr(err.msg, "never be sampled"), "%s",
                  err.msg);
    ck_assert(err.hint[0]);
    ck_assert_ptr_null(l.src);
}
END_TEST

START_TEST(test_val_regions) {
    /* without a validation source: the last 10% of each source validates, in source order */
    const double w[NS] = {1, 1, 1};
    Loader l;
    init_mix(&l, w, 0.1, 3);
    size_t nv = 0;
    for (int s = 0; s < NS; s++) {
        size_t n_val = (size_t)(0.1 * (double)LEN[s] + 0.5);
        ck_assert_uint_eq(l.src[s].n_val, n_val);
        ck_assert_uint_eq(l.src[s].n_val_windows, (n_val - 1) / T);
        nv += (n_val - 1) / T;
    }
    ck_assert_uint_eq(loader_val_windows(&l), nv);
    int32_t in[T], tg[T];
    size_t k = 0;
    for (int s = 0; s < NS; s++)
        for (size_t v = 0; v < l.src[s].n_val_windows; v++, k++) {
            loader_window(&l, true, k, in, tg);
            ck_assert_int_eq(in[0], s * 10000 + (int)(l.src[s].val_begin + v * T));
            ck_assert_int_eq(tg[T - 1], in[0] + T);
        }
    loader_free(&l);

    /* a separate validation source: every training token trains, the val shard validates */
    static uint16_t vt[81];
    for (int i = 0; i < 81; i++) vt[i] = (uint16_t)(30000 + i);
    Shard vs;
    shard_view(&vs, vt, 81, 2, 40000, 7, "val.txt");
    LoaderSource src[NS], val = {&vs, 1, 1.0, "val.txt", NULL};
    make_sources(src, w);
    MoeErr err;
    ck_assert_msg(loader_init(&l, src, 1, &val, T, 0.1, 3, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(l.n_train_tokens, LEN[0]);   /* val_fraction not used */
    ck_assert_uint_eq(loader_train_windows(&l), (LEN[0] - 1) / T);
    ck_assert_uint_eq(loader_val_windows(&l), 10);
    int32_t vin[3 * T], vtg[3 * T];
    loader_val_batch(&l, 3, 3, 0, 3, vin, vtg);   /* windows 9, 10 = 0, 11 = 1 */
    ck_assert_int_eq(vin[0], 30000 + 72);
    ck_assert_int_eq(vin[T], 30000);
    ck_assert_int_eq(vin[2 * T], 30000 + 8);
    loader_free(&l);
    /* a validation source of another tokenizer is refused */
    shard_close(&vs);
    shard_view(&vs, vt, 81, 2, 40000, 8, "other.txt");
    ck_assert_int_eq(loader_init(&l, src, 1, &val, T, 0.1, 3, &err), -1);
    ck_assert_msg(strstr(err.msg, "different tokenizers"), "%s", err.msg);
    /* and one shorter than a window */
    shard_close(&vs);
    shard_view(&vs, vt, 8, 2, 40000, 7, "short.txt");
    ck_assert_int_eq(loader_init(&l, src, 1, &val, T, 0.1, 3, &err), -1);
    ck_assert_msg(strstr(err.msg, "val.txt") && strstr(err.msg, "8 tokens"), "%s", err.msg);
    shard_close(&vs);
}
END_TEST

START_TEST(test_wide_ids) {
    /* 32-bit ids above 65535 reach the batch unchanged */
    static uint32_t ids[33];
    for (int i = 0; i < 33; i++) ids[i] = 150000u + (uint32_t)i * 1000u;
    Shard s;
    shard_view(&s, ids, 33, 4, 200000, 1, "wide");
    LoaderSource src = {&s, 1, 1.0, "wide", NULL};
    Loader l;
    MoeErr err;
    ck_assert_msg(loader_init(&l, &src, 1, NULL, T, 0.0, 5, &err) == 0, "%s", err.msg);
    int32_t in[4 * T], tg[4 * T];
    loader_next(&l, 4, 0, 4, in, tg);
    int seen = 0;
    for (int r = 0; r < 4; r++) {
        int w = (in[r * T] - 150000) / 1000 / T;
        seen |= 1 << w;
        for (int t = 0; t < T; t++) {
            ck_assert_int_eq(in[r * T + t], 150000 + (w * T + t) * 1000);
            ck_assert_int_eq(tg[r * T + t], 150000 + (w * T + t + 1) * 1000);
        }
    }
    ck_assert_int_eq(seen, 0xF);
    loader_free(&l);
    shard_close(&s);
}
END_TEST

START_TEST(test_feistel_bijection) {
    /* the Feistel order is a permutation for every n, differs per epoch and key */
    const size_t ns[] = {1, 2, 3, 5, 17, 1000, 4097};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        size_t n = ns[k];
        WindowOrder o;
        perm_init(&o, n, 77, 2, false);
        ck_assert(!o.fisher_yates && !o.perm);
        char *seen = calloc(n, 1);
        for (uint64_t e = 0; e < 3; e++) {
            memset(seen, 0, n);
            for (size_t p = 0; p < n; p++) {
                size_t w = perm_at(&o, e, p);
                ck_assert_uint_lt(w, n);
                ck_assert_msg(!seen[w], "n %zu epoch %llu: window %zu twice", n,
                              (unsigned long long)e, w);
                seen[w] = 1;
            }
        }
        if (n >= 1000) {
            size_t same_e = 0, same_k = 0, fixed = 0;
            WindowOrder o2;
            perm_init(&o2, n, 78, 2, false);
            for (size_t p = 0; p < n; p++) {
                same_e += perm_at(&o, 0, p) == perm_at(&o, 1, p);
                same_k += perm_at(&o, 0, p) == perm_at(&o2, 0, p);
                fixed += perm_at(&o, 0, p) == p;
            }
            /* a random permutation agrees with another in ~1 place (Poisson(1)); 20 would
             * be a structured, not a shuffled, order */
            ck_assert_uint_lt(same_e, 20);
            ck_assert_uint_lt(same_k, 20);
            ck_assert_uint_lt(fixed, 20);
            perm_free(&o2);
        }
        free(seen);
        perm_free(&o);
    }
}
END_TEST

START_TEST(test_large_source_constant_memory) {
    /* one source of 2^20 + 3 windows (T = 1): above the Fisher-Yates limit, so no table
     * of 4 MiB is allocated; an epoch still visits every window once */
    const size_t n = PERM_FY_MAX + 4;
    uint16_t *tok = calloc(n, sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) tok[i] = (uint16_t)(i & 0xffff);
    Shard s;
    shard_view(&s, tok, n, 2, 65536, 1, "big");
    LoaderSource src = {&s, 1, 1.0, "big", NULL};
    Loader l;
    MoeErr err;
    size_t live = moe_live_bytes();
    ck_assert_msg(loader_init(&l, &src, 1, NULL, 1, 0.0, 5, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(loader_train_windows(&l), PERM_FY_MAX + 3);
    ck_assert_ptr_null(l.src[0].order.perm);
    ck_assert_uint_lt(moe_live_bytes() - live, 4096);   /* O(sources), not O(windows) */
    char *seen = calloc(n, 1);
    int32_t in[1024], tg[1024];
    size_t total = 0;
    while (total < PERM_FY_MAX + 3) {
        int b = (int)(PERM_FY_MAX + 3 - total < 1024 ? PERM_FY_MAX + 3 - total : 1024);
        loader_next(&l, b, 0, b, in, tg);
        for (int r = 0; r < b; r++) {
            /* the window's position from its two tokens (ids wrap at 65536) */
            size_t w = (size_t)perm_at(&l.src[0].order, 0, total + (size_t)r);
            ck_assert_int_eq(in[r], (int)(w & 0xffff));
            ck_assert(!seen[w]);
            seen[w] = 1;
        }
        total += (size_t)b;
    }
    ck_assert_uint_eq(loader_get_state(&l).epoch, 1);
    free(seen);
    loader_free(&l);
    shard_close(&s);
    free(tok);
}
END_TEST

START_TEST(test_corrupt_id_stops) {
    /* an id >= vocab_size met while reading a window stops the process with status 1 */
    static uint16_t tok[17];
    for (int i = 0; i < 17; i++) tok[i] = (uint16_t)i;
    tok[5] = 300;   /* vocab 256 */
    Shard s;
    shard_view(&s, tok, 17, 2, 256, 1, "corrupt.tok");
    LoaderSource src = {&s, 1, 1.0, "corrupt", NULL};
    Loader l;
    MoeErr err;
    ck_assert_msg(loader_init(&l, &src, 1, NULL, T, 0.0, 5, &err) == 0, "%s", err.msg);
    int32_t in[2 * T], tg[2 * T];
    loader_next(&l, 2, 0, 2, in, tg);   /* both windows: one holds token 5 */
    ck_abort_msg("a corrupt id was read without stopping");
}
END_TEST

static Suite *mix_suite(void) {
    Suite *s = suite_create("loader_mix");
    struct { const char *name; const TTest *fn; } cases[] = {
        {"mixture_proportions", test_mixture_proportions},
        {"mixture_resume_and_ranks", test_mixture_resume_and_ranks},
        {"mixture_seed_and_errors", test_mixture_seed_and_errors},
        {"val_regions", test_val_regions},
        {"wide_ids", test_wide_ids},
        {"feistel_bijection", test_feistel_bijection},
        {"large_source_constant_memory", test_large_source_constant_memory},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, cases[i].fn);
        suite_add_tcase(s, tc);
    }
    TCase *tc = tcase_create("corrupt_id_stops");
    tcase_add_exit_test(tc, test_corrupt_id_stops, 1);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    SRunner *sr = srunner_create(mix_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
