/* shard.c: write, map and validate token shards. See shard.h for the format. */
#include "data/shard.h"
#include "core/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The token array is used in place from the mapping, which is only right on a little-endian
 * host (every machine this targets). */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "data/shard.c maps little-endian token files directly; port it for this host"
#endif

static void put_u32(uint8_t *p, uint32_t v) { for (int k = 0; k < 4; k++) p[k] = (uint8_t)(v >> (8 * k)); }
static void put_u64(uint8_t *p, uint64_t v) { for (int k = 0; k < 8; k++) p[k] = (uint8_t)(v >> (8 * k)); }
static uint32_t get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) v |= (uint32_t)p[k] << (8 * k);
    return v;
}
static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int k = 0; k < 8; k++) v |= (uint64_t)p[k] << (8 * k);
    return v;
}

int shard_write(const char *path, const int32_t *ids, size_t n, uint32_t vocab, uint64_t tok_hash,
                MoeErr *err) {
    if (vocab == 0 || vocab > SHARD_MAX_VOCAB) {
        moe_errorf(err, "cannot write shard %s: vocab_size %u is outside [1, %u]", path, vocab,
                   SHARD_MAX_VOCAB);
        return moe_hintf(err, "token shards store uint16 ids; use a tokenizer with vocab_size "
                         "<= %u", SHARD_MAX_VOCAB);
    }
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (uint32_t)ids[i] >= vocab) {
            moe_errorf(err, "cannot write shard %s: token %zu has id %d outside [0, %u)", path, i,
                       (int)ids[i], vocab);
            return moe_hintf(err, "the ids were not made by a tokenizer of vocab_size %u", vocab);
        }
    }
    uint8_t head[SHARD_HEADER_BYTES];
    memset(head, 0, sizeof head);
    memcpy(head, SHARD_MAGIC, sizeof SHARD_MAGIC);
    put_u32(head + 8, SHARD_VERSION);
    put_u32(head + 12, vocab);
    put_u64(head + 16, (uint64_t)n);
    put_u64(head + 24, tok_hash);
    FsAtomicFile af;
    if (fs_atomic_open(&af, path, err) != 0) return -1;
    fwrite(head, 1, sizeof head, af.fp);
    uint16_t chunk[4096];
    for (size_t i = 0; i < n;) {
        size_t k = 0;
        for (; k < 4096 && i < n; k++, i++) chunk[k] = (uint16_t)ids[i];
        if (fwrite(chunk, sizeof(uint16_t), k, af.fp) != k) break;  /* commit reports ferror */
    }
    return fs_atomic_commit(&af, err);
}

void shard_close(Shard *s) {
    if (!s) return;
    if (s->map) munmap(s->map, s->map_len);
    moe_free(s->path);
    memset(s, 0, sizeof *s);
}

