/* pretokenize.h: GPT-2's byte-level front end (Radford et al. 2019, encoder.py): the
 * pre-tokenizer that splits text before BPE, and the byte-to-unicode alphabet in which
 * byte-level vocabularies are written as strings.
 *
 * The pre-tokenizer implements GPT-2's pattern
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * by hand over UTF-8 codepoints (classes from data/unicode_tables.h, Unicode 14: \p{L},
 * \p{N}, Python's str.isspace for \s); an invalid UTF-8 byte (bad lead or continuation,
 * truncated, overlong, surrogate, > U+10FFFF) is one codepoint of class "other".
 *
 * Non-goals: other pre-tokenizer patterns, Unicode normalisation.
 */
#ifndef MOE_PRETOKENIZE_H
#define MOE_PRETOKENIZE_H

#include <stddef.h>
#include <stdint.h>

/* Split text (n bytes, borrowed) into GPT-2 pre-tokens. Calls fn(text + start, len, ctx) for
 * each pre-token in order; the pre-tokens tile the text exactly (none is empty). */
void tok_pretokenize(const uint8_t *text, size_t n,
                     void (*fn)(const uint8_t *piece, size_t len, void *ctx), void *ctx);

/* GPT-2 bytes_to_unicode: the codepoint that stands for byte b in vocab strings
 * (printable latin-1 maps to itself; the other 68 bytes map to 256+k in byte order, so
 * every codepoint is below U+0800 and none is U+0000). */
uint32_t tok_byte_to_unicode(uint8_t b);

#endif
