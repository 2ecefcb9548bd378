/* testutil.c: see testutil.h. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

Tensor *tt_tensor(int ndim, const int *shape, TensorKind kind, const char *name) {
    Tensor *t = moe_calloc(sizeof(Tensor));
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    float *data = moe_calloc((n ? n : 1) * sizeof(float));
    float *grad = kind == TENSOR_PARAM ? moe_calloc((n ? n : 1) * sizeof(float)) : NULL;
    tensor_view(t, data, grad, ndim, shape, kind, name);
    return t;
}

Tensor *tt_tensor2(int rows, int cols, TensorKind kind, const char *name) {
    int shape[2] = {rows, cols};
    return tt_tensor(2, shape, kind, name);
}

void tt_free(Tensor *t) {
    if (!t) return;
    moe_free(t->data);
    moe_free(t->grad);
    moe_free(t);
}

void tt_fill_uniform(Tensor *t, uint64_t seed, float lo, float hi) {
    MoeRng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < t->n; i++) t->data[i] = lo + (hi - lo) * (float)rng_uniform(&r);
}

void tt_fill_normal(Tensor *t, uint64_t seed, float std) {
    MoeRng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < t->n; i++) t->data[i] = std * rng_normal(&r);
}

static double weighted_sum(const Tensor *out, const float *r) {
    double s = 0;
    for (size_t j = 0; j < out->n; j++) s += (double)r[j] * (double)out->data[j];
    return s;
}

int tt_check_grad(TTBuild build, void *ctx, Tensor **inputs, int n_inputs, float h,
                  double atol, double rtol, const char *label) {
    Tape tape;
    tape_init(&tape, (size_t)1 << 20);
    for (int i = 0; i < n_inputs; i++)
        if (inputs[i]->grad) memset(inputs[i]->grad, 0, inputs[i]->n * sizeof(float));

    tape_reset(&tape, true);
    Tensor *out = build(&tape, inputs, ctx);
    size_t n_out = out->n;
    float *r = moe_malloc(n_out * sizeof(float));
    MoeRng rng;
    rng_seed(&rng, 12345);
    for (size_t j = 0; j < n_out; j++) r[j] = (float)(2.0 * rng_uniform(&rng) - 1.0);
    tape_backward(&tape, out, r);

    int bad = 0;
    for (int i = 0; i < n_inputs; i++) {
        Tensor *x = inputs[i];
        if (x->kind != TENSOR_PARAM) continue;
        for (size_t j = 0; j < x->n; j++) {
            float keep = x->data[j];
            x->data[j] = keep + h;
            tape_reset(&tape, false);
            double fp = weighted_sum(build(&tape, inputs, ctx), r);
            x->data[j] = keep - h;
            tape_reset(&tape, false);
            double fm = weighted_sum(build(&tape, inputs, ctx), r);
            x->data[j] = keep;
            double num = (fp - fm) / (2.0 * (double)h);
            double ana = (double)x->grad[j];
            if (!(fabs(ana - num) <= atol + rtol * fabs(num))) {
                if (bad < 5)
                    fprintf(stderr, "%s: d%s[%zu]: analytic %.6g numeric %.6g\n", label,
                            x->name ? x->name : "?", j, ana, num);
                bad++;
            }
        }
    }
    moe_free(r);
    tape_free(&tape);
    return bad;
}

double tt_max_err(const float *a, const float *b, size_t n, double atol, double rtol) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]) / (atol + rtol * fabs((double)b[i]));
        if (isnan(e)) return HUGE_VAL;   /* a NaN anywhere is a failure */
        if (e > worst) worst = e;
    }
    return worst;
}

const char *tt_source_path(const char *rel) {
    static char buf[4096];
    const char *root = getenv("MOE_SOURCE_DIR");
    if (!root) {
        fprintf(stderr, "MOE_SOURCE_DIR is not set: run the tests through ctest\n");
        exit(2);
    }
    snprintf(buf, sizeof buf, "%s/%s", root, rel);
    return buf;
}

void tt_poison_arena(Tape *t, size_t n, bool record) {
    tape_reset(t, record);
    float *p = arena_floats(&t->arena, n);
    for (size_t j = 0; j < n; j++) p[j] = NAN;
    tape_reset(t, record);
}
