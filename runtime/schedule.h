/* Pipeline-parallel schedules (1F1B, ZB1P, DualPipe) as per-rank instruction
 * lists, and a simulator that times them from given chunk times. No graph is
 * involved: the cost model is that of the DeepSeek-V3 report (arXiv
 * 2412.19437, section 3.2.1, Table 2): F = forward chunk, B = full backward
 * chunk, W = its backward-for-weights part (so backward-for-input is B - W),
 * FB = a forward and a backward chunk of different micro-batches run as an
 * overlapped pair. Communication is free. docs/schedule.md has the details. */
#ifndef V3C_SCHEDULE_H
#define V3C_SCHEDULE_H

#include <stdio.h>

#include "../base/base.h"

#define SCHED_MAX_RANKS 1024
#define SCHED_MAX_MICROBATCHES 100000
/* P x M bound: the simulator keeps a few doubles per (rank, micro-batch). */
#define SCHED_MAX_WORK 4000000

typedef enum SchedKind { SCHED_1F1B, SCHED_ZB1P, SCHED_DUALPIPE, SCHED_KIND_COUNT } SchedKind;

typedef enum SchedOpKind {
    SOP_F,  /* forward chunk */
    SOP_B,  /* backward chunk: full (time B) or input-only (time B - W) */
    SOP_W,  /* deferred backward-for-weights (time W) */
    SOP_FB, /* forward (dir, mb) overlapped with backward (bdir, bmb), time FB */
} SchedOpKind;

/* dir: 0 = micro-batches entering at rank 0, 1 = entering at rank P-1
 * (DualPipe only). For SOP_FB the forward half is (dir, mb), the backward
 * half (bdir, bmb). full: the backward includes W (always so in SOP_FB). */
typedef struct SchedOp {
    SchedOpKind kind;
    int dir, mb;
    int bdir, bmb;
    int full;
} SchedOp;

typedef struct Schedule {
    SchedKind kind;
    int ranks, microbatches; /* P, M (M counts both directions for DualPipe) */
    int *len;                /* per rank */
    SchedOp **ops;           /* per rank, in execution order */
} Schedule;

typedef struct ChunkTimes {
    double f, b, w, fb;
} ChunkTimes;

/* "1f1b" / "zb1p" / "dualpipe"; -1 if unknown. */
int sched_kind_parse(const char *name);
const char *sched_kind_name(SchedKind k);

/* Checks P, M (sizes, parity, the minimum M the schedule needs) and builds
 * the lists. Returns NULL and sets err on bad input. */
Schedule *schedule_build(SchedKind kind, int ranks, int microbatches, Err *err);
void schedule_free(Schedule *s);

/* Times must be positive and finite; W < B where the schedule splits B. */
int chunk_times_check(const Schedule *s, const ChunkTimes *t, Err *err);

typedef struct SchedTimeline {
    int ranks;
    double span;   /* end of the last op; every rank starts at time 0 */
    double *busy;  /* per rank: time spent computing */
    double *idle;  /* per rank: span - busy, the report's per-rank bubble */
    double **start, **end; /* per rank, per op */
} SchedTimeline;

/* Runs every rank's list in order, each op starting as soon as its rank is
 * free and its inputs (previous stage's forward / next stage's backward) exist. */
SchedTimeline *schedule_simulate(const Schedule *s, const ChunkTimes *t, Err *err);
void sched_timeline_free(SchedTimeline *tl);

double sched_op_time(const SchedOp *op, const ChunkTimes *t);

/* The report's Table 2 bubble for the schedule. */
double sched_report_bubble(SchedKind kind, int ranks, const ChunkTimes *t);

/* Text timeline: one row per rank, one column per time unit. Letters: F B W
 * (upper case direction 0, lower case direction 1), X = overlapped F&B,
 * '.' = idle. Times are rounded to the unit grid by each column's midpoint. */
void schedule_print_text(const Schedule *s, const SchedTimeline *tl, FILE *f);
/* SVG picture in the style of the report's DualPipe figure. */
char *schedule_svg(const Schedule *s, const SchedTimeline *tl);

#endif
