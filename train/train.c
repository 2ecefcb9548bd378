/* train.c: the training loop. See train.h.
 *
 * One step = grad_accum micro-batches of micro_batch sequences: forward + backward each
 * (parameter grads accumulate, every loss term scaled by 1/grad_accum), then the global
 * gradient norm, clipping, one AdamW update with the scheduled learning rate, and logging.
 * Nothing in the step allocates after the first one: the tape's arena and op list keep
 * their memory, batches go into buffers made at start.
 */
#include "train/train.h"

#include <errno.h>
#include <signal.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fs.h"
#include "data/loader.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "checkpoints/ckpt.h"
#include "checkpoints/finetune.h"
#include "checkpoints/rundir.h"
#include "checkpoints/upcycle.h"
#include "layers/router_bias.h"
#include "optim/adamw.h"
#include "parallel/dp.h"
#include "parallel/exchange.h"
#include "train/mfu.h"

/* ---- data preparation ---- */

/* Load the tokenizer, or train it on data.text when its file does not exist yet. */
static int prepare_tokenizer(const Config *c, Tokenizer *tok, MoeErr *err) {
    if (fs_exists(c->data.tokenizer)) {
        if (tok_load(tok, c->data.tokenizer, err)) return -1;
    } else {
        if (c->data.n_text == 0) {
            moe_errorf(err, "%s: tokenizer file does not exist and data.text lists no text "
                       "to train it on", c->data.tokenizer);
            return moe_hintf(err, "train one with `moetrain tokenizer train`, or list text "
                             "files under data.text");
        }
        printf("training a %d-token byte-level BPE tokenizer on %zu text file(s) -> %s\n",
               c->model.vocab_size, c->data.n_text, c->data.tokenizer);
        fflush(stdout);
        double t0 = moe_now();
        if (tok_train(tok, (const char *const *)c->data.text, (int)c->data.n_text,
                      c->model.vocab_size, err))
            return -1;
        if (tok_save(tok, c->data.tokenizer, err)) return -1;
        printf("tokenizer trained in %.1f s\n", moe_now() - t0);
    }
    if (tok_vocab_size(tok) != c->model.vocab_size) {
        moe_errorf(err, "%s: tokenizer has %d tokens but model.vocab_size is %d",
                   c->data.tokenizer, tok_vocab_size(tok), c->model.vocab_size);
        return moe_hintf(err, "set model.vocab_size to %d, or point data.tokenizer at a new "
                         "file so a %d-token tokenizer is trained", tok_vocab_size(tok),
                         c->model.vocab_size);
    }
    return 0;
}

/* FNV-1a over the text files' contents and the tokenizer hash: names the cached shard so a
 * change of text or tokenizer re-encodes. */
static int text_cache_path(const Config *c, const Tokenizer *tok, char *out, size_t cap,
                           MoeErr *err) {
    uint64_t h = 1469598103934665603ULL ^ tok_hash(tok);
    for (size_t i = 0; i < c->data.n_text; i++) {
        uint8_t *buf = NULL;
        size_t n = 0;
        if (fs_read_file(c->data.text[i], &buf, &n, err)) return -1;
        for (size_t j = 0; j < n; j++) h = (h ^ buf[j]) * 1099511628211ULL;
        h = (h ^ 0xff) * 1099511628211ULL;
        moe_free(buf);
    }
    snprintf(out, cap, "%s/tokens/text-%016llx.tok", c->run.dir, (unsigned long long)h);
    return 0;
}

typedef struct DataSet {
    Tokenizer tok;
    Shard *shards;      /* (n_shards) */
    int n_shards;
    Loader loader;
} DataSet;

static void dataset_free(DataSet *d) {
    loader_free(&d->loader);
    for (int i = 0; i < d->n_shards; i++) shard_close(&d->shards[i]);
    moe_free(d->shards);
    tok_free(&d->tok);
    memset(d, 0, sizeof *d);
}

static int dataset_open(const Config *c, DataSet *d, MoeErr *err) {
    memset(d, 0, sizeof *d);
    if (prepare_tokenizer(c, &d->tok, err)) return -1;
    int n = (int)c->data.n_shards + (c->data.n_text > 0 ? 1 : 0);
    d->shards = moe_calloc(sizeof(Shard) * (size_t)n);
    for (size_t i = 0; i < c->data.n_shards; i++) {
        if (shard_open(&d->shards[d->n_shards], c->data.shards[i], err)) return -1;
        d->n_shards++;
        const Shard *s = &d->shards[d->n_shards - 1];
        if ((int)s->vocab_size != c->model.vocab_size) {
            moe_errorf(err, "%s: shard was encoded with a %u-token vocabulary but "
                       "model.vocab_size is %d", c->data.shards[i], s->vocab_size,
                       c->model.vocab_size);
            return moe_hintf(err, "re-encode it with `moetrain data encode` using %s",
                             c->data.tokenizer);
        }
        if (s->tok_hash != tok_hash(&d->tok)) {
            moe_errorf(err, "%s: shard was encoded by a different tokenizer than %s",
                       c->data.shards[i], c->data.tokenizer);
            return moe_hintf(err, "re-encode it with `moetrain data encode --tokenizer %s`",
                             c->data.tokenizer);
        }
    }
    if (c->data.n_text > 0) {
        char path[4096], dir[4096];
        if (text_cache_path(c, &d->tok, path, sizeof path, err)) return -1;
        snprintf(dir, sizeof dir, "%s/tokens", c->run.dir);
        if (fs_mkdirs(dir, err)) return -1;
        if (!fs_exists(path)) {
            printf("encoding %zu text file(s) -> %s\n", c->data.n_text, path);
            fflush(stdout);
            if (shard_encode_files(&d->tok, (const char *const *)c->data.text,
                                   (int)c->data.n_text, path, err))
                return -1;
        }
        if (shard_open(&d->shards[d->n_shards], path, err)) return -1;
        d->n_shards++;
    }
    return loader_init_shards(&d->loader, d->shards, d->n_shards, c->train.seq_len,
                              c->data.val_fraction, (uint64_t)c->train.seed, err);
}

/* ---- logging ---- */

typedef struct Logger {
    FILE *metrics;      /* run.dir/metrics.jsonl */
    FILE *evals;        /* run.dir/eval.jsonl */
    char metrics_path[4200], evals_path[4200];
    bool tty;
    double t_start;
} Logger;

