/* cmd_eval.c: `moetrain eval`: mean NLL and perplexity of a model on a text file or on a
 * run's own training or validation windows. See cmd_eval.h.
 *
 * Scoring runs model_forward on a non-recording tape (router noise off, dropless routing),
 * one window per forward pass, and sums each target's -log p in double.
 * --split opens the run's data again from the config and tokenizer stored in its checkpoint
 * (train/dataset.h, dataset_open_run), so the windows are the trainer's own.
 */
#include "train/cmd_eval.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "checkpoints/ckpt.h"
#include "core/fs.h"
#include "train/cli_model.h"
#include "train/dataset.h"

static const char *EVAL_HELP =
    "usage: moetrain eval MODEL --text FILE [--ctx N] [--stride S] [--score-second-half]\n"
    "       moetrain eval MODEL --split val|train [--windows N|all]\n"
    "\n"
    "Mean negative log-likelihood per token and perplexity of MODEL (a run directory, a\n"
    "checkpoint, an HF export directory or a GGUF file; a run directory means its newest\n"
    "valid checkpoint, named on stderr) on a text file (tokenized with the model's\n"
    "tokenizer, no <|endoftext|> added), or on the run's own tokens. A --text FILE that is\n"
    "one of the run's training texts (data.text of a checkpoint's config) gets a warning:\n"
    "that score is not a held-out score. On a terminal, progress is shown on stderr.\n"
    "\n"
    "--text, default protocol: sliding windows of N tokens starting every S tokens (the\n"
    "Hugging Face perplexity guide); each window scores the tokens after the previous\n"
    "window's end, with at least N-S tokens of context after the first window. With S < N\n"
    "every token but the first is scored once; with S = N a window's first token has no\n"
    "context inside it and is not scored.\n"
    "--score-second-half: llama.cpp's llama-perplexity protocol: non-overlapping chunks of N\n"
    "tokens (S must equal N; the remainder after the last whole chunk is dropped), scoring\n"
    "in each chunk the predictions of tokens N/2+1 .. N-1.\n"
    "\n"
    "--split: a checkpoint's own data, opened from the config stored in it as the trainer\n"
    "opened it (its data.text / data.shards / data.sft files must exist; run from the\n"
    "directory training ran in when they are relative). Windows of train.seq_len tokens,\n"
    "every target scored (with data.sft records only the completion tokens, the loss the\n"
    "run trained and validated on). val: the windows the trainer validates on\n"
    "(train.eval_batches x train.global_micro_batch of them, in order from the start of the\n"
    "validation tokens, wrapping around as the trainer does), so the figure is the run's\n"
    "val_loss (dropless routing; one window per forward). train: as many training windows,\n"
    "spread evenly over the training tokens.\n"
    "\n"
    "options:\n"
    "  --text FILE           text to evaluate\n"
    "  --ctx N               window length (default: the model's training seq_len)\n"
    "  --stride S            window step, 1 <= S <= N (default N)\n"
    "  --score-second-half   llama-perplexity's protocol (see above); needs N >= 3, so\n"
    "                        that each chunk scores at least one token\n"
    "  --split val|train     score the run's validation or training windows (see above)\n"
    "  --windows N|all       with --split: score N windows (at most all of the split), or\n"
    "                        every window of the split\n";


/* Progress of a long evaluation: one stderr line rewritten in place, only when stderr is a
 * terminal (a log file or a pipe gets no \r lines); at most every 0.2 s after the first
 * window; eval_progress_end clears it. */
typedef struct EvalProgress {
    bool on;
    double last;
} EvalProgress;

static void eval_progress(EvalProgress *p, size_t done, size_t total) {
    const double now = moe_now();
    if (!p->on || (now - p->last < 0.2 && done > 1)) return;
    p->last = now;
    fprintf(stderr, "\reval: %zu/%zu windows (%.0f%%)", done, total,
            100.0 * (double)done / (double)(total ? total : 1));
    fflush(stderr);
}

static void eval_progress_end(const EvalProgress *p) {
    if (!p->on) return;
    fprintf(stderr, "\r%60s\r", "");
    fflush(stderr);
}

static void eval_result(size_t windows, size_t scored, double t0, double nll) {
    /* every caller scores at least one target (it refuses settings that score none) */
    ASSERT(scored > 0, "eval scored no token (%zu windows)", windows);
    const double mean = nll / (double)scored;
    printf("windows %zu, scored %zu tokens, %.1f s\n", windows, scored, moe_now() - t0);
    printf("mean NLL %.6f nats/token, perplexity %.4f\n", mean, exp(mean));
}

