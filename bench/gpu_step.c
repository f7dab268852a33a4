/* A training step's forward and backward (every grad.<weight>, no optimizer:
 * the work HF's train_tokens_per_s in ../shared/bench/hf_peer.py measures) on
 * the CUDA executor.
 *   gpu_step MODEL.v3 [--config FILE] [--batch B] [--seq T] [--iters N] [--precision f32|bf16]
 *            [--attention gemm|exact]
 * Two ways of stepping, each timed by the wall clock and by the step's CUDA
 * events (median of N):
 *   resident: the weights stay on the device (uploaded by the first step), the
 *     token ids are uploaded and only the loss downloaded; the gradients stay
 *     on the device, as HF's .backward() leaves them. This is HF's work.
 *   full: every weight uploaded and every gradient downloaded, from pageable
 *     host memory, as `v3c train` steps (its optimizer is on the host).
 * Prints one JSON line with both, the prepare seconds (plan, kernel compile or
 * cache, device memory) and the device memory: the arena shared by liveness
 * against one buffer per value. Without a GPU it fails with the driver's message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "../runtime/cuda_backend.h"
#include "../runtime/cuda_exec.h"

typedef struct Timing {
    double wall_s, event_s;              /* medians */
    int64_t upload_bytes, download_bytes; /* per step */
} Timing;

/* One untimed step first: the first launches load modules lazily and warm
 * cuBLASLt's heuristics (and a resident run uploads the weights). */
static int time_steps(CudaExec *x, const TensorSet *feeds, const CudaStepOptions *o, int iters, Timing *t, Err *e) {
    double *wall = xcalloc((size_t)iters, sizeof *wall), *dev = xcalloc((size_t)iters, sizeof *dev);
    int rc = 0;
    for (int i = -1; i < iters && rc == 0; i++) {
        TensorSet out;
        tset_init(&out);
        double t0 = bench_now();
        rc = cuda_exec_step_opts(x, feeds, o, &out, e);
        double t1 = bench_now();
        tset_free(&out);
        if (rc == 0 && i >= 0) wall[i] = t1 - t0, dev[i] = 1e-3 * cuda_exec_stats(x).last_step_ms;
    }
    if (rc == 0) {
        CudaExecStats s = cuda_exec_stats(x);
        *t = (Timing){bench_median(wall, iters), bench_median(dev, iters), s.last_upload_bytes, s.last_download_bytes};
    }
    free(wall), free(dev);
    return rc;
}

static void print_json(const char *device, const BenchArgs *a, double prepare, const CudaExecStats *s,
                       const Timing *res, const Timing *full) {
    double tokens = (double)(a->batch * a->seq), gib = 1 << 30, mib = 1 << 20;
    printf("{\"engine\":\"v3c-cuda\",\"device\":\"%s\",\"attention\":\"%s\",\"batch\":%lld,\"seq\":%lld,\"prepare_s\":%.3f,"
           "\"kernels\":%lld,\"compiled\":%lld,\"cached\":%lld,\"launches\":%lld,\"library_calls\":%lld,"
           "\"device_gib\":%.2f,\"arena_gib\":%.2f,\"values_gib\":%.2f,\"iters\":%d,",
           device, a->exact_attention ? "exact" : "gemm", (long long)a->batch, (long long)a->seq, prepare,
           (long long)s->kernels, (long long)s->compiled,
           (long long)s->cached, (long long)s->launches, (long long)s->library_calls, (double)s->device_bytes / gib,
           (double)s->arena_bytes / gib, (double)s->values_bytes / gib, a->iters);
    printf("\"step_s\":%.4f,\"event_step_s\":%.4f,\"train_tokens_per_s\":%.1f,\"event_tokens_per_s\":%.1f,"
           "\"upload_mib\":%.3f,\"download_mib\":%.3f,",
           res->wall_s, res->event_s, tokens / res->wall_s, tokens / res->event_s, (double)res->upload_bytes / mib,
           (double)res->download_bytes / mib);
    printf("\"full_step_s\":%.4f,\"full_event_step_s\":%.4f,\"full_tokens_per_s\":%.1f,"
           "\"full_event_tokens_per_s\":%.1f,\"full_upload_mib\":%.1f,\"full_download_mib\":%.1f}\n",
           full->wall_s, full->event_s, tokens / full->wall_s, tokens / full->event_s,
           (double)full->upload_bytes / mib, (double)full->download_bytes / mib);
}

/* The objective's output alone is downloaded by the resident steps. */
static uint8_t *loss_only(const Graph *g) {
    uint8_t *want = xcalloc(g->outputs.len + 1, 1);
    int loss = ir_find_output(g, "total_loss");
    if (loss < 0) loss = ir_find_output(g, "loss");
    if (loss >= 0) want[loss] = 1;
    return want;
}

int main(int argc, char **argv) {
    BenchArgs a = {.model = "models/deepseek_v3.v3", .batch = 4, .seq = 1024, .iters = 5};
    bench_parse_args(argc, argv, &a);
    Err e = {0};
    CudaApi *api = cuda_api_open(&e);
    if (!api) return bench_fail(&e);
    char device[320];
    snprintf(device, sizeof device, "%s", api->what);
    Graph *g;
    TensorSet feeds;
    if (bench_setup(&a, &g, &feeds, &e)) return bench_fail(&e);
    InterpOptions opt = {.batch = a.batch, .seq = a.seq};
    double t0 = bench_now();
    CudaPlanOptions plan = {.exact_attention = a.exact_attention};
    CudaExec *x = cuda_exec_prepare_opts(api, g, &opt, &plan, &e);
    if (!x) return bench_fail(&e);
    double prepare = bench_now() - t0;
    uint8_t *want = loss_only(g);
    CudaStepOptions resident = {.params_unchanged = 1, .want_output = want};
    Timing res, full;
    if (time_steps(x, &feeds, &resident, a.iters, &res, &e) || time_steps(x, &feeds, NULL, a.iters, &full, &e))
        return bench_fail(&e);
    CudaExecStats s = cuda_exec_stats(x);
    print_json(device, &a, prepare, &s, &res, &full);
    free(want);
    cuda_exec_free(x);
    tset_free(&feeds);
    graph_free(g);
    return 0;
}
