/* logger.c: see logger.h. */
#include "train/logger.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/fs.h"
#include "layers/router_bias.h"
#include "train/metrics.h"

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

/* Seconds since 1970-01-01 UTC (METRIC_TIME). */
static double wall_time(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The step line of metrics.jsonl (not flushed); schema in metrics.h. */
static void write_step_line(FILE *f, const StepLog *s, const Model *m) {
    const MoeStats *st = &m->stats;
    double share[1024];
    fprintf(f, "{\"%s\":%ld,\"%s\":%ld,\"%s\":%.3f", METRIC_STEP, s->step, METRIC_TOKENS,
            s->tokens_seen, METRIC_TIME, wall_time());
    const char *names[] = {METRIC_LOSS, METRIC_LM_LOSS, METRIC_AUX_LOSS, METRIC_Z_LOSS,
                           METRIC_LR, METRIC_GRAD_NORM, METRIC_TOKENS_PER_S, METRIC_MFU,
                           METRIC_STEP_TIME, METRIC_MODEL_TFLOPS};
    const double vals[] = {s->loss, s->lm, s->aux, s->z, s->lr, s->gnorm, s->tok_s, s->mfu,
                           s->dt, s->tflops};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        if (isfinite(vals[i])) fprintf(f, ",\"%s\":%.6g", names[i], vals[i]);
        else fprintf(f, ",\"%s\":null", names[i]);
    }
    fprintf(f, ",\"%s\":%s,\"%s\":%s", METRIC_SKIPPED, s->skipped ? "true" : "false",
            METRIC_GRAD_SPIKE, s->spike ? "true" : "false");
    if (st->E > 0 && st->E <= 1024) {
        fprintf(f, ",\"%s\":[", METRIC_EXPERT_LOAD);
        for (int l = 0; l < st->L; l++) {
            double mom;
            layer_load(st, l, share, &mom);
            fprintf(f, "%s[", l ? "," : "");
            for (int e = 0; e < st->E; e++) fprintf(f, "%s%.4f", e ? "," : "", share[e]);
            fprintf(f, "]");
        }
        fprintf(f, "],\"%s\":[", METRIC_LOAD_MAX_OVER_MEAN);
        for (int l = 0; l < st->L; l++) {
            double mom;
            layer_load(st, l, share, &mom);
            fprintf(f, "%s%.4f", l ? "," : "", mom);
        }
        fprintf(f, "],\"%s\":[", METRIC_DROPPED);
        for (int l = 0; l < st->L; l++) fprintf(f, "%s%.0f", l ? "," : "", st->dropped[l]);
        fprintf(f, "],\"%s\":[", METRIC_ROUTER_ENTROPY);
        for (int l = 0; l < st->L; l++)
            fprintf(f, "%s%.4f", l ? "," : "", st->calls ? st->entropy[l] / st->calls : 0.0);
        fprintf(f, "],\"%s\":[", METRIC_EXPERTS_PER_TOKEN);
        for (int l = 0; l < st->L; l++)
            fprintf(f, "%s%.4f", l ? "," : "", st->calls ? st->experts[l] / st->calls : 0.0);
        fprintf(f, "]");
        if (m->use_router_bias) {
            fprintf(f, ",\"%s\":[", METRIC_ROUTER_BIAS_MAX);
            for (int l = 0; l < st->L; l++)
                fprintf(f, "%s%.4g", l ? "," : "",
                        router_bias_max_abs(m->router_bias + (size_t)l * st->E, st->E));
            fprintf(f, "]");
        }
    }
    fprintf(f, "}\n");
}

void logger_warn(const Logger *lg, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (lg && lg->tty) {   /* the bar is on stdout's current line: clear it first */
        printf("\r\033[K");
        fflush(stdout);
    }
    fprintf(stderr, "warning: %s\n", msg);
    fflush(stderr);
}

/* The layer with the highest load max/mean (its index and value). */
static int worst_load(const MoeStats *st, double *share, double *worst) {
    int at = 0;
    *worst = 0;
    for (int l = 0; l < st->L; l++) {
        double mom;
        layer_load(st, l, share, &mom);
        if (mom > *worst) { *worst = mom; at = l; }
    }
    return at;
}

/* The layer with the highest share dropped: of its routed slots (expert choice: of its
 * tokens, which no expert chose); its index and the share. */
