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

/* The version-2 header for vocab, count n and hash. */
static void make_header(uint8_t head[SHARD_HEADER_BYTES], uint32_t vocab, uint64_t n,
                        uint64_t tok_hash) {
    memset(head, 0, SHARD_HEADER_BYTES);
    memcpy(head, SHARD_MAGIC, sizeof SHARD_MAGIC);
    put_u32(head + 8, SHARD_VERSION);
    put_u32(head + 12, vocab);
    put_u64(head + 16, n);
    put_u64(head + 24, tok_hash);
    put_u32(head + 32, (uint32_t)shard_width_for(vocab));
}

int shard_writer_open(ShardWriter *w, const char *path, uint32_t vocab, uint64_t tok_hash,
                      MoeErr *err) {
    memset(w, 0, sizeof *w);
    if (vocab == 0 || vocab > SHARD_MAX_VOCAB) {
        moe_errorf(err, "cannot write shard %s: vocab_size %u is outside [1, %u]", path, vocab,
                   SHARD_MAX_VOCAB);
        return moe_hintf(err, "token shards store ids of up to 32 bits; use a tokenizer with "
                         "vocab_size <= %u", SHARD_MAX_VOCAB);
    }
    FsAtomicFile *af = moe_calloc(sizeof *af);
    if (fs_atomic_open(af, path, err) != 0) {
        moe_free(af);
        return -1;
    }
    w->af = af;
    w->vocab = vocab;
    w->width = shard_width_for(vocab);
    w->tok_hash = tok_hash;
    w->path = moe_strdup(path);
    uint8_t head[SHARD_HEADER_BYTES];
    make_header(head, vocab, 0, tok_hash);   /* the count is patched at commit */
    fwrite(head, 1, sizeof head, af->fp);    /* commit reports ferror */
    return 0;
}

void shard_writer_abort(ShardWriter *w) {
    if (!w) return;
    if (w->af) {
        fs_atomic_abort(w->af);
        moe_free(w->af);
    }
    moe_free(w->path);
    memset(w, 0, sizeof *w);
}

int shard_writer_put(ShardWriter *w, const int32_t *ids, size_t n, MoeErr *err) {
    FsAtomicFile *af = w->af;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (uint32_t)ids[i] >= w->vocab) {
            moe_errorf(err, "cannot write shard %s: token %zu has id %d outside [0, %u)",
                       w->path, w->n + i, (int)ids[i], w->vocab);
            moe_hintf(err, "the ids were not made by a tokenizer of vocab_size %u", w->vocab);
            shard_writer_abort(w);
            return -1;
        }
    }
    /* convert through a small stack buffer: the file's width, little-endian in place */
    union { uint16_t u16[4096]; uint32_t u32[4096]; } chunk;
    for (size_t i = 0; i < n;) {
        size_t k = 0;
        if (w->width == 2) for (; k < 4096 && i < n; k++, i++) chunk.u16[k] = (uint16_t)ids[i];
        else for (; k < 4096 && i < n; k++, i++) chunk.u32[k] = (uint32_t)ids[i];
        if (fwrite(&chunk, (size_t)w->width, k, af->fp) != k) break;   /* commit reports */
    }
    w->n += n;
    return 0;
}

int shard_writer_commit(ShardWriter *w, MoeErr *err) {
    FsAtomicFile *af = w->af;
    uint8_t head[SHARD_HEADER_BYTES];
    make_header(head, w->vocab, (uint64_t)w->n, w->tok_hash);
    if (fflush(af->fp) == 0 && fseek(af->fp, 0, SEEK_SET) == 0)
        fwrite(head, 1, sizeof head, af->fp);   /* a failure shows in ferror at commit */
    int rc = fs_atomic_commit(af, err);
    moe_free(af);
    w->af = NULL;
    shard_writer_abort(w);
    return rc;
}

int shard_write(const char *path, const int32_t *ids, size_t n, uint32_t vocab, uint64_t tok_hash,
                MoeErr *err) {
    if (vocab == 0 || vocab > SHARD_MAX_VOCAB) {
        moe_errorf(err, "cannot write shard %s: vocab_size %u is outside [1, %u]", path, vocab,
                   SHARD_MAX_VOCAB);
        return moe_hintf(err, "token shards store ids of up to 32 bits; use a tokenizer with "
                         "vocab_size <= %u", SHARD_MAX_VOCAB);
    }
    for (size_t i = 0; i < n; i++) {   /* before the temporary exists: nothing is written */
        if (ids[i] < 0 || (uint32_t)ids[i] >= vocab) {
            moe_errorf(err, "cannot write shard %s: token %zu has id %d outside [0, %u)", path, i,
                       (int)ids[i], vocab);
            return moe_hintf(err, "the ids were not made by a tokenizer of vocab_size %u", vocab);
        }
    }
    ShardWriter w;
    if (shard_writer_open(&w, path, vocab, tok_hash, err)) return -1;
    if (shard_writer_put(&w, ids, n, err)) return -1;
    return shard_writer_commit(&w, err);
}

void shard_close(Shard *s) {
    if (!s) return;
    if (s->map) munmap(s->map, s->map_len);
    moe_free(s->path);
    memset(s, 0, sizeof *s);
}

void shard_view(Shard *s, const void *tokens, size_t n, int width, uint32_t vocab,
                uint64_t tok_hash, const char *label) {
    ASSERT(width == 2 || width == 4, "shard_view width %d", width);
    memset(s, 0, sizeof *s);
    s->tokens = tokens;
    s->n_tokens = n;
    s->width = width;
    s->version = (int)SHARD_VERSION;
    s->vocab_size = vocab;
    s->tok_hash = tok_hash;
    s->path = moe_strdup(label);
}

