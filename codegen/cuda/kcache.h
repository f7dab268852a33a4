/* codegen/cuda: cubins in the kernel cache (../kcache.h) and the compile driver.
 *
 * An entry is KEY/{kernel.cu, kernel.cubin, kernel.meta}, KEY = a 128-bit hash
 * of (NVRTC version, target, options, full source). */
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
} CudaCubin;

typedef struct CudaCompileStats {
    int64_t compiled, cached;
} CudaCompileStats;

/* Compiles (or fetches) every kernel in parallel; cubins[i] (optional) gets kernel i's. */
int cuda_compile_kernels(const Nvrtc *nv, const CudaKernel *kernels, int n, const char *target, const char *cache_dir,
                         CudaCubin *cubins, CudaCompileStats *stats, Err *err);
void cuda_cubins_free(CudaCubin *cubins, int n);

#endif
