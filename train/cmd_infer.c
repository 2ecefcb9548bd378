/* cmd_infer.c: `moetrain export`, `sample`, `eval` and `logits`. See cmd_infer.h.
 *
 * Every command first resolves its MODEL (or CKPT) argument with rundir_resolve_model: a
 * run directory becomes its newest valid checkpoint, named on stderr.
 * eval and logits run model_forward on a non-recording tape (router noise off, dropless),
 * so their numbers are exactly the training forward's. sample uses the KV cache
 * (layers/infer.h). */
#include "train/cmd_infer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoints/ckpt.h"
#include "checkpoints/export.h"
#include "core/fs.h"
#include "layers/infer.h"
#include "train/cli_model.h"
#include "train/outguard.h"

static const char *EXPORT_HELP =
    "usage: moetrain export CKPT OUT --format hf|gguf [--dtype TYPE] [--max-shard-size BYTES]\n"
    "                       [--force]\n"
    "       moetrain export CKPT OUT --adapters-only [--dtype TYPE] [--force]\n"
    "\n"
    "Exports a checkpoint for other inference stacks. CKPT is a checkpoint file or a run\n"
    "directory (its newest valid checkpoint, the one --resume auto continues, named on\n"
    "stderr). A LoRA adapter checkpoint (a run with\n"
    "finetune.lora_rank > 0) is exported merged: its base is read from the path it records\n"
    "(checksum verified) and every adapted weight becomes W + alpha/r B A.\n"
    "  --format hf     OUT is a new directory that Hugging Face transformers loads as\n"
    "                  MixtralForCausalLM (LlamaForCausalLM for a dense model):\n"
    "                  model.safetensors (or shards + model.safetensors.index.json),\n"
    "                  config.json, generation_config.json, tokenizer.json,\n"
    "                  tokenizer_config.json, special_tokens_map.json\n"
    "  --format gguf   OUT is one GGUF v3 file that llama.cpp loads (architecture llama,\n"
    "                  tokenizer embedded)\n"
    "\n"
    "options:\n"
    "  --format F             hf or gguf (default: gguf when OUT ends in .gguf, else hf)\n"
    "  --dtype TYPE           hf: f32 (default), bf16, f16; gguf: f32 (default), f16, q8_0\n"
    "  --max-shard-size N     hf: split the weights into shards of at most N bytes\n"
    "                         (suffixes KB MB GB = 1000^k, KiB MiB GiB = 1024^k)\n"
    "  --adapters-only        LoRA adapter checkpoint: OUT is a new PEFT adapter directory\n"
    "                         (adapter_model.safetensors, adapter_config.json); the base is\n"
    "                         not needed. --dtype f32 (default), bf16 or f16\n"
    "  --force                replace an existing OUT: a GGUF file, or an export directory\n"
    "                         that holds only .json and .safetensors files (the new\n"
    "                         directory is complete before the old one is removed)\n"
    "The output appears under OUT only when complete. Without --force OUT must not exist;\n"
    "OUT is never CKPT, the LoRA base checkpoint it names, or a directory holding either.\n";

static const char *SAMPLE_HELP =
    "usage: moetrain sample MODEL --prompt TEXT [--max-tokens N] [--temperature T]\n"
    "                       [--top-p P] [--seed S]\n"
    "\n"
    "Generates text from MODEL (a run directory, a checkpoint, an HF export directory or a\n"
    "GGUF file) with a KV cache; prints the prompt and the continuation, then tokens/s on\n"
    "stderr. Stops at <|endoftext|> or after N tokens. A model trained with data.doc_mask\n"
    "sees a prompt from its last <|endoftext|> token on (a document starts there).\n"
    "\n"
    "options:\n"
    "  --prompt TEXT       text to continue (may be empty: generation starts after\n"
    "                      <|endoftext|>)\n"
    "  --max-tokens N      tokens to generate (default 200)\n"
    "  --temperature T     softmax temperature, 0 = greedy (default 0.8)\n"
    "  --top-p P           nucleus sampling: keep the smallest set of tokens whose\n"
    "                      probability reaches P (default 0.95; 1 = off)\n"
    "  --seed S            random seed (default 1337)\n";

