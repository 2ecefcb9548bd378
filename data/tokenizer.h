/* tokenizer.h: byte-level BPE (the GPT-2 scheme): training, encode, decode, save/load.
 *
 * Vocabulary layout (V = vocab_size, V >= 258):
 *   ids 0..255        the single bytes (id = byte value)
 *   ids 256..V-2      merges in rank order: merge r creates id 256+r = concat(a_r, b_r)
 *   id  V-1           the special token "<|endoftext|>" (document separator, BOS/EOS)
 * so there are V-257 merges. Text is first split with GPT-2's pre-tokenizer
 * (data/pretokenize.h), then BPE merges are applied inside each pre-token, lowest rank
 * first. Encoding is lossless for any byte string: decode(encode(x)) == x.
 *
 * Implemented in four files: data/tokenizer.c (building from merges, encode, decode, the
 * file), data/bpe_train.c (training), data/pretokenize.c (the pre-tokenizer),
 * data/tokenizer_hf.c (reading a Hugging Face tokenizer.json, below).
 *
 * Two kinds of Tokenizer, one interface (encode, decode, tok_eot, tok_hash, ...):
 *   TOK_KIND_BPE  moetrain's own file (the layout above, format below)
 *   TOK_KIND_HF   a Hugging Face tokenizer.json holding a byte-level BPE (GPT-2, Llama 3,
 *                 Qwen2, cl100k-style): ids as the file gives them (any order, V up to
 *                 2^30), merges with the ids they join and make, the pre-tokenizer pattern
 *                 the file names (data/pretok_patterns.h), the added tokens, and the end of
 *                 text token picked by name (tokenizer_hf.c lists the names). Encoding gives
 *                 the ids of HF's tokenizer.encode(text, add_special_tokens=False) for text
 *                 that holds no added token's text. docs/tokenizers.md lists what is read
 *                 and what is refused.
 * tok_load and tok_load_buffer decide by content: text whose first non-blank byte is '{'
 * is read as tokenizer.json, anything else as moetrain-bpe.
 *
 * Non-goals: parsing special tokens out of text (encode treats "<|endoftext|>" as plain text;
 * callers insert tok_eot() themselves), Unicode normalisation, other pre-tokenizer patterns.
 *
 * File format (text, strict, written atomically):
 *   moetrain-bpe 1
 *   vocab_size 4096
 *   special 4095 <|endoftext|>
 *   trained_on 1       optional: the text files tok_train read, one "text" line each
 *   text <bytes> <16 hex digits> <name>    size, tok_text_hash of the bytes, path as given
 *   merges 3839
 *   <a> <b>            one merge per line (decimal ids), in rank order
 * The trained_on block is a record, not part of the vocabulary: tok_hash ignores it, and a
 * file without it (written before it existed, or by the exporters) loads the same. A name
 * is written with its control characters as '?' (it labels; size and hash identify).
 *
 * References: Sennrich et al. 2016 (BPE); Radford et al. 2019 (GPT-2 byte-level BPE,
 * encoder.py's bytes_to_unicode and pattern).
 */
#ifndef MOE_TOKENIZER_H
#define MOE_TOKENIZER_H

#include <stdio.h>

#include "core/common.h"

#define TOK_EOT_TEXT "<|endoftext|>"
#define TOK_MIN_VOCAB 258
#define TOK_MAX_VOCAB (1 << 30)
#define TOK_MAX_TOKEN_BYTES (1u << 24)   /* longest token (16 MiB) a tokenizer may make */

/* A text file a tokenizer was trained on: the path as given, its size and tok_text_hash. */
typedef struct TokSource {
    char *name;              /* owned, NUL-terminated */
    uint64_t size, hash;
} TokSource;

typedef enum { TOK_KIND_BPE = 0, TOK_KIND_HF } TokKind;

/* What an id is besides an ordinary vocabulary token (tok_added). */
enum { TOK_ORDINARY = 0, TOK_ADDED_SPECIAL, TOK_ADDED_NORMAL };

