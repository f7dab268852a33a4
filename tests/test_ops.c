/* Every op: shape rules (success and failure) and interpreter results against
 * hand-computed values or naive re-computations written here. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "../base/numeric.h"
#include "../ir/interp.h"
#include "testutil.h"

/* ---- helpers ---- */
static Type ty(const char *text) {
    Type t = {0};
    char dt[16];
    const char *open = strchr(text, '[');
    ck_assert_ptr_nonnull(open);
    memcpy(dt, text, (size_t)(open - text));
    dt[open - text] = 0;
    ck_assert_int_eq(dtype_parse(dt, &t.dtype), 0);
    const char *p = open + 1;
    Err e = {0};
    while (*p != ']') {
        int k = dim_parse(p, &t.dims[t.rank++], &e);
        ck_assert_msg(k > 0, "bad dim in %s", text);
        p += k;
        if (*p == ',') p++;
    }
    return t;
}

static Tensor *tens(DType dt, int rank, const int64_t *shape, const double *vals) {
    Tensor *t = tensor_new(dt, rank, shape);
    for (int64_t i = 0; vals && i < t->numel; i++) {
        if (dt == DT_I64) ((int64_t *)t->data)[i] = (int64_t)vals[i];
        else if (dt == DT_I32) ((int32_t *)t->data)[i] = (int32_t)vals[i];
        else tensor_f32(t)[i] = (float)vals[i];
    }
    return t;
}
#define SHAPE(...) (int64_t[]){__VA_ARGS__}
#define VALS(...) (double[]){__VA_ARGS__}
#define T1(dt, n, ...) tens(dt, 1, SHAPE(n), VALS(__VA_ARGS__))

static Tensor *rand_tensor(DType dt, int rank, const int64_t *shape, unsigned *seed) {
    Tensor *t = tensor_new(dt, rank, shape);
    for (int64_t i = 0; i < t->numel; i++) {
        *seed = *seed * 1103515245u + 12345u;
        tensor_f32(t)[i] = (float)((*seed >> 8) % 2001) / 1000.0f - 1.0f;
    }
    return t;
}

/* Declares inputs x0.. of the given types, emits op, returns the node's first output. */
static int build(Graph *g, OpKind op, const char *const *types, int nin, const Attr *attrs, int nattrs,
                 ValueId *outs, Err *err) {
    ValueId in[8] = {0};
    for (int i = 0; i < nin; i++) {
        char name[16];
        snprintf(name, sizeof name, "x%d", i);
        in[i] = ir_input(g, name, ty(types[i]), err);
        ck_assert_int_ge(in[i], 0);
    }
    return ir_emit(g, op, in, nin, attrs, nattrs, outs, err);
}

static void expect_shape_error(OpKind op, const char *const *types, int nin, const Attr *attrs, int nattrs,
                               const char *needle) {
    Graph *g = graph_new();
    Err e = {0};
    ValueId outs[4];
    ck_assert_int_eq(build(g, op, types, nin, attrs, nattrs, outs, &e), -1);
    ck_assert_msg(strstr(e.msg, needle) != NULL, "'%s' lacks '%s'", e.msg, needle);
    graph_free(g);
}

static void expect_type(OpKind op, const char *const *types, int nin, const Attr *attrs, int nattrs, int which,
                        const char *want) {
    Graph *g = graph_new();
    Err e = {0};
    ValueId outs[4];
    ck_assert_msg(build(g, op, types, nin, attrs, nattrs, outs, &e) >= 0, "%s", e.msg);
    char got[256];
    type_print(ir_type(g, outs[which]), got, sizeof got);
    ck_assert_str_eq(got, want);
    graph_free(g);
}

/* Builds op over inputs x0.. with the given types, runs it with interp_run at
 * B, T and returns its outputs (owned by the caller). Returns -1 on a run error. */
static int run_op(OpKind op, const char *const *types, Tensor **inputs, int nin, const Attr *attrs, int nattrs,
                  int64_t b, int64_t t, Tensor **outs, Err *err) {
    Graph *g = graph_new();
    ValueId vals[4];
    ck_assert_msg(build(g, op, types, nin, attrs, nattrs, vals, err) >= 0, "%s", err->msg);
    const OpInfo *info = op_info(op);
    for (int i = 0; i < info->nout; i++) {
        char name[16];
        snprintf(name, sizeof name, "y%d", i);
        ck_assert_int_eq(ir_add_output(g, name, vals[i], err), 0);
    }
    TensorSet feeds, results;
    tset_init(&feeds);
    tset_init(&results);
    for (int i = 0; i < nin; i++) {
        char name[16];
        snprintf(name, sizeof name, "x%d", i);
        tset_put(&feeds, name, inputs[i]);
    }
    InterpOptions opt = {.batch = b, .seq = t};
    int rc = interp_run(g, &feeds, &opt, &results, err);
    for (int i = 0; i < info->nout; i++) {
        char name[16];
        snprintf(name, sizeof name, "y%d", i);
        outs[i] = NULL;
        if (rc == 0) {
            const Tensor *r = tset_get(&results, name);
            ck_assert_ptr_nonnull(r);
            outs[i] = tensor_new(r->dtype, r->rank, r->shape);
            memcpy(outs[i]->data, r->data, (size_t)r->numel * dtype_host_size(r->dtype));
        }
    }
    tset_free(&feeds);
    tset_free(&results);
    graph_free(g);
    return rc;
}

/* Single-output run at B=T=1 that must succeed. */
static Tensor *run1(OpKind op, const char *const *types, Tensor **inputs, int nin, const Attr *attrs, int nattrs) {
    Tensor *out[4];
    Err e = {0};
    ck_assert_msg(run_op(op, types, inputs, nin, attrs, nattrs, 1, 1, out, &e) == 0, "%s", e.msg);
    return out[0];
}

static void expect_run_error(OpKind op, const char *const *types, Tensor **inputs, int nin, const Attr *attrs,
                             int nattrs, const char *needle) {
    Tensor *out[4];
    Err e = {0};
    ck_assert_int_eq(run_op(op, types, inputs, nin, attrs, nattrs, 1, 1, out, &e), -1);
    ck_assert_msg(strstr(e.msg, needle) != NULL, "'%s' lacks '%s'", e.msg, needle);
}

static void assert_close(double got, double want, double rel) {
    double tol = rel * fmax(fabs(want), 1e-30);
    ck_assert_msg(got == want || fabs(got - want) <= tol || (isnan(got) && isnan(want)), "got %.9g, want %.9g", got, want);
}

static void assert_tensor(const Tensor *t, const double *want, double rel) {
    for (int64_t i = 0; i < t->numel; i++) assert_close(tensor_f32(t)[i], want[i], rel);
}

static void assert_ints(const Tensor *t, const int64_t *want) {
    for (int64_t i = 0; i < t->numel; i++)
        ck_assert_msg(((int32_t *)t->data)[i] == want[i], "element %lld: %d != %lld", (long long)i,
                      ((int32_t *)t->data)[i], (long long)want[i]);
}

#define TYPES(...) (const char *const[]){__VA_ARGS__}
#define INS(...) (Tensor *[]){__VA_ARGS__}
static const double REL = 1e-6;

/* ---- the table ---- */
START_TEST(test_table_complete) {
    for (int i = 0; i < OP_COUNT; i++) {
        const OpInfo *info = op_info((OpKind)i);
        ck_assert_msg(info->name && info->infer && info->interp && info->attrs && info->doc && info->doc[0],
                      "op %d is incomplete", i);
        OpKind k;
        ck_assert_int_eq(op_lookup(info->name, &k), 0);
        ck_assert_int_eq(k, i);
    }
    OpKind k;
    ck_assert_int_eq(op_lookup("no_such_op", &k), -1);
    ck_assert_int_eq(op_info(OP_MOE_DISPATCH)->nout, 2);
}
END_TEST

