/* runtime (private to comm*.c): what an engine provides behind comm.h. comm.c
 * checks every argument (peer and tag ranges, divisibility, counts) before it
 * calls an engine, so engines only move bytes and bound their waits. */
#ifndef V3C_RUNTIME_COMM_ENGINE_H
#define V3C_RUNTIME_COMM_ENGINE_H

#include "comm.h"

typedef struct CommEngine {
    const char *name;
    CommRequest *(*isend)(Comm *c, const void *buf, size_t count, CommType t, int peer, int tag, Err *err);
    CommRequest *(*irecv)(Comm *c, void *buf, size_t count, CommType t, int peer, int tag, Err *err);
    int (*wait)(Comm *c, CommRequest *r, Err *err); /* frees r, also on error */
    int (*allreduce_sum)(Comm *c, void *buf, size_t count, CommType t, Err *err);
    int (*reduce_scatter_sum)(Comm *c, const void *send, void *recv, size_t count, CommType t, Err *err);
    int (*allgather)(Comm *c, const void *send, void *recv, size_t count, CommType t, Err *err);
    int (*alltoallv)(Comm *c, const void *send, const int64_t *send_counts, const int64_t *send_offsets, void *recv,
                     const int64_t *recv_counts, const int64_t *recv_offsets, CommType t, Err *err);
    int (*barrier)(Comm *c, Err *err);
    /* Fills out's engine, impl, rank and size; comm.c fills world_ranks from colors. */
    int (*split)(Comm *c, int color, int key, Comm *out, Err *err);
    void (*release)(Comm *c);
    /* Marks c unusable without talking to any peer (NULL: nothing to do). */
    void (*abandon)(Comm *c);
} CommEngine;

/* One pending send or receive; engines keep their own handle in impl. */
struct CommRequest {
    int is_recv;
    void *recv_buf;
    size_t count, bytes;
    CommType type;
    int peer, tag;
    void *impl;
};

struct Comm {
    const CommEngine *engine;
    void *impl;
    int rank, size;
    int *world_ranks; /* world rank of each rank of this communicator */
    double timeout_s;
};

/* Bytes of one element of t. */
size_t comm_type_size(CommType t);
/* The MPI engine: joins the job mpirun started (MPI_Init unless already done). */
int comm_mpi_open(Comm *c, int *argc, char ***argv, Err *err);
/* Seconds on a monotonic clock, for deadlines. */
double comm_now(void);

#endif
