/* A tiny parallel-for over contiguous ranges: enough to use every core on the
 * interpreter's few heavy loops and the cpu backend's fused kernels. */
#include <pthread.h>
#include <unistd.h>

#include "parallel.h"

enum { MAX_THREADS = 16, MIN_WORK_PER_THREAD = 1 << 16 };

typedef struct Range {
    RangeFn fn;
    void *ctx;
    int64_t lo, hi;
} Range;

static void *run_range(void *p) {
    Range *r = p;
    r->fn(r->ctx, r->lo, r->hi);
    return NULL;
}

static int thread_count(int64_t n, int64_t cost, int max_threads) {
    long cores = max_threads > 0 ? max_threads : sysconf(_SC_NPROCESSORS_ONLN);
    int64_t by_work = n * (cost > 0 ? cost : 1) / MIN_WORK_PER_THREAD;
    int64_t k = cores < 1 ? 1 : cores;
    if (k > MAX_THREADS) k = MAX_THREADS;
    if (k > by_work) k = by_work;
    if (k > n) k = n;
    return k < 1 ? 1 : (int)k;
}

void parallel_for(int64_t n, int64_t cost, RangeFn fn, void *ctx) { parallel_for_capped(n, cost, 0, fn, ctx); }

void parallel_for_capped(int64_t n, int64_t cost, int max_threads, RangeFn fn, void *ctx) {
    int k = thread_count(n, cost, max_threads);
    Range ranges[MAX_THREADS];
    pthread_t threads[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int i = 0; i < k; i++) ranges[i] = (Range){fn, ctx, n * i / k, n * (i + 1) / k};
    for (int i = 1; i < k; i++) started[i] = pthread_create(&threads[i], NULL, run_range, &ranges[i]) == 0;
    run_range(&ranges[0]);
    /* A thread that could not start has its range run here instead. */
    for (int i = 1; i < k; i++) {
        if (started[i]) pthread_join(threads[i], NULL);
        else run_range(&ranges[i]);
    }
}
