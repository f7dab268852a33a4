/* Backend dispatch: a table from backend name to its runner. */
#include <string.h>

#include "cpu_backend.h"
#include "exec.h"

static int run_cpu(const Graph *g, const TensorSet *feeds, const InterpOptions *opt, TensorSet *results, Err *err) {
    CpuPlan *p = cpu_plan_build(g, opt, NULL, err);
    if (!p) return -1;
    int rc = cpu_plan_run(p, feeds, results, err);
    cpu_plan_free(p);
    return rc;
}

typedef int (*BackendFn)(const Graph *, const TensorSet *, const InterpOptions *, TensorSet *, Err *);

static const struct {
    const char *name;
    BackendFn run;
} backends[] = {
    {"interp", interp_run},
    {"cpu", run_cpu},
};

int exec_run(const char *backend, const Graph *g, const TensorSet *feeds, const InterpOptions *opt, TensorSet *results,
             Err *err) {
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++)
        if (strcmp(backends[i].name, backend) == 0) return backends[i].run(g, feeds, opt, results, err);
    return err_set(err, "unknown backend '%s' (available: interp, cpu)", backend);
}

int exec_dump_kernels(const Graph *g, const InterpOptions *opt, const char *dir, Err *err) {
    CpuPlan *p = cpu_plan_build(g, opt, dir, err);
    if (!p) return -1;
    cpu_plan_free(p);
    return 0;
}
