/* test_config_data.c: the data keys of issue 19 (configs/): weighted entries of data.text
 * and data.shards ({path: P, weight: W}), data.val_text / data.val_shards, data.records,
 * and model.vocab_size above 65536; their errors name the key (and the entry) with a hint;
 * the stored YAML reads back to the same values; copies own their weights. */
#include "config_test.h"

START_TEST(test_weighted_entries) {
    size_t live = moe_live_bytes();
    const char *path = write_yaml("w.yaml",
        "model: {vocab_size: 200000}\n"
        "data:\n"
        "  tokenizer: t.bpe\n"
        "  text: [a.txt, {path: b.txt, weight: 0.3}, {weight: 2, path: \"c d.txt\"}]\n"
        "  shards:\n"
        "    - s.tok\n"
        "    - path: t.tok\n"
        "      weight: 1e-2\n"
        "  val_text: [book.txt]\n"
        "  val_shards: [v.tok]\n"
        "  records: paragraph\n");
    Config c;
    MoeErr err;
    ck_assert_msg(config_load(&c, path, &err) == 0, "%s", err.msg);
    ck_assert_msg(config_validate(&c, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(c.model.vocab_size, 200000);
    ck_assert_uint_eq(c.data.n_text, 3);
    ck_assert_str_eq(c.data.text[2], "c d.txt");
    ck_assert_ptr_nonnull(c.data.text_weight);
    ck_assert(c.data.text_weight[0] == 0 && c.data.text_weight[1] == 0.3 &&
              c.data.text_weight[2] == 2);
    ck_assert_uint_eq(c.data.n_shards, 2);
    ck_assert(c.data.shards_weight[0] == 0 && c.data.shards_weight[1] == 0.01);
    ck_assert_uint_eq(c.data.n_val_text, 1);
    ck_assert_str_eq(c.data.val_text[0], "book.txt");
    ck_assert_str_eq(c.data.val_shards[0], "v.tok");
    ck_assert_int_eq(c.data.records, CONFIG_RECORDS_PARAGRAPH);
    /* the stored YAML reads back to the same values */
    char *yaml = config_to_yaml(&c);
    ck_assert_msg(strstr(yaml, "{path: \"b.txt\", weight: 0.3}") ||
                  strstr(yaml, "{path: b.txt, weight: 0.3}"), "%s", yaml);
    Config back;
    ck_assert_msg(config_load_text(&back, yaml, strlen(yaml), "rt.yaml", &err) == 0, "%s\n%s",
                  err.msg, yaml);
    ck_assert_uint_eq(back.data.n_text, 3);
    ck_assert(back.data.text_weight[1] == 0.3 && back.data.text_weight[0] == 0);
    ck_assert(back.data.shards_weight[1] == 0.01);
    ck_assert_int_eq(back.data.records, CONFIG_RECORDS_PARAGRAPH);
    char diff[512];
    ck_assert_int_eq(config_diff_other(&c, &back, diff, sizeof diff), 0);
    moe_free(yaml);
    config_free(&back);
    /* a copy owns its weights (freeing both is clean) */
    Config cp;
    config_copy(&cp, &c);
    ck_assert(cp.data.text_weight != c.data.text_weight && cp.data.text_weight[2] == 2);
    ck_assert_str_eq(cp.data.val_shards[0], "v.tok");
    /* --set replaces the list with its weights: weighted, then plain (no weights left) */
    ck_assert_msg(config_set(&c, "data.text=[{path: x.txt, weight: 4}, y.txt]", &err) == 0,
                  "%s", err.msg);
    ck_assert(c.data.n_text == 2 && c.data.text_weight && c.data.text_weight[0] == 4);
    ck_assert_int_eq(config_diff_other(&c, &cp, diff, sizeof diff), 1);
    ck_assert_msg(strstr(diff, "data.text"), "%s", diff);
    ck_assert_msg(config_set(&c, "data.text=[y.txt]", &err) == 0, "%s", err.msg);
    ck_assert_ptr_null(c.data.text_weight);
    config_free(&cp);
    config_free(&c);
    ck_assert_uint_eq(moe_live_bytes(), live);
}
END_TEST

START_TEST(test_data_key_errors) {
    expect_error("data:\n  tokenizer: t.bpe\n  text: [a.txt, {path: b.txt, weight: 0}]\n", "3:39",
                 "data.text[1].weight", "a number > 0");
    expect_error("data:\n  tokenizer: t.bpe\n  text: [{path: b.txt, weight: -2}]\n", "3:32",
                 "data.text[0].weight", "weight: 0.3");
    expect_error("data:\n  tokenizer: t.bpe\n  text: [{path: b.txt, weight: lots}]\n", "3:32",
                 "got 'lots'", "a number > 0");
    expect_error("data:\n  tokenizer: t.bpe\n  shards: [{path: b.tok, weight: \"2\"}]\n", "3:34",
                 "data.shards[0].weight", "a number > 0");
    expect_error("data:\n  tokenizer: t.bpe\n  text: [{path: b.txt, wieght: 2}]\n", "3:24",
                 "unknown key 'wieght'", "{path: a.txt, weight: 0.3}");
    expect_error("data:\n  tokenizer: t.bpe\n  text: [{weight: 2}]\n", "3:10",
                 "data.text[0]: the entry has no path", "{path: a.txt");
    expect_error("data:\n  tokenizer: t.bpe\n  text: [{path: [a, b]}]\n", "3:17",
                 "data.text[0].path: expected a non-empty string", "weight");
    expect_error("data:\n  tokenizer: t.bpe\n  text: [{path: a, path: b}]\n", "3:26",
                 "data.text[0].path: given twice", "weight");
    expect_error("data:\n  tokenizer: t.bpe\n  text: [{path: b.txt, weight: 2e9}]\n", "3:32",
                 "1e9", "weight");
    /* the validation lists take plain paths only */
    expect_error(DATA_OK "  val_text: [{path: book.txt, weight: 1}]\n", "4:14",
                 "data.val_text[0]", "a list of strings");
    expect_error(DATA_OK "  val_shards: v.tok\n", "4:15", "data.val_shards", "a list of strings");
    expect_error(DATA_OK "  records: paragraphs\n", "4:12", "data.records",
                 "did you mean 'paragraph'");
    expect_error("model: {vocab_size: 2000000000}\n" DATA_OK, "1:21", "model.vocab_size",
                 "an integer in [258, 1073741824]");
    /* the same rules through --set */
    Config c;
    config_defaults(&c);
    expect_set_error(&c, "data.text=[{path: a.txt, weight: 0}]", "data.text[0].weight",
                     "a number > 0");
    expect_set_error(&c, "data.records=lines", "data.records", "file, paragraph, jsonl");
    config_free(&c);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("config_data");
    TCase *tc = tcase_create("weighted_entries");
    tcase_add_test(tc, test_weighted_entries);
    suite_add_tcase(s, tc);
    tc = tcase_create("data_key_errors");
    tcase_add_test(tc, test_data_key_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    return config_test_main(suite(), argv);
}
