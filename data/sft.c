/* sft.c: JSONL fine-tuning records into a packed token stream and loss mask. See sft.h. */
#include "data/sft.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/fs.h"
#include "core/json.h"

void sft_free(SftData *d) {
    if (!d) return;
    moe_free(d->tokens);
    moe_free(d->mask);
    moe_free(d->rec_end);
    memset(d, 0, sizeof *d);
}

/* Append ids (n) with mask value m. Grows the arrays geometrically. */
static void push_ids(SftData *d, const int32_t *ids, size_t n, uint8_t m) {
    if (d->n_tokens + n > d->cap) {
        size_t cap = d->cap ? d->cap : 4096;
        while (cap < d->n_tokens + n) cap *= 2;
        d->tokens = moe_realloc(d->tokens, d->cap * sizeof(uint32_t), cap * sizeof(uint32_t));
        d->mask = moe_realloc(d->mask, d->cap, cap);
        d->cap = cap;
    }
    for (size_t i = 0; i < n; i++) {
        ASSERT(ids[i] >= 0, "sft: token id %d is negative", (int)ids[i]);
        d->tokens[d->n_tokens + i] = (uint32_t)ids[i];
        d->mask[d->n_tokens + i] = m;
    }
    d->n_tokens += n;
    if (m) d->n_trained += n;
}

/* Text of one kind (trained or not) collected until the kind changes, then encoded whole. */
typedef struct Seg {
    char *p;
    size_t n, cap;
} Seg;

static void seg_add(Seg *s, const char *text) {
    size_t k = strlen(text);
    if (s->n + k + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 1024;
        while (cap < s->n + k + 1) cap *= 2;
        s->p = moe_realloc(s->p, s->cap, cap);
        s->cap = cap;
    }
    memcpy(s->p + s->n, text, k);
    s->n += k;
}

/* Encode the collected text with mask m and empty the segment. */
static void seg_flush(Seg *s, SftData *d, const Tokenizer *tok, uint8_t m) {
    if (s->n == 0) return;
    size_t n = 0;
    int32_t *ids = tok_encode_alloc(tok, (const uint8_t *)s->p, s->n, &n);
    push_ids(d, ids, n, m);
    moe_free(ids);
    s->n = 0;
}

static void push_eot(SftData *d, const Tokenizer *tok, uint8_t m) {
    const int32_t eot = tok_eot(tok);
    push_ids(d, &eot, 1, m);
}

static void end_record(SftData *d) {
    if (d->n_records == d->rec_cap) {
        size_t cap = d->rec_cap ? 2 * d->rec_cap : 256;
        d->rec_end = moe_realloc(d->rec_end, d->rec_cap * sizeof(size_t), cap * sizeof(size_t));
        d->rec_cap = cap;
    }
    d->rec_end[d->n_records++] = d->n_tokens;
}

static const char *type_name(const JsonValue *v) {
    switch (v->type) {
    case JSON_NULL: return "null";
    case JSON_BOOL: return "a boolean";
    case JSON_NUM: return "a number";
    case JSON_STR: return "a string";
    case JSON_ARR: return "an array";
    case JSON_OBJ: return "an object";
    }
    return "?";
}

/* The record's field names, "a, b, c" (at most 6), for hints. */
static void list_keys(const JsonValue *obj, char *out, size_t cap) {
    size_t len = 0;
    out[0] = 0;
    for (size_t i = 0; i < obj->n && i < 6 && len < cap; i++)
        len += (size_t)snprintf(out + len, cap - len, "%s\"%s\"", i ? ", " : "", obj->keys[i]);
    if (obj->n > 6 && len < cap) snprintf(out + len, cap - len, " and %zu more", obj->n - 6);
    if (obj->n == 0) snprintf(out, cap, "none");
}

typedef enum { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT } Role;

static int role_of(const char *s) {
    if (!strcmp(s, "system")) return ROLE_SYSTEM;
    if (!strcmp(s, "user")) return ROLE_USER;
    if (!strcmp(s, "assistant")) return ROLE_ASSISTANT;
    return -1;
}

