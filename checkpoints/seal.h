/* seal.h: the whole-file seal of a checkpoint (internal to checkpoints/: use ckpt.h).
 *
 * Guarantee: every byte of a sealed file is checked, by our own code, before libhdf5 parses
 * any of it. libhdf5 parses its own structures (superblock, object headers, link and
 * chunk-index B-trees, heaps) before any per-dataset Fletcher32 checksum is looked at, and
 * does not validate them against damage; so a damaged file is refused here, never handed
 * to libhdf5.
 *
 * Layout: a sealed file is an HDF5 file created with a SEAL_BLOCK-byte user block
 * (H5Pset_userblock: libhdf5 never reads or writes those bytes, its addresses start after
 * them, and h5ls/h5dump/h5py find the superblock at offset SEAL_BLOCK by themselves). Once
 * libhdf5 has closed the file, the user block receives this text record, then NULs up to
 * SEAL_BLOCK bytes:
 *
 *   moetrain-seal 1
 *   algorithm sha256
 *   length <the file's length in bytes, decimal>
 *   digest <SHA-256 of bytes [SEAL_BLOCK, length), 64 lowercase hex>
 *   check: tail -c +4097 FILE | sha256sum
 *
 * Coverage: the digest covers everything after the user block, over a byte range coreutils
 * reproduces (the record's last line says how; `head -n 4 FILE` shows the record). The
 * user block itself is covered by being canonical: the verifier parses length and digest,
 * writes the record those two values give, and requires the user block to equal it byte for
 * byte. So a change anywhere in [0, SEAL_BLOCK) either breaks that equality or changes the
 * recorded length or digest, which then do not match the file; a change after it changes
 * the digest; truncation and appended bytes change the length. Every byte is covered.
 *
 * Why SHA-256 and not a fast 64-bit hash: the digest is also what a user compares by hand or
 * records elsewhere (a manifest, a model card) to know that a file is the one that was
 * written; a 64-bit non-cryptographic hash can be matched on purpose. It is not a
 * signature: whoever can write the file can also write a new seal. Its cost is paid once
 * per process per file (see the cache in seal_verify; bench/bench_ckpt.c measures it).
 *
 * Files without a seal: checkpoints of format version 1 have no user block and start with
 * HDF5's signature; seal_verify reports them as legacy (sealed false) and the caller
 * decides (ckpt.c reads them with a warning). No single changed byte can make a sealed file
 * look like that (the signature is 8 bytes).
 *
 * Not thread-safe (a process-wide cache): call from one thread, as checkpoint I/O is.
 */
#ifndef MOE_SEAL_H
#define MOE_SEAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/common.h"
#include "checkpoints/sha256.h"

#define SEAL_BLOCK 4096       /* the user block; a power of two >= 512, as HDF5 requires */
#define SEAL_MAGIC "moetrain-seal"
#define SEAL_VERSION 1

/* Which bytes were verified: the file's identity and state when seal_verify looked at it.
 * A file opened later is the verified one iff all of these still agree (seal_same). */
typedef struct SealId {
    uint64_t dev, ino, size;
    int64_t mtime_ns, ctime_ns;
} SealId;

/* Seal path in place: SHA-256 of [SEAL_BLOCK, EOF), the record into [0, SEAL_BLOCK) (any
 * previous record is replaced), then fsync. The file must already be an HDF5 file with a
 * SEAL_BLOCK-byte user block (HDF5's signature at offset SEAL_BLOCK). Not atomic: a crash
 * midway leaves a file that fails verification, never one that passes. Fails (-1, err naming
 * the file and the OS call or what is missing). */
int seal_write(const char *path, MoeErr *err);

/* Verify path before anything parses it. Returns 0 with *sealed = true when the record is
 * intact and length and digest match the file, or *sealed = false when the file starts with
 * HDF5's signature instead (an unsealed, legacy file: nothing verified); *id (may be NULL)
 * is the identity of what was examined. Fails (-1, err naming the file, with hint) on a
 * missing or unreadable file, no record, a damaged record, a length or digest mismatch
 * (both digests in the message), or a file that changed while it was read.
 * Cache: a sealed verdict is remembered by identity (device, inode, size, mtime, ctime) and
 * not recomputed for the same identity, but only for files whose mtime and ctime were
 * already SEAL_SETTLE_S seconds old when verification began: a write after that sets a newer
 * timestamp and so a new identity, whereas a file written within the filesystem's timestamp
 * granularity of the verification could change without its identity changing (the same
 * "racy" rule git applies to its index). Freshly written files are therefore re-hashed on
 * every open. */
#define SEAL_SETTLE_S 2
int seal_verify(const char *path, bool *sealed, SealId *id, MoeErr *err);

/* true when the open file fd is the file id describes, unchanged since. */
bool seal_same(int fd, const SealId *id);

/* Bytes seal_verify has hashed in this process (tests of the cache, benchmarks). */
uint64_t seal_hashed_bytes(void);

#endif
