/* main.c: the `moetrain` program: argument parsing and subcommand dispatch.
 *
 *   moetrain CONFIG [--set section.key=value ...]       train
 *   moetrain tokenizer train --vocab N --out FILE TEXT...
 *   moetrain data encode --tokenizer FILE --out SHARD TEXT...
 *   moetrain --help | SUBCOMMAND --help | --version
 *
 * User errors print "moetrain: error: ..." and "hint: ..." and exit 1; --help exits 0;
 * a bad command line prints one line (train/cli.h) and exits 2, and so does a training
 * refused before it changed anything (TRAIN_REFUSED: a run.dir that belongs to another
 * run), a refused output
 * (train/outguard.h: an output that exists without --force, or that is one of the
 * command's inputs) and a config whose planned memory does not fit the machine
 * (train/memplan.h): their fix is on the command line too.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/blas.h"
#include "core/fs.h"
#include "core/pool.h"
#include "data/bpe_corpus.h"
#include "data/encode.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "parallel/comm.h"
#include "train/buildinfo.h"
#include "train/cli.h"
#include "train/cmd_ckpt.h"
#include "train/cmd_config.h"
#include "train/cmd_infer.h"
#include "train/cmd_plan.h"
#include "train/cmd_report.h"
#include "train/cmd_tokenizer.h"
#include "train/cmd_upcycle.h"
#include "configs/config.h"
#include "train/memplan.h"
#include "train/outguard.h"
#include "train/train.h"

static const char *MAIN_HELP =
    "usage: moetrain CONFIG.yaml [--set section.key=value ...] [--resume PATH|auto]\n"
    "                [--stop-at STEP]\n"
    "       moetrain ckpt info CKPT|RUN_DIR\n"
    "       moetrain config keys\n"
    "       moetrain plan CONFIG.yaml [--ranks R] [--nodes N] [--set k=v ...] [...]\n"
    "       moetrain report RUN_DIR... [--out FILE.html] [--force] [--watch]\n"
    "       moetrain export CKPT OUT --format hf|gguf [--dtype T] [--max-shard-size BYTES]\n"
    "                       [--force]\n"
    "       moetrain sample MODEL --prompt TEXT [--max-tokens N --temperature T --top-p P\n"
    "                       --seed S]\n"
    "       moetrain eval MODEL --text FILE [--ctx N] [--stride S] [--score-second-half]\n"
    "       moetrain eval MODEL --split val|train [--windows N|all]\n"
    "       moetrain logits MODEL --ids 1,2,3 [--out FILE [--force]]\n"
    "       moetrain upcycle DENSE_CKPT OUT_CKPT --experts E --top-k K [--granularity G]\n"
    "                [--router-init-std S] [--expert-noise X] [--seed N] [--force]\n"
    "       moetrain tokenizer train --vocab N --out FILE [--force] TEXT_FILE...\n"
    "       moetrain tokenizer info FILE\n"
    "       moetrain tokenizer encode --tokenizer FILE [TEXT_FILE]\n"
    "       moetrain data encode --tokenizer FILE --out SHARD [--force] TEXT_FILE...\n"
    "       moetrain --version\n"
    "\n"
    "Trains the Mixture-of-Experts model described by CONFIG.yaml (see README.md for every\n"
    "key). Missing tokenizer files are trained on data.text and text files are encoded\n"
    "into a cached token shard under run.dir/tokens before training starts.\n"
    "\n"
    "options:\n"
    "  --set section.key=value  override one config key (repeatable), validated like the\n"
    "                           file; lists as --set data.text=[a.txt,b.txt]\n"
    "  --resume PATH|auto       continue from a checkpoint (auto: the newest checkpoint of\n"
    "                           the latest run in run.dir/checkpoints, or a fresh start if\n"
    "                           there is none); a config that changes the model shape is\n"
    "                           refused. Without it, a run.dir holding another run's\n"
    "                           checkpoints or metrics is refused (exit 2)\n"
    "  --stop-at STEP           save a checkpoint and exit 0 after STEP (the schedule still\n"
    "                           spans train.steps; continue later with --resume auto)\n"
    "  -h, --help               this help; `moetrain SUBCOMMAND --help` for subcommands\n"
    "  -V, --version            version, git commit, compiler, libraries and the CPU's ISA\n"
    "\n"
    "subcommands:\n"
    "  tokenizer train          train a byte-level BPE tokenizer (GPT-2 scheme)\n"
    "  tokenizer info / encode  name a tokenizer (.bpe or HF tokenizer.json), print ids\n"
    "  data encode              encode text files into a binary token shard\n"
    "  ckpt info                show and verify a checkpoint\n"
    "  plan                     memory, bytes sent and step time of a config on a cluster\n"
    "  report                   HTML report (inline SVG plots) of one or more run dirs\n"
    "  export                   Hugging Face (safetensors) or GGUF export of a checkpoint\n"
    "  sample / eval / logits   inference from a run dir (its newest valid checkpoint), a\n"
    "                           checkpoint, an HF export dir or a GGUF file\n"
    "  upcycle                  MoE checkpoint from a dense one (sparse upcycling)\n"
    "\n"
    "Under mpirun the global batch is split over the ranks and the experts over\n"
    "parallel.expert_parallel ranks; SIGINT/SIGTERM save a checkpoint and exit 0.\n"
    "Training prints its planned memory per rank first and refuses (exit 2) a config that\n"
    "does not fit the machine's memory.\n"
    "\n"
    "Outputs: a command never writes over one of its own inputs, and replaces an existing\n"
    "output only with --force (exit 2 otherwise).\n";

static const char *TOK_HELP =
    "usage: moetrain tokenizer train --vocab N --out FILE [--max-bytes N] [--records FMT]\n"
    "                                [--force] TEXT_FILE...\n"
    "       moetrain tokenizer info FILE\n"
    "       moetrain tokenizer encode --tokenizer FILE [TEXT_FILE]\n"
    "\n"
    "Trains a byte-level BPE tokenizer (GPT-2 byte-to-unicode alphabet and pre-tokenizer,\n"
    "ranked merges) with N tokens: 256 bytes, N-257 merges and <|endoftext|>. The files are\n"
    "read in blocks and their pre-tokens counted on all cores (OPENBLAS_NUM_THREADS\n"
    "threads); on a terminal a progress line shows MB/s and the time left.\n"
    "\n"
    "options:\n"
    "  --vocab N       vocabulary size, 258..1073741824 (model.vocab_size must match)\n"
    "  --out FILE      where to write the tokenizer (written atomically); never one of the\n"
    "                  text files\n"
    "  --max-bytes N   count only about N bytes, sampled evenly over all the files (suffix\n"
    "                  k, M or G for 10^3, 10^6, 10^9); default: every byte\n"
    "  --records FMT   auto (default), file, paragraph or jsonl: how files split into\n"
    "                  documents (see docs/data.md)\n"
    "  --force         replace an existing FILE\n";

static const char *ENC_HELP =
    "usage: moetrain data encode --tokenizer FILE --out SHARD [--records FMT] [--force]\n"
    "                            TEXT_FILE...\n"
    "\n"
    "Encodes the text files into one binary token shard that data.shards can list: an\n"
    "<|endoftext|> token after each document (a whole file, or each record with --records\n"
    "paragraph / jsonl). Ids are 16-bit when the vocabulary has at most 65536 tokens, 32-bit\n"
    "otherwise. The files are read in blocks (memory does not grow with their size) and\n"
    "encoded on all cores (OPENBLAS_NUM_THREADS threads; the shard is the same for any\n"
    "count); on a terminal a progress line shows MB/s and the time left.\n"
    "\n"
    "options:\n"
    "  --tokenizer FILE   tokenizer made by `moetrain tokenizer train`, or a Hugging Face\n"
    "                     tokenizer.json holding a byte-level BPE (docs/tokenizers.md)\n"
    "  --out SHARD        output shard (written atomically); never the tokenizer or one of\n"
    "                     the text files\n"
    "  --records FMT      auto (default: jsonl for .jsonl files, else file), file,\n"
    "                     paragraph or jsonl (a \"text\" field per line)\n"
    "  --force            replace an existing SHARD\n";

static Comm g_comm;

/* Print a user error (rank 0 only: every rank reaches the same verdict) and return 1. */
static int fail(const MoeErr *err) {
    if (g_comm.rank != 0) return 1;
    fprintf(stderr, "moetrain: error: %s\n", err->msg);
    if (err->hint[0]) fprintf(stderr, "hint: %s\n", err->hint);
    return 1;
}

