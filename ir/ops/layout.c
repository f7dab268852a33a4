/* Layout ops: reshape, slice, concat, expand, stack. They move bytes of any dtype. */
#include <stdio.h>

#include "ops_internal.h"

static int dim_is_negative(Dim d) { return dim_is_const(d) && dim_const_value(d) < 0; }

static int shape_from_attr(const Node *n, DType dt, Type *out, Err *err) {
    const Attr *a = node_attr(n, "shape");
    if (a->ndims > IR_MAX_RANK) return err_set(err, "%s: shape has %d dims (max %d)", node_op_name(n), a->ndims, IR_MAX_RANK);
    out->dtype = dt;
    out->rank = a->ndims;
    for (int i = 0; i < a->ndims; i++) {
        if (dim_is_negative(a->dims[i])) return err_set(err, "%s: shape dim %d is negative", node_op_name(n), i);
        out->dims[i] = a->dims[i];
    }
    return 0;
}

static void copy_all(const Tensor *x, Tensor *y) {
    memcpy(y->data, x->data, (size_t)y->numel * dtype_host_size(y->dtype));
}

/* ---- reshape ---- */
int reshape_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    Dim have, want;
    if (shape_from_attr(n, in[0].dtype, out, err) || dims_product(in[0].dims, 0, in[0].rank, &have, err) ||
        dims_product(out->dims, 0, out->rank, &want, err))
        return -1;
    if (!dim_equal(have, want)) {
        char h[128], w[128];
        dim_print(have, h, sizeof h);
        dim_print(want, w, sizeof w);
        return err_set(err, "reshape: %s has %s elements but shape %s has %s", TY(&in[0]), h, TY(out), w);
    }
    return 0;
}

int reshape_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin, (void)n, (void)err;
    copy_all(in[0], out[0]);
    return 0;
}

/* ---- slice ----
 * The kernel sees only concrete sizes, so it recovers start from whichever of
 * start or end is a constant, or else from end being the whole axis; the shape
 * rule insists one of these holds. */
static int64_t slice_start(const Node *n, int64_t size, int64_t len) {
    Dim start = node_attr(n, "start")->dims[0], end = node_attr(n, "end")->dims[0];
    if (dim_is_const(start)) return dim_const_value(start);
    if (dim_is_const(end)) return dim_const_value(end) - len;
    return size - len;
}

static int slice_check_attrs(const Node *n, Dim size, Err *err) {
    const Attr *start = node_attr(n, "start"), *end = node_attr(n, "end");
    if (start->ndims != 1 || end->ndims != 1) return err_set(err, "slice: start and end must be one dim each");
    if (!dim_is_const(start->dims[0]) && !dim_is_const(end->dims[0]) && !dim_equal(end->dims[0], size))
        return err_set(err, "slice: start or end must be a constant, or end the size of the axis");
    return 0;
}

int slice_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    int axis;
    if (norm_axis(n, node_int(n, "axis", 0), in[0].rank, &axis, err) || slice_check_attrs(n, in[0].dims[axis], err))
        return -1;
    Dim size = in[0].dims[axis], start = node_attr(n, "start")->dims[0], end = node_attr(n, "end")->dims[0];
    Dim len, tail;
    if (dim_sub(end, start, &len, err) || dim_sub(size, end, &tail, err)) return -1;
    if (dim_is_negative(start) || dim_is_negative(len) || dim_is_negative(tail)) {
        char s[64], e[64];
        dim_print(start, s, sizeof s);
        dim_print(end, e, sizeof e);
        return err_set(err, "slice: [%s, %s) is out of bounds for axis %d of %s", s, e, axis, TY(&in[0]));
    }
    *out = in[0];
    out->dims[axis] = len;
    return 0;
}

