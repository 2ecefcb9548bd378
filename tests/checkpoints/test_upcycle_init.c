/* test_upcycle_init.c: how sparse upcycling (checkpoints/upcycle.h) fills and checks an MoE
 * model, on the tiny model of upcycle_fixture.h.
 * - the expert layout: each rank's slice (e_first, e_local) equals the same experts of the
 *   one-process model, filled by global index, with and without expert noise; the output
 *   file loads into any layout; expert noise has the requested relative std;
 * - refusals name the mismatch: an MoE checkpoint, a model.* key that differs, a hidden
 *   width not divisible by G, moe.hidden != F/G, n_experts not a multiple of G, shared
 *   widths that do not add up, a sliding window that differs from the dense run's;
 * - the config's init section (defaults, ranges, cross checks) and the command line.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/blas.h"
#include "checkpoints/ckpt.h"
#include "checkpoints/upcycle.h"
#include "configs/config.h"
#include "layers/model.h"
#include "testutil.h"
#include "train/cmd_upcycle.h"
#include "train/train.h"

#include "upcycle_fixture.h"

/* ---- expert layout (expert parallelism) and noise ---- */

static void check_layout(const Config *dc, int E, int K, int G, float X) {
    Model full;
    build_moe(&full, dc, E, K, G, 0, E);
    UpcycleOpts o = opts(G, 0.02f, X);
    MoeErr err;
    ck_assert_int_eq(upcycle_into(g_dense, &full, &o, &err), 0);
    const int half = E / 2;
    for (int part = 0; part < 2; part++) {
        Model m;
        build_moe(&m, dc, E, K, G, part * half, half);
        ck_assert_int_eq(upcycle_into(g_dense, &m, &o, &err), 0);
        for (int b = 0; b < PBLOCK_COUNT; b++) {
            const ParamBlock *pb = &m.ps.blocks[b];
            const float *want = full.ps.blocks[b].data;
            if (b == PBLOCK_EXPERT) {
                /* per tensor: the local slice of the full stacked tensor */
                for (int i = 0; i < m.ps.count; i++) {
                    const Param *p = &m.ps.p[i];
                    if (p->block != PBLOCK_EXPERT) continue;
                    const Param *q = &full.ps.p[i];
                    size_t per = p->t.n / (size_t)half;
                    ck_assert_msg(!memcmp(p->t.data, q->t.data + (size_t)part * half * per,
                                          sizeof(float) * p->t.n),
                                  "%s: experts %d.. differ from the one-process model", p->name,
                                  part * half);
                }
            } else {
                ck_assert(pb->n == full.ps.blocks[b].n);
                ck_assert(!memcmp(pb->data, want, sizeof(float) * pb->n));
            }
        }
        model_free(&m);
    }
    model_free(&full);
}

START_TEST(test_layout_by_global_index) {
    Model dm;
    Config dc;
    save_dense(&dm, &dc);
    check_layout(&dc, 4, 2, 1, 0.0f);
    check_layout(&dc, 4, 2, 1, 0.1f);
    check_layout(&dc, 6, 2, 3, 0.1f);
    check_layout(&dc, 4, 2, 2, 0.0f);
    /* the written file loads into a 2-rank layout: experts 2..3 of the file = the one-process
     * model's experts 2..3 */
    char out[320];
    snprintf(out, sizeof out, "%s/moe.h5", g_dir);
    UpcycleOpts o = opts(2, 0.02f, 0.05f);
    MoeErr err;
    ck_assert_int_eq(upcycle_ckpt(g_dense, out, 4, 2, &o, &err), 0);
    Model full, part;
    build_moe(&full, &dc, 4, 2, 2, 0, 4);
    build_moe(&part, &dc, 4, 2, 2, 2, 2);
    ck_assert_int_eq(ckpt_load(out, &full, NULL, false, &err), 0);
    ck_assert_int_eq(ckpt_load(out, &part, NULL, false, &err), 0);
    const Param *p = &part.ps.p[part.layer[1].w2], *q = &full.ps.p[full.layer[1].w2];
    ck_assert(!memcmp(p->t.data, q->t.data + p->t.n, sizeof(float) * p->t.n));
    model_free(&full);
    model_free(&part);
    model_free(&dm);
    config_free(&dc);
}
END_TEST

