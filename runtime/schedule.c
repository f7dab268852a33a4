/* Pipeline schedules: instruction lists and the simulator (runtime/schedule.h). */
#include "schedule.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const KIND_NAMES[SCHED_KIND_COUNT] = {"1f1b", "zb1p", "dualpipe"};

int sched_kind_parse(const char *name) {
    for (int k = 0; k < SCHED_KIND_COUNT; k++)
        if (strcmp(name, KIND_NAMES[k]) == 0) return k;
    return -1;
}

const char *sched_kind_name(SchedKind k) { return KIND_NAMES[k]; }

/* ---- building the lists ---- */

typedef VEC(SchedOp) OpVec;

/* One rank's list under construction, with DualPipe's per-phase counters and
 * the FIFO of backward passes whose W was deferred. */
typedef struct Emitter {
    OpVec ops;
    int phase_dir[2];
    int fwd_next[2], bwd_next[2];
    VEC(SchedOp) deferred;
    size_t deferred_head;
} Emitter;

static void emit_forward(Emitter *e, int phase) {
    SchedOp op = {.kind = SOP_F, .dir = e->phase_dir[phase], .mb = e->fwd_next[phase]++};
    VEC_PUSH(e->ops, op);
}

/* defer_w: input-gradient only now, W later from the FIFO (zero bubble). */
static void emit_backward(Emitter *e, int phase, int defer_w) {
    SchedOp op = {.kind = SOP_B, .dir = e->phase_dir[phase], .mb = e->bwd_next[phase]++, .full = !defer_w};
    VEC_PUSH(e->ops, op);
    if (defer_w) VEC_PUSH(e->deferred, op);
}

static void emit_weight(Emitter *e) {
    SchedOp b = e->deferred.data[e->deferred_head++];
    SchedOp op = {.kind = SOP_W, .dir = b.dir, .mb = b.mb};
    VEC_PUSH(e->ops, op);
}

static void emit_pair(Emitter *e, int fphase, int bphase) {
    SchedOp op = {.kind = SOP_FB, .dir = e->phase_dir[fphase], .mb = e->fwd_next[fphase]++,
                  .bdir = e->phase_dir[bphase], .bmb = e->bwd_next[bphase]++, .full = 1};
    VEC_PUSH(e->ops, op);
}

static void emit_remaining_weights(Emitter *e) {
    while (e->deferred_head < e->deferred.len) emit_weight(e);
}

/* 1F1B (zero_bubble = 0) and ZB1P / ZB-H1 (zero_bubble = 1): P-1-r warm-up
 * forwards, then forward/backward alternating, then the cool-down backwards.
 * ZB1P runs only the input part of each backward and the W of backward k
 * after backward k + lag: rank r lags LAG(r) so the input-gradient chain
 * reaches the early stages sooner, and the W left over fill the end. */
static void build_one_direction(Emitter *e, int rank, int ranks, int mbs, int zero_bubble) {
    int warm = ranks - 1 - rank;
    int lag = zero_bubble ? rank : 0;
    for (int i = 0; i < warm; i++) emit_forward(e, 0);
    for (int i = 0; i < mbs; i++) {
        if (e->fwd_next[0] < mbs) emit_forward(e, 0);
        emit_backward(e, 0, zero_bubble);
        if (zero_bubble && i >= lag) emit_weight(e);
    }
    emit_remaining_weights(e);
}

/* DualPipe, the eight steps of deepseek-ai/DualPipe for one rank. Phase 0 is
 * the rank's stage nearer its micro-batches' entry (stage h = min(r, P-1-r)),
 * phase 1 the stage P-1-h of the other direction. */
