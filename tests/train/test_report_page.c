/* test_report_page.c: what the report page offers a researcher beyond the plots themselves
 * (train/report.h, train/svg.h, train/report_config.h, train/report_experts.h): the x axis
 * switch (step, tokens, wall-clock; runs without METRIC_TIME), hover data and the EMA,
 * axes that end at the data and log ticks near it, the config keys that differ between
 * runs, plots left out where they do not apply, dead and dominant experts named next to
 * their heatmap, and the live page of --watch. The page is checked structurally with the
 * XML checker of report_testlib.h; the browser test (test_report_browser.sh) runs the
 * script, test_report_watch.sh the watch loop.
 *
 * Each test names in a comment the break it was seen to catch.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/blas.h"
#include "configs/config.h"
#include "report_testlib.h"
#include "train/cmd_report.h"
#include "train/report.h"
#include "train/report_experts.h"
#include "train/report_watch.h"
#include "train/svg.h"

/* Comma-joined texts of the elements of class cls inside svg i. */
static void texts(const Doc *d, int svg, const char *cls, char *out, size_t cap) {
    size_t len = 0;
    out[0] = 0;
    for (int i = svg + 1; i < d->n && is_inside(d, i, svg); i++) {
        if (strcmp(d->e[i].name, "text") || !has_attr(&d->e[i], "class", cls)) continue;
        char t[64];
        elem_text(&d->e[i], t, sizeof t);
        len += (size_t)snprintf(out + len, cap - len, "%s%s", len ? "," : "", t);
        if (len >= cap) break;
    }
}

/* The index of the first element named name with attribute key=value, or -1. */
static int find_elem(const Doc *d, const char *name, const char *key, const char *value) {
    for (int i = 0; i < d->n; i++)
        if (!strcmp(d->e[i].name, name) && has_attr(&d->e[i], key, value)) return i;
    return -1;
}

/* The first <path> in svg i with attribute key=value, or -1. */
static int find_path(const Doc *d, int svg, const char *key, const char *value) {
    for (int i = svg + 1; i < d->n && is_inside(d, i, svg); i++)
        if (!strcmp(d->e[i].name, "path") && has_attr(&d->e[i], key, value)) return i;
    return -1;
}

/* ------------------------------------------------------------------------------------- */
/* x axes                                                                                 */

/* Every line plot is drawn against step, tokens and wall-clock time; the time plots hold
 * only the runs that logged METRIC_TIME, and the page says which did not; x axes end at the
 * last point. Breaks seen caught: x axes rounded out to a nice tick again (axis_nice for x:
 * data-xhi 6000, not 5120); elapsed time not converted to minutes (xhi 270); the no-time
 * note dropped. */