START_TEST(test_expert_noise) {
    Model dm;
    Config dc;
    save_dense(&dm, &dc);
    const float X = 0.05f;
    Model m;
    build_moe(&m, &dc, 4, 2, 1, 0, 4);
    UpcycleOpts o = opts(1, 0.02f, X);
    MoeErr err;
    ck_assert_int_eq(upcycle_into(g_dense, &m, &o, &err), 0);
    /* every expert weight = dense * (1 + X n): the ratios' std is X (2 layers x 4 experts x
     * 3 x 48 = 1152 draws: std of the estimate ~ X/sqrt(2*1152) = 2% of X, so 10% bounds)
     * and experts differ from each other */
    double s1 = 0.0, s2 = 0.0;
    size_t n = 0;
    for (int l = 0; l < 2; l++) {
        const int ti[3] = {m.layer[l].w1, m.layer[l].w3, m.layer[l].w2};
        const int di[3] = {dm.layer[l].w1, dm.layer[l].w3, dm.layer[l].w2};
        for (int k = 0; k < 3; k++) {
            const float *w = m.ps.p[ti[k]].t.data, *d = dm.ps.p[di[k]].t.data;
            size_t per = m.ps.p[ti[k]].t.n / 4;
            for (int e = 0; e < 4; e++)
                for (size_t j = 0; j < per; j++) {
                    double ratio = (double)w[(size_t)e * per + j] / (double)d[j] - 1.0;
                    s1 += ratio;
                    s2 += ratio * ratio;
                    n++;
                }
            ck_assert(memcmp(w, w + per, sizeof(float) * per) != 0);
        }
    }
    double mean = s1 / (double)n, std = sqrt(s2 / (double)n - mean * mean);
    ck_assert_msg(fabs(std - (double)X) < 0.1 * (double)X && fabs(mean) < 0.1 * (double)X, "noise mean %g std %g",
                  mean, std);
    /* and the function moves only a little */
    float *ref = moe_malloc(sizeof(float) * TN * TV);
    logits_of(&dm, ref);
    double mn, mx = upcycled_diff(&dc, ref, 4, 2, 1, 0.02f, X, &mn);
    ck_assert_msg(mx > LOGIT_ATOL && mx < 0.5, "noise %g: max |logit diff| %g", (double)X, mx);
    moe_free(ref);
    model_free(&m);
    model_free(&dm);
    config_free(&dc);
}
END_TEST

/* ---- refusals ---- */

/* Expects upcycle_into(path, model of config c with E, K, G) to fail with msg containing
 * every string of want (NULL-terminated) and a hint; the model must be left untouched. */
static void expect_refusal(const char *path, const Config *c, int E, int K, int G, int hidden,
                           const char *const *want) {
    Config mc;
    config_copy(&mc, c);
    mc.moe.n_experts = E;
    mc.moe.top_k = K;
    mc.moe.hidden = hidden;
    Model m;
    build(&m, &mc, 0, E, 3);
    float *before = moe_malloc(sizeof(float) * m.ps.blocks[PBLOCK_EXPERT].n);
    memcpy(before, m.ps.blocks[PBLOCK_EXPERT].data, sizeof(float) * m.ps.blocks[PBLOCK_EXPERT].n);
    UpcycleOpts o = opts(G, 0.02f, 0.0f);
    MoeErr err = {{0}, {0}};
    ck_assert_int_eq(upcycle_into(path, &m, &o, &err), -1);
    for (int i = 0; want[i]; i++)
        ck_assert_msg(strstr(err.msg, want[i]) != NULL, "'%s' not in: %s", want[i], err.msg);
    ck_assert_msg(err.hint[0] != 0, "no hint for: %s", err.msg);
    ck_assert(!memcmp(before, m.ps.blocks[PBLOCK_EXPERT].data,
                      sizeof(float) * m.ps.blocks[PBLOCK_EXPERT].n));
    moe_free(before);
    model_free(&m);
    config_free(&mc);
}

