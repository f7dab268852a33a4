/* bf16: see bf16.h. */
#include "bf16.h"

#include <stdlib.h>
#include <string.h>

#include "passes.h"
#include "rebuild.h"

/* Per GEMM op: its two real operands, and which one is the weight (-1: none, a Wgrad). */
typedef struct GemmOperands {
    int gemm, a, b, weight;
} GemmOperands;

static const GemmOperands gemm_operands[OP_COUNT] = {
    [OP_LINEAR] = {1, 0, 1, 1},
    [OP_LINEAR_WGRAD] = {1, 0, 1, -1},
    [OP_GROUPED_LINEAR] = {1, 0, 2, 2},
    [OP_GROUPED_LINEAR_WGRAD] = {1, 0, 2, -1},
};

static const char router_weight[] = "mlp.gate.weight";

typedef struct Bf16Rebuild {
    GraphRebuild r;
    ValueId *as_bf16; /* per old value: its bf16 copy in the new graph once a GEMM made it, else -1 */
} Bf16Rebuild;

static int is_gemm(OpKind op) { return (unsigned)op < OP_COUNT && gemm_operands[op].gemm; }

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
    int w = gemm_operands[n->op].weight;
    if (w < 0) return writes_router_grad(g, n->out[0]);
    const Node *p = weight_param(g, n->in[w]);
    return p && str_ends_with(node_str(p, "name", ""), router_weight);
}

static int goes_bf16(const Graph *g, const Node *n) {
    if (!is_gemm(n->op)) return 0;
    const GemmOperands *o = &gemm_operands[n->op];
    ValueId a = n->in[o->a], b = n->in[o->b];
    if (ir_type(g, a)->dtype != DT_F32 || ir_type(g, b)->dtype != DT_F32) return 0;
    if (producer(g, a)->op == OP_DEQUANTIZE || producer(g, b)->op == OP_DEQUANTIZE) return 0;
    return !is_router_gemm(g, n);
}

static ValueId emit_cast(Graph *g, ValueId v, DType to, Err *err) {
    Attr a = attr_dtype("to", to);
    ValueId out;
    return ir_emit(g, OP_CAST, &v, 1, &a, 1, &out, err) < 0 ? -1 : out;
}

/* One bf16 copy per old value, made where the first GEMM reading it stands. */
static ValueId bf16_copy(Bf16Rebuild *b, ValueId old, Err *err) {
    if (b->as_bf16[old] < 0) b->as_bf16[old] = emit_cast(b->r.g, b->r.map[old], DT_BF16, err);
    return b->as_bf16[old];
}

static int rewrite_gemm(Bf16Rebuild *b, const Node *n, Err *err) {
    const GemmOperands *o = &gemm_operands[n->op];
    ValueId in[3], y;
    for (int i = 0; i < n->nin; i++) in[i] = b->r.map[n->in[i]];
    if ((in[o->a] = bf16_copy(b, n->in[o->a], err)) < 0 || (in[o->b] = bf16_copy(b, n->in[o->b], err)) < 0) return -1;
    if (ir_emit(b->r.g, n->op, in, n->nin, n->attrs, n->nattrs, &y, err) < 0) return -1;
    return (b->r.map[n->out[0]] = emit_cast(b->r.g, y, DT_F32, err)) < 0 ? -1 : 0;
}

static int rebuild_all(Bf16Rebuild *b, Graph *g, Err *err) {
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        if (n->dead) continue;
        rebuild_enter(&b->r, n);
        int rc = goes_bf16(g, n) ? rewrite_gemm(b, n, err) : rebuild_copy_node(&b->r, n, "bf16", err);
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
