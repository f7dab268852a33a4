/* Templates for sources, elementwise ops outside fused groups (scalars, bf16,
 * casts), reductions and softmax over any axis, and the layout copies. One
 * thread per output element (or per reduced line), each computing exactly
 * the interpreter's sequence of operations. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cuda_tpl.h"

/* ---- sources ---- */
int tpl_fill(const Tpl *c, ValueId out, double value) {
    KernelText kt;
    tpl_begin(&kt, "fill");
    DType dt = ir_type(c->g, out)->dtype;
    tpl_typedef(&kt, "T", dt);
    tpl_define(&kt, "N", tpl_numel(c, out));
    buf_puts(&kt.body, "#define VALUE ((T)");
    cuda_literal(&kt.body, value);
    buf_puts(&kt.body, ")\nextern \"C\" __global__ void KNAME(");
    ktext_param(&kt, tpl_out_type(dt), "out");
    tpl_body(&kt, "    for (long long i = V3C_THREAD_ID; i < N; i += V3C_THREADS) out[i] = VALUE;\n}\n");
    CudaArg a[] = {carg_value(out)};
    return tpl_launch(c, &kt, a, 1, tpl_numel(c, out));
}

static int tpl_const(const Tpl *c) { return tpl_fill(c, c->n->out[0], (double)(float)node_float(c->n, "value", 0)); }

static int tpl_iota(const Tpl *c) {
    KernelText kt;
    tpl_begin(&kt, "iota");
    int64_t n = tpl_numel(c, c->n->out[0]);
    tpl_define(&kt, "N", n);
    buf_puts(&kt.body, "extern \"C\" __global__ void KNAME(");
    ktext_param(&kt, "float *", "out");
    tpl_body(&kt, "    for (long long i = V3C_THREAD_ID; i < N; i += V3C_THREADS) out[i] = (float)i;\n}\n");
    CudaArg a[] = {carg_value(c->n->out[0])};
    return tpl_launch(c, &kt, a, 1, n);
}

/* ---- elementwise outside fused groups ---- */
static const char *const elementwise_forms[OP_COUNT] = {
    [OP_NEG] = "-a", [OP_EXP] = "exp(a)", [OP_LOG] = "log(a)", [OP_SQRT] = "sqrt(a)", [OP_RSQRT] = "1.0 / sqrt(a)",
    [OP_RECIP] = "1.0 / a", [OP_ABS] = "fabs(a)", [OP_SIGMOID] = "v3c_sigmoid(a)", [OP_SILU] = "v3c_silu(a)",
    [OP_ADD] = "a + b", [OP_SUB] = "a - b", [OP_MUL] = "a * b", [OP_DIV] = "a / b",
    [OP_MAXIMUM] = "v3c_max_nan(a, b)", [OP_MINIMUM] = "v3c_min_nan(a, b)", [OP_WHERE] = "a != 0.0 ? b : c",
};

/* Offsets o0.. of each input for output element i (numpy broadcast strides). */
static void emit_broadcast_offsets(const Tpl *c, KernelText *kt, const int64_t *out, int rank, const ValueId *ins, int nin) {
    int64_t strides[4][IR_MAX_RANK];
    for (int k = 0; k < nin; k++) {
        int64_t in[IR_MAX_RANK], stride = 1;
        int r = tpl_shape(c, ins[k], in);
        for (int d = rank - 1; d >= 0; d--) {
            int j = d - (rank - r);
            int64_t size = j >= 0 ? in[j] : 1;
            strides[k][d] = size == 1 ? 0 : stride;
            stride *= size;
        }
    }
    buf_puts(&kt->body, "        long long rem = i, o0 = 0, o1 = 0, o2 = 0;\n");
    for (int d = rank - 1; d >= 0; d--) {
        buf_printf(&kt->body, "        { const long long q = rem %% %lldll; rem /= %lldll;", (long long)out[d], (long long)out[d]);
        for (int k = 0; k < nin; k++)
            if (strides[k][d]) buf_printf(&kt->body, " o%d += q * %lldll;", k, (long long)strides[k][d]);
        buf_puts(&kt->body, " }\n");
    }
    buf_puts(&kt->body, "        (void)rem; (void)o0; (void)o1; (void)o2;\n");
}

