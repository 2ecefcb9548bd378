/* export_tokenizer.h: our byte-level BPE tokenizer (data/tokenizer.h) in the vocabulary forms
 * of the export formats, and back.
 *
 * Both formats hold the vocabulary as V strings in GPT-2's byte-to-unicode alphabet
 * (tok_token_gpt2_str; the special token as the literal "<|endoftext|>") and the merges as
 * M = V - 257 strings "A B" in rank order:
 *   Hugging Face  tokenizer.json of the `tokenizers` library: a BPE model (vocab map, merges
 *                 list), ByteLevel pre-tokenizer (add_prefix_space false, use_regex true),
 *                 post-processor and decoder, <|endoftext|> as a special added token
 *   GGUF          tokenizer.ggml.tokens / tokenizer.ggml.merges string arrays (the GGUF
 *                 writer adds the model, pre-tokenizer and special-token keys)
 * Reading back accepts only what moetrain writes: the 256 bytes first in byte order, merges
 * in id order, <|endoftext|> last.
 * A tokenizer read from a tokenizer.json (TOK_KIND_HF, data/tokenizer.h) is exported as that
 * file, byte for byte; its GGUF form is its ids' strings (added tokens as their text) and
 * its merges, with the pre-tokenizer named for llama.cpp.
 *
 * Non-goals: tokenizers other than byte-level BPE (SentencePiece, WordPiece).
 */
#ifndef MOE_EXPORT_TOKENIZER_H
#define MOE_EXPORT_TOKENIZER_H

#include <stddef.h>

#include "core/common.h"
#include "data/tokenizer.h"

/* Token id's vocabulary string for every id: (V) new NUL-terminated strings (no vocab
 * string holds a NUL: byte 0 maps to U+0100). Free with export_tok_strings_free(s, V). */
char **export_tok_vocab(const Tokenizer *t);

/* The merges as (M) new strings "A B", A and B taken from vocab (export_tok_vocab's result,
 * borrowed). Free with export_tok_strings_free(s, M). */
char **export_tok_merges(const Tokenizer *t, char *const *vocab);

/* Free n strings of s and s itself; NULL is fine. */
void export_tok_strings_free(char **s, int n);

/* Number of vocabulary strings (the special token aside) whose bytes occur more than once:
 * HF's vocab is a map, so a tokenizer with any cannot be written as tokenizer.json. */
int export_tok_duplicates(const Tokenizer *t);

/* Write t as the tokenizer.json file path (atomically, core/fs.h): moetrain's form of a
 * .bpe, or the tokenizer.json a TOK_KIND_HF was read from. Fails (-1, err). */
int export_tok_write_hf(const char *path, const Tokenizer *t, MoeErr *err);

/* Rebuild *t (zeroed or freed before) from its exported form: tok[0..V) the vocabulary
 * strings (tok_len[i] bytes each) and mer[0..M) the ranked merges "A B" (borrowed). Checks
 * moetrain's layout (M = V - 257, <|endoftext|> last, every merge names two vocabulary
 * strings) and then everything tok_load checks; label names the source in messages.
 * Fails (-1, err with hint); *t is then zeroed. */
int export_tok_from_strings(Tokenizer *t, const char *const *tok, const size_t *tok_len, int V,
                            const char *const *mer, const size_t *mer_len, int M,
                            const char *label, MoeErr *err);

/* Rebuild *t (zeroed or freed before) from a GGUF tokenizer that is not moetrain's own
 * layout (one a model trained with a tokenizer.json was exported with): tok[0..V) the token
 * strings, types[0..V) llama.cpp's token types (3 control -> a special added token, 4
 * user-defined -> an added token; NULL: none), mer[0..M) the merges "A B", pre[0..pre_len)
 * the tokenizer.ggml.pre name (gpt-2, llama-bpe with ignore_merges as llama.cpp runs it,
 * qwen2), all borrowed; read as the tokenizer.json they stand for (data/tokenizer_hf.c),
 * whose checks and messages apply. Fails (-1, err with hint); *t is then zeroed. */
int export_tok_from_gguf(Tokenizer *t, const char *const *tok, const size_t *tok_len,
                         const int32_t *types, int V, const char *const *mer,
                         const size_t *mer_len, int M, const char *pre, size_t pre_len,
                         const char *label, MoeErr *err);

#endif
