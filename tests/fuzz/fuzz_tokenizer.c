/* fuzz_tokenizer.c: libFuzzer target for the tokenizer (data/tokenizer.c, bpe_train.c,
 * pretokenize.c): the tokenizer file reader, encode and decode, and training on text.
 *
 * Input: the first byte picks the mode, the rest is the payload.
 *   mode 0  payload = a tokenizer file (tok_load_buffer); when accepted, a fixed text and
 *           the payload itself are encoded and decoded with it.
 *   mode 1  payload = text, encoded and decoded with a fixed tokenizer (trained once at
 *           start-up on a built-in text, V = 300).
 *   mode 2  payload = int32 ids given to tok_decode with the fixed tokenizer (ids out of
 *           range and too small output buffers included).
 *   mode 3  payload[0] picks V in [258, 321], payload[1..] = text to train on
 *           (tok_train_buffers), then encoded and decoded with the result.
 * Invariants: decode(encode(x)) == x for any bytes; encode never yields more ids than bytes
 * and every id is in [0, V); tok_decode reports out-of-range ids with their index and never
 * writes past cap; a rejected file has an error message and leaves the Tokenizer zeroed;
 * nothing moe_malloc'ed outlives the input.
 */
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char TRAIN_TEXT[] =
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
    "It's 12 o'clock; we'll see 3.14 and 2,718 things -- don't they? \t\r\n  x\n"
    "Grüße, naïve café — 東京 Ελληνικά русский ١٢٣ 🙂 emoji\n";

static Tokenizer g_tok;

static void fixed_tokenizer(void) {
    if (g_tok.vocab_size) return;
    const uint8_t *b = (const uint8_t *)TRAIN_TEXT;
    size_t n = sizeof TRAIN_TEXT - 1;
    MoeErr err;
    int rc = tok_train_buffers(&g_tok, &b, &n, 1, 300, &err);
    ASSERT(rc == 0, "cannot train the fixed tokenizer: %s", err.msg);
}

/* encode -> check ids -> decode -> compare, with t on text[0..n). */
static void round_trip(const Tokenizer *t, const uint8_t *text, size_t n) {
    size_t n_ids = 0;
    int32_t *ids = tok_encode_alloc(t, text, n, &n_ids);
    ASSERT(n_ids <= n, "%zu ids for %zu bytes", n_ids, n);
    /* a .bpe never makes its special token V-1 from text; a tokenizer.json may have any id */
    const int top = t->kind == TOK_KIND_BPE ? t->vocab_size - 1 : t->vocab_size;
    for (size_t i = 0; i < n_ids; i++)
        ASSERT(ids[i] >= 0 && ids[i] < top, "id %d at %zu (V %d)", ids[i], i, t->vocab_size);
    uint8_t *back = malloc(n + 1);
    ASSERT(back != NULL, "out of memory");
    size_t n_back = 0;
    int rc = tok_decode(t, ids, n_ids, back, n, &n_back);
    ASSERT(rc == 0 && n_back == n && (n == 0 || memcmp(back, text, n) == 0),
           "decode(encode(x)) != x (rc %d, %zu of %zu bytes)", rc, n_back, n);
    /* a too-small output buffer: the prefix is right and nothing is written past cap */
    if (n > 1) {
        size_t cap = n / 2;
        memset(back, 0xAB, n + 1);
        rc = tok_decode(t, ids, n_ids, back, cap, &n_back);
        ASSERT(rc == -1 && n_back == n, "short decode rc %d n %zu", rc, n_back);
        ASSERT(memcmp(back, text, cap) == 0 && back[cap] == 0xAB, "short decode wrote badly");
    }
    free(back);
    moe_free(ids);
}

static void mode_file(const uint8_t *p, size_t n) {
    Tokenizer t, zero;
    memset(&zero, 0, sizeof zero);
    MoeErr err;
    if (tok_load_buffer(&t, p, n, "fuzz.bpe", &err) != 0) {
        ASSERT(err.msg[0] != 0, "tok_load_buffer failed without a message");
        ASSERT(memcmp(&t, &zero, sizeof t) == 0, "failed load left the Tokenizer set");
        return;
    }
    /* tokenizer.json files are fuzz_tokenizer_json.c's; one found here is checked alike */
    ASSERT(t.kind == TOK_KIND_HF ||
           (t.vocab_size >= TOK_MIN_VOCAB && t.n_merges == t.vocab_size - 257), "V %d merges %d",
           t.vocab_size, t.n_merges);
    round_trip(&t, (const uint8_t *)TRAIN_TEXT, sizeof TRAIN_TEXT - 1);
    round_trip(&t, p, n);
    char s[64];
    for (int id = 0; id < t.vocab_size && id < 600; id++) (void)tok_token_gpt2_str(&t, id, s, sizeof s);
    tok_free(&t);
}

static void mode_decode(const uint8_t *p, size_t n) {
    size_t n_ids = n / 4;
    int32_t *ids = malloc((n_ids ? n_ids : 1) * sizeof(int32_t));
    ASSERT(ids != NULL, "out of memory");
    if (n_ids) memcpy(ids, p, n_ids * sizeof(int32_t));
    size_t cap = n_ids ? (size_t)(p[0] % 64) : 0;
    uint8_t out[64 + 1];
    out[cap] = 0xCD;
    size_t n_out = 0;
    int rc = tok_decode(&g_tok, ids, n_ids, out, cap, &n_out);
    ASSERT(out[cap] == 0xCD, "tok_decode wrote past cap %zu", cap);
    size_t bad = n_ids;
    for (size_t i = 0; i < n_ids; i++)
        if (ids[i] < 0 || ids[i] >= g_tok.vocab_size) { bad = i; break; }
    if (bad < n_ids) ASSERT(rc == -2 && n_out == bad, "bad id %zu: rc %d n_out %zu", bad, rc, n_out);
    else ASSERT(rc == (n_out <= cap ? 0 : -1), "rc %d for %zu bytes, cap %zu", rc, n_out, cap);
    free(ids);
}

static void mode_train(const uint8_t *p, size_t n) {
    if (n == 0) return;
    int V = 258 + p[0] % 64;
    const uint8_t *text = p + 1;
    size_t len = n - 1;
    Tokenizer t;
    MoeErr err;
    if (tok_train_buffers(&t, &text, &len, 1, V, &err) != 0) {
        ASSERT(err.msg[0] != 0, "tok_train_buffers failed without a message");
        return;
    }
    ASSERT(t.vocab_size == V, "trained V %d, asked %d", t.vocab_size, V);
    round_trip(&t, text, len);
    tok_free(&t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fixed_tokenizer();
    size_t live = moe_live_bytes();
    if (size == 0) return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    switch (data[0] % 4) {
    case 0: mode_file(p, n); break;
    case 1: round_trip(&g_tok, p, n); break;
    case 2: mode_decode(p, n); break;
    default: mode_train(p, n); break;
    }
    FUZZ_NO_LEAK(live, "tokenizer");
    return 0;
}
