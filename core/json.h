/* json.h: a small strict JSON reader for the JSON moetrain reads: its run logs
 * (metrics.jsonl, eval.jsonl, one value per line), safetensors headers and the JSON files of
 * a Hugging Face export directory.
 *
 * Accepts RFC 8259 JSON: objects, arrays, numbers, strings (with \uXXXX escapes, emitted as
 * UTF-8), true/false/null. One deliberate extension: the bare words nan, -nan, inf, -inf,
 * NaN, Infinity and -Infinity are read as non-finite numbers (what printf's %g and other
 * writers print for them; moetrain itself writes null). Everything else (trailing commas, single
 * quotes, leading zeros, comments, a second value on the line, nesting deeper than 64) is
 * rejected with "FILE:LINE:COL: what" so a corrupted file is named, not misplotted.
 *
 * Non-goals: streaming, writing JSON, preserving key order beyond what the text had,
 * numbers beyond double precision.
 */
#ifndef MOE_JSON_H
#define MOE_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include "core/common.h"

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUM, JSON_STR, JSON_ARR, JSON_OBJ } JsonType;

typedef struct JsonValue {
    JsonType type;
    bool b;                   /* JSON_BOOL */
    double num;               /* JSON_NUM (may be NaN/inf, see the extension above) */
    char *str;                /* JSON_STR: owned, NUL-terminated UTF-8 */
    size_t n;                 /* JSON_ARR / JSON_OBJ: number of items */
    struct JsonValue *items;  /* (n) owned: array elements or object values */
    char **keys;              /* (n) owned: object keys (NULL for arrays) */
} JsonValue;

/* Parses exactly one JSON value from text[0..len) (surrounding whitespace allowed) into
 * *out, which the caller frees with json_free. file and line only label error messages
 * ("file:line:col: ..."); on error returns -1 with err filled, *out is left zeroed and
 * nothing is leaked. */
int json_parse(JsonValue *out, const char *text, size_t len, const char *file, long line,
               MoeErr *err);

/* Frees everything v owns and zeroes it; safe on a zeroed value. */
void json_free(JsonValue *v);

/* Member of an object by key (last one wins on duplicates), or NULL when absent or when
 * obj is not an object. Borrowed. */
const JsonValue *json_get(const JsonValue *obj, const char *key);

/* Number of a member: its value when it is a number, NaN when absent, null or not a number. */
double json_get_num(const JsonValue *obj, const char *key);

#endif
