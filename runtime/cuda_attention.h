/* runtime: sdpa and sdpa_grad on the CUDA executor's GEMM path (the plan's
 * LIB_ATTENTION and LIB_ATTENTION_GRAD calls; codegen/cuda/cuda.h,
 * CudaAttention, says what each round computes). Per batch row and chunk of
 * heads, strided batched GEMMs through the table read each head of q, k, v (and
 * g) in place and write the scores into scratch; the plan's row kernels turn
 * them into P (and dS) between the GEMMs; bf16 results are rounded at the end.
 * Everything is queued on one stream, in order. */
#ifndef V3C_RUNTIME_CUDA_ATTENTION_H
#define V3C_RUNTIME_CUDA_ATTENTION_H

#include "cuda_api.h"

enum { CUDA_ATTENTION_OPERANDS = 4 }; /* sdpa_grad: g, q, k, v in; dq, dk, dv out */

typedef struct CudaAttentionNode {
    CudaApi *api;
    CuStream stream;
    const CudaLibCall *call;
    const CuPtr *in;         /* the node's inputs' device buffers */
    const CuPtr *out;        /* its outputs' */
    const size_t *out_bytes; /* their sizes (zeroed when there are no queries) */
    CuPtr scores, dscores;   /* scratch ATT_P and ATT_DS, each a round's [heads][T][S] floats */
    /* Launches one of the call's own kernels (softmax, dscores, a rounding) on the stream. */
    int (*launch)(void *exec, const CudaLaunch *l, Err *err);
    void *exec;
} CudaAttentionNode;

int cuda_attention_run(const CudaAttentionNode *a, Err *err);

#endif
