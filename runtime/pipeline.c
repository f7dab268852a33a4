/* The pipeline executor (pipeline.h). A step walks this rank's instruction
 * list; each F / B / W runs one stage graph on one micro-batch. Values between
 * graphs are keyed by (micro-batch, receiving stage, receiving part, name):
 * local ones wait in a mailbox until read, remote ones are received into
 * buffers whose receives were all posted when the step began, so a message
 * lands while this rank computes and a wait only covers what is still late. */
#include "pipeline.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* MPI guarantees tags up to 32767 (comm.c checks the same bound). A step's
 * messages use tags below routes x micro-batches < PIPE_TAG_LIMIT - 1; the
 * last one carries the shared gradients, which move once they are all done. */
enum { PIPE_TAG_LIMIT = 32768, PIPE_SUM_TAG = PIPE_TAG_LIMIT - 1 };
static const char *const message_prefix = "x.";
static const char *const input_ids_name = "input_ids";
static const char *const grad_prefix = "grad.";
static const char *const part_names[PIPE_PARTS] = {"forward", "backward", "weight"};

/* One name passed from graph (src_stage, src_part) to graph (dst_stage, dst_part). */
typedef struct Route {
    const char *name;
    int src_stage, src_part, dst_stage, dst_part;
} Route;

/* A step result the runner reduces: its name and type, from the stage graph
 * that outputs it, and for a gradient "grad.<param>" the param's index. */
typedef struct ResultSpec {
    const char *name;
    Type type;
    int param; /* -1: not a gradient of a param (a loss, an expert load) */
} ResultSpec;

/* A param some stage graph reads, and the ranks that run such a stage. */
typedef struct PipeParam {
    const char *name;
    unsigned char *holders; /* [ranks]: 1 where that rank holds it */
    int first, count;       /* the lowest holder, how many hold it */
    int group;              /* count > 1: its holder set's index in `groups`; else -1 */
} PipeParam;

/* A value on its way to a graph: present (req NULL) or being received. */
typedef struct Parcel {
    Tensor *tensor;
    CommRequest *req;
} Parcel;

typedef struct PendingSend {
    Tensor *tensor;
    CommRequest *req;
} PendingSend;

struct PipeRunner {
    int stages, rank, ranks;
    const Schedule *sched; /* NULL: all stages here, in turn */
    Comm *comm;
    PipeRunOptions o;
    int microbatches;
    int64_t rows; /* batch rows per micro-batch */
    Graph *(*graphs)[PIPE_PARTS];
    Executor *(*exec)[PIPE_PARTS]; /* [stage][part]; NULL where this rank does not run it or it is empty */
    VEC(Route) routes;
    VEC(ResultSpec) results;
    StrMap param_index; /* name -> index in params */
    VEC(PipeParam) params;
    VEC(int) groups; /* each distinct set of two or more holders: a param that has it */
    int held_grads_only;
    /* Per step. */
    StrMap parcel_index;
    VEC(Parcel) parcels;
    VEC(PendingSend) sends;
    PipeStepTimes times;
};

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int is_message(const char *name) { return strncmp(name, message_prefix, strlen(message_prefix)) == 0; }
static int graph_empty(const Graph *g) { return g->nodes.len == 0; }

/* ---- placement: which rank runs a stage for a direction ---- */

static int is_dualpipe(const PipeRunner *r) { return r->sched && r->sched->kind == SCHED_DUALPIPE; }

static int rank_of(const PipeRunner *r, int stage, int dir) {
    if (!r->sched) return 0;
    return dir ? r->stages - 1 - stage : stage;
}

static int stage_here(const PipeRunner *r, int stage) {
    if (!r->sched) return 1;
    return stage == r->rank || (is_dualpipe(r) && stage == r->stages - 1 - r->rank);
}

/* Micro-batches per direction: DualPipe feeds half from each end. */
static int per_dir(const PipeRunner *r) { return is_dualpipe(r) ? r->microbatches / 2 : r->microbatches; }

/* The index of the param a "grad.<param>" result is the gradient of, else -1. */
static int param_of_grad(const PipeRunner *r, const char *name) {
    int64_t at;
    if (strncmp(name, grad_prefix, strlen(grad_prefix)) != 0) return -1;
    return strmap_get(&r->param_index, name + strlen(grad_prefix), &at) ? (int)at : -1;
}

/* ---- the route table, from the graphs' names ---- */

static int find_producer(const PipeRunner *r, const char *name, int *stage, int *part) {
    for (int s = 0; s < r->stages; s++)
        for (int q = 0; q < PIPE_PARTS; q++)
            if (ir_find_output(r->graphs[s][q], name) >= 0) {
                *stage = s;
                *part = q;
                return 1;
            }
    return 0;
}

static int add_routes_into(PipeRunner *r, int t, int q, Err *err) {
    const Graph *g = r->graphs[t][q];
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        const char *name = node_str(n, "name", "");
        if (n->op != OP_INPUT || !is_message(name)) continue;
        Route rt = {.name = name, .dst_stage = t, .dst_part = q};
        if (!find_producer(r, name, &rt.src_stage, &rt.src_part))
            return err_set(err, "pipeline stage %d (%s part) reads '%s', which no stage graph outputs", t, part_names[q],
                           name);
        VEC_PUSH(r->routes, rt);
    }
    return 0;
}