START_TEST(test_attr_validation) {
    expect_shape_error(OP_SUM, TYPES("f32[2,3]"), 1, NULL, 0, "needs attribute 'axis'");
    Attr bad = attr_str("axis", "x");
    expect_shape_error(OP_SUM, TYPES("f32[2,3]"), 1, &bad, 1, "wrong kind");
    Attr extra = attr_int("k", 1);
    expect_shape_error(OP_NEG, TYPES("f32[2,3]"), 1, &extra, 1, "has no attribute 'k'");
}
END_TEST

/* ---- sources ---- */
START_TEST(test_const_iota) {
    Attr v = attr_float("value", 2.5);
    expect_type(OP_CONST, NULL, 0, &v, 1, 0, "f32[]");
    Tensor *c = run1(OP_CONST, NULL, NULL, 0, &v, 1);
    ck_assert(tensor_f32(c)[0] == 2.5f);
    tensor_free(c);
    Attr n = attr_int("n", 4);
    expect_type(OP_IOTA, NULL, 0, &n, 1, 0, "f32[4]");
    Tensor *i = run1(OP_IOTA, NULL, NULL, 0, &n, 1);
    assert_tensor(i, VALS(0, 1, 2, 3), 0);
    tensor_free(i);
    Attr neg = attr_int("n", -1);
    expect_shape_error(OP_IOTA, NULL, 0, &neg, 1, "iota: n must be >= 0");
}
END_TEST

static Graph *graph_with_source(OpKind op, const char *name, const char *type) {
    Graph *g = graph_new();
    Err e = {0};
    ValueId v = op == OP_PARAM ? ir_param(g, name, ty(type), &e) : ir_input(g, name, ty(type), &e);
    ck_assert_int_ge(v, 0);
    ValueId y;
    ck_assert_int_ge(ir_emit(g, OP_NEG, &v, 1, NULL, 0, &y, &e), 0);
    ck_assert_int_eq(ir_add_output(g, "y", y, &e), 0);
    return g;
}

START_TEST(test_feed_errors) {
    TensorSet feeds, results;
    tset_init(&feeds);
    tset_init(&results);
    InterpOptions opt = {.batch = 2, .seq = 3};
    Err e = {0};
    Graph *g = graph_with_source(OP_PARAM, "w", "f32[B,T]");
    ck_assert_int_eq(interp_run(g, &feeds, &opt, &results, &e), -1);
    ck_assert_str_eq(e.msg, "no weight named w");
    graph_free(g);
    g = graph_with_source(OP_INPUT, "ids", "f32[B,T]");
    ck_assert_int_eq(interp_run(g, &feeds, &opt, &results, &e), -1);
    ck_assert_str_eq(e.msg, "no input named ids");
    tset_put(&feeds, "ids", tensor_new(DT_F32, 2, SHAPE(3, 2)));
    ck_assert_int_eq(interp_run(g, &feeds, &opt, &results, &e), -1);
    ck_assert_msg(strstr(e.msg, "ids is f32[3,2] but the graph wants f32[B,T] (B=2, T=3)"), "%s", e.msg);
    tset_put(&feeds, "ids", tensor_new(DT_BF16, 2, SHAPE(2, 3)));
    ck_assert_int_eq(interp_run(g, &feeds, &opt, &results, &e), -1);
    ck_assert_msg(strstr(e.msg, "bf16[2,3]"), "%s", e.msg);
    tset_put(&feeds, "ids", tensor_new(DT_F32, 2, SHAPE(2, 3)));
    ck_assert_int_eq(interp_run(g, &feeds, &opt, &results, &e), 0);
    ck_assert_int_eq(tset_get(&results, "y")->numel, 6);
    ck_assert_int_eq(results.tensors.len, 1);
    graph_free(g);
    tset_free(&feeds);
    tset_free(&results);
}
END_TEST

/* ---- elementwise ---- */
static double sigmoid_ref(double x) { return 1 / (1 + exp(-x)); }

START_TEST(test_unary) {
    static const struct {
        OpKind op;
        double (*ref)(double);
    } cases[] = {{OP_EXP, exp}, {OP_LOG, log}, {OP_SQRT, sqrt}, {OP_ABS, fabs}, {OP_SIGMOID, sigmoid_ref}};
    const double xs[] = {0.25, 1.5, 3.0, 7.75};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        Tensor *y = run1(cases[c].op, TYPES("f32[4]"), INS(T1(DT_F32, 4, 0.25, 1.5, 3.0, 7.75)), 1, NULL, 0);
        for (int i = 0; i < 4; i++) assert_close(tensor_f32(y)[i], cases[c].ref(xs[i]), REL);
        tensor_free(y);
    }
    Tensor *y = run1(OP_NEG, TYPES("f32[2]"), INS(T1(DT_F32, 2, 1.5, -2)), 1, NULL, 0);
    assert_tensor(y, VALS(-1.5, 2), 0);
    tensor_free(y);
    y = run1(OP_RSQRT, TYPES("f32[2]"), INS(T1(DT_F32, 2, 4, 0.25)), 1, NULL, 0);
    assert_tensor(y, VALS(0.5, 2), 0);
    tensor_free(y);
    y = run1(OP_RECIP, TYPES("f32[2]"), INS(T1(DT_F32, 2, 4, -0.5)), 1, NULL, 0);
    assert_tensor(y, VALS(0.25, -2), 0);
    tensor_free(y);
    y = run1(OP_SILU, TYPES("f32[2]"), INS(T1(DT_F32, 2, 2, -1)), 1, NULL, 0);
    assert_tensor(y, VALS(2 * sigmoid_ref(2), -sigmoid_ref(-1)), REL);
    tensor_free(y);
    /* bf16 results are rounded to bf16: exp(1) = 2.718.. -> 2.71875 */
    y = run1(OP_EXP, TYPES("bf16[1]"), INS(T1(DT_BF16, 1, 1)), 1, NULL, 0);
    ck_assert(tensor_f32(y)[0] == 2.71875f);
    tensor_free(y);
    expect_type(OP_SILU, TYPES("bf16[B,T,8]"), 1, NULL, 0, 0, "bf16[B,T,8]");
    expect_shape_error(OP_EXP, TYPES("i32[4]"), 1, NULL, 0, "exp: input i32[4] must be f32, bf16 or f16");
}
END_TEST

START_TEST(test_cast_rounding) {
    Attr to_bf16 = attr_dtype("to", DT_BF16), to_f16 = attr_dtype("to", DT_F16), to_i32 = attr_dtype("to", DT_I32);
    /* Ties go to even: 1+2^-8 -> 1, 1+3*2^-8 -> 1+2^-6. */
    Tensor *y = run1(OP_CAST, TYPES("f32[3]"), INS(T1(DT_F32, 3, 1 + 0x1p-8, 1 + 3 * 0x1p-8, 1 + 0x1p-8 + 0x1p-20)), 1,
                     &to_bf16, 1);
    assert_tensor(y, VALS(1, 1 + 0x1p-6, 1 + 0x1p-7), 0);
    ck_assert_int_eq(y->dtype, DT_BF16);
    tensor_free(y);
    y = run1(OP_CAST, TYPES("f32[5]"), INS(T1(DT_F32, 5, 1 + 0x1p-11, 1 + 3 * 0x1p-11, 65519, 65520, 3 * 0x1p-25)), 1,
             &to_f16, 1);
    assert_tensor(y, VALS(1, 1 + 0x1p-9, 65504, INFINITY, 0x1p-23), 0);
    tensor_free(y);
    y = run1(OP_CAST, TYPES("f32[4]"), INS(T1(DT_F32, 4, 2.7, -2.7, 0.5, -0.0)), 1, &to_i32, 1);
    assert_ints(y, SHAPE(2, -2, 0, 0));
    tensor_free(y);
    /* i64 -> bf16 rounds once: 2^24+2^16+1 is above the tie, so it rounds up,
     * where going through f32 first would land on the tie and round down. */
    y = run1(OP_CAST, TYPES("i64[3]"), INS(T1(DT_I64, 3, 16777216.0 + 65536 + 1, 257, 259)), 1, &to_bf16, 1);
    assert_tensor(y, VALS(16777216.0 + 131072, 256, 260), 0);
    tensor_free(y);
    expect_run_error(OP_CAST, TYPES("f32[2]"), INS(T1(DT_F32, 2, 1, 3e9)), 1, &to_i32, 1,
                     "cast: value 3e+09 at element 1 does not fit i32");
    expect_run_error(OP_CAST, TYPES("f32[1]"), INS(T1(DT_F32, 1, NAN)), 1, &to_i32, 1, "does not fit i32");
    Attr to_e4m3 = attr_dtype("to", DT_E4M3);
    expect_shape_error(OP_CAST, TYPES("f32[2]"), 1, &to_e4m3, 1, "cast: f32[2] to e4m3 is not supported");
    expect_type(OP_CAST, TYPES("f32[B,T]"), 1, &to_i32, 1, 0, "i32[B,T]");
}
END_TEST

