/* records.h: the documents of a text file, read in bounded blocks.
 *
 * A text file holds one or more documents (the encoder puts the <|endoftext|> token after
 * each, data/encode.h). How a file splits into documents is its record format:
 *   file       the whole file is one document (the default; what earlier versions did)
 *   paragraph  documents are separated by blank lines (lines empty or of spaces, tabs and
 *              carriage returns only); a document is its lines from the first character of
 *              its first line to the end of its last line, without the final newline
 *   jsonl      JSON Lines: each non-blank line is a JSON object whose "text" member (a
 *              string) is the document; an empty "text" is skipped (no document)
 *   auto       jsonl for a name ending in .jsonl, else file
 *
 * The reader never holds the whole file: it reads blocks of REC_BLOCK bytes (more only when
 * one document of the paragraph or jsonl format, or one uncuttable stretch of a file
 * document, is longer) and hands out a batch of complete items each call. An item is a
 * document (paragraph, jsonl) or a piece of one: a file document is cut into pieces of about
 * chunk_bytes at "safe cuts", positions p where text[p-2] and text[p] are printable
 * non-space ASCII and text[p-1] is '\n'. No pre-token of GPT-2's pattern (nor of the
 * later byte-level patterns that keep a newline out of a following word) spans such a p, and
 * the pre-tokens before p do not look past it, so encoding the pieces one by one gives
 * exactly the ids of encoding the document whole (tests/data/test_encode.c checks it).
 *
 * Non-goals: other JSON fields (prompt/completion records are fine-tuning data, read
 * elsewhere), compressed input, encodings other than UTF-8 (bytes pass through unchanged).
 */
#ifndef MOE_RECORDS_H
#define MOE_RECORDS_H

#include <stdio.h>

#include "core/common.h"

typedef enum { REC_AUTO, REC_FILE, REC_PARAGRAPH, REC_JSONL } RecFormat;
#define REC_N_FORMATS 4
extern const char *const rec_format_names[REC_N_FORMATS];   /* "auto", "file", ... */

#define REC_CHUNK ((size_t)256 << 10)         /* default piece of a file document */
#define REC_BLOCK (16 * REC_CHUNK)            /* bytes read per block: 16 pieces */

/* The format used for path: f itself, or for REC_AUTO jsonl when path ends in ".jsonl"
 * and file otherwise. */
RecFormat rec_resolve(RecFormat f, const char *path);

typedef struct RecItem {
    size_t off, len;     /* text[off .. off+len) of the batch */
    bool doc_end;        /* the last piece of a document: an <|endoftext|> follows it */
} RecItem;

typedef struct RecReader {
    FILE *fp;
    char *path;               /* owned */
    RecFormat fmt;            /* resolved */
    size_t chunk;             /* piece size of file documents */
    uint8_t *buf;             /* (cap) bytes read and not yet handed out: [0, n) */
    size_t n, cap;
    bool eof;
    long line;                /* jsonl: line number of buf[0] (1-based) */
    uint64_t bytes_done;      /* file bytes handed out so far */
    uint64_t size;            /* file size (for progress) */
    uint64_t docs;            /* documents handed out */
    /* the current batch (valid until the next call) */
    uint8_t *text;            /* (n_text) the items' bytes (jsonl: the decoded "text" strings) */
    size_t n_text, text_cap;
    RecItem *items;           /* (n_items) */
    size_t n_items, items_cap;
} RecReader;

/* Open path for reading in format fmt (REC_AUTO resolved here); chunk_bytes 0 means
 * REC_CHUNK, and blocks are 16 chunks (tests make both small to reach the block edges).
 * Fails (-1, err naming the file) when it cannot be opened or is empty. */
int rec_open(RecReader *r, const char *path, RecFormat fmt, size_t chunk_bytes, MoeErr *err);

/* The next batch of items into r->text / r->items. Returns 1 with a batch (n_items >= 1),
 * 0 at the end of the file, -1 with err (file:line and what is wrong) on a read error or a
 * malformed jsonl line; also -1 at the end when the file held no document at all. */
int rec_next(RecReader *r, MoeErr *err);

/* Close and zero; safe on a zeroed reader. */
void rec_close(RecReader *r);

#endif