static int build_routes(PipeRunner *r, Err *err) {
    for (int t = 0; t < r->stages; t++)
        for (int q = 0; q < PIPE_PARTS; q++)
            if (add_routes_into(r, t, q, err)) return -1;
    if ((int64_t)r->routes.len * r->microbatches >= PIPE_TAG_LIMIT)
        return err_set(err, "%zu stage-to-stage values x %d micro-batches exceed the %d message tags MPI guarantees",
                       r->routes.len, r->microbatches, PIPE_TAG_LIMIT);
    return 0;
}

static int has_result(const PipeRunner *r, const char *name) {
    for (size_t i = 0; i < r->results.len; i++)
        if (strcmp(r->results.data[i].name, name) == 0) return 1;
    return 0;
}

/* Every rank lists the results in the same order, so their reductions pair up. */
static int build_results(PipeRunner *r, Err *err) {
    for (int s = 0; s < r->stages; s++)
        for (int q = 0; q < PIPE_PARTS; q++) {
            const Graph *g = r->graphs[s][q];
            for (size_t i = 0; i < g->outputs.len; i++) {
                const GraphOutput *o = &g->outputs.data[i];
                const Type *t = ir_type(g, o->value);
                if (is_message(o->name) || has_result(r, o->name)) continue;
                if (t->dtype != DT_F32 && t->dtype != DT_I32)
                    return err_set(err, "step result '%s' is %s; the pipeline reduces only f32 and i32", o->name,
                                   dtype_name(t->dtype));
                ResultSpec spec = {o->name, *t, param_of_grad(r, o->name)};
                VEC_PUSH(r->results, spec);
            }
        }
    return 0;
}

/* ---- the params: which ranks hold each ---- */

/* Records that stage `stage`, and so every rank running it, reads param `name`. */
static void note_reader(PipeRunner *r, const char *name, int stage) {
    int64_t at;
    if (!strmap_get(&r->param_index, name, &at)) {
        at = (int64_t)r->params.len;
        PipeParam p = {.name = name, .holders = xcalloc((size_t)r->ranks, 1), .group = -1};
        VEC_PUSH(r->params, p);
        strmap_put(&r->param_index, name, at);
    }
    for (int dir = 0; dir < (is_dualpipe(r) ? 2 : 1); dir++) r->params.data[at].holders[rank_of(r, stage, dir)] = 1;
}

/* The group of p's holder set, made when p is the first param with that set. */
static int group_of(PipeRunner *r, const PipeParam *p) {
    for (size_t g = 0; g < r->groups.len; g++)
        if (memcmp(r->params.data[r->groups.data[g]].holders, p->holders, (size_t)r->ranks) == 0) return (int)g;
    int first = (int)(p - r->params.data);
    VEC_PUSH(r->groups, first);
    return (int)r->groups.len - 1;
}

/* A stage outputs the gradient only of params it reads (the split puts a
 * param into every graph reading it); should one not, its rank still holds
 * the param, so that no part of the gradient is left with a rank not holding it. */
static void note_gradient_makers(PipeRunner *r, int stage, const Graph *g) {
    for (size_t i = 0; i < g->outputs.len; i++) {
        const char *name = g->outputs.data[i].name;
        if (param_of_grad(r, name) >= 0) note_reader(r, name + strlen(grad_prefix), stage);
    }
}

/* Stage by stage, so every rank lists the params, and numbers the groups, alike. */
static void build_params(PipeRunner *r) {
    for (int s = 0; s < r->stages; s++)
        for (int q = 0; q < PIPE_PARTS; q++) {
            const Graph *g = r->graphs[s][q];
            for (size_t i = 0; i < g->nodes.len; i++)
                if (g->nodes.data[i].op == OP_PARAM) note_reader(r, node_str(&g->nodes.data[i], "name", ""), s);
        }
    for (int s = 0; s < r->stages; s++)
        for (int q = 0; q < PIPE_PARTS; q++) note_gradient_makers(r, s, r->graphs[s][q]);
    for (size_t i = 0; i < r->params.len; i++) {
        PipeParam *p = &r->params.data[i];
        p->first = -1;
        for (int k = 0; k < r->ranks; k++) {
            if (!p->holders[k]) continue;
            if (p->count++ == 0) p->first = k;
        }
        if (p->count > 1) p->group = group_of(r, p);
    }
}

/* ---- preparation ---- */

