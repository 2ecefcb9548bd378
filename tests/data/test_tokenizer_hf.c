/* test_tokenizer_hf.c: Hugging Face tokenizer.json files as tokenizers (data/tokenizer_hf.c)
 * and the pre-tokenizer patterns they name (data/pretok_patterns.c).
 *
 * Expected pieces and ids are derived by hand in the comments next to each case (the
 * patterns read as a leftmost-first regex engine runs them; BPE as lowest rank first).
 * The fixture tests/data/fixtures/tiny_llama3.json is hand-made: the 256 byte tokens in
 * GPT-2's id order (printable bytes first: '!' = 0 ... '~' = 93, 0xA1.. = 94.., then the
 * others: byte 0 = 188, '\n' = 198, ' ' = 220, ...; so 'H' = 39, 'e' = 68, 'l' = 75,
 * 'o' = 78, 'w' = 86, 'r' = 81, 'd' = 67, 'x' = 87, '1'..'5' = 16..20, '\'' = 6,
 * 'I' = 40, 'T' = 51, 'S' = 50), then (in reverse of the merges that make them, so no
 * merge r makes id 256 + r as in moetrain's own layout)
 *   256 Ġworld (no merge makes it)  257 Ġx  258 ĊĊ  259 45  260 123  261 12  262 's
 *   263 Ġthe  264 he  265 Ġt  266 Hell  267 He  268 ell  269 ll
 *   270 <|begin_of_text|>  271 <|end_of_text|> (added, special)
 * merges in rank order: l+l, e+ll, H+e, He+ll, Ġ+t, h+e, Ġt+he, '+s, 1+2, 12+3, 4+5, Ċ+Ċ,
 * Ġ+x; the Llama 3 Split pattern; ignore_merges true.
 * The corpus is data/tinyshakespeare.txt under $MOE_SOURCE_DIR; missing files fail.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/blas.h"
#include "checkpoints/export_tokenizer.h"
#include "core/fs.h"
#include "core/rng.h"
#include "data/pretok_patterns.h"
#include "data/tokenizer.h"
#include "testutil.h"

/* ---------------------------------------------------------------- helpers */

static char *read_all(const char *rel, size_t *n) {
    uint8_t *buf;
    MoeErr err;
    const char *path = tt_source_path(rel);
    ck_assert_msg(fs_read_file(path, &buf, n, &err) == 0, "%s", err.msg);
    char *s = moe_malloc(*n + 1);
    memcpy(s, buf, *n);
    s[*n] = 0;
    moe_free(buf);
    return s;
}

static char *fixture(size_t *n) { return read_all("tests/data/fixtures/tiny_llama3.json", n); }

/* A copy of s with its one occurrence of from replaced by to (the test asserts there is
 * exactly one, so a fixture edit cannot silently miss). */
static char *replaced(const char *s, const char *from, const char *to) {
    const char *at = strstr(s, from);
    ck_assert_msg(at && !strstr(at + 1, from), "'%s' is not in the fixture exactly once", from);
    size_t n = strlen(s), fl = strlen(from), tl = strlen(to);
    char *r = moe_malloc(n - fl + tl + 1);
    memcpy(r, s, (size_t)(at - s));
    memcpy(r + (at - s), to, tl);
    memcpy(r + (at - s) + tl, at + fl, n - (size_t)(at - s) - fl + 1);
    return r;
}

static void load_text(Tokenizer *t, const char *json, const char *label) {
    MoeErr err;
    ck_assert_msg(tok_load_buffer(t, (const uint8_t *)json, strlen(json), label, &err) == 0,
                  "%s (hint: %s)", err.msg, err.hint);
}

static void load_fixture(Tokenizer *t) {
    size_t n;
    char *s = fixture(&n);
    load_text(t, s, "tiny_llama3.json");
    moe_free(s);
}

/* encode(text) must be exactly want[0..nw). */
static void expect_ids(const Tokenizer *t, const char *text, const int32_t *want, size_t nw) {
    size_t n = strlen(text), m;
    int32_t *ids = tok_encode_alloc(t, (const uint8_t *)text, n, &m);
    bool same = m == nw;
    for (size_t i = 0; same && i < m; i++) same = ids[i] == want[i];
    if (!same) {
        char got[512];
        size_t k = 0;
        for (size_t i = 0; i < m && k + 12 < sizeof got; i++)
            k += (size_t)snprintf(got + k, sizeof got - k, "%d ", ids[i]);
        ck_abort_msg("encode(\"%s\") gave %zu ids [%s], want %zu", text, m, got, nw);
    }
    moe_free(ids);
}

