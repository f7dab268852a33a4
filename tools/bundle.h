/* The ahead-of-time bundle: what `v3c aot` writes and `v3c launch` runs
 * (docs/aot.md has the format):
 *   DIR/manifest.json                  format, model, hyperparameters, layout,
 *                                      batch, target, stages, ranks and their memory
 *   DIR/plans/stage<S>.<part>.v3ir     the stage graphs (part: forward, backward, weight)
 *   DIR/experts.json                   with --ep: every expert stack's weight names
 *   DIR/kernels/<key>/                 the compiled CUDA kernels (codegen/cuda/kcache.h layout)
 * The plans are those of EP rank 0; another EP rank holds other experts of the
 * same shapes, so launch renames the expert weights (bundle_rebase_experts)
 * instead of the bundle carrying a plan per rank. */
#ifndef V3C_BUNDLE_H
#define V3C_BUNDLE_H

#include "train_job.h"

#define BUNDLE_FORMAT "v3c-bundle"
enum { BUNDLE_VERSION = 2 };

/* The weight names of each grouped_linear's stack of per-expert weights, in
 * expert order (all of them, before the expert_parallel pass slices them). */
typedef struct ExpertStacks {
    int64_t experts; /* routed experts per stack (every stack has as many) */
    VEC(char **) stacks;
} ExpertStacks;

int expert_stacks_collect(const Graph *g, ExpertStacks *out, Err *err);
void expert_stacks_free(ExpertStacks *s);

/* One rank's memory at the bundle's micro-batch (bytes; docs/aot.md says how each is counted). */
typedef struct RankMemory {
    int64_t parameters, gradients, optimizer, activations;
    int64_t weight_derived; /* stacked or transposed weights, per graph: an upper bound, left out of the total */
    int64_t inflight;       /* the most micro-batches whose activations the rank keeps at once */
} RankMemory;
int64_t rank_memory_total(const RankMemory *m);

/* Memory of pipe rank r (every data rank of its stages alike) at micro-batches
 * of `rows` x `seq`. `whole`: the unsplit training graph, which a layout without
 * a pipeline runs as one (its activations are then that graph's peak); `split`
 * may then be NULL. */
int bundle_rank_memory(const PipelineSplit *split, const Schedule *sched, const Layout *l, const ExpertStacks *ex,
                       const Graph *whole, int r, int64_t rows, int64_t seq, RankMemory *out, Err *err);
/* The stages pipe rank r runs: 1, or 2 under DualPipe (r and P-1-r). */
int bundle_rank_stages(const Layout *l, int r, int stages[2]);

/* What launch reads back. */
typedef struct Bundle {
    char *dir;
    Layout layout; /* sizes, schedule, micro-batches; not placed */
    int64_t batch, seq;
    int fp8, bf16;
    char *objective, *target, *checkpoint; /* checkpoint: "" when aot had none */
    char *config_json;                     /* the bound hyperparameters, a JSON object */
    int64_t *activation_bytes;             /* per pipe rank */
    PipelineSplit *split;                  /* the stage graphs, EP rank 0's */
    ExpertStacks experts;
    /* Every weight, in the order `train` holds them (the training graph's
     * params): launch keeps that order, so its sums run as train's do. */
    VEC(char *) weights;
} Bundle;

/* Reads DIR's manifest and plans; every field is checked, an error names the file. */
int bundle_open(const char *dir, Bundle *b, Err *err);
void bundle_close(Bundle *b);
/* Renames the expert weights (params and their "grad." outputs) of EP rank 0's
 * plans to those of EP rank `rank` of `ranks`. */
int bundle_rebase_experts(PipelineSplit *split, const ExpertStacks *ex, int rank, int ranks, Err *err);
/* The same renaming for a list of weight names (b->weights). */
void bundle_rebase_names(char **names, size_t n, const ExpertStacks *ex, int rank, int ranks);
/* A graph of just the bundle's weights as params, in b->weights' order, typed
 * as the stage graphs declare them: what init and checkpoint loading take. */
Graph *bundle_weight_graph(const Bundle *b, Err *err);

/* Plan file names, relative to the bundle. */
char *bundle_plan_path(int stage, PipePart part);

#endif