static int tpl_elementwise(const Tpl *c) {
    const Node *n = c->n;
    int64_t out[IR_MAX_RANK];
    int rank = tpl_shape(c, n->out[0], out);
    if (rank < 0) return -1;
    KernelText kt;
    tpl_begin(&kt, "elementwise");
    tpl_define(&kt, "N", shape_prod(out, 0, rank));
    tpl_define_store(&kt, ir_type(c->g, n->out[0])->dtype);
    buf_puts(&kt.body, "extern \"C\" __global__ void KNAME(");
    static const char *const names[] = {"in0", "in1", "in2"};
    CudaArg args[4];
    for (int k = 0; k < n->nin; k++) {
        ktext_param(&kt, "const float *", names[k]);
        args[k] = carg_value(n->in[k]);
    }
    ktext_param(&kt, "float *", "out");
    args[n->nin] = carg_value(n->out[0]);
    buf_puts(&kt.body, ") {\n    for (long long i = V3C_THREAD_ID; i < N; i += V3C_THREADS) {\n");
    emit_broadcast_offsets(c, &kt, out, rank, n->in, n->nin);
    static const char *const loads[] = {"a = (double)in0[o0]", "b = (double)in1[o1]", "c = (double)in2[o2]"};
    for (int k = 0; k < n->nin; k++) buf_printf(&kt.body, "        const double %s;\n", loads[k]);
    buf_printf(&kt.body, "        out[i] = STORE(%s);\n    }\n}\n", elementwise_forms[n->op]);
    return tpl_launch(c, &kt, args, n->nin + 1, shape_prod(out, 0, rank));
}

/* ---- cast ---- */
static const char *cast_form(DType from, DType to) {
    if (dtype_is_float(from) && dtype_is_float(to)) return "        out[i] = STORE((double)in[i]);\n";
    if (dtype_is_int(from) && to == DT_F32) return "        out[i] = (float)in[i];\n";
    if (dtype_is_float(from) && dtype_is_int(to))
        return "        const double v = trunc((double)in[i]);\n"
               "        if (isnan(v) || v < LO || v >= HI) { status[0] = 1; continue; }\n"
               "        out[i] = (OUT_T)v;\n";
    if (dtype_is_int(from) && dtype_is_int(to))
        return "        if ((double)in[i] < LO || (double)in[i] >= HI) { status[0] = 1; continue; }\n"
               "        out[i] = (OUT_T)in[i];\n";
    return NULL;
}

/* [LO, HI) in double: i64's top is 2^63 exactly, the others one past their max. */
static void int_bounds(DType t, double *lo, double *hi) {
    if (t == DT_U8) *lo = 0, *hi = 256;
    else if (t == DT_I32) *lo = -2147483648.0, *hi = 2147483648.0;
    else *lo = -9223372036854775808.0, *hi = 9223372036854775808.0;
}

static int tpl_cast(const Tpl *c) {
    DType from = ir_type(c->g, c->n->in[0])->dtype, to = ir_type(c->g, c->n->out[0])->dtype;
    const char *form = cast_form(from, to);
    if (!form)
        return err_set(c->err, "cast %s to %s has no CUDA template", dtype_name(from), dtype_name(to));
    KernelText kt;
    tpl_begin(&kt, "cast");
    int64_t n = tpl_numel(c, c->n->out[0]);
    double lo = 0, hi = 0;
    int_bounds(to, &lo, &hi);
    tpl_define(&kt, "N", n);
    tpl_typedef(&kt, "OUT_T", to);
    tpl_define_store(&kt, to);
    buf_printf(&kt.body, "#define LO %.17g\n#define HI %.17g\nextern \"C\" __global__ void KNAME(", lo, hi);
    ktext_param(&kt, tpl_in_type(from), "in");
    ktext_param(&kt, tpl_out_type(to), "out");
    ktext_param(&kt, "int *", "status");
    buf_puts(&kt.body, ") {\n    (void)status;\n    for (long long i = V3C_THREAD_ID; i < N; i += V3C_THREADS) {\n");
    buf_printf(&kt.body, "%s    }\n}\n", form);
    CudaArg a[] = {carg_value(c->n->in[0]), carg_value(c->n->out[0]), carg_status()};
    return tpl_launch(c, &kt, a, 3, n);
}

