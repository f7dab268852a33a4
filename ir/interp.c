/* The reference interpreter: named tensor sets and a node-by-node graph walk
 * that frees each value after its last use. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collective.h"
#include "interp.h"
#include "ops/ops_internal.h"

/* ---- TensorSet ---- */
void tset_init(TensorSet *s) {
    memset(s, 0, sizeof *s);
    strmap_init(&s->index);
}

void tset_free(TensorSet *s) {
    for (size_t i = 0; i < s->tensors.len; i++) {
        tensor_free(s->tensors.data[i]);
        free(s->names.data[i]);
    }
    VEC_FREE(s->tensors);
    VEC_FREE(s->names);
    strmap_free(&s->index);
}

void tset_put(TensorSet *s, const char *name, Tensor *t) {
    int64_t at;
    if (strmap_get(&s->index, name, &at)) {
        if (s->tensors.data[at] != t) tensor_free(s->tensors.data[at]);
        s->tensors.data[at] = t;
        return;
    }
    strmap_put(&s->index, name, (int64_t)s->tensors.len);
    VEC_PUSH(s->tensors, t);
    VEC_PUSH(s->names, xstrdup(name));
}

Tensor *tset_get(const TensorSet *s, const char *name) {
    int64_t at;
    return strmap_get(&s->index, name, &at) ? s->tensors.data[at] : NULL;
}

/* ---- one node ---- */
static Tensor *tensor_copy(const Tensor *t) {
    Tensor *c = tensor_new(t->dtype, t->rank, t->shape);
    memcpy(c->data, t->data, (size_t)t->numel * dtype_host_size(t->dtype));
    return c;
}

static Tensor *tensor_for_type(const Type *ty, int64_t b, int64_t t, Err *err) {
    int64_t shape[IR_MAX_RANK];
    if (type_concrete(ty, b, t, shape, err)) return NULL;
    int64_t numel = 1;
    for (int i = 0; i < ty->rank; i++)
        if (mul_overflows_i64(numel, shape[i], &numel) || numel > ((int64_t)1 << 40)) {
            err_set(err, "a tensor of type %s is too large at B=%lld, T=%lld", TY(ty), (long long)b, (long long)t);
            return NULL;
        }
    return tensor_new(ty->dtype, ty->rank, shape);
}

int interp_node(const Graph *g, const Node *n, const Tensor *const *in, int64_t b, int64_t t, Tensor **out,
                Err *err) {
    for (int i = 0; i < n->nout; i++) out[i] = NULL;
    for (int i = 0; i < n->nout; i++)
        if (!(out[i] = tensor_for_type(ir_type(g, n->out[i]), b, t, err))) goto fail;
    if (op_info(n->op)->interp(in, n->nin, n, out, err) == 0) return 0;
fail:
    for (int i = 0; i < n->nout; i++) {
        tensor_free(out[i]);
        out[i] = NULL;
    }
    return -1;
}

/* ---- the graph walk ---- */
typedef struct RunState {
    const Graph *g;
    Tensor **vals;    /* per value; NULL when not live */
    char *borrowed;   /* per value: vals[v] belongs to the feeds */
    int64_t *last_use; /* per value: index of the last node reading it; INT64_MAX for outputs */
} RunState;

static void compute_last_use(const Graph *g, int64_t *last_use) {
    for (size_t v = 0; v < g->values.len; v++) last_use[v] = g->values.data[v].node;
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        for (int k = 0; k < n->nin; k++) last_use[n->in[k]] = (int64_t)i;
    }
    for (size_t i = 0; i < g->outputs.len; i++) last_use[g->outputs.data[i].value] = INT64_MAX;
}

static int shapes_match(const Tensor *x, const int64_t *shape, int rank) {
    if (x->rank != rank) return 0;
    for (int i = 0; i < rank; i++)
        if (x->shape[i] != shape[i]) return 0;
    return 1;
}

static void shape_text(const Tensor *x, char *out, size_t n) {
    size_t k = (size_t)snprintf(out, n, "%s[", dtype_name(x->dtype));
    for (int i = 0; i < x->rank && k < n; i++) k += (size_t)snprintf(out + k, n - k, "%s%lld", i ? "," : "", (long long)x->shape[i]);
    if (k < n) snprintf(out + k, n - k, "]");
}