size_t shard_read(const Shard *s, size_t off, size_t n, int32_t *out) {
    ASSERT(off <= s->n_tokens && n <= s->n_tokens - off, "shard_read [%zu, +%zu) of %zu in %s",
           off, n, s->n_tokens, s->path ? s->path : "?");
    const uint32_t V = s->vocab_size;
    if (s->width == 2) {
        const uint16_t *p = (const uint16_t *)s->tokens + off;
        for (size_t i = 0; i < n; i++) {
            if (p[i] >= V) return i;
            out[i] = p[i];
        }
    } else {
        const uint32_t *p = (const uint32_t *)s->tokens + off;
        for (size_t i = 0; i < n; i++) {
            if (p[i] >= V) return i;
            out[i] = (int32_t)p[i];
        }
    }
    return n;
}

int shard_check_ids(const Shard *s, MoeErr *err) {
    for (size_t i = 0; i < s->n_tokens; i++) {
        uint32_t v = shard_token(s, i);
        if (v >= s->vocab_size) {
            moe_errorf(err, "shard %s: token %zu has id %u, not below vocab_size %u", s->path, i,
                       v, s->vocab_size);
            return moe_hintf(err, "the shard is corrupt; regenerate it from the text (moetrain "
                             "data encode) or restore it from a backup");
        }
    }
    return 0;
}

int shard_open(Shard *s, const char *path, MoeErr *err) {
    memset(s, 0, sizeof *s);
    const char *regen = "regenerate the shard from the text (moetrain data encode) or restore "
                        "it from a backup";
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        moe_errorf(err, "cannot open shard %s: %s", path, strerror(errno));
        return moe_hintf(err, "check the data.shards / data.val_shards paths; create shards "
                         "with `moetrain data encode`");
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        moe_errorf(err, "shard %s is not a regular file", path);
        return moe_hintf(err, "give the path of a token shard (.tok)");
    }
    size_t size = (size_t)st.st_size;
    if (size < SHARD_V1_HEADER_BYTES) {
        close(fd);
        moe_errorf(err, "shard %s is truncated: %zu bytes, smaller than the %u-byte header", path,
                   size, SHARD_V1_HEADER_BYTES);
        return moe_hintf(err, "%s", regen);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);  /* the mapping keeps the file alive */
    if (map == MAP_FAILED) {
        moe_errorf(err, "cannot map shard %s (%zu bytes): %s", path, size, strerror(errno));
        return moe_hintf(err, "check free address space / memory limits (ulimit -v)");
    }
    /* training reads windows at random offsets: tell the kernel not to read ahead */
    (void)madvise(map, size, MADV_RANDOM);
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
    if (version != 1 && version != SHARD_VERSION) {
        moe_errorf(err, "shard %s has format version %u; this build reads versions 1 and %u",
                   path, version, SHARD_VERSION);
        moe_hintf(err, "a newer moetrain wrote it: use that build, or %s", regen);
        goto fail;
    }
    s->version = (int)version;
    s->vocab_size = get_u32(h + 12);
    uint64_t n = get_u64(h + 16);
    s->tok_hash = get_u64(h + 24);
    size_t head_bytes = version == 1 ? SHARD_V1_HEADER_BYTES : SHARD_HEADER_BYTES;
    uint32_t max_vocab = version == 1 ? SHARD_MAX_VOCAB16 : SHARD_MAX_VOCAB;
    if (s->vocab_size == 0 || s->vocab_size > max_vocab) {
        moe_errorf(err, "shard %s (format %u) header has vocab_size %u, outside [1, %u]", path,
                   version, s->vocab_size, max_vocab);
        moe_hintf(err, "%s", regen);
        goto fail;
    }
    if (size < head_bytes) {
        moe_errorf(err, "shard %s is truncated: %zu bytes, smaller than the %zu-byte header",
                   path, size, head_bytes);
        moe_hintf(err, "%s", regen);
        goto fail;
    }
    s->width = 2;
    if (version >= 2) {
        uint32_t width = get_u32(h + 32), reserved = get_u32(h + 36);
        if (width != (uint32_t)shard_width_for(s->vocab_size) || reserved != 0) {
            moe_errorf(err, "shard %s header has token width %u bytes and reserved field %u "
                       "for vocab_size %u (expected width %d and 0)", path, width, reserved,
                       s->vocab_size, shard_width_for(s->vocab_size));
            moe_hintf(err, "the header is corrupt; %s", regen);
            goto fail;
        }
        s->width = (int)width;
    }
    uint64_t payload = size - head_bytes, w = (uint64_t)s->width;
    if (n > payload / w || payload != w * n) {
        char want[64];
        if (n <= (UINT64_MAX - head_bytes) / w)
            snprintf(want, sizeof want, "%llu", (unsigned long long)(head_bytes + w * n));
        else
            snprintf(want, sizeof want, "more than 2^64");
        moe_errorf(err, "shard %s: header says %llu tokens of %d bytes, so the file should be "
                   "%s bytes, but it has %zu bytes (%s)", path, (unsigned long long)n, s->width,
                   want, size, n > payload / w ? "truncated" : "trailing bytes");
        moe_hintf(err, "the file was not written completely; %s", regen);
        goto fail;
    }
    s->n_tokens = (size_t)n;
    s->tokens = h + head_bytes;
    return 0;
fail:
    shard_close(s);
    return -1;
}
