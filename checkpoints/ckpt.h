/* ckpt.h: HDF5 checkpoints: one self-describing file per checkpoint.
 *
 * A checkpoint holds everything needed to resume a run bit for bit: the effective config
 * (YAML text), every parameter under its Hugging Face Mixtral name, the AdamW moments of
 * every trainable parameter, the step (which is also the lr-schedule position), tokens
 * seen, the seed (the only RNG state: init and router noise are counter-based on it), the
 * loader position, and the tokenizer file's bytes with its hash. docs/checkpoints.md
 * shows the layout as `h5ls -r` prints it:
 *
 *   bytes 0..4095        the seal: a text record (checkpoints/seal.h) with the file's length
 *                        and the SHA-256 of every byte after it; HDF5's "user block", which
 *                        libhdf5 skips (the HDF5 file proper starts at offset 4096)
 *   /                    attributes: magic "moetrain-checkpoint", format_version (2), step,
 *                        tokens_seen, seed, loader_epoch, loader_cursor, loader_windows,
 *                        tok_hash, n_experts, has_optimizer, config_name; optional:
 *                        lineage_gen, parent_gen, parent_step, gnorm_ema_bits, gnorm_count
 *   /config              uint8 (n)  the config as YAML (config_to_yaml)
 *   /tokenizer           uint8 (n)  the tokenizer file's bytes
 *   /params/NAME         float32    one dataset per parameter, shape as our tensor ([out, in])
 *   /optim/m/NAME        float32    AdamW first moment, same shape (trainable params only)
 *   /optim/v/NAME        float32    AdamW second moment
 *   /state/router_bias   float32 (L, E)  the selection-only expert bias of aux-loss-free
 *                        balancing (layers/router_bias.h); present only when the model
 *                        routes with it (Model.use_router_bias)
 * An adapter checkpoint (LoRA fine-tuning, checkpoints/finetune.h) has the same layout with
 * only the model's trainable tensors under /params and /optim, and two more attributes of
 * "/": base_path (string) and base_checksum (uint64), naming the full checkpoint that holds
 * the frozen rest.
 *
 * Experts: our stacked (E_local, F, C) tensor "...experts.{e}.w1.weight" is stored as one
 * (F, C) dataset per expert with {e} replaced by the GLOBAL expert index, so a file does not
 * depend on the rank layout and any expert-parallel layout can load any slice of it.
 *
 * Integrity: a checkpoint is either exactly the bytes that were written, or refused. After
 * libhdf5 has closed the file, ckpt_save writes the seal into the first 4096 bytes: the
 * file's length and the SHA-256 of bytes 4096..end (by hand: `head -n 4 FILE` shows the
 * record, `tail -c +4097 FILE | sha256sum` recomputes the digest). Every reader below checks
 * the seal BEFORE libhdf5 parses anything (libhdf5 does not validate its own structures
 * against damage: checkpoints/seal.h), then checks that the file it
 * opens is the one it verified, then the attributes: each value is bounded so that a
 * crafted or edited file is refused naming the attribute. A verdict is cached per process
 * and file identity (checkpoints/seal.h), so opening one file several times hashes it once.
 * Inside, every dataset is still chunked with HDF5's Fletcher32 filter and the 1.8
 * object-header format checksums the metadata. Files are written to "PATH.tmp", flushed,
 * closed, sealed, fsynced and renamed, then the directory is fsynced (core/fs.h fs_publish):
 * a reader never sees a partial file under the final name. Every failure becomes a MoeErr
 * naming the file and the dataset or attribute (HDF5's own error printing is switched off
 * process-wide by every ckpt_ call).
 * Format version 1 files (no seal) are still read, with a one-line warning on stderr: their
 * HDF5 structures cannot be verified.
 *
 * Non-goals (yet): gathering expert slices from other ranks (ckpt_save writes the experts
 * this process holds, which is all of them on one rank), parallel HDF5, compression,
 * bf16 storage, signatures (the seal detects damage; whoever can write a file can seal it).
 */
#ifndef MOE_CKPT_H
#define MOE_CKPT_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "core/common.h"
#include "layers/model.h"
#include "configs/config.h"

#define CKPT_MAGIC "moetrain-checkpoint"
#define CKPT_FORMAT_VERSION 2   /* 2: sealed (a 4096-byte user block); 1: no seal */

