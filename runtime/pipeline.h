/* Pipeline-parallel training step: runs the per-stage graphs of a stage split
 * (passes/pipeline_split.h) over M micro-batches, on one rank per pipeline
 * stage in the order of a Schedule (1F1B, ZB1P, DualPipe; runtime/schedule.h),
 * or all stages in one process one after another (no schedule).
 *
 * The stage graphs are graphs[stage][part], part 0 forward, 1 backward (input
 * part, or all of it), 2 weight part (may be empty). They talk only through
 * names: an output "x.N" of one graph is the input "x.N" of every other graph
 * that reads it; the runner passes it on in memory when both run on this rank
 * and with comm_isend / comm_irecv otherwise (every receive posted when the
 * step begins, so values land while the rank computes). Every other output is a step
 * result: float ones are averaged over the micro-batches (losses and their
 * gradients are token means, so equal micro-batches average to the whole
 * batch's value), integer ones summed (expert loads); then summed over the
 * ranks, so every rank ends with the loss and the full gradient of every
 * weight (DualPipe's two copies of a stage, and a weight two stages share,
 * add up). docs/pipeline.md describes it. */
#ifndef V3C_RUNTIME_PIPELINE_H
#define V3C_RUNTIME_PIPELINE_H

#include "comm.h"
#include "exec.h"
#include "schedule.h"

enum { PIPE_PARTS = 3 }; /* forward, backward, weight: passes/pipeline_split.h's PipePart order */

typedef struct PipeRunOptions {
    const char *backend; /* exec_run's backend; NULL: "interp" */
    int threads;         /* interpreter threads; 0: all cores */
    int64_t batch, seq;  /* the step's input_ids shape; batch divisible by the micro-batches */
    int microbatches;    /* without a schedule; with one it is the schedule's M */
    /* 1: graphs run on compute threads (an F&B pair's two halves at once)
     * while this thread, the one MPI allows to communicate, completes the
     * sends and so progresses the pre-posted receives: communication
     * overlaps computation. 0: one thread does both in turn. Results are
     * bit-identical either way. The cpu backend's kernels must then be safe
     * to run from two threads; the interpreter is. */
    int overlap;
    /* The EP group's collectives for expert-parallel stage graphs (NULL:
     * none). Every rank of the group must run its exchanges in one order, so
     * such a runner needs overlap 0. */
    const struct Collectives *collectives;
} PipeRunOptions;

typedef struct PipeRunner PipeRunner;

/* sched NULL: this process runs every stage (comm NULL or of size 1).
 * Otherwise comm has one rank per schedule rank (P = stages) and this rank
 * runs its list: stage r, and for DualPipe also stage P-1-r. Prepares the
 * graphs this rank runs. Errors: sizes that do not match, a batch the
 * micro-batches do not divide, a graph the backend refuses. */
PipeRunner *pipe_runner_new(int stages, Graph *(*graphs)[PIPE_PARTS], const Schedule *sched, Comm *comm,
                            const PipeRunOptions *o, Err *err);
void pipe_runner_free(PipeRunner *r);

/* One training step on input_ids (I64 [batch, seq], the same on every rank;
 * micro-batch g gets rows [g*b, (g+1)*b)). `weights` holds at least every
 * param of this rank's stages (it is only read). `results` gets the step's
 * results, identical on every rank. */
int pipeline_train_step(PipeRunner *r, const TensorSet *weights, const Tensor *input_ids, TensorSet *results,
                        Err *err);

/* Seconds this rank spent computing and waiting for messages in the last step. */
typedef struct PipeStepTimes {
    double compute, wait_recv, total;
} PipeStepTimes;
PipeStepTimes pipe_runner_times(const PipeRunner *r);

#endif