static int check_runner(int stages, const Schedule *sched, Comm *comm, const PipeRunOptions *o, Err *err) {
    if (stages < 1) return err_set(err, "a pipeline needs at least 1 stage, got %d", stages);
    if (!sched && comm && comm_size(comm) != 1)
        return err_set(err, "running every stage in one process needs no other rank, but the communicator has %d",
                       comm_size(comm));
    if (sched && (!comm || comm_size(comm) != sched->ranks))
        return err_set(err, "the %s schedule has %d ranks but the communicator %d", sched_kind_name(sched->kind),
                       sched->ranks, comm ? comm_size(comm) : 1);
    if (sched && sched->ranks != stages)
        return err_set(err, "the %s schedule has %d ranks for %d stages", sched_kind_name(sched->kind), sched->ranks,
                       stages);
    if (o->collectives && o->overlap)
        return err_internal(err, "expert-parallel stages must run their exchanges in order (overlap 0)");
    int m = sched ? sched->microbatches : o->microbatches;
    if (m < 1) return err_set(err, "a pipeline step needs at least 1 micro-batch, got %d", m);
    if (o->batch < 1 || o->seq < 1 || o->batch % m != 0)
        return err_set(err, "batch %lld cannot be cut into %d equal micro-batches", (long long)o->batch, m);
    return 0;
}

static int prepare_graphs(PipeRunner *r, Err *err) {
    InterpOptions io = {.batch = r->rows, .seq = r->o.seq, .threads = r->o.threads, .collectives = r->o.collectives};
    for (int s = 0; s < r->stages; s++)
        for (int q = 0; q < PIPE_PARTS; q++) {
            if (!stage_here(r, s) || graph_empty(r->graphs[s][q])) continue;
            r->exec[s][q] = exec_prepare(r->o.backend, r->graphs[s][q], &io, err);
            if (!r->exec[s][q]) return err_wrap(err, "pipeline stage %d (%s part): ", s, part_names[q]);
        }
    return 0;
}

PipeRunner *pipe_runner_new(int stages, Graph *(*graphs)[PIPE_PARTS], const Schedule *sched, Comm *comm,
                            const PipeRunOptions *o, Err *err) {
    if (check_runner(stages, sched, comm, o, err)) return NULL;
    PipeRunner *r = xcalloc(1, sizeof *r);
    r->stages = stages;
    r->graphs = graphs;
    r->sched = sched;
    r->comm = comm;
    r->o = *o;
    if (!r->o.backend) r->o.backend = "interp";
    r->rank = comm ? comm_rank(comm) : 0;
    r->ranks = comm ? comm_size(comm) : 1;
    r->microbatches = sched ? sched->microbatches : o->microbatches;
    r->rows = o->batch / r->microbatches;
    r->exec = xcalloc((size_t)stages, sizeof *r->exec);
    strmap_init(&r->parcel_index);
    strmap_init(&r->param_index);
    build_params(r);
    if (build_routes(r, err) || build_results(r, err) || prepare_graphs(r, err)) {
        pipe_runner_free(r);
        return NULL;
    }
    return r;
}

static void drop_parcels(PipeRunner *r) {
    for (size_t i = 0; i < r->parcels.len; i++) tensor_free(r->parcels.data[i].tensor);
    r->parcels.len = 0;
    strmap_free(&r->parcel_index);
    strmap_init(&r->parcel_index);
}

void pipe_runner_free(PipeRunner *r) {
    if (!r) return;
    for (int s = 0; s < r->stages; s++)
        for (int q = 0; q < PIPE_PARTS; q++)
            if (r->exec[s][q]) exec_free(r->exec[s][q]);
    free(r->exec);
    drop_parcels(r);
    strmap_free(&r->parcel_index);
    VEC_FREE(r->parcels);
    VEC_FREE(r->sends);
    VEC_FREE(r->routes);
    VEC_FREE(r->results);
    for (size_t i = 0; i < r->params.len; i++) free(r->params.data[i].holders);
    VEC_FREE(r->params);
    VEC_FREE(r->groups);
    strmap_free(&r->param_index);
    free(r);
}

PipeStepTimes pipe_runner_times(const PipeRunner *r) { return r->times; }

void pipe_runner_keep_held_grads(PipeRunner *r) { r->held_grads_only = 1; }

void pipe_runner_params(const PipeRunner *r, StrMap *held) {
    for (size_t i = 0; i < r->params.len; i++) {
        const PipeParam *p = &r->params.data[i];
        if (p->holders[r->rank]) strmap_put(held, p->name, p->first == r->rank);
    }
}

int pipe_runner_reads(const PipeRunner *r, const char *name) {
    int64_t at;
    return strmap_get(&r->param_index, name, &at);
}

Comm *pipe_runner_comm(const PipeRunner *r) { return r->sched ? r->comm : NULL; }

/* ---- the tasks of one step ---- */

/* One stage graph on one micro-batch. */
typedef struct Task {
    int stage, part, dir, mb; /* mb: the global micro-batch, dir * per_dir + index */
    int paired;               /* runs at once with the next task (an F&B pair's forward) */
} Task;
typedef VEC(Task) TaskList;

static void push_task(TaskList *l, int stage, int part, int dir, int mb) {
    Task t = {stage, part, dir, mb, 0};
    VEC_PUSH(*l, t);
}