START_TEST(test_x_axes) {
    size_t live = moe_live_bytes();
    g_time = 1.7e9;
    write_moe_run("timed", 10, 1, 4, 0, 5, NULL);
    g_time = 0;
    write_moe_run("old", 10, 1, 4, 0, 5, NULL);
    const char *dirs[] = {tmp_path("timed"), tmp_path("old")};
    Doc d;
    char *html = render(dirs, 2, &d);
    const char *plots[] = {"loss", "aux_loss", "z_loss", "lr", "grad_norm", "tokens_per_s",
                           "router_entropy", "load_imbalance"};
    const char *xs[] = {"step", "tokens", "time"};
    for (int x = 0; x < 3; x++) {
        g_x = xs[x];
        for (int p = 0; p < 8; p++)
            ck_assert_msg(find_svg(&d, plots[p], NULL, -1) >= 0, "plot %s against %s: %d",
                          plots[p], xs[x], find_svg(&d, plots[p], NULL, -1));
    }
    g_x = "time";
    expect_curves(&d, "loss", "loss@timed,val_loss@timed");   /* "old" has no time */
    int svg = find_svg(&d, "loss", NULL, -1);
    char v[128];
    /* steps 1..10, 30 s apart: 270 s since the first line, shown in minutes */
    ck_assert(attr(&d.e[svg], "data-xhi", v, sizeof v));
    ck_assert_msg(!strcmp(v, "4.5"), "time axis ends at %s, want 4.5 (min)", v);
    texts(&d, svg, "xl", v, sizeof v);
    ck_assert_msg(strstr(v, "(min)") != NULL, "x label '%s'", v);
    g_x = "step";
    expect_curves(&d, "loss", "loss@old,loss@timed,val_loss@old,val_loss@timed");
    ck_assert(attr(&d.e[find_svg(&d, "lr", NULL, -1)], "data-xhi", v, sizeof v));
    ck_assert_msg(!strcmp(v, "10"), "step axis ends at %s, want 10", v);
    g_x = "tokens";
    ck_assert(attr(&d.e[find_svg(&d, "lr", NULL, -1)], "data-xhi", v, sizeof v));
    ck_assert_msg(!strcmp(v, "5120"), "tokens axis ends at %s, want 5120", v);
    /* the switch: tokens checked, time enabled; the note names the run without time */
    int in = find_elem(&d, "input", "id", "x-tokens");
    ck_assert(in >= 0 && has_attr(&d.e[in], "checked", "checked"));
    in = find_elem(&d, "input", "id", "x-time");
    ck_assert(in >= 0 && !attr(&d.e[in], "disabled", v, sizeof v));
    ck_assert(find_elem(&d, "input", "id", "ema") >= 0);
    int note = find_elem(&d, "p", "id", "no-time");
    ck_assert_msg(note >= 0, "no note on the run without wall-clock time");
    elem_text(&d.e[note], v, sizeof v);
    ck_assert_msg(strstr(html, "written before moetrain logged it): old.</p>"), "note: %s", v);
    free(html);
    free(d.e);

    /* only runs from before METRIC_TIME: no time plots, the switch disabled, and a note */
    const char *old[] = {tmp_path("old")};
    html = render(old, 1, &d);
    g_x = "time";
    ck_assert_int_eq(find_svg(&d, "loss", NULL, -1), -1);
    ck_assert_int_eq(count_svgs(&d), 1);   /* the heatmap (no data-x) only */
    g_x = "tokens";
    in = find_elem(&d, "input", "id", "x-time");
    ck_assert(in >= 0 && has_attr(&d.e[in], "disabled", "disabled"));
    ck_assert_msg(strstr(html, "No wall-clock axis: this run's metrics.jsonl has no \"time\""),
                  "no note saying why there is no wall-clock axis");
    free(html);
    free(d.e);
    ck_assert_msg(moe_live_bytes() == live, "leak: %zu -> %zu", live, moe_live_bytes());
}
END_TEST

/* ------------------------------------------------------------------------------------- */
/* hover data and EMA                                                                     */

/* svg_ema: debiased, gaps stay gaps. Breaks seen caught: no debiasing (out[0] = 0.5);
 * a NaN fed into the average (everything after it NaN). */
START_TEST(test_ema) {
    const double y[] = {1, NAN, 3, 3};
    double out[4];
    svg_ema(y, NULL, 1, 4, 0.5, out);
    ck_assert(fabs(out[0] - 1.0) < 1e-12);
    ck_assert(isnan(out[1]));
    /* s = 0.25 + 1.5 = 1.75 over z = 0.75 */
    ck_assert_msg(fabs(out[2] - 1.75 / 0.75) < 1e-12, "%g", out[2]);
    ck_assert(fabs(out[3] - (0.5 * 1.75 + 1.5) / 0.875) < 1e-12);
    const float yf[] = {2, 9, 2, 9, 2, 9};   /* stride 2: the 2s */
    svg_ema(NULL, yf, 2, 3, 0.9, out);
    for (int i = 0; i < 3; i++) ck_assert(fabs(out[i] - 2.0) < 1e-12);
    ck_assert(fabs(svg_ema_weight(10) - 0.8) < 1e-12);       /* tau = 5 */
    ck_assert(fabs(svg_ema_weight(4000) - 0.99) < 1e-12);    /* tau = 100 */
}
END_TEST

/* Each drawn curve carries its points' values for hover, one pair per point of its path;
 * an EMA path follows every curve but lr and the validation points. Breaks seen caught:
 * data-v written for every input point instead of the drawn ones (the counts differ on
 * the NaN step); the EMA drawn for val_loss. */
