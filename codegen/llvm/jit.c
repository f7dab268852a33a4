/* The ORC LLJIT wrapper: host target, process symbols (libm's exp and log)
 * visible to generated code, which arrives as object files. */
#include <stdlib.h>

#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>

#include "jit.h"

struct Jit {
    LLVMOrcLLJITRef lljit;
};

/* Moves an LLVM error's message into err (and frees the error). */
static int take_error(LLVMErrorRef e, Err *err, const char *what) {
    char *msg = LLVMGetErrorMessage(e);
    err_internal(err, "LLVM JIT: %s: %s", what, msg);
    LLVMDisposeErrorMessage(msg);
    return -1;
}

static LLVMErrorRef create_lljit(LLVMOrcLLJITRef *out) {
    LLVMOrcJITTargetMachineBuilderRef jtmb;
    LLVMErrorRef e = LLVMOrcJITTargetMachineBuilderDetectHost(&jtmb);
    if (e) return e;
    LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
    LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, jtmb);
    return LLVMOrcCreateLLJIT(out, builder);
}

Jit *jit_new(Err *err) {
    LLVMInitializeNativeTarget();
    LLVMInitializeNativeAsmPrinter();
    Jit *j = xcalloc(1, sizeof *j);
    LLVMErrorRef e = create_lljit(&j->lljit);
    if (e) {
        free(j);
        take_error(e, err, "creating the JIT");
        return NULL;
    }
    LLVMOrcDefinitionGeneratorRef gen;
    e = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(j->lljit), NULL, NULL);
    if (e) {
        jit_free(j);
        take_error(e, err, "adding process symbols");
        return NULL;
    }
    LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(j->lljit), gen);
    return j;
}

void jit_free(Jit *j) {
    if (!j) return;
    LLVMErrorRef e = LLVMOrcDisposeLLJIT(j->lljit);
    if (e) LLVMConsumeError(e);
    free(j);
}

int jit_add_object(Jit *j, const char *data, size_t len, const char *name, Err *err) {
    LLVMMemoryBufferRef buf = LLVMCreateMemoryBufferWithMemoryRangeCopy(data, len, name);
    LLVMErrorRef e = LLVMOrcLLJITAddObjectFile(j->lljit, LLVMOrcLLJITGetMainJITDylib(j->lljit), buf);
    return e ? take_error(e, err, name) : 0;
}

void *jit_lookup(Jit *j, const char *name, Err *err) {
    LLVMOrcExecutorAddress addr = 0;
    LLVMErrorRef e = LLVMOrcLLJITLookup(j->lljit, &addr, name);
    if (e) {
        take_error(e, err, name);
        return NULL;
    }
    return (void *)(uintptr_t)addr;
}
