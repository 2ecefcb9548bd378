/* trainer.c: see trainer.h. */
#include "train/trainer.h"

#include "autograd/gemm.h"

#include <stdio.h>
#include <string.h>

#include "checkpoints/ckpt.h"
#include "checkpoints/finetune.h"
#include "checkpoints/upcycle.h"
#include "core/fs.h"

void trainer_free(Trainer *tr) {
    rundir_close(&tr->rd);   /* every write of the run is done: release the lock */
    grad_reduce_free(&tr->gr);
    if (tr->full.layer) model_free(&tr->full);
    exchange_free(&tr->ex);   /* before comm_finalize: frees the two-stage communicators */
    moe_free(tr->xfer);
    moe_free(tr->in);
    moe_free(tr->tg);
    tape_free(&tr->tape);
    if (tr->model.layer) model_free(&tr->model);
    dataset_free(&tr->data);
}

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
    /* the spike detector continues where it was (a file without its state: 0, 0, it
     * starts over) */
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

int trainer_init(Trainer *tr, const Config *c, const Comm *comm, const char *resume,
                 long stop_at, MoeErr *err) {
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
        return bad == 2 ? TRAINER_REFUSED : -1;
    }
    if (comm->mpi) MPI_Bcast(from, (int)sizeof from, MPI_CHAR, 0, comm->world);
    /* rank 0 prepares the data (tokenizer training, encoding) first; the others then open
     * what it made */
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
    /* the products' library and number format, before the first product */
    bad = gemm_select((GemmBackend)c->compute.gemm, (GemmPrecision)c->compute.precision, err);
    if (comm_max_world_i(comm, bad)) {
        if (!bad) moe_errorf(err, "another rank cannot run compute.gemm = %s, compute.precision"
                             " = %s", gemm_backend_name((GemmBackend)c->compute.gemm),
                             gemm_precision_name((GemmPrecision)c->compute.precision));
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
    /* documents begin at the tokenizer's end-of-text id (layers/model.h) */
    tr->model.doc_mask = c->data.doc_mask;
    tr->model.eot = tok_eot(&tr->data.tok);
    if (comm->size > 1 && shape.E > 0) {
        exchange_init(&tr->ex, comm, c->parallel.a2a_chunks, c->parallel.hierarchical);
        tr->model.exchange = &tr->ex;
    }
    tape_init(&tr->tape, 0);
    /* a step's A micro-batches are read before its first forward (train.c: the loss's
     * divisor counts every target of the step) */
    tr->in = moe_malloc(sizeof(int32_t) * (size_t)tr->A * tr->Bl * tr->T);
    tr->tg = moe_malloc(sizeof(int32_t) * (size_t)tr->A * tr->Bl * tr->T);
    tr->ac = (AdamWConfig){(float)c->optim.beta1, (float)c->optim.beta2, (float)c->optim.eps,
                           (float)c->optim.weight_decay};
    config_lr_schedule(c, &tr->sched);
    if (comm->rank == 0 && c->train.tokens > 0)   /* train.steps was derived from it */
        printf("budget: train.tokens %lld = %lld steps of %d x %d x %d = %ld tokens (%lld in "
               "all); the learning-rate schedule spans them\n", (long long)c->train.tokens,
               (long long)c->train.steps, tr->B, tr->T, tr->A, (long)tr->B * tr->T * tr->A,
               (long long)c->train.steps * tr->B * tr->T * tr->A);
    if (comm->rank == 0 && comm->ep > 1 && shape.E > 0 &&
        !(tr->lora && !lora_trains_expert_block(&lora))) {
        /* the store and scratch of ep_gather_experts (parallel/ep_gather.h): rank 0
         * assembles every expert here before writing a checkpoint (an adapter checkpoint
         * with frozen experts and no per-expert adapters holds none) */
        model_init_lora(&tr->full, &shape, &lora, 0, shape.E, (uint64_t)c->train.seed);
        tr->xfer = moe_malloc(3 * sizeof(float) * tr->model.ps.blocks[PBLOCK_EXPERT].n);
    }
    snprintf(tr->from, sizeof tr->from, "%s", from);
    if (!from[0]) return trainer_start(tr, c, comm, err);
    bad = check_resume_config(c, from, comm->rank == 0, err) || trainer_resume(tr, from, err);
    if (comm_max_world_i(comm, bad)) {
        if (!bad) moe_errorf(err, "another rank failed to resume from %s", from);
        return -1;
    }
    if (comm->rank == 0) printf("resumed from %s at step %ld\n", from, tr->step);
    if (stop_at > 0 && stop_at <= tr->step) {   /* the same verdict on every rank */
        moe_errorf(err, "--stop-at %ld is not after step %ld, where %s resumes", stop_at,
                   tr->step, from);
        moe_hintf(err, "give a --stop-at above %ld (or leave it out to train to train.steps = "
                  "%ld)", tr->step, (long)c->train.steps);
        return TRAINER_REFUSED;
    }
    return 0;
}