static void assert_roundtrip(const Tokenizer *t, const uint8_t *x, size_t n) {
    size_t m, k;
    int32_t *ids = tok_encode_alloc(t, x, n, &m);
    ck_assert_uint_le(m, n);
    for (size_t i = 0; i < m; i++) ck_assert(ids[i] >= 0 && ids[i] < tok_vocab_size(t));
    uint8_t *back = moe_malloc(n + 1);
    ck_assert_int_eq(tok_decode(t, ids, m, back, n, &k), 0);
    ck_assert_uint_eq(k, n);
    ck_assert_msg(n == 0 || memcmp(back, x, n) == 0, "decode(encode(x)) != x (%zu bytes)", n);
    moe_free(back);
    moe_free(ids);
}

/* Random text: mostly valid UTF-8 of every length class (ASCII letters, digits, spaces and
 * newlines, 2-, 3- and 4-byte codepoints), sometimes a stray invalid byte. U+001C..U+001F
 * are left out when no_sep (the one place where the two \s flavours differ). */
static size_t random_text(uint8_t *out, size_t cap, uint64_t seed, bool no_sep) {
    MoeRng r;
    rng_seed(&r, seed);
    size_t n = 0;
    static const char ascii[] = "abcXYZ019 '\n\r\t.,!?-_$";
    while (n + 4 < cap) {
        uint32_t k = (uint32_t)rng_next(&r) % 10;
        if (k < 5) {
            out[n++] = (uint8_t)ascii[(uint32_t)rng_next(&r) % (sizeof ascii - 1)];
        } else if (k == 5) {
            uint8_t b = (uint8_t)((uint32_t)rng_next(&r) % 32);
            if (no_sep && b >= 0x1C) b = ' ';
            out[n++] = b;
        } else if (k == 6) {
            uint32_t cp = 0x80 + (uint32_t)rng_next(&r) % (0x800 - 0x80);
            out[n++] = (uint8_t)(0xC0 | (cp >> 6));
            out[n++] = (uint8_t)(0x80 | (cp & 0x3F));
        } else if (k == 7) {
            uint32_t cp = 0x800 + (uint32_t)rng_next(&r) % (0x10000 - 0x800);
            if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0x3042;  /* no surrogates */
            out[n++] = (uint8_t)(0xE0 | (cp >> 12));
            out[n++] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
            out[n++] = (uint8_t)(0x80 | (cp & 0x3F));
        } else if (k == 8) {
            uint32_t cp = 0x10000 + (uint32_t)rng_next(&r) % 0x100000;
            out[n++] = (uint8_t)(0xF0 | (cp >> 18));
            out[n++] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
            out[n++] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
            out[n++] = (uint8_t)(0x80 | (cp & 0x3F));
        } else {
            out[n++] = (uint8_t)(0x80 + (uint32_t)rng_next(&r) % 0x80);  /* invalid alone */
        }
    }
    return n;
}

/* ---------------------------------------------------------------- patterns */

typedef struct { const char *pieces[24]; size_t n; } Pieces;

static void collect(const uint8_t *p, size_t len, void *ctx) {
    char **out = ctx;
    size_t k = 0;
    while (out[k]) k++;
    ck_assert_uint_lt(k, 63);
    out[k] = moe_malloc(len + 1);
    memcpy(out[k], p, len);
    out[k][len] = 0;
}

/* tok_pattern_split(p, text) must give exactly want (NULL-terminated). */
static void expect_pieces(TokPattern p, const char *text, const char *const *want) {
    char *got[64] = {0};
    tok_pattern_split(p, (const uint8_t *)text, strlen(text), collect, got);
    size_t k = 0;
    for (; want[k]; k++) {
        ck_assert_msg(got[k] != NULL, "%s on \"%s\": only %zu pieces, want \"%s\" next",
                      tok_pattern_name(p), text, k, want[k]);
        ck_assert_msg(!strcmp(got[k], want[k]), "%s on \"%s\": piece %zu is \"%s\", want \"%s\"",
                      tok_pattern_name(p), text, k, got[k], want[k]);
    }
    ck_assert_msg(got[k] == NULL, "%s on \"%s\": extra piece \"%s\"", tok_pattern_name(p),
                  text, got[k]);
    for (k = 0; got[k]; k++) moe_free(got[k]);
}

