/* emu_streams: see emu_streams.h. */
#include "emu_streams.h"

#include <stdlib.h>
#include <string.h>

typedef enum { OP_WORK, OP_RECORD, OP_WAIT } OpKind;

typedef struct Op {
    OpKind kind;
    EmuWork run;       /* OP_WORK */
    void *payload;     /* OP_WORK: owned */
    EmuEvent *event;   /* OP_RECORD, with the event's record number */
    int64_t count;
    EmuStream *after;  /* OP_WAIT: the stream and position of the record waited for; NULL once that stream is gone */
    int64_t position;
} Op;

struct EmuStream {
    VEC(Op) ops;
    size_t head;  /* ops.data[0..head) have run */
    int64_t base; /* the position of ops.data[0]: positions count every op the stream ever held */
    int64_t need; /* while running: the last position that must run, or -1 */
};

struct EmuStreams {
    void *ctx;
    VEC(EmuStream *) streams; /* in creation order */
    unsigned choices;         /* runs that had two streams to order: alternates which goes first */
    Err failure;              /* the first failure not yet reported */
};

static int64_t next_position(const EmuStream *s) { return s->base + (int64_t)s->head; }
static int64_t end_position(const EmuStream *s) { return s->base + (int64_t)s->ops.len; }
static int has_run(const EmuStream *s, int64_t position) { return position < next_position(s); }
static Op *op_at(EmuStream *s, int64_t position) { return &s->ops.data[position - s->base]; }

static int op_ready(const Op *op) { return op->kind != OP_WAIT || !op->after || has_run(op->after, op->position); }

static void run_head(EmuStreams *e, EmuStream *s) {
    Op *op = op_at(s, next_position(s));
    if (op->kind == OP_WORK && !e->failure.set) {
        Err err = {0};
        if (op->run(e->ctx, op->payload, &err) && !err.set) err_internal(&err, "emulated work failed");
        if (err.set) e->failure = err;
    }
    if (op->kind == OP_RECORD) {
        if (op->count > op->event->done) op->event->done = op->count;
        clock_gettime(CLOCK_MONOTONIC, &op->event->at);
    }
    free(op->payload);
    if (++s->head == s->ops.len) s->base += (int64_t)s->ops.len, s->ops.len = s->head = 0;
}

/* Widens the needs (set by the caller) to the records that the waits among them wait for, to a fixed point. */
static void close_needs(EmuStreams *e) {
    for (int changed = 1; changed;) {
        changed = 0;
        for (size_t i = 0; i < e->streams.len; i++) {
            EmuStream *t = e->streams.data[i];
            for (int64_t p = next_position(t); p <= t->need; p++) {
                const Op *op = op_at(t, p);
                if (op->kind != OP_WAIT || !op->after || has_run(op->after, op->position)) continue;
                if (op->after->need < op->position) op->after->need = op->position, changed = 1;
            }
        }
    }
}

/* A stream with needed work whose next op can run: the earliest created first, or the latest. */
static EmuStream *pick(const EmuStreams *e, int latest_first) {
    size_t n = e->streams.len;
    for (size_t k = 0; k < n; k++) {
        EmuStream *t = e->streams.data[latest_first ? n - 1 - k : k];
        if (next_position(t) <= t->need && op_ready(op_at(t, next_position(t)))) return t;
    }
    return NULL;
}

/* Runs what the needs name; s (NULL: every stream) up to `upto` (-1: all it holds). */
static void run_needed(EmuStreams *e, EmuStream *s, int64_t upto) {
    for (size_t i = 0; i < e->streams.len; i++) {
        EmuStream *t = e->streams.data[i];
        t->need = !s ? end_position(t) - 1 : t == s ? (upto < 0 ? end_position(t) - 1 : upto) : -1;
    }
    close_needs(e);
    int latest_first = (int)(e->choices & 1), streams_run = 0;
    for (EmuStream *t, *last = NULL; (t = pick(e, latest_first)); last = t) {
        streams_run += t != last;
        run_head(e, t);
    }
    e->choices += streams_run > 1; /* the next run with a choice makes the other one */
    /* Every wait names a record queued before it, so the needs always drain. */
    for (size_t i = 0; i < e->streams.len; i++)
        if (next_position(e->streams.data[i]) <= e->streams.data[i]->need && !e->failure.set)
            err_internal(&e->failure, "emulation: streams deadlocked");
}

