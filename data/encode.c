/* encode.c: text files to a token shard. See encode.h. */
#include "data/encode.h"

#include <string.h>
#include <sys/stat.h>

#include <errno.h>
#include <stdio.h>

#include "core/clock.h"
#include "core/pool.h"
#include "data/wordmap.h"

int encode_file_hash(const char *path, uint64_t *size, uint64_t *hash, MoeErr *err) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        moe_errorf(err, "cannot read text file %s: %s", path, strerror(errno));
        return moe_hintf(err, "check the path (relative paths are relative to the directory "
                         "moetrain runs in)");
    }
    enum { BLOCK = 1 << 20 };
    uint8_t *buf = moe_malloc(BLOCK);
    uint64_t h = WORDMAP_FNV_OFFSET, n = 0;   /* tok_text_hash, continued block by block */
    size_t got;
    while ((got = fread(buf, 1, BLOCK, fp)) > 0) {
        h = wordmap_fnv1a(h, buf, got);
        n += got;
    }
    int bad = ferror(fp);
    fclose(fp);
    moe_free(buf);
    if (bad) {
        moe_errorf(err, "cannot read text file %s", path);
        return moe_hintf(err, "check the file and the disk");
    }
    *size = n;
    *hash = h;
    return 0;
}

typedef struct EncodeJob {
    const Tokenizer *t;
    const RecReader *r;
    int32_t *ids;        /* (n_text) item i's ids at ids[items[i].off ..] (ids <= bytes) */
    size_t *n_ids;       /* (n_items) ids of item i */
    int tasks;
} EncodeJob;

/* Task k encodes the k-th contiguous run of the batch's items. */
static void encode_task(void *ctx, int k, int worker) {
    (void)worker;
    EncodeJob *j = ctx;
    size_t lo, hi;
    pool_range(j->r->n_items, k, j->tasks, &lo, &hi);
    for (size_t i = lo; i < hi; i++) {
        const RecItem *it = &j->r->items[i];
        int rc = tok_encode(j->t, j->r->text + it->off, it->len, j->ids + it->off, it->len,
                            &j->n_ids[i]);
        ASSERT(rc == 0, "encode gave %zu ids for %zu bytes", j->n_ids[i], it->len);
    }
}

int encode_files(const Tokenizer *t, const char *const *paths, int n, RecFormat fmt,
                 size_t chunk_bytes, const char *out_path, Progress *progress,
                 EncodeStats *st, MoeErr *err) {
    EncodeStats s = {0, 0, 0, 0};
    double t0 = moe_now();
    if (n <= 0) {
        moe_errorf(err, "no text files to encode into %s", out_path);
        return moe_hintf(err, "list at least one text file");
    }
    uint64_t total = 0;
    for (int f = 0; f < n; f++) {
        struct stat sb;
        if (stat(paths[f], &sb) == 0) total += (uint64_t)sb.st_size;
    }
    if (progress) progress_start(progress, "encode", total);
    ShardWriter w;
    if (shard_writer_open(&w, out_path, (uint32_t)tok_vocab_size(t), tok_hash(t), err))
        return -1;
    const int32_t eot = tok_eot(t);
    int32_t *ids = NULL;
    size_t *n_ids = NULL, ids_cap = 0, nid_cap = 0;
    int rc = -1;
    for (int f = 0; f < n; f++) {
        RecReader r;
        if (rec_open(&r, paths[f], fmt, chunk_bytes, err)) goto done;
        int got;
        while ((got = rec_next(&r, err)) == 1) {
            if (r.n_text > ids_cap) {
                moe_free(ids);
                ids_cap = r.n_text;
                ids = moe_malloc(ids_cap * sizeof(int32_t));
            }
            if (r.n_items > nid_cap) {
                moe_free(n_ids);
                nid_cap = r.n_items;
                n_ids = moe_malloc(nid_cap * sizeof(size_t));
            }
            int tasks = 8 * pool_workers();
            if ((size_t)tasks > r.n_items) tasks = (int)r.n_items;
            EncodeJob j = {t, &r, ids, n_ids, tasks};
            pool_parallel_for(tasks, encode_task, &j);
            for (size_t i = 0; i < r.n_items; i++) {
                const RecItem *it = &r.items[i];
                if (shard_writer_put(&w, ids + it->off, n_ids[i], err) ||
                    (it->doc_end && shard_writer_put(&w, &eot, 1, err))) {
                    rec_close(&r);
                    goto done;
                }
                s.tokens += n_ids[i] + (it->doc_end ? 1 : 0);
                s.docs += it->doc_end ? 1 : 0;
            }
            if (progress) progress_update(progress, s.bytes + r.bytes_done);
        }
        s.bytes += r.bytes_done;
        rec_close(&r);
        if (got < 0) goto done;
    }
    rc = shard_writer_commit(&w, err);
done:
    if (rc) shard_writer_abort(&w);
    if (progress) progress_end(progress);
    moe_free(ids);
    moe_free(n_ids);
    s.seconds = moe_now() - t0;
    if (st) *st = s;
    return rc;
}
