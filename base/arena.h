/* base: buffers with known lifetimes packed into one arena by greedy best fit.
 * Two users: passes/memplan.c plans a graph's activations (graph liveness,
 * storage sizes), runtime/cuda_exec.c places a step's device buffers (lifetimes
 * from what actually touches each buffer, the device's element sizes). */
#ifndef V3C_BASE_ARENA_H
#define V3C_BASE_ARENA_H

#include <stddef.h>
#include <stdint.h>

#include "base.h"

/* Offsets are multiples of this: cuMemAlloc's alignment, enough for every vector load a kernel makes. */
enum { ARENA_ALIGN = 256 };

/* A buffer live from sweep position first to last, inclusive (node positions, say). */
typedef struct ArenaBuffer {
    int32_t first, last;
    int64_t bytes;
} ArenaBuffer;

/* Positions 0..npos-1 in order; at position s, the buffers whose last < s are
 * freed (so a buffer never shares bytes with one live at its own first
 * position: a node never writes over its inputs), then those with first == s,
 * in index order, take the smallest free hole that fits (the lowest of equal
 * ones), else the top of the arena (growing a free hole that ends there).
 * Sizes round up to ARENA_ALIGN; offset[i] is -1 for bytes 0, whose lifetime is
 * not looked at. Needs 0 <= first <= last < npos for every other buffer (an
 * internal error otherwise). *arena_bytes gets the arena's end. */
int arena_pack(const ArenaBuffer *bufs, size_t n, int32_t npos, int64_t *offset, int64_t *arena_bytes, Err *err);

/* The buffers with bytes grouped by first (by_last 0) or last position:
 * bucket s is idx[start[s] .. start[s + 1]), in index order (a counting sort). */
typedef struct ArenaBuckets {
    size_t *start; /* npos + 1 entries used */
    size_t *idx;
} ArenaBuckets;
ArenaBuckets arena_buckets(const ArenaBuffer *bufs, size_t n, int32_t npos, int by_last);
void arena_buckets_free(ArenaBuckets *k);

#endif
