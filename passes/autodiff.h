/* Reverse-mode automatic differentiation over the graph IR. */
#ifndef V3C_AUTODIFF_H
#define V3C_AUTODIFF_H

#include "../ir/ir.h"

/* Appends the backward graph of the output named `target` (an f32 loss of type
 * [] or [1]) and an output "grad.<param name>" for every param with a
 * differentiable path to it. Gradients are seeded with d target = 1 and
 * accumulated (summed) where a value is read more than once. Emitted nodes carry
 * NODE_BACKWARD, the forward node's scope and chunk, and NODE_WGRAD when they
 * serve only weight gradients (DualPipe's W, as against B: gradients of
 * activations). Backward nodes no gradient needs are removed again. The graph
 * stays in topological order. Errors: no such output, or not a float scalar. */
int autodiff_graph(Graph *g, const char *target, Err *err);

#endif