START_TEST(test_pattern_pieces) {
    const char *t1 = "Hello the world's 12345\n\n  x";
    /* Llama 3: letters take one leading non-letter; digits in threes; the newline run
     * "\n\n  " ends after its last newline; of the following "  x" the run gives back its
     * last space to " x" (\s+(?!\S)). */
    expect_pieces(TOK_PAT_LLAMA3, t1, (const char *const[]){"Hello", " the", " world", "'s",
                  " ", "123", "45", "\n\n", " ", " x", NULL});
    /* Qwen2: the same with one digit per piece */
    expect_pieces(TOK_PAT_QWEN2, t1, (const char *const[]){"Hello", " the", " world", "'s",
                  " ", "1", "2", "3", "4", "5", "\n\n", " ", " x", NULL});
    /* GPT-2: " ?\p{N}+" keeps the space and all digits; "\n\n  " before "x" gives its last
     * space away: "\n\n " and " x" */
    expect_pieces(TOK_PAT_GPT2_WS, t1, (const char *const[]){"Hello", " the", " world", "'s",
                  " 12345", "\n\n ", " x", NULL});
    /* contractions fold case in Llama 3 (and U+017F long s folds to s), and come before
     * "'" + letters; GPT-2's do not fold: "'" alone, then the letters */
    const char *t2 = "IT'SA THEY'REB we'LLC x'\xC5\xBFt";
    expect_pieces(TOK_PAT_LLAMA3, t2, (const char *const[]){"IT", "'S", "A", " THEY", "'RE",
                  "B", " we", "'LL", "C", " x", "'\xC5\xBF", "t", NULL});
    expect_pieces(TOK_PAT_GPT2_WS, t2, (const char *const[]){"IT", "'", "SA", " THEY", "'",
                  "REB", " we", "'", "LLC", " x", "'", "\xC5\xBFt", NULL});
    /* "\tb": a tab is a [^\r\n\p{L}\p{N}] prefix; "  c": run of two gives one back;
     * "\r\n\r\n": newline run; " !!\n\n": space, punctuation and trailing newlines */
    expect_pieces(TOK_PAT_LLAMA3, "a\tb  c\r\n\r\nd !!\n\n e", (const char *const[]){"a",
                  "\tb", " ", " c", "\r\n\r\n", "d", " !!\n\n", " e", NULL});
    /* "  \n " before "y": \s*[\r\n]+ stops after the newline; trailing "   " at the end is
     * one piece (nothing follows) */
    expect_pieces(TOK_PAT_LLAMA3, "x  \n y   ", (const char *const[]){"x", "  \n", " y",
                  "   ", NULL});
    /* Arabic-Indic digits are \p{N} (two bytes each): three then one; "$hello" is one
     * piece in Llama 3 (symbol prefix) but two in GPT-2; the euro sign is not a prefix of
     * digits */
    expect_pieces(TOK_PAT_LLAMA3, "\xD9\xA3\xD9\xA4\xD9\xA5\xD9\xA6",
                  (const char *const[]){"\xD9\xA3\xD9\xA4\xD9\xA5", "\xD9\xA6", NULL});
    expect_pieces(TOK_PAT_LLAMA3, "$hello \xE2\x82\xAC" "100", (const char *const[]){"$hello",
                  " \xE2\x82\xAC", "100", NULL});
    expect_pieces(TOK_PAT_GPT2_WS, "$hello", (const char *const[]){"$", "hello", NULL});
    /* U+001C..U+001F: space for str.isspace (moetrain's .bpe: a run of three before "y"
     * gives its last one away), not White_Space (one run of "other") */
    expect_pieces(TOK_PAT_GPT2, "x\x1c\x1c\x1cy", (const char *const[]){"x", "\x1c\x1c",
                  "\x1c", "y", NULL});
    expect_pieces(TOK_PAT_GPT2_WS, "x\x1c\x1c\x1cy", (const char *const[]){"x",
                  "\x1c\x1c\x1c", "y", NULL});
}
END_TEST

