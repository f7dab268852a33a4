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

#include "bench_common.h"
#include "../runtime/cuda_backend.h"
#include "../runtime/cuda_exec.h"

/* One untimed step first: the first launches load modules lazily and warm cuBLASLt's heuristics. */
static int time_steps(CudaExec *x, const TensorSet *feeds, int iters, double *wall, double *device, Err *e) {
    for (int i = -1; i < iters; i++) {
        TensorSet out;
        tset_init(&out);
        double t0 = bench_now();
        int rc = cuda_exec_step(x, feeds, &out, e);
        double t1 = bench_now();
        tset_free(&out);
        if (rc) return -1;
        if (i >= 0) wall[i] = t1 - t0, device[i] = 1e-3 * cuda_exec_stats(x).last_step_ms;
    }
    return 0;
}

int main(int argc, char **argv) {
    BenchArgs a = {.model = "models/deepseek_v3.v3", .batch = 4, .seq = 1024, .iters = 5};
    bench_parse_args(argc, argv, &a);
    int64_t b = a.batch, t = a.seq;
    int iters = a.iters;
    Err e = {0};
    CudaApi *api = cuda_api_open(&e);
    if (!api) return bench_fail(&e);
    const char *device = api->what;
    Graph *g;
    TensorSet feeds;
    if (bench_setup(&a, &g, &feeds, &e)) return bench_fail(&e);
    InterpOptions opt = {.batch = b, .seq = t};
    char what[320];
    snprintf(what, sizeof what, "%s", device);
    double t0 = bench_now();
    CudaExec *x = cuda_exec_prepare(api, g, &opt, &e);
    if (!x) return bench_fail(&e);
    double prepare = bench_now() - t0;
    double *wall = xcalloc((size_t)iters, sizeof(double)), *dev = xcalloc((size_t)iters, sizeof(double));
    if (time_steps(x, &feeds, iters, wall, dev, &e)) return bench_fail(&e);
    double tw = bench_median(wall, iters), td = bench_median(dev, iters), tokens = (double)(b * t);
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