static int report(EmuStreams *e, Err *err) {
    if (!e->failure.set) return 0;
    *err = e->failure;
    e->failure = (Err){0};
    return -1;
}

EmuStreams *emu_streams_new(void *ctx) {
    EmuStreams *e = xcalloc(1, sizeof *e);
    e->ctx = ctx;
    return e;
}

void emu_drain(EmuStreams *e) { run_needed(e, NULL, -1); }

void emu_streams_free(EmuStreams *e) {
    if (!e) return;
    emu_drain(e);
    while (e->streams.len) emu_stream_free(e, e->streams.data[e->streams.len - 1]);
    VEC_FREE(e->streams);
    free(e);
}

EmuStream *emu_stream_new(EmuStreams *e) {
    EmuStream *s = xcalloc(1, sizeof *s);
    s->need = -1;
    VEC_PUSH(e->streams, s);
    return s;
}

void emu_stream_free(EmuStreams *e, EmuStream *s) {
    run_needed(e, s, -1);
    size_t at = 0;
    for (size_t i = 0; i < e->streams.len; i++) {
        EmuStream *t = e->streams.data[i];
        if (t == s) continue;
        e->streams.data[at++] = t;
        for (int64_t p = next_position(t); p < end_position(t); p++)
            if (op_at(t, p)->after == s) op_at(t, p)->after = NULL; /* s has run all it held */
    }
    e->streams.len = at;
    VEC_FREE(s->ops);
    free(s);
}

int emu_enqueue(EmuStreams *e, EmuStream *s, EmuWork run, const void *payload, size_t bytes, Err *err) {
    if (!s) {
        run_needed(e, NULL, -1);
        return report(e, err) ? -1 : run(e->ctx, payload, err);
    }
    void *copy = xmalloc(bytes ? bytes : 1);
    memcpy(copy, payload, bytes);
    VEC_PUSH(s->ops, ((Op){.kind = OP_WORK, .run = run, .payload = copy}));
    return 0;
}

int emu_enqueue_sync(EmuStreams *e, EmuStream *s, EmuWork run, const void *payload, size_t bytes, Err *err) {
    if (emu_enqueue(e, s, run, payload, bytes, err)) return -1;
    if (s) run_needed(e, s, end_position(s) - 1);
    return report(e, err);
}

void emu_record(EmuStreams *e, EmuStream *s, EmuEvent *ev) {
    ev->recorded++;
    if (!s) {
        run_needed(e, NULL, -1);
        ev->done = ev->recorded, ev->stream = NULL;
        clock_gettime(CLOCK_MONOTONIC, &ev->at);
        return;
    }
    ev->stream = s, ev->position = end_position(s);
    VEC_PUSH(s->ops, ((Op){.kind = OP_RECORD, .event = ev, .count = ev->recorded}));
}

int emu_event_done(const EmuEvent *ev) { return ev->recorded > 0 && ev->done >= ev->recorded; }

int emu_wait(EmuStreams *e, EmuStream *s, EmuEvent *ev, Err *err) {
    if (!ev->recorded) return err_set(err, "emulation: a stream waits on an event never recorded");
    if (emu_event_done(ev)) return 0;
    if (!s) {
        run_needed(e, ev->stream, ev->position);
        return 0;
    }
    VEC_PUSH(s->ops, ((Op){.kind = OP_WAIT, .after = ev->stream, .position = ev->position}));
    return 0;
}

int emu_sync(EmuStreams *e, EmuStream *s, Err *err) {
    run_needed(e, s, -1);
    return report(e, err);
}