/* Check a conversation record's "messages" (present) before anything is appended. */
static int check_messages(const JsonValue *msgs, const char *label, long line, MoeErr *err) {
    const char *shape = "\"messages\": [{\"role\": \"user\", \"content\": \"...\"}, {\"role\": "
                        "\"assistant\", \"content\": \"...\"}]";
    if (msgs->type != JSON_ARR || msgs->n == 0) {
        moe_errorf(err, "%s:%ld: \"messages\" must be a non-empty array, got %s", label, line,
                   msgs->type == JSON_ARR ? "an empty one" : type_name(msgs));
        return moe_hintf(err, "write the conversation as %s", shape);
    }
    bool assistant = false;
    for (size_t i = 0; i < msgs->n; i++) {
        const JsonValue *m = &msgs->items[i];
        if (m->type != JSON_OBJ) {
            moe_errorf(err, "%s:%ld: messages[%zu] must be an object, got %s", label, line, i,
                       type_name(m));
            return moe_hintf(err, "write the conversation as %s", shape);
        }
        const JsonValue *r = json_get(m, "role"), *c = json_get(m, "content");
        if (!r || r->type != JSON_STR) {
            moe_errorf(err, "%s:%ld: messages[%zu].role must be a string, got %s", label, line,
                       i, r ? type_name(r) : "nothing (the field is missing)");
            return moe_hintf(err, "give each message \"role\" (system, user or assistant) and "
                             "\"content\"");
        }
        const int role = role_of(r->str);
        if (role < 0) {
            moe_errorf(err, "%s:%ld: messages[%zu].role: unknown role \"%s\"", label, line, i,
                       r->str);
            return moe_hintf(err, "the chat template knows the roles system, user and "
                             "assistant (docs/finetuning.md)");
        }
        if (!c || c->type != JSON_STR) {
            moe_errorf(err, "%s:%ld: messages[%zu].content must be a string, got %s", label,
                       line, i, c ? type_name(c) : "nothing (the field is missing)");
            return moe_hintf(err, "give each message \"role\" and \"content\" (text)");
        }
        assistant |= role == ROLE_ASSISTANT;
    }
    if (!assistant) {
        moe_errorf(err, "%s:%ld: the conversation has no assistant message: nothing in it is "
                   "trained on", label, line);
        return moe_hintf(err, "the loss is taken on the assistant's messages only; add one, or "
                         "drop the record");
    }
    return 0;
}

/* Render a checked conversation (sft.h's template). */
static void render_chat(SftData *d, const Tokenizer *tok, const JsonValue *msgs, Seg *s) {
    bool open = false;   /* masked text after the last assistant turn */
    for (size_t i = 0; i < msgs->n; i++) {
        const JsonValue *m = &msgs->items[i];
        const int role = role_of(json_get(m, "role")->str);
        const char *content = json_get(m, "content")->str;
        if (role == ROLE_ASSISTANT) {
            seg_add(s, SFT_ASSISTANT);
            seg_flush(s, d, tok, 0);
            seg_add(s, content);
            seg_flush(s, d, tok, 1);
            push_eot(d, tok, 1);
            open = false;
        } else {
            seg_add(s, role == ROLE_SYSTEM ? SFT_SYSTEM : SFT_USER);
            seg_add(s, content);
            seg_add(s, "\n");
            open = true;
        }
    }
    if (open) {   /* the record still ends with EOT, not trained on */
        seg_flush(s, d, tok, 0);
        push_eot(d, tok, 0);
    }
}

