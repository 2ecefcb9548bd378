/* params.h: the parameter blocks.
 *
 * All parameters of a model live in two ParamBlocks: DENSE (replicated on every rank:
 * embeddings, attention, norms, routers, head, dense FFN, LoRA adapters) and EXPERT (the
 * routed experts this rank holds). Each block is a float buffer of values (data, n floats,
 * tensor at p->off) and three buffers for the TRAINABLE tensors only, grad / m / v (gn
 * floats each, tensor at p->goff), carved from one size table, so a trainable tensor sits at
 * the same offset in all three: zeroing grads is one memset, AdamW one flat loop per tensor,
 * and a data-parallel all-reduce one call per block. Frozen parameters (fine-tuning) have
 * values only: no grad pointer, no optimizer state, no update. With every tensor trainable
 * (pre-training) goff == off and gn == n.
 *
 * Each Param carries its Hugging Face Mixtral name (checkpoints and export address tensors by
 * it) and whether weight decay applies (not for norm gains).
 */
#ifndef MOE_PARAMS_H
#define MOE_PARAMS_H

#include "autograd/tensor.h"

enum { PBLOCK_DENSE = 0, PBLOCK_EXPERT = 1, PBLOCK_COUNT = 2 };

typedef struct ParamBlock {
    float *data;                  /* (n) owned: every tensor's values */
    float *grad;                  /* (gpad) owned: trainable tensors only, zero past gn */
    float *m, *v;                 /* (shard_n) each, owned: the moments of the gradient
                                     positions [shard_lo, shard_lo + shard_n) */
    size_t n, gn;
    size_t gpad;                  /* grad's length: gn, or gn rounded up so that it splits
                                     into equal aligned slices (parallel/zero.h) */
    size_t shard_lo, shard_n;     /* the slice this rank updates: [0, gn) unless sharded */
    size_t gstage;                /* floats after grad[gpad], allocated with it: a staging
                                     area for the sharded reduction (0 unless sharded) */
    uint16_t *bf16;               /* (n) owned or NULL: data rounded to bf16, registered
                                     with the products (params_bf16_refresh) */
} ParamBlock;

/* INIT_UNIFORM draws from U(-init_std, init_std) (init_std is the bound). */
typedef enum { INIT_NORMAL, INIT_ONES, INIT_ZEROS, INIT_UNIFORM } ParamInit;

typedef struct Param {
    Tensor t;            /* view into its block (data and, if trainable, grad) */
    char name[128];      /* HF name; for stacked experts, the name pattern with "{e}" */
    int block;           /* PBLOCK_DENSE or PBLOCK_EXPERT */
    size_t off;          /* offset of the tensor in its block's data, floats */
    size_t goff;         /* offset in the block's grad/m/v, floats (trainable only) */
    bool decay;          /* AdamW weight decay applies */
    bool trainable;      /* false: frozen (no grad, no update) */
    ParamInit init;
    float init_std;      /* std for INIT_NORMAL */
    int layer;           /* transformer layer, -1 for embeddings/head/final norm */
} Param;

typedef struct ParamSet {
    Param *p;            /* (count) owned */
    int count, cap;
    ParamBlock blocks[PBLOCK_COUNT];
    bool finalised;
} ParamSet;

void params_init(ParamSet *ps);
/* Declare a parameter (before params_finalise). Returns its index. */
int params_add(ParamSet *ps, const char *name, int block, int ndim, const int *shape,
               bool decay, ParamInit init, float init_std, int layer);
/* Allocate the blocks and point every tensor into them: data for every tensor, grad/m/v
 * (zeroed) for the tensors trainable at this point. */
void params_finalise(ParamSet *ps);
/* Initialise every parameter from its own RNG stream keyed by (seed, name); a stacked
 * expert tensor's slice i is keyed by its global expert index e_first + i, so values do not
 * depend on the rank layout or on declaration order. */
void params_init_values(ParamSet *ps, uint64_t seed, int e_first);
/* Zero all gradients (one memset per block). */
void params_zero_grad(ParamSet *ps);
/* Mark a parameter frozen / trainable (grad pointer and requires_grad follow). Before
 * params_finalise this only decides what gets optimizer state; after it, the parameter's
 * block gets new grad/m/v buffers laid out for its trainable tensors (set-up time only:
 * that block's gradients and moments restart at zero). */
void params_set_trainable(ParamSet *ps, int idx, bool trainable);
/* Split block b's optimizer state into `parts` equal slices and keep slice `index` (the
 * layout half of the sharded optimizer, parallel/zero.h; no communication): grad grows to
 * gpad = gn rounded up to a multiple of 16 parts (each slice 64-byte aligned; the padding
 * is zero and belongs to no tensor), shard_n = gpad / parts, shard_lo = index shard_n, and
 * m, v are replaced by slice-sized buffers holding the slice of the current moments, which
 * must cover the whole block (shard_lo 0, shard_n >= gn: unsharded or gathered). parts 1
 * restores the unsharded layout. grad gets `stage` more floats after gpad (gstage) for the
 * caller's use. Set-up time only (allocates). */
void params_shard_block(ParamSet *ps, int b, int parts, int index, size_t stage);
/* Total element counts. trainable_only counts only trainable tensors. */
size_t params_count(const ParamSet *ps, bool trainable_only);
int params_find(const ParamSet *ps, const char *name);   /* -1 if absent */
void params_free(ParamSet *ps);   /* also unregisters the bf16 copies */

/* In bf16 precision (autograd/gemm.h): round every block's values to bf16 (the copy
 * allocated on first use) and register the copies as the products' stand-ins for the
 * values, so a weight is rounded once per forward instead of at every product reading it;
 * a no-op in fp32. Call after the values change and before the products read them: the
 * model's forward does, first thing (weights do not change between a forward and its
 * backward). */
void params_bf16_refresh(ParamSet *ps);
/* Unregister the copies (kept for the next refresh): call before the values change, so no
 * product reads a stale copy (AdamW does). */
void params_bf16_drop(ParamSet *ps);

/* Sum of squared gradients of the trainable parameters in one block, in double; the same
 * at any thread count (fixed ranges, added in order). */
double grad_sumsq_block(const ParamSet *ps, int block);
/* The same over the gradient positions [lo, lo + n) of a block (n may be 0). */
double grad_sumsq_range(const ParamSet *ps, int block, size_t lo, size_t n);
/* Multiply the trainable gradients in every block by s. */
void grad_scale(ParamSet *ps, float s);
/* Multiply the gradient positions [lo, lo + n) of a block by s. */
void grad_scale_range(ParamSet *ps, int block, size_t lo, size_t n, float s);

#endif