static void push_backward(const PipeRunner *r, TaskList *l, int dir, int mb, int full) {
    int s = r->sched ? (dir ? r->stages - 1 - r->rank : r->rank) : 0;
    int g = dir * per_dir(r) + mb;
    push_task(l, s, 1, dir, g);
    if (full) push_task(l, s, 2, dir, g);
}

/* A schedule op as the graphs it runs: an F&B pair's forward and backward
 * (input part) run at once with `overlap`, else in turn; its W follows. */
static void expand_op(const PipeRunner *r, const SchedOp *op, TaskList *l) {
    int fs = op->dir ? r->stages - 1 - r->rank : r->rank;
    switch (op->kind) {
    case SOP_F: push_task(l, fs, 0, op->dir, op->dir * per_dir(r) + op->mb); break;
    case SOP_B: push_backward(r, l, op->dir, op->mb, op->full); break;
    case SOP_W: push_task(l, fs, 2, op->dir, op->dir * per_dir(r) + op->mb); break;
    case SOP_FB:
        push_task(l, fs, 0, op->dir, op->dir * per_dir(r) + op->mb);
        l->data[l->len - 1].paired = 1;
        push_backward(r, l, op->bdir, op->bmb, 1);
        break;
    }
}

/* Without a schedule: each micro-batch through every stage and back. */
static void sequential_tasks(const PipeRunner *r, TaskList *l) {
    for (int g = 0; g < r->microbatches; g++) {
        for (int s = 0; s < r->stages; s++) push_task(l, s, 0, 0, g);
        for (int s = r->stages - 1; s >= 0; s--) push_task(l, s, 1, 0, g);
        for (int s = r->stages - 1; s >= 0; s--) push_task(l, s, 2, 0, g);
    }
}

static void step_tasks(const PipeRunner *r, TaskList *l) {
    if (!r->sched) {
        sequential_tasks(r, l);
        return;
    }
    for (int i = 0; i < r->sched->len[r->rank]; i++) expand_op(r, &r->sched->ops[r->rank][i], l);
}

/* ---- parcels: values waiting for the graph that reads them ---- */

static char *parcel_key(int mb, int stage, int part, const char *name) {
    return xsprintf("%d/%d/%d/%s", mb, stage, part, name);
}

static int put_parcel(PipeRunner *r, int mb, int stage, int part, const char *name, Parcel p, Err *err) {
    char *key = parcel_key(mb, stage, part, name);
    int64_t at;
    int dup = strmap_get(&r->parcel_index, key, &at);
    if (!dup) {
        strmap_put(&r->parcel_index, key, (int64_t)r->parcels.len);
        VEC_PUSH(r->parcels, p);
    }
    free(key);
    if (dup)
        return err_internal(err, "'%s' for stage %d (%s part), micro-batch %d, delivered twice", name, stage,
                            part_names[part], mb);
    return 0;
}

/* Takes the parcel (waiting for its receive); the caller owns the tensor. */
static Tensor *take_parcel(PipeRunner *r, int mb, int stage, int part, const char *name, Err *err) {
    char *key = parcel_key(mb, stage, part, name);
    int64_t at;
    int found = strmap_get(&r->parcel_index, key, &at);
    free(key);
    Parcel *p = found ? &r->parcels.data[at] : NULL;
    if (!p || !p->tensor) {
        err_internal(err, "'%s' was never delivered (the schedule runs stage %d's %s part of micro-batch %d too early)",
                     name, stage, part_names[part], mb);
        return NULL;
    }
    if (p->req) {
        double start = seconds_now();
        int rc = comm_wait(r->comm, p->req, err);
        p->req = NULL;
        r->times.wait_recv += seconds_now() - start;
        if (rc) return NULL;
    }
    Tensor *t = p->tensor;
    p->tensor = NULL;
    return t;
}

static size_t tensor_bytes(const Tensor *t) { return (size_t)t->numel * dtype_host_size(t->dtype); }

static int tag_of(const PipeRunner *r, int route, int mb) { return mb * (int)r->routes.len + route; }

/* Posts the receive of route k's value for task t into a fresh buffer. */
static int post_receive(PipeRunner *r, const Task *t, int k, int peer, Err *err) {
    const Route *rt = &r->routes.data[k];
    const Graph *g = r->graphs[t->stage][t->part];
    int64_t at, shape[IR_MAX_RANK];
    if (!strmap_get(&g->names, rt->name, &at)) return err_internal(err, "'%s' is not an input", rt->name);
    const Type *ty = ir_type(g, (ValueId)at);
    if (type_concrete(ty, r->rows, r->o.seq, shape, err)) return -1;
    Parcel p = {.tensor = tensor_new(ty->dtype, ty->rank, shape)};
    p.req = comm_irecv(r->comm, p.tensor->data, tensor_bytes(p.tensor), COMM_U8, peer, tag_of(r, k, t->mb), err);
    if (p.req && put_parcel(r, t->mb, t->stage, t->part, rt->name, p, err) == 0) return 0;
    if (p.req) comm_wait(r->comm, p.req, &(Err){0});
    tensor_free(p.tensor);
    return -1;
}

/* Posts the receive of every remote value this rank's tasks read, so each
 * arrives while the rank computes. */