START_TEST(test_hover_data) {
    size_t live = moe_live_bytes();
    write_moe_run("run", 12, 1, 4, 5, 4, NULL);
    const char *dirs[] = {tmp_path("run")};
    Doc d;
    char *html = render(dirs, 1, &d);
    int svg = find_svg(&d, "loss", NULL, -1);
    ck_assert(svg >= 0);
    int p = find_path(&d, svg, "data-series", "loss");
    ck_assert(p >= 0);
    static char dd[65536], dv[65536];
    ck_assert(attr(&d.e[p], "d", dd, sizeof dd) && attr(&d.e[p], "data-v", dv, sizeof dv));
    int pts = 0, pairs = 1;
    for (const char *q = dd; *q; q++) pts += *q == 'M' || *q == 'L';
    for (const char *q = dv; *q; q++) pairs += *q == ' ';
    ck_assert_msg(pts == 11 && pairs == 11, "%d points, %d values (12 steps, one NaN)", pts,
                  pairs);
    /* step 1: 512 tokens, loss 8 / 1.01 */
    ck_assert_msg(!strncmp(dv, "512,7.9208 1024,", 16), "data-v starts '%.40s'", dv);
    ck_assert(find_path(&d, svg, "data-ema", "loss") >= 0);
    ck_assert(find_path(&d, svg, "data-ema", "val_loss") < 0);
    int lr = find_svg(&d, "lr", NULL, -1);
    ck_assert(find_path(&d, lr, "data-ema", "lr") < 0);
    ck_assert(find_path(&d, find_svg(&d, "router_entropy", NULL, -1), "data-ema",
                        "router_entropy.l0") >= 0);
    /* the raw curve an EMA smooths is marked for fading (class sm); val_loss is not */
    ck_assert(has_attr(&d.e[p], "class", "sm"));
    ck_assert(!has_attr(&d.e[find_path(&d, svg, "data-series", "val_loss")], "class", "sm"));
    /* the script and the hover box are on the page */
    ck_assert(find_elem(&d, "div", "id", "tip") >= 0);
    ck_assert(strstr(html, "data-report") != NULL);
    free(html);
    free(d.e);
    ck_assert_msg(moe_live_bytes() == live, "leak: %zu -> %zu", live, moe_live_bytes());
}
END_TEST

/* ------------------------------------------------------------------------------------- */
/* log ticks                                                                              */

/* Log axes get ticks near the data, not only powers of 10. Breaks seen caught: the old
 * "nice linear ticks inside the range" (4, 6, 8 for 2.1..9); the {1} set accepted with 2
 * ticks (1 and 10 only for 0.9..11). */
START_TEST(test_log_ticks) {
    double t[24];
    int n = svg_log_ticks(2.1, 9, t, 24);
    const double want[] = {3, 4, 5, 6, 8};
    ck_assert_int_eq(n, 5);
    for (int i = 0; i < n; i++) ck_assert_msg(fabs(t[i] - want[i]) < 1e-9, "t[%d] = %g", i, t[i]);
    n = svg_log_ticks(0.9, 11, t, 24);
    ck_assert_msg(n == 4 && t[1] == 2 && t[2] == 5, "0.9..11: %d ticks", n);
    n = svg_log_ticks(0.5, 50, t, 24);
    ck_assert_msg(n >= 5 && t[0] == 0.5 && fabs(t[n - 1] - 50) < 1e-9, "0.5..50: %d", n);
    n = svg_log_ticks(1e-3, 1e9, t, 24);   /* 13 decades: every other one, at most 8 */
    ck_assert_msg(n >= 3 && n <= 8, "1e-3..1e9: %d ticks", n);
    for (int i = 0; i < n; i++) {
        double l = log10(t[i]);
        ck_assert_msg(fabs(l - round(l)) < 1e-9, "not a power of 10: %g", t[i]);
    }
    n = svg_log_ticks(2.1, 2.4, t, 24);    /* a seventh of a decade: linear ticks */
    ck_assert_msg(n >= 2, "2.1..2.4: %d ticks", n);
    for (int i = 0; i < n; i++) ck_assert(t[i] >= 2.1 - 1e-9 && t[i] <= 2.4 + 1e-9);

    /* on the page: a loss from 9 down to 2.1 */
    ck_assert(mkdir(tmp_path("lg"), 0755) == 0);
    FILE *f = fopen(tmp_path("lg/metrics.jsonl"), "w");
    ck_assert(f != NULL);
    for (int s = 1; s <= 50; s++)
        fprintf(f, "{\"step\":%d,\"tokens\":%d,\"loss\":%g,\"lr\":0.001}\n", s, 100 * s,
                9.0 - (9.0 - 2.1) * (s - 1) / 49.0);
    fclose(f);
    const char *dirs[] = {tmp_path("lg")};
    Doc d;
    char *html = render(dirs, 1, &d);
    char got[256];
    texts(&d, find_svg(&d, "loss", NULL, -1), "yt", got, sizeof got);
    ck_assert_msg(!strcmp(got, "3,4,5,6,8"), "loss ticks %s, want 3,4,5,6,8", got);
    free(html);
    free(d.e);
}
END_TEST

