/* clock.h: monotonic wall clock. */
#ifndef MOE_CLOCK_H
#define MOE_CLOCK_H

#include <time.h>

/* Seconds on the monotonic clock (for durations, not dates). */
static inline double moe_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