static int post_receives(PipeRunner *r, const TaskList *tasks, Err *err) {
    for (size_t i = 0; i < tasks->len; i++) {
        const Task *t = &tasks->data[i];
        for (size_t k = 0; k < r->routes.len; k++) {
            const Route *rt = &r->routes.data[k];
            int peer = rank_of(r, rt->src_stage, t->dir);
            if (rt->dst_stage != t->stage || rt->dst_part != t->part || peer == r->rank) continue;
            if (post_receive(r, t, (int)k, peer, err)) return -1;
        }
    }
    return 0;
}

static Tensor *tensor_copy(const Tensor *t) {
    Tensor *c = tensor_new(t->dtype, t->rank, t->shape);
    memcpy(c->data, t->data, tensor_bytes(t));
    return c;
}

/* Hands an "x.N" output of task t to every graph that reads it; owns v. */
static int deliver(PipeRunner *r, const Task *t, const char *name, Tensor *v, Err *err) {
    int rc = 0;
    for (size_t k = 0; rc == 0 && k < r->routes.len; k++) {
        const Route *rt = &r->routes.data[k];
        if (rt->src_stage != t->stage || rt->src_part != t->part || strcmp(rt->name, name) != 0) continue;
        int peer = rank_of(r, rt->dst_stage, t->dir);
        Tensor *c = tensor_copy(v);
        if (peer == r->rank) {
            rc = put_parcel(r, t->mb, rt->dst_stage, rt->dst_part, name, (Parcel){.tensor = c}, err);
            if (rc) tensor_free(c);
            continue;
        }
        PendingSend s = {.tensor = c};
        s.req = comm_isend(r->comm, c->data, tensor_bytes(c), COMM_U8, peer, tag_of(r, (int)k, t->mb), err);
        if (!s.req) {
            tensor_free(c);
            rc = -1;
        } else
            VEC_PUSH(r->sends, s);
    }
    tensor_free(v);
    return rc;
}

/* After a failed step: outstanding receives must end before their buffers
 * go. Once one wait fails (the peer stopped too), MPI may still write into
 * the rest, so those buffers are left allocated rather than freed under it,
 * and not waited for: one timeout is enough to report. */
static void abandon_receives(PipeRunner *r) {
    int peer_gone = 0;
    for (size_t i = 0; i < r->parcels.len; i++) {
        Parcel *p = &r->parcels.data[i];
        if (!p->req) continue;
        Err e = {0};
        if (peer_gone || comm_wait(r->comm, p->req, &e)) {
            peer_gone = 1;
            p->tensor = NULL;
        }
        p->req = NULL;
    }
}

/* ---- running one task ---- */

/* The graph's feeds: weights and the micro-batch's ids lent (not owned),
 * received values owned by `owned`. */
static int gather_feeds(PipeRunner *r, const Task *t, const TensorSet *weights, Tensor *ids, TensorSet *feeds,
                        TensorSet *owned, Err *err) {
    const Graph *g = r->graphs[t->stage][t->part];
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        if (n->op != OP_INPUT && n->op != OP_PARAM) continue;
        const char *name = node_str(n, "name", "");
        Tensor *v = NULL;
        if (n->op == OP_PARAM && !(v = tset_get(weights, name)))
            return err_set(err, "needs weight '%s', which was not given", name);
        if (n->op == OP_INPUT && strcmp(name, input_ids_name) == 0) v = ids;
        else if (n->op == OP_INPUT && is_message(name)) {
            if (!(v = take_parcel(r, t->mb, t->stage, t->part, name, err))) return -1;
            tset_put(owned, name, v);
        } else if (n->op == OP_INPUT)
            return err_set(err, "reads input '%s'; a pipeline feeds only input_ids", name);
        tset_put(feeds, name, v);
    }
    return 0;
}

/* Feeds hold only lent tensors: forget them before freeing the set. */
static void release_feeds(TensorSet *feeds) {
    for (size_t i = 0; i < feeds->tensors.len; i++) feeds->tensors.data[i] = NULL;
    tset_free(feeds);
}

/* acc += v elementwise (f32 or i32). */
static void add_elements(void *acc, const void *v, size_t count, DType dt) {
    for (size_t k = 0; k < count; k++) {
        if (dt == DT_I32) ((int32_t *)acc)[k] += ((const int32_t *)v)[k];
        else ((float *)acc)[k] += ((const float *)v)[k];
    }
}

/* Adds a step result of one micro-batch into acc; owns v. */
static int accumulate(TensorSet *acc, const char *name, Tensor *v, Err *err) {
    Tensor *a = tset_get(acc, name);
    if (!a) {
        tset_put(acc, name, v);
        return 0;
    }
    int rc = 0;
    if (a->dtype != v->dtype || a->numel != v->numel)
        rc = err_internal(err, "step result '%s' changes type between micro-batches", name);
    else
        add_elements(a->data, v->data, (size_t)a->numel, a->dtype);
    tensor_free(v);
    return rc;
}

