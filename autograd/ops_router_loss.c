/* ops_router_loss.c: the router's auxiliary losses (autograd/ops.h): op_load_balance (and
 * op_load_balance_rows: per-sequence or step-wide f, sigmoid affinities), op_zloss and
 * op_router_entropy, scalars (1) added to the training loss, and the stable
 * row softmax they and the router gates share (softmax_row, logsumexp_row,
 * ops_internal.h).
 *
 * Each loss is a sum over the N rows of (N, E) router logits, accumulated in double in row
 * order on one thread (O(N E) work, small next to the expert GEMMs).
 * The entropy penalty (mean -sum_i p_i ln p_i of the router distribution) pushes each
 * token's probability onto few experts, so that top-p routing does not spread evenly over
 * all of them.
 * Non-goals: the gates themselves (ops_moe.c, ops_route.c), the fraction of routed slots
 * per expert (counted by layers/moe.c and passed in).
 * References: Fedus et al. 2022, "Switch Transformers", eq. 4 (load balancing);
 * DeepSeek-V3 (arXiv:2412.19437) eqs. 17-20 (sequence-wise balance, normalised sigmoid
 * affinities); Zoph et al. 2022, "ST-MoE", eq. 5 (router z-loss); Huang et al. 2024,
 * "Harder Tasks Need More Experts" (arXiv:2403.07652), sec. 3 (the entropy "dynamic loss").
 */
#include "autograd/ops.h"

#include "autograd/ops_internal.h"

#include <math.h>
#include <string.h>

/* ---------------- row softmax (ops_internal.h) ---------------- */

/* logsumexp(x (E)) = m + log sum_j exp(x_j - m), m the row max: every exp <= 1. */
double logsumexp_row(const float *x, int E) {
    float m = x[0];
    for (int j = 1; j < E; j++) m = x[j] > m ? x[j] : m;
    double sum = 0.0;
    for (int j = 0; j < E; j++) sum += exp((double)(x[j] - m));
    return (double)m + log(sum);
}

/* p (E) = exp(x - m) / sum, m the row max, the sum in double; returns m + log(sum). */
double softmax_row(const float *x, int E, float *p) {
    float m = x[0];
    for (int j = 1; j < E; j++) m = x[j] > m ? x[j] : m;
    double sum = 0.0;
    for (int j = 0; j < E; j++) {
        p[j] = expf(x[j] - m);
        sum += (double)p[j];
    }
    const float inv = (float)(1.0 / sum);
    for (int j = 0; j < E; j++) p[j] *= inv;
    return (double)m + log(sum);
}

/* ---------------- load balance ---------------- */

/* The load-balancing gradient reuses the forward's softmax rows (kept in the arena, N E
 * floats) instead of recomputing them: the same softmax_row of the same logits, so the
 * same bits, without the backward's expf. */
static void load_balance_backward(TapeOp *op) {
    Tensor *logits = op->in[0];
    if (!logits->requires_grad) return;
    const float *f = op->aux[0];   /* (E) */
    const float *p = op->aux[1];   /* (N, E) softmax rows of the forward */
    const size_t N = tensor_rows(logits);
    const int E = tensor_cols(logits);
    const float c = op->out->grad[0] * (float)op->f[0];
    for (size_t n = 0; n < N; n++) {
        const float *pn = p + n * E;
        /* out = scale sum_i f_i p_ni, p = softmax  =>  dx_nj = scale p_nj (f_j - <f, p_n>). */
        double fp = 0.0;
        for (int i = 0; i < E; i++) fp += (double)f[i] * (double)pn[i];
        float *dx = logits->grad + n * E;
        for (int j = 0; j < E; j++) dx[j] += c * pn[j] * (f[j] - (float)fp);
    }
}

