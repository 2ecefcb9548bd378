/* expert_pipe.c: the pipelined exchange + experts op. See expert_pipe.h. */
#include "parallel/expert_pipe.h"

#include "autograd/expert_ffn.h"

#include <string.h>

/* What the backward needs besides the op's tensors (carved from the tape's arena). */
typedef struct PipeSaved {
    ExchangePlan *p;
    Tape *t;                   /* the tape whose scratch the backward borrows */
    float *xr;                 /* (M_recv, C) received rows, expert-major */
    float *h1, *h3;            /* (M_recv, F) */
    int32_t *order;            /* (El) local experts, busiest first, chunk by chunk */
    int *n_in;                 /* (G) experts of each chunk in order */
    A2a *flight;               /* (2 G) the backward's transfers */
} PipeSaved;

/* Transfers in flight, tested between products (the progress hook of expert_ffn). */
typedef struct PipeFlight {
    A2a *x;                    /* (2 G): dispatches, then combines */
    int n;
} PipeFlight;

static void pipe_progress(void *ctx) {
    PipeFlight *f = ctx;
    for (int i = 0; i < f->n; i++) a2a_test(&f->x[i]);
}

/* Local experts busiest first inside each chunk (the order of op_expert_linear restricted
 * to the chunk; it changes which worker runs what, never a result). */
static void chunk_orders(const ExchangePlan *p, int32_t *order, int *n_in) {
    const int32_t *offs = p->offs_local;
    for (int c = 0; c < p->G; c++) {
        int32_t *o = order + p->j0[c];
        int k = 0;
        for (int e = p->j0[c]; e < p->j0[c + 1]; e++) {
            const int32_t me = offs[e + 1] - offs[e];
            int j = k;
            while (j > 0 && offs[o[j - 1] + 1] - offs[o[j - 1]] < me) {
                o[j] = o[j - 1];
                j--;
            }
            o[j] = e;
            k++;
        }
        n_in[c] = k;
    }
}

/* Staging rows of chunk c (source-major) <-> expert-major rows, through perm. */
static void chunk_rows(const ExchangePlan *p, int c, int *r0, int *r1) {
    *r0 = p->offs_local[p->j0[c]];
    *r1 = p->offs_local[p->j0[c + 1]];
}

static void pipe_backward(TapeOp *op) {
    Tensor *xg = op->in[0], *w1 = op->in[1], *w3 = op->in[2], *w2 = op->in[3];
    const PipeSaved *s = op->aux[0];
    const ExchangePlan *p = s->p;
    const int G = p->G, El = p->El, C = p->C, F = w1->shape[1];
    const size_t MR = (size_t)p->M_recv;
    /* scratch: act, dh1, dh3 (M_recv, F); dyl, dxr (M_recv, C) */
    float *act = tape_scratch(s->t, MR * (3 * (size_t)F + 2 * (size_t)C) + 1);
    float *dh1 = act + MR * F, *dh3 = dh1 + MR * F, *dyl = dh3 + MR * F, *dxr = dyl + MR * C;
    ExpertFfn k = {
        .x = s->xr, .w1 = w1->data, .w3 = w3->data, .w2 = w2->data, .h1 = s->h1, .h3 = s->h3,
        .act = act, .dy = dyl, .dh1 = dh1, .dh3 = dh3,
        .dx = xg->requires_grad ? dxr : NULL,
        .dw1 = w1->requires_grad ? w1->grad : NULL,
        .dw3 = w3->requires_grad ? w3->grad : NULL,
        .dw2 = w2->requires_grad ? w2->grad : NULL,
        .offs = p->offs_local, .E = El, .C = C, .F = F,
    };
    A2a *x = s->flight;
    memset(x, 0, sizeof(A2a) * 2 * (size_t)G);
    A2a *gd = x, *gc = x + G;   /* grads of the outputs to the experts; input grads back */
    PipeFlight fl = {x, 2 * G};
    k.progress = pipe_progress;
    k.progress_ctx = &fl;
    const float *dye = op->out->grad;                               /* (M_send, C) */
    for (int c = 0; c < G; c++) a2a_start(&gd[c], &p->disp[c], dye, p->buf);
    pipe_progress(&fl);
    for (int c = 0; c < G; c++) {
        a2a_wait(&gd[c]);
        int r0, r1;
        chunk_rows(p, c, &r0, &r1);
        /* into the zeroed grad of the experts' output, as op_exchange_from_experts' backward
         * adds into it (0 + v: the same bits, signed zeros included) */
        for (int r = r0; r < r1; r++) {
            float *d = dyl + (size_t)p->perm[r] * C;
            const float *src = p->buf + (size_t)r * C;
            for (int i = 0; i < C; i++) d[i] = 0.0f + src[i];
        }
        expert_ffn_backward(&k, s->order + p->j0[c], s->n_in[c]);
        if (k.dx) {
            for (int r = r0; r < r1; r++)
                memcpy(p->buf + (size_t)r * C, dxr + (size_t)p->perm[r] * C,
                       sizeof(float) * (size_t)C);
            a2a_start(&gc[c], &p->comb[c], p->buf, p->tmp);
        }
        pipe_progress(&fl);
    }
    for (int c = 0; c < G; c++) a2a_wait(&gc[c]);
    if (k.dx)   /* op_exchange_to_experts' backward: xg's grad += what came back */
        for (size_t i = 0; i < (size_t)p->M_send * C; i++) xg->grad[i] += p->tmp[i];
}