/* A log write is checked once, after its flush: every fprintf that failed set the stream's
 * error flag, and the flush reports (errno) what the OS said. A full disk then stops the run
 * at that line, not at the next checkpoint. */
static int log_flush(FILE *f, const char *path, MoeErr *err) {
    if (fflush(f) == 0 && !ferror(f)) return 0;
    moe_errorf(err, "%s: write failed: %s", path, strerror(errno));
    return moe_hintf(err, "free space on its disk (or raise the file-size limit), then "
                     "continue with --resume auto from the last checkpoint");
}

static void fmt_eta(double s, char *out, size_t cap) {
    if (!(s >= 0) || s > 1e7) { snprintf(out, cap, "?"); return; }
    long v = (long)(s + 0.5);
    if (v >= 3600) snprintf(out, cap, "%ldh%02ldm", v / 3600, (v / 60) % 60);
    else if (v >= 60) snprintf(out, cap, "%ldm%02lds", v / 60, v % 60);
    else snprintf(out, cap, "%lds", v);
}

typedef struct StepLog {
    long step, steps;
    long tokens_seen;
    double loss, lm, aux, z, lr, gnorm, tok_s, mfu, dt;
    bool skipped;         /* non-finite loss or gradient: update skipped */
    bool spike;           /* gradient norm above spike_factor x its running mean */
    double gnorm_mean;    /* that running mean */
} StepLog;

/* Per-layer load: share of routed slots per expert, and max/mean. */
static void layer_load(const MoeStats *st, int l, double *share, double *max_over_mean) {
    double tot = 0, mx = 0;
    for (int e = 0; e < st->E; e++) tot += st->count[(size_t)l * st->E + e];
    for (int e = 0; e < st->E; e++) {
        share[e] = tot > 0 ? st->count[(size_t)l * st->E + e] / tot : 0;
        if (share[e] > mx) mx = share[e];
    }
    *max_over_mean = mx * st->E;
}

/* One step: a line of metrics.jsonl (checked: -1 with err when the write fails) and the
 * terminal output. */
static int log_step(Logger *lg, const StepLog *s, const Model *m, bool print, MoeErr *err) {
    const MoeStats *st = &m->stats;
    double share[1024];
    /* metrics.jsonl: one object per step */
    FILE *f = lg->metrics;
    fprintf(f, "{\"step\":%ld,\"tokens\":%ld", s->step, s->tokens_seen);
    /* non-finite values are written as null so the file stays strict JSON */
    const char *names[] = {"loss", "lm_loss", "aux_loss", "z_loss", "lr", "grad_norm",
                           "tokens_per_s", "mfu", "step_time"};
    const double vals[] = {s->loss, s->lm, s->aux, s->z, s->lr, s->gnorm, s->tok_s, s->mfu,
                           s->dt};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        if (isfinite(vals[i])) fprintf(f, ",\"%s\":%.6g", names[i], vals[i]);
        else fprintf(f, ",\"%s\":null", names[i]);
    }
    fprintf(f, ",\"skipped\":%s,\"grad_spike\":%s", s->skipped ? "true" : "false",
            s->spike ? "true" : "false");
    if (st->E > 0 && st->E <= 1024) {
        fprintf(f, ",\"expert_load\":[");
        for (int l = 0; l < st->L; l++) {
            double mom;
            layer_load(st, l, share, &mom);
            fprintf(f, "%s[", l ? "," : "");
            for (int e = 0; e < st->E; e++) fprintf(f, "%s%.4f", e ? "," : "", share[e]);
            fprintf(f, "]");
        }
        fprintf(f, "],\"load_max_over_mean\":[");
        for (int l = 0; l < st->L; l++) {
            double mom;
            layer_load(st, l, share, &mom);
            fprintf(f, "%s%.4f", l ? "," : "", mom);
        }
        fprintf(f, "],\"dropped\":[");
        for (int l = 0; l < st->L; l++) fprintf(f, "%s%.0f", l ? "," : "", st->dropped[l]);
        fprintf(f, "],\"router_entropy\":[");
        for (int l = 0; l < st->L; l++)
            fprintf(f, "%s%.4f", l ? "," : "", st->calls ? st->entropy[l] / st->calls : 0.0);
        fprintf(f, "],\"experts_per_token\":[");   /* K for topk; varies with moe.router */
        for (int l = 0; l < st->L; l++)
            fprintf(f, "%s%.4f", l ? "," : "", st->calls ? st->experts[l] / st->calls : 0.0);
        fprintf(f, "]");
        if (m->use_router_bias) {   /* aux-loss-free balancing: max |b| per layer */
            fprintf(f, ",\"router_bias_max\":[");
            for (int l = 0; l < st->L; l++)
                fprintf(f, "%s%.4g", l ? "," : "",
                        router_bias_max_abs(m->router_bias + (size_t)l * st->E, st->E));
            fprintf(f, "]");
        }
    }
    fprintf(f, "}\n");
    if (log_flush(f, lg->metrics_path, err)) return -1;

    char eta[32];
    double elapsed = moe_now() - lg->t_start;
    fmt_eta(elapsed / (double)s->step * (double)(s->steps - s->step), eta, sizeof eta);
    if (lg->tty) {
        char bar[21];
        int filled = (int)(20 * s->step / (s->steps > 0 ? s->steps : 1));
        for (int i = 0; i < 20; i++) bar[i] = i < filled ? '#' : '.';
        bar[20] = 0;
        printf("\r\033[K[%s] step %ld/%ld | loss %.4f | %.0f tok/s | eta %s", bar, s->step,
               s->steps, s->loss, s->tok_s, eta);
        fflush(stdout);
    }
    if (!print) return 0;
    if (lg->tty) printf("\r\033[K");
    printf("step %5ld/%ld | loss %.4f (lm %.4f aux %.4f z %.4f) | lr %.2e | gnorm %.3f | "
           "%.0f tok/s | MFU %.2f | eta %s%s\n", s->step, s->steps, s->loss, s->lm, s->aux, s->z,
           s->lr, s->gnorm, s->tok_s, s->mfu, eta, s->skipped ? " | SKIPPED (non-finite)" : "");
    if (s->spike)
        printf("      grad-norm spike: %.3g is %.1fx its running mean %.3g\n", s->gnorm,
               s->gnorm / s->gnorm_mean, s->gnorm_mean);
    if (st->E > 0 && st->E <= 1024) {
        printf("      expert load (share of slots), max/mean, dropped:\n");
        for (int l = 0; l < st->L; l++) {
            double mom;
            layer_load(st, l, share, &mom);
            printf("      L%d:", l);
            for (int e = 0; e < st->E && e < 16; e++) printf(" %.3f", share[e]);
            printf("%s | max/mean %.2f | dropped %.0f", st->E > 16 ? " ..." : "", mom,
                   st->dropped[l]);
            if (m->s.router != MOE_ROUTER_TOPK)   /* expert choice: dropped = unchosen tokens */
                printf(" | experts/token %.2f", st->calls ? st->experts[l] / st->calls : 0.0);
            printf("\n");
        }
        if (m->use_router_bias) {
            printf("      router selection bias, max |b| per layer:");
            for (int l = 0; l < st->L; l++)
                printf(" L%d %.3g", l, router_bias_max_abs(m->router_bias + (size_t)l * st->E,
                                                           st->E));
            printf("\n");
        }
    }
    fflush(stdout);
    return 0;
}

