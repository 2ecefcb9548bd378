/* pretok_patterns.h: the pre-tokenizer patterns of byte-level BPE tokenizers, recognised by
 * their regular expression and run by hand-written scanners (moetrain has no regex engine).
 *
 *   TOK_PAT_GPT2     GPT-2 (Radford et al. 2019), \s = str.isspace: moetrain's own .bpe
 *   TOK_PAT_GPT2_WS  the same pattern with \s = White_Space, as a regex engine runs it
 *                    (a tokenizer.json ByteLevel pre-tokenizer with use_regex: true)
 *   TOK_PAT_LLAMA3   cl100k_base / Llama 3:
 *     (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *      ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *   TOK_PAT_QWEN2    Qwen2: the Llama 3 pattern with \p{N} (one digit per pre-token)
 * (the two long patterns are one line each in the files, split here for width). Classes:
 * \p{L}, \p{N} from data/unicode_tables.h (Unicode 14), \s as named above; (?i:...) folds
 * case as Unicode simple case folding does for these letters (so 'S and the long s U+017F
 * count too). Invalid UTF-8 bytes are single codepoints of no class (data/pretokenize.h).
 * Each scanner returns the matches a leftmost-first regex engine finds; they tile the text.
 *
 * Non-goals: any other pattern (tok_pattern_from_regex refuses it), Unicode versions other
 * than the tables' (a codepoint assigned after Unicode 14 is "other" here).
 */
#ifndef MOE_PRETOK_PATTERNS_H
#define MOE_PRETOK_PATTERNS_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    TOK_PAT_GPT2 = 0,
    TOK_PAT_GPT2_WS,
    TOK_PAT_LLAMA3,
    TOK_PAT_QWEN2,
    TOK_PAT_COUNT
} TokPattern;

/* The pattern a tokenizer.json regex string (NUL-terminated, JSON escapes already undone)
 * stands for, or -1 when it is none of the known ones. Known spellings: the GPT-2 pattern,
 * the Llama 3 pattern, tiktoken's cl100k_base spelling of it (possessive quantifiers, the
 * same matches), the Qwen2 pattern. The GPT-2 pattern gives TOK_PAT_GPT2_WS. */
int tok_pattern_from_regex(const char *re);

/* A short name for messages and logs: "GPT-2", "GPT-2", "Llama 3 / cl100k", "Qwen2". */
const char *tok_pattern_name(TokPattern p);

/* The regex string of p (one of its spellings; GPT-2's for both GPT-2 flavours). */
const char *tok_pattern_regex(TokPattern p);

/* Split text (n bytes, borrowed) into pre-tokens with pattern p: fn(piece, len, ctx) for
 * each in order; the pieces tile the text and none is empty. */
void tok_pattern_split(TokPattern p, const uint8_t *text, size_t n,
                       void (*fn)(const uint8_t *piece, size_t len, void *ctx), void *ctx);

#endif
