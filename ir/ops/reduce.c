/* Reductions: sum, mean, max over one axis; mean_all; softmax. fp64 accumulation. */
#include "ops_internal.h"

/* A tensor seen as [outer, len, inner] around one axis. */
typedef struct AxisView {
    int64_t outer, len, inner;
} AxisView;

static AxisView axis_view(const Tensor *t, int axis) {
    return (AxisView){shape_product(t, 0, axis), t->shape[axis], shape_product(t, axis + 1, t->rank)};
}

static int axis_of(const Node *n, int rank, int64_t dflt, int *axis, Err *err) {
    return norm_axis(n, node_int(n, "axis", dflt), rank, axis, err);
}

int reduce_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    int axis;
    if (require_real(n, "input", &in[0], err) || axis_of(n, in[0].rank, 0, &axis, err)) return -1;
    *out = in[0];
    if (node_int(n, "keepdim", 0)) {
        out->dims[axis] = dim_const(1);
        return 0;
    }
    out->rank--;
    for (int i = axis; i < out->rank; i++) out->dims[i] = in[0].dims[i + 1];
    return 0;
}

static double reduce_line(OpKind op, const real *x, int64_t len, int64_t stride) {
    if (op == OP_MAX) {
        double m = -INFINITY;
        for (int64_t i = 0; i < len; i++) {
            if (isnan(x[i * stride])) return NAN;
            if (x[i * stride] > m) m = x[i * stride];
        }
        return m;
    }
    double s = 0;
    for (int64_t i = 0; i < len; i++) s += x[i * stride];
    return op == OP_MEAN ? s / (double)len : s;
}

int reduce_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin;
    int axis;
    if (axis_of(n, in[0]->rank, 0, &axis, err)) return -1;
    AxisView v = axis_view(in[0], axis);
    if (v.len == 0 && n->op != OP_SUM)
        return err_set(err, "%s: axis %d has size 0", node_op_name(n), axis);
    const real *x = tensor_real(in[0]);
    real *y = tensor_real(out[0]);
    for (int64_t o = 0; o < v.outer; o++)
        for (int64_t i = 0; i < v.inner; i++)
            y[o * v.inner + i] = (real)reduce_line(n->op, x + o * v.len * v.inner + i, v.len, v.inner);
    tensor_round(out[0]);
    return 0;
}

int mean_all_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    if (require_real(n, "input", &in[0], err)) return -1;
    *out = (Type){.dtype = DT_F32, .rank = 0};
    return 0;
}

int mean_all_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin;
    if (in[0]->numel == 0) return err_set(err, "%s: input has no elements", node_op_name(n));
    tensor_real(out[0])[0] = (real)reduce_line(OP_MEAN, tensor_real(in[0]), in[0]->numel, 1);
    return 0;
}

int softmax_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    int axis;
    if (require_real(n, "input", &in[0], err) || axis_of(n, in[0].rank, -1, &axis, err)) return -1;
    *out = in[0];
    return 0;
}

static void softmax_line(const real *x, real *y, int64_t len, int64_t stride) {
    double m = -INFINITY, s = 0;
    for (int64_t i = 0; i < len; i++) m = x[i * stride] > m ? x[i * stride] : m;
    for (int64_t i = 0; i < len; i++) s += exp((double)x[i * stride] - m);
    for (int64_t i = 0; i < len; i++) y[i * stride] = (real)(exp((double)x[i * stride] - m) / s);
}

int softmax_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin;
    int axis;
    if (axis_of(n, in[0]->rank, -1, &axis, err)) return -1;
    AxisView v = axis_view(in[0], axis);
    for (int64_t o = 0; o < v.outer; o++)
        for (int64_t i = 0; i < v.inner; i++) {
            int64_t base = o * v.len * v.inner + i;
            softmax_line(tensor_real(in[0]) + base, tensor_real(out[0]) + base, v.len, v.inner);
        }
    tensor_round(out[0]);
    return 0;
}
