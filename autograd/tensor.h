/* tensor.h: float32 tensors, the step arena and the reverse-mode tape.
 *
 * Design (define-by-run, recorded once per step):
 * - A Tensor is a view: shape + a data pointer + an optional grad pointer. It never owns
 *   memory. Parameters point into a ParamBlock (autograd/params.h); activations point into
 *   the tape's arena, which is reset at the start of every step and carved again in the
 *   same order, so after the first step nothing is allocated (the arena keeps its chunks).
 * - Kinds are explicit: PARAM (trainable: grad in the block's grad buffer), FROZEN (a weight
 *   that receives no gradient; ops skip its weight-gradient GEMM), ACT (an op output; gets a
 *   grad buffer at backward time iff some input requires grad), CONST (inputs, noise, masks).
 * - Every op_* call (autograd/ops.h) computes its forward at once and, when the tape records
 *   gradients, appends a TapeOp holding its inputs, output, scalars and any saved state.
 *   tape_backward walks the ops in reverse and each backward kernel ACCUMULATES (+=) into the
 *   grads of the inputs that require them. Parameter grads are therefore accumulated across
 *   micro-batches until the optimizer zeroes them.
 * Non-goals: views with strides, broadcasting rules beyond what the ops document, dtype
 * other than float32, higher-order gradients.
 */
#ifndef MOE_TENSOR_H
#define MOE_TENSOR_H

#include "core/common.h"

#define TENSOR_MAX_DIMS 4

typedef enum { TENSOR_PARAM, TENSOR_FROZEN, TENSOR_ACT, TENSOR_CONST } TensorKind;

typedef struct Tensor {
    float *data;          /* (shape), row-major, contiguous; not owned */
    float *grad;          /* (shape) or NULL; not owned */
    int ndim;
    int shape[TENSOR_MAX_DIMS];
    size_t n;             /* number of elements */
    TensorKind kind;
    bool requires_grad;   /* PARAM: true; ACT: true iff an input requires grad; else false */
    const char *name;     /* static or owned by the model; may be NULL for activations */
} Tensor;

/* Fill a Tensor header for memory owned elsewhere. shape has ndim entries. */
void tensor_view(Tensor *t, float *data, float *grad, int ndim, const int *shape,
                 TensorKind kind, const char *name);
/* Number of rows = product of all but the last dimension; cols = last dimension. */
size_t tensor_rows(const Tensor *t);
int tensor_cols(const Tensor *t);

/* ---- Arena: bump allocator over a list of chunks, reset every step ---- */
typedef struct ArenaChunk {
    char *base;
    size_t cap, used;
} ArenaChunk;

typedef struct Arena {
    ArenaChunk *chunks;   /* (n_chunks) owned */
    int n_chunks, cur;
    size_t chunk_size;    /* default size of a new chunk */
    size_t high_water;    /* largest total use seen, bytes */
    size_t grows;         /* chunks allocated so far: stays constant after the first step */
} Arena;

void arena_init(Arena *a, size_t chunk_size);
void arena_free(Arena *a);
/* Returns 64-byte aligned uninitialised memory valid until the next arena_reset. */
void *arena_alloc(Arena *a, size_t bytes);
float *arena_floats(Arena *a, size_t n);            /* uninitialised */
float *arena_zeros(Arena *a, size_t n);             /* zeroed */
int32_t *arena_ints(Arena *a, size_t n);            /* uninitialised */
void arena_reset(Arena *a);
/* Replace the chunks by one chunk of the high-water mark plus 1/16 headroom (the tail of
 * each 64 MiB chunk is otherwise wasted). Invalidates everything carved so far: call only
 * between steps, once the first step has shown how much a step needs. */
void arena_compact(Arena *a);
size_t arena_used(const Arena *a);

/* ---- Tape ---- */
struct TapeOp;
typedef void (*BackwardFn)(struct TapeOp *op);

#define TAPE_MAX_IN 4
typedef struct TapeOp {
    const char *name;          /* op name, for error reports and profiles */
    BackwardFn backward;
    Tensor *in[TAPE_MAX_IN];   /* inputs (may be NULL) */
    Tensor *out;               /* output */
    double f[4];               /* op scalars (eps, scale, theta, ...) */
    int i[8];                  /* op integers (shapes, K, ...) */
    void *aux[4];              /* saved state in the arena (rstd, lse, indices, ...) */
    int region;                /* profile region current when the op was recorded; -1: the
                                  op's backward accounts its own time (checkpoint) */
} TapeOp;

