/* test_report.c: `moetrain report`: the page (train/report.c, train/svg.c), the metrics
 * reader (train/report_data.c, core/json.c) and the command (train/cmd_report.c).
 *
 * The page is checked structurally, not by eye: a small XML well-formedness checker
 * (report_testlib.h) parses the whole document into a flat element list, and the tests
 * then count the <svg> plots by data-plot (drawn against tokens: each plot is also drawn
 * against the step and the time, test_report_page.c checks those), the curves of each plot
 * by (data-series, data-run) and the heatmap rows and cells. Inputs: the recorded fixture
 * (tests/train/fixtures/mixtral_tiny, the first steps of a real configs/mixtral_tiny.yaml
 * run) and synthetic runs (MoE with a NaN skipped step, dense, single step, 5000 steps for
 * downsampling), plus the error cases.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/blas.h"
#include "report_testlib.h"
#include "testutil.h"
#include "core/json.h"
#include "train/cmd_report.h"
#include "train/report.h"
#include "train/svg.h"

/* ------------------------------------------------------------------------------------- */
/* the XML checker itself must be able to fail                                            */

START_TEST(test_xml_checker) {
    Doc d;
    ck_assert_int_eq(xml_check(&d, "<!DOCTYPE html>\n<a x=\"1\"><b/>t &amp; &#183;</a>"), 0);
    ck_assert_int_eq(d.n, 2);
    free(d.e);
    const char *bad[] = {"<a><b></a></b>", "<a x=1></a>", "<a>&nbsp;</a>", "<a>x < y</a>",
                         "<a></a><b></b>", "<a x=\"1\" x=\"2\"/>", "<a>", "<a></b>",
                         "<a x=\"<\"/>", "text"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(xml_check(&d, bad[i]) != 0, "accepted bad XML %s", bad[i]);
        free(d.e);
    }
}
END_TEST

/* ------------------------------------------------------------------------------------- */
/* JSON reader                                                                            */

