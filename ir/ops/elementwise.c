/* Elementwise ops: unary math, cast, broadcasting binary ops and where. */
#include <stdio.h>

#include "ops_internal.h"

/* ---- unary ---- */
typedef double (*UnaryFn)(double);

static double neg_fn(double x) { return -x; }
static double recip_fn(double x) { return 1.0 / x; }
static double rsqrt_fn(double x) { return 1.0 / sqrt(x); }
static double sigmoid_fn(double x) { return 1.0 / (1.0 + exp(-x)); }
static double silu_fn(double x) { return x * sigmoid_fn(x); }

static const UnaryFn unary_fns[OP_COUNT] = {
    [OP_NEG] = neg_fn, [OP_EXP] = exp,     [OP_LOG] = log,         [OP_SQRT] = sqrt,
    [OP_RSQRT] = rsqrt_fn, [OP_RECIP] = recip_fn, [OP_ABS] = fabs, [OP_SIGMOID] = sigmoid_fn,
    [OP_SILU] = silu_fn,
};

int unary_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    if (require_real(n, "input", &in[0], err)) return -1;
    *out = in[0];
    return 0;
}

int unary_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin, (void)err;
    UnaryFn fn = unary_fns[n->op];
    const real *x = tensor_real(in[0]);
    real *y = tensor_real(out[0]);
    for (int64_t i = 0; i < out[0]->numel; i++) y[i] = (real)fn(x[i]);
    tensor_round(out[0]);
    return 0;
}

/* ---- cast ---- */
static int castable(DType t) { return dtype_is_real(t) || dtype_is_int(t); }

int cast_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    DType to = node_attr(n, "to")->dtype;
    if (!castable(in[0].dtype) || !castable(to))
        return err_set(err, "cast: %s to %s is not supported (fp8 goes through quantize)", TY(&in[0]),
                       dtype_name(to));
    *out = in[0];
    out->dtype = to;
    return 0;
}

static void int_range(DType t, double *lo, double *hi) {
    if (t == DT_U8) *lo = 0, *hi = 255;
    else if (t == DT_I32) *lo = -2147483648.0, *hi = 2147483647.0;
    else *lo = -9223372036854775808.0, *hi = 9223372036854775807.0;
}

static void store_int(Tensor *t, int64_t i, int64_t v) {
    if (t->dtype == DT_I64) ((int64_t *)t->data)[i] = v;
    else if (t->dtype == DT_I32) ((int32_t *)t->data)[i] = (int32_t)v;
    else ((uint8_t *)t->data)[i] = (uint8_t)v;
}

/* Rounds an integer to `bits` significant bits, half to even, without the
 * double rounding an int -> float -> bf16 chain would do. */
static double round_int_bits(int64_t v, int bits) {
    uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    int len = 0;
    while (len < 64 && (mag >> len) != 0) len++;
    if (len <= bits) return (double)v;
    int shift = len - bits;
    uint64_t kept = mag >> shift, rest = mag & ((UINT64_C(1) << shift) - 1), half = UINT64_C(1) << (shift - 1);
    if (rest > half || (rest == half && (kept & 1))) kept++;
    double r = ldexp((double)kept, shift);
    return v < 0 ? -r : r;
}

static float int_to_float(DType t, int64_t v) {
    int bits = t == DT_BF16 ? 8 : t == DT_F16 ? 11 : 24;
    return round_to_dtype(t, (real)round_int_bits(v, bits));
}

static int cast_to_int(const Tensor *x, Tensor *y, int64_t i, Err *err) {
    double lo, hi, v = dtype_is_int(x->dtype) ? (double)index_at(x, i) : trunc(tensor_real(x)[i]);
    int_range(y->dtype, &lo, &hi);
    /* hi of i64 rounds up to 2^63 as a double, so compare with < there. */
    int above = y->dtype == DT_I64 ? v >= hi : v > hi;
    if (isnan(v) || v < lo || above) {
        char text[64];
        if (dtype_is_int(x->dtype)) snprintf(text, sizeof text, "%lld", (long long)index_at(x, i));
        else snprintf(text, sizeof text, "%g", tensor_real(x)[i]);
        return err_set(err, "cast: value %s at element %lld does not fit %s", text, (long long)i,
                       dtype_name(y->dtype));
    }
    store_int(y, i, dtype_is_int(x->dtype) ? index_at(x, i) : (int64_t)v);
    return 0;
}

