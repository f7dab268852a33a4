/* The NCCL engine: one rank per GPU, buffers in device memory. libnccl.so.2 and
 * libcudart are opened with dlopen on first use, so v3c builds and runs where
 * neither exists. NCCL calls are asynchronous on the comm's stream; every wait
 * polls the stream and ncclCommGetAsyncError against the deadline. NCCL cannot
 * say which peer failed, so on a timeout or an asynchronous error the comm is
 * aborted and a barrier on the bootstrap communicator (MPI, which pings the
 * ranks that do not arrive) names the rank that is dead or hung.
 *
 * Tags: NCCL has none, so sends and receives between two ranks match in call
 * order; isend/irecv are queued and issued together in one NCCL group at the
 * next wait, so two ranks that both send first do not deadlock. */
#include "comm_engine.h"
#include "nccl_abi.h"

#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The entry points used (nccl_abi.h), with NCCL's and CUDA's enums passed as int (their ABI). */
typedef struct NcclApi {
    NCCL_ENTRY_POINTS(DLABI_FIELD)
    CUDART_ENTRY_POINTS(DLABI_FIELD)
} NcclApi;

#define SYMBOL(symbol, field, ret, params) {#symbol, offsetof(NcclApi, field)},
static const DlabiSymbol nccl_symbols[] = {NCCL_ENTRY_POINTS(SYMBOL)};
static const DlabiSymbol cudart_symbols[] = {CUDART_ENTRY_POINTS(SYMBOL)};

/* Where the libraries are looked for: the loader's path, then CUDA's usual home. */
static const char *const nccl_names[] = {"libnccl.so.2", "/usr/local/cuda/lib64/libnccl.so.2"};
static const char *const cudart_names[] = {"libcudart.so.13", "libcudart.so.12", "libcudart.so",
                                           "/usr/local/cuda/lib64/libcudart.so"};

/* The loaded entry points: a table filled once per process, like a registry. */
static NcclApi loaded_api;
static int api_state; /* 0 not tried, 1 loaded, -1 failed (reason in api_failure) */
static char api_failure[512];

static void *open_first(const char *const *names, size_t n) {
    for (size_t i = 0; i < n; i++) {
        void *h = dlopen(names[i], RTLD_NOW | RTLD_GLOBAL);
        if (h) return h;
    }
    return NULL;
}

static int load_symbols(void *nccl, void *cudart) {
    const char *missing = dlabi_resolve(nccl, nccl_symbols, sizeof nccl_symbols / sizeof *nccl_symbols, NULL, 0,
                                        &loaded_api);
    const char *library = "libnccl";
    if (!missing) {
        missing = dlabi_resolve(cudart, cudart_symbols, sizeof cudart_symbols / sizeof *cudart_symbols, NULL, 0,
                                &loaded_api);
        library = "libcudart";
    }
    if (missing) snprintf(api_failure, sizeof api_failure, "%s lacks %s", library, missing);
    return missing ? -1 : 0;
}

static int load_api(void) {
    if (api_state) return api_state;
    void *cudart = open_first(cudart_names, sizeof cudart_names / sizeof *cudart_names);
    void *nccl = cudart ? open_first(nccl_names, sizeof nccl_names / sizeof *nccl_names) : NULL;
    if (!cudart || !nccl) {
        snprintf(api_failure, sizeof api_failure, "cannot load %s: %s", cudart ? "libnccl.so.2" : "libcudart",
                 dlerror());
        return api_state = -1;
    }
    return api_state = load_symbols(nccl, cudart) ? -1 : 1;
}

static const NcclApi *api(Err *err) {
    if (load_api() < 0) return err_set(err, "NCCL is not usable: %s", api_failure), NULL;
    return &loaded_api;
}

int comm_nccl_available(char *why, size_t n) {
    if (load_api() < 0) return snprintf(why, n, "%s", api_failure), 0;
    int devices = 0;
    int rc = loaded_api.get_device_count(&devices);
    if (rc != CUDART_OK) return snprintf(why, n, "no CUDA device: %s", loaded_api.cuda_error_string(rc)), 0;
    if (devices < 1) return snprintf(why, n, "no CUDA device"), 0;
    return 1;
}

