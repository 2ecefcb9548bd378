/* train.c: the training loop. See train.h.
 *
 * One step = grad_accum micro-batches of micro_batch sequences, all read first: forward +
 * backward each (parameter grads accumulate, every loss term scaled by 1/grad_accum; the LM
 * loss is the mean over the whole step's non-ignored targets, lm_denominator), then the global
 * gradient norm, clipping, one AdamW update with the scheduled learning rate, and logging.
 * Nothing in the step allocates after the first one: the tape's arena and op list keep
 * their memory, batches go into buffers made at start.
 * The run's state and how it starts: train/trainer.h; its data: train/dataset.h; its logs:
 * train/logger.h.
 */
#include "train/train.h"

#include "autograd/gemm.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "checkpoints/ckpt.h"
#include "checkpoints/rundir.h"
#include "layers/router_bias.h"
#include "optim/adamw.h"
#include "parallel/dp.h"
#include "parallel/ep_gather.h"
#include "parallel/zero.h"
#include "train/logger.h"
#include "train/metrics.h"
#include "train/mfu.h"
#include "train/runinfo.h"
#include "train/trainer.h"

/* Number of targets the loss trains on (not LOSS_IGNORE) among tg (n). */
static long count_targets(const int32_t *tg, size_t n) {
    long k = 0;
    for (size_t i = 0; i < n; i++) k += tg[i] != LOSS_IGNORE;
    return k;
}

/* Validation LM loss over eval_batches global batches (no router noise, no tape): the sum
 * of -log p over every scored target of all batches and ranks, divided by their count (with
 * data.sft only the completion tokens are scored). NaN when no target is scored. */
static double evaluate(Trainer *tr) {
    const Config *c = tr->c;
    Model *m = &tr->model;
    double acc[2] = {0, 0};   /* sum of -log p, targets scored */
    MoeStats keep = m->stats;  /* validation does not count in the training statistics */
    moe_stats_init(&m->stats, m->s.L, m->s.E);
    for (int b = 0; b < c->train.eval_batches; b++) {
        loader_val_batch(&tr->data.loader, b, tr->B, tr->row0, tr->Bl, tr->in, tr->tg);
        tape_reset(&tr->tape, false);
        /* lm_denom 1: the loss comes back as the sum over this batch's targets */
        StepCtx ctx = {.train = false, .seed = (uint64_t)c->train.seed, .loss_scale = 1.0f,
                       .lm_denom = 1.0, .recompute = c->train.recompute,
                       .loss_chunk = c->train.loss_chunk};
        ModelOut out;
        model_forward(m, &tr->tape, tr->in, tr->tg, tr->Bl, tr->T, &ctx, &out);
        acc[0] += out.lm_loss;
        acc[1] += (double)count_targets(tr->tg, (size_t)tr->Bl * tr->T);
    }
    moe_stats_free(&m->stats);
    m->stats = keep;
    comm_sum_world_d(tr->comm, acc, 2);
    return acc[1] > 0 ? acc[0] / acc[1] : (double)NAN;
}

/* The LM loss's divisor for each of the step's A x R calls (autograd/ops.h), from the
 * step's targets tg (A, Bl, T) on this rank. The step's loss is to be the mean over every
 * non-ignored target of the global batch (all ranks, all micro-batches): with N of them in
 * all, each call divides its sum by N / (R A) (and is scaled by 1/A, and dp_reduce_grads
 * averages over R), so that the step's gradient is (1/N) x the sum over all of them,
 * whatever the layout. Without a loss mask every call holds B T / R targets, N / (R A) is
 * that count, and 0 (the call's own count, the same value) is returned without
 * communication. With one (data.sft) the counts are summed over the ranks (one
 * all-reduce); N = 0 (no completion token in the whole batch) returns 0 too: every call
 * then has no target, its loss is 0 and no LM gradient flows (*none set). */
static double lm_denominator(const Trainer *tr, bool *none) {
    *none = false;
    if (!loader_has_mask(&tr->data.loader)) return 0.0;
    double n = (double)count_targets(tr->tg, (size_t)tr->A * tr->Bl * tr->T);
    comm_sum_world_d(tr->comm, &n, 1);
    *none = n == 0;
    return n / ((double)tr->comm->size * tr->A);
}

/* Warn of this rank's non-finite loss terms and gradient tensors, naming them (any rank:
 * only this rank knows them); global: the verdict of all ranks, whose update is skipped. */
