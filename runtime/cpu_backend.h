/* runtime: the cpu backend's compiled plan. Fused groups (codegen/fuse.h) run
 * as JIT-compiled kernels, linear and linear_wgrad as BLAS GEMMs, attention, the
 * experts' GEMMs and the hot layout ops on the backend's own kernels
 * (cpu_ops.h), and every other op through the interpreter's kernel for it
 * (op_info(op)->interp). V3C_PROFILE=1 in the environment prints the time spent
 * per op kind to stderr when a plan is freed. */
#ifndef V3C_RUNTIME_CPU_BACKEND_H
#define V3C_RUNTIME_CPU_BACKEND_H

#include "../ir/interp.h"

typedef struct CpuPlan CpuPlan;

/* Plans and compiles g for B, T = opt->batch, opt->seq, through the kernel
 * cache (codegen/kcache.h) where a cache directory can be had. dump_dir: see
 * exec_dump_kernels. */
CpuPlan *cpu_plan_build(const Graph *g, const InterpOptions *opt, const char *dump_dir, Err *err);
/* Runs a plan; same contract as interp_run. A plan may run many times. */
int cpu_plan_run(const CpuPlan *p, const TensorSet *feeds, TensorSet *results, Err *err);
void cpu_plan_free(CpuPlan *p);

typedef struct CpuPlanStats {
    int groups;        /* fused groups, each one kernel call */
    int fused_nodes;   /* nodes inside them */
    int kernels;       /* distinct kernels */
    int cached_kernels; /* of them, taken from the kernel cache ($V3C_CACHE_DIR, ...) */
    int gemm_nodes;    /* nodes run as BLAS GEMMs */
    int native_nodes;  /* nodes run by the backend's own kernels (runtime/cpu_ops.h) */
    int interp_nodes;  /* nodes run by the interpreter's kernel */
} CpuPlanStats;
CpuPlanStats cpu_plan_stats(const CpuPlan *p);

#endif
