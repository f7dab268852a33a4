/* The engine-independent half of comm.h: argument checks, comm_split's member
 * list, and the world-size-1 engine ("self"), where every collective is a copy
 * and a send to oneself waits in a queue for the matching receive. */
#include "comm_engine.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* MPI guarantees tags up to 32767; the same bound keeps every engine alike. */
enum { COMM_TAG_MAX = 32767 };
static const double default_timeout_s = 300.0;

static const size_t type_sizes[] = {[COMM_F32] = 4, [COMM_I32] = 4, [COMM_I64] = 8, [COMM_U8] = 1, [COMM_F64] = 8};

size_t comm_type_size(CommType t) { return type_sizes[t]; }

double comm_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the self engine (world size 1) ---- */

typedef struct SelfMessage {
    struct SelfMessage *next;
    int tag;
    size_t bytes;
    unsigned char data[];
} SelfMessage;

typedef struct SelfComm {
    SelfMessage *queue; /* sends not yet received, oldest first */
} SelfComm;

static CommRequest *self_isend(Comm *c, const void *buf, size_t count, CommType t, int peer, int tag, Err *err) {
    (void)peer, (void)err;
    SelfComm *s = c->impl;
    size_t bytes = count * comm_type_size(t);
    SelfMessage *m = xmalloc(sizeof *m + bytes);
    *m = (SelfMessage){.tag = tag, .bytes = bytes};
    if (bytes) memcpy(m->data, buf, bytes);
    SelfMessage **tail = &s->queue;
    while (*tail) tail = &(*tail)->next;
    *tail = m;
    return xcalloc(1, sizeof(CommRequest));
}

static CommRequest *self_irecv(Comm *c, void *buf, size_t count, CommType t, int peer, int tag, Err *err) {
    (void)c, (void)peer, (void)err;
    CommRequest *r = xcalloc(1, sizeof *r);
    *r = (CommRequest){.is_recv = 1, .recv_buf = buf, .bytes = count * comm_type_size(t), .tag = tag};
    return r;
}

static int self_take(SelfComm *s, CommRequest *r, Err *err) {
    for (SelfMessage **p = &s->queue; *p; p = &(*p)->next) {
        SelfMessage *m = *p;
        if (m->tag != r->tag) continue;
        *p = m->next;
        int rc = 0;
        if (m->bytes != r->bytes)
            rc = err_set(err, "receive of %zu bytes with tag %d from rank 0 matched a send of %zu bytes", r->bytes,
                         r->tag, m->bytes);
        else if (m->bytes)
            memcpy(r->recv_buf, m->data, m->bytes);
        free(m);
        return rc;
    }
    /* A single process cannot send later while it waits here: waiting would hang. */
    return err_set(err, "receive with tag %d from rank 0 (itself) has no matching send", r->tag);
}

static int self_wait(Comm *c, CommRequest *r, Err *err) {
    int rc = r->is_recv ? self_take(c->impl, r, err) : 0;
    free(r);
    return rc;
}

static int self_allreduce(Comm *c, void *buf, size_t count, CommType t, Err *err) {
    (void)c, (void)buf, (void)count, (void)t, (void)err;
    return 0;
}

static void copy_elems(void *dst, const void *src, size_t count, CommType t) {
    if (count && dst != src) memmove(dst, src, count * comm_type_size(t));
}

static int self_reduce_scatter(Comm *c, const void *send, void *recv, size_t count, CommType t, Err *err) {
    (void)c, (void)err;
    copy_elems(recv, send, count, t);
    return 0;
}

static int self_allgather(Comm *c, const void *send, void *recv, size_t count, CommType t, Err *err) {
    (void)c, (void)err;
    copy_elems(recv, send, count, t);
    return 0;
}

static int self_alltoallv(Comm *c, const void *send, const int64_t *send_counts, const int64_t *send_offsets,
                          void *recv, const int64_t *recv_counts, const int64_t *recv_offsets, CommType t, Err *err) {
    (void)c;
    if (send_counts[0] != recv_counts[0])
        return err_set(err, "alltoallv: rank 0 sends %lld elements to itself but expects %lld",
                       (long long)send_counts[0], (long long)recv_counts[0]);
    size_t es = comm_type_size(t);
    copy_elems((char *)recv + recv_offsets[0] * es, (const char *)send + send_offsets[0] * es, (size_t)send_counts[0],
               t);
    return 0;
}

static int self_barrier(Comm *c, Err *err) {
    (void)c, (void)err;
    return 0;
}

static const CommEngine self_engine;

static int self_split(Comm *c, int color, int key, Comm *out, Err *err) {
    (void)c, (void)color, (void)key, (void)err;
    out->engine = &self_engine;
    out->impl = xcalloc(1, sizeof(SelfComm));
    out->rank = 0;
    out->size = 1;
    return 0;
}

