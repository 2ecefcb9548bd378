/* cli.c: see cli.h. */
#include "train/cli.h"

#include <stdarg.h>
#include <stdio.h>

int cli_usage(const char *cmd, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "moetrain: %s (see moetrain%s%s --help)\n", msg, cmd ? " " : "",
            cmd ? cmd : "");
    return 2;
}
