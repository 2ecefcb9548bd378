/* fuzz_ckpt.c: libFuzzer target for the validation layer of the HDF5 checkpoint loader
 * (checkpoints/ckpt.c over checkpoints/h5io.c): ckpt_read_meta, ckpt_read_config,
 * ckpt_read_tokenizer, ckpt_load (with and without optimizer state) and ckpt_inspect.
 *
 * Structured, not raw bytes: libhdf5's own parser of a malformed file is not ours to fix
 * (fuzz_ckpt_raw.c feeds it raw bytes; see tests/fuzz/README.md for what that finds). Here a
 * valid checkpoint of a tiny MoE model (V=258 C=8 L=1 H=2 Hkv=1 D=4 F=6 E=2 K=1, with AdamW
 * moments; small so that an input costs few HDF5 dataset reads) is written once at start-up; each input is a list of edits applied to a fresh
 * copy of it through the HDF5 API, so every file is well-formed HDF5 but may break any
 * promise our layer relies on:
 *   op 0  delete a root attribute
 *   op 1  replace a root attribute: any of 6 types (int64, uint64, double, int8, fixed
 *         string of any length, variable-length string), scalar / 1-D / null dataspace
 *   op 2  delete a dataset or group
 *   op 3  replace a dataset: float32/float64/uint8/int32/string type, 0..5 dims (sizes up to
 *         2^44 for chunked datasets with nothing written), contiguous or chunked, with or
 *         without Fletcher32, contents from the input
 *   op 4  replace /config with the input's bytes (YAML text)
 *   op 5  replace /tokenizer with the input's bytes (a tokenizer file)
 *   op 6  replace a dataset by an empty group
 *   op 7  replace a dataset or group by a soft link (dangling, or to another object)
 * The first input byte picks ckpt_load with or without the optimizer state. After the edits
 * the copy is re-sealed (ckpt_seal): the whole-file digest would otherwise refuse every
 * edited file before the checks this target is about (test_seal.c and fuzz_ckpt_raw.c cover
 * the digest itself).
 * Invariants: every reader returns 0 or -1 with a message (no crash, no sanitizer report, no
 * abort on a huge declared size), and nothing moe_malloc'ed outlives the input.
 */
#include <stdlib.h>
#include <string.h>

#include <hdf5.h>

#include "checkpoints/ckpt.h"
#include "checkpoints/h5io.h"
#include "checkpoints/seal.h"
#include "core/fs.h"
#include "data/tokenizer.h"
#include "fuzz_util.h"
#include "train/train.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_OPS 8
#define MAX_NAMES 256

static const char *const ATTRS[] = {
    "magic", "format_version", "step", "tokens_seen", "seed", "loader_epoch",
    "loader_cursor", "loader_windows", "tok_hash", "n_experts", "has_optimizer", "config_name",
    "lineage_gen", "parent_gen", "parent_step", "gnorm_ema_bits", "gnorm_count", "base_path",
    "base_checksum"};
#define N_ATTRS ((uint32_t)(sizeof ATTRS / sizeof ATTRS[0]))

static struct {
    char tok[256], tmpl[256], work[256];
    uint8_t *image;           /* the template checkpoint's bytes */
    size_t image_n;
    char *names[MAX_NAMES];   /* every dataset and group of the template */
    uint32_t n_names;
    Model model;
    bool ready;
} G;

static int collect(const char *dset, void *ctx) {
    (void)ctx;
    if (G.n_names < MAX_NAMES) G.names[G.n_names++] = moe_strdup(dset);
    return 0;
}

static void setup(void) {
    h5io_quiet();
    fuzz_path(G.tok, sizeof G.tok, "tok.bpe");
    fuzz_path(G.tmpl, sizeof G.tmpl, "template.h5");
    fuzz_path(G.work, sizeof G.work, "input.h5");
    MoeErr err;
    Tokenizer t;
    const uint8_t *text = (const uint8_t *)"aaaa";
    size_t n = 4;
    ASSERT(tok_train_buffers(&t, &text, &n, 1, 258, &err) == 0, "%s", err.msg);
    ASSERT(tok_save(&t, G.tok, &err) == 0, "%s", err.msg);
    tok_free(&t);

    Config c;
    config_defaults(&c);
    c.model.vocab_size = 258;
    c.model.dim = 8;
    c.model.n_layers = 1;
    c.model.n_heads = 2;
    c.model.n_kv_heads = 1;
    c.model.head_dim = 4;
    c.moe.n_experts = 2;
    c.moe.top_k = 1;
    c.moe.hidden = 6;
    c.data.tokenizer = moe_strdup(G.tok);
    ModelShape s;
    config_model_shape(&c, &s);
    model_init(&G.model, &s, 0, 2, 1);
    CkptMeta meta = {.step = 3, .tokens_seen = 96, .seed = 1, .tok_hash = 7};
    ASSERT(ckpt_save(G.tmpl, &c, &G.model, &meta, G.tok, true, &err) == 0, "%s", err.msg);
    config_free(&c);
    ASSERT(fs_read_file(G.tmpl, &G.image, &G.image_n, &err) == 0, "%s", err.msg);

    int64_t f;
    bool sealed = false;
    SealId id;
    ASSERT(seal_verify(G.tmpl, &sealed, &id, &err) == 0 && sealed, "%s", err.msg);
    ASSERT(h5io_open_ro(G.tmpl, &id, &f, &err) == 0, "%s", err.msg);
    ASSERT(h5io_each_dataset(f, G.tmpl, collect, NULL, &err) == 0, "%s", err.msg);
    h5io_close(f, G.tmpl, NULL);
    const char *groups[] = {"params", "optim", "optim/m", "optim/v"};
    for (size_t i = 0; i < 4 && G.n_names < MAX_NAMES; i++)
        G.names[G.n_names++] = moe_strdup(groups[i]);
    G.ready = true;
}

