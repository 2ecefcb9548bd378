/* bench_ckpt.c: what the whole-file seal (checkpoints/seal.h) costs on a checkpoint of a real
 * size: SHA-256 in memory, then save (with its seal), verification of a fresh file (hashed),
 * of a settled one (hashed once, then cached) and a full load.
 *
 *   bench_ckpt [CONFIG] [DIR]
 *
 * CONFIG defaults to configs/mixtral_tiny.yaml (its model, with AdamW moments);
 * the file is DIR/bench_ckpt.h5 (default /tmp), removed at the end. Times are wall clock
 * and include the page cache's help (the file was just written). Not a test.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoints/ckpt.h"
#include "checkpoints/seal.h"
#include "checkpoints/sha256.h"
#include "train/train.h"

static int die(const MoeErr *err) {
    fprintf(stderr, "bench_ckpt: %s\n", err->msg);
    return 1;
}

int main(int argc, char **argv) {
    const char *cfg = argc > 1 ? argv[1] : "configs/mixtral_tiny.yaml";
    const char *dir = argc > 2 ? argv[2] : "/tmp";
    char path[4096], tok[4096];
    snprintf(path, sizeof path, "%s/bench_ckpt.h5", dir);
    snprintf(tok, sizeof tok, "%s", cfg);   /* any file serves as the stored tokenizer bytes */
    Config c;
    MoeErr err;
    if (config_load(&c, cfg, &err)) return die(&err);
    ModelShape s;
    config_model_shape(&c, &s);
    Model m;
    model_init(&m, &s, 0, s.E, 1);

    /* SHA-256 alone, in memory (64 MiB, best of 3) */
    const size_t n = (size_t)64 << 20;
    uint8_t *buf = moe_malloc(n), d[SHA256_BYTES];
    for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)(i * 2654435761u >> 13);
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = moe_now();
        Sha256 h;
        sha256_init(&h);
        sha256_update(&h, buf, n);
        sha256_final(&h, d);
        best = moe_now() - t0 < best ? moe_now() - t0 : best;
    }
    moe_free(buf);
    printf("sha256 in memory      %7.1f MB/s\n", (double)n / best / 1e6);

    CkptMeta meta = {.step = 1, .seed = 1};
    double t0 = moe_now();
    if (ckpt_save(path, &c, &m, &meta, tok, true, &err)) return die(&err);
    const double t_save = moe_now() - t0;
    struct stat st;
    stat(path, &st);
    const double mb = (double)st.st_size / 1e6;
    t0 = moe_now();
    if (ckpt_seal(path, &err)) return die(&err);   /* the seal's share of the save */
    const double t_seal = moe_now() - t0;
    printf("file                  %7.1f MB (%s, with AdamW moments)\n", mb, cfg);
    printf("ckpt_save             %7.3f s, of which the seal (hash + record + fsync) %.3f s\n",
           t_save, t_seal);
    t0 = moe_now();
    if (ckpt_verify(path, NULL, &err)) return die(&err);
    const double t_fresh = moe_now() - t0;
    printf("ckpt_verify, fresh    %7.3f s  (%.0f MB/s: hashed on every open)\n", t_fresh,
           mb / t_fresh);
    sleep(SEAL_SETTLE_S + 1);
    t0 = moe_now();
    if (ckpt_verify(path, NULL, &err)) return die(&err);
    const double t_first = moe_now() - t0;
    t0 = moe_now();
    if (ckpt_verify(path, NULL, &err)) return die(&err);
    const double t_cached = moe_now() - t0;
    printf("ckpt_verify, settled  %7.3f s first, %.4f s after (cached verdict)\n", t_first,
           t_cached);
    t0 = moe_now();
    if (ckpt_load(path, &m, NULL, true, &err)) return die(&err);
    printf("ckpt_load (cached)    %7.3f s  (reads and Fletcher32-checks every tensor)\n",
           moe_now() - t0);
    unlink(path);
    model_free(&m);
    config_free(&c);
    return 0;
}