/* ---- the trainer ---- */

typedef struct Trainer {
    const Config *c;
    const Comm *comm;
    DataSet data;
    Model model;
    Tape tape;
    struct MoeExchange ex;
    int B, T, A;           /* global micro-batch, sequence length, accumulation */
    int Bl, row0;          /* this rank's rows of each global micro-batch */
    int32_t *in, *tg;      /* (Bl, T) */
    AdamWConfig ac;
    LrSchedule sched;
    long step;             /* optimizer steps done */
    long tokens_seen;
    bool resumed;          /* state came from a checkpoint */
    int bad_run;           /* non-finite steps in a row */
    double gnorm_ema;      /* running mean of finite gradient norms (spike detection) */
    long gnorm_count;
    Model full;            /* rank 0 with expert parallelism: every expert, for saving */
    float *xfer;           /* (3, expert block) receive buffer for the expert gather */
    RunDir rd;             /* rank 0: the locked run directory, this process's generation */
    bool lora;             /* finetune.lora_rank > 0: adapter checkpoints on a frozen base */
    char base_path[1024];  /* LoRA: the base checkpoint and the checksum of its bytes */
    uint64_t base_sum;
} Trainer;

/* Mean validation LM loss over eval_batches global batches (no router noise, no tape),
 * averaged over ranks. */
static double evaluate(Trainer *tr) {
    const Config *c = tr->c;
    Model *m = &tr->model;
    double sum = 0;
    MoeStats keep = m->stats;  /* validation does not count in the training statistics */
    moe_stats_init(&m->stats, m->s.L, m->s.E);
    for (int b = 0; b < c->train.eval_batches; b++) {
        loader_val_batch(&tr->data.loader, b, tr->B, tr->row0, tr->Bl, tr->in, tr->tg);
        tape_reset(&tr->tape, false);
        StepCtx ctx = {.train = false, .seed = (uint64_t)c->train.seed, .loss_scale = 1.0f,
                       .recompute = c->train.recompute, .loss_chunk = c->train.loss_chunk};
        ModelOut out;
        model_forward(m, &tr->tape, tr->in, tr->tg, tr->Bl, tr->T, &ctx, &out);
        sum += out.lm_loss;
    }
    moe_stats_free(&m->stats);
    m->stats = keep;
    comm_sum_world_d(tr->comm, &sum, 1);
    return sum / c->train.eval_batches / tr->comm->size;
}

/* Name the non-finite loss terms and gradient tensors of this rank (stderr, any rank). */
static void report_nonfinite(const Trainer *tr, const double *sums) {
    const char *terms[3] = {"lm_loss", "aux_loss", "z_loss"};
    char buf[1024];
    size_t len = 0;
    for (int i = 0; i < 3; i++)
        if (!isfinite(sums[i]))
            len += (size_t)snprintf(buf + len, sizeof buf - len, " %s=%g", terms[i], sums[i]);
    int shown = 0, total = 0;
    const ParamSet *ps = &tr->model.ps;
    for (int i = 0; i < ps->count; i++) {
        const Param *p = &ps->p[i];
        if (!p->trainable) continue;
        bool bad = false;
        for (size_t j = 0; j < p->t.n && !bad; j++) bad = !isfinite(p->t.grad[j]);
        if (!bad) continue;
        total++;
        if (shown++ < 4 && len < sizeof buf - 200)
            len += (size_t)snprintf(buf + len, sizeof buf - len, " | gradient of %s (layer %d)",
                                    p->name, p->layer);
    }
    if (total > 4 && len < sizeof buf - 40)
        snprintf(buf + len, sizeof buf - len, " | ... %d tensors in all", total);
    fprintf(stderr, "moetrain: warning: step %ld, rank %d: non-finite values:%s; the update "
            "is skipped\n", tr->step + 1, tr->comm->rank, buf);
    fflush(stderr);
}

/* One optimizer step: A micro-batches of forward + backward, gradient all-reduce, norm,
 * clipping, AdamW. Fills the global (rank-averaged) figures into sl. */
