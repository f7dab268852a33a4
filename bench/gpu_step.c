/* A training step's forward and backward (every grad.<weight>, no optimizer:
 * the work HF's train_tokens_per_s in ../shared/bench/hf_peer.py measures) on
 * the CUDA executor.
 *   gpu_step MODEL.v3 [--config FILE] [--batch B] [--seq T] [--iters N]
 * Prints one JSON line: prepare seconds (plan, kernel compile or cache, device
 * buffers), median step seconds by the wall clock (feeds uploaded, outputs
 * downloaded, as `v3c train` steps) and by the step's CUDA events, and tokens
 * per second from each. Without a GPU it fails with the driver's message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../base/json.h"
#include "../frontend/frontend.h"
#include "../passes/autodiff.h"
#include "../passes/passes.h"
#include "../runtime/cuda_backend.h"
#include "../runtime/cuda_exec.h"
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

static int bind_config(Program *p, const char *path, Err *e) {
    size_t len = 0;
    char *text = read_file(path, &len, e);
    if (!text) return -1;
    Json *cfg = json_parse(text, len, path, e);
    int rc = cfg ? program_bind_config(p, cfg, e) : -1;
    json_free(cfg);
    free(text);
    return rc;
}

/* The model with its backward graph, as `v3c train` prepares it (without --recompute or --fp8). */
static Graph *build(const char *model, const char *config, Err *e) {
    Program *p = program_parse_file(model, e);
    if (!p) return NULL;
    Graph *g = config && bind_config(p, config, e) ? NULL : program_lower(p, e);
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

/* One untimed step first: the first launches load modules lazily and warm cuBLASLt's heuristics. */
static int time_steps(CudaExec *x, const TensorSet *feeds, int iters, double *wall, double *device, Err *e) {
    for (int i = -1; i < iters; i++) {
        TensorSet out;
        tset_init(&out);
        double t0 = now();
        int rc = cuda_exec_step(x, feeds, &out, e);
        double t1 = now();
        tset_free(&out);
        if (rc) return -1;
        if (i >= 0) wall[i] = t1 - t0, device[i] = 1e-3 * cuda_exec_stats(x).last_step_ms;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *model = argc > 1 ? argv[1] : "models/deepseek_v3.v3", *config = NULL;
    int64_t b = 4, t = 1024;
    int iters = 5;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--config")) config = argv[i + 1];
        else if (!strcmp(argv[i], "--batch")) b = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--seq")) t = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--iters")) iters = atoi(argv[i + 1]);
    }
    if (iters < 1) iters = 1;
    Err e = {0};
    CudaApi *api = cuda_api_open(&e);
    if (!api) return fail(&e);
    const char *device = api->what;
    Graph *g = build(model, config, &e);
    if (!g) return fail(&e);
    TensorSet feeds;
    tset_init(&feeds);
    InitOptions io = {.seed = 1, .std = 0.02};
    if (init_params(g, &io, &feeds, &e)) return fail(&e);
    feed_ids(b, t, &feeds);
    InterpOptions opt = {.batch = b, .seq = t};
    char what[320];
    snprintf(what, sizeof what, "%s", device);
    double t0 = now();
    CudaExec *x = cuda_exec_prepare(api, g, &opt, &e);
    if (!x) return fail(&e);
    double prepare = now() - t0;
    double *wall = xcalloc((size_t)iters, sizeof(double)), *dev = xcalloc((size_t)iters, sizeof(double));
    if (time_steps(x, &feeds, iters, wall, dev, &e)) return fail(&e);
    double tw = median(wall, iters), td = median(dev, iters), tokens = (double)(b * t);
    CudaExecStats s = cuda_exec_stats(x);
    printf("{\"engine\":\"v3c-cuda\",\"device\":\"%s\",\"batch\":%lld,\"seq\":%lld,\"prepare_s\":%.3f,"
           "\"kernels\":%lld,\"compiled\":%lld,\"cached\":%lld,\"launches\":%lld,\"library_calls\":%lld,"
           "\"device_gib\":%.2f,\"iters\":%d,\"step_s\":%.4f,\"event_step_s\":%.4f,\"train_tokens_per_s\":%.1f,"
           "\"event_tokens_per_s\":%.1f}\n",
           what, (long long)b, (long long)t, prepare, (long long)s.kernels, (long long)s.compiled, (long long)s.cached,
           (long long)s.launches, (long long)s.library_calls, (double)s.device_bytes / (1 << 30), iters, tw, td, tokens / tw,
           tokens / td);
    free(wall), free(dev);
    cuda_exec_free(x);
    tset_free(&feeds);
    graph_free(g);
    return 0;
}
