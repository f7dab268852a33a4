/* expert_parallel: see expert_parallel.h. The graph is rebuilt node by node
 * into a fresh one (as the fp8 pass does), so the exchanges land where the old
 * nodes stood and the order stays topological; dce then drops the weights of
 * other ranks' experts. */
#include "expert_parallel.h"

#include <stdlib.h>

#include "passes.h"
#include "rebuild.h"

/* dce's entry point (passes/dce.c); it ignores its context. */
int pass_dce(Graph *g, PassContext *ctx, Err *err);

typedef struct EpLayer {
    ValueId counts;  /* new: this rank's rows per global expert (moe_dispatch's) */
    ValueId lcounts; /* new: rows per local expert, padding in the last */
    ValueId plan;    /* new: rows from each rank per local expert */
    Dim rows;        /* moe_dispatch's row count: N*K */
} EpLayer;

typedef struct Rewrite {
    GraphRebuild b;
    const EpOptions *opt;
    int32_t *origin; /* old value -> the EpLayer whose expert rows it holds, -1 for none */
    VEC(EpLayer) layers;
} Rewrite;

int ep_capacity(Dim tokens, int64_t k, int64_t local_experts, int ranks, Dim *out, Err *err) {
    int64_t per_token = k < local_experts ? k : local_experts, factor;
    if (mul_overflows_i64(per_token, ranks, &factor)) return err_set(err, "expert_parallel: capacity overflows");
    return dim_mul(tokens, dim_const(factor), out, err);
}

static const Node *producer(const Graph *g, ValueId v) { return &g->nodes.data[g->values.data[v].node]; }

static int emit_dispatch(Rewrite *r, const Node *n, int64_t local, ValueId xd[2], ValueId out[3], Err *err) {
    const Type *idx = ir_type(r->b.old, n->in[1]);
    Dim tokens = dim_const(1), capacity;
    if (idx->rank < 1 || !dim_is_const(idx->dims[idx->rank - 1]))
        return err_set(err, "expert_parallel: moe_dispatch in %s needs indices [..., K] with a constant K", n->scope);
    for (int i = 0; i < idx->rank - 1; i++)
        if (dim_mul(tokens, idx->dims[i], &tokens, err)) return -1;
    if (r->opt->rows_per_token > 0 ? dim_mul(tokens, dim_const(r->opt->rows_per_token), &capacity, err)
                                   : ep_capacity(tokens, dim_const_value(idx->dims[idx->rank - 1]), local,
                                                 r->opt->ranks, &capacity, err))
        return -1;
    Attr a[3] = {attr_dims("capacity", 1, &capacity), attr_int("ranks", r->opt->ranks), attr_int("fp8", 1)};
    return ir_emit(r->b.g, OP_EP_DISPATCH, xd, 2, a, r->opt->fp8_dispatch ? 3 : 2, out, err) < 0 ? -1 : 0;
}

/* moe_dispatch, then ep_dispatch of its rows to the experts' ranks. */
static int rewrite_dispatch(Rewrite *r, const Node *n, Err *err) {
    int64_t experts = node_int(n, "experts", 0);
    if (experts % r->opt->ranks)
        return err_set(err, "expert_parallel: %lld experts do not split evenly over %d ranks", (long long)experts,
                       r->opt->ranks);
    ValueId in[2] = {r->b.map[n->in[0]], r->b.map[n->in[1]]}, xd[2], ep[3];
    if (ir_emit(r->b.g, OP_MOE_DISPATCH, in, 2, n->attrs, n->nattrs, xd, err) < 0 ||
        emit_dispatch(r, n, experts / r->opt->ranks, xd, ep, err))
        return -1;
    EpLayer layer = {xd[1], ep[1], ep[2], ir_type(r->b.old, n->out[0])->dims[0]};
    r->origin[n->out[0]] = (int32_t)r->layers.len;
    VEC_PUSH(r->layers, layer);
    r->b.map[n->out[0]] = ep[0];
    r->b.map[n->out[1]] = xd[1];
    return 0;
}

/* This rank's slice of a stack of per-expert weights. */
static ValueId local_experts(Rewrite *r, const Node *n, ValueId old_w, Err *err) {
    const Node *stack = producer(r->b.old, old_w);
    int64_t experts = dim_const_value(ir_type(r->b.old, n->in[1])->dims[0]);
    if (stack->op != OP_STACK || stack->nin != experts) {
        err_set(err,
                "expert_parallel: grouped_linear in %s: the expert weights must be a stack of %lld per-expert "
                "weights",
                n->scope, (long long)experts);
        return -1;
    }
    int64_t local = experts / r->opt->ranks, first = r->opt->rank * local;
    ValueId *in = xmalloc(sizeof(ValueId) * (size_t)local), out;
    for (int64_t j = 0; j < local; j++) in[j] = r->b.map[stack->in[first + j]];
    int rc = ir_emit(r->b.g, OP_STACK, in, (int)local, NULL, 0, &out, err);
    free(in);
    return rc < 0 ? -1 : out;
}

static int rewrite_grouped(Rewrite *r, const Node *n, int32_t layer, Err *err) {
    ValueId in[3] = {r->b.map[n->in[0]], r->layers.data[layer].lcounts, local_experts(r, n, n->in[2], err)};
    if (in[2] < 0 || ir_emit(r->b.g, OP_GROUPED_LINEAR, in, 3, NULL, 0, &r->b.map[n->out[0]], err) < 0) return -1;
    r->origin[n->out[0]] = layer;
    return 0;
}