typedef double (*RefBin)(double, double);
static double r_add(double a, double b) { return a + b; }
static double r_sub(double a, double b) { return a - b; }
static double r_mul(double a, double b) { return a * b; }
static double r_div(double a, double b) { return a / b; }
static double r_max(double a, double b) { return a > b ? a : b; }
static double r_min(double a, double b) { return a < b ? a : b; }

START_TEST(test_binary_broadcast) {
    static const struct {
        OpKind op;
        RefBin ref;
    } cases[] = {{OP_ADD, r_add}, {OP_SUB, r_sub}, {OP_MUL, r_mul}, {OP_DIV, r_div}, {OP_MAXIMUM, r_max}, {OP_MINIMUM, r_min}};
    unsigned seed = 1;
    for (size_t c = 0; c < 6; c++) {
        Tensor *a = rand_tensor(DT_F32, 3, SHAPE(2, 1, 3), &seed), *b = rand_tensor(DT_F32, 2, SHAPE(4, 1), &seed);
        double av[6], bv[4];
        for (int i = 0; i < 6; i++) av[i] = tensor_f32(a)[i];
        for (int i = 0; i < 4; i++) bv[i] = tensor_f32(b)[i];
        Tensor *y = run1(cases[c].op, TYPES("f32[2,1,3]", "f32[4,1]"), INS(a, b), 2, NULL, 0);
        ck_assert(y->rank == 3 && y->shape[0] == 2 && y->shape[1] == 4 && y->shape[2] == 3);
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 4; j++)
                for (int k = 0; k < 3; k++)
                    ck_assert(tensor_f32(y)[(i * 4 + j) * 3 + k] == (float)cases[c].ref(av[i * 3 + k], bv[j]));
        tensor_free(y);
    }
    expect_type(OP_ADD, TYPES("f32[B,T,64]", "f32[64]"), 2, NULL, 0, 0, "f32[B,T,64]");
    expect_type(OP_MUL, TYPES("bf16[B,1,8]", "f32[]"), 2, NULL, 0, 0, "bf16[B,1,8]");
    expect_type(OP_MUL, TYPES("f32[]", "f16[3]"), 2, NULL, 0, 0, "f16[3]");
    expect_shape_error(OP_ADD, TYPES("f32[B,T,64]", "f32[B,T,32]"), 2, NULL, 0,
                       "add: cannot broadcast f32[B,T,64] with f32[B,T,32]");
    expect_shape_error(OP_SUB, TYPES("f32[4]", "bf16[4]"), 2, NULL, 0, "sub: dtypes differ: f32[4] and bf16[4]");
    expect_shape_error(OP_ADD, TYPES("f32[T]", "f32[B]"), 2, NULL, 0, "cannot broadcast");
    /* bf16 * f32 scalar rounds to bf16; NaN propagates through maximum. */
    Tensor *y = run1(OP_MUL, TYPES("bf16[1]", "f32[]"), INS(T1(DT_BF16, 1, 1), tens(DT_F32, 0, NULL, VALS(1 + 0x1p-8))),
                     2, NULL, 0);
    ck_assert(tensor_f32(y)[0] == 1.0f);
    tensor_free(y);
    y = run1(OP_MAXIMUM, TYPES("f32[2]", "f32[2]"), INS(T1(DT_F32, 2, NAN, 1), T1(DT_F32, 2, 0, NAN)), 2, NULL, 0);
    ck_assert(isnan(tensor_f32(y)[0]) && isnan(tensor_f32(y)[1]));
    tensor_free(y);
}
END_TEST

START_TEST(test_where) {
    Tensor *y = run1(OP_WHERE, TYPES("f32[2,1]", "f32[1,3]", "f32[]"),
                     INS(tens(DT_F32, 2, SHAPE(2, 1), VALS(1, 0)), tens(DT_F32, 2, SHAPE(1, 3), VALS(1, 2, 3)),
                         tens(DT_F32, 0, NULL, VALS(-1))),
                     3, NULL, 0);
    ck_assert(y->shape[0] == 2 && y->shape[1] == 3);
    assert_tensor(y, VALS(1, 2, 3, -1, -1, -1), 0);
    tensor_free(y);
    expect_type(OP_WHERE, TYPES("bf16[B,T,1]", "f32[B,T,4]", "f32[]"), 3, NULL, 0, 0, "f32[B,T,4]");
    expect_shape_error(OP_WHERE, TYPES("i32[2]", "f32[2]", "f32[2]"), 3, NULL, 0, "where: condition i32[2] must be");
    expect_shape_error(OP_WHERE, TYPES("f32[3]", "f32[2]", "f32[2]"), 3, NULL, 0, "where: cannot broadcast f32[3]");
}
END_TEST

/* ---- reductions ---- */
START_TEST(test_reduce) {
    unsigned seed = 7;
    const OpKind ops[] = {OP_SUM, OP_MEAN, OP_MAX};
    for (int o = 0; o < 3; o++)
        for (int keep = 0; keep < 2; keep++) {
            Tensor *x = rand_tensor(DT_F32, 3, SHAPE(2, 3, 4), &seed);
            float xv[24];
            memcpy(xv, x->data, sizeof xv);
            Attr a[] = {attr_int("axis", -2), attr_int("keepdim", keep)};
            Tensor *y = run1(ops[o], TYPES("f32[2,3,4]"), INS(x), 1, a, 2);
            ck_assert_int_eq(y->rank, keep ? 3 : 2);
            for (int i = 0; i < 2; i++)
                for (int k = 0; k < 4; k++) {
                    double s = 0, m = -INFINITY;
                    for (int j = 0; j < 3; j++) s += xv[(i * 3 + j) * 4 + k], m = fmax(m, xv[(i * 3 + j) * 4 + k]);
                    double want = ops[o] == OP_SUM ? s : ops[o] == OP_MEAN ? s / 3 : m;
                    assert_close(tensor_f32(y)[i * 4 + k], want, REL);
                }
            tensor_free(y);
        }
    Attr a1 = attr_int("axis", 1), keep = attr_int("keepdim", 1);
    expect_type(OP_SUM, TYPES("f32[B,T,8]"), 1, &a1, 1, 0, "f32[B,8]");
    expect_type(OP_MEAN, TYPES("bf16[B,T,8]"), 1, (Attr[]){a1, keep}, 2, 0, "bf16[B,1,8]");
    Attr a3 = attr_int("axis", 3);
    expect_shape_error(OP_MAX, TYPES("f32[2,3,4]"), 1, &a3, 1, "max: axis 3 is out of range for rank 3");
    Attr am4 = attr_int("axis", -4);
    expect_shape_error(OP_SUM, TYPES("f32[2,3,4]"), 1, &am4, 1, "axis -4 is out of range");
    Tensor *y = run1(OP_MAX, TYPES("f32[3]"), INS(T1(DT_F32, 3, 1, NAN, 2)), 1, (Attr[]){attr_int("axis", 0)}, 1);
    ck_assert(isnan(tensor_f32(y)[0]));
    tensor_free(y);
}
END_TEST

