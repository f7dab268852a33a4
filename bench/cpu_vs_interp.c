/* Forward time of a model on the interpreter and on the cpu backend.
 *   cpu_vs_interp MODEL.v3 [--set k=v,...] [--batch B] [--seq T] [--iters N]
 * Prints one table row: compile time of the cpu plan, mean forward times, their ratio. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../frontend/frontend.h"
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

static Graph *build(const char *model, const char *sets, Err *e) {
    Program *p = program_parse_file(model, e);
    if (!p) return NULL;
    Graph *g = sets && program_bind_sets(p, sets, e) ? NULL : program_lower(p, e);
    program_free(p);
    return g;
}

static void feed_ids(const Graph *g, int64_t b, int64_t t, TensorSet *feeds) {
    int64_t shape[2] = {b, t};
    Tensor *ids = tensor_new(DT_I64, 2, shape);
    for (int64_t i = 0; i < ids->numel; i++) ((int64_t *)ids->data)[i] = (i * 7919) % 97;
    tset_put(feeds, "input_ids", ids);
    (void)g;
}

int main(int argc, char **argv) {
    const char *model = argc > 1 ? argv[1] : "models/tiny.v3", *sets = NULL;
    int64_t b = 8, t = 64;
    int iters = 3;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--set")) sets = argv[i + 1];
        else if (!strcmp(argv[i], "--batch")) b = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--seq")) t = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--iters")) iters = atoi(argv[i + 1]);
    }
    Err e = {0};
    Graph *g = build(model, sets, &e);
    if (!g) return fail(&e);
    TensorSet feeds;
    tset_init(&feeds);
    InitOptions io = {.seed = 1, .std = 0.02};
    if (init_params(g, &io, &feeds, &e)) return fail(&e);
    feed_ids(g, b, t, &feeds);
    InterpOptions opt = {.batch = b, .seq = t};
    double t0 = now();
    CpuPlan *plan = cpu_plan_build(g, &opt, NULL, &e);
    if (!plan) return fail(&e);
    double compile = now() - t0, t_interp = 0, t_cpu = 0;
    for (int i = 0; i < iters; i++) {
        TensorSet a, c;
        tset_init(&a), tset_init(&c);
        t0 = now();
        if (interp_run(g, &feeds, &opt, &a, &e)) return fail(&e);
        t_interp += now() - t0;
        t0 = now();
        if (cpu_plan_run(plan, &feeds, &c, &e)) return fail(&e);
        t_cpu += now() - t0;
        tset_free(&a), tset_free(&c);
    }
    CpuPlanStats s = cpu_plan_stats(plan);
    printf("| %s %s | B=%lld T=%lld | nodes %zu: %d fused in %d groups (%d kernels), %d gemm, %d interp | compile %.2f s | interp %.1f ms | cpu %.1f ms | %.1fx |\n",
           model, sets ? sets : "", (long long)b, (long long)t, g->nodes.len, s.fused_nodes, s.groups, s.kernels,
           s.gemm_nodes, s.interp_nodes, compile, 1e3 * t_interp / iters, 1e3 * t_cpu / iters, t_interp / t_cpu);
    cpu_plan_free(plan);
    tset_free(&feeds);
    graph_free(g);
    return 0;
}
