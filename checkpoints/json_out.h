/* json_out.h: the two JSON writers the exporters need: a string literal and a number that
 * reads back exactly. The exporters print their fixed documents (config.json,
 * tokenizer.json, adapter_config.json) with fprintf around these.
 *
 * Non-goals: a document builder, \u escapes beyond control characters (the strings written
 * are UTF-8 and stay UTF-8).
 */
#ifndef MOE_JSON_OUT_H
#define MOE_JSON_OUT_H

#include <stddef.h>
#include <stdio.h>

/* Write s[0..n) (borrowed, any bytes but NUL meaningful) to fp as a JSON string: quotes,
 * '"' and '\\' escaped, bytes below 0x20 as \u00XX, everything else verbatim. */
void json_out_str(FILE *fp, const char *s, size_t n);

/* The shortest "%.*g" text (1..17 digits) of x that strtod reads back as exactly x, into
 * out (cap bytes; 32 suffice). JSON has no float32/float64 distinction, so a float32 value
 * widened to double keeps its exact value. */
void json_out_num(char *out, size_t cap, double x);

#endif