/* ---- reductions over one axis, softmax, mean_all: a thread per line ---- */
static const char reduce_body[] =
    "    for (long long i = V3C_THREAD_ID; i < OUTER * INNER; i += V3C_THREADS) {\n"
    "        const float *x = in + (i / INNER) * LEN * INNER + i % INNER;\n"
    "        double acc = IS_MAX ? -v3c_inf() : 0.0;\n"
    "        for (long long j = 0; j < LEN; j++) {\n"
    "            const double v = x[j * INNER];\n"
    "            if (IS_MAX && isnan(v)) { acc = v3c_nan(); break; }\n"
    "            acc = IS_MAX ? (v > acc ? v : acc) : acc + v;\n"
    "        }\n"
    "        out[i] = STORE(IS_MEAN ? acc / (double)LEN : acc);\n"
    "    }\n}\n";

static const char softmax_body[] =
    "    for (long long i = V3C_THREAD_ID; i < OUTER * INNER; i += V3C_THREADS) {\n"
    "        const long long base = (i / INNER) * LEN * INNER + i % INNER;\n"
    "        double m = -v3c_inf(), s = 0.0;\n"
    "        for (long long j = 0; j < LEN; j++) m = (double)in[base + j * INNER] > m ? (double)in[base + j * INNER] : m;\n"
    "        for (long long j = 0; j < LEN; j++) s += exp((double)in[base + j * INNER] - m);\n"
    "        for (long long j = 0; j < LEN; j++) out[base + j * INNER] = STORE(exp((double)in[base + j * INNER] - m) / s);\n"
    "    }\n}\n";

static int line_kernel(const Tpl *c, const char *family, int axis, const char *body) {
    int64_t in[IR_MAX_RANK];
    int rank = tpl_shape(c, c->n->in[0], in);
    if (rank < 0) return -1;
    if (rank == 0) axis = 0, in[0] = 1, rank = 1;
    KernelText kt;
    tpl_begin(&kt, family);
    int64_t outer = shape_prod(in, 0, axis), inner = shape_prod(in, axis + 1, rank);
    tpl_define(&kt, "OUTER", outer);
    tpl_define(&kt, "LEN", in[axis]);
    tpl_define(&kt, "INNER", inner);
    tpl_define(&kt, "IS_MAX", c->n->op == OP_MAX);
    tpl_define(&kt, "IS_MEAN", c->n->op == OP_MEAN || c->n->op == OP_MEAN_ALL);
    tpl_define_store(&kt, ir_type(c->g, c->n->out[0])->dtype);
    buf_puts(&kt.body, "extern \"C\" __global__ void KNAME(");
    ktext_param(&kt, "const float *", "in");
    ktext_param(&kt, "float *", "out");
    tpl_body(&kt, body);
    CudaArg a[] = {carg_value(c->n->in[0]), carg_value(c->n->out[0])};
    return tpl_launch(c, &kt, a, 2, outer * inner);
}

static int tpl_reduce(const Tpl *c) {
    int rank = ir_type(c->g, c->n->in[0])->rank;
    return line_kernel(c, "reduce", tpl_axis(c, rank, 0), reduce_body);
}

static int tpl_softmax(const Tpl *c) {
    int rank = ir_type(c->g, c->n->in[0])->rank;
    return line_kernel(c, "softmax", tpl_axis(c, rank, -1), softmax_body);
}

/* mean_all is a reduction of the flattened input: one line. */
static int tpl_mean_all(const Tpl *c) {
    int64_t n = tpl_numel(c, c->n->in[0]);
    if (n == 0) return err_set(c->err, "mean_all: input has no elements");
    KernelText kt;
    tpl_begin(&kt, "mean_all");
    tpl_define(&kt, "OUTER", 1);
    tpl_define(&kt, "LEN", n);
    tpl_define(&kt, "INNER", 1);
    tpl_define(&kt, "IS_MAX", 0);
    tpl_define(&kt, "IS_MEAN", 1);
    tpl_define_store(&kt, DT_F32);
    buf_puts(&kt.body, "extern \"C\" __global__ void KNAME(");
    ktext_param(&kt, "const float *", "in");
    ktext_param(&kt, "float *", "out");
    tpl_body(&kt, reduce_body);
    CudaArg a[] = {carg_value(c->n->in[0]), carg_value(c->n->out[0])};
    return tpl_launch(c, &kt, a, 2, 1);
}