/* Profile regions: the model names them (layers/model.h); the tape only keeps times. */
#define TAPE_MAX_REGIONS 8

struct GradPlan;

/* A backward-pass observer (tape_mark): mark >= 0 when the backward reaches a mark,
 * TAPE_HOOK_PROGRESS after every op's backward (so a caller can drive communication). */
typedef void (*TapeHook)(void *ctx, int mark);
#define TAPE_HOOK_PROGRESS (-1)

typedef struct Tape {
    TapeOp *ops;               /* (cap) owned; grows only on the first step */
    int n, cap;
    Arena arena;               /* activations, tensor headers, saved state */
    Arena grad_arena;          /* activation grads when plan_grads is false */
    bool record;               /* true: record ops for backward; false: forward only */
    bool plan_grads;           /* true (default): activation grads share one buffer by
                                  liveness (see tape_backward); false: one zeroed grad per
                                  activation for the whole backward (reference behaviour) */
    struct GradPlan *plan;     /* owned; the liveness plan of the last backward */
    bool profile;              /* accumulate region times (off by default: clock reads) */
    int region;                /* current profile region */
    double region_t0;          /* when the current forward region started */
    double fwd_time[TAPE_MAX_REGIONS], bwd_time[TAPE_MAX_REGIONS];   /* seconds, summed */
    struct Tape *sub;          /* owned, NULL until the first tape_checkpoint: the tape that
                                  runs checkpointed segments (one at a time); see below */
    bool is_sub;               /* this tape is another's sub: segments do not nest */
    float *scratch;            /* (scratch_cap) owned, NULL until the first tape_scratch */
    size_t scratch_cap;        /* floats */
    TapeHook hook;             /* NULL, or called during tape_backward: see tape_mark */
    void *hook_ctx;
} Tape;

void tape_init(Tape *t, size_t chunk_size);
/* Profiling: with t->profile set, forward time between tape_region calls is added to the
 * region that was current, and each op's backward time to the region it was recorded in.
 * tape_region(t, r) switches the current region (0 .. TAPE_MAX_REGIONS-1). */
void tape_region(Tape *t, int region);
void tape_free(Tape *t);
/* After the first step: forget the ops and compact the activation arena to what that step
 * used (arena_compact). Every tensor of the tape becomes invalid. */
void tape_compact(Tape *t);
/* Start a new step: forget the ops, reset both arenas. record selects training vs eval. */
void tape_reset(Tape *t, bool record);

/* New activation tensor in the arena (data uninitialised). requires_grad is honoured only
 * when the tape records. */
Tensor *tape_tensor(Tape *t, int ndim, const int *shape, bool requires_grad);
Tensor *tape_tensor2(Tape *t, int rows, int cols, bool requires_grad);
/* Constant (no grad) tensor of the given shape in the arena. */
Tensor *tape_const(Tape *t, int ndim, const int *shape);
/* True if any of the given (nullable) tensors requires grad and the tape records. */
bool tape_needs_grad(const Tape *t, const Tensor *a, const Tensor *b, const Tensor *c);
/* Append an op (only when recording); returns it so the caller can fill saved state. */
TapeOp *tape_push(Tape *t, const char *name, BackwardFn bw, Tensor *out);

/* Reverse pass. seed: d(out) (out->n floats) or NULL for ones (a scalar loss gets 1).
 * Accumulates into parameter grads.
 *
 * Activation grads (outputs of recorded ops that require grad and have no grad yet):
 * - plan_grads (default): the grad of the output of op p is live from the backward of its
 *   last consumer c (the first backward that writes it) until op p's backward has run: the
 *   closed interval [p, c] of op indices (c = n-1 for the loss and for unused outputs).
 *   Intervals get offsets in one buffer by greedy first-fit (largest first); each region is
 *   zeroed right before its first write. The plan is kept and reused while the tape has the
 *   same op sequence (names, output sizes, consumers); a different tape re-plans, and the
 *   buffer grows (allocates) only when a plan needs more than any before.
 *   Contract this relies on: a backward reads only op->out->grad and writes only the grads
 *   of op->in[] (an op with more outputs, a checkpoint or op_gather_expert_up, also reads
 *   the grads of the no-backward ops recorded just before it that carry its other outputs,
 *   "segment_output" / "expert_up_h3", whose intervals cover it). After tape_backward the
 *   activation grads are NOT valid (regions are reused); parameter grads are.
 * - otherwise every activation grad is carved zeroed from grad_arena before the walk and
 *   stays valid until the next tape_reset. */