int shard_open(Shard *s, const char *path, MoeErr *err) {
    memset(s, 0, sizeof *s);
    const char *regen = "regenerate the shard from the text (shard_encode_files / moetrain "
                        "tokenize) or restore it from a backup";
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        moe_errorf(err, "cannot open shard %s: %s", path, strerror(errno));
        return moe_hintf(err, "check data.train_shards paths; create shards with the tokenize step");
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        moe_errorf(err, "shard %s is not a regular file", path);
        return moe_hintf(err, "give the path of a .bin token shard");
    }
    size_t size = (size_t)st.st_size;
    if (size < SHARD_HEADER_BYTES) {
        close(fd);
        moe_errorf(err, "shard %s is truncated: %zu bytes, smaller than the %u-byte header", path,
                   size, SHARD_HEADER_BYTES);
        return moe_hintf(err, "%s", regen);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);  /* the mapping keeps the file alive */
    if (map == MAP_FAILED) {
        moe_errorf(err, "cannot map shard %s (%zu bytes): %s", path, size, strerror(errno));
        return moe_hintf(err, "check free address space / memory limits (ulimit -v)");
    }
    s->map = map;
    s->map_len = size;
    s->path = moe_strdup(path);
    const uint8_t *h = map;
    if (memcmp(h, SHARD_MAGIC, sizeof SHARD_MAGIC) != 0) {
        moe_errorf(err, "%s is not a moetrain token shard (bad magic)", path);
        moe_hintf(err, "shards start with \"MOETOK1\"; %s", regen);
        goto fail;
    }
    uint32_t version = get_u32(h + 8);
    if (version != SHARD_VERSION) {
        moe_errorf(err, "shard %s has format version %u; this build reads version %u", path,
                   version, SHARD_VERSION);
        moe_hintf(err, "%s", regen);
        goto fail;
    }
    s->vocab_size = get_u32(h + 12);
    uint64_t n = get_u64(h + 16);
    s->tok_hash = get_u64(h + 24);
    if (s->vocab_size == 0 || s->vocab_size > SHARD_MAX_VOCAB) {
        moe_errorf(err, "shard %s header has vocab_size %u, outside [1, %u]", path, s->vocab_size,
                   SHARD_MAX_VOCAB);
        moe_hintf(err, "%s", regen);
        goto fail;
    }
    uint64_t payload = size - SHARD_HEADER_BYTES;
    if (n > payload / 2 || payload != 2 * n) {
        char want[64];
        if (n <= (UINT64_MAX - SHARD_HEADER_BYTES) / 2)
            snprintf(want, sizeof want, "%llu", (unsigned long long)(SHARD_HEADER_BYTES + 2 * n));
        else
            snprintf(want, sizeof want, "more than 2^64");
        moe_errorf(err, "shard %s: header says %llu tokens, so the file should be %s bytes, but "
                   "it has %zu bytes (%s)", path, (unsigned long long)n, want, size,
                   n > payload / 2 ? "truncated" : "trailing bytes");
        moe_hintf(err, "the file was not written completely; %s", regen);
        goto fail;
    }
    s->n_tokens = (size_t)n;
    s->tokens = (const uint16_t *)(h + SHARD_HEADER_BYTES);
    for (size_t i = 0; i < s->n_tokens; i++) {
        if (s->tokens[i] >= s->vocab_size) {
            moe_errorf(err, "shard %s: token %zu has id %u, not below vocab_size %u", path, i,
                       (unsigned)s->tokens[i], s->vocab_size);
            moe_hintf(err, "the shard is corrupt; %s", regen);
            goto fail;
        }
    }
    return 0;
fail:
    shard_close(s);
    return -1;
}

int shard_encode_files(const Tokenizer *t, const char *const *paths, int n, const char *out_path,
                       MoeErr *err) {
    if ((uint32_t)tok_vocab_size(t) > SHARD_MAX_VOCAB) {
        moe_errorf(err, "cannot write shard %s: tokenizer vocab_size %d exceeds %u", out_path,
                   tok_vocab_size(t), SHARD_MAX_VOCAB);
        return moe_hintf(err, "train a tokenizer with vocab_size <= %u", SHARD_MAX_VOCAB);
    }
    if (n <= 0) {
        moe_errorf(err, "no text files to encode into %s", out_path);
        return moe_hintf(err, "list at least one text file");
    }
    int32_t *all = NULL;
    size_t n_all = 0, cap = 0;
    int rc = -1;
    for (int f = 0; f < n; f++) {
        uint8_t *buf;
        size_t len;
        if (fs_read_file(paths[f], &buf, &len, err) != 0) goto done;
        if (len == 0) {
            moe_free(buf);
            moe_errorf(err, "%s is empty", paths[f]);
            moe_hintf(err, "remove it from the list of text files or put text in it");
            goto done;
        }
        /* encode never yields more ids than bytes: reserve len + 1 (the EOT) up front */
        if (n_all + len + 1 > cap) {
            size_t nc = cap ? cap : 1024;
            while (nc < n_all + len + 1) nc *= 2;
            all = moe_realloc(all, cap * sizeof(int32_t), nc * sizeof(int32_t));
            cap = nc;
        }
        size_t got;
        int erc = tok_encode(t, buf, len, all + n_all, cap - n_all, &got);
        ASSERT(erc == 0, "encode of %s needed %zu ids for %zu bytes", paths[f], got, len);
        moe_free(buf);
        n_all += got;
        all[n_all++] = tok_eot(t);
    }
    rc = shard_write(out_path, all, n_all, (uint32_t)tok_vocab_size(t), tok_hash(t), err);
done:
    moe_free(all);
    return rc;
}