Tensor *op_load_balance(Tape *t, Tensor *logits, const float *f, float scale) {
    const size_t N = tensor_rows(logits);
    const int E = tensor_cols(logits);
    const bool need = tape_needs_grad(t, logits, NULL, NULL);
    Tensor *out = tape_tensor2(t, 1, 1, need);
    float *fc = arena_floats(&t->arena, (size_t)E);   /* (E) copy: caller's f may change */
    memcpy(fc, f, sizeof(float) * E);
    float *p = arena_floats(&t->arena, N * E + 1);    /* (N, E) softmax rows */
    double total = 0.0;
    for (size_t n = 0; n < N; n++) {
        float *pn = p + n * E;
        softmax_row(logits->data + n * E, E, pn);
        for (int i = 0; i < E; i++) total += (double)fc[i] * (double)pn[i];
    }
    out->data[0] = (float)((double)scale * total);
    if (need) {
        TapeOp *op = tape_push(t, "load_balance", load_balance_backward, out);
        op->in[0] = logits;
        op->f[0] = (double)scale;
        op->aux[0] = fc;
        op->aux[1] = p;
    }
    return out;
}

/* ---------------- load balance, per-group f, softmax or sigmoid affinities ---------------- */

static void load_balance_rows_backward(TapeOp *op) {
    Tensor *logits = op->in[0];
    if (!logits->requires_grad) return;
    const float *f = op->aux[0];   /* (N / rows, E) */
    const float *q = op->aux[1];   /* (N, E) affinities of the forward */
    const float *S = op->aux[2];   /* (N) sigmoid: sum_j sigmoid(x_nj); NULL for softmax */
    const size_t N = tensor_rows(logits);
    const int E = tensor_cols(logits), rows = op->i[0];
    const float c = op->out->grad[0] * (float)op->f[0];
    for (size_t n = 0; n < N; n++) {
        const float *qn = q + n * E, *fn = f + (n / (size_t)rows) * E;
        double fq = 0.0;
        for (int i = 0; i < E; i++) fq += (double)fn[i] * (double)qn[i];
        float *dx = logits->grad + n * E;
        if (!S) {   /* as load_balance_backward */
            for (int j = 0; j < E; j++) dx[j] += c * qn[j] * (fn[j] - (float)fq);
            continue;
        }
        /* q_i = s_i / S: dq_i/dx_j = s_j (1 - s_j) / S (delta_ij - q_i), with s_j = q_j S */
        for (int j = 0; j < E; j++) {
            const float s = qn[j] * S[n];
            dx[j] += c * s * (1.0f - s) / S[n] * (fn[j] - (float)fq);
        }
    }
}

Tensor *op_load_balance_rows(Tape *t, Tensor *logits, const float *f, int rows, bool sigmoid,
                             float scale) {
    const size_t N = tensor_rows(logits);
    const int E = tensor_cols(logits);
    ASSERT(rows >= 1 && N % (size_t)rows == 0, "rows %d do not divide N = %zu", rows, N);
    const size_t G = N / (size_t)rows;
    const bool need = tape_needs_grad(t, logits, NULL, NULL);
    Tensor *out = tape_tensor2(t, 1, 1, need);
    float *fc = arena_floats(&t->arena, G * E + 1);   /* (G, E) copy: f may change */
    memcpy(fc, f, sizeof(float) * G * E);
    float *q = arena_floats(&t->arena, N * E + 1);    /* (N, E) affinities */
    float *S = sigmoid ? arena_floats(&t->arena, N + 1) : NULL;   /* (N) */
    double total = 0.0;
    for (size_t n = 0; n < N; n++) {
        const float *x = logits->data + n * E;
        float *qn = q + n * E;
        const float *fn = fc + (n / (size_t)rows) * E;
        if (sigmoid) {
            double s = 0.0;
            for (int i = 0; i < E; i++) {
                qn[i] = 1.0f / (1.0f + expf(-x[i]));
                s += (double)qn[i];
            }
            const float inv = (float)(1.0 / s);
            for (int i = 0; i < E; i++) qn[i] *= inv;
            S[n] = (float)s;
        } else {
            softmax_row(x, E, qn);
        }
        for (int i = 0; i < E; i++) total += (double)fn[i] * (double)qn[i];
    }
    out->data[0] = (float)((double)scale * total);
    if (need) {
        TapeOp *op = tape_push(t, "load_balance_rows", load_balance_rows_backward, out);
        op->in[0] = logits;
        op->i[0] = rows;
        op->f[0] = (double)scale;
        op->aux[0] = fc;
        op->aux[1] = q;
        op->aux[2] = S;
    }
    return out;
}

