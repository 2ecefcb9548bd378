/* json_out.c: JSON string literals and exact numbers. See json_out.h. */
#include "checkpoints/json_out.h"

#include <stdlib.h>

void json_out_num(char *out, size_t cap, double x) {
    if (!out || cap == 0) return;   /* nothing to write into */
    for (int p = 1; p <= 17; p++) {
        snprintf(out, cap, "%.*g", p, x);
        if (strtod(out, NULL) == x) return;
    }
}

void json_out_str(FILE *fp, const char *s, size_t n) {
    fputc('"', fp);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') fprintf(fp, "\\%c", c);
        else if (c < 0x20) fprintf(fp, "\\u%04x", c);
        else fputc(c, fp);
    }
    fputc('"', fp);
}