/* Fill buf (n bytes) from the input, zeros once it runs out. */
static void fill(FuzzIn *in, void *buf, size_t n) {
    size_t got;
    const uint8_t *p = fuzz_bytes(in, n, &got);
    memcpy(buf, p, got);
    memset((uint8_t *)buf + got, 0, n - got);
}

static void op_attr(hid_t f, FuzzIn *in) {
    const char *name = ATTRS[fuzz_u8(in) % N_ATTRS];
    H5Adelete(f, name);
    uint8_t kind = fuzz_u8(in) % 6, sk = fuzz_u8(in) % 3;
    hsize_t n = sk == 1 ? (hsize_t)(fuzz_u8(in) % 40 + 1) : 1;
    hid_t type;
    switch (kind) {
    case 0: type = H5Tcopy(H5T_NATIVE_INT64); break;
    case 1: type = H5Tcopy(H5T_NATIVE_UINT64); break;
    case 2: type = H5Tcopy(H5T_NATIVE_DOUBLE); break;
    case 3: type = H5Tcopy(H5T_NATIVE_INT8); break;
    case 4:
        type = H5Tcopy(H5T_C_S1);
        H5Tset_size(type, (size_t)fuzz_u8(in) % 100 + 1);
        H5Tset_strpad(type, fuzz_u8(in) % 2 ? H5T_STR_NULLPAD : H5T_STR_NULLTERM);
        break;
    default:
        type = H5Tcopy(H5T_C_S1);
        H5Tset_size(type, H5T_VARIABLE);
        break;
    }
    hid_t space = sk == 0 ? H5Screate(H5S_SCALAR) : sk == 1 ? H5Screate_simple(1, &n, NULL)
                                                             : H5Screate(H5S_NULL);
    hid_t a = H5Acreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0 && sk != 2) {
        if (kind == 5) {
            char *strs[40];
            char text[40][33];
            for (hsize_t i = 0; i < n; i++) {
                size_t len = fuzz_u8(in) % 33;
                fill(in, text[i], len);
                text[i][len < 32 ? len : 32] = 0;
                strs[i] = text[i];
            }
            H5Awrite(a, type, strs);
        } else {
            size_t bytes = H5Tget_size(type) * (size_t)n;
            uint8_t *buf = malloc(bytes);
            ASSERT(buf != NULL, "out of memory");
            fill(in, buf, bytes);
            H5Awrite(a, type, buf);
            free(buf);
        }
    }
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    H5Tclose(type);
}

static uint64_t dim_of(uint8_t b) {
    return b < 240 ? b % 12 : (uint64_t)1 << (8 + (b - 240) * 36 / 15);  /* up to 2^44 */
}

