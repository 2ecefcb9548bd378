/* dataset.c: see dataset.h. */
#include "train/dataset.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/fs.h"

/* Load the tokenizer, or train it on data.text when its file does not exist yet. */
static int prepare_tokenizer(const Config *c, Tokenizer *tok, MoeErr *err) {
    if (fs_exists(c->data.tokenizer)) {
        if (tok_load(tok, c->data.tokenizer, err)) return -1;
    } else {
        if (c->data.n_sft > 0) {
            moe_errorf(err, "data.tokenizer: %s does not exist; fine-tuning records (data.sft) "
                       "do not train a tokenizer", c->data.tokenizer);
            return moe_hintf(err, "point data.tokenizer at the tokenizer of the model being "
                             "fine-tuned (the base run's data.tokenizer)");
        }
        if (c->data.n_text == 0) {
            moe_errorf(err, "%s: tokenizer file does not exist and data.text lists no text "
                       "to train it on", c->data.tokenizer);
            return moe_hintf(err, "train one with `moetrain tokenizer train`, or list text "
                             "files under data.text");
        }
        printf("training a %d-token byte-level BPE tokenizer on %zu text file(s) -> %s\n",
               c->model.vocab_size, c->data.n_text, c->data.tokenizer);
        fflush(stdout);
        double t0 = moe_now();
        if (tok_train(tok, (const char *const *)c->data.text, (int)c->data.n_text,
                      c->model.vocab_size, err))
            return -1;
        if (tok_save(tok, c->data.tokenizer, err)) return -1;
        printf("tokenizer trained in %.1f s\n", moe_now() - t0);
    }
    if (tok_vocab_size(tok) != c->model.vocab_size) {
        moe_errorf(err, "%s: tokenizer has %d tokens but model.vocab_size is %d",
                   c->data.tokenizer, tok_vocab_size(tok), c->model.vocab_size);
        return moe_hintf(err, "set model.vocab_size to %d, or point data.tokenizer at a new "
                         "file so a %d-token tokenizer is trained", tok_vocab_size(tok),
                         c->model.vocab_size);
    }
    return 0;
}

/* FNV-1a over the text files' contents and the tokenizer hash: names the cached shard so a
 * change of text or tokenizer re-encodes. The same pass fills texts (n_text, names
 * borrowed from c) with each file's size and tok_text_hash. */
static int text_cache_path(const Config *c, const Tokenizer *tok, TokSource *texts,
                           char *out, size_t cap, MoeErr *err) {
    uint64_t h = 1469598103934665603ULL ^ tok_hash(tok);
    for (size_t i = 0; i < c->data.n_text; i++) {
        uint8_t *buf = NULL;
        size_t n = 0;
        if (fs_read_file(c->data.text[i], &buf, &n, err)) return -1;
        for (size_t j = 0; j < n; j++) h = (h ^ buf[j]) * 1099511628211ULL;
        h = (h ^ 0xff) * 1099511628211ULL;
        texts[i] = (TokSource){c->data.text[i], n, tok_text_hash(buf, n)};
        moe_free(buf);
    }
    snprintf(out, cap, "%s/tokens/text-%016llx.tok", c->run.dir, (unsigned long long)h);
    return 0;
}

/* "a.txt (60000 bytes), b.txt (...)" for at most three files, into out. */
static void list_sources(const TokSource *s, int n, char *out, size_t cap) {
    size_t len = 0;
    out[0] = 0;
    for (int i = 0; i < n && i < 3 && len < cap; i++)
        len += (size_t)snprintf(out + len, cap - len, "%s%s (%llu bytes)", i ? ", " : "",
                                s[i].name, (unsigned long long)s[i].size);
    if (n > 3 && len < cap) snprintf(out + len, cap - len, " and %d more", n - 3);
}