static void self_release(Comm *c) {
    SelfComm *s = c->impl;
    while (s->queue) {
        SelfMessage *m = s->queue;
        s->queue = m->next;
        free(m);
    }
    free(s);
}

static const CommEngine self_engine = {
    .name = "self",
    .isend = self_isend,
    .irecv = self_irecv,
    .wait = self_wait,
    .allreduce_sum = self_allreduce,
    .reduce_scatter_sum = self_reduce_scatter,
    .allgather = self_allgather,
    .alltoallv = self_alltoallv,
    .barrier = self_barrier,
    .split = self_split,
    .release = self_release,
};

/* ---- the interface ---- */

static double timeout_from_env(double timeout_s, Err *err) {
    if (timeout_s > 0) return timeout_s;
    const char *env = getenv("V3C_COMM_TIMEOUT");
    if (!env || !*env) return default_timeout_s;
    char *end;
    double v = strtod(env, &end);
    if (*end || !(v > 0) || v > 1e6) {
        err_set(err, "V3C_COMM_TIMEOUT must be a number of seconds in (0, 1e6], got '%s'", env);
        return -1;
    }
    return v;
}

static int *identity_ranks(int n) {
    int *r = xmalloc((size_t)n * sizeof *r);
    for (int i = 0; i < n; i++) r[i] = i;
    return r;
}

int comm_under_mpirun(void) {
    const char *size = getenv("OMPI_COMM_WORLD_SIZE");
    return size && *size;
}

int comm_local_ranks(void) {
    const char *local = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    long n = local ? strtol(local, NULL, 10) : 1;
    return n > 0 && n < INT32_MAX ? (int)n : 1;
}

Comm *comm_init(int *argc, char ***argv, double timeout_s, Err *err) {
    double timeout = timeout_from_env(timeout_s, err);
    if (timeout < 0) return NULL;
    Comm *c = xcalloc(1, sizeof *c);
    c->timeout_s = timeout;
    int rc = comm_under_mpirun() ? comm_mpi_open(c, argc, argv, err) : self_split(NULL, 0, 0, c, err);
    if (rc) {
        free(c);
        return NULL;
    }
    c->world_ranks = identity_ranks(c->size);
    return c;
}

void comm_free(Comm *c) {
    if (!c) return;
    c->engine->release(c);
    free(c->world_ranks);
    free(c);
}

void comm_abandon(Comm *c) {
    if (c && c->engine->abandon) c->engine->abandon(c);
    comm_free(c);
}

int comm_rank(const Comm *c) { return c->rank; }
int comm_size(const Comm *c) { return c->size; }
int comm_world_rank(const Comm *c, int r) { return r >= 0 && r < c->size ? c->world_ranks[r] : -1; }
const char *comm_engine_name(const Comm *c) { return c->engine->name; }
double comm_timeout(const Comm *c) { return c->timeout_s; }
void comm_set_timeout(Comm *c, double seconds) {
    if (seconds > 0) c->timeout_s = seconds;
}

static int check_type(CommType t, Err *err) {
    if ((unsigned)t >= sizeof type_sizes / sizeof *type_sizes)
        return err_internal(err, "communication with unknown element type %d", (int)t);
    return 0;
}

static int check_buffer(const void *buf, size_t count, const char *what, Err *err) {
    if (count && !buf) return err_internal(err, "%s: a NULL buffer for %zu elements", what, count);
    return 0;
}

static int check_peer(const Comm *c, int peer, int tag, const char *what, Err *err) {
    if (peer < 0 || peer >= c->size)
        return err_internal(err, "%s: peer %d outside the communicator's %d ranks", what, peer, c->size);
    if (tag < 0 || tag > COMM_TAG_MAX) return err_internal(err, "%s: tag %d outside 0..%d", what, tag, COMM_TAG_MAX);
    return 0;
}

static int check_p2p(const Comm *c, const void *buf, size_t count, CommType t, int peer, int tag, const char *what,
                     Err *err) {
    return check_type(t, err) || check_buffer(buf, count, what, err) || check_peer(c, peer, tag, what, err) ? -1 : 0;
}

CommRequest *comm_isend(Comm *c, const void *buf, size_t count, CommType t, int peer, int tag, Err *err) {
    if (check_p2p(c, buf, count, t, peer, tag, "send", err)) return NULL;
    return c->engine->isend(c, buf, count, t, peer, tag, err);
}

CommRequest *comm_irecv(Comm *c, void *buf, size_t count, CommType t, int peer, int tag, Err *err) {
    if (check_p2p(c, buf, count, t, peer, tag, "recv", err)) return NULL;
    return c->engine->irecv(c, buf, count, t, peer, tag, err);
}