static bool is_help(const char *a) { return !strcmp(a, "-h") || !strcmp(a, "--help"); }

/* --records NAME into *f; false when NAME is not a format. */
static bool parse_records(const char *s, RecFormat *f) {
    for (int i = 0; i < REC_N_FORMATS; i++)
        if (!strcmp(s, rec_format_names[i])) {
            *f = (RecFormat)i;
            return true;
        }
    return false;
}

/* A byte count with an optional k/M/G (10^3, 10^6, 10^9) suffix, > 0; false otherwise. */
static bool parse_bytes(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || errno || *s == '-') return false;
    uint64_t mul = 1;
    if (*end == 'k') mul = 1000ULL, end++;
    else if (*end == 'M') mul = 1000000ULL, end++;
    else if (*end == 'G') mul = 1000000000ULL, end++;
    if (*end || v == 0 || v > UINT64_MAX / mul) return false;
    *out = (uint64_t)v * mul;
    return true;
}

/* What is wrong with an option a command did not take: its own name, or its missing value. */
static const char *option_problem(const char *a) {
    static const char *const with_value[] = {"--vocab", "--out", "--tokenizer", "--max-bytes",
                                             "--records"};
    for (size_t k = 0; k < sizeof with_value / sizeof with_value[0]; k++)
        if (!strcmp(a, with_value[k])) return "missing value after";
    return "unknown option";
}

