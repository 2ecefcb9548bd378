/* cmd_ckpt.c: `moetrain ckpt info PATH`: what a checkpoint holds, with every dataset read
 * back so that its Fletcher32 checksum is verified. See cmd_ckpt.h. */
#include "train/cmd_ckpt.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "checkpoints/ckpt.h"
#include "checkpoints/rundir.h"
#include "configs/config.h"
#include "train/cli.h"

static const char *CKPT_HELP =
    "usage: moetrain ckpt info PATH\n"
    "\n"
    "PATH is a checkpoint file or a run directory (its newest valid checkpoint, the one\n"
    "--resume auto continues, named on stderr). Prints the checkpoint's format version,\n"
    "step, tokens seen, loader position, model shape, parameter counts (dense and experts)\n"
    "and whether it holds optimizer state, after reading every dataset so that each\n"
    "checksum is verified; for a LoRA adapter checkpoint also the adapter settings and the\n"
    "base checkpoint it refers to. Exits 0 when the file is complete and intact, 1 (naming\n"
    "the file and the dataset) otherwise.\n"
    "\n"
    "options:\n"
    "  -h, --help   this help\n";

static int is_help(const char *a) { return !strcmp(a, "-h") || !strcmp(a, "--help"); }

static int ckpt_fail(const MoeErr *err) {
    fprintf(stderr, "moetrain: error: %s\n", err->msg);
    if (err->hint[0]) fprintf(stderr, "hint: %s\n", err->hint);
    return 1;
}

static int usage(const char *msg) { return cli_usage("ckpt", "%s", msg); }

static int info(const char *arg) {
    MoeErr err = {{0}, {0}};
    char path[4096];
    if (rundir_resolve_model(arg, path, sizeof path, stderr, &err)) return ckpt_fail(&err);
    CkptInfo in;
    if (ckpt_inspect(path, &in, &err)) {
        ckpt_info_free(&in);
        return ckpt_fail(&err);
    }
    Config c;
    if (config_load_text(&c, in.config_text, in.config_len, path, &err)) {
        ckpt_info_free(&in);
        return ckpt_fail(&err);
    }
    const CkptMeta *m = &in.meta;
    printf("checkpoint      %s\n", path);
    printf("format          moetrain-checkpoint version %d\n", in.format_version);
    printf("step            %" PRId64 "\n", m->step);
    printf("tokens seen     %" PRId64 "\n", m->tokens_seen);
    printf("seed            %" PRIu64 "\n", m->seed);
    printf("loader          epoch %" PRIu64 ", cursor %" PRIu64 " of %" PRIu64 " windows\n",
           m->loader_epoch, m->loader_cursor, m->loader_windows);
    printf("tokenizer       %zu bytes, hash %016" PRIx64 "\n", in.tokenizer_bytes, m->tok_hash);
    printf("model           vocab_size %d, dim %d, n_layers %d, n_heads %d, n_kv_heads %d, "
           "head_dim %d\n", c.model.vocab_size, c.model.dim, c.model.n_layers, c.model.n_heads,
           c.model.n_kv_heads, c.model.head_dim);
    if (c.model.sliding_window > 0)
        printf("attention       sliding window %d\n", c.model.sliding_window);
    if (c.moe.n_experts > 0) {
        printf("moe             n_experts %d, top_k %d, hidden %d", c.moe.n_experts,
               c.moe.top_k, c.moe.hidden);
        if (c.moe.router == CONFIG_ROUTER_TOPP)
            printf(", router topp (top_p %g, max_experts %d)", c.moe.top_p, c.moe.max_experts);
        else if (c.moe.router == CONFIG_ROUTER_EXPERT_CHOICE)
            printf(", router expert_choice");
        if (c.moe.n_shared_experts > 0)
            printf("; %d shared expert(s) of hidden %d", c.moe.n_shared_experts,
                   c.moe.shared_hidden > 0 ? c.moe.shared_hidden : c.moe.hidden);
        printf("\n");
    } else
        printf("moe             dense FFN, hidden %d\n", c.moe.hidden);
    if (m->adapter) {
        printf("kind            LoRA adapter checkpoint: rank %d, alpha %g, dropout %g, "
               "targets", c.finetune.lora_rank, c.finetune.lora_alpha, c.finetune.lora_dropout);
        for (size_t i = 0; i < c.finetune.n_lora_targets; i++)
            printf(" %s", c.finetune.lora_targets[i]);
        printf("%s%s%s\n", c.finetune.lora_expert_shared ? " (expert adapters shared)" : "",
               c.finetune.train_router ? ", router trained" : "",
               c.finetune.train_experts ? ", experts trained" : "");
        printf("base            %s (checksum %016" PRIx64 "; not read here)\n", m->base_path,
               m->base_checksum);
        printf("parameters      %zu stored (the trainable ones): %zu dense, %zu in experts\n",
               in.n_params, in.n_params_dense, in.n_params_expert);
    } else {
        printf("parameters      %zu total: %zu dense, %zu in experts\n", in.n_params,
               in.n_params_dense, in.n_params_expert);
    }
    printf("optimizer state %s\n", in.has_optimizer ? "yes (AdamW m and v)" : "no");
    if (m->has_router_bias)
        printf("router bias     yes (/state/router_bias, moe.bias_update_rate %g)\n",
               c.moe.bias_update_rate);
    printf("datasets        %zu, all checksums verified\n", in.n_datasets);
    config_free(&c);
    ckpt_info_free(&in);
    return 0;
}

int cmd_ckpt(int argc, char **argv) {
    if (argc < 1) return usage("ckpt needs a subcommand");
    if (is_help(argv[0])) {
        fputs(CKPT_HELP, stdout);
        return 0;
    }
    if (strcmp(argv[0], "info") != 0) return usage("unknown ckpt subcommand (expected info)");
    if (argc >= 2 && is_help(argv[1])) {
        fputs(CKPT_HELP, stdout);
        return 0;
    }
    if (argc != 2) return usage("ckpt info takes exactly one PATH");
    return info(argv[1]);
}
