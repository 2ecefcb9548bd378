/* test_pretokenize.c: GPT-2's pre-tokenizer and byte alphabet (data/pretokenize.c).
 *
 * Expected splits are derived by hand from the GPT-2 pattern (see the comments next to each
 * case); random bytes check that the pieces always tile the text.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/blas.h"
#include "core/rng.h"
#include "data/pretokenize.h"
#include "testutil.h"

/* ---------------------------------------------------------------- helpers */

typedef struct { char buf[4096]; size_t n; int pieces; } Joined;

static void join_piece(const uint8_t *p, size_t len, void *ctx) {
    Joined *j = ctx;
    if (j->pieces++) j->buf[j->n++] = '|';
    ck_assert_uint_lt(j->n + len, sizeof j->buf);
    memcpy(j->buf + j->n, p, len);
    j->n += len;
    j->buf[j->n] = 0;
}

/* Pre-tokenize s and compare with the pieces of want joined by '|'. */
static void check_split(const char *s, const char *want) {
    Joined j;
    memset(&j, 0, sizeof j);
    tok_pretokenize((const uint8_t *)s, strlen(s), join_piece, &j);
    ck_assert_msg(strcmp(j.buf, want) == 0, "split of \"%s\": got \"%s\", want \"%s\"", s, j.buf, want);
}

/* ---------------------------------------------------------------- pre-tokenizer */

START_TEST(test_split_contractions) {
    /* each 's 't 're 've 'm 'll 'd is its own piece; the word before keeps its leading space */
    check_split("I'm don't we'll they're I've he'd it's",
                "I|'m| don|'t| we|'ll| they|'re| I|'ve| he|'d| it|'s");
    /* contractions are case-sensitive: "'S" is punctuation then a letter run */
    check_split("IT'S", "IT|'|S");
    /* a quote that starts no contraction joins the punctuation run */
    check_split("'hello'", "'|hello|'");
}
END_TEST

START_TEST(test_split_letters_digits_punct) {
    check_split("Hello world", "Hello| world");
    check_split("abc123 45x", "abc|123| 45|x");
    check_split("Hello!!! ...?", "Hello|!!!| ...?");
    check_split("a+b=c", "a|+|b|=|c");
    check_split("", "");
    check_split(" ", " ");
}
END_TEST

START_TEST(test_split_whitespace_rule) {
    /* \s+(?!\S): the last space of a run becomes the leading space of the next word */
    check_split("a   b", "a|  | b");
    check_split("a b", "a| b");
    /* newlines: "\n\n" before a letter splits into "\n" then "\n" (a lone "\n" cannot
     * attach to the letter: only U+0020 is the optional leading space) */
    check_split("a\n\nb", "a|\n|\n|b");
    check_split("line\n", "line|\n");
    /* trailing whitespace at the end of text stays one piece */
    check_split("end  ", "end|  ");
    /* space then tab then a letter: " " (run minus last), then "\t", then "y" */
    check_split("x \ty", "x| |\t|y");
    /* "  \n  x": run of 5 minus the last space, then " x" */
    check_split("  \n  x", "  \n | x");
}
END_TEST

START_TEST(test_split_unicode) {
    check_split("h\xc3\xa9llo w\xc3\xb6rld", "h\xc3\xa9llo| w\xc3\xb6rld");  /* héllo wörld */
    /* CJK ideographs are letters (Lo): "你好 世界" */
    check_split("\xe4\xbd\xa0\xe5\xa5\xbd \xe4\xb8\x96\xe7\x95\x8c",
                "\xe4\xbd\xa0\xe5\xa5\xbd| \xe4\xb8\x96\xe7\x95\x8c");
    /* "2024年": digits then a letter */
    check_split("2024\xe5\xb9\xb4", "2024|\xe5\xb9\xb4");
    /* "x ½": ½ is No, a number */
    check_split("x \xc2\xbd", "x| \xc2\xbd");
    /* NBSP (U+00A0) is whitespace but not the optional U+0020: "a", NBSP, "b" */
    check_split("a\xc2\xa0" "b", "a|\xc2\xa0|b");
    /* Cyrillic and Greek letters */
    check_split("\xd0\x94\xd0\xb0 \xce\xa9", "\xd0\x94\xd0\xb0| \xce\xa9");
}
END_TEST