static int cmd_tokenizer(int argc, char **argv) {
    if (argc < 1) return cli_usage("tokenizer", "tokenizer needs a command (train)");
    if (is_help(argv[0])) {
        fputs(TOK_HELP, stdout);
        return 0;
    }
    if (!strcmp(argv[0], "info")) return cmd_tokenizer_info(argc, argv);
    if (!strcmp(argv[0], "encode")) return cmd_tokenizer_encode(argc, argv);
    if (strcmp(argv[0], "train") != 0)
        return cli_usage("tokenizer", "unknown tokenizer command '%s' (expected train, info "
                         "or encode)", argv[0]);
    long vocab = 0;
    const char *out = NULL;
    bool force = false;
    uint64_t max_bytes = 0;
    RecFormat fmt = REC_AUTO;
    const char **files = calloc((size_t)argc, sizeof(char *));
    int nf = 0;
    for (int i = 1; i < argc; i++) {
        if (is_help(argv[i])) { fputs(TOK_HELP, stdout); free(files); return 0; }
        if (!strcmp(argv[i], "--force")) {
            force = true;
        } else if (!strcmp(argv[i], "--max-bytes") && i + 1 < argc) {
            if (!parse_bytes(argv[++i], &max_bytes)) {
                free(files);
                return cli_usage("tokenizer train", "--max-bytes must be a positive byte "
                                 "count such as 100000000 or 100M, got '%s'", argv[i]);
            }
        } else if (!strcmp(argv[i], "--records") && i + 1 < argc) {
            if (!parse_records(argv[++i], &fmt)) {
                free(files);
                return cli_usage("tokenizer train", "--records must be auto, file, paragraph "
                                 "or jsonl, got '%s'", argv[i]);
            }
        } else if (!strcmp(argv[i], "--vocab") && i + 1 < argc) {
            char *end;
            vocab = strtol(argv[++i], &end, 10);
            if (*end || vocab < 258 || vocab > TOK_MAX_VOCAB) {
                free(files);
                return cli_usage("tokenizer train", "--vocab must be an integer in [258, "
                                 "%d], got '%s'", TOK_MAX_VOCAB, argv[i]);
            }
        } else if (!strcmp(argv[i], "--out") && i + 1 < argc) {
            out = argv[++i];
        } else if (argv[i][0] == '-') {
            free(files);
            return cli_usage("tokenizer train", "%s '%s'", option_problem(argv[i]), argv[i]);
        } else {
            files[nf++] = argv[i];
        }
    }
    if (!vocab || !out || nf == 0) {
        free(files);
        return cli_usage("tokenizer train", "--vocab, --out and at least one text file are "
                         "required");
    }
    int guard = outguard_cli(out, OUTGUARD_FILE, "--out", files, nf, force);
    if (guard) {
        free(files);
        return guard;
    }
    Tokenizer tok;
    MoeErr err;
    memset(&tok, 0, sizeof tok);
    double t0 = moe_now();
    Progress pr;
    int rc = tok_train_files(&tok, files, nf, (int)vocab, fmt, max_bytes, &pr, &err);
    if (!rc) rc = tok_save(&tok, out, &err);
    char budget[64] = "";
    if (max_bytes) snprintf(budget, sizeof budget, " (counted a sample of at most %llu bytes)",
                            (unsigned long long)max_bytes);
    if (!rc) printf("trained %ld-token tokenizer on %d file(s)%s in %.1f s -> %s\n", vocab, nf,
                    budget, moe_now() - t0, out);
    tok_free(&tok);
    free(files);
    return rc ? fail(&err) : 0;
}

