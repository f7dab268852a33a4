/* The CPU kernel compiler of a build configured with -DV3C_LLVM=OFF: it says so. */
#include "cpu.h"

CpuKernels *cpu_kernels_compile(const KernelDesc *descs, int n, const CpuCompileOptions *o, KernelFn *fns, Err *err) {
    (void)descs, (void)n, (void)o, (void)fns;
    err_set(err, "this build has no LLVM (configured with -DV3C_LLVM=OFF)");
    return NULL;
}

int cpu_kernels_available(void) { return 0; }

void cpu_kernels_free(CpuKernels *c) { (void)c; }

int cpu_kernels_count(const CpuKernels *c) {
    (void)c;
    return 0;
}

int cpu_kernels_cached(const CpuKernels *c) {
    (void)c;
    return 0;
}
