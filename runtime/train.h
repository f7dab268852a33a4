/* The training loop on the reference interpreter: each step draws a batch
 * (data.h), runs the forward+backward graph, clips and applies AdamW (optim.h),
 * nudges each MoE layer's routing bias towards balance, logs, and saves
 * checkpoints (save.h). The graph is prepared by the caller (autodiff, recompute). */
#ifndef V3C_TRAIN_H
#define V3C_TRAIN_H

#include <stdio.h>

#include "comm.h"
#include "data.h"
#include "save.h"

/* A failure injected on purpose (the V3C_FAULT debug switch, docs/distributed.md):
 * KIND@rank=R,step=S makes world rank R, when it starts step S (1-based), exit
 * (status 1, no message), crash (SIGKILL) or hang (stop answering forever). */
typedef enum TrainFaultKind { FAULT_NONE, FAULT_EXIT, FAULT_CRASH, FAULT_HANG } TrainFaultKind;
typedef struct TrainFault {
    TrainFaultKind kind;
    int rank;
    int64_t step;
} TrainFault;
/* Parses V3C_FAULT's text (NULL or "" : none). */
int train_parse_fault(const char *text, TrainFault *f, Err *err);

typedef struct TrainConfig {
    const Graph *graph;       /* outputs the objective and "grad.<weight>" per trained weight */
    const char *objective;    /* the output differentiated: "total_loss" or "loss" */
    const Corpus *data;
    int64_t steps;            /* train until this many steps are done in all (resumed ones included) */
    int64_t save_every;       /* 0: save only at the end */
    const char *save_dir;     /* NULL: no checkpoints */
    const char *config_json;  /* written into each checkpoint; NULL for none */
    FILE *log;                /* one JSON object per step, or NULL */
    FILE *progress;           /* stderr, or NULL for silence */
    int progress_bar;         /* 1: redraw one bar line (a terminal); 0: a line every report_every steps */
    int64_t report_every;
    int64_t peak_activation_bytes; /* reported in the log */
    int threads;              /* interpreter threads; 0: all cores */
    struct Executor *exec;    /* the graph prepared for a backend (runtime/exec.h), at batch / dp ranks */
    /* Data parallelism: each of the dp ranks runs rows [r*B/D, (r+1)*B/D) of every
     * global batch of B rows, so the run equals one rank's; gradients averaged,
     * AdamW moments sharded (ZeRO-1, zero.h). NULL or size 1: one rank. Only world
     * rank 0 writes checkpoints; log and progress are the caller's (NULL on others). */
    Comm *dp;
    /* Expert parallelism (docs/distributed.md): dp is then the stage's EP x DP
     * ranks, ep the ranks among them that share out one copy of the experts
     * (each holds its own experts; the graph exchanges tokens over ep), and
     * expert_dp the ranks holding the same experts. NULL: every rank holds
     * every expert. */
    Comm *ep, *expert_dp;
    /* Non-NULL: every step runs through this pipeline runner (--pp stages, or
     * micro-batches with gradient accumulation on one stage), exec unused.
     * train_run switches it to held gradients (pipeline.h). */
    struct PipeRunner *pipe;
    TrainFault fault;
} TrainConfig;

typedef struct TrainSummary {
    int64_t steps_run;
    double first_loss, last_loss, min_loss; /* the "loss" output (next-token cross-entropy) */
    double tokens_per_s;                    /* over the whole run */
} TrainSummary;

/* Trains from pr->step to c->steps (pr->batch is the global batch). `weights` holds every param of the graph and is
 * updated in place; opt and pr carry the state a checkpoint stores. With a
 * pipeline over ranks (c->pipe with a schedule) the weights and moments of
 * params other ranks' stages read are dropped from weights and opt first:
 * each rank keeps and updates its own (docs/distributed.md). A NaN or
 * infinite loss or gradient stops training with an error naming the step; the last
 * checkpoint written stays as it was. */
int train_run(const TrainConfig *c, TensorSet *weights, AdamW *opt, TrainProgress *pr, TrainSummary *sum, Err *err);

/* The auxiliary-loss-free balance update for one MoE layer: b_i += gamma *
 * sign(mean(load) - load_i), so overloaded experts become less attractive. */
void balance_bias(float *bias, const int32_t *load, int64_t experts, double gamma);
/* Coefficient of variation (population std / mean) of per-expert loads; 0 when none is routed. */
double load_cv(const int32_t *load, int64_t experts);

#endif
