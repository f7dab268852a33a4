/* runtime: the cpu backend's hand-written kernels for hot ops that no fused
 * kernel covers (rope, sdpa, sdpa_grad, grouped_linear, grouped_linear_wgrad,
 * expand, sum_to, transpose), f32 only; numerics in cpu_ops.c. */
#ifndef V3C_RUNTIME_CPU_OPS_H
#define V3C_RUNTIME_CPU_OPS_H

#include "../ir/ir.h"

typedef struct CpuOpCall {
    const Node *node;
    const Tensor *const *in;
    Tensor *const *out; /* allocated by the caller from the node's types */
    int threads;        /* at most this many threads */
} CpuOpCall;

typedef int (*CpuOpFn)(const CpuOpCall *call, Err *err);

/* The backend's kernel for node n, or NULL when the interpreter's kernel runs it. */
CpuOpFn cpu_op_for(const Graph *g, const Node *n);

#endif