START_TEST(test_mean_all_softmax) {
    Tensor *y = run1(OP_MEAN_ALL, TYPES("bf16[2,2]"), INS(tens(DT_BF16, 2, SHAPE(2, 2), VALS(1, 2, 3, 4.5))), 1, NULL, 0);
    ck_assert_int_eq(y->dtype, DT_F32);
    ck_assert_int_eq(y->rank, 0);
    assert_close(tensor_f32(y)[0], 2.625, 0);
    tensor_free(y);
    expect_type(OP_MEAN_ALL, TYPES("bf16[B,T]"), 1, NULL, 0, 0, "f32[]");
    /* softmax along axis 0 of [3,2]; large values stay finite (max subtracted). */
    Attr ax0 = attr_int("axis", 0);
    y = run1(OP_SOFTMAX, TYPES("f32[3,2]"), INS(tens(DT_F32, 2, SHAPE(3, 2), VALS(1, 1000, 2, 1001, 3, 1002))), 1, &ax0, 1);
    double z = exp(-2) + exp(-1) + 1;
    assert_tensor(y, VALS(exp(-2) / z, exp(-2) / z, exp(-1) / z, exp(-1) / z, 1 / z, 1 / z), REL);
    tensor_free(y);
    y = run1(OP_SOFTMAX, TYPES("f32[1,2]"), INS(tens(DT_F32, 2, SHAPE(1, 2), VALS(0, log(3.0)))), 1, NULL, 0);
    assert_tensor(y, VALS(0.25, 0.75), REL);
    tensor_free(y);
    Attr ax2 = attr_int("axis", 2);
    expect_shape_error(OP_SOFTMAX, TYPES("f32[3,2]"), 1, &ax2, 1, "softmax: axis 2 is out of range for rank 2");
}
END_TEST

/* ---- linear, embedding ---- */
static void check_linear(int64_t rows, int64_t n, int64_t k, unsigned seed) {
    Tensor *x = rand_tensor(DT_F32, 2, SHAPE(rows, k), &seed), *w = rand_tensor(DT_F32, 2, SHAPE(n, k), &seed);
    float *xv = xmalloc(sizeof(float) * (size_t)(rows * k)), *wv = xmalloc(sizeof(float) * (size_t)(n * k));
    memcpy(xv, x->data, sizeof(float) * (size_t)(rows * k));
    memcpy(wv, w->data, sizeof(float) * (size_t)(n * k));
    char tx[64], tw[64];
    snprintf(tx, sizeof tx, "f32[%lld,%lld]", (long long)rows, (long long)k);
    snprintf(tw, sizeof tw, "f32[%lld,%lld]", (long long)n, (long long)k);
    Tensor *y = run1(OP_LINEAR, TYPES(tx, tw), INS(x, w), 2, NULL, 0);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < n; c++) {
            double s = 0;
            for (int64_t i = 0; i < k; i++) s += (double)xv[r * k + i] * wv[c * k + i];
            /* Same fixed order in fp64: identical bits whatever the thread split. */
            ck_assert(tensor_f32(y)[r * n + c] == (float)s);
        }
    tensor_free(y);
    free(xv);
    free(wv);
}

START_TEST(test_linear) {
    check_linear(3, 2, 4, 3);
    check_linear(512, 64, 64, 4); /* big enough to run on several threads */
    /* symbolic leading dims evaluated at B=2, T=3 */
    Tensor *out[1];
    Err e = {0};
    Tensor *x = tens(DT_F32, 3, SHAPE(2, 3, 2), VALS(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12));
    Tensor *w = tens(DT_F32, 2, SHAPE(1, 2), VALS(1, -1));
    ck_assert_int_eq(run_op(OP_LINEAR, TYPES("f32[B,T,2]", "f32[1,2]"), INS(x, w), 2, NULL, 0, 2, 3, out, &e), 0);
    ck_assert(out[0]->rank == 3 && out[0]->shape[2] == 1);
    assert_tensor(out[0], VALS(-1, -1, -1, -1, -1, -1), 0);
    tensor_free(out[0]);
    expect_type(OP_LINEAR, TYPES("bf16[B,T,64]", "bf16[32,64]"), 2, NULL, 0, 0, "bf16[B,T,32]");
    expect_shape_error(OP_LINEAR, TYPES("f32[B,T,64]", "f32[32,48]"), 2, NULL, 0,
                       "linear: x f32[B,T,64] has 64 features but w f32[32,48] expects 48");
    expect_shape_error(OP_LINEAR, TYPES("f32[B,64]", "bf16[32,64]"), 2, NULL, 0, "linear: dtypes differ");
    expect_shape_error(OP_LINEAR, TYPES("f32[B,64]", "f32[64]"), 2, NULL, 0, "w f32[64] rank 2");
}
END_TEST

START_TEST(test_embedding) {
    Tensor *w = tens(DT_F32, 2, SHAPE(4, 2), VALS(0, 1, 10, 11, 20, 21, 30, 31));
    Tensor *y = run1(OP_EMBEDDING, TYPES("f32[4,2]", "i64[3]"), INS(w, T1(DT_I64, 3, 3, 0, 2)), 2, NULL, 0);
    assert_tensor(y, VALS(30, 31, 0, 1, 20, 21), 0);
    tensor_free(y);
    expect_run_error(OP_EMBEDDING, TYPES("f32[4,2]", "i32[2]"),
                     INS(tens(DT_F32, 2, SHAPE(4, 2), NULL), T1(DT_I32, 2, 1, 7)), 2, NULL, 0,
                     "embedding: id 7 at position 1 is outside [0, 4)");
    expect_run_error(OP_EMBEDDING, TYPES("f32[4,2]", "i32[1]"), INS(tens(DT_F32, 2, SHAPE(4, 2), NULL), T1(DT_I32, 1, -1)),
                     2, NULL, 0, "id -1");
    expect_type(OP_EMBEDDING, TYPES("bf16[256,64]", "i64[B,T]"), 2, NULL, 0, 0, "bf16[B,T,64]");
    expect_shape_error(OP_EMBEDDING, TYPES("f32[256,64]", "f32[B,T]"), 2, NULL, 0,
                       "embedding: ids f32[B,T] must be an i32 or i64 index tensor");
    expect_shape_error(OP_EMBEDDING, TYPES("f32[256]", "i32[B,T]"), 2, NULL, 0, "must have rank 2");
}
END_TEST

/* ---- layout ---- */
static Dim dm(const char *text) {
    Dim d;
    Err e = {0};
    ck_assert_int_gt(dim_parse(text, &d, &e), 0);
    return d;
}

START_TEST(test_reshape) {
    Dim bt4[2] = {dm("B*T"), dm("4")}, b8[2] = {dm("B"), dm("8")}, two_six[2] = {dm("2"), dm("3")};
    Attr s1 = attr_dims("shape", 2, bt4), s2 = attr_dims("shape", 2, b8), s3 = attr_dims("shape", 2, two_six);
    expect_type(OP_RESHAPE, TYPES("f32[B,T,4]"), 1, &s1, 1, 0, "f32[B*T,4]");
    expect_shape_error(OP_RESHAPE, TYPES("f32[B,T,4]"), 1, &s2, 1,
                       "reshape: f32[B,T,4] has B*T*4 elements but shape f32[B,8] has B*8");
    Tensor *y = run1(OP_RESHAPE, TYPES("i32[6]"), INS(T1(DT_I32, 6, 1, 2, 3, 4, 5, 6)), 1, &s3, 1);
    ck_assert(y->rank == 2 && y->shape[0] == 2 && y->shape[1] == 3 && y->dtype == DT_I32);
    assert_ints(y, SHAPE(1, 2, 3, 4, 5, 6));
    tensor_free(y);
}
END_TEST

#define slice_of(axis, start, end) \
    (Attr[]){attr_int("axis", axis), attr_dims("start", 1, start), attr_dims("end", 1, end)}