static void train_step(Trainer *tr, StepLog *sl) {
    const Config *c = tr->c;
    const Comm *comm = tr->comm;
    Model *m = &tr->model;
    const long step = tr->step;
    params_zero_grad(&m->ps);
    moe_stats_reset(&m->stats);
    double sums[3] = {0, 0, 0};   /* lm, aux, z */
    for (int a = 0; a < tr->A; a++) {
        loader_next(&tr->data.loader, tr->B, tr->row0, tr->Bl, tr->in, tr->tg);
        tape_reset(&tr->tape, true);
        StepCtx ctx = {.train = true, .seed = (uint64_t)c->train.seed, .step = step,
                       .token_base = ((long)a * tr->B + tr->row0) * tr->T,
                       .loss_scale = 1.0f / (float)tr->A,
                       .recompute = c->train.recompute, .loss_chunk = c->train.loss_chunk};
        ModelOut out;
        model_forward(m, &tr->tape, tr->in, tr->tg, tr->Bl, tr->T, &ctx, &out);
        tape_backward(&tr->tape, out.loss, NULL);
        sums[0] += out.lm_loss / tr->A;
        sums[1] += out.aux_loss / tr->A;
        sums[2] += out.z_loss / tr->A;
    }
    /* Numerical health, checked once per step outside the kernels: a rank whose own loss or
     * gradients are not finite says which, before the all-reduce spreads the NaN. On one
     * rank the reduce changes nothing, so the global norm below serves (no second pass). */
    if (comm->size > 1) {
        double local_sq = grad_sumsq_block(&m->ps, PBLOCK_DENSE) +
                          grad_sumsq_block(&m->ps, PBLOCK_EXPERT);
        if (!isfinite(sums[0] + sums[1] + sums[2]) || !isfinite(local_sq))
            report_nonfinite(tr, sums);
    }
    dp_reduce_grads(&m->ps, comm);
    if (comm->size > 1) {
        comm_sum_world_d(comm, sums, 3);
        for (int i = 0; i < 3; i++) sums[i] /= comm->size;
        /* logged statistics: counts are already global; drops and entropy are per rank */
        comm_sum_world_d(comm, m->stats.dropped, (size_t)m->stats.L);
        comm_sum_world_d(comm, m->stats.entropy, (size_t)m->stats.L);
        for (int l = 0; l < m->stats.L; l++) m->stats.entropy[l] /= comm->size;
    }
    double gnorm = dp_grad_norm(&m->ps, comm);
    double loss = sums[0] + sums[1] + sums[2];
    bool skipped = !isfinite(loss) || !isfinite(gnorm);
    if (skipped && comm->size == 1) report_nonfinite(tr, sums);
    float lr = lr_at(&tr->sched, step);
    tr->bad_run = skipped ? tr->bad_run + 1 : 0;
    bool spike = false;
    if (!skipped) {
        /* a spike: > spike_factor x the running mean (after 10 steps to settle) */
        spike = tr->gnorm_count >= 10 && gnorm > c->train.spike_factor * tr->gnorm_ema;
        tr->gnorm_ema = tr->gnorm_count == 0 ? gnorm : 0.9 * tr->gnorm_ema + 0.1 * gnorm;
        tr->gnorm_count++;
    }
    if (!skipped) {
        /* clipping is folded into the update: one pass over the gradients, not two */
        float clip = grad_clip_factor(gnorm, (float)c->optim.grad_clip);
        adamw_step_scaled(&m->ps, &tr->ac, lr, step + 1, clip);
        /* aux-loss-free balancing: this step's loads (all micro-batches; counts are global
         * over the ranks, so every rank computes the same bias) move the selection bias */
        if (c->moe.bias_update_rate > 0 && m->s.E > 0)
            router_bias_update(m->router_bias, m->stats.count, m->s.L, m->s.E,
                               (float)c->moe.bias_update_rate);
    }
    tr->step++;
    tr->tokens_seen += (long)tr->B * tr->T * tr->A;
    memset(sl, 0, sizeof *sl);
    sl->step = tr->step;
    sl->steps = c->train.steps;
    sl->tokens_seen = tr->tokens_seen;
    sl->loss = loss;
    sl->lm = sums[0];
    sl->aux = sums[1];
    sl->z = sums[2];
    sl->lr = (double)lr;
    sl->gnorm = gnorm;
    sl->skipped = skipped;
    sl->spike = spike;
    sl->gnorm_mean = tr->gnorm_ema;
}

static void trainer_free(Trainer *tr) {
    rundir_close(&tr->rd);   /* last: the lock is held while anything is written */
    if (tr->full.layer) model_free(&tr->full);
    moe_free(tr->xfer);
    moe_free(tr->in);
    moe_free(tr->tg);
    tape_free(&tr->tape);
    if (tr->model.layer) model_free(&tr->model);
    dataset_free(&tr->data);
}

/* Rank 0 prepares the data (tokenizer training, encoding) first; the others then open it.
 * All ranks agree on failure, so nobody waits for a rank that gave up. */
/* Refuse a checkpoint whose model shape differs from the config; report other changes. */
static int check_resume_config(const Config *c, const char *path, bool root, MoeErr *err) {
    Config saved;
    memset(&saved, 0, sizeof saved);
    if (ckpt_read_config(path, &saved, err)) return -1;
    char diff[2048];
    if (config_diff_shape(&saved, c, diff, sizeof diff) > 0) {
        moe_errorf(err, "%s: the checkpoint's model shape differs from the config: %s", path,
                   diff);
        config_free(&saved);
        return moe_hintf(err, "resume with the checkpoint's model settings, or start a new "
                         "run (another run.dir)");
    }
    if (root && config_diff_other(&saved, c, diff, sizeof diff) > 0)
        printf("resuming with changed settings: %s\n", diff);
    config_free(&saved);
    return 0;
}

/* LoRA resume: the frozen base from the path the adapter checkpoint recorded (or, when that
 * file is gone, from finetune.init_from), refused unless its checksum is the recorded one. */
static int trainer_base(Trainer *tr, const char *path, const CkptMeta *meta, MoeErr *err) {
    const char *base = meta->base_path, *init = tr->c->finetune.init_from;
    if (!fs_exists(base) && init && strcmp(init, base)) base = init;
    char key[4200];
    snprintf(key, sizeof key, "%s: base_path", path);
    if (finetune_load_base(base, key, tr->c, &tr->model, &meta->base_checksum, path, NULL,
                           NULL, err))
        return -1;
    snprintf(tr->base_path, sizeof tr->base_path, "%s", base);
    tr->base_sum = meta->base_checksum;
    return 0;
}

/* Restore model, moments, step and loader position from path (every rank reads the file;
 * experts by global index, so any rank layout can resume any checkpoint). */
static int trainer_resume(Trainer *tr, const char *path, MoeErr *err) {
    CkptMeta meta;
    if (ckpt_read_meta(path, &meta, err)) return -1;
    if (tr->comm->rank == 0) rundir_set_parent(&tr->rd, path, &meta);
    if (meta.adapter && trainer_base(tr, path, &meta, err)) return -1;
    /* A weights-only file (e.g. `moetrain upcycle` output) starts fresh moments. */
    if (ckpt_load(path, &tr->model, &meta, meta.has_optimizer, err)) return -1;
    if (tr->comm->rank == 0 && tr->model.s.E > 0) {
        const bool on = tr->c->moe.bias_update_rate > 0;
        if (on && !meta.has_router_bias)
            printf("note: %s holds no router bias: moe.bias_update_rate > 0 starts it at "
                   "zero\n", path);
        else if (!on && meta.has_router_bias)
            printf("note: moe.bias_update_rate is 0: the router bias saved in %s is kept "
                   "frozen (it still chooses the experts, it is no longer updated)\n", path);
    }
    if (meta.tok_hash != tok_hash(&tr->data.tok)) {
        moe_errorf(err, "%s: the checkpoint was trained with a different tokenizer than %s",
                   path, tr->c->data.tokenizer);
        return moe_hintf(err, "point data.tokenizer at the tokenizer of that run");
    }
    if (!meta.has_optimizer && meta.step == 0) {
        /* initial weights: step 0, loader at its start */
        tr->resumed = true;
        return 0;
    }
    if (meta.loader_windows != loader_train_windows(&tr->data.loader)) {
        moe_errorf(err, "%s: the checkpoint's corpus had %llu training windows, this one has "
                   "%zu", path, (unsigned long long)meta.loader_windows,
                   loader_train_windows(&tr->data.loader));
        return moe_hintf(err, "resume with the same data.* and train.seq_len settings");
    }
    LoaderState ls = {meta.loader_epoch, meta.loader_cursor};
    if (loader_set_state(&tr->data.loader, ls, err)) return -1;
    tr->step = (long)meta.step;
    tr->tokens_seen = (long)meta.tokens_seen;
    /* the spike detector continues where it was (older files: 0, 0, it starts over) */
    tr->gnorm_ema = meta.gnorm_ema;
    tr->gnorm_count = (long)meta.gnorm_count;
    tr->resumed = true;
    return 0;
}

