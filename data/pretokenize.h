/* pretokenize.h: GPT-2's byte-level front end (Radford et al. 2019, encoder.py): the
 * pre-tokenizer that splits text before BPE, and the byte-to-unicode alphabet in which
 * byte-level vocabularies are written as strings.
 *
 * The pre-tokenizer implements GPT-2's pattern
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * by hand over UTF-8 codepoints (classes from data/unicode_tables.h, Unicode 14: \p{L},
 * \p{N}, Python's str.isspace for \s); an invalid UTF-8 byte (bad lead or continuation,
 * truncated, overlong, surrogate, > U+10FFFF) is one codepoint of class "other".
 * Two flavours of \s: str.isspace (moetrain's own tokenizer, tok_pretokenize) and the
 * Unicode White_Space property that regex engines use (the Python `regex` module GPT-2
 * shipped with, Oniguruma in Hugging Face `tokenizers`); they differ only on U+001C..U+001F,
 * which str.isspace counts as space and White_Space does not.
 *
 * Non-goals: Unicode normalisation. The other byte-level patterns are
 * data/pretok_patterns.h.
 */
#ifndef MOE_PRETOKENIZE_H
#define MOE_PRETOKENIZE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Codepoint classes of the patterns: \p{L}, \p{N}, \s and everything else. */
enum { CL_OTHER = 0, CL_LETTER, CL_NUMBER, CL_SPACE };

/* One codepoint: its value, class (CL_*) and length in bytes (1..4). */
typedef struct TokCp { uint32_t cp; int cls; size_t len; } TokCp;

/* Decode the codepoint at s[i] (i < n, borrowed). Invalid UTF-8 (bad lead, bad continuation,
 * truncated, overlong, surrogate, > U+10FFFF) is one byte of class CL_OTHER. white_space:
 * \s is the White_Space property (true) or str.isspace (false). */
TokCp tok_cp_at(const uint8_t *s, size_t n, size_t i, bool white_space);

/* Split text (n bytes, borrowed) into GPT-2 pre-tokens. Calls fn(text + start, len, ctx) for
 * each pre-token in order; the pre-tokens tile the text exactly (none is empty). */
void tok_pretokenize(const uint8_t *text, size_t n,
                     void (*fn)(const uint8_t *piece, size_t len, void *ctx), void *ctx);

/* The same pattern with either flavour of \s (tok_pretokenize is white_space false). */
void tok_pretokenize_gpt2(const uint8_t *text, size_t n, bool white_space,
                          void (*fn)(const uint8_t *piece, size_t len, void *ctx), void *ctx);

/* GPT-2 bytes_to_unicode: the codepoint that stands for byte b in vocab strings
 * (printable latin-1 maps to itself; the other 68 bytes map to 256+k in byte order, so
 * every codepoint is below U+0800 and none is U+0000). */
uint32_t tok_byte_to_unicode(uint8_t b);

#endif
