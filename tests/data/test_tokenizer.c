/* test_tokenizer.c: the byte-level BPE tokenizer (data/tokenizer.c, data/bpe_train.c):
 * training, encode/decode, the file. The pre-tokenizer is tests/data/test_pretokenize.c.
 *
 * Expected values are derived by hand from the GPT-2 pattern and the BPE rules (see the
 * comments next to each case), or checked against a naive reference BPE written here.
 * Corpus: the first 100 KB of the bundled tinyshakespeare (data/tinyshakespeare.txt under
 * $MOE_SOURCE_DIR, which ctest sets); the test fails (never skips) when it is missing.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/blas.h"
#include "core/fs.h"
#include "data/pretokenize.h"
#include "data/tokenizer.h"
#include "testutil.h"

/* ---------------------------------------------------------------- helpers */

static const char *corpus_path(void) {
    const char *path = tt_source_path("data/tinyshakespeare.txt");
    ck_assert_msg(access(path, R_OK) == 0, "test corpus %s is missing or unreadable", path);
    return path;
}

/* First 100 KB of tinyshakespeare (caller frees with moe_free). */
static uint8_t *corpus_slice(size_t *n) {
    uint8_t *buf;
    MoeErr err;
    ck_assert_msg(fs_read_file(corpus_path(), &buf, n, &err) == 0, "%s", err.msg);
    ck_assert_uint_ge(*n, 100000);
    *n = 100000;
    return buf;
}

static void train_slice(Tokenizer *t, int V) {
    size_t n;
    uint8_t *buf = corpus_slice(&n);
    const uint8_t *bufs[1] = {buf};
    MoeErr err;
    ck_assert_msg(tok_train_buffers(t, bufs, &n, 1, V, &err) == 0, "%s", err.msg);
    moe_free(buf);
}

