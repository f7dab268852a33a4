/* The cpu backend (fused LLVM kernels, BLAS GEMMs, interpreter kernels for the
 * rest) against the reference interpreter: every forward op on its own, fused
 * chains bit for bit, and the golden tiny model end to end. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../codegen/cpu.h"
#include "../codegen/fuse.h"
#include "../frontend/frontend.h"
#include "../ir/text.h"
#include "../passes/passes.h"
#include "../runtime/checkpoint.h"
#include "../runtime/cpu_backend.h"
#include "../runtime/exec.h"
#include "../runtime/safetensors.h"
#include "testutil.h"

enum { BATCH = 2, SEQ = 3 };

/* Every input of g with random values; unnamed ones as floats in [-1, 1], integers in [0, 1). */
static void feed_all(const Graph *g, const InputFill *fills, TensorSet *feeds) {
    feed_random_inputs(g, fills, (InputFill){"", 0, 1}, BATCH, SEQ, 12345, feeds);
}

static void run_both(const Graph *g, const TensorSet *feeds, int threads, TensorSet *cpu, TensorSet *interp) {
    InterpOptions opt = {.batch = BATCH, .seq = SEQ, .threads = threads};
    Err e = {0};
    ck_assert_msg(exec_run("interp", g, feeds, &opt, interp, &e) == 0, "interp: %s", e.msg);
    ck_assert_msg(exec_run("cpu", g, feeds, &opt, cpu, &e) == 0, "cpu: %s", e.msg);
}

/* Tolerance: fused elementwise and reduction kernels repeat the interpreter's
 * double formulas and float roundings, so they agree exactly; BLAS sums K fp32
 * products in fp32, a relative error of about sqrt(K) * 2^-24 (K <= 64 here:
 * 5e-7), well inside the 1e-5 asked of the backend. */
static const double tolerance = 1e-5;

/* FP8 quantization is discontinuous: where an fp32 sum and the interpreter's fp64 sum fall on two
 * sides of an e4m3 rounding boundary, that element moves by one e4m3 step (2^-4 to 2^-3 of itself).
 * How much one such flip moves a gradient depends on how many elements feed it. A dense weight's
 * gradient sums over every token (N >= 4096 elements): about 2^-4 / sqrt(N) <= 1e-3 relative in L2.
 * An expert's may come from a single routed token, dW = g x^T: a flip in one of x's `hidden`
 * values moves its column by one step, 2^-3 |x_i| / |x| of the gradient, about 2^-3 / sqrt(hidden)
 * (1.6e-2 at the golden tiny model's 64) for a typical |x_i|. The flips themselves are rare (a few
 * per step, seen: one, 1.7e-3 on an expert fed by a few tokens); a wrong kernel is off by O(1). */
static const double fp8_dense_grad_tolerance = 1e-3;
enum { GOLDEN_TINY_HIDDEN = 64 }; /* hidden_size in ../shared/golden/tiny/config.json */

static double fp8_grad_tolerance(const char *output) {
    return strstr(output, ".experts.") ? ldexp(1.0, -3) / sqrt(GOLDEN_TINY_HIDDEN) : fp8_dense_grad_tolerance;
}

/* The tolerance of every output: one number, or (by_name) per output. */
typedef struct Tol {
    double all;
    double (*by_name)(const char *output);
} Tol;

static void compare_sets_within(const Graph *g, const TensorSet *cpu, const TensorSet *interp, const char *what,
                                Tol tol) {
    for (size_t i = 0; i < g->outputs.len; i++) {
        const char *name = g->outputs.data[i].name;
        Tensor *a = tset_get(cpu, name), *b = tset_get(interp, name);
        ck_assert_msg(a && b, "%s: output %s missing", what, name);
        ck_assert_int_eq(a->numel, b->numel);
        ck_assert_int_eq(a->dtype, b->dtype);
        double err = rel_l2(a, b), limit = tol.by_name ? tol.by_name(name) : tol.all;
        ck_assert_msg(err <= limit, "%s: %s relative error %.3g (limit %.3g)", what, name, err, limit);
    }
}

static void compare_sets(const Graph *g, const TensorSet *cpu, const TensorSet *interp, const char *what) {
    compare_sets_within(g, cpu, interp, what, (Tol){tolerance, NULL});
}

static Graph *parse(const char *text) {
    Err e = {0};
    Graph *g = ir_parse(text, "test", &e);
    ck_assert_msg(g != NULL, "%s\n%s", e.msg, text);
    return g;
}

static void check_text(const char *text, const InputFill *fills) {
    Graph *g = parse(text);
    TensorSet feeds, cpu, interp;
    tset_init(&feeds), tset_init(&cpu), tset_init(&interp);
    feed_all(g, fills, &feeds);
    run_both(g, &feeds, 0, &cpu, &interp);
    compare_sets(g, &cpu, &interp, text);
    tset_free(&feeds), tset_free(&cpu), tset_free(&interp);
    graph_free(g);
}

/* ---- one-node graphs: every forward op ---- */
START_TEST(test_unary_ops) {
    const char *ops[] = {"neg", "exp", "log", "sqrt", "rsqrt", "recip", "abs", "sigmoid", "silu"};
    static const InputFill pos[] = {{"x", 1, 1}, {0}};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        char text[512];
        snprintf(text, sizeof text, "v3ir 1\n%%0 = input {name=\"x\"} : f32[B,T,33]\n%%1 = %s %%0 : f32[B,T,33]\noutput \"y\" = %%1\n", ops[i]);
        check_text(text, pos);
    }
}
END_TEST