START_TEST(test_pattern_regex_names) {
    ck_assert_int_eq(tok_pattern_from_regex(tok_pattern_regex(TOK_PAT_LLAMA3)), TOK_PAT_LLAMA3);
    ck_assert_int_eq(tok_pattern_from_regex(tok_pattern_regex(TOK_PAT_QWEN2)), TOK_PAT_QWEN2);
    ck_assert_int_eq(tok_pattern_from_regex(tok_pattern_regex(TOK_PAT_GPT2_WS)),
                     TOK_PAT_GPT2_WS);
    /* tiktoken's cl100k_base spelling, typed here from its definition */
    ck_assert_int_eq(tok_pattern_from_regex("'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+"
                                            "\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*"
                                            "|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"),
                     TOK_PAT_LLAMA3);
    ck_assert_int_eq(tok_pattern_from_regex("\\s+"), -1);
    ck_assert_int_eq(tok_pattern_from_regex(""), -1);
}
END_TEST

/* ---------------------------------------------------------------- the hand-made fixture */

START_TEST(test_fixture_ids) {
    Tokenizer t;
    load_fixture(&t);
    ck_assert_int_eq(t.kind, TOK_KIND_HF);
    ck_assert_int_eq(tok_vocab_size(&t), 272);
    ck_assert_int_eq(tok_n_merges(&t), 13);
    ck_assert_int_eq(tok_eot(&t), 271);           /* <|end_of_text|> by name */
    ck_assert_int_eq(t.pattern, TOK_PAT_LLAMA3);
    ck_assert_int_eq(t.byte_id[' '], 220);
    ck_assert_int_eq(t.byte_id['\n'], 198);
    ck_assert_int_eq(t.byte_id[0], 188);
    ck_assert_int_eq(tok_added(&t, 270), TOK_ADDED_SPECIAL);
    ck_assert_int_eq(tok_added(&t, 269), TOK_ORDINARY);
    /* pieces (test_pattern_pieces): "Hello" " the" " world" "'s" " " "123" "45" "\n\n" " "
     * " x". ignore_merges: a piece that is a vocabulary token is that token: " the" 263,
     * " world" 256 (no merge reaches it), "'s" 262, " " 220, "123" 260, "45" 259,
     * "\n\n" 258, " x" 257. "Hello" is not one: BPE on H e l l o: l+l (rank 0) -> H e ll o;
     * then e+ll (rank 1) beats H+e (rank 2) -> H ell o; no merge joins H+ell or ell+o:
     * 39 268 78. */
    const int32_t want1[] = {39, 268, 78, 263, 256, 262, 220, 260, 259, 258, 220, 257};
    expect_ids(&t, "Hello the world's 12345\n\n  x", want1, 12);
    /* "Hell" is a vocabulary token (266): ignore_merges takes it whole */
    const int32_t want2[] = {266};
    expect_ids(&t, "Hell", want2, 1);
    /* "IT'S": pieces "IT" "'S"; the merge '+s is lowercase, so bytes: I T ' S */
    const int32_t want3[] = {40, 51, 6, 50};
    expect_ids(&t, "IT'S", want3, 4);
    /* decoding: token bytes, added tokens as their text */
    uint8_t out[64];
    size_t n;
    const int32_t dec[] = {270, 263, 271};
    ck_assert_int_eq(tok_decode(&t, dec, 3, out, sizeof out, &n), 0);
    ck_assert_uint_eq(n, strlen("<|begin_of_text|> the<|end_of_text|>"));
    ck_assert(memcmp(out, "<|begin_of_text|> the<|end_of_text|>", n) == 0);
    char s[64];
    tok_token_gpt2_str(&t, 263, s, sizeof s);
    ck_assert_str_eq(s, "\xC4\xA0the");  /* Ġthe */
    tok_token_gpt2_str(&t, 271, s, sizeof s);
    ck_assert_str_eq(s, "<|end_of_text|>");
    ck_assert_int_eq(tok_token_id(&t, (const uint8_t *)" world", 6), 256);
    ck_assert_int_eq(tok_token_id(&t, (const uint8_t *)"<|end_of_text|>", 15), -1);
    char line[256];
    tok_describe(&t, line, sizeof line);
    ck_assert_msg(strstr(line, "272 tokens") && strstr(line, "Llama 3") &&
                  strstr(line, "<|end_of_text|> = 271"), "describe: %s", line);
    tok_free(&t);
}
END_TEST