START_TEST(test_refusals) {
    Model dm;
    Config dc;
    save_dense(&dm, &dc);
    /* an MoE checkpoint */
    char moe_path[320];
    snprintf(moe_path, sizeof moe_path, "%s/moe.h5", g_dir);
    UpcycleOpts o = opts(1, 0.02f, 0.0f);
    MoeErr err;
    ck_assert_int_eq(upcycle_ckpt(g_dense, moe_path, 4, 2, &o, &err), 0);
    expect_refusal(moe_path, &dc, 4, 2, 1, 6,
                   (const char *const[]){moe_path, "not a dense checkpoint",
                                         "moe.n_experts = 4", NULL});
    char again[340];
    snprintf(again, sizeof again, "%s/again.h5", g_dir);
    ck_assert_int_eq(upcycle_ckpt(moe_path, again, 4, 2, &o, &err), -1);
    ck_assert_msg(strstr(err.msg, "not a dense checkpoint") != NULL, "%s", err.msg);
    ck_assert_int_eq(access(again, F_OK), -1);
    /* model.* keys that differ: both named with both values */
    Config bad;
    config_copy(&bad, &dc);
    bad.model.dim = 12;
    bad.model.n_layers = 3;
    expect_refusal(g_dense, &bad, 4, 2, 1, 6,
                   (const char *const[]){"does not match", "model.dim: 8 in the dense "
                                         "checkpoint, 12 in the MoE config",
                                         "model.n_layers: 2", NULL});
    config_free(&bad);
    config_copy(&bad, &dc);
    bad.model.vocab_size = 300;
    expect_refusal(g_dense, &bad, 4, 2, 1, 6,
                   (const char *const[]){"model.vocab_size: 258", NULL});
    config_free(&bad);
    config_copy(&bad, &dc);
    bad.model.rope_theta = 500000.0;
    expect_refusal(g_dense, &bad, 4, 2, 1, 6, (const char *const[]){"model.rope_theta", NULL});
    config_free(&bad);
    /* hidden 6 not divisible by G = 4 */
    expect_refusal(g_dense, &dc, 4, 2, 4, 1,
                   (const char *const[]){"hidden width moe.hidden = 6 is not divisible by the "
                                         "granularity 4", NULL});
    /* moe.hidden != F / G */
    expect_refusal(g_dense, &dc, 4, 2, 2, 6,
                   (const char *const[]){"moe.hidden = 6", "6 / granularity 2 = 3", NULL});
    expect_refusal(g_dense, &dc, 4, 2, 1, 3, (const char *const[]){"moe.hidden = 3", NULL});
    /* E not a multiple of G */
    expect_refusal(g_dense, &dc, 4, 2, 3, 2,
                   (const char *const[]){"moe.n_experts = 4 is not a multiple of the "
                                         "granularity 3", NULL});
    /* shared experts whose widths do not add up with the routed ones: named */
    {
        Config sc;
        config_copy(&sc, &dc);
        sc.moe.n_shared_experts = 1;
        sc.moe.shared_hidden = 2;
        expect_refusal(g_dense, &sc, 4, 2, 1, 3,
                       (const char *const[]){"moe.hidden = 3", "minus the shared width 2 "
                                             "leaves 4 units", NULL});
        sc.moe.shared_hidden = 6;   /* nothing left for the routed experts */
        expect_refusal(g_dense, &sc, 4, 2, 1, 1,
                       (const char *const[]){"total width", "= 6 leaves 0", NULL});
        config_free(&sc);
        /* a window the dense run did not have */
        config_copy(&sc, &dc);
        sc.model.sliding_window = 4;
        expect_refusal(g_dense, &sc, 4, 2, 1, 6,
                       (const char *const[]){"model.sliding_window: 0 in the dense", NULL});
        config_free(&sc);
    }
    /* a missing file: named */
    char missing[340];
    snprintf(missing, sizeof missing, "%s/nope.h5", g_dir);
    expect_refusal(missing, &dc, 4, 2, 1, 6, (const char *const[]){missing, NULL});
    /* the command's core: hidden not divisible, nothing written */
    o = opts(4, 0.02f, 0.0f);
    ck_assert_int_eq(upcycle_ckpt(g_dense, again, 4, 2, &o, &err), -1);
    ck_assert_msg(strstr(err.msg, "not divisible by the granularity 4") != NULL, "%s", err.msg);
    ck_assert_int_eq(access(again, F_OK), -1);
    model_free(&dm);
    config_free(&dc);
}
END_TEST