/* ---- device memory, for callers that hold no CUDA context of their own ---- */

static int cuda_check(const NcclApi *a, int rc, const char *what, Err *err) {
    if (rc == CUDART_OK) return 0;
    return err_set(err, "%s: %s", what, a->cuda_error_string(rc));
}

void *comm_device_alloc(size_t bytes, Err *err) {
    const NcclApi *a = api(err);
    void *p = NULL;
    if (!a || cuda_check(a, a->cuda_malloc(&p, bytes ? bytes : 1), "cudaMalloc", err)) return NULL;
    return p;
}

void comm_device_free(void *p) {
    if (p && api_state == 1) loaded_api.cuda_free(p);
}

int comm_device_copy(void *dst, const void *src, size_t bytes, Err *err) {
    const NcclApi *a = api(err);
    return !a || cuda_check(a, a->cuda_memcpy(dst, src, bytes, CUDART_MEMCPY_DEFAULT), "cudaMemcpy", err) ? -1 : 0;
}

/* ---- the engine ---- */

typedef struct PendingP2P {
    int is_recv;
    void *buf;
    size_t count;
    CommType type;
    int peer;
} PendingP2P;

typedef struct NcclComm {
    void *comm, *stream;
    Comm *bootstrap; /* same ranks, MPI or self: names failed ranks */
    int owns_bootstrap;
    int aborted;
    void *scratch; /* one device int for barriers */
    VEC(PendingP2P) pending;
} NcclComm;

static NcclComm *nccl_of(const Comm *c) { return c->impl; }

static int nccl_type(CommType t) {
    static const int types[] = {[COMM_F32] = NCCL_T_FLOAT32, [COMM_I32] = NCCL_T_INT32, [COMM_I64] = NCCL_T_INT64,
                                 [COMM_U8] = NCCL_T_UINT8, [COMM_F64] = NCCL_T_FLOAT64};
    return types[t];
}

/* After NCCL gave up: the bootstrap barrier pings whoever does not arrive. */
static int name_failed_rank(Comm *c, const char *what, const char *why, Err *err) {
    NcclComm *n = nccl_of(c);
    if (!n->aborted) loaded_api.comm_abort(n->comm);
    n->aborted = 1;
    Err probe = {0};
    if (comm_barrier(n->bootstrap, &probe) == 0)
        return err_set(err, "rank %d: NCCL %s: %s (every rank still answers)", c->world_ranks[c->rank], what, why);
    return err_set(err, "rank %d: NCCL %s: %s; %s", c->world_ranks[c->rank], what, why, probe.msg);
}