/* ------------------------------------------------------------------------------------- */
/* comparing runs: config diff and plots left out                                         */

/* Only the keys whose values differ, read through the config reader (defaults filled in,
 * comments and order ignored); runs whose config cannot be read are named. Breaks seen
 * caught: comparing the files' text lines (model.n_layers: 4 written out vs left out
 * showed as a difference); printing every key. */
START_TEST(test_config_diff) {
    size_t live = moe_live_bytes();
    write_moe_run("a", 5, 1, 4, 0, 0, "model:\n  dim: 64\noptim:\n  lr: 0.001\n");
    write_moe_run("b", 5, 1, 4, 0, 0,
                  "# the same model, a higher learning rate\noptim:\n  lr: 3e-3\n"
                  "model:\n  n_layers: 4   # the default\n  dim: 64\n");
    write_moe_run("c", 5, 1, 4, 0, 0, "optim:\n  lrr: 0.1\n");
    write_moe_run("d", 5, 1, 4, 0, 0, NULL);
    char dir[4][512];   /* tmp_path's buffers rotate: render needs one too */
    const char *dirs[4];
    for (int i = 0; i < 4; i++) {
        snprintf(dir[i], sizeof dir[i], "%s/%c", g_dir, 'a' + i);
        dirs[i] = dir[i];
    }
    Doc d;
    char *html = render(dirs, 4, &d);
    int table = find_elem(&d, "table", "class", "config-diff");
    ck_assert_msg(table >= 0, "no config-diff table");
    char keys[512] = "", k[64];
    size_t len = 0;
    for (int i = table + 1; i < d.n && is_inside(&d, i, table); i++)
        if (!strcmp(d.e[i].name, "tr") && attr(&d.e[i], "data-key", k, sizeof k))
            len += (size_t)snprintf(keys + len, sizeof keys - len, "%s%s", len ? "," : "", k);
    ck_assert_msg(!strcmp(keys, "optim.lr"), "differing keys: %s", keys);
    ck_assert_msg(strstr(html, "<tr data-key=\"optim.lr\"><td class=\"l\">optim.lr</td>"
                               "<td class=\"l\">0.001</td><td class=\"l\">0.003</td>"
                               "<td class=\"l\">?</td><td class=\"l\">?</td></tr>"),
                  "optim.lr row");
    ck_assert_msg(strstr(html, "c: left out of the comparison: ") && strstr(html, "optim.lrr"),
                  "the unreadable config is not named with the reader's message");
    ck_assert_msg(strstr(html, "d: left out of the comparison: no config.yaml"),
                  "the missing config is not named");
    ck_assert_msg(strstr(html, "<pre class=\"config\">") == NULL, "whole configs shown");
    free(html);
    free(d.e);

    /* identical configs: a note, no table; one run: its file as it is */
    const char *same[] = {tmp_path("a"), tmp_path("a")};
    html = render(same, 2, &d);
    ck_assert(find_elem(&d, "table", "class", "config-diff") < 0);
    ck_assert(strstr(html, "configs are identical") != NULL);
    free(html);
    free(d.e);
    html = render(dirs, 1, &d);
    ck_assert(strstr(html, "<pre class=\"config\">model:\n  dim: 64\n") != NULL);
    free(html);
    free(d.e);

    /* report_config.c takes a value to end before the last '#' of its config_to_yaml line:
     * no key's doc comment may hold one */
    Config c;
    config_defaults(&c);
    char *yaml = config_to_yaml(&c);
    for (char *line = strtok(yaml, "\n"); line; line = strtok(NULL, "\n")) {
        int hashes = 0;
        for (const char *q = line; *q; q++) hashes += *q == '#';
        ck_assert_msg(line[0] != ' ' || hashes == 1, "a doc comment with '#': %s", line);
    }
    moe_free(yaml);
    config_free(&c);
    ck_assert_msg(moe_live_bytes() == live, "leak: %zu -> %zu", live, moe_live_bytes());
}
END_TEST

/* aux and z losses are left out for dense runs (and runs where they are 0 throughout),
 * experts per token for runs where it never changes (top-k), and the page says so.
 * Breaks seen caught: the applies-check removed (dense aux curve back); `varies` always 1
 * (the top-k run's constant curves back). */