/* init.upcycle_from (a run that resumes nothing): every rank fills its own experts, by
 * global index, from the dense checkpoint; fresh AdamW moments, step 0, loader at start. */
static int trainer_upcycle(Trainer *tr, const Config *c, const Comm *comm, MoeErr *err) {
    if (!c->init.upcycle_from) return 0;
    UpcycleOpts uo;
    upcycle_opts_from_config(c, &uo);
    int bad = upcycle_into(c->init.upcycle_from, &tr->model, &uo, err);
    if (!bad) {
        CkptMeta dm;
        bad = ckpt_read_meta(c->init.upcycle_from, &dm, err);
        if (!bad && dm.tok_hash != tok_hash(&tr->data.tok)) {
            moe_errorf(err, "%s: the dense checkpoint was trained with a different tokenizer "
                       "than %s", c->init.upcycle_from, c->data.tokenizer);
            moe_hintf(err, "point data.tokenizer at the tokenizer of the dense run");
            bad = 1;
        }
    }
    if (comm_max_world_i(comm, bad)) {
        if (!bad) moe_errorf(err, "another rank failed to upcycle from %s", c->init.upcycle_from);
        return -1;
    }
    if (comm->rank == 0)
        printf("upcycled from %s (granularity %d, router N(0, %g), expert noise %g)\n",
               c->init.upcycle_from, uo.granularity, (double)uo.router_init_std,
               (double)uo.expert_noise);
    return 0;
}

/* finetune.init_from (a run that resumes nothing): the base's weights, fresh AdamW moments,
 * step 0; with LoRA they stay frozen and the run's checkpoints refer to the base. */
static int trainer_finetune(Trainer *tr, const Config *c, const Comm *comm, MoeErr *err) {
    const char *base = c->finetune.init_from;
    if (!base) return 0;
    uint64_t th = 0;
    int bad = finetune_load_base(base, "finetune.init_from", c, &tr->model, NULL, NULL,
                                 tr->lora ? &tr->base_sum : NULL, &th, err);
    if (!bad && th != tok_hash(&tr->data.tok)) {
        moe_errorf(err, "finetune.init_from: %s was trained with a different tokenizer than %s",
                   base, c->data.tokenizer);
        moe_hintf(err, "point data.tokenizer at the tokenizer of the base run");
        bad = 1;
    }
    if (comm_max_world_i(comm, bad)) {
        if (!bad) moe_errorf(err, "another rank failed to load the base %s", base);
        return -1;
    }
    snprintf(tr->base_path, sizeof tr->base_path, "%s", base);
    if (comm->rank == 0) {
        if (tr->lora)
            printf("fine-tuning %s with LoRA adapters (rank %d, alpha %g, dropout %g) on the "
                   "frozen base (checksum %016llx)\n", base, c->finetune.lora_rank,
                   c->finetune.lora_alpha, c->finetune.lora_dropout,
                   (unsigned long long)tr->base_sum);
        else
            printf("fine-tuning every weight of %s (fresh AdamW moments)\n", base);
    }
    return 0;
}

static int trainer_start(Trainer *tr, const Config *c, const Comm *comm, MoeErr *err) {
    return trainer_upcycle(tr, c, comm, err) || trainer_finetune(tr, c, comm, err) ? -1 : 0;
}

/* Rank 0 takes the run directory before anything is written in it (rundir_open: the lock,
 * and for a fresh start the check that no other run's files are there), then names the
 * checkpoint to resume into from ("" = start from scratch). Returns 0, or the exit status of
 * the failure: 2 for a refusal (RUNDIR_REFUSED), 1 for other errors. */
static int take_run_dir(Trainer *tr, const char *resume, char *from, size_t cap, MoeErr *err) {
    const char *dir = tr->c->run.dir;
    from[0] = 0;
    int rc = rundir_open(&tr->rd, dir, resume == NULL, err);
    if (!rc && resume && strcmp(resume, "auto") != 0) snprintf(from, cap, "%s", resume);
    if (!rc && resume && !strcmp(resume, "auto")) {
        rc = rundir_find_resume(dir, from, cap, stdout, err);
        if (rc == 1) {
            printf("--resume auto: no checkpoint in %s/checkpoints yet, starting from scratch\n",
                   dir);
            rc = 0;
        }
    }
    return rc == RUNDIR_REFUSED ? 2 : rc ? 1 : 0;
}