/* Moves every output of a task on: messages to their readers, results into acc. */
static int route_outputs(PipeRunner *r, const Task *t, TensorSet *out, TensorSet *acc, Err *err) {
    int rc = 0;
    for (size_t i = 0; i < out->names.len; i++) {
        Tensor *v = out->tensors.data[i];
        out->tensors.data[i] = NULL;
        const char *name = out->names.data[i];
        if (rc) tensor_free(v);
        else if (is_message(name)) rc = deliver(r, t, name, v, err);
        else rc = accumulate(acc, name, v, err);
    }
    return rc;
}

static int wrap_task_error(const Task *t, Err *err) {
    return err_wrap(err, "pipeline stage %d (%s part), micro-batch %d: ", t->stage, part_names[t->part], t->mb);
}

/* One graph run: feeds gathered on the MPI thread, the run itself perhaps on a compute thread. */
typedef struct Job {
    PipeRunner *r;
    const Task *t;
    Executor *x;
    TensorSet feeds, owned, out;
    int rc, threaded;
    Err err;
    pthread_t thread;
} Job;

static void job_init(Job *j, PipeRunner *r, const Task *t) {
    memset(j, 0, sizeof *j);
    j->r = r;
    j->t = t;
    j->x = r->exec[t->stage][t->part];
    tset_init(&j->feeds);
    tset_init(&j->owned);
    tset_init(&j->out);
}

static void *job_run(void *p) {
    Job *j = p;
    j->rc = exec_step(j->x, &j->feeds, &j->out, &j->err);
    return NULL;
}

/* Starts the run; an empty part (the weight part of an unsplit backward) has nothing to run. */
static void job_start(Job *j, int threaded) {
    if (!j->x) return;
    j->threaded = threaded && pthread_create(&j->thread, NULL, job_run, j) == 0;
    if (!j->threaded) job_run(j);
}

/* Joins the run and moves its outputs on. */
static int job_finish(Job *j, TensorSet *acc, Err *err) {
    if (j->threaded) pthread_join(j->thread, NULL);
    int rc = j->rc;
    if (rc) *err = j->err;
    if (rc == 0) rc = route_outputs(j->r, j->t, &j->out, acc, err);
    if (rc) wrap_task_error(j->t, err);
    release_feeds(&j->feeds);
    tset_free(&j->owned);
    tset_free(&j->out);
    return rc;
}

/* Completes the sends made so far (with `overlap`, while compute threads
 * run): the receives they match were posted at the start of the step, so
 * this never waits on this rank's own work, and each wait lets MPI move the
 * incoming messages too. After a failed wait MPI may still read the buffers
 * of the failed and later sends: they are left allocated, not freed under it. */
static int complete_sends(PipeRunner *r, Err *err) {
    int rc = 0;
    for (size_t i = 0; i < r->sends.len; i++) {
        if (rc == 0 && comm_wait(r->comm, r->sends.data[i].req, err)) rc = -1;
        if (rc == 0) tensor_free(r->sends.data[i].tensor);
    }
    r->sends.len = 0;
    return rc;
}

/* Runs tasks [i, i + n) at once (n = 2 for a pair), returns the first error. */
static int run_group(PipeRunner *r, const Task *tasks, int n, const TensorSet *weights, Tensor **ids, TensorSet *acc,
                     Err *err) {
    Job jobs[2];
    int rc = 0, prepared = 0;
    for (; rc == 0 && prepared < n; prepared++) {
        job_init(&jobs[prepared], r, &tasks[prepared]);
        rc = gather_feeds(r, &tasks[prepared], weights, ids[tasks[prepared].mb], &jobs[prepared].feeds,
                          &jobs[prepared].owned, err);
        if (rc) wrap_task_error(&tasks[prepared], err);
    }
    double start = seconds_now();
    for (int k = 0; rc == 0 && k < n; k++) job_start(&jobs[k], r->o.overlap);
    if (rc == 0 && r->o.overlap) rc = complete_sends(r, err);
    for (int k = 0; k < prepared; k++) {
        Err e = {0};
        if (job_finish(&jobs[k], &acc[tasks[k].mb], rc ? &e : err)) rc = -1;
    }
    r->times.compute += seconds_now() - start;
    return rc;
}

/* ---- the step ---- */

static int check_ids(const PipeRunner *r, const Tensor *ids, Err *err) {
    if (!ids || ids->dtype != DT_I64 || ids->rank != 2 || ids->shape[0] != r->o.batch || ids->shape[1] != r->o.seq)
        return err_set(err, "pipeline step: input_ids must be i64 [%lld, %lld]", (long long)r->o.batch,
                       (long long)r->o.seq);
    if (real_size() != sizeof(float))
        return err_internal(err, "the pipeline runner needs the interpreter's float storage to be float");
    return 0;
}

/* Rows [g*rows, (g+1)*rows) of ids per micro-batch g. */
static Tensor **slice_rows(const PipeRunner *r, const Tensor *ids) {
    Tensor **s = xcalloc((size_t)r->microbatches, sizeof *s);
    int64_t shape[2] = {r->rows, r->o.seq};
    size_t bytes = (size_t)(r->rows * r->o.seq) * sizeof(int64_t);
    for (int g = 0; g < r->microbatches; g++) {
        s[g] = tensor_new(DT_I64, 2, shape);
        memcpy(s[g]->data, (const char *)ids->data + (size_t)g * bytes, bytes);
    }
    return s;
}

