/* export_names.c: parameter names and row layout in the export formats. See export_names.h. */
#include "checkpoints/export_names.h"

#include <stdio.h>
#include <string.h>

bool export_skips(const Param *p) { return strstr(p->name, "noise_gate") != NULL; }

void export_hf_expert_name(const char *pat, int e, char *out, size_t cap) {
    const char *at = strstr(pat, "{e}");
    if (!at) {
        snprintf(out, cap, "%s", pat);
        return;
    }
    snprintf(out, cap, "%.*s%d%s", (int)(at - pat), pat, e, at + 3);
}

void export_permute_rope_rows(const float *w, float *out, int n_head, int D, int C,
                              bool inverse) {
    ASSERT(D % 2 == 0 && w != out, "permute: D %d", D);
    const int half = D / 2;
    for (int h = 0; h < n_head; h++)
        for (int s = 0; s < 2; s++)
            for (int j = 0; j < half; j++) {
                /* rotate-half row s*half + j  <->  interleaved row 2j + s */
                size_t rh = (size_t)h * D + (size_t)s * half + j, il = (size_t)h * D + 2 * j + s;
                size_t src = inverse ? il : rh, dst = inverse ? rh : il;
                memcpy(out + dst * C, w + src * C, sizeof(float) * (size_t)C);
            }
}

bool export_gguf_name(const Param *p, const ModelShape *s, char *out, size_t cap,
                      int *rope_heads) {
    *rope_heads = 0;
    const char *n = p->name;
    if (export_skips(p)) return false;
    if (!strcmp(n, "model.embed_tokens.weight")) { snprintf(out, cap, "token_embd.weight"); return true; }
    if (!strcmp(n, "model.norm.weight")) { snprintf(out, cap, "output_norm.weight"); return true; }
    if (!strcmp(n, "lm_head.weight")) { snprintf(out, cap, "output.weight"); return true; }
    int l, used = 0;
    if (sscanf(n, "model.layers.%d.%n", &l, &used) != 1 || used == 0) {
        ASSERT(false, "export_gguf_name: unexpected parameter %s", n);
    }
    const char *rest = n + used;
    static const struct { const char *hf, *gg; int rope; } map[] = {
        {"input_layernorm.weight", "attn_norm.weight", 0},
        {"self_attn.q_proj.weight", "attn_q.weight", 1},
        {"self_attn.k_proj.weight", "attn_k.weight", 2},
        {"self_attn.v_proj.weight", "attn_v.weight", 0},
        {"self_attn.o_proj.weight", "attn_output.weight", 0},
        {"post_attention_layernorm.weight", "ffn_norm.weight", 0},
        {"block_sparse_moe.gate.weight", "ffn_gate_inp.weight", 0},
        {"block_sparse_moe.experts.{e}.w1.weight", "ffn_gate_exps.weight", 0},
        {"block_sparse_moe.experts.{e}.w3.weight", "ffn_up_exps.weight", 0},
        {"block_sparse_moe.experts.{e}.w2.weight", "ffn_down_exps.weight", 0},
        {"mlp.gate_proj.weight", "ffn_gate.weight", 0},
        {"mlp.up_proj.weight", "ffn_up.weight", 0},
        {"mlp.down_proj.weight", "ffn_down.weight", 0},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(rest, map[i].hf)) {
            snprintf(out, cap, "blk.%d.%s", l, map[i].gg);
            *rope_heads = map[i].rope == 1 ? s->H : map[i].rope == 2 ? s->Hkv : 0;
            return true;
        }
    ASSERT(false, "export_gguf_name: unexpected parameter %s", n);
    return false;
}
