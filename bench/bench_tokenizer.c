/* bench_tokenizer.c: encode throughput of a tokenizer (a moetrain .bpe or a Hugging Face
 * tokenizer.json) on one thread, in MB/s of input text.
 *
 *   bench_tokenizer TOKENIZER TEXT [REPEATS]
 *
 * Loads the tokenizer (load time printed), then encodes TEXT REPEATS times (default 5) with
 * tok_encode, each call a fresh word cache as in `moetrain data encode` of one file, and
 * prints the best and the median rate and the ids per byte. Not a test.
 */
#include <stdio.h>
#include <stdlib.h>

#include "core/clock.h"
#include "core/fs.h"
#include "data/tokenizer.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_tokenizer TOKENIZER TEXT [REPEATS]\n");
        return 2;
    }
    int reps = argc > 3 ? atoi(argv[3]) : 5;
    if (reps < 1 || reps > 1000) reps = 5;
    Tokenizer tok;
    MoeErr err;
    double t0 = moe_now();
    if (tok_load(&tok, argv[1], &err)) {
        fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
        return 1;
    }
    double t_load = moe_now() - t0;
    uint8_t *text;
    size_t n;
    if (fs_read_file(argv[2], &text, &n, &err)) {
        fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
        return 1;
    }
    char line[512];
    tok_describe(&tok, line, sizeof line);
    printf("tokenizer %s: %s (loaded in %.3f s)\n", argv[1], line, t_load);
    int32_t *ids = moe_malloc((n ? n : 1) * sizeof(int32_t));
    double *mbs = malloc(sizeof(double) * (size_t)reps);
    size_t n_ids = 0;
    for (int r = 0; r < reps; r++) {
        double t = moe_now();
        tok_encode(&tok, text, n, ids, n, &n_ids);
        mbs[r] = (double)n / 1e6 / (moe_now() - t);
    }
    qsort(mbs, (size_t)reps, sizeof *mbs, cmp_double);
    printf("text %s: %zu bytes -> %zu ids (%.3f ids/byte); encode best %.1f MB/s, median %.1f "
           "MB/s over %d runs (1 thread)\n", argv[2], n, n_ids, (double)n_ids / (double)n,
           mbs[reps - 1], mbs[reps / 2], reps);
    free(mbs);
    moe_free(ids);
    moe_free(text);
    tok_free(&tok);
    return 0;
}
