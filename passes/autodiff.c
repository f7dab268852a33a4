/* autodiff: walks the forward nodes in reverse topological order, asking each
 * op's VJP rule (ir/vjp.h) for the gradients of its inputs. */
#include <stdlib.h>
#include <string.h>

#include "../ir/vjp.h"
#include "autodiff.h"
#include "passes.h"

static int is_real(DType t) { return t == DT_F32 || t == DT_BF16 || t == DT_F16; }

/* Whether the op's VJP rule gives input i a gradient at all: where's condition
 * and rope's frequencies are treated as constants, integers never have one. */
static int differentiable_input(const Graph *g, const Node *n, int i) {
    if (!op_info(n->op)->vjp || !is_real(ir_type(g, n->in[i])->dtype)) return 0;
    return !(n->op == OP_WHERE && i == 0) && !(n->op == OP_ROPE && i == 1);
}

typedef struct Autodiff {
    Graph *g;
    size_t nodes, values;  /* the forward graph's extent */
    unsigned char *wanted; /* per forward value: depends on a param and reaches the target */
    ValueId *grad;         /* per forward value: its accumulated gradient, -1 none yet */
} Autodiff;

/* depends[v]: some param reaches v along differentiable edges. */
static void mark_depends(const Autodiff *a, unsigned char *depends) {
    for (size_t i = 0; i < a->nodes; i++) {
        const Node *n = &a->g->nodes.data[i];
        int any = n->op == OP_PARAM;
        for (int k = 0; !any && k < n->nin; k++) any = depends[n->in[k]] && differentiable_input(a->g, n, k);
        for (int k = 0; k < n->nout; k++) depends[n->out[k]] = any && is_real(ir_type(a->g, n->out[k])->dtype);
    }
}

/* wanted[v] = depends[v] and v reaches the target along differentiable edges. */
static void mark_wanted(Autodiff *a, ValueId target, const unsigned char *depends) {
    a->wanted[target] = depends[target];
    for (size_t i = a->nodes; i-- > 0;) {
        const Node *n = &a->g->nodes.data[i];
        int reaches = 0;
        for (int k = 0; k < n->nout; k++) reaches |= a->wanted[n->out[k]];
        for (int k = 0; reaches && k < n->nin; k++)
            if (depends[n->in[k]] && differentiable_input(a->g, n, k)) a->wanted[n->in[k]] = 1;
    }
}

static int check_target(const Graph *g, const char *target, ValueId *out, Err *err) {
    int at = ir_find_output(g, target);
    if (at < 0) return err_set(err, "autodiff: the graph has no output named '%s'", target);
    const Type *t = ir_type(g, g->outputs.data[at].value);
    int scalar = t->rank == 0 || (t->rank == 1 && dim_is_const(t->dims[0]) && dim_const_value(t->dims[0]) == 1);
    if (t->dtype != DT_F32 || !scalar) {
        char text[256];
        type_print(t, text, sizeof text);
        return err_set(err, "autodiff: output '%s' is %s, but the loss must be f32[] or f32[1]", target, text);
    }
    *out = g->outputs.data[at].value;
    return 0;
}

static int accumulate(Autodiff *a, ValueId v, ValueId gv, Err *err) {
    if (!type_equal(ir_type(a->g, v), ir_type(a->g, gv)))
        return err_internal(err, "autodiff: the gradient of a %s value came out as %s", dtype_name(ir_type(a->g, v)->dtype),
                            dtype_name(ir_type(a->g, gv)->dtype));
    if (a->grad[v] < 0) {
        a->grad[v] = gv;
        return 0;
    }
    ValueId in[2] = {a->grad[v], gv};
    return ir_emit(a->g, OP_ADD, in, 2, NULL, 0, &a->grad[v], err) < 0 ? -1 : 0;
}

/* The VJP of forward node i, if it has an output gradient and an input wanting one. */
static int backprop_node(Autodiff *a, size_t i, Err *err) {
    Node n = a->g->nodes.data[i]; /* a copy: emitting may move the node array */
    if (!op_info(n.op)->vjp) return 0;
    ValueId gout[4] = {-1, -1, -1, -1};
    int has_gout = 0, wants_gin = 0;
    if (n.nout > 4) return err_internal(err, "autodiff: %s has too many outputs", op_info(n.op)->name);
    for (int k = 0; k < n.nout; k++) has_gout |= (gout[k] = a->grad[n.out[k]]) >= 0;
    for (int k = 0; k < n.nin; k++) wants_gin |= a->wanted[n.in[k]];
    if (!has_gout || !wants_gin) return 0;
    ValueId *gin = xmalloc(sizeof(ValueId) * (size_t)n.nin);
    for (int k = 0; k < n.nin; k++) gin[k] = -1;
    a->g->cur_scope = n.scope;
    a->g->cur_chunk = n.chunk;
    VjpCtx ctx = {a->g, a->wanted};
    int rc = op_info(n.op)->vjp(&ctx, &n, gout, gin, err);
    if (rc) err_wrap(err, "gradient of %s: ", op_info(n.op)->name);
    for (int k = 0; rc == 0 && k < n.nin; k++)
        if (gin[k] >= 0 && a->wanted[n.in[k]]) rc = accumulate(a, n.in[k], gin[k], err);
    free(gin);
    return rc;
}

