/* test_encode.c: text files to shards in blocks (data/records.c, data/encode.c) and the
 * streamed tokenizer trainer (data/bpe_corpus.c).
 *
 * - Pieces cut at safe cuts encode to exactly the ids of the whole file (tok_encode), with
 *   blocks far smaller than the file and a stretch longer than a block with no safe cut.
 * - paragraph and jsonl records: ids = each record's encoding then <|endoftext|>, against a
 *   splitter written here; malformed jsonl lines are named by file:line.
 * - The shard's bytes and the trained tokenizer do not depend on the thread count, and the
 *   streamed trainer equals tok_train_buffers on the whole text.
 * - --max-bytes samples every file, not a prefix of the corpus.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/blas.h"
#include "core/fs.h"
#include "core/pool.h"
#include "data/bpe_corpus.h"
#include "data/encode.h"

static char g_dir[512];
static uint8_t *g_text;   /* the first 300 kB of tinyshakespeare */
static size_t g_len;

static void tmp_path(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", g_dir, name);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void train_tok(Tokenizer *t) {
    const uint8_t *bufs[1] = {g_text};
    size_t lens[1] = {g_len < 100000 ? g_len : 100000};
    MoeErr err;
    ck_assert_msg(tok_train_buffers(t, bufs, lens, 1, 600, &err) == 0, "%s", err.msg);
}

/* Encode path (format fmt, chunk bytes) and return the shard's ids (n). */
static int32_t *encode_ids(const Tokenizer *t, const char *path, RecFormat fmt, size_t chunk,
                           size_t *n) {
    char out[700];
    tmp_path(out, sizeof out, "out.tok");
    MoeErr err;
    ck_assert_msg(encode_files(t, &path, 1, fmt, chunk, out, NULL, NULL, &err) == 0, "%s",
                  err.msg);
    Shard s;
    ck_assert_msg(shard_open(&s, out, &err) == 0, "%s", err.msg);
    int32_t *ids = malloc((s.n_tokens + 1) * sizeof(int32_t));
    ck_assert_uint_eq(shard_read(&s, 0, s.n_tokens, ids), s.n_tokens);
    *n = s.n_tokens;
    shard_close(&s);
    unlink(out);
    return ids;
}

/* The expected ids of documents docs[0..nd): each one's tok_encode, then EOT. */
static int32_t *expect_docs(const Tokenizer *t, const char *const *docs, const size_t *lens,
                            int nd, size_t *n) {
    size_t cap = 1;
    for (int d = 0; d < nd; d++) cap += lens[d] + 1;
    int32_t *ids = malloc(cap * sizeof(int32_t));
    *n = 0;
    for (int d = 0; d < nd; d++) {
        size_t got;
        ck_assert_int_eq(tok_encode(t, (const uint8_t *)docs[d], lens[d], ids + *n, cap - *n,
                                    &got), 0);
        *n += got;
        ids[(*n)++] = tok_eot(t);
    }
    return ids;
}