static int cmd_data(int argc, char **argv) {
    if (argc < 1) return cli_usage("data", "data needs a command (encode)");
    if (is_help(argv[0])) {
        fputs(ENC_HELP, stdout);
        return 0;
    }
    if (strcmp(argv[0], "encode") != 0)
        return cli_usage("data", "unknown data command '%s' (expected encode)", argv[0]);
    const char *tokp = NULL, *out = NULL;
    bool force = false;
    RecFormat fmt = REC_AUTO;
    /* files[0] is kept for the tokenizer: the output guard checks it with the texts */
    const char **files = calloc((size_t)argc + 1, sizeof(char *));
    int nf = 0;
    for (int i = 1; i < argc; i++) {
        if (is_help(argv[i])) { fputs(ENC_HELP, stdout); free(files); return 0; }
        if (!strcmp(argv[i], "--force")) force = true;
        else if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) tokp = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--records") && i + 1 < argc) {
            if (!parse_records(argv[++i], &fmt)) {
                free(files);
                return cli_usage("data encode", "--records must be auto, file, paragraph or "
                                 "jsonl, got '%s'", argv[i]);
            }
        } else if (argv[i][0] == '-') {
            free(files);
            return cli_usage("data encode", "%s '%s'", option_problem(argv[i]), argv[i]);
        } else files[1 + nf++] = argv[i];
    }
    if (!tokp || !out || nf == 0) {
        free(files);
        return cli_usage("data encode", "--tokenizer, --out and at least one text file are "
                         "required");
    }
    files[0] = tokp;
    int guard = outguard_cli(out, OUTGUARD_FILE, "--out", files, nf + 1, force);
    if (guard) {
        free(files);
        return guard;
    }
    Tokenizer tok;
    MoeErr err;
    memset(&tok, 0, sizeof tok);
    int rc = tok_load(&tok, tokp, &err);
    Progress pr;
    EncodeStats st;
    if (!rc) rc = encode_files(&tok, files + 1, nf, fmt, 0, out, &pr, &st, &err);
    if (!rc) printf("encoded %d file(s) -> %s: %llu tokens (%d-bit ids), %llu document(s), "
                    "%.1f MB in %.2f s = %.1f MB/s on %d thread(s)\n", nf, out,
                    (unsigned long long)st.tokens, 8 * shard_width_for((uint32_t)
                    tok_vocab_size(&tok)), (unsigned long long)st.docs, (double)st.bytes / 1e6,
                    st.seconds, st.seconds > 0 ? (double)st.bytes / 1e6 / st.seconds : 0.0,
                    pool_workers());
    tok_free(&tok);
    free(files);
    return rc ? fail(&err) : 0;
}

/* argc, argv: the words after the program's name; the whole command line is g_argc, g_argv
 * (recorded in run.dir/runs.jsonl). */
static int g_argc;
static char **g_argv;

