/* ir_verify: the invariants every pass may assume and must keep. Cheap enough
 * (linear in the graph) to run after every pass with --verify-each. */
#include "verify.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int node_error(const Graph *g, size_t i, Err *err, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int node_error(const Graph *g, size_t i, Err *err, const char *fmt, ...) {
    const Node *n = &g->nodes.data[i];
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *scope = n->scope ? n->scope : "";
    const char *name = (unsigned)n->op < OP_COUNT ? op_info(n->op)->name : "?";
    return err_internal(err, "verify: node %zu (%s%s%s): %s", i, name, scope[0] ? " @" : "", scope, msg);
}

static int value_ok(const Graph *g, ValueId v) { return v >= 0 && (size_t)v < g->values.len; }

/* Every value points at a node output that points back at it. */
static int check_values(const Graph *g, Err *err) {
    for (size_t v = 0; v < g->values.len; v++) {
        const Value *val = &g->values.data[v];
        if (val->node < 0 || (size_t)val->node >= g->nodes.len)
            return err_internal(err, "verify: value %zu names node %d, which does not exist", v, val->node);
        const Node *n = &g->nodes.data[val->node];
        if (val->index < 0 || val->index >= n->nout || n->out[val->index] != (ValueId)v)
            return err_internal(err, "verify: value %zu claims to be output %d of node %d, which does not produce it", v,
                                val->index, val->node);
    }
    return 0;
}

static int check_arity(const Graph *g, size_t i, Err *err) {
    const Node *n = &g->nodes.data[i];
    const OpInfo *info = op_info(n->op);
    if (n->nin < info->min_in || (info->max_in >= 0 && n->nin > info->max_in))
        return node_error(g, i, err, "has %d inputs; the op takes %d to %d", n->nin, info->min_in, info->max_in);
    if (n->nout != info->nout) return node_error(g, i, err, "has %d outputs; the op has %d", n->nout, info->nout);
    return 0;
}

static int check_wiring(const Graph *g, size_t i, Err *err) {
    const Node *n = &g->nodes.data[i];
    for (int k = 0; k < n->nin; k++) {
        if (!value_ok(g, n->in[k])) return node_error(g, i, err, "input %d is value %d, which does not exist", k, n->in[k]);
        if ((size_t)g->values.data[n->in[k]].node >= i)
            return node_error(g, i, err, "input %d (value %d) is defined by node %d, not before it", k, n->in[k],
                              g->values.data[n->in[k]].node);
    }
    for (int k = 0; k < n->nout; k++) {
        ValueId v = n->out[k];
        if (!value_ok(g, v) || (size_t)g->values.data[v].node != i || g->values.data[v].index != k)
            return node_error(g, i, err, "output %d (value %d) does not point back at this node", k, v);
    }
    return 0;
}

static const AttrSpec *attr_spec(const OpInfo *info, const char *key) {
    for (const AttrSpec *s = info->attrs; s && s->key; s++)
        if (strcmp(s->key, key) == 0) return s;
    return NULL;
}

static int check_attrs(const Graph *g, size_t i, Err *err) {
    const Node *n = &g->nodes.data[i];
    const OpInfo *info = op_info(n->op);
    for (int k = 0; k < n->nattrs; k++) {
        const Attr *a = &n->attrs[k];
        const AttrSpec *s = attr_spec(info, a->key);
        if (!s) return node_error(g, i, err, "has attribute '%s', which the op does not know", a->key);
        if (s->kind != a->kind) return node_error(g, i, err, "attribute '%s' has the wrong kind", a->key);
        if (k && strcmp(n->attrs[k - 1].key, a->key) >= 0)
            return node_error(g, i, err, "attributes are not sorted and unique at '%s'", a->key);
    }
    for (const AttrSpec *s = info->attrs; s && s->key; s++)
        if (s->required && !node_attr(n, s->key)) return node_error(g, i, err, "lacks required attribute '%s'", s->key);
    return 0;
}

