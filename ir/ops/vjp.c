/* The VJP rule of every differentiable forward op (see ir/vjp.h) and the
 * helpers they emit nodes with. Each rule writes gin[i] for the inputs it can
 * differentiate and the driver wants; the others stay -1. Formulas: docs/ops.md,
 * "Backward ops". */
#include "../vjp.h"
#include "ops_internal.h"

int vjp_wanted(const VjpCtx *c, const Node *n, int i) { return c->wanted[n->in[i]]; }

ValueId vjp_op(VjpCtx *c, OpKind op, const ValueId *in, int nin, const Attr *attrs, int nattrs, Err *err) {
    ValueId out[4] = {-1, -1, -1, -1};
    if (ir_emit(c->g, op, in, nin, attrs, nattrs, out, err) < 0) return -1;
    return out[0];
}

ValueId vjp_unary(VjpCtx *c, OpKind op, ValueId x, Err *err) {
    if (x < 0) return -1;
    return vjp_op(c, op, &x, 1, NULL, 0, err);
}

ValueId vjp_binary(VjpCtx *c, OpKind op, ValueId a, ValueId b, Err *err) {
    if (a < 0 || b < 0) return -1;
    ValueId in[2] = {a, b};
    return vjp_op(c, op, in, 2, NULL, 0, err);
}

ValueId vjp_const(VjpCtx *c, double v, Err *err) {
    Attr a = attr_float("value", v);
    return vjp_op(c, OP_CONST, NULL, 0, &a, 1, err);
}

static Attr shape_attr(const Type *t) { return attr_dims("shape", t->rank, (Dim *)t->dims); }

ValueId vjp_sum_to(VjpCtx *c, ValueId g, ValueId like, Err *err) {
    if (g < 0) return -1;
    const Type *want = ir_type(c->g, like);
    if (type_equal(ir_type(c->g, g), want)) return g;
    Type t = *want;
    Attr a = shape_attr(&t);
    return vjp_op(c, OP_SUM_TO, &g, 1, &a, 1, err);
}

ValueId vjp_expand_like(VjpCtx *c, ValueId x, ValueId like, Err *err) {
    if (x < 0) return -1;
    Type t = *ir_type(c->g, like);
    Attr a = shape_attr(&t);
    return vjp_op(c, OP_EXPAND, &x, 1, &a, 1, err);
}

ValueId vjp_reshape_to(VjpCtx *c, ValueId x, const Type *to, Err *err) {
    if (x < 0) return -1;
    Type t = *to;
    Attr a = shape_attr(&t);
    return vjp_op(c, OP_RESHAPE, &x, 1, &a, 1, err);
}

/* g * f where f is an expression already emitted; -1 propagates. */
static ValueId times(VjpCtx *c, ValueId g, ValueId f, Err *err) { return vjp_binary(c, OP_MUL, g, f, err); }

static ValueId scalar_op(VjpCtx *c, OpKind op, double k, ValueId x, Err *err) {
    ValueId s = vjp_const(c, k, err);
    return s < 0 ? -1 : vjp_binary(c, op, s, x, err);
}

/* Turns "-1 with no error" (a skipped input) and real failures apart: every
 * rule returns err->msg set on failure, so the driver checks the return code. */
#define FAIL_IF_NEG(v) \
    if ((v) < 0) return -1

/* ---- elementwise unary ---- */
int vjp_neg(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    (void)n;
    FAIL_IF_NEG(gin[0] = vjp_unary(c, OP_NEG, gout[0], err));
    return 0;
}

int vjp_exp(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    FAIL_IF_NEG(gin[0] = times(c, gout[0], n->out[0], err));
    return 0;
}

int vjp_log(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    FAIL_IF_NEG(gin[0] = vjp_binary(c, OP_DIV, gout[0], n->in[0], err));
    return 0;
}

/* d sqrt(x) = 1 / (2 sqrt(x)) */
int vjp_sqrt(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    ValueId half = times(c, gout[0], vjp_const(c, 0.5, err), err);
    FAIL_IF_NEG(gin[0] = vjp_binary(c, OP_DIV, half, n->out[0], err));
    return 0;
}

