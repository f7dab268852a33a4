/* codegen/llvm: a kernel's loop description rendered to LLVM IR. */
#ifndef V3C_CODEGEN_LLVM_EMIT_H
#define V3C_CODEGEN_LLVM_EMIT_H

#include <llvm-c/Core.h>

#include "../kernel.h"

/* Adds `void name(float **bufs, i64 lo, i64 hi)` computing rows [lo, hi) of k to mod. */
void emit_kernel(LLVMContextRef ctx, LLVMModuleRef mod, const KernelDesc *k, const char *name);

#endif
