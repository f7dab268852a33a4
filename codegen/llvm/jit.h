/* codegen/llvm: the ORC LLJIT wrapper. Every ORC call lives in jit.c. */
#ifndef V3C_CODEGEN_LLVM_JIT_H
#define V3C_CODEGEN_LLVM_JIT_H

#include <llvm-c/Core.h>

#include "../../base/base.h"

typedef struct Jit Jit;

/* A JIT for the host CPU that resolves libc/libm symbols from the process. */
Jit *jit_new(Err *err);
void jit_free(Jit *j);
/* The context modules for this JIT must be created in. */
LLVMContextRef jit_context(Jit *j);
/* Hands m to the JIT (it owns it afterwards, on failure too). */
int jit_add_module(Jit *j, LLVMModuleRef m, Err *err);
/* The address of a function defined by an added module; NULL with err set if absent. */
void *jit_lookup(Jit *j, const char *name, Err *err);

#endif
