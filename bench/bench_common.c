#include "bench_common.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../base/json.h"
#include "../frontend/frontend.h"
#include "../passes/autodiff.h"
#include "../passes/bf16.h"
#include "../passes/passes.h"
#include "../runtime/init.h"

double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int bench_fail(const Err *e) {
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

Graph *bench_training_graph(const char *model, const char *config, const char *sets, Err *e) {
    Program *p = program_parse_file(model, e);
    if (!p) return NULL;
    int bad = (config && bind_config(p, config, e)) || (sets && program_bind_sets(p, sets, e));
    Graph *g = bad ? NULL : program_lower(p, e);
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

void bench_feed_ids(int64_t b, int64_t t, TensorSet *feeds) {
    int64_t shape[2] = {b, t};
    Tensor *ids = tensor_new(DT_I64, 2, shape);
    for (int64_t i = 0; i < ids->numel; i++) ((int64_t *)ids->data)[i] = (i * 7919) % 97;
    tset_put(feeds, "input_ids", ids);
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, by_value);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* A bad command line: the message as v3c gives it, and exit status 1. */
static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "v3c: error: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* The index of s in the two-word list `a|b`'s words, or a user error naming the flag. */
static int parse_choice(const char *flag, const char *s, const char *a, const char *b) {
    if (strcmp(s, a) && strcmp(s, b)) usage_error("%s must be %s or %s, not '%s'", flag, a, b, s);
    return strcmp(s, b) == 0;
}

/* A whole number in [1, max], or a user error naming the flag. */
static int64_t parse_count(const char *flag, const char *s, int64_t max) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 1 || v > max)
        usage_error("%s must be a whole number from 1 to %lld, not '%s'", flag, (long long)max, s);
    return v;
}

enum { MAX_BATCH = 1 << 16, MAX_SEQ = 1 << 20, MAX_ITERS = 100000 };

static void set_flag(BenchArgs *a, const char *flag, const char *v) {
    if (!strcmp(flag, "--config")) a->config = v;
    else if (!strcmp(flag, "--set")) a->sets = v;
    else if (!strcmp(flag, "--batch")) a->batch = parse_count(flag, v, MAX_BATCH);
    else if (!strcmp(flag, "--seq")) a->seq = parse_count(flag, v, MAX_SEQ);
    else if (!strcmp(flag, "--iters")) a->iters = (int)parse_count(flag, v, MAX_ITERS);
    else if (!strcmp(flag, "--precision")) a->bf16 = parse_choice(flag, v, "f32", "bf16");
    else if (!strcmp(flag, "--attention")) a->exact_attention = parse_choice(flag, v, "gemm", "exact");
    else usage_error("unknown flag '%s' (flags: --config --set --batch --seq --iters --precision --attention)", flag);
}

void bench_parse_args(int argc, char **argv, BenchArgs *a) {
    int i = 1;
    if (argc > 1 && strncmp(argv[1], "--", 2) != 0) a->model = argv[i++];
    for (; i < argc; i += 2) {
        if (strncmp(argv[i], "--", 2) != 0) usage_error("unexpected argument '%s': the model comes first", argv[i]);
        if (i + 1 >= argc) usage_error("%s needs a value", argv[i]);
        set_flag(a, argv[i], argv[i + 1]);
    }
}

int bench_setup(const BenchArgs *a, Graph **g, TensorSet *feeds, Err *e) {
    tset_init(feeds);
    if (!(*g = bench_training_graph(a->model, a->config, a->sets, e))) return -1;
    if (a->bf16 && bf16_graph(*g, e)) return -1;
    InitOptions io = {.seed = 1, .std = 0.02};
    if (init_params(*g, &io, feeds, e)) return -1;
    bench_feed_ids(a->batch, a->seq, feeds);
    return 0;
}