static void pause_briefly(unsigned spins) {
    if (spins < 64) return;
    struct timespec ts = {0, spins < 1024 ? 20000L : 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits until the stream has run everything queued, within the deadline. */
static int wait_stream(Comm *c, const char *what, Err *err) {
    NcclComm *n = nccl_of(c);
    double deadline = comm_now() + c->timeout_s;
    for (unsigned spins = 0;; spins++) {
        int q = loaded_api.stream_query(n->stream);
        if (q == CUDART_OK) return 0;
        if (q != CUDART_NOT_READY) return name_failed_rank(c, what, loaded_api.cuda_error_string(q), err);
        int async = NCCL_OK;
        loaded_api.get_async_error(n->comm, &async);
        if (async != NCCL_OK && async != NCCL_PENDING)
            return name_failed_rank(c, what, loaded_api.error_string(async), err);
        if (comm_now() > deadline) {
            char why[64];
            snprintf(why, sizeof why, "no progress for %g s", c->timeout_s);
            return name_failed_rank(c, what, why, err);
        }
        pause_briefly(spins);
    }
}

/* Checks an NCCL launch, then waits for it. */
static int launched(Comm *c, int rc, const char *what, Err *err) {
    if (nccl_of(c)->aborted) return err_set(err, "NCCL %s on a communicator aborted after an earlier failure", what);
    if (rc != NCCL_OK) return name_failed_rank(c, what, loaded_api.error_string(rc), err);
    return wait_stream(c, what, err);
}

static CommRequest *queue_p2p(Comm *c, int is_recv, void *buf, size_t count, CommType t, int peer, int tag) {
    NcclComm *n = nccl_of(c);
    VEC_PUSH(n->pending, ((PendingP2P){is_recv, buf, count, t, peer}));
    CommRequest *r = xcalloc(1, sizeof *r);
    *r = (CommRequest){.is_recv = is_recv, .recv_buf = buf, .count = count, .type = t, .peer = peer, .tag = tag};
    return r;
}

static CommRequest *nccl_isend(Comm *c, const void *buf, size_t count, CommType t, int peer, int tag, Err *err) {
    (void)err;
    return queue_p2p(c, 0, (void *)buf, count, t, peer, tag);
}

static CommRequest *nccl_irecv(Comm *c, void *buf, size_t count, CommType t, int peer, int tag, Err *err) {
    (void)err;
    return queue_p2p(c, 1, buf, count, t, peer, tag);
}

static int issue_p2p(NcclComm *n, const PendingP2P *p) {
    if (p->is_recv) return loaded_api.recv(p->buf, p->count, nccl_type(p->type), p->peer, n->comm, n->stream);
    return loaded_api.send(p->buf, p->count, nccl_type(p->type), p->peer, n->comm, n->stream);
}

/* Every queued send and receive in one group. */
static int flush_pending(Comm *c, Err *err) {
    NcclComm *n = nccl_of(c);
    if (!n->pending.len) return 0;
    int rc = loaded_api.group_start();
    for (size_t i = 0; i < n->pending.len && rc == NCCL_OK; i++) rc = issue_p2p(n, &n->pending.data[i]);
    int end = loaded_api.group_end();
    n->pending.len = 0;
    return launched(c, rc != NCCL_OK ? rc : end, "send/recv", err);
}

static int nccl_wait(Comm *c, CommRequest *r, Err *err) {
    free(r);
    return flush_pending(c, err);
}

static int nccl_allreduce(Comm *c, void *buf, size_t count, CommType t, Err *err) {
    NcclComm *n = nccl_of(c);
    return launched(c, loaded_api.all_reduce(buf, buf, count, nccl_type(t), NCCL_OP_SUM, n->comm, n->stream), "allreduce",
                    err);
}

static int nccl_reduce_scatter(Comm *c, const void *send, void *recv, size_t count, CommType t, Err *err) {
    NcclComm *n = nccl_of(c);
    int rc = loaded_api.reduce_scatter(send, recv, count, nccl_type(t), NCCL_OP_SUM, n->comm, n->stream);
    return launched(c, rc, "reduce_scatter", err);
}

static int nccl_allgather(Comm *c, const void *send, void *recv, size_t count, CommType t, Err *err) {
    NcclComm *n = nccl_of(c);
    return launched(c, loaded_api.all_gather(send, recv, count, nccl_type(t), n->comm, n->stream), "allgather", err);
}

static int nccl_alltoallv(Comm *c, const void *send, const int64_t *send_counts, const int64_t *send_offsets,
                          void *recv, const int64_t *recv_counts, const int64_t *recv_offsets, CommType t, Err *err) {
    NcclComm *n = nccl_of(c);
    size_t es = comm_type_size(t);
    int rc = loaded_api.group_start();
    for (int p = 0; p < c->size && rc == NCCL_OK; p++) {
        if (send_counts[p])
            rc = loaded_api.send((const char *)send + send_offsets[p] * es, (size_t)send_counts[p], nccl_type(t), p,
                                 n->comm, n->stream);
        if (rc == NCCL_OK && recv_counts[p])
            rc = loaded_api.recv((char *)recv + recv_offsets[p] * es, (size_t)recv_counts[p], nccl_type(t), p, n->comm,
                                 n->stream);
    }
    int end = loaded_api.group_end();
    return launched(c, rc != NCCL_OK ? rc : end, "alltoallv", err);
}

static int nccl_barrier(Comm *c, Err *err) { return nccl_allreduce(c, nccl_of(c)->scratch, 1, COMM_I32, err); }

static const CommEngine nccl_engine;

/* Stream and scratch for a new NCCL communicator `nc` over bootstrap's ranks. */
static int attach(Comm *out, void *nc, Comm *bootstrap, int owns_bootstrap, Err *err) {
    NcclComm *n = xcalloc(1, sizeof *n);
    n->comm = nc;
    n->bootstrap = bootstrap;
    n->owns_bootstrap = owns_bootstrap;
    out->engine = &nccl_engine;
    out->impl = n;
    out->rank = comm_rank(bootstrap);
    out->size = comm_size(bootstrap);
    out->timeout_s = comm_timeout(bootstrap);
    int rc = cuda_check(&loaded_api, loaded_api.stream_create(&n->stream, CUDART_STREAM_NON_BLOCKING), "stream", err);
    if (rc == 0 && !(n->scratch = comm_device_alloc(sizeof(int32_t), err))) rc = -1;
    return rc;
}

static int nccl_split(Comm *c, int color, int key, Comm *out, Err *err) {
    NcclComm *n = nccl_of(c);
    Comm *boot = comm_split(n->bootstrap, color, key, err);
    if (!boot) return -1;
    void *sub = NULL;
    int rc = loaded_api.comm_split(n->comm, color, key, &sub, NULL);
    if (rc != NCCL_OK) {
        comm_free(boot);
        return name_failed_rank(c, "comm_split", loaded_api.error_string(rc), err);
    }
    return attach(out, sub, boot, 1, err);
}

static void nccl_release(Comm *c) {
    NcclComm *n = nccl_of(c);
    if (n->aborted) {
        /* ncclCommAbort already freed the communicator. */
    } else if (n->comm) {
        loaded_api.comm_destroy(n->comm);
    }
    if (n->stream) loaded_api.stream_destroy(n->stream);
    comm_device_free(n->scratch);
    if (n->owns_bootstrap) comm_free(n->bootstrap);
    VEC_FREE(n->pending);
    free(n);
}

static void nccl_abandon(Comm *c) {
    NcclComm *n = nccl_of(c);
    if (!n->aborted && n->comm) loaded_api.comm_abort(n->comm);
    n->aborted = 1;
    if (n->owns_bootstrap) {
        comm_abandon(n->bootstrap);
        n->owns_bootstrap = 0;
    }
}

static const CommEngine nccl_engine = {
    .name = "nccl",
    .isend = nccl_isend,
    .irecv = nccl_irecv,
    .wait = nccl_wait,
    .allreduce_sum = nccl_allreduce,
    .reduce_scatter_sum = nccl_reduce_scatter,
    .allgather = nccl_allgather,
    .alltoallv = nccl_alltoallv,
    .barrier = nccl_barrier,
    .split = nccl_split,
    .release = nccl_release,
    .abandon = nccl_abandon,
};

/* Rank 0 makes the id; the bootstrap carries it to the others. */
static int share_unique_id(Comm *world, NcclId *id, Err *err) {
    if (comm_rank(world) == 0 && loaded_api.get_unique_id(id) != NCCL_OK)
        return err_set(err, "ncclGetUniqueId failed");
    NcclId *all = xmalloc((size_t)comm_size(world) * sizeof *all);
    int rc = comm_allgather(world, id, all, sizeof *id, COMM_U8, err);
    if (rc == 0) *id = all[0];
    free(all);
    return rc;
}

Comm *comm_nccl_init(Comm *world, int device, Err *err) {
    const NcclApi *a = api(err);
    if (!a || cuda_check(a, a->set_device(device), "cudaSetDevice", err)) return NULL;
    NcclId id = {{0}};
    if (share_unique_id(world, &id, err)) return NULL;
    void *nc = NULL;
    int rc = a->comm_init_rank(&nc, comm_size(world), id, comm_rank(world));
    if (rc != NCCL_OK) return err_set(err, "ncclCommInitRank: %s", a->error_string(rc)), NULL;
    Comm *c = xcalloc(1, sizeof *c);
    if (attach(c, nc, world, 0, err)) {
        comm_free(c);
        return NULL;
    }
    c->world_ranks = xmalloc((size_t)c->size * sizeof *c->world_ranks);
    for (int r = 0; r < c->size; r++) c->world_ranks[r] = comm_world_rank(world, r);
    return c;
}