/* `eval --text`: a checkpoint's own training text is not held out: say so. */
static void warn_training_text(const ModelSource *src, const char *model, const char *text) {
    if (src->kind != SRC_CKPT) return;
    Config c;
    MoeErr err = {{0}, {0}};
    memset(&c, 0, sizeof c);
    if (ckpt_read_config(model, &c, &err)) return;   /* it loaded: nothing more to say */
    const int i = dataset_text_index(&c, text);
    if (i >= 0)
        fprintf(stderr, "moetrain: warning: %s is the run's training text %s (data.text in the "
                "config of %s): the model trained on it, so this score is not a held-out "
                "score\nhint: `moetrain eval RUN_DIR --split val` scores the run's held-out "
                "validation tokens\n", text, c.data.text[i], model);
    config_free(&c);
}

static int eval_text(ModelSource *src, const char *model, const char *text, long ctx,
                     long stride, bool half) {
    MoeErr err = {{0}, {0}};
    uint8_t *buf = NULL;
    size_t nb = 0;
    if (fs_read_file(text, &buf, &nb, &err)) return cli_fail(&err);
    warn_training_text(src, model, text);
    size_t n = 0;
    int32_t *ids = tok_encode_alloc(&src->tok, buf, nb, &n);
    moe_free(buf);
    if (!ctx) ctx = src->context_len > 1 ? src->context_len : 256;
    if (!stride) stride = ctx;
    int rc = 0;
    if (stride > ctx) {
        rc = cli_model_usage("--stride must not exceed --ctx", NULL, EVAL_HELP);
        goto done;
    }
    if (half && stride != ctx) {
        rc = cli_model_usage("--score-second-half needs --stride equal to --ctx (non-overlapping chunks)",
                       NULL, EVAL_HELP);
        goto done;
    }
    if (half && ctx - 1 - ctx / 2 < 1) {   /* targets N/2+1 .. N-1 of a chunk of N */
        char msg[200];
        snprintf(msg, sizeof msg, "--score-second-half with --ctx %ld scores no token (each "
                 "chunk of N tokens scores the predictions of tokens N/2+1 .. N-1): use --ctx "
                 "3 or more, got", ctx);
        char v[32];
        snprintf(v, sizeof v, "%ld", ctx);
        rc = cli_model_usage(msg, v, EVAL_HELP);
        goto done;
    }
    if (n < 2 || (half && n < (size_t)ctx)) {
        moe_errorf(&err, "%s: %zu tokens are too few to evaluate%s", text, n,
                   half ? " (one whole --ctx chunk is needed)" : "");
        moe_hintf(&err, "use a longer text or a smaller --ctx");
        rc = cli_fail(&err);
        goto done;
    }
    printf("eval %s: %zu tokens, ctx %ld, stride %ld, protocol %s\n", text, n, ctx, stride,
           half ? "llama-perplexity (non-overlapping chunks, second half of each scored)"
                : "sliding window (HF perplexity guide)");
    fflush(stdout);
    const int V = src->model.s.V;
    Model *m = &src->model;
    Tape t;
    tape_init(&t, 0);
    double nll = 0.0;
    size_t scored = 0, windows = 0;
    const double t0 = moe_now();
    EvalProgress pr = {isatty(STDERR_FILENO) != 0, 0.0};
    if (half) {
        const size_t chunks = n / (size_t)ctx;
        const int first = (int)ctx / 2;
        for (size_t c = 0; c < chunks; c++) {
            const int32_t *w = ids + c * (size_t)ctx;
            const float *lg = cli_forward_logits(m, &t, w, (int)ctx);
            for (int j = first; j < ctx - 1; j++) {
                nll += cli_nll_row(lg + (size_t)j * V, V, w[j + 1]);
                scored++;
            }
            eval_progress(&pr, ++windows, chunks);
        }
    } else {
        /* 1 + ceil((n - ctx) / stride) windows: the last one ends at n */
        const size_t total = n <= (size_t)ctx ? 1
                           : 1 + (n - (size_t)ctx + (size_t)stride - 1) / (size_t)stride;
        size_t prev_end = 0;
        for (size_t begin = 0;; begin += (size_t)stride) {
            size_t end = begin + (size_t)ctx < n ? begin + (size_t)ctx : n;
            const float *lg = cli_forward_logits(m, &t, ids + begin, (int)(end - begin));
            /* Targets not yet scored: positions max(prev_end, begin+1) .. end-1. */
            size_t from = prev_end > begin + 1 ? prev_end : begin + 1;
            for (size_t j = from; j < end; j++) {
                nll += cli_nll_row(lg + (j - 1 - begin) * V, V, ids[j]);
                scored++;
            }
            eval_progress(&pr, ++windows, total);
            prev_end = end;
            if (end == n) break;
        }
    }
    eval_progress_end(&pr);
    tape_free(&t);
    eval_result(windows, scored, t0, nll);
done:
    moe_free(ids);
    return rc;
}

