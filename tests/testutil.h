/* testutil.h: shared test helpers: random tensors, naive comparisons and the
 * finite-difference gradient checker every op test uses.
 *
 * Gradient check: loss = sum_j r_j * out_j with a fixed random r (so every output element
 * matters with a different weight). Analytic: tape_backward seeded with r. Numeric: central
 * differences (f(x+h) - f(x-h)) / 2h with the forward re-run on a non-recording tape and
 * the loss accumulated in double. Each test passes its tolerance atol + rtol*|ref| and says
 * why in a comment.
 */
#ifndef MOE_TESTUTIL_H
#define MOE_TESTUTIL_H

#include "autograd/ops.h"

/* A leaf tensor whose memory the test owns (freed by tt_free). kind PARAM gets a zeroed
 * grad buffer; CONST/FROZEN get none. */
Tensor *tt_tensor(int ndim, const int *shape, TensorKind kind, const char *name);
Tensor *tt_tensor2(int rows, int cols, TensorKind kind, const char *name);
void tt_free(Tensor *t);
/* Fill with uniform values in [lo, hi) from a seeded generator. */
void tt_fill_uniform(Tensor *t, uint64_t seed, float lo, float hi);
void tt_fill_normal(Tensor *t, uint64_t seed, float std);

/* Builds the graph under test from the inputs and returns its output. */
typedef Tensor *(*TTBuild)(Tape *t, Tensor **inputs, void *ctx);

/* Checks d(sum r*out)/d(input) for every PARAM input against central differences with step
 * h. Returns the number of mismatching elements (0 = pass) and prints the first few with
 * their values and the label. */
int tt_check_grad(TTBuild build, void *ctx, Tensor **inputs, int n_inputs, float h,
                  double atol, double rtol, const char *label);

/* Reset t (recording or not) with the first n floats its arena hands out filled with NaN:
 * the next op's outputs land there (the arena carves in the same places after a reset), so
 * an element a kernel forgets to write shows as NaN, not as a value left by an earlier run. */
void tt_poison_arena(Tape *t, size_t n, bool record);

/* Max |a-b| / (atol + rtol*|b|) over n elements; <= 1 means within tolerance. */
double tt_max_err(const float *a, const float *b, size_t n, double atol, double rtol);

/* Path of a file under the repo (MOE_SOURCE_DIR, set by ctest); exits with an error when
 * the variable is missing. Result is static storage. */
const char *tt_source_path(const char *rel);

#endif
