/* Expert parallelism at run time: see ep.h. */
#include "ep.h"

#include <stdlib.h>
#include <string.h>

/* ---- the collectives over a Comm ---- */
static int64_t *prefix_offsets(const int64_t *counts, int n) {
    int64_t *off = xmalloc(sizeof(int64_t) * (size_t)(n ? n : 1)), at = 0;
    for (int i = 0; i < n; i++) off[i] = at, at += counts[i];
    return off;
}

static int comm_bytes_alltoallv(void *ctx, const void *send, const int64_t *send_bytes, void *recv,
                                const int64_t *recv_bytes, Err *err) {
    Comm *c = ctx;
    int n = comm_size(c);
    int64_t *send_off = prefix_offsets(send_bytes, n), *recv_off = prefix_offsets(recv_bytes, n);
    int rc = comm_alltoallv(c, send, send_bytes, send_off, recv, recv_bytes, recv_off, COMM_U8, err);
    free(send_off);
    free(recv_off);
    return rc;
}

void ep_group_init(EpGroup *grp, Comm *comm) {
    grp->comm = comm;
    grp->collectives = (Collectives){comm, comm_rank(comm), comm_size(comm), comm_bytes_alltoallv};
}

/* ---- which rank holds what ---- */
/* Finds "experts.<digits>" followed by '.' or the end: the digits' start and end. */
static int find_expert_number(const char *name, size_t *start, size_t *end) {
    static const char key[] = "experts.";
    for (const char *p = strstr(name, key); p; p = strstr(p + 1, key)) {
        if (p != name && p[-1] != '.') continue;
        const char *d = p + sizeof key - 1, *q = d;
        while (*q >= '0' && *q <= '9') q++;
        if (q == d || q - d > 9 || (*q != '.' && *q != '\0')) continue;
        *start = (size_t)(d - name), *end = (size_t)(q - name);
        return 1;
    }
    return 0;
}

int64_t ep_expert_of(const char *name) {
    size_t start, end;
    return find_expert_number(name, &start, &end) ? strtoll(name + start, NULL, 10) : -1;
}

int ep_holds(const char *name, int64_t experts, int rank, int ranks) {
    int64_t e = ep_expert_of(name), local = ranks > 0 ? experts / ranks : 0;
    return e < 0 || (local > 0 && e / local == rank);
}

/* ---- gathering expert tensors ---- */
typedef struct LocalEntry {
    char *key;   /* the name with the expert number made local (e - rank*L), for a rank-independent order */
    size_t slot; /* position in the TensorSet */
    int64_t local;
} LocalEntry;

static int key_order(const void *a, const void *b) {
    return strcmp(((const LocalEntry *)a)->key, ((const LocalEntry *)b)->key);
}

static char *renumbered(const char *name, int64_t expert) {
    size_t start, end;
    find_expert_number(name, &start, &end);
    return xsprintf("%.*s%lld%s", (int)start, name, (long long)expert, name + end);
}

/* This rank's expert entries, in an order every rank shares. */
static size_t local_entries(const TensorSet *set, const char *prefix, int64_t first, int64_t local, LocalEntry **out) {
    size_t n = 0;
    *out = xmalloc(sizeof(LocalEntry) * (set->names.len ? set->names.len : 1));
    for (size_t i = 0; i < set->names.len; i++) {
        const char *name = set->names.data[i];
        int64_t e = ep_expert_of(name);
        if (strncmp(name, prefix, strlen(prefix)) != 0 || e < first || e >= first + local) continue;
        (*out)[n++] = (LocalEntry){renumbered(name, e - first), i, e - first};
    }
    qsort(*out, n, sizeof **out, key_order);
    return n;
}

static int same_count_everywhere(Comm *ep, size_t n, Err *err) {
    int size = comm_size(ep);
    int64_t mine = (int64_t)n, *all = xmalloc(sizeof(int64_t) * (size_t)size);
    int rc = comm_allgather(ep, &mine, all, 1, COMM_I64, err);
    for (int q = 0; rc == 0 && q < size; q++)
        if (all[q] != mine)
            rc = err_set(err, "ep: rank %d holds %lld expert tensors but rank %d holds %lld", comm_rank(ep),
                         (long long)mine, q, (long long)all[q]);
    free(all);
    return rc;
}

