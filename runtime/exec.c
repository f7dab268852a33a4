/* Backend dispatch: a table from backend name to its runner. */
#include <stdlib.h>
#include <string.h>

#include "../codegen/cpu.h"
#include "../ir/collective.h"
#include "cpu_backend.h"
#include "cuda_backend.h"
#include "cuda_exec.h"
#include "exec.h"

static int run_cpu(const Graph *g, const TensorSet *feeds, const InterpOptions *opt, TensorSet *results, Err *err) {
    CpuPlan *p = cpu_plan_build(g, opt, NULL, err);
    if (!p) return -1;
    int rc = cpu_plan_run(p, feeds, results, err);
    cpu_plan_free(p);
    return rc;
}

/* The driver is opened first, so a machine without one hears exactly that. */
static CudaExec *cuda_prepare(const Graph *g, const InterpOptions *opt, Err *err) {
    CudaApi *api = cuda_api_open(err);
    if (!api) return NULL;
    return cuda_exec_prepare(api, g, opt, err);
}

static int run_cuda(const Graph *g, const TensorSet *feeds, const InterpOptions *opt, TensorSet *results, Err *err) {
    CudaExec *x = cuda_prepare(g, opt, err);
    if (!x) return -1;
    int rc = cuda_exec_step(x, feeds, results, err);
    cuda_exec_free(x);
    return rc;
}

typedef int (*BackendFn)(const Graph *, const TensorSet *, const InterpOptions *, TensorSet *, Err *);

static const struct {
    const char *name;
    BackendFn run;
} backends[] = {
    {"interp", interp_run},
    {"cpu", run_cpu},
    {"cuda", run_cuda},
};

static int unknown_backend(const char *backend, Err *err) {
    return err_set(err, "unknown backend '%s' (available: interp, cpu, cuda)", backend);
}

int exec_run(const char *backend, const Graph *g, const TensorSet *feeds, const InterpOptions *opt, TensorSet *results,
             Err *err) {
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++)
        if (strcmp(backends[i].name, backend) == 0) return backends[i].run(g, feeds, opt, results, err);
    return unknown_backend(backend, err);
}

const char *exec_default_backend(void) {
    if (cuda_gpu_present()) return "cuda";
    return cpu_kernels_available() ? "cpu" : "interp";
}

struct Executor {
    const Graph *g;
    InterpOptions opt;
    CpuPlan *plan;  /* cpu */
    CudaExec *cuda; /* cuda; neither: the interpreter */
};

static int known_backend(const char *backend, Err *err) {
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++)
        if (strcmp(backends[i].name, backend) == 0) return 0;
    return unknown_backend(backend, err);
}

Executor *exec_prepare(const char *backend, const Graph *g, const InterpOptions *opt, Err *err) {
    if (known_backend(backend, err)) return NULL;
    Executor *x = xcalloc(1, sizeof *x);
    x->g = g;
    x->opt = *opt;
    int failed = strcmp(backend, "cpu") == 0    ? !(x->plan = cpu_plan_build(g, opt, NULL, err))
                 : strcmp(backend, "cuda") == 0 ? !(x->cuda = cuda_prepare(g, opt, err))
                                                : 0;
    if (failed) {
        free(x);
        return NULL;
    }
    return x;
}

/* The EP exchanges' kernels find the group's collectives bound to this thread
 * (ir/collective.h), whichever backend runs the graph. */
int exec_step(Executor *x, const TensorSet *feeds, TensorSet *results, Err *err) {
    const Collectives *prev = collectives_bind(x->opt.collectives);
    int rc = x->plan   ? cpu_plan_run(x->plan, feeds, results, err)
             : x->cuda ? cuda_exec_step(x->cuda, feeds, results, err)
                       : interp_run(x->g, feeds, &x->opt, results, err);
    collectives_bind(prev);
    return rc;
}

void exec_free(Executor *x) {
    if (!x) return;
    if (x->plan) cpu_plan_free(x->plan);
    cuda_exec_free(x->cuda);
    free(x);
}

int exec_dump_kernels(const Graph *g, const InterpOptions *opt, const char *dir, Err *err) {
    CpuPlan *p = cpu_plan_build(g, opt, dir, err);
    if (!p) return -1;
    cpu_plan_free(p);
    return 0;
}