/* ---- config and command line ---- */

static int load_yaml(Config *c, const char *text, MoeErr *err) {
    return config_load_text(c, text, strlen(text), "t.yaml", err);
}

START_TEST(test_config_init_section) {
    Config c;
    MoeErr err;
    config_defaults(&c);
    ck_assert_ptr_null(c.init.upcycle_from);
    ck_assert(c.init.router_init_std == 0.02 && c.init.expert_noise == 0.0);
    ck_assert_int_eq(c.init.granularity, 1);
    char *y = config_to_yaml(&c);
    ck_assert_ptr_null(strstr(y, "upcycle_from"));   /* unset: left out, reads back */
    ck_assert_ptr_nonnull(strstr(y, "init:\n  router_init_std: 0.02"));
    moe_free(y);
    config_free(&c);

    const char *text = "moe: {n_experts: 8, top_k: 2, hidden: 256}\n"
                       "data: {tokenizer: t.bpe, text: [a.txt]}\n"
                       "init: {upcycle_from: runs/dense_tiny/checkpoints/step_00000300.h5,\n"
                       "       router_init_std: 0, expert_noise: 0.01, granularity: 4}\n";
    ck_assert_int_eq(load_yaml(&c, text, &err), 0);
    ck_assert_str_eq(c.init.upcycle_from, "runs/dense_tiny/checkpoints/step_00000300.h5");
    ck_assert(c.init.router_init_std == 0.0 && c.init.expert_noise == 0.01);
    ck_assert_int_eq(c.init.granularity, 4);
    ck_assert_int_eq(config_validate(&c, &err), 0);
    UpcycleOpts o;
    upcycle_opts_from_config(&c, &o);
    ck_assert(o.granularity == 4 && o.router_init_std == 0.0f && o.expert_noise == 0.01f);
    ck_assert(o.seed == 1337);
    /* round trip, copy and diff */
    y = config_to_yaml(&c);
    Config back;
    ck_assert_int_eq(load_yaml(&back, y, &err), 0);
    ck_assert_str_eq(back.init.upcycle_from, c.init.upcycle_from);
    ck_assert_int_eq(config_diff_other(&c, &back, NULL, 0), 0);
    ck_assert_int_eq(config_diff_shape(&c, &back, NULL, 0), 0);
    Config cp;
    config_copy(&cp, &c);
    config_free(&c);
    ck_assert_str_eq(cp.init.upcycle_from, back.init.upcycle_from);
    moe_free(y);
    config_free(&back);

    /* ranges */
    ck_assert_int_eq(config_set(&cp, "init.granularity=0", &err), -1);
    ck_assert_msg(strstr(err.msg, "init.granularity") && strstr(err.msg, "out of range"), "%s",
                  err.msg);
    ck_assert_int_eq(config_set(&cp, "init.router_init_std=-0.1", &err), -1);
    ck_assert_msg(strstr(err.msg, "init.router_init_std"), "%s", err.msg);
    ck_assert_int_eq(config_set(&cp, "init.expert_noise=-1", &err), -1);
    ck_assert_int_eq(config_set(&cp, "init.upcycle_from=\"\"", &err), -1);
    ck_assert_int_eq(config_set(&cp, "init.upcycel_from=x.h5", &err), -1);
    ck_assert_msg(strstr(err.hint, "did you mean 'upcycle_from'"), "%s", err.hint);
    /* cross checks: E a multiple of G, E > 0 */
    ck_assert_int_eq(config_set(&cp, "init.granularity=3", &err), 0);
    ck_assert_int_eq(config_validate(&cp, &err), -1);
    ck_assert_msg(strstr(err.msg, "moe.n_experts, init.granularity") &&
                  strstr(err.msg, "n_experts = 8 is not a multiple of granularity = 3"), "%s",
                  err.msg);
    ck_assert_msg(strstr(err.msg, "--set init.granularity=3") != NULL, "%s", err.msg);
    ck_assert_int_eq(config_set(&cp, "init.granularity=2", &err), 0);
    ck_assert_int_eq(config_set(&cp, "moe.n_experts=0", &err), 0);
    ck_assert_int_eq(config_validate(&cp, &err), -1);
    ck_assert_msg(strstr(err.msg, "init.upcycle_from, moe.n_experts"), "%s", err.msg);
    config_free(&cp);
    /* the shipped pipeline config: mixtral_tiny's shape from dense_tiny's final checkpoint */
    ck_assert_int_eq(config_load(&c, tt_source_path("configs/upcycle_tiny.yaml"), &err), 0);
    ck_assert_int_eq(config_validate(&c, &err), 0);
    ck_assert_str_eq(c.init.upcycle_from, "runs/dense_tiny/checkpoints/step_00001000.h5");
    ck_assert(c.moe.n_experts == 8 && c.moe.top_k == 2 && c.init.granularity == 2);
    Config dense_cfg;
    ck_assert_int_eq(config_load(&dense_cfg, tt_source_path("configs/dense_tiny.yaml"), &err), 0);
    ck_assert_int_eq(c.moe.hidden * c.init.granularity, dense_cfg.moe.hidden);
    ck_assert_int_eq((int)dense_cfg.train.steps, 1000);   /* step_00001000.h5 */
    config_free(&dense_cfg);
    config_free(&c);
    /* unknown key in init */
    ck_assert_int_eq(load_yaml(&c, "init: {granularty: 2}\n", &err), -1);
    ck_assert_msg(strstr(err.msg, "t.yaml:1:8: init.granularty") != NULL, "%s", err.msg);
}
END_TEST