/* d target / d target = 1, shaped like the target. */
static int seed(Autodiff *a, ValueId target, Err *err) {
    Attr one = attr_float("value", 1.0);
    ValueId c;
    if (ir_emit(a->g, OP_CONST, NULL, 0, &one, 1, &c, err) < 0) return -1;
    const Type *t = ir_type(a->g, target);
    if (t->rank == 0) return accumulate(a, target, c, err);
    Attr shape = attr_dims("shape", t->rank, (Dim *)t->dims);
    ValueId e;
    if (ir_emit(a->g, OP_EXPAND, &c, 1, &shape, 1, &e, err) < 0) return -1;
    return accumulate(a, target, e, err);
}

static int add_grad_outputs(Autodiff *a, Err *err) {
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < a->nodes; i++) {
        const Node *n = &a->g->nodes.data[i];
        if (n->op != OP_PARAM || !a->wanted[n->out[0]]) continue;
        char *name = xsprintf("grad.%s", node_str(n, "name", "?"));
        if (a->grad[n->out[0]] < 0) rc = err_internal(err, "autodiff: param %s got no gradient", name + 5);
        else if (ir_add_output(a->g, name, a->grad[n->out[0]], err)) rc = err_wrap(err, "autodiff: ");
        free(name);
    }
    return rc;
}

/* Activations: forward values computed from a run-time input (not from
 * weights alone, like a stack of expert weights). */
static unsigned char *mark_activations(const Autodiff *a) {
    unsigned char *act = xcalloc(a->values ? a->values : 1, 1);
    for (size_t i = 0; i < a->nodes; i++) {
        const Node *n = &a->g->nodes.data[i];
        int any = n->op == OP_INPUT;
        for (int k = 0; !any && k < n->nin; k++) any = act[n->in[k]];
        for (int k = 0; k < n->nout; k++) act[n->out[k]] = (unsigned char)any;
    }
    return act;
}

/* B/W split: a backward node is B when the gradient of some activation depends
 * on it; every other backward node serves weight gradients only and gets
 * NODE_WGRAD. */
static void mark_wgrad(const Autodiff *a) {
    Graph *g = a->g;
    unsigned char *for_b = xcalloc(g->values.len, 1), *act = mark_activations(a);
    for (size_t v = 0; v < a->values; v++)
        if (a->grad[v] >= 0 && act[v]) for_b[a->grad[v]] = 1;
    free(act);
    for (size_t j = g->nodes.len; j-- > a->nodes;) {
        Node *n = &g->nodes.data[j];
        int b = 0;
        for (int k = 0; k < n->nout; k++) b |= for_b[n->out[k]];
        for (int k = 0; b && k < n->nin; k++) for_b[n->in[k]] = 1;
        if (!b) n->flags |= NODE_WGRAD;
    }
    free(for_b);
}

/* Rules emit for every wanted input; what no graph output reads goes again. */
static void prune_unused(const Autodiff *a) {
    Graph *g = a->g;
    unsigned char *live = xcalloc(g->values.len, 1);
    for (size_t i = 0; i < g->outputs.len; i++) live[g->outputs.data[i].value] = 1;
    int any_dead = 0;
    for (size_t j = g->nodes.len; j-- > a->nodes;) {
        Node *n = &g->nodes.data[j];
        int used = 0;
        for (int k = 0; k < n->nout; k++) used |= live[n->out[k]];
        for (int k = 0; used && k < n->nin; k++) live[n->in[k]] = 1;
        n->dead = !used;
        any_dead |= !used;
    }
    free(live);
    if (any_dead) ir_compact(g);
}

static int differentiate(Autodiff *a, ValueId target, Err *err) {
    unsigned char *depends = xcalloc(a->values, 1);
    mark_depends(a, depends);
    mark_wanted(a, target, depends);
    free(depends);
    for (size_t v = 0; v < a->values; v++) a->grad[v] = -1;
    if (!a->wanted[target]) return 0;
    if (seed(a, target, err)) return -1;
    for (size_t i = a->nodes; i-- > 0;)
        if (backprop_node(a, i, err)) return err_wrap(err, "node %zu: ", i);
    return 0;
}

int autodiff_graph(Graph *g, const char *target, Err *err) {
    ValueId t = -1;
    if (check_target(g, target, &t, err)) return -1;
    size_t nv = g->values.len ? g->values.len : 1;
    Autodiff a = {g, g->nodes.len, g->values.len, xcalloc(nv, 1), xmalloc(nv * sizeof(ValueId))};
    const char *scope = g->cur_scope;
    Chunk chunk = g->cur_chunk;
    unsigned flags = g->cur_flags;
    g->cur_scope = graph_intern(g, "");
    g->cur_chunk = CHUNK_NONE;
    g->cur_flags |= NODE_BACKWARD;
    int rc = differentiate(&a, t, err);
    g->cur_scope = scope;
    g->cur_chunk = chunk;
    g->cur_flags = flags;
    if (rc == 0) rc = add_grad_outputs(&a, err);
    if (rc == 0) {
        mark_wgrad(&a);
        prune_unused(&a);
    }
    free(a.wanted);
    free(a.grad);
    return rc;
}

/* The registry pass: the training loss when the graph has one, else `loss`. */
int pass_autodiff(Graph *g, PassContext *ctx, Err *err) {
    (void)ctx;
    return autodiff_graph(g, ir_find_output(g, "total_loss") >= 0 ? "total_loss" : "loss", err);
}
