/* records.c: documents of a text file in bounded blocks. See records.h. */
#include "data/records.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "core/json.h"

const char *const rec_format_names[REC_N_FORMATS] = {"auto", "file", "paragraph", "jsonl"};

RecFormat rec_resolve(RecFormat f, const char *path) {
    if (f != REC_AUTO) return f;
    size_t n = strlen(path);
    return n >= 6 && !strcmp(path + n - 6, ".jsonl") ? REC_JSONL : REC_FILE;
}

static bool printable(uint8_t c) { return c > 0x20 && c < 0x7f; }

/* p is a safe cut of b (see records.h): needs b[p-2], b[p-1], b[p]. */
static bool safe_cut(const uint8_t *b, size_t p) {
    return p >= 2 && b[p - 1] == '\n' && printable(b[p - 2]) && printable(b[p]);
}

static bool blank_char(uint8_t c) { return c == ' ' || c == '\t' || c == '\r'; }

int rec_open(RecReader *r, const char *path, RecFormat fmt, size_t chunk_bytes, MoeErr *err) {
    memset(r, 0, sizeof *r);
    struct stat st;
    FILE *fp = fopen(path, "rb");
    if (!fp || fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        int e = errno;
        if (fp) fclose(fp);
        moe_errorf(err, "cannot read text file %s: %s", path, fp ? "not a regular file"
                                                                  : strerror(e));
        return moe_hintf(err, "check the path (data.text / data.val_text entries are "
                         "relative to the directory moetrain runs in)");
    }
    if (st.st_size == 0) {
        fclose(fp);
        moe_errorf(err, "%s is empty", path);
        return moe_hintf(err, "remove it from the list of text files or put text in it");
    }
    r->fp = fp;
    r->path = moe_strdup(path);
    r->fmt = rec_resolve(fmt, path);
    r->chunk = chunk_bytes ? chunk_bytes : REC_CHUNK;
    r->cap = 16 * r->chunk;   /* REC_BLOCK for the default chunk */
    r->buf = moe_malloc(r->cap);
    r->line = 1;
    r->size = (uint64_t)st.st_size;
    return 0;
}

void rec_close(RecReader *r) {
    if (!r) return;
    if (r->fp) fclose(r->fp);
    moe_free(r->path);
    moe_free(r->buf);
    moe_free(r->text);
    moe_free(r->items);
    memset(r, 0, sizeof *r);
}

/* Append bytes to the batch's text and an item for them. */
static void add_item(RecReader *r, const uint8_t *p, size_t len, bool doc_end) {
    if (r->n_text + len > r->text_cap) {
        size_t nc = r->text_cap ? r->text_cap : 4096;
        while (nc < r->n_text + len) nc *= 2;
        r->text = moe_realloc(r->text, r->text_cap, nc);
        r->text_cap = nc;
    }
    if (r->n_items == r->items_cap) {
        size_t nc = r->items_cap ? 2 * r->items_cap : 64;
        r->items = moe_realloc(r->items, r->items_cap * sizeof(RecItem), nc * sizeof(RecItem));
        r->items_cap = nc;
    }
    memcpy(r->text + r->n_text, p, len);
    r->items[r->n_items++] = (RecItem){r->n_text, len, doc_end};
    r->n_text += len;
    if (doc_end) r->docs++;
}

/* How much of buf[0, n) can be handed out now (complete items only); 0 = read more. */
static size_t usable(const RecReader *r) {
    const uint8_t *b = r->buf;
    if (r->eof) return r->n;
    switch (r->fmt) {
    case REC_FILE:
        for (size_t p = r->n - 1; p >= 2; p--) if (safe_cut(b, p)) return p;
        return 0;
    case REC_PARAGRAPH:
        /* the start of the last complete blank line */
        for (size_t e = r->n; e-- > 0;) {
            if (b[e] != '\n') continue;
            size_t a = e;
            while (a > 0 && blank_char(b[a - 1])) a--;
            if (a > 0 && b[a - 1] == '\n') return a;
        }
        return 0;
    default:   /* jsonl: up to the last newline */
        for (size_t e = r->n; e-- > 0;) if (b[e] == '\n') return e + 1;
        return 0;
    }
}

