/* cmd_tokenizer.c: `moetrain tokenizer info` and `moetrain tokenizer encode`. See
 * cmd_tokenizer.h. */
#include "train/cmd_tokenizer.h"

#include <stdio.h>
#include <string.h>

#include "core/fs.h"
#include "data/tokenizer.h"
#include "train/cli.h"

static const char *INFO_HELP =
    "usage: moetrain tokenizer info FILE\n"
    "\n"
    "Names the tokenizer FILE (a moetrain .bpe or a Hugging Face tokenizer.json holding a\n"
    "byte-level BPE): its kind, number of tokens and merges, pre-tokenizer pattern and\n"
    "end-of-text token. Refused files are explained (docs/tokenizers.md).\n";

static const char *ENCODE_HELP =
    "usage: moetrain tokenizer encode --tokenizer FILE [TEXT_FILE]\n"
    "\n"
    "Prints the token ids of TEXT_FILE (standard input when absent) on one line, separated\n"
    "by spaces, as training would encode it (no end-of-text token is added; added tokens\n"
    "in the text are encoded as plain text).\n"
    "\n"
    "options:\n"
    "  --tokenizer FILE   a moetrain .bpe or a Hugging Face tokenizer.json\n";

static bool is_help(const char *a) { return !strcmp(a, "-h") || !strcmp(a, "--help"); }

static int fail(const MoeErr *err) {
    fprintf(stderr, "moetrain: error: %s\n", err->msg);
    if (err->hint[0]) fprintf(stderr, "hint: %s\n", err->hint);
    return 1;
}

int cmd_tokenizer_info(int argc, char **argv) {
    if (argc >= 2 && is_help(argv[1])) {
        fputs(INFO_HELP, stdout);
        return 0;
    }
    if (argc != 2 || argv[1][0] == '-')
        return cli_usage("tokenizer info", "expected one tokenizer FILE");
    Tokenizer tok;
    MoeErr err;
    if (tok_load(&tok, argv[1], &err)) return fail(&err);
    char line[512];
    tok_describe(&tok, line, sizeof line);
    printf("%s: %s\n", argv[1], line);
    tok_free(&tok);
    return 0;
}

/* All of standard input into a new buffer (*n bytes); NULL on a read error. */
static uint8_t *read_stdin(size_t *n) {
    size_t cap = 1 << 16;
    uint8_t *buf = moe_malloc(cap);
    *n = 0;
    for (;;) {
        if (*n == cap) {
            buf = moe_realloc(buf, cap, 2 * cap);
            cap *= 2;
        }
        size_t got = fread(buf + *n, 1, cap - *n, stdin);
        *n += got;
        if (got == 0) break;
    }
    if (ferror(stdin)) {
        moe_free(buf);
        return NULL;
    }
    return buf;
}

int cmd_tokenizer_encode(int argc, char **argv) {
    const char *tokp = NULL, *text = NULL;
    for (int i = 1; i < argc; i++) {
        if (is_help(argv[i])) {
            fputs(ENCODE_HELP, stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--tokenizer")) {
            if (i + 1 >= argc) return cli_usage("tokenizer encode", "missing value after '--tokenizer'");
            tokp = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usage("tokenizer encode", "unknown option '%s'", argv[i]);
        } else if (text) {
            return cli_usage("tokenizer encode", "more than one text file ('%s')", argv[i]);
        } else {
            text = argv[i];
        }
    }
    if (!tokp) return cli_usage("tokenizer encode", "--tokenizer is required");
    Tokenizer tok;
    MoeErr err;
    if (tok_load(&tok, tokp, &err)) return fail(&err);
    uint8_t *buf = NULL;
    size_t n = 0;
    int rc = 0;
    if (text && strcmp(text, "-") != 0) {
        rc = fs_read_file(text, &buf, &n, &err);
    } else if (!(buf = read_stdin(&n))) {
        moe_errorf(&err, "cannot read standard input");
        moe_hintf(&err, "give the text as a file");
        rc = -1;
    }
    if (!rc) {
        size_t n_ids = 0;
        int32_t *ids = tok_encode_alloc(&tok, buf, n, &n_ids);
        for (size_t i = 0; i < n_ids; i++) printf(i ? " %d" : "%d", (int)ids[i]);
        printf("\n");
        moe_free(ids);
    }
    moe_free(buf);
    tok_free(&tok);
    return rc ? fail(&err) : 0;
}
