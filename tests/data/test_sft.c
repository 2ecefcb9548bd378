/* test_sft.c: fine-tuning records (data/sft.c): the token stream and loss mask of
 * prompt/completion pairs and of conversations against hand-written renderings of the
 * template (encoded by the tokenizer, decoded back to text), the end-of-text token, field
 * names, packing, the validation boundary, and every malformed record named by file and
 * line. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/blas.h"
#include "data/loader.h"
#include "data/sft.h"

static Tokenizer g_tok;

static void train_tok(void) {
    const char *text = "<|user|>\n<|assistant|>\n<|system|>\nWhat is two plus two? It is four. "
                       "the cat sat on the mat. question answer 12 + 30 = 42";
    const uint8_t *bufs[1] = {(const uint8_t *)text};
    size_t lens[1] = {strlen(text)};
    MoeErr err;
    ck_assert_msg(tok_train_buffers(&g_tok, bufs, lens, 1, 300, &err) == 0, "%s", err.msg);
}

static int parse(SftData *d, const char *text, const SftOpts *o, MoeErr *err) {
    return sft_parse(d, &g_tok, (const uint8_t *)text, strlen(text), "t.jsonl", o, err);
}

/* Decoded text of the tokens [a, b) of d whose mask is m (m < 0: all of them). */
static char *decode(const SftData *d, size_t a, size_t b, int m) {
    int32_t *ids = malloc(sizeof(int32_t) * (b - a + 1));
    size_t k = 0;
    for (size_t i = a; i < b; i++)
        if (m < 0 || d->mask[i] == m) ids[k++] = d->tokens[i];
    size_t cap = 16 * k + 1, n = 0;
    char *out = malloc(cap);
    ck_assert_int_eq(tok_decode(&g_tok, ids, k, (uint8_t *)out, cap, &n), 0);
    out[n] = 0;
    free(ids);
    return out;
}

static void expect_text(const SftData *d, size_t a, size_t b, int m, const char *want) {
    char *got = decode(d, a, b, m);
    ck_assert_msg(!strcmp(got, want), "mask %d: got \"%s\", want \"%s\"", m, got, want);
    free(got);
}

/* The ids of tok_encode(text) must be d's tokens at [at, at + n) with mask m; returns n. */
static size_t expect_encoded(const SftData *d, size_t at, const char *text, uint8_t m) {
    size_t n = 0;
    int32_t *ids = tok_encode_alloc(&g_tok, (const uint8_t *)text, strlen(text), &n);
    ck_assert_uint_le(at + n, d->n_tokens);
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(d->tokens[at + i], ids[i]);
        ck_assert_int_eq(d->mask[at + i], m);
    }
    moe_free(ids);
    return n;
}

