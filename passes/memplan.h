/* memplan: static memory planning of a graph's activations at a concrete batch
 * B and sequence length T, for a device that runs the nodes in list order.
 *
 * Liveness: a value is live from its producing node to its last reader; one
 * without readers only while its producer runs; graph outputs to the end.
 * Activations are the values computed from a graph input (input_ids), directly
 * or transitively. Params and inputs have their own buffers; values computed
 * from params and constants alone ("weight-derived": the experts' stacked
 * weights, transposed weights, constants) are input-independent, so a backend
 * computes them once and keeps them with the weights — they are summed in
 * weight_derived_bytes, outside the activation plan. Sizes are device storage
 * sizes (memplan_dtype_bytes), not the interpreter's float-for-everything storage. */
#ifndef V3C_MEMPLAN_H
#define V3C_MEMPLAN_H

#include <stddef.h>
#include <stdint.h>

#include "../base/arena.h"
#include "../ir/ir.h"

/* Offsets in the arena are multiples of this: cudaMalloc's alignment, which
 * also satisfies every vector load a kernel makes. */
enum { MEMPLAN_ALIGN = ARENA_ALIGN };

typedef struct MemPlan {
    size_t nvalues;
    int64_t *bytes;        /* per value: device bytes; 0 for all but activations, and for empty tensors */
    int64_t *offset;       /* per value: byte offset in the arena; -1 where bytes is 0 */
    int32_t *last_use;     /* per value: last node that needs it (nodes.len for graph outputs) */
    int64_t peak_bytes;    /* max over nodes of the bytes live while it runs, graph outputs included */
    int32_t peak_node;     /* the first node where peak_bytes is reached; -1 for an empty graph */
    int64_t peak_activation_bytes; /* the same sweep with graph outputs left out (results, not activations) */
    int64_t output_bytes;  /* graph outputs, each counted once */
    int64_t weight_derived_bytes; /* weight-derived values, each counted once */
    int64_t arena_bytes;   /* end of the highest buffer: >= peak_bytes, more by alignment and fragmentation */
} MemPlan;

/* f32 4, bf16/f16 2, e4m3/e5m2/u8 1, i32 4, i64 8. */
int64_t memplan_dtype_bytes(DType t);

/* Liveness, the peaks, and offsets by greedy best fit: nodes in order; before
 * node i allocates its outputs, the values whose last use was before i are
 * freed (a node never writes over its own inputs); each output takes the
 * smallest free hole that fits (the lowest of equal ones), else the top of the
 * arena (growing a free hole that ends there). Fails on a shape that does not
 * evaluate at B, T or a size that overflows int64. */
int memplan_build(const Graph *g, int64_t batch, int64_t seq, MemPlan *plan, Err *err);
void memplan_free(MemPlan *plan);

/* Just plan->peak_bytes. */
int memplan_peak(const Graph *g, int64_t batch, int64_t seq, int64_t *peak_bytes, Err *err);

/* The registry pass plans at these: one sequence of DeepSeek-V3's pretraining length. */
enum { MEMPLAN_PASS_BATCH = 1, MEMPLAN_PASS_SEQ = 4096 };

#endif