static int worst_drop(const MoeStats *st, bool expert_choice, double *worst) {
    int at = 0;
    *worst = 0;
    for (int l = 0; l < st->L; l++) {
        double of = 0;
        if (expert_choice) of = st->tokens[l];
        else for (int e = 0; e < st->E; e++) of += st->count[(size_t)l * st->E + e];
        double frac = of > 0 ? st->dropped[l] / of : 0;
        if (frac > *worst) { *worst = frac; at = l; }
    }
    return at;
}

/* " (L3)" after a per-layer figure; nothing for a one-layer model. */
static void layer_tag(int L, int l, char *out, size_t cap) {
    if (L > 1) snprintf(out, cap, " (L%d)", l);
    else out[0] = 0;
}

/* The per-layer block of train.log_experts. */
static void print_expert_block(const Model *m) {
    const MoeStats *st = &m->stats;
    double share[1024];
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

/* The warnings of this step: a gradient-norm spike; a layer above train.warn_dropped. The
 * drops are warned of once until they fall to half the threshold: a run that keeps
 * dropping, or hovers around the threshold, does not print a warning every few steps. */
static void step_warnings(Logger *lg, const StepLog *s, const Model *m) {
    if (s->spike)
        logger_warn(lg, "step %ld: gradient norm %.3g is %.1fx its running mean %.3g "
                    "(train.spike_factor %g)", s->step, s->gnorm, s->gnorm / s->gnorm_mean,
                    s->gnorm_mean, lg->spike_factor);
    const MoeStats *st = &m->stats;
    const bool ec = m->s.router == MOE_ROUTER_EXPERT_CHOICE;
    if (st->E <= 0 || !(m->s.capacity_factor > 0 || ec)) return;
    double frac;
    int l = worst_drop(st, ec, &frac);
    if (frac <= lg->warn_dropped) {
        if (frac <= 0.5 * lg->warn_dropped) lg->drop_warned = false;
        return;
    }
    if (lg->drop_warned) return;
    lg->drop_warned = true;
    if (ec)
        logger_warn(lg, "step %ld: layer %d left %.1f%% of its tokens unchosen by every expert "
                    "(more than train.warn_dropped = %g); raise moe.capacity_factor; not "
                    "repeated until it falls to half that", s->step, l, 100 * frac,
                    lg->warn_dropped);
    else
        logger_warn(lg, "step %ld: layer %d dropped %.1f%% of its routed slots at the capacity "
                    "limit (more than train.warn_dropped = %g); raise moe.capacity_factor (0 = "
                    "dropless) or moe.aux_loss_coef; not repeated until it falls to half that",
                    s->step, l, 100 * frac, lg->warn_dropped);
}

/* "12.3 GFLOP/s" or "1.23 TFLOP/s". */
static void fmt_flops(double tflops, char *out, size_t cap) {
    if (tflops >= 1) snprintf(out, cap, "%.2f TFLOP/s", tflops);
    else snprintf(out, cap, "%.1f GFLOP/s", 1e3 * tflops);
}

/* The terminal line of a log step (see logger.h for what it holds and leaves out). */
static void print_step_line(const StepLog *s, const Model *m, const char *eta) {
    const MoeStats *st = &m->stats;
    const ModelShape *sh = &m->s;
    const bool moe = st->E > 0 && st->E <= 1024;
    const bool ec = sh->router == MOE_ROUTER_EXPERT_CHOICE;
    /* the loss terms that apply: expert choice has no load-balancing loss */
    const bool aux = sh->E > 0 && !ec && (sh->aux_coef > 0 ||
                     (sh->router == MOE_ROUTER_TOPP && sh->entropy_coef > 0));
    const bool z = sh->E > 0 && sh->z_coef > 0;
    char terms[96] = "", rate[32], tail[256] = "";
    if (aux || z) {
        size_t n = (size_t)snprintf(terms, sizeof terms, " (lm %.4f", s->lm);
        if (aux) n += (size_t)snprintf(terms + n, sizeof terms - n, " aux %.4f", s->aux);
        if (z) n += (size_t)snprintf(terms + n, sizeof terms - n, " z %.4f", s->z);
        snprintf(terms + n, sizeof terms - n, ")");
    }
    fmt_flops(s->tflops, rate, sizeof rate);
    if (moe) {
        double share[1024], mom, frac;
        char at[16], dat[16];
        int l = worst_load(st, share, &mom);
        layer_tag(st->L, l, at, sizeof at);
        size_t n = (size_t)snprintf(tail, sizeof tail, " | max/mean %.2f%s", mom, at);
        if (sh->capacity_factor > 0 || ec) {   /* tokens can be dropped */
            int d = worst_drop(st, ec, &frac);
            layer_tag(st->L, d, dat, sizeof dat);
            n += (size_t)snprintf(tail + n, sizeof tail - n, " | %s %.1f%%%s",
                                  ec ? "unchosen" : "dropped", 100 * frac, dat);
        }
        if (sh->router != MOE_ROUTER_TOPK && st->calls > 0) {   /* topk: always K */
            double ept = 0;
            for (int k = 0; k < st->L; k++) ept += st->experts[k] / st->calls;
            n += (size_t)snprintf(tail + n, sizeof tail - n, " | experts/token %.2f",
                                  ept / st->L);
        }
        if (m->use_router_bias) {   /* aux-loss-free balancing: the largest |b| */
            double bmax = 0;
            int bl = 0;
            for (int k = 0; k < st->L; k++) {
                double b = router_bias_max_abs(m->router_bias + (size_t)k * st->E, st->E);
                if (b > bmax) { bmax = b; bl = k; }
            }
            layer_tag(st->L, bl, dat, sizeof dat);
            snprintf(tail + n, sizeof tail - n, " | router bias %.3g%s", bmax, dat);
        }
    }
    printf("step %5ld/%ld | loss %.4f%s | lr %.2e | gnorm %.3f | %.0f tok/s | %s%s | eta %s%s\n",
           s->step, s->steps, s->loss, terms, s->lr, s->gnorm, s->tok_s, rate, tail, eta,
           s->skipped ? " | SKIPPED (non-finite)" : "");
}

int logger_step(Logger *lg, const StepLog *s, const Model *m, bool print, MoeErr *err) {
    write_step_line(lg->metrics, s, m);
    if (log_flush(lg->metrics, lg->metrics_path, err)) return -1;
    step_warnings(lg, s, m);

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
    print_step_line(s, m, eta);
    if (lg->log_experts && m->stats.E > 0 && m->stats.E <= 1024) print_expert_block(m);
    fflush(stdout);
    return 0;
}

/* A fresh start only gets here when the run directory held no metrics (rundir_open). */
int logger_open(Logger *lg, const Config *c, bool mpi, MoeErr *err) {
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
    lg->log_experts = c->train.log_experts;
    lg->warn_dropped = c->train.warn_dropped;
    lg->spike_factor = c->train.spike_factor;
    return 0;
}

int logger_eval(Logger *lg, long step, long steps, long tokens_seen, double val_loss,
                double t_eval_start, MoeErr *err) {
    if (lg->tty) printf("\r\033[K");
    printf("step %5ld/%ld | val_loss %.4f (ppl %.1f) | %.1f s\n", step, steps, val_loss,
           exp(val_loss), moe_now() - t_eval_start);
    fflush(stdout);
    const double now = wall_time();
    fprintf(lg->evals, "{\"%s\":%ld,\"%s\":%ld,\"%s\":%.3f,\"%s\":%.6g}\n", METRIC_STEP,
            step, METRIC_TOKENS, tokens_seen, METRIC_TIME, now, METRIC_VAL_LOSS, val_loss);
    if (log_flush(lg->evals, lg->evals_path, err)) return -1;
    fprintf(lg->metrics, "{\"%s\":%ld,\"%s\":%ld,\"%s\":%.3f,\"%s\":%.6g}\n", METRIC_STEP,
            step, METRIC_TOKENS, tokens_seen, METRIC_TIME, now, METRIC_VAL_LOSS, val_loss);
    return log_flush(lg->metrics, lg->metrics_path, err);
}

int logger_close(Logger *lg, MoeErr *err) {
    const char *unclosed = NULL;
    if (lg->metrics && fclose(lg->metrics) != 0) unclosed = lg->metrics_path;
    if (lg->evals && fclose(lg->evals) != 0) unclosed = lg->evals_path;
    lg->metrics = lg->evals = NULL;
    if (!unclosed) return 0;
    moe_errorf(err, "%s: close failed: %s", unclosed, strerror(errno));
    return moe_hintf(err, "check free disk space; the checkpoints are complete");
}