static int trainer_init(Trainer *tr, const Config *c, const Comm *comm, const TrainOptions *opt,
                        MoeErr *err) {
    const char *resume = opt->resume;
    memset(tr, 0, sizeof *tr);
    tr->c = c;
    tr->comm = comm;
    int bad = 0;
    if (c->finetune.init_from) {
        /* before the data: a fine-tuning run must not train a tokenizer of its own, and a
         * missing base is reported before any work */
        bad = !resume && finetune_check_base_exists(c->finetune.init_from,
                                                    "finetune.init_from", err);
        if (!bad && !fs_exists(c->data.tokenizer)) {
            moe_errorf(err, "data.tokenizer: %s does not exist; a fine-tuning run uses its "
                       "base's tokenizer and does not train one", c->data.tokenizer);
            moe_hintf(err, "point data.tokenizer at the base run's tokenizer file (or write "
                      "the base's copy out: h5dump -d /tokenizer -b -o %s %s)",
                      c->data.tokenizer, c->finetune.init_from);
            bad = 1;
        }
        if (bad) return -1;   /* every rank reaches the same verdict */
    }
    char from[4096];   /* the checkpoint to resume from, chosen by rank 0 ("": none) */
    bad = comm->rank == 0 ? take_run_dir(tr, resume, from, sizeof from, err) : 0;
    if ((bad = comm_max_world_i(comm, bad))) {
        if (comm->rank != 0) moe_errorf(err, "rank 0 could not take the run directory %s",
                                        c->run.dir);
        return bad == 2 ? TRAIN_REFUSED : -1;
    }
    if (comm->mpi) MPI_Bcast(from, (int)sizeof from, MPI_CHAR, 0, comm->world);
    if (comm->rank == 0) bad = dataset_open(c, &tr->data, err);
    if (comm_max_world_i(comm, bad)) {
        if (comm->rank != 0) moe_errorf(err, "rank 0 failed to prepare the data");
        return -1;
    }
    if (comm->rank != 0) bad = dataset_open(c, &tr->data, err);
    if (comm_max_world_i(comm, bad)) {
        if (!bad) moe_errorf(err, "another rank failed to open the data");
        return -1;
    }
    tr->B = c->train.micro_batch;
    tr->T = c->train.seq_len;
    tr->A = c->train.grad_accum;
    tr->Bl = tr->B / comm->size;
    tr->row0 = comm->rank * tr->Bl;
    ModelShape shape;
    config_model_shape(c, &shape);
    LoraSpec lora;
    config_lora_spec(c, &lora);
    tr->lora = lora.rank > 0;
    int e_local = shape.E / comm->ep;
    model_init_lora(&tr->model, &shape, &lora, comm->ep_rank * e_local, e_local,
                    (uint64_t)c->train.seed);
    tr->model.use_router_bias = shape.E > 0 && c->moe.bias_update_rate > 0;
    if (comm->size > 1 && shape.E > 0) {
        tr->ex.comm = comm;
        tr->model.exchange = &tr->ex;
    }
    tape_init(&tr->tape, 0);
    tr->in = moe_malloc(sizeof(int32_t) * (size_t)tr->Bl * tr->T);
    tr->tg = moe_malloc(sizeof(int32_t) * (size_t)tr->Bl * tr->T);
    tr->ac = (AdamWConfig){(float)c->optim.beta1, (float)c->optim.beta2, (float)c->optim.eps,
                           (float)c->optim.weight_decay};
    tr->sched = (LrSchedule){(float)c->optim.lr, (float)c->optim.min_lr,
                             (long)c->optim.warmup_steps, (long)c->train.steps};
    if (comm->rank == 0 && comm->ep > 1 && shape.E > 0 && !(tr->lora && !lora.train_experts)) {
        /* rank 0 assembles every expert here before writing a checkpoint (an adapter
         * checkpoint with frozen experts holds none) */
        model_init_lora(&tr->full, &shape, &lora, 0, shape.E, (uint64_t)c->train.seed);
        tr->xfer = moe_malloc(3 * sizeof(float) * tr->model.ps.blocks[PBLOCK_EXPERT].n);
    }
    if (!from[0]) return trainer_start(tr, c, comm, err);
    bad = check_resume_config(c, from, comm->rank == 0, err) || trainer_resume(tr, from, err);
    if (comm_max_world_i(comm, bad)) {
        if (!bad) moe_errorf(err, "another rank failed to resume from %s", from);
        return -1;
    }
    if (comm->rank == 0) printf("resumed from %s at step %ld\n", from, tr->step);
    if (opt->stop_at > 0 && opt->stop_at <= tr->step) {   /* the same verdict on every rank */
        moe_errorf(err, "--stop-at %ld is not after step %ld, where %s resumes", opt->stop_at,
                   tr->step, from);
        moe_hintf(err, "give a --stop-at above %ld (or leave it out to train to train.steps = "
                  "%ld)", tr->step, (long)c->train.steps);
        return TRAIN_REFUSED;
    }
    return 0;
}

/* Write RUN/checkpoints/step_N.h5 (rank 0; with expert parallelism the other ranks of EP
 * group 0 send their experts, values and moments, to rank 0 first) with this process's
 * lineage and spike-detector state, then keep the newest checkpoint.keep of its lineage
 * (rundir_rotate). All ranks call this together. */
