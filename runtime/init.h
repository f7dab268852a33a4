/* Fresh weights for a graph, for training from scratch and for the demo path. */
#ifndef V3C_INIT_H
#define V3C_INIT_H

#include "../ir/interp.h"

typedef struct InitOptions {
    uint64_t seed;
    double std; /* normal(0, std) for matrices; DeepSeek-V3 used 0.006 */
} InitOptions;

/* Norm weights (rank-1 names ending in "norm.weight") start at 1, other rank-1
 * weights (biases) at 0, everything else normal(0, std), each tensor from its own
 * stream seeded by (seed, name), so adding a weight does not change the others. */
int init_params(const Graph *g, const InitOptions *opt, TensorSet *out, Err *err);

#endif
