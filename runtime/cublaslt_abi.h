/* runtime: cuBLASLt's entry points, values and structs as cuda_blaslt.c uses
 * them through dlopen (base/dlabi.h; checked against cublasLt.h by
 * tests/test_cuda_abi.c). */
#ifndef V3C_RUNTIME_CUBLASLT_ABI_H
#define V3C_RUNTIME_CUBLASLT_ABI_H

#include <stddef.h>
#include <stdint.h>

#include "../base/dlabi.h"

typedef V3C_ABI(int, cublasStatus_t) AbiLtStatus;

typedef struct LtAlgo {
    uint64_t data[8];
} LtAlgo;
typedef struct LtHeuristic {
    LtAlgo algo;
    size_t workspace_size;
    AbiLtStatus state;
    float waves;
    int reserved[4];
} LtHeuristic;

typedef V3C_ABI(void *, cublasLtHandle_t) AbiLtHandle;
typedef V3C_ABI(void *, cublasLtMatmulDesc_t) AbiLtDesc;
typedef V3C_ABI(void *, cublasLtMatrixLayout_t) AbiLtLayout;
typedef V3C_ABI(void *, cublasLtMatmulPreference_t) AbiLtPref;
typedef V3C_ABI(int, cublasComputeType_t) AbiLtComputeType;
typedef V3C_ABI(int, cudaDataType_t) AbiLtDataType;
typedef V3C_ABI(int, cublasLtMatmulDescAttributes_t) AbiLtDescAttribute;
typedef V3C_ABI(int, cublasLtMatrixLayoutAttribute_t) AbiLtLayoutAttribute;
typedef V3C_ABI(int, cublasLtMatmulPreferenceAttributes_t) AbiLtPrefAttribute;
typedef V3C_ABI(LtAlgo, cublasLtMatmulAlgo_t) AbiLtAlgo;
typedef V3C_ABI(LtHeuristic, cublasLtMatmulHeuristicResult_t) AbiLtHeuristic;
typedef V3C_ABI(void *, cudaStream_t) AbiLtStream;

#define CUBLASLT_ABI_VALUES(X)                                                                                         \
    X(LT_OK, CUBLAS_STATUS_SUCCESS, 0)                                                                                 \
    X(LT_R_32F, CUDA_R_32F, 0)                                                                                         \
    X(LT_R_8F_E4M3, CUDA_R_8F_E4M3, 28)                                                                                \
    X(LT_COMPUTE_32F, CUBLAS_COMPUTE_32F, 68) /* true fp32, no TF32 down-conversion */                                 \
    X(LT_COMPUTE_32F_FAST_TF32, CUBLAS_COMPUTE_32F_FAST_TF32, 77) /* fp32 in and out, TF32 tensor-core products */     \
    X(LT_OP_N, CUBLAS_OP_N, 0)                                                                                         \
    X(LT_OP_T, CUBLAS_OP_T, 1)                                                                                         \
    X(LT_DESC_TRANSA, CUBLASLT_MATMUL_DESC_TRANSA, 3)                                                                  \
    X(LT_DESC_TRANSB, CUBLASLT_MATMUL_DESC_TRANSB, 4)                                                                  \
    X(LT_DESC_A_SCALE_POINTER, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, 17)                                               \
    X(LT_DESC_B_SCALE_POINTER, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, 18)                                               \
    X(LT_DESC_A_SCALE_MODE, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, 31) /* CUDA >= 12.9 */                                  \
    X(LT_DESC_B_SCALE_MODE, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, 32)                                                     \
    X(LT_SCALE_VEC128_32F, CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F, 4) /* one fp32 per 128 along K */                  \
    X(LT_SCALE_BLK128x128_32F, CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, 5)                                         \
    X(LT_PREF_MAX_WORKSPACE, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, 1) /* uint64_t */                               \
    X(LT_PREF_MIN_ALIGNMENT_A, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, 5) /* uint32_t, default 256 */              \
    X(LT_PREF_MIN_ALIGNMENT_B, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, 6)                                          \
    X(LT_PREF_MIN_ALIGNMENT_C, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, 7)                                          \
    X(LT_PREF_MIN_ALIGNMENT_D, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, 8)                                          \
    X(LT_LAYOUT_BATCH_COUNT, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, 5) /* int32_t */                                      \
    X(LT_LAYOUT_BATCH_STRIDE, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, 6) /* int64_t, in elements */

enum { CUBLASLT_ABI_VALUES(DLABI_VALUE) };

#define CUBLASLT_ENTRY_POINTS(X)                                                                                       \
    X(cublasLtCreate, create, AbiLtStatus, (AbiLtHandle * h))                                                          \
    X(cublasLtDestroy, destroy, AbiLtStatus, (AbiLtHandle h))                                                          \
    X(cublasLtGetStatusString, status_string, const char *, (AbiLtStatus s))                                           \
    X(cublasLtMatmulDescCreate, desc_create, AbiLtStatus,                                                              \
      (AbiLtDesc * d, AbiLtComputeType compute, AbiLtDataType scale_type))                                             \
    X(cublasLtMatmulDescDestroy, desc_destroy, AbiLtStatus, (AbiLtDesc d))                                             \
    X(cublasLtMatmulDescSetAttribute, desc_set, AbiLtStatus,                                                           \
      (AbiLtDesc d, AbiLtDescAttribute attr, const void *buf, size_t size))                                            \
    X(cublasLtMatrixLayoutCreate, layout_create, AbiLtStatus,                                                          \
      (AbiLtLayout * l, AbiLtDataType type, uint64_t rows, uint64_t cols, int64_t ld))                                 \
    X(cublasLtMatrixLayoutDestroy, layout_destroy, AbiLtStatus, (AbiLtLayout l))                                       \
    X(cublasLtMatrixLayoutSetAttribute, layout_set, AbiLtStatus,                                                       \
      (AbiLtLayout l, AbiLtLayoutAttribute attr, const void *buf, size_t size))                                        \
    X(cublasLtMatmulPreferenceCreate, pref_create, AbiLtStatus, (AbiLtPref * p))                                       \
    X(cublasLtMatmulPreferenceDestroy, pref_destroy, AbiLtStatus, (AbiLtPref p))                                       \
    X(cublasLtMatmulPreferenceSetAttribute, pref_set, AbiLtStatus,                                                     \
      (AbiLtPref p, AbiLtPrefAttribute attr, const void *buf, size_t size))                                            \
    X(cublasLtMatmulAlgoGetHeuristic, heuristic, AbiLtStatus,                                                          \
      (AbiLtHandle h, AbiLtDesc d, AbiLtLayout a, AbiLtLayout b, AbiLtLayout c, AbiLtLayout dd, AbiLtPref p,           \
       int requested, AbiLtHeuristic *results, int *returned))                                                         \
    X(cublasLtMatmul, matmul, AbiLtStatus,                                                                             \
      (AbiLtHandle h, AbiLtDesc d, const void *alpha, const void *a, AbiLtLayout al, const void *b, AbiLtLayout bl,    \
       const void *beta, const void *c, AbiLtLayout cl, void *dp, AbiLtLayout dl, const AbiLtAlgo *algo, void *ws,     \
       size_t ws_bytes, AbiLtStream s))

#endif