typedef struct Tokenizer {
    TokKind kind;
    int vocab_size;          /* V */
    int n_merges;            /* M: V - 257 for TOK_KIND_BPE */
    int32_t *merges;         /* (n_merges, 2): merge r joins (merges[2r], merges[2r+1]) */
    int32_t *merge_id;       /* (n_merges) the id merge r makes (256 + r for TOK_KIND_BPE) */
    int32_t byte_id[256];    /* the id of each single byte (the byte itself for TOK_KIND_BPE) */
    int eot;                 /* the end-of-text (document separator) id: V - 1 for BPE */
    int pattern;             /* TokPattern (data/pretok_patterns.h): TOK_PAT_GPT2 for BPE */
    bool ignore_merges;      /* HF: a pre-token that is a vocabulary token is that token */
    uint8_t *added;          /* (V) TOK_ORDINARY / TOK_ADDED_* per id */
    uint32_t *word_slots;    /* (word_cap) open addressing over ordinary ids by their bytes:
                                id + 1, 0 empty (tok_token_id) */
    size_t word_cap;         /* power of two */
    uint8_t *file;           /* (file_n) HF: the tokenizer.json bytes it was read from */
    size_t file_n;
    uint32_t *tok_off;       /* (V) offset of token i's bytes in tok_bytes */
    uint32_t *tok_len;       /* (V) length of token i's bytes */
    uint8_t *tok_bytes;      /* (sum tok_len) every token's bytes, concatenated */
    uint64_t *rank_keys;     /* (rank_cap) open-addressing table: pair key (a<<32|b)+1, 0 empty */
    int32_t *rank_vals;      /* (rank_cap) merge rank for rank_keys[i] */
    size_t rank_cap;         /* power of two */
    uint64_t hash;           /* tok_hash(): FNV-1a over V and the merges (BPE); the vocab,
                                merges, pattern and special ids (HF) */
    TokSource *sources;      /* (n_sources) owned: the files tok_train read; none (0) when
                                unknown: trained from buffers, or an older file */
    int n_sources;
} Tokenizer;

/* ---- training ---- */

/* Train a tokenizer of vocab_size V on the text files paths[0..n_paths) (each file is one
 * document; pre-tokens never cross files) and record them (t->sources, saved by tok_save).
 * *t must be zeroed or freed; on success it owns new memory (release with tok_free). Fails (-1, err with hint) on an unreadable or empty file,
 * V outside [258, 2^30], a token longer than TOK_MAX_TOKEN_BYTES, or when the corpus has
 * fewer distinct mergeable pairs than V-257 (vocab_size too large for this corpus); *t is
 * left zeroed on failure. Ties between equally frequent pairs go to the smaller (a, b). */
int tok_train(Tokenizer *t, const char *const *paths, int n_paths, int vocab_size, MoeErr *err);

/* Same as tok_train on in-memory documents bufs[i] of lens[i] bytes (borrowed). Empty
 * documents are allowed here (they contribute nothing). */
int tok_train_buffers(Tokenizer *t, const uint8_t *const *bufs, const size_t *lens, int n_bufs,
                      int vocab_size, MoeErr *err);

/* ---- encode / decode ---- */

/* Encode text (n bytes, any bytes, borrowed) into ids (the kind's pre-tokenizer, then BPE
 * inside each pre-token). Never produces more ids than bytes,
 * so cap >= n always suffices. Writes min(needed, cap) ids to out and sets *n_out to the
 * number needed. Returns 0, or -1 when cap was too small (out then holds a prefix).
 * Does not insert or parse special tokens. Thread-safe (the word cache is per call). */
int tok_encode(const Tokenizer *t, const uint8_t *text, size_t n, int32_t *out, size_t cap,
               size_t *n_out);

/* Encode into a new buffer of *n_out ids owned by the caller (moe_free). Never fails. */
int32_t *tok_encode_alloc(const Tokenizer *t, const uint8_t *text, size_t n, size_t *n_out);

/* Decode ids (n, borrowed) to bytes: the concatenation of each token's bytes (the special
 * token gives "<|endoftext|>"; an added token its text). Writes min(needed, cap) bytes to out and sets *n_out to the
 * number needed. Returns 0; -1 when cap was too small; -2 when an id is outside [0, V)
 * (*n_out is then the index of the bad id). */
int tok_decode(const Tokenizer *t, const int32_t *ids, size_t n, uint8_t *out, size_t cap,
               size_t *n_out);

/* The end-of-text id that separates documents: V-1 (BPE); the added token picked by name
 * (HF; a file without one of the names is refused when loaded). */
int tok_eot(const Tokenizer *t);

/* TOK_ORDINARY, TOK_ADDED_SPECIAL (the BPE's V-1; HF added tokens marked special) or
 * TOK_ADDED_NORMAL (HF added tokens not marked special). ASSERTs 0 <= id < V. */
int tok_added(const Tokenizer *t, int id);

/* The id of the ordinary token whose bytes are bytes[0..len) (borrowed), or -1. */
int32_t tok_token_id(const Tokenizer *t, const uint8_t *bytes, size_t len);

/* One line naming t for logs: "moetrain-bpe, 4096 tokens, pattern GPT-2" or
 * "tokenizer.json (byte-level BPE), 50257 tokens, pattern GPT-2, end of text
 * <|endoftext|> = 50256" (like snprintf; the added token's text shortened to 40 bytes). */
size_t tok_describe(const Tokenizer *t, char *out, size_t cap);

/* ---- building from merges ---- */

