/* error.h: the two kinds of error the code reports: programmer errors and user or
 * environment errors. (Numerical health is checked by the training loop, not here.)
 *
 * - ASSERT: always-on check for programmer errors (never compiled out). Prints file:line,
 *   the message and the MPI rank (if set), then aborts (under MPI, every rank).
 * - MoeErr: user and environment errors (bad config, missing file, damaged checkpoint,
 *   MPI/HDF5 failure) are not asserts: a function that can fail on bad input returns int
 *   (0 = ok, -1 = error) and fills a MoeErr, which travels up to train/, where it is printed
 *   with its hint and the program exits non-zero.
 */
#ifndef MOE_ERROR_H
#define MOE_ERROR_H

/* Rank printed by ASSERT; parallel/ sets it after MPI_Init. */
extern int moe_log_rank;
/* Called by ASSERT (and by the allocator on failure) before abort(); parallel/ installs
 * MPI_Abort so every rank stops. */
extern void (*moe_abort_hook)(void);

void moe_assert_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

#define ASSERT(cond, ...) \
    do { if (!(cond)) moe_assert_fail(__FILE__, __LINE__, #cond, __VA_ARGS__); } while (0)

/* Error status for user/environment errors: a message buffer filled by moe_errorf. */
typedef struct MoeErr {
    char msg[1024];   /* what was wrong and where (file:line:col, key, dataset) */
    char hint[512];   /* how to fix it; may be empty */
} MoeErr;
/* Fill err->msg (and clear the hint) / err->hint; both return -1 so a failing function
 * can end with `return moe_hintf(err, ...)`. err may be NULL (nothing is written). */
int moe_errorf(MoeErr *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int moe_hintf(MoeErr *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