/* The run directory a checkpoint belongs to: the argument when it was one (arg differs from
 * the resolved model path), RUN for RUN/checkpoints/FILE, else the stored run.dir. */
static void run_dir_of(const char *arg, const char *model, const Config *c, char *out,
                       size_t cap) {
    if (strcmp(arg, model) != 0) {
        snprintf(out, cap, "%s", arg);
        return;
    }
    char p[4096];
    snprintf(p, sizeof p, "%s", model);
    char *slash = strrchr(p, '/');
    if (slash) {
        *slash = 0;
        char *dir = strrchr(p, '/');
        const char *base = dir ? dir + 1 : p;
        if (!strcmp(base, "checkpoints")) {
            if (dir) *dir = 0;
            snprintf(out, cap, "%s", dir ? p : ".");
            return;
        }
    }
    snprintf(out, cap, "%s", c->run.dir);
}

/* `eval --split`: n_win 0 = the trainer's count, -1 = every window of the split. */
static int eval_split(ModelSource *src, const char *arg, const char *model,
                      DataSplit split, long n_win) {
    MoeErr err = {{0}, {0}};
    if (src->kind != SRC_CKPT) {
        moe_errorf(&err, "%s: --split needs a checkpoint or a run directory: an export does "
                   "not record the data the model was trained on", arg);
        moe_hintf(&err, "give the run directory or checkpoint the export was made from");
        return cli_fail(&err);
    }
    Config c;
    DataSet d;
    uint8_t *tb = NULL;
    size_t tn = 0;
    memset(&c, 0, sizeof c);
    memset(&d, 0, sizeof d);
    int rc = 1;
    char run_dir[4096];
    if (ckpt_read_config(model, &c, &err) || ckpt_read_tokenizer(model, &tb, &tn, &err))
        goto fail;
    run_dir_of(arg, model, &c, run_dir, sizeof run_dir);
    moe_free(c.run.dir);
    c.run.dir = moe_strdup(run_dir);
    if (dataset_open_run(&c, model, tb, tn, stderr, &d, &err)) goto fail;
    const Loader *l = &d.loader;
    const bool val = split == DATASET_VAL;
    const size_t nw = val ? loader_val_windows(l) : loader_train_windows(l);
    const size_t trainer = (size_t)c.train.eval_batches * (size_t)c.train.micro_batch;
    size_t count = n_win < 0 ? nw : n_win > 0 ? (size_t)n_win : trainer;
    if (count > nw && (n_win != 0 || !val)) count = nw;   /* only the trainer's wraps */
    const size_t T = (size_t)c.train.seq_len;
    printf("eval %s: split %s, %zu windows of %zu tokens (", model, val ? "val" : "train",
           count, T);
    if (val && n_win == 0)
        printf("the trainer's validation windows: train.eval_batches %d x "
               "train.global_micro_batch %d, in order%s", c.train.eval_batches,
               c.train.micro_batch, count > nw ? ", wrapping around as the trainer does" : "");
    else if (val)
        printf("in order from the first");
    else
        printf("spread evenly");
    printf(") of its %zu %s windows: %zu tokens (%s)\n", nw, val ? "validation" : "training",
           val ? l->n_val_tokens : l->n_train_tokens,
           !val ? "the part trained on"
           : l->has_val_src ? "data.val_text / data.val_shards"
                            : "the last data.val_fraction of each source, held out from training");
    if (c.data.n_sft > 0)
        printf("fine-tuning records (data.sft): only completion tokens are scored, as in "
               "training\n");
    if (c.moe.n_experts > 0 && c.moe.capacity_factor > 0 &&
        c.moe.router != CONFIG_ROUTER_EXPERT_CHOICE)
        fprintf(stderr, "moetrain: note: the run routed with moe.capacity_factor %g (tokens "
                "over an expert's capacity dropped); eval routes dropless, so its figure can "
                "differ from the logged val_loss\n", c.moe.capacity_factor);
    fflush(stdout);
    const int V = src->model.s.V;
    Model *m = &src->model;
    int32_t *in = moe_malloc(sizeof(int32_t) * T), *tg = moe_malloc(sizeof(int32_t) * T);
    Tape t;
    tape_init(&t, 0);
    double nll = 0.0;
    size_t scored = 0;
    const double t0 = moe_now();
    EvalProgress pr = {isatty(STDERR_FILENO) != 0, 0.0};
    for (size_t i = 0; i < count; i++) {
        /* val: window i of the trainer's batches (b B + row) mod nw; train: spread evenly */
        const size_t w = val ? i % nw : (size_t)((double)i * (double)nw / (double)count);
        dataset_window(&d, split, w, in, tg);
        const float *lg = cli_forward_logits(m, &t, in, (int)T);
        for (size_t j = 0; j < T; j++) {
            if (tg[j] == LOSS_IGNORE) continue;   /* data.sft: a prompt token */
            nll += cli_nll_row(lg + j * (size_t)V, V, tg[j]);
            scored++;
        }
        eval_progress(&pr, i + 1, count);
    }
    eval_progress_end(&pr);
    tape_free(&t);
    moe_free(in);
    moe_free(tg);
    if (scored == 0) {
        moe_errorf(&err, "%s: the %zu %s windows hold no completion token to score (data.sft "
                   "scores completions only)", model, count, val ? "validation" : "training");
        moe_hintf(&err, "score more windows (--windows all)");
        goto fail;
    }
    eval_result(count, scored, t0, nll);
    rc = 0;
fail:
    if (rc) cli_fail(&err);
    dataset_free(&d);
    moe_free(tb);
    config_free(&c);
    return rc;
}