/* Elements of one result at this step's micro-batch shape; -1 on error. */
static int64_t spec_elems(const PipeRunner *r, const ResultSpec *spec, Err *err) {
    int64_t shape[IR_MAX_RANK], n = 1;
    if (type_concrete(&spec->type, r->rows, r->o.seq, shape, err)) return -1;
    for (int k = 0; k < spec->type.rank; k++) n *= shape[k];
    return n;
}

/* Where a result is summed over the ranks. */
enum {
    SCOPE_ALL = -3,       /* every rank: losses, expert loads, and every gradient unless held_grads_only */
    SCOPE_LOCAL = -2,     /* the gradient of a param this rank alone holds */
    SCOPE_ELSEWHERE = -1, /* the gradient of a param this rank does not hold */
};                        /* >= 0: the holder group (`groups`) of a param several ranks hold */

static int scope_of(const PipeRunner *r, const ResultSpec *spec) {
    if (!r->held_grads_only || spec->param < 0) return SCOPE_ALL;
    const PipeParam *p = &r->params.data[spec->param];
    if (!p->holders[r->rank]) return SCOPE_ELSEWHERE;
    return p->count == 1 ? SCOPE_LOCAL : p->group;
}

/* One reduction: the results of one dtype and one scope. */
typedef struct Reduction {
    DType dt;
    int scope;
} Reduction;

static int selected(const PipeRunner *r, const ResultSpec *spec, Reduction red) {
    return spec->type.dtype == red.dt && scope_of(r, spec) == red.scope;
}

/* Elements of all results the reduction covers, in the shared order. */
static int64_t result_elems(const PipeRunner *r, Reduction red, Err *err) {
    int64_t total = 0;
    for (size_t i = 0; i < r->results.len; i++) {
        if (!selected(r, &r->results.data[i], red)) continue;
        int64_t n = spec_elems(r, &r->results.data[i], err);
        if (n < 0) return -1;
        total += n;
    }
    return total;
}

/* Micro-batch g's results of the reduction into its row (zeros where this rank computed none). */
static int pack_microbatch(const PipeRunner *r, const TensorSet *acc, Reduction red, char *row, Err *err) {
    int64_t at = 0;
    for (size_t i = 0; i < r->results.len; i++) {
        const ResultSpec *spec = &r->results.data[i];
        if (!selected(r, spec, red)) continue;
        const Tensor *t = tset_get(acc, spec->name);
        int64_t n = spec_elems(r, spec, err);
        if (n < 0) return -1;
        if (t && t->numel != n)
            return err_internal(err, "step result '%s' has %lld elements, not %lld", spec->name, (long long)t->numel,
                                (long long)n);
        if (t) memcpy(row + at * 4, t->data, (size_t)n * 4);
        at += n;
    }
    return 0;
}

/* Sums the micro-batches' rows in micro-batch order: floats as the running
 * sum of row/M (the mean), integers as the plain sum. */
static void sum_rows(const char *buf, int m, int64_t total, DType dt, char *out) {
    for (int64_t k = 0; k < total; k++) {
        if (dt == DT_I32) {
            int32_t s = 0;
            for (int g = 0; g < m; g++) s += ((const int32_t *)buf)[(int64_t)g * total + k];
            ((int32_t *)out)[k] = s;
        } else {
            float s = 0.0f;
            for (int g = 0; g < m; g++) s += ((const float *)buf)[(int64_t)g * total + k] / (float)m;
            ((float *)out)[k] = s;
        }
    }
}

static void unpack_results(const PipeRunner *r, const char *sums, Reduction red, TensorSet *results) {
    int64_t at = 0;
    for (size_t i = 0; i < r->results.len; i++) {
        const Type *ty = &r->results.data[i].type;
        if (!selected(r, &r->results.data[i], red)) continue;
        int64_t shape[IR_MAX_RANK];
        type_concrete(ty, r->rows, r->o.seq, shape, &(Err){0}); /* checked by result_elems */
        Tensor *t = tensor_new(red.dt, ty->rank, shape);
        memcpy(t->data, sums + at * 4, (size_t)t->numel * 4);
        at += t->numel;
        tset_put(results, r->results.data[i].name, t);
    }
}

/* Sums buf over the holders in `holders`: the lowest adds the others' in rank
 * order and sends the sum back, so every holder gets the same bits. */
