/* runtime: NCCL's entry points and values, and the few of the CUDA runtime's that
 * the NCCL engine needs (its streams and device memory), as comm_nccl.c calls them
 * through dlopen (base/dlabi.h; checked against nccl.h and cuda_runtime_api.h by
 * tests/test_cuda_abi.c). */
#ifndef V3C_RUNTIME_NCCL_ABI_H
#define V3C_RUNTIME_NCCL_ABI_H

#include <stddef.h>

#include "../base/dlabi.h"

typedef struct NcclId {
    char internal[128]; /* NCCL_UNIQUE_ID_BYTES */
} NcclId;

typedef V3C_ABI(int, ncclResult_t) AbiNcclResult;
typedef V3C_ABI(void *, ncclComm_t) AbiNcclComm;
typedef V3C_ABI(NcclId, ncclUniqueId) AbiNcclId;
typedef V3C_ABI(int, ncclDataType_t) AbiNcclDataType;
typedef V3C_ABI(int, ncclRedOp_t) AbiNcclRedOp;
typedef V3C_ABI(void, ncclConfig_t) AbiNcclConfig;
typedef V3C_ABI(void *, cudaStream_t) AbiCudaStream;
typedef V3C_ABI(int, cudaError_t) AbiCudaError;
typedef V3C_ABI(int, enum cudaMemcpyKind) AbiCudaMemcpyKind;

#define NCCL_ABI_VALUES(X)                                                                                             \
    X(NCCL_OK, ncclSuccess, 0)                                                                                         \
    X(NCCL_PENDING, ncclInProgress, 7)                                                                                 \
    X(NCCL_OP_SUM, ncclSum, 0)                                                                                         \
    X(NCCL_T_UINT8, ncclUint8, 1)                                                                                      \
    X(NCCL_T_INT32, ncclInt32, 2)                                                                                      \
    X(NCCL_T_INT64, ncclInt64, 4)                                                                                      \
    X(NCCL_T_FLOAT32, ncclFloat32, 7)                                                                                  \
    X(NCCL_T_FLOAT64, ncclFloat64, 8)                                                                                  \
    X(CUDART_OK, cudaSuccess, 0)                                                                                       \
    X(CUDART_NOT_READY, cudaErrorNotReady, 600)                                                                        \
    X(CUDART_MEMCPY_DEFAULT, cudaMemcpyDefault, 4)                                                                     \
    X(CUDART_STREAM_NON_BLOCKING, cudaStreamNonBlocking, 1)

enum { NCCL_ABI_VALUES(DLABI_VALUE) };

#define NCCL_ENTRY_POINTS(X)                                                                                           \
    X(ncclGetUniqueId, get_unique_id, AbiNcclResult, (AbiNcclId * id))                                                 \
    X(ncclCommInitRank, comm_init_rank, AbiNcclResult, (AbiNcclComm * comm, int nranks, AbiNcclId id, int rank))       \
    X(ncclCommSplit, comm_split, AbiNcclResult,                                                                        \
      (AbiNcclComm comm, int color, int key, AbiNcclComm *out, AbiNcclConfig *config))                                 \
    X(ncclCommGetAsyncError, get_async_error, AbiNcclResult, (AbiNcclComm comm, AbiNcclResult * result))               \
    X(ncclCommAbort, comm_abort, AbiNcclResult, (AbiNcclComm comm))                                                    \
    X(ncclCommDestroy, comm_destroy, AbiNcclResult, (AbiNcclComm comm))                                                \
    X(ncclGetErrorString, error_string, const char *, (AbiNcclResult result))                                          \
    X(ncclAllReduce, all_reduce, AbiNcclResult,                                                                        \
      (const void *send, void *recv, size_t count, AbiNcclDataType type, AbiNcclRedOp op, AbiNcclComm comm,            \
       AbiCudaStream stream))                                                                                          \
    X(ncclReduceScatter, reduce_scatter, AbiNcclResult,                                                                \
      (const void *send, void *recv, size_t count, AbiNcclDataType type, AbiNcclRedOp op, AbiNcclComm comm,            \
       AbiCudaStream stream))                                                                                          \
    X(ncclAllGather, all_gather, AbiNcclResult,                                                                        \
      (const void *send, void *recv, size_t count, AbiNcclDataType type, AbiNcclComm comm, AbiCudaStream stream))      \
    X(ncclSend, send, AbiNcclResult,                                                                                   \
      (const void *buf, size_t count, AbiNcclDataType type, int peer, AbiNcclComm comm, AbiCudaStream stream))         \
    X(ncclRecv, recv, AbiNcclResult,                                                                                   \
      (void *buf, size_t count, AbiNcclDataType type, int peer, AbiNcclComm comm, AbiCudaStream stream))               \
    X(ncclGroupStart, group_start, AbiNcclResult, (void))                                                              \
    X(ncclGroupEnd, group_end, AbiNcclResult, (void))

#define CUDART_ENTRY_POINTS(X)                                                                                         \
    X(cudaSetDevice, set_device, AbiCudaError, (int device))                                                           \
    X(cudaGetDeviceCount, get_device_count, AbiCudaError, (int *count))                                                \
    X(cudaStreamCreateWithFlags, stream_create, AbiCudaError, (AbiCudaStream * stream, unsigned flags))                \
    X(cudaStreamQuery, stream_query, AbiCudaError, (AbiCudaStream stream))                                             \
    X(cudaStreamDestroy, stream_destroy, AbiCudaError, (AbiCudaStream stream))                                         \
    X(cudaMalloc, cuda_malloc, AbiCudaError, (void **p, size_t bytes))                                                 \
    X(cudaFree, cuda_free, AbiCudaError, (void *p))                                                                    \
    X(cudaMemcpy, cuda_memcpy, AbiCudaError, (void *dst, const void *src, size_t bytes, AbiCudaMemcpyKind kind))       \
    X(cudaGetErrorString, cuda_error_string, const char *, (AbiCudaError err))

#endif
