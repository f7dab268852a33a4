/* The CPU kernel compiler: one module per distinct kernel, optimized with the
 * O3 pipeline for the host CPU, optionally dumped, then handed to the JIT. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include "../../base/strmap.h"
#include "../cpu.h"
#include "emit.h"
#include "jit.h"

struct CpuKernels {
    Jit *jit;
    int distinct;
};

static LLVMTargetMachineRef host_machine(Err *err) {
    char *triple = LLVMGetDefaultTargetTriple(), *msg = NULL;
    LLVMTargetRef target;
    LLVMTargetMachineRef tm = NULL;
    if (LLVMGetTargetFromTriple(triple, &target, &msg)) {
        err_internal(err, "LLVM: no target for %s: %s", triple, msg);
        LLVMDisposeMessage(msg);
    } else {
        char *cpu = LLVMGetHostCPUName(), *features = LLVMGetHostCPUFeatures();
        tm = LLVMCreateTargetMachine(target, triple, cpu, features, LLVMCodeGenLevelAggressive, LLVMRelocDefault,
                                     LLVMCodeModelJITDefault);
        LLVMDisposeMessage(cpu);
        LLVMDisposeMessage(features);
    }
    LLVMDisposeMessage(triple);
    return tm;
}

static int optimize(LLVMModuleRef m, LLVMTargetMachineRef tm, Err *err) {
    char *triple = LLVMGetTargetMachineTriple(tm);
    LLVMSetTarget(m, triple);
    LLVMDisposeMessage(triple);
    LLVMTargetDataRef layout = LLVMCreateTargetDataLayout(tm);
    LLVMSetModuleDataLayout(m, layout);
    LLVMDisposeTargetData(layout);
    char *msg = NULL;
    if (LLVMVerifyModule(m, LLVMReturnStatusAction, &msg)) {
        err_internal(err, "LLVM: generated an invalid kernel: %s", msg);
        LLVMDisposeMessage(msg);
        return -1;
    }
    LLVMDisposeMessage(msg);
    LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
    LLVMErrorRef e = LLVMRunPasses(m, "default<O3>", tm, opts);
    LLVMDisposePassBuilderOptions(opts);
    if (!e) return 0;
    char *text = LLVMGetErrorMessage(e);
    err_internal(err, "LLVM: optimizing a kernel: %s", text);
    LLVMDisposeErrorMessage(text);
    return -1;
}

static int dump_module(LLVMModuleRef m, const char *dir, const char *name, Err *err) {
    char *text = LLVMPrintModuleToString(m);
    char *path = xsprintf("%s/%s.ll", dir, name);
    int rc = write_file_atomic(path, text, strlen(text), err);
    free(path);
    LLVMDisposeMessage(text);
    return rc;
}

/* Emits, optimizes, dumps and adds one kernel module. */
static int add_kernel(CpuKernels *c, LLVMTargetMachineRef tm, const KernelDesc *k, const char *name,
                      const char *dump_dir, Err *err) {
    LLVMModuleRef m = LLVMModuleCreateWithNameInContext(name, jit_context(c->jit));
    emit_kernel(jit_context(c->jit), m, k, name);
    if (optimize(m, tm, err) || (dump_dir && dump_module(m, dump_dir, name, err))) {
        LLVMDisposeModule(m);
        return -1;
    }
    return jit_add_module(c->jit, m, err);
}

static int compile_all(CpuKernels *c, const KernelDesc *descs, int n, const char *dump_dir, KernelFn *fns, Err *err) {
    LLVMTargetMachineRef tm = host_machine(err);
    if (!tm) return -1;
    StrMap seen; /* kernel key -> index of its first occurrence */
    strmap_init(&seen);
    char **names = xcalloc((size_t)n + 1, sizeof(char *));
    int rc = 0;
    for (int i = 0; rc == 0 && i < n; i++) {
        char *key = kernel_key(&descs[i]);
        int64_t first;
        if (strmap_get(&seen, key, &first)) {
            names[i] = xstrdup(names[first]);
        } else {
            names[i] = xsprintf("v3c_kernel_%d_%016llx", c->distinct++, (unsigned long long)hash_bytes(key, strlen(key), 0));
            strmap_put(&seen, key, i);
            rc = add_kernel(c, tm, &descs[i], names[i], dump_dir, err);
        }
        free(key);
    }
    for (int i = 0; rc == 0 && i < n; i++)
        if (!(fns[i] = (KernelFn)jit_lookup(c->jit, names[i], err))) rc = -1;
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    strmap_free(&seen);
    LLVMDisposeTargetMachine(tm);
    return rc;
}

CpuKernels *cpu_kernels_compile(const KernelDesc *descs, int n, const char *dump_dir, KernelFn *fns, Err *err) {
    CpuKernels *c = xcalloc(1, sizeof *c);
    if (!(c->jit = jit_new(err)) || compile_all(c, descs, n, dump_dir, fns, err)) {
        cpu_kernels_free(c);
        return NULL;
    }
    return c;
}

void cpu_kernels_free(CpuKernels *c) {
    if (!c) return;
    jit_free(c->jit);
    free(c);
}

int cpu_kernels_count(const CpuKernels *c) { return c->distinct; }

int cpu_kernels_available(void) { return 1; }
