/* sft.h: supervised fine-tuning records: JSON Lines files of prompt/completion pairs or
 * chat conversations, tokenized into one packed token stream with a per-token loss mask.
 *
 * A JSONL file holds one JSON object per line (blank lines are skipped), in either format:
 *   {"prompt": "...", "completion": "..."}   field names set by SftOpts (data.prompt_key,
 *                                             data.completion_key); other fields are ignored
 *   {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
 * A prompt/completion record is the text prompt + separator (not trained on), then the
 * completion and the end-of-text token (trained on). A conversation is rendered with the
 * chat template below, as plain text through the tokenizer (the markers are ordinary text,
 * several tokens each; text that spells "<|endoftext|>" stays text, only tok_eot() ends a
 * turn):
 *   system     "<|system|>\n" content "\n"                       not trained on
 *   user       "<|user|>\n" content "\n"                         not trained on
 *   assistant  "<|assistant|>\n" (not trained on) content EOT    content and EOT trained on
 * and a record that does not end with an assistant turn gets an EOT (not trained on), so
 * every record ends with EOT. A conversation needs at least one assistant message.
 * Each run of text of one kind (trained or not) is encoded on its own, so the mask
 * boundary is a token boundary (BPE never merges across it).
 *
 * Packing: the records of all files, in file and line order, are concatenated into one
 * stream (the EOT that ends each record separates it from the next), which the loader cuts
 * into windows as it cuts pretraining text (data/loader.h: a window may hold several
 * records and parts of records); mask[i] says whether token i is a loss target, so the
 * loader writes LOSS_IGNORE where it is 0. No padding exists.
 *
 * Errors name the file and line ("FILE:LINE: ...", JSON syntax errors also the column) and
 * the field, with a hint. The stream is built in memory at start (the records are small
 * next to a pretraining corpus); nothing is written to disk.
 * Ids are stored as uint32 (any vocabulary size; the loader reads the stream as a 4-byte
 * shard view, data/shard.h shard_view).
 * Non-goals: other chat templates, tool calls, per-record weights, multimodal content.
 */
#ifndef MOE_SFT_H
#define MOE_SFT_H

#include "core/common.h"
#include "data/tokenizer.h"

#define SFT_SYSTEM "<|system|>\n"
#define SFT_USER "<|user|>\n"
#define SFT_ASSISTANT "<|assistant|>\n"

typedef struct SftOpts {
    const char *prompt_key;       /* NULL = "prompt" */
    const char *completion_key;   /* NULL = "completion" */
    const char *separator;        /* appended to the prompt (not trained on); NULL = none */
} SftOpts;

typedef struct SftData {
    uint32_t *tokens;     /* (n_tokens) owned: every record, each ended by EOT */
    uint8_t *mask;        /* (n_tokens) owned: 1 = a loss target (completion or assistant
                             text and the EOT ending it), 0 = context only */
    size_t n_tokens, cap;
    size_t *rec_end;      /* (n_records) owned: index of the token after each record */
    size_t n_records, rec_cap;
    size_t n_trained;     /* tokens with mask 1 */
    size_t n_pairs;       /* records in the prompt/completion format */
    size_t n_chats;       /* records in the messages format */
} SftData;

/* Append the records of the JSONL text buf (n bytes, borrowed) to d (zeroed first by the
 * caller, or the result of earlier calls): label names it in errors ("LABEL:LINE: ...").
 * Fails (-1, err naming the line and field, with a hint) on a line that is not a JSON
 * object, a record in neither format or in both, a field of the wrong type, an unknown
 * role, or a conversation without an assistant message; d then holds the records before
 * that line (sft_free it). */
int sft_parse(SftData *d, const Tokenizer *tok, const uint8_t *buf, size_t n, const char *label,
              const SftOpts *o, MoeErr *err);

/* sft_parse over the files paths[0..n_paths) in order, into d (zeroed first). Also fails on
 * an unreadable file, and on a file with no record ("FILE: no records"). */
int sft_load(SftData *d, const Tokenizer *tok, const char *const *paths, int n_paths,
             const SftOpts *o, MoeErr *err);

/* Where validation starts: the token index of a record boundary, so that validation holds
 * whole records, the last ones, about frac of the tokens (the boundary nearest to
 * (1 - frac) n_tokens); at least one record on each side when frac > 0 and there are two
 * records or more; n_tokens when frac is 0 (no validation). */
size_t sft_val_start(const SftData *d, double frac);

/* Release and zero; safe on a zeroed or half-built set. */
void sft_free(SftData *d);

#endif