START_TEST(test_chunks_equal_whole) {
    Tokenizer t;
    train_tok(&t);
    char path[700];
    tmp_path(path, sizeof path, "shake.txt");
    write_bytes(path, g_text, g_len);
    const char *docs[1] = {(const char *)g_text};
    size_t n_want, n_got;
    int32_t *want = expect_docs(&t, docs, &g_len, 1, &n_want);
    /* 4 kB pieces, 64 kB blocks: ~75 pieces over 5 blocks, cut at safe cuts only */
    RecReader r;
    MoeErr err;
    ck_assert_int_eq(rec_open(&r, path, REC_FILE, 4096, &err), 0);
    size_t pieces = 0, ends = 0, bytes = 0;
    while (rec_next(&r, &err) == 1) {
        for (size_t i = 0; i < r.n_items; i++) {
            bytes += r.items[i].len;
            ends += r.items[i].doc_end;
        }
        pieces += r.n_items;
    }
    rec_close(&r);
    ck_assert_uint_gt(pieces, 50);
    ck_assert_uint_eq(ends, 1);
    ck_assert_uint_eq(bytes, g_len);
    int32_t *got = encode_ids(&t, path, REC_FILE, 4096, &n_got);
    ck_assert_uint_eq(n_got, n_want);
    ck_assert(memcmp(got, want, n_want * sizeof(int32_t)) == 0);
    free(got);
    /* the default pieces (256 KiB, 4 MiB blocks) give the same */
    got = encode_ids(&t, path, REC_AUTO, 0, &n_got);
    ck_assert_uint_eq(n_got, n_want);
    ck_assert(memcmp(got, want, n_want * sizeof(int32_t)) == 0);
    free(got);
    free(want);

    /* 40 kB with no safe cut (no newline) and 1 kB pieces / 16 kB blocks: the reader
     * grows its block until the document fits, the ids are still the whole file's */
    size_t n = 40000;
    char *flat = malloc(n);
    for (size_t i = 0; i < n; i++) flat[i] = "ab cd,ef  "[i % 10];
    write_bytes(path, flat, n);
    const char *fd[1] = {flat};
    want = expect_docs(&t, fd, &n, 1, &n_want);
    got = encode_ids(&t, path, REC_FILE, 1024, &n_got);
    ck_assert_uint_eq(n_got, n_want);
    ck_assert(memcmp(got, want, n_want * sizeof(int32_t)) == 0);
    free(got);
    free(want);
    free(flat);
    unlink(path);
    tok_free(&t);
}
END_TEST

START_TEST(test_paragraphs) {
    Tokenizer t;
    train_tok(&t);
    char path[700];
    tmp_path(path, sizeof path, "para.txt");
    /* 300 paragraphs of 1..6 lines, separated by 1..3 blank lines (some of spaces, tabs,
     * a carriage return), leading and trailing blank lines; 64-byte pieces, 1 kB blocks */
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    char *docs[300];
    size_t lens[300];
    uint64_t x = 12345;
    static const char *const words[] = {"the", "cat", "ROMEO:", "  sat", "on\tthe", "mat,",
                                        "dog!", "caf\xc3\xa9", "1234", "log."};
    n += (size_t)sprintf(buf + n, "\n \n");
    for (int p = 0; p < 300; p++) {
        size_t start = n;
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        int lines = 1 + (int)((x >> 33) % 6);
        for (int l = 0; l < lines; l++) {
            if (l) buf[n++] = '\n';
            int nw = 1 + (int)((x >> (l * 3 + 10)) % 7);
            for (int w = 0; w < nw; w++)   /* every line holds a word: none is blank */
                n += (size_t)sprintf(buf + n, "%s%s", w ? " " : "",
                                     words[(x >> (w * 4 + l)) % 10]);
        }
        docs[p] = buf + start;
        lens[p] = n - start;
        static const char *const seps[] = {"\n\n", "\n \t\n", "\n\r\n\n", "\n\n\n"};
        n += (size_t)sprintf(buf + n, "%s", seps[p % 4]);
    }
    write_bytes(path, buf, n);
    /* the expected documents are the slices (copied: docs point into buf) */
    size_t n_want, n_got;
    int32_t *want = expect_docs(&t, (const char *const *)docs, lens, 300, &n_want);
    int32_t *got = encode_ids(&t, path, REC_PARAGRAPH, 64, &n_got);
    ck_assert_uint_eq(n_got, n_want);
    ck_assert(memcmp(got, want, n_want * sizeof(int32_t)) == 0);
    free(got);
    free(want);
    /* a file of blank lines holds no paragraph */
    write_bytes(path, "\n \n\t\n", 5);
    char out[700];
    tmp_path(out, sizeof out, "never.tok");
    MoeErr err;
    const char *p1 = path;
    ck_assert_int_eq(encode_files(&t, &p1, 1, REC_PARAGRAPH, 0, out, NULL, NULL, &err), -1);
    ck_assert_msg(strstr(err.msg, "no document") && strstr(err.msg, path), "%s", err.msg);
    ck_assert_int_ne(access(out, F_OK), 0);
    free(buf);
    unlink(path);
    tok_free(&t);
}
END_TEST

