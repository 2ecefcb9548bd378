/* test_config.c: strict YAML config loading (configs/).
 *
 * Every error test writes a small YAML file to a fresh mkdtemp directory and checks that the
 * message carries the exact "file:line:col" of the offending node (worked out by hand from
 * the YAML text, 1-based) and the key path, and that the hint says what is allowed.
 */
#include "config_test.h"

/* ------------------------------------------------------------------ shipped configs */

/* balance: also the mixtral_tiny balance settings (deepseek_tiny has its own) */
static void check_common_tiny(const Config *c, bool balance) {
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
    if (balance) {
        ck_assert(c->moe.aux_loss_coef == 0.01);
        ck_assert(c->moe.z_loss_coef == 0.001);
        ck_assert(c->moe.bias_update_rate == 0.0);   /* aux-loss-free balancing off */
    }
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
    check_common_tiny(&c, true);
    ck_assert_int_eq(c.moe.n_experts, 8);
    ck_assert_int_eq(c.moe.top_k, 2);
    ck_assert_int_eq(c.moe.hidden, 512);
    ck_assert_str_eq(c.name, "mixtral_tiny");
    ck_assert_str_eq(c.run.dir, "runs/mixtral_tiny");
    config_free(&c);

    rc = config_load(&c, source_path("configs/dense_tiny.yaml"), &err);
    ck_assert_msg(rc == 0, "%s (hint: %s)", err.msg, err.hint);
    ck_assert_msg(config_validate(&c, &err) == 0, "%s (hint: %s)", err.msg, err.hint);
    check_common_tiny(&c, true);
    ck_assert_int_eq(c.moe.n_experts, 0);
    ck_assert_int_eq(c.moe.hidden, 1024);
    ck_assert_str_eq(c.run.dir, "runs/dense_tiny");
    config_free(&c);

    /* deepseek_tiny: mixtral_tiny's shape and active expert width (2 x 512 = 1024 SwiGLU
     * units a token uses: 7 routed x 128 + 1 shared x 128), and the same routed expert
     * parameters per layer (8 x 512 = 32 x 128 hidden units), as its comment states */
    rc = config_load(&c, source_path("configs/deepseek_tiny.yaml"), &err);
    ck_assert_msg(rc == 0, "%s (hint: %s)", err.msg, err.hint);
    ck_assert_msg(config_validate(&c, &err) == 0, "%s (hint: %s)", err.msg, err.hint);
    check_common_tiny(&c, false);
    ck_assert_int_eq(c.moe.top_k * c.moe.hidden + c.moe.n_shared_experts * c.moe.shared_hidden,
                     2 * 512);
    ck_assert_int_eq(c.moe.n_experts * c.moe.hidden, 8 * 512);
    ck_assert_int_eq(c.moe.score, CONFIG_SCORE_SIGMOID);
    ck_assert_int_eq(c.moe.aux_scope, CONFIG_AUX_SEQUENCE);
    ck_assert(c.moe.bias_update_rate > 0.0);
    ck_assert_str_eq(c.run.dir, "runs/deepseek_tiny");
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
    /* the topk variants and the aux scope default to today's routing */
    ck_assert_int_eq(c.moe.score, CONFIG_SCORE_SOFTMAX);
    ck_assert(c.moe.route_scale == 1.0);
    ck_assert_int_eq(c.moe.n_groups, 0);
    ck_assert_int_eq(c.moe.topk_groups, 0);
    ck_assert_int_eq(c.moe.aux_scope, CONFIG_AUX_BATCH);
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
    /* group-limited routing: n_groups 0 takes parallel.expert_parallel into the shape;
     * off (topk_groups 0), the shape has no groups whatever n_groups says */
    ModelShape ms;
    c.moe.topk_groups = 2;
    c.parallel.expert_parallel = 4;
    config_model_shape(&c, &ms);
    ck_assert_int_eq(ms.n_groups, 4);
    ck_assert_int_eq(ms.topk_groups, 2);
    c.moe.n_groups = 8;
    config_model_shape(&c, &ms);
    ck_assert_int_eq(ms.n_groups, 8);
    c.moe.topk_groups = 0;
    config_model_shape(&c, &ms);
    ck_assert_int_eq(ms.n_groups, 0);
    ck_assert_int_eq(ms.topk_groups, 0);
    ck_assert_int_eq(ms.score, MOE_SCORE_SOFTMAX);
    ck_assert(ms.route_scale == 1.0f);
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
                 "expected an integer in [258, 1073741824]");
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
    return config_test_main(config_suite(), argv);
}
