/* rebuild: see rebuild.h. */
#include "rebuild.h"

#include <stdlib.h>

void rebuild_begin(GraphRebuild *r, const Graph *old) {
    size_t nv = old->values.len ? old->values.len : 1;
    r->old = old;
    r->g = graph_new();
    r->map = xmalloc(sizeof(ValueId) * nv);
    for (size_t v = 0; v < nv; v++) r->map[v] = -1;
}

void rebuild_enter(GraphRebuild *r, const Node *n) {
    r->g->cur_scope = graph_intern(r->g, n->scope);
    r->g->cur_chunk = n->chunk;
    r->g->cur_flags = n->flags;
}

static int copy_source(GraphRebuild *r, const Node *n, Err *err) {
    const char *name = node_str(n, "name", "");
    const Type *t = ir_type(r->old, n->out[0]);
    ValueId v = n->op == OP_PARAM ? ir_param(r->g, name, *t, err) : ir_input(r->g, name, *t, err);
    r->map[n->out[0]] = v;
    return v < 0 ? -1 : 0;
}

int rebuild_copy_node(GraphRebuild *r, const Node *n, const char *pass, Err *err) {
    if (n->op == OP_PARAM || n->op == OP_INPUT) return copy_source(r, n, err);
    enum { MAX_OUT = 4 };
    if (n->nout > MAX_OUT) return err_internal(err, "%s: %s has %d outputs", pass, op_info(n->op)->name, n->nout);
    /* Stacks of expert weights have one input per expert (256 in DeepSeek-V3). */
    ValueId *in = xmalloc(sizeof(ValueId) * (size_t)(n->nin ? n->nin : 1)), out[MAX_OUT];
    Type types[MAX_OUT];
    for (int i = 0; i < n->nin; i++) in[i] = r->map[n->in[i]];
    for (int i = 0; i < n->nout; i++) types[i] = *ir_type(r->old, n->out[i]);
    int rc = ir_emit_typed(r->g, n->op, in, n->nin, n->attrs, n->nattrs, types, n->nout, out, err) < 0 ? -1 : 0;
    free(in);
    for (int i = 0; rc == 0 && i < n->nout; i++) r->map[n->out[i]] = out[i];
    return rc;
}

int rebuild_finish(GraphRebuild *r, Graph *g, Err *err) {
    for (size_t i = 0; i < r->old->outputs.len; i++)
        if (ir_add_output(r->g, r->old->outputs.data[i].name, r->map[r->old->outputs.data[i].value], err)) return -1;
    r->g->cur_scope = graph_intern(r->g, "");
    r->g->cur_chunk = CHUNK_NONE;
    r->g->cur_flags = 0;
    Graph t = *g;
    *g = *r->g;
    *r->g = t; /* rebuild_end frees the old graph's contents */
    return 0;
}

void rebuild_end(GraphRebuild *r) {
    graph_free(r->g);
    free(r->map);
    r->g = NULL, r->map = NULL;
}