void tape_backward(Tape *t, Tensor *out, const float *seed);
/* The same from several outputs at once: outs[k] (op outputs of this tape, distinct) each
 * get seeds[k] (outs[k]->n floats, or NULL for ones) added to their zeroed grads before the
 * walk. tape_backward(t, out, seed) is this with one output. */
void tape_backward_multi(Tape *t, int n_out, Tensor *const *outs, const float *const *seeds);
/* Record a mark (only when recording; id >= 0): when tape_backward reaches it, every op
 * recorded after it has been backpropagated, so every gradient those ops write is final
 * for this backward; t->hook (if set at backward time) is then called with id. With a hook
 * set, tape_backward also calls it with TAPE_HOOK_PROGRESS after every op's backward,
 * including the ops of checkpointed segments (the sub tape runs with its parent's hook).
 * A mark has no output and no effect on the arithmetic. */
void tape_mark(Tape *t, int id);
/* Bytes of the activation-grad buffer the current plan uses (0 before any planned backward). */
size_t tape_grad_plan_bytes(const Tape *t);

/* Scratch of n floats (uninitialised, 64-byte aligned) for an intermediate that lives only
 * inside one op's forward call or one op's backward call and is not kept between them (the
 * SwiGLU activation of op_swiglu_linear / op_swiglu_expert_linear and the gathered rows of
 * op_gather_expert_up, recomputed in their backward; op_linear_residual's product, which
 * its backward never reads). Valid until the next tape_scratch
 * call on t: ops run one at a time, forward and backward, so one buffer serves every op of
 * the tape. Owned by t (a checkpointed segment's ops use t->sub's). Allocates only when n
 * exceeds every earlier request (the first one exactly, a later larger one with 1/8
 * headroom, as the grad plan), so after the first step nothing is allocated unless a step
 * needs more (top-p routing). Not part of the arena: it is not kept, so it must not raise
 * the kept-activation high water. */
float *tape_scratch(Tape *t, size_t n);
/* Bytes of t's scratch plus its sub tape's, for memory reports. */
size_t tape_scratch_bytes(const Tape *t);

/* ---- Activation recomputation (gradient checkpointing) ----
 * Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost" (arXiv:1604.06174), and
 * the full recomputation of Korthikanti et al. 2022 (arXiv:2205.05198) at the granularity
 * of one transformer block: a segment's activations exist only while it runs; the tape keeps
 * its input and outputs, and the backward runs the segment's forward again before going
 * back through it. Memory: the kept inputs/outputs plus ONE segment's activations and
 * activation grads, for one more forward of every segment.
 *
 * A segment is fn(t, ctx, recompute, x, out): it records ops on t from the input x and sets
 * out[0 .. n_out-1] (out[0] required; out[k > 0] may be NULL, the same in every call). It
 * must be a pure function of x, the parameters and ctx: the call made again in backward
 * (recompute = true) must do the same float operations, so the recomputed activations are
 * bit-identical to the first ones and so are the gradients. Work that must happen once per
 * forward (statistics) is skipped when recompute is true. Collective communication inside fn
 * runs again in backward, in the same order on every rank (all ranks walk the same tape).
 *
 * Memory layout: fn always runs on t->sub (created on first use, same chunk size), which is
 * reset for every call, whether t records or not (so a forward-only pass is bounded the same
 * way). The outputs are copied into t's arena. When t records and out[0] requires grad, t
 * gets one op "segment_output" per extra output (no backward; its output region stays live
 * until the segment's backward reads it, being recorded just before) and one op
 * "checkpoint" (in[0] = x, out = out[0]) whose backward re-runs fn on t->sub with a leaf
 * that shares x's data and grad, then tape_backward_multi(t->sub) seeded with the grads of
 * every output: parameter grads and x->grad accumulate exactly as without the checkpoint.
 * With t->profile the segment's region times are added to t's (forward into fwd_time, the
 * recomputation and its backward into bwd_time).
 * ctx must stay valid until t's backward (carve it from t's arena). Segments do not nest. */
typedef void (*SegmentFn)(Tape *t, void *ctx, bool recompute, Tensor *x, Tensor **out);
#define TAPE_SEG_MAX_OUT 4
void tape_checkpoint(Tape *t, SegmentFn fn, void *ctx, Tensor *x, int n_out, Tensor **out);

#endif
