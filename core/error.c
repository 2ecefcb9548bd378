/* error.c: assert and error messages. See error.h. */
#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

int moe_log_rank = -1;
void (*moe_abort_hook)(void) = NULL;

void moe_assert_fail(const char *file, int line, const char *cond, const char *fmt, ...) {
    fflush(stdout);
    if (moe_log_rank >= 0) fprintf(stderr, "[rank %d] ", moe_log_rank);
    fprintf(stderr, "%s:%d: assertion failed: %s: ", file, line, cond);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    fflush(stderr);
    if (moe_abort_hook) moe_abort_hook();
    abort();
}

int moe_errorf(MoeErr *err, const char *fmt, ...) {
    if (!err) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    err->hint[0] = 0;
    return -1;
}

int moe_hintf(MoeErr *err, const char *fmt, ...) {
    if (!err) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->hint, sizeof err->hint, fmt, ap);
    va_end(ap);
    return -1;
}