Tensor *op_exchange_experts(Tape *t, Tensor *xg, Tensor *w1, Tensor *w3, Tensor *w2,
                            ExchangePlan *p, ExchangeOverlapFn overlap, void *overlap_ctx) {
    const int G = p->G, El = p->El, C = p->C;
    ASSERT((int)tensor_rows(xg) == p->M_send && tensor_cols(xg) == C,
           "exchange: xg has %zu x %d, plan %d x %d", tensor_rows(xg), tensor_cols(xg),
           p->M_send, C);
    ASSERT(w1->ndim == 3 && w1->shape[0] == El && w1->shape[2] == C && w3->ndim == 3 &&
           w3->shape[0] == El && w3->shape[1] == w1->shape[1] && w3->shape[2] == C &&
           w2->ndim == 3 && w2->shape[0] == El && w2->shape[1] == C &&
           w2->shape[2] == w1->shape[1], "expert weights W1 (%d, %d, %d), W2 (%d, %d, %d) "
           "do not match El %d, C %d", w1->shape[0], w1->shape[1], w1->shape[2],
           w2->shape[0], w2->shape[1], w2->shape[2], El, C);
    const int F = w1->shape[1];
    const size_t MR = (size_t)p->M_recv;
    A2a *x = arena_alloc(&t->arena, sizeof(A2a) * 2 * (size_t)G);
    memset(x, 0, sizeof(A2a) * 2 * (size_t)G);
    A2a *d = x, *cb = x + G;   /* dispatches, combines */
    PipeFlight fl = {x, 2 * G};
    for (int c = 0; c < G; c++) a2a_start(&d[c], &p->disp[c], xg->data, p->buf);
    /* one test right away: the handshakes go out, so a peer inside MPI can move this rank's
     * rows while the overlap work runs (its products call no progress hook) */
    pipe_progress(&fl);
    if (overlap) overlap(t, overlap_ctx);   /* e.g. the shared experts, while rows travel */

    const bool need = tape_needs_grad(t, xg, w1, w3) || tape_needs_grad(t, w2, NULL, NULL);
    Tensor *out = tape_tensor2(t, p->M_send, C, need);              /* (M_send, C) */
    PipeSaved *s = arena_alloc(&t->arena, sizeof *s);
    s->p = p;
    s->t = t;
    s->xr = arena_floats(&t->arena, MR * C + 1);                   /* (M_recv, C) kept */
    s->h1 = arena_floats(&t->arena, MR * F + 1);                   /* (M_recv, F) kept */
    s->h3 = arena_floats(&t->arena, MR * F + 1);                   /* (M_recv, F) kept */
    s->order = arena_ints(&t->arena, (size_t)El);
    s->n_in = arena_alloc(&t->arena, sizeof(int) * (size_t)G);
    chunk_orders(p, s->order, s->n_in);
    s->flight = need ? arena_alloc(&t->arena, sizeof(A2a) * 2 * (size_t)G) : NULL;
    float *act = tape_scratch(t, MR * ((size_t)F + C) + 1);        /* (M_recv, F) */
    float *yl = act + MR * F;                                      /* (M_recv, C) */
    ExpertFfn k = {
        .x = s->xr, .w1 = w1->data, .w3 = w3->data, .w2 = w2->data, .h1 = s->h1, .h3 = s->h3,
        .act = act, .y = yl, .offs = p->offs_local, .E = El, .C = C, .F = F,
        .progress = pipe_progress, .progress_ctx = &fl,
    };
    for (int c = 0; c < G; c++) {
        a2a_wait(&d[c]);
        int r0, r1;
        chunk_rows(p, c, &r0, &r1);
        for (int r = r0; r < r1; r++)
            memcpy(s->xr + (size_t)p->perm[r] * C, p->buf + (size_t)r * C,
                   sizeof(float) * (size_t)C);
        expert_ffn_forward(&k, s->order + p->j0[c], s->n_in[c]);
        /* the staging rows of chunk c are free again: the outputs go back from there */
        for (int r = r0; r < r1; r++)
            memcpy(p->buf + (size_t)r * C, yl + (size_t)p->perm[r] * C,
                   sizeof(float) * (size_t)C);
        a2a_start(&cb[c], &p->comb[c], p->buf, out->data);
        pipe_progress(&fl);
    }
    for (int c = 0; c < G; c++) a2a_wait(&cb[c]);
    if (need) {
        TapeOp *op = tape_push(t, "exchange_experts", pipe_backward, out);
        op->in[0] = xg;
        op->in[1] = w1;
        op->in[2] = w3;
        op->in[3] = w2;
        op->aux[0] = s;
    }
    return out;
}
