/* ops_reduce.c: the reductions of autograd/ops.h, op_sum and op_mean (all elements ->
 * a scalar (1)), summed in double on one thread in index order.
 * Non-goals: reductions along one axis.
 */
#include "autograd/ops.h"

#include "autograd/ops_internal.h"

/* ---------------- sum / mean ---------------- */

/* Sum of n floats in double (a float running sum loses ~n * 2^-24 relative). */
static double sum_forward(const float *x, size_t n) {
    double s = 0.0;
    for (size_t j = 0; j < n; j++) s += (double)x[j];
    return s;
}

/* Inverts y = k * sum(x): dx += k dy. */
static void sum_backward(float *dx, float dyk, size_t n) {
    for (size_t j = 0; j < n; j++) dx[j] += dyk;
}

static void op_sum_bw(TapeOp *op) {
    float *dx = grad_of(op->in[0]);
    if (dx) sum_backward(dx, (float)((double)op->out->grad[0] * op->f[0]), op->in[0]->n);
}

static Tensor *sum_scaled(Tape *t, Tensor *x, double k, const char *name) {
    bool needs = tape_needs_grad(t, x, NULL, NULL);
    Tensor *y = tape_scalar(t, needs);
    y->data[0] = (float)(k * sum_forward(x->data, x->n));
    if (needs) {
        TapeOp *op = tape_push(t, name, op_sum_bw, y);
        op->in[0] = x;
        op->f[0] = k;
    }
    return y;
}

Tensor *op_sum(Tape *t, Tensor *x) { return sum_scaled(t, x, 1.0, "sum"); }

Tensor *op_mean(Tape *t, Tensor *x) {
    ASSERT(x->n > 0, "mean of an empty tensor");
    return sum_scaled(t, x, 1.0 / (double)x->n, "mean");
}