static const char *LOGITS_HELP =
    "usage: moetrain logits MODEL --ids 1,2,3 [--out FILE [--force]]\n"
    "\n"
    "Runs MODEL (a run directory, a checkpoint, an HF export directory or a GGUF file) on\n"
    "the token ids and writes the float32 logits of every position: raw little-endian\n"
    "float32 (n_ids, V) to FILE, or one text line per position (\"pos: v0 v1 ...\", %.9g)\n"
    "to stdout. A parity hook for other implementations.\n"
    "\n"
    "options:\n"
    "  --ids LIST    comma-separated token ids, each in [0, V)\n"
    "  --out FILE    write raw float32 instead of text (atomically); never MODEL or a\n"
    "                file inside it\n"
    "  --force       replace an existing FILE\n";

/* A refused output (train/outguard.h): printed like cli_fail, exit status 2. */
static int fail2(const MoeErr *err) {
    cli_fail(err);
    return 2;
}

static bool parse_double(const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) return false;
    *out = v;
    return true;
}

/* "5GB", "500MB", "2GiB", "123" -> bytes. */
static bool parse_size(const char *s, size_t *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !(v > 0)) return false;
    static const struct { const char *suf; double mul; } tab[] = {
        {"", 1}, {"B", 1}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9},
        {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (!strcmp(end, tab[i].suf)) {
            double b = v * tab[i].mul;
            if (b < 1 || b > 1e18) return false;
            *out = (size_t)b;
            return true;
        }
    return false;
}

/* What reading the model at path reads: path itself and, for a LoRA adapter checkpoint,
 * the base checkpoint it names (copied into base, cap bytes). Returns the count (1 or 2)
 * with in[0..count) set. A file that is no checkpoint (GGUF, HF directory, unreadable)
 * has no base; loading it reports its own errors later. */
static int model_inputs(const char *path, const char *in[2], char *base, size_t cap) {
    in[0] = path;
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return 1;
    CkptMeta meta;
    MoeErr err = {{0}, {0}};
    memset(&meta, 0, sizeof meta);
    if (ckpt_read_meta(path, &meta, &err) || !meta.adapter || !meta.base_path[0]) return 1;
    snprintf(base, cap, "%s", meta.base_path);
    in[1] = base;
    return 2;
}

/* ---------------------------------------------------------------- export */

