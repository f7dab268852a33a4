/* Every differentiable op's VJP against central finite differences.
 *
 * Each case builds a small graph: random float params feed one op, its output
 * y is contracted with a random upstream gradient r (a float input, so it gets
 * no gradient of its own), L = mean_all(y * r), and autodiff_graph adds
 * grad.<param>. For a random direction d over all params, the analytic
 * directional derivative <grad L, d> must equal (L(x + h d) - L(x - h d)) / 2h.
 *
 * Precision: built against the ir compiled with -DV3C_REAL=double (v3c_ir64),
 * tensors hold doubles. With h = 1e-6 the central difference's truncation
 * error is h^2/6 |L'''| ~ 1e-13 for these O(1) functions, and rounding adds
 * about eps |L| / h ~ 1e-16 / 1e-6 = 1e-10; so a correct VJP agrees to ~1e-9
 * relative and the tolerance 1e-6 leaves a 1000x margin, while any wrong term
 * of a VJP is an O(1) relative error. Built against the f32 ir (the default
 * test build) the same check runs with h = 1e-2, where truncation is ~1e-5 and
 * float rounding eps/h ~ 1e-5: tolerance 2e-3. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../ir/interp.h"
#include "../ir/verify.h"
#include "../passes/autodiff.h"
#include "testutil.h"

enum { FD_B = 2, FD_T = 3 };

typedef struct Fd {
    Graph *g;
    TensorSet feeds;
    uint64_t rng;
    Err e;
} Fd;

static int fp64(void) { return dtype_host_size(DT_F32) == sizeof(double); }

static double get(const Tensor *t, int64_t i) {
    return fp64() ? ((const double *)t->data)[i] : (double)((const float *)t->data)[i];
}

static void set(Tensor *t, int64_t i, double v) {
    if (fp64()) ((double *)t->data)[i] = v;
    else ((float *)t->data)[i] = (float)v;
}

/* xorshift64*: reproducible numbers in [0, 1). */
static double urand(Fd *f) {
    f->rng ^= f->rng >> 12;
    f->rng ^= f->rng << 25;
    f->rng ^= f->rng >> 27;
    return (double)((f->rng * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

static Tensor *concrete(Fd *f, const Type *t) {
    int64_t shape[IR_MAX_RANK];
    ck_assert_msg(type_concrete(t, FD_B, FD_T, shape, &f->e) == 0, "%s", f->e.msg);
    return tensor_new(t->dtype, t->rank, shape);
}

static Type ty(DType dt, int rank, const Dim *dims) {
    Type t = {.dtype = dt, .rank = rank};
    for (int i = 0; i < rank; i++) t.dims[i] = dims[i];
    return t;
}

#define BB dim_sym_b()
#define TT dim_sym_t()
#define C(n) dim_const(n)
#define TY(dt, ...) ty(dt, (int)(sizeof((Dim[]){__VA_ARGS__}) / sizeof(Dim)), (Dim[]){__VA_ARGS__})

/* A float param (or input, when `param` is 0) with uniform values in [lo, hi). */
static ValueId real_source(Fd *f, int param, const char *name, Type t, double lo, double hi) {
    ValueId v = param ? ir_param(f->g, name, t, &f->e) : ir_input(f->g, name, t, &f->e);
    ck_assert_msg(v >= 0, "%s", f->e.msg);
    Tensor *x = concrete(f, &t);
    for (int64_t i = 0; i < x->numel; i++) set(x, i, lo + (hi - lo) * urand(f));
    tset_put(&f->feeds, name, x);
    return v;
}

static ValueId prm(Fd *f, const char *name, Type t) { return real_source(f, 1, name, t, -1, 1); }
static ValueId positive(Fd *f, const char *name, Type t) { return real_source(f, 1, name, t, 0.5, 2); }

/* An integer input; element i gets values[i % n]. */
static ValueId ints(Fd *f, const char *name, Type t, const int64_t *values, int n) {
    ValueId v = ir_input(f->g, name, t, &f->e);
    ck_assert_msg(v >= 0, "%s", f->e.msg);
    Tensor *x = concrete(f, &t);
    for (int64_t i = 0; i < x->numel; i++) {
        int64_t k = values[i % n];
        if (t.dtype == DT_I64) ((int64_t *)x->data)[i] = k;
        else ((int32_t *)x->data)[i] = (int32_t)k;
    }
    tset_put(&f->feeds, name, x);
    return v;
}

static ValueId op(Fd *f, OpKind k, const ValueId *in, int nin, const Attr *attrs, int nattrs) {
    ValueId out[4];
    ck_assert_msg(ir_emit(f->g, k, in, nin, attrs, nattrs, out, &f->e) >= 0, "%s", f->e.msg);
    return out[0];
}

static ValueId op1(Fd *f, OpKind k, ValueId x, const Attr *attrs, int nattrs) { return op(f, k, &x, 1, attrs, nattrs); }
static ValueId op2(Fd *f, OpKind k, ValueId a, ValueId b) { return op(f, k, (ValueId[]){a, b}, 2, NULL, 0); }

/* ---- the harness ---- */
static double loss_at(Fd *f) {
    TensorSet out;
    tset_init(&out);
    InterpOptions io = {.batch = FD_B, .seq = FD_T};
    ck_assert_msg(interp_run(f->g, &f->feeds, &io, &out, &f->e) == 0, "%s", f->e.msg);
    double l = get(tset_get(&out, "loss"), 0);
    tset_free(&out);
    return l;
}

/* Adds h*d to every param that has a gradient (d[i] indexed like the outputs). */
static void shift(Fd *f, Tensor **dirs, double h) {
    for (size_t i = 0; i < f->g->outputs.len; i++) {
        if (!dirs[i]) continue;
        Tensor *x = tset_get(&f->feeds, f->g->outputs.data[i].name + 5);
        for (int64_t j = 0; j < x->numel; j++) set(x, j, get(x, j) + h * get(dirs[i], j));
    }
}

/* L = mean_all(y * r); checks <grad L, d> against the central difference. */
static void check(Fd *f, const char *name_of_case, ValueId y, int want_grads) {
    ValueId r = real_source(f, 0, "upstream", *ir_type(f->g, y), -1, 1);
    ValueId loss = op1(f, OP_MEAN_ALL, op2(f, OP_MUL, y, r), NULL, 0);
    ck_assert_int_eq(ir_add_output(f->g, "loss", loss, &f->e), 0);
    ck_assert_msg(autodiff_graph(f->g, "loss", &f->e) == 0, "%s", f->e.msg);
    ck_assert_msg(ir_verify(f->g, &f->e) == 0, "%s", f->e.msg);
    TensorSet out;
    tset_init(&out);
    InterpOptions io = {.batch = FD_B, .seq = FD_T};
    ck_assert_msg(interp_run(f->g, &f->feeds, &io, &out, &f->e) == 0, "%s", f->e.msg);
    size_t nout = f->g->outputs.len;
    Tensor **dirs = xcalloc(nout, sizeof *dirs);
    double analytic = 0, scale = 0;
    int grads = 0;
    for (size_t i = 0; i < nout; i++) {
        const char *name = f->g->outputs.data[i].name;
        if (strncmp(name, "grad.", 5) != 0) continue;
        const Tensor *gr = tset_get(&out, name);
        dirs[i] = tensor_new(gr->dtype, gr->rank, gr->shape);
        for (int64_t j = 0; j < gr->numel; j++) {
            set(dirs[i], j, 2 * urand(f) - 1);
            analytic += get(gr, j) * get(dirs[i], j);
            scale += fabs(get(gr, j) * get(dirs[i], j));
        }
        grads++;
    }
    ck_assert_msg(grads == want_grads, "%s: %d params got gradients, want %d", name_of_case, grads, want_grads);
    double h = fp64() ? 1e-6 : 1e-2, tol = fp64() ? 1e-6 : 2e-3;
    shift(f, dirs, h);
    double up = loss_at(f);
    shift(f, dirs, -2 * h);
    double down = loss_at(f);
    shift(f, dirs, h);
    double numeric = (up - down) / (2 * h);
    /* Relative to the sum of |terms|, so a directional derivative that cancels
     * to near zero is still judged on the size of its parts. */
    ck_assert_msg(fabs(numeric - analytic) <= tol * scale, "%s: analytic %.12g, finite differences %.12g (scale %.3g)",
                  name_of_case, analytic, numeric, scale);
    ck_assert(scale > 0);
    for (size_t i = 0; i < nout; i++) tensor_free(dirs[i]);
    free(dirs);
    tset_free(&out);
}

static Fd *fd_new(uint64_t seed) {
    Fd *f = xcalloc(1, sizeof *f);
    f->g = graph_new();
    tset_init(&f->feeds);
    f->rng = seed * 0x9E3779B97F4A7C15ULL + 1;
    return f;
}

static void fd_free(Fd *f) {
    graph_free(f->g);
    tset_free(&f->feeds);
    free(f);
}

/* ---- the cases: each returns y and how many params must get a gradient ---- */
typedef struct Case {
    const char *name;
    ValueId (*build)(Fd *f, int *grads);
} Case;

static Type bt(int n) { return TY(DT_F32, BB, TT, C(n)); }

static ValueId unary_of(Fd *f, OpKind k, ValueId x, int *grads) {
    *grads = 1;
    return op1(f, k, x, NULL, 0);
}
static ValueId c_neg(Fd *f, int *g) { return unary_of(f, OP_NEG, prm(f, "x", bt(4)), g); }
static ValueId c_exp(Fd *f, int *g) { return unary_of(f, OP_EXP, prm(f, "x", bt(4)), g); }
static ValueId c_log(Fd *f, int *g) { return unary_of(f, OP_LOG, positive(f, "x", bt(4)), g); }
static ValueId c_sqrt(Fd *f, int *g) { return unary_of(f, OP_SQRT, positive(f, "x", bt(4)), g); }
static ValueId c_rsqrt(Fd *f, int *g) { return unary_of(f, OP_RSQRT, positive(f, "x", bt(4)), g); }
static ValueId c_recip(Fd *f, int *g) { return unary_of(f, OP_RECIP, positive(f, "x", bt(4)), g); }
static ValueId c_abs(Fd *f, int *g) { return unary_of(f, OP_ABS, prm(f, "x", bt(4)), g); }
static ValueId c_sigmoid(Fd *f, int *g) { return unary_of(f, OP_SIGMOID, prm(f, "x", bt(4)), g); }
static ValueId c_silu(Fd *f, int *g) { return unary_of(f, OP_SILU, prm(f, "x", bt(4)), g); }
static ValueId c_cast(Fd *f, int *g) {
    Attr a = attr_dtype("to", DT_F32);
    *g = 1;
    return op1(f, OP_CAST, prm(f, "x", bt(4)), &a, 1);
}

/* Binary ops with broadcasting on either side. */
static ValueId binary_of(Fd *f, OpKind k, ValueId a, ValueId b, int *grads) {
    *grads = 2;
    return op2(f, k, a, b);
}
static ValueId c_add(Fd *f, int *g) { return binary_of(f, OP_ADD, prm(f, "a", bt(4)), prm(f, "b", TY(DT_F32, C(4))), g); }
static ValueId c_sub(Fd *f, int *g) {
    return binary_of(f, OP_SUB, prm(f, "a", TY(DT_F32, BB, C(1), C(4))), prm(f, "b", bt(4)), g);
}
static ValueId c_mul(Fd *f, int *g) { return binary_of(f, OP_MUL, prm(f, "a", bt(4)), prm(f, "b", TY(DT_F32, TT, C(1))), g); }
static ValueId c_div(Fd *f, int *g) { return binary_of(f, OP_DIV, prm(f, "a", bt(4)), positive(f, "b", bt(1)), g); }
static ValueId c_maximum(Fd *f, int *g) { return binary_of(f, OP_MAXIMUM, prm(f, "a", bt(4)), prm(f, "b", bt(4)), g); }
static ValueId c_minimum(Fd *f, int *g) { return binary_of(f, OP_MINIMUM, prm(f, "a", bt(4)), prm(f, "b", TY(DT_F32, C(4))), g); }
static ValueId c_where(Fd *f, int *g) {
    ValueId cond = real_source(f, 0, "cond", bt(4), -1, 1), ca = prm(f, "a", bt(4)), cb = prm(f, "b", TY(DT_F32, C(4)));
    /* a condition of mixed zeros and nonzeros: cond * (cond > 0) via maximum */
    ValueId mask = op2(f, OP_MAXIMUM, cond, op(f, OP_CONST, NULL, 0, (Attr[]){attr_float("value", 0)}, 1));
    *g = 2;
    return op(f, OP_WHERE, (ValueId[]){mask, ca, cb}, 3, NULL, 0);
}

static ValueId reduce_of(Fd *f, OpKind k, int axis, int keepdim, int *grads) {
    Attr a[2] = {attr_int("axis", axis), attr_int("keepdim", keepdim)};
    *grads = 1;
    return op1(f, k, prm(f, "x", bt(5)), a, 2);
}
static ValueId c_sum_t(Fd *f, int *g) { return reduce_of(f, OP_SUM, 1, 0, g); }
static ValueId c_sum_last_keep(Fd *f, int *g) { return reduce_of(f, OP_SUM, -1, 1, g); }
static ValueId c_mean_t(Fd *f, int *g) { return reduce_of(f, OP_MEAN, 1, 0, g); } /* symbolic length T */
static ValueId c_mean_last_keep(Fd *f, int *g) { return reduce_of(f, OP_MEAN, -1, 1, g); }
static ValueId c_max_last(Fd *f, int *g) { return reduce_of(f, OP_MAX, -1, 0, g); }
static ValueId c_max_b_keep(Fd *f, int *g) { return reduce_of(f, OP_MAX, 0, 1, g); }
static ValueId c_mean_all(Fd *f, int *g) { return unary_of(f, OP_MEAN_ALL, prm(f, "x", bt(5)), g); }
static ValueId c_softmax_last(Fd *f, int *g) { return unary_of(f, OP_SOFTMAX, prm(f, "x", bt(5)), g); }
static ValueId c_softmax_t(Fd *f, int *g) {
    Attr a = attr_int("axis", 1);
    *g = 1;
    return op1(f, OP_SOFTMAX, prm(f, "x", bt(5)), &a, 1);
}

static ValueId c_linear(Fd *f, int *g) { return binary_of(f, OP_LINEAR, prm(f, "x", bt(5)), prm(f, "w", TY(DT_F32, C(3), C(5))), g); }
static ValueId c_embedding(Fd *f, int *g) {
    static const int64_t ids[] = {0, 3, 3, 6, 1, 0}; /* repeated rows accumulate */
    *g = 1;
    return op2(f, OP_EMBEDDING, prm(f, "w", TY(DT_F32, C(7), C(4))), ints(f, "ids", TY(DT_I64, BB, TT), ids, 6));
}

static ValueId c_reshape(Fd *f, int *g) {
    Type to = TY(DT_F32, BB, TT, C(2), C(3));
    Attr a = attr_dims("shape", to.rank, to.dims);
    *g = 1;
    return op1(f, OP_RESHAPE, prm(f, "x", bt(6)), &a, 1);
}
static ValueId slice_of(Fd *f, int axis, Dim start, Dim end, int *g) {
    Attr a[3] = {attr_int("axis", axis), attr_dims("start", 1, &start), attr_dims("end", 1, &end)};
    *g = 1;
    return op1(f, OP_SLICE, prm(f, "x", bt(5)), a, 3);
}
static ValueId c_slice_const(Fd *f, int *g) { return slice_of(f, 2, C(1), C(4), g); }
static ValueId c_slice_to_end(Fd *f, int *g) { return slice_of(f, 1, C(1), TT, g); } /* [1, T) */
static ValueId c_concat(Fd *f, int *g) {
    ValueId a = prm(f, "a", bt(2)), b = prm(f, "b", TY(DT_F32, BB, C(2), C(2))), c = prm(f, "c", TY(DT_F32, BB, C(1), C(2)));
    Attr ax = attr_int("axis", 1);
    *g = 3;
    /* along T: pieces [0,T), [T,T+2) and [T+2,T+3) (the last ends at the size) */
    ValueId ab = op(f, OP_CONCAT, (ValueId[]){a, b}, 2, &ax, 1);
    Attr last = attr_int("axis", -2);
    return op(f, OP_CONCAT, (ValueId[]){ab, c}, 2, &last, 1);
}
static ValueId c_expand(Fd *f, int *g) {
    Type to = bt(4);
    Attr a = attr_dims("shape", to.rank, to.dims);
    *g = 1;
    return op1(f, OP_EXPAND, prm(f, "x", TY(DT_F32, TT, C(1))), &a, 1);
}
static ValueId c_stack(Fd *f, int *g) {
    Type t = TY(DT_F32, BB, C(4));
    *g = 3;
    return op(f, OP_STACK, (ValueId[]){prm(f, "a", t), prm(f, "b", t), prm(f, "c", t)}, 3, NULL, 0);
}

static ValueId c_topk(Fd *f, int *g) {
    Attr k = attr_int("k", 3);
    *g = 1;
    return op1(f, OP_TOPK, prm(f, "x", bt(6)), &k, 1);
}
static ValueId c_gather(Fd *f, int *g) {
    static const int64_t idx[] = {5, 0, 5, 2, 1, 3, 4};
    *g = 1;
    return op2(f, OP_GATHER, prm(f, "x", bt(6)), ints(f, "idx", TY(DT_I32, BB, TT, C(3)), idx, 7));
}

/* Two experts per token out of 3, so counts are uneven. */
static const int64_t route[] = {0, 2, 1, 2, 2, 0, 0, 1, 2, 1, 0, 2};
static ValueId c_moe_dispatch(Fd *f, int *g) {
    Attr e = attr_int("experts", 3);
    *g = 1;
    return op(f, OP_MOE_DISPATCH, (ValueId[]){prm(f, "x", bt(4)), ints(f, "idx", TY(DT_I32, BB, TT, C(2)), route, 12)}, 2, &e, 1);
}
static ValueId c_grouped_linear(Fd *f, int *g) {
    static const int64_t counts[] = {3, 0, 4}; /* an empty expert */
    ValueId xd = prm(f, "xd", TY(DT_F32, C(7), C(4))), w = prm(f, "w", TY(DT_F32, C(3), C(5), C(4)));
    *g = 2;
    return op(f, OP_GROUPED_LINEAR, (ValueId[]){xd, ints(f, "counts", TY(DT_I32, C(3)), counts, 3), w}, 3, NULL, 0);
}
static ValueId c_moe_combine(Fd *f, int *g) {
    Dim bt_rows, rows;
    ck_assert(dim_mul(BB, TT, &bt_rows, &f->e) == 0 && dim_mul(bt_rows, C(2), &rows, &f->e) == 0);
    ValueId yd = prm(f, "yd", TY(DT_F32, rows, C(4))), w = prm(f, "w", TY(DT_F32, BB, TT, C(2)));
    *g = 2;
    return op(f, OP_MOE_COMBINE, (ValueId[]){yd, ints(f, "idx", TY(DT_I32, BB, TT, C(2)), route, 12), w}, 3, NULL, 0);
}

static ValueId c_rope(Fd *f, int *g) {
    ValueId x = prm(f, "x", TY(DT_F32, BB, TT, C(2), C(6))), freq = real_source(f, 0, "inv_freq", TY(DT_F32, C(3)), 0.1, 1.5);
    Attr s = attr_float("scale", 0.7);
    *g = 1;
    return op(f, OP_ROPE, (ValueId[]){x, freq}, 2, &s, 1);
}
static ValueId sdpa_of(Fd *f, Dim keys, int causal, int *g) {
    ValueId q = prm(f, "q", TY(DT_F32, BB, TT, C(2), C(3))), k = prm(f, "k", TY(DT_F32, BB, keys, C(2), C(3)));
    ValueId v = prm(f, "v", TY(DT_F32, BB, keys, C(2), C(4)));
    Attr a[2] = {attr_float("scale", 0.6), attr_int("causal", causal)};
    *g = 3;
    return op(f, OP_SDPA, (ValueId[]){q, k, v}, 3, a, 2);
}
static ValueId c_sdpa_causal(Fd *f, int *g) { return sdpa_of(f, TT, 1, g); }
static ValueId c_sdpa_cross(Fd *f, int *g) { return sdpa_of(f, C(5), 0, g); }
static ValueId c_cross_entropy(Fd *f, int *g) {
    static const int64_t targets[] = {4, 0, 2, 2, 1};
    *g = 1;
    return op2(f, OP_CROSS_ENTROPY, prm(f, "logits", bt(5)), ints(f, "targets", TY(DT_I64, BB, TT), targets, 5));
}
/* A value read twice: gradients accumulate. */
static ValueId c_reuse(Fd *f, int *g) {
    ValueId x = prm(f, "x", bt(4));
    *g = 1;
    return op2(f, OP_MUL, op1(f, OP_SILU, x, NULL, 0), op1(f, OP_EXP, x, NULL, 0));
}

#define CASE(n) {#n, c_##n}
static const Case cases[] = {
    CASE(neg), CASE(exp), CASE(log), CASE(sqrt), CASE(rsqrt), CASE(recip), CASE(abs), CASE(sigmoid), CASE(silu),
    CASE(cast), CASE(add), CASE(sub), CASE(mul), CASE(div), CASE(maximum), CASE(minimum), CASE(where),
    CASE(sum_t), CASE(sum_last_keep), CASE(mean_t), CASE(mean_last_keep), CASE(max_last), CASE(max_b_keep),
    CASE(mean_all), CASE(softmax_last), CASE(softmax_t), CASE(linear), CASE(embedding), CASE(reshape),
    CASE(slice_const), CASE(slice_to_end), CASE(concat), CASE(expand), CASE(stack), CASE(topk), CASE(gather),
    CASE(moe_dispatch), CASE(grouped_linear), CASE(moe_combine), CASE(rope), CASE(sdpa_causal), CASE(sdpa_cross),
    CASE(cross_entropy), CASE(reuse),
};
enum { NCASES = sizeof cases / sizeof cases[0] };

START_TEST(test_vjp_matches_finite_differences) {
    Fd *f = fd_new((uint64_t)_i + 1);
    int grads = 0;
    ValueId y = cases[_i].build(f, &grads);
    check(f, cases[_i].name, y, grads);
    fd_free(f);
}
END_TEST

int main(void) {
    Suite *s = suite_create("vjp_fd");
    TCase *tc = tcase_create("ops");
    tcase_add_loop_test(tc, test_vjp_matches_finite_differences, 0, NCASES);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