START_TEST(test_json_accepts) {
    size_t live = moe_live_bytes();
    JsonValue v;
    MoeErr err;
    const char *s = " {\"a\":[1,-2.5e3,true,false,null,\"x\\n\\u00e9\\ud83d\\ude00\"],"
                    "\"b\":{},\"c\":[],\"n\":nan,\"m\":-inf,\"a\":7} ";
    ck_assert_msg(json_parse(&v, s, strlen(s), "f", 1, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(v.type, JSON_OBJ);
    ck_assert(json_get_num(&v, "a") == 7.0); /* last duplicate wins */
    const JsonValue *a = &v.items[0];
    ck_assert_int_eq((int)a->n, 6);
    ck_assert(a->items[1].num == -2500.0);
    ck_assert(a->items[2].b && !a->items[3].b && a->items[4].type == JSON_NULL);
    ck_assert_str_eq(a->items[5].str, "x\n\xc3\xa9\xf0\x9f\x98\x80");
    ck_assert(isnan(json_get_num(&v, "n")) && isinf(json_get_num(&v, "m")));
    ck_assert(isnan(json_get_num(&v, "missing")));
    json_free(&v);
    ck_assert_msg(moe_live_bytes() == live, "leak");
}
END_TEST

START_TEST(test_json_rejects) {
    size_t live = moe_live_bytes();
    /* each bad text and the 1-based column its error must name */
    const struct { const char *text; int col; } bad[] = {
        {"{\"a\":1,}", 8},      {"[1,2,]", 6},        {"{'a':1}", 2},
        {"{\"a\" 1}", 6},       {"[01]", 2},          {"[1.]", 4},
        {"[1e]", 4},            {"{\"a\":tru}", 6},   {"{\"a\":1} x", 9},
        {"\"abc", 5},           {"[\"\\q\"]", 4},     {"", 1},
        {"{\"a\":[1,2}", 10},   {"[nul]", 2},         {"\"\\ud800\"", 8},
        {"[1 2]", 4},           {"{\"a\":1", 7},      {"[truex]", 2},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        JsonValue v;
        MoeErr err;
        memset(&err, 0, sizeof err);
        int rc = json_parse(&v, bad[i].text, strlen(bad[i].text), "m.jsonl", 12, &err);
        ck_assert_msg(rc == -1, "accepted '%s'", bad[i].text);
        char want[64];
        snprintf(want, sizeof want, "m.jsonl:12:%d: ", bad[i].col);
        ck_assert_msg(strstr(err.msg, want) != NULL, "'%s': msg '%s' lacks '%s'", bad[i].text,
                      err.msg, want);
        ck_assert(v.type == JSON_NULL && v.n == 0);
    }
    /* nesting depth is capped, not a stack overflow */
    char deep[300];
    memset(deep, '[', sizeof deep - 1);
    deep[sizeof deep - 1] = 0;
    JsonValue v;
    MoeErr err;
    ck_assert(json_parse(&v, deep, strlen(deep), "d", 1, &err) == -1);
    ck_assert_msg(strstr(err.msg, "nesting") != NULL, "%s", err.msg);
    ck_assert_msg(moe_live_bytes() == live, "leak on error paths: %zu -> %zu", live,
                  moe_live_bytes());
}
END_TEST

/* ------------------------------------------------------------------------------------- */
/* rendering                                                                              */

/* The recorded run: every plot once, 4 layers x 8 experts, config escaped. */
START_TEST(test_fixture_report) {
    size_t live = moe_live_bytes();
    const char *dir = tt_source_path("tests/train/fixtures/mixtral_tiny");
    RunData r;
    MoeErr err;
    ck_assert_msg(report_load_run(&r, dir, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(r.L, 4);
    ck_assert_int_eq(r.E, 8);
    ck_assert_msg(r.n >= 100 && r.n_val >= 1, "fixture has %zu steps, %zu val points", r.n,
                  r.n_val);
    ck_assert(r.config && strstr(r.config, "n_experts: 8"));
    size_t n = r.n;
    report_run_free(&r);

    const char *dirs[] = {dir};
    Doc d;
    char *html = render(dirs, 1, &d);
    const char *plots[] = {"loss", "aux_loss", "z_loss", "lr", "grad_norm", "tokens_per_s",
                           "router_entropy", "load_imbalance"};
    for (int i = 0; i < 8; i++)
        ck_assert_msg(find_svg(&d, plots[i], NULL, -1) >= 0, "plot %s missing or repeated",
                      plots[i]);
    ck_assert_int_eq(count_svgs(&d), 8 + 4);
    expect_curves(&d, "loss", "loss@mixtral_tiny,val_loss@mixtral_tiny");
    expect_curves(&d, "lr", "lr@mixtral_tiny");
    expect_curves(&d, "router_entropy",
                  "router_entropy.l0@mixtral_tiny,router_entropy.l1@mixtral_tiny,"
                  "router_entropy.l2@mixtral_tiny,router_entropy.l3@mixtral_tiny");
    for (int l = 0; l < 4; l++)
        check_heatmap(&d, "mixtral_tiny", l, 8, (int)(n < REPORT_MAX_COLUMNS ? n : 400));
    ck_assert_int_eq((int)report_heatmap_columns(100000, 64), 200); /* 12800 cells / 64 */
    ck_assert_int_eq((int)report_heatmap_columns(100000, 8), 400);
    ck_assert_int_eq((int)report_heatmap_columns(7, 8), 7);
    /* config.yaml is shown, quotes and apostrophes escaped */
    ck_assert_msg(strstr(html, "tokenizer: &quot;data/tokenizer_4096.bpe&quot;") != NULL,
                  "config text missing or not escaped");
    ck_assert_msg(strstr(html, "config &#39;mixtral_tiny&#39;") != NULL, "apostrophe");
    free(html);
    free(d.e);
    ck_assert_msg(moe_live_bytes() == live, "leak: %zu -> %zu", live, moe_live_bytes());
}
END_TEST

/* MoE (with a NaN step and validation), dense (no expert_load, no validation) and a
 * single-step MoE run on one page. */
START_TEST(test_multi_run) {
    size_t live = moe_live_bytes();
    write_moe_run("moe", 10, 2, 4, 5, 4, "name: <script>alert(\"x\") & 'y'</script>\n");
    write_dense_run("dense", 6);
    write_moe_run("single", 1, 1, 3, 0, 0, NULL);
    const char *dirs[] = {tmp_path("moe"), tmp_path("dense"), tmp_path("single")};
    Doc d;
    char *html = render(dirs, 3, &d);
    expect_curves(&d, "loss", "loss@dense,loss@moe,loss@single,val_loss@moe");
    /* the dense run has no router: no aux loss curve (test_report_page.c: the note) */
    expect_curves(&d, "aux_loss", "aux_loss@moe,aux_loss@single");
    expect_curves(&d, "lr", "lr@dense,lr@moe,lr@single");
    expect_curves(&d, "grad_norm", "grad_norm@dense,grad_norm@moe,grad_norm@single");
    expect_curves(&d, "tokens_per_s", "tokens_per_s@dense,tokens_per_s@moe,tokens_per_s@single");
    expect_curves(&d, "router_entropy",
                  "router_entropy.l0@moe,router_entropy.l0@single,router_entropy.l1@moe");
    expect_curves(&d, "load_imbalance",
                  "load_imbalance.l0@moe,load_imbalance.l0@single,load_imbalance.l1@moe");
    check_heatmap(&d, "moe", 0, 4, 10);
    check_heatmap(&d, "moe", 1, 4, 10);
    check_heatmap(&d, "single", 0, 3, 1);
    ck_assert_msg(find_svg(&d, "expert_load", "dense", -1) == -1, "dense run got a heatmap");
    ck_assert_int_eq(count_svgs(&d), 8 + 3);
    /* several runs: the config comparison names the runs it could not compare */
    ck_assert_msg(strstr(html, "single: left out of the comparison: no config.yaml") != NULL,
                  "missing config not reported");
    free(html);
    free(d.e);
    /* one run: its config.yaml shown as it is, escaped */
    html = render(dirs, 1, &d);
    ck_assert_msg(strstr(html, "name: &lt;script&gt;alert(&quot;x&quot;) &amp; &#39;y&#39;"
                               "&lt;/script&gt;") != NULL, "config not escaped");
    free(html);
    free(d.e);
    ck_assert_msg(moe_live_bytes() == live, "leak: %zu -> %zu", live, moe_live_bytes());
}
END_TEST

/* experts_per_token (issue 11's routers): one curve per layer for the run that logs it, none
 * for a run written before the key existed; the plot is absent when no run has it (the
 * fixture test above counts exactly 8 + 4 plots). */
START_TEST(test_experts_per_token) {
    g_experts_per_token = 1;
    write_moe_run("topp", 6, 2, 4, 0, 0, NULL);
    g_experts_per_token = 0;
    write_moe_run("older", 6, 2, 4, 0, 0, NULL);
    const char *dirs[] = {tmp_path("topp"), tmp_path("older")};
    Doc d;
    char *html = render(dirs, 2, &d);
    expect_curves(&d, "experts_per_token", "experts_per_token.l0@topp,experts_per_token.l1@topp");
    ck_assert_int_eq(count_svgs(&d), 9 + 4);   /* 8 line plots + this one, 2 x 2 heatmaps */
    free(html);
    free(d.e);
}
END_TEST

/* Dense runs alone: no routing plots at all, nor aux and z losses. The NaN step of a MoE
 * run breaks its path. */
START_TEST(test_dense_only_and_gaps) {
    write_dense_run("dense", 3);
    const char *dirs[] = {tmp_path("dense")};
    Doc d;
    char *html = render(dirs, 1, &d);
    ck_assert_int_eq(find_svg(&d, "router_entropy", NULL, -1), -1);
    ck_assert_int_eq(find_svg(&d, "expert_load", NULL, -1), -1);
    ck_assert_int_eq(find_svg(&d, "aux_loss", NULL, -1), -1);
    ck_assert_int_eq(count_svgs(&d), 4);   /* loss, lr, grad_norm, tokens_per_s */
    expect_curves(&d, "loss", "loss@dense");
    free(html);
    free(d.e);

    write_moe_run("gap", 9, 1, 2, 5, 0, NULL);
    const char *dirs2[] = {tmp_path("gap")};
    html = render(dirs2, 1, &d);
    int svg = find_svg(&d, "loss", NULL, -1);
    ck_assert(svg >= 0);
    char dd[4096];
    for (int i = svg + 1; i < d.n; i++)
        if (!strcmp(d.e[i].name, "path") && attr(&d.e[i], "d", dd, sizeof dd)) break;
    int moves = 0, lines = 0;
    for (const char *p = dd; *p; p++) moves += *p == 'M', lines += *p == 'L';
    /* steps 1-4 and 6-9: two sub-paths of 4 points */
    ck_assert_msg(moves == 2 && lines == 6, "path '%s': %d M, %d L", dd, moves, lines);
    free(html);
    free(d.e);
}
END_TEST

/* 5000 steps: each curve at most REPORT_MAX_POINTS points (its EMA SVG_EMA_MAX_POINTS),
 * heatmaps 400 columns. */
START_TEST(test_downsampling) {
    write_moe_run("long", 5000, 1, 2, 0, 1000, NULL);
    const char *dirs[] = {tmp_path("long")};
    Doc d;
    char *html = render(dirs, 1, &d);
    check_heatmap(&d, "long", 0, 2, REPORT_MAX_COLUMNS);
    int paths = 0, emas = 0;
    char xv[16];
    for (int i = 0; i < d.n; i++) {
        if (strcmp(d.e[i].name, "path")) continue;
        static char dd[200000];
        ck_assert(attr(&d.e[i], "d", dd, sizeof dd));
        int pts = 0;
        for (const char *p = dd; *p; p++) pts += *p == 'M' || *p == 'L';
        int ema = has_attr(&d.e[i], "class", "ema");
        ck_assert_msg(pts >= 2 && pts <= (ema ? SVG_EMA_MAX_POINTS : REPORT_MAX_POINTS),
                      "curve with %d points", pts);
        /* count the curves of the plots against tokens */
        int svg = d.e[i].parent;
        if (attr(&d.e[svg], "data-x", xv, sizeof xv) && !strcmp(xv, "tokens"))
            ema ? emas++ : paths++;
    }
    /* loss, val_loss, aux_loss, z_loss, lr, grad_norm, tokens_per_s, entropy, imbalance;
     * all but val_loss and lr smoothed */
    ck_assert_int_eq(paths, 9);
    ck_assert_int_eq(emas, 7);
    ck_assert_msg(strlen(html) < 2000000, "page is %zu bytes", strlen(html));
    free(html);
    free(d.e);
}
END_TEST

/* ------------------------------------------------------------------------------------- */
/* errors                                                                                 */

START_TEST(test_missing_dir) {
    size_t live = moe_live_bytes();
    RunData r;
    MoeErr err;
    const char *dir = tmp_path("nope");
    ck_assert(report_load_run(&r, dir, &err) == -1);
    ck_assert_msg(strstr(err.msg, dir) && strstr(err.msg, "no such run directory"), "%s",
                  err.msg);
    ck_assert(err.hint[0]);
    ck_assert_msg(moe_live_bytes() == live, "leak");
    char *argv[] = {(char *)dir};
    ck_assert_int_eq(cmd_report(1, argv), 1);
    /* a directory without metrics.jsonl */
    ck_assert(mkdir(tmp_path("empty_dir"), 0755) == 0);
    ck_assert(report_load_run(&r, tmp_path("empty_dir"), &err) == REPORT_NO_STEPS);
    ck_assert_msg(strstr(err.msg, "metrics.jsonl: cannot open"), "%s", err.msg);
}
END_TEST

START_TEST(test_empty_metrics) {
    size_t live = moe_live_bytes();
    ck_assert(mkdir(tmp_path("e"), 0755) == 0);
    write_file(tmp_path("e/metrics.jsonl"), "\n");
    RunData r;
    MoeErr err;
    ck_assert(report_load_run(&r, tmp_path("e"), &err) == REPORT_NO_STEPS);
    char want[600];
    snprintf(want, sizeof want, "%s/e/metrics.jsonl has no steps", g_dir);
    ck_assert_msg(strstr(err.msg, want), "msg '%s' lacks '%s'", err.msg, want);
    ck_assert_msg(strstr(err.hint, "wait for the first step"), "hint '%s'", err.hint);
    /* only validation points is still no steps */
    write_file(tmp_path("e/metrics.jsonl"), "{\"step\":1,\"tokens\":5,\"val_loss\":3}\n");
    ck_assert(report_load_run(&r, tmp_path("e"), &err) == REPORT_NO_STEPS);
    ck_assert_msg(strstr(err.msg, "has no steps"), "%s", err.msg);
    ck_assert_msg(moe_live_bytes() == live, "leak");
}
END_TEST

START_TEST(test_malformed_line) {
    size_t live = moe_live_bytes();
    ck_assert(mkdir(tmp_path("m"), 0755) == 0);
    const char *ok = "{\"step\":1,\"tokens\":5,\"loss\":3,\"lr\":1}\n";
    char text[1024];
    snprintf(text, sizeof text, "%s%s{\"step\":3,\"loss\":3,}\n%s", ok, ok, ok);
    write_file(tmp_path("m/metrics.jsonl"), text);
    RunData r;
    MoeErr err;
    ck_assert(report_load_run(&r, tmp_path("m"), &err) == -1);
    char want[600];
    snprintf(want, sizeof want, "%s/m/metrics.jsonl:3:", g_dir);
    ck_assert_msg(strstr(err.msg, want), "msg '%s' lacks '%s'", err.msg, want);
    /* not an object / not a step */
    snprintf(text, sizeof text, "%s[1,2]\n", ok);
    write_file(tmp_path("m/metrics.jsonl"), text);
    ck_assert(report_load_run(&r, tmp_path("m"), &err) == -1);
    snprintf(want, sizeof want, "%s/m/metrics.jsonl:2:", g_dir);
    ck_assert_msg(strstr(err.msg, want), "msg '%s' lacks '%s'", err.msg, want);
    snprintf(text, sizeof text, "%s{\"step\":2,\"foo\":1}\n", ok);
    write_file(tmp_path("m/metrics.jsonl"), text);
    ck_assert(report_load_run(&r, tmp_path("m"), &err) == -1);
    ck_assert_msg(strstr(err.msg, want) && strstr(err.msg, "neither"), "%s", err.msg);
    /* expert_load changing shape */
    snprintf(text, sizeof text,
             "{\"step\":1,\"loss\":3,\"expert_load\":[[0.5,0.5]]}\n"
             "{\"step\":2,\"loss\":3,\"expert_load\":[[0.5,0.25,0.25]]}\n");
    write_file(tmp_path("m/metrics.jsonl"), text);
    ck_assert(report_load_run(&r, tmp_path("m"), &err) == -1);
    ck_assert_msg(strstr(err.msg, want) && strstr(err.msg, "1 layers x 3 experts"), "%s",
                  err.msg);
    /* a partial last line (the run is writing it) is ignored; a broken eval.jsonl is not */
    snprintf(text, sizeof text, "%s%s{\"step\":3,\"lo", ok, ok);
    write_file(tmp_path("m/metrics.jsonl"), text);
    ck_assert_msg(report_load_run(&r, tmp_path("m"), &err) == 0, "%s", err.msg);
    ck_assert_int_eq((int)r.n, 2);
    report_run_free(&r);
    write_file(tmp_path("m/eval.jsonl"), "{\"step\":1,\"val_loss\":2}\n{\"step\":2,\"val\n");
    ck_assert(report_load_run(&r, tmp_path("m"), &err) == -1);
    snprintf(want, sizeof want, "%s/m/eval.jsonl:2:", g_dir);
    ck_assert_msg(strstr(err.msg, want), "msg '%s' lacks '%s'", err.msg, want);
    ck_assert_msg(moe_live_bytes() == live, "leak: %zu -> %zu", live, moe_live_bytes());
}
END_TEST

START_TEST(test_command_line) {
    write_dense_run("a", 2);
    write_dense_run("b", 2);
    char *help[] = {"--help"};
    ck_assert_int_eq(cmd_report(1, help), 0);
    ck_assert_int_eq(cmd_report(0, NULL), 2);
    char *two[] = {(char *)tmp_path("a"), (char *)tmp_path("b")};
    ck_assert_int_eq(cmd_report(2, two), 2); /* several runs need --out */
    char *bad[] = {(char *)tmp_path("a"), "--bogus"};
    ck_assert_int_eq(cmd_report(2, bad), 2);
    char *one[] = {(char *)tmp_path("a")};
    ck_assert_int_eq(cmd_report(1, one), 0);
    ck_assert_msg(access(tmp_path("a/report.html"), R_OK) == 0, "default output missing");
    char *both[] = {(char *)tmp_path("a"), (char *)tmp_path("b"), "--out",
                    (char *)tmp_path("ab.html")};
    ck_assert_int_eq(cmd_report(4, both), 0);
    char *page = read_all(tmp_path("ab.html"));
    Doc d;
    ck_assert_msg(xml_check(&d, page) == 0, "%s", d.why);
    expect_curves(&d, "loss", "loss@a,loss@b");
    free(page);
    free(d.e);
}
END_TEST

static Suite *report_suite(void) {
    Suite *s = suite_create("report");
    TCase *tc = tcase_create("xml_checker");
    tcase_add_test(tc, test_xml_checker);
    suite_add_tcase(s, tc);
    tc = tcase_create("json");
    tcase_add_test(tc, test_json_accepts);
    tcase_add_test(tc, test_json_rejects);
    suite_add_tcase(s, tc);
    tc = tcase_create("render");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_fixture_report);
    tcase_add_test(tc, test_multi_run);
    tcase_add_test(tc, test_dense_only_and_gaps);
    tcase_add_test(tc, test_experts_per_token);
    tcase_add_test(tc, test_downsampling);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_missing_dir);
    tcase_add_test(tc, test_empty_metrics);
    tcase_add_test(tc, test_malformed_line);
    tcase_add_test(tc, test_command_line);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    SRunner *sr = srunner_create(report_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