START_TEST(test_fixture_variants) {
    size_t n;
    char *base = fixture(&n);
    Tokenizer t;
    /* ignore_merges false: "Hell" is BPE'd: H e l l -> H e ll -> H ell (e+ll, rank 1,
     * before H+e, rank 2): 39 268; " world" is bytes: Ġ w o r l d */
    char *s = replaced(base, "\"ignore_merges\": true", "\"ignore_merges\": false");
    load_text(&t, s, "no_ignore.json");
    const int32_t want1[] = {39, 268};
    expect_ids(&t, "Hell", want1, 2);
    const int32_t want2[] = {220, 86, 78, 81, 75, 67};
    expect_ids(&t, " world", want2, 6);
    /* " the" still ends as 263 by merges: Ġ+t (4) -> Ġt h e; h+e (5) -> Ġt he; Ġt+he (6) */
    const int32_t want3[] = {263};
    expect_ids(&t, " the", want3, 1);
    tok_free(&t);
    moe_free(s);
    /* the Qwen2 pattern: single digits, each a byte token 16..20 */
    s = replaced(base, "\\\\p{N}{1,3}", "\\\\p{N}");
    load_text(&t, s, "qwen2.json");
    ck_assert_int_eq(t.pattern, TOK_PAT_QWEN2);
    const int32_t want4[] = {16, 17, 18, 19, 20};
    expect_ids(&t, "12345", want4, 5);
    tok_free(&t);
    moe_free(s);
    /* the GPT-2 ByteLevel form: " 12345" is one piece: Ġ 1 2 3 4 5 -> 1+2 (8) -> Ġ 12 3 4 5
     * -> 12+3 (9) -> Ġ 123 4 5 -> 4+5 (10): 220 260 259 */
    char *seq = strstr(base, "\"pre_tokenizer\"");
    char *end = strstr(seq, "\"post_processor\"");
    size_t head = (size_t)(seq - base);
    const char *bl = "\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
                     "\"trim_offsets\": true, \"use_regex\": true},\n  ";
    s = moe_malloc(n + strlen(bl) + 1);
    memcpy(s, base, head);
    strcpy(s + head, bl);
    strcat(s, end);
    load_text(&t, s, "gpt2_form.json");
    ck_assert_int_eq(t.pattern, TOK_PAT_GPT2_WS);
    const int32_t want5[] = {220, 260, 259};
    expect_ids(&t, " 12345", want5, 3);
    tok_free(&t);
    moe_free(s);
    moe_free(base);
}
END_TEST

START_TEST(test_hash_and_save) {
    size_t n;
    char *base = fixture(&n);
    Tokenizer a, b;
    load_text(&a, base, "a.json");
    load_text(&b, base, "b.json");
    ck_assert(tok_hash(&a) == tok_hash(&b));
    tok_free(&b);
    /* another merge order, another pattern, another vocabulary: other hashes */
    const char *edits[][2] = {
        {"[\"1\", \"2\"],\n      [\"12\", \"3\"]", "[\"12\", \"3\"],\n      [\"1\", \"2\"]"},
        {"\\\\p{N}{1,3}", "\\\\p{N}"},
        {"\"ignore_merges\": true", "\"ignore_merges\": false"},
        {"\"<|begin_of_text|>\"", "\"<|start|>\""},
    };
    for (size_t k = 0; k < sizeof edits / sizeof edits[0]; k++) {
        char *s = replaced(base, edits[k][0], edits[k][1]);
        load_text(&b, s, "edited.json");
        ck_assert_msg(tok_hash(&a) != tok_hash(&b), "edit %zu kept the hash", k);
        tok_free(&b);
        moe_free(s);
    }
    /* tok_save and the HF export write the file back byte for byte */
    char path[512];
    const char *dir = getenv("MOE_BUILD_DIR");
    snprintf(path, sizeof path, "%s/test_tokenizer_hf_%ld.json", dir && *dir ? dir : "/tmp",
             (long)getpid());
    MoeErr err;
    for (int k = 0; k < 2; k++) {
        int rc = k ? export_tok_write_hf(path, &a, &err) : tok_save(&a, path, &err);
        ck_assert_msg(rc == 0, "%s", err.msg);
        uint8_t *got;
        size_t gn;
        ck_assert(fs_read_file(path, &got, &gn, &err) == 0);
        ck_assert_uint_eq(gn, n);
        ck_assert(memcmp(got, base, n) == 0);
        moe_free(got);
        /* and tok_load reads it from disk by its content */
        ck_assert_msg(tok_load(&b, path, &err) == 0, "%s", err.msg);
        ck_assert(tok_hash(&b) == tok_hash(&a));
        tok_free(&b);
    }
    unlink(path);
    ck_assert_int_eq(export_tok_duplicates(&a), 0);
    tok_free(&a);
    moe_free(base);
}
END_TEST

