/* The CUDA code generator without a GPU.
 *
 * Host emulation: every kernel of a graph's CUDA plan is compiled as C++ (g++
 * or clang++, found at run time) with codegen/cuda/host_emu.h, which runs a
 * block's threads as pthreads, and the plan's launches are replayed on host
 * buffers; the outputs are compared with the reference interpreter's. This
 * checks the generated arithmetic and indexing (and the block reductions, with
 * a block of 3 threads and a grid of 2 blocks so that grid-stride loops and an
 * odd-sized tree are exercised), not the GPU's math library or scheduling.
 *
 * NVRTC: cubins, the cache (a second compile comes from it, a corrupt entry
 * is compiled again), errors. Skipped with a printed reason without NVRTC. */
#include <dlfcn.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../codegen/cuda/cuda.h"
#include "../codegen/cuda/kcache.h"
#include "../codegen/cuda/nvrtc.h"
#include "../frontend/frontend.h"
#include "../ir/interp.h"
#include "../passes/autodiff.h"
#include "../passes/passes.h"
#include "../runtime/cuda_backend.h"
#include "../runtime/init.h"
#include "testutil.h"

enum { BATCH = 2, SEQ = 3, EMU_BLOCK = 3, EMU_MAX_GRID = 2 };

/* These tests check generated kernels against the interpreter, so attention takes its kernel
 * templates (the GEMM path is a library call: tests/test_cuda_attention.c). */
static const CudaPlanOptions exact_plan = {.exact_attention = 1};

/* ---- inputs ---- */
/* Every input of g with random values; integers not named in fills in [0, 4). */
static void feed_inputs(const Graph *g, const InputFill *fills, TensorSet *feeds) {
    feed_random_inputs(g, fills, (InputFill){"", 0, 4}, BATCH, SEQ, 2024, feeds);
}

/* ---- the emulator: kernels in a shared object (tests/testutil.c) ---- */
static void *build_emulator(const char *cxx, const CudaKernel *kernels, size_t n) {
    char *so = build_host_kernels(cxx, kernels, n);
    void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    ck_assert_msg(h != NULL, "%s", dlerror());
    free(so);
    return h;
}

typedef void (*EntryFn)(void **args);
typedef int (*LaunchFn)(EntryFn fn, void **args, unsigned grid, unsigned block);

/* The host compiler, or NULL after saying the emulation tests skip. */
static const char *host_cxx_or_skip(void) {
    const char *cxx = host_cxx();
    if (!cxx) printf("test_cuda_codegen: skipping host emulation: no g++ or clang++ on PATH\n");
    return cxx;
}

/* An emulator library's launcher, and its entry for kernel `name`. */
static LaunchFn emulated_launcher(void *so) {
    LaunchFn launch = (LaunchFn)dlsym(so, "v3c_emu_launch");
    ck_assert_ptr_nonnull(launch);
    return launch;
}
static EntryFn emulated_entry(void *so, const char *name) {
    char entry[256];
    snprintf(entry, sizeof entry, "v3c_entry_%s", name);
    EntryFn fn = (EntryFn)dlsym(so, entry);
    ck_assert_msg(fn != NULL, "no %s in the emulator library", entry);
    return fn;
}

/* ---- replaying a plan ---- */
typedef struct Replay {
    const Graph *g;
    void **buf;      /* per value */
    Tensor **owned;  /* per value */
    void *scratch[4];
    int64_t scratch_bytes[4];
    int32_t scratch_node;
    int status;
    unsigned max_grid; /* launches run at most this many blocks (their loops stride over the rest) */
} Replay;

static void bind_values(Replay *r, const TensorSet *feeds) {
    const Graph *g = r->g;
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        if (n->op == OP_INPUT || n->op == OP_PARAM) {
            r->buf[n->out[0]] = tset_get(feeds, node_str(n, "name", ""))->data;
            continue;
        }
        if (n->op == OP_RESHAPE) {
            r->buf[n->out[0]] = r->buf[n->in[0]];
            continue;
        }
        for (int k = 0; k < n->nout; k++) {
            int64_t shape[IR_MAX_RANK];
            const Type *ty = ir_type(g, n->out[k]);
            Err e = {0};
            ck_assert(type_concrete(ty, BATCH, SEQ, shape, &e) == 0);
            r->owned[n->out[k]] = tensor_new(ty->dtype, ty->rank, shape);
            r->buf[n->out[k]] = r->owned[n->out[k]]->data;
        }
    }
}

static void *scratch_for(Replay *r, const CudaLaunch *l, const CudaArg *a) {
    if (l->node != r->scratch_node) {
        for (int i = 0; i < 4; i++) free(r->scratch[i]), r->scratch[i] = NULL, r->scratch_bytes[i] = 0;
        r->scratch_node = l->node;
    }
    ck_assert_int_lt(a->scratch, 4);
    if (!r->scratch[a->scratch]) {
        r->scratch[a->scratch] = xcalloc((size_t)a->bytes + 8, 1);
        r->scratch_bytes[a->scratch] = a->bytes;
    }
    ck_assert_int_ge(r->scratch_bytes[a->scratch], a->bytes);
    return r->scratch[a->scratch];
}

/* ---- library calls on the host, in the interpreter's order (fp64 sums, one rounding) ---- */
static const float *fbuf(const Replay *r, ValueId v) { return r->buf[v]; }

static int64_t count_at(const Replay *r, ValueId counts, int64_t e) {
    return ir_type(r->g, counts)->dtype == DT_I64 ? ((const int64_t *)r->buf[counts])[e] : ((const int32_t *)r->buf[counts])[e];
}

/* y[row, c] = sum_i x[row, i] w[c, i] for rows [r0, r1). */
static void host_gemm(const float *x, const float *w, float *y, int64_t r0, int64_t r1, int64_t n, int64_t k) {
    for (int64_t row = r0; row < r1; row++)
        for (int64_t c = 0; c < n; c++) {
            double s = 0;
            for (int64_t i = 0; i < k; i++) s += (double)x[row * k + i] * w[c * k + i];
            y[row * n + c] = (float)s;
        }
}

/* dw[c, i] = sum_row g[row, c] x[row, i] over rows [r0, r1). */
static void host_wgrad(const float *g, const float *x, float *dw, int64_t r0, int64_t r1, int64_t n, int64_t k) {
    for (int64_t c = 0; c < n; c++)
        for (int64_t i = 0; i < k; i++) {
            double s = 0;
            for (int64_t row = r0; row < r1; row++) s += (double)g[row * n + c] * x[row * k + i];
            dw[c * k + i] = (float)s;
        }
}

static void host_library_call(const Replay *r, const CudaLibCall *c) {
    const Node *n = &r->g->nodes.data[c->node];
    float *y = r->buf[n->out[0]];
    ck_assert_int_eq(ir_type(r->g, n->out[0])->dtype, DT_F32);
    if (c->kind == LIB_GEMM) return host_gemm(fbuf(r, n->in[0]), fbuf(r, n->in[1]), y, 0, c->m, c->n, c->k);
    if (c->kind == LIB_GEMM_WGRAD) return host_wgrad(fbuf(r, n->in[0]), fbuf(r, n->in[1]), y, 0, c->m, c->n, c->k);
    ck_assert_msg(c->kind == LIB_GROUPED_GEMM || c->kind == LIB_GROUPED_WGRAD, "no host version of %s", cuda_lib_kind_name(c->kind));
    int64_t at = 0;
    for (int64_t e = 0; e < c->groups; e++) {
        int64_t rows = count_at(r, n->in[1], e);
        if (c->kind == LIB_GROUPED_GEMM)
            host_gemm(fbuf(r, n->in[0]), fbuf(r, n->in[2]) + e * c->n * c->k, y, at, at + rows, c->n, c->k);
        else
            host_wgrad(fbuf(r, n->in[0]), fbuf(r, n->in[2]), y + e * c->n * c->k, at, at + rows, c->n, c->k);
        at += rows;
    }
    ck_assert_int_eq(at, c->m);
}

static void run_launch(Replay *r, const CudaPlan *p, const CudaLaunch *l, void *so, LaunchFn launch, unsigned block) {
    void *args[CUDA_MAX_PARAMS];
    for (int a = 0; a < l->nargs; a++) {
        const CudaArg *arg = &l->args[a];
        args[a] = arg->kind == CARG_VALUE    ? (char *)r->buf[arg->value] + arg->offset
                  : arg->kind == CARG_STATUS ? (void *)&r->status
                                             : scratch_for(r, l, arg);
    }
    EntryFn fn = emulated_entry(so, p->kernels.data[l->kernel].name);
    unsigned grid = l->grid < r->max_grid ? (unsigned)l->grid : r->max_grid;
    ck_assert_int_eq(launch(fn, args, grid, block), 0);
}

