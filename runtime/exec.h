/* runtime: one entry point for every backend of one rank. */
#ifndef V3C_RUNTIME_EXEC_H
#define V3C_RUNTIME_EXEC_H

#include "../ir/interp.h"

/* Runs g on `backend` ("interp": the reference interpreter; "cpu": fused kernels
 * generated with LLVM and GEMMs through BLAS; "cuda": generated CUDA kernels and
 * cuBLASLt GEMMs on the GPU, runtime/cuda_exec.h). Same contract as interp_run.
 * An unknown backend is a user error naming the known ones. */
int exec_run(const char *backend, const Graph *g, const TensorSet *feeds, const InterpOptions *opt, TensorSet *results,
             Err *err);
/* The backend used when none is named: cuda when the driver loads and a GPU
 * answers, else cpu where this build generates CPU kernels, else the
 * interpreter. Cheap and silent where there is no driver (one failed dlopen);
 * where there is one it initialises CUDA in the calling process, so a test
 * that forks asks it inside the test, never in the parent. */
const char *exec_default_backend(void);

/* A graph prepared once for a backend and run many times (training steps):
 * the cpu backend compiles its kernels at prepare; the cuda backend compiles
 * (or takes from the kernel cache) and loads its kernels and allocates its
 * device buffers at prepare, and uploads the feeds at every step. */
typedef struct Executor Executor;
Executor *exec_prepare(const char *backend, const Graph *g, const InterpOptions *opt, Err *err);
int exec_step(Executor *x, const TensorSet *feeds, TensorSet *results, Err *err);
void exec_free(Executor *x);

/* Writes the LLVM IR of every kernel the cpu backend generates for g at opt's B, T into dir. */
int exec_dump_kernels(const Graph *g, const InterpOptions *opt, const char *dir, Err *err);

#endif
