/* ops_rope.c: rotary position embedding, op_rope and op_rope_inplace (autograd/ops.h), in
 * the rotate-half layout of Hugging Face Llama/Mixtral (dimension i pairs with i + D/2).
 *
 * The cos/sin table (T, D/2) of positions pos0 .. pos0+T-1 is built per call from angles
 * formed in double, and saved for backward, which applies the inverse rotation. With
 * packed documents (op_rope_docs) token t reads the table row of t - start[t], its
 * position inside its document, so the positions restart at 0 with each document.
 * Single-threaded.
 * Non-goals: interleaved (GPT-J) pairing, scaled or extended-context frequency schedules,
 * per-sequence position offsets.
 * Reference: Su et al. 2021, "RoFormer", sec. 3.4.2 (eq. 34).
 */
#include "autograd/ops.h"

#include "autograd/ops_internal.h"

#include <math.h>

/* ---------------- rope ---------------- */

/* cos/sin table (T, D/2) for positions pos0 .. pos0+T-1. Angle pos * base^(-2i/D) is formed
 * in double: at pos ~ 1e5 a float angle would already be off by ~1e-2 rad. */
static void rope_table(float *cs, float *sn, int T, int D, float base, int pos0) {
    int half = D / 2;
    for (int tt = 0; tt < T; tt++) {
        double pos = (double)pos0 + tt;
        for (int i = 0; i < half; i++) {
            double ang = pos * pow((double)base, -2.0 * i / D);
            cs[(size_t)tt * half + i] = (float)cos(ang);
            sn[(size_t)tt * half + i] = (float)sin(ang);
        }
    }
}

/* Table row of token (b, tt): tt, or tt - start[b*T + tt] with documents (start non-NULL). */
static inline size_t rope_row(const int32_t *start, int b, int T, int tt) {
    return (size_t)(start ? tt - start[(size_t)b * T + tt] : tt);
}

/* x, y (B*T, nh*D): y[i] = x[i] c - x[i+h] s, y[i+h] = x[i+h] c + x[i] s, h = D/2, with
 * the cos/sin of the token's table row. y == x is allowed (in place). */
static void rope_forward(float *y, const float *x, const float *cs, const float *sn,
                         const int32_t *start, int B, int T, int nh, int D) {
    int half = D / 2;
    for (int b = 0; b < B; b++)
        for (int tt = 0; tt < T; tt++) {
            const size_t row = rope_row(start, b, T, tt);
            const float *c = cs + row * half, *s = sn + row * half;
            for (int h = 0; h < nh; h++) {
                size_t off = (((size_t)b * T + tt) * nh + h) * D;
                const float *xa = x + off, *xb = xa + half;
                float *ya = y + off, *yb = ya + half;
                for (int i = 0; i < half; i++) {
                    const float u = xa[i], w = xb[i];   /* both read first: y may be x */
                    ya[i] = u * c[i] - w * s[i];
                    yb[i] = w * c[i] + u * s[i];
                }
            }
        }
}

/* Inverts the rotation (its transpose): dx[i] += dy[i] c + dy[i+h] s,
 * dx[i+h] += -dy[i] s + dy[i+h] c. */
static void rope_backward(float *dx, const float *dy, const float *cs, const float *sn,
                          const int32_t *start, int B, int T, int nh, int D) {
    int half = D / 2;
    for (int b = 0; b < B; b++)
        for (int tt = 0; tt < T; tt++) {
            const size_t row = rope_row(start, b, T, tt);
            const float *c = cs + row * half, *s = sn + row * half;
            for (int h = 0; h < nh; h++) {
                size_t off = (((size_t)b * T + tt) * nh + h) * D;
                const float *da = dy + off, *db = da + half;
                float *xa = dx + off, *xb = xa + half;
                for (int i = 0; i < half; i++) {
                    xa[i] += da[i] * c[i] + db[i] * s[i];
                    xb[i] += -da[i] * s[i] + db[i] * c[i];
                }
            }
        }
}

static void op_rope_bw(TapeOp *op) {
    float *dx = grad_of(op->in[0]);
    if (dx)
        rope_backward(dx, op->out->grad, (const float *)op->aux[0], (const float *)op->aux[1],
                      (const int32_t *)op->aux[2], op->i[0], op->i[1], op->i[2], op->i[3]);
}

static Tensor *rope(Tape *t, Tensor *x, int B, int T, int nh, int D, float base, int pos0,
                    const int32_t *start, bool in_place) {
    ASSERT(B >= 0 && T >= 0 && nh > 0 && D > 0, "rope: B %d T %d nh %d D %d", B, T, nh, D);
    ASSERT(D % 2 == 0, "rope: head dim D = %d must be even", D);
    ASSERT(base > 0.0f, "rope: base %g", (double)base);
    ASSERT(pos0 >= 0, "rope: pos0 %d", pos0);
    ASSERT(tensor_rows(x) == (size_t)B * T && tensor_cols(x) == nh * D,
           "rope: x is (%zu, %d), expected (%d, %d)", tensor_rows(x), tensor_cols(x), B * T,
           nh * D);
    if (start) op_doc_starts_check(start, B, T);
    bool needs = tape_needs_grad(t, x, NULL, NULL);
    Tensor *y;
    if (in_place) {
        /* a new header on x's data: y has its own grad, x's values are gone */
        y = arena_alloc(&t->arena, sizeof(Tensor));
        tensor_view(y, x->data, NULL, x->ndim, x->shape, TENSOR_ACT, NULL);
        y->requires_grad = needs;
    } else {
        y = tape_like(t, x, needs);
    }
    size_t tab = (size_t)T * (D / 2);
    float *cs = arena_floats(&t->arena, tab), *sn = arena_floats(&t->arena, tab);
    rope_table(cs, sn, T, D, base, pos0);
    rope_forward(y->data, x->data, cs, sn, start, B, T, nh, D);
    if (needs) {
        TapeOp *op = tape_push(t, "rope", op_rope_bw, y);
        op->in[0] = x;
        op->i[0] = B;
        op->i[1] = T;
        op->i[2] = nh;
        op->i[3] = D;
        op->i[4] = pos0;
        op->f[0] = (double)base;
        op->aux[0] = cs;
        op->aux[1] = sn;
        op->aux[2] = (void *)start;   /* borrowed, NULL without documents */
    }
    return y;
}

Tensor *op_rope(Tape *t, Tensor *x, int B, int T, int nh, int D, float base, int pos0) {
    return rope(t, x, B, T, nh, D, base, pos0, NULL, false);
}

Tensor *op_rope_inplace(Tape *t, Tensor *x, int B, int T, int nh, int D, float base, int pos0) {
    return rope(t, x, B, T, nh, D, base, pos0, NULL, true);
}

Tensor *op_rope_docs(Tape *t, Tensor *x, int B, int T, int nh, int D, float base,
                     const int32_t *start, bool in_place) {
    return rope(t, x, B, T, nh, D, base, 0, start, in_place);
}
