/* test_ckpt.c: HDF5 checkpoints on a tiny MoE model (V=258 C=8 L=2 H=2 Hkv=1 D=4 F=6 E=4
 * K=2), each test in its own mkdtemp directory.
 * - save -> load into a fresh model: parameters and both moments bit-identical, meta and
 *   config round-trip; a rank holding experts [2, 4) loads exactly those global experts;
 * - missing dataset and shape mismatch are named; truncated and bit-flipped files fail
 *   cleanly, the flip with the seal's digest mismatch and, once re-sealed, with a Fletcher32
 *   checksum error naming the dataset (tests/checkpoints/test_seal.c sweeps flips);
 * - nothing is left behind by a save, failed saves leave nothing and an older file intact;
 * - `moetrain ckpt info` exits 0 on a good file and 1 on a corrupt one;
 * - the aux-loss-free balancing bias (/state/router_bias): saved only when the model routes
 *   with it, loaded bit for bit (turning use_router_bias on), zeroed when a file has none,
 *   a wrong shape or a flipped bit in it named.
 */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "autograd/blas.h"
#include "checkpoints/ckpt.h"
#include "checkpoints/h5io.h"
#include "checkpoints/seal.h"
#include "core/fs.h"
#include "data/tokenizer.h"
#include "train/cmd_ckpt.h"
#include "train/train.h"

/* ---- fixture ---- */

static char g_dir[256];
static char g_tok[300];
static char g_path[300];   /* the reference checkpoint of each test */

static void tiny_config(Config *c, int dim) {
    config_defaults(c);
    c->model.vocab_size = 258;
    c->model.dim = dim;
    c->model.n_layers = 2;
    c->model.n_heads = 2;
    c->model.n_kv_heads = 1;
    c->model.head_dim = 4;
    c->moe.n_experts = 4;
    c->moe.top_k = 2;
    c->moe.hidden = 6;
    c->train.seed = 4242;
    c->data.tokenizer = moe_strdup(g_tok);
}

/* Values and moments all distinct and non-trivial (a zeroed moment would hide a skipped
 * read). */
static void fill_state(Model *m, uint64_t seed) {
    MoeRng r;
    rng_seed(&r, seed);
    for (int b = 0; b < PBLOCK_COUNT; b++) {
        ParamBlock *pb = &m->ps.blocks[b];
        for (size_t i = 0; i < pb->n; i++) {
            pb->data[i] = rng_normal(&r);
            pb->m[i] = rng_normal(&r);
            pb->v[i] = (float)rng_uniform(&r);
        }
    }
}

static CkptMeta test_meta(void) {
    CkptMeta mt = {.step = 40, .tokens_seen = 40 * 2048, .seed = 4242, .loader_epoch = 3,
                   .loader_cursor = 17, .loader_windows = 99, .tok_hash = 0x0123456789abcdefULL};
    return mt;
}

static void build(Model *m, const Config *c, int e_first, int e_local, uint64_t seed) {
    ModelShape s;
    config_model_shape(c, &s);
    model_init(m, &s, e_first, e_local, seed);
}

static void setup(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/moe_ckpt_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(g_dir));
    snprintf(g_tok, sizeof g_tok, "%s/tok.bpe", g_dir);
    FILE *f = fopen(g_tok, "wb");
    ck_assert_ptr_nonnull(f);
    fputs("moetrain-bpe 1\nnot a real tokenizer, only bytes to store\n", f);
    fclose(f);
    snprintf(g_path, sizeof g_path, "%s/ref.h5", g_dir);
}

static void teardown(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
}

/* Save the reference checkpoint (model seed 1, filled state) to g_path. */
static void save_ref(Model *m, Config *c) {
    tiny_config(c, 8);
    build(m, c, 0, 4, 1);
    fill_state(m, 77);
    CkptMeta mt = test_meta();
    MoeErr err;
    int rc = ckpt_save(g_path, c, m, &mt, g_tok, true, &err);
    ck_assert_msg(rc == 0, "save failed: %s", err.msg);
}