/* ---- layout copies ---- */
int tpl_block_copy(const Tpl *c, ValueId src, ValueId dst, int64_t outer, int64_t row, int64_t src_stride,
                   int64_t src_off, int64_t dst_stride, int64_t dst_off) {
    DType dt = ir_type(c->g, dst)->dtype;
    KernelText kt;
    tpl_begin(&kt, "copy");
    tpl_typedef(&kt, "T", dt);
    tpl_define(&kt, "OUTER", outer);
    tpl_define(&kt, "ROW", row);
    tpl_define(&kt, "SS", src_stride);
    tpl_define(&kt, "DS", dst_stride);
    buf_puts(&kt.body, "extern \"C\" __global__ void KNAME(");
    ktext_param(&kt, tpl_in_type(dt), "src");
    ktext_param(&kt, tpl_out_type(dt), "dst");
    tpl_body(&kt, "    for (long long i = V3C_THREAD_ID; i < OUTER * ROW; i += V3C_THREADS)\n"
                  "        dst[i / ROW * DS + i % ROW] = src[i / ROW * SS + i % ROW];\n}\n");
    /* The offsets travel as pointer offsets: the 256 copies of a stack are one kernel. */
    int64_t es = (int64_t)dtype_host_size(dt);
    CudaArg a[] = {carg_value_at(src, src_off * es), carg_value_at(dst, dst_off * es)};
    return tpl_launch(c, &kt, a, 2, outer * row);
}

/* Start of a slice (or pad) window, recovered as the interpreter does. */
static int64_t window_start(const Node *n, int64_t size, int64_t len) {
    Dim start = node_attr(n, "start")->dims[0], end = node_attr(n, "end")->dims[0];
    if (dim_is_const(start)) return dim_const_value(start);
    if (dim_is_const(end)) return dim_const_value(end) - len;
    return size - len;
}

/* slice copies from a window of x; pad copies into a window of zeros. */
static int window_copy(const Tpl *c, int into) {
    const Node *n = c->n;
    int64_t x[IR_MAX_RANK], y[IR_MAX_RANK];
    int rank = tpl_shape(c, n->in[0], x);
    if (rank < 0 || tpl_shape(c, n->out[0], y) < 0) return -1;
    int axis = tpl_axis(c, rank, 0);
    int64_t size = into ? y[axis] : x[axis], len = into ? x[axis] : y[axis], start = window_start(n, size, len);
    if (start < 0 || len < 0 || start + len > size)
        return err_set(c->err, "%s: [%lld, %lld) is out of bounds for size %lld", op_info(n->op)->name,
                       (long long)start, (long long)(start + len), (long long)size);
    int64_t outer = shape_prod(x, 0, axis), inner = shape_prod(x, axis + 1, rank);
    if (!into) return tpl_block_copy(c, n->in[0], n->out[0], outer, len * inner, size * inner, start * inner, len * inner, 0);
    if (tpl_fill(c, n->out[0], 0.0)) return -1;
    return tpl_block_copy(c, n->in[0], n->out[0], outer, len * inner, len * inner, 0, size * inner, start * inner);
}

static int tpl_slice(const Tpl *c) { return window_copy(c, 0); }
static int tpl_pad(const Tpl *c) { return window_copy(c, 1); }

static int tpl_concat(const Tpl *c) {
    int64_t y[IR_MAX_RANK], x[IR_MAX_RANK];
    int rank = tpl_shape(c, c->n->out[0], y);
    if (rank < 0) return -1;
    int axis = tpl_axis(c, rank, 0);
    int64_t outer = shape_prod(y, 0, axis), inner = shape_prod(y, axis + 1, rank), at = 0;
    for (int i = 0; i < c->n->nin; i++) {
        if (tpl_shape(c, c->n->in[i], x) < 0) return -1;
        int64_t row = x[axis] * inner;
        if (tpl_block_copy(c, c->n->in[i], c->n->out[0], outer, row, row, 0, y[axis] * inner, at)) return -1;
        at += row;
    }
    return 0;
}

static int tpl_stack(const Tpl *c) {
    int64_t n = tpl_numel(c, c->n->in[0]);
    for (int i = 0; i < c->n->nin; i++)
        if (tpl_block_copy(c, c->n->in[i], c->n->out[0], 1, n, n, 0, n, i * n)) return -1;
    return 0;
}

