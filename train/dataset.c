/* dataset.c: see dataset.h. */
#include "train/dataset.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/fs.h"
#include "core/rng.h"
#include "data/encode.h"

static void list_sources(const TokSource *s, int n, char *out, size_t cap);

/* Load the tokenizer, or train it on data.text when its file does not exist yet; note
 * which in d->tok_note. */
static int prepare_tokenizer(const Config *c, DataSet *d, MoeErr *err) {
    Tokenizer *tok = &d->tok;
    const bool existed = fs_exists(c->data.tokenizer);
    if (existed) {
        if (tok_load(tok, c->data.tokenizer, err)) return -1;
        char was[400] = "";
        if (tok->n_sources) list_sources(tok->sources, tok->n_sources, was, sizeof was);
        snprintf(d->tok_note, sizeof d->tok_note, "tokenizer: %s, loaded (it exists, so it is "
                 "not trained again; %d tokens%s%s)", c->data.tokenizer, tok_vocab_size(tok),
                 was[0] ? ", trained on " : "", was);
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
        snprintf(d->tok_note, sizeof d->tok_note, "tokenizer: %s, trained here on data.text "
                 "(%d tokens)", c->data.tokenizer, tok_vocab_size(tok));
    }
    if (tok->kind == TOK_KIND_HF) {  /* a .bpe names its training text (check_tokenizer_text) */
        char line[512];
        tok_describe(tok, line, sizeof line);
        printf("tokenizer: %s: %s\n", c->data.tokenizer, line);
    }
    if (tok_vocab_size(tok) != c->model.vocab_size) {
        moe_errorf(err, "%s: tokenizer has %d tokens but model.vocab_size is %d%s",
                   c->data.tokenizer, tok_vocab_size(tok), c->model.vocab_size,
                   existed ? " (the file exists, so it was loaded, not trained)" : "");
        if (tok->kind == TOK_KIND_HF)
            return moe_hintf(err, "set model.vocab_size to %d (the tokenizer.json's ids "
                             "0..%d, added tokens included)", tok_vocab_size(tok),
                             tok_vocab_size(tok) - 1);
        return moe_hintf(err, "set model.vocab_size to %d to use this tokenizer, or point "
                         "data.tokenizer at a file that does not exist yet (e.g. "
                         "data/tokenizer_mine.bpe) so a %d-token tokenizer is trained on "
                         "data.text", tok_vocab_size(tok), c->model.vocab_size);
    }
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

/* Open shard path (listed under key) into the next slot of d->shards, checked against the
 * tokenizer. */
static int open_shard(const Config *c, DataSet *d, const char *path, const char *key,
                      MoeErr *err) {
    if (shard_open(&d->shards[d->n_shards], path, err)) return -1;
    d->n_shards++;
    const Shard *s = &d->shards[d->n_shards - 1];
    if ((int)s->vocab_size != c->model.vocab_size) {
        moe_errorf(err, "%s: shard was encoded with a %u-token vocabulary but "
                   "model.vocab_size is %d (%s)", path, s->vocab_size, c->model.vocab_size, key);
        return moe_hintf(err, "set model.vocab_size to %u and data.tokenizer to the tokenizer "
                         "that encoded it, or re-encode it with `moetrain data encode "
                         "--tokenizer %s`", s->vocab_size, c->data.tokenizer);
    }
    if (s->tok_hash != tok_hash(&d->tok)) {
        moe_errorf(err, "%s: shard was encoded by a different tokenizer than "
                   "data.tokenizer %s (%s)", path, c->data.tokenizer, key);
        return moe_hintf(err, "set data.tokenizer to the tokenizer that encoded it, or "
                         "re-encode it with `moetrain data encode --tokenizer %s`",
                         c->data.tokenizer);
    }
    return 0;
}

/* The cached encoding of text file path (record format fmt) in run.dir/tokens/, made when
 * missing (a line on log), opened into the next slot of d->shards; src (may be NULL)
 * receives the file's size and tok_text_hash. */
static int open_text(const Config *c, DataSet *d, const char *path, FILE *log, TokSource *src,
                     MoeErr *err) {
    uint64_t size, th;
    if (encode_file_hash(path, &size, &th, err)) return -1;
    if (src) *src = (TokSource){(char *)path, size, th};
    RecFormat fmt = rec_resolve((RecFormat)c->data.records, path);
    uint64_t h = moe_hash4(tok_hash(&d->tok), th, size, (uint64_t)fmt);
    char out[4200], dir[4096];
    snprintf(dir, sizeof dir, "%s/tokens", c->run.dir);
    snprintf(out, sizeof out, "%s/text-%016llx.tok", dir, (unsigned long long)h);
    if (!fs_exists(out)) {
        if (fs_mkdirs(dir, err)) return -1;
        char sz[32];
        progress_fmt_bytes((double)size, sz, sizeof sz);
        fprintf(log, "encoding %s (%s, records: %s) -> %s\n", path, sz, rec_format_names[fmt],
                out);
        fflush(log);
        Progress pr;
        EncodeStats st;
        if (encode_files(&d->tok, &path, 1, fmt, 0, out, &pr, &st, err)) return -1;
        fprintf(log, "encoded %llu tokens in %llu document(s), %.1f MB/s\n",
                (unsigned long long)st.tokens, (unsigned long long)st.docs,
                st.seconds > 0 ? (double)st.bytes / st.seconds / 1e6 : 0.0);
        fflush(log);
    }
    return shard_open(&d->shards[d->n_shards++], out, err);
}

/* "a.txt, b.txt and 3 more" of list (n) into out. */
static void name_list(char *const *list, size_t n, char *out, size_t cap) {
    size_t len = 0;
    out[0] = 0;
    for (size_t i = 0; i < n && i < 3 && len < cap; i++)
        len += (size_t)snprintf(out + len, cap - len, "%s%s", i ? ", " : "", list[i]);
    if (n > 3 && len < cap) snprintf(out + len, cap - len, " and %zu more", n - 3);
}

/* The loader over the opened shards: sources (one, or one per entry when weighted) and the
 * validation source; the notes that say which tokens train and validate. */
static int make_loader(const Config *c, DataSet *d, int n_train_shards, MoeErr *err) {
    const ConfigData *D = &c->data;
    const bool weighted = D->text_weight || D->shards_weight;
    LoaderSource *src = moe_calloc(sizeof(LoaderSource) * ((size_t)n_train_shards + 1));
    int n_src = 0;
    if (!weighted) {
        src[n_src++] = (LoaderSource){d->shards, n_train_shards, 1.0, "the training data",
                                      NULL};
    } else {   /* entry order = shard order: data.shards, then data.text */
        for (size_t i = 0; i < D->n_shards; i++, n_src++)
            src[n_src] = (LoaderSource){&d->shards[n_src], 1,
                                        D->shards_weight && D->shards_weight[i] > 0
                                            ? D->shards_weight[i] : 1.0, D->shards[i], NULL};
        for (size_t i = 0; i < D->n_text; i++, n_src++)
            src[n_src] = (LoaderSource){&d->shards[n_src], 1,
                                        D->text_weight && D->text_weight[i] > 0
                                            ? D->text_weight[i] : 1.0, D->text[i], NULL};
    }
    const bool has_val = D->n_val_text + D->n_val_shards > 0;
    LoaderSource val = {&d->shards[n_train_shards], d->n_shards - n_train_shards, 1.0,
                        D->n_val_text ? D->val_text[0] : has_val ? D->val_shards[0] : "",
                        NULL};
    int rc = loader_init(&d->loader, src, n_src, has_val ? &val : NULL, c->train.seq_len,
                         D->val_fraction, (uint64_t)c->train.seed, err);
    if (!rc) {
        const Loader *l = &d->loader;
        size_t len = (size_t)snprintf(d->src_note, sizeof d->src_note,
                                      "training: %zu tokens", l->n_train_tokens);
        if (n_src == 1) {
            snprintf(d->src_note + len, sizeof d->src_note - len, " from %d file(s), one "
                     "stream (no weights)", n_train_shards);
        } else {
            double total = 0;
            for (int i = 0; i < n_src; i++) total += src[i].weight;
            len += (size_t)snprintf(d->src_note + len, sizeof d->src_note - len, ", a mixture "
                                    "of %d sources:", n_src);
            for (int i = 0; i < n_src && len < sizeof d->src_note; i++)
                len += (size_t)snprintf(d->src_note + len, sizeof d->src_note - len,
                                        "%s %s %.1f%% (%zu tokens)", i ? "," : "",
                                        src[i].name, 100.0 * src[i].weight / total,
                                        l->src[i].n_train);
        }
        char names[600];
        if (has_val) {
            len = (size_t)snprintf(d->val_note, sizeof d->val_note, "validation: %zu tokens "
                                   "from", l->n_val_tokens);
            if (D->n_val_text) {
                name_list(D->val_text, D->n_val_text, names, sizeof names);
                len += (size_t)snprintf(d->val_note + len, sizeof d->val_note - len,
                                        " data.val_text (%s)", names);
            }
            if (D->n_val_shards) {
                name_list(D->val_shards, D->n_val_shards, names, sizeof names);
                snprintf(d->val_note + len, sizeof d->val_note - len, "%s data.val_shards (%s)",
                         D->n_val_text ? " and" : "", names);
            }
        } else if (D->val_fraction > 0) {
            snprintf(d->val_note, sizeof d->val_note, "validation: %zu tokens, the last %g%% "
                     "of the training %s (data.val_fraction %g; data.val_text names a separate "
                     "set)", l->n_val_tokens, 100.0 * D->val_fraction,
                     n_src == 1 ? "stream" : "sources, each", D->val_fraction);
        }
    }
    moe_free(src);
    return rc;
}

/* data.sft: the records, packed into one stream with its loss mask (data/sft.h), as the one
 * source of the loader (a 4-byte shard view of the stream, the mask beside it), held out
 * by whole records for validation. */
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
    const size_t n = s->n_tokens;
    d->shards = moe_calloc(sizeof(Shard));
    shard_view(&d->shards[0], s->tokens, n, 4, (uint32_t)tok_vocab_size(&d->tok),
               tok_hash(&d->tok), "data.sft");
    d->n_shards = 1;
    /* the loader holds out round(f n) tokens: f = (n - val0) / n is that count exactly
       (n < 2^52), so validation starts on the record boundary val0 */
    const double f = (double)(n - val0) / (double)n;
    LoaderSource src = {d->shards, 1, 1.0, "data.sft", s->mask};
    if (loader_init(&d->loader, &src, 1, NULL, c->train.seq_len, f, (uint64_t)c->train.seed,
                    err))
        return -1;
    ASSERT(d->loader.src[0].n_train == val0, "sft validation at %zu, loader at %zu", val0,
           d->loader.src[0].n_train);
    /* the trainer's banner describes the records (train.c) */
    return 0;
}