/* d->tok_warning when the loaded tokenizer records other training text than data.text. */
static void check_tokenizer_text(const Config *c, DataSet *d, const TokSource *texts) {
    if (tok_sources_match(&d->tok, texts, (int)c->data.n_text) != 0) return;
    char was[400], now[400];
    list_sources(d->tok.sources, d->tok.n_sources, was, sizeof was);
    list_sources(texts, (int)c->data.n_text, now, sizeof now);
    snprintf(d->tok_warning, sizeof d->tok_warning, "data.tokenizer %s was trained on other "
             "text than data.text: it was trained on %s; data.text is %s (to train one on "
             "data.text, point data.tokenizer at a file that does not exist yet)",
             c->data.tokenizer, was, now);
}

void dataset_free(DataSet *d) {
    loader_free(&d->loader);
    sft_free(&d->sft);
    for (int i = 0; i < d->n_shards; i++) shard_close(&d->shards[i]);
    moe_free(d->shards);
    tok_free(&d->tok);
    memset(d, 0, sizeof *d);
}

/* data.sft: the records, packed into one stream with its loss mask (data/sft.h), held out
 * by whole records for validation, under the loader. */
static int open_sft(const Config *c, DataSet *d, MoeErr *err) {
    SftOpts o = {c->data.prompt_key, c->data.completion_key, c->data.sft_separator};
    if (sft_load(&d->sft, &d->tok, (const char *const *)c->data.sft, (int)c->data.n_sft, &o,
                 err))
        return -1;
    const SftData *s = &d->sft;
    if (s->n_records < 2) {
        moe_errorf(err, "data.sft: %zu record in all: a fine-tuning run needs two or more (one "
                   "or more held out for validation)", s->n_records);
        return moe_hintf(err, "add records to the data.sft files");
    }
    const size_t val0 = sft_val_start(s, c->data.val_fraction);
    const uint16_t *span = s->tokens;
    const size_t n = s->n_tokens;
    /* the loader holds out round(f n) tokens: f = (n - val0) / n is that count exactly
       (n < 2^52), so validation starts on the record boundary val0 */
    const double f = (double)(n - val0) / (double)n;
    if (loader_init(&d->loader, &span, &n, 1, c->train.seq_len, f, (uint64_t)c->train.seed,
                    err))
        return -1;
    ASSERT(d->loader.n_train == val0, "sft validation at %zu, loader at %zu", val0,
           d->loader.n_train);
    loader_set_mask(&d->loader, s->mask);
    return 0;
}

/* Everything after the tokenizer: the shards (checked against it), data.text's cached
 * encoding (made when missing, a line on log), the loader. trained_here: the tokenizer was
 * just trained on data.text (no need to compare its record of training text). */
static int open_tokens(const Config *c, DataSet *d, bool trained_here, FILE *log,
                       MoeErr *err) {
    if (c->data.n_sft > 0) return open_sft(c, d, err);   /* alone (config_validate) */
    int n = (int)c->data.n_shards + (c->data.n_text > 0 ? 1 : 0);
    d->shards = moe_calloc(sizeof(Shard) * (size_t)n);
    for (size_t i = 0; i < c->data.n_shards; i++) {
        if (shard_open(&d->shards[d->n_shards], c->data.shards[i], err)) return -1;
        d->n_shards++;
        const Shard *s = &d->shards[d->n_shards - 1];
        if ((int)s->vocab_size != c->model.vocab_size) {
            moe_errorf(err, "%s: shard was encoded with a %u-token vocabulary but "
                       "model.vocab_size is %d", c->data.shards[i], s->vocab_size,
                       c->model.vocab_size);
            return moe_hintf(err, "re-encode it with `moetrain data encode` using %s",
                             c->data.tokenizer);
        }
        if (s->tok_hash != tok_hash(&d->tok)) {
            moe_errorf(err, "%s: shard was encoded by a different tokenizer than %s",
                       c->data.shards[i], c->data.tokenizer);
            return moe_hintf(err, "re-encode it with `moetrain data encode --tokenizer %s`",
                             c->data.tokenizer);
        }
    }
    if (c->data.n_text > 0) {
        char path[4096], dir[4096];
        TokSource *texts = moe_calloc(sizeof(TokSource) * c->data.n_text);
        int bad = text_cache_path(c, &d->tok, texts, path, sizeof path, err);
        if (!bad && !trained_here) check_tokenizer_text(c, d, texts);
        moe_free(texts);
        if (bad) return -1;
        snprintf(dir, sizeof dir, "%s/tokens", c->run.dir);
        if (fs_mkdirs(dir, err)) return -1;
        if (!fs_exists(path)) {
            fprintf(log, "encoding %zu text file(s) -> %s\n", c->data.n_text, path);
            fflush(log);
            if (shard_encode_files(&d->tok, (const char *const *)c->data.text,
                                   (int)c->data.n_text, path, err))
                return -1;
        }
        if (shard_open(&d->shards[d->n_shards], path, err)) return -1;
        d->n_shards++;
    }
    return loader_init_shards(&d->loader, d->shards, d->n_shards, c->train.seq_len,
                              c->data.val_fraction, (uint64_t)c->train.seed, err);
}