START_TEST(test_binary_ops) {
    const char *ops[] = {"add", "sub", "mul", "div", "maximum", "minimum"};
    /* full with full, a trailing vector, a per-row column, a leading-dim broadcast */
    const char *shapes[][2] = {{"B,T,17", "B,T,17"}, {"B,T,17", "17"}, {"B,T,17", "B,T,1"}, {"B,T,17", "1,T,17"}, {"B,T", "T"}};
    static const InputFill pos[] = {{"b", 1, 1}, {0}};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            char text[512];
            snprintf(text, sizeof text,
                     "v3ir 1\n%%0 = input {name=\"a\"} : f32[%s]\n%%1 = input {name=\"b\"} : f32[%s]\n"
                     "%%2 = %s %%1, %%0 : f32[%s]\n%%3 = const {value=0.5} : f32[]\n%%4 = mul %%2, %%3 : f32[%s]\n"
                     "output \"y\" = %%4\n",
                     shapes[s][0], shapes[s][1], ops[i], shapes[s][0], shapes[s][0]);
            check_text(text, pos);
        }
}
END_TEST

static const char *other_ops[] = {
    "%0 = input {name=\"c\"} : f32[B,T,5]\n%1 = input {name=\"a\"} : f32[B,T,5]\n%2 = input {name=\"b\"} : f32[5]\n"
    "%3 = where %0, %1, %2 : f32[B,T,5]\noutput \"y\" = %3\n",
    "%0 = input {name=\"x\"} : f32[B,T,7]\n%1 = sum %0 {axis=-1} : f32[B,T]\n%2 = mean %0 {axis=2, keepdim=1} : f32[B,T,1]\n"
    "%3 = max %0 {axis=-1} : f32[B,T]\n%4 = sum %0 {axis=1} : f32[B,7]\n"
    "output \"s\" = %1\noutput \"m\" = %2\noutput \"x\" = %3\noutput \"s1\" = %4\n",
    "%0 = input {name=\"x\"} : f32[B,T,9]\n%1 = softmax %0 : f32[B,T,9]\n%2 = softmax %0 {axis=1} : f32[B,T,9]\n"
    "%3 = mean_all %0 : f32[]\noutput \"p\" = %1\noutput \"q\" = %2\noutput \"m\" = %3\n",
    "%0 = input {name=\"x\"} : f32[B,T,24]\n%1 = input {name=\"w\"} : f32[40,24]\n%2 = linear %0, %1 : f32[B,T,40]\n"
    "output \"y\" = %2\n",
    "%0 = input {name=\"w\"} : f32[11,6]\n%1 = input {name=\"ids\"} : i64[B,T]\n%2 = embedding %0, %1 : f32[B,T,6]\n"
    "output \"y\" = %2\n",
    "%0 = input {name=\"x\"} : f32[B,T,6]\n%1 = reshape %0 {shape=[B,T,2,3]} : f32[B,T,2,3]\n"
    "%2 = slice %0 {axis=2, end=[4], start=[1]} : f32[B,T,3]\n%3 = concat %0, %0 {axis=2} : f32[B,T,12]\n"
    "%4 = expand %2 {shape=[2,B,T,3]} : f32[2,B,T,3]\n%5 = stack %0, %0 : f32[2,B,T,6]\n%6 = cast %0 {to=bf16} : bf16[B,T,6]\n"
    "output \"a\" = %1\noutput \"b\" = %2\noutput \"c\" = %3\noutput \"d\" = %4\noutput \"e\" = %5\noutput \"f\" = %6\n",
    "%0 = input {name=\"x\"} : f32[B,T,8]\n%1, %2 = topk %0 {k=2} : f32[B,T,2], i32[B,T,2]\n%3 = gather %0, %2 : f32[B,T,2]\n"
    "%4 = one_hot %2 {n=8} : f32[B,T,2,8]\n%5, %6 = moe_dispatch %0, %2 {experts=8} : f32[B*T*2,8], i32[8]\n"
    "%7 = input {name=\"w\"} : f32[8,5,8]\n%8 = grouped_linear %5, %6, %7 : f32[B*T*2,5]\n"
    "%9 = moe_combine %8, %2, %1 : f32[B,T,5]\n"
    "output \"v\" = %1\noutput \"i\" = %2\noutput \"g\" = %3\noutput \"o\" = %4\noutput \"y\" = %9\n",
    "%0 = input {name=\"x\"} : f32[B,T,2,8]\n%1 = input {name=\"f\"} : f32[4]\n%2 = rope %0, %1 {scale=1.5} : f32[B,T,2,8]\n"
    "%3 = input {name=\"k\"} : f32[B,T,2,8]\n%4 = input {name=\"v\"} : f32[B,T,2,4]\n"
    "%5 = sdpa %2, %3, %4 {scale=0.3} : f32[B,T,2,4]\noutput \"r\" = %2\noutput \"o\" = %5\n",
    "%0 = input {name=\"x\"} : f32[B,T,10]\n%1 = input {name=\"ids\"} : i64[B,T]\n%2 = cross_entropy %0, %1 : f32[B,T]\n"
    "%3 = iota {n=4} : f32[4]\noutput \"l\" = %2\noutput \"i\" = %3\n",
    /* backward: linear_wgrad runs on BLAS */
    "%0 = input {name=\"g\"} : f32[B,T,12]\n%1 = input {name=\"x\"} : f32[B,T,20]\n"
    "%2 = linear_wgrad %0, %1 : f32[12,20]\noutput \"dw\" = %2\n",
};

static int tensors_identical(const Tensor *a, const Tensor *b);

/* Every output of g on the cpu backend equal to the interpreter's, bit for bit; the plan's stats. */
static CpuPlanStats expect_exact(const Graph *g, const TensorSet *feeds, int threads) {
    TensorSet cpu, interp;
    tset_init(&cpu), tset_init(&interp);
    run_both(g, feeds, threads, &cpu, &interp);
    for (size_t i = 0; i < g->outputs.len; i++) {
        const char *name = g->outputs.data[i].name;
        const Tensor *a = tset_get(&cpu, name), *b = tset_get(&interp, name);
        int64_t first = -1;
        for (int64_t k = 0; first < 0 && k < a->numel && a->numel == b->numel; k++)
            if (memcmp((const char *)a->data + k * dtype_host_size(a->dtype), (const char *)b->data + k * dtype_host_size(b->dtype),
                       dtype_host_size(a->dtype)))
                first = k;
        ck_assert_msg(tensors_identical(a, b), "%s differs (first at %lld: %.9g, interpreter %.9g)", name, (long long)first,
                      first >= 0 ? tensor_value(a, first) : 0.0, first >= 0 ? tensor_value(b, first) : 0.0);
    }
    tset_free(&cpu), tset_free(&interp);
    InterpOptions opt = {.batch = BATCH, .seq = SEQ};
    Err e = {0};
    CpuPlan *p = cpu_plan_build(g, &opt, NULL, &e);
    ck_assert_msg(p != NULL, "%s", e.msg);
    CpuPlanStats s = cpu_plan_stats(p);
    cpu_plan_free(p);
    return s;
}