int ir_verify_node_types(const Graph *g, size_t i, Err *err) {
    const Node *n = &g->nodes.data[i];
    if (n->op == OP_INPUT || n->op == OP_PARAM) return 0;
    const OpInfo *info = op_info(n->op);
    if (!info->infer) return node_error(g, i, err, "the op has no shape rule");
    Type out[4];
    if (n->nout > 4) return node_error(g, i, err, "has too many outputs");
    Err inner = {0};
    if (ir_infer(g, n->op, n->in, n->nin, n->attrs, n->nattrs, out, &inner))
        return node_error(g, i, err, "its shape rule rejects it: %s", inner.msg);
    for (int k = 0; k < n->nout; k++) {
        const Type *have = &g->values.data[n->out[k]].type;
        if (!type_equal(have, &out[k])) {
            char a[512], b[512];
            type_print(have, a, sizeof a);
            type_print(&out[k], b, sizeof b);
            return node_error(g, i, err, "output %d has type %s, but its shape rule gives %s", k, a, b);
        }
    }
    return 0;
}

static int check_node(const Graph *g, size_t i, Err *err) {
    const Node *n = &g->nodes.data[i];
    if ((unsigned)n->op >= OP_COUNT) return err_internal(err, "verify: node %zu has no valid op (%d)", i, (int)n->op);
    if (n->dead) return node_error(g, i, err, "is marked dead but still in the graph (run ir_compact)");
    if (n->group < 0) return node_error(g, i, err, "has a negative fusion group (%d)", (int)n->group);
    if (check_arity(g, i, err) || check_wiring(g, i, err) || check_attrs(g, i, err)) return -1;
    return ir_verify_node_types(g, i, err);
}

/* Each input/param name once, and the builder's name map agreeing with the nodes. */
static int check_names(const Graph *g, Err *err) {
    StrMap seen;
    strmap_init(&seen);
    int rc = 0;
    for (size_t i = 0; i < g->nodes.len && !rc; i++) {
        const Node *n = &g->nodes.data[i];
        if (n->op != OP_INPUT && n->op != OP_PARAM) continue;
        const char *name = node_str(n, "name", NULL);
        if (!name) rc = node_error(g, i, err, "has no name");
        else if (strmap_get(&seen, name, NULL)) rc = node_error(g, i, err, "name '%s' is declared twice", name);
        else strmap_put(&seen, name, (int64_t)i);
    }
    for (size_t k = 0; k < g->names.len && !rc; k++) {
        int64_t v = g->names.vals[k], node;
        if (v == -1) continue; /* a source a pass removed */
        if (!value_ok(g, (ValueId)v) || !strmap_get(&seen, g->names.keys[k], &node) || g->values.data[v].node != node)
            rc = err_internal(err, "verify: the name map sends '%s' to value %lld, which is not that input/param",
                              g->names.keys[k], (long long)v);
    }
    strmap_free(&seen);
    return rc;
}

static int check_outputs(const Graph *g, Err *err) {
    StrMap seen;
    strmap_init(&seen);
    int rc = 0;
    for (size_t i = 0; i < g->outputs.len && !rc; i++) {
        const GraphOutput *o = &g->outputs.data[i];
        if (!o->name) rc = err_internal(err, "verify: output %zu has no name", i);
        else if (!value_ok(g, o->value))
            rc = err_internal(err, "verify: output '%s' is value %d, which does not exist", o->name, o->value);
        else if (strmap_get(&seen, o->name, NULL)) rc = err_internal(err, "verify: output '%s' is defined twice", o->name);
        else strmap_put(&seen, o->name, (int64_t)i);
    }
    strmap_free(&seen);
    return rc;
}

int ir_verify(const Graph *g, Err *err) {
    if (check_values(g, err)) return -1;
    for (size_t i = 0; i < g->nodes.len; i++)
        if (check_node(g, i, err)) return -1;
    return check_names(g, err) || check_outputs(g, err) ? -1 : 0;
}

int ir_ids_valid(const Graph *g) {
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        for (int k = 0; k < n->nin; k++)
            if (n->in[k] < 0 || (size_t)n->in[k] >= g->values.len) return 0;
        for (int k = 0; k < n->nout; k++)
            if (n->out[k] < 0 || (size_t)n->out[k] >= g->values.len) return 0;
    }
    for (size_t i = 0; i < g->outputs.len; i++)
        if (g->outputs.data[i].value < 0 || (size_t)g->outputs.data[i].value >= g->values.len) return 0;
    return 1;
}
