/* test_config.c: strict YAML config loading (train/config.c).
 *
 * Every error test writes a small YAML file to a fresh mkdtemp directory and checks that the
 * message carries the exact "file:line:col" of the offending node (worked out by hand from
 * the YAML text, 1-based) and the key path, and that the hint says what is allowed.
 */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/blas.h"
#include "configs/config.h"

static char g_dir[256];

/* Writes text to g_dir/name and returns the path (static buffer, one at a time). */
static const char *write_yaml(const char *name, const char *text) {
    static char path[512];
    ck_assert_msg(g_dir[0], "temp dir not created");
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
    return path;
}

static const char *source_path(const char *rel) {
    static char path[1024];
    const char *root = getenv("MOE_SOURCE_DIR");
    ck_assert_msg(root && *root, "MOE_SOURCE_DIR is not set (ctest sets it to the repo root)");
    snprintf(path, sizeof path, "%s/%s", root, rel);
    ck_assert_msg(access(path, R_OK) == 0, "missing shipped file %s", path);
    return path;
}

#define DATA_OK "data:\n  tokenizer: t.bpe\n  text: [a.txt]\n"

/* Loads yaml (then validates, if loading succeeded) and expects an error whose message
 * contains "<file>:<line>:<col>" (loc "L:C"), the key path, and whose hint contains hint. */
static void expect_error(const char *yaml, const char *loc, const char *key, const char *hint) {
    size_t live = moe_live_bytes();
    const char *path = write_yaml("bad.yaml", yaml);
    Config c;
    MoeErr err = {{0}, {0}};
    int rc = config_load(&c, path, &err);
    if (rc == 0) {
        rc = config_validate(&c, &err);
        config_free(&c);
    }
    ck_assert_msg(rc == -1, "expected an error for:\n%s", yaml);
    char want[600];
    snprintf(want, sizeof want, "%s:%s: ", path, loc);
    ck_assert_msg(strstr(err.msg, want) != NULL, "msg '%s' lacks location '%s'", err.msg, want);
    ck_assert_msg(strstr(err.msg, key) != NULL, "msg '%s' lacks key '%s'", err.msg, key);
    ck_assert_msg(strstr(err.hint, hint) != NULL, "hint '%s' lacks '%s'", err.hint, hint);
    ck_assert_msg(moe_live_bytes() == live, "leak on the error path: %zu -> %zu bytes", live,
                  moe_live_bytes());
}

/* ------------------------------------------------------------------ shipped configs */

static void check_common_tiny(const Config *c) {
    ck_assert_int_eq(c->model.vocab_size, 4096);
    ck_assert_int_eq(c->model.dim, 256);
    ck_assert_int_eq(c->model.n_layers, 4);
    ck_assert_int_eq(c->model.n_heads, 8);
    ck_assert_int_eq(c->model.n_kv_heads, 4);
    ck_assert_int_eq(c->model.head_dim, 32);
    ck_assert(c->model.norm_eps == 1e-5);
    ck_assert(c->model.rope_theta == 10000.0);
    ck_assert_int_eq(c->train.seq_len, 256);
    ck_assert_int_eq(c->train.micro_batch, 8);
    ck_assert_int_eq(c->train.steps, 1000);
    ck_assert_int_eq(c->train.eval_every, 100);
    ck_assert_int_eq(c->train.eval_batches, 8);
    ck_assert_int_eq(c->train.log_every, 10);
    ck_assert(c->moe.aux_loss_coef == 0.01);
    ck_assert(c->moe.z_loss_coef == 0.001);
    ck_assert(c->moe.bias_update_rate == 0.0);   /* aux-loss-free balancing off */
    ck_assert(c->optim.beta1 == 0.9 && c->optim.beta2 == 0.95);
    ck_assert(c->optim.weight_decay == 0.1 && c->optim.grad_clip == 1.0);
    ck_assert(c->optim.lr == 1e-3 && c->optim.min_lr == 1e-4);
    ck_assert_int_eq(c->optim.warmup_steps, 100);
    ck_assert_str_eq(c->data.tokenizer, "data/tokenizer_4096.bpe");
    ck_assert_uint_eq(c->data.n_text, 1);
    ck_assert_str_eq(c->data.text[0], "data/tinyshakespeare.txt");
    ck_assert_uint_eq(c->data.n_shards, 0);
    ck_assert(c->data.val_fraction == 0.1);
    ck_assert_int_eq(c->checkpoint.every, 500);
    ck_assert_int_eq(c->checkpoint.keep, 3);
}

START_TEST(test_shipped_configs) {
    Config c;
    MoeErr err = {{0}, {0}};
    int rc = config_load(&c, source_path("configs/mixtral_tiny.yaml"), &err);
    ck_assert_msg(rc == 0, "%s (hint: %s)", err.msg, err.hint);
    ck_assert_msg(config_validate(&c, &err) == 0, "%s (hint: %s)", err.msg, err.hint);
    check_common_tiny(&c);
    ck_assert_int_eq(c.moe.n_experts, 8);
    ck_assert_int_eq(c.moe.top_k, 2);
    ck_assert_int_eq(c.moe.hidden, 512);
    ck_assert_str_eq(c.name, "mixtral_tiny");
    ck_assert_str_eq(c.run.dir, "runs/mixtral_tiny");
    config_free(&c);

    rc = config_load(&c, source_path("configs/dense_tiny.yaml"), &err);
    ck_assert_msg(rc == 0, "%s (hint: %s)", err.msg, err.hint);
    ck_assert_msg(config_validate(&c, &err) == 0, "%s (hint: %s)", err.msg, err.hint);
    check_common_tiny(&c);
    ck_assert_int_eq(c.moe.n_experts, 0);
    ck_assert_int_eq(c.moe.hidden, 1024);
    ck_assert_str_eq(c.run.dir, "runs/dense_tiny");
    config_free(&c);
}
END_TEST

/* ------------------------------------------------------------------ defaults */

