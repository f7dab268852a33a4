/* Pipeline-parallel stage split: cuts a training graph (forward + autodiff's
 * backward) into per-stage graphs. Stage s of P holds decoder layers
 * [s*L/P, (s+1)*L/P) (by node scope "layers.N"), the embedding on stage 0,
 * the final norm, head, losses and MTP modules on stage P-1. Each stage gets a
 * forward graph, a backward graph and, when asked, the backward split again
 * into its input part (B) and its weight part (W: NODE_WGRAD nodes), as ZB1P
 * and DualPipe run them. A value one part produces and another reads is a
 * graph output of the first and a graph input of the second under one name
 * ("x.<value>"), so an executor can pass it on, locally or to another rank.
 * docs/pipeline.md has the rules. */
#ifndef V3C_PIPELINE_SPLIT_H
#define V3C_PIPELINE_SPLIT_H

#include "../ir/ir.h"

typedef enum PipePart { PIPE_FORWARD, PIPE_BACKWARD, PIPE_WEIGHT, PIPE_PART_COUNT } PipePart;

const char *pipe_part_name(PipePart p); /* "forward", "backward", "weight" */

/* One value crossing from one stage graph to another. */
typedef struct PipeMessage {
    const char *name; /* "x.<value id in the training graph>": an output of src, an input of dst */
    int src_stage, dst_stage;
    PipePart src_part, dst_part;
} PipeMessage;

typedef struct PipelineSplit {
    int stages;
    int layers;        /* decoder layers found by scope */
    int split_weights; /* 1: PIPE_WEIGHT graphs hold the W nodes; 0: they are empty */
    /* graphs[s][part], never NULL (an empty part has no nodes). Besides the
     * messages their outputs are the training graph's outputs of static shape
     * (losses, weight gradients, expert loads). A weight gradient whose
     * accumulation spans stages (a weight two stages read: the embedding, read
     * again by the MTP module) is output by each of them as a partial sum under
     * the same name; the executor adds them. */
    Graph *(*graphs)[PIPE_PART_COUNT];
    PipeMessage *messages;
    int nmessages;
} PipelineSplit;

typedef struct PipelineSplitOptions {
    int stages;        /* P >= 1, at most the number of decoder layers */
    int split_weights; /* 1 for schedules with a deferred W (zb1p, dualpipe) */
} PipelineSplitOptions;

/* Splits g (not modified). Errors: P < 1 or more stages than layers, and a
 * graph whose dataflow a pipeline cannot follow (a forward value read by an
 * earlier stage's forward, a backward reading a later part). */
PipelineSplit *pipeline_split(const Graph *g, const PipelineSplitOptions *o, Err *err);
void pipeline_split_free(PipelineSplit *s);

/* The stage holding decoder layer `layer` when `layers` layers go on `stages` stages. */
int pipeline_layer_stage(int layer, int layers, int stages);

#endif