START_TEST(test_split_invalid_utf8) {
    /* each invalid byte is one "other" codepoint: it groups with punctuation */
    check_split("ab\xff\xfe" "cd", "ab|\xff\xfe|cd");
    check_split("a \xff", "a| \xff");
    /* a truncated 2-byte lead followed by ASCII: lead is "other", then the letter */
    check_split("\xc3" "a", "\xc3|a");
    /* overlong encoding of '/' (C0 AF) is two invalid bytes, not a slash */
    check_split("x\xc0\xaf", "x|\xc0\xaf");
    /* encoded surrogate U+D800 (ED A0 80) is three invalid bytes */
    check_split("\xed\xa0\x80z", "\xed\xa0\x80|z");
    /* an invalid byte between letters splits the letter run */
    check_split("ab\x80" "cd!", "ab|\x80|cd|!");
}
END_TEST

typedef struct { size_t total; const uint8_t *expect_at; int ok; } TileCtx;
static void tile_piece(const uint8_t *p, size_t len, void *ctx) {
    TileCtx *c = ctx;
    if (p != c->expect_at || len == 0) c->ok = 0;
    c->expect_at = p + len;
    c->total += len;
}

START_TEST(test_split_tiles_random_bytes) {
    MoeRng rng;
    rng_seed(&rng, 7);
    uint8_t buf[512];
    for (int trial = 0; trial < 200; trial++) {
        size_t n = rng_next(&rng) % sizeof buf;
        for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)rng_next(&rng);
        TileCtx c = {0, buf, 1};
        tok_pretokenize(buf, n, tile_piece, &c);
        ck_assert_msg(c.ok && c.total == n, "pieces do not tile %zu random bytes", n);
    }
}
END_TEST

/* ---------------------------------------------------------------- byte alphabet */

START_TEST(test_byte_to_unicode) {
    ck_assert_uint_eq(tok_byte_to_unicode(' '), 0x120);    /* 'Ġ' */
    ck_assert_uint_eq(tok_byte_to_unicode('\n'), 0x10A);   /* 'Ċ' */
    ck_assert_uint_eq(tok_byte_to_unicode('A'), 'A');
    ck_assert_uint_eq(tok_byte_to_unicode('!'), '!');
    ck_assert_uint_eq(tok_byte_to_unicode(0), 0x100);
    ck_assert_uint_eq(tok_byte_to_unicode(0x7F), 0x121);   /* first byte after the 33 controls */
    ck_assert_uint_eq(tok_byte_to_unicode(0xA0), 0x142);
    ck_assert_uint_eq(tok_byte_to_unicode(0xAD), 0x143);   /* soft hyphen, the last one */
    ck_assert_uint_eq(tok_byte_to_unicode(0xE9), 0xE9);
    /* a bijection onto 256 distinct codepoints below U+0144 */
    static uint8_t seen[0x144];
    memset(seen, 0, sizeof seen);
    for (int b = 0; b < 256; b++) {
        uint32_t u = tok_byte_to_unicode((uint8_t)b);
        ck_assert_uint_lt(u, 0x144);
        ck_assert_msg(!seen[u], "codepoint %u used twice", u);
        seen[u] = 1;
    }
}
END_TEST

/* ---------------------------------------------------------------- suite */

static Suite *pretokenize_suite(void) {
    Suite *s = suite_create("pretokenize");
    struct { const char *name; const TTest *fn; } cases[] = {
        {"split_contractions", test_split_contractions},
        {"split_letters_digits_punct", test_split_letters_digits_punct},
        {"split_whitespace_rule", test_split_whitespace_rule},
        {"split_unicode", test_split_unicode},
        {"split_invalid_utf8", test_split_invalid_utf8},
        {"split_tiles_random_bytes", test_split_tiles_random_bytes},
        {"byte_to_unicode", test_byte_to_unicode},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, cases[i].fn);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    SRunner *sr = srunner_create(pretokenize_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
