/* config_yaml.c: a Config written back as text: config_to_yaml (the complete effective
 * config, which config_load reads back to the same values) and the diffs between two
 * configs (config_diff_shape, config_diff_other, config_diff_model). Both walk the key
 * table (config_keys.h), so a new key is written and compared without code here.
 */
#include "configs/config.h"

#include <stdio.h>
#include <string.h>

#include "configs/config_keys.h"

char *config_to_yaml(const Config *c) {
    Buf b = {0};
    cfg_buf_printf(&b, "# moetrain config '%s' (complete, effective values)\n",
               c->name ? c->name : "default");
    for (int s = 0; s < CONFIG_N_SECTIONS; s++) {
        cfg_buf_printf(&b, "%s:\n", cfg_sections[s]);
        for (int i = 0; i < CONFIG_N_KEYS; i++) {
            const KeySpec *k = &cfg_keys[i];
            if (k->sec != s || (k->flags & F_ALIAS)) continue;   /* old names: never written */
            if (k->type == T_STR && !cfg_peek(c, k).s) continue;  /* unset tokenizer/upcycle_from */
            if (i == cfg_key_index(S_TRAIN, "steps") && c->train.tokens > 0 && !c->key_loc[i]) {
                /* derived from train.tokens: a comment, so that the text reads back (steps
                 * given as well, which config_validate refuses, is written as it is) */
                cfg_buf_printf(&b, "  # steps: %lld (from train.tokens: ceil(tokens / "
                               "(global_micro_batch x seq_len x grad_accum)))\n",
                               (long long)c->train.steps);
                continue;
            }
            size_t start = b.n;
            cfg_buf_printf(&b, "  %s: ", k->name);
            cfg_fmt_value(&b, c, k);
            size_t w = b.n - start;
            cfg_buf_printf(&b, "%*s# %s\n", w < 36 ? (int)(36 - w) : 1, "", k->doc);
        }
    }
    return b.p;
}

/* skip_sec: a section left out of the comparison, or -1. */
static int diff(const Config *a, const Config *b, bool shape, int skip_sec, char *out,
                size_t cap) {
    int count = 0;
    size_t used = 0;
    if (out && cap) out[0] = 0;
    for (int i = 0; i < CONFIG_N_KEYS; i++) {
        const KeySpec *k = &cfg_keys[i];
        if (((k->flags & F_SHAPE) != 0) != shape || k->sec == skip_sec || (k->flags & F_ALIAS))
            continue;
        Buf va = {0}, vb = {0};
        cfg_fmt_value(&va, a, k);
        cfg_fmt_value(&vb, b, k);
        if (strcmp(va.p, vb.p) != 0) {
            if (out && used < cap) {
                int w = snprintf(out + used, cap - used, "%s%s.%s: %s -> %s", count ? ", " : "",
                                 cfg_sections[k->sec], k->name, va.p, vb.p);
                used = w < 0 ? cap : used + (size_t)w;
            }
            count++;
        }
        moe_free(va.p);
        moe_free(vb.p);
    }
    return count;
}

int config_diff_shape(const Config *a, const Config *b, char *out, size_t cap) {
    return diff(a, b, true, -1, out, cap);
}

int config_diff_other(const Config *a, const Config *b, char *out, size_t cap) {
    return diff(a, b, false, -1, out, cap);
}

int config_diff_model(const Config *a, const Config *b, char *out, size_t cap) {
    return diff(a, b, true, S_FINETUNE, out, cap);
}