static int save_checkpoint(Trainer *tr, MoeErr *err) {
    const Config *c = tr->c;
    const Comm *comm = tr->comm;
    Model *m = &tr->model;
    const Model *src = m;
    ParamBlock *eb = &m->ps.blocks[PBLOCK_EXPERT];
    /* values: n floats per block; moments: gn (trainable tensors only, at goff) */
    if (comm->mpi && comm->ep > 1 && m->s.E > 0 && !(tr->lora && eb->gn == 0)) {
        /* gather inside EP group 0 (world ranks 0..P-1 hold every expert once) */
        if (comm->rank > 0 && comm->rank < comm->ep) {
            MPI_Send(eb->data, (int)eb->n, MPI_FLOAT, 0, 1, comm->world);
            MPI_Send(eb->m, (int)eb->gn, MPI_FLOAT, 0, 2, comm->world);
            MPI_Send(eb->v, (int)eb->gn, MPI_FLOAT, 0, 3, comm->world);
        } else if (comm->rank == 0) {
            Model *f = &tr->full;
            for (int b = 0; b < 3; b++) {   /* dense block: same layout in both models */
                ParamBlock *d = &m->ps.blocks[PBLOCK_DENSE], *fd = &f->ps.blocks[PBLOCK_DENSE];
                float *from = b == 0 ? d->data : b == 1 ? d->m : d->v;
                float *to = b == 0 ? fd->data : b == 1 ? fd->m : fd->v;
                memcpy(to, from, (b == 0 ? d->n : d->gn) * sizeof(float));
            }
            for (int q = 0; q < comm->ep; q++) {
                float *buf[3];
                for (int b = 0; b < 3; b++) buf[b] = tr->xfer + (size_t)b * eb->n;
                if (q == 0) {
                    memcpy(buf[0], eb->data, eb->n * sizeof(float));
                    memcpy(buf[1], eb->m, eb->gn * sizeof(float));
                    memcpy(buf[2], eb->v, eb->gn * sizeof(float));
                } else {
                    for (int b = 0; b < 3; b++)
                        MPI_Recv(buf[b], (int)(b == 0 ? eb->n : eb->gn), MPI_FLOAT, q, b + 1,
                                 comm->world, MPI_STATUS_IGNORE);
                }
                ParamBlock *fe = &f->ps.blocks[PBLOCK_EXPERT];
                for (int i = 0; i < m->ps.count; i++) {
                    const Param *p = &m->ps.p[i];
                    if (p->block != PBLOCK_EXPERT) continue;
                    const Param *fp = &f->ps.p[i];
                    size_t n = p->t.n;   /* this rank's slice: experts q*El .. */
                    memcpy(fe->data + fp->off + (size_t)q * n, buf[0] + p->off,
                           n * sizeof(float));
                    if (!p->trainable) continue;
                    memcpy(fe->m + fp->goff + (size_t)q * n, buf[1] + p->goff,
                           n * sizeof(float));
                    memcpy(fe->v + fp->goff + (size_t)q * n, buf[2] + p->goff,
                           n * sizeof(float));
                }
            }
            if (m->router_bias) {   /* replicated state: rank 0's copy is everyone's */
                memcpy(f->router_bias, m->router_bias,
                       sizeof(float) * (size_t)m->s.L * (size_t)m->s.E);
                f->use_router_bias = m->use_router_bias;
            }
            src = f;
        }
    }
    int bad = 0;
    if (comm->rank == 0) {
        char path[4096];
        LoaderState ls = loader_get_state(&tr->data.loader);
        CkptMeta meta = {.step = tr->step, .tokens_seen = tr->tokens_seen,
                         .seed = (uint64_t)c->train.seed, .loader_epoch = ls.epoch,
                         .loader_cursor = ls.cursor,
                         .loader_windows = loader_train_windows(&tr->data.loader),
                         .tok_hash = tok_hash(&tr->data.tok), .adapter = tr->lora,
                         .base_checksum = tr->base_sum, .lineage_gen = tr->rd.gen,
                         .parent_gen = tr->rd.parent_gen, .parent_step = tr->rd.parent_step,
                         .gnorm_ema = tr->gnorm_ema, .gnorm_count = tr->gnorm_count};
        snprintf(meta.base_path, sizeof meta.base_path, "%s", tr->base_path);
        rundir_ckpt_path(c->run.dir, tr->step, path, sizeof path);
        bad = rundir_prepare(c->run.dir, err) ||
              rundir_set_aside(&tr->rd, tr->step, stdout, err) ||
              ckpt_save(path, c, src, &meta, c->data.tokenizer, true, err) ||
              rundir_rotate(&tr->rd, tr->step, c->checkpoint.keep, stdout, err);
        if (!bad) {
            printf("saved checkpoint %s\n", path);
            fflush(stdout);
        }
    }
    if (comm_max_world_i(comm, bad)) {
        if (!bad) moe_errorf(err, "rank 0 failed to write a checkpoint");
        return -1;
    }
    return 0;
}

static volatile sig_atomic_t g_signal = 0;
static void on_signal(int sig) { g_signal = sig; }

/* The logs are always appended to: a fresh start only gets here when the run directory held
 * no metrics (rundir_open), and a resumed run continues them. config.yaml is replaced
 * atomically. Every write is checked. */
static int open_logs(const Config *c, Logger *lg, bool mpi, MoeErr *err) {
    snprintf(lg->metrics_path, sizeof lg->metrics_path, "%s/metrics.jsonl", c->run.dir);
    snprintf(lg->evals_path, sizeof lg->evals_path, "%s/eval.jsonl", c->run.dir);
    const char *path = lg->metrics_path;
    lg->metrics = fopen(path, "a");
    if (lg->metrics) {
        path = lg->evals_path;
        lg->evals = fopen(path, "a");
    }
    if (!lg->metrics || !lg->evals) {
        moe_errorf(err, "%s: cannot write metrics: %s", path, strerror(errno));
        return moe_hintf(err, "check that run.dir (%s) is writable", c->run.dir);
    }
    char cfg[4200];
    snprintf(cfg, sizeof cfg, "%s/config.yaml", c->run.dir);
    char *yaml = config_to_yaml(c);
    FsAtomicFile af;
    int rc = fs_atomic_open(&af, cfg, err);
    if (!rc) {
        fputs(yaml, af.fp);   /* a failure sets the error flag, which the commit checks */
        rc = fs_atomic_commit(&af, err);
    }
    moe_free(yaml);
    if (rc) return -1;
    /* under mpirun stdout is a pseudo-terminal of the launcher: plain lines there */
    lg->tty = !mpi && isatty(fileno(stdout));
    return 0;
}

/* Rank 0's part of eval_and_log: the line on the terminal and in both logs (checked). */
static int log_eval(const Trainer *tr, Logger *lg, double vl, double t1, MoeErr *err) {
    if (lg->tty) printf("\r\033[K");
    printf("step %5ld/%ld | val_loss %.4f (ppl %.1f) | %.1f s\n", tr->step,
           (long)tr->c->train.steps, vl, exp(vl), moe_now() - t1);
    fflush(stdout);
    fprintf(lg->evals, "{\"step\":%ld,\"tokens\":%ld,\"val_loss\":%.6g}\n", tr->step,
            tr->tokens_seen, vl);
    if (log_flush(lg->evals, lg->evals_path, err)) return -1;
    fprintf(lg->metrics, "{\"step\":%ld,\"tokens\":%ld,\"val_loss\":%.6g}\n", tr->step,
            tr->tokens_seen, vl);
    return log_flush(lg->metrics, lg->metrics_path, err);
}

/* Validation loss at the current step: printed and logged to eval.jsonl and metrics.jsonl
 * (rank 0). All ranks call this together and agree on rank 0's write verdict (-1 with err
 * on every rank when a write failed). */
static int eval_and_log(Trainer *tr, Logger *lg, bool root, MoeErr *err) {
    double t1 = moe_now();
    double vl = evaluate(tr);
    int bad = root ? log_eval(tr, lg, vl, t1, err) : 0;
    if (comm_max_world_i(tr->comm, bad)) {
        if (!root) moe_errorf(err, "rank 0 could not write the logs");
        return -1;
    }
    return 0;
}