START_TEST(test_slice) {
    Dim one = dm("1"), three = dm("3"), t = dm("T"), tm2 = dm("T-2"), tm1 = dm("T-1"), five = dm("5"), zero = dm("0");
    Tensor *x = tens(DT_F32, 2, SHAPE(2, 4), VALS(0, 1, 2, 3, 10, 11, 12, 13));
    Tensor *y = run1(OP_SLICE, TYPES("f32[2,4]"), INS(x), 1, slice_of(1, &one, &three), 3);
    ck_assert(y->shape[0] == 2 && y->shape[1] == 2);
    assert_tensor(y, VALS(1, 2, 11, 12), 0);
    tensor_free(y);
    expect_type(OP_SLICE, TYPES("f32[B,T,8]"), 1, slice_of(1, &one, &t), 3, 0, "f32[B,T-1,8]");
    expect_type(OP_SLICE, TYPES("f32[B,T,8]"), 1, slice_of(-2, &zero, &tm1), 3, 0, "f32[B,T-1,8]");
    /* symbolic start: the last two positions, evaluated at T=4 */
    Tensor *out[1];
    Err e = {0};
    x = tens(DT_F32, 2, SHAPE(1, 4), VALS(5, 6, 7, 8));
    ck_assert_int_eq(run_op(OP_SLICE, TYPES("f32[B,T]"), INS(x), 1, slice_of(1, &tm2, &t), 3, 1, 4, out, &e), 0);
    assert_tensor(out[0], VALS(7, 8), 0);
    tensor_free(out[0]);
    expect_shape_error(OP_SLICE, TYPES("f32[2,4]"), 1, slice_of(1, &one, &five), 3,
                       "slice: [1, 5) is out of bounds for axis 1 of f32[2,4]");
    expect_shape_error(OP_SLICE, TYPES("f32[2,4]"), 1, slice_of(1, &three, &one), 3, "out of bounds");
    expect_shape_error(OP_SLICE, TYPES("f32[B,T+1]"), 1, slice_of(1, &tm2, &t), 3,
                       "slice: start or end must be a constant, or end the size of the axis");
    expect_shape_error(OP_SLICE, TYPES("f32[2,4]"), 1, slice_of(2, &one, &three), 3, "axis 2 is out of range");
    Dim two[2] = {one, three};
    Attr bad[] = {attr_int("axis", 0), attr_dims("start", 2, two), attr_dims("end", 1, &three)};
    expect_shape_error(OP_SLICE, TYPES("f32[2,4]"), 1, bad, 3, "slice: start and end must be one dim each");
}
END_TEST

START_TEST(test_concat_stack) {
    Attr ax1 = attr_int("axis", 1);
    Tensor *y = run1(OP_CONCAT, TYPES("f32[2,1]", "f32[2,2]"),
                     INS(tens(DT_F32, 2, SHAPE(2, 1), VALS(1, 2)), tens(DT_F32, 2, SHAPE(2, 2), VALS(3, 4, 5, 6))), 2,
                     &ax1, 1);
    ck_assert(y->shape[0] == 2 && y->shape[1] == 3);
    assert_tensor(y, VALS(1, 3, 4, 2, 5, 6), 0);
    tensor_free(y);
    expect_type(OP_CONCAT, TYPES("f32[B,T,4]", "f32[B,T-1,4]", "f32[B,1,4]"), 3, &ax1, 1, 0, "f32[B,T*2,4]");
    expect_shape_error(OP_CONCAT, TYPES("f32[2,1]", "f32[3,2]"), 2, &ax1, 1,
                       "concat: f32[2,1] and f32[3,2] differ outside axis 1");
    expect_shape_error(OP_CONCAT, TYPES("f32[2,1]", "bf16[2,1]"), 2, &ax1, 1, "differ outside axis 1");
    y = run1(OP_STACK, TYPES("i64[2]", "i64[2]"), INS(T1(DT_I64, 2, 1, 2), T1(DT_I64, 2, 3, 4)), 2, NULL, 0);
    ck_assert(y->rank == 2 && y->shape[0] == 2 && ((int64_t *)y->data)[3] == 4 && ((int64_t *)y->data)[1] == 2);
    tensor_free(y);
    expect_type(OP_STACK, TYPES("f32[B,4]", "f32[B,4]", "f32[B,4]"), 3, NULL, 0, 0, "f32[3,B,4]");
    expect_shape_error(OP_STACK, TYPES("f32[4]", "f32[3]"), 2, NULL, 0, "stack: inputs differ: f32[4] and f32[3]");
}
END_TEST

START_TEST(test_expand) {
    Dim s23[2] = {dm("2"), dm("3")}, s4[1] = {dm("4")}, bt3[3] = {dm("B"), dm("T"), dm("3")};
    Attr a = attr_dims("shape", 2, s23);
    Tensor *y = run1(OP_EXPAND, TYPES("f32[3]"), INS(T1(DT_F32, 3, 1, 2, 3)), 1, &a, 1);
    assert_tensor(y, VALS(1, 2, 3, 1, 2, 3), 0);
    tensor_free(y);
    y = run1(OP_EXPAND, TYPES("f32[2,1]"), INS(tens(DT_F32, 2, SHAPE(2, 1), VALS(7, 8))), 1, &a, 1);
    assert_tensor(y, VALS(7, 7, 7, 8, 8, 8), 0);
    tensor_free(y);
    Attr b = attr_dims("shape", 3, bt3);
    expect_type(OP_EXPAND, TYPES("f32[1,T,1]"), 1, &b, 1, 0, "f32[B,T,3]");
    Attr c = attr_dims("shape", 1, s4);
    expect_shape_error(OP_EXPAND, TYPES("f32[3]"), 1, &c, 1, "expand: cannot expand f32[3] to f32[4]");
    expect_shape_error(OP_EXPAND, TYPES("f32[2,3]"), 1, (Attr[]){attr_dims("shape", 1, (Dim[]){dm("3")})}, 1,
                       "cannot expand f32[2,3] to f32[3]");
}
END_TEST

/* ---- routing ---- */
START_TEST(test_topk) {
    Attr k2 = attr_int("k", 2), k3 = attr_int("k", 3), k5 = attr_int("k", 5);
    Tensor *out[2];
    Err e = {0};
    Tensor *x = tens(DT_F32, 2, SHAPE(2, 4), VALS(1, 3, 3, 2, -1, -1, -1, 0));
    ck_assert_int_eq(run_op(OP_TOPK, TYPES("f32[2,4]"), INS(x), 1, &k3, 1, 1, 1, out, &e), 0);
    assert_tensor(out[0], VALS(3, 3, 2, 0, -1, -1), 0);
    assert_ints(out[1], SHAPE(1, 2, 3, 3, 0, 1)); /* ties: lower index first */
    tensor_free(out[0]);
    tensor_free(out[1]);
    expect_type(OP_TOPK, TYPES("bf16[B,T,8]"), 1, &k2, 1, 0, "bf16[B,T,2]");
    expect_type(OP_TOPK, TYPES("bf16[B,T,8]"), 1, &k2, 1, 1, "i32[B,T,2]");
    expect_shape_error(OP_TOPK, TYPES("f32[B,4]"), 1, &k5, 1, "topk: k=5 is not in [1, size of the last axis] for f32[B,4]");
    expect_shape_error(OP_TOPK, TYPES("i32[4]"), 1, &k2, 1, "must be f32, bf16 or f16");
    expect_run_error(OP_TOPK, TYPES("f32[3]"), INS(T1(DT_F32, 3, 1, NAN, 2)), 1, &k2, 1, "topk: input element 1 is NaN");
    ck_assert_int_eq(run_op(OP_TOPK, TYPES("f32[T]"), INS(T1(DT_F32, 1, 1)), 1, &k2, 1, 1, 1, out, &e), -1);
    ck_assert_msg(strstr(e.msg, "k=2 exceeds the last axis' size 1"), "%s", e.msg);
}
END_TEST

