/* seal.c: whole-file SHA-256 seal of checkpoints, written after libhdf5 closed the file and
 * verified before libhdf5 opens it. See seal.h for the record and why. */
#include "checkpoints/seal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* HDF5's format signature (HDF5 File Format Specification, "Superblock"). */
static const uint8_t HDF5_SIG[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

/* Read size per pread: large enough that syscalls cost nothing next to the hashing, small
 * enough to live in L2 while it is hashed. */
#define SEAL_READ_CHUNK ((size_t)1 << 16)

/* The record for a file of length bytes whose [SEAL_BLOCK, length) hash to digest, into
 * block (SEAL_BLOCK bytes, NUL-padded): the only form seal_verify accepts. */
static void seal_record(uint64_t length, const uint8_t digest[SHA256_BYTES], uint8_t *block) {
    char hex[SHA256_HEX];
    sha256_hex(digest, hex);
    memset(block, 0, SEAL_BLOCK);
    int k = snprintf((char *)block, SEAL_BLOCK,
                     SEAL_MAGIC " %d\nalgorithm sha256\nlength %" PRIu64 "\ndigest %s\n"
                     "check: tail -c +%d FILE | sha256sum\n",
                     SEAL_VERSION, length, hex, SEAL_BLOCK + 1);
    ASSERT(k > 0 && k < SEAL_BLOCK, "seal record of %d bytes", k);
}

static SealId id_of(const struct stat *st) {
    SealId id = {.dev = (uint64_t)st->st_dev, .ino = (uint64_t)st->st_ino,
                 .size = (uint64_t)st->st_size,
                 .mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec,
                 .ctime_ns = (int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec};
    return id;
}

static bool id_eq(const SealId *a, const SealId *b) {
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime_ns == b->mtime_ns && a->ctime_ns == b->ctime_ns;
}

bool seal_same(int fd, const SealId *id) {
    struct stat st;
    if (fstat(fd, &st) != 0) return false;
    SealId now = id_of(&st);
    return id_eq(&now, id);
}

/* ---- the cache of sealed verdicts ---- */

#define SEAL_CACHE_N 32
static SealId g_cache[SEAL_CACHE_N];
static size_t g_cache_n, g_cache_next;

static bool cache_has(const SealId *id) {
    for (size_t i = 0; i < g_cache_n; i++)
        if (id_eq(&g_cache[i], id)) return true;
    return false;
}

static void cache_put(const SealId *id) {
    g_cache[g_cache_next] = *id;
    g_cache_next = (g_cache_next + 1) % SEAL_CACHE_N;
    if (g_cache_n < SEAL_CACHE_N) g_cache_n++;
}

static uint64_t g_hashed;
uint64_t seal_hashed_bytes(void) { return g_hashed; }

/* ---- reading ---- */

/* Exactly n bytes at offset off, or -1 (errno set; EIO standing in for a short read). */
static int read_at(int fd, void *buf, size_t n, uint64_t off) {
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t k = pread(fd, p, n, (off_t)off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            if (k == 0) errno = EIO;
            return -1;
        }
        p += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

/* SHA-256 of bytes [SEAL_BLOCK, size) of fd. */
static int hash_tail(int fd, uint64_t size, uint8_t digest[SHA256_BYTES]) {
    static uint8_t buf[SEAL_READ_CHUNK];
    Sha256 s;
    sha256_init(&s);
    int rc = 0;
    for (uint64_t off = SEAL_BLOCK; off < size && rc == 0;) {
        size_t n = size - off < SEAL_READ_CHUNK ? (size_t)(size - off) : SEAL_READ_CHUNK;
        rc = read_at(fd, buf, n, off);
        sha256_update(&s, buf, n);
        off += n;
    }
    sha256_final(&s, digest);
    return rc;
}

/* Parse the fixed-form record at the start of block: version, algorithm, length and digest.
 * Returns 0, or -1 with what is wrong in why. Canonical form is checked by the caller. */
static int parse_record(const uint8_t *block, uint64_t *length, uint8_t digest[SHA256_BYTES],
                        char *why, size_t cap) {
    const char *p = (const char *)block, *end = p + SEAL_BLOCK;
    const size_t ml = strlen(SEAL_MAGIC " ");
    p += ml;   /* the caller checked the magic */
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl || nl - p != 1 || *p != '0' + SEAL_VERSION) {
        snprintf(why, cap, "seal record version '%.*s' is not %d", nl && nl - p < 20 ?
                 (int)(nl - p) : 20, p, SEAL_VERSION);
        return -1;
    }
    p = nl + 1;
    static const char ALG[] = "algorithm sha256\n", LEN[] = "length ", DIG[] = "digest ";
    if ((size_t)(end - p) < sizeof ALG || memcmp(p, ALG, sizeof ALG - 1) != 0) {
        snprintf(why, cap, "the seal record does not name the digest algorithm sha256");
        return -1;
    }
    p += sizeof ALG - 1;
    if ((size_t)(end - p) < sizeof LEN || memcmp(p, LEN, sizeof LEN - 1) != 0) {
        snprintf(why, cap, "the seal record has no length line");
        return -1;
    }
    p += sizeof LEN - 1;
    uint64_t v = 0;
    int digits = 0;
    for (; p < end && *p >= '0' && *p <= '9' && digits < 20; p++, digits++) {
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - d) / 10) break;
        v = v * 10 + d;
    }
    if (digits == 0 || p >= end || *p != '\n') {
        snprintf(why, cap, "the seal record's length is not a number");
        return -1;
    }
    p++;
    if ((size_t)(end - p) < sizeof DIG - 1 + 2 * SHA256_BYTES ||
        memcmp(p, DIG, sizeof DIG - 1) != 0) {
        snprintf(why, cap, "the seal record has no digest line");
        return -1;
    }
    p += sizeof DIG - 1;
    for (int i = 0; i < 2 * SHA256_BYTES; i++) {
        char c = p[i];
        int x = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (x < 0) {
            snprintf(why, cap, "the seal record's digest is not 64 lowercase hex digits");
            return -1;
        }
        if (i % 2 == 0) digest[i / 2] = (uint8_t)(x << 4);
        else digest[i / 2] |= (uint8_t)x;
    }
    *length = v;
    return 0;
}

