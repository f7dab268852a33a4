/* recompute: activation checkpointing. Nodes built inside a DSL `recompute { }`
 * block carry NODE_RECOMPUTE; this pass makes the backward pass re-emit them
 * instead of reading the forward pass's outputs, so those outputs die at their
 * last forward use. */
#ifndef V3C_RECOMPUTE_H
#define V3C_RECOMPUTE_H

#include "../ir/ir.h"

/* For every value a forward (not NODE_BACKWARD) NODE_RECOMPUTE node produces
 * and a backward node reads, clones the producing subgraph — recursively
 * through other forward recompute producers; every other value is read as
 * stored — just before the first backward node that needs it, and rewires the
 * backward readers to the clone. A forward value is cloned once however many
 * backward nodes read it. Clones keep op, attributes, scope and chunk, and get
 * NODE_BACKWARD (keeping NODE_RECOMPUTE, so running the pass twice changes
 * nothing). The node list is rebuilt in the new order and values renumbered
 * in node order; graph outputs and the name map follow. Forward nodes left
 * without readers stay (dce removes them). *cloned (may be NULL) gets the
 * number of nodes added. */
int recompute_graph(Graph *g, size_t *cloned, Err *err);

#endif