START_TEST(test_gather_one_hot) {
    Tensor *y = run1(OP_GATHER, TYPES("f32[2,3]", "i32[2,2]"),
                     INS(tens(DT_F32, 2, SHAPE(2, 3), VALS(0, 1, 2, 10, 11, 12)), tens(DT_I32, 2, SHAPE(2, 2), VALS(2, 0, 1, 1))),
                     2, NULL, 0);
    assert_tensor(y, VALS(2, 0, 11, 11), 0);
    tensor_free(y);
    expect_run_error(OP_GATHER, TYPES("f32[1,3]", "i64[1,1]"),
                     INS(tens(DT_F32, 2, SHAPE(1, 3), NULL), tens(DT_I64, 2, SHAPE(1, 1), VALS(3))), 2, NULL, 0,
                     "gather: index 3 at position 0 is outside [0, 3)");
    expect_type(OP_GATHER, TYPES("f32[B,T,8]", "i32[B,T,2]"), 2, NULL, 0, 0, "f32[B,T,2]");
    expect_shape_error(OP_GATHER, TYPES("f32[B,T,8]", "i32[B,2]"), 2, NULL, 0,
                       "gather: input f32[B,T,8] and indices i32[B,2] must agree on all but the last axis");
    expect_shape_error(OP_GATHER, TYPES("f32[B,8]", "f32[B,2]"), 2, NULL, 0, "i32 or i64 index tensor");
    Attr n3 = attr_int("n", 3);
    y = run1(OP_ONE_HOT, TYPES("i64[2]"), INS(T1(DT_I64, 2, 2, 0)), 1, &n3, 1);
    assert_tensor(y, VALS(0, 0, 1, 1, 0, 0), 0);
    tensor_free(y);
    expect_run_error(OP_ONE_HOT, TYPES("i32[1]"), INS(T1(DT_I32, 1, 3)), 1, &n3, 1,
                     "one_hot: index 3 at position 0 is outside [0, 3)");
    expect_type(OP_ONE_HOT, TYPES("i32[B,T]"), 1, &n3, 1, 0, "f32[B,T,3]");
    expect_shape_error(OP_ONE_HOT, TYPES("f32[B,T]"), 1, &n3, 1, "one_hot: indices f32[B,T] must be an i32 or i64");
    expect_shape_error(OP_ONE_HOT, TYPES("i32[B,T]"), 1, (Attr[]){attr_int("n", 0)}, 1, "one_hot: n must be >= 1");
}
END_TEST

/* MoE trio against a dense per-token computation: y[t] = sum_k g[t,k] * W[idx[t,k]] x[t]. */
START_TEST(test_moe_pipeline) {
    enum { NT = 4, H = 3, K = 2, E = 3, N = 2 };
    unsigned seed = 11;
    const double idx_v[NT * K] = {2, 0, 0, 1, 2, 1, 0, 2};
    Tensor *x = rand_tensor(DT_F32, 2, SHAPE(NT, H), &seed), *w = rand_tensor(DT_F32, 3, SHAPE(E, N, H), &seed);
    Tensor *g = rand_tensor(DT_F32, 2, SHAPE(NT, K), &seed);
    float xv[NT * H], wv[E * N * H], gv[NT * K];
    memcpy(xv, x->data, sizeof xv), memcpy(wv, w->data, sizeof wv), memcpy(gv, g->data, sizeof gv);
    Attr ex = attr_int("experts", E);
    Tensor *d[2];
    Err e = {0};
    ck_assert_int_eq(run_op(OP_MOE_DISPATCH, TYPES("f32[4,3]", "i32[4,2]"),
                            INS(x, tens(DT_I32, 2, SHAPE(NT, K), idx_v)), 2, &ex, 1, 1, 1, d, &e), 0);
    assert_ints(d[1], SHAPE(3, 2, 3));
    /* rows by expert, then token, then slot: e0: t0 t1 t3, e1: t1 t2, e2: t0 t2 t3 */
    const int token_of_row[8] = {0, 1, 3, 1, 2, 0, 2, 3};
    for (int r = 0; r < 8; r++)
        for (int c = 0; c < H; c++) ck_assert(tensor_f32(d[0])[r * H + c] == xv[token_of_row[r] * H + c]);
    Tensor *yd = run1(OP_GROUPED_LINEAR, TYPES("f32[8,3]", "i32[3]", "f32[3,2,3]"), INS(d[0], d[1], w), 3, NULL, 0);
    Tensor *y = run1(OP_MOE_COMBINE, TYPES("f32[8,2]", "i32[4,2]", "f32[4,2]"),
                     INS(yd, tens(DT_I32, 2, SHAPE(NT, K), idx_v), g), 3, NULL, 0);
    for (int t = 0; t < NT; t++)
        for (int c = 0; c < N; c++) {
            double want = 0;
            for (int k = 0; k < K; k++) {
                int ex_id = (int)idx_v[t * K + k];
                double dot = 0;
                for (int i = 0; i < H; i++) dot += (double)xv[t * H + i] * wv[(ex_id * N + c) * H + i];
                want += gv[t * K + k] * (double)(float)dot;
            }
            assert_close(tensor_f32(y)[t * N + c], want, REL);
        }
    tensor_free(y);
}
END_TEST

START_TEST(test_moe_shapes_and_errors) {
    Attr ex = attr_int("experts", 8);
    expect_type(OP_MOE_DISPATCH, TYPES("bf16[B,T,16]", "i32[B,T,2]"), 2, &ex, 1, 0, "bf16[B*T*2,16]");
    expect_type(OP_MOE_DISPATCH, TYPES("bf16[B,T,16]", "i32[B,T,2]"), 2, &ex, 1, 1, "i32[8]");
    expect_shape_error(OP_MOE_DISPATCH, TYPES("f32[B,T,16]", "i32[B,2]"), 2, &ex, 1,
                       "moe_dispatch: x f32[B,T,16] and indices i32[B,2] must agree");
    expect_shape_error(OP_MOE_DISPATCH, TYPES("f32[B,16]", "i32[B,2]"), 2, (Attr[]){attr_int("experts", 0)}, 1,
                       "experts must be >= 1");
    Attr e2 = attr_int("experts", 2);
    expect_run_error(OP_MOE_DISPATCH, TYPES("f32[1,2]", "i32[1,1]"),
                     INS(tens(DT_F32, 2, SHAPE(1, 2), NULL), tens(DT_I32, 2, SHAPE(1, 1), VALS(2))), 2, &e2, 1,
                     "moe_dispatch: expert index 2 at position 0 is outside [0, 2)");
    expect_type(OP_GROUPED_LINEAR, TYPES("f32[B*T*2,16]", "i32[8]", "f32[8,32,16]"), 3, NULL, 0, 0, "f32[B*T*2,32]");
    expect_shape_error(OP_GROUPED_LINEAR, TYPES("f32[4,16]", "i32[8]", "f32[4,32,16]"), 3, NULL,
                       0, "grouped_linear: w f32[4,32,16] has a different expert count than counts i32[8]");
    expect_shape_error(OP_GROUPED_LINEAR, TYPES("f32[4,16]", "i32[8]", "f32[8,32,8]"), 3, NULL, 0,
                       "grouped_linear: xd f32[4,16] has a different feature count than w f32[8,32,8] expects");
    expect_shape_error(OP_GROUPED_LINEAR, TYPES("f32[4,16]", "i32[8]", "f32[8,16]"), 3, NULL, 0,
                       "want xd[M,K], counts[E], w[E,N,K]");
    expect_run_error(OP_GROUPED_LINEAR, TYPES("f32[3,1]", "i32[2]", "f32[2,1,1]"),
                     INS(tens(DT_F32, 2, SHAPE(3, 1), NULL), T1(DT_I32, 2, 1, 1), tens(DT_F32, 3, SHAPE(2, 1, 1), NULL)), 3,
                     NULL, 0, "grouped_linear: counts sum to 2 but xd has 3 rows");
    expect_run_error(OP_GROUPED_LINEAR, TYPES("f32[3,1]", "i32[2]", "f32[2,1,1]"),
                     INS(tens(DT_F32, 2, SHAPE(3, 1), NULL), T1(DT_I32, 2, 4, -1), tens(DT_F32, 3, SHAPE(2, 1, 1), NULL)), 3,
                     NULL, 0, "counts[0]=4 overruns the 3 rows");
    expect_type(OP_MOE_COMBINE, TYPES("bf16[B*T*2,16]", "i32[B,T,2]", "f32[B,T,2]"), 3, NULL, 0, 0, "bf16[B,T,16]");
    expect_shape_error(OP_MOE_COMBINE, TYPES("f32[B*T,16]", "i32[B,T,2]", "f32[B,T,2]"), 3, NULL, 0,
                       "moe_combine: yd f32[B*T,16] must have one row per (token, slot) of indices i32[B,T,2]");
    expect_shape_error(OP_MOE_COMBINE, TYPES("f32[B*T*2,16]", "i32[B,T,2]", "f32[B,T,3]"), 3, NULL, 0,
                       "weights f32[B,T,3] and indices i32[B,T,2] differ");
    expect_run_error(OP_MOE_COMBINE, TYPES("f32[1,1]", "i32[1,1]", "f32[1,1]"),
                     INS(tens(DT_F32, 2, SHAPE(1, 1), NULL), tens(DT_I32, 2, SHAPE(1, 1), VALS(-1)),
                         tens(DT_F32, 2, SHAPE(1, 1), NULL)),
                     3, NULL, 0, "moe_combine: expert index -1");
}
END_TEST

