/* The CPU kernel compiler: one module per distinct kernel, optimized with the
 * O3 pipeline for the host CPU and compiled to an object file, in parallel (a
 * context and target machine per kernel), then loaded into the JIT. Objects go
 * through the kernel cache (../kcache.h) keyed by the unoptimized IR and the
 * host, so a second run compiles nothing; a hit and a miss load the same code. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <llvm/Config/llvm-config.h>

#include "../../base/parallel.h"
#include "../../base/strmap.h"
#include "../cpu.h"
#include "../kcache.h"
#include "emit.h"
#include "jit.h"

static const KcacheFiles cpu_cache_files = {"kernel.ll", "kernel.o", NULL};

struct CpuKernels {
    Jit *jit;
    int distinct, cached;
};

/* What every kernel's code depends on besides its IR. */
typedef struct Host {
    char *triple, *cpu, *features;
} Host;

/* One distinct kernel, compiled on a worker thread. */
typedef struct Compiled {
    int desc; /* index of its first description */
    char *name;
    char *object;
    size_t len;
    char *ir; /* optimized IR text, for --dump-kernels */
    int from_cache;
    Err err;
} Compiled;

typedef struct CompileJob {
    const KernelDesc *descs;
    Compiled *out;
    const Host *host;
    const char *cache_dir; /* NULL: no cache */
    int want_ir;
} CompileJob;

static Host host_detect(void) {
    return (Host){LLVMGetDefaultTargetTriple(), LLVMGetHostCPUName(), LLVMGetHostCPUFeatures()};
}

static void host_free(Host *h) {
    LLVMDisposeMessage(h->triple);
    LLVMDisposeMessage(h->cpu);
    LLVMDisposeMessage(h->features);
}

/* The JIT's code model (CodeModelJITDefault: large on x86-64), so objects load anywhere. */
static LLVMTargetMachineRef host_machine(const Host *h, Err *err) {
    char *msg = NULL;
    LLVMTargetRef target;
    if (LLVMGetTargetFromTriple(h->triple, &target, &msg)) {
        err_internal(err, "LLVM: no target for %s: %s", h->triple, msg);
        LLVMDisposeMessage(msg);
        return NULL;
    }
    return LLVMCreateTargetMachine(target, h->triple, h->cpu, h->features, LLVMCodeGenLevelAggressive,
                                   LLVMRelocDefault, LLVMCodeModelJITDefault);
}

static void set_target(LLVMModuleRef m, LLVMTargetMachineRef tm) {
    char *triple = LLVMGetTargetMachineTriple(tm);
    LLVMSetTarget(m, triple);
    LLVMDisposeMessage(triple);
    LLVMTargetDataRef layout = LLVMCreateTargetDataLayout(tm);
    LLVMSetModuleDataLayout(m, layout);
    LLVMDisposeTargetData(layout);
}

/* Everything the object depends on: LLVM, the host, the pipeline, the input IR. */
static char *cache_key(LLVMModuleRef m, const Host *h) {
    char *ir = LLVMPrintModuleToString(m);
    Buf b = {0};
    buf_printf(&b, "llvm %s\n%s\n%s\n%s\nO3 aggressive jit-code-model\n", LLVM_VERSION_STRING, h->triple, h->cpu,
               h->features);
    buf_puts(&b, ir);
    char *key = kcache_hash(b.data, b.len);
    buf_free(&b);
    LLVMDisposeMessage(ir);
    return key;
}