static int holders_sum(PipeRunner *r, const unsigned char *holders, void *buf, size_t count, DType dt, Err *err) {
    CommType ct = dt == DT_F32 ? COMM_F32 : COMM_I32;
    int first = 0;
    while (!holders[first]) first++;
    if (r->rank != first)
        return comm_send(r->comm, buf, count, ct, first, PIPE_SUM_TAG, err) ||
                       comm_recv(r->comm, buf, count, ct, first, PIPE_SUM_TAG, err)
                   ? -1
                   : 0;
    void *in = xmalloc(count * 4);
    int rc = 0;
    for (int k = first + 1; rc == 0 && k < r->ranks; k++)
        if (holders[k] && (rc = comm_recv(r->comm, in, count, ct, k, PIPE_SUM_TAG, err)) == 0)
            add_elements(buf, in, count, dt);
    for (int k = first + 1; rc == 0 && k < r->ranks; k++)
        if (holders[k]) rc = comm_send(r->comm, buf, count, ct, k, PIPE_SUM_TAG, err);
    free(in);
    return rc;
}

/* The rows summed over the ranks the reduction's scope covers. */
static int sum_over_ranks(PipeRunner *r, Reduction red, void *buf, size_t count, Err *err) {
    if (red.scope == SCOPE_ALL)
        return r->ranks > 1 ? comm_allreduce_sum(r->comm, buf, count, red.dt == DT_F32 ? COMM_F32 : COMM_I32, err) : 0;
    if (red.scope == SCOPE_LOCAL) return 0;
    return holders_sum(r, r->params.data[r->groups.data[red.scope]].holders, buf, count, red.dt, err);
}

/* Reduces the results of one dtype and scope. Every micro-batch keeps its own
 * row through the sum over ranks (each row has one rank's values, or two for
 * a weight two stages share, and zeros elsewhere, so the sum is exact), and
 * the rows are then added in micro-batch order: the step's results do not
 * depend on the schedule or on which rank ran what, bit for bit (FP8 needs
 * that: a last-bit change can move a value across a rounding boundary of e4m3). */
static int reduce_results(PipeRunner *r, TensorSet *acc, Reduction red, TensorSet *results, Err *err) {
    int64_t total = result_elems(r, red, err);
    if (total <= 0) return (int)total;
    int m = r->microbatches;
    char *buf = xcalloc((size_t)(total * m), 4), *sums = xmalloc((size_t)total * 4);
    int rc = 0;
    for (int g = 0; rc == 0 && g < m; g++) rc = pack_microbatch(r, &acc[g], red, buf + (size_t)(g * total) * 4, err);
    if (rc == 0) rc = sum_over_ranks(r, red, buf, (size_t)(total * m), err);
    if (rc == 0) {
        sum_rows(buf, m, total, red.dt, sums);
        unpack_results(r, sums, red, results);
    }
    free(buf);
    free(sums);
    return rc;
}

static int holds_group(const PipeRunner *r, int group) {
    return r->params.data[r->groups.data[group]].holders[r->rank];
}

/* Every scope this rank takes part in, in one order on every rank (the
 * groups' sums then never wait on each other in a cycle). */
static int reduce_step(PipeRunner *r, TensorSet *acc, TensorSet *results, Err *err) {
    static const DType dtypes[] = {DT_F32, DT_I32};
    int rc = 0;
    for (int scope = SCOPE_ALL; rc == 0 && scope < (int)r->groups.len; scope++) {
        if (scope == SCOPE_ELSEWHERE || (scope >= 0 && !holds_group(r, scope))) continue;
        for (size_t k = 0; rc == 0 && k < sizeof dtypes / sizeof *dtypes; k++)
            rc = reduce_results(r, acc, (Reduction){dtypes[k], scope}, results, err);
    }
    return rc;
}

static int run_tasks(PipeRunner *r, const TaskList *tasks, const TensorSet *weights, Tensor **ids, TensorSet *acc,
                     Err *err) {
    int rc = post_receives(r, tasks, err);
    for (size_t i = 0; rc == 0 && i < tasks->len;) {
        int n = tasks->data[i].paired && i + 1 < tasks->len ? 2 : 1;
        rc = run_group(r, &tasks->data[i], n, weights, ids, acc, err);
        i += (size_t)n;
    }
    int sent = complete_sends(r, rc ? &(Err){0} : err);
    if (rc) abandon_receives(r);
    return rc ? rc : sent;
}

int pipeline_train_step(PipeRunner *r, const TensorSet *weights, const Tensor *input_ids, TensorSet *results,
                        Err *err) {
    if (check_ids(r, input_ids, err)) return -1;
    double start = seconds_now();
    r->times = (PipeStepTimes){0};
    TaskList tasks = {0};
    step_tasks(r, &tasks);
    Tensor **ids = slice_rows(r, input_ids);
    TensorSet *acc = xcalloc((size_t)r->microbatches, sizeof *acc);
    for (int g = 0; g < r->microbatches; g++) tset_init(&acc[g]);
    int rc = run_tasks(r, &tasks, weights, ids, acc, err);
    if (rc == 0) rc = reduce_step(r, acc, results, err);
    for (int g = 0; g < r->microbatches; g++) tset_free(&acc[g]);
    free(acc);
    drop_parcels(r);
    for (int g = 0; g < r->microbatches; g++) tensor_free(ids[g]);
    free(ids);
    VEC_FREE(tasks);
    r->times.total = seconds_now() - start;
    return rc;
}