/* ---- attention ---- */
START_TEST(test_rope) {
    enum { B = 2, T = 3, NH = 2, D = 4 };
    unsigned seed = 5;
    Tensor *x = rand_tensor(DT_F32, 4, SHAPE(B, T, NH, D), &seed);
    float xv[B * T * NH * D];
    memcpy(xv, x->data, sizeof xv);
    const float f[2] = {1.0f, 0.01f};
    Attr scale = attr_float("scale", 0.5);
    Tensor *out[1];
    Err e = {0};
    ck_assert_int_eq(run_op(OP_ROPE, TYPES("f32[B,T,2,4]", "f32[2]"), INS(x, T1(DT_F32, 2, f[0], f[1])), 2, &scale, 1,
                            B, T, out, &e),
                     0);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < NH; h++)
                for (int j = 0; j < D / 2; j++) {
                    int at = ((b * T + t) * NH + h) * D + 2 * j;
                    double a = t * (double)f[j], c = 0.5 * cos(a), s = 0.5 * sin(a);
                    assert_close(tensor_f32(out[0])[at], xv[at] * c - xv[at + 1] * s, REL);
                    assert_close(tensor_f32(out[0])[at + 1], xv[at] * s + xv[at + 1] * c, REL);
                }
    tensor_free(out[0]);
    expect_type(OP_ROPE, TYPES("bf16[B,T,64]", "f32[32]"), 2, NULL, 0, 0, "bf16[B,T,64]");
    expect_shape_error(OP_ROPE, TYPES("f32[B,T,5]", "f32[2]"), 2, NULL, 0,
                       "rope: the last dim of x f32[B,T,5] must be an even constant");
    expect_shape_error(OP_ROPE, TYPES("f32[B,T,8]", "f32[8]"), 2, NULL, 0,
                       "rope: inv_freq f32[8] must be f32[4] for x f32[B,T,8]");
    expect_shape_error(OP_ROPE, TYPES("f32[T,8]", "f32[4]"), 2, NULL, 0, "must be [B,T,...,d]");
}
END_TEST

/* Explicit loops with the causal mask written as -inf. */
static void sdpa_ref(const float *q, const float *k, const float *v, int b_, int t_, int s_, int h_, int dk, int dv,
                     double scale, int causal, double *o) {
    for (int b = 0; b < b_; b++)
        for (int t = 0; t < t_; t++)
            for (int h = 0; h < h_; h++) {
                double sc[16], m = -INFINITY, z = 0;
                for (int s = 0; s < s_; s++) {
                    double dot = 0;
                    for (int i = 0; i < dk; i++) dot += (double)q[((b * t_ + t) * h_ + h) * dk + i] * k[((b * s_ + s) * h_ + h) * dk + i];
                    sc[s] = causal && s > t ? -INFINITY : scale * dot;
                    m = fmax(m, sc[s]);
                }
                for (int s = 0; s < s_; s++) z += exp(sc[s] - m);
                for (int c = 0; c < dv; c++) {
                    double acc = 0;
                    for (int s = 0; s < s_; s++) acc += exp(sc[s] - m) / z * v[((b * s_ + s) * h_ + h) * dv + c];
                    o[((b * t_ + t) * h_ + h) * dv + c] = acc;
                }
            }
}

static void check_sdpa(int b, int t, int s, int h, int dk, int dv, int causal) {
    unsigned seed = 9;
    Tensor *q = rand_tensor(DT_F32, 4, SHAPE(b, t, h, dk), &seed), *k = rand_tensor(DT_F32, 4, SHAPE(b, s, h, dk), &seed);
    Tensor *v = rand_tensor(DT_F32, 4, SHAPE(b, s, h, dv), &seed);
    float *qv = xmalloc(sizeof(float) * (size_t)q->numel), *kv = xmalloc(sizeof(float) * (size_t)k->numel);
    float *vv = xmalloc(sizeof(float) * (size_t)v->numel);
    memcpy(qv, q->data, sizeof(float) * (size_t)q->numel);
    memcpy(kv, k->data, sizeof(float) * (size_t)k->numel);
    memcpy(vv, v->data, sizeof(float) * (size_t)v->numel);
    char tq[64], tk[64], tv[64];
    snprintf(tq, sizeof tq, "f32[%d,%d,%d,%d]", b, t, h, dk);
    snprintf(tk, sizeof tk, "f32[%d,%d,%d,%d]", b, s, h, dk);
    snprintf(tv, sizeof tv, "f32[%d,%d,%d,%d]", b, s, h, dv);
    Attr a[] = {attr_float("scale", 0.7), attr_int("causal", causal)};
    Tensor *y = run1(OP_SDPA, TYPES(tq, tk, tv), INS(q, k, v), 3, a, 2);
    double *want = xmalloc(sizeof(double) * (size_t)y->numel);
    sdpa_ref(qv, kv, vv, b, t, s, h, dk, dv, 0.7, causal, want);
    assert_tensor(y, want, REL);
    tensor_free(y);
    free(want), free(qv), free(kv), free(vv);
}

START_TEST(test_sdpa) {
    check_sdpa(2, 3, 3, 2, 4, 5, 1);
    check_sdpa(2, 3, 5, 2, 4, 3, 0);
    check_sdpa(2, 16, 16, 4, 32, 32, 1); /* several threads */
    Attr sc = attr_float("scale", 0.125), nc = attr_int("causal", 0);
    expect_type(OP_SDPA, TYPES("bf16[B,T,4,24]", "bf16[B,T,4,24]", "bf16[B,T,4,16]"), 3, &sc, 1, 0, "bf16[B,T,4,16]");
    expect_type(OP_SDPA, TYPES("f32[B,T,4,24]", "f32[B,T*2,4,24]", "f32[B,T*2,4,16]"), 3, (Attr[]){sc, nc}, 2, 0,
                "f32[B,T,4,16]");
    expect_shape_error(OP_SDPA, TYPES("f32[B,T,4,24]", "f32[B,T-1,4,24]", "f32[B,T-1,4,16]"), 3, &sc, 1,
                       "sdpa: causal attention needs as many queries as keys: q f32[B,T,4,24], k f32[B,T-1,4,24]");
    expect_shape_error(OP_SDPA, TYPES("f32[B,T,4,24]", "f32[B,T,4,16]", "f32[B,T,4,16]"), 3, &sc, 1,
                       "sdpa: q f32[B,T,4,24] and k f32[B,T,4,16] differ in head dim");
    expect_shape_error(OP_SDPA, TYPES("f32[B,T,4,24]", "f32[B,T,2,24]", "f32[B,T,2,16]"), 3, &sc, 1,
                       "batch or head counts differ");
    expect_shape_error(OP_SDPA, TYPES("f32[B,T,4,24]", "f32[B,T,4,24]", "f32[B,T-1,4,16]"), 3, (Attr[]){sc, nc}, 2,
                       "differ in length");
    expect_shape_error(OP_SDPA, TYPES("f32[B,T,4,24]", "bf16[B,T,4,24]", "f32[B,T,4,16]"), 3, &sc, 1, "dtypes differ");
    expect_shape_error(OP_SDPA, TYPES("f32[B,T,4,24]", "f32[B,T,4,24]", "f32[B,T,4,16]"), 3, NULL, 0,
                       "needs attribute 'scale'");
}
END_TEST