/* d x^-1/2 = -1/2 x^-3/2 = -1/2 * y / x */
int vjp_rsqrt(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    ValueId slope = scalar_op(c, OP_MUL, -0.5, vjp_binary(c, OP_DIV, n->out[0], n->in[0], err), err);
    FAIL_IF_NEG(gin[0] = times(c, gout[0], slope, err));
    return 0;
}

/* d 1/x = -y^2 */
int vjp_recip(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    ValueId y2 = vjp_binary(c, OP_MUL, n->out[0], n->out[0], err);
    FAIL_IF_NEG(gin[0] = vjp_unary(c, OP_NEG, times(c, gout[0], y2, err), err));
    return 0;
}

/* sign(x), 0 at 0: where picks the 0 branch before x/|x| could be 0/0. */
int vjp_abs(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    ValueId x = n->in[0];
    ValueId in[3] = {x, vjp_binary(c, OP_DIV, x, n->out[0], err), vjp_const(c, 0.0, err)};
    FAIL_IF_NEG(in[1]);
    FAIL_IF_NEG(in[2]);
    FAIL_IF_NEG(gin[0] = times(c, gout[0], vjp_op(c, OP_WHERE, in, 3, NULL, 0, err), err));
    return 0;
}

/* d sigmoid = y (1 - y) */
int vjp_sigmoid(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    ValueId y = n->out[0];
    ValueId slope = times(c, y, scalar_op(c, OP_SUB, 1.0, y, err), err);
    FAIL_IF_NEG(gin[0] = times(c, gout[0], slope, err));
    return 0;
}

/* d x s(x) = s (1 + x (1 - s)) */
int vjp_silu(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    ValueId x = n->in[0], s = vjp_unary(c, OP_SIGMOID, x, err);
    ValueId inner = scalar_op(c, OP_ADD, 1.0, times(c, x, scalar_op(c, OP_SUB, 1.0, s, err), err), err);
    FAIL_IF_NEG(gin[0] = times(c, gout[0], times(c, s, inner, err), err));
    return 0;
}

int vjp_cast(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    DType from = ir_type(c->g, n->in[0])->dtype;
    if (!dtype_is_real(from) || !dtype_is_real(ir_type(c->g, n->out[0])->dtype)) return 0;
    Attr a = attr_dtype("to", from);
    FAIL_IF_NEG(gin[0] = vjp_op(c, OP_CAST, &gout[0], 1, &a, 1, err));
    return 0;
}

/* ---- elementwise binary: results summed back over broadcast axes ---- */
static int set_binary(VjpCtx *c, const Node *n, ValueId ga, ValueId gb, ValueId *gin, Err *err) {
    if (vjp_wanted(c, n, 0)) FAIL_IF_NEG(gin[0] = vjp_sum_to(c, ga, n->in[0], err));
    if (vjp_wanted(c, n, 1)) FAIL_IF_NEG(gin[1] = vjp_sum_to(c, gb, n->in[1], err));
    return 0;
}

int vjp_add(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    return set_binary(c, n, gout[0], gout[0], gin, err);
}

int vjp_sub(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    ValueId gb = vjp_wanted(c, n, 1) ? vjp_unary(c, OP_NEG, gout[0], err) : -1;
    if (vjp_wanted(c, n, 1)) FAIL_IF_NEG(gb);
    return set_binary(c, n, gout[0], gb, gin, err);
}

int vjp_mul(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    ValueId ga = -1, gb = -1;
    if (vjp_wanted(c, n, 0)) FAIL_IF_NEG(ga = times(c, gout[0], n->in[1], err));
    if (vjp_wanted(c, n, 1)) FAIL_IF_NEG(gb = times(c, gout[0], n->in[0], err));
    return set_binary(c, n, ga, gb, gin, err);
}

/* y = a / b: da = g / b, db = -g y / b */
int vjp_div(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    ValueId ga = -1, gb = -1;
    if (vjp_wanted(c, n, 0)) FAIL_IF_NEG(ga = vjp_binary(c, OP_DIV, gout[0], n->in[1], err));
    if (vjp_wanted(c, n, 1))
        FAIL_IF_NEG(gb = vjp_unary(c, OP_NEG,
                                   vjp_binary(c, OP_DIV, times(c, gout[0], n->out[0], err), n->in[1], err), err));
    return set_binary(c, n, ga, gb, gin, err);
}

