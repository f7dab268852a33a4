/* bf16: see bf16.h. */
#include "bf16.h"

#include <stdlib.h>
#include <string.h>

#include "passes.h"
#include "rebuild.h"

/* Per op the pass rewrites: the inputs it casts to bf16 (a bit each), and which input is the
 * weight (-1: none). Every output is cast back to f32. */
typedef struct Bf16Rule {
    unsigned inputs;
    int weight;
} Bf16Rule;

static const Bf16Rule rules[OP_COUNT] = {
    [OP_LINEAR] = {0x3, 1},
    [OP_LINEAR_WGRAD] = {0x3, -1},
    [OP_GROUPED_LINEAR] = {0x5, 2},
    [OP_GROUPED_LINEAR_WGRAD] = {0x5, -1},
    /* attention, as autocast runs scaled_dot_product_attention: q, k, v (and sdpa_grad's g) */
    [OP_SDPA] = {0x7, -1},
    [OP_SDPA_GRAD] = {0xf, -1},
};

static int casts_input(OpKind op, int k) { return (rules[op].inputs >> k) & 1u; }

static const char router_weight[] = "mlp.gate.weight";

typedef struct Bf16Rebuild {
    GraphRebuild r;
    ValueId *as_bf16; /* per old value: its bf16 copy in the new graph once a rewritten node made it, else -1 */
} Bf16Rebuild;

static int has_rule(OpKind op) { return (unsigned)op < OP_COUNT && rules[op].inputs; }

static const Node *producer(const Graph *g, ValueId v) { return &g->nodes.data[g->values.data[v].node]; }

/* The param behind a weight operand: itself, or transpose(param) in Dgrad. */
static const Node *weight_param(const Graph *g, ValueId w) {
    const Node *p = producer(g, w);
    if (p->op == OP_TRANSPOSE) p = producer(g, p->in[0]);
    return p->op == OP_PARAM ? p : NULL;
}

static int writes_router_grad(const Graph *g, ValueId v) {
    for (size_t i = 0; i < g->outputs.len; i++) {
        const char *name = g->outputs.data[i].name;
        if (g->outputs.data[i].value == v && strncmp(name, "grad.", 5) == 0 && str_ends_with(name, router_weight)) return 1;
    }
    return 0;
}

static int is_router_gemm(const Graph *g, const Node *n) {
    int w = rules[n->op].weight;
    if (w < 0) return writes_router_grad(g, n->out[0]);
    const Node *p = weight_param(g, n->in[w]);
    return p && str_ends_with(node_str(p, "name", ""), router_weight);
}

static int goes_bf16(const Graph *g, const Node *n) {
    if (!has_rule(n->op)) return 0;
    for (int k = 0; k < n->nin; k++) {
        if (!casts_input(n->op, k)) continue;
        if (ir_type(g, n->in[k])->dtype != DT_F32 || producer(g, n->in[k])->op == OP_DEQUANTIZE) return 0;
    }
    return !is_router_gemm(g, n);
}

static ValueId emit_cast(Graph *g, ValueId v, DType to, Err *err) {
    Attr a = attr_dtype("to", to);
    ValueId out;
    return ir_emit(g, OP_CAST, &v, 1, &a, 1, &out, err) < 0 ? -1 : out;
}

/* One bf16 copy per old value, made where the first rewritten node reading it stands. */
static ValueId bf16_copy(Bf16Rebuild *b, ValueId old, Err *err) {
    if (b->as_bf16[old] < 0) b->as_bf16[old] = emit_cast(b->r.g, b->r.map[old], DT_BF16, err);
    return b->as_bf16[old];
}

enum { RULE_MAX_OPERANDS = 4 }; /* the ops of `rules`: at most 4 inputs (sdpa_grad) and 3 outputs */

static int rewrite_node(Bf16Rebuild *b, const Node *n, Err *err) {
    ValueId in[RULE_MAX_OPERANDS], y[RULE_MAX_OPERANDS];
    if (n->nin > RULE_MAX_OPERANDS || n->nout > RULE_MAX_OPERANDS)
        return err_internal(err, "%s with %d inputs, %d outputs", op_info(n->op)->name, n->nin, n->nout);
    for (int k = 0; k < n->nin; k++) {
        in[k] = casts_input(n->op, k) ? bf16_copy(b, n->in[k], err) : b->r.map[n->in[k]];
        if (in[k] < 0) return -1;
    }
    if (ir_emit(b->r.g, n->op, in, n->nin, n->attrs, n->nattrs, y, err) < 0) return -1;
    for (int k = 0; k < n->nout; k++)
        if ((b->r.map[n->out[k]] = emit_cast(b->r.g, y[k], DT_F32, err)) < 0) return -1;
    return 0;
}

static int rebuild_all(Bf16Rebuild *b, Graph *g, Err *err) {
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        if (n->dead) continue;
        rebuild_enter(&b->r, n);
        int rc = goes_bf16(g, n) ? rewrite_node(b, n, err) : rebuild_copy_node(&b->r, n, "bf16", err);
        if (rc) return -1;
    }
    return rebuild_finish(&b->r, g, err);
}

int bf16_graph(Graph *g, Err *err) {
    Bf16Rebuild b;
    rebuild_begin(&b.r, g);
    size_t nv = g->values.len ? g->values.len : 1;
    b.as_bf16 = xmalloc(sizeof(ValueId) * nv);
    for (size_t v = 0; v < nv; v++) b.as_bf16[v] = -1;
    int rc = rebuild_all(&b, g, err);
    rebuild_end(&b.r);
    free(b.as_bf16);
    return rc ? err_wrap(err, "bf16: ") : 0;
}

int pass_bf16(Graph *g, PassContext *ctx, Err *err) {
    (void)ctx;
    return bf16_graph(g, err);
}
