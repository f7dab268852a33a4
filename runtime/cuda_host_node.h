/* runtime: a node of a CUDA plan run on the host. Its operands are copied
 * down, the interpreter's kernel runs on them, its results are copied up into
 * their device buffers (the device layout is the interpreter's, docs/cuda.md).
 *
 * The EP exchanges (ep_dispatch, ep_combine) run this way: their all-to-all-v
 * goes over the EP group's Collectives bound to the calling thread (MPI between
 * processes, on host memory; ir/collective.h), so a cuda rank joins an EP group
 * with no device-side communicator. It costs a host round trip of the rows
 * exchanged; a device-to-device all-to-all over NCCL is the faster path. */
#ifndef V3C_RUNTIME_CUDA_HOST_NODE_H
#define V3C_RUNTIME_CUDA_HOST_NODE_H

#include "cuda_api.h"

enum { CUDA_HOST_NODE_MAX_OPERANDS = 8 };

typedef struct CudaHostNode {
    CudaApi *api;
    CuStream stream;  /* the compute stream: work before the node is waited for, work after it waits */
    const Graph *g;
    const Node *n;
    int64_t b, t;
    const CuPtr *in;  /* n->nin device buffers */
    const CuPtr *out; /* n->nout device buffers */
} CudaHostNode;

int cuda_run_on_host(const CudaHostNode *h, Err *err);

#endif