START_TEST(test_left_out) {
    size_t live = moe_live_bytes();
    write_dense_run("dense", 6);
    g_experts_per_token = 2;
    write_moe_run("topk", 6, 2, 4, 0, 0, NULL);
    g_experts_per_token = 1;
    write_moe_run("topp", 6, 2, 4, 0, 0, NULL);
    g_experts_per_token = 0;
    const char *dirs[] = {tmp_path("dense"), tmp_path("topk"), tmp_path("topp")};
    Doc d;
    char *html = render(dirs, 3, &d);
    expect_curves(&d, "aux_loss", "aux_loss@topk,aux_loss@topp");
    expect_curves(&d, "z_loss", "z_loss@topk,z_loss@topp");
    expect_curves(&d, "experts_per_token",
                  "experts_per_token.l0@topp,experts_per_token.l1@topp");
    expect_curves(&d, "lr", "lr@dense,lr@topk,lr@topp");
    int note = find_elem(&d, "p", "id", "left-out");
    ck_assert_msg(note >= 0, "no note on what was left out");
    ck_assert_msg(strstr(html, "aux loss of dense (dense, or 0 at every step)") &&
                  strstr(html, "z loss of dense (") &&
                  strstr(html, "experts / token of topk (the same at every step: top-k"),
                  "left-out note incomplete");
    free(html);
    free(d.e);
    /* a dense run alone: no aux plot at all (no empty frame) */
    html = render(dirs, 1, &d);
    ck_assert_int_eq(find_svg(&d, "aux_loss", NULL, -1), -1);
    ck_assert_int_eq(find_svg(&d, "z_loss", NULL, -1), -1);
    free(html);
    free(d.e);
    ck_assert_msg(moe_live_bytes() == live, "leak: %zu -> %zu", live, moe_live_bytes());
}
END_TEST

/* ------------------------------------------------------------------------------------- */
/* dead and dominant experts                                                              */

/* E = 8: 1/E = 0.125, dead below 0.0125, dominant above 0.375. Layer 1 from step 21 on:
 * expert 3 dead, expert 0 dominant; expert 5 dead until step 25 only; expert 6 dead in 9
 * of the last 10 steps. Layer 0 stays uniform. */
static double flag_load(int step, int layer, int e, int E) {
    if (layer == 0 || step <= 20) return 1.0 / E;
    if (e == 3) return 0.001;
    if (e == 5) return step <= 25 ? 0.002 : 0.1;
    if (e == 6) return step == 27 ? 0.05 : 0.003;
    if (e == 0) return 0.5;
    return (1.0 - 0.5 - 0.001 - 0.1 - 0.003) / 4;   /* 1, 2, 4, 7 */
}

/* Breaks seen caught: judging the mean of the last steps instead of each (expert 6
 * flagged); judging all steps instead of the last 10 (30 steps used, expert 3 not
 * flagged); the dead threshold 1/E instead of 0.1/E (all 8 experts flagged). */
