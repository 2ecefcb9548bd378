/* cmd_config.c: `moetrain config keys`, the configuration reference generated from the key
 * table (config_write_reference, configs/config.h). See cmd_config.h. */
#include "train/cmd_config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "configs/config.h"
#include "train/cli.h"

static const char *CONFIG_HELP =
    "usage: moetrain config keys\n"
    "\n"
    "Prints the reference of every config key as Markdown: the rules every key follows,\n"
    "then per section a table of key, type, default, allowed values and meaning. It is\n"
    "generated from the key table the config reader itself uses (configs/config_keys.c),\n"
    "so it is always what this build accepts. docs/configuration.md is its output:\n"
    "\n"
    "  moetrain config keys > docs/configuration.md\n"
    "\n"
    "options:\n"
    "  -h, --help   this help\n";

static int is_help(const char *a) { return !strcmp(a, "-h") || !strcmp(a, "--help"); }

static int usage(const char *msg) { return cli_usage("config", "%s", msg); }

int cmd_config(int argc, char **argv) {
    if (argc < 1) return usage("missing config command (keys)");
    if (is_help(argv[0])) {
        fputs(CONFIG_HELP, stdout);
        return 0;
    }
    if (strcmp(argv[0], "keys") != 0) return usage("unknown config command");
    for (int i = 1; i < argc; i++) {
        if (is_help(argv[i])) {
            fputs(CONFIG_HELP, stdout);
            return 0;
        }
        return usage("config keys takes no arguments");
    }
    errno = 0;
    if (config_write_reference(stdout) || fflush(stdout)) {
        fprintf(stderr, "moetrain: error: cannot write the reference to stdout: %s\n",
                errno ? strerror(errno) : "write error");
        fprintf(stderr, "hint: check the file or pipe stdout is redirected to\n");
        return 1;
    }
    return 0;
}