/* Cut the file document's bytes b[0, use) into pieces at safe cuts near every chunk. */
static void file_items(RecReader *r, size_t use) {
    const uint8_t *b = r->buf;
    size_t pos = 0;
    while (pos < use) {
        size_t end = use;
        if (use - pos > r->chunk) {
            for (size_t p = pos + r->chunk; p < use; p++)
                if (safe_cut(b, p)) { end = p; break; }
        }
        add_item(r, b + pos, end - pos, r->eof && end == use);
        pos = end;
    }
}

/* Paragraphs of b[0, use): runs of non-blank lines. */
static void paragraph_items(RecReader *r, size_t use) {
    const uint8_t *b = r->buf;
    size_t pos = 0, rec_start = 0, rec_end = 0;
    bool in_rec = false;
    while (pos < use) {
        size_t e = pos;
        while (e < use && b[e] != '\n') e++;
        bool blank = true;
        for (size_t k = pos; k < e; k++) if (!blank_char(b[k])) { blank = false; break; }
        if (blank) {
            if (in_rec) add_item(r, b + rec_start, rec_end - rec_start, true);
            in_rec = false;
        } else {
            if (!in_rec) rec_start = pos;
            in_rec = true;
            rec_end = e;
        }
        pos = e + 1;
    }
    if (in_rec) add_item(r, b + rec_start, rec_end - rec_start, true);
}

/* JSON Lines of b[0, use): each object's "text". */
static int jsonl_items(RecReader *r, size_t use, MoeErr *err) {
    const uint8_t *b = r->buf;
    size_t pos = 0;
    long line = r->line;
    for (; pos < use; line++) {
        size_t e = pos;
        while (e < use && b[e] != '\n') e++;
        bool blank = true;
        for (size_t k = pos; k < e; k++) if (!blank_char(b[k])) { blank = false; break; }
        if (!blank) {
            JsonValue v;
            if (json_parse(&v, (const char *)b + pos, e - pos, r->path, line, err))
                return moe_hintf(err, "each line of a .jsonl text file (data.records jsonl) "
                                 "is one JSON object with a \"text\" string");
            const JsonValue *t = json_get(&v, "text");
            if (v.type != JSON_OBJ || !t || t->type != JSON_STR) {
                json_free(&v);
                moe_errorf(err, "%s:%ld: the record has no \"text\" string", r->path, line);
                return moe_hintf(err, "pretraining reads {\"text\": \"...\"} per line; "
                                 "fine-tuning records ({prompt, completion} or {messages}) "
                                 "go under data.sft; for other text set data.records to "
                                 "file or paragraph");
            }
            size_t len = strlen(t->str);
            if (len) add_item(r, (const uint8_t *)t->str, len, true);
            json_free(&v);
        }
        pos = e + 1;
    }
    r->line = line;
    return 0;
}

int rec_next(RecReader *r, MoeErr *err) {
    r->n_text = 0;
    r->n_items = 0;
    for (;;) {
        while (!r->eof && r->n < r->cap) {
            size_t got = fread(r->buf + r->n, 1, r->cap - r->n, r->fp);
            r->n += got;
            if (got == 0) {
                if (ferror(r->fp)) {
                    moe_errorf(err, "cannot read text file %s: %s", r->path, strerror(errno));
                    return moe_hintf(err, "check the file and the disk");
                }
                r->eof = true;
            }
        }
        if (r->n == 0) {   /* everything handed out */
            if (r->docs == 0) {
                moe_errorf(err, "%s holds no document (data.records %s)", r->path,
                           rec_format_names[r->fmt]);
                return moe_hintf(err, "put text in it, or read it with another data.records "
                                 "format");
            }
            return 0;
        }
        size_t use = usable(r);
        if (use == 0) {   /* one item longer than the buffer: read more */
            r->buf = moe_realloc(r->buf, r->cap, 2 * r->cap);
            r->cap *= 2;
            continue;
        }
        if (r->fmt == REC_FILE) file_items(r, use);
        else if (r->fmt == REC_PARAGRAPH) paragraph_items(r, use);
        else if (jsonl_items(r, use, err)) return -1;
        memmove(r->buf, r->buf + use, r->n - use);
        r->n -= use;
        r->bytes_done += use;
        if (r->n_items > 0) return 1;
    }
}