/* Runs cmd_upcycle on a NULL-terminated word list with stdout and stderr redirected to a
 * file in g_dir; returns the exit status and the captured text in text. */
static int run_cmd(const char *const *words, char *text, size_t cap) {
    char *argv[32];
    int argc = 0;
    for (; words[argc]; argc++) argv[argc] = (char *)words[argc];
    char path[320];
    snprintf(path, sizeof path, "%s/cmd_output.txt", g_dir);
    fflush(stdout);
    fflush(stderr);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    int out = dup(1), errfd = dup(2);
    dup2(fileno(f), 1);
    dup2(fileno(f), 2);
    int rc = cmd_upcycle(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(out, 1);
    dup2(errfd, 2);
    close(out);
    close(errfd);
    fclose(f);
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(text, 1, cap - 1, f);
    text[n] = 0;
    fclose(f);
    return rc;
}

START_TEST(test_command_line) {
    Model dm;
    Config dc;
    save_dense(&dm, &dc);
    char out[320], e[4096];
    snprintf(out, sizeof out, "%s/up.h5", g_dir);
    ck_assert_int_eq(run_cmd((const char *const[]){"--help", NULL}, e, sizeof e), 0);
    ck_assert_int_eq(run_cmd((const char *const[]){g_dense, NULL}, e, sizeof e), 2);
    ck_assert_ptr_nonnull(strstr(e, "moetrain: upcycle needs DENSE_CKPT and OUT_CKPT "
                                    "(see moetrain upcycle --help)\n"));
    ck_assert_int_eq(run_cmd((const char *const[]){g_dense, out, "--top-k", "2", NULL}, e,
                             sizeof e), 2);
    ck_assert_int_eq(run_cmd((const char *const[]){g_dense, out, "--experts", "4", "--top-k",
                                                   "5", NULL}, e, sizeof e), 2);
    ck_assert_int_eq(run_cmd((const char *const[]){g_dense, out, "--experts", "4", "--top-k",
                                                   "2", "--granularity", "3", NULL}, e,
                             sizeof e), 2);
    ck_assert_int_eq(run_cmd((const char *const[]){g_dense, out, "--experts", "x", NULL}, e,
                             sizeof e), 2);
    ck_assert_ptr_nonnull(strstr(e, "--experts needs an integer >= 1, got 'x'"));
    ck_assert_int_eq(run_cmd((const char *const[]){g_dense, out, "--experts", "4", "--top-k",
                                                   "2", "--expert-noise", "-1", NULL}, e,
                             sizeof e), 2);
    ck_assert_int_eq(run_cmd((const char *const[]){g_dense, out, "--experts", "4", "--top-k",
                                                   "2", "--bogus", "1", NULL}, e, sizeof e), 2);
    ck_assert_ptr_nonnull(strstr(e, "unknown option '--bogus'"));
    /* a mismatch found in the file: exit 1 with error + hint, nothing written */
    ck_assert_int_eq(run_cmd((const char *const[]){g_dense, out, "--experts", "4", "--top-k",
                                                   "2", "--granularity", "4", NULL}, e,
                             sizeof e), 1);
    ck_assert_ptr_nonnull(strstr(e, "moetrain: error: "));
    ck_assert_ptr_nonnull(strstr(e, "not divisible by the granularity 4"));
    ck_assert_ptr_nonnull(strstr(e, "\nhint: "));
    ck_assert_int_eq(access(out, F_OK), -1);
    /* success */
    ck_assert_int_eq(run_cmd((const char *const[]){g_dense, out, "--experts", "4", "--top-k",
                                                   "2", "--granularity", "2",
                                                   "--router-init-std", "0", "--expert-noise",
                                                   "0.01", NULL}, e, sizeof e), 0);
    Config mc;
    MoeErr err;
    memset(&mc, 0, sizeof mc);
    ck_assert_int_eq(ckpt_read_config(out, &mc, &err), 0);
    ck_assert(mc.moe.n_experts == 4 && mc.moe.top_k == 2 && mc.moe.hidden == 3);
    ck_assert(mc.init.granularity == 2 && mc.init.router_init_std == 0.0);
    ck_assert(fabs(mc.init.expert_noise - 0.01) < 1e-9);
    config_free(&mc);
    /* shared experts from the command line */
    ck_assert_int_eq(run_cmd((const char *const[]){g_dense, out, "--experts", "4", "--top-k",
                                                   "2", "--shared-hidden", "2", NULL}, e,
                             sizeof e), 2);
    ck_assert_ptr_nonnull(strstr(e, "--shared-hidden needs --shared-experts"));
    ck_assert_int_eq(run_cmd((const char *const[]){g_dense, out, "--experts", "4", "--top-k",
                                                   "2", "--shared-experts", "-1", NULL}, e,
                             sizeof e), 2);
    snprintf(out, sizeof out, "%s/up_shared.h5", g_dir);
    ck_assert_int_eq(run_cmd((const char *const[]){g_dense, out, "--experts", "4", "--top-k",
                                                   "2", "--shared-experts", "2",
                                                   "--shared-hidden", "1", NULL}, e,
                             sizeof e), 0);
    ck_assert_ptr_nonnull(strstr(e, "+ 2 shared expert(s)"));
    memset(&mc, 0, sizeof mc);
    ck_assert_int_eq(ckpt_read_config(out, &mc, &err), 0);
    ck_assert(mc.moe.n_shared_experts == 2 && mc.moe.shared_hidden == 1 && mc.moe.hidden == 4);
    config_free(&mc);
    model_free(&dm);
    config_free(&dc);
}
END_TEST

static Suite *upcycle_init_suite(void) {
    Suite *s = suite_create("upcycle_init");
    TCase *tc;
    tc = tcase_create("layout_and_noise");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_layout_by_global_index);
    tcase_add_test(tc, test_expert_noise);
    suite_add_tcase(s, tc);
    tc = tcase_create("refusals");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_refusals);
    suite_add_tcase(s, tc);
    tc = tcase_create("config_and_cli");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_config_init_section);
    tcase_add_test(tc, test_command_line);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    SRunner *sr = srunner_create(upcycle_init_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