START_TEST(test_jsonl) {
    Tokenizer t;
    train_tok(&t);
    char path[700];
    tmp_path(path, sizeof path, "recs.jsonl");
    const char *text = "{\"text\": \"First record.\\nSecond line.\"}\n"
                       "\n"
                       "{\"id\": 7, \"text\": \"caf\\u00e9 \\\"quoted\\\"\", \"meta\": [1, 2]}\n"
                       "   \n"
                       "{\"text\": \"\"}\n"
                       "{\"text\": \"last, no newline\"}";
    write_bytes(path, text, strlen(text));
    const char *docs[3] = {"First record.\nSecond line.", "caf\xc3\xa9 \"quoted\"",
                           "last, no newline"};
    size_t lens[3] = {strlen(docs[0]), strlen(docs[1]), strlen(docs[2])};
    size_t n_want, n_got;
    int32_t *want = expect_docs(&t, docs, lens, 3, &n_want);
    int32_t *got = encode_ids(&t, path, REC_AUTO, 0, &n_got);   /* auto: .jsonl */
    ck_assert_uint_eq(n_got, n_want);
    ck_assert(memcmp(got, want, n_want * sizeof(int32_t)) == 0);
    free(got);
    free(want);
    /* malformed lines are named by file:line */
    char out[700];
    tmp_path(out, sizeof out, "never.tok");
    MoeErr err;
    const char *p1 = path;
    const char *bad1 = "{\"text\": \"ok\"}\n{\"text\": 5}\n";
    write_bytes(path, bad1, strlen(bad1));
    ck_assert_int_eq(encode_files(&t, &p1, 1, REC_AUTO, 0, out, NULL, NULL, &err), -1);
    char want_loc[800];
    snprintf(want_loc, sizeof want_loc, "%s:2", path);
    ck_assert_msg(strstr(err.msg, want_loc) && strstr(err.msg, "\"text\""), "%s", err.msg);
    const char *bad2 = "{\"text\": \"ok\"}\n\n{\"text\": \"unterminated}\n";
    write_bytes(path, bad2, strlen(bad2));
    ck_assert_int_eq(encode_files(&t, &p1, 1, REC_JSONL, 0, out, NULL, NULL, &err), -1);
    snprintf(want_loc, sizeof want_loc, "%s:3", path);
    ck_assert_msg(strstr(err.msg, want_loc) != NULL, "%s", err.msg);
    ck_assert(err.hint[0]);
    ck_assert_int_ne(access(out, F_OK), 0);
    /* read as file, the same bytes are one document */
    got = encode_ids(&t, path, REC_FILE, 0, &n_got);
    ck_assert_int_eq(got[n_got - 1], tok_eot(&t));
    free(got);
    unlink(path);
    tok_free(&t);
}
END_TEST

/* The shard file's bytes. */
static uint8_t *file_bytes(const char *path, size_t *n) {
    uint8_t *b;
    MoeErr err;
    ck_assert_msg(fs_read_file(path, &b, n, &err) == 0, "%s", err.msg);
    return b;
}