/* ---------------- z-loss ---------------- */

static void zloss_backward(TapeOp *op) {
    Tensor *logits = op->in[0];
    if (!logits->requires_grad) return;
    const float *lse = op->aux[0];   /* (N) */
    const size_t N = tensor_rows(logits);
    const int E = tensor_cols(logits);
    const float c = op->out->grad[0] * (float)op->f[0];
    for (size_t n = 0; n < N; n++) {
        /* out = scale sum_n lse_n^2, d lse_n / dx_nj = p_nj  =>  dx_nj = 2 scale lse_n p_nj. */
        const float *x = logits->data + n * E;
        float *dx = logits->grad + n * E;
        const float a = 2.0f * c * lse[n];
        for (int j = 0; j < E; j++) dx[j] += a * expf(x[j] - lse[n]);
    }
}

Tensor *op_zloss(Tape *t, Tensor *logits, float scale) {
    const size_t N = tensor_rows(logits);
    const int E = tensor_cols(logits);
    const bool need = tape_needs_grad(t, logits, NULL, NULL);
    Tensor *out = tape_tensor2(t, 1, 1, need);
    float *lse = need ? arena_floats(&t->arena, N ? N : 1) : NULL;   /* (N) */
    double total = 0.0;
    for (size_t n = 0; n < N; n++) {
        const float *x = logits->data + n * E;
        const double l = logsumexp_row(x, E);
        total += l * l;
        if (lse) lse[n] = (float)l;
    }
    out->data[0] = (float)((double)scale * total);
    if (need) {
        TapeOp *op = tape_push(t, "zloss", zloss_backward, out);
        op->in[0] = logits;
        op->f[0] = (double)scale;
        op->aux[0] = lse;
    }
    return out;
}

/* ---------------- router entropy ---------------- */

static void router_entropy_backward(TapeOp *op) {
    Tensor *logits = op->in[0];
    if (!logits->requires_grad) return;
    const float *lse = op->aux[0], *ent = op->aux[1];   /* (N) each */
    const size_t N = tensor_rows(logits);
    const int E = tensor_cols(logits);
    const float c = op->out->grad[0] * (float)op->f[0];
    for (size_t n = 0; n < N; n++) {
        /* out = scale sum_n H_n, H = -sum_i p_i ln p_i, p = softmax(x):
         * dH/dx_j = -p_j (ln p_j + H), with ln p_j = x_j - lse (finite even when p_j
         * underflows to 0). */
        const float *x = logits->data + n * E;
        float *dx = logits->grad + n * E;
        for (int j = 0; j < E; j++) {
            const float lp = x[j] - lse[n];
            dx[j] -= c * expf(lp) * (lp + ent[n]);
        }
    }
}

Tensor *op_router_entropy(Tape *t, Tensor *logits, float scale) {
    const size_t N = tensor_rows(logits);
    const int E = tensor_cols(logits);
    const bool need = tape_needs_grad(t, logits, NULL, NULL);
    Tensor *out = tape_tensor2(t, 1, 1, need);
    float *lse = need ? arena_floats(&t->arena, N ? N : 1) : NULL;   /* (N) */
    float *ent = need ? arena_floats(&t->arena, N ? N : 1) : NULL;   /* (N) */
    double total = 0.0;
    for (size_t n = 0; n < N; n++) {
        const float *x = logits->data + n * E;
        const double l = logsumexp_row(x, E);
        double hn = 0.0;   /* -sum p ln p with ln p = x - lse */
        for (int j = 0; j < E; j++) {
            const double lp = (double)x[j] - l;
            hn -= exp(lp) * lp;
        }
        total += hn;
        if (need) {
            lse[n] = (float)l;
            ent[n] = (float)hn;
        }
    }
    out->data[0] = (float)((double)scale * total);
    if (need) {
        TapeOp *op = tape_push(t, "router_entropy", router_entropy_backward, out);
        op->in[0] = logits;
        op->f[0] = (double)scale;
        op->aux[0] = lse;
        op->aux[1] = ent;
    }
    return out;
}
