/* fuzz_config.c: libFuzzer target for train/config.c, the strict YAML config reader.
 *
 * Input: YAML text, optionally followed by a NUL byte and '\n'-separated "--set" overrides
 * (section.key=value). The text goes through config_load_text, each override through
 * config_set, then config_validate. Invariants checked on every accepted config:
 *   - config_to_yaml gives text that config_load_text accepts back, to the same config
 *     (the copy stored in every checkpoint is re-read on resume), with no difference
 *     reported by config_diff_shape / config_diff_other, and the same text once more;
 *   - config_copy is deep (freeing the copy leaves the original intact);
 *   - nothing moe_malloc'ed outlives the input, also on every error path.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "configs/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_round_trip(const Config *c) {
    char *yaml = config_to_yaml(c);
    Config back;
    MoeErr err;
    int rc = config_load_text(&back, yaml, strlen(yaml), "roundtrip.yaml", &err);
    if (rc != 0) {
        fprintf(stderr, "config_to_yaml output is not accepted back:\n%s\n--- error: %s\n",
                yaml, err.msg);
        abort();
    }
    /* The name and the default run.dir come from the label: compare the rest. */
    moe_free(back.name);
    back.name = moe_strdup(c->name);
    char diff[512];
    int ds = config_diff_shape(c, &back, diff, sizeof diff);
    ASSERT(ds == 0, "round trip changed shape keys: %s", diff);
    int dn = config_diff_other(c, &back, diff, sizeof diff);
    ASSERT(dn == 0, "round trip changed keys: %s\n--- yaml:\n%s", diff, yaml);
    char *again = config_to_yaml(&back);
    ASSERT(strcmp(yaml, again) == 0, "config_to_yaml is not stable:\n%s\n---\n%s", yaml, again);
    moe_free(again);
    config_free(&back);
    moe_free(yaml);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t live = moe_live_bytes();
    const uint8_t *nul = size ? memchr(data, 0, size) : NULL;
    size_t ylen = nul ? (size_t)(nul - data) : size;
    Config c;
    MoeErr err;
    if (config_load_text(&c, (const char *)data, ylen, "fuzz.yaml", &err) != 0) {
        ASSERT(err.msg[0] != 0, "config_load_text failed without a message");
        FUZZ_NO_LEAK(live, "config_load_text failure");
        return 0;
    }
    if (nul) {
        /* overrides: NUL-terminated copies of each line after the NUL */
        size_t rest = size - ylen - 1;
        char *sets = malloc(rest + 1);
        ASSERT(sets != NULL, "out of memory");
        memcpy(sets, nul + 1, rest);
        sets[rest] = 0;
        for (char *line = sets, *next; line; line = next) {
            next = strchr(line, '\n');
            if (next) *next++ = 0;
            Config saved;
            config_copy(&saved, &c);
            if (config_set(&c, line, &err) != 0) {
                /* "On error *c is unchanged" */
                char d[256];
                ASSERT(config_diff_shape(&c, &saved, d, sizeof d) == 0 &&
                       config_diff_other(&c, &saved, d, sizeof d) == 0,
                       "failed config_set changed the config: %s", d);
            }
            config_free(&saved);
        }
        free(sets);
    }
    if (config_validate(&c, &err) != 0) ASSERT(err.msg[0] != 0, "validate without message");
    Config copy;
    config_copy(&copy, &c);
    config_free(&copy);
    check_round_trip(&c);
    config_free(&c);
    FUZZ_NO_LEAK(live, "config");
    return 0;
}