/* Build *t (any contents, overwritten) as a TOK_KIND_BPE of vocabulary V from its merge list, taking ownership
 * of merges ((V-257, 2) ids, moe_malloc'd; the caller has checked that merge r uses only ids
 * below 256 + r): token bytes, the rank table and tok_hash. Returns -1 on success; else the
 * rank of the first merge that repeats an earlier pair (t->rank_vals is then set) or makes
 * a token longer than TOK_MAX_TOKEN_BYTES (t->rank_vals NULL), with t half-built: tok_free
 * it. */
int tok_build(Tokenizer *t, int V, int32_t *merges);

/* The key of pair (a, b) in the rank table and the trainer's pair map. */
static inline uint64_t tok_pair_key(int32_t a, int32_t b) {
    return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
}

/* ---- token access ---- */

/* Render token id as its GPT-2 vocab string in UTF-8 (each byte mapped by
 * tok_byte_to_unicode, data/pretokenize.h; an added token, such as the BPE's special token
 * "<|endoftext|>", is its literal text). Writes at most
 * cap-1 bytes plus a NUL (if cap > 0) and returns the full length (like snprintf); 16 bytes
 * per token byte always suffice; the string holds no NUL. ASSERTs 0 <= id < V. */
size_t tok_token_gpt2_str(const Tokenizer *t, int id, char *out, size_t cap);

/* Token id's bytes (a view into t, valid until tok_free) and their count. ASSERTs id range. */
const uint8_t *tok_token_bytes(const Tokenizer *t, int id, size_t *len);

/* Vocab size V, merge count M, and merge r's pair (a, b), ASSERTs 0 <= r < n_merges. */
int tok_vocab_size(const Tokenizer *t);
int tok_n_merges(const Tokenizer *t);
void tok_merge(const Tokenizer *t, int r, int32_t *a, int32_t *b);

/* 64-bit content hash, recorded in shards and checkpoints so data made by another
 * tokenizer is detected. BPE: FNV-1a over V, the special token text and the merges (as
 * always). HF: FNV-1a over a kind tag, V, the pattern, ignore_merges, every token's bytes
 * and added flag, the merges with the ids they make and the end-of-text id; so any change
 * of vocabulary, merges or pattern gives another hash. */
uint64_t tok_hash(const Tokenizer *t);

/* ---- what it was trained on ---- */

/* The hash a trained_on record keeps of a file's bytes buf[0..n) (borrowed): FNV-1a 64. */
uint64_t tok_text_hash(const uint8_t *buf, size_t n);

/* Whether t was trained on exactly the texts (n, borrowed: size and hash set, names only
 * label), compared as multisets of (size, hash), so names and order do not matter: 1 same,
 * 0 different, -1 unknown (t records nothing). */
int tok_sources_match(const Tokenizer *t, const TokSource *texts, int n);

/* ---- files ---- */

/* Write t to path atomically (tmp file in the same directory, fflush, fsync, rename): the
 * moetrain-bpe file, or for TOK_KIND_HF the tokenizer.json bytes it was read from.
 * Fails (-1, err) on any I/O error; path is then unchanged. */
int tok_save(const Tokenizer *t, const char *path, MoeErr *err);

/* Load and fully validate a tokenizer file (either kind, decided as described at the top)
 * into *t (zeroed or freed before). Errors name "path:line: what is wrong" (tokenizer.json:
 * "path: key: what is wrong") with a hint; *t is left zeroed on failure. */
int tok_load(Tokenizer *t, const char *path, MoeErr *err);

/* Same as tok_load from the file's bytes buf[0..n) in memory (borrowed; no NUL needed);
 * label stands for the path in messages. */
int tok_load_buffer(Tokenizer *t, const uint8_t *buf, size_t n, const char *label,
                    MoeErr *err);

/* Release everything t owns and zero it. Safe on a zeroed or half-built struct. */
void tok_free(Tokenizer *t);

/* ---- for data/tokenizer_hf.c ---- */

/* Read a tokenizer.json (buf[0..n), borrowed) into *t (zeroed before) as TOK_KIND_HF; the
 * errors and the failure contract of tok_load_buffer. */
int tok_load_hf(Tokenizer *t, const uint8_t *buf, size_t n, const char *label, MoeErr *err);

/* With vocab_size, tok_off/tok_len/tok_bytes and added set: build the word table
 * (tok_token_id; of ordinary ids with equal bytes the lowest is found). */
void tok_index_words(Tokenizer *t);

/* With n_merges and merges set: build the rank table. A repeated pair keeps its last rank
 * (as HF's merge map does) when last_wins; else the first repeat is an error. Returns -1,
 * or the rank of the first repeated pair (when !last_wins). */
int tok_index_ranks(Tokenizer *t, bool last_wins);

#endif
