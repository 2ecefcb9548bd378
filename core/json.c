/* json.c: strict recursive-descent JSON parser (see json.h for what is accepted).
 *
 * Errors carry the 1-based column of the offending byte. Recursion depth is capped so a
 * hostile line cannot overflow the stack. Containers grow by doubling through moe_realloc.
 */
#include "core/json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 64

typedef struct {
    const char *s;
    size_t len, pos;
    const char *file;
    long line;
    MoeErr *err;
} Parser;

static int perr(Parser *p, const char *what) {
    moe_errorf(p->err, "%s:%ld:%zu: %s", p->file, p->line, p->pos + 1, what);
    moe_hintf(p->err, "the file should hold one JSON object per line as written by moetrain; "
                      "a damaged line can be deleted");
    return -1;
}

static void skip_ws(Parser *p) {
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static bool match_word(Parser *p, const char *w) {
    size_t n = strlen(w);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, w, n) != 0) return false;
    /* the word must end here: "nullx" or "true1" is garbage */
    if (p->pos + n < p->len) {
        char c = p->s[p->pos + n];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '_')
            return false;
    }
    p->pos += n;
    return true;
}

static int parse_value(Parser *p, JsonValue *v, int depth);

static void put_utf8(char *buf, size_t *n, unsigned cp) {
    if (cp < 0x80) {
        buf[(*n)++] = (char)cp;
    } else if (cp < 0x800) {
        buf[(*n)++] = (char)(0xC0 | (cp >> 6));
        buf[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        buf[(*n)++] = (char)(0xE0 | (cp >> 12));
        buf[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        buf[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        buf[(*n)++] = (char)(0xF0 | (cp >> 18));
        buf[(*n)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        buf[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        buf[(*n)++] = (char)(0x80 | (cp & 0x3F));
    }
}

static int hex4(Parser *p, unsigned *out) {
    unsigned v = 0;
    if (p->len - p->pos < 4) return perr(p, "truncated \\u escape");
    for (int i = 0; i < 4; i++) {
        char c = p->s[p->pos];
        unsigned d;
        if (c >= '0' && c <= '9') d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') d = (unsigned)(c - 'A' + 10);
        else return perr(p, "bad hex digit in \\u escape");
        v = v * 16 + d;
        p->pos++;
    }
    *out = v;
    return 0;
}

/* p->pos at the opening quote. The decoded string is never longer than the source. */
static int parse_string(Parser *p, char **out) {
    size_t start = ++p->pos, end = start;
    while (end < p->len && p->s[end] != '"') end += (p->s[end] == '\\') ? 2 : 1;
    if (end >= p->len) {
        p->pos = p->len;
        return perr(p, "unterminated string");
    }
    char *buf = moe_malloc(end - start + 1);
    size_t n = 0;
    while (p->pos < end) {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c < 0x20) {
            moe_free(buf);
            return perr(p, "control character in string (escape it)");
        }
        if (c != '\\') {
            buf[n++] = (char)c;
            p->pos++;
            continue;
        }
        p->pos++;
        char e = p->s[p->pos++];
        switch (e) {
        case '"': buf[n++] = '"'; break;
        case '\\': buf[n++] = '\\'; break;
        case '/': buf[n++] = '/'; break;
        case 'b': buf[n++] = '\b'; break;
        case 'f': buf[n++] = '\f'; break;
        case 'n': buf[n++] = '\n'; break;
        case 'r': buf[n++] = '\r'; break;
        case 't': buf[n++] = '\t'; break;
        case 'u': {
            unsigned cp;
            if (hex4(p, &cp)) { moe_free(buf); return -1; }
            /* a surrogate pair is 12 source bytes for 4 output bytes: fits */
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned lo;
                if (p->pos + 2 > end || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') {
                    moe_free(buf);
                    return perr(p, "high surrogate without a low surrogate");
                }
                p->pos += 2;
                if (hex4(p, &lo)) { moe_free(buf); return -1; }
                if (lo < 0xDC00 || lo > 0xDFFF) {
                    moe_free(buf);
                    return perr(p, "invalid low surrogate");
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                moe_free(buf);
                return perr(p, "lone low surrogate");
            }
            if (cp == 0) { moe_free(buf); return perr(p, "\\u0000 is not allowed"); }
            put_utf8(buf, &n, cp);
            break;
        }
        default:
            p->pos--;
            moe_free(buf);
            return perr(p, "invalid escape in string");
        }
    }
    buf[n] = 0;
    p->pos = end + 1;
    *out = buf;
    return 0;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static int parse_number(Parser *p, JsonValue *v) {
    size_t start = p->pos, i = p->pos;
    if (i < p->len && p->s[i] == '-') i++;
    /* the non-finite extension: nan, -nan, inf, -inf, NaN, Infinity, -Infinity */
    const char *words[] = {"nan", "NaN", "Infinity", "inf"};
    for (int w = 0; w < 4; w++) {
        size_t save = p->pos;
        p->pos = i;
        if (match_word(p, words[w])) {
            double x = w < 2 ? (double)NAN : (double)INFINITY;
            v->type = JSON_NUM;
            v->num = (p->s[start] == '-') ? -x : x;
            return 0;
        }
        p->pos = save;
    }
    if (i >= p->len || !is_digit(p->s[i])) {
        p->pos = i;
        return perr(p, "expected a value");
    }
    if (p->s[i] == '0' && i + 1 < p->len && is_digit(p->s[i + 1])) {
        p->pos = i;
        return perr(p, "number with a leading zero");
    }
    while (i < p->len && is_digit(p->s[i])) i++;
    if (i < p->len && p->s[i] == '.') {
        i++;
        if (i >= p->len || !is_digit(p->s[i])) {
            p->pos = i;
            return perr(p, "expected a digit after '.'");
        }
        while (i < p->len && is_digit(p->s[i])) i++;
    }
    if (i < p->len && (p->s[i] == 'e' || p->s[i] == 'E')) {
        i++;
        if (i < p->len && (p->s[i] == '+' || p->s[i] == '-')) i++;
        if (i >= p->len || !is_digit(p->s[i])) {
            p->pos = i;
            return perr(p, "expected a digit in the exponent");
        }
        while (i < p->len && is_digit(p->s[i])) i++;
    }
    /* strtod needs a terminated copy: the text is not NUL-terminated at the number's end */
    char tmp[64];
    size_t n = i - start;
    if (n >= sizeof tmp) return perr(p, "number too long");
    memcpy(tmp, p->s + start, n);
    tmp[n] = 0;
    v->type = JSON_NUM;
    v->num = strtod(tmp, NULL);
    p->pos = i;
    return 0;
}

/* Appends a zeroed slot to a container, doubling its capacity as needed. */
static JsonValue *push_item(JsonValue *v, size_t *cap, bool with_key) {
    if (v->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        v->items = moe_realloc(v->items, *cap * sizeof *v->items, nc * sizeof *v->items);
        if (with_key) v->keys = moe_realloc(v->keys, *cap * sizeof *v->keys, nc * sizeof *v->keys);
        *cap = nc;
    }
    JsonValue *it = &v->items[v->n];
    memset(it, 0, sizeof *it);
    if (with_key) v->keys[v->n] = NULL;
    v->n++;
    return it;
}

static int parse_array(Parser *p, JsonValue *v, int depth) {
    size_t cap = 0;
    v->type = JSON_ARR;
    p->pos++; /* '[' */
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == ']') {
        p->pos++;
        return 0;
    }
    for (;;) {
        JsonValue *it = push_item(v, &cap, false);
        if (parse_value(p, it, depth + 1)) return -1;
        skip_ws(p);
        if (p->pos >= p->len) return perr(p, "unterminated array (expected ',' or ']')");
        char c = p->s[p->pos];
        if (c == ']') { p->pos++; return 0; }
        if (c != ',') return perr(p, "expected ',' or ']' in array");
        p->pos++;
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ']') return perr(p, "trailing comma in array");
    }
}

static int parse_object(Parser *p, JsonValue *v, int depth) {
    size_t cap = 0;
    v->type = JSON_OBJ;
    p->pos++; /* '{' */
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == '}') {
        p->pos++;
        return 0;
    }
    for (;;) {
        skip_ws(p);
        if (p->pos >= p->len || p->s[p->pos] != '"')
            return perr(p, p->pos < p->len && p->s[p->pos] == '}' ? "trailing comma in object"
                                                                  : "expected a string key");
        JsonValue *it = push_item(v, &cap, true);
        if (parse_string(p, &v->keys[v->n - 1])) return -1;
        skip_ws(p);
        if (p->pos >= p->len || p->s[p->pos] != ':') return perr(p, "expected ':' after key");
        p->pos++;
        if (parse_value(p, it, depth + 1)) return -1;
        skip_ws(p);
        if (p->pos >= p->len) return perr(p, "unterminated object (expected ',' or '}')");
        char c = p->s[p->pos];
        if (c == '}') { p->pos++; return 0; }
        if (c != ',') return perr(p, "expected ',' or '}' in object");
        p->pos++;
    }
}

static int parse_value(Parser *p, JsonValue *v, int depth) {
    if (depth > JSON_MAX_DEPTH) return perr(p, "nesting deeper than 64");
    skip_ws(p);
    if (p->pos >= p->len) return perr(p, "unexpected end of line (expected a value)");
    char c = p->s[p->pos];
    if (c == '{') return parse_object(p, v, depth);
    if (c == '[') return parse_array(p, v, depth);
    if (c == '"') {
        v->type = JSON_STR;
        return parse_string(p, &v->str);
    }
    if (match_word(p, "true")) { v->type = JSON_BOOL; v->b = true; return 0; }
    if (match_word(p, "false")) { v->type = JSON_BOOL; v->b = false; return 0; }
    if (match_word(p, "null")) { v->type = JSON_NULL; return 0; }
    return parse_number(p, v);
}

int json_parse(JsonValue *out, const char *text, size_t len, const char *file, long line,
               MoeErr *err) {
    Parser p = {text, len, 0, file, line, err};
    memset(out, 0, sizeof *out);
    if (parse_value(&p, out, 0)) goto fail;
    skip_ws(&p);
    if (p.pos != p.len) {
        perr(&p, "unexpected text after the JSON value");
        goto fail;
    }
    return 0;
fail:
    json_free(out);
    return -1;
}

void json_free(JsonValue *v) {
    if (!v) return;
    for (size_t i = 0; i < v->n; i++) {
        if (v->items) json_free(&v->items[i]);
        if (v->keys) moe_free(v->keys[i]);
    }
    moe_free(v->items);
    moe_free(v->keys);
    moe_free(v->str);
    memset(v, 0, sizeof *v);
}

const JsonValue *json_get(const JsonValue *obj, const char *key) {
    if (!obj || obj->type != JSON_OBJ) return NULL;
    for (size_t i = obj->n; i-- > 0;)
        if (obj->keys[i] && strcmp(obj->keys[i], key) == 0) return &obj->items[i];
    return NULL;
}

double json_get_num(const JsonValue *obj, const char *key) {
    const JsonValue *v = json_get(obj, key);
    return (v && v->type == JSON_NUM) ? v->num : (double)NAN;
}