/* The scalar run state besides the tensors. */
typedef struct CkptMeta {
    int64_t step;             /* optimizer steps done (= lr-schedule position) */
    int64_t tokens_seen;      /* training tokens consumed so far */
    uint64_t seed;            /* run seed: keys init and the counter-based router noise */
    uint64_t loader_epoch;    /* LoaderState.epoch */
    uint64_t loader_cursor;   /* LoaderState.cursor */
    uint64_t loader_windows;  /* training windows per epoch when saved (resume sanity check) */
    uint64_t tok_hash;        /* tok_hash() of the tokenizer stored in the file */
    bool has_optimizer;       /* read only: the file holds AdamW moments (ckpt_save's
                                 with_optimizer decides it when writing) */
    bool has_router_bias;     /* read only: the file holds /state/router_bias (written when
                                 the model's use_router_bias is set) */
    /* LoRA fine-tuning: an adapter checkpoint (attributes base_path, base_checksum) holds
     * only the model's TRAINABLE tensors (adapters and any base tensor the config unfroze)
     * and their moments; the frozen rest is the full checkpoint base_path, whose bytes
     * hash to base_checksum (ckpt_file_checksum). false: a full checkpoint (default). */
    bool adapter;
    uint64_t base_checksum;
    char base_path[1024];
    /* Lineage inside a run directory: every process that trains in a run.dir gets a
     * generation number (>= 1) above every generation already there; a checkpoint records
     * its own generation and the (generation, step) of the checkpoint its process resumed
     * from (parent_gen 0: no parent, a fresh start). Files written before these attributes
     * existed, or by other commands (upcycle), read as generation 0 with no parent. */
    int64_t lineage_gen;
    int64_t parent_gen;
    int64_t parent_step;
    /* Gradient-spike detector state (train.spike_factor): the running mean of finite
     * gradient norms and how many norms it has seen, so a resumed run flags the same
     * steps. Stored as the double's bits; absent in older files (0, 0). */
    double gnorm_ema;
    int64_t gnorm_count;
} CkptMeta;

/* What `moetrain ckpt info` shows; filled by ckpt_inspect. */
typedef struct CkptInfo {
    int format_version;       /* 2 (sealed) or 1 (written before seals) */
    bool sealed;              /* every byte verified against the seal's SHA-256 */
    CkptMeta meta;
    int n_experts;            /* E recorded in the file */
    bool has_optimizer;       /* /optim/m and /optim/v present */
    char *config_text;        /* (config_len + 1) NUL-terminated YAML; owned, ckpt_info_free */
    size_t config_len;
    size_t tokenizer_bytes;   /* size of the stored tokenizer file */
    size_t n_datasets;        /* every dataset in the file, all read and checksum-verified */
    size_t n_params;          /* parameter elements under /params */
    size_t n_params_dense;    /* ... of which outside the experts */
    size_t n_params_expert;   /* ... of which in "...experts.<e>..." datasets (all experts) */
    size_t n_optim;           /* moment elements under /optim (m and v together) */
} CkptInfo;

/* Write a checkpoint of model m to path, atomically (see above). c is the run's effective
 * config (stored as YAML), meta the run state, tokenizer_path the tokenizer file whose bytes
 * are stored (required). Stores the values of every parameter, and when with_optimizer the
 * AdamW moments (m->ps.blocks[*].m, .v) of every trainable parameter; with meta->adapter
 * only the trainable tensors (and their moments), plus the base attributes. Experts: the
 * m->e_local experts held, under global indices m->e_first + i (one process: all of them).
 * The directory of path must exist (rundir_prepare). Fails (-1, err naming the file and
 * the dataset or OS call, with hint) on any I/O or HDF5 error; then neither path nor
 * PATH.tmp has been touched beyond removal of the temporary, and an older file at path is
 * unchanged. */
int ckpt_save(const char *path, const Config *c, const Model *m, const CkptMeta *meta,
              const char *tokenizer_path, bool with_optimizer, MoeErr *err);

/* Every reader below (ckpt_read_meta, ckpt_verify, ckpt_read_config, ckpt_read_tokenizer,
 * ckpt_load, ckpt_load_base, ckpt_inspect) first verifies the whole file against its seal
 * (cached per process and file identity, see checkpoints/seal.h), then checks magic, format
 * version and every attribute of the run state (counters in [0, 2^62], loader_cursor below
 * loader_windows, has_optimizer 0 or 1 and matching /optim, n_experts in [0, INT_MAX], a
 * finite gnorm_ema >= 0, ...). A failure names the file and what did not match: the
 * expected and found SHA-256 for a damaged file, the attribute for a bad value. */