int cmd_export(int argc, char **argv) {
    const char *pos[2] = {NULL, NULL}, *format = NULL, *dtype = NULL;
    int np = 0;
    size_t shard = 0;
    bool adapters_only = false, force = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) { fputs(EXPORT_HELP, stdout); return 0; }
        if (!strcmp(a, "--adapters-only")) {
            adapters_only = true;
            continue;
        }
        if (!strcmp(a, "--force")) {
            force = true;
            continue;
        }
        if (!strcmp(a, "--format") || !strcmp(a, "--dtype") || !strcmp(a, "--max-shard-size")) {
            if (i + 1 >= argc) return cli_model_usage("missing value for", a, EXPORT_HELP);
            const char *v = argv[++i];
            if (!strcmp(a, "--format")) format = v;
            else if (!strcmp(a, "--dtype")) dtype = v;
            else if (!parse_size(v, &shard))
                return cli_model_usage("--max-shard-size needs a byte count (e.g. 2000000000 or 2GB), "
                                 "got", v, EXPORT_HELP);
        } else if (a[0] == '-' && a[1]) {
            return cli_model_usage("unknown option", a, EXPORT_HELP);
        } else if (np < 2) {
            pos[np++] = a;
        } else {
            return cli_model_usage("unexpected argument", a, EXPORT_HELP);
        }
    }
    if (np != 2) return cli_model_usage("export needs CKPT and OUT", NULL, EXPORT_HELP);
    char ckpt[4096];
    if (cli_resolve_model(pos[0], ckpt, sizeof ckpt)) return 1;
    pos[0] = ckpt;
    MoeErr err = {{0}, {0}};
    double t0 = moe_now();
    const char *in[2];
    char base[1024];
    const int n_in = model_inputs(pos[0], in, base, sizeof base);
    if (adapters_only) {
        StDtype d = ST_F32;
        if (format || shard)
            return cli_model_usage("--adapters-only takes no --format or --max-shard-size", NULL,
                             EXPORT_HELP);
        if (dtype && st_dtype_parse(dtype, &d))
            return cli_model_usage("--dtype for --adapters-only must be f32, bf16 or f16, got", dtype,
                             EXPORT_HELP);
        int guard = outguard_cli(pos[1], OUTGUARD_DIR, "OUT", in, n_in, force);
        if (guard) return guard;
        if (force && export_dir_replaceable(pos[1], &err)) return fail2(&err);
        if (export_peft(pos[0], pos[1], d, force, &err)) return cli_fail(&err);
        printf("exported the LoRA adapters of %s -> %s (PEFT, dtype %s) in %.1f s\n", pos[0],
               pos[1], st_dtype_name(d), moe_now() - t0);
        return 0;
    }
    if (!format) {
        size_t l = strlen(pos[1]);
        format = l > 5 && !strcmp(pos[1] + l - 5, ".gguf") ? "gguf" : "hf";
    }
    if (!strcmp(format, "hf")) {
        ExportHfOptions o = {ST_F32, shard, force};
        if (dtype && (st_dtype_parse(dtype, &o.dtype)))
            return cli_model_usage("--dtype for hf must be f32, bf16 or f16, got", dtype, EXPORT_HELP);
        int guard = outguard_cli(pos[1], OUTGUARD_DIR, "OUT", in, n_in, force);
        if (guard) return guard;
        if (force && export_dir_replaceable(pos[1], &err)) return fail2(&err);
        if (export_hf(pos[0], pos[1], &o, &err)) return cli_fail(&err);
        printf("exported %s -> %s (Hugging Face %s, dtype %s) in %.1f s\n", pos[0], pos[1],
               "safetensors", st_dtype_name(o.dtype), moe_now() - t0);
    } else if (!strcmp(format, "gguf")) {
        GgmlType t = GGML_F32;
        if (shard)
            return cli_model_usage("--max-shard-size applies to --format hf only", NULL, EXPORT_HELP);
        if (dtype) {
            if (!strcmp(dtype, "f32")) t = GGML_F32;
            else if (!strcmp(dtype, "f16")) t = GGML_F16;
            else if (!strcmp(dtype, "q8_0")) t = GGML_Q8_0;
            else return cli_model_usage("--dtype for gguf must be f32, f16 or q8_0, got", dtype,
                                  EXPORT_HELP);
        }
        int guard = outguard_cli(pos[1], OUTGUARD_FILE, "OUT", in, n_in, force);
        if (guard) return guard;
        if (export_gguf(pos[0], pos[1], t, &err)) return cli_fail(&err);
        printf("exported %s -> %s (GGUF v3, %s) in %.1f s\n", pos[0], pos[1],
               t == GGML_F32 ? "f32" : t == GGML_F16 ? "f16" : "q8_0", moe_now() - t0);
    } else {
        return cli_model_usage("--format must be hf or gguf, got", format, EXPORT_HELP);
    }
    return 0;
}

/* ---------------------------------------------------------------- logits */