int train_run(const Config *c, const Comm *comm, const TrainOptions *opt, MoeErr *err) {
    int rc = -1;
    Trainer tr;
    Logger lg;
    struct sigaction old_int, old_term, old_usr1;
    bool signals = false;
    memset(&lg, 0, sizeof lg);
    const bool root = comm->rank == 0;
    if ((rc = trainer_init(&tr, c, comm, opt, err)) != 0) goto fail;
    rc = -1;
    int bad = root ? open_logs(c, &lg, comm->mpi, err) : 0;
    if (comm_max_world_i(comm, bad)) {
        if (!root) moe_errorf(err, "rank 0 could not open the run directory");
        goto fail;
    }
    const ModelShape *shape = &tr.model.s;
    const double flops_tok = model_flops_per_token_lora(shape, &tr.model.lora, tr.T);
    /* MFU denominator: the machine's sgemm rate on this model's training-shaped products
     * (per-rank batch), measured once here with the thread count the run uses. */
    double sgemm_gflops = mfu_sgemm_rate(shape, tr.Bl * tr.T, 2);
    comm_sum_world_d(comm, &sgemm_gflops, 1);   /* the machine's aggregate over ranks */
    if (root) {
        size_t n_total = params_count(&tr.model.ps, false) +
                         (size_t)(comm->ep - 1) * tr.model.ps.blocks[PBLOCK_EXPERT].n;
        printf("model: %s | %zu parameters (%.1f M), %.1f M active per token | %s\n",
               c->name, n_total, (double)n_total / 1e6, model_active_params(shape) / 1e6,
               shape->E > 0 ? "sparse MoE" : "dense");
        if (c->finetune.init_from) {
            /* every rank holds the dense tensors and 1/P of the experts */
            size_t n_train = 0;
            for (int i = 0; i < tr.model.ps.count; i++) {
                const Param *p = &tr.model.ps.p[i];
                if (p->trainable)
                    n_train += p->t.n * (size_t)(p->block == PBLOCK_EXPERT ? comm->ep : 1);
            }
            printf("fine-tuning: %zu trainable parameters of %zu (%.3f%%)%s\n", n_train,
                   n_total, 100.0 * (double)n_train / (double)n_total,
                   tr.lora ? "; the rest is frozen (no gradients, no optimizer state)" : "");
        }
        printf("layout: %d rank(s), expert parallel %d (each rank holds %d of %d experts), "
               "%d sequence(s) per rank\n", comm->size, comm->ep,
               shape->E > 0 ? shape->E / comm->ep : 0, shape->E, tr.Bl);
        printf("machine: sgemm %.1f GFLOP/s on this model's training-shaped products; model "
               "%.3g FLOPs/token\n", sgemm_gflops, flops_tok);
        printf("data: %zu train windows of %d tokens, %zu validation windows | batch %d x %d "
               "x accum %d = %ld tokens/step\n", loader_train_windows(&tr.data.loader), tr.T,
               loader_val_windows(&tr.data.loader), tr.B, tr.T, tr.A,
               (long)tr.B * tr.T * tr.A);
        fflush(stdout);
    }
    lg.t_start = moe_now();
    /* SIGINT / SIGTERM / SIGUSR1: finish the current step, save a checkpoint, exit 0. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    /* Open MPI's mpirun kills the job on SIGTERM/SIGINT but forwards SIGUSR1 to every rank:
     * `kill -USR1 <mpirun pid>` is the clean stop of an mpirun job. */
    sigaction(SIGUSR1, &sa, &old_usr1);
    signals = true;
    long first_step = tr.step;
    /* a new fine-tuning run first measures the base model on the new corpus */
    if (c->finetune.init_from && !tr.resumed && eval_and_log(&tr, &lg, root, err)) goto fail;
    while (tr.step < c->train.steps) {
        double t0 = moe_now();
        StepLog sl;
        train_step(&tr, &sl);
        if (tr.step == first_step + 1) tape_compact(&tr.tape);   /* plan once: see tensor.h */
        sl.dt = moe_now() - t0;
        sl.tok_s = (double)tr.B * tr.T * tr.A / sl.dt;
        sl.mfu = flops_tok * sl.tok_s / 1e9 / sgemm_gflops;
        bool last = tr.step == c->train.steps;
        bool print = tr.step % c->train.log_every == 0 || tr.step == 1 || last || sl.skipped;
        bad = root ? log_step(&lg, &sl, &tr.model, print, err) : 0;
        if (comm_max_world_i(comm, bad)) {
            if (!root) moe_errorf(err, "rank 0 could not write the logs");
            goto fail;
        }
        if (((c->train.eval_every > 0 && tr.step % c->train.eval_every == 0) || last) &&
            eval_and_log(&tr, &lg, root, err))
            goto fail;
        int stop = comm_max_world_i(comm, (int)g_signal);
        bool periodic = c->checkpoint.every > 0 && tr.step % c->checkpoint.every == 0;
        bool stop_at = opt->stop_at > 0 && tr.step == opt->stop_at;
        if (periodic || last || stop || stop_at) {
            if (save_checkpoint(&tr, err)) goto fail;
        }
        if (stop) {
            if (root) printf("caught signal %d: checkpoint saved at step %ld, exiting\n", stop,
                             tr.step);
            break;
        }
        if (stop_at) {
            if (root) printf("--stop-at %ld: checkpoint saved, exiting\n", tr.step);
            break;
        }
        if (tr.bad_run >= c->train.max_bad_steps) {
            /* skipped steps changed nothing: the model and moments are the last good state */
            if (save_checkpoint(&tr, err)) goto fail;
            moe_errorf(err, "%d non-finite steps in a row (steps %ld..%ld): stopping; the last "
                       "good state is saved in %s/checkpoints", tr.bad_run,
                       tr.step - tr.bad_run + 1, tr.step, c->run.dir);
            moe_hintf(err, "lower optim.lr or raise optim.warmup_steps, check the data, then "
                      "continue with --resume auto (train.max_bad_steps sets the limit)");
            goto fail;
        }
    }
    if (root && tr.step == c->train.steps)
        printf("done: %ld steps (%ld in this run) in %.1f s\n", tr.step, tr.step - first_step,
               moe_now() - lg.t_start);
    rc = 0;
fail:
    if (signals) {
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
        sigaction(SIGUSR1, &old_usr1, NULL);
    }
    /* everything was flushed and checked line by line; a failing close still fails the run */
    const char *unclosed = NULL;
    if (lg.metrics && fclose(lg.metrics) != 0) unclosed = lg.metrics_path;
    if (lg.evals && fclose(lg.evals) != 0) unclosed = lg.evals_path;
    if (unclosed && rc == 0) {
        moe_errorf(err, "%s: close failed: %s", unclosed, strerror(errno));
        moe_hintf(err, "check free disk space; the checkpoints are complete");
        rc = -1;
    }
    trainer_free(&tr);
    return rc;
}
