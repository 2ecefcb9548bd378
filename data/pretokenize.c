/* pretokenize.c: GPT-2's pre-tokenizer and byte alphabet. See pretokenize.h. */
#include "data/pretokenize.h"

#include <stdbool.h>

#include "data/unicode_tables.h"

/* ---------------------------------------------------------------- UTF-8 and classes */

static bool in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return true;
    }
    return false;
}
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static int cp_class(uint32_t cp, bool white_space) {
    if (cp < 128) {  /* ASCII fast path; agrees with the tables */
        if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return CL_LETTER;
        if (cp >= '0' && cp <= '9') return CL_NUMBER;
        if (cp == ' ' || (cp >= 9 && cp <= 13)) return CL_SPACE;
        /* U+001C..U+001F: str.isspace says yes, the White_Space property says no */
        if (cp >= 0x1C && cp <= 0x1F) return white_space ? CL_OTHER : CL_SPACE;
        return CL_OTHER;
    }
    if (in_ranges(UNI_LETTER, NELEM(UNI_LETTER), cp)) return CL_LETTER;
    if (in_ranges(UNI_NUMBER, NELEM(UNI_NUMBER), cp)) return CL_NUMBER;
    if (in_ranges(UNI_SPACE, NELEM(UNI_SPACE), cp)) return CL_SPACE;
    return CL_OTHER;
}

TokCp tok_cp_at(const uint8_t *s, size_t n, size_t i, bool white_space) {
    TokCp r = {s[i], CL_OTHER, 1};
    uint8_t c = s[i];
    if (c < 0x80) { r.cls = cp_class(c, white_space); return r; }
    size_t len;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; v = c & 0x1Fu; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; v = c & 0x0Fu; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; v = c & 0x07u; min = 0x10000; }
    else return r;
    if (len > n - i) return r;
    for (size_t k = 1; k < len; k++) {
        if ((s[i + k] & 0xC0) != 0x80) return r;
        v = (v << 6) | (s[i + k] & 0x3Fu);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return r;
    r.cp = v; r.cls = cp_class(v, white_space); r.len = len;
    return r;
}

/* ---------------------------------------------------------------- the pre-tokenizer */

/* Length of a contraction 's 't 're 've 'm 'll 'd at s (s[0] == '\''), or 0. */
static size_t contraction_len(const uint8_t *s, size_t n) {
    if (n >= 2 && (s[1] == 's' || s[1] == 't' || s[1] == 'm' || s[1] == 'd')) return 2;
    if (n >= 3 && ((s[1] == 'r' && s[2] == 'e') || (s[1] == 'v' && s[2] == 'e') ||
                   (s[1] == 'l' && s[2] == 'l'))) return 3;
    return 0;
}

void tok_pretokenize(const uint8_t *s, size_t n,
                     void (*fn)(const uint8_t *piece, size_t len, void *ctx), void *ctx) {
    tok_pretokenize_gpt2(s, n, false, fn, ctx);
}

void tok_pretokenize_gpt2(const uint8_t *s, size_t n, bool ws,
                          void (*fn)(const uint8_t *piece, size_t len, void *ctx), void *ctx) {
    size_t i = 0;
    while (i < n) {
        if (s[i] == '\'') {
            size_t k = contraction_len(s + i, n - i);
            if (k) { fn(s + i, k, ctx); i += k; continue; }
        }
        TokCp c = tok_cp_at(s, n, i, ws);
        /* " ?\p{L}+ | ?\p{N}+ | ?[^\s\p{L}\p{N}]+": an optional U+0020 then a run of one class */
        size_t j = i;
        TokCp first = c;
        if (c.cp == ' ' && i + 1 < n) {
            TokCp d = tok_cp_at(s, n, i + 1, ws);
            if (d.cls != CL_SPACE) { j = i + 1; first = d; }
        }
        if (first.cls != CL_SPACE) {
            size_t k = j + first.len;
            while (k < n) {
                TokCp e = tok_cp_at(s, n, k, ws);
                if (e.cls != first.cls) break;
                k += e.len;
            }
            fn(s + i, k - i, ctx);
            i = k;
            continue;
        }
        /* "\s+(?!\S)|\s+": a whitespace run followed by a non-space gives its last
         * character to the next token (unless the run is one character long). */
        size_t k = i, last = i, count = 0;
        while (k < n) {
            TokCp e = tok_cp_at(s, n, k, ws);
            if (e.cls != CL_SPACE) break;
            last = k;
            k += e.len;
            count++;
        }
        if (k < n && count >= 2) k = last;
        fn(s + i, k - i, ctx);
        i = k;
    }
}

/* ---------------------------------------------------------------- GPT-2 byte alphabet */

uint32_t tok_byte_to_unicode(uint8_t b) {
    /* Printable ranges '!'..'~', 0xA1..0xAC, 0xAE..0xFF map to themselves; the other 68
     * bytes map to 256, 257, ... in increasing byte order. */
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) return b;
    if (b <= 0x20) return 256u + b;                 /* 0..32   -> 256..288 */
    if (b <= 0xA0) return 256u + 33u + (b - 0x7Fu); /* 127..160 -> 289..322 */
    return 256u + 33u + 34u;                        /* 173     -> 323 */
}
