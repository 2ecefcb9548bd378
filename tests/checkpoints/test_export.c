/* test_export.c: Hugging Face / GGUF export (checkpoints/export_hf.h, export_gguf.h) and
 * reading the exports back (export_load.h), on the tiny model of export_fixture.h.
 * - half conversions and Q8_0 against hand-computed values and error bounds;
 * - the rope row permutation and its inverse;
 * - HF f32 export -> our safetensors reader: every tensor bit-identical, noise_gate absent,
 *   config.json fields; sharded export reads back the same; the model loaded from the
 *   export computes bit-identical logits; the tokenizer read back has the same hash;
 * - GGUF f32 export -> our GGUF reader: keys, shapes innermost-first, q/k permuted, the
 *   loaded model's logits bit-identical; q8_0 within the quantisation bound;
 * - a corrupt checkpoint or an unwritable directory leaves nothing under the output name;
 * - a router bias (aux-loss-free balancing) routes inference and is refused by both formats;
 * - options: a window goes to config.json (Mixtral, and a dense model becomes a Mistral) and
 *   comes back, with bit-identical logits; GGUF refuses a window and both formats refuse
 *   shared experts, naming the key and writing nothing; a checkpoint with shared experts
 *   still loads for sample/eval/logits.
 * Corrupt export files and the KV-cache path are test_infer.c.
 */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "autograd/blas.h"
#include "checkpoints/ckpt.h"
#include "checkpoints/export.h"
#include "checkpoints/export_names.h"
#include "checkpoints/gguf.h"
#include "checkpoints/safetensors.h"
#include "core/fs.h"
#include "core/json.h"
#include "data/tokenizer.h"
#include "layers/infer.h"
#include "testutil.h"
#include "train/train.h"

#include "export_fixture.h"

/* ---------------------------------------------------------------- formats */

START_TEST(test_half) {
    /* Exact values: 1 -> 0x3c00, -2 -> 0xc000, 65504 (max half) -> 0x7bff, 65520 rounds to
     * inf, 2^-24 (smallest subnormal) -> 0x0001, 2^-26 rounds to 0, 1 + 2^-11 is a tie
     * that rounds to even (1.0), 1 + 3*2^-11 rounds up to 1 + 2^-9. */
    ck_assert_uint_eq(st_f32_to_f16(1.0f), 0x3c00);
    ck_assert_uint_eq(st_f32_to_f16(-2.0f), 0xc000);
    ck_assert_uint_eq(st_f32_to_f16(65504.0f), 0x7bff);
    ck_assert_uint_eq(st_f32_to_f16(65520.0f), 0x7c00);
    ck_assert_uint_eq(st_f32_to_f16(ldexpf(1.0f, -24)), 0x0001);
    ck_assert_uint_eq(st_f32_to_f16(ldexpf(1.0f, -26)), 0x0000);
    ck_assert_uint_eq(st_f32_to_f16(1.0f + ldexpf(1.0f, -11)), 0x3c00);
    ck_assert_uint_eq(st_f32_to_f16(1.0f + 3 * ldexpf(1.0f, -11)), 0x3c02);
    ck_assert(isnan(st_f16_to_f32(st_f32_to_f16(NAN))));
    /* Every finite half survives half -> float -> half. */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00) continue;
        ck_assert_uint_eq(st_f32_to_f16(st_f16_to_f32((uint16_t)h)), h);
    }
    /* bf16: 1 -> 0x3f80; 1 + 2^-8 is a tie -> even (1.0); 1 + 3*2^-8 -> 1 + 2^-6. */
    ck_assert_uint_eq(st_f32_to_bf16(1.0f), 0x3f80);
    ck_assert_uint_eq(st_f32_to_bf16(1.0f + ldexpf(1.0f, -8)), 0x3f80);
    ck_assert_uint_eq(st_f32_to_bf16(1.0f + 3 * ldexpf(1.0f, -8)), 0x3f82);
    ck_assert(st_bf16_to_f32(0x3f82) == 1.0f + ldexpf(1.0f, -6));
}
END_TEST