int dataset_open(const Config *c, DataSet *d, MoeErr *err) {
    memset(d, 0, sizeof *d);
    const bool trained_here = !fs_exists(c->data.tokenizer);
    if (prepare_tokenizer(c, &d->tok, err)) return -1;
    return open_tokens(c, d, trained_here, stdout, err);
}

int dataset_open_run(const Config *c, const char *label, const uint8_t *tok_bytes, size_t n,
                     FILE *log, DataSet *d, MoeErr *err) {
    memset(d, 0, sizeof *d);
    for (int k = 0; k < 3; k++) {
        static const char *const key[3] = {"text", "shards", "sft"};
        char *const *list = k == 2 ? c->data.sft : k ? c->data.shards : c->data.text;
        const size_t cnt = k == 2 ? c->data.n_sft : k ? c->data.n_shards : c->data.n_text;
        for (size_t i = 0; i < cnt; i++)
            if (!fs_exists(list[i])) {
                moe_errorf(err, "%s: the run's data.%s file %s does not exist", label, key[k],
                           list[i]);
                return moe_hintf(err, "the checkpoint's stored config names its data as "
                                 "training saw it (a relative path is relative to the "
                                 "directory training ran in): run from there, or score a "
                                 "file with --text");
            }
    }
    if (tok_load_buffer(&d->tok, tok_bytes, n, label, err)) return -1;
    if (tok_vocab_size(&d->tok) != c->model.vocab_size) {
        moe_errorf(err, "%s: the stored tokenizer has %d tokens but model.vocab_size is %d",
                   label, tok_vocab_size(&d->tok), c->model.vocab_size);
        return moe_hintf(err, "the checkpoint is inconsistent");
    }
    return open_tokens(c, d, true, log, err);
}

void dataset_window(const DataSet *d, DataSplit split, size_t w, int32_t *inputs,
                    int32_t *targets) {
    const Loader *l = &d->loader;
    const size_t nw = split == DATASET_VAL ? loader_val_windows(l) : loader_train_windows(l);
    ASSERT(w < nw, "dataset_window %zu of %zu (%s)", w, nw, split == DATASET_VAL ? "val"
                                                                                 : "train");
    loader_window(l, (split == DATASET_VAL ? l->n_train : 0) + w * (size_t)l->T, inputs,
                  targets);
}

/* Do the files at a and b hold the same bytes? (false when either cannot be read) */
static bool same_bytes(const char *a, const char *b) {
    uint8_t *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    MoeErr e;
    bool same = !fs_read_file(a, &x, &nx, &e) && !fs_read_file(b, &y, &ny, &e) && nx == ny &&
                !memcmp(x, y, nx);
    moe_free(x);
    moe_free(y);
    return same;
}

int dataset_text_index(const Config *c, const char *path) {
    struct stat sp, st;
    if (stat(path, &sp) != 0) return -1;
    for (size_t i = 0; i < c->data.n_text; i++) {
        if (stat(c->data.text[i], &st) != 0) continue;
        if ((st.st_dev == sp.st_dev && st.st_ino == sp.st_ino) ||
            (st.st_size == sp.st_size && same_bytes(path, c->data.text[i])))
            return (int)i;
    }
    return -1;
}
