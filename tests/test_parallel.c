/* base/parallel.c: every item handled exactly once, whoever calls (nested, from two threads
 * at once, in a forked child), the workers kept from one call to the next, and the core
 * share bounding every call. */
#include <dirent.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../base/parallel.h"
#include "testutil.h"

enum { MANY = 100000, BIG_COST = 1 << 20 };

typedef struct Tally {
    int *hits;
    int64_t n;
} Tally;

static void count_items(void *ctx, int64_t lo, int64_t hi) {
    Tally *t = ctx;
    for (int64_t i = lo; i < hi; i++) __atomic_fetch_add(&t->hits[i], 1, __ATOMIC_RELAXED);
}

/* Runs one call over n items on at most `threads` threads; returns the items not hit exactly once. */
static int64_t items_missed(int64_t n, int threads) {
    Tally t = {calloc((size_t)n + 1, sizeof(int)), n};
    parallel_for_capped(n, BIG_COST, threads, count_items, &t);
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) bad += t.hits[i] != 1;
    free(t.hits);
    return bad;
}

static int threads_in_process(void) {
    DIR *d = opendir("/proc/self/task");
    ck_assert_ptr_nonnull(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

START_TEST(test_every_item_once) {
    static const int64_t sizes[] = {0, 1, 2, 3, 15, 16, 17, 1000, MANY};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++)
        for (int threads = 1; threads <= 16; threads *= 2)
            ck_assert_msg(items_missed(sizes[s], threads) == 0, "n %lld on %d threads", (long long)sizes[s], threads);
}
END_TEST

/* Small jobs stay on the calling thread (no worker is started for them). */
START_TEST(test_small_job_runs_here) {
    int before = threads_in_process();
    Tally t = {calloc(8, sizeof(int)), 8};
    parallel_for_capped(8, 1, 8, count_items, &t);
    free(t.hits);
    ck_assert_int_eq(threads_in_process(), before);
}
END_TEST

/* Counts are compared call to call, not to a fixed number, so that the test holds whether or
 * not earlier cases ran in this process (CK_FORK=no) and left workers behind. */
START_TEST(test_workers_kept) {
    ck_assert_int_eq(items_missed(MANY, 8), 0);
    int after_first = threads_in_process();
    ck_assert_int_ge(after_first, 8);
    for (int i = 0; i < 500; i++) ck_assert_int_eq(items_missed(64, 8), 0);
    ck_assert_int_eq(threads_in_process(), after_first);
    /* A call wanting fewer threads leaves the others idle; one wanting more adds them, once. */
    ck_assert_int_eq(items_missed(MANY, 3), 0);
    ck_assert_int_eq(threads_in_process(), after_first);
    ck_assert_int_eq(items_missed(MANY, 12), 0);
    int after_more = threads_in_process();
    ck_assert_int_ge(after_more, 12);
    for (int i = 0; i < 100; i++) ck_assert_int_eq(items_missed(MANY, 12), 0);
    ck_assert_int_eq(threads_in_process(), after_more);
}
END_TEST

typedef struct Callers {
    pthread_t seen[16];
    int n;
    pthread_mutex_t lock;
} Callers;

/* Notes which thread ran a range, and makes the range long enough that all take part. */
static void note_thread(void *ctx, int64_t lo, int64_t hi) {
    Callers *c = ctx;
    (void)lo, (void)hi;
    usleep(2000);
    pthread_mutex_lock(&c->lock);
    int known = 0;
    for (int i = 0; i < c->n; i++) known |= pthread_equal(c->seen[i], pthread_self());
    if (!known && c->n < 16) c->seen[c->n++] = pthread_self();
    pthread_mutex_unlock(&c->lock);
}

static int threads_used(int64_t n, int want) {
    Callers c = {.lock = PTHREAD_MUTEX_INITIALIZER};
    parallel_for_capped(n, BIG_COST, want, note_thread, &c);
    return c.n;
}

/* A core share bounds every call, whatever it asks; 0 lifts it. */
START_TEST(test_core_share) {
    ck_assert_int_eq(threads_used(64, 8), 8);
    parallel_set_core_share(3);
    ck_assert_int_eq(threads_used(64, 8), 3);
    ck_assert_int_eq(threads_used(64, 2), 2);
    ck_assert_int_eq(items_missed(MANY, 8), 0);
    parallel_set_core_share(1);
    ck_assert_int_eq(threads_used(64, 8), 1);
    parallel_set_core_share(0);
    ck_assert_int_eq(threads_used(64, 8), 8);
}
END_TEST

typedef struct Nest {
    int64_t outer_bad;
} Nest;

/* Each outer item is itself a parallel call, made while the outer call owns the pool. */
static void nested_items(void *ctx, int64_t lo, int64_t hi) {
    Nest *nest = ctx;
    for (int64_t i = lo; i < hi; i++) {
        int64_t bad = items_missed(1000 + i, 4);
        __atomic_fetch_add(&nest->outer_bad, bad, __ATOMIC_RELAXED);
    }
}

START_TEST(test_nested_calls) {
    Nest nest = {0};
    parallel_for_capped(8, BIG_COST, 4, nested_items, &nest);
    ck_assert_int_eq(nest.outer_bad, 0);
}
END_TEST

static void *calls_in_a_loop(void *arg) {
    int64_t *bad = arg;
    for (int i = 0; i < 200; i++) *bad += items_missed(5000 + i, 4);
    return NULL;
}

START_TEST(test_two_callers_at_once) {
    pthread_t other;
    int64_t bad_here = 0, bad_there = 0;
    ck_assert_int_eq(pthread_create(&other, NULL, calls_in_a_loop, &bad_there), 0);
    calls_in_a_loop(&bad_here);
    pthread_join(other, NULL);
    ck_assert_int_eq(bad_here, 0);
    ck_assert_int_eq(bad_there, 0);
}
END_TEST

/* The parent's workers do not exist in a forked child: the child must start its own. */
START_TEST(test_after_fork) {
    ck_assert_int_eq(items_missed(MANY, 4), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) _exit(items_missed(MANY, 4) == 0 && items_missed(MANY, 8) == 0 ? 0 : 1);
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    ck_assert_int_eq(items_missed(MANY, 4), 0);
}
END_TEST

int main(void) {
    Suite *s = suite_create("parallel");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_every_item_once);
    tcase_add_test(tc, test_small_job_runs_here);
    tcase_add_test(tc, test_workers_kept);
    tcase_add_test(tc, test_nested_calls);
    tcase_add_test(tc, test_core_share);
    tcase_add_test(tc, test_two_callers_at_once);
    tcase_add_test(tc, test_after_fork);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