START_TEST(test_q8_0) {
    float x[64], y[64];
    uint8_t q[68];
    MoeRng r;
    rng_seed(&r, 3);
    for (int i = 0; i < 64; i++) x[i] = rng_normal(&r);
    x[5] = 0.0f;
    gguf_quantize_q8_0(x, 64, q);
    gguf_dequantize_q8_0(q, 64, y);
    for (int b = 0; b < 2; b++) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[32 * b + j]));
        float d = amax / 127.0f;
        /* Rounding to the int8 grid costs at most d/2; the f16 scale adds a relative 2^-11
         * on each value (|q| <= 127). */
        for (int j = 0; j < 32; j++)
            ck_assert_msg(fabsf(y[32 * b + j] - x[32 * b + j]) <= 0.5f * d + amax * 1e-3f,
                          "block %d value %d: %g vs %g", b, j, (double)y[32 * b + j],
                          (double)x[32 * b + j]);
    }
    ck_assert(y[5] == 0.0f);
    ck_assert_uint_eq(gguf_type_bytes(GGML_Q8_0, 64), 68);
}
END_TEST

START_TEST(test_permute) {
    /* 2 heads of D = 4, C = 1: rows [a0 a1 b0 b1 | c0 c1 d0 d1] where (a_j, b_j) are the
     * rotate-half pairs (j, j + 2); interleaved order pairs rows (2j, 2j+1). */
    float w[8] = {0, 1, 2, 3, 4, 5, 6, 7}, o[8], back[8];
    export_permute_rope_rows(w, o, 2, 4, 1, false);
    const float want[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    ck_assert(!memcmp(o, want, sizeof o));
    export_permute_rope_rows(o, back, 2, 4, 1, true);
    ck_assert(!memcmp(back, w, sizeof w));
}
END_TEST

/* ---------------------------------------------------------------- HF */

START_TEST(test_hf_roundtrip) {
    Config c;
    Model m;
    memset(&c, 0, sizeof c);
    save_ref(&m, &c, 4);
    char out[400];
    snprintf(out, sizeof out, "%s/hf", g_dir);
    ExportHfOptions o = {ST_F32, 0, false};
    MoeErr err;
    ck_assert_msg(export_hf(g_ckpt, out, &o, &err) == 0, "%s", err.msg);
    /* Our reader sees every tensor bit for bit, experts split, no noise_gate. */
    StModel st;
    ck_assert_msg(st_model_open(&st, out, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(st.n_files, 1);
    size_t expect = 0;
    for (int i = 0; i < m.ps.count; i++) {
        const Param *p = &m.ps.p[i];
        if (strstr(p->name, "noise_gate")) {
            char nm[160];
            snprintf(nm, sizeof nm, "%s", p->name);
            ck_assert_ptr_null(st_model_find(&st, nm, NULL));
            continue;
        }
        int ne = p->block == PBLOCK_EXPERT ? m.e_local : 1;
        size_t per = p->t.n / (size_t)ne;
        for (int e = 0; e < ne; e++) {
            char nm[160];
            const char *at = strstr(p->name, "{e}");
            if (at) snprintf(nm, sizeof nm, "%.*s%d%s", (int)(at - p->name), p->name, e, at + 3);
            else snprintf(nm, sizeof nm, "%s", p->name);
            const StFile *f;
            const StEntry *en = st_model_find(&st, nm, &f);
            ck_assert_msg(en != NULL, "%s missing", nm);
            ck_assert_int_eq(en->dtype, ST_F32);
            ck_assert_uint_eq(en->n, per);
            ck_assert_msg(!memcmp(f->buf + f->data_off + en->begin, p->t.data + e * per, 4 * per),
                          "%s differs", nm);
            expect++;
        }
    }
    ck_assert_uint_eq(st.files[0].n, expect);
    ck_assert_ptr_nonnull(st_model_find(&st, "model.layers.1.block_sparse_moe.experts.3.w2.weight", NULL));
    st_model_close(&st);
    /* config.json holds the documented fields. */
    char p[500];
    snprintf(p, sizeof p, "%s/config.json", out);
    uint8_t *buf;
    size_t n;
    ck_assert(fs_read_file(p, &buf, &n, &err) == 0);
    JsonValue j;
    ck_assert_msg(json_parse(&j, (const char *)buf, n, p, 1, &err) == 0, "%s", err.msg);
    moe_free(buf);
    ck_assert_str_eq(json_get(&j, "model_type")->str, "mixtral");
    ck_assert_str_eq(json_get(&j, "architectures")->items[0].str, "MixtralForCausalLM");
    ck_assert(json_get_num(&j, "num_local_experts") == 4);
    ck_assert(json_get_num(&j, "num_experts_per_tok") == 2);
    ck_assert(json_get_num(&j, "head_dim") == 8);
    ck_assert(json_get_num(&j, "max_position_embeddings") == 16);
    ck_assert(json_get_num(&j, "rms_norm_eps") == 1e-5);
    ck_assert(json_get_num(&j, "eos_token_id") == 299);
    ck_assert(json_get(&j, "tie_word_embeddings")->type == JSON_BOOL &&
              !json_get(&j, "tie_word_embeddings")->b);
    json_free(&j);
    /* tokenizer.json parses as JSON; no temporary directory is left next to the export. */
    snprintf(p, sizeof p, "%s/tokenizer.json", out);
    ck_assert(fs_read_file(p, &buf, &n, &err) == 0);
    ck_assert_msg(json_parse(&j, (const char *)buf, n, p, 1, &err) == 0, "%s", err.msg);
    moe_free(buf);
    ck_assert_uint_eq(json_get(json_get(&j, "model"), "merges")->n, 43);
    json_free(&j);
    DIR *d = opendir(g_dir);
    struct dirent *de;
    while ((de = readdir(d))) ck_assert_msg(!strstr(de->d_name, ".tmp-"), "left %s", de->d_name);
    closedir(d);
    /* Loading the export gives the same parameters, logits and tokenizer. */
    ModelSource src;
    ck_assert_msg(model_source_load(&src, out, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(src.kind, SRC_HF);
    assert_same_params(&m, &src.model);
    float *la = moe_malloc(sizeof(float) * 12 * 300), *lb = moe_malloc(sizeof(float) * 12 * 300);
    logits_of(&m, IDS, 12, la);
    logits_of(&src.model, IDS, 12, lb);
    ck_assert(!memcmp(la, lb, sizeof(float) * 12 * 300));
    ck_assert(src.has_tok);
    Tokenizer t0;
    memset(&t0, 0, sizeof t0);
    ck_assert(tok_load(&t0, g_tok, &err) == 0);
    ck_assert_uint_eq(tok_hash(&src.tok), tok_hash(&t0));
    tok_free(&t0);
    model_source_free(&src);
    /* An existing output directory is refused, not overwritten. */
    ck_assert_int_eq(export_hf(g_ckpt, out, &o, &err), -1);
    ck_assert_msg(strstr(err.msg, "already exists"), "%s", err.msg);
    moe_free(la);
    moe_free(lb);
    model_free(&m);
    config_free(&c);
}
END_TEST

START_TEST(test_hf_sharded_bf16_dense) {
    Config c;
    Model m;
    memset(&c, 0, sizeof c);
    save_ref(&m, &c, 0);
    char out[400], p[500];
    MoeErr err;
    /* f32, sharded at 20 kB: several shards + index, same values. */
    snprintf(out, sizeof out, "%s/hf_sharded", g_dir);
    ExportHfOptions o = {ST_F32, 20000, false};
    ck_assert_msg(export_hf(g_ckpt, out, &o, &err) == 0, "%s", err.msg);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", out);
    ck_assert(exists(p));
    snprintf(p, sizeof p, "%s/model.safetensors", out);
    ck_assert(!exists(p));
    ModelSource src;
    ck_assert_msg(model_source_load(&src, out, &err) == 0, "%s", err.msg);
    assert_same_params(&m, &src.model);
    ck_assert_int_eq(params_find(&src.model.ps, "model.layers.0.mlp.gate_proj.weight") >= 0, 1);
    model_source_free(&src);
    snprintf(p, sizeof p, "%s/config.json", out);
    uint8_t *buf;
    size_t n;
    ck_assert(fs_read_file(p, &buf, &n, &err) == 0);
    ck_assert(strstr((char *)buf, "\"LlamaForCausalLM\"") && strstr((char *)buf, "\"llama\""));
    moe_free(buf);
    /* bf16: values are the bf16 rounding of ours. */
    snprintf(out, sizeof out, "%s/hf_bf16", g_dir);
    ExportHfOptions ob = {ST_BF16, 0, false};
    ck_assert_msg(export_hf(g_ckpt, out, &ob, &err) == 0, "%s", err.msg);
    ck_assert_msg(model_source_load(&src, out, &err) == 0, "%s", err.msg);
    for (int i = 0; i < m.ps.count; i++) {
        const Tensor *a = &m.ps.p[i].t, *b = &src.model.ps.p[i].t;
        for (size_t k = 0; k < a->n; k++)
            ck_assert(b->data[k] == st_bf16_to_f32(st_f32_to_bf16(a->data[k])));
    }
    model_source_free(&src);
    model_free(&m);
    config_free(&c);
}
END_TEST

/* ---------------------------------------------------------------- GGUF */

START_TEST(test_gguf_roundtrip) {
    Config c;
    Model m;
    memset(&c, 0, sizeof c);
    save_ref(&m, &c, 4);
    char out[400];
    snprintf(out, sizeof out, "%s/m.gguf", g_dir);
    MoeErr err;
    ck_assert_msg(export_gguf(g_ckpt, out, GGML_F32, &err) == 0, "%s", err.msg);
    GgufFile f;
    ck_assert_msg(gguf_open(&f, out, &err) == 0, "%s", err.msg);
    uint32_t u;
    ck_assert(gguf_get_u32(&f, "llama.expert_count", &u, &err) == 0 && u == 4);
    ck_assert(gguf_get_u32(&f, "llama.expert_used_count", &u, &err) == 0 && u == 2);
    ck_assert(gguf_get_u32(&f, "llama.rope.dimension_count", &u, &err) == 0 && u == 8);
    ck_assert(gguf_get_u32(&f, "tokenizer.ggml.eos_token_id", &u, &err) == 0 && u == 299);
    const char *s;
    size_t sl;
    ck_assert(gguf_get_str(&f, "tokenizer.ggml.pre", &s, &sl, &err) == 0 && sl == 5 &&
              !memcmp(s, "gpt-2", 5));
    int kt = gguf_find(&f, "tokenizer.ggml.tokens");
    ck_assert(kt >= 0 && f.kv[kt].arr_n == 300);
    gguf_arr_str(&f, kt, 32, &s, &sl);   /* byte ' ' is 'Ġ' (U+0120) in GPT-2's alphabet */
    ck_assert(sl == 2 && !memcmp(s, "\xc4\xa0", 2));
    /* Stacked experts, innermost first: w1 (E, F, C) -> ne [C, F, E]; bytes = ours. */
    const GgufTensorInfo *t = gguf_find_tensor(&f, "blk.1.ffn_gate_exps.weight");
    ck_assert_ptr_nonnull(t);
    ck_assert(t->ndim == 3 && t->ne[0] == 32 && t->ne[1] == 48 && t->ne[2] == 4);
    int w1 = params_find(&m.ps, "model.layers.1.block_sparse_moe.experts.{e}.w1.weight");
    ck_assert(!memcmp(f.buf + t->off, m.ps.p[w1].t.data, t->nbytes));
    t = gguf_find_tensor(&f, "blk.0.ffn_down_exps.weight");
    ck_assert(t && t->ne[0] == 48 && t->ne[1] == 32 && t->ne[2] == 4);
    ck_assert_ptr_null(gguf_find_tensor(&f, "blk.0.ffn_gate_inp_noise.weight"));
    /* k rows permuted with the kv head count. */
    t = gguf_find_tensor(&f, "blk.0.attn_k.weight");
    int wk = params_find(&m.ps, "model.layers.0.self_attn.k_proj.weight");
    float *perm = moe_malloc(sizeof(float) * m.ps.p[wk].t.n);
    export_permute_rope_rows(m.ps.p[wk].t.data, perm, 2, 8, 32, false);
    ck_assert(t && t->ne[0] == 32 && t->ne[1] == 16 && !memcmp(f.buf + t->off, perm, t->nbytes));
    moe_free(perm);
    ck_assert_uint_eq(f.n_t, 3 + 2 * 10);   /* embd, output_norm, output + 10 per layer */
    gguf_close(&f);
    /* Loaded back: same parameters and logits, bit for bit; same tokenizer. */
    ModelSource src;
    ck_assert_msg(model_source_load(&src, out, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(src.kind, SRC_GGUF);
    assert_same_params(&m, &src.model);
    float *la = moe_malloc(sizeof(float) * 12 * 300), *lb = moe_malloc(sizeof(float) * 12 * 300);
    logits_of(&m, IDS, 12, la);
    logits_of(&src.model, IDS, 12, lb);
    ck_assert(!memcmp(la, lb, sizeof(float) * 12 * 300));
    Tokenizer t0;
    memset(&t0, 0, sizeof t0);
    ck_assert(tok_load(&t0, g_tok, &err) == 0);
    ck_assert(src.has_tok && tok_hash(&src.tok) == tok_hash(&t0));
    tok_free(&t0);
    model_source_free(&src);
    /* q8_0: matrices quantised (C = 32 is one block per row), logits close. */
    snprintf(out, sizeof out, "%s/m8.gguf", g_dir);
    ck_assert_msg(export_gguf(g_ckpt, out, GGML_Q8_0, &err) == 0, "%s", err.msg);
    ck_assert_msg(gguf_open(&f, out, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(gguf_find_tensor(&f, "blk.0.attn_q.weight")->type, GGML_Q8_0);
    ck_assert_int_eq(gguf_find_tensor(&f, "blk.0.attn_norm.weight")->type, GGML_F32);
    ck_assert_int_eq(gguf_find_tensor(&f, "blk.0.ffn_gate_inp.weight")->type, GGML_F32);
    ck_assert_int_eq(gguf_find_tensor(&f, "blk.0.ffn_down_exps.weight")->type, GGML_F16);  /* F=48 */
    gguf_close(&f);
    ck_assert_msg(model_source_load(&src, out, &err) == 0, "%s", err.msg);
    logits_of(&src.model, IDS, 12, lb);
    /* 8-bit weights: relative error ~0.5/127 per weight; logits of O(1)..O(10) over two
     * layers move by well under 0.1. */
    for (int i = 0; i < 12 * 300; i++) ck_assert_msg(fabsf(la[i] - lb[i]) < 0.1f, "%d", i);
    model_source_free(&src);
    moe_free(la);
    moe_free(lb);
    model_free(&m);
    config_free(&c);
}
END_TEST

START_TEST(test_export_fails_cleanly) {
    Config c;
    Model m;
    memset(&c, 0, sizeof c);
    save_ref(&m, &c, 4);
    char trunc[400], out[400], g[400];
    MoeErr err;
    /* A truncated checkpoint: clean error, nothing under the output names, no temporaries. */
    snprintf(trunc, sizeof trunc, "%s/trunc.h5", g_dir);
    uint8_t *buf;
    size_t n;
    ck_assert(fs_read_file(g_ckpt, &buf, &n, &err) == 0);
    write_bytes(trunc, buf, n / 2);
    moe_free(buf);
    snprintf(out, sizeof out, "%s/out_hf", g_dir);
    snprintf(g, sizeof g, "%s/out.gguf", g_dir);
    ExportHfOptions o = {ST_F32, 0, false};
    ck_assert_int_eq(export_hf(trunc, out, &o, &err), -1);
    ck_assert_msg(strstr(err.msg, "trunc.h5"), "%s", err.msg);
    ck_assert_int_eq(export_gguf(trunc, g, GGML_F32, &err), -1);
    ck_assert(!exists(out) && !exists(g));
    /* An unwritable / missing parent directory. */
    snprintf(out, sizeof out, "%s/no/such/dir/hf", g_dir);
    ck_assert_int_eq(export_hf(g_ckpt, out, &o, &err), -1);
    ck_assert_msg(strstr(err.msg, "cannot create"), "%s", err.msg);
    snprintf(g, sizeof g, "%s/no/such/dir/m.gguf", g_dir);
    ck_assert_int_eq(export_gguf(g_ckpt, g, GGML_F32, &err), -1);
    if (geteuid() != 0) {   /* root ignores directory permissions */
        char ro[300];
        snprintf(ro, sizeof ro, "%s/ro", g_dir);
        ck_assert(mkdir(ro, 0555) == 0);
        snprintf(out, sizeof out, "%s/hf", ro);
        ck_assert_int_eq(export_hf(g_ckpt, out, &o, &err), -1);
        ck_assert(!exists(out));
    }
    DIR *d = opendir(g_dir);
    struct dirent *de;
    while ((de = readdir(d)))
        ck_assert_msg(!strstr(de->d_name, ".tmp") && strcmp(de->d_name, "out_hf") &&
                      strcmp(de->d_name, "out.gguf"), "left %s", de->d_name);
    closedir(d);
    model_free(&m);
    config_free(&c);
}
END_TEST

/* ---------------------------------------------------------------- router bias */

/* A checkpoint trained with aux-loss-free balancing: inference (checkpoint -> model source,
 * KV cache) routes with the saved bias; HF and GGUF export refuse it, naming the option,
 * and leave nothing; an all-zero bias (it selects nothing differently) exports. */
START_TEST(test_router_bias_inference_and_export) {
    Config c;
    Model m;
    memset(&c, 0, sizeof c);
    save_ref(&m, &c, 4);
    c.moe.bias_update_rate = 1e-3;
    m.use_router_bias = true;
    for (int j = 0; j < 2 * 4; j++) m.router_bias[j] = (j % 4 == 1) ? 3.0f : -1.0f;
    CkptMeta mt = {.step = 5, .seed = 4242};
    MoeErr err;
    ck_assert_msg(ckpt_save(g_ckpt, &c, &m, &mt, g_tok, false, &err) == 0, "%s", err.msg);
    float *ref = moe_malloc(sizeof(float) * 12 * 300), *got = moe_malloc(sizeof(float) * 12 * 300);
    logits_of(&m, IDS, 12, ref);
    /* the bias matters here (expert 1 forced into every token's top 2) */
    m.use_router_bias = false;
    logits_of(&m, IDS, 12, got);
    ck_assert(memcmp(ref, got, sizeof(float) * 12 * 300) != 0);
    m.use_router_bias = true;
    ModelSource src;
    ck_assert_msg(model_source_load(&src, g_ckpt, &err) == 0, "%s", err.msg);
    ck_assert(src.model.use_router_bias);
    logits_of(&src.model, IDS, 12, got);
    ck_assert_msg(memcmp(ref, got, sizeof(float) * 12 * 300) == 0,
                  "the loaded model does not route with the saved bias");
    InferCache ic;
    infer_init(&ic, &src.model, 12);
    infer_step(&ic, &src.model, IDS, 12, got);
    /* as test_infer_matches_forward: attention summation order only */
    ck_assert(tt_max_err(got, ref, 12 * 300, 1e-4, 1e-4) <= 1.0);
    infer_free(&ic);
    model_source_free(&src);

    char out[400], g[400];
    snprintf(out, sizeof out, "%s/out_hf", g_dir);
    snprintf(g, sizeof g, "%s/out.gguf", g_dir);
    ExportHfOptions o = {ST_F32, 0, false};
    ck_assert_int_eq(export_hf(g_ckpt, out, &o, &err), -1);
    ck_assert_msg(strstr(err.msg, g_ckpt) && strstr(err.msg, "moe.bias_update_rate") &&
                  strstr(err.msg, "Hugging Face"), "%s", err.msg);
    ck_assert(err.hint[0]);
    ck_assert_int_eq(export_gguf(g_ckpt, g, GGML_F32, &err), -1);
    ck_assert_msg(strstr(err.msg, "moe.bias_update_rate") && strstr(err.msg, "GGUF"), "%s",
                  err.msg);
    ck_assert(!exists(out) && !exists(g));
    DIR *d = opendir(g_dir);
    struct dirent *de;
    while ((de = readdir(d))) ck_assert_msg(!strstr(de->d_name, ".tmp"), "left %s", de->d_name);
    closedir(d);

    memset(m.router_bias, 0, sizeof(float) * 2 * 4);
    ck_assert_msg(ckpt_save(g_ckpt, &c, &m, &mt, g_tok, false, &err) == 0, "%s", err.msg);
    ck_assert_msg(export_hf(g_ckpt, out, &o, &err) == 0, "zero bias: %s", err.msg);
    ck_assert_msg(export_gguf(g_ckpt, g, GGML_F32, &err) == 0, "zero bias: %s", err.msg);
    moe_free(ref);
    moe_free(got);
    model_free(&m);
    config_free(&c);
}
END_TEST

/* Reads OUTDIR/config.json. */
static void read_config_json(const char *out, JsonValue *j) {
    char p[500];
    snprintf(p, sizeof p, "%s/config.json", out);
    uint8_t *buf;
    size_t n;
    MoeErr err;
    ck_assert(fs_read_file(p, &buf, &n, &err) == 0);
    ck_assert_msg(json_parse(j, (const char *)buf, n, p, 1, &err) == 0, "%s", err.msg);
    moe_free(buf);
}

START_TEST(test_export_window_and_shared) {
    MoeErr err;
    char out[400];
    ExportHfOptions o = {ST_F32, 0, false};
    float *la = moe_malloc(sizeof(float) * 12 * 300), *lb = moe_malloc(sizeof(float) * 12 * 300);
    /* default: "sliding_window": null */
    {
        Config c;
        Model m;
        memset(&c, 0, sizeof c);
        save_ref(&m, &c, 4);
        snprintf(out, sizeof out, "%s/hf_nowin", g_dir);
        ck_assert_msg(export_hf(g_ckpt, out, &o, &err) == 0, "%s", err.msg);
        JsonValue j;
        read_config_json(out, &j);
        ck_assert(json_get(&j, "sliding_window")->type == JSON_NULL);
        json_free(&j);
        model_free(&m);
        config_free(&c);
    }
    /* a window: written, read back, same logits (12 tokens > W = 3, so it masks); MoE as
     * Mixtral, dense as Mistral */
    for (int E = 4; E >= 0; E -= 4) {
        Config c;
        Model m;
        memset(&c, 0, sizeof c);
        save_ref_with(&m, &c, E, 3, 0);
        snprintf(out, sizeof out, "%s/hf_win%d", g_dir, E);
        ck_assert_msg(export_hf(g_ckpt, out, &o, &err) == 0, "%s", err.msg);
        JsonValue j;
        read_config_json(out, &j);
        ck_assert(json_get_num(&j, "sliding_window") == 3);
        ck_assert_str_eq(json_get(&j, "model_type")->str, E ? "mixtral" : "mistral");
        ck_assert_str_eq(json_get(&j, "architectures")->items[0].str,
                         E ? "MixtralForCausalLM" : "MistralForCausalLM");
        json_free(&j);
        ModelSource src;
        ck_assert_msg(model_source_load(&src, out, &err) == 0, "%s", err.msg);
        ck_assert_int_eq(src.model.s.W, 3);
        assert_same_params(&m, &src.model);
        logits_of(&m, IDS, 12, la);
        logits_of(&src.model, IDS, 12, lb);
        ck_assert(!memcmp(la, lb, sizeof(float) * 12 * 300));
        model_source_free(&src);
        /* GGUF cannot say it: refused, naming the key, nothing written */
        snprintf(out, sizeof out, "%s/win%d.gguf", g_dir, E);
        ck_assert_int_eq(export_gguf(g_ckpt, out, GGML_F32, &err), -1);
        ck_assert_msg(strstr(err.msg, "model.sliding_window = 3") &&
                      strstr(err.msg, g_ckpt), "%s", err.msg);
        ck_assert(err.hint[0]);
        ck_assert(!exists(out));
        model_free(&m);
        config_free(&c);
    }
    /* shared experts: refused by both formats, naming moe.n_shared_experts; the checkpoint
     * itself still loads (sample/eval/logits) with the shared weights and their effect */
    {
        Config c;
        Model m;
        memset(&c, 0, sizeof c);
        save_ref_with(&m, &c, 4, 0, 2);
        ck_assert_int_eq(m.s.Fs, 40);
        snprintf(out, sizeof out, "%s/hf_shared", g_dir);
        ck_assert_int_eq(export_hf(g_ckpt, out, &o, &err), -1);
        ck_assert_msg(strstr(err.msg, "moe.n_shared_experts = 2") &&
                      strstr(err.msg, "MixtralForCausalLM"), "%s", err.msg);
        ck_assert(err.hint[0]);
        ck_assert(!exists(out));
        snprintf(out, sizeof out, "%s/shared.gguf", g_dir);
        ck_assert_int_eq(export_gguf(g_ckpt, out, GGML_F32, &err), -1);
        ck_assert_msg(strstr(err.msg, "moe.n_shared_experts = 2"), "%s", err.msg);
        ck_assert(!exists(out));
        DIR *d = opendir(g_dir);
        struct dirent *de;
        while ((de = readdir(d))) ck_assert_msg(!strstr(de->d_name, "tmp"), "left %s", de->d_name);
        closedir(d);
        ModelSource src;
        ck_assert_msg(model_source_load(&src, g_ckpt, &err) == 0, "%s", err.msg);
        ck_assert_int_eq(src.model.s.Fs, 40);
        ck_assert_int_ge(params_find(&src.model.ps,
                         "model.layers.1.block_sparse_moe.shared_experts.down_proj.weight"), 0);
        assert_same_params(&m, &src.model);
        logits_of(&m, IDS, 12, la);
        logits_of(&src.model, IDS, 12, lb);
        ck_assert(!memcmp(la, lb, sizeof(float) * 12 * 300));
        model_source_free(&src);
        model_free(&m);
        config_free(&c);
    }
    moe_free(la);
    moe_free(lb);
}
END_TEST

static Suite *export_suite(void) {
    Suite *s = suite_create("export");
    struct { const char *name; const TTest *fn; } cases[] = {
        {"half", test_half},
        {"q8_0", test_q8_0},
        {"permute", test_permute},
        {"hf_roundtrip", test_hf_roundtrip},
        {"hf_sharded_bf16_dense", test_hf_sharded_bf16_dense},
        {"gguf_roundtrip", test_gguf_roundtrip},
        {"export_fails_cleanly", test_export_fails_cleanly},
        {"export_window_and_shared", test_export_window_and_shared},
        {"router_bias", test_router_bias_inference_and_export},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, cases[i].fn);
        tcase_set_timeout(tc, 60);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    SRunner *sr = srunner_create(export_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