int cmd_logits(int argc, char **argv) {
    const char *src_path = NULL, *ids_s = NULL, *out_path = NULL;
    bool force = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) { fputs(LOGITS_HELP, stdout); return 0; }
        if (!strcmp(a, "--force")) {
            force = true;
        } else if (!strcmp(a, "--ids") || !strcmp(a, "--out")) {
            if (i + 1 >= argc) return cli_model_usage("missing value for", a, LOGITS_HELP);
            if (!strcmp(a, "--ids")) ids_s = argv[++i];
            else out_path = argv[++i];
        } else if (a[0] == '-' && a[1]) {
            return cli_model_usage("unknown option", a, LOGITS_HELP);
        } else if (!src_path) {
            src_path = a;
        } else {
            return cli_model_usage("unexpected argument", a, LOGITS_HELP);
        }
    }
    if (!src_path || !ids_s) return cli_model_usage("logits needs MODEL and --ids", NULL, LOGITS_HELP);
    if (force && !out_path) return cli_model_usage("--force applies to --out only", NULL, LOGITS_HELP);
    char model[4096];
    if (cli_resolve_model(src_path, model, sizeof model)) return 1;
    src_path = model;
    if (out_path) {
        const char *in[2];
        char base[1024];
        const int n_in = model_inputs(src_path, in, base, sizeof base);
        int guard = outguard_cli(out_path, OUTGUARD_FILE, "--out", in, n_in, force);
        if (guard) return guard;
    }
    size_t cap = strlen(ids_s) / 2 + 2;
    int32_t *ids = moe_malloc(sizeof(int32_t) * cap);
    int n = 0;
    const char *p = ids_s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX || (*end && *end != ',')) {
            moe_free(ids);
            return cli_model_usage("--ids must be comma-separated non-negative integers, got", ids_s,
                             LOGITS_HELP);
        }
        ids[n++] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
    if (n == 0) {
        moe_free(ids);
        return cli_model_usage("--ids is empty", NULL, LOGITS_HELP);
    }
    ModelSource src;
    if (cli_load_model(&src, src_path, false, false)) {
        moe_free(ids);
        return 1;
    }
    const int V = src.model.s.V;
    for (int i = 0; i < n; i++)
        if (ids[i] >= V) {
            MoeErr err = {{0}, {0}};
            moe_errorf(&err, "--ids: id %d at position %d is outside the vocabulary [0, %d)",
                       ids[i], i, V);
            moe_hintf(&err, "token ids must be below the model's vocab_size");
            moe_free(ids);
            model_source_free(&src);
            return cli_fail(&err);
        }
    Tape t;
    tape_init(&t, 0);
    const float *lg = cli_forward_logits(&src.model, &t, ids, n);
    int rc = 0;
    if (out_path) {
        MoeErr err = {{0}, {0}};
        FsAtomicFile af;
        if (fs_atomic_open(&af, out_path, &err)) rc = cli_fail(&err);
        else {
            /* float32 is little-endian on every platform we build for (x86-64, aarch64). */
            fwrite(lg, sizeof(float), (size_t)n * V, af.fp);
            if (fs_atomic_commit(&af, &err)) rc = cli_fail(&err);
        }
    } else {
        for (int i = 0; i < n; i++) {
            printf("%d:", i);
            for (int v = 0; v < V; v++) printf(" %.9g", (double)lg[(size_t)i * V + v]);
            printf("\n");
        }
    }
    tape_free(&t);
    model_source_free(&src);
    moe_free(ids);
    return rc;
}

/* ---------------------------------------------------------------- sample */

typedef struct ProbIdx {
    float p;
    int id;
} ProbIdx;

static int cmp_prob_desc(const void *a, const void *b) {
    const ProbIdx *x = a, *y = b;
    return (x->p < y->p) - (x->p > y->p);
}

/* Next token from logits (V): greedy at temperature 0, else softmax(logits / T) cut to the
 * top-p nucleus. pi (V) scratch. */
static int pick(const float *logits, int V, double temp, double top_p, MoeRng *rng, ProbIdx *pi) {
    int best = 0;
    for (int v = 1; v < V; v++)
        if (logits[v] > logits[best]) best = v;
    if (temp <= 0.0) return best;
    double s = 0.0;
    for (int v = 0; v < V; v++) {
        pi[v].p = (float)exp(((double)logits[v] - (double)logits[best]) / temp);
        pi[v].id = v;
        s += (double)pi[v].p;
    }
    qsort(pi, (size_t)V, sizeof *pi, cmp_prob_desc);
    int keep = V;
    double c = 0.0;
    for (int v = 0; v < V; v++) {
        c += (double)pi[v].p / s;
        if (c >= top_p) {
            keep = v + 1;
            break;
        }
    }
    double tot = 0.0;
    for (int v = 0; v < keep; v++) tot += (double)pi[v].p;
    double r = rng_uniform(rng) * tot, acc = 0.0;
    for (int v = 0; v < keep; v++) {
        acc += (double)pi[v].p;
        if (r < acc) return pi[v].id;
    }
    return pi[keep - 1].id;
}

