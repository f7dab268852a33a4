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
 * add up). After pipe_runner_keep_held_grads a rank gets only the gradients
 * of the params it holds (those its stage graphs read), each summed over the
 * ranks holding it alone. docs/pipeline.md describes it. */
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
 * results: every one, identical on every rank, or (pipe_runner_keep_held_grads)
 * the gradients of this rank's params only. */
int pipeline_train_step(PipeRunner *r, const TensorSet *weights, const Tensor *input_ids, TensorSet *results,
                        Err *err);

/* From now on a step gives this rank the losses and expert loads as before,
 * but of the gradients only those of the params it holds: one held here alone
 * is summed over its micro-batches locally, one several ranks hold (the
 * embedding read by stage 0 and by the MTP module on stage P-1; every param
 * under DualPipe, whose rank r runs stages r and P-1-r) over its holders,
 * who all get the same bits. Nothing of the other ranks' params is moved. */
void pipe_runner_keep_held_grads(PipeRunner *r);

/* The params this rank holds: those the stage graphs it runs read (stage r,
 * and under DualPipe stage P-1-r; every stage without a schedule). Each name
 * goes into `held` with value 1 where this rank is the lowest-numbered rank
 * holding it (a weight several ranks hold is counted once, there, in a sum
 * over the ranks such as the gradient norm), else 0. */
void pipe_runner_params(const PipeRunner *r, StrMap *held);
/* 1 when some stage graph reads param `name` (a weight none reads is no
 * rank's to update: every rank may keep it). */
int pipe_runner_reads(const PipeRunner *r, const char *name);
/* The communicator over the pipeline's ranks; NULL without a schedule (one process). */
Comm *pipe_runner_comm(const PipeRunner *r);

/* Seconds this rank spent computing and waiting for messages in the last step. */
typedef struct PipeStepTimes {
    double compute, wait_recv, total;
} PipeStepTimes;
PipeStepTimes pipe_runner_times(const PipeRunner *r);

#endif
