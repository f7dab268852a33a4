/* Backend dispatch: a table from backend name to its runner. */
#include <stdlib.h>
#include <string.h>

#include "../codegen/cpu.h"
#include "../ir/collective.h"
#include "cpu_backend.h"
#include "cuda_backend.h"
#include "exec.h"

static int run_cpu(const Graph *g, const TensorSet *feeds, const InterpOptions *opt, TensorSet *results, Err *err) {
    CpuPlan *p = cpu_plan_build(g, opt, NULL, err);
    if (!p) return -1;
    int rc = cpu_plan_run(p, feeds, results, err);
    cpu_plan_free(p);
    return rc;
}

/* The driver is opened first, so a machine without one hears exactly that;
 * with one, the error says what exists instead (code generation, no launches). */
static int cuda_unavailable(Err *err) {
    CudaDevice *d = cuda_device_open(err);
    if (!d) return -1;
    err_set(err, "--backend cuda: found %s (%s), but the cuda backend does not launch kernels yet; `v3c compile "
                 "--target %s` generates and compiles them; run with --backend cpu",
            cuda_device_name(d), cuda_device_target(d), cuda_device_target(d));
    cuda_device_close(d);
    return -1;
}

static int run_cuda(const Graph *g, const TensorSet *feeds, const InterpOptions *opt, TensorSet *results, Err *err) {
    (void)g, (void)feeds, (void)opt, (void)results;
    return cuda_unavailable(err);
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

const char *exec_default_backend(void) { return cpu_kernels_available() ? "cpu" : "interp"; }

struct Executor {
    const Graph *g;
    InterpOptions opt;
    CpuPlan *plan; /* NULL: the interpreter */
};

static int known_backend(const char *backend, Err *err) {
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++)
        if (strcmp(backends[i].name, backend) == 0) return 0;
    return unknown_backend(backend, err);
}

Executor *exec_prepare(const char *backend, const Graph *g, const InterpOptions *opt, Err *err) {
    if (known_backend(backend, err)) return NULL;
    if (strcmp(backend, "cuda") == 0 && cuda_unavailable(err)) return NULL;
    Executor *x = xcalloc(1, sizeof *x);
    x->g = g;
    x->opt = *opt;
    if (strcmp(backend, "cpu") == 0 && !(x->plan = cpu_plan_build(g, opt, NULL, err))) {
        free(x);
        return NULL;
    }
    return x;
}

/* The EP exchanges' kernels find the group's collectives bound to this thread
 * (ir/collective.h), whichever backend runs the graph. */
int exec_step(Executor *x, const TensorSet *feeds, TensorSet *results, Err *err) {
    const Collectives *prev = collectives_bind(x->opt.collectives);
    int rc = x->plan ? cpu_plan_run(x->plan, feeds, results, err) : interp_run(x->g, feeds, &x->opt, results, err);
    collectives_bind(prev);
    return rc;
}

void exec_free(Executor *x) {
    if (!x) return;
    if (x->plan) cpu_plan_free(x->plan);
    free(x);
}

int exec_dump_kernels(const Graph *g, const InterpOptions *opt, const char *dir, Err *err) {
    CpuPlan *p = cpu_plan_build(g, opt, dir, err);
    if (!p) return -1;
    cpu_plan_free(p);
    return 0;
}