/* Allgathers one local tensor and files every rank's copy under its expert's name. */
static int gather_one(Comm *ep, TensorSet *set, const LocalEntry *entry, int64_t local, Err *err) {
    const Tensor *t = set->tensors.data[entry->slot];
    const char *name = set->names.data[entry->slot];
    size_t bytes = (size_t)t->numel * dtype_host_size(t->dtype);
    int size = comm_size(ep);
    char *all = xmalloc(bytes * (size_t)size + 1);
    int rc = comm_allgather(ep, t->data, all, bytes, COMM_U8, err);
    for (int q = 0; rc == 0 && q < size; q++) {
        if (q == comm_rank(ep)) continue;
        Tensor *copy = tensor_new(t->dtype, t->rank, t->shape);
        memcpy(copy->data, all + bytes * (size_t)q, bytes);
        char *peer = renumbered(name, q * local + entry->local);
        tset_put(set, peer, copy);
        free(peer);
    }
    free(all);
    return rc;
}

int ep_gather_experts(Comm *ep, TensorSet *set, int64_t experts, const char *prefix, Err *err) {
    int size = comm_size(ep), rank = comm_rank(ep);
    if (experts < 1 || experts % size)
        return err_set(err, "ep: %lld experts do not split evenly over %d EP ranks", (long long)experts, size);
    int64_t local = experts / size;
    LocalEntry *mine;
    size_t n = local_entries(set, prefix, rank * local, local, &mine);
    int rc = same_count_everywhere(ep, n, err);
    /* gather_one appends to set; the slots of the local entries stay put. */
    for (size_t i = 0; rc == 0 && i < n; i++) rc = gather_one(ep, set, &mine[i], local, err);
    for (size_t i = 0; i < n; i++) free(mine[i].key);
    free(mine);
    return rc;
}

/* ---- reading state saved by one rank ---- */
static Tensor *zeros_like(const Tensor *t) {
    Tensor *z = tensor_new(t->dtype, t->rank, t->shape);
    memset(z->data, 0, (size_t)t->numel * dtype_host_size(t->dtype));
    return z;
}

/* A rank's expert numbers are consecutive. */
int64_t ep_held_experts(const TensorSet *set) {
    int64_t lo = INT64_MAX, hi = -1;
    for (size_t i = 0; i < set->names.len; i++) {
        int64_t e = ep_expert_of(set->names.data[i]);
        if (e >= 0 && e < lo) lo = e;
        if (e > hi) hi = e;
    }
    return hi < 0 ? 0 : hi - lo + 1;
}

int64_t ep_all_expert_shapes(const TensorSet *local, int rank, int ranks, TensorSet *out) {
    int64_t held = ep_held_experts(local);
    tset_init(out);
    for (size_t i = 0; i < local->names.len; i++) {
        const char *name = local->names.data[i];
        const Tensor *t = local->tensors.data[i];
        tset_put(out, name, zeros_like(t));
        int64_t e = ep_expert_of(name);
        for (int q = 0; e >= 0 && q < ranks; q++) {
            if (q == rank) continue;
            char *peer = renumbered(name, e + (int64_t)(q - rank) * held);
            tset_put(out, peer, zeros_like(t));
            free(peer);
        }
    }
    return held * ranks;
}

void ep_keep_held(TensorSet *set, int64_t experts, int rank, int ranks) {
    TensorSet kept;
    tset_init(&kept);
    for (size_t i = 0; i < set->names.len; i++) {
        const char *name = set->names.data[i];
        const Tensor *t = set->tensors.data[i];
        if (!ep_holds(name, experts, rank, ranks)) continue;
        Tensor *copy = tensor_new(t->dtype, t->rank, t->shape);
        memcpy(copy->data, t->data, (size_t)t->numel * dtype_host_size(t->dtype));
        tset_put(&kept, name, copy);
    }
    tset_free(set);
    *set = kept;
}