static int fail_os(MoeErr *err, const char *path, const char *what) {
    moe_errorf(err, "%s: %s: %s", path, what, strerror(errno));
    return moe_hintf(err, "check the path, its permissions and the disk");
}

int seal_verify(const char *path, bool *sealed, SealId *id, MoeErr *err) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    *sealed = false;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        moe_errorf(err, "%s: cannot open checkpoint: %s", path, strerror(errno));
        return moe_hintf(err, "check the path; checkpoints are in RUN_DIR/checkpoints/");
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        fail_os(err, path, "cannot stat checkpoint");
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        moe_errorf(err, "%s: not a regular file", path);
        return moe_hintf(err, "a checkpoint is one file, RUN_DIR/checkpoints/step_N.h5");
    }
    const SealId seen = id_of(&st);
    if (id) *id = seen;
    if (cache_has(&seen)) {
        close(fd);
        *sealed = true;
        return 0;
    }
    static uint8_t block[SEAL_BLOCK];
    const size_t head = seen.size < SEAL_BLOCK ? (size_t)seen.size : SEAL_BLOCK;
    if (read_at(fd, block, head, 0)) {
        fail_os(err, path, "cannot read checkpoint");
        close(fd);
        return -1;
    }
    memset(block + head, 0, SEAL_BLOCK - head);
    if (head >= sizeof HDF5_SIG && memcmp(block, HDF5_SIG, sizeof HDF5_SIG) == 0) {
        close(fd);   /* unsealed: the caller decides (format version 1) */
        return 0;
    }
    const size_t ml = strlen(SEAL_MAGIC " ");
    if (head < ml || memcmp(block, SEAL_MAGIC " ", ml) != 0) {
        close(fd);
        if (seen.size == 0) moe_errorf(err, "%s: the file is empty", path);
        else moe_errorf(err, "%s: not a moetrain checkpoint: it starts with neither a seal "
                        "record ('" SEAL_MAGIC "') nor an HDF5 signature", path);
        return moe_hintf(err, "the file is damaged, truncated to nothing or of another kind; "
                              "resume from an older checkpoint");
    }
    if (seen.size < SEAL_BLOCK) {
        close(fd);
        moe_errorf(err, "%s: the file is %" PRIu64 " bytes, shorter than its %d-byte seal "
                   "block: truncated", path, seen.size, SEAL_BLOCK);
        return moe_hintf(err, "the file is incomplete; resume from an older checkpoint");
    }
    uint64_t length = 0;
    uint8_t want[SHA256_BYTES], got[SHA256_BYTES];
    char why[200];
    if (parse_record(block, &length, want, why, sizeof why) == 0) {
        static uint8_t canon[SEAL_BLOCK];
        seal_record(length, want, canon);
        if (memcmp(canon, block, SEAL_BLOCK) != 0)
            snprintf(why, sizeof why, "the seal record (bytes 0..%d) is not in its canonical "
                     "form", SEAL_BLOCK - 1);
        else
            why[0] = 0;
    }
    if (why[0]) {
        close(fd);
        moe_errorf(err, "%s: damaged seal: %s", path, why);
        return moe_hintf(err, "the file's first %d bytes were changed; the file cannot be "
                              "trusted, resume from an older checkpoint", SEAL_BLOCK);
    }
    int rc = hash_tail(fd, seen.size, got);
    g_hashed += seen.size - SEAL_BLOCK;
    if (rc) fail_os(err, path, "cannot read checkpoint");
    else if (!seal_same(fd, &seen)) {
        moe_errorf(err, "%s: the file changed while its digest was computed", path);
        moe_hintf(err, "is another process writing it? wait for it and retry");
        rc = -1;
    }
    close(fd);
    if (rc) return -1;
    if (length != seen.size || memcmp(want, got, SHA256_BYTES) != 0) {
        char hw[SHA256_HEX], hg[SHA256_HEX];
        sha256_hex(want, hw);
        sha256_hex(got, hg);
        char sz[160] = "";
        if (length != seen.size)
            snprintf(sz, sizeof sz, "; it is %" PRIu64 " bytes but was sealed at %" PRIu64
                     " (%s)", seen.size, length, seen.size < length ? "truncated" :
                     "bytes appended");
        moe_errorf(err, "%s: the file is not what was written: SHA-256 of bytes %d..end is "
                   "%s, the seal records %s%s", path, SEAL_BLOCK, hg, hw, sz);
        return moe_hintf(err, "the file was damaged or changed after it was written (check "
                              "by hand: tail -c +%d FILE | sha256sum); resume from an older "
                              "checkpoint", SEAL_BLOCK + 1);
    }
    /* remember only files whose timestamps had settled (see seal.h) */
    const int64_t settled = ((int64_t)now.tv_sec - SEAL_SETTLE_S) * 1000000000 + now.tv_nsec;
    if (seen.mtime_ns <= settled && seen.ctime_ns <= settled) cache_put(&seen);
    *sealed = true;
    return 0;
}

