/* seal_fixture.h: the fixture of test_seal.c and test_seal_attrs.c: the reference
 * checkpoint g_ref of a tiny MoE model g_m (V=258 C=8 L=1 H=2 Hkv=1 D=4 F=6 E=2 K=1; a
 * 220 KB file) saved with distinct AdamW moments, each test in its own mkdtemp directory,
 * and file helpers. Helpers are static inline: each test file uses a subset.
 */
#ifndef MOE_TEST_SEAL_FIXTURE_H
#define MOE_TEST_SEAL_FIXTURE_H

#include <check.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoints/ckpt.h"
#include "train/train.h"

static char g_dir[256], g_tok[300], g_ref[300], g_bad[300];
static Config g_c;
static Model g_m;

static inline CkptMeta ref_meta(void) {
    CkptMeta mt = {.step = 40, .tokens_seen = 40 * 2048, .seed = 4242, .loader_epoch = 3,
                   .loader_cursor = 17, .loader_windows = 99, .tok_hash = 0x0123456789abcdefULL,
                   .lineage_gen = 2, .parent_gen = 1, .parent_step = 20, .gnorm_ema = 0.75,
                   .gnorm_count = 40};
    return mt;
}

static inline void build(Model *m, uint64_t seed) {
    ModelShape s;
    config_model_shape(&g_c, &s);
    model_init(m, &s, 0, 2, seed);
}

static inline void setup(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/moe_seal_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(g_dir));
    snprintf(g_tok, sizeof g_tok, "%s/tok.bpe", g_dir);
    snprintf(g_ref, sizeof g_ref, "%s/ref.h5", g_dir);
    snprintf(g_bad, sizeof g_bad, "%s/bad.h5", g_dir);
    FILE *f = fopen(g_tok, "wb");
    ck_assert_ptr_nonnull(f);
    fputs("moetrain-bpe 1\nnot a real tokenizer, only bytes to store\n", f);
    fclose(f);
    config_defaults(&g_c);
    g_c.model.vocab_size = 258;
    g_c.model.dim = 8;
    g_c.model.n_layers = 1;
    g_c.model.n_heads = 2;
    g_c.model.n_kv_heads = 1;
    g_c.model.head_dim = 4;
    g_c.moe.n_experts = 2;
    g_c.moe.top_k = 1;
    g_c.moe.hidden = 6;
    g_c.data.tokenizer = moe_strdup(g_tok);
    build(&g_m, 1);
    MoeRng r;   /* moments distinct and non-zero, so a skipped read would show */
    rng_seed(&r, 77);
    for (int b = 0; b < PBLOCK_COUNT; b++)
        for (size_t i = 0; i < g_m.ps.blocks[b].n; i++) {
            g_m.ps.blocks[b].m[i] = rng_normal(&r);
            g_m.ps.blocks[b].v[i] = (float)rng_uniform(&r);
        }
    CkptMeta mt = ref_meta();
    MoeErr err;
    ck_assert_msg(ckpt_save(g_ref, &g_c, &g_m, &mt, g_tok, true, &err) == 0, "%s", err.msg);
}

static inline void teardown(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    model_free(&g_m);
    config_free(&g_c);
}

static inline long file_size(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

/* dst = the first limit bytes of src (all when limit < 0), then extra bytes of 0xA5. */
static inline void copy_file(const char *src, const char *dst, long limit, long extra) {
    FILE *a = fopen(src, "rb"), *b = fopen(dst, "wb");
    ck_assert(a && b);
    char buf[4096];
    long done = 0;
    size_t k;
    while ((limit < 0 || done < limit) && (k = fread(buf, 1, sizeof buf, a)) > 0) {
        if (limit >= 0 && done + (long)k > limit) k = (size_t)(limit - done);
        ck_assert_uint_eq(fwrite(buf, 1, k, b), k);
        done += (long)k;
    }
    for (long i = 0; i < extra; i++) fputc(0xA5, b);
    fclose(a);
    ck_assert_int_eq(fclose(b), 0);
}

/* stdout of a shell command, first line, into out. */
static inline void shell_line(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    out[0] = 0;
    ck_assert_ptr_nonnull(fgets(out, (int)cap, p));
    ck_assert_int_eq(pclose(p), 0);
    out[strcspn(out, "\n")] = 0;
}

/* XOR the byte at offset at of path with mask, in place. */
static inline void flip(const char *path, long at, uint8_t mask) {
    int fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    uint8_t b;
    ck_assert_int_eq(pread(fd, &b, 1, at), 1);
    b ^= mask;
    ck_assert_int_eq(pwrite(fd, &b, 1, at), 1);
    close(fd);
}

#endif