/* The GGUF form (token strings, llama.cpp token types, merges, pre-tokenizer name) read
 * back gives the same tokenizer, hash included; an unknown pre-tokenizer name is refused. */
START_TEST(test_gguf_strings_read_back) {
    Tokenizer t, back;
    load_fixture(&t);
    const int V = tok_vocab_size(&t), M = tok_n_merges(&t);
    char **vocab = export_tok_vocab(&t), **mer = export_tok_merges(&t, vocab);
    size_t *vl = moe_malloc(sizeof(size_t) * (size_t)V), *ml = moe_malloc(sizeof(size_t) * (size_t)M);
    int32_t *types = moe_malloc(sizeof(int32_t) * (size_t)V);
    for (int i = 0; i < V; i++) {
        vl[i] = strlen(vocab[i]);
        types[i] = tok_added(&t, i) == TOK_ADDED_SPECIAL ? 3 : 1;
    }
    for (int r = 0; r < M; r++) ml[r] = strlen(mer[r]);
    MoeErr err;
    ck_assert_msg(export_tok_from_gguf(&back, (const char *const *)vocab, vl, types, V,
                                       (const char *const *)mer, ml, M, "llama-bpe", 9, "m.gguf",
                                       &err) == 0, "%s", err.msg);
    ck_assert(tok_hash(&back) == tok_hash(&t));
    ck_assert_int_eq(tok_eot(&back), 271);
    tok_free(&back);
    ck_assert(export_tok_from_gguf(&back, (const char *const *)vocab, vl, types, V,
                                   (const char *const *)mer, ml, M, "deepseek-v3", 11, "m.gguf",
                                   &err) != 0);
    ck_assert_msg(strstr(err.msg, "m.gguf") && strstr(err.msg, "deepseek-v3"), "%s", err.msg);
    export_tok_strings_free(mer, M);
    export_tok_strings_free(vocab, V);
    moe_free(vl);
    moe_free(ml);
    moe_free(types);
    tok_free(&t);
}
END_TEST

/* ---------------------------------------------------------------- refusals */

/* Loading the fixture with from -> to must fail, naming the file, with want in the message. */
static void expect_refused(const char *base, const char *from, const char *to, const char *want) {
    char *s = replaced(base, from, to);
    Tokenizer t, zero;
    memset(&zero, 0, sizeof zero);
    MoeErr err;
    memset(&err, 0, sizeof err);
    ck_assert_msg(tok_load_buffer(&t, (const uint8_t *)s, strlen(s), "my/tok.json", &err) != 0,
                  "'%s' -> '%s' was accepted", from, to);
    ck_assert_msg(strstr(err.msg, "my/tok.json") != NULL, "message does not name the file: %s",
                  err.msg);
    ck_assert_msg(strstr(err.msg, want) != NULL, "message lacks '%s': %s", want, err.msg);
    ck_assert_msg(err.hint[0] != 0, "no hint for: %s", err.msg);
    ck_assert_msg(memcmp(&t, &zero, sizeof t) == 0, "a refused load left the Tokenizer set");
    moe_free(s);
}