/* Everything after the tokenizer: the shards (checked against it), the text files' cached
 * encodings (made when missing, a line on log), the loader. trained_here: the tokenizer was
 * just trained on data.text (no need to compare its record of training text). */
static int open_tokens(const Config *c, DataSet *d, bool trained_here, FILE *log,
                       MoeErr *err) {
    if (c->data.n_sft > 0) return open_sft(c, d, err);   /* alone (config_validate) */
    const ConfigData *D = &c->data;
    size_t n = D->n_shards + D->n_text + D->n_val_text + D->n_val_shards;
    d->shards = moe_calloc(sizeof(Shard) * (n ? n : 1));
    for (size_t i = 0; i < D->n_shards; i++)
        if (open_shard(c, d, D->shards[i], "data.shards", err)) return -1;
    TokSource *texts = moe_calloc(sizeof(TokSource) * (D->n_text ? D->n_text : 1));
    for (size_t i = 0; i < D->n_text; i++) {
        if (open_text(c, d, D->text[i], log, &texts[i], err)) {
            moe_free(texts);
            return -1;
        }
    }
    if (D->n_text && !trained_here) check_tokenizer_text(c, d, texts);
    moe_free(texts);
    const int n_train_shards = d->n_shards;
    for (size_t i = 0; i < D->n_val_text; i++)
        if (open_text(c, d, D->val_text[i], log, NULL, err)) return -1;
    for (size_t i = 0; i < D->n_val_shards; i++)
        if (open_shard(c, d, D->val_shards[i], "data.val_shards", err)) return -1;
    return make_loader(c, d, n_train_shards, err);
}

