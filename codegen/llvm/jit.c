/* The ORC LLJIT wrapper: host target, process symbols (libm's exp and log)
 * visible to generated code, one thread-safe context per JIT. */
#include <stdlib.h>

#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>

#include "jit.h"

struct Jit {
    LLVMOrcLLJITRef lljit;
    LLVMOrcThreadSafeContextRef tsc;
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
    j->tsc = LLVMOrcCreateNewThreadSafeContext();
    return j;
}

void jit_free(Jit *j) {
    if (!j) return;
    /* The JIT's modules hold the context too; it goes when the last holder does. */
    LLVMErrorRef e = LLVMOrcDisposeLLJIT(j->lljit);
    if (e) LLVMConsumeError(e);
    if (j->tsc) LLVMOrcDisposeThreadSafeContext(j->tsc);
    free(j);
}

LLVMContextRef jit_context(Jit *j) { return LLVMOrcThreadSafeContextGetContext(j->tsc); }

int jit_add_module(Jit *j, LLVMModuleRef m, Err *err) {
    LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(m, j->tsc);
    LLVMErrorRef e = LLVMOrcLLJITAddLLVMIRModule(j->lljit, LLVMOrcLLJITGetMainJITDylib(j->lljit), tsm);
    if (e) {
        LLVMOrcDisposeThreadSafeModule(tsm);
        return take_error(e, err, "adding a module");
    }
    return 0;
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