static void build_dualpipe(Emitter *e, int rank, int ranks, int mbs) {
    int half = ranks / 2, h = rank < half ? rank : ranks - 1 - rank;
    int half_chunks = mbs / 2, middle = h == half - 1;
    e->phase_dir[0] = rank < half ? 0 : 1;
    e->phase_dir[1] = 1 - e->phase_dir[0];
    for (int i = 0; i < (half - h - 1) * 2; i++) emit_forward(e, 0); /* 1: nF0 */
    for (int i = 0; i < h + 1; i++) {                                  /* 2: nF0F1 */
        emit_forward(e, 0);
        emit_forward(e, 1);
    }
    for (int i = 0; i < half - h - 1; i++) { /* 3: nB1W1F1, zero bubble */
        emit_backward(e, 1, 1);
        emit_weight(e);
        emit_forward(e, 1);
    }
    for (int i = 0; i < half_chunks - ranks + h + 1; i++) { /* 4: nF0B1F1B0 */
        if (i == 0 && middle) {
            emit_forward(e, 0);
            emit_backward(e, 1, 0);
        } else {
            emit_pair(e, 0, 1);
        }
        emit_pair(e, 1, 0);
    }
    for (int i = 0; i < half - h - 1; i++) { /* 5: nB1F1B0 */
        emit_backward(e, 1, 0);
        emit_pair(e, 1, 0);
    }
    int zb = 0;
    for (int i = 0; i < h + 1; i++) { /* 6: nB1B0, second half zero bubble */
        if (i == (h + 1) / 2 && h % 2 == 1) zb = 1;
        emit_backward(e, 1, zb);
        if (i == (h + 1) / 2 && h % 2 == 0) zb = 1;
        emit_backward(e, 0, zb);
    }
    for (int i = 0; i < half - h - 1; i++) { /* 7: nWB0, zero bubble */
        emit_weight(e);
        emit_backward(e, 0, 1);
    }
    emit_remaining_weights(e); /* 8: nW */
}

static int check_sizes(SchedKind kind, int ranks, int mbs, Err *err) {
    if (ranks < 1 || ranks > SCHED_MAX_RANKS)
        return err_set(err, "--pp must be between 1 and %d, got %d", SCHED_MAX_RANKS, ranks);
    if (mbs < 1 || mbs > SCHED_MAX_MICROBATCHES)
        return err_set(err, "--microbatches must be between 1 and %d, got %d", SCHED_MAX_MICROBATCHES, mbs);
    if ((int64_t)ranks * mbs > SCHED_MAX_WORK)
        return err_set(err, "--pp x --microbatches = %lld is too large to simulate (limit %d)", (long long)ranks * mbs,
                       SCHED_MAX_WORK);
    if (kind != SCHED_DUALPIPE) {
        if (mbs < ranks)
            return err_set(err, "%s needs at least --pp micro-batches (%d) to reach its steady state, got %d",
                           sched_kind_name(kind), ranks, mbs);
        return 0;
    }
    if (ranks % 2 || ranks < 2) return err_set(err, "dualpipe needs an even --pp of at least 2, got %d", ranks);
    if (mbs % 2) return err_set(err, "dualpipe needs an even number of micro-batches (half enter at each end), got %d", mbs);
    if (mbs < 2 * ranks)
        return err_set(err, "dualpipe needs at least 2 x --pp micro-batches (%d), got %d", 2 * ranks, mbs);
    return 0;
}

Schedule *schedule_build(SchedKind kind, int ranks, int mbs, Err *err) {
    if ((unsigned)kind >= SCHED_KIND_COUNT) return err_internal(err, "bad schedule kind %d", (int)kind), NULL;
    if (check_sizes(kind, ranks, mbs, err)) return NULL;
    Schedule *s = xcalloc(1, sizeof *s);
    s->kind = kind;
    s->ranks = ranks;
    s->microbatches = mbs;
    s->len = xcalloc((size_t)ranks, sizeof *s->len);
    s->ops = xcalloc((size_t)ranks, sizeof *s->ops);
    for (int r = 0; r < ranks; r++) {
        Emitter e = {0};
        if (kind == SCHED_DUALPIPE) build_dualpipe(&e, r, ranks, mbs);
        else build_one_direction(&e, r, ranks, mbs, kind == SCHED_ZB1P);
        VEC_FREE(e.deferred);
        s->ops[r] = e.ops.data;
        s->len[r] = (int)e.ops.len;
    }
    return s;
}

void schedule_free(Schedule *s) {
    if (!s) return;
    for (int r = 0; r < s->ranks; r++) free(s->ops[r]);
    free(s->ops);
    free(s->len);
    free(s);
}

/* ---- times ---- */

static int check_time(const char *name, double v, Err *err) {
    if (!isfinite(v) || v <= 0 || v > 1e9) return err_set(err, "%s must be a positive time up to 1e9, got %g", name, v);
    return 0;
}

