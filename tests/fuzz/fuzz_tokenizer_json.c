/* fuzz_tokenizer_json.c: libFuzzer target for Hugging Face tokenizer.json files
 * (data/tokenizer_hf.c) and the pre-tokenizer patterns (data/pretok_patterns.c).
 *
 * Input: the first byte picks the mode, the rest is the payload.
 *   mode 0  payload = a tokenizer.json (tok_load_buffer); when accepted, a fixed text and the
 *           payload itself are encoded and decoded with it, every id's string is rendered
 *           and tok_describe names it.
 *   mode 1  payload = text: split by every pattern (the pieces must tile the text, none
 *           empty), then encoded and decoded with three fixed tokenizer.json tokenizers
 *           built at start-up (Llama 3 Split form with ignore_merges, Qwen2 Split form,
 *           GPT-2 ByteLevel form; 256 byte tokens in GPT-2's id order and a few merges).
 * Invariants: decode(encode(x)) == x for any bytes; encode never yields more ids than bytes
 * and every id is in [0, V); a rejected file has an error message naming the file and
 * leaves the Tokenizer zeroed; nothing moe_malloc'ed outlives the input.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/pretok_patterns.h"
#include "data/pretokenize.h"
#include "data/tokenizer.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char TEXT[] =
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nIT'S 'll \xC5\xBF 12345\r\n"
    "Gr\xC3\xBC\xC3\x9F" "e \xE6\x9D\xB1\xE4\xBA\xAC \xD9\xA1\xD9\xA2\xD9\xA3 \xF0\x9F\x99\x82 "
    "\x1c\x1d\t \xC2\xA0x\n";

static Tokenizer g_tok[3];

/* GPT-2's byte order: printable bytes first, then the others. */
static int gpt2_order(uint8_t *order) {
    int n = 0;
    for (int b = 0; b < 256; b++)
        if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) order[n++] = (uint8_t)b;
    for (int b = 0; b < 256; b++)
        if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)) order[n++] = (uint8_t)b;
    return n;
}