static void report_nonfinite(const Trainer *tr, const Logger *lg, const double *sums,
                             bool global) {
    const char *terms[3] = {METRIC_LM_LOSS, METRIC_AUX_LOSS, METRIC_Z_LOSS};
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
    if (!buf[0]) snprintf(buf, sizeof buf, " the global gradient norm");
    char who[32] = "";
    if (!global) snprintf(who, sizeof who, ", rank %d", tr->comm->rank);
    logger_warn(lg, "step %ld%s: non-finite values:%s; the update is skipped (%d in a row; "
                "train.max_bad_steps = %d stops the run)", tr->step + 1, who, buf,
                tr->bad_run + 1, tr->c->train.max_bad_steps);
}

/* One optimizer step: A micro-batches of forward + backward, gradient all-reduce, norm,
 * clipping, AdamW. Fills the global (rank-averaged) figures into sl; warns (lg: rank 0's
 * logger, a zeroed one on the other ranks) of non-finite values. */
static void train_step(Trainer *tr, StepLog *sl, const Logger *lg) {
    const Config *c = tr->c;
    const Comm *comm = tr->comm;
    Model *m = &tr->model;
    const long step = tr->step;
    params_zero_grad(&m->ps);
    moe_stats_reset(&m->stats);
    double sums[3] = {0, 0, 0};   /* lm, aux, z */
    const size_t bt = (size_t)tr->Bl * tr->T;
    for (int a = 0; a < tr->A; a++)
        loader_next(&tr->data.loader, tr->B, tr->row0, tr->Bl, tr->in + a * bt,
                    tr->tg + a * bt);
    bool none;
    const double denom = lm_denominator(tr, &none);
    if (none && comm->rank == 0)
        logger_warn(lg, "step %ld: the global batch holds no completion token (every target "
                    "is a prompt token): no language-model gradient this step", step + 1);
    for (int a = 0; a < tr->A; a++) {
        tape_reset(&tr->tape, true);
        StepCtx ctx = {.train = true, .seed = (uint64_t)c->train.seed, .step = step,
                       .token_base = ((long)a * tr->B + tr->row0) * tr->T,
                       .loss_scale = 1.0f / (float)tr->A, .lm_denom = denom,
                       .recompute = c->train.recompute, .loss_chunk = c->train.loss_chunk};
        ModelOut out;
        model_forward(m, &tr->tape, tr->in + a * bt, tr->tg + a * bt, tr->Bl, tr->T, &ctx,
                      &out);
        /* the last backward finishes the gradients: its marks launch the reduction's
         * buckets (parallel/reduce.h); the earlier ones only accumulate */
        if (a == tr->A - 1) {
            grad_reduce_begin(&tr->gr, comm->size > 1);
            if (tr->gr.bucket && comm->size > 1) {
                tr->tape.hook = grad_reduce_hook;
                tr->tape.hook_ctx = &tr->gr;
            }
        }
        tape_backward(&tr->tape, out.loss, NULL);
        tr->tape.hook = NULL;
        sums[0] += out.lm_loss / tr->A;
        sums[1] += out.aux_loss / tr->A;
        sums[2] += out.z_loss / tr->A;
    }
    /* the rest of the reduction, and the wait for all of it */
    grad_reduce_finish(&tr->gr);
    /* Numerical health, checked once per step outside the kernels: a rank whose own loss or
     * gradients were not finite (its squares summed as each bucket left, before the
     * reduction mixed the ranks) says so, naming the tensors whose reduced gradients are
     * not finite. On one rank the reduce changes nothing, so the global norm below serves
     * (no second pass). */
    bool told = false;   /* this rank warned of its own values */
    if (comm->size > 1) {
        if (!isfinite(sums[0] + sums[1] + sums[2]) || !isfinite(tr->gr.local_sumsq)) {
            report_nonfinite(tr, lg, sums, false);
            told = true;
        }
    }
    if (comm->size > 1) {
        comm_sum_world_d(comm, sums, 3);
        for (int i = 0; i < 3; i++) sums[i] /= comm->size;
        /* logged statistics: counts are already global; drops, tokens and entropy are per
         * rank */
        comm_sum_world_d(comm, m->stats.dropped, (size_t)m->stats.L);
        comm_sum_world_d(comm, m->stats.tokens, (size_t)m->stats.L);
        comm_sum_world_d(comm, m->stats.entropy, (size_t)m->stats.L);
        for (int l = 0; l < m->stats.L; l++) m->stats.entropy[l] /= comm->size;
    }
    double gnorm = tr->zero_blocks ? zero_grad_norm(&m->ps, comm) : dp_grad_norm(&m->ps, comm);
    double loss = sums[0] + sums[1] + sums[2];
    bool skipped = !isfinite(loss) || !isfinite(gnorm);
    /* rank 0 gives the step's verdict (global sums; e.g. a norm that overflowed only in the
     * all-reduce) unless it already named its own values above */
    if (skipped && comm->rank == 0 && !told) report_nonfinite(tr, lg, sums, true);
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
        /* sharded: each rank updated its slices; everyone takes everyone's */
        if (tr->zero_blocks) zero_gather_params(&m->ps, comm);
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

/* Write RUN/checkpoints/step_N.h5 (rank 0; with expert parallelism rank 0 first gathers
 * every expert, values and moments, from EP group 0: parallel/ep_gather.h) with this
 * process's lineage and spike-detector state, then keep the newest checkpoint.keep of its
 * lineage (rundir_rotate). All ranks call this together. */
static int save_checkpoint(Trainer *tr, MoeErr *err) {
    const Config *c = tr->c;
    const Comm *comm = tr->comm;
    Model *m = &tr->model;
    const Model *src = m;
    const ParamBlock *eb = &m->ps.blocks[PBLOCK_EXPERT];
    /* sharded moments are gathered to full size for the file (transiently: cut again
     * below), so the file's layout does not depend on the rank count */
    if (tr->zero_blocks) zero_gather_moments(&m->ps, comm);
    /* an adapter checkpoint with frozen experts holds no experts: nothing to gather */
    if (comm->mpi && comm->ep > 1 && m->s.E > 0 && !(tr->lora && eb->gn == 0)) {
        ep_gather_experts(&m->ps, &tr->full.ps, tr->xfer, comm);
        if (comm->rank == 0) {
            Model *f = &tr->full;
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
    if (tr->zero_blocks) zero_shard(&m->ps, comm);
    if (comm_max_world_i(comm, bad)) {
        if (!bad) moe_errorf(err, "rank 0 failed to write a checkpoint");
        return -1;
    }
    return 0;
}

static volatile sig_atomic_t g_signal = 0;
static void on_signal(int sig) { g_signal = sig; }

/* Validation loss at the current step: printed and logged to eval.jsonl and metrics.jsonl
 * (rank 0). All ranks call this together and agree on rank 0's write verdict (-1 with err
 * on every rank when a write failed). */
static int eval_and_log(Trainer *tr, Logger *lg, bool root, MoeErr *err) {
    double t1 = moe_now();
    double vl = evaluate(tr);
    if (root && isnan(vl))
        logger_warn(lg, "step %ld: the validation windows hold no completion token to score "
                    "(data.sft: the loss counts completions only): val_loss is nan; raise "
                    "train.eval_batches", tr->step);
    int bad = root ? logger_eval(lg, tr->step, (long)tr->c->train.steps, tr->tokens_seen, vl,
                                 t1, err)
                   : 0;
    if (comm_max_world_i(tr->comm, bad)) {
        if (!root) moe_errorf(err, "rank 0 could not write the logs");
        return -1;
    }
    return 0;
}

/* Rank 0's opening lines: the model, the layout over the ranks, the machine, the data. */
static void print_banner(const Trainer *tr, double sgemm_gflops, double flops_tok) {
    const Config *c = tr->c;
    const Comm *comm = tr->comm;
    const ModelShape *shape = &tr->model.s;
    size_t n_total = params_count(&tr->model.ps, false) +
                     (size_t)(comm->ep - 1) * tr->model.ps.blocks[PBLOCK_EXPERT].n;
    printf("model: %s | %zu parameters (%.1f M), %.1f M active per token | %s\n",
           c->name, n_total, (double)n_total / 1e6, model_active_params(shape) / 1e6,
           shape->E > 0 ? "sparse MoE" : "dense");
    if (c->finetune.init_from) {
        /* every rank holds the dense tensors and 1/P of the experts */
        size_t n_train = 0;
        for (int i = 0; i < tr->model.ps.count; i++) {
            const Param *p = &tr->model.ps.p[i];
            if (p->trainable)
                n_train += p->t.n * (size_t)(p->block == PBLOCK_EXPERT ? comm->ep : 1);
        }
        printf("fine-tuning: %zu trainable parameters of %zu (%.3f%%)%s\n", n_train,
               n_total, 100.0 * (double)n_train / (double)n_total,
               tr->lora ? "; the rest is frozen (no gradients, no optimizer state)" : "");
    }
    printf("layout: %d rank(s), expert parallel %d (each rank holds %d of %d experts), "
           "%d sequence(s) per rank\n", comm->size, comm->ep,
           shape->E > 0 ? shape->E / comm->ep : 0, shape->E, tr->Bl);
    if (comm->size > 1) {
        const GradReduce *g = &tr->gr;
        char bk[64];
        if (g->bucket) snprintf(bk, sizeof bk, "%g MiB buckets during the backward",
                                (double)g->bucket * sizeof(float) / 1048576.0);
        else snprintf(bk, sizeof bk, "after the backward");
        printf("gradient reduction: %d node(s) x %d rank(s), %s (dense %s, experts %s), %s\n",
               comm->nodes, comm->hier ? comm->local_size : comm->size / comm->nodes,
               comm->hier && c->parallel.hierarchical ? "hierarchical" : "flat",
               grad_reduce_block_hier(g, PBLOCK_DENSE) ? "node first" : "flat",
               grad_reduce_block_hier(g, PBLOCK_EXPERT) ? "node first" : "flat", bk);
    }
    if (tr->model.exchange && (tr->ex.chunks > 1 || tr->ex.group.hier))
        printf("expert exchange: %d chunk(s) of local experts (parallel.a2a_chunks %d)%s\n",
               shape->E / comm->ep < tr->ex.chunks ? shape->E / comm->ep : tr->ex.chunks,
               c->parallel.a2a_chunks, tr->ex.group.hier ? ", two stages: within each node, "
               "then across nodes (parallel.hierarchical)" : "");
    if (c->parallel.shard_optimizer) {
        const ParamSet *ps = &tr->model.ps;
        const ParamBlock *d = &ps->blocks[PBLOCK_DENSE], *e = &ps->blocks[PBLOCK_EXPERT];
        if (!tr->zero_blocks)
            printf("optimizer: parallel.shard_optimizer is on but no block is replicated "
                   "over more than one rank (%d rank(s)): nothing to shard, a no-op\n",
                   comm->size);
        else
            printf("optimizer: sharded (ZeRO-1): AdamW moments of dense parameters split %s, "
                   "of experts %s; moments per rank %.3g MiB instead of %.3g MiB\n",
                   zero_block_sharded(ps, PBLOCK_DENSE) ? "over all ranks" : "nowhere",
                   zero_block_sharded(ps, PBLOCK_EXPERT) ? "over their expert-data-parallel "
                   "group" : "nowhere (not replicated)",
                   8.0 * (double)(d->shard_n + e->shard_n) / 1048576.0,
                   8.0 * (double)(d->gn + e->gn) / 1048576.0);
    }
    char how[768];
    gemm_describe(how, sizeof how);
    printf("compute: %s\n", how);
    printf("machine: %.1f GFLOP/s on this model's training-shaped products (%s %s); model "
           "%.3g FLOPs/token\n", sgemm_gflops, gemm_backend_name(gemm_backend()),
           gemm_precision_name(gemm_precision()), flops_tok);
    printf("data: %zu train windows of %d tokens, %zu validation windows | batch %d x %d "
           "x accum %d = %ld tokens/step\n", loader_train_windows(&tr->data.loader), tr->T,
           loader_val_windows(&tr->data.loader), tr->B, tr->T, tr->A,
           (long)tr->B * tr->T * tr->A);
    dataset_describe(&tr->data, stdout);
    const SftData *sd = &tr->data.sft;
    if (sd->n_records > 0) {
        const size_t n_train = tr->data.loader.src[0].n_train;
        size_t val_recs = 0;
        for (size_t r = 0; r < sd->n_records; r++) val_recs += sd->rec_end[r] > n_train;
        printf("sft: %zu records (%zu prompt/completion, %zu conversations) from %zu file(s), "
               "packed into %zu tokens, %zu of them trained on (%.1f%%: completions and their "
               "end-of-text; the rest is masked from the loss); validation: the last %zu "
               "records (%zu tokens)\n", sd->n_records, sd->n_pairs, sd->n_chats,
               c->data.n_sft, sd->n_tokens, sd->n_trained,
               100.0 * (double)sd->n_trained / (double)sd->n_tokens, val_recs,
               sd->n_tokens - n_train);
    }
    if (tr->model.doc_mask)
        printf("documents: a window's documents do not see each other; each begins at an "
               "end-of-text token (id %d) and counts its positions from 0 (data.doc_mask)\n",
               (int)tr->model.eot);
    fflush(stdout);
}

/* The warnings a run can give before its first step (rank 0). */
static void start_warnings(const Trainer *tr, const Logger *lg) {
    const Config *c = tr->c;
    if (tr->data.tok_warning[0]) logger_warn(lg, "%s", tr->data.tok_warning);
    if (c->train.steps < c->optim.warmup_steps)
        logger_warn(lg, "train.steps = %lld is below optim.warmup_steps = %lld: the run ends "
                    "inside the warmup, its learning rate peaks at %.3g instead of optim.lr = "
                    "%g (lower optim.warmup_steps, or raise train.steps)",
                    (long long)c->train.steps, (long long)c->optim.warmup_steps,
                    (double)lr_at(&tr->sched, (long)c->train.steps - 1), c->optim.lr);
}

int train_run(const Config *c, const Comm *comm, const TrainOptions *opt, MoeErr *err) {
    int rc = -1;
    Trainer tr;
    Logger lg;
    struct sigaction old_int, old_term, old_usr1;
    bool signals = false;
    memset(&lg, 0, sizeof lg);
    const bool root = comm->rank == 0;
    if ((rc = trainer_init(&tr, c, comm, opt->resume, opt->stop_at, err)) != 0) {
        if (rc == TRAINER_REFUSED) rc = TRAIN_REFUSED;
        goto fail;
    }
    rc = -1;
    /* the sharded optimizer cuts the moments (fresh or just resumed) into this rank's
     * slices */
    if (c->parallel.shard_optimizer) tr.zero_blocks = zero_shard(&tr.model.ps, comm);
    {
        int *final_at = moe_calloc(sizeof(int) * (size_t)(tr.model.ps.count + 1));
        model_grad_final_at(&tr.model, final_at);
        grad_reduce_init(&tr.gr, &tr.model.ps, comm,
                         grad_reduce_bucket_floats(c->parallel.bucket_mb, comm), final_at,
                         c->parallel.hierarchical);
        moe_free(final_at);
    }
    int bad = root ? logger_open(&lg, c, comm->mpi, err) : 0;
    if (comm_max_world_i(comm, bad)) {
        if (!root) moe_errorf(err, "rank 0 could not open the run directory");
        goto fail;
    }
    RunStart rs = {opt->argc, opt->argv, tr.from[0] ? tr.from : NULL, tr.step};
    if (runinfo_append(c->run.dir, &rs, comm, err)) goto fail;
    const ModelShape *shape = &tr.model.s;
    const double flops_tok = model_flops_per_token_lora(shape, &tr.model.lora, tr.T);
    /* MFU denominator: the machine's sgemm rate on this model's training-shaped products
     * (per-rank batch), measured once here with the thread count the run uses. */
    double sgemm_gflops = mfu_sgemm_rate(shape, tr.Bl * tr.T, 2);
    comm_sum_world_d(comm, &sgemm_gflops, 1);   /* the machine's aggregate over ranks */
    if (root) {
        print_banner(&tr, sgemm_gflops, flops_tok);
        start_warnings(&tr, &lg);
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
        train_step(&tr, &sl, &lg);
        if (tr.step == first_step + 1) tape_compact(&tr.tape);   /* plan once: see tensor.h */
        sl.dt = moe_now() - t0;
        sl.tok_s = (double)tr.B * tr.T * tr.A / sl.dt;
        sl.mfu = flops_tok * sl.tok_s / 1e9 / sgemm_gflops;
        sl.tflops = flops_tok * sl.tok_s / 1e12;
        bool last = tr.step == c->train.steps;
        bool print = tr.step % c->train.log_every == 0 || tr.step == 1 || last;
        bad = root ? logger_step(&lg, &sl, &tr.model, print, err) : 0;
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
    /* every line was flushed and checked as it was written; a failing close still fails */
    if (logger_close(&lg, rc == 0 ? err : NULL) && rc == 0) rc = -1;
    trainer_free(&tr);
    return rc;
}