/* maximum/minimum: the gradient goes to a where y == a (ties: to a), else to b. */
int vjp_select_ab(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    ValueId not_a = vjp_binary(c, OP_SUB, n->out[0], n->in[0], err), zero = vjp_const(c, 0.0, err);
    FAIL_IF_NEG(not_a);
    FAIL_IF_NEG(zero);
    ValueId in_a[3] = {not_a, zero, gout[0]}, in_b[3] = {not_a, gout[0], zero};
    ValueId ga = -1, gb = -1;
    if (vjp_wanted(c, n, 0)) FAIL_IF_NEG(ga = vjp_op(c, OP_WHERE, in_a, 3, NULL, 0, err));
    if (vjp_wanted(c, n, 1)) FAIL_IF_NEG(gb = vjp_op(c, OP_WHERE, in_b, 3, NULL, 0, err));
    return set_binary(c, n, ga, gb, gin, err);
}

int vjp_where(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    ValueId zero = vjp_const(c, 0.0, err);
    FAIL_IF_NEG(zero);
    ValueId in_a[3] = {n->in[0], gout[0], zero}, in_b[3] = {n->in[0], zero, gout[0]};
    if (vjp_wanted(c, n, 1))
        FAIL_IF_NEG(gin[1] = vjp_sum_to(c, vjp_op(c, OP_WHERE, in_a, 3, NULL, 0, err), n->in[1], err));
    if (vjp_wanted(c, n, 2))
        FAIL_IF_NEG(gin[2] = vjp_sum_to(c, vjp_op(c, OP_WHERE, in_b, 3, NULL, 0, err), n->in[2], err));
    return 0;
}

/* ---- reductions ---- */
static int reduced_axis(const VjpCtx *c, const Node *n, int64_t dflt, int *axis, Err *err) {
    return norm_axis(n, node_int(n, "axis", dflt), ir_type(c->g, n->in[0])->rank, axis, err);
}

/* g (or y) with the reduced axis back as size 1, ready to broadcast against x. */
static ValueId with_axis_kept(VjpCtx *c, const Node *n, ValueId v, int axis, Err *err) {
    if (v < 0 || node_int(n, "keepdim", 0)) return v;
    Type t = *ir_type(c->g, n->in[0]);
    t.dims[axis] = dim_const(1);
    t.dtype = ir_type(c->g, v)->dtype;
    return vjp_reshape_to(c, v, &t, err);
}

static ValueId spread(VjpCtx *c, const Node *n, ValueId v, int axis, Err *err) {
    return vjp_expand_like(c, with_axis_kept(c, n, v, axis, err), n->in[0], err);
}

int vjp_sum(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    int axis;
    if (reduced_axis(c, n, 0, &axis, err)) return -1;
    FAIL_IF_NEG(gin[0] = spread(c, n, gout[0], axis, err));
    return 0;
}

/* The axis length as a value: a constant when it is one, else counted by
 * summing ones (B and T are only known at run time). */
static ValueId axis_length(VjpCtx *c, const Node *n, int axis, Err *err) {
    Dim len = ir_type(c->g, n->in[0])->dims[axis];
    if (dim_is_const(len)) return vjp_const(c, (double)dim_const_value(len), err);
    ValueId ones = vjp_expand_like(c, vjp_const(c, 1.0, err), n->in[0], err);
    FAIL_IF_NEG(ones);
    Attr a[2] = {attr_int("axis", axis), attr_int("keepdim", 1)};
    return vjp_op(c, OP_SUM, &ones, 1, a, 2, err);
}

int vjp_mean(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    int axis;
    if (reduced_axis(c, n, 0, &axis, err)) return -1;
    ValueId len = axis_length(c, n, axis, err);
    FAIL_IF_NEG(len);
    FAIL_IF_NEG(gin[0] = vjp_binary(c, OP_DIV, spread(c, n, gout[0], axis, err), len, err));
    return 0;
}