START_TEST(test_refusals) {
    size_t n;
    char *b = fixture(&n);
    /* a pattern moetrain has no scanner for, shown in the message */
    expect_refused(b, "\\\\p{N}{1,3}", "\\\\p{N}{1,4}", "\\p{N}{1,4}");
    expect_refused(b, "\"type\": \"BPE\"", "\"type\": \"WordPiece\"", "model.type is \"WordPiece\"");
    expect_refused(b, "\"merges\": [", "\"merges_\": [", "model.merges is missing");
    expect_refused(b, "\"normalizer\": null", "\"normalizer\": {\"type\": \"NFC\"}",
                   "normalizer NFC");
    expect_refused(b, "\"normalizer\": null",
                   "\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": "
                   "\"Lowercase\"}]}", "normalizer Sequence");
    expect_refused(b, "\"trim_offsets\": true, \"use_regex\": false",
                   "\"trim_offsets\": true, \"use_regex\": true", "use_regex true");
    expect_refused(b, "\"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": false",
                   "\"add_prefix_space\": true, \"trim_offsets\": true, \"use_regex\": false",
                   "add_prefix_space");
    expect_refused(b, "\"behavior\": \"Isolated\"", "\"behavior\": \"Removed\"", "Removed");
    expect_refused(b, "\"dropout\": null", "\"dropout\": 0.1", "model.dropout");
    expect_refused(b, "\"continuing_subword_prefix\": null", "\"continuing_subword_prefix\": \"##\"",
                   "continuing_subword_prefix");
    expect_refused(b, "\"decoder\": {\"type\": \"ByteLevel\"", "\"decoder\": {\"type\": \"Metaspace\"",
                   "decoder Metaspace");
    expect_refused(b, "\"<|end_of_text|>\"", "\"<|eot|>\"", "no end-of-text token");
    expect_refused(b, "[\"\xC4\xA0\", \"x\"]", "[\"x\", \"\xC4\xA0\"]",
                   "makes a token that is not in model.vocab");
    expect_refused(b, "[\"4\", \"5\"]", "[\"4\", \"Q5\"]", "\"Q5\" is not in model.vocab");
    expect_refused(b, "\"!\": 0,", "", "ids go up to 271 but there are 271 tokens");
    /* ids beyond the number of tokens: a gap, refused before V slots are allocated */
    expect_refused(b, "\"\\u0120world\": 256", "\"\\u0120world\": 300",
                   "ids go up to 300 but there are 272 tokens");
    /* an added token on a vocabulary id with the same text (allowed, as GPT-2's
     * <|endoftext|>) leaves id 270 empty: the gap is named */
    expect_refused(b, "{\"id\": 270, \"content\": \"<|begin_of_text|>\"",
                   "{\"id\": 269, \"content\": \"ll\"", "no token has id 270");
    /* a huge id is refused before V slots are allocated */
    expect_refused(b, "\"\\u0120world\": 256", "\"\\u0120world\": 1073741823",
                   "ids go up to 1073741823 but there are 272 tokens");
    expect_refused(b, "\"\\u0120world\": 256", "\"\\u2581world\": 256", "byte alphabet");
    expect_refused(b, "\"\\u0120world\": 256", "\"\\u0120world\": -1", "no id");
    expect_refused(b, "{\"type\": \"Split\"", "{\"type\": \"Digits\"", "Digits");
    expect_refused(b, "\"model\": {", "\"model_\": {", "no \"model\" object");
    expect_refused(b, "\n}\n", "\n", "");  /* truncated: invalid JSON, named by file */
    moe_free(b);
}
END_TEST

/* ---------------------------------------------------------------- our export, read back */

/* A tokenizer.json written by our HF export and read by the tokenizer.json reader gives the
 * ids of the .bpe it came from (two implementations, one vocabulary): on all of
 * tinyshakespeare and on random text without U+001C..U+001F (the only codepoints where the
 * .bpe's str.isspace and the file's White_Space differ; test_pattern_pieces shows it). */