START_TEST(test_defaults) {
    Config c;
    config_defaults(&c);
    ck_assert_int_eq(c.model.vocab_size, 4096);
    ck_assert_int_eq(c.model.dim, 256);
    ck_assert_int_eq(c.model.head_dim, 32);
    ck_assert(c.model.init_std == 0.02);
    ck_assert_int_eq(c.moe.n_experts, 8);
    ck_assert_int_eq(c.moe.top_k, 2);
    ck_assert(c.moe.capacity_factor == 0.0);
    ck_assert(c.moe.router_noise);
    ck_assert_int_eq(c.moe.router, CONFIG_ROUTER_TOPK);   /* new routers are off by default */
    ck_assert(c.moe.top_p == 0.4 && c.moe.max_experts == 0 && c.moe.entropy_coef == 1e-4);
    ck_assert_int_eq(c.train.steps, 1000);
    ck_assert_int_eq(c.train.seed, 1337);
    ck_assert(c.optim.lr == 1e-3);
    ck_assert(c.optim.eps == 1e-8);
    ck_assert_int_eq(c.parallel.expert_parallel, 0);
    ck_assert_int_eq(c.checkpoint.every, 0);
    ck_assert_int_eq(c.model.sliding_window, 0);   /* architecture options are off */
    ck_assert_int_eq(c.moe.n_shared_experts, 0);
    ck_assert_int_eq(c.moe.shared_hidden, 0);
    ck_assert(!c.train.recompute);
    ck_assert_int_eq(c.train.loss_chunk, 0);
    ck_assert_str_eq(c.run.dir, "runs/default");
    ck_assert_ptr_null(c.data.tokenizer);
    MoeErr err = {{0}, {0}};
    ck_assert_int_eq(config_validate(&c, &err), -1);  /* data is required */
    ck_assert_ptr_nonnull(strstr(err.msg, "data.tokenizer"));
    config_free(&c);

    /* A file with only the required keys takes every default and names the run after it. */
    const char *path = write_yaml("only_data.yml", DATA_OK);
    ck_assert_msg(config_load(&c, path, &err) == 0, "%s", err.msg);
    ck_assert_msg(config_validate(&c, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(c.moe.hidden, 512);
    ck_assert(c.optim.min_lr == 1e-4);
    ck_assert_str_eq(c.name, "only_data");
    ck_assert_str_eq(c.run.dir, "runs/only_data");
    config_free(&c);
    config_free(&c);  /* safe twice: zeroed */
}
END_TEST

/* ------------------------------------------------------------------ error kinds */

START_TEST(test_missing_file) {
    Config c;
    MoeErr err = {{0}, {0}};
    ck_assert_int_eq(config_load(&c, "/nonexistent/dir/cfg.yaml", &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent/dir/cfg.yaml"));
    ck_assert_ptr_nonnull(strstr(err.msg, "cannot open"));
    config_free(&c);
}
END_TEST

START_TEST(test_unknown_key) {
    /* "  n_expert: 4" on line 4: the key starts at column 3. */
    expect_error("model:\n  dim: 64\nmoe:\n  n_expert: 4\n", "4:3", "moe.n_expert",
                 "did you mean 'n_experts'?");
    expect_error("moe:\n  n_expert: 4\n", "2:3", "unknown key", "allowed keys in section 'moe':");
    /* a key of another section */
    expect_error("moe:\n  seq_len: 4\n", "2:3", "moe.seq_len", "belongs in section 'train'");
}
END_TEST

START_TEST(test_unknown_section) {
    expect_error(DATA_OK "modle:\n  dim: 4\n", "4:1", "modle", "did you mean 'model'?");
    expect_error("optimizer:\n  lr: 1\n", "1:1", "unknown section", "allowed sections: model");
}
END_TEST

START_TEST(test_wrong_type_int) {
    /* "  dim: abc": value at column 8 */
    expect_error("model:\n  dim: abc\n", "2:8", "model.dim", "expected an integer >= 1");
    /* "  steps: 1.5": column 10 */
    expect_error("train:\n  steps: 1.5\n", "2:10", "train.steps", "whole number");
    /* a quoted number is a string */
    expect_error("model:\n  dim: \"64\"\n", "2:8", "model.dim", "without quotes");
    /* a list where a scalar belongs */
    expect_error("model:\n  dim: [1, 2]\n", "2:8", "model.dim", "expected an integer >= 1");
    /* missing value */
    expect_error("model:\n  n_layers:\n", "2:12", "model.n_layers", "expected an integer");
}
END_TEST

START_TEST(test_wrong_type_float) {
    /* "  lr: fast": column 7 */
    expect_error("optim:\n  lr: fast\n", "2:7", "optim.lr", "expected a number > 0");
    expect_error("optim:\n  lr: .inf\n", "2:7", "optim.lr", "no inf/nan");
    /* a mapping where a scalar belongs: the nested mapping starts on line 3, column 5 */
    expect_error("optim:\n  eps:\n    x: 1\n", "3:5", "optim.eps", "expected a number > 0");
}
END_TEST

START_TEST(test_wrong_type_bool) {
    /* "  router_noise: yes": column 17 */
    expect_error("moe:\n  router_noise: yes\n", "2:17", "moe.router_noise", "true or false");
    expect_error("moe:\n  router_noise: 1\n", "2:17", "moe.router_noise", "true or false");
}
END_TEST

START_TEST(test_router_values) {
    /* "  router: top_p": value at column 11; the hint lists the choices */
    expect_error("moe:\n  router: top_p\n", "2:11", "moe.router: unknown value 'top_p'",
                 "did you mean 'topp'? expected one of topk, topp, expert_choice");
    expect_error("moe:\n  router: 2\n", "2:11", "moe.router", "one of topk, topp, expert_choice");
    expect_error("moe:\n  router: [topp]\n", "2:11", "moe.router", "one of topk");
    /* names are exact (no case folding), plain or quoted */
    expect_error("moe:\n  router: TopP\n", "2:11", "moe.router", "expected one of");
    const char *path = write_yaml("router.yaml", DATA_OK "moe:\n  router: \"expert_choice\"\n");
    Config c;
    MoeErr err = {{0}, {0}};
    ck_assert_msg(config_load(&c, path, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(c.moe.router, CONFIG_ROUTER_EXPERT_CHOICE);
    ck_assert_msg(config_set(&c, "moe.router=topp", &err) == 0, "%s", err.msg);
    ck_assert_int_eq(c.moe.router, CONFIG_ROUTER_TOPP);
    ck_assert_msg(config_validate(&c, &err) == 0, "%s", err.msg);
    config_free(&c);
    /* ranges of the router keys */
    expect_error("moe:\n  top_p: 0\n", "2:10", "moe.top_p", "a number in (0, 1]");
    expect_error("moe:\n  top_p: 1.5\n", "2:10", "moe.top_p", "a number in (0, 1]");
    expect_error("moe:\n  max_experts: -1\n", "2:16", "moe.max_experts", "an integer >= 0");
    expect_error("moe:\n  entropy_coef: -1e-4\n", "2:17", "moe.entropy_coef", "a number >= 0");
    /* cross: the cap cannot exceed the experts ("  max_experts: 5" on line 6, column 16) */
    expect_error(DATA_OK "moe:\n  n_experts: 4\n  max_experts: 5\n", "6:16",
                 "moe.max_experts, moe.n_experts: max_experts = 5 exceeds n_experts = 4",
                 "[0, 4]");
    /* cross: the selection bias is for top-k routing ("  bias_update_rate: 1e-3" on line 6,
     * column 21) */
    expect_error(DATA_OK "moe:\n  router: topp\n  bias_update_rate: 1e-3\n", "6:21",
                 "moe.bias_update_rate, moe.router", "moe.router: topk");
    path = write_yaml("cap_ok.yaml", DATA_OK "moe:\n  n_experts: 0\n  max_experts: 5\n");
    ck_assert_int_eq(config_load(&c, path, &err), 0);   /* dense: the cap is not used */
    ck_assert_msg(config_validate(&c, &err) == 0, "%s", err.msg);
    config_free(&c);
}
END_TEST

START_TEST(test_wrong_type_list) {
    /* "  text: a.txt": a scalar where a list belongs, column 9 */
    expect_error("data:\n  tokenizer: t\n  text: a.txt\n", "3:9", "data.text", "a list of strings");
    /* "  text: [a.txt, [b]]": item 1 is a nested list at column 17 */
    expect_error("data:\n  text: [a.txt, [b]]\n", "2:17", "data.text[1]", "a list of strings");
    /* a list for a string key: "  tokenizer: [a]" column 14 */
    expect_error("data:\n  tokenizer: [a]\n", "2:14", "data.tokenizer", "a non-empty string");
    /* a section that is not a mapping: "model: 5" column 8 */
    expect_error("model: 5\n", "1:8", "model", "allowed keys in section 'model'");
}
END_TEST

START_TEST(test_out_of_range) {
    /* "  vocab_size: 100": column 15 */
    expect_error("model:\n  vocab_size: 100\n", "2:15", "model.vocab_size",
                 "expected an integer in [258, 65536]");
    /* "  head_dim: 33": column 13, odd */
    expect_error("model:\n  head_dim: 33\n", "2:13", "model.head_dim", "even integer >= 2");
    /* "  beta1: 1.0": column 10 */
    expect_error("optim:\n  beta1: 1.0\n", "2:10", "optim.beta1", "a number in [0, 1)");
    /* "  val_fraction: 0": column 17 */
    expect_error("data:\n  val_fraction: 0\n", "2:17", "data.val_fraction",
                 "a number in (0, 0.5]");
    expect_error("train:\n  seed: -1\n", "2:9", "train.seed", "expected an integer >= 0");
    /* "  bias_update_rate: -0.001": column 21 */
    expect_error("moe:\n  bias_update_rate: -0.001\n", "2:21", "moe.bias_update_rate",
                 "expected a number >= 0");
    /* "  loss_chunk: -1": column 15; "  recompute: yes": column 14 */
    expect_error("train:\n  loss_chunk: -1\n", "2:15", "train.loss_chunk",
                 "expected an integer >= 0");
    expect_error("train:\n  recompute: yes\n", "2:14", "train.recompute", "true or false");
    expect_error("train:\n  steps: 99999999999999999999\n", "2:10", "train.steps", "integer");
    /* architecture options: "  sliding_window: -1" column 19, "  n_shared_experts: -2"
     * column 21, "  shared_hidden: -8" column 18 */
    expect_error("model:\n  sliding_window: -1\n", "2:19", "model.sliding_window",
                 "expected an integer >= 0");
    expect_error("moe:\n  n_shared_experts: -2\n", "2:21", "moe.n_shared_experts",
                 "expected an integer >= 0");
    expect_error("moe:\n  shared_hidden: -8\n", "2:18", "moe.shared_hidden",
                 "expected an integer >= 0");
    expect_error("model:\n  sliding_window: 2.5\n", "2:19", "model.sliding_window", "integer");
}
END_TEST

START_TEST(test_duplicate_key) {
    const char *y = "model:\n  dim: 64\n  n_layers: 2\n  dim: 128\n";
    expect_error(y, "4:3", "model.dim", "first set at ");
    /* the hint names the first occurrence exactly */
    expect_error(y, "4:3", "duplicate key", "bad.yaml:2:3");
    expect_error("model:\n  dim: 64\nmodel:\n  dim: 64\n", "3:1", "model", "bad.yaml:1:1");
}
END_TEST

START_TEST(test_syntax_error) {
    /* a tab cannot start a token: libyaml stops at line 2, column 1 */
    expect_error("model:\n\tdim: 64\n", "2:1", "YAML syntax error", "no tabs");
    /* unclosed flow list: the problem is reported where the stream ends */
    expect_error("data:\n  text: [a.txt\n", "3:1", "YAML syntax error", "indent");
    expect_error(DATA_OK "---\nmodel:\n  dim: 4\n", "5:1", "second YAML document", "one document");
}
END_TEST

START_TEST(test_cross_field) {
    /* "  n_kv_heads: 3": value at line 5, column 15 (after the 3 data lines) */
    expect_error(DATA_OK "model:\n  n_kv_heads: 3\n", "5:15", "model.n_kv_heads",
                 "divisors of 8");
    expect_error(DATA_OK "model:\n  n_kv_heads: 3\n", "5:15", "model.n_heads", "n_kv_heads");
    /* "  top_k: 3": line 6, column 10; n_experts 2 on line 5 */
    expect_error(DATA_OK "moe:\n  n_experts: 2\n  top_k: 3\n", "6:10", "moe.top_k",
                 "integer in [1, 2]");
    expect_error(DATA_OK "moe:\n  n_experts: 2\n  top_k: 3\n", "6:10", "moe.n_experts", "[1, 2]");
    /* dense: top_k is not checked against n_experts = 0 */
    const char *path = write_yaml("dense.yaml", DATA_OK "moe:\n  n_experts: 0\n  top_k: 3\n");
    Config c;
    MoeErr err = {{0}, {0}};
    ck_assert_int_eq(config_load(&c, path, &err), 0);
    ck_assert_msg(config_validate(&c, &err) == 0, "%s", err.msg);
    config_free(&c);
    /* shared experts on a dense model: "  n_shared_experts: 1" line 6, column 21 */
    expect_error(DATA_OK "moe:\n  n_experts: 0\n  n_shared_experts: 1\n", "6:21",
                 "moe.n_shared_experts, moe.n_experts", "moe.n_shared_experts: 0");
    /* their total width must fit an int: 2 x 2^30 */
    expect_error(DATA_OK "moe:\n  n_shared_experts: 2\n  shared_hidden: 1073741824\n", "5:21",
                 "exceed", "fewer or narrower");
    /* "  min_lr: 0.01": line 6, column 11 */
    expect_error(DATA_OK "optim:\n  lr: 0.001\n  min_lr: 0.01\n", "6:11", "optim.min_lr",
                 "[0, 0.001]");
    expect_error(DATA_OK "optim:\n  lr: 0.001\n  min_lr: 0.01\n", "6:11", "optim.lr", "min_lr");
}
END_TEST

START_TEST(test_missing_required) {
    /* no tokenizer: reported at the 'data' key (line 2, column 1) */
    expect_error("model:\n  dim: 8\ndata:\n  text: [a.txt]\n", "3:1", "data.tokenizer",
                 "set data.tokenizer");
    /* no data section at all: reported at the start of the file */
    expect_error("model:\n  dim: 8\n", "1:1", "data.tokenizer", "data.tokenizer");
    /* neither text nor shards: at the (empty) text list, "  text: []" line 3 column 9 */
    expect_error("data:\n  tokenizer: t\n  text: []\n", "3:9", "data.text", "at least one");
}
END_TEST

/* ------------------------------------------------------------------ --set */

START_TEST(test_set_override) {
    const char *path = write_yaml("base.yaml", DATA_OK "moe:\n  n_experts: 2\n  top_k: 2\n");
    Config c;
    MoeErr err = {{0}, {0}};
    ck_assert_int_eq(config_load(&c, path, &err), 0);
    ck_assert_msg(config_set(&c, "model.dim=512", &err) == 0, "%s", err.msg);
    ck_assert_msg(config_set(&c, "optim.lr=2e-3", &err) == 0, "%s", err.msg);
    ck_assert_msg(config_set(&c, "moe.router_noise=false", &err) == 0, "%s", err.msg);
    ck_assert_msg(config_set(&c, "data.text=[x.txt, \"y z.txt\"]", &err) == 0, "%s", err.msg);
    ck_assert_msg(config_set(&c, "run.dir=/tmp/run 1", &err) == 0, "%s", err.msg);
    ck_assert_int_eq(c.model.dim, 512);
    ck_assert(c.optim.lr == 2e-3);
    ck_assert(!c.moe.router_noise);
    ck_assert_uint_eq(c.data.n_text, 2);
    ck_assert_str_eq(c.data.text[0], "x.txt");
    ck_assert_str_eq(c.data.text[1], "y z.txt");
    ck_assert_str_eq(c.run.dir, "/tmp/run 1");

    /* An override can break a cross-field rule; validate reports it at the --set. */
    ck_assert_int_eq(config_set(&c, "moe.top_k=3", &err), 0);
    ck_assert_int_eq(config_validate(&c, &err), -1);
    ck_assert_msg(strstr(err.msg, "--set moe.top_k=3: ") && strstr(err.msg, "moe.n_experts"),
                  "%s", err.msg);
    /* ... and a later override can fix it: cross checks run after all overrides. */
    ck_assert_int_eq(config_set(&c, "moe.n_experts=4", &err), 0);
    ck_assert_msg(config_validate(&c, &err) == 0, "%s", err.msg);
    config_free(&c);
}
END_TEST

static void expect_set_error(Config *c, const char *arg, const char *in_msg, const char *in_hint) {
    MoeErr err = {{0}, {0}};
    ck_assert_msg(config_set(c, arg, &err) == -1, "'%s' should fail", arg);
    ck_assert_msg(strstr(err.msg, in_msg) != NULL, "msg '%s' lacks '%s'", err.msg, in_msg);
    ck_assert_msg(strstr(err.hint, in_hint) != NULL, "hint '%s' lacks '%s'", err.hint, in_hint);
}

START_TEST(test_set_errors) {
    Config c;
    config_defaults(&c);
    expect_set_error(&c, "moe.n_expert=3", "--set moe.n_expert=3: moe.n_expert: unknown key",
                     "did you mean 'n_experts'?");
    expect_set_error(&c, "mdel.dim=3", "mdel", "did you mean 'model'?");
    expect_set_error(&c, "model.dim=abc", "--set model.dim=abc: model.dim: expected an integer",
                     ">= 1");
    expect_set_error(&c, "model.dim=0", "--set model.dim=0: model.dim: value 0 is out of range",
                     ">= 1");
    expect_set_error(&c, "model.dim=", "model.dim: missing value", "integer");
    expect_set_error(&c, "model.dim", "expected section.key=value", "--set model.dim=512");
    expect_set_error(&c, "data.text=a.txt", "data.text", "list of strings");
    expect_set_error(&c, "data.text=[a.txt", "YAML syntax error", "flow list");
    expect_set_error(&c, "moe.router_noise=on", "moe.router_noise", "true or false");
    expect_set_error(&c, "moe.router=expert", "--set moe.router=expert: moe.router: unknown "
                     "value 'expert'", "expected one of topk, topp, expert_choice");
    /* failures leave the config unchanged */
    ck_assert_int_eq(c.model.dim, 256);
    ck_assert_uint_eq(c.data.n_text, 0);
    ck_assert(c.moe.router_noise);
    ck_assert_int_eq(c.moe.router, CONFIG_ROUTER_TOPK);
    config_free(&c);
}
END_TEST

/* ------------------------------------------------------------------ to_yaml round trip */

static void assert_same(const Config *a, const Config *b) {
#define SAME_I(f) ck_assert_msg(a->f == b->f, #f ": %lld != %lld", (long long)a->f, (long long)b->f)
#define SAME_F(f) ck_assert_msg(a->f == b->f, #f ": %.17g != %.17g", a->f, b->f)
    SAME_I(model.vocab_size); SAME_I(model.dim); SAME_I(model.n_layers); SAME_I(model.n_heads);
    SAME_I(model.n_kv_heads); SAME_I(model.head_dim); SAME_F(model.norm_eps);
    SAME_F(model.rope_theta); SAME_F(model.init_std); SAME_I(model.sliding_window);
    SAME_I(moe.n_shared_experts); SAME_I(moe.shared_hidden);
    SAME_I(moe.n_experts); SAME_I(moe.top_k); SAME_I(moe.hidden); SAME_F(moe.capacity_factor);
    SAME_I(moe.router_noise); SAME_F(moe.aux_loss_coef); SAME_F(moe.z_loss_coef);
    SAME_F(moe.bias_update_rate);
    SAME_I(moe.router); SAME_F(moe.top_p); SAME_I(moe.max_experts); SAME_F(moe.entropy_coef);
    SAME_I(train.seq_len); SAME_I(train.micro_batch); SAME_I(train.grad_accum);
    SAME_I(train.steps); SAME_I(train.seed); SAME_I(train.log_every); SAME_I(train.eval_every);
    SAME_I(train.eval_batches); SAME_I(train.recompute); SAME_I(train.loss_chunk);
    SAME_F(optim.lr); SAME_F(optim.min_lr); SAME_I(optim.warmup_steps); SAME_F(optim.beta1);
    SAME_F(optim.beta2); SAME_F(optim.eps); SAME_F(optim.weight_decay); SAME_F(optim.grad_clip);
    SAME_F(data.val_fraction);
    SAME_I(parallel.expert_parallel); SAME_I(checkpoint.every); SAME_I(checkpoint.keep);
#undef SAME_I
#undef SAME_F
    ck_assert_str_eq(a->data.tokenizer, b->data.tokenizer);
    ck_assert_str_eq(a->run.dir, b->run.dir);
    ck_assert_uint_eq(a->data.n_text, b->data.n_text);
    for (size_t i = 0; i < a->data.n_text; i++) ck_assert_str_eq(a->data.text[i], b->data.text[i]);
    ck_assert_uint_eq(a->data.n_shards, b->data.n_shards);
    for (size_t i = 0; i < a->data.n_shards; i++)
        ck_assert_str_eq(a->data.shards[i], b->data.shards[i]);
}

START_TEST(test_round_trip) {
    size_t live = moe_live_bytes();
    Config a, b;
    MoeErr err = {{0}, {0}};
    ck_assert_int_eq(config_load(&a, source_path("configs/mixtral_tiny.yaml"), &err), 0);
    /* awkward values: non-representable decimals, big ints, strings needing quotes */
    const char *sets[] = {
        "model.init_std=0.0123456789012345678", "optim.lr=3e-4", "optim.beta2=0.999",
        "model.rope_theta=500000.5", "train.seed=9007199254740993", "moe.router_noise=false",
        "moe.capacity_factor=1.25", "data.tokenizer='tok: \"x\" #1 \\\\'",
        "data.shards=[s0.bin, 's 1.bin', \"-x\", '[y]']", "run.dir=runs/a b",
        "parallel.expert_parallel=2", "checkpoint.every=0", "model.sliding_window=64",
        "moe.n_shared_experts=2", "moe.shared_hidden=128",
        "moe.router=expert_choice",
        "moe.top_p=0.35", "moe.max_experts=3", "moe.entropy_coef=2e-4", "train.recompute=true", "train.loss_chunk=128"};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
        ck_assert_msg(config_set(&a, sets[i], &err) == 0, "%s: %s", sets[i], err.msg);
    ck_assert_str_eq(a.data.tokenizer, "tok: \"x\" #1 \\\\");
    char *text = config_to_yaml(&a);
    const char *path = write_yaml("round.yaml", text);
    int rc = config_load(&b, path, &err);
    ck_assert_msg(rc == 0, "%s\n--- yaml:\n%s", err.msg, text);
    ck_assert_msg(config_validate(&b, &err) == 0, "%s", err.msg);
    assert_same(&a, &b);
    /* and from memory, as a checkpoint would */
    Config m;
    ck_assert_int_eq(config_load_text(&m, text, strlen(text), "ckpt:config", &err), 0);
    assert_same(&a, &m);
    Config cp;
    config_copy(&cp, &a);
    assert_same(&a, &cp);
    char diff[256];
    ck_assert_int_eq(config_diff_shape(&a, &b, diff, sizeof diff), 0);
    ck_assert_int_eq(config_diff_other(&a, &b, diff, sizeof diff), 0);
    moe_free(text);
    config_free(&a);
    config_free(&b);
    config_free(&m);
    config_free(&cp);
    ck_assert_uint_eq(moe_live_bytes(), live);
}
END_TEST

/* ------------------------------------------------------------------ diffs */

START_TEST(test_diff) {
    Config a, b;
    MoeErr err = {{0}, {0}};
    config_defaults(&a);
    config_defaults(&b);
    ck_assert_int_eq(config_set(&b, "model.dim=512", &err), 0);
    ck_assert_int_eq(config_set(&b, "moe.top_k=1", &err), 0);
    ck_assert_int_eq(config_set(&b, "optim.lr=0.002", &err), 0);
    ck_assert_int_eq(config_set(&b, "data.text=[a.txt]", &err), 0);
    ck_assert_int_eq(config_set(&b, "moe.router=topp", &err), 0);
    char out[512];
    ck_assert_int_eq(config_diff_shape(&a, &b, out, sizeof out), 2);
    ck_assert_str_eq(out, "model.dim: 256 -> 512, moe.top_k: 2 -> 1");
    /* the router changes no parameter shape: a resume may switch it (and reports it) */
    ck_assert_int_eq(config_diff_other(&a, &b, out, sizeof out), 3);
    ck_assert_str_eq(out, "moe.router: topk -> topp, optim.lr: 0.001 -> 0.002, "
                          "data.text: [] -> [\"a.txt\"]");
    /* truncation keeps the count and a terminated string */
    char tiny[8];
    ck_assert_int_eq(config_diff_shape(&a, &b, tiny, sizeof tiny), 2);
    ck_assert_uint_eq(strlen(tiny), 7);
    ck_assert_int_eq(config_diff_shape(&a, &b, NULL, 0), 2);
    ck_assert_int_eq(config_diff_shape(&a, &a, out, sizeof out), 0);
    ck_assert_str_eq(out, "");
    config_free(&a);
    config_free(&b);
}
END_TEST

/* ------------------------------------------------------------------ finetune section */

START_TEST(test_finetune_keys) {
    /* defaults: off, all four projections listed */
    Config c;
    config_defaults(&c);
    ck_assert_ptr_null(c.finetune.init_from);
    ck_assert_int_eq(c.finetune.lora_rank, 0);
    ck_assert(c.finetune.lora_alpha == 16.0 && c.finetune.lora_dropout == 0.0);
    ck_assert_uint_eq(c.finetune.n_lora_targets, 4);
    ck_assert_str_eq(c.finetune.lora_targets[3], "o_proj");
    ck_assert(!c.finetune.train_router && !c.finetune.train_experts);
    config_free(&c);
    /* the shipped LoRA config */
    MoeErr err = {{0}, {0}};
    ck_assert_int_eq(config_load(&c, source_path("configs/lora_tiny.yaml"), &err), 0);
    ck_assert_msg(config_validate(&c, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(c.finetune.init_from, "runs/mixtral_tiny/checkpoints/step_00001000.h5");
    ck_assert_int_eq(c.finetune.lora_rank, 8);
    ck_assert(c.finetune.lora_alpha == 16.0);
    ck_assert_str_eq(c.data.text[0], "data/gsm8k_train.txt");
    /* its model shape is mixtral_tiny's: only the finetune keys differ in shape */
    Config base;
    ck_assert_int_eq(config_load(&base, source_path("configs/mixtral_tiny.yaml"), &err), 0);
    char diff[512];
    ck_assert_int_eq(config_diff_model(&base, &c, diff, sizeof diff), 0);
    ck_assert_int_eq(config_diff_shape(&base, &c, diff, sizeof diff), 1);
    ck_assert_str_eq(diff, "finetune.lora_rank: 0 -> 8");
    /* round trip through YAML keeps the section */
    ck_assert_int_eq(config_set(&c, "finetune.lora_targets=[v_proj, q_proj]", &err), 0);
    ck_assert_int_eq(config_set(&c, "finetune.train_router=true", &err), 0);
    char *text = config_to_yaml(&c);
    Config back;
    ck_assert_int_eq(config_load_text(&back, text, strlen(text), "x.yaml", &err), 0);
    ck_assert_int_eq(config_diff_shape(&c, &back, NULL, 0), 0);
    ck_assert_int_eq(config_diff_other(&c, &back, NULL, 0), 0);
    ck_assert_uint_eq(back.finetune.n_lora_targets, 2);
    ck_assert_str_eq(back.finetune.lora_targets[0], "v_proj");
    moe_free(text);
    config_free(&back);
    config_free(&base);
    config_free(&c);
}
END_TEST

START_TEST(test_finetune_errors) {
    /* ranges: "  lora_rank: -1" value at column 14; "  lora_dropout: 1" at 17;
     * "  lora_alpha: 0" at 15 */
    expect_error("finetune:\n  lora_rank: -1\n", "2:14", "finetune.lora_rank",
                 "an integer in [0, 65536]");
    expect_error("finetune:\n  lora_dropout: 1\n", "2:17", "finetune.lora_dropout",
                 "a number in [0, 1)");
    expect_error("finetune:\n  lora_alpha: 0\n", "2:15", "finetune.lora_alpha", "a number > 0");
    expect_error("finetune:\n  lora_targets: q_proj\n", "2:17", "finetune.lora_targets",
                 "a list of strings");
    /* cross-field (after the 3 data lines): "  init_from: b.h5" value at line 5 column 14 */
    expect_error(DATA_OK "finetune:\n  init_from: b.h5\ninit:\n  upcycle_from: d.h5\n", "5:14",
                 "finetune.init_from, init.upcycle_from", "remove one of the two keys");
    expect_error(DATA_OK "finetune:\n  lora_rank: 8\n", "5:14",
                 "finetune.lora_rank, finetune.init_from", "set finetune.init_from");
    /* the list value starts at column 17 of "  lora_targets: [...]" */
    expect_error(DATA_OK "finetune:\n  lora_targets: [q_proj, vproj]\n", "5:17",
                 "finetune.lora_targets[1]: unknown projection 'vproj'", "did you mean 'v_proj'");
    expect_error(DATA_OK "finetune:\n  lora_targets: [q_proj, k_proj, q_proj]\n", "5:17",
                 "finetune.lora_targets[2]: 'q_proj' is listed twice", "once");
    expect_error(DATA_OK "finetune:\n  init_from: b.h5\n  lora_rank: 4\n  lora_targets: []\n",
                 "7:17", "finetune.lora_targets, finetune.lora_rank", "at least one");
    /* an empty list is fine without adapters (full fine-tuning) */
    const char *path = write_yaml("ft.yaml", DATA_OK "finetune:\n  init_from: b.h5\n"
                                             "  lora_targets: []\n");
    Config c;
    MoeErr err = {{0}, {0}};
    ck_assert_int_eq(config_load(&c, path, &err), 0);
    ck_assert_msg(config_validate(&c, &err) == 0, "%s", err.msg);
    config_free(&c);
}
END_TEST

/* A --set value is taken whole: a string key keeps " #" (a YAML comment start), a value
 * that is entirely one quoted YAML scalar is unquoted, and a scalar or list that YAML would
 * cut at a comment is refused instead of silently shortened. */
START_TEST(test_set_whole_value) {
    Config c;
    config_defaults(&c);
    MoeErr err = {{0}, {0}};
    ck_assert_msg(config_set(&c, "run.dir=runs/exp #1", &err) == 0, "%s", err.msg);
    ck_assert_str_eq(c.run.dir, "runs/exp #1");
    ck_assert_msg(config_set(&c, "data.tokenizer=tok #2.bpe", &err) == 0, "%s", err.msg);
    ck_assert_str_eq(c.data.tokenizer, "tok #2.bpe");
    ck_assert_msg(config_set(&c, "run.dir=\"quoted dir\"", &err) == 0, "%s", err.msg);
    ck_assert_str_eq(c.run.dir, "quoted dir");
    ck_assert_msg(config_set(&c, "run.dir=\"a\" b", &err) == 0, "%s", err.msg);
    ck_assert_str_eq(c.run.dir, "\"a\" b");   /* not one quoted scalar: as written */
    ck_assert_msg(config_set(&c, "data.text=[\"a #1.txt\", b.txt]", &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(c.data.n_text, 2);
    ck_assert_str_eq(c.data.text[0], "a #1.txt");
    /* round trip through the stored YAML keeps the ' #' */
    char *yaml = config_to_yaml(&c);
    Config back;
    ck_assert_msg(config_load_text(&back, yaml, strlen(yaml), "rt.yaml", &err) == 0, "%s",
                  err.msg);
    ck_assert_str_eq(back.run.dir, "\"a\" b");
    ck_assert_str_eq(back.data.tokenizer, "tok #2.bpe");
    moe_free(yaml);
    config_free(&back);
    /* cut values are refused and leave the config unchanged */
    expect_set_error(&c, "train.steps=10 #x", "train.steps: the value would be cut before "
                     "'#x'", "taken whole");
    ck_assert_int_eq((int)c.train.steps, 1000);
    expect_set_error(&c, "data.text=[a.txt] #x", "data.text: the value would be cut", "quote");
    expect_set_error(&c, "data.text=[a #1.txt]", "YAML syntax error", "' #' starts a YAML "
                     "comment");
    ck_assert_str_eq(c.data.text[0], "a #1.txt");
    expect_set_error(&c, "run.dir=", "run.dir: empty string", "string");
    expect_set_error(&c, "run.dir=\xff\xfe", "not valid UTF-8", "UTF-8");
    ck_assert_str_eq(c.run.dir, "\"a\" b");
    config_free(&c);
}
END_TEST

/* Shape products that feed int tensor dimensions are checked in 64 bits: each factor is
 * valid alone, the product does not fit an int. */
START_TEST(test_shape_products) {
    static const struct { const char *sets[4]; const char *msg; } bad[] = {
        {{"model.n_heads=65536", "model.head_dim=65536", "model.n_kv_heads=1", NULL},
         "model.n_heads, model.head_dim: n_heads x head_dim = 65536 x 65536 = 4294967296"},
        {{"train.micro_batch=65536", "train.seq_len=65536", NULL, NULL},   /* the old name */
         "train.global_micro_batch, train.seq_len: 65536 x 65536 = 4294967296 tokens"},
        {{"train.micro_batch=32768", "train.seq_len=32768", "moe.top_k=2", NULL},
         "1073741824 tokens per micro-batch x 2 routed slots per token"},
        {{"moe.n_experts=0", "train.global_micro_batch=1073741824", "train.seq_len=1", NULL},
         "train.global_micro_batch, model.n_kv_heads: 1073741824 x 4"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *path = write_yaml("prod.yaml", DATA_OK "moe:\n  n_experts: 4\n"
                                                  "  top_k: 2\n");
        Config c;
        MoeErr err = {{0}, {0}};
        ck_assert_int_eq(config_load(&c, path, &err), 0);
        for (int k = 0; bad[i].sets[k]; k++)
            ck_assert_msg(config_set(&c, bad[i].sets[k], &err) == 0, "%s", err.msg);
        ck_assert_msg(config_validate(&c, &err) == -1, "case %zu validated", i);
        ck_assert_msg(strstr(err.msg, bad[i].msg) && strstr(err.msg, "--set "),
                      "case %zu: '%s' lacks '%s'", i, err.msg, bad[i].msg);
        ck_assert_msg(err.hint[0], "case %zu: no hint", i);
        config_free(&c);
    }
    /* the largest that fit still validate */
    const char *path = write_yaml("prod.yaml", DATA_OK);
    Config c;
    MoeErr err = {{0}, {0}};
    ck_assert_int_eq(config_load(&c, path, &err), 0);
    ck_assert(config_set(&c, "model.n_heads=32768", &err) == 0);
    ck_assert(config_set(&c, "model.head_dim=65534", &err) == 0);
    ck_assert(config_set(&c, "model.n_kv_heads=1", &err) == 0);
    ck_assert_msg(config_validate(&c, &err) == 0, "%s", err.msg);
    config_free(&c);
}
END_TEST

/* ------------------------------------------------------------------ renamed keys */

/* train.global_micro_batch, old name train.micro_batch: the old name is read into the same
 * field, located for later messages, written back under the new name only; a file giving
 * both is refused (in either order), while a --set of either name overrides the file.
 * (Break checked: without the both-names check in load_document the first expect_error
 * fails; without the F_ALIAS skip in config_to_yaml the text holds "  micro_batch:" and
 * the reload is refused.) */
START_TEST(test_batch_alias) {
    size_t live = moe_live_bytes();
    Config c, d;
    MoeErr err = {{0}, {0}};
    const char *path = write_yaml("old.yaml", DATA_OK "train:\n  micro_batch: 6\n");
    ck_assert_msg(config_load(&c, path, &err) == 0, "%s", err.msg);
    ck_assert_msg(config_validate(&c, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(c.train.micro_batch, 6);
    char *text = config_to_yaml(&c);
    ck_assert_msg(strstr(text, "\n  global_micro_batch: 6 ") != NULL, "%s", text);
    ck_assert_msg(strstr(text, "\n  micro_batch:") == NULL, "old name written:\n%s", text);
    ck_assert_msg(config_load_text(&d, text, strlen(text), "ckpt:config", &err) == 0, "%s",
                  err.msg);
    ck_assert_int_eq(d.train.micro_batch, 6);
    char diff[256];
    ck_assert_int_eq(config_diff_other(&c, &d, diff, sizeof diff), 0);
    moe_free(text);
    config_free(&d);
    /* --set of the old name overrides a file that used the new one, and vice versa */
    ck_assert_msg(config_set(&c, "train.global_micro_batch=12", &err) == 0, "%s", err.msg);
    ck_assert_int_eq(c.train.micro_batch, 12);
    config_free(&c);
    path = write_yaml("new.yaml", DATA_OK "train:\n  global_micro_batch: 4\n");
    ck_assert_int_eq(config_load(&c, path, &err), 0);
    ck_assert_msg(config_set(&c, "train.micro_batch=8", &err) == 0, "%s", err.msg);
    ck_assert_int_eq(c.train.micro_batch, 8);
    ck_assert_msg(config_validate(&c, &err) == 0, "%s", err.msg);
    config_free(&c);
    ck_assert_uint_eq(moe_live_bytes(), live);
    /* both names in one file, either order: located at the second one */
    expect_error("train:\n  global_micro_batch: 4\n  micro_batch: 4\n" DATA_OK, "3:3",
                 "train.micro_batch: the same key as train.global_micro_batch",
                 "keep one of them: train.global_micro_batch");
    expect_error("train:\n  micro_batch: 4\n  global_micro_batch: 8\n" DATA_OK, "3:3",
                 "train.global_micro_batch: the same key as train.micro_batch",
                 "keep one");
    /* a rule broken through the old name is located at its value */
    expect_error("train:\n  micro_batch: 65536\n  seq_len: 65536\n" DATA_OK, "2:16",
                 "train.global_micro_batch, train.seq_len", "lower");
    /* the hint of an unknown key lists the new name, not the alias */
    expect_error("train:\n  micro_bat: 4\n" DATA_OK, "2:3", "train.micro_bat",
                 "global_micro_batch");
}
END_TEST

/* optim.schedule and optim.decay_fraction: defaults, values, ranges, and the narrow type.
 * (Break checked: mapping CONFIG_SCHEDULE_WSD to LR_LINEAR in config_lr_schedule fails the
 * kind assertion.) */
START_TEST(test_schedule_keys) {
    Config c;
    MoeErr err = {{0}, {0}};
    config_defaults(&c);
    ck_assert_int_eq(c.optim.schedule, CONFIG_SCHEDULE_COSINE);   /* the old behaviour */
    ck_assert(c.optim.decay_fraction == 0.2);
    LrSchedule s;
    config_lr_schedule(&c, &s);
    ck_assert_int_eq(s.kind, LR_COSINE);
    config_free(&c);
    const char *kinds[] = {"cosine", "wsd", "linear", "constant"};
    const LrKind want[] = {LR_COSINE, LR_WSD, LR_LINEAR, LR_CONSTANT};
    for (int i = 0; i < 4; i++) {
        char yaml[256];
        snprintf(yaml, sizeof yaml, DATA_OK "optim:\n  schedule: %s\n  decay_fraction: 0.1\n"
                 "  warmup_steps: 7\ntrain:\n  steps: 50\n", kinds[i]);
        ck_assert_int_eq(config_load(&c, write_yaml("s.yaml", yaml), &err), 0);
        ck_assert_msg(config_validate(&c, &err) == 0, "%s", err.msg);
        config_lr_schedule(&c, &s);
        ck_assert_int_eq(s.kind, want[i]);
        ck_assert(s.decay_fraction == 0.1 && s.total == 50 && s.warmup == 7);
        ck_assert(s.lr == (float)c.optim.lr && s.min_lr == (float)c.optim.min_lr);
        config_free(&c);
    }
    expect_error("optim:\n  schedule: cosin\n" DATA_OK, "2:13", "optim.schedule",
                 "did you mean 'cosine'");
    expect_error("optim:\n  decay_fraction: 0\n" DATA_OK, "2:19", "optim.decay_fraction",
                 "(0, 1]");
    expect_error("optim:\n  decay_fraction: 1.5\n" DATA_OK, "2:19", "optim.decay_fraction",
                 "(0, 1]");
}
END_TEST

/* train.tokens: steps = ceil(tokens / (global_micro_batch x seq_len x grad_accum)), kept
 * so by --set of any factor, back to the default when tokens is set to 0; giving steps as
 * well is refused (in the file or by --set); to_yaml writes the derived steps as a comment
 * and the text reads back to the same config. (Break checked: rounding down instead of up
 * gives 195 for the first case; without the validate check the both-given cases load.) */
START_TEST(test_token_budget) {
    size_t live = moe_live_bytes();
    Config c, d;
    MoeErr err = {{0}, {0}};
    const char *path = write_yaml("tok.yaml", DATA_OK "train:\n  tokens: 100000\n"
                                  "  global_micro_batch: 4\n  seq_len: 64\n  grad_accum: 2\n");
    ck_assert_int_eq(config_load(&c, path, &err), 0);
    ck_assert_msg(config_validate(&c, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(c.train.steps, 196);   /* 100000 / 512 = 195.3 */
    LrSchedule s;
    config_lr_schedule(&c, &s);
    ck_assert_int_eq(s.total, 196);         /* the schedule spans the derived steps */
    ck_assert_int_eq(config_set(&c, "train.seq_len=128", &err), 0);
    ck_assert_int_eq(c.train.steps, 98);    /* 100000 / 1024 = 97.7 */
    ck_assert_int_eq(config_set(&c, "train.micro_batch=8", &err), 0);   /* the old name too */
    ck_assert_int_eq(c.train.steps, 49);    /* 100000 / 2048 = 48.8 */
    ck_assert_int_eq(config_set(&c, "train.tokens=4096", &err), 0);
    ck_assert_int_eq(c.train.steps, 2);     /* exactly two steps of 2048 */
    char *text = config_to_yaml(&c);
    ck_assert_msg(strstr(text, "\n  # steps: 2 (from train.tokens") != NULL, "%s", text);
    ck_assert_msg(strstr(text, "\n  steps:") == NULL, "steps written as a key:\n%s", text);
    ck_assert_msg(config_load_text(&d, text, strlen(text), "ckpt:config", &err) == 0, "%s",
                  err.msg);
    ck_assert_msg(config_validate(&d, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(d.train.steps, 2);
    ck_assert_int_eq(d.train.tokens, 4096);
    char diff[256];
    ck_assert_int_eq(config_diff_other(&c, &d, diff, sizeof diff), 0);
    moe_free(text);
    config_free(&d);
    ck_assert_int_eq(config_set(&c, "train.tokens=0", &err), 0);
    ck_assert_int_eq(c.train.steps, 1000);  /* the default again */
    ck_assert_msg(config_validate(&c, &err) == 0, "%s", err.msg);
    config_free(&c);
    /* steps given too: refused, from the file or from --set */
    ck_assert_int_eq(config_load(&c, path, &err), 0);
    ck_assert_int_eq(config_set(&c, "train.steps=5", &err), 0);
    ck_assert_int_eq(config_validate(&c, &err), -1);
    ck_assert_msg(strstr(err.msg, "--set train.steps=5: train.tokens, train.steps: both are "
                                  "given") != NULL, "%s", err.msg);
    ck_assert_msg(strstr(err.hint, "remove one of them") != NULL, "%s", err.hint);
    /* refused, it still writes itself back exactly (fuzz_config's round trip): a given
     * steps is a key, not the derived comment (break checked: writing the comment whenever
     * tokens > 0 reloads steps as 196) */
    text = config_to_yaml(&c);
    ck_assert_msg(config_load_text(&d, text, strlen(text), "ckpt:config", &err) == 0, "%s",
                  err.msg);
    ck_assert_int_eq(d.train.steps, 5);
    ck_assert_int_eq(config_diff_other(&c, &d, diff, sizeof diff), 0);
    moe_free(text);
    config_free(&d);
    config_free(&c);
    ck_assert_uint_eq(moe_live_bytes(), live);
    expect_error("train:\n  steps: 10\n  tokens: 1000\n" DATA_OK, "3:11",
                 "train.tokens, train.steps: both are given", "ceil(tokens");
}
END_TEST

static Suite *config_suite(void) {
    Suite *s = suite_create("config");
    struct { const char *name; const TTest *fn; } cases[] = {
        {"shipped_configs", test_shipped_configs}, {"defaults", test_defaults},
        {"missing_file", test_missing_file}, {"unknown_key", test_unknown_key},
        {"unknown_section", test_unknown_section}, {"wrong_type_int", test_wrong_type_int},
        {"wrong_type_float", test_wrong_type_float}, {"wrong_type_bool", test_wrong_type_bool},
        {"wrong_type_list", test_wrong_type_list}, {"out_of_range", test_out_of_range},
        {"router_values", test_router_values},
        {"duplicate_key", test_duplicate_key}, {"syntax_error", test_syntax_error},
        {"cross_field", test_cross_field}, {"missing_required", test_missing_required},
        {"set_override", test_set_override}, {"set_errors", test_set_errors},
        {"round_trip", test_round_trip}, {"diff", test_diff},
        {"finetune_keys", test_finetune_keys}, {"finetune_errors", test_finetune_errors},
        {"set_whole_value", test_set_whole_value}, {"shape_products", test_shape_products},
        {"batch_alias", test_batch_alias}, {"schedule_keys", test_schedule_keys},
        {"token_budget", test_token_budget},
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
    snprintf(g_dir, sizeof g_dir, "/tmp/moe_test_config_XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    SRunner *sr = srunner_create(config_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    /* remove the temp files written by the (forked) tests; the dir is flat */
    DIR *d = opendir(g_dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        char p[600];
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
        unlink(p);
    }
    if (d) closedir(d);
    rmdir(g_dir);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
