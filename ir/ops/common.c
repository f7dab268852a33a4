/* Helpers shared by the shape rules and kernels of every op family. */
#include <stdio.h>

#include "ops_internal.h"

TypeText type_text(const Type *t) {
    TypeText out;
    type_print(t, out.s, (int)sizeof out.s);
    return out;
}

const char *node_op_name(const Node *n) { return op_info(n->op)->name; }

int dtype_is_real(DType t) { return t == DT_F32 || t == DT_BF16 || t == DT_F16; }

int require_real(const Node *n, const char *what, const Type *t, Err *err) {
    if (dtype_is_real(t->dtype)) return 0;
    return err_set(err, "%s: %s %s must be f32, bf16 or f16", node_op_name(n), what, TY(t));
}

int require_index(const Node *n, const char *what, const Type *t, Err *err) {
    if (t->dtype == DT_I32 || t->dtype == DT_I64) return 0;
    return err_set(err, "%s: %s %s must be an i32 or i64 index tensor", node_op_name(n), what, TY(t));
}

int norm_axis(const Node *n, int64_t axis, int rank, int *out, Err *err) {
    int64_t a = axis < 0 ? axis + rank : axis;
    if (a < 0 || a >= rank)
        return err_set(err, "%s: axis %lld is out of range for rank %d", node_op_name(n), (long long)axis, rank);
    *out = (int)a;
    return 0;
}

int dims_product(const Dim *dims, int from, int to, Dim *out, Err *err) {
    Dim p = dim_const(1);
    for (int i = from; i < to; i++)
        if (dim_mul(p, dims[i], &p, err)) return -1;
    *out = p;
    return 0;
}

int same_leading(const Type *a, const Type *b) {
    if (a->rank != b->rank) return 0;
    for (int i = 0; i + 1 < a->rank; i++)
        if (!dim_equal(a->dims[i], b->dims[i])) return 0;
    return 1;
}

static int dim_is_one(Dim d) { return dim_is_const(d) && dim_const_value(d) == 1; }

int broadcast_shape(const Node *n, const Type *a, const Type *b, Type *out, Err *err) {
    int rank = a->rank > b->rank ? a->rank : b->rank;
    out->rank = rank;
    for (int i = 0; i < rank; i++) {
        int ia = i - (rank - a->rank), ib = i - (rank - b->rank);
        Dim da = ia >= 0 ? a->dims[ia] : dim_const(1), db = ib >= 0 ? b->dims[ib] : dim_const(1);
        if (dim_equal(da, db) || dim_is_one(db)) out->dims[i] = da;
        else if (dim_is_one(da)) out->dims[i] = db;
        else return err_set(err, "%s: cannot broadcast %s with %s", node_op_name(n), TY(a), TY(b));
    }
    return 0;
}

int64_t shape_product(const Tensor *t, int from, int to) {
    int64_t p = 1;
    for (int i = from; i < to; i++) p *= t->shape[i];
    return p;
}

int64_t index_at(const Tensor *t, int64_t i) {
    switch (t->dtype) {
    case DT_I64: return ((const int64_t *)t->data)[i];
    case DT_I32: return ((const int32_t *)t->data)[i];
    default: return ((const uint8_t *)t->data)[i];
    }
}

void tensor_round(Tensor *t) {
    if (t->dtype != DT_BF16 && t->dtype != DT_F16) return;
    real *d = tensor_real(t);
    for (int64_t i = 0; i < t->numel; i++) d[i] = round_to_dtype(t->dtype, d[i]);
}

void broadcast_strides(const Tensor *x, const Tensor *out, int64_t *strides) {
    int64_t stride = 1;
    for (int i = out->rank - 1; i >= 0; i--) {
        int xi = i - (out->rank - x->rank);
        int64_t size = xi >= 0 ? x->shape[xi] : 1;
        strides[i] = size == 1 ? 0 : stride;
        stride *= size;
    }
}

int64_t broadcast_offset(const Tensor *out, const int64_t *strides, int64_t i) {
    int64_t off = 0;
    for (int d = out->rank - 1; d >= 0; d--) {
        off += (i % out->shape[d]) * strides[d];
        i /= out->shape[d];
    }
    return off;
}

size_t real_size(void) { return sizeof(real); }
