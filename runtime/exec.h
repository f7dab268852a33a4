/* runtime: one entry point for every backend of one rank. */
#ifndef V3C_RUNTIME_EXEC_H
#define V3C_RUNTIME_EXEC_H

#include "../ir/interp.h"

/* Runs g on `backend` ("interp": the reference interpreter; "cpu": fused kernels
 * generated with LLVM and GEMMs through BLAS). Same contract as interp_run. An
 * unknown backend is a user error naming the known ones. */
int exec_run(const char *backend, const Graph *g, const TensorSet *feeds, const InterpOptions *opt, TensorSet *results,
             Err *err);
/* Writes the LLVM IR of every kernel the cpu backend generates for g at opt's B, T into dir. */
/* The backend used when none is named: cpu where this build generates CPU
 * kernels, else the interpreter. (cuda will come first once it exists.) */
const char *exec_default_backend(void);

/* A graph prepared once for a backend and run many times (training steps):
 * the cpu backend compiles its kernels at prepare. */
typedef struct Executor Executor;
Executor *exec_prepare(const char *backend, const Graph *g, const InterpOptions *opt, Err *err);
int exec_step(Executor *x, const TensorSet *feeds, TensorSet *results, Err *err);
void exec_free(Executor *x);

int exec_dump_kernels(const Graph *g, const InterpOptions *opt, const char *dir, Err *err);

#endif