int slice_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin;
    int axis;
    if (norm_axis(n, node_int(n, "axis", 0), in[0]->rank, &axis, err)) return -1;
    const Tensor *x = in[0];
    Tensor *y = out[0];
    int64_t size = x->shape[axis], len = y->shape[axis], start = slice_start(n, size, len);
    if (start < 0 || len < 0 || start + len > size)
        return err_set(err, "slice: [%lld, %lld) is out of bounds for size %lld", (long long)start,
                       (long long)(start + len), (long long)size);
    size_t es = dtype_host_size(x->dtype);
    int64_t outer = shape_product(x, 0, axis), inner = shape_product(x, axis + 1, x->rank);
    for (int64_t o = 0; o < outer; o++)
        memcpy((char *)y->data + (size_t)(o * len * inner) * es,
               (const char *)x->data + (size_t)((o * size + start) * inner) * es, (size_t)(len * inner) * es);
    return 0;
}

/* ---- concat ---- */
static int concat_compatible(const Node *n, const Type *a, const Type *b, int axis, Err *err) {
    int ok = a->dtype == b->dtype && a->rank == b->rank;
    for (int i = 0; ok && i < a->rank; i++) ok = i == axis || dim_equal(a->dims[i], b->dims[i]);
    if (!ok) return err_set(err, "%s: %s and %s differ outside axis %d", node_op_name(n), TY(a), TY(b), axis);
    return 0;
}

int concat_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    int axis;
    if (norm_axis(n, node_int(n, "axis", 0), in[0].rank, &axis, err)) return -1;
    *out = in[0];
    for (int i = 1; i < nin; i++)
        if (concat_compatible(n, &in[0], &in[i], axis, err) ||
            dim_add(out->dims[axis], in[i].dims[axis], &out->dims[axis], err))
            return -1;
    return 0;
}

int concat_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    int axis;
    if (norm_axis(n, node_int(n, "axis", 0), in[0]->rank, &axis, err)) return -1;
    Tensor *y = out[0];
    size_t es = dtype_host_size(y->dtype);
    int64_t outer = shape_product(y, 0, axis), inner = shape_product(y, axis + 1, y->rank);
    int64_t y_row = y->shape[axis] * inner, at = 0;
    for (int i = 0; i < nin; i++) {
        int64_t row = in[i]->shape[axis] * inner;
        for (int64_t o = 0; o < outer; o++)
            memcpy((char *)y->data + (size_t)(o * y_row + at) * es, (const char *)in[i]->data + (size_t)(o * row) * es,
                   (size_t)row * es);
        at += row;
    }
    return 0;
}

/* ---- expand ---- */
int expand_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    Type b;
    if (shape_from_attr(n, in[0].dtype, out, err)) return -1;
    int ok = in[0].rank <= out->rank && broadcast_shape(n, &in[0], out, &b, err) == 0;
    for (int i = 0; ok && i < out->rank; i++) ok = dim_equal(b.dims[i], out->dims[i]);
    if (!ok) return err_set(err, "expand: cannot expand %s to %s", TY(&in[0]), TY(out));
    return 0;
}

int expand_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin, (void)n, (void)err;
    int64_t strides[IR_MAX_RANK];
    broadcast_strides(in[0], out[0], strides);
    size_t es = dtype_host_size(out[0]->dtype);
    for (int64_t i = 0; i < out[0]->numel; i++)
        memcpy((char *)out[0]->data + (size_t)i * es,
               (const char *)in[0]->data + (size_t)broadcast_offset(out[0], strides, i) * es, es);
    return 0;
}

/* ---- stack ---- */
int stack_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)n;
    for (int i = 1; i < nin; i++)
        if (!type_equal(&in[0], &in[i]))
            return err_set(err, "stack: inputs differ: %s and %s", TY(&in[0]), TY(&in[i]));
    if (in[0].rank + 1 > IR_MAX_RANK) return err_set(err, "stack: %s has too many dims", TY(&in[0]));
    out->dtype = in[0].dtype;
    out->rank = in[0].rank + 1;
    out->dims[0] = dim_const(nin);
    for (int i = 0; i < in[0].rank; i++) out->dims[i + 1] = in[0].dims[i];
    return 0;
}

int stack_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)n, (void)err;
    size_t bytes = (size_t)in[0]->numel * dtype_host_size(in[0]->dtype);
    for (int i = 0; i < nin; i++) memcpy((char *)out[0]->data + (size_t)i * bytes, in[i]->data, bytes);
    return 0;
}
