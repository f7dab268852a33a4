/* recompute: see recompute.h. Clones are appended to the node list as they are
 * made, together with an execution order that places each clone right before
 * the backward node that first needs it; the node list is then permuted into
 * that order, so no VEC is ever inserted into in the middle. */
#include <stdlib.h>
#include <string.h>

#include "../ir/verify.h"
#include "passes.h"
#include "recompute.h"

typedef struct Rewrite {
    Graph *g;
    size_t nvalues0;    /* values before the pass: clone_of covers these */
    ValueId *clone_of;  /* forward value -> its backward clone, -1 until made */
    VEC(int32_t) order; /* node indices in the new execution order */
    VEC(ValueId) stack; /* work list of clone_closure */
} Rewrite;

static int is_forward_recompute(const Graph *g, ValueId v) {
    unsigned flags = g->nodes.data[g->values.data[v].node].flags;
    return (flags & NODE_RECOMPUTE) && !(flags & NODE_BACKWARD);
}

/* The input a clone reads in place of forward value v. */
static ValueId clone_input(const Rewrite *rw, ValueId v) {
    return is_forward_recompute(rw->g, v) ? rw->clone_of[v] : v;
}

/* Appends a backward copy of node src whose recompute inputs are already cloned. */
static void emit_clone(Rewrite *rw, int32_t src) {
    Graph *g = rw->g;
    Node n = g->nodes.data[src];
    const ValueId *orig_out = n.out;
    n.in = arena_alloc(&g->arena, sizeof(ValueId) * (size_t)(n.nin ? n.nin : 1));
    n.out = arena_alloc(&g->arena, sizeof(ValueId) * (size_t)(n.nout ? n.nout : 1));
    for (int k = 0; k < n.nin; k++) n.in[k] = clone_input(rw, g->nodes.data[src].in[k]);
    n.flags |= NODE_BACKWARD;
    n.group = 0; /* a clone runs in backward, never in its original's fusion group */
    int32_t id = (int32_t)g->nodes.len;
    for (int k = 0; k < n.nout; k++) {
        Value v = g->values.data[orig_out[k]];
        v.node = id;
        n.out[k] = (ValueId)g->values.len;
        rw->clone_of[orig_out[k]] = n.out[k];
        VEC_PUSH(g->values, v);
    }
    VEC_PUSH(g->nodes, n);
    VEC_PUSH(rw->order, id);
}

/* Clones the producer of forward recompute value root and, first, every
 * forward recompute producer it reads, transitively. An explicit work list
 * rather than recursion: a recompute block may span a whole model. */
static void clone_closure(Rewrite *rw, ValueId root) {
    const Graph *g = rw->g;
    rw->stack.len = 0;
    VEC_PUSH(rw->stack, root);
    while (rw->stack.len) {
        ValueId v = rw->stack.data[rw->stack.len - 1];
        if (rw->clone_of[v] >= 0) {
            rw->stack.len--;
            continue;
        }
        int32_t src = g->values.data[v].node;
        int pending = 0;
        for (int k = 0; k < g->nodes.data[src].nin; k++) {
            ValueId u = g->nodes.data[src].in[k];
            if (is_forward_recompute(g, u) && rw->clone_of[u] < 0) {
                VEC_PUSH(rw->stack, u);
                pending = 1;
            }
        }
        if (pending) continue;
        rw->stack.len--;
        emit_clone(rw, src);
    }
}

static void rewire_backward_node(Rewrite *rw, size_t i) {
    Graph *g = rw->g;
    for (int k = 0; k < g->nodes.data[i].nin; k++) {
        ValueId v = g->nodes.data[i].in[k];
        if (!is_forward_recompute(g, v)) continue;
        clone_closure(rw, v);
        g->nodes.data[i].in[k] = rw->clone_of[v];
    }
}

/* Permutes the nodes into `order` (a permutation of all node indices, each
 * producer before its readers) and renumbers values in node order. */
static void apply_order(Graph *g, const int32_t *order) {
    size_t nn = g->nodes.len, nv = g->values.len;
    Node *nodes = xmalloc(sizeof(Node) * (nn ? nn : 1));
    Value *values = xmalloc(sizeof(Value) * (nv ? nv : 1));
    ValueId *remap = xmalloc(sizeof(ValueId) * (nv ? nv : 1));
    size_t next = 0;
    for (size_t j = 0; j < nn; j++) {
        Node n = g->nodes.data[order[j]];
        for (int k = 0; k < n.nin; k++) n.in[k] = remap[n.in[k]];
        for (int k = 0; k < n.nout; k++) {
            values[next] = g->values.data[n.out[k]];
            values[next].node = (int32_t)j;
            remap[n.out[k]] = (ValueId)next;
            n.out[k] = (ValueId)next++;
        }
        nodes[j] = n;
    }
    memcpy(g->nodes.data, nodes, sizeof(Node) * nn);
    memcpy(g->values.data, values, sizeof(Value) * next);
    g->values.len = next;
    for (size_t i = 0; i < g->outputs.len; i++) g->outputs.data[i].value = remap[g->outputs.data[i].value];
    for (size_t i = 0; i < g->names.len; i++)
        if (g->names.vals[i] >= 0) g->names.vals[i] = remap[g->names.vals[i]];
    free(nodes);
    free(values);
    free(remap);
}

int recompute_graph(Graph *g, size_t *cloned, Err *err) {
    if (!ir_ids_valid(g))
        return err_internal(err, "recompute: the graph refers to values that do not exist (run verify)");
    size_t nodes0 = g->nodes.len;
    Rewrite rw = {.g = g, .nvalues0 = g->values.len};
    rw.clone_of = xmalloc(sizeof(ValueId) * (rw.nvalues0 ? rw.nvalues0 : 1));
    for (size_t v = 0; v < rw.nvalues0; v++) rw.clone_of[v] = -1;
    for (size_t i = 0; i < nodes0; i++) {
        if (g->nodes.data[i].flags & NODE_BACKWARD) rewire_backward_node(&rw, i);
        VEC_PUSH(rw.order, (int32_t)i);
    }
    if (cloned) *cloned = g->nodes.len - nodes0;
    apply_order(g, rw.order.data);
    free(rw.clone_of);
    VEC_FREE(rw.order);
    VEC_FREE(rw.stack);
    return 0;
}

int pass_recompute(Graph *g, PassContext *ctx, Err *err) {
    (void)ctx;
    return recompute_graph(g, NULL, err);
}