int cast_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin, (void)n;
    const Tensor *x = in[0];
    Tensor *y = out[0];
    for (int64_t i = 0; i < y->numel; i++) {
        if (dtype_is_int(y->dtype)) {
            if (cast_to_int(x, y, i, err)) return -1;
        } else if (dtype_is_int(x->dtype)) {
            tensor_real(y)[i] = int_to_float(y->dtype, index_at(x, i));
        } else {
            tensor_real(y)[i] = round_to_dtype(y->dtype, tensor_real(x)[i]);
        }
    }
    return 0;
}

/* ---- binary ---- */
typedef double (*BinaryFn)(double, double);

static double add_fn(double a, double b) { return a + b; }
static double sub_fn(double a, double b) { return a - b; }
static double mul_fn(double a, double b) { return a * b; }
static double div_fn(double a, double b) { return a / b; }
/* NaN propagates, as in torch.maximum. */
static double max_fn(double a, double b) { return isnan(a) || isnan(b) ? NAN : a > b ? a : b; }
static double min_fn(double a, double b) { return isnan(a) || isnan(b) ? NAN : a < b ? a : b; }

static const BinaryFn binary_fns[OP_COUNT] = {
    [OP_ADD] = add_fn, [OP_SUB] = sub_fn, [OP_MUL] = mul_fn,
    [OP_DIV] = div_fn, [OP_MAXIMUM] = max_fn, [OP_MINIMUM] = min_fn,
};

static int is_f32_scalar(const Type *t) { return t->dtype == DT_F32 && t->rank == 0; }

/* The result dtype of two float operands: equal, or an f32[] scalar adapting. */
static int operand_dtype(const Node *n, const Type *a, const Type *b, DType *out, Err *err) {
    if (require_real(n, "operand", a, err) || require_real(n, "operand", b, err)) return -1;
    if (a->dtype == b->dtype || is_f32_scalar(b)) *out = a->dtype;
    else if (is_f32_scalar(a)) *out = b->dtype;
    else return err_set(err, "%s: dtypes differ: %s and %s", node_op_name(n), TY(a), TY(b));
    return 0;
}

int binary_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    DType dt = DT_F32;
    if (operand_dtype(n, &in[0], &in[1], &dt, err) || broadcast_shape(n, &in[0], &in[1], out, err)) return -1;
    out->dtype = dt;
    return 0;
}

int binary_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin, (void)err;
    BinaryFn fn = binary_fns[n->op];
    int64_t sa[IR_MAX_RANK], sb[IR_MAX_RANK];
    broadcast_strides(in[0], out[0], sa);
    broadcast_strides(in[1], out[0], sb);
    const real *a = tensor_real(in[0]), *b = tensor_real(in[1]);
    real *y = tensor_real(out[0]);
    for (int64_t i = 0; i < out[0]->numel; i++)
        y[i] = (real)fn(a[broadcast_offset(out[0], sa, i)], b[broadcast_offset(out[0], sb, i)]);
    tensor_round(out[0]);
    return 0;
}

/* ---- where ---- */
int where_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    DType dt = DT_F32;
    Type ab;
    if (require_real(n, "condition", &in[0], err) || operand_dtype(n, &in[1], &in[2], &dt, err) ||
        broadcast_shape(n, &in[1], &in[2], &ab, err))
        return -1;
    ab.dtype = dt;
    if (broadcast_shape(n, &in[0], &ab, out, err)) return -1;
    out->dtype = dt;
    return 0;
}

int where_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin, (void)n, (void)err;
    int64_t s[3][IR_MAX_RANK];
    for (int k = 0; k < 3; k++) broadcast_strides(in[k], out[0], s[k]);
    const real *c = tensor_real(in[0]), *a = tensor_real(in[1]), *b = tensor_real(in[2]);
    real *y = tensor_real(out[0]);
    for (int64_t i = 0; i < out[0]->numel; i++)
        y[i] = c[broadcast_offset(out[0], s[0], i)] != 0.0f ? a[broadcast_offset(out[0], s[1], i)]
                                                             : b[broadcast_offset(out[0], s[2], i)];
    tensor_round(out[0]);
    return 0;
}
