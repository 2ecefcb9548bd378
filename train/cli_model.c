/* cli_model.c: see cli_model.h. */
#include "train/cli_model.h"

#include "autograd/gemm.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoints/rundir.h"
#include "train/cli.h"

bool cli_is_help(const char *a) { return !strcmp(a, "-h") || !strcmp(a, "--help"); }

int cli_fail(const MoeErr *err) {
    fprintf(stderr, "moetrain: error: %s\n", err->msg);
    if (err->hint[0]) fprintf(stderr, "hint: %s\n", err->hint);
    return 1;
}

int cli_model_usage(const char *msg, const char *arg, const char *help) {
    /* the command is the word after "usage: moetrain " on the help's first line */
    char cmd[32] = "";
    const char *p = strstr(help, "moetrain ");
    if (p) sscanf(p + 9, "%31[a-z]", cmd);
    const char *c = cmd[0] ? cmd : NULL;
    return arg ? cli_usage(c, "%s '%s'", msg, arg) : cli_usage(c, "%s", msg);
}

bool cli_parse_long(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

int cli_resolve_model(const char *arg, char *out, size_t cap) {
    MoeErr err = {{0}, {0}};
    return rundir_resolve_model(arg, out, cap, stderr, &err) ? cli_fail(&err) : 0;
}

/* sample decodes token by token (tokenwise = true), which expert-choice routing cannot do:
 * each expert picks among all tokens of a forward pass, future ones included (README,
 * Architecture options). eval and logits run whole windows through model_forward, so an
 * expert-choice model routes each window as one batch: they say so on stderr. */
int cli_load_model(ModelSource *src, const char *path, bool need_tok, bool tokenwise) {
    MoeErr err = {{0}, {0}};
    if (model_source_load(src, path, &err)) {
        model_source_free(src);
        return cli_fail(&err);
    }
    /* the products as the run made them (a bf16 run is scored in bf16, as its logged
     * validation loss was); where that path is missing here, fp32 on the fastest library,
     * said on stderr */
    if (gemm_select((GemmBackend)src->gemm, (GemmPrecision)src->precision, &err)) {
        fprintf(stderr, "moetrain: note: %s was trained with compute.gemm = %s, "
                "compute.precision = %s, which this machine cannot run; using fp32\n", path,
                gemm_backend_name((GemmBackend)src->gemm),
                gemm_precision_name((GemmPrecision)src->precision));
        if (gemm_select(GEMM_AUTO, GEMM_FP32, &err)) return cli_fail(&err);
    }
    if (need_tok && !src->has_tok) {
        moe_errorf(&err, "%s: no tokenizer found (tokenizer.json / tokenizer.ggml.*)", path);
        moe_hintf(&err, "use the checkpoint, or an export made by `moetrain export`");
        model_source_free(src);
        return cli_fail(&err);
    }
    if (src->model.s.E > 0 && src->model.s.router == MOE_ROUTER_EXPERT_CHOICE) {
        if (tokenwise) {
            moe_errorf(&err, "%s: moe.router is expert_choice: experts choose among all tokens "
                       "of a batch, future ones included, so the model cannot generate token "
                       "by token", path);
            moe_hintf(&err, "expert-choice routing is for training studies; score it with "
                            "`moetrain eval` (each window routed as one batch)");
            model_source_free(src);
            return cli_fail(&err);
        }
        fprintf(stderr, "moetrain: note: %s routes with expert choice: each window is routed "
                        "as one batch, future tokens included (not causal; for studies)\n",
                path);
    }
    return 0;
}

const float *cli_forward_logits(Model *m, Tape *t, const int32_t *ids, int T) {
    tape_reset(t, false);
    StepCtx ctx = {.train = false, .loss_scale = 1.0f};
    ModelOut out;
    model_forward(m, t, ids, NULL, 1, T, &ctx, &out);
    return out.logits->data;
}

double cli_nll_row(const float *row, int V, int target) {
    float mx = row[0];
    for (int v = 1; v < V; v++) mx = fmaxf(mx, row[v]);
    double s = 0.0;
    for (int v = 0; v < V; v++) s += exp((double)row[v] - (double)mx);
    return log(s) + (double)mx - (double)row[target];
}