/* The backend's own kernels (runtime/cpu_ops.c) on the shapes autodiff gives them. sdpa and
 * sdpa_grad are fp32 GEMMs (K <= 8 here) around an fp64 softmax: about sqrt(K) * 2^-24 relative
 * per product, a few 1e-7 after the softmax's sums; the layout ops are exact. */
static const char *backward_ops[] = {
    "%0 = input {name=\"g\"} : f32[B,T,2,4]\n%1 = input {name=\"q\"} : f32[B,T,2,8]\n%2 = input {name=\"k\"} : f32[B,T,2,8]\n"
    "%3 = input {name=\"v\"} : f32[B,T,2,4]\n%4, %5, %6 = sdpa_grad %0, %1, %2, %3 {scale=0.35} : f32[B,T,2,8], f32[B,T,2,8], f32[B,T,2,4]\n"
    "output \"dq\" = %4\noutput \"dk\" = %5\noutput \"dv\" = %6\n",
    /* not causal, more keys than queries */
    "%0 = input {name=\"g\"} : f32[B,T,3,5]\n%1 = input {name=\"q\"} : f32[B,T,3,6]\n%2 = input {name=\"k\"} : f32[B,7,3,6]\n"
    "%3 = input {name=\"v\"} : f32[B,7,3,5]\n%4, %5, %6 = sdpa_grad %0, %1, %2, %3 {causal=0, scale=0.5} : f32[B,T,3,6], f32[B,7,3,6], f32[B,7,3,5]\n"
    "%7 = sdpa %1, %2, %3 {causal=0, scale=0.5} : f32[B,T,3,5]\n"
    "output \"dq\" = %4\noutput \"dk\" = %5\noutput \"dv\" = %6\noutput \"o\" = %7\n",
    /* empty head dims: no values to average, no scores to take (every key equally likely) */
    "%0 = input {name=\"g\"} : f32[B,T,2,0]\n%1 = input {name=\"q\"} : f32[B,T,2,3]\n%2 = input {name=\"k\"} : f32[B,T,2,3]\n"
    "%3 = input {name=\"v\"} : f32[B,T,2,0]\n%4, %5, %6 = sdpa_grad %0, %1, %2, %3 {scale=0.5} : f32[B,T,2,3], f32[B,T,2,3], f32[B,T,2,0]\n"
    "%7 = input {name=\"q0\"} : f32[B,T,2,0]\n%8 = input {name=\"v4\"} : f32[B,T,2,4]\n%9 = sdpa %7, %7, %8 {scale=1.0} : f32[B,T,2,4]\n"
    "%10 = input {name=\"w\"} : f32[5,0]\n%11 = linear %7, %10 : f32[B,T,2,5]\n"
    "output \"dq\" = %4\noutput \"dk\" = %5\noutput \"dv\" = %6\noutput \"o\" = %9\noutput \"y\" = %11\n",
    /* experts' weight gradients: some experts get no rows */
    "%0 = input {name=\"x\"} : f32[B,T,6]\n%1, %2 = topk %0 {k=2} : f32[B,T,2], i32[B,T,2]\n"
    "%3, %4 = moe_dispatch %0, %2 {experts=6} : f32[B*T*2,6], i32[6]\n%5 = input {name=\"g\"} : f32[B*T*2,5]\n"
    "%6 = grouped_linear_wgrad %5, %4, %3 : f32[6,5,6]\noutput \"dw\" = %6\n",
    "%0 = input {name=\"x\"} : f32[B,T,6]\n%1 = sum_to %0 {shape=[B,T,1]} : f32[B,T,1]\n%2 = sum_to %0 {shape=[6]} : f32[6]\n"
    "%3 = sum_to %0 {shape=[B,1,6]} : f32[B,1,6]\n%4 = sum_to %0 {shape=[1,T,1]} : f32[1,T,1]\n%5 = sum_to %0 {shape=[]} : f32[]\n"
    "output \"a\" = %1\noutput \"b\" = %2\noutput \"c\" = %3\noutput \"d\" = %4\noutput \"e\" = %5\n",
    "%0 = input {name=\"x\"} : f32[T,1]\n%1 = expand %0 {shape=[B,T,5]} : f32[B,T,5]\n%2 = input {name=\"w\"} : f32[37,45]\n"
    "%3 = transpose %2 : f32[45,37]\n%4 = input {name=\"s\"} : f32[3,B,T,5]\n%5 = transpose %4 : f32[3,B,5,T]\n"
    "output \"e\" = %1\noutput \"t\" = %3\noutput \"u\" = %5\n",
    /* large enough to be split over threads: each range starts its odometer mid-tensor */
    "%0 = input {name=\"x\"} : f32[7,1,33]\n%1 = expand %0 {shape=[7,300,33]} : f32[7,300,33]\noutput \"e\" = %1\n",
    /* large enough to be split over threads, in bands of 32 rows, ragged at both edges */
    "%0 = input {name=\"w\"} : f32[3,200,401]\n%1 = transpose %0 : f32[3,401,200]\noutput \"t\" = %1\n",
};

START_TEST(test_backend_kernels) {
    for (size_t i = 0; i < sizeof backward_ops / sizeof backward_ops[0]; i++) {
        char *text = xsprintf("v3ir 1\n%s", backward_ops[i]);
        check_text(text, NULL);
        free(text);
    }
}
END_TEST

