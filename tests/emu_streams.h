/* Streams and events for the host emulation of CUDA (testutil.c, cuda_emu_open),
 * as a GPU has them rather than in call order: work queued on a stream runs only
 * when something needs it (a stream synchronized, a download to the host, memory
 * freed), and then only what that needs, in stream order and after the events
 * it waits on. Work nothing waits for stays queued. So a launch whose stream
 * lacks the wait for an upload on another stream reads the 0xff bytes of fresh
 * memory, and a download that does not wait for the compute stream reads
 * results not yet computed: the executor's tests fail, as the GPU would race.
 * Where two streams both have work ready, which goes first alternates from one
 * such synchronization to the next, so a write on one stream that should have
 * waited for a read on the other shows too.
 *
 * A failed piece of work (the emulated GEMM's checks) is reported, like a
 * CUDA error, at the next synchronization; the work queued after it on any
 * stream is skipped. The NULL stream is synchronous: everything queued runs,
 * then the work itself (the tests call the table directly on it). */
#ifndef V3C_TESTS_EMU_STREAMS_H
#define V3C_TESTS_EMU_STREAMS_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "../base/base.h"

typedef struct EmuStreams EmuStreams;
typedef struct EmuStream EmuStream;

typedef struct EmuEvent {
    int64_t recorded, done; /* records queued, and the last one run (1-based counts) */
    EmuStream *stream;      /* where the last record was queued, and its position there */
    int64_t position;
    struct timespec at; /* when the last record ran */
} EmuEvent;

/* A piece of work: run(payload), 0 or -1 with err set. */
typedef int (*EmuWork)(void *ctx, const void *payload, Err *err);

EmuStreams *emu_streams_new(void *ctx);
/* Runs everything still queued, then frees. */
void emu_streams_free(EmuStreams *e);

EmuStream *emu_stream_new(EmuStreams *e);
/* Runs what the stream holds, then removes it. */
void emu_stream_free(EmuStreams *e, EmuStream *s);

/* Queues work on s, with a copy of payload's bytes; on the NULL stream, runs it now. */
int emu_enqueue(EmuStreams *e, EmuStream *s, EmuWork run, const void *payload, size_t bytes, Err *err);
/* Queues work and waits until it has run (a download to pageable host memory). */
int emu_enqueue_sync(EmuStreams *e, EmuStream *s, EmuWork run, const void *payload, size_t bytes, Err *err);
void emu_record(EmuStreams *e, EmuStream *s, EmuEvent *ev);
/* Work queued on s after this runs after ev's last record (an error if never recorded). */
int emu_wait(EmuStreams *e, EmuStream *s, EmuEvent *ev, Err *err);
/* Runs what s holds (s NULL: what every stream holds); the first error since the last report. */
int emu_sync(EmuStreams *e, EmuStream *s, Err *err);
/* Runs what every stream holds, keeping an error for the next emu_sync (before memory is freed). */
void emu_drain(EmuStreams *e);
/* Whether ev's last record has run. */
int emu_event_done(const EmuEvent *ev);

#endif