/* The run state: verifies the file, then reads the meta attributes into *meta (may be
 * NULL; the adapter fields from the optional base attributes). Reads no tensor data. Fails
 * (-1, err) on a missing, truncated, damaged or foreign file, an unsupported version or an
 * attribute out of bounds. */
int ckpt_read_meta(const char *path, CkptMeta *meta, MoeErr *err);

/* Whole-file verification without loading the model: the file is what was written (its
 * length and the SHA-256 of its bytes as recorded in the seal at write time) and its run
 * state reads and is within bounds; *meta as ckpt_read_meta (may be NULL). A format
 * version 1 file (no seal) is accepted after every dataset has been read back through its
 * Fletcher32 checksum (its HDF5 structures stay unverified; a warning says so once). Fails
 * (-1, err naming the file and what did not match). */
int ckpt_verify(const char *path, CkptMeta *meta, MoeErr *err);

/* (Re)seal path in place after it was modified through HDF5 (tests, repair tools): the
 * record of checkpoints/seal.h for the bytes as they now are. The file must have the
 * 4096-byte user block ckpt_save creates (a format version 1 file cannot be sealed). It
 * vouches for nothing inside: the readers still check every attribute. Not atomic (a crash
 * midway leaves a file that fails verification). Fails (-1, err naming the file). */
int ckpt_seal(const char *path, MoeErr *err);

/* The config stored in the file, parsed by config_load_text (errors located as
 * "PATH:LINE:COL"); c->name is the original config name, c->path is PATH. *c must be zeroed
 * or freed; release with config_free. Does not run config_validate. */
int ckpt_read_config(const char *path, Config *c, MoeErr *err);

/* The stored tokenizer file: *bytes (*n bytes + one spare NUL) owned by the caller
 * (moe_free). Fails (-1, err) on a missing dataset or a read/checksum error. */
int ckpt_read_tokenizer(const char *path, uint8_t **bytes, size_t *n, MoeErr *err);

/* Load the parameters model m holds (already built with the checkpoint's shape: compare
 * configs first with ckpt_read_config + config_diff_shape) and, when load_optimizer, the
 * AdamW moments of its trainable parameters; fills *meta (may be NULL). Experts are read by
 * global index m->e_first .. m->e_first + m->e_local - 1. Before reading any data it checks
 * magic, version, n_experts, and that EVERY expected dataset exists as float with exactly
 * the expected shape; errors name the file and the dataset ("PATH: dataset
 * 'model.layers.2.block_sparse_moe.experts.5.w1.weight' is missing", or both shapes) with a
 * hint. Every read is checksum-verified. Fails with -1 and err; after a failure in the read
 * phase (corruption) the model's values are partly overwritten and must not be used.
 * Router bias: when the file holds /state/router_bias (L, E) it is read into m->router_bias
 * and m->use_router_bias is set (so inference routes as training did); when it does not,
 * m->router_bias is zeroed and use_router_bias left as the caller set it (a run that turns
 * the option on over an older checkpoint starts its bias at zero). */
int ckpt_load(const char *path, Model *m, CkptMeta *meta, bool load_optimizer, MoeErr *err);
/* Adapter checkpoints: ckpt_load reads only m's trainable tensors (m must have been built
 * with the file's LoRA spec; its frozen base must be loaded first with ckpt_load_base).
 * A full checkpoint into a model with adapters, or an adapter checkpoint into one without,
 * fails naming the file. */

/* The base of a LoRA model: every tensor of m except the adapters, values only, from the
 * FULL checkpoint path (an adapter checkpoint fails with a hint). Same checks as
 * ckpt_load. */
int ckpt_load_base(const char *path, Model *m, MoeErr *err);

/* 64-bit checksum of a file's bytes (the base_checksum of adapter checkpoints): read as
 * little-endian 64-bit words (the last one zero-padded), h = splitmix64(h ^ word) from
 * h = the FNV-1a offset basis, then h = splitmix64(h ^ length). Fails (-1, err naming the
 * file and the OS reason). */
int ckpt_file_checksum(const char *path, uint64_t *sum, MoeErr *err);

/* Read and checksum-verify EVERY dataset in the file and summarise it (for `ckpt info`).
 * *info is overwritten; release with ckpt_info_free (also after a failure). */
int ckpt_inspect(const char *path, CkptInfo *info, MoeErr *err);
void ckpt_info_free(CkptInfo *info);

#endif
