/* The collectives an expert-parallel graph needs (ep_dispatch, ep_combine;
 * docs/expert_parallel.md). The IR may not call the runtime, so it sees the
 * expert-parallel (EP) group only through this table of function pointers; the
 * runtime fills it over runtime/comm.h (runtime/ep.c), tests over threads. */
#ifndef V3C_COLLECTIVE_H
#define V3C_COLLECTIVE_H

#include <stdint.h>

#include "../base/base.h"

typedef struct Collectives {
    void *ctx;
    int rank, size; /* this rank's place in the EP group */
    /* All-to-all-v of bytes, as MPI_Alltoallv with packed buffers: the send
     * buffer holds send_bytes[0] bytes for rank 0, then send_bytes[1] for rank 1,
     * ...; the receive buffer gets recv_bytes[q] bytes from each rank q in rank
     * order. Every rank calls it; the counts must agree pairwise. */
    int (*alltoallv)(void *ctx, const void *send, const int64_t *send_bytes, void *recv, const int64_t *recv_bytes,
                     Err *err);
} Collectives;

/* The collectives the EP kernels of the calling thread use, for the duration
 * of one interpreter run: the kernel signature (InterpFn) carries no run
 * context, so the run binds it per thread. Returns the previous binding (to
 * restore). NULL unbinds. */
const Collectives *collectives_bind(const Collectives *c);
const Collectives *collectives_current(void);

#endif
