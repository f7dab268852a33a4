/* codegen/llvm: the ORC LLJIT wrapper. Every ORC call lives in jit.c. */
#ifndef V3C_CODEGEN_LLVM_JIT_H
#define V3C_CODEGEN_LLVM_JIT_H

#include <stddef.h>

#include "../../base/base.h"

typedef struct Jit Jit;

/* A JIT for the host CPU that resolves libc/libm symbols from the process. */
Jit *jit_new(Err *err);
void jit_free(Jit *j);
/* Loads an object file (copied; name labels its errors). */
int jit_add_object(Jit *j, const char *data, size_t len, const char *name, Err *err);
/* The address of a function defined by an added object; NULL with err set if absent. */
void *jit_lookup(Jit *j, const char *name, Err *err);

#endif