void dataset_describe(const DataSet *d, FILE *f) {
    if (d->tok_note[0]) fprintf(f, "%s\n", d->tok_note);
    if (d->src_note[0]) fprintf(f, "%s\n", d->src_note);
    if (d->val_note[0]) fprintf(f, "%s\n", d->val_note);
}

int dataset_open(const Config *c, DataSet *d, MoeErr *err) {
    memset(d, 0, sizeof *d);
    const bool trained_here = !fs_exists(c->data.tokenizer);
    if (prepare_tokenizer(c, d, err)) return -1;
    return open_tokens(c, d, trained_here, stdout, err);
}

int dataset_open_run(const Config *c, const char *label, const uint8_t *tok_bytes, size_t n,
                     FILE *log, DataSet *d, MoeErr *err) {
    memset(d, 0, sizeof *d);
    static const char *const keys[5] = {"text", "shards", "val_text", "val_shards", "sft"};
    for (int k = 0; k < 5; k++) {
        char *const *list = k == 0 ? c->data.text : k == 1 ? c->data.shards
                          : k == 2 ? c->data.val_text : k == 3 ? c->data.val_shards
                          : c->data.sft;
        const size_t cnt = k == 0 ? c->data.n_text : k == 1 ? c->data.n_shards
                         : k == 2 ? c->data.n_val_text : k == 3 ? c->data.n_val_shards
                         : c->data.n_sft;
        for (size_t i = 0; i < cnt; i++)
            if (!fs_exists(list[i])) {
                moe_errorf(err, "%s: the run's data.%s file %s does not exist", label,
                           keys[k], list[i]);
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
    loader_window(&d->loader, split == DATASET_VAL, w, inputs, targets);
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
