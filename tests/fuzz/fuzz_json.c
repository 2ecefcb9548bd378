/* fuzz_json.c: libFuzzer target for train/json.c (the reader of metrics.jsonl / eval.jsonl
 * lines that `moetrain report` plots).
 *
 * Input: one line's bytes, given to json_parse as they are. On success the tree is walked
 * (every key looked up again with json_get, numbers read with json_get_num) and freed;
 * invariants: an error leaves *out zeroed, and nothing moe_malloc'ed outlives the input.
 */
#include <string.h>

#include "fuzz_util.h"
#include "core/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t walk(const JsonValue *v, int depth) {
    ASSERT(depth <= 65, "json nesting %d beyond the documented limit of 64", depth);
    size_t n = 1;
    switch (v->type) {
    case JSON_STR: ASSERT(v->str != NULL, "string without text"); break;
    case JSON_ARR:
    case JSON_OBJ:
        ASSERT(v->n == 0 || v->items != NULL, "container of %zu items without items", v->n);
        for (size_t i = 0; i < v->n; i++) {
            n += walk(&v->items[i], depth + 1);
            if (v->type == JSON_OBJ) {
                ASSERT(v->keys && v->keys[i], "object member %zu without key", i);
                /* the last duplicate wins, so the lookup finds this member or a later one */
                const JsonValue *g = json_get(v, v->keys[i]);
                ASSERT(g >= &v->items[i] && g < v->items + v->n, "json_get missed key %zu", i);
                (void)json_get_num(v, v->keys[i]);
            }
        }
        break;
    default: break;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t live = moe_live_bytes();
    JsonValue v;
    MoeErr err;
    if (json_parse(&v, (const char *)data, size, "fuzz.jsonl", 1, &err) == 0) {
        walk(&v, 0);
        json_free(&v);
    } else {
        JsonValue zero;
        memset(&zero, 0, sizeof zero);
        ASSERT(memcmp(&v, &zero, sizeof v) == 0, "json_parse failed but left *out set");
        ASSERT(err.msg[0] != 0, "json_parse failed without a message");
    }
    FUZZ_NO_LEAK(live, "json_parse");
    return 0;
}