/* Every element equal to the maximum receives the full gradient. */
int vjp_max(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    int axis;
    if (reduced_axis(c, n, 0, &axis, err)) return -1;
    ValueId below = vjp_binary(c, OP_SUB, n->in[0], spread(c, n, n->out[0], axis, err), err);
    ValueId in[3] = {below, vjp_const(c, 0.0, err), spread(c, n, gout[0], axis, err)};
    FAIL_IF_NEG(in[0]);
    FAIL_IF_NEG(in[1]);
    FAIL_IF_NEG(in[2]);
    FAIL_IF_NEG(gin[0] = vjp_op(c, OP_WHERE, in, 3, NULL, 0, err));
    return 0;
}

int vjp_mean_all(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    FAIL_IF_NEG(gin[0] = vjp_binary(c, OP_MEAN_ALL_GRAD, gout[0], n->in[0], err));
    return 0;
}

/* dx = y (g - sum(g y)) along the axis */
int vjp_softmax(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    int axis;
    if (reduced_axis(c, n, -1, &axis, err)) return -1;
    ValueId gy = times(c, gout[0], n->out[0], err);
    FAIL_IF_NEG(gy);
    Attr a[2] = {attr_int("axis", axis), attr_int("keepdim", 1)};
    ValueId dot = vjp_op(c, OP_SUM, &gy, 1, a, 2, err);
    FAIL_IF_NEG(gin[0] = times(c, n->out[0], vjp_binary(c, OP_SUB, gout[0], dot, err), err));
    return 0;
}

/* ---- linear algebra ---- */
int vjp_linear(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    if (vjp_wanted(c, n, 0))
        FAIL_IF_NEG(gin[0] = vjp_binary(c, OP_LINEAR, gout[0], vjp_unary(c, OP_TRANSPOSE, n->in[1], err), err));
    if (vjp_wanted(c, n, 1)) FAIL_IF_NEG(gin[1] = vjp_binary(c, OP_LINEAR_WGRAD, gout[0], n->in[0], err));
    return 0;
}

int vjp_embedding(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    Dim rows = ir_type(c->g, n->in[0])->dims[0];
    Attr a = attr_dims("rows", 1, &rows);
    ValueId in[2] = {gout[0], n->in[1]};
    FAIL_IF_NEG(gin[0] = vjp_op(c, OP_EMBEDDING_GRAD, in, 2, &a, 1, err));
    return 0;
}

/* ---- layout ---- */
int vjp_reshape(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    FAIL_IF_NEG(gin[0] = vjp_reshape_to(c, gout[0], ir_type(c->g, n->in[0]), err));
    return 0;
}

/* The slice's own attributes tell pad where the piece sits. */
int vjp_slice(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    int axis;
    if (reduced_axis(c, n, 0, &axis, err)) return -1;
    Dim size = ir_type(c->g, n->in[0])->dims[axis];
    Attr a[4] = {*node_attr(n, "axis"), *node_attr(n, "start"), *node_attr(n, "end"), attr_dims("size", 1, &size)};
    FAIL_IF_NEG(gin[0] = vjp_op(c, OP_PAD, &gout[0], 1, a, 4, err));
    return 0;
}

static ValueId slice_of(VjpCtx *c, ValueId g, int axis, Dim start, Dim end, Err *err) {
    Attr a[3] = {attr_int("axis", axis), attr_dims("start", 1, &start), attr_dims("end", 1, &end)};
    return vjp_op(c, OP_SLICE, &g, 1, a, 3, err);
}

int vjp_concat(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    int axis;
    if (reduced_axis(c, n, 0, &axis, err)) return -1;
    Dim at = dim_const(0);
    for (int i = 0; i < n->nin; i++) {
        Dim end;
        if (dim_add(at, ir_type(c->g, n->in[i])->dims[axis], &end, err)) return -1;
        if (vjp_wanted(c, n, i)) FAIL_IF_NEG(gin[i] = slice_of(c, gout[0], axis, at, end, err));
        at = end;
    }
    return 0;
}

int vjp_expand(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    FAIL_IF_NEG(gin[0] = vjp_sum_to(c, gout[0], n->in[0], err));
    return 0;
}

