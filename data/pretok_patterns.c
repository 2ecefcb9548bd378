/* pretok_patterns.c: the byte-level pre-tokenizer patterns. See pretok_patterns.h. */
#include "data/pretok_patterns.h"

#include <stdbool.h>
#include <string.h>

#include "data/pretokenize.h"

static const char RE_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char RE_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/* tiktoken's spelling: the possessive ?+ and ++ give up nothing a match could use here
 * (what follows them cannot start with what they consumed), and \s*[\r\n] ends after the
 * last newline of a whitespace run as \s*[\r\n]+ does. */
static const char RE_CL100K[] =
    "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}+|\\p{N}{1,3}|"
    " ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+";
static const char RE_QWEN2[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

int tok_pattern_from_regex(const char *re) {
    if (!strcmp(re, RE_GPT2)) return TOK_PAT_GPT2_WS;
    if (!strcmp(re, RE_LLAMA3) || !strcmp(re, RE_CL100K)) return TOK_PAT_LLAMA3;
    if (!strcmp(re, RE_QWEN2)) return TOK_PAT_QWEN2;
    return -1;
}

const char *tok_pattern_name(TokPattern p) {
    switch (p) {
    case TOK_PAT_GPT2:
    case TOK_PAT_GPT2_WS: return "GPT-2";
    case TOK_PAT_LLAMA3: return "Llama 3 / cl100k";
    case TOK_PAT_QWEN2: return "Qwen2";
    default: return "?";
    }
}

const char *tok_pattern_regex(TokPattern p) {
    switch (p) {
    case TOK_PAT_LLAMA3: return RE_LLAMA3;
    case TOK_PAT_QWEN2: return RE_QWEN2;
    default: return RE_GPT2;
    }
}

/* ---------------------------------------------------------------- Llama 3 / Qwen2 */

static bool is_nl(uint32_t cp) { return cp == '\r' || cp == '\n'; }

/* Case-folded letter at s[0..n) that (?i:x) matches for ASCII lowercase x: x, its capital,
 * and for 's' also U+017F LATIN SMALL LETTER LONG S (which folds to 's'). Its byte length or
 * 0. */
static size_t fold_letter(const uint8_t *s, size_t n, char x) {
    if (n >= 1 && (s[0] == (uint8_t)x || s[0] == (uint8_t)(x - 'a' + 'A'))) return 1;
    if (x == 's' && n >= 2 && s[0] == 0xC5 && s[1] == 0xBF) return 2;
    return 0;
}

/* (?i:'s|'t|'re|'ve|'m|'ll|'d) at s (s[0] == '\''): its length or 0. */
static size_t contraction_ci(const uint8_t *s, size_t n) {
    static const char *const alts[] = {"s", "t", "re", "ve", "m", "ll", "d"};
    for (size_t a = 0; a < sizeof alts / sizeof alts[0]; a++) {
        size_t k = 1;
        for (const char *x = alts[a]; *x && k; x++) {
            size_t l = fold_letter(s + k, n - k, *x);
            k = l ? k + l : 0;
        }
        if (k) return k;
    }
    return 0;
}

/* End of the run of class cls starting at s[i]. */
static size_t class_run(const uint8_t *s, size_t n, size_t i, int cls) {
    while (i < n) {
        TokCp e = tok_cp_at(s, n, i, true);
        if (e.cls != cls) break;
        i += e.len;
    }
    return i;
}

/* End of the Llama 3 pattern's match at s[i] (i < n); max_digits 3 (Llama 3) or 1 (Qwen2).
 * The alternatives in the pattern's order; the first that matches wins. */
static size_t llama3_match(const uint8_t *s, size_t n, size_t i, int max_digits) {
    if (s[i] == '\'') {  /* (?i:'s|'t|'re|'ve|'m|'ll|'d) */
        size_t k = contraction_ci(s + i, n - i);
        if (k) return i + k;
    }
    TokCp c = tok_cp_at(s, n, i, true);
    /* [^\r\n\p{L}\p{N}]?\p{L}+ : the optional character is taken when a letter follows */
    if (c.cls != CL_LETTER && c.cls != CL_NUMBER && !is_nl(c.cp) && i + c.len < n &&
        tok_cp_at(s, n, i + c.len, true).cls == CL_LETTER)
        return class_run(s, n, i + c.len, CL_LETTER);
    if (c.cls == CL_LETTER) return class_run(s, n, i, CL_LETTER);
    if (c.cls == CL_NUMBER) {  /* \p{N}{1,3} or \p{N} */
        size_t k = i;
        for (int d = 0; d < max_digits && k < n; d++) {
            TokCp e = tok_cp_at(s, n, k, true);
            if (e.cls != CL_NUMBER) break;
            k += e.len;
        }
        return k;
    }
    /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
    size_t j = i;
    if (c.cp == ' ' && i + 1 < n && tok_cp_at(s, n, i + 1, true).cls == CL_OTHER) j = i + 1;
    if (j > i || c.cls == CL_OTHER) {
        size_t k = class_run(s, n, j, CL_OTHER);
        while (k < n && (s[k] == '\r' || s[k] == '\n')) k++;
        return k;
    }
    /* c is whitespace. \s*[\r\n]+ : ends after the run's last newline, if it has one */
    size_t k = i, last = i, after_nl = 0, count = 0;
    while (k < n) {
        TokCp e = tok_cp_at(s, n, k, true);
        if (e.cls != CL_SPACE) break;
        last = k;
        k += e.len;
        if (is_nl(e.cp)) after_nl = k;
        count++;
    }
    if (after_nl) return after_nl;
    /* \s+(?!\S) : a run followed by a non-space leaves its last character; else \s+ */
    if (k < n && count >= 2) return last;
    return k;
}

void tok_pattern_split(TokPattern p, const uint8_t *s, size_t n,
                       void (*fn)(const uint8_t *piece, size_t len, void *ctx), void *ctx) {
    if (p == TOK_PAT_GPT2 || p == TOK_PAT_GPT2_WS) {
        tok_pretokenize_gpt2(s, n, p == TOK_PAT_GPT2_WS, fn, ctx);
        return;
    }
    const int max_digits = p == TOK_PAT_QWEN2 ? 1 : 3;
    size_t i = 0;
    while (i < n) {
        size_t k = llama3_match(s, n, i, max_digits);
        fn(s + i, k - i, ctx);
        i = k;
    }
}
