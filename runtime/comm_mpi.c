/* The MPI engine. Every operation is non-blocking underneath and waited for by
 * polling MPI_Test against a deadline, so no call can hang: when the deadline
 * passes, or MPI reports an error (MPI_ERRORS_RETURN on every communicator),
 * the waiting rank asks the ranks involved whether they are alive. Each rank
 * that is waiting in any comm call answers such pings on a private control
 * communicator; a rank that does not answer within a grace period is named in
 * the error as dead or hung. */
#include "comm_engine.h"

#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { TAG_PING = 1, TAG_PONG = 2 };
/* A rank busy computing answers only at its next comm call; this is how long
 * the diagnosis waits for it (at most; alive ranks in a wait answer in ms). */
static const double max_grace_s = 30.0;

/* State all communicators of this process share. */
typedef struct MpiShared {
    MPI_Comm control; /* a dup of the world: pings and pongs, by world rank */
    int world_rank;
    int refs;
    int owns_init; /* this process called MPI_Init, so it finalizes */
    int failed;    /* a peer failed: pending requests make MPI_Finalize unsafe */
} MpiShared;

typedef struct MpiComm {
    MPI_Comm comm;
    MpiShared *shared;
} MpiComm;

static MPI_Datatype mpi_type(CommType t) {
    const MPI_Datatype types[] = {[COMM_F32] = MPI_FLOAT, [COMM_I32] = MPI_INT32_T, [COMM_I64] = MPI_INT64_T,
                                  [COMM_U8] = MPI_UINT8_T, [COMM_F64] = MPI_DOUBLE};
    return types[t];
}

static MpiComm *mpi_of(const Comm *c) { return c->impl; }

static void answer_pings(MpiShared *s) {
    for (;;) {
        int flag = 0;
        MPI_Status st;
        if (MPI_Iprobe(MPI_ANY_SOURCE, TAG_PING, s->control, &flag, &st) != MPI_SUCCESS || !flag) return;
        int token = 0;
        if (MPI_Recv(&token, 1, MPI_INT, st.MPI_SOURCE, TAG_PING, s->control, MPI_STATUS_IGNORE) != MPI_SUCCESS) return;
        /* One int goes eagerly: this send does not wait for the pinger. */
        MPI_Send(&token, 1, MPI_INT, st.MPI_SOURCE, TAG_PONG, s->control);
    }
}

/* Spins briefly (a collective usually completes within microseconds), then
 * sleeps longer and longer up to 1 ms so waiting ranks leave the cores to
 * ranks still computing. */
static void pause_briefly(unsigned spins) {
    if (spins < 64) return;
    long ns = spins < 1024 ? 20000L : 1000000L;
    struct timespec ts = {0, ns};
    nanosleep(&ts, NULL);
}

/* Pings every world rank in targets[0..n) and waits up to `grace` seconds for
 * pongs; alive[i] says who answered. */
