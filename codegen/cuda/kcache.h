/* codegen/cuda: cubins in the kernel cache (../kcache.h) and the compile driver.
 *
 * An entry is KEY/{kernel.cu, kernel.cubin, kernel.ptx, kernel.meta}, KEY = a
 * 128-bit hash of (NVRTC version, target, options, full source); kernel.ptx is
 * the PTX NVRTC assembled the cubin from, kept for reading. */
#ifndef V3C_CODEGEN_KCACHE_CUDA_H
#define V3C_CODEGEN_KCACHE_CUDA_H

#include "../kcache.h"
#include "cuda.h"
#include "nvrtc.h"

extern const KcacheFiles cuda_cache_files;
char *cuda_cache_key(const char *compiler, const char *target, const char *source);

typedef struct CudaCubin {
    char *data;
    size_t len;
    int from_cache;
    char *ptx; /* with with_ptx: the cubin's PTX text; else NULL */
} CudaCubin;

typedef struct CudaCompileStats {
    int64_t compiled, cached;
} CudaCompileStats;

/* Compiles (or fetches) every kernel in parallel; cubins[i] (optional) gets kernel
 * i's, with its PTX when with_ptx. */
int cuda_compile_kernels(const Nvrtc *nv, const CudaKernel *kernels, int n, const char *target, const char *cache_dir,
                         CudaCubin *cubins, int with_ptx, CudaCompileStats *stats, Err *err);
void cuda_cubins_free(CudaCubin *cubins, int n);

#endif
