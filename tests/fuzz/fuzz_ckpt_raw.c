/* fuzz_ckpt_raw.c: libFuzzer target feeding raw bytes, as a checkpoint file, to the
 * checkpoint readers (ckpt_read_meta, ckpt_read_config, ckpt_read_tokenizer, ckpt_inspect).
 *
 * What it exercises: the seal (checkpoints/seal.c): every reader verifies the whole file
 * against the SHA-256 in its 4096-byte record before libhdf5 parses any byte, so an input
 * reaches libhdf5 only if its record is intact and canonical and its length and digest
 * match, i.e. only if it is a sealed file exactly as written. Inputs that start with HDF5's
 * own signature instead are format version 1 files, which the readers still accept unsealed
 * (with a warning) and hand to libhdf5 unverified; libhdf5's crashes on malformed files are
 * not ours to fix (tests/fuzz/README.md), so those inputs are skipped here.
 * fuzz_ckpt.c covers our validation layer with well-formed (re-sealed) but hostile files.
 * Seed: tests/fuzz/corpus/ckpt_raw/ (a small sealed checkpoint, see make_corpus.py).
 */
#include <string.h>

#include <hdf5.h>

#include "checkpoints/ckpt.h"
#include "checkpoints/h5io.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[256];
    if (!path[0]) {
        h5io_quiet();
        fuzz_path(path, sizeof path, "raw.h5");
    }
    static const uint8_t HDF5_SIG[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    if (size >= sizeof HDF5_SIG && memcmp(data, HDF5_SIG, sizeof HDF5_SIG) == 0) return 0;
    fuzz_write_file(path, data, size);
    size_t live = moe_live_bytes();
    MoeErr err;
    CkptMeta meta;
    (void)ckpt_read_meta(path, &meta, &err);
    Config c;
    if (ckpt_read_config(path, &c, &err) == 0) config_free(&c);
    uint8_t *tok = NULL;
    size_t tn = 0;
    if (ckpt_read_tokenizer(path, &tok, &tn, &err) == 0) moe_free(tok);
    CkptInfo info;
    (void)ckpt_inspect(path, &info, &err);
    ckpt_info_free(&info);
    FUZZ_NO_LEAK(live, "checkpoint readers on raw bytes");
    return 0;
}