/* ---- writing ---- */

int seal_write(const char *path, MoeErr *err) {
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return fail_os(err, path, "cannot open to seal");
    struct stat st;
    uint8_t sig[sizeof HDF5_SIG];
    const char *what = "cannot stat";
    if (fstat(fd, &st) != 0) goto os_fail;
    if ((uint64_t)st.st_size < SEAL_BLOCK + sizeof sig ||
        read_at(fd, sig, sizeof sig, SEAL_BLOCK) || memcmp(sig, HDF5_SIG, sizeof sig) != 0) {
        close(fd);
        moe_errorf(err, "%s: cannot seal: not an HDF5 file with a %d-byte user block (no HDF5 "
                   "signature at offset %d)", path, SEAL_BLOCK, SEAL_BLOCK);
        return moe_hintf(err, "only files written by ckpt_save (format version 2) can be "
                              "sealed");
    }
    uint8_t digest[SHA256_BYTES];
    what = "cannot read";
    if (hash_tail(fd, (uint64_t)st.st_size, digest)) goto os_fail;
    static uint8_t block[SEAL_BLOCK];
    seal_record((uint64_t)st.st_size, digest, block);
    what = "cannot write the seal";
    for (size_t done = 0; done < SEAL_BLOCK;) {
        ssize_t k = pwrite(fd, block + done, SEAL_BLOCK - done, (off_t)done);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            if (k == 0) errno = EIO;
            goto os_fail;
        }
        done += (size_t)k;
    }
    what = "fsync failed";
    if (fsync(fd) != 0) goto os_fail;
    what = "close failed";
    if (close(fd) != 0) {
        fd = -1;
        goto os_fail;
    }
    return 0;
os_fail:
    fail_os(err, path, what);
    if (fd >= 0) close(fd);
    return -1;
}
