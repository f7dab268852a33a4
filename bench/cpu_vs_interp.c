/* A training step (forward + backward: every grad.<weight>) on the interpreter and
 * on the cpu backend, side by side in one run.
 *   cpu_vs_interp MODEL.v3 [--set k=v,...] [--batch B] [--seq T] [--iters N]
 * Prints one table row: the plan's compile time (kernels from the cache,
 * $V3C_CACHE_DIR, take none: empty it to time a cold compile), the median step time on each
 * backend, tokens per second, and the ratio. The two backends alternate step by
 * step, so a machine shared with other work slows both alike. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "../runtime/cpu_backend.h"

typedef struct Timings {
    double *interp, *cpu;
} Timings;

static int time_steps(const Graph *g, const CpuPlan *plan, const TensorSet *feeds, const InterpOptions *opt, int iters,
                      Timings *tm, Err *e) {
    for (int i = 0; i < iters; i++) {
        TensorSet a, c;
        tset_init(&a), tset_init(&c);
        double t0 = bench_now();
        int rc = interp_run(g, feeds, opt, &a, e);
        double t1 = bench_now();
        if (rc == 0) rc = cpu_plan_run(plan, feeds, &c, e);
        tm->interp[i] = t1 - t0, tm->cpu[i] = bench_now() - t1;
        tset_free(&a), tset_free(&c);
        if (rc) return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    BenchArgs a = {.model = "models/tiny.v3", .batch = 4, .seq = 64, .iters = 5};
    bench_parse_args(argc, argv, &a);
    int64_t b = a.batch, t = a.seq;
    int iters = a.iters;
    Err e = {0};
    Graph *g;
    TensorSet feeds;
    if (bench_setup(&a, &g, &feeds, &e)) return bench_fail(&e);
    InterpOptions opt = {.batch = b, .seq = t};
    double t0 = bench_now();
    CpuPlan *plan = cpu_plan_build(g, &opt, NULL, &e);
    if (!plan) return bench_fail(&e);
    double compile = bench_now() - t0;
    Timings tm = {xcalloc((size_t)iters, sizeof(double)), xcalloc((size_t)iters, sizeof(double))};
    if (time_steps(g, plan, &feeds, &opt, iters, &tm, &e)) return bench_fail(&e);
    double ti = bench_median(tm.interp, iters), tc = bench_median(tm.cpu, iters), tokens = (double)(b * t);
    CpuPlanStats s = cpu_plan_stats(plan);
    printf("| %s %s | B=%lld T=%lld | %zu nodes: %d fused in %d groups (%d kernels, %d cached), %d gemm, %d native, %d interp | %.2f s | "
           "%.1f ms (%.0f tok/s) | %.1f ms (%.0f tok/s) | %.1fx |\n",
           a.model, a.sets ? a.sets : "", (long long)b, (long long)t, g->nodes.len, s.fused_nodes, s.groups, s.kernels,
           s.cached_kernels, s.gemm_nodes, s.native_nodes, s.interp_nodes, compile, 1e3 * ti, tokens / ti, 1e3 * tc, tokens / tc, ti / tc);
    free(tm.interp), free(tm.cpu);
    cpu_plan_free(plan);
    tset_free(&feeds);
    graph_free(g);
    return 0;
}