/* Each of them runs on the backend's kernel, not the interpreter's. */
START_TEST(test_backend_kernels_are_used) {
    for (size_t i = 0; i < sizeof backward_ops / sizeof backward_ops[0]; i++) {
        char *text = xsprintf("v3ir 1\n%s", backward_ops[i]);
        Graph *g = parse(text);
        InterpOptions opt = {.batch = BATCH, .seq = SEQ};
        Err e = {0};
        CpuPlan *p = cpu_plan_build(g, &opt, NULL, &e);
        ck_assert_msg(p != NULL, "%s", e.msg);
        CpuPlanStats st = cpu_plan_stats(p);
        ck_assert_msg(st.native_nodes >= 1, "%s", text);
        ck_assert_msg(st.interp_nodes <= 2, "%d nodes on the interpreter: %s", st.interp_nodes, text); /* topk, moe_dispatch */
        cpu_plan_free(p);
        graph_free(g);
        free(text);
    }
}
END_TEST

/* rope and the layout kernels repeat the interpreter's arithmetic: its bits, not just its tolerance. */
START_TEST(test_exact_backend_kernels) {
    Graph *g = parse("v3ir 1\n%0 = input {name=\"x\"} : f32[B,T,3,8]\n%1 = input {name=\"f\"} : f32[4]\n"
                     "%2 = rope %0, %1 {scale=1.25} : f32[B,T,3,8]\n%3 = sum_to %2 {shape=[T,1,8]} : f32[T,1,8]\n"
                     "%4 = expand %3 {shape=[B,T,3,8]} : f32[B,T,3,8]\n%5 = transpose %4 : f32[B,T,8,3]\n"
                     "output \"r\" = %2\noutput \"s\" = %3\noutput \"t\" = %5\n");
    TensorSet feeds;
    tset_init(&feeds);
    feed_all(g, NULL, &feeds);
    ck_assert_int_eq(expect_exact(g, &feeds, 2).native_nodes, 4);
    tset_free(&feeds);
    graph_free(g);
}
END_TEST

START_TEST(test_other_forward_ops) {
    static const InputFill fills[] = {{"ids", 0, 10}, {0}};
    for (size_t i = 0; i < sizeof other_ops / sizeof other_ops[0]; i++) {
        char *text = xsprintf("v3ir 1\n%s", other_ops[i]);
        check_text(text, fills);
        free(text);
    }
}
END_TEST

/* A reshape that is its input's last reader takes the buffer (runtime/cpu_backend.c); one
 * whose input is read later, is fed, or is itself an output copies. Either way: the
 * interpreter's shapes and bits, and the fed tensor untouched. */
START_TEST(test_reshape_moves_only_a_last_use) {
    static const char *graphs[] = {
        /* moved */
        "%1 = exp %0 : f32[B,T,8]\n%2 = reshape %1 {shape=[B,T,2,4]} : f32[B,T,2,4]\noutput \"y\" = %2\n",
        /* read again after the reshape */
        "%1 = exp %0 : f32[B,T,8]\n%2 = reshape %1 {shape=[B,T,2,4]} : f32[B,T,2,4]\n%3 = mul %1, %1 : f32[B,T,8]\n"
        "output \"y\" = %2\noutput \"z\" = %3\n",
        /* a fed input */
        "%1 = reshape %0 {shape=[B,T,2,4]} : f32[B,T,2,4]\n%2 = exp %1 : f32[B,T,2,4]\noutput \"y\" = %2\n",
        /* the input is an output too */
        "%1 = exp %0 : f32[B,T,8]\n%2 = reshape %1 {shape=[B,T,2,4]} : f32[B,T,2,4]\noutput \"y\" = %2\n"
        "output \"e\" = %1\n",
    };
    for (size_t i = 0; i < sizeof graphs / sizeof *graphs; i++) {
        char *text = xsprintf("v3ir 1\n%%0 = input {name=\"x\"} : f32[B,T,8]\n%s", graphs[i]);
        Graph *g = parse(text);
        TensorSet feeds, cpu, interp;
        tset_init(&feeds), tset_init(&cpu), tset_init(&interp);
        feed_all(g, NULL, &feeds);
        Tensor *x = tset_get(&feeds, "x"), *before = tensor_new(x->dtype, x->rank, x->shape);
        memcpy(before->data, x->data, sizeof(float) * (size_t)x->numel);
        run_both(g, &feeds, 0, &cpu, &interp);
        for (size_t o = 0; o < g->outputs.len; o++) {
            const char *name = g->outputs.data[o].name;
            Tensor *a = tset_get(&cpu, name), *b = tset_get(&interp, name);
            ck_assert_msg(a && b && a->rank == b->rank && memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->rank) == 0,
                          "graph %zu: %s's shape", i, name);
            ck_assert_msg(tensors_identical(a, b), "graph %zu: %s differs", i, name);
        }
        ck_assert(x->rank == 3 && x->shape[2] == 8 && tensors_identical(x, before));
        tensor_free(before);
        tset_free(&feeds), tset_free(&cpu), tset_free(&interp);
        graph_free(g);
        free(text);
    }
}
END_TEST

/* ---- fusion ---- */
static const char *rmsnorm_silu =
    "v3ir 1\n%0 = input {name=\"x\"} : f32[B,T,64]\n%1 = input {name=\"w\"} : f32[64]\n"
    "%2 = mul %0, %0 : f32[B,T,64]\n%3 = mean %2 {axis=-1, keepdim=1} : f32[B,T,1]\n%4 = const {value=1e-06} : f32[]\n"
    "%5 = add %3, %4 : f32[B,T,1]\n%6 = rsqrt %5 : f32[B,T,1]\n%7 = mul %0, %6 : f32[B,T,64]\n%8 = mul %1, %7 : f32[B,T,64]\n"
    "%9 = silu %8 : f32[B,T,64]\n%10 = softmax %9 : f32[B,T,64]\n%11 = max %10 {axis=-1} : f32[B,T]\n"
    "%12 = mul %10, %7 : f32[B,T,64]\n%13 = sum_to %12 {shape=[B,T,1]} : f32[B,T,1]\n"
    "output \"y\" = %10\noutput \"m\" = %11\noutput \"r\" = %6\noutput \"s\" = %13\n";