/* Borrows the fed tensor for an input or param node after checking its type. */
static int feed_source(RunState *st, const Node *n, const TensorSet *feeds, const InterpOptions *opt, Err *err) {
    const char *name = node_str(n, "name", "");
    const Type *ty = ir_type(st->g, n->out[0]);
    Tensor *x = tset_get(feeds, name);
    if (!x) return err_set(err, "no %s named %s", n->op == OP_PARAM ? "weight" : "input", name);
    int64_t shape[IR_MAX_RANK];
    if (type_concrete(ty, opt->batch, opt->seq, shape, err)) return err_wrap(err, "%s: ", name);
    if (x->dtype != ty->dtype || !shapes_match(x, shape, ty->rank)) {
        char have[256];
        shape_text(x, have, sizeof have);
        return err_set(err, "%s is %s but the graph wants %s (B=%lld, T=%lld)", name, have, TY(ty),
                       (long long)opt->batch, (long long)opt->seq);
    }
    st->vals[n->out[0]] = x;
    st->borrowed[n->out[0]] = 1;
    return 0;
}

static void release(RunState *st, ValueId v) {
    if (!st->borrowed[v]) tensor_free(st->vals[v]);
    st->vals[v] = NULL;
}

static int run_kernel(RunState *st, const Node *n, const InterpOptions *opt, Err *err) {
    const Tensor *small[64], **in = n->nin <= 64 ? small : xmalloc(sizeof *in * (size_t)n->nin);
    Tensor *out[4];
    int rc = n->nout > 4 ? err_internal(err, "%s has too many outputs", node_op_name(n)) : 0;
    for (int k = 0; k < n->nin && rc == 0; k++)
        if (!(in[k] = st->vals[n->in[k]])) rc = err_internal(err, "%s reads a value that is not live", node_op_name(n));
    if (rc == 0) rc = interp_node(st->g, n, in, opt->batch, opt->seq, out, err);
    if (rc == 0)
        for (int k = 0; k < n->nout; k++) st->vals[n->out[k]] = out[k];
    if (in != small) free((void *)in);
    return rc;
}

/* Runs node i, then frees every value whose last reader it was. */
static int step(RunState *st, size_t i, const TensorSet *feeds, const InterpOptions *opt, Err *err) {
    const Node *n = &st->g->nodes.data[i];
    int rc = n->op == OP_INPUT || n->op == OP_PARAM ? feed_source(st, n, feeds, opt, err) : run_kernel(st, n, opt, err);
    if (rc) {
        if (n->op == OP_INPUT || n->op == OP_PARAM) return -1;
        return err_wrap(err, "node %zu (%s%s%s): ", i, node_op_name(n), n->scope[0] ? " in " : "", n->scope);
    }
    for (int k = 0; k < n->nin; k++)
        if (st->last_use[n->in[k]] == (int64_t)i && st->vals[n->in[k]]) release(st, n->in[k]);
    for (int k = 0; k < n->nout; k++)
        if (st->last_use[n->out[k]] == (int64_t)i) release(st, n->out[k]);
    return 0;
}

/* Moves (or, for fed or repeated values, copies) the outputs into results. */
static void collect_outputs(RunState *st, TensorSet *results) {
    uint32_t *later_uses = xcalloc(st->g->values.len ? st->g->values.len : 1, sizeof *later_uses);
    for (size_t i = 0; i < st->g->outputs.len; i++) later_uses[st->g->outputs.data[i].value]++;
    for (size_t i = 0; i < st->g->outputs.len; i++) {
        const GraphOutput *o = &st->g->outputs.data[i];
        int repeated = --later_uses[o->value] > 0;
        Tensor *t = st->vals[o->value];
        if (st->borrowed[o->value] || repeated) {
            t = tensor_copy(t);
        } else {
            st->vals[o->value] = NULL;
        }
        tset_put(results, o->name, t);
    }
    free(later_uses);
}

static int run_nodes(const Graph *g, const TensorSet *feeds, const InterpOptions *opt, TensorSet *results, Err *err) {
    size_t nv = g->values.len ? g->values.len : 1;
    RunState st = {g, xcalloc(nv, sizeof(Tensor *)), xcalloc(nv, 1), xmalloc(nv * sizeof(int64_t))};
    compute_last_use(g, st.last_use);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < g->nodes.len; i++) rc = step(&st, i, feeds, opt, err);
    if (rc == 0) collect_outputs(&st, results);
    for (size_t v = 0; v < g->values.len; v++)
        if (st.vals[v]) release(&st, (ValueId)v);
    free(st.vals);
    free(st.borrowed);
    free(st.last_use);
    return rc;
}

/* The EP kernels find the group's collectives bound to the running thread
 * (ir/collective.h); a run without them leaves an outer binding in place. */
int interp_run(const Graph *g, const TensorSet *feeds, const InterpOptions *opt, TensorSet *results, Err *err) {
    if (!opt->collectives) return run_nodes(g, feeds, opt, results, err);
    const Collectives *prev = collectives_bind(opt->collectives);
    int rc = run_nodes(g, feeds, opt, results, err);
    collectives_bind(prev);
    return rc;
}
