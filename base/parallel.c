/* A tiny parallel-for over contiguous ranges: enough to use every core on the
 * interpreter's few heavy loops and the cpu backend's fused kernels.
 *
 * A training step makes thousands of calls, many of them short, so the threads are
 * kept: a process-wide pool (the one registry here, with the core share) whose workers
 * wait between calls.
 * One call at a time owns the pool; a call made while it is owned (from a worker's range,
 * or from a second thread) starts and joins threads of its own, as calls did before the
 * pool, so nesting and concurrent callers stay correct. After fork() the child starts
 * with an empty pool, since the parent's workers do not exist there. */
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <unistd.h>

#include "parallel.h"

enum { MAX_THREADS = 16, MIN_WORK_PER_THREAD = 1 << 16 };

typedef struct Range {
    RangeFn fn;
    void *ctx;
    int64_t lo, hi;
} Range;

/* Worker i (1 <= i < MAX_THREADS) runs ranges[i] of each generation it takes part in. */
typedef struct Pool {
    pthread_mutex_t owner;     /* held by the call using the pool */
    pthread_mutex_t lock;      /* guards the fields below; running and generation are also */
    pthread_cond_t wake, done; /* polled without it, so they are stored atomically */
    int workers;               /* started so far; ids 1..workers */
    int taking_part;           /* this generation's workers: ids 1..taking_part */
    int running;               /* of those, still running their range */
    unsigned long generation;  /* one more for each call run on the pool */
    Range ranges[MAX_THREADS];
} Pool;

#define EMPTY_POOL {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, \
                    PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, {{0}}}
static Pool pool = EMPTY_POOL;
static int core_share; /* parallel_set_core_share; 0: every online core */
static pthread_once_t fork_handler_once = PTHREAD_ONCE_INIT;

static void run_range(const Range *r) { r->fn(r->ctx, r->lo, r->hi); }

/* Before sleeping on a condition variable, a worker waiting for the next call and a
 * caller waiting for its workers poll for about 0.1 ms (2000 pauses): a step makes
 * hundreds of short calls, and a futex sleep and wake-up costs more than many of them.
 * Every 64 pauses the poller yields, so that on a busy machine (two test suites at once)
 * it gives its core to whoever has work: two tiny.v3 trainings side by side took 4.4 s
 * with plain pauses, 2.9 s with the yields, and one alone ran no slower. Polling still
 * pays only when the threads have cores of their own, hence parallel_set_core_share. */
enum { POLLS = 2000 };

static inline void pause_briefly(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void poll_while_generation_is(unsigned long seen) {
    for (int i = 0; i < POLLS && __atomic_load_n(&pool.generation, __ATOMIC_ACQUIRE) == seen; i++) {
        pause_briefly();
        if (i % 64 == 63) sched_yield();
    }
}

static void poll_while_running(void) {
    for (int i = 0; i < POLLS && __atomic_load_n(&pool.running, __ATOMIC_ACQUIRE) != 0; i++) {
        pause_briefly();
        if (i % 64 == 63) sched_yield();
    }
}

static void *worker_main(void *arg) {
    int id = (int)(intptr_t)arg;
    unsigned long seen = 0;
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        if (pool.generation == seen) {
            pthread_mutex_unlock(&pool.lock);
            poll_while_generation_is(seen);
            pthread_mutex_lock(&pool.lock);
        }
        while (pool.generation == seen) pthread_cond_wait(&pool.wake, &pool.lock);
        seen = pool.generation;
        if (id > pool.taking_part) continue;
        Range r = pool.ranges[id];
        pthread_mutex_unlock(&pool.lock);
        run_range(&r);
        pthread_mutex_lock(&pool.lock);
        if (__atomic_sub_fetch(&pool.running, 1, __ATOMIC_RELEASE) == 0) pthread_cond_signal(&pool.done);
    }
    return NULL;
}

/* The child of a fork() has only the forking thread: the workers, and any lock one of them
 * held, stay behind in the parent. */
static void forget_pool_in_child(void) {
    static const Pool empty = EMPTY_POOL;
    pool = empty;
}
static void install_fork_handler(void) { pthread_atfork(NULL, NULL, forget_pool_in_child); }

/* Starts workers until there are `want`; returns how many there are (fewer if the system refuses). */
static int grow_pool(int want) {
    while (pool.workers < want) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker_main, (void *)(intptr_t)(pool.workers + 1)) != 0) break;
        pthread_detach(t);
        pool.workers++;
    }
    return pool.workers;
}

/* Runs ranges[0..k) on the pool's workers and the caller; the caller owns the pool. */
static void run_on_pool(const Range *ranges, int k) {
    pthread_mutex_lock(&pool.lock);
    int helpers = grow_pool(k - 1);
    if (helpers > k - 1) helpers = k - 1;
    for (int i = 1; i <= helpers; i++) pool.ranges[i] = ranges[i];
    pool.taking_part = helpers;
    __atomic_store_n(&pool.running, helpers, __ATOMIC_RELAXED);
    __atomic_store_n(&pool.generation, pool.generation + 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    run_range(&ranges[0]);
    /* Ranges no worker could be started for run here. */
    for (int i = helpers + 1; i < k; i++) run_range(&ranges[i]);
    poll_while_running();
    pthread_mutex_lock(&pool.lock);
    while (pool.running > 0) pthread_cond_wait(&pool.done, &pool.lock);
    pthread_mutex_unlock(&pool.lock);
}

static void *run_range_thread(void *p) {
    run_range(p);
    return NULL;
}

/* The pool is owned by another call: threads of this call's own. */
static void run_on_new_threads(const Range *ranges, int k) {
    pthread_t threads[MAX_THREADS];
    bool started[MAX_THREADS] = {0};
    for (int i = 1; i < k; i++) started[i] = pthread_create(&threads[i], NULL, run_range_thread, (void *)&ranges[i]) == 0;
    run_range(&ranges[0]);
    for (int i = 1; i < k; i++) {
        if (started[i]) pthread_join(threads[i], NULL);
        else run_range(&ranges[i]);
    }
}

void parallel_set_core_share(int cores) { __atomic_store_n(&core_share, cores > 0 ? cores : 0, __ATOMIC_RELAXED); }

static int thread_count(int64_t n, int64_t cost, int max_threads) {
    long cores = max_threads > 0 ? max_threads : sysconf(_SC_NPROCESSORS_ONLN);
    int share = __atomic_load_n(&core_share, __ATOMIC_RELAXED);
    if (share > 0 && cores > share) cores = share;
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
    for (int i = 0; i < k; i++) ranges[i] = (Range){fn, ctx, n * i / k, n * (i + 1) / k};
    if (k == 1) {
        run_range(&ranges[0]);
        return;
    }
    pthread_once(&fork_handler_once, install_fork_handler);
    if (pthread_mutex_trylock(&pool.owner) != 0) {
        run_on_new_threads(ranges, k);
        return;
    }
    run_on_pool(ranges, k);
    pthread_mutex_unlock(&pool.owner);
}