int cmd_sample(int argc, char **argv) {
    const char *src_path = NULL, *prompt = NULL;
    long max_tokens = 200, seed = 1337;
    double temp = 0.8, top_p = 0.95;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) { fputs(SAMPLE_HELP, stdout); return 0; }
        if (!strcmp(a, "--prompt") || !strcmp(a, "--max-tokens") || !strcmp(a, "--temperature") ||
            !strcmp(a, "--top-p") || !strcmp(a, "--seed")) {
            if (i + 1 >= argc) return cli_model_usage("missing value for", a, SAMPLE_HELP);
            const char *v = argv[++i];
            bool ok = true;
            if (!strcmp(a, "--prompt")) prompt = v;
            else if (!strcmp(a, "--max-tokens")) ok = cli_parse_long(v, 1, 1L << 20, &max_tokens);
            else if (!strcmp(a, "--temperature")) ok = parse_double(v, 0.0, 100.0, &temp);
            else if (!strcmp(a, "--top-p")) ok = parse_double(v, 1e-6, 1.0, &top_p);
            else ok = cli_parse_long(v, 0, INT32_MAX, &seed);
            if (!ok) return cli_model_usage("bad value for option", a, SAMPLE_HELP);
        } else if (a[0] == '-' && a[1]) {
            return cli_model_usage("unknown option", a, SAMPLE_HELP);
        } else if (!src_path) {
            src_path = a;
        } else {
            return cli_model_usage("unexpected argument", a, SAMPLE_HELP);
        }
    }
    if (!src_path || !prompt)
        return cli_model_usage("sample needs MODEL and --prompt", NULL, SAMPLE_HELP);
    char model[4096];
    if (cli_resolve_model(src_path, model, sizeof model)) return 1;
    src_path = model;
    ModelSource src;
    if (cli_load_model(&src, src_path, true, true)) return 1;
    const int V = src.model.s.V, eot = tok_eot(&src.tok);
    size_t np = 0;
    int32_t *pids = tok_encode_alloc(&src.tok, (const uint8_t *)prompt, strlen(prompt), &np);
    if (np == 0) {  /* an empty prompt starts a fresh document */
        moe_free(pids);
        pids = moe_malloc(sizeof(int32_t));
        pids[0] = eot;
        np = 1;
    }
    if (src.model.doc_mask) {
        /* trained on packed documents (data.doc_mask): an end-of-text token opens a new
         * document that sees nothing before it, so the prompt starts at its last one */
        size_t cut = 0;
        for (size_t i = 0; i < np; i++)
            if (pids[i] == eot) cut = i;
        if (cut > 0) {
            memmove(pids, pids + cut, sizeof(int32_t) * (np - cut));
            np -= cut;
            fprintf(stderr, "moetrain: note: the model was trained with data.doc_mask: the "
                            "prompt's %zu tokens before its last %s are not seen (a new "
                            "document starts there)\n", cut, TOK_EOT_TEXT);
        }
    }
    InferCache cache;
    infer_init(&cache, &src.model, (int)np + (int)max_tokens);
    float *logits = moe_malloc(sizeof(float) * np * (size_t)V);
    ProbIdx *pi = moe_malloc(sizeof(ProbIdx) * (size_t)V);
    MoeRng rng;
    rng_seed(&rng, (uint64_t)seed);
    fwrite(prompt, 1, strlen(prompt), stdout);
    fflush(stdout);
    double t0 = moe_now();
    infer_step(&cache, &src.model, pids, (int)np, logits);
    double t_prefill = moe_now() - t0;
    const float *last = logits + (np - 1) * (size_t)V;
    long gen = 0;
    double t1 = moe_now();
    for (; gen < max_tokens; gen++) {
        int32_t next = pick(last, V, temp, top_p, &rng, pi);
        if (next == eot) break;
        size_t len;
        const uint8_t *b = tok_token_bytes(&src.tok, next, &len);
        fwrite(b, 1, len, stdout);
        fflush(stdout);
        if (gen + 1 == max_tokens) {
            gen++;
            break;
        }
        infer_step(&cache, &src.model, &next, 1, logits);
        last = logits;
    }
    double dt = moe_now() - t1;
    printf("\n");
    fprintf(stderr, "[prompt %zu tokens in %.3f s; generated %ld tokens in %.3f s = %.1f "
                    "tokens/s; temperature %g, top-p %g, seed %ld]\n", np, t_prefill, gen, dt,
            dt > 0 ? (double)gen / dt : 0.0, temp, top_p, seed);
    moe_free(pi);
    moe_free(logits);
    moe_free(pids);
    infer_free(&cache);
    model_source_free(&src);
    return 0;
}