/* Launches and library calls are each in node order; a node has one kind or the other. */
static void replay(Replay *r, const CudaPlan *p, void *so, unsigned block) {
    LaunchFn launch = emulated_launcher(so);
    size_t li = 0, ci = 0;
    while (li < p->launches.len || ci < p->calls.len) {
        int take_call = ci < p->calls.len && (li == p->launches.len || p->calls.data[ci].node < p->launches.data[li].node);
        if (take_call) host_library_call(r, &p->calls.data[ci++]);
        else run_launch(r, p, &p->launches.data[li++], so, launch, block);
    }
}

static void replay_free(Replay *r) {
    for (size_t v = 0; v < r->g->values.len; v++) tensor_free(r->owned[v]);
    for (int i = 0; i < 4; i++) free(r->scratch[i]);
    free(r->owned);
    free(r->buf);
}

/* ---- comparing ---- */
static int64_t float_ulps(float a, float b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b) ? 0 : INT64_MAX;
    int32_t ia, ib;
    memcpy(&ia, &a, 4), memcpy(&ib, &b, 4);
    if (ia < 0) ia = INT32_MIN - ia;
    if (ib < 0) ib = INT32_MIN - ib;
    return llabs((long long)ia - (long long)ib);
}

/* Whole buffers compared element by element: floats within max_ulps, everything else bytewise. */
static void compare_output(const char *name, const Tensor *want, const void *got, int64_t max_ulps) {
    if (!dtype_is_float(want->dtype) || want->dtype == DT_E4M3 || want->dtype == DT_E5M2) {
        ck_assert_msg(memcmp(want->data, got, (size_t)want->numel * dtype_host_size(want->dtype)) == 0,
                      "output %s differs", name);
        return;
    }
    const float *w = tensor_f32(want), *gv = got;
    for (int64_t i = 0; i < want->numel; i++)
        ck_assert_msg(float_ulps(w[i], gv[i]) <= max_ulps, "output %s[%lld]: cuda %.9g, interpreter %.9g", name,
                      (long long)i, gv[i], w[i]);
}


/* A plan replayed on the emulator: its buffers stay for inspection. */
typedef struct Emulated {
    CudaPlan plan;
    Replay replay;
    void *so;
} Emulated;

/* 0 and x filled in, or 1 when no host compiler exists (the caller skips). */
static int emulate(const Graph *g, const TensorSet *feeds, unsigned block, unsigned max_grid, Emulated *x) {
    const char *cxx = host_cxx_or_skip();
    if (!cxx) return 1;
    Err e = {0};
    ck_assert_msg(cuda_plan_build(g, BATCH, SEQ, &exact_plan, &x->plan, &e) == 0, "%s", e.msg);
    x->so = build_emulator(cxx, x->plan.kernels.data, x->plan.kernels.len);
    x->replay = (Replay){g, xcalloc(g->values.len + 1, sizeof(void *)), xcalloc(g->values.len + 1, sizeof(Tensor *)),
                         {0}, {0}, -1, 0, max_grid};
    bind_values(&x->replay, feeds);
    replay(&x->replay, &x->plan, x->so, block);
    return 0;
}

static void emulated_free(Emulated *x) {
    replay_free(&x->replay);
    dlclose(x->so);
    cuda_plan_free(&x->plan);
}

/* Replays g's plan with blocks of `block` threads and compares every graph
 * output with the interpreter's within max_ulps. */
static void emulate_and_compare_grid(const Graph *g, const TensorSet *feeds, unsigned block, unsigned max_grid,
                                     int64_t max_ulps) {
    TensorSet want;
    tset_init(&want);
    InterpOptions io = {.batch = BATCH, .seq = SEQ};
    Err e = {0};
    ck_assert_msg(interp_run(g, feeds, &io, &want, &e) == 0, "%s", e.msg);
    Emulated x;
    if (emulate(g, feeds, block, max_grid, &x) == 0) {
        ck_assert_int_eq(x.replay.status, 0);
        for (size_t i = 0; i < g->outputs.len; i++)
            compare_output(g->outputs.data[i].name, tset_get(&want, g->outputs.data[i].name),
                           x.replay.buf[g->outputs.data[i].value], max_ulps);
        emulated_free(&x);
    }
    tset_free(&want);
}

static void emulate_and_compare(const Graph *g, const TensorSet *feeds, unsigned block, int64_t max_ulps) {
    emulate_and_compare_grid(g, feeds, block, EMU_MAX_GRID, max_ulps);
}

static void check_graph(const char *text, const InputFill *fills, int64_t max_ulps) {
    Graph *g = parse_ir_ok(text, text);
    TensorSet feeds;
    tset_init(&feeds);
    feed_inputs(g, fills, &feeds);
    emulate_and_compare(g, &feeds, EMU_BLOCK, max_ulps);
    tset_free(&feeds);
    graph_free(g);
}

static void check_all(const char *const *texts, size_t n, const InputFill *fills, int64_t max_ulps) {
    for (size_t i = 0; i < n; i++) {
        char *text = xsprintf("v3ir 1\n%s", texts[i]);
        check_graph(text, fills, max_ulps);
        free(text);
    }
}

/* ---- fused groups ----
 * Bound: a reduction adds per-thread partials in a tree instead of left to
 * right. Both orders are fp64 sums of at most 64 fp32-valued terms, so they
 * differ by at most 64 * 2^-53 * sum|x|, far below one fp32 ulp: the first
 * K_F32 rounding after the reduction gives the same float or a neighbour (a
 * tie of the two fp64 values across a rounding boundary), and each later
 * rounded step (mean, +eps, rsqrt, multiplies) carries at most that one ulp
 * plus half an ulp of its own, hence 2 ulp over these chains. Elementwise groups
 * are exact (bit for bit). */
enum { FUSED_REDUCTION_ULPS = 2 };

static const char *const fused_elementwise[] = {
    "%0 = input {name=\"x\"} : f32[B,T,33]\n%1 = exp %0 : f32[B,T,33]\n%2 = neg %1 : f32[B,T,33]\n"
    "%3 = sigmoid %2 : f32[B,T,33]\n%4 = silu %3 : f32[B,T,33]\n%5 = abs %4 : f32[B,T,33]\n%6 = sqrt %5 : f32[B,T,33]\n"
    "%7 = add %6, %1 : f32[B,T,33]\n%8 = log %7 : f32[B,T,33]\n%9 = rsqrt %7 : f32[B,T,33]\n%10 = recip %9 : f32[B,T,33]\n"
    "output \"a\" = %8\noutput \"b\" = %10\n",
    "%0 = input {name=\"a\"} : f32[B,T,5]\n%1 = input {name=\"b\"} : f32[5]\n%2 = input {name=\"c\"} : f32[B,T,1]\n"
    "%3 = sub %0, %1 : f32[B,T,5]\n%4 = div %3, %2 : f32[B,T,5]\n%5 = maximum %4, %1 : f32[B,T,5]\n"
    "%6 = minimum %5, %0 : f32[B,T,5]\n%7 = where %2, %6, %1 : f32[B,T,5]\n%8 = const {value=0.1} : f32[]\n"
    "%9 = mul %7, %8 : f32[B,T,5]\noutput \"y\" = %9\noutput \"m\" = %5\n",
};

static const char *const fused_reductions[] = {
    "%0 = input {name=\"x\"} : f32[B,T,64]\n%1 = input {name=\"w\"} : f32[64]\n"
    "%2 = mul %0, %0 : f32[B,T,64]\n%3 = mean %2 {axis=-1, keepdim=1} : f32[B,T,1]\n%4 = const {value=1e-06} : f32[]\n"
    "%5 = add %3, %4 : f32[B,T,1]\n%6 = rsqrt %5 : f32[B,T,1]\n%7 = mul %0, %6 : f32[B,T,64]\n%8 = mul %1, %7 : f32[B,T,64]\n"
    "%9 = silu %8 : f32[B,T,64]\n%10 = softmax %9 : f32[B,T,64]\n%11 = max %10 {axis=-1} : f32[B,T]\n"
    "output \"y\" = %10\noutput \"m\" = %11\noutput \"r\" = %6\n",
    "%0 = input {name=\"x\"} : f32[B,T,7]\n%1 = sum %0 {axis=-1} : f32[B,T]\n%2 = mean %0 {axis=2, keepdim=1} : f32[B,T,1]\n"
    "%3 = max %0 {axis=-1} : f32[B,T]\n%4 = sub %0, %2 : f32[B,T,7]\n"
    "output \"s\" = %1\noutput \"m\" = %2\noutput \"x\" = %3\noutput \"d\" = %4\n",
};

START_TEST(test_fused_elementwise_exact) {
    check_all(fused_elementwise, sizeof fused_elementwise / sizeof *fused_elementwise, NULL, 0);
}
END_TEST

