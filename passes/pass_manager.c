/* The pass manager: resolves a comma-separated pipeline against the registry,
 * runs it, and owns every hook around a pass (verify-each, print-after,
 * timing), so no pass repeats that code. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../ir/text.h"
#include "../ir/verify.h"
#include "passes.h"

/* What a pass may know about its surroundings. */
struct PassContext {
    const PipelineOptions *opt;
    FILE *log;
    int position; /* 1-based place in the pipeline */
};

FILE *pass_log(const PassContext *ctx) { return ctx->log; }

/* verify first so bad input is caught before any rewrite; cse before dce so
 * the copies cse orphans are swept; verify last to check the passes' work. */
const char *default_pipeline(void) { return "verify,shapes,cse,dce,verify"; }

typedef struct PassTiming {
    const char *name;
    double ms;
    size_t nodes_before, nodes_after;
} PassTiming;

typedef VEC(const Pass *) PassList;

static int known_passes_error(const char *name, Err *err) {
    int n;
    const Pass *all = pass_registry(&n);
    Buf known = {0};
    for (int i = 0; i < n; i++) buf_printf(&known, "%s%s", i ? ", " : "", all[i].name);
    err_set(err, "unknown pass '%s' (known passes: %s)", name, known.data ? known.data : "");
    buf_free(&known);
    return -1;
}

/* Splits "a, b,c" into registry entries; empty names and unknown ones are errors. */
static int resolve_pipeline(const char *text, PassList *out, Err *err) {
    const char *p = text;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len && (*p == ' ' || *p == '\t')) p++, len--;
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t')) len--;
        char *name = xstrndup(p, len);
        const Pass *pass = pass_lookup(name);
        int rc = !len ? err_set(err, "empty pass name in pipeline '%s'", text)
                      : !pass ? known_passes_error(name, err) : 0;
        free(name);
        if (rc) return -1;
        VEC_PUSH(*out, pass);
        if (!end) return 0;
        p = end + 1;
    }
}

static int print_after_wanted(const PipelineOptions *opt, const Pass *pass) {
    return opt->print_after && (strcmp(opt->print_after, "all") == 0 || strcmp(opt->print_after, pass->name) == 0);
}

static int ensure_dir(const char *dir, Err *err) {
    if (mkdir(dir, 0777) == 0 || errno == EEXIST) return 0;
    return err_set(err, "cannot create dump directory '%s': %s", dir, strerror(errno));
}

static int print_after(const Graph *g, const struct PassContext *ctx, const Pass *pass, Err *err) {
    Buf text = {0};
    PrintOptions popt = {0};
    int rc = 0;
    if (ctx->opt->dump_dir) {
        ir_print(g, &popt, &text);
        char *path = xsprintf("%s/%04d.after_%s.v3ir", ctx->opt->dump_dir, ctx->position, pass->name);
        rc = ensure_dir(ctx->opt->dump_dir, err) || write_file_atomic(path, text.data, text.len, err) ? -1 : 0;
        free(path);
    } else {
        buf_printf(&text, "; *** IR after %s ***\n", pass->name);
        ir_print(g, &popt, &text);
        fputs(text.data, ctx->log);
    }
    buf_free(&text);
    return rc;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* One pass with its hooks: run, verify (--verify-each), print (--print-after). */
static int run_one(Graph *g, struct PassContext *ctx, const Pass *pass, PassTiming *timing, Err *err) {
    timing->name = pass->name;
    timing->nodes_before = g->nodes.len;
    double t0 = now_ms();
    int rc = pass->run(g, ctx, err);
    timing->ms = now_ms() - t0;
    timing->nodes_after = g->nodes.len;
    if (rc) return err_wrap(err, "pass '%s' (#%d in the pipeline) failed: ", pass->name, ctx->position);
    if (ctx->opt->verify_each && ir_verify(g, err))
        return err_wrap(err, "the graph is invalid after pass '%s' (#%d in the pipeline): ", pass->name, ctx->position);
    if (print_after_wanted(ctx->opt, pass)) return print_after(g, ctx, pass, err);
    return 0;
}

static void print_timings(FILE *log, const PassTiming *t, size_t n) {
    double total = 0;
    fprintf(log, "; pass timings\n;  #  %-16s %10s  %s\n", "pass", "wall ms", "nodes before -> after");
    for (size_t i = 0; i < n; i++) {
        fprintf(log, "; %2zu  %-16s %10.3f  %zu -> %zu\n", i + 1, t[i].name, t[i].ms, t[i].nodes_before,
                t[i].nodes_after);
        total += t[i].ms;
    }
    fprintf(log, ";     %-16s %10.3f\n", "total", total);
}

static int check_print_after(const char *name, Err *err) {
    if (!name || strcmp(name, "all") == 0 || pass_lookup(name)) return 0;
    known_passes_error(name, err);
    return err_wrap(err, "--print-after: ");
}

int run_pipeline(Graph *g, const PipelineOptions *opt, Err *err) {
    PassList passes = {0};
    if (check_print_after(opt->print_after, err) ||
        resolve_pipeline(opt->passes ? opt->passes : default_pipeline(), &passes, err)) {
        VEC_FREE(passes);
        return -1;
    }
    struct PassContext ctx = {.opt = opt, .log = opt->log ? opt->log : stderr};
    PassTiming *timings = xcalloc(passes.len ? passes.len : 1, sizeof *timings);
    int rc = 0;
    size_t done = 0;
    for (; done < passes.len && !rc; done++) {
        ctx.position = (int)done + 1;
        rc = run_one(g, &ctx, passes.data[done], &timings[done], err);
    }
    if (opt->time_passes) print_timings(ctx.log, timings, done);
    free(timings);
    VEC_FREE(passes);
    return rc;
}
