/* codegen/cuda: the on-disk kernel cache and the compile driver.
 *
 * Layout: DIR/KEY/{kernel.cu, kernel.cubin, kernel.meta}, KEY = a 128-bit hash
 * of (NVRTC version, target, options, full source). An entry is written into a
 * temporary directory and renamed into place, so concurrent processes sharing
 * DIR never see half an entry; kernel.meta records the cubin's size and hash,
 * so a truncated or corrupted entry is detected and compiled again. */
#ifndef V3C_CODEGEN_KCACHE_H
#define V3C_CODEGEN_KCACHE_H

#include "cuda.h"
#include "nvrtc.h"

/* $V3C_CACHE_DIR, else $XDG_CACHE_HOME/v3c, else $HOME/.cache/v3c (created). */
char *kcache_dir(Err *err);
char *kcache_key(const char *compiler, const char *target, const char *source);
/* 1 and the cubin when DIR/KEY is complete and intact; 0 otherwise. */
int kcache_lookup(const char *dir, const char *key, char **cubin, size_t *len);
int kcache_store(const char *dir, const char *key, const char *source, const char *cubin, size_t len, Err *err);

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