int cmd_eval(int argc, char **argv) {
    const char *src_path = NULL, *text = NULL, *split_s = NULL;
    long ctx = 0, stride = 0, n_win = 0;
    bool half = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) { fputs(EVAL_HELP, stdout); return 0; }
        if (!strcmp(a, "--score-second-half")) {
            half = true;
        } else if (!strcmp(a, "--text") || !strcmp(a, "--ctx") || !strcmp(a, "--stride") ||
                   !strcmp(a, "--split") || !strcmp(a, "--windows")) {
            if (i + 1 >= argc) return cli_model_usage("missing value for", a, EVAL_HELP);
            const char *v = argv[++i];
            if (!strcmp(a, "--text")) text = v;
            else if (!strcmp(a, "--split")) split_s = v;
            else if (!strcmp(a, "--windows")) {
                if (!strcmp(v, "all")) n_win = -1;
                else if (!cli_parse_long(v, 1, LONG_MAX, &n_win))
                    return cli_model_usage("--windows needs an integer >= 1 or all, got", v, EVAL_HELP);
            } else if (!cli_parse_long(v, a[2] == 'c' ? 2 : 1, 1L << 20,
                                   a[2] == 'c' ? &ctx : &stride))
                return cli_model_usage(a[2] == 'c' ? "--ctx needs an integer >= 2, got"
                                         : "--stride needs an integer >= 1, got", v, EVAL_HELP);
        } else if (a[0] == '-' && a[1]) {
            return cli_model_usage("unknown option", a, EVAL_HELP);
        } else if (!src_path) {
            src_path = a;
        } else {
            return cli_model_usage("unexpected argument", a, EVAL_HELP);
        }
    }
    if (!src_path || !text == !split_s)
        return cli_model_usage("eval needs MODEL and one of --text FILE or --split val|train", NULL,
                         EVAL_HELP);
    if (split_s && strcmp(split_s, "val") && strcmp(split_s, "train"))
        return cli_model_usage("--split must be val or train, got", split_s, EVAL_HELP);
    if (split_s && (ctx || stride || half))
        return cli_model_usage("--split scores the run's windows of train.seq_len tokens: --ctx, "
                     "--stride and --score-second-half apply to --text only", NULL, EVAL_HELP);
    if (!split_s && n_win) return cli_model_usage("--windows applies to --split only", NULL, EVAL_HELP);
    char model[4096];
    if (cli_resolve_model(src_path, model, sizeof model)) return 1;
    ModelSource src;
    if (cli_load_model(&src, model, true, false)) return 1;
    int rc = split_s ? eval_split(&src, src_path, model,
                                  !strcmp(split_s, "val") ? DATASET_VAL : DATASET_TRAIN, n_win)
                     : eval_text(&src, model, text, ctx, stride, half);
    model_source_free(&src);
    return rc;
}