int comm_wait(Comm *c, CommRequest *r, Err *err) {
    if (!r) return err_internal(err, "wait on a NULL request");
    return c->engine->wait(c, r, err);
}

int comm_send(Comm *c, const void *buf, size_t count, CommType t, int peer, int tag, Err *err) {
    CommRequest *r = comm_isend(c, buf, count, t, peer, tag, err);
    return r ? comm_wait(c, r, err) : -1;
}

int comm_recv(Comm *c, void *buf, size_t count, CommType t, int peer, int tag, Err *err) {
    CommRequest *r = comm_irecv(c, buf, count, t, peer, tag, err);
    return r ? comm_wait(c, r, err) : -1;
}

int comm_allreduce_sum(Comm *c, void *buf, size_t count, CommType t, Err *err) {
    if (check_type(t, err) || check_buffer(buf, count, "allreduce", err)) return -1;
    return c->engine->allreduce_sum(c, buf, count, t, err);
}

int comm_reduce_scatter_sum(Comm *c, const void *send, void *recv, size_t count, CommType t, Err *err) {
    if (check_type(t, err) || check_buffer(send, count, "reduce_scatter", err) ||
        check_buffer(recv, count / (size_t)c->size, "reduce_scatter", err))
        return -1;
    if (count % (size_t)c->size)
        return err_internal(err, "reduce_scatter of %zu elements over %d ranks: not divisible", count, c->size);
    return c->engine->reduce_scatter_sum(c, send, recv, count / (size_t)c->size, t, err);
}

int comm_allgather(Comm *c, const void *send, void *recv, size_t count, CommType t, Err *err) {
    if (check_type(t, err) || check_buffer(send, count, "allgather", err) || check_buffer(recv, count, "allgather", err))
        return -1;
    return c->engine->allgather(c, send, recv, count, t, err);
}

static int check_counts(const Comm *c, const int64_t *counts, const int64_t *offsets, const char *side, Err *err) {
    if (!counts || !offsets) return err_internal(err, "alltoallv: NULL %s counts or offsets", side);
    for (int r = 0; r < c->size; r++)
        if (counts[r] < 0 || offsets[r] < 0)
            return err_internal(err, "alltoallv: %s count %lld at offset %lld for rank %d", side, (long long)counts[r],
                                (long long)offsets[r], r);
    return 0;
}

int comm_alltoallv(Comm *c, const void *send, const int64_t *send_counts, const int64_t *send_offsets, void *recv,
                   const int64_t *recv_counts, const int64_t *recv_offsets, CommType t, Err *err) {
    if (check_type(t, err) || check_counts(c, send_counts, send_offsets, "send", err) ||
        check_counts(c, recv_counts, recv_offsets, "recv", err))
        return -1;
    return c->engine->alltoallv(c, send, send_counts, send_offsets, recv, recv_counts, recv_offsets, t, err);
}

int comm_barrier(Comm *c, Err *err) { return c->engine->barrier(c, err); }

/* Every rank's (color, key, world rank), gathered so each knows its group's world ranks. */
static int *group_world_ranks(Comm *c, int color, int key, int *n, Err *err) {
    int mine[3] = {color, key, c->world_ranks[c->rank]};
    int *all = xmalloc((size_t)c->size * sizeof mine);
    if (comm_allgather(c, mine, all, 3, COMM_I32, err)) {
        free(all);
        return NULL;
    }
    int *ranks = xmalloc((size_t)c->size * sizeof *ranks);
    *n = 0;
    /* Ordered by key, ties by parent rank: insertion keeps parent order stable. */
    for (int r = 0; r < c->size; r++) {
        if (all[3 * r] != color) continue;
        int at = *n;
        while (at > 0 && all[3 * ranks[at - 1] + 1] > all[3 * r + 1]) {
            ranks[at] = ranks[at - 1];
            at--;
        }
        ranks[at] = r;
        (*n)++;
    }
    for (int i = 0; i < *n; i++) ranks[i] = all[3 * ranks[i] + 2];
    free(all);
    return ranks;
}

Comm *comm_split(Comm *c, int color, int key, Err *err) {
    if (color < 0) return err_internal(err, "comm_split: color %d is negative", color), NULL;
    int n = 0;
    int *ranks = group_world_ranks(c, color, key, &n, err);
    if (!ranks) return NULL;
    Comm *out = xcalloc(1, sizeof *out);
    out->timeout_s = c->timeout_s;
    if (c->engine->split(c, color, key, out, err)) {
        free(ranks);
        if (out->engine) comm_free(out); /* the engine got as far as making it */
        else free(out);
        return NULL;
    }
    if (out->size != n) {
        err_internal(err, "comm_split: the engine made %d ranks, the colors say %d", out->size, n);
        free(ranks);
        comm_free(out);
        return NULL;
    }
    out->world_ranks = ranks;
    return out;
}
