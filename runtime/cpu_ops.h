/* runtime: the cpu backend's hand-written kernels for hot ops that no fused
 * kernel covers (rope, sdpa, sdpa_grad, grouped_linear, grouped_linear_wgrad,
 * expand, sum_to, transpose, cast; fp8_matmul in cpu_fp8.c), on f32 values (bf16
 * for some); numerics in those files. */
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

/* fp8_matmul on E4M3 operands, the interpreter's bits (cpu_fp8.c). */
int cpu_fp8_matmul(const CpuOpCall *call, Err *err);

/* The backend's kernel for node n, or NULL when the interpreter's kernel runs it. */
CpuOpFn cpu_op_for(const Graph *g, const Node *n);

#endif
