/* One rank's training job, shared by `train` (which prepares the graph from the
 * model) and `launch` (which reads the stage graphs from an `aot` bundle): the
 * ranks' layout, their communicators, weights and optimizer state, the data,
 * the pipeline runner and the loop (runtime/train.h). */
#ifndef V3C_TRAIN_JOB_H
#define V3C_TRAIN_JOB_H

#include "../passes/pipeline_split.h"
#include "../runtime/comm.h"
#include "../runtime/schedule.h"
#include "cli.h"

/* The ranks' layout (docs/distributed.md): world = pp x ep x dp. World rank w
 * runs stage w / (ep*dp) as data rank d = w % (ep*dp) of it: EP rank d % ep of
 * replica d / ep. A data rank takes rows d*B/(ep*dp).. of every batch. */
typedef struct Layout {
    int64_t pp, ep, dp, microbatches;
    SchedKind schedule;
    int stage, data_rank, ep_rank, replica;
    Comm *data;      /* this stage's ep*dp ranks: batch rows, losses, dense gradients */
    Comm *ep_group;  /* the ep ranks of one replica that share out the experts */
    Comm *expert_dp; /* the dp ranks holding the same experts */
    Comm *pipe;      /* the pp ranks, one per stage, of one data rank */
} Layout;

/* --pp, --ep, --dp, --schedule and --microbatches. `started`: the ranks mpirun
 * started, which pp x ep x dp must equal (--dp defaults to what is left); -1
 * when none are (aot plans for a cluster: --dp defaults to 1). */
int layout_configure(const Options *o, int64_t started, Layout *l, Err *err);
/* Where world rank w sits in the layout. */
void layout_place(Layout *l, int w);
int64_t layout_world(const Layout *l);
int64_t layout_data_ranks(const Layout *l); /* ep x dp */
/* Whether steps run through the pipeline runner: --pp above 1 or micro-batches. */
int layout_uses_pipeline(const Layout *l);

/* What one rank trains. */
typedef struct TrainJob {
    /* The whole training graph (owned): run as it is, or split when the layout
     * needs a pipeline. NULL when `split` comes ready-made. */
    Graph *graph;
    PipelineSplit *split; /* the stage graphs (owned); NULL: split `graph` when needed */
    const char *objective; /* the output differentiated: "total_loss" or "loss" */
    char *config_json;     /* hyperparameters written into checkpoints (owned; may be NULL) */
    int64_t peak_activation_bytes; /* reported in the log; planned from `graph` when there is one */
    const char *backend;           /* train_job_backend's choice */
    /* Fresh or --checkpoint weights for every param of the graphs. */
    int (*load_weights)(const Options *o, void *ctx, TensorSet *weights, Err *err);
    void *ctx;
} TrainJob;

/* A --flag value that must be a finite number >= 0 (NULL text: not given, *out kept). */
int train_parse_real(const char *flag, const char *text, double *out, Err *err);

/* Building the training graph, shared by train and aot (tools/cmd_train.c): the
 * model with --alpha/--mtp-lambda bound (--resume's directory as its
 * checkpoint), then for this rank's layout the expert_parallel pass, autodiff
 * of the objective, --fp8, --recompute and a dead-code sweep. */
int train_build_model(const Options *o, Model *m, Err *err);
int train_prepare_graph(const Options *o, const Layout *l, Graph *g, const char **objective, Err *err);

/* --backend, else the default (runtime/exec.h: cuda where a GPU answers, else
 * cpu, else interp), except that FP8 defaults to cpu: cuBLASLt's FP8 GEMM
 * refuses shapes small models have (docs/cuda.md); --backend cuda runs it where they fit. */
const char *train_job_backend(const Options *o, int fp8);

/* Checked before anything is built: --checkpoint with --resume, --save's directory. */
int train_job_check_options(const Options *o, Err *err);

/* Runs the job as this rank of `world` under layout l (placed): weights,
 * --resume state, data, the loop, the summary on rank 0. Frees the job. */
int train_job_run(const Options *o, Layout *l, Comm *world, TrainJob *job, Err *err);

/* The command's frame: MPI (or one rank), the layout from the options (`fixed`:
 * one given by a bundle instead, which the ranks started must match), the
 * communicators, then `body`; a failure names this rank and tears down without
 * collectives. */
typedef int (*TrainBody)(const Options *o, Layout *l, Comm *world, void *ctx, Err *err);
int train_job_main(const Options *o, const Layout *fixed, TrainBody body, void *ctx, Err *err);

#endif
