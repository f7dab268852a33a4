/* runtime: the cpu backend's compiled plan. Fused groups (codegen/fuse.h) run
 * as JIT-compiled kernels, linear and grouped_linear as BLAS GEMMs, and every
 * other op through the interpreter's kernel for it (op_info(op)->interp). */
#ifndef V3C_RUNTIME_CPU_BACKEND_H
#define V3C_RUNTIME_CPU_BACKEND_H

#include "../ir/interp.h"

typedef struct CpuPlan CpuPlan;

/* Plans and compiles g for B, T = opt->batch, opt->seq. dump_dir: see exec_dump_kernels. */
CpuPlan *cpu_plan_build(const Graph *g, const InterpOptions *opt, const char *dump_dir, Err *err);
/* Runs a plan; same contract as interp_run. A plan may run many times. */
int cpu_plan_run(const CpuPlan *p, const TensorSet *feeds, TensorSet *results, Err *err);
void cpu_plan_free(CpuPlan *p);

typedef struct CpuPlanStats {
    int groups;        /* fused groups, each one kernel call */
    int fused_nodes;   /* nodes inside them */
    int kernels;       /* distinct compiled kernels */
    int gemm_nodes;    /* nodes run as BLAS GEMMs */
    int interp_nodes;  /* nodes run by the interpreter's kernel */
} CpuPlanStats;
CpuPlanStats cpu_plan_stats(const CpuPlan *p);

#endif
