/* Whole-graph analyses that need no pass: parameter counts. */
#ifndef V3C_ANALYSIS_H
#define V3C_ANALYSIS_H

#include "ir.h"

typedef struct ParamCounts {
    int64_t parameters;     /* weights the main outputs (logits, loss) depend on */
    int64_t activated;      /* of those, the ones one token uses: routed experts count K/E */
    int64_t mtp_parameters; /* weights only the other outputs (MTP) depend on */
    int64_t tensors;        /* number of main-model weight tensors */
} ParamCounts;

/* Main outputs are those named "logits" and "loss"; a weight reached through a
 * grouped_linear whose rows come from a moe_dispatch of K slots over E experts
 * is activated K/E of the time. Fails if a weight has a symbolic shape. */
int count_params(const Graph *g, ParamCounts *out, Err *err);

#endif