static void ping_all(MpiShared *s, const int *targets, int n, double grace, int *alive) {
    MPI_Request *recvs = xcalloc((size_t)n, sizeof *recvs);
    int *tokens = xcalloc((size_t)n, sizeof *tokens), *pongs = xcalloc((size_t)n, sizeof *pongs);
    for (int i = 0; i < n; i++) {
        tokens[i] = s->world_rank;
        if (MPI_Irecv(&pongs[i], 1, MPI_INT, targets[i], TAG_PONG, s->control, &recvs[i]) != MPI_SUCCESS)
            recvs[i] = MPI_REQUEST_NULL; /* counted as silent */
        MPI_Request send;
        /* The send to a dead rank may never complete: it is left behind on purpose. */
        if (MPI_Isend(&tokens[i], 1, MPI_INT, targets[i], TAG_PING, s->control, &send) == MPI_SUCCESS)
            MPI_Request_free(&send);
    }
    double deadline = comm_now() + grace;
    for (unsigned spins = 0; comm_now() < deadline; spins++) {
        int pending = 0;
        for (int i = 0; i < n; i++) {
            int done = 0;
            if (recvs[i] == MPI_REQUEST_NULL || alive[i]) continue;
            if (MPI_Test(&recvs[i], &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && done) alive[i] = 1;
            else pending++;
        }
        answer_pings(s); /* before leaving: the rank pinging back may be diagnosing too */
        if (!pending) break;
        pause_briefly(spins);
    }
    /* tokens/pongs stay allocated: an unanswered receive may still write into them. */
    free(recvs);
}

/* The world ranks of c other than this one (or just `peer`'s when peer >= 0). */
static int peers_to_ask(const Comm *c, int peer, int *targets) {
    if (peer >= 0) {
        targets[0] = c->world_ranks[peer];
        return 1;
    }
    int n = 0;
    for (int r = 0; r < c->size; r++)
        if (r != c->rank) targets[n++] = c->world_ranks[r];
    return n;
}

static void list_silent(Buf *b, const int *targets, const int *alive, int n) {
    int listed = 0;
    for (int i = 0; i < n; i++) {
        if (alive[i]) continue;
        buf_printf(b, "%s%d", listed ? ", " : "", targets[i]);
        listed++;
    }
}

static int count_silent(const int *alive, int n) {
    int silent = 0;
    for (int i = 0; i < n; i++) silent += !alive[i];
    return silent;
}

/* The error for a wait that failed: who is dead or hung, else what MPI said. */
static int wait_failed(Comm *c, int peer, const char *what, const char *mpi_error, Err *err) {
    MpiShared *s = mpi_of(c)->shared;
    s->failed = 1;
    int *targets = xmalloc((size_t)c->size * sizeof *targets), *alive = xcalloc((size_t)c->size, sizeof *alive);
    int n = peers_to_ask(c, peer, targets);
    double grace = c->timeout_s / 2 < max_grace_s ? c->timeout_s / 2 : max_grace_s;
    ping_all(s, targets, n, grace, alive);
    Buf b = {0};
    buf_printf(&b, "rank %d: %s: ", s->world_rank, what);
    int silent = count_silent(alive, n);
    if (silent) {
        buf_printf(&b, "%s ", silent > 1 ? "ranks" : "rank");
        list_silent(&b, targets, alive, n);
        buf_printf(&b, " %s not answer within %g s (dead or hung)", silent > 1 ? "do" : "does",
                   mpi_error ? grace : c->timeout_s + grace);
    } else if (mpi_error) {
        buf_printf(&b, "MPI error: %s", mpi_error);
    } else {
        buf_printf(&b, "no progress for %g s although every rank involved still answers (mismatched calls?)",
                   c->timeout_s);
    }
    err_set(err, "%s", b.data);
    buf_free(&b);
    free(targets);
    free(alive);
    return -1;
}

static int mpi_failed(Comm *c, int peer, const char *what, int code, Err *err) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "code %d", code);
    return wait_failed(c, peer, what, text, err);
}

/* Waits for req until the communicator's deadline; peer is the rank waited on, or -1. */
static int wait_bounded(Comm *c, MPI_Request *req, MPI_Status *st, int peer, const char *what, Err *err) {
    double deadline = comm_now() + c->timeout_s;
    for (unsigned spins = 0;; spins++) {
        int done = 0;
        int rc = MPI_Test(req, &done, st);
        if (rc != MPI_SUCCESS) return mpi_failed(c, peer, what, rc, err);
        if (done) return 0;
        answer_pings(mpi_of(c)->shared);
        if (comm_now() > deadline) return wait_failed(c, peer, what, NULL, err);
        pause_briefly(spins);
    }
}

static int started(Comm *c, int rc, int peer, const char *what, Err *err) {
    return rc == MPI_SUCCESS ? 0 : mpi_failed(c, peer, what, rc, err);
}

static int int_count(size_t count, const char *what, Err *err) {
    if (count > INT_MAX) return err_set(err, "%s of %zu elements exceeds MPI's count limit (%d)", what, count, INT_MAX);
    return 0;
}

static CommRequest *request_new(int is_recv, void *buf, size_t count, CommType t, int peer, int tag) {
    CommRequest *r = xcalloc(1, sizeof *r);
    *r = (CommRequest){.is_recv = is_recv, .recv_buf = buf, .count = count, .type = t, .peer = peer, .tag = tag};
    r->impl = xmalloc(sizeof(MPI_Request));
    return r;
}