START_TEST(test_rmsnorm_fuses_into_one_group) {
    Graph *g = parse(rmsnorm_silu);
    Fusion f;
    Err e = {0};
    ck_assert_int_eq(fusion_plan(g, BATCH, SEQ, &f, &e), 0);
    ck_assert_int_eq(f.groups.len, 1);
    ck_assert_int_eq(f.groups.data[0].nodes.len, 11); /* all but the inputs and the const */
    fusion_free(&f);
    graph_free(g);
}
END_TEST

/* The bf16 pass's casts join fused kernels: their rounding (LLVM integer ops) must be the interpreter's bit for bit. */
START_TEST(test_fused_bf16_casts_exact) {
    Graph *g = parse("v3ir 1\n%0 = input {name=\"x\"} : f32[B,T,16]\n%1 = cast %0 {to=bf16} : bf16[B,T,16]\n"
                     "%2 = cast %1 {to=f32} : f32[B,T,16]\n%3 = mul %2, %0 : f32[B,T,16]\n%4 = cast %3 {to=bf16} : bf16[B,T,16]\n"
                     "output \"b\" = %1\noutput \"y\" = %3\noutput \"c\" = %4\n");
    TensorSet feeds;
    tset_init(&feeds);
    feed_all(g, NULL, &feeds);
    fill_bf16_rounding_cases(tset_get(&feeds, "x"));
    CpuPlanStats s = expect_exact(g, &feeds, 1);
    ck_assert_int_eq(s.fused_nodes, 4);
    ck_assert_int_eq(s.groups, 1);
    tset_free(&feeds);
    graph_free(g);
}
END_TEST

static int tensors_identical(const Tensor *a, const Tensor *b) {
    return a->numel == b->numel && memcmp(a->data, b->data, (size_t)a->numel * dtype_host_size(a->dtype)) == 0;
}

/* The generated kernel repeats the interpreter's arithmetic, so it gives its bits,
 * on one thread or two. */
START_TEST(test_fused_bits_match_interpreter) {
    Graph *g = parse(rmsnorm_silu);
    TensorSet feeds;
    tset_init(&feeds);
    feed_all(g, NULL, &feeds);
    for (int threads = 1; threads <= 2; threads++) {
        TensorSet cpu, interp;
        tset_init(&cpu), tset_init(&interp);
        run_both(g, &feeds, threads, &cpu, &interp);
        for (size_t i = 0; i < g->outputs.len; i++) {
            const char *name = g->outputs.data[i].name;
            ck_assert_msg(tensors_identical(tset_get(&cpu, name), tset_get(&interp, name)), "%s differs (threads=%d)", name, threads);
        }
        tset_free(&cpu), tset_free(&interp);
    }
    tset_free(&feeds);
    graph_free(g);
}
END_TEST

/* b reads a and c, c reads a's group through a non-fusible node: b may not join a's group
 * after that group was read from outside, or a group would wait on itself. */
START_TEST(test_fusion_keeps_graph_acyclic) {
    const char *text = "v3ir 1\n%0 = input {name=\"x\"} : f32[B,T,8]\n%1 = input {name=\"w\"} : f32[8,8]\n"
                       "%2 = exp %0 : f32[B,T,8]\n%3 = linear %2, %1 : f32[B,T,8]\n%4 = add %2, %3 : f32[B,T,8]\n"
                       "output \"y\" = %4\n";
    Graph *g = parse(text);
    Fusion f;
    Err e = {0};
    ck_assert_int_eq(fusion_plan(g, BATCH, SEQ, &f, &e), 0);
    ck_assert_int_ne(f.group_of[2], f.group_of[4]);
    fusion_free(&f);
    graph_free(g);
    check_text(text, NULL);
}
END_TEST

START_TEST(test_errors) {
    Graph *g = parse("v3ir 1\n%0 = input {name=\"x\"} : f32[B,T,4]\n%1 = exp %0 : f32[B,T,4]\noutput \"y\" = %1\n");
    TensorSet feeds, out;
    tset_init(&feeds), tset_init(&out);
    InterpOptions opt = {.batch = BATCH, .seq = SEQ};
    Err e = {0};
    ck_assert_int_eq(exec_run("tpu", g, &feeds, &opt, &out, &e), -1);
    ck_assert_str_eq(e.msg, "unknown backend 'tpu' (available: interp, cpu, cuda)");
    memset(&e, 0, sizeof e);
    ck_assert_int_eq(exec_run("cpu", g, &feeds, &opt, &out, &e), -1);
    ck_assert_msg(strstr(e.msg, "no input named x") != NULL, "%s", e.msg);
    tset_free(&feeds), tset_free(&out);
    graph_free(g);
}
END_TEST

/* The cuda backend generates kernels (v3c compile) but launches none yet: a
 * run says so, or, without a driver (here and in CI), that the driver is missing. */
START_TEST(test_dump_kernels) {
    Graph *g = parse(rmsnorm_silu);
    char *dir = make_temp_dir();
    InterpOptions opt = {.batch = BATCH, .seq = SEQ};
    Err e = {0};
    ck_assert_msg(exec_dump_kernels(g, &opt, dir, &e) == 0, "%s", e.msg);
    DIR *d = opendir(dir);
    int files = 0;
    struct dirent *ent;
    while ((ent = readdir(d)) != NULL) {
        if (ent->d_name[0] == '.') continue;
        char *path = path_join(dir, ent->d_name);
        size_t len;
        char *text = read_file(path, &len, &e);
        ck_assert_msg(text && strstr(text, "define void @v3c_kernel_"), "%s", path);
        free(text);
        free(path);
        files++;
    }
    closedir(d);
    ck_assert_int_eq(files, 1);
    free(dir);
    graph_free(g);
}
END_TEST

