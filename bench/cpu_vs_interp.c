/* A training step (forward + backward: every grad.<weight>) on the interpreter and
 * on the cpu backend, side by side in one run.
 *   cpu_vs_interp MODEL.v3 [--set k=v,...] [--batch B] [--seq T] [--iters N]
 * Prints one table row: the plan's compile time, the median step time on each
 * backend, tokens per second, and the ratio. The two backends alternate step by
 * step, so a machine shared with other work slows both alike. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../frontend/frontend.h"
#include "../passes/autodiff.h"
#include "../passes/passes.h"
#include "../runtime/cpu_backend.h"
#include "../runtime/init.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int fail(const Err *e) {
    fprintf(stderr, "v3c: error: %s\n", e->msg);
    return 1;
}

/* The model with its backward graph, as `v3c train` prepares it (without --recompute). */
static Graph *build(const char *model, const char *sets, Err *e) {
    Program *p = program_parse_file(model, e);
    if (!p) return NULL;
    Graph *g = sets && program_bind_sets(p, sets, e) ? NULL : program_lower(p, e);
    program_free(p);
    if (!g) return NULL;
    const char *objective = ir_find_output(g, "total_loss") >= 0 ? "total_loss" : "loss";
    PipelineOptions sweep = {.passes = "dce,verify"};
    if (autodiff_graph(g, objective, e) || run_pipeline(g, &sweep, e)) {
        graph_free(g);
        return NULL;
    }
    return g;
}

static void feed_ids(int64_t b, int64_t t, TensorSet *feeds) {
    int64_t shape[2] = {b, t};
    Tensor *ids = tensor_new(DT_I64, 2, shape);
    for (int64_t i = 0; i < ids->numel; i++) ((int64_t *)ids->data)[i] = (i * 7919) % 97;
    tset_put(feeds, "input_ids", ids);
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, by_value);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct Timings {
    double *interp, *cpu;
} Timings;

static int time_steps(const Graph *g, const CpuPlan *plan, const TensorSet *feeds, const InterpOptions *opt, int iters,
                      Timings *tm, Err *e) {
    for (int i = 0; i < iters; i++) {
        TensorSet a, c;
        tset_init(&a), tset_init(&c);
        double t0 = now();
        int rc = interp_run(g, feeds, opt, &a, e);
        double t1 = now();
        if (rc == 0) rc = cpu_plan_run(plan, feeds, &c, e);
        tm->interp[i] = t1 - t0, tm->cpu[i] = now() - t1;
        tset_free(&a), tset_free(&c);
        if (rc) return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *model = argc > 1 ? argv[1] : "models/tiny.v3", *sets = NULL;
    int64_t b = 4, t = 64;
    int iters = 5;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--set")) sets = argv[i + 1];
        else if (!strcmp(argv[i], "--batch")) b = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--seq")) t = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--iters")) iters = atoi(argv[i + 1]);
    }
    if (iters < 1) iters = 1;
    Err e = {0};
    Graph *g = build(model, sets, &e);
    if (!g) return fail(&e);
    TensorSet feeds;
    tset_init(&feeds);
    InitOptions io = {.seed = 1, .std = 0.02};
    if (init_params(g, &io, &feeds, &e)) return fail(&e);
    feed_ids(b, t, &feeds);
    InterpOptions opt = {.batch = b, .seq = t};
    double t0 = now();
    CpuPlan *plan = cpu_plan_build(g, &opt, NULL, &e);
    if (!plan) return fail(&e);
    double compile = now() - t0;
    Timings tm = {xcalloc((size_t)iters, sizeof(double)), xcalloc((size_t)iters, sizeof(double))};
    if (time_steps(g, plan, &feeds, &opt, iters, &tm, &e)) return fail(&e);
    double ti = median(tm.interp, iters), tc = median(tm.cpu, iters), tokens = (double)(b * t);
    CpuPlanStats s = cpu_plan_stats(plan);
    printf("| %s %s | B=%lld T=%lld | %zu nodes: %d fused in %d groups (%d kernels), %d gemm, %d native, %d interp | %.2f s | "
           "%.1f ms (%.0f tok/s) | %.1f ms (%.0f tok/s) | %.1fx |\n",
           model, sets ? sets : "", (long long)b, (long long)t, g->nodes.len, s.fused_nodes, s.groups, s.kernels,
           s.gemm_nodes, s.native_nodes, s.interp_nodes, compile, 1e3 * ti, tokens / ti, 1e3 * tc, tokens / tc, ti / tc);
    free(tm.interp), free(tm.cpu);
    cpu_plan_free(plan);
    tset_free(&feeds);
    graph_free(g);
    return 0;
}