/* A new dataset at name: type, rank, sizes, layout and contents from the input. */
static void make_dataset(hid_t f, const char *name, FuzzIn *in) {
    uint8_t tk = fuzz_u8(in) % 5, nd = fuzz_u8(in) % 6, lay = fuzz_u8(in);
    hsize_t dims[5], maxd[5], chunk[5];
    uint64_t total = 1;
    bool huge = false;
    for (int d = 0; d < nd; d++) {
        dims[d] = maxd[d] = dim_of(fuzz_u8(in));
        if (dims[d] == 0) maxd[d] = H5S_UNLIMITED;
        chunk[d] = dims[d] == 0 ? 1 : dims[d] < 4 ? dims[d] : 4;
        if (dims[d] > 4096) huge = true;
        total = huge ? 0 : total * dims[d];
    }
    bool chunked = huge || (lay & 1) || total == 0;
    hid_t type = tk == 0 ? H5Tcopy(H5T_IEEE_F32LE) : tk == 1 ? H5Tcopy(H5T_IEEE_F64LE)
               : tk == 2 ? H5Tcopy(H5T_STD_U8LE) : tk == 3 ? H5Tcopy(H5T_STD_I32LE)
                         : H5Tcopy(H5T_C_S1);
    if (tk == 4) H5Tset_size(type, 4);
    hid_t space = nd == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(nd, dims, maxd);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (chunked && nd > 0) {
        H5Pset_chunk(dcpl, nd, chunk);
        if (lay & 2) H5Pset_fletcher32(dcpl);
    }
    hid_t ds = H5Dcreate2(f, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (ds >= 0 && !huge && total > 0 && total <= 4096) {
        size_t bytes = H5Tget_size(type) * (size_t)total;
        uint8_t *buf = malloc(bytes);
        ASSERT(buf != NULL, "out of memory");
        fill(in, buf, bytes);
        H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
        free(buf);
    }
    if (ds >= 0) H5Dclose(ds);
    H5Pclose(dcpl);
    H5Sclose(space);
    H5Tclose(type);
}

/* Replace the byte dataset name by the next up-to-max input bytes. */
static void put_bytes(hid_t f, const char *name, FuzzIn *in, size_t max) {
    H5Ldelete(f, name, H5P_DEFAULT);
    size_t n;
    const uint8_t *p = fuzz_bytes(in, max, &n);
    uint64_t dims = n;
    MoeErr err;
    h5io_write(f, "fuzz", name, false, 1, &dims, p, &err);
}

static void apply(hid_t f, FuzzIn *in) {
    for (int k = 0; k < MAX_OPS && in->n > 0; k++) {
        uint8_t op = fuzz_u8(in) % 8;
        const char *name = G.names[fuzz_u8(in) % G.n_names];
        switch (op) {
        case 0: H5Adelete(f, ATTRS[fuzz_u8(in) % N_ATTRS]); break;
        case 1: op_attr(f, in); break;
        case 2: H5Ldelete(f, name, H5P_DEFAULT); break;
        case 3:
            H5Ldelete(f, name, H5P_DEFAULT);
            make_dataset(f, name, in);
            break;
        case 4: put_bytes(f, "config", in, (size_t)fuzz_u8(in) * 8); break;
        case 5: put_bytes(f, "tokenizer", in, (size_t)fuzz_u8(in) * 8); break;
        case 6: {
            H5Ldelete(f, name, H5P_DEFAULT);
            hid_t g = H5Gcreate2(f, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            if (g >= 0) H5Gclose(g);
            break;
        }
        default: {
            H5Ldelete(f, name, H5P_DEFAULT);
            uint8_t t = fuzz_u8(in);
            const char *target = t % 2 ? "/no/such/object" : G.names[t / 2 % G.n_names];
            H5Lcreate_soft(target, f, name, H5P_DEFAULT, H5P_DEFAULT);
            break;
        }
        }
    }
    H5Eclear2(H5E_DEFAULT);
}

static void read_all(const char *path, bool load_optimizer) {
    MoeErr err;
    CkptMeta meta;
    if (ckpt_read_meta(path, &meta, &err) != 0) ASSERT(err.msg[0], "read_meta: no message");
    Config c;
    if (ckpt_read_config(path, &c, &err) == 0) config_free(&c);
    else ASSERT(err.msg[0], "read_config: no message");
    uint8_t *tok = NULL;
    size_t tn = 0;
    if (ckpt_read_tokenizer(path, &tok, &tn, &err) == 0) {
        Tokenizer t;
        if (tok_load_buffer(&t, tok, tn, "stored tokenizer", &err) == 0) tok_free(&t);
        moe_free(tok);
    }
    if (ckpt_load(path, &G.model, &meta, load_optimizer, &err) != 0)
        ASSERT(err.msg[0], "load: no message");
    CkptInfo info;
    if (ckpt_inspect(path, &info, &err) != 0) ASSERT(err.msg[0], "inspect: no message");
    ckpt_info_free(&info);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!G.ready) setup();
    size_t live = moe_live_bytes();
    fuzz_write_file(G.work, G.image, G.image_n);
    hid_t f = H5Fopen(G.work, H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT(f >= 0, "cannot reopen the template copy %s", G.work);
    FuzzIn in = {data, size};
    bool load_optimizer = fuzz_u8(&in) & 1;
    apply(f, &in);
    ASSERT(H5Fclose(f) >= 0, "cannot close the edited copy");
    MoeErr err;
    ASSERT(ckpt_seal(G.work, &err) == 0, "%s", err.msg);
    read_all(G.work, load_optimizer);
    FUZZ_NO_LEAK(live, "checkpoint readers");
    return 0;
}