/* ---- the kernel cache ---- */
/* Two fused groups (exp, then add after the GEMM): two distinct kernels. */
static const char *two_kernels = "v3ir 1\n%0 = input {name=\"x\"} : f32[B,T,8]\n%1 = input {name=\"w\"} : f32[8,8]\n"
                                 "%2 = exp %0 : f32[B,T,8]\n%3 = linear %2, %1 : f32[B,T,8]\n%4 = add %2, %3 : f32[B,T,8]\n"
                                 "output \"y\" = %4\n";

/* Builds and runs a plan through the cache $V3C_CACHE_DIR names; its stats. */
static CpuPlanStats run_plan(const Graph *g, const TensorSet *feeds, TensorSet *out) {
    InterpOptions opt = {.batch = BATCH, .seq = SEQ};
    Err e = {0};
    CpuPlan *p = cpu_plan_build(g, &opt, NULL, &e);
    ck_assert_msg(p != NULL, "%s", e.msg);
    tset_init(out);
    ck_assert_msg(cpu_plan_run(p, feeds, out, &e) == 0, "%s", e.msg);
    CpuPlanStats s = cpu_plan_stats(p);
    cpu_plan_free(p);
    return s;
}

static int compare_strings(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The names of dir's entries, sorted, one per line. */
static char *entry_names(const char *dir) {
    char *names[64];
    int n = 0;
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "%s", dir);
    for (struct dirent *ent; (ent = readdir(d)) != NULL && n < 64;)
        if (ent->d_name[0] != '.') names[n++] = xstrdup(ent->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, compare_strings);
    Buf b = {0};
    for (int i = 0; i < n; i++) buf_printf(&b, "%s\n", names[i]), free(names[i]);
    return b.data ? b.data : xstrdup("");
}

static void expect_same_outputs(const TensorSet *a, const TensorSet *b) {
    ck_assert(tensors_identical(tset_get(a, "y"), tset_get(b, "y")));
}

/* A second plan takes every kernel from the cache and computes the same bits; a
 * damaged entry is compiled again; a cache directory that cannot be made costs
 * only the compile. */
START_TEST(test_kernel_cache) {
    char *dir = make_temp_dir();
    setenv("V3C_CACHE_DIR", dir, 1);
    Graph *g = parse(two_kernels);
    TensorSet feeds, cold, warm, mended, uncached;
    tset_init(&feeds);
    feed_all(g, NULL, &feeds);
    CpuPlanStats s = run_plan(g, &feeds, &cold);
    ck_assert_int_eq(s.kernels, 2);
    ck_assert_int_eq(s.cached_kernels, 0);
    s = run_plan(g, &feeds, &warm);
    ck_assert_int_eq(s.cached_kernels, 2);
    expect_same_outputs(&cold, &warm);
    char *names = entry_names(dir);
    char *first = xstrndup(names, strcspn(names, "\n"));
    ck_assert_msg(strlen(first) == 32 && strchr(names + 33, '\n') == names + strlen(names) - 1, "%s", names);
    char *object = xsprintf("%s/%s/kernel.o", dir, first);
    ck_assert_int_eq(truncate(object, 16), 0);
    s = run_plan(g, &feeds, &mended);
    ck_assert_int_eq(s.cached_kernels, 1);
    expect_same_outputs(&cold, &mended);
    char *blocked = xsprintf("%s/%s/kernel.o/below", dir, first); /* a file's subdirectory */
    setenv("V3C_CACHE_DIR", blocked, 1);
    s = run_plan(g, &feeds, &uncached);
    ck_assert_int_eq(s.cached_kernels, 0);
    expect_same_outputs(&cold, &uncached);
    unsetenv("V3C_CACHE_DIR");
    tset_free(&feeds), tset_free(&cold), tset_free(&warm), tset_free(&mended), tset_free(&uncached);
    free(names), free(first), free(object), free(blocked), free(dir);
    graph_free(g);
}
END_TEST

/* --dump-kernels writes the same optimized IR whether the kernels were compiled or cached. */
START_TEST(test_dump_kernels_from_cache) {
    char *cache = make_temp_dir(), *cold = make_temp_dir(), *warm = make_temp_dir();
    setenv("V3C_CACHE_DIR", cache, 1);
    Graph *g = parse(two_kernels);
    InterpOptions opt = {.batch = BATCH, .seq = SEQ};
    Err e = {0};
    ck_assert_msg(exec_dump_kernels(g, &opt, cold, &e) == 0, "%s", e.msg);
    ck_assert_msg(exec_dump_kernels(g, &opt, warm, &e) == 0, "%s", e.msg);
    char *names = entry_names(cold), *again = entry_names(warm);
    ck_assert_str_eq(names, again);
    int files = 0;
    for (char *name = names, *end; *name; name = end + 1, files++) {
        end = strchr(name, '\n');
        *end = 0;
        char *pa = path_join(cold, name), *pb = path_join(warm, name);
        char *a = read_file(pa, NULL, &e), *b = read_file(pb, NULL, &e);
        ck_assert_msg(a && b && strcmp(a, b) == 0, "%s differs", name);
        free(a), free(b), free(pa), free(pb);
    }
    ck_assert_int_eq(files, 2);
    unsetenv("V3C_CACHE_DIR");
    free(names), free(again), free(cache), free(cold), free(warm);
    graph_free(g);
}
END_TEST

