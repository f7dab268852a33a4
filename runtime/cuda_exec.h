/* runtime: the CUDA executor. A graph at concrete (B, T) becomes a CUDA plan
 * (codegen/cuda), its kernels are compiled (through the table's compile: NVRTC
 * and the kernel cache on a GPU) and loaded once; a step uploads the inputs,
 * replays the plan's launches and library calls on a compute stream, downloads
 * the graph outputs and checks every launch's status word.
 *
 * The executor talks to the device only through a CudaApi (cuda_api.h). */
#ifndef V3C_RUNTIME_CUDA_EXEC_H
#define V3C_RUNTIME_CUDA_EXEC_H

#include "../ir/interp.h"
#include "cuda_api.h"

typedef struct CudaExec CudaExec;

/* Takes ownership of api (closed by cuda_exec_free, or here on failure). */
CudaExec *cuda_exec_prepare(CudaApi *api, const Graph *g, const InterpOptions *opt, Err *err);
/* Same contract as interp_run: feeds by name, every graph output into results. */
int cuda_exec_step(CudaExec *x, const TensorSet *feeds, TensorSet *results, Err *err);
void cuda_exec_free(CudaExec *x);

typedef struct CudaExecStats {
    int64_t kernels, launches, library_calls; /* per step: launches and calls */
    int64_t compiled, cached;                  /* at prepare: kernels compiled, kernels taken from the cache */
    int64_t device_bytes;                      /* values, scratch and status words */
    double last_step_ms;                       /* the last step, upload to download, timed by events */
} CudaExecStats;
CudaExecStats cuda_exec_stats(const CudaExec *x);

#endif