START_TEST(test_expert_flags) {
    size_t live = moe_live_bytes();
    g_load = flag_load;
    write_moe_run("flags", 30, 2, 8, 0, 0, NULL);
    g_load = NULL;
    RunData r;
    MoeErr err;
    ck_assert_msg(report_load_run(&r, tmp_path("flags"), &err) == 0, "%s", err.msg);
    signed char flag[8];
    int used = 0;
    ck_assert_int_eq(report_expert_flags(&r, 0, flag, &used), 0);
    ck_assert_int_eq(used, REPORT_FLAG_STEPS);
    ck_assert_int_eq(report_expert_flags(&r, 1, flag, &used), 2);
    const signed char want[8] = {1, 0, 0, -1, 0, 0, 0, 0};
    for (int e = 0; e < 8; e++) ck_assert_msg(flag[e] == want[e], "expert %d: %d", e, flag[e]);
    report_run_free(&r);

    const char *dirs[] = {tmp_path("flags")};
    Doc d;
    char *html = render(dirs, 1, &d);
    int li = find_elem(&d, "li", "data-flag", "dead");
    ck_assert(li >= 0 && has_attr(&d.e[li], "data-layer", "1") &&
              has_attr(&d.e[li], "data-expert", "3"));
    li = find_elem(&d, "li", "data-flag", "dominant");
    ck_assert(li >= 0 && has_attr(&d.e[li], "data-layer", "1") &&
              has_attr(&d.e[li], "data-expert", "0"));
    ck_assert_msg(strstr(html, "layer 1, expert 3: dead</b>: share below 0.1/E = 0.0125 in "
                               "each of the last 10 logged steps (latest 0.001)"), "dead text");
    ck_assert_msg(strstr(html, "layer 1, expert 0: dominant</b>: share above 3/E = 0.375"),
                  "dominant text");
    /* next to its heatmap: in the same box; the row labels marked */
    int svg = find_svg(&d, "expert_load", "flags", 1);
    ck_assert(svg >= 0 && d.e[li].parent >= 0 && d.e[d.e[li].parent].parent == d.e[svg].parent);
    char lab[256];
    texts(&d, svg, "yt flagged", lab, sizeof lab);
    ck_assert_msg(!strcmp(lab, "expert 0,expert 3"), "flagged labels: %s", lab);
    texts(&d, find_svg(&d, "expert_load", "flags", 0), "yt flagged", lab, sizeof lab);
    ck_assert_msg(lab[0] == 0, "layer 0 flagged: %s", lab);
    ck_assert(strstr(html, "<td>1 dead, 1 dominant</td>") != NULL);
    free(html);
    free(d.e);
    ck_assert_msg(moe_live_bytes() == live, "leak: %zu -> %zu", live, moe_live_bytes());
}
END_TEST

/* ------------------------------------------------------------------------------------- */
/* live page and --watch options                                                          */

/* A live page reloads itself and says so; the final page does neither. Breaks seen caught:
 * the meta written for reload_s 0. */
START_TEST(test_live_page) {
    write_dense_run("r", 3);
    RunData r;
    MoeErr err;
    ck_assert(report_load_run(&r, tmp_path("r"), &err) == 0);
    ck_assert(report_write(&r, 1, tmp_path("live.html"), 7, &err) == 0);
    ck_assert(report_write(&r, 1, tmp_path("final.html"), 0, &err) == 0);
    report_run_free(&r);
    char *live = read_all(tmp_path("live.html")), *fin = read_all(tmp_path("final.html"));
    Doc d;
    ck_assert_msg(xml_check(&d, live) == 0, "%s", d.why);
    free(d.e);
    ck_assert(strstr(live, "<meta name=\"moetrain-watch\" content=\"7\"/>") != NULL);
    ck_assert(strstr(live, "<p class=\"live\">") != NULL);
    ck_assert(strstr(fin, "<meta name=\"moetrain-watch\"") == NULL);
    ck_assert(strstr(fin, "class=\"live\"") == NULL);
    ck_assert(report_is_page(tmp_path("live.html")));
    free(live);
    free(fin);
}
END_TEST

/* --interval: only with --watch, seconds in [0.1, 3600]. Break seen caught: the range
 * check dropped (0 accepted). */
START_TEST(test_watch_options) {
    write_dense_run("w", 2);
    char *a[] = {(char *)tmp_path("w"), "--interval", "2"};
    ck_assert_int_eq(cmd_report(3, a), 2);   /* without --watch */
    const char *bad[] = {"0", "abc", "4000", "2s", ""};
    for (int i = 0; i < 5; i++) {
        char *b[] = {(char *)tmp_path("w"), "--watch", "--interval", (char *)bad[i]};
        ck_assert_msg(cmd_report(4, b) == 2, "--interval '%s' accepted", bad[i]);
    }
    char *c[] = {(char *)tmp_path("w"), "--watch", "--interval"};
    ck_assert_int_eq(cmd_report(3, c), 2);
    ck_assert(report_watch_quiet(0.2) == 2.0 && report_watch_quiet(5) == 15.0);
}
END_TEST

static Suite *report_page_suite(void) {
    Suite *s = suite_create("report_page");
    TCase *tc = tcase_create("units");
    tcase_add_test(tc, test_ema);
    suite_add_tcase(s, tc);
    tc = tcase_create("page");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_x_axes);
    tcase_add_test(tc, test_hover_data);
    tcase_add_test(tc, test_log_ticks);
    tcase_add_test(tc, test_config_diff);
    tcase_add_test(tc, test_left_out);
    tcase_add_test(tc, test_expert_flags);
    tcase_add_test(tc, test_live_page);
    tcase_add_test(tc, test_watch_options);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does */
    SRunner *sr = srunner_create(report_page_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