START_TEST(test_pair) {
    train_tok();
    SftData d;
    memset(&d, 0, sizeof d);
    MoeErr err;
    SftOpts o = {NULL, NULL, "\n"};
    ck_assert_msg(parse(&d, "{\"prompt\": \"What is two plus two?\", \"completion\": \"It is "
                            "four.\", \"id\": 7}\n", &o, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(d.n_records, 1);
    ck_assert_uint_eq(d.n_pairs, 1);
    /* the prompt and separator encoded together (not trained), then the completion, EOT */
    size_t at = expect_encoded(&d, 0, "What is two plus two?\n", 0);
    at += expect_encoded(&d, at, "It is four.", 1);
    ck_assert_uint_eq(d.n_tokens, at + 1);
    ck_assert_int_eq(d.tokens[at], tok_eot(&g_tok));
    ck_assert_int_eq(d.mask[at], 1);
    ck_assert_uint_eq(d.rec_end[0], d.n_tokens);
    expect_text(&d, 0, d.n_tokens, -1, "What is two plus two?\nIt is four.<|endoftext|>");
    expect_text(&d, 0, d.n_tokens, 1, "It is four.<|endoftext|>");
    size_t trained = 0;
    for (size_t i = 0; i < d.n_tokens; i++) trained += d.mask[i];
    ck_assert_uint_eq(d.n_trained, trained);
    sft_free(&d);
    /* other field names, no separator: the prompt is followed directly by the completion */
    SftOpts q = {"question", "answer", NULL};
    ck_assert_msg(parse(&d, "{\"question\": \"12 + 30 =\", \"answer\": \" 42\"}", &q, &err) == 0,
                  "%s", err.msg);
    expect_text(&d, 0, d.n_tokens, 0, "12 + 30 =");
    expect_text(&d, 0, d.n_tokens, 1, " 42<|endoftext|>");
    sft_free(&d);
    tok_free(&g_tok);
}
END_TEST

START_TEST(test_chat) {
    train_tok();
    SftData d;
    memset(&d, 0, sizeof d);
    MoeErr err;
    SftOpts o = {NULL, NULL, NULL};
    const char *rec =
        "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": "
        "\"user\", \"content\": \"What is two plus two?\"}, {\"role\": \"assistant\", "
        "\"content\": \"four\"}, {\"role\": \"user\", \"content\": \"and the cat?\"}, "
        "{\"role\": \"assistant\", \"content\": \"on the mat <|endoftext|> sat\"}]}\n"
        "{\"messages\": [{\"role\": \"assistant\", \"content\": \"hi\"}, {\"role\": \"user\", "
        "\"content\": \"bye\"}]}\n";
    ck_assert_msg(parse(&d, rec, &o, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(d.n_records, 2);
    ck_assert_uint_eq(d.n_chats, 2);
    const size_t e0 = d.rec_end[0];
    /* the template, written out by hand; the EOT ids decode to their text */
    expect_text(&d, 0, e0, -1,
                "<|system|>\nBe brief.\n<|user|>\nWhat is two plus two?\n<|assistant|>\nfour"
                "<|endoftext|><|user|>\nand the cat?\n<|assistant|>\non the mat <|endoftext|> "
                "sat<|endoftext|>");
    expect_text(&d, 0, e0, 1, "four<|endoftext|>on the mat <|endoftext|> sat<|endoftext|>");
    /* only the two turn ends are the EOT id: the text "<|endoftext|>" stays text */
    int eots = 0;
    for (size_t i = 0; i < e0; i++) eots += (int32_t)d.tokens[i] == tok_eot(&g_tok);
    ck_assert_int_eq(eots, 2);
    /* the first turn's pieces, token for token */
    size_t at = expect_encoded(&d, 0, "<|system|>\nBe brief.\n<|user|>\nWhat is two plus "
                                      "two?\n<|assistant|>\n", 0);
    at += expect_encoded(&d, at, "four", 1);
    ck_assert_int_eq(d.tokens[at], tok_eot(&g_tok));
    ck_assert_int_eq(d.mask[at], 1);
    /* a conversation ending with the user: an EOT that is not trained on ends it */
    expect_text(&d, e0, d.n_tokens, -1, "<|assistant|>\nhi<|endoftext|><|user|>\nbye\n"
                                        "<|endoftext|>");
    expect_text(&d, e0, d.n_tokens, 1, "hi<|endoftext|>");
    ck_assert_int_eq(d.tokens[d.n_tokens - 1], tok_eot(&g_tok));
    ck_assert_int_eq(d.mask[d.n_tokens - 1], 0);
    sft_free(&d);
    tok_free(&g_tok);
}
END_TEST

/* Records are packed in order; blank lines (also with spaces or CR) are skipped but
 * counted; CRLF line ends are accepted. */
START_TEST(test_packing) {
    train_tok();
    SftData d;
    memset(&d, 0, sizeof d);
    MoeErr err;
    SftOpts o = {NULL, NULL, NULL};
    const char *text = "{\"prompt\": \"a\", \"completion\": \"b\"}\r\n\n   \r\n"
                       "{\"prompt\": \"the cat\", \"completion\": \" sat\"}\n\n"
                       "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": "
                       "\"assistant\", \"content\": \"y\"}]}";
    ck_assert_msg(parse(&d, text, &o, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(d.n_records, 3);
    ck_assert_uint_eq(d.n_pairs, 2);
    ck_assert_uint_eq(d.n_chats, 1);
    expect_text(&d, 0, d.n_tokens, -1, "ab<|endoftext|>the cat sat<|endoftext|><|user|>\nx\n"
                                       "<|assistant|>\ny<|endoftext|>");
    expect_text(&d, 0, d.n_tokens, 1, "b<|endoftext|> sat<|endoftext|>y<|endoftext|>");
    for (size_t r = 0; r < 3; r++) {
        ck_assert_int_eq(d.tokens[d.rec_end[r] - 1], tok_eot(&g_tok));
        if (r) ck_assert_uint_gt(d.rec_end[r], d.rec_end[r - 1]);
    }
    ck_assert_uint_eq(d.rec_end[2], d.n_tokens);
    /* a parse error after this appends nothing; the line numbers count the blank lines */
    ck_assert_int_eq(parse(&d, "{\"prompt\": \"a\", \"completion\": \"b\"}\n\n{\"prompt\": \"a\"}",
                           &o, &err), -1);
    ck_assert_msg(strstr(err.msg, "t.jsonl:3: ") == err.msg, "%s", err.msg);
    ck_assert_uint_eq(d.n_records, 4);
    ck_assert_uint_eq(d.rec_end[3], d.n_tokens);
    sft_free(&d);
    sft_free(&d);   /* safe on the zeroed set */
    tok_free(&g_tok);
}
END_TEST

/* Each malformed record: -1, "t.jsonl:2:" (the first line is good), the message names
 * the field, and the hint is set. */
START_TEST(test_errors) {
    train_tok();
    const struct { const char *line, *want; } cases[] = {
        {"{\"prompt\": \"a\", \"completion\": }", "t.jsonl:2:31: expected a value"},
        {"not json", "t.jsonl:2:1: "},
        {"[1, 2]", "a record must be a JSON object, got an array"},
        {"{\"prompt\": \"a\"}", "the record has \"prompt\" but no \"completion\""},
        {"{\"completion\": \"a\"}", "the record has \"completion\" but no \"prompt\""},
        {"{\"question\": \"a\", \"answer\": \"b\"}",
         "has neither \"prompt\" and \"completion\" nor \"messages\""},
        {"{\"prompt\": 3, \"completion\": \"b\"}", "\"prompt\" must be a string, got a number"},
        {"{\"prompt\": \"a\", \"completion\": null}", "\"completion\" must be a string, got null"},
        {"{\"prompt\": \"a\", \"completion\": \"b\", \"messages\": []}",
         "has both \"messages\" and \"prompt\""},
        {"{\"messages\": []}", "\"messages\" must be a non-empty array, got an empty one"},
        {"{\"messages\": {\"role\": \"user\"}}", "\"messages\" must be a non-empty array, got an "
                                                "object"},
        {"{\"messages\": [\"hi\"]}", "messages[0] must be an object, got a string"},
        {"{\"messages\": [{\"content\": \"hi\"}]}", "messages[0].role must be a string, got "
                                                   "nothing"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"tool\", "
         "\"content\": \"x\"}]}", "messages[1].role: unknown role \"tool\""},
        {"{\"messages\": [{\"role\": \"assistant\", \"content\": 5}]}",
         "messages[0].content must be a string, got a number"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}]}",
         "the conversation has no assistant message"},
    };
    SftOpts o = {NULL, NULL, NULL};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[512];
        snprintf(text, sizeof text, "{\"prompt\": \"a\", \"completion\": \"b\"}\n%s\n",
                 cases[i].line);
        SftData d;
        memset(&d, 0, sizeof d);
        MoeErr err;
        memset(&err, 0, sizeof err);
        ck_assert_int_eq(parse(&d, text, &o, &err), -1);
        ck_assert_msg(strstr(err.msg, "t.jsonl:2:") == err.msg, "case %zu: %s", i, err.msg);
        ck_assert_msg(strstr(err.msg, cases[i].want) != NULL, "case %zu: \"%s\" lacks \"%s\"", i,
                      err.msg, cases[i].want);
        ck_assert_msg(err.hint[0] != 0, "case %zu: no hint", i);
        ck_assert_uint_eq(d.n_records, 1);
        sft_free(&d);
    }
    /* the hint names the record's fields and the keys to set */
    SftData d;
    memset(&d, 0, sizeof d);
    MoeErr err;
    ck_assert_int_eq(parse(&d, "{\"question\": \"a\", \"answer\": \"b\"}", &o, &err), -1);
    ck_assert_msg(strstr(err.hint, "\"question\", \"answer\"") &&
                  strstr(err.hint, "data.prompt_key"), "%s", err.hint);
    sft_free(&d);
    tok_free(&g_tok);
}
END_TEST

/* sft_load: files in order; a file without records, or a missing one, names the file. */
START_TEST(test_load_files) {
    train_tok();
    char a[] = "/tmp/test_sft_aXXXXXX", b[] = "/tmp/test_sft_bXXXXXX";
    int fa = mkstemp(a), fb = mkstemp(b);
    ck_assert(fa >= 0 && fb >= 0);
    const char *ta = "{\"prompt\": \"a\", \"completion\": \"b\"}\n";
    const char *tb = "{\"prompt\": \"the\", \"completion\": \" cat\"}\n";
    ck_assert(write(fa, ta, strlen(ta)) == (ssize_t)strlen(ta));
    ck_assert(write(fb, tb, strlen(tb)) == (ssize_t)strlen(tb));
    close(fa);
    close(fb);
    SftData d;
    MoeErr err;
    SftOpts o = {NULL, NULL, NULL};
    const char *paths[2] = {b, a};
    ck_assert_msg(sft_load(&d, &g_tok, paths, 2, &o, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(d.n_records, 2);
    expect_text(&d, 0, d.n_tokens, -1, "the cat<|endoftext|>ab<|endoftext|>");
    sft_free(&d);
    FILE *f = fopen(a, "w");
    fputs("\n  \n", f);
    fclose(f);
    ck_assert_int_eq(sft_load(&d, &g_tok, paths, 2, &o, &err), -1);
    ck_assert_msg(strstr(err.msg, a) == err.msg && strstr(err.msg, "no records"), "%s", err.msg);
    sft_free(&d);
    unlink(a);
    ck_assert_int_eq(sft_load(&d, &g_tok, paths, 2, &o, &err), -1);
    ck_assert_msg(strstr(err.msg, a) != NULL, "%s", err.msg);
    sft_free(&d);
    unlink(b);
    tok_free(&g_tok);
}
END_TEST

/* The validation boundary is the record end nearest to (1 - frac) n, leaving a record on
 * each side. */
START_TEST(test_val_start) {
    SftData d;
    memset(&d, 0, sizeof d);
    size_t ends[5] = {10, 30, 60, 90, 100};
    d.rec_end = ends;
    d.n_records = 5;
    d.n_tokens = 100;
    ck_assert_uint_eq(sft_val_start(&d, 0.1), 90);    /* want 90 */
    ck_assert_uint_eq(sft_val_start(&d, 0.25), 60);   /* want 75: 60 and 90 tie, first wins */
    ck_assert_uint_eq(sft_val_start(&d, 0.3), 60);    /* want 70 */
    ck_assert_uint_eq(sft_val_start(&d, 0.001), 90);  /* at least one record held out */
    ck_assert_uint_eq(sft_val_start(&d, 0.99), 10);   /* at least one record trained on */
    ck_assert_uint_eq(sft_val_start(&d, 0.0), 100);   /* no validation */
    d.n_records = 1;
    ck_assert_uint_eq(sft_val_start(&d, 0.5), 100);
}
END_TEST

/* Ids above 65535 survive the record stream and the loader: a tokenizer of 65793 tokens
 * whose last merge (rank 65535, id 65791) is the pair "ok" (the byte pairs in a rotated
 * order), records whose completion is "ok"; the stream holds 65791 as a target, and the
 * loader over it (a 4-byte shard view with the mask, as train/dataset.c builds it) hands
 * out 65791 as an unmasked target and never as a masked one. A uint16 stream would hold
 * 65791 mod 65536 = 255 instead. */
START_TEST(test_wide_ids) {
    enum { M = 65536, V = 256 + M + 1, OK = 'o' * 256 + 'k', WIDE = 256 + M - 1 };
    int32_t *merges = malloc(sizeof(int32_t) * 2 * M);
    ck_assert_ptr_nonnull(merges);
    for (int r = 0; r < M; r++) {
        const int pair = (OK + 1 + r) % M;   /* rank M - 1 is the pair OK */
        merges[2 * r] = pair / 256;
        merges[2 * r + 1] = pair % 256;
    }
    int32_t *owned = moe_malloc(sizeof(int32_t) * 2 * M);
    memcpy(owned, merges, sizeof(int32_t) * 2 * M);
    free(merges);
    Tokenizer wide;
    memset(&wide, 0, sizeof wide);
    ck_assert_int_eq(tok_build(&wide, V, owned), -1);
    ck_assert_int_eq(tok_vocab_size(&wide), V);
    char text[4096] = "";
    for (int i = 0; i < 40; i++) strcat(text, "{\"prompt\": \"q\", \"completion\": \"ok\"}\n");
    SftData d;
    memset(&d, 0, sizeof d);
    MoeErr err;
    const SftOpts o = {NULL, NULL, NULL};
    ck_assert_msg(sft_parse(&d, &wide, (const uint8_t *)text, strlen(text), "w.jsonl", &o,
                            &err) == 0, "%s", err.msg);
    size_t n_wide = 0;
    for (size_t i = 0; i < d.n_tokens; i++) {
        ck_assert_uint_lt(d.tokens[i], V);
        if (d.tokens[i] == WIDE) {
            ck_assert_int_eq(d.mask[i], 1);   /* the completion */
            n_wide++;
        }
    }
    ck_assert_uint_eq(n_wide, 40);
    Shard view;
    shard_view(&view, d.tokens, d.n_tokens, 4, V, tok_hash(&wide), "data.sft");
    LoaderSource src = {&view, 1, 1.0, "data.sft", d.mask};
    Loader l;
    ck_assert_msg(loader_init(&l, &src, 1, NULL, 4, 0.0, 1, &err) == 0, "%s", err.msg);
    int32_t in[4], tg[4];
    size_t seen = 0;
    for (size_t w = 0; w < loader_train_windows(&l); w++) {
        loader_window(&l, false, w, in, tg);
        for (int t = 0; t < 4; t++) {
            const size_t pos = w * 4 + (size_t)t + 1;   /* the target's stream offset */
            ck_assert_int_eq(tg[t], d.mask[pos] ? (int32_t)d.tokens[pos] : LOSS_IGNORE);
            seen += tg[t] == WIDE;
        }
    }
    ck_assert_uint_gt(seen, 0);
    loader_free(&l);
    shard_close(&view);
    sft_free(&d);
    tok_free(&wide);
}
END_TEST

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does (every test main does) */
    Suite *s = suite_create("sft");
    TCase *tc = tcase_create("records");
    tcase_add_test(tc, test_pair);
    tcase_add_test(tc, test_chat);
    tcase_add_test(tc, test_packing);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_load_files);
    tcase_add_test(tc, test_val_start);
    tcase_add_test(tc, test_wide_ids);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
