/* runtime: communication between ranks (processes). One interface, two engines:
 * MPI between CPU ranks (comm_mpi.c) and NCCL between GPUs (comm_nccl.c, its
 * unique id bootstrapped over MPI). World size 1 needs no engine at all: every
 * collective is then a copy, so single-process runs never touch MPI.
 *
 * Groups: a Comm is the world; comm_split makes sub-communicators (the pipeline
 * stage's EP group, the DP group) the way MPI_Comm_split does. Every call is
 * blocking unless it returns a CommRequest. Errors (a peer that died, a timeout)
 * come back through Err naming the peer rank in the world, never as a hang: each
 * wait is bounded by the communicator's timeout. */
#ifndef V3C_RUNTIME_COMM_H
#define V3C_RUNTIME_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "../base/base.h"

typedef struct Comm Comm;
typedef struct CommRequest CommRequest;

typedef enum CommType { COMM_F32, COMM_I32, COMM_I64, COMM_U8, COMM_F64 } CommType;

/* Joins the world: under mpirun an MPI engine, otherwise world size 1.
 * timeout_s bounds every wait (0: the default, 300 s, or $V3C_COMM_TIMEOUT). */
Comm *comm_init(int *argc, char ***argv, double timeout_s, Err *err);
/* Leaves the world; finalizes MPI when this comm initialised it. */
void comm_free(Comm *c);
/* Frees c after an error this rank alone may have seen: no collective teardown
 * (MPI_Finalize would wait for peers still inside a collective). The process
 * should exit soon after; mpirun then ends the other ranks. */
void comm_abandon(Comm *c);
int comm_rank(const Comm *c);
int comm_size(const Comm *c);
/* The world rank of rank r of c (for error messages naming a peer). */
int comm_world_rank(const Comm *c, int r);
/* Ranks with equal color form one new communicator, ordered by key. */
Comm *comm_split(Comm *c, int color, int key, Err *err);

int comm_send(Comm *c, const void *buf, size_t count, CommType t, int peer, int tag, Err *err);
int comm_recv(Comm *c, void *buf, size_t count, CommType t, int peer, int tag, Err *err);
/* Non-blocking variants for overlapping communication with computation. */
CommRequest *comm_isend(Comm *c, const void *buf, size_t count, CommType t, int peer, int tag, Err *err);
CommRequest *comm_irecv(Comm *c, void *buf, size_t count, CommType t, int peer, int tag, Err *err);
/* Waits for r (bounded by the timeout) and frees it. */
int comm_wait(Comm *c, CommRequest *r, Err *err);

/* Sum in place over all ranks of c. */
int comm_allreduce_sum(Comm *c, void *buf, size_t count, CommType t, Err *err);
/* recv gets rank r's slice of length count/size of the summed send (count divisible by size). */
int comm_reduce_scatter_sum(Comm *c, const void *send, void *recv, size_t count, CommType t, Err *err);
/* recv (count*size) gets every rank's send (count) in rank order. */
int comm_allgather(Comm *c, const void *send, void *recv, size_t count, CommType t, Err *err);
/* Element counts and offsets per peer, as MPI_Alltoallv. */
int comm_alltoallv(Comm *c, const void *send, const int64_t *send_counts, const int64_t *send_offsets, void *recv,
                   const int64_t *recv_counts, const int64_t *recv_offsets, CommType t, Err *err);
int comm_barrier(Comm *c, Err *err);

/* 1 when this process was started by mpirun (comm_init will use MPI). */
int comm_under_mpirun(void);
/* How many ranks of this job run on this machine (mpirun's local size; 1 without mpirun). */
int comm_local_ranks(void);
/* "self" (world size 1), "mpi" or "nccl". */
const char *comm_engine_name(const Comm *c);
/* Seconds any one wait may take before it fails. */
double comm_timeout(const Comm *c);
/* Changes it for later waits on c (communicators split later inherit it); <= 0 is ignored. */
void comm_set_timeout(Comm *c, double seconds);

/* NCCL between GPUs (comm_nccl.c): one rank per GPU, buffers are device pointers
 * (CUdeviceptr cast to void *). `world` bootstraps it: rank 0 makes the unique id
 * and shares it over world (the self engine: no MPI at all), and world names the
 * rank that failed when NCCL cannot. NCCL has no tags: sends and receives between
 * two ranks match in call order. libnccl.so.2 and the CUDA runtime are loaded with
 * dlopen when first needed. */
Comm *comm_nccl_init(Comm *world, int device, Err *err);
/* 1 when NCCL and a GPU are usable here; otherwise 0 and why in `why`. */
int comm_nccl_available(char *why, size_t n);
/* Device memory through the same dlopen'ed CUDA runtime (for NCCL buffers and tests). */
void *comm_device_alloc(size_t bytes, Err *err);
void comm_device_free(void *p);
/* Any direction (host or device pointers, unified addressing). */
int comm_device_copy(void *dst, const void *src, size_t bytes, Err *err);

#endif