int chunk_times_check(const Schedule *s, const ChunkTimes *t, Err *err) {
    if (check_time("--f", t->f, err) || check_time("--b", t->b, err) || check_time("--w", t->w, err) ||
        check_time("--fb", t->fb, err))
        return -1;
    if (s->kind != SCHED_1F1B && !(t->w < t->b))
        return err_set(err, "%s splits the backward: --w (%g) must be less than --b (%g)", sched_kind_name(s->kind),
                       t->w, t->b);
    return 0;
}

double sched_op_time(const SchedOp *op, const ChunkTimes *t) {
    switch (op->kind) {
    case SOP_F: return t->f;
    case SOP_B: return op->full ? t->b : t->b - t->w;
    case SOP_W: return t->w;
    case SOP_FB: return t->fb;
    }
    return 0;
}

double sched_report_bubble(SchedKind kind, int ranks, const ChunkTimes *t) {
    switch (kind) {
    case SCHED_1F1B: return (ranks - 1) * (t->f + t->b);
    case SCHED_ZB1P: return (ranks - 1) * (t->f + t->b - 2 * t->w);
    case SCHED_DUALPIPE: return (ranks / 2 - 1) * (t->fb + t->b - 3 * t->w);
    case SCHED_KIND_COUNT: break;
    }
    return 0;
}

/* ---- simulation ---- */

/* Finish times per (direction, stage, micro-batch); -1 until done. The
 * backward entry is when the input gradient exists (end of B or of the pair). */
typedef struct Done {
    int ranks, per_dir;
    double *fwd, *bwd;
} Done;

static size_t done_index(const Done *d, int dir, int stage, int mb) {
    return ((size_t)dir * (size_t)d->ranks + (size_t)stage) * (size_t)d->per_dir + (size_t)mb;
}

static int stage_of(int ranks, int dir, int rank) { return dir ? ranks - 1 - rank : rank; }

/* When the forward (dir, mb) may start on rank; -1 if not yet. */
static double forward_ready(const Done *d, int dir, int rank, int mb) {
    int stage = stage_of(d->ranks, dir, rank);
    return stage == 0 ? 0 : d->fwd[done_index(d, dir, stage - 1, mb)];
}

static double backward_ready(const Done *d, int dir, int rank, int mb) {
    int stage = stage_of(d->ranks, dir, rank);
    double own = d->fwd[done_index(d, dir, stage, mb)];
    if (own < 0 || stage == d->ranks - 1) return own;
    double next = d->bwd[done_index(d, dir, stage + 1, mb)];
    return next < 0 ? -1 : fmax(own, next);
}

static double op_ready(const Done *d, const SchedOp *op, int rank) {
    switch (op->kind) {
    case SOP_F: return forward_ready(d, op->dir, rank, op->mb);
    case SOP_B: return backward_ready(d, op->dir, rank, op->mb);
    case SOP_W: return d->bwd[done_index(d, op->dir, stage_of(d->ranks, op->dir, rank), op->mb)];
    case SOP_FB: {
        double f = forward_ready(d, op->dir, rank, op->mb), b = backward_ready(d, op->bdir, rank, op->bmb);
        return f < 0 || b < 0 ? -1 : fmax(f, b);
    }
    }
    return -1;
}

static void op_finish(Done *d, const SchedOp *op, int rank, double end) {
    int ranks = d->ranks;
    if (op->kind == SOP_F || op->kind == SOP_FB) d->fwd[done_index(d, op->dir, stage_of(ranks, op->dir, rank), op->mb)] = end;
    if (op->kind == SOP_B) d->bwd[done_index(d, op->dir, stage_of(ranks, op->dir, rank), op->mb)] = end;
    if (op->kind == SOP_FB) d->bwd[done_index(d, op->bdir, stage_of(ranks, op->bdir, rank), op->bmb)] = end;
}

static SchedTimeline *timeline_new(const Schedule *s) {
    SchedTimeline *tl = xcalloc(1, sizeof *tl);
    tl->ranks = s->ranks;
    tl->busy = xcalloc((size_t)s->ranks, sizeof *tl->busy);
    tl->idle = xcalloc((size_t)s->ranks, sizeof *tl->idle);
    tl->start = xcalloc((size_t)s->ranks, sizeof *tl->start);
    tl->end = xcalloc((size_t)s->ranks, sizeof *tl->end);
    for (int r = 0; r < s->ranks; r++) {
        tl->start[r] = xcalloc((size_t)s->len[r] + 1, sizeof **tl->start);
        tl->end[r] = xcalloc((size_t)s->len[r] + 1, sizeof **tl->end);
    }
    return tl;
}