/* out[i] = in[sum_d idx_d(i) * stride_d]: expand (stride 0 on broadcast axes) and transpose. */
static int strided_copy(const Tpl *c, const int64_t *out, int rank, const int64_t *strides) {
    DType dt = ir_type(c->g, c->n->out[0])->dtype;
    KernelText kt;
    tpl_begin(&kt, "strided");
    tpl_typedef(&kt, "T", dt);
    tpl_define(&kt, "N", shape_prod(out, 0, rank));
    buf_puts(&kt.body, "extern \"C\" __global__ void KNAME(");
    ktext_param(&kt, tpl_in_type(dt), "in");
    ktext_param(&kt, tpl_out_type(dt), "out");
    buf_puts(&kt.body, ") {\n    for (long long i = V3C_THREAD_ID; i < N; i += V3C_THREADS) {\n        long long rem = i, o = 0;\n");
    for (int d = rank - 1; d >= 0; d--)
        buf_printf(&kt.body, "        o += rem %% %lldll * %lldll; rem /= %lldll;\n", (long long)out[d],
                   (long long)strides[d], (long long)out[d]);
    buf_puts(&kt.body, "        (void)rem;\n        out[i] = in[o];\n    }\n}\n");
    CudaArg a[] = {carg_value(c->n->in[0]), carg_value(c->n->out[0])};
    return tpl_launch(c, &kt, a, 2, shape_prod(out, 0, rank));
}

static int tpl_expand(const Tpl *c) {
    int64_t x[IR_MAX_RANK], y[IR_MAX_RANK], strides[IR_MAX_RANK], stride = 1;
    int xr = tpl_shape(c, c->n->in[0], x), rank = tpl_shape(c, c->n->out[0], y);
    if (xr < 0 || rank < 0) return -1;
    for (int d = rank - 1; d >= 0; d--) {
        int j = d - (rank - xr);
        int64_t size = j >= 0 ? x[j] : 1;
        strides[d] = size == 1 ? 0 : stride;
        stride *= size;
    }
    return strided_copy(c, y, rank, strides);
}

static int tpl_transpose(const Tpl *c) {
    int64_t y[IR_MAX_RANK], strides[IR_MAX_RANK], stride = 1;
    int rank = tpl_shape(c, c->n->out[0], y);
    if (rank < 2) return rank < 0 ? -1 : err_set(c->err, "transpose needs rank >= 2");
    /* out [..., c, r] reads in [..., r, c]: along out's last axis the input steps by c. */
    strides[rank - 1] = y[rank - 2];
    strides[rank - 2] = 1;
    stride = y[rank - 1] * y[rank - 2];
    for (int d = rank - 3; d >= 0; d--) {
        strides[d] = stride;
        stride *= y[d];
    }
    return strided_copy(c, y, rank, strides);
}

const TplFn cuda_tpl_basic[OP_COUNT] = {
    [OP_CONST] = tpl_const, [OP_IOTA] = tpl_iota,
    [OP_NEG] = tpl_elementwise, [OP_EXP] = tpl_elementwise, [OP_LOG] = tpl_elementwise, [OP_SQRT] = tpl_elementwise,
    [OP_RSQRT] = tpl_elementwise, [OP_RECIP] = tpl_elementwise, [OP_ABS] = tpl_elementwise,
    [OP_SIGMOID] = tpl_elementwise, [OP_SILU] = tpl_elementwise, [OP_ADD] = tpl_elementwise,
    [OP_SUB] = tpl_elementwise, [OP_MUL] = tpl_elementwise, [OP_DIV] = tpl_elementwise,
    [OP_MAXIMUM] = tpl_elementwise, [OP_MINIMUM] = tpl_elementwise, [OP_WHERE] = tpl_elementwise,
    [OP_CAST] = tpl_cast, [OP_SUM] = tpl_reduce, [OP_MEAN] = tpl_reduce, [OP_MAX] = tpl_reduce,
    [OP_SOFTMAX] = tpl_softmax, [OP_MEAN_ALL] = tpl_mean_all, [OP_SLICE] = tpl_slice, [OP_PAD] = tpl_pad,
    [OP_CONCAT] = tpl_concat, [OP_STACK] = tpl_stack, [OP_EXPAND] = tpl_expand, [OP_TRANSPOSE] = tpl_transpose,
};
