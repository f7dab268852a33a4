/* v3c stats --memory: the activation memory of one training step, planned
 * statically (passes/memplan.h) without running anything. */
#ifndef V3C_STATS_MEMORY_H
#define V3C_STATS_MEMORY_H

#include "cli.h"

/* Turns m->graph into the training graph (autodiff on total_loss, else loss;
 * outputs cut to that loss and the grad.* gradients; dce), plans it at
 * --batch/--seq (default B=1, T=4096), applies the recompute pass and plans
 * again. Prints on stdout:
 *   batch: B / seq: T
 *   parameter_bytes: N       params at their device dtype
 *   gradient_bytes: N        the grad.* outputs
 *   weight_derived_bytes: N  values computed from weights alone (stacked experts), kept with them
 *   peak_activation_bytes: N             peak of live activations, gradients and loss left out
 *   peak_activation_bytes_recompute: N   the same after the recompute pass
 *   recompute_saving_bytes: N            the difference
 *   peak_bytes[_recompute]: N            the peak with the gradients held as they are produced
 *   arena_bytes[_recompute]: N           best-fit arena holding all of it
 *   recompute_clones: N                  nodes the recompute pass added
 * m->graph is consumed: it holds the recomputed training graph afterwards. */
int stats_memory(const Options *o, Model *m, Err *err);

#endif