/* A small tokenizer.json (kind 0: Llama 3 Split, 1: Qwen2 Split, 2: GPT-2 ByteLevel). */
static char *fixed_json(int kind) {
    static const char *const merged[][3] = {
        {"l", "l", "ll"}, {"e", "ll", "ell"}, {"\\u0120", "t", "\\u0120t"}, {"h", "e", "he"},
        {"\\u0120t", "he", "\\u0120the"}, {"1", "2", "12"}, {"\\u010a", "\\u010a", "\\u010a\\u010a"}};
    const int M = (int)(sizeof merged / sizeof merged[0]);
    size_t cap = 64 * 1024, n = 0;
    char *s = malloc(cap);
    ASSERT(s != NULL, "out of memory");
    n += (size_t)snprintf(s + n, cap - n, "{\"added_tokens\": [{\"id\": %d, \"content\": "
                          "\"<|endoftext|>\", \"special\": true}], \"normalizer\": null, ",
                          256 + M);
    const char *pat = kind == 0 ? tok_pattern_regex(TOK_PAT_LLAMA3)
                                : kind == 1 ? tok_pattern_regex(TOK_PAT_QWEN2) : NULL;
    if (pat) {
        n += (size_t)snprintf(s + n, cap - n, "\"pre_tokenizer\": {\"type\": \"Sequence\", "
                              "\"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"");
        for (const char *c = pat; *c; c++) {  /* JSON-escape the backslashes */
            if (*c == '\\') s[n++] = '\\';
            s[n++] = *c;
        }
        n += (size_t)snprintf(s + n, cap - n, "\"}, \"behavior\": \"Isolated\", \"invert\": false},"
                              " {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
                              "\"use_regex\": false}]}, ");
    } else {
        n += (size_t)snprintf(s + n, cap - n, "\"pre_tokenizer\": {\"type\": \"ByteLevel\", "
                              "\"add_prefix_space\": false, \"use_regex\": true}, ");
    }
    n += (size_t)snprintf(s + n, cap - n, "\"decoder\": {\"type\": \"ByteLevel\"}, \"model\": "
                          "{\"type\": \"BPE\", \"ignore_merges\": %s, \"vocab\": {",
                          kind == 0 ? "true" : "false");
    uint8_t order[256];
    gpt2_order(order);
    for (int id = 0; id < 256; id++)
        n += (size_t)snprintf(s + n, cap - n, "\"\\u%04x\": %d, ", tok_byte_to_unicode(order[id]), id);
    for (int r = 0; r < M; r++)
        n += (size_t)snprintf(s + n, cap - n, "\"%s\": %d%s", merged[r][2], 256 + r,
                              r + 1 < M ? ", " : "");
    n += (size_t)snprintf(s + n, cap - n, "}, \"merges\": [");
    for (int r = 0; r < M; r++)
        n += (size_t)snprintf(s + n, cap - n, r % 2 ? "\"%s %s\"%s" : "[\"%s\", \"%s\"]%s",
                              merged[r][0], merged[r][1], r + 1 < M ? ", " : "");
    n += (size_t)snprintf(s + n, cap - n, "]}}");
    ASSERT(n < cap, "fixed tokenizer.json too long");
    return s;
}

static void fixed_tokenizers(void) {
    if (g_tok[0].vocab_size) return;
    for (int k = 0; k < 3; k++) {
        char *s = fixed_json(k);
        MoeErr err;
        int rc = tok_load_buffer(&g_tok[k], (const uint8_t *)s, strlen(s), "fixed.json", &err);
        ASSERT(rc == 0, "fixed tokenizer %d: %s", k, err.msg);
        free(s);
    }
}

static void round_trip(const Tokenizer *t, const uint8_t *text, size_t n) {
    size_t n_ids = 0;
    int32_t *ids = tok_encode_alloc(t, text, n, &n_ids);
    ASSERT(n_ids <= n, "%zu ids for %zu bytes", n_ids, n);
    for (size_t i = 0; i < n_ids; i++)
        ASSERT(ids[i] >= 0 && ids[i] < t->vocab_size, "id %d at %zu (V %d)", ids[i], i,
               t->vocab_size);
    uint8_t *back = malloc(n + 1);
    ASSERT(back != NULL, "out of memory");
    size_t n_back = 0;
    int rc = tok_decode(t, ids, n_ids, back, n, &n_back);
    ASSERT(rc == 0 && n_back == n && (n == 0 || memcmp(back, text, n) == 0),
           "decode(encode(x)) != x (rc %d, %zu of %zu bytes)", rc, n_back, n);
    free(back);
    moe_free(ids);
}

typedef struct { const uint8_t *base, *next; size_t n; } Tiling;

static void check_piece(const uint8_t *p, size_t len, void *ctx) {
    Tiling *t = ctx;
    ASSERT(len > 0, "empty piece at %zu", (size_t)(p - t->base));
    ASSERT(p == t->next, "piece at %zu, expected %zu", (size_t)(p - t->base),
           (size_t)(t->next - t->base));
    ASSERT((size_t)(p - t->base) + len <= t->n, "piece past the end");
    t->next = p + len;
}

static void mode_file(const uint8_t *p, size_t n) {
    Tokenizer t, zero;
    memset(&zero, 0, sizeof zero);
    MoeErr err;
    if (tok_load_buffer(&t, p, n, "fuzz.json", &err) != 0) {
        ASSERT(err.msg[0] != 0, "tok_load_buffer failed without a message");
        ASSERT(memcmp(&t, &zero, sizeof t) == 0, "failed load left the Tokenizer set");
        return;
    }
    if (t.kind == TOK_KIND_HF) {
        ASSERT(t.vocab_size >= 256 && t.eot >= 0 && t.eot < t.vocab_size, "V %d eot %d",
               t.vocab_size, t.eot);
        ASSERT(t.file_n == n, "kept %zu of %zu file bytes", t.file_n, n);
    }
    round_trip(&t, (const uint8_t *)TEXT, sizeof TEXT - 1);
    round_trip(&t, p, n);
    char s[64];
    for (int id = 0; id < t.vocab_size && id < 600; id++) (void)tok_token_gpt2_str(&t, id, s, sizeof s);
    char line[512];
    tok_describe(&t, line, sizeof line);
    tok_free(&t);
}

static void mode_text(const uint8_t *p, size_t n) {
    for (int pat = 0; pat < TOK_PAT_COUNT; pat++) {
        Tiling t = {p, p, n};
        tok_pattern_split((TokPattern)pat, p, n, check_piece, &t);
        ASSERT(t.next == p + n, "pattern %d covered %zu of %zu bytes", pat,
               (size_t)(t.next - p), n);
    }
    for (int k = 0; k < 3; k++) round_trip(&g_tok[k], p, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fixed_tokenizers();
    size_t live = moe_live_bytes();
    if (size == 0) return 0;
    if (data[0] % 2 == 0) mode_file(data + 1, size - 1);
    else mode_text(data + 1, size - 1);
    FUZZ_NO_LEAK(live, "tokenizer_json");
    return 0;
}