/* The bf16 pass's casts in a fused kernel: v3c_round_bf16 against the interpreter, on the delicate floats. */
START_TEST(test_fused_bf16_casts_exact) {
    Graph *g = parse_ir_ok("v3ir 1\n%0 = input {name=\"x\"} : f32[B,T,16]\n%1 = cast %0 {to=bf16} : bf16[B,T,16]\n"
                           "%2 = cast %1 {to=f32} : f32[B,T,16]\n%3 = mul %2, %0 : f32[B,T,16]\n"
                           "%4 = cast %3 {to=bf16} : bf16[B,T,16]\noutput \"b\" = %1\noutput \"y\" = %3\noutput \"c\" = %4\n",
                           "casts");
    TensorSet feeds;
    tset_init(&feeds);
    feed_inputs(g, NULL, &feeds);
    fill_bf16_rounding_cases(tset_get(&feeds, "x"));
    CudaPlan p;
    Err e = {0};
    ck_assert_msg(cuda_plan_build(g, BATCH, SEQ, &exact_plan, &p, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(p.launches.len, 1); /* one fused kernel */
    cuda_plan_free(&p);
    emulate_and_compare(g, &feeds, EMU_BLOCK, 0);
    tset_free(&feeds);
    graph_free(g);
}
END_TEST

START_TEST(test_fused_reductions) {
    check_all(fused_reductions, sizeof fused_reductions / sizeof *fused_reductions, NULL, FUSED_REDUCTION_ULPS);
}
END_TEST

/* NaN propagates through max (K_RMAX_NAN) and not through softmax's max (K_RMAX). */
START_TEST(test_fused_nan_reductions) {
    const char *text = "v3ir 1\n%0 = input {name=\"x\"} : f32[B,T,6]\n%1 = log %0 : f32[B,T,6]\n"
                       "%2 = max %1 {axis=-1} : f32[B,T]\n%3 = softmax %1 : f32[B,T,6]\noutput \"m\" = %2\noutput \"p\" = %3\n";
    check_graph(text, NULL, FUSED_REDUCTION_ULPS);
}
END_TEST

/* ---- templates: each thread runs the interpreter's loop in its order, so bit for bit ---- */
static const char *const forward_templates[] = {
    /* scalar and bf16 elementwise (outside fused groups), cast, reductions and softmax on other axes */
    "%0 = input {name=\"x\"} : f32[B,T,4]\n%1 = mean_all %0 : f32[]\n%2 = const {value=3} : f32[]\n%3 = mul %1, %2 : f32[]\n"
    "%4 = exp %3 : f32[]\n%5 = cast %0 {to=bf16} : bf16[B,T,4]\n%6 = add %5, %5 : bf16[B,T,4]\n%7 = cast %6 {to=f16} : f16[B,T,4]\n"
    "%8 = sum %0 {axis=1} : f32[B,4]\n%9 = max %0 {axis=0, keepdim=1} : f32[1,T,4]\n%10 = softmax %0 {axis=1} : f32[B,T,4]\n"
    "%11 = cast %0 {to=i32} : i32[B,T,4]\n%12 = cast %11 {to=f32} : f32[B,T,4]\n%13 = iota {n=4} : f32[4]\n"
    "%14 = cast %13 {to=bf16} : bf16[4]\n%15 = where %0, %5, %14 : bf16[B,T,4]\n%16 = cast %11 {to=i64} : i64[B,T,4]\n"
    "output \"a\" = %4\noutput \"b\" = %7\noutput \"c\" = %8\noutput \"d\" = %9\noutput \"e\" = %10\noutput \"f\" = %12\n"
    "output \"g\" = %13\noutput \"h\" = %11\noutput \"i\" = %15\noutput \"j\" = %16\n",
    /* layout copies */
    "%0 = input {name=\"x\"} : f32[B,T,6]\n%1 = reshape %0 {shape=[B,T,2,3]} : f32[B,T,2,3]\n"
    "%2 = slice %0 {axis=2, end=[4], start=[1]} : f32[B,T,3]\n%3 = concat %0, %2 {axis=2} : f32[B,T,9]\n"
    "%4 = expand %2 {shape=[2,B,T,3]} : f32[2,B,T,3]\n%5 = stack %0, %0 : f32[2,B,T,6]\n%6 = transpose %1 : f32[B,T,3,2]\n"
    "%7 = slice %0 {axis=1, end=[T], start=[1]} : f32[B,T-1,6]\n%8 = pad %7 {axis=1, end=[T], size=[T], start=[1]} : f32[B,T,6]\n"
    "output \"a\" = %1\noutput \"b\" = %2\noutput \"c\" = %3\noutput \"d\" = %4\noutput \"e\" = %5\noutput \"f\" = %6\n"
    "output \"g\" = %7\noutput \"h\" = %8\n",
    /* embedding and the loss */
    "%0 = input {name=\"w\"} : f32[11,6]\n%1 = input {name=\"ids\"} : i64[B,T]\n%2 = embedding %0, %1 : f32[B,T,6]\n"
    "%3 = input {name=\"x\"} : f32[B,T,10]\n%4 = cross_entropy %3, %1 : f32[B,T]\noutput \"y\" = %2\noutput \"l\" = %4\n",
    /* routing and the MoE permutes */
    "%0 = input {name=\"x\"} : f32[B,T,8]\n%1, %2 = topk %0 {k=3} : f32[B,T,3], i32[B,T,3]\n%3 = gather %0, %2 : f32[B,T,3]\n"
    "%4 = one_hot %2 {n=8} : f32[B,T,3,8]\n%5, %6 = moe_dispatch %0, %2 {experts=8} : f32[B*T*3,8], i32[8]\n"
    "%7 = moe_combine %5, %2, %1 : f32[B,T,8]\n"
    "output \"v\" = %1\noutput \"i\" = %2\noutput \"g\" = %3\noutput \"o\" = %4\noutput \"d\" = %5\noutput \"c\" = %6\n"
    "output \"y\" = %7\n",
    /* attention: rope, causal and non-causal sdpa */
    "%0 = input {name=\"x\"} : f32[B,T,2,8]\n%1 = input {name=\"f\"} : f32[4]\n%2 = rope %0, %1 {scale=1.5} : f32[B,T,2,8]\n"
    "%3 = input {name=\"k\"} : f32[B,T,2,8]\n%4 = input {name=\"v\"} : f32[B,T,2,4]\n"
    "%5 = sdpa %2, %3, %4 {scale=0.3} : f32[B,T,2,4]\n%6 = input {name=\"k2\"} : f32[B,5,2,8]\n"
    "%7 = input {name=\"v2\"} : f32[B,5,2,4]\n%8 = sdpa %2, %6, %7 {causal=0, scale=0.7} : f32[B,T,2,4]\n"
    "output \"r\" = %2\noutput \"o\" = %5\noutput \"p\" = %8\n",
};

static const char *const backward_templates[] = {
    "%0 = input {name=\"g\"} : f32[B,T,2,4]\n%1 = input {name=\"q\"} : f32[B,T,2,8]\n%2 = input {name=\"k\"} : f32[B,T,2,8]\n"
    "%3 = input {name=\"v\"} : f32[B,T,2,4]\n%4, %5, %6 = sdpa_grad %0, %1, %2, %3 {scale=0.35} : f32[B,T,2,8], f32[B,T,2,8], f32[B,T,2,4]\n"
    "output \"dq\" = %4\noutput \"dk\" = %5\noutput \"dv\" = %6\n",
    "%0 = input {name=\"g\"} : f32[B,T,3,5]\n%1 = input {name=\"q\"} : f32[B,T,3,6]\n%2 = input {name=\"k\"} : f32[B,7,3,6]\n"
    "%3 = input {name=\"v\"} : f32[B,7,3,5]\n%4, %5, %6 = sdpa_grad %0, %1, %2, %3 {causal=0, scale=0.5} : f32[B,T,3,6], f32[B,7,3,6], f32[B,7,3,5]\n"
    "output \"dq\" = %4\noutput \"dk\" = %5\noutput \"dv\" = %6\n",
    "%0 = input {name=\"x\"} : f32[B,T,6]\n%1 = sum_to %0 {shape=[B,T,1]} : f32[B,T,1]\n%2 = sum_to %0 {shape=[6]} : f32[6]\n"
    "%3 = sum_to %0 {shape=[B,1,6]} : f32[B,1,6]\n%4 = sum_to %0 {shape=[1,T,1]} : f32[1,T,1]\n%5 = sum_to %0 {shape=[]} : f32[]\n"
    "output \"a\" = %1\noutput \"b\" = %2\noutput \"c\" = %3\noutput \"d\" = %4\noutput \"e\" = %5\n",
    "%0 = input {name=\"g\"} : f32[B,T,6]\n%1 = input {name=\"ids\"} : i64[B,T]\n%2 = embedding_grad %0, %1 {rows=[5]} : f32[5,6]\n"
    "%3 = input {name=\"s\"} : f32[B,T]\n%4 = mean_all %3 : f32[]\n%5 = mean_all_grad %4, %0 : f32[B,T,6]\n"
    "%6 = input {name=\"x\"} : f32[B,T,5]\n%7 = cross_entropy_grad %3, %6, %1 : f32[B,T,5]\n"
    "output \"de\" = %2\noutput \"dm\" = %5\noutput \"dc\" = %7\n",
    "%0 = input {name=\"x\"} : f32[B,T,6]\n%1, %2 = topk %0 {k=2} : f32[B,T,2], i32[B,T,2]\n%3 = input {name=\"g\"} : f32[B,T,2]\n"
    "%4 = scatter_add %3, %2 {size=[6]} : f32[B,T,6]\n%5, %6 = moe_dispatch %0, %2 {experts=6} : f32[B*T*2,6], i32[6]\n"
    "%7 = input {name=\"gy\"} : f32[B,T,6]\n%8, %9 = moe_combine_grad %7, %5, %2, %1 : f32[B*T*2,6], f32[B,T,2]\n"
    "output \"s\" = %4\noutput \"dyd\" = %8\noutput \"dw\" = %9\n",
};

static const char *const fp8_templates[] = {
    "%0 = input {name=\"x\"} : f32[B,T,200]\n%1, %2 = quantize %0 {tile=\"1x128\"} : e4m3[B,T,200], f32[B,T,2]\n"
    "%3 = dequantize %1, %2 {tile=\"1x128\"} : f32[B,T,200]\n%4, %5 = quantize %0 {pow2=1, tile=\"1x128\"} : e4m3[B,T,200], f32[B,T,2]\n"
    "output \"q\" = %1\noutput \"s\" = %2\noutput \"d\" = %3\noutput \"q2\" = %4\noutput \"s2\" = %5\n",
    "%0 = input {name=\"w\"} : f32[130,140]\n%1, %2 = quantize %0 {tile=\"128x128\"} : e4m3[130,140], f32[2,2]\n"
    "%3 = dequantize %1, %2 {tile=\"128x128\", to=bf16} : bf16[130,140]\n"
    "%4 = input {name=\"a\"} : f32[B,T,5]\n%5, %6 = quantize %4 {tile=\"128x1\"} : e4m3[B,T,5], f32[ceil(B*T/128),5]\n"
    "output \"q\" = %1\noutput \"s\" = %2\noutput \"d\" = %3\noutput \"qa\" = %5\noutput \"sa\" = %6\n",
    /* segmented 128x1 tiles: restart at each expert's rows (counts from a dispatch; some experts empty) */
    "%0 = input {name=\"x\"} : f32[6,6]\n%1, %2 = topk %0 {k=2} : f32[6,2], i32[6,2]\n"
    "%3, %4 = moe_dispatch %0, %2 {experts=6} : f32[12,6], i32[6]\n"
    "%5, %6 = quantize %3, %4 {tile=\"128x1\"} : e4m3[12,6], f32[8,6]\n"
    "%7 = dequantize %5, %6, %4 {tile=\"128x1\"} : f32[12,6]\n"
    "output \"q\" = %5\noutput \"s\" = %6\noutput \"d\" = %7\n",
};

static const InputFill index_fills[] = {{"ids", 0, 5}, {0}};

START_TEST(test_forward_templates_exact) {
    check_all(forward_templates, sizeof forward_templates / sizeof *forward_templates, index_fills, 0);
}
END_TEST

START_TEST(test_backward_templates_exact) {
    check_all(backward_templates, sizeof backward_templates / sizeof *backward_templates, index_fills, 0);
}
END_TEST

/* ---- attention tiled over several tiles: 70 queries and 70 or 75 keys with key/query tiles
 * of 32 rows (25 at dk + dv = 398: TILE = 40 KiB / (398 * 4 bytes)), blocks of 3 and of 40
 * query rows (a block's causal keys then end inside a tile), odd and empty head dims. Each
 * thread repeats the interpreter's operations in its order, so the bits must match. */
static const char *const tiled_attention[] = {
    "%0 = input {name=\"q\"} : f32[B,70,2,5]\n%1 = input {name=\"k\"} : f32[B,70,2,5]\n%2 = input {name=\"v\"} : f32[B,70,2,3]\n"
    "%3 = sdpa %0, %1, %2 {scale=0.45} : f32[B,70,2,3]\n%4 = input {name=\"g\"} : f32[B,70,2,3]\n"
    "%5, %6, %7 = sdpa_grad %4, %0, %1, %2 {scale=0.45} : f32[B,70,2,5], f32[B,70,2,5], f32[B,70,2,3]\n"
    "output \"o\" = %3\noutput \"dq\" = %5\noutput \"dk\" = %6\noutput \"dv\" = %7\n",
    "%0 = input {name=\"q\"} : f32[B,70,1,301]\n%1 = input {name=\"k\"} : f32[B,75,1,301]\n%2 = input {name=\"v\"} : f32[B,75,1,97]\n"
    "%3 = sdpa %0, %1, %2 {causal=0, scale=0.05} : f32[B,70,1,97]\n%4 = input {name=\"g\"} : f32[B,70,1,97]\n"
    "%5, %6, %7 = sdpa_grad %4, %0, %1, %2 {causal=0, scale=0.05} : f32[B,70,1,301], f32[B,75,1,301], f32[B,75,1,97]\n"
    "output \"o\" = %3\noutput \"dq\" = %5\noutput \"dk\" = %6\noutput \"dv\" = %7\n",
    /* a sharp softmax: scores hundreds apart, so a max taken over fewer keys than the row's overflows exp */
    "%0 = input {name=\"q\"} : f32[B,70,2,5]\n%1 = input {name=\"k\"} : f32[B,70,2,5]\n%2 = input {name=\"v\"} : f32[B,70,2,3]\n"
    "%3 = sdpa %0, %1, %2 {scale=2000} : f32[B,70,2,3]\n%4 = input {name=\"g\"} : f32[B,70,2,3]\n"
    "%5, %6, %7 = sdpa_grad %4, %0, %1, %2 {scale=2000} : f32[B,70,2,5], f32[B,70,2,5], f32[B,70,2,3]\n"
    "output \"o\" = %3\noutput \"dq\" = %5\noutput \"dk\" = %6\noutput \"dv\" = %7\n",
    /* empty head dims: every score is 0 (uniform softmax), or nothing to weigh */
    "%0 = input {name=\"q\"} : f32[B,T,2,0]\n%1 = input {name=\"k\"} : f32[B,T,2,0]\n%2 = input {name=\"v\"} : f32[B,T,2,3]\n"
    "%3 = sdpa %0, %1, %2 {scale=0.5} : f32[B,T,2,3]\n%4 = input {name=\"g\"} : f32[B,T,2,3]\n"
    "%5, %6, %7 = sdpa_grad %4, %0, %1, %2 {scale=0.5} : f32[B,T,2,0], f32[B,T,2,0], f32[B,T,2,3]\n"
    "%8 = input {name=\"v0\"} : f32[B,T,2,0]\n%9 = input {name=\"q4\"} : f32[B,T,2,4]\n%10 = sdpa %9, %9, %8 {scale=1} : f32[B,T,2,0]\n"
    "output \"o\" = %3\noutput \"dq\" = %5\noutput \"dk\" = %6\noutput \"dv\" = %7\noutput \"e\" = %10\n",
};

START_TEST(test_tiled_attention_exact) {
    for (size_t i = 0; i < sizeof tiled_attention / sizeof *tiled_attention; i++) {
        char *text = xsprintf("v3ir 1\n%s", tiled_attention[i]);
        Graph *g = parse_ir_ok(text, text);
        TensorSet feeds;
        tset_init(&feeds);
        feed_inputs(g, NULL, &feeds);
        emulate_and_compare(g, &feeds, EMU_BLOCK, 0);
        if (i == 0) emulate_and_compare(g, &feeds, 40, 0);
        tset_free(&feeds);
        graph_free(g);
        free(text);
    }
}
END_TEST

/* ---- the emulator itself: what a GPU leaves unspecified must not look fixed ---- */
/* Block b reads what block b-1 wrote: right only if the blocks run in index order. */
static const char chain_source[] =
    "extern \"C\" __global__ void v3c_test_chain(float *out) {\n"
    "    if (threadIdx.x == 0) out[blockIdx.x] = blockIdx.x == 0 ? 1.0f : out[blockIdx.x - 1] + 1.0f;\n"
    "}\n";
/* Reads the shared memory before writing it. */
static const char shared_source[] = "extern \"C\" __global__ void v3c_test_shared(float *out) {\n"
                                    "    extern __shared__ double v3c_red[];\n"
                                    "    if (threadIdx.x == 0) out[blockIdx.x] = (float)v3c_red[0];\n"
                                    "    __syncthreads();\n"
                                    "    v3c_red[threadIdx.x] = 1.0;\n"
                                    "}\n";

/* Each thread reads what its neighbour wrote to shared memory before the barrier: right only
 * if every thread of the block ran, once, and __syncthreads waited for all of them. */
static const char team_source[] = "extern \"C\" __global__ void v3c_test_team(float *out) {\n"
                                  "    extern __shared__ double v3c_red[];\n"
                                  "    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;\n"
                                  "    v3c_red[threadIdx.x] = (double)i;\n"
                                  "    __syncthreads();\n"
                                  "    out[i] += (float)v3c_red[(threadIdx.x + 1) % blockDim.x] + 1.0f;\n"
                                  "}\n";

/* Runs kernel `name` of a fresh emulator library over `grid` blocks of 2 threads. */
static void emulate_one(const char *cxx, const CudaKernel *kernels, const char *name, unsigned grid, float *out) {
    void *h = build_emulator(cxx, kernels, 2);
    void *args[] = {out};
    ck_assert_int_eq(emulated_launcher(h)(emulated_entry(h, name), args, grid, 2), 0);
    dlclose(h);
}

START_TEST(test_emulator_shuffles_blocks_and_poisons_shared_memory) {
    const char *cxx = host_cxx_or_skip();
    if (!cxx) return;
    CudaKernel kernels[2] = {
        {.name = "v3c_test_chain", .source = (char *)chain_source, .family = "test", .nparams = 1,
         .param_types = {"float *"}},
        {.name = "v3c_test_shared", .source = (char *)shared_source, .family = "test", .nparams = 1,
         .param_types = {"float *"}, .smem_per_thread = (int)sizeof(double)},
    };
    enum { GRID = 8 };
    float first[GRID] = {0}, again[GRID] = {0}, shared[GRID] = {0};
    emulate_one(cxx, kernels, "v3c_test_chain", GRID, first);
    emulate_one(cxx, kernels, "v3c_test_chain", GRID, again);
    int in_order = 1;
    for (int b = 0; b < GRID; b++) in_order = in_order && first[b] == (float)(b + 1);
    ck_assert_msg(!in_order, "the emulator ran the blocks in index order");
    ck_assert_msg(memcmp(first, again, sizeof first) == 0, "the block order is not reproducible");
    emulate_one(cxx, kernels, "v3c_test_shared", GRID, shared);
    for (int b = 0; b < GRID; b++)
        ck_assert_msg(isnan(shared[b]), "block %d read shared memory no thread of it wrote: %g", b, shared[b]);
}
END_TEST

/* The emulator keeps a block's threads from launch to launch: a launch with another block size
 * must get a team of that size, and launches that fail to start leave the next one working. */
START_TEST(test_emulator_thread_team_follows_the_block_size) {
    const char *cxx = host_cxx_or_skip();
    if (!cxx) return;
    CudaKernel kernel = {.name = "v3c_test_team", .source = (char *)team_source, .family = "test", .nparams = 1,
                         .param_types = {"float *"}, .smem_per_thread = (int)sizeof(double)};
    void *h = build_emulator(cxx, &kernel, 1);
    EntryFn fn = emulated_entry(h, kernel.name);
    LaunchFn launch = emulated_launcher(h);
    enum { GRID = 3 };
    static const unsigned blocks[] = {3, 256, 256, 1024, 0, 3, 1025, 1};
    static float out[GRID * 1024];
    for (size_t k = 0; k < sizeof blocks / sizeof *blocks; k++) {
        unsigned b = blocks[k];
        memset(out, 0, sizeof out);
        void *args[] = {out};
        if (b < 1 || b > 1024) {
            ck_assert_int_eq(launch(fn, args, GRID, b), -1);
            continue;
        }
        ck_assert_int_eq(launch(fn, args, GRID, b), 0);
        for (unsigned i = 0; i < GRID * b; i++) {
            float want = (float)(i - i % b + (i % b + 1) % b) + 1.0f;
            ck_assert_msg(out[i] == want, "block size %u, thread %u: %g, not %g", b, i, out[i], want);
        }
    }
    dlclose(h);
}
END_TEST

START_TEST(test_fp8_templates_exact) { check_all(fp8_templates, sizeof fp8_templates / sizeof *fp8_templates, NULL, 0); }
END_TEST

/* Bad data cannot fail a kernel: it stores a status code (and reads nothing out of bounds). */
static int status_after(const char *text, const InputFill *fills) {
    Graph *g = parse_ir_ok(text, text);
    TensorSet feeds;
    tset_init(&feeds);
    feed_inputs(g, fills, &feeds);
    Emulated x;
    int status = -1;
    if (emulate(g, &feeds, EMU_BLOCK, EMU_MAX_GRID, &x) == 0) {
        status = x.replay.status;
        emulated_free(&x);
    }
    tset_free(&feeds);
    graph_free(g);
    return status;
}

START_TEST(test_bad_data_sets_status) {
    static const InputFill wide_ids[] = {{"ids", 0, 40}, {0}};
    int st = status_after("v3ir 1\n%0 = input {name=\"w\"} : f32[11,6]\n%1 = input {name=\"ids\"} : i64[B,T]\n"
                          "%2 = embedding %0, %1 : f32[B,T,6]\n%3 = input {name=\"g\"} : f32[B,T,6]\n"
                          "%4 = embedding_grad %3, %1 {rows=[11]} : f32[11,6]\noutput \"y\" = %2\noutput \"d\" = %4\n",
                          wide_ids);
    if (st >= 0) ck_assert_int_eq(st, CUDA_STATUS_INDEX);
    st = status_after("v3ir 1\n%0 = input {name=\"x\"} : f32[B,T,8]\n%1 = log %0 : f32[B,T,8]\n"
                      "%2, %3 = topk %1 {k=2} : f32[B,T,2], i32[B,T,2]\noutput \"v\" = %2\n",
                      NULL);
    if (st >= 0) ck_assert_int_eq(st, CUDA_STATUS_NAN);
}
END_TEST

/* ---- the bundled model, forward and gradients, end to end ---- */
/* tiny.v3's graph (with grads, its gradient graph), its weights and a batch of token ids. */
static Graph *tiny_model_with_feeds(int grads, TensorSet *feeds, Program **prog) {
    Err e = {0};
    *prog = program_parse_file("models/tiny.v3", &e);
    ck_assert_msg(*prog != NULL, "%s", e.msg);
    Graph *g = program_lower(*prog, &e);
    ck_assert_msg(g != NULL, "%s", e.msg);
    ck_assert_msg(!grads || autodiff_graph(g, "loss", &e) == 0, "%s", e.msg);
    PipelineOptions po = {.log = stderr};
    ck_assert_msg(run_pipeline(g, &po, &e) == 0, "%s", e.msg);
    tset_init(feeds);
    InitOptions init = {.seed = 7, .std = 0.02};
    ck_assert_msg(init_params(g, &init, feeds, &e) == 0, "%s", e.msg);
    static const InputFill ids[] = {{"input_ids", 0, 256}, {0}};
    feed_inputs(g, ids, feeds);
    return g;
}

/* With one thread per block a block reduction is the left-to-right sum, so
 * every kernel repeats the interpreter's operations and the whole plan (node
 * order, reshape aliases, pointer offsets, scratch, library calls) must give
 * the interpreter's bits. */
START_TEST(test_tiny_model_bit_for_bit) {
    TensorSet feeds;
    Program *prog;
    Graph *g = tiny_model_with_feeds(1, &feeds, &prog);
    emulate_and_compare(g, &feeds, 1, 0);
    tset_free(&feeds);
    graph_free(g);
    program_free(prog);
}
END_TEST

/* The launches as a GPU gets them: CUDA_BLOCK threads a block and the plan's own grids, so
 * every block and thread index the forward's kernels compute is one a GPU would (under the
 * sanitizer build each access is checked against its buffer, tests/testutil.c), and the block
 * reductions are 256-wide trees in shared memory. Still the interpreter's bits: the trees add
 * fp64 partial sums, so their order shows only where an exact sum lies within about n·2⁻⁵³ of
 * an f32 rounding boundary; this input has none (a change of model or seed that lands on one
 * is off by one ulp, and that is why). The gradient graph too: its backward kernels (the
 * reductions over rows in embedding, norm and softmax gradients) are the ones most likely to
 * index a 256-wide block wrongly. */
static void tiny_model_at_real_launch_sizes(int grads) {
    TensorSet feeds;
    Program *prog;
    Graph *g = tiny_model_with_feeds(grads, &feeds, &prog);
    emulate_and_compare_grid(g, &feeds, CUDA_BLOCK, UINT_MAX, 0);
    tset_free(&feeds);
    graph_free(g);
    program_free(prog);
}
START_TEST(test_tiny_model_at_real_launch_sizes) { tiny_model_at_real_launch_sizes(0); }
END_TEST
START_TEST(test_tiny_model_grads_at_real_launch_sizes) { tiny_model_at_real_launch_sizes(1); }
END_TEST

/* Equal layers give equal kernel texts, hence one kernel. */
START_TEST(test_identical_kernels_deduplicated) {
    Graph *g = parse_ir_ok("v3ir 1\n%0 = input {name=\"x\"} : f32[B,T,4]\n%1 = exp %0 : f32[B,T,4]\n"
                           "%2 = input {name=\"y\"} : f32[B,T,4]\n%3 = exp %2 : f32[B,T,4]\n"
                           "output \"a\" = %1\noutput \"b\" = %3\n",
                           "dedupe");
    CudaPlan p;
    Err e = {0};
    ck_assert_msg(cuda_plan_build(g, BATCH, SEQ, &exact_plan, &p, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(p.generated, 2);
    ck_assert_int_eq(p.kernels.len, 1);
    ck_assert_int_eq(p.launches.len, 2);
    ck_assert_int_eq(p.launches.data[0].kernel, p.launches.data[1].kernel);
    cuda_plan_free(&p);
    graph_free(g);
    /* A stack's copies differ only in where they write: a pointer offset, one kernel. */
    g = parse_ir_ok("v3ir 1\n%0 = input {name=\"x\"} : f32[B,T,4]\n%1 = stack %0, %0, %0 : f32[3,B,T,4]\noutput \"s\" = %1\n",
                    "stack");
    ck_assert_msg(cuda_plan_build(g, BATCH, SEQ, &exact_plan, &p, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(p.kernels.len, 1);
    ck_assert_int_eq(p.launches.len, 3);
    ck_assert_int_eq(p.launches.data[2].args[1].offset, 2 * BATCH * SEQ * 4 * (int64_t)sizeof(float));
    cuda_plan_free(&p);
    graph_free(g);
}
END_TEST

/* ---- library calls ---- */
START_TEST(test_gemms_are_library_calls) {
    Graph *g = parse_ir_ok(
        "v3ir 1\n%0 = input {name=\"x\"} : f32[B,T,24]\n%1 = input {name=\"w\"} : f32[40,24]\n%2 = linear %0, %1 : f32[B,T,40]\n"
        "%3 = input {name=\"g\"} : f32[B,T,40]\n%4 = linear_wgrad %3, %0 : f32[40,24]\n"
        "%5, %6 = topk %0 {k=2} : f32[B,T,2], i32[B,T,2]\n%7, %8 = moe_dispatch %0, %6 {experts=24} : f32[B*T*2,24], i32[24]\n"
        "%9 = input {name=\"we\"} : f32[24,5,24]\n%10 = grouped_linear %7, %8, %9 : f32[B*T*2,5]\n"
        "output \"y\" = %2\noutput \"dw\" = %4\noutput \"z\" = %10\n",
        "gemms");
    CudaPlan p;
    Err e = {0};
    ck_assert_msg(cuda_plan_build(g, BATCH, SEQ, &exact_plan, &p, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(p.calls.len, 3);
    const CudaLibCall *c = p.calls.data;
    ck_assert(c[0].kind == LIB_GEMM && c[0].m == BATCH * SEQ && c[0].n == 40 && c[0].k == 24);
    ck_assert(c[1].kind == LIB_GEMM_WGRAD && c[1].m == BATCH * SEQ && c[1].n == 40 && c[1].k == 24);
    ck_assert(c[2].kind == LIB_GROUPED_GEMM && c[2].m == BATCH * SEQ * 2 && c[2].n == 5 && c[2].k == 24 && c[2].groups == 24);
    ck_assert_str_eq(cuda_lib_kind_name(LIB_FP8_GEMM), "fp8_gemm");
    cuda_plan_free(&p);
    graph_free(g);
}
END_TEST

/* ---- errors ---- */
START_TEST(test_unsupported_cast_is_user_error) {
    Graph *g = parse_ir_ok("v3ir 1\n%0 = input {name=\"i\"} : i32[B,T]\n%1 = cast %0 {to=bf16} : bf16[B,T]\noutput \"y\" = %1\n", "cast");
    CudaPlan p;
    Err e = {0};
    ck_assert_int_eq(cuda_plan_build(g, BATCH, SEQ, &exact_plan, &p, &e), -1);
    ck_assert_int_eq(e.code, 1);
    ck_assert_msg(strstr(e.msg, "cast i32 to bf16 has no CUDA template") != NULL, "%s", e.msg);
    graph_free(g);
}
END_TEST

/* A key row (dk + dv floats) must fit the 48 KiB of static shared memory a block may declare. */
START_TEST(test_attention_head_dims_too_wide_is_user_error) {
    Graph *g = parse_ir_ok("v3ir 1\n%0 = input {name=\"q\"} : f32[B,T,1,12000]\n%1 = input {name=\"v\"} : f32[B,T,1,300]\n"
                           "%2 = sdpa %0, %0, %1 {scale=1} : f32[B,T,1,300]\noutput \"o\" = %2\n", "wide");
    CudaPlan p;
    Err e = {0};
    ck_assert_int_eq(cuda_plan_build(g, BATCH, SEQ, &exact_plan, &p, &e), -1);
    ck_assert_int_eq(e.code, 1);
    ck_assert_msg(strstr(e.msg, "sdpa: head dims dk=12000 and dv=300 need more than 48 KiB of shared memory") != NULL, "%s",
                  e.msg);
    graph_free(g);
}
END_TEST

START_TEST(test_template_lookup_leaves_gemms_to_the_library) {
    Graph *g = parse_ir_ok("v3ir 1\n%0 = input {name=\"x\"} : f32[B,T,4]\n%1 = input {name=\"w\"} : f32[5,4]\n"
                           "%2 = linear %0, %1 : f32[B,T,5]\noutput \"y\" = %2\n", "lin");
    CudaPlan p;
    memset(&p, 0, sizeof p);
    strmap_init(&p.by_name);
    CudaEmit em = {&p, 1};
    Err e = {0};
    ck_assert_int_eq(cuda_template_node(&em, g, &g->nodes.data[2], BATCH, SEQ, &e), 1);
    ck_assert_int_eq(cuda_library_node(&p, g, &g->nodes.data[0], BATCH, SEQ, &e), 1);
    cuda_plan_free(&p);
    graph_free(g);
}
END_TEST

START_TEST(test_renderer_rejects_unknown_operation) {
    KernelDesc k;
    memset(&k, 0, sizeof k);
    k.rows = 2, k.cols = 3, k.nlead = 1, k.lead[0] = 2;
    VEC_PUSH(k.exprs, ((KExpr){.op = K_CONST, .space = KS_ELEM, .value = 1.0}));
    VEC_PUSH(k.exprs, ((KExpr){.op = K_OP_COUNT, .space = KS_ELEM, .args = {0, -1, -1}}));
    VEC_PUSH(k.stores, ((KStore){1, 0}));
    VEC_PUSH(k.outputs, 0);
    KernelText kt = {0};
    Err e = {0};
    ck_assert_int_eq(cuda_render_fused(&k, &kt, &e), -1);
    ck_assert_msg(strstr(e.msg, "does not know") != NULL, "%s", e.msg);
    buf_free(&kt.body);
    kernel_desc_free(&k);
}
END_TEST

START_TEST(test_target_check) {
    Err e = {0};
    ck_assert_int_eq(cuda_target_check("sm_90a", &e), 0);
    ck_assert_int_eq(cuda_target_check("sm_80", &e), 0);
    ck_assert_int_eq(cuda_target_check("sm_100a", &e), 0);
    const char *bad[] = {"sm_9", "sm_90b", "compute_90", "sm_", "sm_1000", "", "SM_90"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(&e, 0, sizeof e);
        ck_assert_int_eq(cuda_target_check(bad[i], &e), -1);
        ck_assert_msg(strstr(e.msg, "sm_NN or sm_NNa") != NULL, "%s", e.msg);
    }
}
END_TEST

/* ---- NVRTC and the cache ---- */
static Nvrtc *open_nvrtc_or_skip(void) {
    Err e = {0};
    Nvrtc *nv = nvrtc_open(&e);
    if (!nv) printf("test_cuda_codegen: skipping NVRTC test: %s\n", e.msg);
    return nv;
}

static CudaPlan small_plan(void) {
    Graph *g = parse_ir_ok("v3ir 1\n%0 = input {name=\"x\"} : f32[B,T,64]\n%1 = softmax %0 : f32[B,T,64]\n"
                           "%2 = input {name=\"f\"} : f32[32]\n%3 = reshape %1 {shape=[B,T,1,64]} : f32[B,T,1,64]\n"
                           "%4 = rope %3, %2 : f32[B,T,1,64]\noutput \"y\" = %4\n",
                           "small");
    CudaPlan p;
    Err e = {0};
    ck_assert_msg(cuda_plan_build(g, BATCH, SEQ, &exact_plan, &p, &e) == 0, "%s", e.msg);
    graph_free(g);
    return p;
}

START_TEST(test_nvrtc_cubin_and_cache) {
    Nvrtc *nv = open_nvrtc_or_skip();
    if (!nv) return;
    CudaPlan p = small_plan();
    ck_assert_int_eq(p.kernels.len, 2);
    char *dir = make_temp_dir();
    CudaCubin *cubins = xcalloc(p.kernels.len, sizeof *cubins);
    CudaCompileStats st;
    Err e = {0};
    ck_assert_msg(cuda_compile_kernels(nv, p.kernels.data, 2, "sm_90a", dir, cubins, 0, &st, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(st.compiled, 2);
    ck_assert_int_eq(st.cached, 0);
    for (int i = 0; i < 2; i++) ck_assert(cubins[i].len > 4 && memcmp(cubins[i].data, "\x7f" "ELF", 4) == 0);
    ck_assert_int_eq(cuda_compile_kernels(nv, p.kernels.data, 2, "sm_90a", dir, NULL, 0, &st, &e), 0);
    ck_assert_int_eq(st.compiled, 0);
    ck_assert_int_eq(st.cached, 2);
    /* Another target is another key. */
    ck_assert_int_eq(cuda_compile_kernels(nv, p.kernels.data, 1, "sm_80", dir, NULL, 0, &st, &e), 0);
    ck_assert_int_eq(st.compiled, 1);
    /* A truncated cubin is detected and compiled again. */
    char *key = cuda_cache_key(nvrtc_version_text(nv), "sm_90a", p.kernels.data[0].source);
    char *cubin_path = xsprintf("%s/%s/kernel.cubin", dir, key);
    ck_assert_int_eq(truncate(cubin_path, 100), 0);
    char *data = NULL;
    size_t len = 0;
    ck_assert_int_eq(kcache_lookup(dir, key, &cuda_cache_files, NULL, &data, &len, NULL), 0);
    ck_assert_int_eq(cuda_compile_kernels(nv, p.kernels.data, 2, "sm_90a", dir, NULL, 0, &st, &e), 0);
    ck_assert_int_eq(st.compiled, 1);
    ck_assert_int_eq(st.cached, 1);
    ck_assert_int_eq(kcache_lookup(dir, key, &cuda_cache_files, NULL, &data, &len, NULL), 1);
    ck_assert(len == cubins[0].len && memcmp(data, cubins[0].data, len) == 0);
    free(data), free(key), free(cubin_path), free(dir);
    cuda_cubins_free(cubins, 2);
    cuda_plan_free(&p);
    nvrtc_close(nv);
}
END_TEST

/* Each entry keeps the PTX its cubin was assembled from; asked for it, a hit reads
 * it back, and an entry without it (written before v3c kept PTX) is compiled again. */
START_TEST(test_nvrtc_cache_keeps_ptx) {
    Nvrtc *nv = open_nvrtc_or_skip();
    if (!nv) return;
    CudaPlan p = small_plan();
    char *dir = make_temp_dir();
    CudaCubin *cold = xcalloc(2, sizeof *cold), *warm = xcalloc(2, sizeof *warm), *plain = xcalloc(2, sizeof *plain);
    CudaCompileStats st;
    Err e = {0};
    ck_assert_msg(cuda_compile_kernels(nv, p.kernels.data, 2, "sm_90a", dir, cold, 1, &st, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(st.compiled, 2);
    for (int i = 0; i < 2; i++) {
        char *entry = xsprintf(".entry %s(", p.kernels.data[i].name);
        ck_assert_msg(cold[i].ptx && strstr(cold[i].ptx, ".target sm_90a") && strstr(cold[i].ptx, entry), "%s",
                      cold[i].ptx ? cold[i].ptx : "(no PTX)");
        free(entry);
    }
    ck_assert_int_eq(cuda_compile_kernels(nv, p.kernels.data, 2, "sm_90a", dir, warm, 1, &st, &e), 0);
    ck_assert_int_eq(st.cached, 2);
    for (int i = 0; i < 2; i++) ck_assert_str_eq(warm[i].ptx, cold[i].ptx);
    char *key = cuda_cache_key(nvrtc_version_text(nv), "sm_90a", p.kernels.data[0].source);
    char *ptx_path = xsprintf("%s/%s/kernel.ptx", dir, key);
    ck_assert_int_eq(remove(ptx_path), 0);
    cuda_cubins_free(warm, 2);
    warm = xcalloc(2, sizeof *warm);
    ck_assert_int_eq(cuda_compile_kernels(nv, p.kernels.data, 2, "sm_90a", dir, warm, 1, &st, &e), 0);
    ck_assert_int_eq(st.compiled, 1);
    ck_assert_int_eq(st.cached, 1);
    ck_assert_str_eq(warm[0].ptx, cold[0].ptx);
    ck_assert_int_eq(access(ptx_path, R_OK), 0);
    /* Not asked for, no PTX is read. */
    ck_assert_int_eq(cuda_compile_kernels(nv, p.kernels.data, 2, "sm_90a", dir, plain, 0, &st, &e), 0);
    ck_assert(st.cached == 2 && !plain[0].ptx && !plain[1].ptx);
    cuda_cubins_free(cold, 2), cuda_cubins_free(warm, 2), cuda_cubins_free(plain, 2);
    free(key), free(ptx_path), free(dir);
    cuda_plan_free(&p);
    nvrtc_close(nv);
}
END_TEST

static long long define_value(const char *source, const char *name) {
    char *key = xsprintf("#define %s ", name);
    const char *at = strstr(source, key);
    ck_assert_msg(at != NULL, "no %s in the kernel", key);
    long long v = atoll(at + strlen(key));
    free(key);
    return v;
}

/* The attention kernels at DeepSeek-V3's shapes (128 heads, dk=192, dv=128, T=S=4096) compile
 * for sm_90a, and their static shared memory (two float tiles, TILE * DK + 1 and TILE * DV + 1)
 * stays within the 48 KiB a block may declare statically: ptxas does not check that, the
 * launch fails. */
START_TEST(test_nvrtc_compiles_attention_at_deepseek_shapes) {
    Nvrtc *nv = open_nvrtc_or_skip();
    if (!nv) return;
    Graph *g = parse_ir_ok("v3ir 1\n%0 = input {name=\"q\"} : f32[1,4096,128,192]\n%1 = input {name=\"v\"} : f32[1,4096,128,128]\n"
                           "%2 = sdpa %0, %0, %1 {scale=0.07} : f32[1,4096,128,128]\n"
                           "%3, %4, %5 = sdpa_grad %2, %0, %0, %1 {scale=0.07} : f32[1,4096,128,192], f32[1,4096,128,192], "
                           "f32[1,4096,128,128]\noutput \"o\" = %2\noutput \"dq\" = %3\noutput \"dk\" = %4\noutput \"dv\" = %5\n",
                           "deepseek attention");
    CudaPlan p;
    Err e = {0};
    ck_assert_msg(cuda_plan_build(g, 1, 4096, &exact_plan, &p, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(p.kernels.len, 3); /* sdpa, sdpa_grad_q, sdpa_grad_kv */
    for (size_t i = 0; i < p.kernels.len; i++) {
        const char *src = p.kernels.data[i].source;
        long long tile = define_value(src, "TILE"), dk = define_value(src, "DK"), dv = define_value(src, "DV");
        ck_assert_int_eq(dk, 192);
        ck_assert_int_eq(dv, 128);
        ck_assert_int_eq(tile, 32);
        ck_assert_int_le((tile * dk + 1 + tile * dv + 1) * (long long)sizeof(float), 48 * 1024);
    }
    char *dir = make_temp_dir();
    CudaCompileStats st;
    ck_assert_msg(cuda_compile_kernels(nv, p.kernels.data, (int)p.kernels.len, "sm_90a", dir, NULL, 0, &st, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(st.compiled, 3);
    free(dir);
    cuda_plan_free(&p);
    graph_free(g);
    nvrtc_close(nv);
}
END_TEST

START_TEST(test_nvrtc_errors) {
    Nvrtc *nv = open_nvrtc_or_skip();
    if (!nv) return;
    char *cubin = NULL;
    size_t len = 0;
    Err e = {0};
    ck_assert_int_eq(nvrtc_compile(nv, "extern \"C\" __global__ void k() { undefined_thing(); }", "broken", "sm_90a", &cubin, &len, NULL, &e), -1);
    ck_assert_msg(strstr(e.msg, "broken") && strstr(e.msg, "undefined_thing"), "%s", e.msg);
    memset(&e, 0, sizeof e);
    ck_assert_int_eq(nvrtc_compile(nv, "extern \"C\" __global__ void k() {}", "ok", "sm_9x", &cubin, &len, NULL, &e), -1);
    ck_assert_msg(strstr(e.msg, "sm_9x") != NULL, "%s", e.msg);
    nvrtc_close(nv);
}
END_TEST

START_TEST(test_cache_dir_resolution) {
    char *dir = make_temp_dir();
    char *v3c = path_join(dir, "v3c-cache"), *xdg = path_join(dir, "xdg");
    Err e = {0};
    setenv("V3C_CACHE_DIR", v3c, 1);
    char *got = kcache_dir(&e);
    ck_assert_str_eq(got, v3c);
    free(got);
    unsetenv("V3C_CACHE_DIR");
    setenv("XDG_CACHE_HOME", xdg, 1);
    got = kcache_dir(&e);
    char *want = path_join(xdg, "v3c");
    ck_assert_str_eq(got, want);
    struct stat sb;
    ck_assert(stat(want, &sb) == 0 && S_ISDIR(sb.st_mode));
    free(got), free(want);
    unsetenv("XDG_CACHE_HOME");
    setenv("HOME", dir, 1);
    got = kcache_dir(&e);
    want = xsprintf("%s/.cache/v3c", dir);
    ck_assert_str_eq(got, want);
    free(got), free(want), free(v3c), free(xdg), free(dir);
}
END_TEST

/* ---- the command line ---- */
static long long count_after(const char *text, const char *label) {
    const char *p = strstr(text, label);
    ck_assert_msg(p != NULL, "no '%s' in: %s", label, text);
    return atoll(p + strlen(label));
}

START_TEST(test_cli_compile_and_cache) {
    Nvrtc *nv = open_nvrtc_or_skip();
    if (!nv) return;
    nvrtc_close(nv);
    char *dir = make_temp_dir(), *cache = path_join(dir, "cache"), *dump = path_join(dir, "kernels");
    setenv("V3C_CACHE_DIR", cache, 1);
    CmdResult r = run_v3c("compile models/tiny.v3 --target sm_90a --batch 1 --seq 8 --dump-kernels %s", dump);
    ck_assert_msg(r.status == 0, "%s", r.err);
    long long generated = count_after(r.out, "kernels: "), distinct = count_after(r.out, "generated, ");
    ck_assert_int_gt(generated, distinct);
    ck_assert_int_eq(count_after(r.out, "distinct, "), distinct); /* all compiled */
    ck_assert_int_eq(count_after(r.out, "compiled, "), 0);
    ck_assert_int_gt(count_after(r.out, "library calls: "), 0);
    cmd_free(&r);
    r = run_v3c("compile models/tiny.v3 --target sm_90a --batch 1 --seq 8");
    ck_assert_msg(r.status == 0, "%s", r.err);
    ck_assert_int_eq(count_after(r.out, "distinct, "), 0);
    ck_assert_int_eq(count_after(r.out, "compiled, "), distinct);
    cmd_free(&r);
    /* NAME.cu and NAME.ptx for each distinct kernel, from a compile and then from the cache. */
    for (int pass = 0; pass < 2; pass++) {
        for (const char *const *ext = (const char *const[]){"cu", "ptx", NULL}; *ext; ext++) {
            char *ls = xsprintf("test $(ls %s | grep -c '\\.%s$') -eq %lld", dump, *ext, distinct);
            ck_assert_msg(system(ls) == 0, "%s", ls);
            free(ls);
        }
        if (pass == 1) break;
        char *again = xsprintf("rm -r %s", dump);
        ck_assert_int_eq(system(again), 0);
        free(again);
        r = run_v3c("compile models/tiny.v3 --target sm_90a --batch 1 --seq 8 --dump-kernels %s", dump);
        ck_assert_msg(r.status == 0 && count_after(r.out, "compiled, ") == distinct, "%s%s", r.out, r.err);
        cmd_free(&r);
    }
    free(dump), free(cache), free(dir);
}
END_TEST

/* Issue 5's claim: the full 671B graph compiles here, without a GPU, and a
 * second compile takes every kernel from the cache. */
START_TEST(test_cli_full_model_compiles_then_caches) {
    Nvrtc *nv = open_nvrtc_or_skip();
    if (!nv) return;
    nvrtc_close(nv);
    char *dir = make_temp_dir(), *cache = path_join(dir, "cache");
    setenv("V3C_CACHE_DIR", cache, 1);
    CmdResult r = run_v3c("compile models/deepseek_v3.v3 --target sm_90a");
    ck_assert_msg(r.status == 0, "%s", r.err);
    printf("deepseek_v3.v3, first compile: %s", r.out);
    long long distinct = count_after(r.out, "generated, ");
    ck_assert_int_gt(distinct, 0);
    ck_assert_int_eq(count_after(r.out, "distinct, "), distinct);
    cmd_free(&r);
    r = run_v3c("compile models/deepseek_v3.v3 --target sm_90a");
    ck_assert_msg(r.status == 0, "%s", r.err);
    printf("deepseek_v3.v3, second compile: %s", r.out);
    ck_assert_int_eq(count_after(r.out, "distinct, "), 0);
    ck_assert_int_eq(count_after(r.out, "compiled, "), distinct);
    cmd_free(&r);
    free(cache), free(dir);
}
END_TEST

START_TEST(test_cli_errors) {
    CmdResult r = run_v3c("compile models/tiny.v3 --target sm_9");
    assert_user_error(&r, "sm_NN or sm_NNa");
    cmd_free(&r);
    r = run_v3c("compile models/tiny.v3 --batch 0");
    assert_user_error(&r, "at least 1");
    cmd_free(&r);
    r = run_v3c("compile models/tiny.v3 --input x");
    assert_user_error(&r, "does not take --input");
    cmd_free(&r);
}
END_TEST

/* ---- the driver ---- */
START_TEST(test_cuda_device_open) {
    Err e = {0};
    CudaDevice *d = cuda_device_open(&e);
    if (!d) {
        /* No driver here (or no GPU): the message says which. */
        ck_assert_int_eq(e.code, 1);
        ck_assert_msg(strstr(e.msg, "libcuda.so.1") || strstr(e.msg, "no GPU") || strstr(e.msg, "CUDA driver"), "%s", e.msg);
        printf("test_cuda_codegen: no CUDA device: %s\n", e.msg);
        return;
    }
    Err t = {0};
    ck_assert_msg(cuda_target_check(cuda_device_target(d), &t) == 0, "%s", t.msg);
    ck_assert(strlen(cuda_device_name(d)) > 0);
    cuda_device_close(d);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("cuda_codegen");
    TCase *emu = tcase_create("host_emulation");
    tcase_set_timeout(emu, 600);
    tcase_add_test(emu, test_fused_elementwise_exact);
    tcase_add_test(emu, test_fused_bf16_casts_exact);
    tcase_add_test(emu, test_fused_reductions);
    tcase_add_test(emu, test_fused_nan_reductions);
    tcase_add_test(emu, test_forward_templates_exact);
    tcase_add_test(emu, test_backward_templates_exact);
    tcase_add_test(emu, test_fp8_templates_exact);
    tcase_add_test(emu, test_bad_data_sets_status);
    tcase_add_test(emu, test_tiny_model_bit_for_bit);
    tcase_add_test(emu, test_tiny_model_at_real_launch_sizes);
    tcase_add_test(emu, test_tiny_model_grads_at_real_launch_sizes);
    tcase_add_test(emu, test_tiled_attention_exact);
    tcase_add_test(emu, test_emulator_shuffles_blocks_and_poisons_shared_memory);
    tcase_add_test(emu, test_emulator_thread_team_follows_the_block_size);
    suite_add_tcase(s, emu);
    TCase *plan = tcase_create("plan");
    tcase_add_test(plan, test_identical_kernels_deduplicated);
    tcase_add_test(plan, test_gemms_are_library_calls);
    tcase_add_test(plan, test_unsupported_cast_is_user_error);
    tcase_add_test(plan, test_attention_head_dims_too_wide_is_user_error);
    tcase_add_test(plan, test_template_lookup_leaves_gemms_to_the_library);
    tcase_add_test(plan, test_renderer_rejects_unknown_operation);
    tcase_add_test(plan, test_target_check);
    suite_add_tcase(s, plan);
    TCase *nvrtc = tcase_create("nvrtc");
    tcase_set_timeout(nvrtc, 600);
    tcase_add_test(nvrtc, test_nvrtc_cubin_and_cache);
    tcase_add_test(nvrtc, test_nvrtc_errors);
    tcase_add_test(nvrtc, test_nvrtc_compiles_attention_at_deepseek_shapes);
    tcase_add_test(nvrtc, test_nvrtc_cache_keeps_ptx);
    tcase_add_test(nvrtc, test_cache_dir_resolution);
    tcase_add_test(nvrtc, test_cli_compile_and_cache);
    tcase_add_test(nvrtc, test_cli_errors);
    tcase_add_test(nvrtc, test_cli_full_model_compiles_then_caches);
    tcase_add_test(nvrtc, test_cuda_device_open);
    suite_add_tcase(s, nvrtc);
    return s;
}

int main(void) { return run_suite(suite()); }
