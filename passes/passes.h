/* The pass manager: a registry of passes (name, function, one line of doc) and
 * a pipeline runner with LLVM-style instrumentation. */
#ifndef V3C_PASSES_H
#define V3C_PASSES_H

#include "../ir/ir.h"

typedef struct PassContext PassContext;
typedef int (*PassFn)(Graph *g, PassContext *ctx, Err *err);

typedef struct Pass {
    const char *name;
    PassFn run;
    const char *doc;
} Pass;

/* Where a pass writes reports (the pipeline's log, stderr by default). */
FILE *pass_log(const PassContext *ctx);

const Pass *pass_lookup(const char *name);
const Pass *pass_registry(int *count);

typedef struct PipelineOptions {
    const char *passes;      /* "verify,shapes,dce"; NULL: the default pipeline */
    const char *print_after; /* pass name, "all" or NULL */
    const char *dump_dir;    /* where --print-after writes NNNN.after_<pass>.v3ir; NULL: stderr */
    int verify_each;
    int time_passes;         /* table of per-pass wall times on stderr */
    FILE *log;               /* where timing and print-after text go when no dump_dir (stderr) */
} PipelineOptions;

/* Runs the pipeline on g in place. An unknown pass name is an error listing the known ones. */
int run_pipeline(Graph *g, const PipelineOptions *opt, Err *err);
const char *default_pipeline(void);

#endif