/* ---- the golden tiny model, built through the C API ---- */
static void golden_tiny(const char *passes, Tol tol) {
    const char *dir = "../shared/golden/tiny";
    Err e = {0};
    Program *p = program_parse_file("models/deepseek_v3.v3", &e);
    ck_assert_msg(p != NULL, "%s", e.msg);
    Checkpoint *ck = checkpoint_open(dir, &e);
    ck_assert_msg(ck != NULL, "%s", e.msg);
    ck_assert_msg(program_bind_config(p, ck->config, &e) == 0, "%s", e.msg);
    Graph *g = program_lower(p, &e);
    ck_assert_msg(g != NULL, "%s", e.msg);
    PipelineOptions po = {.passes = passes};
    ck_assert_msg(!passes || run_pipeline(g, &po, &e) == 0, "%s", e.msg);
    TensorSet feeds, cpu, interp;
    tset_init(&feeds), tset_init(&cpu), tset_init(&interp);
    ck_assert_msg(checkpoint_load_params(ck, g, &feeds, &e) == 0, "%s", e.msg);
    char *expected = path_join(dir, "expected.safetensors");
    StFile *f = st_open(expected, &e);
    ck_assert_msg(f != NULL, "%s", e.msg);
    Tensor *ids = st_to_tensor(st_find(f, "input_ids"), &e);
    st_close(f);
    ck_assert_msg(ids && ids->dtype == DT_I64, "input_ids: %s", e.msg);
    InterpOptions opt = {.batch = ids->shape[0], .seq = ids->shape[1]};
    tset_put(&feeds, "input_ids", ids);
    ck_assert_msg(exec_run("interp", g, &feeds, &opt, &interp, &e) == 0, "%s", e.msg);
    ck_assert_msg(exec_run("cpu", g, &feeds, &opt, &cpu, &e) == 0, "%s", e.msg);
    compare_sets_within(g, &cpu, &interp, passes ? passes : "golden tiny", tol);
    tset_free(&feeds), tset_free(&cpu), tset_free(&interp);
    free(expected);
    graph_free(g);
    program_free(p);
    checkpoint_close(ck);
}

START_TEST(test_golden_tiny_forward) { golden_tiny(NULL, (Tol){tolerance, NULL}); }
END_TEST

/* A training step's graph: every gradient (grad.*) within the backend's tolerance. */
START_TEST(test_golden_tiny_grads) { golden_tiny("autodiff,dce", (Tol){tolerance, NULL}); }
END_TEST

/* FP8 (quantize, fp8_matmul, dequantize on the interpreter's kernels between fused groups and
 * BLAS GEMMs): forward, and the gradients through the FP8 backward GEMMs. */
START_TEST(test_golden_tiny_fp8) { golden_tiny("fp8,dce", (Tol){tolerance, NULL}); }
END_TEST

START_TEST(test_golden_tiny_fp8_grads) { golden_tiny("autodiff,fp8,dce", (Tol){0, fp8_grad_tolerance}); }
END_TEST

/* The same with the groups the fuse pass recorded instead of the backend's own plan. */
START_TEST(test_golden_tiny_grads_fuse_pass) { golden_tiny("autodiff,dce,fuse", (Tol){tolerance, NULL}); }
END_TEST

/* fp8_matmul runs on the backend's kernel (cpu_fp8.c: fp64 BLAS per 128-block) and gives the
 * interpreter's bits: K and N over several ragged blocks, a bf16 result, the wgrad form over
 * three token blocks, and an empty contracted axis. */
START_TEST(test_fp8_matmul_exact) {
    Graph *g = parse(
        "v3ir 1\n%0 = input {name=\"x\"} : f32[B,T,300]\n%1 = input {name=\"w\"} : f32[130,300]\n"
        "%2, %3 = quantize %0 {tile=\"1x128\"} : e4m3[B,T,300], f32[B,T,3]\n"
        "%4, %5 = quantize %1 {tile=\"128x128\"} : e4m3[130,300], f32[2,3]\n"
        "%6 = fp8_matmul %2, %3, %4, %5 : f32[B,T,130]\n%7 = fp8_matmul %2, %3, %4, %5 {out=bf16} : bf16[B,T,130]\n"
        "%8 = input {name=\"g\"} : f32[260,70]\n%9 = input {name=\"h\"} : f32[260,140]\n"
        "%10, %11 = quantize %8 {tile=\"128x1\"} : e4m3[260,70], f32[3,70]\n"
        "%12, %13 = quantize %9 {tile=\"128x1\"} : e4m3[260,140], f32[3,140]\n"
        "%14 = fp8_matmul %10, %11, %12, %13 {wgrad=1} : f32[70,140]\n"
        "%15 = input {name=\"e\"} : f32[B,T,0]\n%16 = input {name=\"v\"} : f32[5,0]\n"
        "%17, %18 = quantize %15 {tile=\"1x128\"} : e4m3[B,T,0], f32[B,T,0]\n"
        "%19, %20 = quantize %16 {tile=\"128x128\"} : e4m3[5,0], f32[1,0]\n"
        "%21 = fp8_matmul %17, %18, %19, %20 : f32[B,T,5]\n"
        "output \"y\" = %6\noutput \"yb\" = %7\noutput \"dw\" = %14\noutput \"z\" = %21\n");
    TensorSet feeds;
    tset_init(&feeds);
    feed_all(g, NULL, &feeds);
    for (int threads = 1; threads <= 2; threads++) {
        CpuPlanStats s = expect_exact(g, &feeds, threads);
        ck_assert_int_eq(s.native_nodes, 4); /* the four fp8_matmuls */
    }
    tset_free(&feeds);
    graph_free(g);
}
END_TEST

/* An E4M3 NaN operand is the interpreter's run-time error on the backend too, word for word. */
START_TEST(test_fp8_matmul_nan_operand) {
    Graph *g = parse("v3ir 1\n%0 = input {name=\"qa\"} : e4m3[B,T,8]\n%1 = input {name=\"sa\"} : f32[B,T,1]\n"
                     "%2 = input {name=\"qb\"} : e4m3[4,8]\n%3 = input {name=\"sb\"} : f32[1,1]\n"
                     "%4 = fp8_matmul %0, %1, %2, %3 : f32[B,T,4]\noutput \"y\" = %4\n");
    TensorSet feeds;
    tset_init(&feeds);
    feed_all(g, NULL, &feeds);
    ((uint8_t *)tset_get(&feeds, "qb")->data)[5] = 0xFF;
    InterpOptions opt = {.batch = BATCH, .seq = SEQ};
    const char *backends[] = {"interp", "cpu"};
    char msgs[2][sizeof(((Err *)0)->msg)];
    for (int i = 0; i < 2; i++) {
        TensorSet out;
        tset_init(&out);
        Err e = {0};
        ck_assert_int_eq(exec_run(backends[i], g, &feeds, &opt, &out, &e), -1);
        snprintf(msgs[i], sizeof msgs[i], "%s", e.msg);
        tset_free(&out);
    }
    ck_assert_msg(strstr(msgs[1], "qb element 5 is an E4M3 NaN"), "%s", msgs[1]);
    ck_assert_str_eq(msgs[0], msgs[1]);
    tset_free(&feeds);
    graph_free(g);
}
END_TEST

