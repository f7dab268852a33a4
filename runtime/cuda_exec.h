/* runtime: the CUDA executor. A graph at concrete (B, T) becomes a CUDA plan
 * (codegen/cuda), its kernels are compiled (through the table's compile: NVRTC
 * and the kernel cache on a GPU) and loaded once; a step uploads the inputs
 * (and the params, unless the caller keeps them resident), replays the plan's
 * launches and library calls on a compute stream, downloads the graph outputs
 * (or those the caller wants) and checks every launch's status word.
 *
 * The executor talks to the device only through a CudaApi (cuda_api.h). */
#ifndef V3C_RUNTIME_CUDA_EXEC_H
#define V3C_RUNTIME_CUDA_EXEC_H

#include "../ir/interp.h"
#include "cuda_api.h"

typedef struct CudaExec CudaExec;

/* Takes ownership of api (closed by cuda_exec_free, or here on failure). */
CudaExec *cuda_exec_prepare(CudaApi *api, const Graph *g, const InterpOptions *opt, Err *err);
/* With the plan's choices (codegen/cuda/cuda.h, CudaPlanOptions; NULL: the defaults). */
CudaExec *cuda_exec_prepare_opts(CudaApi *api, const Graph *g, const InterpOptions *opt, const CudaPlanOptions *plan,
                                 Err *err);
/* Same contract as interp_run: feeds by name, every graph output into results. */
int cuda_exec_step(CudaExec *x, const TensorSet *feeds, TensorSet *results, Err *err);

/* For a caller that keeps the weights on the device (a benchmark, an optimizer
 * on the GPU). All zero (or opts NULL) is cuda_exec_step. */
typedef struct CudaStepOptions {
    /* The params are those of the last step that uploaded them: not uploaded (nor
     * looked up in feeds). Ignored until a step has uploaded them. Inputs are
     * uploaded every step. */
    int params_unchanged;
    /* Per graph output, in g->outputs order: 1 to download it. The others stay on
     * the device and are absent from results. NULL: all. */
    const uint8_t *want_output;
    /* Debug: after the last node that uses a value, its buffer is filled with
     * 0xff bytes (NaN), so a lifetime computed too short shows in the results. */
    int poison_dead_values;
} CudaStepOptions;
int cuda_exec_step_opts(CudaExec *x, const TensorSet *feeds, const CudaStepOptions *opts, TensorSet *results,
                        Err *err);
void cuda_exec_free(CudaExec *x);

typedef struct CudaExecStats {
    int64_t kernels, launches, library_calls; /* per step: launches and calls */
    int64_t compiled, cached;                  /* at prepare: kernels compiled, kernels taken from the cache */
    int64_t device_bytes;                      /* the value arena, scratch and status words */
    int64_t arena_bytes;                       /* the values' arena: buffers share it by liveness */
    int64_t values_bytes;                      /* the values' buffers summed: one allocation per value */
    int64_t last_upload_bytes;                 /* the last step's host-to-device copies of params and inputs */
    int64_t last_download_bytes;               /* the last step's graph outputs copied back (status words aside) */
    double last_step_ms;                       /* the last step, upload to download, timed by events */
} CudaExecStats;
CudaExecStats cuda_exec_stats(const CudaExec *x);

#endif