static void request_free(CommRequest *r) {
    free(r->impl);
    free(r);
}

static CommRequest *mpi_isend(Comm *c, const void *buf, size_t count, CommType t, int peer, int tag, Err *err) {
    if (int_count(count, "send", err)) return NULL;
    CommRequest *r = request_new(0, NULL, count, t, peer, tag);
    int rc = MPI_Isend(buf, (int)count, mpi_type(t), peer, tag, mpi_of(c)->comm, r->impl);
    if (started(c, rc, peer, "send", err) == 0) return r;
    request_free(r);
    return NULL;
}

static CommRequest *mpi_irecv(Comm *c, void *buf, size_t count, CommType t, int peer, int tag, Err *err) {
    if (int_count(count, "recv", err)) return NULL;
    CommRequest *r = request_new(1, buf, count, t, peer, tag);
    int rc = MPI_Irecv(buf, (int)count, mpi_type(t), peer, tag, mpi_of(c)->comm, r->impl);
    if (started(c, rc, peer, "recv", err) == 0) return r;
    request_free(r);
    return NULL;
}

static int mpi_wait(Comm *c, CommRequest *r, Err *err) {
    MPI_Status st;
    char what[64];
    snprintf(what, sizeof what, "%s with tag %d", r->is_recv ? "recv" : "send", r->tag);
    int rc = wait_bounded(c, r->impl, &st, r->peer, what, err);
    int got = 0;
    if (rc == 0 && r->is_recv && MPI_Get_count(&st, mpi_type(r->type), &got) == MPI_SUCCESS && (size_t)got != r->count)
        rc = err_set(err, "recv with tag %d: world rank %d sent %d elements, %zu expected", r->tag,
                     c->world_ranks[r->peer], got, r->count);
    request_free(r);
    return rc;
}

static int mpi_allreduce(Comm *c, void *buf, size_t count, CommType t, Err *err) {
    if (int_count(count, "allreduce", err)) return -1;
    MPI_Request req;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)count, mpi_type(t), MPI_SUM, mpi_of(c)->comm, &req);
    if (started(c, rc, -1, "allreduce", err)) return -1;
    return wait_bounded(c, &req, MPI_STATUS_IGNORE, -1, "allreduce", err);
}

static int mpi_reduce_scatter(Comm *c, const void *send, void *recv, size_t count, CommType t, Err *err) {
    if (int_count(count, "reduce_scatter", err)) return -1;
    MPI_Request req;
    int rc = MPI_Ireduce_scatter_block(send, recv, (int)count, mpi_type(t), MPI_SUM, mpi_of(c)->comm, &req);
    if (started(c, rc, -1, "reduce_scatter", err)) return -1;
    return wait_bounded(c, &req, MPI_STATUS_IGNORE, -1, "reduce_scatter", err);
}

static int mpi_allgather(Comm *c, const void *send, void *recv, size_t count, CommType t, Err *err) {
    if (int_count(count, "allgather", err)) return -1;
    MPI_Request req;
    int rc = MPI_Iallgather(send, (int)count, mpi_type(t), recv, (int)count, mpi_type(t), mpi_of(c)->comm, &req);
    if (started(c, rc, -1, "allgather", err)) return -1;
    return wait_bounded(c, &req, MPI_STATUS_IGNORE, -1, "allgather", err);
}

static int to_int_array(const int64_t *in, int n, int *out, Err *err) {
    for (int i = 0; i < n; i++) {
        if (in[i] > INT_MAX) return err_set(err, "alltoallv count or offset %lld exceeds MPI's limit", (long long)in[i]);
        out[i] = (int)in[i];
    }
    return 0;
}