static int cmd_train(int argc, char **argv) {
    const char *path = NULL;
    TrainOptions opt = {.resume = NULL, .stop_at = 0, .argc = g_argc, .argv = g_argv};
    for (int i = 0; i < argc; i++) {
        if (is_help(argv[i])) { fputs(MAIN_HELP, stdout); return 0; }
        if (!strcmp(argv[i], "--resume")) {
            if (i + 1 >= argc) return cli_usage(NULL, "--resume needs PATH or auto");
            opt.resume = argv[++i];
        } else if (!strcmp(argv[i], "--stop-at")) {
            char *end = NULL;
            if (i + 1 < argc) opt.stop_at = strtol(argv[++i], &end, 10);
            if (!end || *end || opt.stop_at < 1)
                return cli_usage(NULL, "--stop-at needs a step number >= 1");
        } else if (!strcmp(argv[i], "--set")) {
            if (i + 1 >= argc) return cli_usage(NULL, "--set needs section.key=value");
            i++;
        } else if (argv[i][0] == '-') {
            return cli_usage(NULL, "unknown option '%s'", argv[i]);
        } else if (path) {
            return cli_usage(NULL, "only one config file may be given ('%s', then '%s')", path,
                             argv[i]);
        } else {
            path = argv[i];
        }
    }
    if (!path) return cli_usage(NULL, "no config file given");
    Config c;
    MoeErr err;
    memset(&c, 0, sizeof c);
    if (config_load(&c, path, &err)) return fail(&err);
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--set") && config_set(&c, argv[++i], &err)) {
            config_free(&c);
            return fail(&err);
        }
    }
    if (config_validate(&c, &err)) {
        config_free(&c);
        return fail(&err);
    }
    if (comm_setup(&g_comm, c.parallel.expert_parallel, c.moe.n_experts, c.train.micro_batch,
                   &err)) {
        config_free(&c);
        return fail(&err);
    }
    /* the planned memory, printed; a run that cannot fit is refused before allocating */
    if (memplan_check(&c, &g_comm, &err)) {
        config_free(&c);
        fail(&err);
        return 2;
    }
    int rc = train_run(&c, &g_comm, &opt, &err);
    config_free(&c);
    if (rc == TRAIN_REFUSED) {
        fail(&err);
        return 2;
    }
    return rc ? fail(&err) : 0;
}

int main(int argc, char **argv) {
    blas_init(argv);
    /* A file-size limit (ulimit -f) or quota then surfaces as a failed write (EFBIG) that
     * the atomic writers report, instead of killing the process mid-file. */
    signal(SIGXFSZ, SIG_IGN);
    if (argc < 2) return cli_usage(NULL, "no config file or command given");
    if (is_help(argv[1])) {
        fputs(MAIN_HELP, stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
        if (argc > 2) return cli_usage(NULL, "--version takes no arguments");
        BuildInfo bi;
        buildinfo_get(&bi);
        buildinfo_print(&bi, stdout);
        return fflush(stdout) ? 1 : 0;
    }
    if (!strcmp(argv[1], "tokenizer")) return cmd_tokenizer(argc - 2, argv + 2);
    if (!strcmp(argv[1], "data")) return cmd_data(argc - 2, argv + 2);
    if (!strcmp(argv[1], "ckpt")) return cmd_ckpt(argc - 2, argv + 2);
    if (!strcmp(argv[1], "config")) return cmd_config(argc - 2, argv + 2);
    if (!strcmp(argv[1], "plan")) return cmd_plan(argc - 2, argv + 2);
    if (!strcmp(argv[1], "report")) return cmd_report(argc - 2, argv + 2);
    if (!strcmp(argv[1], "export")) return cmd_export(argc - 2, argv + 2);
    if (!strcmp(argv[1], "sample")) return cmd_sample(argc - 2, argv + 2);
    if (!strcmp(argv[1], "eval")) return cmd_eval(argc - 2, argv + 2);
    if (!strcmp(argv[1], "logits")) return cmd_logits(argc - 2, argv + 2);
    if (!strcmp(argv[1], "upcycle")) return cmd_upcycle(argc - 2, argv + 2);
    /* a word that is no file, no path and no option: a mistyped command, not a config */
    if (argv[1][0] != '-' && !strchr(argv[1], '/') && !strchr(argv[1], '.') &&
        !fs_exists(argv[1]))
        return cli_usage(NULL, "unknown command '%s'", argv[1]);
    g_argc = argc;
    g_argv = argv;   /* before MPI_Init, which may change argc and argv */
    comm_init(&g_comm, &argc, &argv);
    int rc = cmd_train(argc - 1, argv + 1);
    comm_finalize(&g_comm);
    return rc;
}