/* ---- loss ---- */
START_TEST(test_cross_entropy) {
    Tensor *y = run1(OP_CROSS_ENTROPY, TYPES("f32[2,3]", "i64[2]"),
                     INS(tens(DT_F32, 2, SHAPE(2, 3), VALS(1, 2, 3, 1000, 0, -1000)), T1(DT_I64, 2, 0, 1)), 2, NULL, 0);
    double lse0 = log(exp(1.0) + exp(2.0) + exp(3.0));
    assert_tensor(y, VALS(lse0 - 1, 1000), REL);
    tensor_free(y);
    expect_run_error(OP_CROSS_ENTROPY, TYPES("f32[1,3]", "i32[1]"), INS(tens(DT_F32, 2, SHAPE(1, 3), NULL), T1(DT_I32, 1, 3)),
                     2, NULL, 0, "cross_entropy: target 3 at position 0 is outside [0, 3)");
    expect_type(OP_CROSS_ENTROPY, TYPES("bf16[B,T,256]", "i64[B,T]"), 2, NULL, 0, 0, "f32[B,T]");
    expect_shape_error(OP_CROSS_ENTROPY, TYPES("f32[B,T,256]", "i64[B,T-1]"), 2, NULL, 0,
                       "cross_entropy: targets i64[B,T-1] must match the leading dims of logits f32[B,T,256]");
    expect_shape_error(OP_CROSS_ENTROPY, TYPES("f32[B,T,256]", "f32[B,T]"), 2, NULL, 0, "i32 or i64 index tensor");
}
END_TEST

/* ---- the graph walk ---- */
#include <sys/resource.h>

static long max_rss_mb(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_maxrss / 1024;
}

/* 1000 neg nodes on a 1 MiB tensor: kept alive they would need 1 GiB; freed
 * after their last use the peak stays far below (ASan's quarantine included). */
START_TEST(test_chain_frees_values) {
    Graph *g = graph_new();
    Err e = {0};
    ValueId v = ir_input(g, "x", ty("f32[B,T]"), &e);
    for (int i = 0; i < 1000; i++) ck_assert_int_ge(ir_emit(g, OP_NEG, &v, 1, NULL, 0, &v, &e), 0);
    ck_assert_int_eq(ir_add_output(g, "y", v, &e), 0);
    TensorSet feeds, results;
    tset_init(&feeds);
    tset_init(&results);
    Tensor *x = tensor_new(DT_F32, 2, SHAPE(512, 512));
    for (int64_t i = 0; i < x->numel; i++) tensor_f32(x)[i] = (float)i;
    tset_put(&feeds, "x", x);
    long before = max_rss_mb();
    InterpOptions opt = {.batch = 512, .seq = 512};
    ck_assert_int_eq(interp_run(g, &feeds, &opt, &results, &e), 0);
    long grown = max_rss_mb() - before;
    ck_assert_msg(grown < 600, "peak memory grew by %ld MiB", grown);
    Tensor *y = tset_get(&results, "y");
    ck_assert(tensor_f32(y)[5] == 5.0f && tensor_f32(y)[262143] == 262143.0f); /* an even number of negations */
    tset_free(&feeds);
    tset_free(&results);
    graph_free(g);
}
END_TEST

START_TEST(test_outputs_copied_when_shared) {
    Graph *g = graph_new();
    Err e = {0};
    ValueId x = ir_input(g, "x", ty("f32[2]"), &e), y;
    ck_assert_int_ge(ir_emit(g, OP_EXP, &x, 1, NULL, 0, &y, &e), 0);
    ck_assert_int_eq(ir_add_output(g, "a", y, &e), 0);
    ck_assert_int_eq(ir_add_output(g, "b", y, &e), 0);
    ck_assert_int_eq(ir_add_output(g, "x_again", x, &e), 0);
    TensorSet feeds, results;
    tset_init(&feeds);
    tset_init(&results);
    tset_put(&feeds, "x", T1(DT_F32, 2, 0, 1));
    InterpOptions opt = {.batch = 1, .seq = 1};
    ck_assert_int_eq(interp_run(g, &feeds, &opt, &results, &e), 0);
    Tensor *a = tset_get(&results, "a"), *b = tset_get(&results, "b"), *xa = tset_get(&results, "x_again");
    ck_assert(a && b && xa && a != b && xa != tset_get(&feeds, "x"));
    ck_assert(tensor_f32(a)[0] == 1.0f && tensor_f32(b)[1] == (float)exp(1.0) && tensor_f32(xa)[1] == 1.0f);
    tset_free(&feeds);
    tset_free(&results); /* ASan: no double free, no leak */
    graph_free(g);
}
END_TEST

START_TEST(test_run_error_names_node) {
    Graph *g = graph_new();
    Err e = {0};
    ValueId in[2] = {ir_param(g, "w", ty("f32[4,2]"), &e), ir_input(g, "ids", ty("i64[B]"), &e)}, y, z;
    g->cur_scope = graph_intern(g, "model.embed");
    ck_assert_int_ge(ir_emit(g, OP_EMBEDDING, in, 2, NULL, 0, &y, &e), 0);
    ck_assert_int_ge(ir_emit(g, OP_NEG, &y, 1, NULL, 0, &z, &e), 0);
    ck_assert_int_eq(ir_add_output(g, "z", z, &e), 0);
    TensorSet feeds, results;
    tset_init(&feeds);
    tset_init(&results);
    tset_put(&feeds, "w", tensor_new(DT_F32, 2, SHAPE(4, 2)));
    tset_put(&feeds, "ids", T1(DT_I64, 2, 1, 9));
    InterpOptions opt = {.batch = 2, .seq = 1};
    ck_assert_int_eq(interp_run(g, &feeds, &opt, &results, &e), -1);
    ck_assert_str_eq(e.msg, "node 2 (embedding in model.embed): embedding: id 9 at position 1 is outside [0, 4)");
    ck_assert_int_eq(results.tensors.len, 0);
    tset_free(&feeds);
    tset_free(&results);
    graph_free(g);
}
END_TEST

START_TEST(test_tset_replace) {
    TensorSet s;
    tset_init(&s);
    tset_put(&s, "a", T1(DT_F32, 1, 1));
    tset_put(&s, "a", T1(DT_F32, 1, 2));
    ck_assert(tensor_f32(tset_get(&s, "a"))[0] == 2.0f);
    ck_assert_int_eq(s.tensors.len, 1);
    ck_assert_ptr_null(tset_get(&s, "b"));
    tset_free(&s);
}
END_TEST

static Suite *ops_suite(void) {
    Suite *s = suite_create("ops");
    TCase *tc = tcase_create("ops");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_table_complete);
    tcase_add_test(tc, test_attr_validation);
    tcase_add_test(tc, test_const_iota);
    tcase_add_test(tc, test_feed_errors);
    tcase_add_test(tc, test_unary);
    tcase_add_test(tc, test_cast_rounding);
    tcase_add_test(tc, test_binary_broadcast);
    tcase_add_test(tc, test_where);
    tcase_add_test(tc, test_reduce);
    tcase_add_test(tc, test_mean_all_softmax);
    tcase_add_test(tc, test_linear);
    tcase_add_test(tc, test_embedding);
    tcase_add_test(tc, test_reshape);
    tcase_add_test(tc, test_slice);
    tcase_add_test(tc, test_concat_stack);
    tcase_add_test(tc, test_expand);
    tcase_add_test(tc, test_topk);
    tcase_add_test(tc, test_gather_one_hot);
    tcase_add_test(tc, test_moe_pipeline);
    tcase_add_test(tc, test_moe_shapes_and_errors);
    tcase_add_test(tc, test_rope);
    tcase_add_test(tc, test_sdpa);
    tcase_add_test(tc, test_cross_entropy);
    tcase_add_test(tc, test_chain_frees_values);
    tcase_add_test(tc, test_outputs_copied_when_shared);
    tcase_add_test(tc, test_run_error_names_node);
    tcase_add_test(tc, test_tset_replace);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(ops_suite()); }