int vjp_stack(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    for (int i = 0; i < n->nin; i++) {
        if (!vjp_wanted(c, n, i)) continue;
        ValueId piece = slice_of(c, gout[0], 0, dim_const(i), dim_const(i + 1), err);
        FAIL_IF_NEG(gin[i] = vjp_reshape_to(c, piece, ir_type(c->g, n->in[i]), err));
    }
    return 0;
}

/* ---- routing ---- */
/* g[..., K] added into a zero [..., E] at the given last-axis indices. */
static ValueId scatter_to(VjpCtx *c, ValueId g, ValueId idx, ValueId like, Err *err) {
    const Type *t = ir_type(c->g, like);
    Dim size = t->dims[t->rank - 1];
    Attr a = attr_dims("size", 1, &size);
    ValueId in[2] = {g, idx};
    return vjp_op(c, OP_SCATTER_ADD, in, 2, &a, 1, err);
}

int vjp_topk(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    if (gout[0] < 0) return 0;
    FAIL_IF_NEG(gin[0] = scatter_to(c, gout[0], n->out[1], n->in[0], err));
    return 0;
}

int vjp_gather(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    if (!dtype_is_real(ir_type(c->g, n->in[0])->dtype)) return 0;
    FAIL_IF_NEG(gin[0] = scatter_to(c, gout[0], n->in[1], n->in[0], err));
    return 0;
}

/* Each token's copies come back summed: a combine with weights 1. */
int vjp_moe_dispatch(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    if (gout[0] < 0) return 0;
    ValueId ones = vjp_expand_like(c, vjp_const(c, 1.0, err), n->in[1], err);
    FAIL_IF_NEG(ones);
    ValueId in[3] = {gout[0], n->in[1], ones};
    FAIL_IF_NEG(gin[0] = vjp_op(c, OP_MOE_COMBINE, in, 3, NULL, 0, err));
    return 0;
}

int vjp_grouped_linear(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    if (vjp_wanted(c, n, 0)) {
        ValueId in[3] = {gout[0], n->in[1], vjp_unary(c, OP_TRANSPOSE, n->in[2], err)};
        FAIL_IF_NEG(in[2]);
        FAIL_IF_NEG(gin[0] = vjp_op(c, OP_GROUPED_LINEAR, in, 3, NULL, 0, err));
    }
    if (vjp_wanted(c, n, 2)) {
        ValueId in[3] = {gout[0], n->in[1], n->in[0]};
        FAIL_IF_NEG(gin[2] = vjp_op(c, OP_GROUPED_LINEAR_WGRAD, in, 3, NULL, 0, err));
    }
    return 0;
}

int vjp_moe_combine(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    ValueId in[4] = {gout[0], n->in[0], n->in[1], n->in[2]}, out[2];
    if (ir_emit(c->g, OP_MOE_COMBINE_GRAD, in, 4, NULL, 0, out, err) < 0) return -1;
    if (vjp_wanted(c, n, 0)) gin[0] = out[0];
    if (vjp_wanted(c, n, 2)) gin[2] = out[1];
    return 0;
}

/* ---- attention and losses ---- */
/* rope is a scaled rotation s R(p f); its transpose is s R(-p f). */
int vjp_rope(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    ValueId in[2] = {gout[0], vjp_unary(c, OP_NEG, n->in[1], err)};
    FAIL_IF_NEG(in[1]);
    FAIL_IF_NEG(gin[0] = vjp_op(c, OP_ROPE, in, 2, n->attrs, n->nattrs, err));
    return 0;
}

int vjp_sdpa(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    ValueId in[4] = {gout[0], n->in[0], n->in[1], n->in[2]}, out[3];
    if (ir_emit(c->g, OP_SDPA_GRAD, in, 4, n->attrs, n->nattrs, out, err) < 0) return -1;
    for (int i = 0; i < 3; i++)
        if (vjp_wanted(c, n, i)) gin[i] = out[i];
    return 0;
}

int vjp_cross_entropy(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    ValueId in[3] = {gout[0], n->in[0], n->in[1]};
    FAIL_IF_NEG(gin[0] = vjp_op(c, OP_CROSS_ENTROPY_GRAD, in, 3, NULL, 0, err));
    return 0;
}