static void tmp_path(char *out, size_t cap, const char *name) {
    const char *dir = getenv("MOE_BUILD_DIR");
    snprintf(out, cap, "%s/test_tokenizer_%ld_%s", dir && *dir ? dir : "/tmp", (long)getpid(), name);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static void assert_roundtrip(const Tokenizer *t, const uint8_t *x, size_t n) {
    int32_t *ids = moe_malloc((n + 1) * sizeof(int32_t));
    uint8_t *back = moe_malloc(n + 1);
    size_t m, k;
    ck_assert_int_eq(tok_encode(t, x, n, ids, n, &m), 0);
    ck_assert_uint_le(m, n);
    ck_assert_int_eq(tok_decode(t, ids, m, back, n, &k), 0);
    ck_assert_uint_eq(k, n);
    ck_assert_msg(n == 0 || memcmp(back, x, n) == 0, "round trip changed %zu bytes of text", n);
    moe_free(ids);
    moe_free(back);
}

/* Naive reference BPE for one pre-token: repeatedly take the lowest-rank adjacent pair and
 * merge all its occurrences left to right. */
static size_t naive_bpe(const Tokenizer *t, const uint8_t *p, size_t len, int32_t *s) {
    for (size_t i = 0; i < len; i++) s[i] = p[i];
    for (;;) {
        int best = -1;
        for (size_t i = 0; i + 1 < len; i++) {
            for (int r = 0; r < tok_n_merges(t) && (best < 0 || r < best); r++) {
                int32_t a, b;
                tok_merge(t, r, &a, &b);
                if (a == s[i] && b == s[i + 1]) { best = r; break; }
            }
        }
        if (best < 0) return len;
        int32_t a, b;
        tok_merge(t, best, &a, &b);
        size_t o = 0;
        for (size_t i = 0; i < len; i++) {
            if (i + 1 < len && s[i] == a && s[i + 1] == b) { s[o++] = 256 + best; i++; }
            else s[o++] = s[i];
        }
        len = o;
    }
}

typedef struct { const Tokenizer *t; int32_t *ids; size_t n; } NaiveCtx;

static void naive_piece(const uint8_t *p, size_t len, void *ctx) {
    NaiveCtx *c = ctx;
    c->n += naive_bpe(c->t, p, len, c->ids + c->n);
}

/* ---------------------------------------------------------------- training */

/* Corpus "ab ab ab cd" -> words "ab" x1, " ab" x2, " cd" x1.
 * Pair counts: (a,b)=3, (' ',a)=2, (' ',c)=1, (c,d)=1          -> merge 0: (97,98) = 256
 * then (' ',256)=2, (' ',c)=1, (c,d)=1                          -> merge 1: (32,256) = 257
 * then tie at 1: (32,99) < (99,100) by ids                      -> merge 2: (32,99) = 258
 * then (258,100)=1                                              -> merge 3: (258,100) = 259
 * and no pairs remain, so the largest vocab is 256 + 4 + 1 = 261. */
static const char *HAND = "ab ab ab cd";

static void train_hand(Tokenizer *t, int V, int expect_rc, MoeErr *err) {
    const uint8_t *bufs[1] = {(const uint8_t *)HAND};
    size_t lens[1] = {strlen(HAND)};
    ck_assert_int_eq(tok_train_buffers(t, bufs, lens, 1, V, err), expect_rc);
}

START_TEST(test_train_hand_corpus) {
    Tokenizer t;
    MoeErr err;
    train_hand(&t, 261, 0, &err);
    ck_assert_int_eq(tok_vocab_size(&t), 261);
    ck_assert_int_eq(tok_n_merges(&t), 4);
    ck_assert_int_eq(tok_eot(&t), 260);
    const int32_t want[4][2] = {{97, 98}, {32, 256}, {32, 99}, {258, 100}};
    for (int r = 0; r < 4; r++) {
        int32_t a, b;
        tok_merge(&t, r, &a, &b);
        ck_assert_msg(a == want[r][0] && b == want[r][1], "merge %d is (%d,%d), want (%d,%d)", r,
                      a, b, want[r][0], want[r][1]);
    }
    size_t len;
    const uint8_t *bytes = tok_token_bytes(&t, 259, &len);
    ck_assert_uint_eq(len, 3);
    ck_assert(memcmp(bytes, " cd", 3) == 0);
    char s[64];
    ck_assert_uint_eq(tok_token_gpt2_str(&t, 257, s, sizeof s), 4);
    ck_assert_str_eq(s, "\xc4\xa0" "ab");  /* "Ġab" */
    ck_assert_uint_eq(tok_token_gpt2_str(&t, 260, s, sizeof s), strlen(TOK_EOT_TEXT));
    ck_assert_str_eq(s, TOK_EOT_TEXT);

    /* encode "ab ab cd" -> pieces "ab", " ab", " cd" -> 256, 257, 259 */
    int32_t ids[16];
    size_t n;
    ck_assert_int_eq(tok_encode(&t, (const uint8_t *)"ab ab cd", 8, ids, 16, &n), 0);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(ids[0], 256);
    ck_assert_int_eq(ids[1], 257);
    ck_assert_int_eq(ids[2], 259);
    /* "ba" has no merge: the two bytes */
    ck_assert_int_eq(tok_encode(&t, (const uint8_t *)"ba", 2, ids, 16, &n), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(ids[0], 'b');
    ck_assert_int_eq(ids[1], 'a');
    /* too small a buffer: -1 and the needed count */
    ck_assert_int_eq(tok_encode(&t, (const uint8_t *)"ab ab cd", 8, ids, 2, &n), -1);
    ck_assert_uint_eq(n, 3);
    tok_free(&t);
}
END_TEST

START_TEST(test_train_ties_and_repeats) {
    Tokenizer t;
    MoeErr err;
    /* "ab-ac" -> words "ab", "-", "ac": (97,98) and (97,99) both count 1, so the smaller
     * second id wins: merge 0 = (97,98), merge 1 = (97,99); then nothing is left (V = 259). */
    const uint8_t *b1[1] = {(const uint8_t *)"ab-ac"};
    size_t l1[1] = {5};
    ck_assert_msg(tok_train_buffers(&t, b1, l1, 1, 259, &err) == 0, "%s", err.msg);
    int32_t a, b;
    tok_merge(&t, 0, &a, &b);
    ck_assert(a == 97 && b == 98);
    tok_merge(&t, 1, &a, &b);
    ck_assert(a == 97 && b == 99);
    tok_free(&t);
    /* "aa" -> merge 0 = (97,97). Encoding "aaa" merges left to right: [256, 97];
     * "aaaa" -> [256, 256]. */
    const uint8_t *b2[1] = {(const uint8_t *)"aa"};
    size_t l2[1] = {2};
    ck_assert_msg(tok_train_buffers(&t, b2, l2, 1, 258, &err) == 0, "%s", err.msg);
    int32_t ids[8];
    size_t n;
    ck_assert_int_eq(tok_encode(&t, (const uint8_t *)"aaa", 3, ids, 8, &n), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert(ids[0] == 256 && ids[1] == 97);
    ck_assert_int_eq(tok_encode(&t, (const uint8_t *)"aaaa", 4, ids, 8, &n), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert(ids[0] == 256 && ids[1] == 256);
    tok_free(&t);
    /* word "aaaaa" x1: (97,97) occurs 4 times but the merge takes 2 non-overlapping pairs
     * -> [256,256,97]; then (256,256)=1 and (256,97)=1 tie: the smaller second id, 97, wins */
    const uint8_t *b3[1] = {(const uint8_t *)"aaaaa"};
    size_t l3[1] = {5};
    ck_assert_msg(tok_train_buffers(&t, b3, l3, 1, 259, &err) == 0, "%s", err.msg);
    tok_merge(&t, 1, &a, &b);
    ck_assert(a == 256 && b == 97);
    tok_free(&t);
}
END_TEST

/* Naive reference trainer state: every pre-token kept separately (no dedup), symbols in place. */
typedef struct { int32_t *sym; size_t *start, *len; size_t n_sym, n_pieces; } NaiveWords;

static void naive_collect(const uint8_t *p, size_t len, void *ctx) {
    NaiveWords *w = ctx;
    w->start[w->n_pieces] = w->n_sym;
    w->len[w->n_pieces++] = len;
    for (size_t i = 0; i < len; i++) w->sym[w->n_sym++] = p[i];
}

START_TEST(test_train_matches_naive) {
    /* first 20 KB of the corpus to V = 420 (163 merges), against a direct transcription of
     * the BPE definition: count every adjacent pair over all pre-tokens, take the largest
     * count (ties: smaller a, then smaller b), merge it everywhere left to right, repeat. */
    enum { NB = 20000, V = 420 };
    size_t n;
    uint8_t *text = corpus_slice(&n);
    n = NB;
    NaiveWords w = {moe_malloc(n * sizeof(int32_t)), moe_malloc(n * sizeof(size_t)),
                    moe_malloc(n * sizeof(size_t)), 0, 0};
    tok_pretokenize(text, n, naive_collect, &w);
    int *count = moe_malloc((size_t)V * V * sizeof(int));
    Tokenizer t;
    MoeErr err;
    const uint8_t *bufs[1] = {text};
    ck_assert_msg(tok_train_buffers(&t, bufs, &n, 1, V, &err) == 0, "%s", err.msg);
    for (int r = 0; r < V - 257; r++) {
        memset(count, 0, (size_t)V * V * sizeof(int));
        for (size_t p = 0; p < w.n_pieces; p++)
            for (size_t i = 0; i + 1 < w.len[p]; i++)
                count[w.sym[w.start[p] + i] * V + w.sym[w.start[p] + i + 1]]++;
        int best = 0, ba = -1, bb = -1;
        for (int a = 0; a < 256 + r; a++)
            for (int b = 0; b < 256 + r; b++)
                if (count[a * V + b] > best) { best = count[a * V + b]; ba = a; bb = b; }
        ck_assert_int_gt(best, 0);
        int32_t ta, tb;
        tok_merge(&t, r, &ta, &tb);
        ck_assert_msg(ta == ba && tb == bb, "merge %d: (%d,%d), reference (%d,%d) count %d", r,
                      ta, tb, ba, bb, best);
        for (size_t p = 0; p < w.n_pieces; p++) {
            int32_t *s = w.sym + w.start[p];
            size_t o = 0;
            for (size_t i = 0; i < w.len[p]; i++) {
                if (i + 1 < w.len[p] && s[i] == ba && s[i + 1] == bb) { s[o++] = 256 + r; i++; }
                else s[o++] = s[i];
            }
            w.len[p] = o;
        }
    }
    tok_free(&t);
    moe_free(count);
    moe_free(w.sym);
    moe_free(w.start);
    moe_free(w.len);
    moe_free(text);
}
END_TEST

START_TEST(test_train_vocab_too_large) {
    Tokenizer t;
    MoeErr err;
    train_hand(&t, 262, -1, &err);
    ck_assert_msg(strstr(err.msg, "too large") && strstr(err.msg, "261"), "msg: %s", err.msg);
    ck_assert_msg(strstr(err.hint, "261") != NULL, "hint: %s", err.hint);
    ck_assert_ptr_null(t.merges);
    train_hand(&t, 100, -1, &err);
    ck_assert_msg(strstr(err.msg, "vocab_size") != NULL, "msg: %s", err.msg);
    tok_free(&t);  /* safe on the zeroed struct */
}
END_TEST

START_TEST(test_train_files_errors) {
    char empty[512], missing[512];
    tmp_path(empty, sizeof empty, "empty.txt");
    tmp_path(missing, sizeof missing, "missing.txt");
    write_text(empty, "");
    unlink(missing);
    Tokenizer t;
    MoeErr err;
    const char *p1[1] = {empty};
    ck_assert_int_eq(tok_train(&t, p1, 1, 300, &err), -1);
    ck_assert_msg(strstr(err.msg, empty) && strstr(err.msg, "is empty"), "msg: %s", err.msg);
    ck_assert(err.hint[0] != 0);
    const char *p2[1] = {missing};
    ck_assert_int_eq(tok_train(&t, p2, 1, 300, &err), -1);
    ck_assert_msg(strstr(err.msg, missing) != NULL, "msg: %s", err.msg);
    ck_assert(err.hint[0] != 0);
    unlink(empty);
}
END_TEST

START_TEST(test_special_not_parsed) {
    Tokenizer t;
    MoeErr err;
    train_hand(&t, 261, 0, &err);
    const char *s = "x<|endoftext|>y";
    int32_t ids[64];
    size_t n;
    ck_assert_int_eq(tok_encode(&t, (const uint8_t *)s, strlen(s), ids, 64, &n), 0);
    for (size_t i = 0; i < n; i++) ck_assert_int_ne(ids[i], tok_eot(&t));
    int32_t eot[1] = {tok_eot(&t)};
    uint8_t out[64];
    ck_assert_int_eq(tok_decode(&t, eot, 1, out, sizeof out, &n), 0);
    ck_assert_uint_eq(n, strlen(TOK_EOT_TEXT));
    ck_assert(memcmp(out, TOK_EOT_TEXT, n) == 0);
    int32_t bad[2] = {5, 261};
    ck_assert_int_eq(tok_decode(&t, bad, 2, out, sizeof out, &n), -2);
    ck_assert_uint_eq(n, 1);
    tok_free(&t);
}
END_TEST

/* ---------------------------------------------------------------- encode on real text */

START_TEST(test_roundtrip_random) {
    Tokenizer t;
    train_slice(&t, 1024);
    MoeRng rng;
    rng_seed(&rng, 42);
    uint8_t buf[4096];
    assert_roundtrip(&t, buf, 0);  /* empty */
    for (int trial = 0; trial < 100; trial++) {
        size_t n = 1 + rng_next(&rng) % sizeof buf;
        int mode = trial % 3;
        for (size_t i = 0; i < n; i++) {
            uint64_t r = rng_next(&rng);
            if (mode == 0) buf[i] = (uint8_t)r;                                /* any bytes */
            else if (mode == 1) buf[i] = (uint8_t)("ab \n'\x80\xc3\xff" [r % 8]); /* broken UTF-8 */
            else buf[i] = (uint8_t)(' ' + r % 95);                             /* printable */
        }
        assert_roundtrip(&t, buf, n);
    }
    const char *uni = "h\xc3\xa9llo w\xc3\xb6rld \xe4\xbd\xa0\xe5\xa5\xbd\xf0\x9f\x98\x80 2024 \xc2\xbd\n\n";
    assert_roundtrip(&t, (const uint8_t *)uni, strlen(uni));
    tok_free(&t);
}
END_TEST

START_TEST(test_encode_matches_naive_and_compresses) {
    Tokenizer t;
    train_slice(&t, 1024);
    size_t n;
    uint8_t *text = corpus_slice(&n);
    int32_t *a = moe_malloc(n * sizeof(int32_t)), *b = moe_malloc(n * sizeof(int32_t));
    size_t na, nb;
    ck_assert_int_eq(tok_encode(&t, text, n, a, n, &na), 0);
    ck_assert_int_eq(tok_encode(&t, text, n, b, n, &nb), 0);
    ck_assert_uint_eq(na, nb);
    ck_assert(memcmp(a, b, na * sizeof(int32_t)) == 0);  /* deterministic */
    /* English at vocab 1024 compresses to well under half the bytes (a byte-level BPE on
     * its own training text); requiring < n/2 fails if merges are not applied. */
    ck_assert_msg(na < n / 2, "%zu tokens for %zu bytes", na, n);
    /* the first 8 KB against the naive reference BPE */
    size_t m = 8192;
    NaiveCtx c = {&t, b, 0};
    tok_pretokenize(text, m, naive_piece, &c);
    ck_assert_int_eq(tok_encode(&t, text, m, a, n, &na), 0);
    ck_assert_uint_eq(na, c.n);
    for (size_t i = 0; i < na; i++) ck_assert_msg(a[i] == b[i], "token %zu: %d vs naive %d", i, a[i], b[i]);
    moe_free(a);
    moe_free(b);
    moe_free(text);
    tok_free(&t);
}
END_TEST

/* ---------------------------------------------------------------- save / load */

START_TEST(test_save_load_roundtrip) {
    Tokenizer t, u;
    MoeErr err;
    train_slice(&t, 600);
    char path[512];
    tmp_path(path, sizeof path, "tok.bpe");
    ck_assert_msg(tok_save(&t, path, &err) == 0, "%s", err.msg);
    ck_assert_msg(tok_load(&u, path, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(tok_vocab_size(&u), 600);
    ck_assert(tok_hash(&t) == tok_hash(&u));
    for (int r = 0; r < tok_n_merges(&t); r++) {
        int32_t a1, b1, a2, b2;
        tok_merge(&t, r, &a1, &b1);
        tok_merge(&u, r, &a2, &b2);
        ck_assert(a1 == a2 && b1 == b2);
    }
    size_t n;
    uint8_t *text = corpus_slice(&n);
    size_t na, nb;
    int32_t *a = tok_encode_alloc(&t, text, n, &na), *b = tok_encode_alloc(&u, text, n, &nb);
    ck_assert_uint_eq(na, nb);
    ck_assert(memcmp(a, b, na * sizeof(int32_t)) == 0);
    /* header lines are exactly as documented */
    uint8_t *file;
    size_t fn;
    ck_assert_int_eq(fs_read_file(path, &file, &fn, &err), 0);
    const char *head = "moetrain-bpe 1\nvocab_size 600\nspecial 599 <|endoftext|>\nmerges 343\n";
    ck_assert(fn > strlen(head) && memcmp(file, head, strlen(head)) == 0);
    /* a different tokenizer has a different hash */
    Tokenizer w;
    train_slice(&w, 601);
    ck_assert(tok_hash(&w) != tok_hash(&t));
    moe_free(file);
    moe_free(a);
    moe_free(b);
    moe_free(text);
    tok_free(&t);
    tok_free(&u);
    tok_free(&w);
    unlink(path);
}
END_TEST

/* Load text as a tokenizer file; expect failure with "path:line:" and want in the message. */
static void expect_load_error(const char *text, int line, const char *want) {
    char path[512], where[600];
    tmp_path(path, sizeof path, "bad.bpe");
    write_text(path, text);
    Tokenizer t;
    MoeErr err;
    ck_assert_int_eq(tok_load(&t, path, &err), -1);
    snprintf(where, sizeof where, "%s:%d:", path, line);
    ck_assert_msg(strstr(err.msg, where) != NULL, "want \"%s\" in \"%s\"", where, err.msg);
    ck_assert_msg(strstr(err.msg, want) != NULL, "want \"%s\" in \"%s\"", want, err.msg);
    ck_assert(err.hint[0] != 0);
    ck_assert_ptr_null(t.merges);
    unlink(path);
}

#define HDR3 "moetrain-bpe 1\nvocab_size 260\nspecial 259 <|endoftext|>\nmerges 3\n"

START_TEST(test_load_rejects_corrupt) {
    /* sanity: the well-formed file loads (so the failures below are about the defect) */
    char path[512];
    tmp_path(path, sizeof path, "good.bpe");
    write_text(path, HDR3 "97 98\n32 256\n256 257\n");
    Tokenizer t;
    MoeErr err;
    ck_assert_msg(tok_load(&t, path, &err) == 0, "%s", err.msg);
    tok_free(&t);
    unlink(path);

    expect_load_error("moetrain-bpe 2\n", 1, "magic");
    expect_load_error("hello\n", 1, "magic");
    expect_load_error("", 1, "empty");
    expect_load_error("moetrain-bpe 1\nvocab_size 12\n", 2, "vocab_size");
    expect_load_error("moetrain-bpe 1\nvocab_size 260\nspecial 258 <|endoftext|>\n", 3, "special");
    expect_load_error("moetrain-bpe 1\nvocab_size 260\nspecial 259 <|endoftext|>\nmerges 4\n", 4,
                      "merges");
    /* merge 1 may only use ids < 257 */
    expect_load_error(HDR3 "97 98\n32 257\n256 257\n", 6, "257");
    /* merge 0 may only use bytes */
    expect_load_error(HDR3 "256 97\n32 256\n256 257\n", 5, "256");
    /* truncated: two of three merges, the third expected on line 7 */
    expect_load_error(HDR3 "97 98\n32 256\n", 7, "truncated");
    /* header cut short: the vocab_size line is missing */
    expect_load_error("moetrain-bpe 1\n", 2, "ends before");
    /* trailing junk after the last merge */
    expect_load_error(HDR3 "97 98\n32 256\n256 257\nextra\n", 8, "trailing");
    /* duplicate merge */
    expect_load_error(HDR3 "97 98\n32 256\n97 98\n", 7, "duplicate");
    /* malformed numbers: leading zero, sign, extra field, CRLF */
    expect_load_error(HDR3 "097 98\n32 256\n256 257\n", 5, "merge");
    expect_load_error(HDR3 "97 -98\n32 256\n256 257\n", 5, "merge");
    expect_load_error(HDR3 "97 98 1\n32 256\n256 257\n", 5, "merge");
    expect_load_error("moetrain-bpe 1\r\nvocab_size 260\r\n", 1, "carriage return");
}
END_TEST

START_TEST(test_load_missing_file) {
    Tokenizer t;
    MoeErr err;
    ck_assert_int_eq(tok_load(&t, "/nonexistent/dir/tok.bpe", &err), -1);
    ck_assert_msg(strstr(err.msg, "/nonexistent/dir/tok.bpe") != NULL, "msg: %s", err.msg);
    ck_assert(err.hint[0] != 0);
    Tokenizer u;
    train_hand(&u, 261, 0, &err);
    ck_assert_int_eq(tok_save(&u, "/nonexistent/dir/tok.bpe", &err), -1);
    ck_assert(err.hint[0] != 0);
    tok_free(&u);
}
END_TEST

/* ---------------------------------------------------------------- the trained_on record */

/* tok_train records the files it read (name, size, FNV-1a of the bytes), tok_save writes
 * them, tok_load reads them back; the record does not change tok_hash (shards and
 * checkpoints made before it keep matching). Breaks seen caught: tok_save without the
 * block (n_sources 0 after load), hashing the name instead of the bytes (hash differs
 * from tok_text_hash of the content). */
START_TEST(test_trained_on_roundtrip) {
    char a[512], b[512], path[512];
    tmp_path(a, sizeof a, "text a.txt");   /* a space in the name: the name is the rest */
    tmp_path(b, sizeof b, "b.txt");
    tmp_path(path, sizeof path, "src.bpe");
    write_text(a, "the quick brown fox jumps over the lazy dog, the end\n");
    write_text(b, "a second document, with other words in it\n");
    const char *files[2] = {a, b};
    Tokenizer t, u, plain;
    MoeErr err;
    ck_assert_msg(tok_train(&t, files, 2, 270, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(t.n_sources, 2);
    ck_assert_str_eq(t.sources[0].name, a);
    const char *doc = "the quick brown fox jumps over the lazy dog, the end\n";
    ck_assert_uint_eq(t.sources[0].size, strlen(doc));
    ck_assert(t.sources[0].hash == tok_text_hash((const uint8_t *)doc, strlen(doc)));
    ck_assert_msg(tok_save(&t, path, &err) == 0, "%s", err.msg);
    ck_assert_msg(tok_load(&u, path, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(u.n_sources, 2);
    for (int i = 0; i < 2; i++) {
        ck_assert_str_eq(u.sources[i].name, t.sources[i].name);
        ck_assert_uint_eq(u.sources[i].size, t.sources[i].size);
        ck_assert(u.sources[i].hash == t.sources[i].hash);
    }
    ck_assert(tok_hash(&u) == tok_hash(&t));
    /* the same merges without the record: the same tok_hash */
    const uint8_t *bufs[2] = {(const uint8_t *)doc,
                              (const uint8_t *)"a second document, with other words in it\n"};
    size_t lens[2] = {strlen((const char *)bufs[0]), strlen((const char *)bufs[1])};
    ck_assert_msg(tok_train_buffers(&plain, bufs, lens, 2, 270, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(plain.n_sources, 0);
    ck_assert(tok_hash(&plain) == tok_hash(&t));
    tok_free(&t);
    tok_free(&u);
    tok_free(&plain);
    unlink(a);
    unlink(b);
    unlink(path);
}
END_TEST

/* tok_sources_match: multisets of (size, hash); names and order do not matter; no record
 * is "unknown" (-1), never a mismatch. Breaks seen caught: comparing names (the renamed
 * copy below then differs), not sorting the texts (the swapped list), returning 0 for no
 * record (an old file would warn). */
START_TEST(test_trained_on_match) {
    Tokenizer t;
    memset(&t, 0, sizeof t);
    TokSource rec[2] = {{"a.txt", 10, 0x1111}, {"b.txt", 20, 0x2222}};
    ck_assert_int_eq(tok_sources_match(&t, rec, 2), -1);
    t.sources = rec;
    t.n_sources = 2;
    TokSource same[2] = {{"b-copy.txt", 20, 0x2222}, {"renamed.txt", 10, 0x1111}};
    ck_assert_int_eq(tok_sources_match(&t, same, 2), 1);
    TokSource edited[2] = {{"a.txt", 10, 0x1112}, {"b.txt", 20, 0x2222}};
    ck_assert_int_eq(tok_sources_match(&t, edited, 2), 0);
    TokSource grown[2] = {{"a.txt", 11, 0x1111}, {"b.txt", 20, 0x2222}};
    ck_assert_int_eq(tok_sources_match(&t, grown, 2), 0);
    ck_assert_int_eq(tok_sources_match(&t, rec, 1), 0);           /* a file less */
    TokSource twice[2] = {{"a.txt", 10, 0x1111}, {"a.txt", 10, 0x1111}};
    ck_assert_int_eq(tok_sources_match(&t, twice, 2), 0);         /* a multiset, not a set */
}
END_TEST

#define HDR3_SRC "moetrain-bpe 1\nvocab_size 260\nspecial 259 <|endoftext|>\ntrained_on 1\n" \
                 "text 7 00000000000000ff my corpus.txt\nmerges 3\n"

/* The block is optional and strict: a file with it loads (and the merge lines after it are
 * numbered right in errors); malformed text lines are refused naming their line. Breaks
 * seen caught: the old fixed "5 + rank" line of a duplicate merge (reports line 7, the
 * merge is on line 9); accepting an upper-case or short hash. */
START_TEST(test_trained_on_load) {
    char path[512];
    tmp_path(path, sizeof path, "src_good.bpe");
    write_text(path, HDR3_SRC "97 98\n32 256\n256 257\n");
    Tokenizer t;
    MoeErr err;
    ck_assert_msg(tok_load(&t, path, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(t.n_sources, 1);
    ck_assert_str_eq(t.sources[0].name, "my corpus.txt");
    ck_assert_uint_eq(t.sources[0].size, 7);
    ck_assert(t.sources[0].hash == 0xff);
    tok_free(&t);
    unlink(path);
    expect_load_error(HDR3_SRC "97 98\n32 256\n97 98\n", 9, "duplicate");
    const char *pre = "moetrain-bpe 1\nvocab_size 260\nspecial 259 <|endoftext|>\n";
    char text[512];
    const char *bad_lines[] = {
        "trained_on 0\n",                                  /* an empty record */
        "trained_on 2\ntext 7 00000000000000ff x\n",       /* a text line missing */
        "trained_on 1\ntext 7 00000000000000FF x\n",       /* upper-case hash */
        "trained_on 1\ntext 7 0000000000000ff x\n",        /* 15 digits */
        "trained_on 1\ntext 7 00000000000000ff\n",         /* no name */
        "trained_on 1\ntext -7 00000000000000ff x\n",      /* a sign */
        "trained_on 1\nfile 7 00000000000000ff x\n",       /* not "text" */
    };
    const int bad_at[] = {4, 6, 5, 5, 5, 5, 5};
    for (size_t i = 0; i < sizeof bad_lines / sizeof bad_lines[0]; i++) {
        snprintf(text, sizeof text, "%s%smerges 3\n97 98\n32 256\n256 257\n", pre, bad_lines[i]);
        expect_load_error(text, bad_at[i], i == 0 ? "trained_on" : i == 1 ? "text" : "text");
    }
}
END_TEST

/* ---------------------------------------------------------------- suite */

static Suite *tokenizer_suite(void) {
    Suite *s = suite_create("tokenizer");
    struct { const char *name; const TTest *fn; } cases[] = {
        {"train_hand_corpus", test_train_hand_corpus},
        {"train_ties_and_repeats", test_train_ties_and_repeats},
        {"train_matches_naive", test_train_matches_naive},
        {"train_vocab_too_large", test_train_vocab_too_large},
        {"train_files_errors", test_train_files_errors},
        {"special_not_parsed", test_special_not_parsed},
        {"roundtrip_random", test_roundtrip_random},
        {"encode_matches_naive_and_compresses", test_encode_matches_naive_and_compresses},
        {"save_load_roundtrip", test_save_load_roundtrip},
        {"load_rejects_corrupt", test_load_rejects_corrupt},
        {"load_missing_file", test_load_missing_file},
        {"trained_on_roundtrip", test_trained_on_roundtrip},
        {"trained_on_match", test_trained_on_match},
        {"trained_on_load", test_trained_on_load},
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
    SRunner *sr = srunner_create(tokenizer_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
