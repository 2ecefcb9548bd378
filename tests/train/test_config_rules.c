/* test_config_rules.c: the config keys with rules between them (configs/): the finetune
 * section, --set values taken whole, 64-bit shape products, the batch key's old name, the
 * learning-rate schedule keys and the token budget. Same method as test_config.c: errors
 * carry the exact "file:line:col", the key and a hint. */
#include "config_test.h"

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

static Suite *config_rules_suite(void) {
    Suite *s = suite_create("config_rules");
    struct { const char *name; const TTest *fn; } cases[] = {
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
    return config_test_main(config_rules_suite(), argv);
}
