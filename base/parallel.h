/* A small parallel-for: [0, n) split into contiguous ranges, one per thread.
 * Each item is handled by exactly one call, so results do not depend on the
 * split; small jobs (n * cost below a threshold) run on the calling thread. */
#ifndef V3C_PARALLEL_H
#define V3C_PARALLEL_H

#include <stdint.h>

typedef void (*RangeFn)(void *ctx, int64_t lo, int64_t hi);
/* cost estimates the work per item; all cores (at most 16). */
void parallel_for(int64_t n, int64_t cost, RangeFn fn, void *ctx);
/* The same with at most max_threads threads (0: all cores). */
void parallel_for_capped(int64_t n, int64_t cost, int max_threads, RangeFn fn, void *ctx);
/* At most this many threads per call from now on, whatever a call asks (0: no bound):
 * processes sharing a machine (MPI ranks) each take their share of its cores, since
 * threads beyond the cores, waiting by polling, take the time the others need. */
void parallel_set_core_share(int cores);

#endif