static int optimize(LLVMModuleRef m, LLVMTargetMachineRef tm, Err *err) {
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

static int emit_object(LLVMModuleRef m, LLVMTargetMachineRef tm, Compiled *c) {
    char *msg = NULL;
    LLVMMemoryBufferRef buf = NULL;
    if (LLVMTargetMachineEmitToMemoryBuffer(tm, m, LLVMObjectFile, &msg, &buf)) {
        err_internal(&c->err, "LLVM: compiling %s: %s", c->name, msg);
        LLVMDisposeMessage(msg);
        return -1;
    }
    c->len = LLVMGetBufferSize(buf);
    c->object = xmalloc(c->len + 1);
    memcpy(c->object, LLVMGetBufferStart(buf), c->len);
    LLVMDisposeMemoryBuffer(buf);
    return 0;
}

/* A hit needs the object and, when dumping, the optimized IR stored beside it. */
static int take_cached(const CompileJob *j, const char *key, Compiled *c) {
    const char *text = j->want_ir ? cpu_cache_files.source : NULL;
    return c->from_cache =
               j->cache_dir && kcache_lookup(j->cache_dir, key, &cpu_cache_files, text, &c->object, &c->len, &c->ir);
}

static int compile_module(const CompileJob *j, LLVMModuleRef m, LLVMTargetMachineRef tm, const char *key,
                          Compiled *c) {
    if (optimize(m, tm, &c->err) || emit_object(m, tm, c)) return -1;
    char *ir = LLVMPrintModuleToString(m);
    /* A cache that cannot be written costs the next run a compile, nothing more. */
    Err ignored = {0};
    if (j->cache_dir) kcache_store(j->cache_dir, key, &cpu_cache_files, ir, c->object, c->len, NULL, &ignored);
    if (j->want_ir) c->ir = xstrdup(ir);
    LLVMDisposeMessage(ir);
    return 0;
}

static void compile_one(const CompileJob *j, LLVMTargetMachineRef tm, Compiled *c) {
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMModuleRef m = LLVMModuleCreateWithNameInContext(c->name, ctx);
    emit_kernel(ctx, m, &j->descs[c->desc], c->name);
    set_target(m, tm);
    char *key = cache_key(m, j->host);
    if (!take_cached(j, key, c)) compile_module(j, m, tm, key, c);
    free(key);
    LLVMDisposeModule(m);
    LLVMContextDispose(ctx);
}

/* One target machine per thread: a machine is not shared between threads. */
static void compile_range(void *ctx, int64_t lo, int64_t hi) {
    const CompileJob *j = ctx;
    LLVMTargetMachineRef tm = host_machine(j->host, &j->out[lo].err);
    for (int64_t i = lo; tm && i < hi; i++) compile_one(j, tm, &j->out[i]);
    if (tm) LLVMDisposeTargetMachine(tm);
}

static int dump_ir(const char *dir, const Compiled *c, Err *err) {
    char *path = xsprintf("%s/%s.ll", dir, c->name);
    int rc = write_file_atomic(path, c->ir, strlen(c->ir), err);
    free(path);
    return rc;
}

/* Loads each compiled kernel (in order, so the first error is reported) and dumps it. */
static int load_all(CpuKernels *k, const Compiled *out, int n, const char *dump_dir, Err *err) {
    for (int i = 0; i < n; i++) {
        if (out[i].err.set) {
            *err = out[i].err;
            return -1;
        }
        if (dump_dir && dump_ir(dump_dir, &out[i], err)) return -1;
        if (jit_add_object(k->jit, out[i].object, out[i].len, out[i].name, err)) return -1;
        k->cached += out[i].from_cache;
    }
    return 0;
}

/* Kernels with equal keys share one function, named by the key's hash so equal
 * kernels in other graphs get equal IR (and cache entries). */
static int distinct_kernels(const KernelDesc *descs, int n, Compiled *out, int *slot_of) {
    StrMap seen; /* kernel key -> its slot in out */
    strmap_init(&seen);
    int distinct = 0;
    for (int i = 0; i < n; i++) {
        char *key = kernel_key(&descs[i]);
        int64_t slot;
        if (!strmap_get(&seen, key, &slot)) {
            char *h = kcache_hash(key, strlen(key));
            out[distinct] = (Compiled){.desc = i, .name = xsprintf("v3c_kernel_%s", h)};
            free(h);
            slot = distinct++;
            strmap_put(&seen, key, slot);
        }
        slot_of[i] = (int)slot;
        free(key);
    }
    strmap_free(&seen);
    return distinct;
}

static int compile_all(CpuKernels *k, const KernelDesc *descs, int n, const CpuCompileOptions *o, KernelFn *fns,
                       Err *err) {
    Compiled *out = xcalloc((size_t)n + 1, sizeof *out);
    int *slot_of = xcalloc((size_t)n + 1, sizeof *slot_of);
    k->distinct = distinct_kernels(descs, n, out, slot_of);
    Host host = host_detect();
    CompileJob job = {descs, out, &host, o->cache_dir, o->dump_dir != NULL};
    /* Each item is a whole LLVM compile: always worth a thread. */
    parallel_for(k->distinct, 1 << 20, compile_range, &job);
    int rc = load_all(k, out, k->distinct, o->dump_dir, err);
    if (o->cache_dir && k->cached < k->distinct) kcache_trim_to_limit(o->cache_dir);
    for (int i = 0; rc == 0 && i < n; i++)
        if (!(fns[i] = (KernelFn)jit_lookup(k->jit, out[slot_of[i]].name, err))) rc = -1;
    for (int i = 0; i < k->distinct; i++) free(out[i].name), free(out[i].object), free(out[i].ir);
    free(out);
    free(slot_of);
    host_free(&host);
    return rc;
}

CpuKernels *cpu_kernels_compile(const KernelDesc *descs, int n, const CpuCompileOptions *o, KernelFn *fns, Err *err) {
    LLVMInitializeNativeTarget();
    LLVMInitializeNativeAsmPrinter();
    CpuKernels *k = xcalloc(1, sizeof *k);
    if (!(k->jit = jit_new(err)) || compile_all(k, descs, n, o, fns, err)) {
        cpu_kernels_free(k);
        return NULL;
    }
    return k;
}

void cpu_kernels_free(CpuKernels *k) {
    if (!k) return;
    jit_free(k->jit);
    free(k);
}

int cpu_kernels_count(const CpuKernels *k) { return k->distinct; }

int cpu_kernels_cached(const CpuKernels *k) { return k->cached; }

int cpu_kernels_available(void) { return 1; }