void sched_timeline_free(SchedTimeline *tl) {
    if (!tl) return;
    for (int r = 0; r < tl->ranks; r++) {
        free(tl->start[r]);
        free(tl->end[r]);
    }
    free(tl->start);
    free(tl->end);
    free(tl->busy);
    free(tl->idle);
    free(tl);
}

/* Runs rank r's list as far as its inputs allow; returns how many ops ran. */
static int advance_rank(const Schedule *s, const ChunkTimes *t, Done *d, SchedTimeline *tl, int r, int *pos,
                        double *free_at) {
    int ran = 0;
    while (pos[r] < s->len[r]) {
        const SchedOp *op = &s->ops[r][pos[r]];
        double ready = op_ready(d, op, r);
        if (ready < 0) break;
        double start = fmax(ready, free_at[r]), dur = sched_op_time(op, t);
        tl->start[r][pos[r]] = start;
        tl->end[r][pos[r]] = free_at[r] = start + dur;
        tl->busy[r] += dur;
        op_finish(d, op, r, start + dur);
        pos[r]++;
        ran++;
    }
    return ran;
}

SchedTimeline *schedule_simulate(const Schedule *s, const ChunkTimes *t, Err *err) {
    if (chunk_times_check(s, t, err)) return NULL;
    int dirs = s->kind == SCHED_DUALPIPE ? 2 : 1;
    Done d = {.ranks = s->ranks, .per_dir = s->microbatches / dirs};
    size_t n = (size_t)2 * (size_t)s->ranks * (size_t)d.per_dir;
    d.fwd = xmalloc(n * sizeof *d.fwd);
    d.bwd = xmalloc(n * sizeof *d.bwd);
    for (size_t i = 0; i < n; i++) d.fwd[i] = d.bwd[i] = -1;
    SchedTimeline *tl = timeline_new(s);
    int *pos = xcalloc((size_t)s->ranks, sizeof *pos);
    double *free_at = xcalloc((size_t)s->ranks, sizeof *free_at);
    size_t total = 0, ran = 0;
    for (int r = 0; r < s->ranks; r++) total += (size_t)s->len[r];
    for (int progress = 1; progress && ran < total;) {
        progress = 0;
        for (int r = 0; r < s->ranks; r++) progress += advance_rank(s, t, &d, tl, r, pos, free_at);
        ran += (size_t)progress;
    }
    for (int r = 0; r < s->ranks; r++) tl->span = fmax(tl->span, free_at[r]);
    for (int r = 0; r < s->ranks; r++) tl->idle[r] = tl->span - tl->busy[r];
    free(pos);
    free(free_at);
    free(d.fwd);
    free(d.bwd);
    if (ran < total) {
        sched_timeline_free(tl);
        return err_internal(err, "%s schedule deadlocks (%zu of %zu ops ran)", sched_kind_name(s->kind), ran, total),
               NULL;
    }
    return tl;
}

/* ---- text timeline ---- */

static char op_letter(const SchedOp *op) {
    static const char LETTERS[] = {[SOP_F] = 'F', [SOP_B] = 'B', [SOP_W] = 'W', [SOP_FB] = 'X'};
    char c = LETTERS[op->kind];
    return op->kind != SOP_FB && op->dir == 1 ? (char)(c - 'A' + 'a') : c;
}

static void print_rank_row(const Schedule *s, const SchedTimeline *tl, int r, long columns, FILE *f) {
    char *row = xmalloc((size_t)columns + 1);
    memset(row, '.', (size_t)columns);
    row[columns] = 0;
    for (int i = 0; i < s->len[r]; i++) {
        /* Column c covers [c, c+1): it shows the op running at its midpoint. */
        long first = lround(ceil(tl->start[r][i] - 0.5)), last = lround(ceil(tl->end[r][i] - 0.5));
        for (long c = first; c < last && c < columns; c++) row[c] = op_letter(&s->ops[r][i]);
    }
    fprintf(f, "rank %4d |%s| idle %g\n", r, row, tl->idle[r]);
    free(row);
}

void schedule_print_text(const Schedule *s, const SchedTimeline *tl, FILE *f) {
    long columns = lround(ceil(tl->span));
    for (int r = 0; r < s->ranks; r++) print_rank_row(s, tl, r, columns, f);
}
