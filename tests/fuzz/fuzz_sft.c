/* fuzz_sft.c: libFuzzer target for the fine-tuning record reader (data/sft.c, with
 * core/json.c and the tokenizer under it).
 *
 * Input: the first byte picks the options (bit 0: field names "question"/"answer" instead
 * of the defaults; bit 1: separator "\n"), the rest is a JSONL file given to sft_parse with
 * a fixed tokenizer (trained once at start-up on a built-in text, V = 300).
 * Invariants, on success and on a rejected line (the records before it stay): every token
 * is in [0, V); the mask is 0 or 1 and n_trained counts its ones; every record ends with
 * the end-of-text token and the record ends increase to n_tokens; the pair and conversation
 * counts add up to the records; a rejection has a message naming "fuzz.jsonl:LINE" and a
 * hint; after sft_free nothing moe_malloc'ed outlives the input.
 */
#include <string.h>

#include "data/sft.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char TRAIN_TEXT[] =
    "<|user|>\n<|assistant|>\n<|system|>\n{\"prompt\": \"What is 2 + 3?\", \"completion\": "
    "\" 5\"}\nNatalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72\n";

static Tokenizer g_tok;

static void fixed_tokenizer(void) {
    if (g_tok.vocab_size) return;
    const uint8_t *b = (const uint8_t *)TRAIN_TEXT;
    size_t n = sizeof TRAIN_TEXT - 1;
    MoeErr err;
    int rc = tok_train_buffers(&g_tok, &b, &n, 1, 300, &err);
    ASSERT(rc == 0, "cannot train the fixed tokenizer: %s", err.msg);
}

static void check(const SftData *d) {
    const int V = tok_vocab_size(&g_tok), eot = tok_eot(&g_tok);
    size_t ones = 0;
    for (size_t i = 0; i < d->n_tokens; i++) {
        ASSERT(d->tokens[i] < (uint32_t)V, "token %zu = %d outside [0, %d)", i,
               (int)d->tokens[i], V);
        ASSERT(d->mask[i] <= 1, "mask %zu = %d", i, (int)d->mask[i]);
        ones += d->mask[i];
    }
    ASSERT(ones == d->n_trained, "n_trained %zu, mask has %zu ones", d->n_trained, ones);
    ASSERT(d->n_pairs + d->n_chats == d->n_records, "%zu pairs + %zu chats != %zu records",
           d->n_pairs, d->n_chats, d->n_records);
    for (size_t r = 0; r < d->n_records; r++) {
        const size_t e = d->rec_end[r];
        ASSERT(e > (r ? d->rec_end[r - 1] : 0) && e <= d->n_tokens, "record %zu ends at %zu",
               r, e);
        ASSERT(d->tokens[e - 1] == (uint32_t)eot, "record %zu does not end with EOT", r);
    }
    ASSERT(d->n_records == 0 || d->rec_end[d->n_records - 1] == d->n_tokens,
           "tokens after the last record");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fixed_tokenizer();
    if (size == 0) return 0;
    size_t live = moe_live_bytes();
    const uint8_t mode = data[0];
    SftOpts o = {mode & 1 ? "question" : NULL, mode & 1 ? "answer" : NULL,
                 mode & 2 ? "\n" : NULL};
    SftData d;
    memset(&d, 0, sizeof d);
    MoeErr err;
    memset(&err, 0, sizeof err);
    if (sft_parse(&d, &g_tok, data + 1, size - 1, "fuzz.jsonl", &o, &err) != 0) {
        ASSERT(!strncmp(err.msg, "fuzz.jsonl:", 11), "rejection without FILE:LINE: %s",
               err.msg);
        ASSERT(err.hint[0] != 0, "rejection without a hint: %s", err.msg);
    }
    check(&d);
    sft_free(&d);
    FUZZ_NO_LEAK(live, "sft_parse");
    return 0;
}