static long file_size(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

static void copy_file(const char *src, const char *dst, long limit) {
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
    fclose(a);
    ck_assert_int_eq(fclose(b), 0);
}

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void assert_same_copy(const Model *a, const Model *b, int which) {
    for (int i = 0; i < a->ps.count; i++) {
        const Param *p = &a->ps.p[i];
        const ParamBlock *ba = &a->ps.blocks[p->block], *bb = &b->ps.blocks[p->block];
        const float *x = which == 0 ? ba->data : which == 1 ? ba->m : ba->v;
        const float *y = which == 0 ? bb->data : which == 1 ? bb->m : bb->v;
        ck_assert_msg(memcmp(x + p->off, y + p->off, p->t.n * sizeof(float)) == 0,
                      "%s (copy %d) differs after load", p->name, which);
    }
}

/* ---- round trip ---- */

START_TEST(test_roundtrip) {
    Model m, m2;
    Config c, c2;
    save_ref(&m, &c);
    char tmp[320];
    snprintf(tmp, sizeof tmp, "%s.tmp", g_path);
    ck_assert_int_eq(access(tmp, F_OK), -1);
    ck_assert_int_eq(count_entries(g_dir), 2);   /* tok.bpe + ref.h5, nothing else */

    build(&m2, &c, 0, 4, 999);   /* different init */
    CkptMeta got;
    memset(&got, 0xff, sizeof got);
    MoeErr err;
    int rc = ckpt_load(g_path, &m2, &got, true, &err);
    ck_assert_msg(rc == 0, "load failed: %s", err.msg);
    for (int k = 0; k < 3; k++) assert_same_copy(&m, &m2, k);
    CkptMeta want = test_meta();
    ck_assert(got.step == want.step && got.tokens_seen == want.tokens_seen);
    ck_assert(got.seed == want.seed && got.tok_hash == want.tok_hash);
    ck_assert(got.loader_epoch == want.loader_epoch && got.loader_cursor == want.loader_cursor);
    ck_assert(got.loader_windows == want.loader_windows);
    ck_assert(got.has_optimizer);   /* saved with the optimizer state */

    /* without the optimizer: values only, moments untouched */
    Model m3;
    build(&m3, &c, 0, 4, 5);
    memset(m3.ps.blocks[PBLOCK_DENSE].m, 0, m3.ps.blocks[PBLOCK_DENSE].n * sizeof(float));
    ck_assert_int_eq(ckpt_load(g_path, &m3, NULL, false, &err), 0);
    assert_same_copy(&m, &m3, 0);
    ck_assert(m3.ps.blocks[PBLOCK_DENSE].m[0] == 0.0f);

    ck_assert_int_eq(ckpt_read_config(g_path, &c2, &err), 0);
    char diff[512];
    ck_assert_msg(config_diff_shape(&c, &c2, diff, sizeof diff) == 0, "shape: %s", diff);
    ck_assert_msg(config_diff_other(&c, &c2, diff, sizeof diff) == 0, "other: %s", diff);
    ck_assert_str_eq(c2.name, c.name);

    uint8_t *tb = NULL, *orig = NULL;
    size_t tn = 0, on = 0;
    ck_assert_int_eq(ckpt_read_tokenizer(g_path, &tb, &tn, &err), 0);
    ck_assert_int_eq(fs_read_file(g_tok, &orig, &on, &err), 0);
    ck_assert_uint_eq(tn, on);
    ck_assert(memcmp(tb, orig, on) == 0);
    moe_free(tb);
    moe_free(orig);

    /* h5ls (hdf5-tools) reads the file and sees an expert by its global index */
    char cmd[800];
    snprintf(cmd, sizeof cmd, "h5ls -r '%s' 2>&1 | grep -q "
             "'/params/model.layers.1.block_sparse_moe.experts.3.w2.weight Dataset {8, 6}'",
             g_path);
    ck_assert_msg(system(cmd) == 0, "h5ls could not list the expert dataset");
    config_free(&c);
    config_free(&c2);
    model_free(&m);
    model_free(&m2);
    model_free(&m3);
}
END_TEST

/* Experts are stored by global index: a rank holding experts [2, 4) gets slices 2 and 3 of
 * the one-rank model, and the dense block unchanged. */
START_TEST(test_expert_slice) {
    Model m, r;
    Config c;
    save_ref(&m, &c);
    build(&r, &c, 2, 2, 3);
    MoeErr err;
    ck_assert_msg(ckpt_load(g_path, &r, NULL, true, &err) == 0, "%s", err.msg);
    for (int i = 0; i < m.ps.count; i++) {
        const Param *p = &m.ps.p[i], *q = &r.ps.p[i];
        ck_assert_str_eq(p->name, q->name);
        size_t skip = 0, n = p->t.n;
        if (p->block == PBLOCK_EXPERT) {
            n = q->t.n;   /* 2 experts */
            skip = n;     /* the first 2 experts of the full model */
        }
        const ParamBlock *bp = &m.ps.blocks[p->block], *bq = &r.ps.blocks[q->block];
        ck_assert_msg(memcmp(bp->data + p->off + skip, bq->data + q->off, n * 4) == 0, "%s",
                      p->name);
        ck_assert_msg(memcmp(bp->v + p->off + skip, bq->v + q->off, n * 4) == 0, "%s", p->name);
    }
    config_free(&c);
    model_free(&m);
    model_free(&r);
}
END_TEST

/* ---- mismatches ---- */

START_TEST(test_missing_dataset) {
    Model m, m2;
    Config c;
    save_ref(&m, &c);
    char bad[320];
    snprintf(bad, sizeof bad, "%s/missing.h5", g_dir);
    copy_file(g_path, bad, -1);
    const char *victim = "params/model.layers.1.block_sparse_moe.experts.3.w2.weight";
    hid_t f = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert(f >= 0);
    ck_assert(H5Ldelete(f, victim, H5P_DEFAULT) >= 0);
    H5Fclose(f);
    MoeErr err;
    ck_assert_msg(ckpt_seal(bad, &err) == 0, "%s", err.msg);   /* edited on purpose */
    build(&m2, &c, 0, 4, 9);
    ck_assert_int_eq(ckpt_load(bad, &m2, NULL, false, &err), -1);
    ck_assert_msg(strstr(err.msg, victim) && strstr(err.msg, "missing") &&
                  strstr(err.msg, bad), "got: %s", err.msg);
    ck_assert(err.hint[0]);
    /* the checks run before any read: the model is untouched */
    Model fresh;
    build(&fresh, &c, 0, 4, 9);
    assert_same_copy(&fresh, &m2, 0);
    /* a missing moment only matters when the optimizer state is asked for */
    snprintf(bad, sizeof bad, "%s/missing_m.h5", g_dir);
    copy_file(g_path, bad, -1);
    f = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert(H5Ldelete(f, "optim/v/lm_head.weight", H5P_DEFAULT) >= 0);
    H5Fclose(f);
    ck_assert_msg(ckpt_seal(bad, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(ckpt_load(bad, &m2, NULL, false, &err), 0);
    ck_assert_int_eq(ckpt_load(bad, &m2, NULL, true, &err), -1);
    ck_assert_msg(strstr(err.msg, "optim/v/lm_head.weight"), "got: %s", err.msg);
    config_free(&c);
    model_free(&m);
    model_free(&m2);
    model_free(&fresh);
}
END_TEST

START_TEST(test_shape_mismatch) {
    Model m, m2;
    Config c, c16;
    save_ref(&m, &c);
    tiny_config(&c16, 16);
    build(&m2, &c16, 0, 4, 9);
    MoeErr err;
    ck_assert_int_eq(ckpt_load(g_path, &m2, NULL, true, &err), -1);
    ck_assert_msg(strstr(err.msg, "params/model.embed_tokens.weight") &&
                  strstr(err.msg, "(258, 8)") && strstr(err.msg, "(258, 16)"),
                  "got: %s", err.msg);
    config_free(&c);
    config_free(&c16);
    model_free(&m);
    model_free(&m2);
}
END_TEST

/* ---- damaged files ---- */

START_TEST(test_truncated) {
    Model m, m2;
    Config c;
    save_ref(&m, &c);
    char bad[320];
    snprintf(bad, sizeof bad, "%s/half.h5", g_dir);
    copy_file(g_path, bad, file_size(g_path) / 2);
    build(&m2, &c, 0, 4, 9);
    MoeErr err;
    ck_assert_int_eq(ckpt_load(bad, &m2, NULL, true, &err), -1);
    ck_assert_msg(strstr(err.msg, bad) != NULL, "got: %s", err.msg);
    ck_assert_int_eq(ckpt_read_meta(bad, NULL, &err), -1);
    Config c2;
    ck_assert_int_eq(ckpt_read_config(bad, &c2, &err), -1);
    config_free(&c);
    model_free(&m);
    model_free(&m2);
}
END_TEST

/* Flip one byte in the middle of the largest dataset's stored chunk (located with
 * H5Dget_chunk_info). The seal's digest refuses the file before libhdf5 reads it; re-sealed
 * (as if the damage had happened before the seal was written), HDF5's metadata is intact,
 * so only the Fletcher32 checksum can notice, naming the dataset: the inner layer still
 * works on its own. */
START_TEST(test_bitflip) {
    Model m, m2;
    Config c;
    save_ref(&m, &c);
    const char *victim = "params/lm_head.weight";   /* (258, 8), with the embedding largest */
    char bad[320];
    snprintf(bad, sizeof bad, "%s/flip.h5", g_dir);
    copy_file(g_path, bad, -1);
    int64_t f;
    MoeErr err;
    bool sealed = false;
    SealId id;
    ck_assert_int_eq(seal_verify(bad, &sealed, &id, &err), 0);
    ck_assert(sealed);
    ck_assert_int_eq(h5io_open_ro(bad, &id, &f, &err), 0);
    uint64_t addr = 0, size = 0;
    ck_assert_int_eq(h5io_chunk_location(f, victim, &addr, &size), 0);
    h5io_close(f, bad, NULL);
    ck_assert_uint_eq(size, 258 * 8 * 4 + 4);   /* the data + its 4-byte checksum */
    int fd = open(bad, O_RDWR);
    ck_assert_int_ge(fd, 0);
    unsigned char byte;
    off_t at = (off_t)(addr + size / 2);
    ck_assert_int_eq(pread(fd, &byte, 1, at), 1);
    byte ^= 0x10;
    ck_assert_int_eq(pwrite(fd, &byte, 1, at), 1);
    close(fd);

    build(&m2, &c, 0, 4, 9);
    ck_assert_int_eq(ckpt_read_meta(bad, NULL, &err), -1);
    ck_assert_msg(strstr(err.msg, bad) && strstr(err.msg, "SHA-256"), "got: %s", err.msg);
    ck_assert_int_eq(ckpt_load(bad, &m2, NULL, false, &err), -1);
    ck_assert_msg(strstr(err.msg, bad) && strstr(err.msg, "SHA-256"), "got: %s", err.msg);

    ck_assert_msg(ckpt_seal(bad, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(ckpt_read_meta(bad, NULL, &err), 0);   /* metadata is fine */
    ck_assert_int_eq(ckpt_load(bad, &m2, NULL, false, &err), -1);
    ck_assert_msg(strstr(err.msg, bad) && strstr(err.msg, victim) &&
                  strstr(err.msg, "checksum") && strstr(err.msg, "Fletcher32"), "got: %s",
                  err.msg);
    CkptInfo in;
    ck_assert_int_eq(ckpt_inspect(bad, &in, &err), -1);
    ck_assert_msg(strstr(err.msg, victim), "got: %s", err.msg);
    ckpt_info_free(&in);
    ck_assert_int_eq(ckpt_inspect(g_path, &in, &err), 0);
    ck_assert(in.sealed && in.format_version == 2);
    ckpt_info_free(&in);
    config_free(&c);
    model_free(&m);
    model_free(&m2);
}
END_TEST

/* ---- failed saves ---- */

START_TEST(test_save_fails_cleanly) {
    Model m;
    Config c;
    save_ref(&m, &c);
    CkptMeta mt = test_meta();
    MoeErr err;
    char p[400];
    snprintf(p, sizeof p, "%s/no/such/dir/x.h5", g_dir);
    ck_assert_int_eq(ckpt_save(p, &c, &m, &mt, g_tok, true, &err), -1);
    ck_assert_msg(strstr(err.msg, "x.h5") && strstr(err.msg, "No such file"), "got: %s",
                  err.msg);
    ck_assert(err.hint[0]);
    /* a regular file as parent directory: fails even for root */
    snprintf(p, sizeof p, "%s/tok.bpe/x.h5", g_dir);
    ck_assert_int_eq(ckpt_save(p, &c, &m, &mt, g_tok, true, &err), -1);
    if (geteuid() != 0) {
        char ro[320];
        snprintf(ro, sizeof ro, "%s/ro", g_dir);
        ck_assert_int_eq(mkdir(ro, 0500), 0);
        snprintf(p, sizeof p, "%s/x.h5", ro);
        ck_assert_int_eq(ckpt_save(p, &c, &m, &mt, g_tok, true, &err), -1);
        ck_assert_msg(strstr(err.msg, "Permission denied"), "got: %s", err.msg);
        ck_assert_int_eq(count_entries(ro), 0);
    }
    /* failing midway (tokenizer unreadable, after the temporary exists): the older file
     * is untouched and no temporary is left */
    long before = file_size(g_path);
    ck_assert_int_eq(ckpt_save(g_path, &c, &m, &mt, "/nonexistent/tok", true, &err), -1);
    ck_assert_msg(strstr(err.msg, "/nonexistent/tok"), "got: %s", err.msg);
    ck_assert_int_eq(file_size(g_path), before);
    ck_assert_int_eq(ckpt_read_meta(g_path, NULL, &err), 0);
    ck_assert_int_eq(count_entries(g_dir), 2);
    config_free(&c);
    model_free(&m);
}
END_TEST

/* ---- moetrain ckpt info ---- */

START_TEST(test_cmd_info) {
    Model m;
    Config c;
    save_ref(&m, &c);
    char *ok[] = {"info", g_path};
    ck_assert_int_eq(cmd_ckpt(2, ok), 0);
    char *help[] = {"--help"};
    ck_assert_int_eq(cmd_ckpt(1, help), 0);
    char *bad_cl[] = {"info"};
    ck_assert_int_eq(cmd_ckpt(1, bad_cl), 2);
    char bad[320];
    snprintf(bad, sizeof bad, "%s/half.h5", g_dir);
    copy_file(g_path, bad, file_size(g_path) / 2);
    char *corrupt[] = {"info", bad};
    ck_assert_int_eq(cmd_ckpt(2, corrupt), 1);
    CkptInfo in;
    MoeErr err;
    ck_assert_int_eq(ckpt_inspect(g_path, &in, &err), 0);
    size_t dense = params_count(&m.ps, false) - m.ps.blocks[PBLOCK_EXPERT].n;
    ck_assert_uint_eq(in.n_params, params_count(&m.ps, false));
    ck_assert_uint_eq(in.n_params_expert, 2 * 3 * 4 * 6 * 8);   /* L * 3 * E * F * C */
    ck_assert_uint_eq(in.n_params_dense, dense);
    ck_assert_uint_eq(in.n_optim, 2 * in.n_params);
    ck_assert(in.has_optimizer);
    ck_assert_int_eq(in.meta.step, 40);
    ckpt_info_free(&in);
    config_free(&c);
    model_free(&m);
}
END_TEST

/* ---- the router bias ---- */

START_TEST(test_router_bias) {
    Model m, m2;
    Config c;
    save_ref(&m, &c);   /* use_router_bias off: no /state/router_bias */
    MoeErr err;
    CkptMeta got;
    ck_assert_int_eq(ckpt_read_meta(g_path, &got, &err), 0);
    ck_assert(!got.has_router_bias);
    char with[320];
    snprintf(with, sizeof with, "%s/bias.h5", g_dir);
    m.use_router_bias = true;
    for (int j = 0; j < 2 * 4; j++) m.router_bias[j] = 0.01f * (float)(j * j) - 0.13f;
    CkptMeta mt = test_meta();
    ck_assert_msg(ckpt_save(with, &c, &m, &mt, g_tok, true, &err) == 0, "%s", err.msg);

    /* into a model without the option: the bias arrives bit for bit and is switched on,
     * so inference routes as training did */
    build(&m2, &c, 0, 4, 9);
    ck_assert(!m2.use_router_bias);
    ck_assert_msg(ckpt_load(with, &m2, &got, true, &err) == 0, "%s", err.msg);
    ck_assert(got.has_router_bias && m2.use_router_bias);
    ck_assert(memcmp(m.router_bias, m2.router_bias, sizeof(float) * 2 * 4) == 0);
    for (int k = 0; k < 3; k++) assert_same_copy(&m, &m2, k);

    /* an older file without it, into a model that routes with a bias: the bias restarts
     * at zero and stays on */
    ck_assert_msg(ckpt_load(g_path, &m2, &got, true, &err) == 0, "%s", err.msg);
    ck_assert(!got.has_router_bias && m2.use_router_bias);
    for (int j = 0; j < 2 * 4; j++) ck_assert(m2.router_bias[j] == 0.0f);

    /* a wrong shape is named with both shapes, before any read */
    char bad[320];
    snprintf(bad, sizeof bad, "%s/bias_shape.h5", g_dir);
    copy_file(with, bad, -1);
    hid_t f = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert(f >= 0);
    ck_assert(H5Ldelete(f, "state/router_bias", H5P_DEFAULT) >= 0);
    uint64_t dims[2] = {3, 4};
    float junk[12] = {0};
    ck_assert_int_eq(h5io_write((int64_t)f, bad, "state/router_bias", true, 2, dims, junk, &err),
                     0);
    H5Fclose(f);
    ck_assert_msg(ckpt_seal(bad, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(ckpt_load(bad, &m2, NULL, false, &err), -1);
    ck_assert_msg(strstr(err.msg, bad) && strstr(err.msg, "state/router_bias") &&
                  strstr(err.msg, "(3, 4)") && strstr(err.msg, "(2, 4)"), "got: %s", err.msg);

    /* a flipped bit in it fails its checksum, naming it */
    snprintf(bad, sizeof bad, "%s/bias_flip.h5", g_dir);
    copy_file(with, bad, -1);
    int64_t hf;
    bool sealed = false;
    SealId id;
    ck_assert_int_eq(seal_verify(bad, &sealed, &id, &err), 0);
    ck_assert_int_eq(h5io_open_ro(bad, &id, &hf, &err), 0);
    uint64_t addr = 0, size = 0;
    ck_assert_int_eq(h5io_chunk_location(hf, "state/router_bias", &addr, &size), 0);
    h5io_close(hf, bad, NULL);
    ck_assert_uint_eq(size, 2 * 4 * 4 + 4);   /* (L, E) floats + the 4-byte checksum */
    int fd = open(bad, O_RDWR);
    ck_assert_int_ge(fd, 0);
    unsigned char byte;
    ck_assert_int_eq(pread(fd, &byte, 1, (off_t)(addr + 5)), 1);
    byte ^= 0x10;
    ck_assert_int_eq(pwrite(fd, &byte, 1, (off_t)(addr + 5)), 1);
    close(fd);
    ck_assert_msg(ckpt_seal(bad, &err) == 0, "%s", err.msg);   /* past the digest */
    ck_assert_int_eq(ckpt_load(bad, &m2, NULL, false, &err), -1);
    ck_assert_msg(strstr(err.msg, "state/router_bias") && strstr(err.msg, "checksum"),
                  "got: %s", err.msg);
    config_free(&c);
    model_free(&m);
    model_free(&m2);
}
END_TEST

static Suite *ckpt_suite(void) {
    Suite *s = suite_create("ckpt");
    struct { const char *name; const TTest *fn; } cases[] = {
        {"roundtrip", test_roundtrip},       {"expert_slice", test_expert_slice},
        {"missing_dataset", test_missing_dataset}, {"shape_mismatch", test_shape_mismatch},
        {"truncated", test_truncated},       {"bitflip", test_bitflip},
        {"save_fails", test_save_fails_cleanly}, {"cmd_info", test_cmd_info},
        {"router_bias", test_router_bias},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, cases[i].fn);
        tcase_set_timeout(tc, 60);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    SRunner *sr = srunner_create(ckpt_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
