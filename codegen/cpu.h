/* codegen: the CPU code generator's entry points (LLVM through ORC, GEMMs through BLAS). */
#ifndef V3C_CODEGEN_CPU_H
#define V3C_CODEGEN_CPU_H

#include "kernel.h"

typedef struct CpuKernels CpuKernels;

/* Whether this build can generate CPU kernels (configured with LLVM). */
int cpu_kernels_available(void);

typedef struct CpuCompileOptions {
    const char *dump_dir;  /* writes each distinct kernel's optimized LLVM IR to DIR/NAME.ll */
    const char *cache_dir; /* the kernel cache (../kcache.h); NULL compiles everything */
} CpuCompileOptions;

/* Compiles n kernels (equal ones share one function, named v3c_kernel_HASH)
 * and sets fns[i]. Fails with a user error on a build configured with
 * -DV3C_LLVM=OFF. */
CpuKernels *cpu_kernels_compile(const KernelDesc *descs, int n, const CpuCompileOptions *o, KernelFn *fns, Err *err);
void cpu_kernels_free(CpuKernels *c);
/* How many distinct kernels there are, and how many of them came from the cache. */
int cpu_kernels_count(const CpuKernels *c);
int cpu_kernels_cached(const CpuKernels *c);

/* y[m,n] = x[m,k] @ w[n,k]^T in fp32 (BLAS), split over at most `threads` threads (0: all cores)
 * in blocks of a fixed size, so the bits do not depend on the thread count.
 * The outputs must come zeroed: an empty product (k = 0) leaves them so. */
void gemm_xwt(const float *x, const float *w, float *y, int64_t m, int64_t n, int64_t k, int threads);
/* dw[n,k] = dy[m,n]^T @ x[m,k] in fp32 (BLAS), split the same way. */
void gemm_dyt_x(const float *dy, const float *x, float *dw, int64_t m, int64_t n, int64_t k, int threads);
/* One single-threaded fp64 BLAS call, row-major with the given leading dimensions, all sizes
 * at least 1: c[m,n] = a[m,k] b[n,k]^T (nt), or c[m,n] = a[k,m]^T b[k,n] (tn). Not named
 * dgemm_nt/dgemm_tn: OpenBLAS exports its own drivers by those names, and ours would
 * interpose them (cblas_dgemm would then call back into us). */
void gemm_f64_nt(const double *a, int64_t lda, const double *b, int64_t ldb, double *c, int64_t ldc, int64_t m, int64_t n,
              int64_t k);
void gemm_f64_tn(const double *a, int64_t lda, const double *b, int64_t ldb, double *c, int64_t ldc, int64_t m, int64_t n,
              int64_t k);
/* Makes each BLAS call single-threaded (the gemm_* functions split the work themselves). */
void gemm_use_own_threads(void);

#endif