/* V3C_PROFILE=1: a table of time per op kind on stderr, one line per kind that ran. */
/* OpenBLAS picks its kernel (and a row's order of sums over K) by the call's shape, so
 * the GEMMs' blocks must not follow the thread count: 1, 2, 3 and 8 threads give the same
 * bits, on shapes (M = 8 with N = 192, say) where halving M changes them. */
START_TEST(test_gemm_bits_do_not_depend_on_threads) {
    static const int64_t shapes[][3] = {{8, 192, 96}, {8, 256, 64}, {40, 100, 7}, {96, 64, 128}, {130, 33, 65}};
    srand(11);
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int64_t m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        float *x = xmalloc(sizeof(float) * (size_t)(m * k)), *w = xmalloc(sizeof(float) * (size_t)(n * k));
        float *dy = xmalloc(sizeof(float) * (size_t)(m * n));
        for (int64_t i = 0; i < m * k; i++) x[i] = (float)rand() / RAND_MAX - 0.5f;
        for (int64_t i = 0; i < n * k; i++) w[i] = (float)rand() / RAND_MAX - 0.5f;
        for (int64_t i = 0; i < m * n; i++) dy[i] = (float)rand() / RAND_MAX - 0.5f;
        float *y1 = xcalloc((size_t)(m * n), sizeof(float)), *d1 = xcalloc((size_t)(n * k), sizeof(float));
        gemm_xwt(x, w, y1, m, n, k, 1);
        gemm_dyt_x(dy, x, d1, m, n, k, 1);
        static const int threads[] = {2, 3, 8};
        for (size_t t = 0; t < 3; t++) {
            float *y = xcalloc((size_t)(m * n), sizeof(float)), *d = xcalloc((size_t)(n * k), sizeof(float));
            gemm_xwt(x, w, y, m, n, k, threads[t]);
            gemm_dyt_x(dy, x, d, m, n, k, threads[t]);
            ck_assert_msg(memcmp(y, y1, sizeof(float) * (size_t)(m * n)) == 0, "xwt %lldx%lldx%lld on %d threads",
                          (long long)m, (long long)n, (long long)k, threads[t]);
            ck_assert_msg(memcmp(d, d1, sizeof(float) * (size_t)(n * k)) == 0, "dyt_x %lldx%lldx%lld on %d threads",
                          (long long)m, (long long)n, (long long)k, threads[t]);
            free(y), free(d);
        }
        free(x), free(w), free(dy), free(y1), free(d1);
    }
}
END_TEST

START_TEST(test_profile_table) {
    ck_assert_int_eq(setenv("V3C_PROFILE", "1", 1), 0);
    CmdResult r = run_v3c("train models/tiny.v3 --steps 1 --batch 1 --seq 8 --backend cpu");
    ck_assert_msg(r.status == 0, "%s", r.err);
    ck_assert_msg(strstr(r.err, "; cpu backend profile: op kind"), "%s", r.err);
    ck_assert_msg(strstr(r.err, "; cpu backend profile: linear "), "%s", r.err);
    ck_assert_msg(strstr(r.err, "; cpu backend profile: sdpa_grad "), "%s", r.err);
    ck_assert_msg(strstr(r.err, "; cpu backend profile: fused group "), "%s", r.err);
    ck_assert_msg(strstr(r.err, "; cpu backend profile: total "), "%s", r.err);
    cmd_free(&r);
    ck_assert_int_eq(setenv("V3C_PROFILE", "0", 1), 0);
    r = run_v3c("train models/tiny.v3 --steps 1 --batch 1 --seq 8 --backend cpu");
    ck_assert_msg(r.status == 0 && !strstr(r.err, "cpu backend profile"), "%s", r.err);
    cmd_free(&r);
}
END_TEST

int main(void) {
    Suite *s = suite_create("cpu_backend");
    TCase *tc = tcase_create("cpu");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_unary_ops);
    tcase_add_test(tc, test_binary_ops);
    tcase_add_test(tc, test_other_forward_ops);
    tcase_add_test(tc, test_reshape_moves_only_a_last_use);
    tcase_add_test(tc, test_rmsnorm_fuses_into_one_group);
    tcase_add_test(tc, test_fused_bits_match_interpreter);
    tcase_add_test(tc, test_fusion_keeps_graph_acyclic);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_dump_kernels);
    tcase_add_test(tc, test_kernel_cache);
    tcase_add_test(tc, test_dump_kernels_from_cache);
    tcase_add_test(tc, test_golden_tiny_forward);
    tcase_add_test(tc, test_golden_tiny_grads);
    tcase_add_test(tc, test_golden_tiny_grads_fuse_pass);
    tcase_add_test(tc, test_golden_tiny_fp8);
    tcase_add_test(tc, test_golden_tiny_fp8_grads);
    tcase_add_test(tc, test_fp8_matmul_exact);
    tcase_add_test(tc, test_fp8_matmul_nan_operand);
    tcase_add_test(tc, test_gemm_bits_do_not_depend_on_threads);
    tcase_add_test(tc, test_backend_kernels);
    tcase_add_test(tc, test_backend_kernels_are_used);
    tcase_add_test(tc, test_exact_backend_kernels);
    tcase_add_test(tc, test_fused_bf16_casts_exact);
    tcase_add_test(tc, test_profile_table);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