START_TEST(test_export_reads_back) {
    size_t cn;
    char *corpus = read_all("data/tinyshakespeare.txt", &cn);
    ck_assert_uint_ge(cn, 1000000);
    Tokenizer bpe, hf;
    MoeErr err;
    const uint8_t *bufs[1] = {(const uint8_t *)corpus};
    size_t lens[1] = {100000};
    ck_assert_msg(tok_train_buffers(&bpe, bufs, lens, 1, 1500, &err) == 0, "%s", err.msg);
    char path[512];
    const char *dir = getenv("MOE_BUILD_DIR");
    snprintf(path, sizeof path, "%s/test_tokenizer_hf_export_%ld.json",
             dir && *dir ? dir : "/tmp", (long)getpid());
    ck_assert_msg(export_tok_write_hf(path, &bpe, &err) == 0, "%s", err.msg);
    ck_assert_msg(tok_load(&hf, path, &err) == 0, "%s (hint: %s)", err.msg, err.hint);
    unlink(path);
    ck_assert_int_eq(hf.kind, TOK_KIND_HF);
    ck_assert_int_eq(hf.pattern, TOK_PAT_GPT2_WS);
    ck_assert_int_eq(tok_vocab_size(&hf), 1500);
    ck_assert_int_eq(tok_n_merges(&hf), 1500 - 257);
    ck_assert_int_eq(tok_eot(&hf), 1499);
    ck_assert(tok_hash(&hf) != tok_hash(&bpe));  /* another kind: cached shards re-encode */
    for (int id = 0; id < 1500; id++) {
        size_t la, lb;
        const uint8_t *a = tok_token_bytes(&bpe, id, &la), *b = tok_token_bytes(&hf, id, &lb);
        ck_assert_msg(la == lb && !memcmp(a, b, la), "token %d differs", id);
    }
    size_t na, nb;
    int32_t *ia = tok_encode_alloc(&bpe, (const uint8_t *)corpus, cn, &na);
    int32_t *ib = tok_encode_alloc(&hf, (const uint8_t *)corpus, cn, &nb);
    ck_assert_uint_eq(na, nb);
    ck_assert(memcmp(ia, ib, na * sizeof(int32_t)) == 0);
    ck_assert_uint_lt(na, cn / 2);  /* the merges do work: under 2 bytes per token */
    moe_free(ia);
    moe_free(ib);
    uint8_t *text = moe_malloc(4096);
    for (uint64_t seed = 1; seed <= 20; seed++) {
        size_t n = random_text(text, 4096, seed, true);
        ia = tok_encode_alloc(&bpe, text, n, &na);
        ib = tok_encode_alloc(&hf, text, n, &nb);
        ck_assert_msg(na == nb && !memcmp(ia, ib, na * sizeof(int32_t)), "seed %llu differs",
                      (unsigned long long)seed);
        moe_free(ia);
        moe_free(ib);
    }
    moe_free(text);
    tok_free(&bpe);
    tok_free(&hf);
    moe_free(corpus);
}
END_TEST

START_TEST(test_roundtrip) {
    Tokenizer t;
    load_fixture(&t);
    size_t cn;
    char *corpus = read_all("data/tinyshakespeare.txt", &cn);
    assert_roundtrip(&t, (const uint8_t *)corpus, cn);
    moe_free(corpus);
    uint8_t *text = moe_malloc(8192);
    for (uint64_t seed = 1; seed <= 50; seed++) {
        size_t n = random_text(text, 1 + (seed * 977) % 8192, seed, false);
        assert_roundtrip(&t, text, n);
    }
    MoeRng r;
    rng_seed(&r, 7);
    for (size_t i = 0; i < 8192; i++) text[i] = (uint8_t)(uint32_t)rng_next(&r);  /* any bytes */
    assert_roundtrip(&t, text, 8192);
    moe_free(text);
    tok_free(&t);
}
END_TEST

/* ---------------------------------------------------------------- suite */

static Suite *tokenizer_hf_suite(void) {
    Suite *s = suite_create("tokenizer_hf");
    struct { const char *name; const TTest *fn; } cases[] = {
        {"pattern_pieces", test_pattern_pieces},
        {"pattern_regex_names", test_pattern_regex_names},
        {"fixture_ids", test_fixture_ids},
        {"fixture_variants", test_fixture_variants},
        {"hash_and_save", test_hash_and_save},
        {"gguf_strings_read_back", test_gguf_strings_read_back},
        {"refusals", test_refusals},
        {"export_reads_back", test_export_reads_back},
        {"roundtrip", test_roundtrip},
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
    SRunner *sr = srunner_create(tokenizer_hf_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