/* One non-blank line: check the record, then append it. */
static int parse_line(SftData *d, const Tokenizer *tok, const char *text, size_t len,
                      const char *label, long line, const SftOpts *o, Seg *s, MoeErr *err) {
    const char *pk = o->prompt_key ? o->prompt_key : "prompt";
    const char *ck = o->completion_key ? o->completion_key : "completion";
    JsonValue v;
    if (json_parse(&v, text, len, label, line, err)) {
        return moe_hintf(err, "a JSON Lines file holds one JSON object per line, e.g. "
                         "{\"%s\": \"...\", \"%s\": \"...\"}", pk, ck);
    }
    int rc = -1;
    char keys[256];
    if (v.type != JSON_OBJ) {
        moe_errorf(err, "%s:%ld: a record must be a JSON object, got %s", label, line,
                   type_name(&v));
        moe_hintf(err, "write each record as {\"%s\": \"...\", \"%s\": \"...\"} or "
                  "{\"messages\": [...]}", pk, ck);
        goto done;
    }
    const JsonValue *p = json_get(&v, pk), *c = json_get(&v, ck), *m = json_get(&v, "messages");
    if (m && (p || c)) {
        moe_errorf(err, "%s:%ld: the record has both \"messages\" and \"%s\": it must be one "
                   "conversation or one prompt/completion pair", label, line, p ? pk : ck);
        moe_hintf(err, "keep one format per record");
        goto done;
    }
    if (m) {
        if (check_messages(m, label, line, err)) goto done;
        render_chat(d, tok, m, s);
        d->n_chats++;
    } else {
        if (!p || !c) {
            list_keys(&v, keys, sizeof keys);
            if (!p && !c)
                moe_errorf(err, "%s:%ld: the record has neither \"%s\" and \"%s\" nor "
                           "\"messages\"", label, line, pk, ck);
            else
                moe_errorf(err, "%s:%ld: the record has \"%s\" but no \"%s\"", label, line,
                           p ? pk : ck, p ? ck : pk);
            moe_hintf(err, "its fields are %s; name the prompt and completion fields with "
                      "data.prompt_key and data.completion_key (now \"%s\" and \"%s\")", keys,
                      pk, ck);
            goto done;
        }
        const JsonValue *bad = p->type != JSON_STR ? p : c->type != JSON_STR ? c : NULL;
        if (bad) {
            moe_errorf(err, "%s:%ld: \"%s\" must be a string, got %s", label, line,
                       bad == p ? pk : ck, type_name(bad));
            moe_hintf(err, "the prompt and the completion are text");
            goto done;
        }
        seg_add(s, p->str);
        if (o->separator) seg_add(s, o->separator);
        seg_flush(s, d, tok, 0);
        seg_add(s, c->str);
        seg_flush(s, d, tok, 1);
        push_eot(d, tok, 1);
        d->n_pairs++;
    }
    end_record(d);
    rc = 0;
done:
    json_free(&v);
    return rc;
}

int sft_parse(SftData *d, const Tokenizer *tok, const uint8_t *buf, size_t n, const char *label,
              const SftOpts *o, MoeErr *err) {
    const char *text = (const char *)buf;
    Seg s = {NULL, 0, 0};
    int rc = 0;
    long line = 0;
    for (size_t at = 0; at < n && rc == 0;) {
        const char *nl = memchr(text + at, '\n', n - at);
        const size_t end = nl ? (size_t)(nl - text) : n;
        line++;
        bool blank = true;
        for (size_t i = at; i < end && blank; i++)
            blank = text[i] == ' ' || text[i] == '\t' || text[i] == '\r';
        if (!blank) rc = parse_line(d, tok, text + at, end - at, label, line, o, &s, err);
        at = end + 1;
    }
    moe_free(s.p);
    return rc;
}

int sft_load(SftData *d, const Tokenizer *tok, const char *const *paths, int n_paths,
             const SftOpts *o, MoeErr *err) {
    memset(d, 0, sizeof *d);
    for (int i = 0; i < n_paths; i++) {
        uint8_t *buf = NULL;
        size_t n = 0;
        if (fs_read_file(paths[i], &buf, &n, err)) return -1;
        const size_t before = d->n_records;
        int rc = sft_parse(d, tok, buf, n, paths[i], o, err);
        moe_free(buf);
        if (rc) return -1;
        if (d->n_records == before) {
            moe_errorf(err, "%s: no records (the file is empty or holds only blank lines)",
                       paths[i]);
            return moe_hintf(err, "data.sft lists JSON Lines files of {\"prompt\", "
                             "\"completion\"} or {\"messages\"} records, one per line");
        }
    }
    return 0;
}

size_t sft_val_start(const SftData *d, double frac) {
    if (!(frac > 0) || d->n_records < 2) return d->n_tokens;
    const double want = (1.0 - frac) * (double)d->n_tokens;
    /* the boundary after record r (r = 0 .. n_records - 2) nearest to want */
    size_t best = d->rec_end[0];
    for (size_t r = 1; r + 1 < d->n_records; r++)
        if (fabs((double)d->rec_end[r] - want) < fabs((double)best - want)) best = d->rec_end[r];
    return best;
}