static int mpi_alltoallv(Comm *c, const void *send, const int64_t *send_counts, const int64_t *send_offsets,
                         void *recv, const int64_t *recv_counts, const int64_t *recv_offsets, CommType t, Err *err) {
    int n = c->size;
    int *v = xmalloc(4 * (size_t)n * sizeof *v);
    int rc = to_int_array(send_counts, n, v, err) || to_int_array(send_offsets, n, v + n, err) ||
             to_int_array(recv_counts, n, v + 2 * n, err) || to_int_array(recv_offsets, n, v + 3 * n, err);
    MPI_Request req;
    if (rc == 0)
        rc = started(c,
                     MPI_Ialltoallv(send, v, v + n, mpi_type(t), recv, v + 2 * n, v + 3 * n, mpi_type(t),
                                    mpi_of(c)->comm, &req),
                     -1, "alltoallv", err);
    if (rc == 0) rc = wait_bounded(c, &req, MPI_STATUS_IGNORE, -1, "alltoallv", err);
    free(v);
    return rc ? -1 : 0;
}

static int mpi_barrier(Comm *c, Err *err) {
    MPI_Request req;
    if (started(c, MPI_Ibarrier(mpi_of(c)->comm, &req), -1, "barrier", err)) return -1;
    return wait_bounded(c, &req, MPI_STATUS_IGNORE, -1, "barrier", err);
}

static const CommEngine mpi_engine;

static void attach(Comm *out, MPI_Comm comm, MpiShared *s) {
    MpiComm *m = xcalloc(1, sizeof *m);
    m->comm = comm;
    m->shared = s;
    s->refs++;
    out->engine = &mpi_engine;
    out->impl = m;
    MPI_Comm_rank(comm, &out->rank);
    MPI_Comm_size(comm, &out->size);
}

/* comm.c gathered every rank's color first, within the deadline, so every member
 * is already here and this blocking split cannot hang. */
static int mpi_split(Comm *c, int color, int key, Comm *out, Err *err) {
    MPI_Comm sub;
    int rc = MPI_Comm_split(mpi_of(c)->comm, color, key, &sub);
    if (rc != MPI_SUCCESS) return mpi_failed(c, -1, "comm_split", rc, err);
    MPI_Comm_set_errhandler(sub, MPI_ERRORS_RETURN);
    attach(out, sub, mpi_of(c)->shared);
    return 0;
}

static void shared_release(MpiShared *s) {
    if (--s->refs > 0) return;
    if (!s->failed) {
        MPI_Comm_free(&s->control);
        if (s->owns_init) MPI_Finalize();
    }
    free(s);
}

static void mpi_release(Comm *c) {
    MpiComm *m = mpi_of(c);
    if (!m->shared->failed) MPI_Comm_free(&m->comm);
    shared_release(m->shared);
    free(m);
}

static void mpi_abandon(Comm *c) { mpi_of(c)->shared->failed = 1; }

static const CommEngine mpi_engine = {
    .name = "mpi",
    .isend = mpi_isend,
    .irecv = mpi_irecv,
    .wait = mpi_wait,
    .allreduce_sum = mpi_allreduce,
    .reduce_scatter_sum = mpi_reduce_scatter,
    .allgather = mpi_allgather,
    .alltoallv = mpi_alltoallv,
    .barrier = mpi_barrier,
    .split = mpi_split,
    .release = mpi_release,
    .abandon = mpi_abandon,
};

int comm_mpi_open(Comm *c, int *argc, char ***argv, Err *err) {
    int initialized = 0, provided = 0;
    MPI_Initialized(&initialized);
    /* Only the thread that called comm_init talks to MPI; kernels' threads never do. */
    if (!initialized && MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return err_set(err, "MPI_Init failed (started by mpirun: OMPI_COMM_WORLD_SIZE is set)");
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MpiShared *s = xcalloc(1, sizeof *s);
    s->owns_init = !initialized;
    MPI_Comm_rank(MPI_COMM_WORLD, &s->world_rank);
    MPI_Comm data;
    if (MPI_Comm_dup(MPI_COMM_WORLD, &s->control) != MPI_SUCCESS || MPI_Comm_dup(MPI_COMM_WORLD, &data) != MPI_SUCCESS) {
        free(s);
        return err_set(err, "MPI_Comm_dup of the world failed");
    }
    MPI_Comm_set_errhandler(s->control, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(data, MPI_ERRORS_RETURN);
    attach(c, data, s);
    return 0;
}