START_TEST(test_threads_identical) {
    Tokenizer t;
    train_tok(&t);
    char path[700], out1[700], out2[700];
    tmp_path(path, sizeof path, "shake.txt");
    tmp_path(out1, sizeof out1, "t1.tok");
    tmp_path(out2, sizeof out2, "t2.tok");
    write_bytes(path, g_text, g_len);
    const char *p = path;
    MoeErr err;
    pool_set_threads(1, NULL);
    ck_assert_int_eq(encode_files(&t, &p, 1, REC_FILE, 8192, out1, NULL, NULL, &err), 0);
    Tokenizer a, b, whole;
    ck_assert_msg(tok_train_files(&a, &p, 1, 500, REC_FILE, 0, NULL, &err) == 0, "%s", err.msg);
    pool_set_threads(2, NULL);
    ck_assert_int_eq(encode_files(&t, &p, 1, REC_FILE, 8192, out2, NULL, NULL, &err), 0);
    ck_assert_msg(tok_train_files(&b, &p, 1, 500, REC_FILE, 0, NULL, &err) == 0, "%s", err.msg);
    size_t n1, n2;
    uint8_t *b1 = file_bytes(out1, &n1), *b2 = file_bytes(out2, &n2);
    ck_assert_uint_eq(n1, n2);
    ck_assert(memcmp(b1, b2, n1) == 0);
    moe_free(b1);
    moe_free(b2);
    /* the streamed trainer (1 and 2 threads) equals training on the whole text in memory */
    const uint8_t *bufs[1] = {g_text};
    ck_assert_int_eq(tok_train_buffers(&whole, bufs, &g_len, 1, 500, &err), 0);
    ck_assert(tok_hash(&a) == tok_hash(&whole));
    ck_assert(tok_hash(&b) == tok_hash(&whole));
    ck_assert_int_eq(a.n_sources, 1);
    ck_assert_uint_eq(a.sources[0].size, g_len);
    ck_assert(a.sources[0].hash == tok_text_hash(g_text, g_len));
    tok_free(&a);
    tok_free(&b);
    tok_free(&whole);
    unlink(out1);
    unlink(out2);
    unlink(path);
    tok_free(&t);
}
END_TEST

START_TEST(test_max_bytes_spread) {
    /* two files of 400 kB each: one only " qvq" words, one only " jxj" words, 3 possible
     * merges each. A budget of 100 kB sampled evenly reads both, so all 6 merges (vocab 263)
     * exist, q-v and j-x among them; a budget taken from the corpus' start would see the
     * first file only and allow 3. */
    char a[700], b[700];
    tmp_path(a, sizeof a, "qv.txt");
    tmp_path(b, sizeof b, "jx.txt");
    size_t n = 400000;
    char *buf = malloc(n);
    for (int f = 0; f < 2; f++) {
        for (size_t i = 0; i < n; i++)
            buf[i] = i % 60 == 59 ? '\n' : i % 4 == 3 ? ' ' : (f ? "jx"[i % 2] : "qv"[i % 2]);
        write_bytes(f ? b : a, buf, n);
    }
    free(buf);
    const char *paths[2] = {a, b};
    Tokenizer t;
    MoeErr err;
    ck_assert_msg(tok_train_files(&t, paths, 2, 263, REC_FILE, 100000, NULL, &err) == 0, "%s",
                  err.msg);
    bool qv = false, jx = false;
    for (int r = 0; r < tok_n_merges(&t); r++) {
        int32_t x, y;
        tok_merge(&t, r, &x, &y);
        qv |= (x == 'q' && y == 'v') || (x == 'v' && y == 'q');
        jx |= (x == 'j' && y == 'x') || (x == 'x' && y == 'j');
    }
    ck_assert_msg(qv && jx, "merges of the sample: qv %d jx %d", qv, jx);
    /* the record still names both whole files */
    ck_assert_int_eq(t.n_sources, 2);
    ck_assert_uint_eq(t.sources[1].size, n);
    tok_free(&t);
    unlink(a);
    unlink(b);
}
END_TEST

static Suite *encode_suite(void) {
    Suite *s = suite_create("encode");
    struct { const char *name; const TTest *fn; } cases[] = {
        {"chunks_equal_whole", test_chunks_equal_whole},
        {"paragraphs", test_paragraphs},
        {"jsonl", test_jsonl},
        {"threads_identical", test_threads_identical},
        {"max_bytes_spread", test_max_bytes_spread},
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
    const char *src = getenv("MOE_SOURCE_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/data/tinyshakespeare.txt", src && *src ? src : ".");
    MoeErr err;
    if (fs_read_file(path, &g_text, &g_len, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    if (g_len > 300000) g_len = 300000;
    const char *base = getenv("MOE_BUILD_DIR");
    snprintf(g_dir, sizeof g_dir, "%s/test_encode_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror(g_dir);
        return 1;
    }
    SRunner *sr = srunner_create(encode_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    rmdir(g_dir);
    moe_free(g_text);
    return failed == 0 ? 0 : 1;
}
