/* cse: common-subexpression elimination by hash-consing. Nodes are visited in
 * topological order with their inputs already rewritten to surviving values,
 * so one sweep also merges chains of duplicates. Two nodes merge when op,
 * inputs, attributes and output types are equal; scope and chunk are ignored
 * (every op is pure, and the earlier node, whose tags survive, dominates the
 * later one). Params and inputs are never merged: they are identified by name. */
#include <stdlib.h>
#include <string.h>

#include "../ir/verify.h"
#include "passes.h"

static uint64_t hash_dim(Dim d, uint64_t h) {
    h = hash_bytes(&d.nterms, sizeof d.nterms, h);
    for (int i = 0; i < d.nterms; i++) {
        h = hash_bytes(&d.t[i].coef, sizeof d.t[i].coef, h);
        h = hash_bytes(&d.t[i].pow_b, 1, h);
        h = hash_bytes(&d.t[i].pow_t, 1, h);
    }
    return h;
}

static uint64_t hash_attr(const Attr *a, uint64_t h) {
    h = hash_bytes(a->key, strlen(a->key), h);
    h = hash_bytes(&a->kind, sizeof a->kind, h);
    switch (a->kind) {
    case ATTR_INT: return hash_bytes(&a->i, sizeof a->i, h);
    case ATTR_FLOAT: return hash_bytes(&a->f, sizeof a->f, h);
    case ATTR_STR: return hash_bytes(a->s, strlen(a->s), h);
    case ATTR_DTYPE: return hash_bytes(&a->dtype, sizeof a->dtype, h);
    case ATTR_DIMS:
        for (int i = 0; i < a->ndims; i++) h = hash_dim(a->dims[i], h);
        return hash_bytes(&a->ndims, sizeof a->ndims, h);
    }
    return h;
}

static uint64_t hash_node(const Node *n) {
    uint64_t h = hash_bytes(&n->op, sizeof n->op, 0);
    h = hash_bytes(n->in, sizeof(ValueId) * (size_t)n->nin, h);
    h = hash_bytes(&n->nin, sizeof n->nin, h);
    for (int i = 0; i < n->nattrs; i++) h = hash_attr(&n->attrs[i], h);
    return h;
}

static int attr_equal(const Attr *a, const Attr *b) {
    if (strcmp(a->key, b->key) != 0 || a->kind != b->kind) return 0;
    switch (a->kind) {
    case ATTR_INT: return a->i == b->i;
    case ATTR_FLOAT: return memcmp(&a->f, &b->f, sizeof a->f) == 0; /* -0.0 and 0.0 differ */
    case ATTR_STR: return strcmp(a->s, b->s) == 0;
    case ATTR_DTYPE: return a->dtype == b->dtype;
    case ATTR_DIMS:
        if (a->ndims != b->ndims) return 0;
        for (int i = 0; i < a->ndims; i++)
            if (!dim_equal(a->dims[i], b->dims[i])) return 0;
        return 1;
    }
    return 0;
}

static int node_equal(const Graph *g, const Node *a, const Node *b) {
    /* Flags take part: a recompute clone in backward must not merge back into
     * the forward node it duplicates, or recompute would be undone. */
    if (a->op != b->op || a->nin != b->nin || a->nout != b->nout || a->nattrs != b->nattrs || a->flags != b->flags)
        return 0;
    if (memcmp(a->in, b->in, sizeof(ValueId) * (size_t)a->nin) != 0) return 0;
    for (int i = 0; i < a->nattrs; i++)
        if (!attr_equal(&a->attrs[i], &b->attrs[i])) return 0;
    for (int i = 0; i < a->nout; i++)
        if (!type_equal(ir_type(g, a->out[i]), ir_type(g, b->out[i]))) return 0;
    return 1;
}

typedef struct NodeTable {
    int32_t *slots; /* node index, -1 empty */
    size_t mask;
} NodeTable;

/* Returns the earlier equal node, or inserts node i and returns -1. */
static int32_t find_or_insert(NodeTable *t, const Graph *g, size_t i) {
    const Node *n = &g->nodes.data[i];
    size_t s = (size_t)hash_node(n) & t->mask;
    for (; t->slots[s] >= 0; s = (s + 1) & t->mask)
        if (node_equal(g, &g->nodes.data[t->slots[s]], n)) return t->slots[s];
    t->slots[s] = (int32_t)i;
    return -1;
}

static void merge_duplicates(Graph *g, ValueId *repl, NodeTable *table) {
    for (size_t i = 0; i < g->nodes.len; i++) {
        Node *n = &g->nodes.data[i];
        for (int k = 0; k < n->nin; k++) n->in[k] = repl[n->in[k]];
        if (n->op == OP_PARAM || n->op == OP_INPUT) continue;
        int32_t same = find_or_insert(table, g, i);
        if (same < 0) continue;
        for (int k = 0; k < n->nout; k++) repl[n->out[k]] = g->nodes.data[same].out[k];
        n->dead = 1;
    }
}

int pass_cse(Graph *g, PassContext *ctx, Err *err) {
    (void)ctx;
    if (!ir_ids_valid(g)) return err_internal(err, "cse: the graph refers to values that do not exist (run verify)");
    size_t cap = 16;
    while (cap < 2 * g->nodes.len) cap *= 2;
    NodeTable table = {xmalloc(sizeof(int32_t) * cap), cap - 1};
    memset(table.slots, 0xff, sizeof(int32_t) * cap);
    ValueId *repl = xmalloc(sizeof(ValueId) * (g->values.len ? g->values.len : 1));
    for (size_t v = 0; v < g->values.len; v++) repl[v] = (ValueId)v;
    merge_duplicates(g, repl, &table);
    for (size_t i = 0; i < g->outputs.len; i++) g->outputs.data[i].value = repl[g->outputs.data[i].value];
    free(repl);
    free(table.slots);
    ir_compact(g);
    return 0;
}
