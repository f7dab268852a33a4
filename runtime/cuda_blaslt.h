/* runtime: cuBLASLt, loaded at run time (dlopen libcublasLt.so.13, then
 * libcublasLt.so), for the CUDA executor's GEMMs: fp32 (CUBLAS_COMPUTE_32F),
 * bf16-grid operands on TF32 tensor cores (CUBLAS_COMPUTE_32F_FAST_TF32, exact
 * products), and block-scaled FP8. Each distinct GEMM shape gets its descriptors
 * and heuristic algorithm once, kept for later calls.
 *
 * Not verified on a GPU: no machine this was written on has one. */
#ifndef V3C_RUNTIME_CUDA_BLASLT_H
#define V3C_RUNTIME_CUDA_BLASLT_H

#include "cuda_api.h"

typedef struct Blaslt Blaslt;

/* workspace: device memory of `bytes` the GEMMs may use (owned by the caller).
 * library: the shared object to load, or NULL for libcublasLt.so.13, then
 * libcublasLt.so, then /usr/local/cuda/lib64/libcublasLt.so. */
Blaslt *blaslt_open(const char *library, CuPtr workspace, size_t bytes, Err *err);
void blaslt_close(Blaslt *b);
/* The row-major strided batched GEMMs of cuda_api.h on stream s (a CUstream). A
 * shape cuBLASLt cannot take (a dimension or batch below 1, a batch past INT32_MAX,
 * a leading dimension shorter than its row, a negative batch stride) is an internal error. */
int blaslt_gemm(Blaslt *b, const CudaGemm *g, CuStream s, Err *err);

/* fp8_matmul through cuBLASLt's DeepSeek block scaling (CUDA >= 12.9, Hopper),
 * both forms of CudaFp8Gemm (TN, 1x128 x 128x128 or 1x128 x 1x128 scales), M a
 * multiple of 4, K of 128 and N of 16; blaslt_fp8_check says why a shape cannot be
 * expressed. Not verified on a GPU. */
int blaslt_fp8_check(const CudaFp8Gemm *g, Err *err);
int blaslt_fp8_gemm(Blaslt *b, const CudaFp8Gemm *g, CuStream s, Err *err);

#endif