/* ep_combine brings the expert rows home, then moe_combine as before. */
static int rewrite_combine(Rewrite *r, const Node *n, int32_t layer, Err *err) {
    EpLayer *l = &r->layers.data[layer];
    Attr a[2] = {attr_int("ranks", r->opt->ranks), attr_dims("rows", 1, &l->rows)};
    ValueId in[3] = {r->b.map[n->in[0]], l->plan, l->counts}, yd;
    if (ir_emit(r->b.g, OP_EP_COMBINE, in, 3, a, 2, &yd, err) < 0) return -1;
    ValueId cin[3] = {yd, r->b.map[n->in[1]], r->b.map[n->in[2]]};
    return ir_emit(r->b.g, OP_MOE_COMBINE, cin, 3, n->attrs, n->nattrs, &r->b.map[n->out[0]], err) < 0 ? -1 : 0;
}

/* Ops that may run on expert rows: row-wise, and zero on the zero padding rows
 * (so the padding adds nothing to the last local expert's weight gradient). */
static const OpKind zero_preserving[] = {OP_NEG, OP_ABS, OP_SILU, OP_CAST, OP_ADD, OP_SUB, OP_MUL};

static int is_zero_preserving(OpKind op) {
    for (size_t i = 0; i < sizeof zero_preserving / sizeof zero_preserving[0]; i++)
        if (zero_preserving[i] == op) return 1;
    return 0;
}

/* An elementwise op on expert rows (unary or binary): every input must be rows of the same layer. */
static int rewrite_rowwise(Rewrite *r, const Node *n, int32_t layer, Err *err) {
    ValueId in[2];
    for (int i = 0; i < n->nin; i++) {
        if (r->origin[n->in[i]] != layer)
            return err_set(err, "expert_parallel: %s in %s mixes expert rows with other values", op_info(n->op)->name,
                           n->scope);
        in[i] = r->b.map[n->in[i]];
    }
    if (ir_emit(r->b.g, n->op, in, n->nin, n->attrs, n->nattrs, &r->b.map[n->out[0]], err) < 0) return -1;
    r->origin[n->out[0]] = layer;
    return 0;
}

static int32_t expert_side_input(const Rewrite *r, const Node *n) {
    for (int i = 0; i < n->nin; i++)
        if (r->origin[n->in[i]] >= 0) return r->origin[n->in[i]];
    return -1;
}

static int rewrite_expert_reader(Rewrite *r, const Node *n, int32_t layer, Err *err) {
    if (n->op == OP_GROUPED_LINEAR && r->origin[n->in[0]] == layer) return rewrite_grouped(r, n, layer, err);
    if (n->op == OP_MOE_COMBINE && r->origin[n->in[0]] == layer) return rewrite_combine(r, n, layer, err);
    if (is_zero_preserving(n->op)) return rewrite_rowwise(r, n, layer, err);
    return err_set(err,
                   "expert_parallel: %s in %s reads expert rows, which live on other ranks; only grouped_linear, "
                   "moe_combine and zero-preserving elementwise ops may",
                   op_info(n->op)->name, n->scope);
}

static int rebuild_node(Rewrite *r, const Node *n, Err *err) {
    rebuild_enter(&r->b, n);
    if (n->op == OP_MOE_DISPATCH) return rewrite_dispatch(r, n, err);
    int32_t layer = expert_side_input(r, n);
    return layer >= 0 ? rewrite_expert_reader(r, n, layer, err) : rebuild_copy_node(&r->b, n, "expert_parallel", err);
}

/* An output of expert rows would be a value only the whole EP group holds. */
static int check_outputs(const Rewrite *r, Err *err) {
    const Graph *g = r->b.old;
    for (size_t i = 0; i < g->outputs.len; i++)
        if (r->origin[g->outputs.data[i].value] >= 0)
            return err_set(err, "expert_parallel: output %s holds expert rows, which live on other ranks",
                           g->outputs.data[i].name);
    return 0;
}

static int rebuild(Rewrite *r, Graph *g, Err *err) {
    int rc = 0;
    for (size_t i = 0; i < g->nodes.len && !rc; i++)
        if (!g->nodes.data[i].dead) rc = rebuild_node(r, &g->nodes.data[i], err);
    return rc || check_outputs(r, err) || rebuild_finish(&r->b, g, err) ? -1 : 0;
}

int expert_parallel_graph(Graph *g, const EpOptions *opt, Err *err) {
    if (opt->ranks < 1 || opt->rank < 0 || opt->rank >= opt->ranks)
        return err_set(err, "expert_parallel: rank %d is not in an EP group of %d", opt->rank, opt->ranks);
    if (opt->rows_per_token < 0)
        return err_set(err, "expert_parallel: rows_per_token=%d must be >= 0", opt->rows_per_token);
    if (opt->ranks == 1) return 0; /* nothing to exchange; --fp8's dispatch round trip is the fp8 pass's */
    size_t nv = g->values.len ? g->values.len : 1;
    Rewrite r = {.opt = opt, .origin = xmalloc(sizeof(int32_t) * nv)};
    rebuild_begin(&r.b, g);
    for (size_t v = 0; v < nv; v++) r.origin[v] = -1;
    int rc = rebuild(&r, g, err);
    if (!rc) rc = pass_dce(g, NULL, err);
    rebuild_end(&r.b);
    free(r.origin);
    VEC_FREE(r.layers);
    return rc;
}

/* The registered pass shows what rank 0 of 2 runs (for `v3c dump --passes
 * expert_parallel`); training calls expert_parallel_graph with its layout. */
int pass_expert_parallel(Graph *g, PassContext *ctx, Err *err) {
    (void)ctx;
    EpOptions opt = {.ranks = 2, .rank = 0};
    return expert_parallel_graph(g, &opt, err);
}
