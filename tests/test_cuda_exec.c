/* The CUDA executor (runtime/cuda_exec.c) without a GPU.
 *
 * The executor talks to the device only through a CudaApi; here it runs on the
 * host-emulated table (tests/testutil.c: malloc'd "device" memory filled with
 * NaN bytes, kernels compiled with g++ and codegen/cuda/host_emu.h, host GEMMs
 * in the interpreter's order), so what is checked is the executor's own
 * logic (which buffers exist, reshape aliases, byte windows, scratch, launch
 * and library-call order, grouped GEMMs from device-side counts, uploads,
 * downloads, stream/event ordering, the status words) against the reference
 * interpreter, bit for bit. The emulation runs every block with one thread,
 * so a block reduction is the left-to-right sum the interpreter does.
 *
 * The real table (the driver and cuBLASLt) is exercised only where a GPU
 * answers; elsewhere that test prints why it skipped. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <dlfcn.h>

#include "../base/numeric.h"
#include "../codegen/cpu.h"
#include "../frontend/frontend.h"
#include "../ir/interp.h"
#include "../passes/autodiff.h"
#include "../passes/bf16.h"
#include "../passes/fp8.h"
#include "../passes/passes.h"
#include "../runtime/cuda_backend.h"
#include "../runtime/cuda_blaslt.h"
#include "../runtime/cuda_exec.h"
#include "../runtime/exec.h"
#include "../runtime/init.h"
#include "testutil.h"

enum { BATCH = 2, SEQ = 3, EMU_BLOCK = 1, EMU_MAX_GRID = 2, TINY_VOCAB = 256 };

/* ---- graphs and feeds ---- */
enum { F32_GEMMS = 0, FP8_GEMMS = 1, BF16_GEMMS = 2 };

/* tiny.v3, with every gradient when asked, and the GEMMs in FP8 (the fp8 pass)
 * and/or bf16 (the bf16 pass), in `v3c train`'s order (after autodiff, fp8 first). */
static Graph *tiny_graph_in(int grads, int precision, Program **prog) {
    Err e = {0};
    *prog = program_parse_file("models/tiny.v3", &e);
    ck_assert_msg(*prog != NULL, "%s", e.msg);
    Graph *g = program_lower(*prog, &e);
    ck_assert_msg(g != NULL, "%s", e.msg);
    if (grads) ck_assert_msg(autodiff_graph(g, "loss", &e) == 0, "%s", e.msg);
    Fp8Options f8 = fp8_default_options();
    if (precision & FP8_GEMMS) ck_assert_msg(fp8_graph(g, &f8, &e) == 0, "%s", e.msg);
    if (precision & BF16_GEMMS) ck_assert_msg(bf16_graph(g, &e) == 0, "%s", e.msg);
    PipelineOptions po = {.log = stderr};
    ck_assert_msg(run_pipeline(g, &po, &e) == 0, "%s", e.msg);
    return g;
}

static Graph *tiny_graph(int grads, Program **prog) { return tiny_graph_in(grads, F32_GEMMS, prog); }

/* Weights drawn with weight_seed, token ids with seed. */
static void tiny_feeds_with(const Graph *g, uint64_t weight_seed, uint64_t seed, TensorSet *feeds) {
    Err e = {0};
    InitOptions init = {.seed = weight_seed, .std = 0.02};
    ck_assert_msg(init_params(g, &init, feeds, &e) == 0, "%s", e.msg);
    static const InputFill ids[] = {{"input_ids", 0, TINY_VOCAB}, {0}};
    feed_random_inputs(g, ids, (InputFill){"", 0, 4}, BATCH, SEQ, seed, feeds);
}

static void tiny_feeds(const Graph *g, uint64_t seed, TensorSet *feeds) { tiny_feeds_with(g, 7, seed, feeds); }

/* ---- comparing ---- */
static int64_t float_ulps(float a, float b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b) ? 0 : INT64_MAX;
    int32_t ia, ib;
    memcpy(&ia, &a, 4), memcpy(&ib, &b, 4);
    if (ia < 0) ia = INT32_MIN - ia;
    if (ib < 0) ib = INT32_MIN - ib;
    return llabs((long long)ia - (long long)ib);
}

/* Every graph output: same dtype and shape, and the same bits (floats: the same value or both NaN). */
static void assert_bit_for_bit(const Graph *g, const TensorSet *want, const TensorSet *got) {
    for (size_t i = 0; i < g->outputs.len; i++) {
        const char *name = g->outputs.data[i].name;
        const Tensor *w = tset_get(want, name), *r = tset_get(got, name);
        ck_assert_msg(w && r, "output %s missing", name);
        ck_assert_int_eq(w->dtype, r->dtype);
        ck_assert_int_eq(w->numel, r->numel);
        if (w->dtype == DT_F32 || w->dtype == DT_BF16 || w->dtype == DT_F16) {
            const float *wf = w->data, *rf = r->data;
            for (int64_t k = 0; k < w->numel; k++)
                ck_assert_msg(float_ulps(wf[k], rf[k]) == 0, "output %s[%lld]: cuda %.9g, interpreter %.9g", name,
                              (long long)k, rf[k], wf[k]);
        } else {
            ck_assert_msg(memcmp(w->data, r->data, (size_t)w->numel * dtype_host_size(w->dtype)) == 0,
                          "output %s differs", name);
        }
    }
}

static void interpret(const Graph *g, const TensorSet *feeds, TensorSet *want) {
    InterpOptions io = {.batch = BATCH, .seq = SEQ};
    Err e = {0};
    tset_init(want);
    ck_assert_msg(interp_run(g, feeds, &io, want, &e) == 0, "%s", e.msg);
}

/* Attention by its fp64 kernels, so that whole graphs match the interpreter bit for bit (the
 * GEMM path, within its bound: tests/test_cuda_attention.c). */
static const CudaPlanOptions exact_plan = {.exact_attention = 1};

/* The executor on the emulated device; NULL (reason printed) without a host compiler. */
static CudaExec *emulated_exec(const Graph *g, CudaApi **api_out) {
    CudaApi *api = cuda_emu_open(EMU_BLOCK, EMU_MAX_GRID);
    if (!api) return NULL;
    if (api_out) *api_out = api;
    InterpOptions io = {.batch = BATCH, .seq = SEQ};
    Err e = {0};
    CudaExec *x = cuda_exec_prepare_opts(api, g, &io, &exact_plan, &e);
    ck_assert_msg(x != NULL, "%s", e.msg);
    return x;
}

static void step_ok(CudaExec *x, const TensorSet *feeds, TensorSet *got) {
    Err e = {0};
    tset_init(got);
    ck_assert_msg(cuda_exec_step(x, feeds, got, &e) == 0, "%s", e.msg);
}

/* The library calls whose result the executor rounds to bf16 after the GEMM (one launch each). */
static int64_t rounded_calls(const Graph *g) {
    CudaPlan p;
    Err e = {0};
    ck_assert_msg(cuda_plan_build(g, BATCH, SEQ, &exact_plan, &p, &e) == 0, "%s", e.msg);
    int64_t n = 0;
    for (size_t i = 0; i < p.calls.len; i++) n += p.calls.data[i].round.kernel >= 0;
    cuda_plan_free(&p);
    return n;
}

/* Two steps with different inputs and weights on one prepared executor, as a
 * training loop steps it: the second proves that feeds and weights are uploaded
 * per step and nothing of the first step leaks into it. */
static void check_tiny_in(int grads, int precision) {
    Program *prog;
    Graph *g = tiny_graph_in(grads, precision, &prog);
    int64_t rounds = rounded_calls(g);
    ck_assert_int_eq(rounds > 0, (precision & BF16_GEMMS) != 0);
    CudaApi *api = NULL;
    CudaExec *x = emulated_exec(g, &api);
    if (x) {
        for (uint64_t seed = 1; seed <= 2; seed++) {
            TensorSet feeds, want, got;
            tset_init(&feeds);
            tiny_feeds_with(g, 7 + seed, 100 + seed, &feeds);
            interpret(g, &feeds, &want);
            step_ok(x, &feeds, &got);
            assert_bit_for_bit(g, &want, &got);
            tset_free(&feeds), tset_free(&want), tset_free(&got);
        }
        CudaExecStats st = cuda_exec_stats(x);
        CudaEmuCounts c = cuda_emu_counts(api);
        ck_assert_int_gt(st.kernels, 0);
        ck_assert_int_eq(c.compiles, st.kernels); /* compiled once, at prepare */
        ck_assert_int_eq(c.launches, 2 * (st.launches + rounds));
        ck_assert_int_ge(c.gemms + c.fp8_gemms, 2 * st.library_calls); /* grouped calls are one GEMM per non-empty expert */
        if (precision & FP8_GEMMS) ck_assert_int_gt(c.fp8_gemms, 0);
        ck_assert_int_eq(c.stream_waits, 4);            /* per step: compute after uploads, downloads after compute */
        ck_assert(st.last_step_ms >= 0);
        cuda_exec_free(x); /* LSan (the sanitizer build) checks every emulated device buffer is freed */
    }
    graph_free(g);
    program_free(prog);
}

static void check_tiny(int grads) { check_tiny_in(grads, F32_GEMMS); }

START_TEST(test_tiny_forward_bit_for_bit) { check_tiny(0); }
END_TEST

START_TEST(test_tiny_grads_bit_for_bit) { check_tiny(1); }
END_TEST

/* `v3c train --bf16`'s graph: every GEMM (forward, Dgrad, Wgrad, the experts')
 * on bf16 operands, its sum rounded to bf16 by the kernel after the GEMM. */
START_TEST(test_tiny_bf16_grads_bit_for_bit) { check_tiny_in(1, BF16_GEMMS); }
END_TEST

/* `v3c train --fp8`'s graph: FP8 forward GEMMs and FP8 weight gradients (the
 * transposing copies, then the TN GEMM with 1x128 scales on both operands). */
START_TEST(test_tiny_fp8_grads_bit_for_bit) { check_tiny_in(1, FP8_GEMMS); }
END_TEST

START_TEST(test_tiny_fp8_bf16_grads_bit_for_bit) { check_tiny_in(1, FP8_GEMMS | BF16_GEMMS); }
END_TEST

/* Grouped GEMMs take their row counts from the device; an expert no token
 * chose has an all-zero weight gradient (the emulated memory starts as NaN
 * bytes, so a slab left unwritten would show). */
START_TEST(test_grouped_gemms_with_empty_experts) {
    Graph *g = parse_ir_ok(
        "v3ir 1\n%0 = input {name=\"x\"} : f32[B,T,6]\n%1 = input {name=\"r\"} : f32[B,T,5]\n"
        "%2, %3 = topk %1 {k=1} : f32[B,T,1], i32[B,T,1]\n%4, %5 = moe_dispatch %0, %3 {experts=5} : f32[B*T,6], i32[5]\n"
        "%6 = input {name=\"w\"} : f32[5,4,6]\n%7 = grouped_linear %4, %5, %6 : f32[B*T,4]\n"
        "%8 = input {name=\"g\"} : f32[B*T,4]\n%9 = grouped_linear_wgrad %8, %5, %4 : f32[5,4,6]\n"
        "output \"y\" = %7\noutput \"dw\" = %9\noutput \"counts\" = %5\n",
        "grouped");
    TensorSet feeds, want, got;
    tset_init(&feeds);
    feed_random_inputs(g, NULL, (InputFill){"", 0, 4}, BATCH, SEQ, 5, &feeds);
    /* Every token prefers expert 1 or 3: experts 0, 2 and 4 get no rows. */
    float *r = tset_get(&feeds, "r")->data;
    for (int t = 0; t < BATCH * SEQ; t++)
        for (int e = 0; e < 5; e++) r[t * 5 + e] = e == 1 + 2 * (t % 2) ? 1.0f : -1.0f;
    interpret(g, &feeds, &want);
    const int32_t *counts = tset_get(&want, "counts")->data;
    ck_assert(counts[0] == 0 && counts[2] == 0 && counts[4] == 0 && counts[1] > 0 && counts[3] > 0);
    CudaApi *api = NULL;
    CudaExec *x = emulated_exec(g, &api);
    if (x) {
        step_ok(x, &feeds, &got);
        assert_bit_for_bit(g, &want, &got);
        ck_assert_int_eq(cuda_emu_counts(api).gemms, 4); /* two experts, forward and wgrad */
        tset_free(&got);
        cuda_exec_free(x);
    }
    tset_free(&feeds), tset_free(&want);
    graph_free(g);
}
END_TEST

/* bf16 inputs hold bf16-grid values, as a cast to bf16 leaves them. */
static void round_bf16_inputs(const Graph *g, TensorSet *feeds) {
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        if (n->op != OP_INPUT || ir_type(g, n->out[0])->dtype != DT_BF16) continue;
        Tensor *t = tset_get(feeds, node_str(n, "name", ""));
        round_to_bf16_array(t->data, t->numel);
    }
}

/* The four GEMM ops on bf16 operands, as the bf16 pass leaves them: fp32 sums
 * (the emulation's fp64 sum rounded to float, as the interpreter's) rounded to
 * bf16 by the kernel the executor launches after each call, grouped ones after
 * the last expert; an expert without rows still gets a zero gradient. Without
 * that kernel the results are off the bf16 grid and this fails. */
START_TEST(test_bf16_gemms_bit_for_bit) {
    Graph *g = parse_ir_ok(
        "v3ir 1\n%0 = input {name=\"x\"} : bf16[B,T,6]\n%1 = input {name=\"w\"} : bf16[5,6]\n"
        "%2 = linear %0, %1 : bf16[B,T,5]\n%3 = input {name=\"g\"} : bf16[B,T,5]\n%4 = linear_wgrad %3, %0 : bf16[5,6]\n"
        "%5 = input {name=\"xs\"} : bf16[6,6]\n%6 = input {name=\"counts\"} : i32[3]\n%7 = input {name=\"we\"} : bf16[3,5,6]\n"
        "%8 = grouped_linear %5, %6, %7 : bf16[6,5]\n%9 = input {name=\"gs\"} : bf16[6,5]\n"
        "%10 = grouped_linear_wgrad %9, %6, %5 : bf16[3,5,6]\n"
        "output \"y\" = %2\noutput \"dw\" = %4\noutput \"ys\" = %8\noutput \"dwe\" = %10\n",
        "bf16 gemms");
    TensorSet feeds, want, got;
    tset_init(&feeds);
    feed_random_inputs(g, NULL, (InputFill){"", 0, 4}, BATCH, SEQ, 21, &feeds);
    round_bf16_inputs(g, &feeds);
    int32_t *counts = tset_get(&feeds, "counts")->data;
    counts[0] = 4, counts[1] = 0, counts[2] = 2;
    interpret(g, &feeds, &want);
    CudaApi *api = NULL;
    CudaExec *x = emulated_exec(g, &api);
    if (x) {
        step_ok(x, &feeds, &got);
        assert_bit_for_bit(g, &want, &got);
        CudaEmuCounts c = cuda_emu_counts(api);
        ck_assert_int_eq(c.gemms, 6);    /* linear, linear_wgrad, two experts forward and two wgrad */
        ck_assert_int_eq(c.launches, 4); /* one rounding per call */
        tset_free(&got);
        cuda_exec_free(x);
    }
    tset_free(&feeds), tset_free(&want);
    graph_free(g);
}
END_TEST

static int cublaslt_rules(CudaApi *a, const CudaFp8Gemm *shape, Err *err) {
    (void)a;
    return blaslt_fp8_check(shape, err);
}

/* What cuBLASLt's block-scaled FP8 cannot express is a clear error, never a wrong answer. */
START_TEST(test_fp8_forms_cublaslt_cannot_express) {
    Err e = {0};
    ck_assert_int_eq(blaslt_fp8_check(&(CudaFp8Gemm){.m = 8, .n = 32, .k = 256}, &e), 0);
    ck_assert_int_eq(blaslt_fp8_check(&(CudaFp8Gemm){.both_1x128 = 1, .m = 8, .n = 32, .k = 384}, &e), 0);
    ck_assert_int_eq(blaslt_fp8_check(&(CudaFp8Gemm){.m = 6, .n = 32, .k = 256}, &e), -1);
    ck_assert_msg(e.code == 1 && strstr(e.msg, "6 rows (tokens)") && strstr(e.msg, "multiple of 4") &&
                      !strstr(e.msg, "weight gradient"),
                  "%s", e.msg);
    memset(&e, 0, sizeof e);
    ck_assert_int_eq(blaslt_fp8_check(&(CudaFp8Gemm){.both_1x128 = 1, .m = 7, .n = 32, .k = 384}, &e), -1);
    ck_assert_msg(e.code == 1 && strstr(e.msg, "7 rows") && strstr(e.msg, "multiple of 4"), "%s", e.msg);
    memset(&e, 0, sizeof e);
    ck_assert_int_eq(blaslt_fp8_check(&(CudaFp8Gemm){.both_1x128 = 1, .m = 8, .n = 200, .k = 384}, &e), -1);
    ck_assert_msg(e.code == 1 && strstr(e.msg, "N=200") && strstr(e.msg, "weight gradient"), "%s", e.msg);
    memset(&e, 0, sizeof e);
    ck_assert_int_eq(blaslt_fp8_check(&(CudaFp8Gemm){.m = 8, .n = 30, .k = 256}, &e), -1);
    ck_assert_msg(strstr(e.msg, "N=30") && strstr(e.msg, "N a multiple of 16"), "%s", e.msg);
}
END_TEST

/* fp8_matmul's operands reach the table in the op's order (qa, sa, qb, sb), both forms. */
START_TEST(test_fp8_calls_through_the_table) {
    Graph *g = parse_ir_ok(
        "v3ir 1\n%0 = input {name=\"x\"} : f32[B,T,200]\n%1, %2 = quantize %0 {tile=\"1x128\"} : e4m3[B,T,200], f32[B,T,2]\n"
        "%3 = input {name=\"w\"} : f32[130,200]\n%4, %5 = quantize %3 {tile=\"128x128\"} : e4m3[130,200], f32[2,2]\n"
        "%6 = fp8_matmul %1, %2, %4, %5 : f32[B,T,130]\n"
        "%7 = input {name=\"g\"} : f32[B,T,7]\n%8, %9 = quantize %7 {tile=\"128x1\"} : e4m3[B,T,7], f32[ceil(B*T/128),7]\n"
        "%10, %11 = quantize %0 {tile=\"128x1\"} : e4m3[B,T,200], f32[ceil(B*T/128),200]\n"
        "%12 = fp8_matmul %8, %9, %10, %11 {wgrad=1} : f32[7,200]\n"
        "output \"y\" = %6\noutput \"dw\" = %12\n",
        "fp8");
    TensorSet feeds, want, got;
    tset_init(&feeds);
    feed_random_inputs(g, NULL, (InputFill){"", 0, 4}, BATCH, SEQ, 9, &feeds);
    interpret(g, &feeds, &want);
    CudaApi *api = NULL;
    CudaExec *x = emulated_exec(g, &api);
    if (x) {
        step_ok(x, &feeds, &got);
        assert_bit_for_bit(g, &want, &got);
        ck_assert_int_eq(cuda_emu_counts(api).fp8_gemms, 2);
        tset_free(&got);
        cuda_exec_free(x);
    }
    /* A table that cannot do a form refuses the plan at prepare, naming the node and why
     * (the real table's rules: here K=200 at 4x3 tokens; at BATCH*SEQ = 6 tokens, the rows). */
    static const struct { int64_t batch; const char *why; } refusals[] = {
        {4, "K a multiple of 128"}, {BATCH, "6 rows (tokens): cuBLASLt's 1x128 scales need the rows a multiple of 4"}};
    for (int i = 0; i < 2; i++) {
        api = cuda_emu_open(EMU_BLOCK, EMU_MAX_GRID);
        if (!api) break;
        api->fp8_check = cublaslt_rules;
        InterpOptions io = {.batch = refusals[i].batch, .seq = SEQ};
        Err e = {0};
        ck_assert_ptr_null(cuda_exec_prepare(api, g, &io, &e));
        ck_assert_int_eq(e.code, 1);
        ck_assert_msg(strstr(e.msg, "fp8_matmul (node 4)") && strstr(e.msg, refusals[i].why), "%s", e.msg);
    }
    tset_free(&feeds), tset_free(&want);
    graph_free(g);
}
END_TEST

/* How many scale copies the plan launches for `node` (-1 if it launches anything else, or more than
 * two), the first into FP8_FWD_SA and the second into FP8_FWD_SB; bytes: their scratch sizes. */
static int fwd_scale_copies(const CudaPlan *p, int32_t node, int64_t bytes[2]) {
    int copies = 0, others = 0;
    for (size_t i = 0; i < p->launches.len; i++) {
        const CudaLaunch *l = &p->launches.data[i];
        if (l->node != node) continue;
        if (strcmp(p->kernels.data[l->kernel].family, "fp8_fwd_scales") || copies == 2) {
            others++;
            continue;
        }
        const CudaArg *dst = &l->args[l->nargs - 1];
        ck_assert_int_eq(dst->kind, CARG_SCRATCH);
        ck_assert_int_eq(dst->scratch, copies == 0 ? FP8_FWD_SA : FP8_FWD_SB);
        bytes[copies++] = dst->bytes;
    }
    return others ? -1 : copies;
}

/* The forward fp8_matmul over K = 384 (3 blocks, not a multiple of 4) and N = 160 (2 blocks): the
 * plan copies its scales into cuBLASLt's layouts, sa block-major [3][ld(m)] and sb [2][4] (the
 * K blocks padded with a zero), two launches per node and nothing else; the table reads those
 * copies and gives the interpreter's bits, f32 and bf16 out. At 12 tokens under the real table's
 * rules; at 6 (sa's padding rows: ld 8) on a table without them, and refused with them. */
START_TEST(test_fp8_forward_through_scale_copies) {
    static const char *const ir[] = {
        "v3ir 1\n%0 = input {name=\"x\"} : f32[4,3,384]\n"
        "%1, %2 = quantize %0 {tile=\"1x128\"} : e4m3[4,3,384], f32[4,3,3]\n",
        "v3ir 1\n%0 = input {name=\"x\"} : f32[B,T,384]\n"
        "%1, %2 = quantize %0 {tile=\"1x128\"} : e4m3[B,T,384], f32[B,T,3]\n"};
    static const int64_t tokens[] = {12, BATCH * SEQ};
    for (int v = 0; v < 2; v++) {
        char text[1024];
        snprintf(text, sizeof text,
                 "%s%%3 = input {name=\"w\"} : f32[160,384]\n"
                 "%%4, %%5 = quantize %%3 {tile=\"128x128\"} : e4m3[160,384], f32[2,3]\n"
                 "%%6 = fp8_matmul %%1, %%2, %%4, %%5 : f32[%s,160]\n"
                 "%%7 = fp8_matmul %%1, %%2, %%4, %%5 {out=bf16} : bf16[%s,160]\n"
                 "output \"y\" = %%6\noutput \"y16\" = %%7\n",
                 ir[v], v == 0 ? "4,3" : "B,T", v == 0 ? "4,3" : "B,T");
        Graph *g = parse_ir_ok(text, "fp8 forward");
        CudaPlan p;
        Err e = {0};
        ck_assert_msg(cuda_plan_build(g, BATCH, SEQ, NULL, &p, &e) == 0, "%s", e.msg);
        for (int32_t node = 4; node <= 5; node++) {
            int64_t bytes[2] = {0};
            ck_assert_int_eq(fwd_scale_copies(&p, node, bytes), 2);
            ck_assert_int_eq(bytes[0], 3 * ((tokens[v] + 3) / 4 * 4) * 4); /* [3 K blocks][ld(m)] floats */
            ck_assert_int_eq(bytes[1], 2 * 4 * 4);                          /* [2 N blocks][4] floats */
        }
        ck_assert(p.calls.len == 2 && p.calls.data[0].kind == LIB_FP8_GEMM && p.calls.data[0].round.kernel < 0 &&
                  p.calls.data[1].round.kernel >= 0);
        cuda_plan_free(&p);
        TensorSet feeds, want, got;
        tset_init(&feeds);
        feed_random_inputs(g, NULL, (InputFill){"", 0, 4}, BATCH, SEQ, 23 + v, &feeds);
        interpret(g, &feeds, &want);
        CudaApi *api = cuda_emu_open(EMU_BLOCK, EMU_MAX_GRID);
        if (api) {
            api->fp8_check = v == 0 ? cublaslt_rules : NULL;
            InterpOptions io = {.batch = BATCH, .seq = SEQ};
            CudaExec *x = cuda_exec_prepare(api, g, &io, &e);
            ck_assert_msg(x != NULL, "%s", e.msg);
            step_ok(x, &feeds, &got);
            assert_bit_for_bit(g, &want, &got);
            ck_assert_int_eq(cuda_emu_counts(api).fp8_gemms, 2);
            tset_free(&got);
            cuda_exec_free(x);
        }
        api = v == 1 ? cuda_emu_open(EMU_BLOCK, EMU_MAX_GRID) : NULL;
        if (api) {
            api->fp8_check = cublaslt_rules;
            InterpOptions io = {.batch = BATCH, .seq = SEQ};
            memset(&e, 0, sizeof e);
            ck_assert_ptr_null(cuda_exec_prepare(api, g, &io, &e));
            ck_assert_msg(e.code == 1 && strstr(e.msg, "fp8_matmul (node 4)") && strstr(e.msg, "6 rows (tokens)"), "%s",
                          e.msg);
        }
        tset_free(&feeds), tset_free(&want);
        graph_free(g);
    }
}
END_TEST

/* fp8_matmul wgrad=1 over 300 tokens (three 128-blocks, the last partial):
 * the plan copies qa and qb transposed (tokens innermost, zero-padded to 384)
 * with their 128x1 scales as 1x128 scales of the copies, and the table's TN GEMM
 * with 1x128 scales on both gives the interpreter's bits, under the real
 * table's shape rules; an out=bf16 result is rounded after it. */
START_TEST(test_fp8_wgrad_through_transposed_copies) {
    Graph *g = parse_ir_ok(
        "v3ir 1\n%0 = input {name=\"g\"} : f32[300,8]\n%1, %2 = quantize %0 {tile=\"128x1\"} : e4m3[300,8], f32[3,8]\n"
        "%3 = input {name=\"x\"} : f32[300,32]\n%4, %5 = quantize %3 {tile=\"128x1\"} : e4m3[300,32], f32[3,32]\n"
        "%6 = fp8_matmul %1, %2, %4, %5 {wgrad=1} : f32[8,32]\n"
        "%7 = fp8_matmul %1, %2, %4, %5 {out=bf16, wgrad=1} : bf16[8,32]\n"
        "output \"dw\" = %6\noutput \"dw16\" = %7\n",
        "fp8 wgrad");
    CudaPlan p;
    Err e = {0};
    ck_assert_msg(cuda_plan_build(g, BATCH, SEQ, NULL, &p, &e) == 0, "%s", e.msg);
    int copies = 0;
    for (size_t i = 0; i < p.launches.len; i++)
        copies += p.launches.data[i].node == 4 && strcmp(p.kernels.data[p.launches.data[i].kernel].family, "fp8_wgrad_operand") == 0;
    ck_assert_int_eq(copies, 2);
    ck_assert(p.calls.len == 2 && p.calls.data[0].kind == LIB_FP8_GEMM_WGRAD && p.calls.data[0].round.kernel < 0 &&
              p.calls.data[1].round.kernel >= 0);
    cuda_plan_free(&p);
    TensorSet feeds, want, got;
    tset_init(&feeds);
    feed_random_inputs(g, NULL, (InputFill){"", 0, 4}, BATCH, SEQ, 17, &feeds);
    interpret(g, &feeds, &want);
    CudaApi *api = cuda_emu_open(EMU_BLOCK, EMU_MAX_GRID);
    if (api) {
        api->fp8_check = cublaslt_rules;
        InterpOptions io = {.batch = BATCH, .seq = SEQ};
        CudaExec *x = cuda_exec_prepare(api, g, &io, &e);
        ck_assert_msg(x != NULL, "%s", e.msg);
        step_ok(x, &feeds, &got);
        assert_bit_for_bit(g, &want, &got);
        ck_assert_int_eq(cuda_emu_counts(api).fp8_gemms, 2);
        tset_free(&got);
        cuda_exec_free(x);
    }
    tset_free(&feeds), tset_free(&want);
    graph_free(g);
}
END_TEST

/* A token id outside the vocabulary is bad data: the embedding kernel stores
 * a status code, the step fails naming the node and the meaning, and the next
 * good step on the same executor succeeds (status words are reset per step). */
START_TEST(test_bad_token_id_is_a_clear_error) {
    Program *prog;
    Graph *g = tiny_graph(0, &prog);
    CudaExec *x = emulated_exec(g, NULL);
    if (x) {
        TensorSet feeds, got;
        tset_init(&feeds);
        tiny_feeds(g, 3, &feeds);
        Tensor *ids = tset_get(&feeds, "input_ids");
        int64_t *id = ids->data;
        int64_t saved = id[4];
        id[4] = TINY_VOCAB + 5;
        tset_init(&got);
        Err e = {0};
        ck_assert_int_eq(cuda_exec_step(x, &feeds, &got, &e), -1);
        ck_assert_int_eq(e.code, 1);
        ck_assert_msg(strstr(e.msg, "embedding (node") && strstr(e.msg, "index out of range") &&
                          strstr(e.msg, "token id outside the vocabulary"),
                      "%s", e.msg);
        ck_assert_int_eq(got.tensors.len, 0);
        id[4] = saved;
        TensorSet want, again;
        interpret(g, &feeds, &want);
        step_ok(x, &feeds, &again);
        assert_bit_for_bit(g, &want, &again);
        tset_free(&want), tset_free(&again), tset_free(&got), tset_free(&feeds);
        cuda_exec_free(x);
    }
    graph_free(g);
    program_free(prog);
}
END_TEST

START_TEST(test_feed_errors) {
    Graph *g = parse_ir_ok("v3ir 1\n%0 = input {name=\"x\"} : f32[B,T,4]\n%1 = exp %0 : f32[B,T,4]\noutput \"y\" = %1\n",
                           "feeds");
    CudaExec *x = emulated_exec(g, NULL);
    if (x) {
        TensorSet feeds, got;
        tset_init(&feeds), tset_init(&got);
        Err e = {0};
        ck_assert_int_eq(cuda_exec_step(x, &feeds, &got, &e), -1);
        ck_assert_msg(e.code == 1 && strstr(e.msg, "no input named x"), "%s", e.msg);
        int64_t shape[] = {BATCH, SEQ, 5};
        tset_put(&feeds, "x", tensor_new(DT_F32, 3, shape));
        memset(&e, 0, sizeof e);
        ck_assert_int_eq(cuda_exec_step(x, &feeds, &got, &e), -1);
        ck_assert_msg(e.code == 1 && strstr(e.msg, "x does not have the type the graph wants"), "%s", e.msg);
        tset_free(&feeds), tset_free(&got);
        cuda_exec_free(x);
    }
    graph_free(g);
}
END_TEST

/* f16 GEMMs have no cuBLASLt path here: refused at prepare, not computed in another precision. */
START_TEST(test_unplannable_graphs_refused) {
    Graph *g = parse_ir_ok("v3ir 1\n%0 = input {name=\"x\"} : f16[B,T,4]\n%1 = input {name=\"w\"} : f16[5,4]\n"
                           "%2 = linear %0, %1 : f16[B,T,5]\noutput \"y\" = %2\n",
                           "f16");
    CudaApi *api = cuda_emu_open(EMU_BLOCK, EMU_MAX_GRID);
    if (api) {
        InterpOptions io = {.batch = BATCH, .seq = SEQ};
        Err e = {0};
        ck_assert_ptr_null(cuda_exec_prepare(api, g, &io, &e));
        ck_assert_msg(e.code == 1 && strstr(e.msg, "linear (node 2)") && strstr(e.msg, "bf16 x bf16 -> bf16") &&
                          strstr(e.msg, "other dtypes"),
                      "%s", e.msg);
    }
    graph_free(g);
    /* An op the code generator has no kernel for stops prepare with its message. */
    g = parse_ir_ok("v3ir 1\n%0 = input {name=\"i\"} : i32[B,T]\n%1 = cast %0 {to=bf16} : bf16[B,T]\noutput \"y\" = %1\n", "cast");
    if ((api = cuda_emu_open(EMU_BLOCK, EMU_MAX_GRID))) {
        InterpOptions io = {.batch = BATCH, .seq = SEQ};
        Err e = {0};
        ck_assert_ptr_null(cuda_exec_prepare(api, g, &io, &e));
        ck_assert_msg(e.code == 1 && strstr(e.msg, "cast i32 to bf16 has no CUDA template"), "%s", e.msg);
    }
    graph_free(g);
}
END_TEST

/* The EP exchanges run on the host over the EP group bound to the thread (a
 * group of one here; two ranks: tests/test_cuda_ep.c); with none bound, the
 * interpreter kernel's error names the node. */
START_TEST(test_ep_exchange_on_the_host) {
    Graph *g = parse_ir_ok("v3ir 1\n%0 = input {name=\"xd\"} : f32[4,2]\n%1 = input {name=\"counts\"} : i32[2]\n"
                           "%2, %3, %4 = ep_dispatch %0, %1 {capacity=[4], ranks=1} : f32[4,2], i32[2], i32[1,2]\n"
                           "%5 = neg %2 : f32[4,2]\noutput \"xr\" = %5\noutput \"lc\" = %3\noutput \"plan\" = %4\n",
                           "ep");
    TensorSet feeds, want, got;
    tset_init(&feeds);
    feed_random_inputs(g, (InputFill[]){{"counts", 0, 3}, {0}}, (InputFill){NULL, 0, 0}, BATCH, SEQ, 5, &feeds);
    int32_t *counts = (int32_t *)tset_get(&feeds, "counts")->data;
    counts[0] = 3, counts[1] = 1;
    ThreadGroup *one = thread_group_new(1);
    Collectives c = thread_group_member(one, 0);
    InterpOptions io = {.batch = BATCH, .seq = SEQ, .collectives = &c};
    Err e = {0};
    tset_init(&want);
    ck_assert_msg(interp_run(g, &feeds, &io, &want, &e) == 0, "%s", e.msg);
    CudaExec *x = emulated_exec(g, NULL);
    if (x) {
        tset_init(&got);
        ck_assert_int_eq(cuda_exec_step(x, &feeds, &got, &e), -1);
        ck_assert_msg(strstr(e.msg, "ep_dispatch (node 2)") && strstr(e.msg, "no EP group is bound"), "%s", e.msg);
        tset_free(&got);
        const Collectives *prev = collectives_bind(&c);
        step_ok(x, &feeds, &got);
        collectives_bind(prev);
        assert_bit_for_bit(g, &want, &got);
        tset_free(&got);
        cuda_exec_free(x);
    }
    thread_group_free(one);
    tset_free(&feeds), tset_free(&want);
    graph_free(g);
}
END_TEST

/* ---- the real device ----
 * Tolerance, where a GPU runs it: its blocks reduce in a tree of 256 threads
 * and cuBLASLt accumulates the GEMMs in fp32 (CUBLAS_COMPUTE_32F) where the
 * interpreter sums in fp64 and rounds once. An fp32 dot product of length K
 * is within K * 2^-24 of the exact one relative to sum |x_i w_i| (K <= 256 in
 * tiny.v3: 1.5e-5); the math library's expf/rsqrtf add a few ulps; through a
 * few layers these stay far below 1e-3 relative L2 of each output, while a
 * wrong buffer, window or order gives O(1). */
START_TEST(test_real_device_when_present) {
    Err e = {0};
    CudaApi *api = cuda_api_open(&e);
    if (!api) {
        printf("test_cuda_exec: skipping the GPU test: %s\n", e.msg);
        return;
    }
    Program *prog;
    Graph *g = tiny_graph(1, &prog);
    InterpOptions io = {.batch = BATCH, .seq = SEQ};
    CudaExec *x = cuda_exec_prepare(api, g, &io, &e);
    ck_assert_msg(x != NULL, "%s", e.msg);
    TensorSet feeds, want, got;
    tset_init(&feeds);
    tiny_feeds(g, 11, &feeds);
    interpret(g, &feeds, &want);
    step_ok(x, &feeds, &got);
    for (size_t i = 0; i < g->outputs.len; i++) {
        const char *name = g->outputs.data[i].name;
        double err = rel_l2(tset_get(&got, name), tset_get(&want, name));
        ck_assert_msg(err <= 1e-3, "output %s: relative L2 error %.3g on the GPU", name, err);
    }
    tset_free(&feeds), tset_free(&want), tset_free(&got);
    cuda_exec_free(x);
    graph_free(g);
    program_free(prog);
}
END_TEST

/* ---- the cuBLASLt wrapper against a stand-in library ----
 * runtime/cuda_blaslt.c turns row-major GEMMs into cuBLASLt's column-major
 * calls (which operand is A, transposes, leading dimensions, alignments). A
 * small C library with cuBLASLt's entry points, implementing cublasLtMatmul by
 * its documented column-major definition D = alpha op(A) op(B) + beta C on
 * host memory, checks that mapping here; the real library is needed only for
 * speed. (FP8 scale layouts cannot be checked this way: the stand-in would
 * only repeat our reading of them.) */
static const char mock_cublaslt[] =
    "#include <stdint.h>\n#include <stdlib.h>\n#include <string.h>\n"
    "typedef struct { int transa, transb, compute; } Desc;\n"
    "typedef struct { int type; uint64_t rows, cols; int64_t ld; int32_t batch; int64_t stride; } Layout;\n"
    "typedef struct { uint32_t align[4]; size_t ws; } Pref;\n"
    "int cublasLtCreate(void **h) { *h = malloc(1); return 0; }\n"
    "int cublasLtDestroy(void *h) { free(h); return 0; }\n"
    "const char *cublasLtGetStatusString(int s) { (void)s; return \"mock status\"; }\n"
    "int cublasLtMatmulDescCreate(Desc **d, int compute, int scale) { (void)scale; *d = calloc(1, sizeof **d); (*d)->compute = compute; return 0; }\n"
    "int cublasLtMatmulDescDestroy(Desc *d) { free(d); return 0; }\n"
    "int cublasLtMatmulDescSetAttribute(Desc *d, int attr, const void *buf, size_t n) {\n"
    "  if (attr == 3 && n == 4) memcpy(&d->transa, buf, 4); else if (attr == 4 && n == 4) memcpy(&d->transb, buf, 4); else return 7; return 0; }\n"
    "int cublasLtMatrixLayoutCreate(Layout **l, int type, uint64_t r, uint64_t c, int64_t ld) {\n"
    "  if (ld < (int64_t)r) return 7; *l = malloc(sizeof **l); **l = (Layout){type, r, c, ld, 1, 0}; return 0; }\n"
    "int cublasLtMatrixLayoutDestroy(Layout *l) { free(l); return 0; }\n"
    /* CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT (5, int32_t) and _STRIDED_BATCH_OFFSET (6, int64_t, elements) */
    "int cublasLtMatrixLayoutSetAttribute(Layout *l, int attr, const void *buf, size_t n) {\n"
    "  if (attr == 5 && n == 4) memcpy(&l->batch, buf, 4); else if (attr == 6 && n == 8) memcpy(&l->stride, buf, 8); else return 7;\n"
    "  return l->batch < 1 ? 7 : 0; }\n"
    "int cublasLtMatmulPreferenceCreate(Pref **p) { *p = calloc(1, sizeof **p); return 0; }\n"
    "int cublasLtMatmulPreferenceDestroy(Pref *p) { free(p); return 0; }\n"
    "int cublasLtMatmulPreferenceSetAttribute(Pref *p, int attr, const void *buf, size_t n) {\n"
    "  if (attr == 1 && n == 8) memcpy(&p->ws, buf, 8); else if (attr >= 5 && attr <= 8 && n == 4) memcpy(&p->align[attr - 5], buf, 4); else return 7; return 0; }\n"
    /* the algorithm remembers the alignment it was chosen for; a matmul on less aligned pointers (any batch's) fails, as on the GPU */
    "int cublasLtMatmulAlgoGetHeuristic(void *h, Desc *d, Layout *a, Layout *b, Layout *c, Layout *dd, Pref *p, int req, uint64_t *res, int *got) {\n"
    "  (void)h, (void)d, (void)a, (void)b, (void)c, (void)dd, (void)req; memset(res, 0, 96); res[0] = p->align[0] ? p->align[0] : 256; *got = 1; return 0; }\n"
    /* CUBLAS_COMPUTE_32F_FAST_TF32 (77): the inputs rounded to TF32 (10 fraction bits, nearest even), then fp32 math */
    "static int last_compute;\n"
    "int mock_last_compute(void) { return last_compute; }\n"
    "static double tf32(float x) { uint32_t u; memcpy(&u, &x, 4); u += 0xfffu + ((u >> 13) & 1u); u &= ~0x1fffu; memcpy(&x, &u, 4); return x; }\n"
    "static double at(const float *m, const Layout *l, int t, uint64_t i, uint64_t j) {\n"
    "  float v = t ? m[j + i * l->ld] : m[i + j * l->ld]; return last_compute == 77 ? tf32(v) : v; }\n"
    "static int misaligned(const float *p, uint64_t need) { return (uintptr_t)p % need != 0; }\n"
    /* strided batched: D_i = alpha op(A_i) op(B_i), X_i at X + i * (X's layout's stride), every layout of one batch count */
    "int cublasLtMatmul(void *h, Desc *d, const float *alpha, const float *A, Layout *al, const float *B, Layout *bl, const float *beta,\n"
    "                   const float *C, Layout *cl, float *D, Layout *dl, const uint64_t *algo, void *ws, size_t wsn, void *stream) {\n"
    "  (void)h, (void)C, (void)ws, (void)wsn, (void)stream;\n"
    "  if ((d->compute != 68 && d->compute != 77) || al->type || bl->type || dl->type || *beta != 0) return 15;\n"
    "  if (al->batch != dl->batch || bl->batch != dl->batch || cl->batch != dl->batch) return 7;\n"
    "  last_compute = d->compute;\n"
    "  uint64_t m = d->transa ? al->cols : al->rows, k = d->transa ? al->rows : al->cols, n = d->transb ? bl->rows : bl->cols;\n"
    "  if ((d->transb ? bl->cols : bl->rows) != k || dl->rows != m || dl->cols != n) return 7;\n"
    "  for (int32_t b = 0; b < dl->batch; b++) {\n"
    "    const float *Ab = A + b * al->stride, *Bb = B + b * bl->stride; float *Db = D + b * dl->stride;\n"
    "    if (misaligned(Ab, algo[0]) || misaligned(Bb, algo[0]) || misaligned(Db, algo[0])) return 14;\n"
    "    for (uint64_t i = 0; i < m; i++) for (uint64_t j = 0; j < n; j++) { double s = 0;\n"
    "      for (uint64_t p = 0; p < k; p++) s += at(Ab, al, d->transa, i, p) * at(Bb, bl, d->transb, p, j);\n"
    "      Db[i + j * dl->ld] = (float)(*alpha * s); } }\n"
    "  return 0; }\n";

static char *build_mock_cublaslt(void) {
    char *dir = make_temp_dir(), *src = path_join(dir, "mock_cublaslt.c"), *so = path_join(dir, "libmock_cublaslt.so");
    write_text(src, mock_cublaslt);
    char *cmd = xsprintf("cc -std=c11 -O1 -fPIC -shared -o %s %s 2>%s/cc.log", so, src, dir);
    ck_assert_msg(system(cmd) == 0, "building the stand-in cuBLASLt failed: %s", cmd);
    free(cmd), free(src), free(dir);
    return so;
}

/* Operand values, by position in their buffer: multiples of 1/8 (on the bf16 grid),
 * or, off_grid, with 20 more significant bits, which TF32 would drop: an f32 GEMM
 * run in TF32 would fail the comparison. */
static float operand_value(int64_t i, int64_t seed, int off_grid) {
    return (float)((i * 37 + seed * 11) % 17 - 8) / 8.0f + (off_grid ? (float)((i % 5) + 1) * 0x1p-20f : 0.0f);
}

/* What lies between the elements a GEMM reads (off the bf16 grid: a bf16 GEMM must
 * not look at it), and what it must leave in C where it does not write. */
static const float GAP = 3.0f + 0x1p-20f, UNWRITTEN = -1234.5f;

/* Row-major reference, straight from cuda_api.h: element [i,j] of C_t. */
static double reference(const CudaGemm *g, const float *a, const float *b, int64_t t, int64_t i, int64_t j) {
    const float *at = a + t * g->stride_a, *bt = b + t * g->stride_b;
    double s = 0;
    for (int64_t p = 0; p < g->k; p++) {
        double x = g->trans_a ? at[p * g->lda + i] : at[i * g->lda + p];
        double y = g->trans_b ? bt[j * g->ldb + p] : bt[p * g->ldb + j];
        s += x * y;
    }
    return (double)g->alpha * s;
}

/* One operand as the GEMM sees it: per batch, `rows` stored rows of `len` elements, ld apart. */
typedef struct Operand {
    int64_t stride, rows, len, ld;
} Operand;
static Operand operand_a(const CudaGemm *g) {
    return (Operand){g->stride_a, g->trans_a ? g->k : g->m, g->trans_a ? g->m : g->k, g->lda};
}
static Operand operand_b(const CudaGemm *g) {
    return (Operand){g->stride_b, g->trans_b ? g->n : g->k, g->trans_b ? g->k : g->n, g->ldb};
}
static Operand operand_c(const CudaGemm *g) { return (Operand){g->stride_c, g->m, g->n, g->ldc}; }
static int64_t extent(int64_t batch, Operand o) { return (batch - 1) * o.stride + (o.rows - 1) * o.ld + o.len; }

/* `offset` floats, then the operand's extent: GAP everywhere the GEMM does not read. */
static float *operand_buffer(int64_t batch, Operand o, int64_t offset, int64_t seed, int off_grid) {
    int64_t n = offset + extent(batch, o);
    float *v = xmalloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = GAP;
    for (int64_t t = 0; t < batch; t++)
        for (int64_t r = 0; r < o.rows; r++)
            for (int64_t c = 0; c < o.len; c++) {
                int64_t at = offset + t * o.stride + r * o.ld + c;
                v[at] = operand_value(at, seed, off_grid);
            }
    return v;
}

static CuPtr host_addr(const float *p) { return (CuPtr)(uintptr_t)p; }

static void describe_gemm(const CudaGemm *g, int64_t offset, char *buf, size_t size) {
    snprintf(buf, size, "GEMM m=%lld n=%lld k=%lld batch=%lld trans_a=%d trans_b=%d ld %lld,%lld,%lld strides %lld,%lld,%lld "
                        "alpha=%g bf16=%d offset=%lld",
             (long long)g->m, (long long)g->n, (long long)g->k, (long long)g->batch, g->trans_a, g->trans_b,
             (long long)g->lda, (long long)g->ldb, (long long)g->ldc, (long long)g->stride_a, (long long)g->stride_b,
             (long long)g->stride_c, (double)g->alpha, g->bf16_operands, (long long)offset);
}

/* Where GEMMs run (a table's gemm entry, or blaslt_gemm), and how their operands are drawn. */
typedef int (*GemmRun)(void *ctx, const CudaGemm *g, Err *err);
typedef struct GemmTarget {
    GemmRun run;
    void *ctx;
    /* every operand on the bf16 grid whatever the GEMM's flag: the small sums of these
     * tests are then exact in any fp32 summation order (a GPU's) */
    int on_grid;
} GemmTarget;

/* Runs g (its pointers set here) on operands `offset` floats past malloc's alignment
 * (offset 1: a grouped GEMM's 4-byte-aligned slice), on the bf16 grid when g says so
 * (or the target asks) and off it otherwise, and checks every element of C's buffer:
 * the reference, exactly, where the GEMM writes; untouched everywhere else. */
static void check_gemm(const GemmTarget *to, CudaGemm g, int64_t offset) {
    char what[512];
    describe_gemm(&g, offset, what, sizeof what);
    Operand oc = operand_c(&g);
    int off_grid = !g.bf16_operands && !to->on_grid;
    float *a = operand_buffer(g.batch, operand_a(&g), offset, 1, off_grid);
    float *b = operand_buffer(g.batch, operand_b(&g), offset, 2, off_grid);
    int64_t nc = offset + extent(g.batch, oc);
    float *c = xmalloc((size_t)nc * sizeof *c);
    char *written = xcalloc((size_t)nc, 1);
    for (int64_t i = 0; i < nc; i++) c[i] = UNWRITTEN;
    g.a = host_addr(a + offset), g.b = host_addr(b + offset), g.c = host_addr(c + offset);
    Err e = {0};
    ck_assert_msg(to->run(to->ctx, &g, &e) == 0, "%s: %s", what, e.msg);
    for (int64_t t = 0; t < g.batch; t++)
        for (int64_t i = 0; i < g.m; i++)
            for (int64_t j = 0; j < g.n; j++) {
                int64_t at = offset + t * g.stride_c + i * g.ldc + j;
                float want = (float)reference(&g, a + offset, b + offset, t, i, j);
                ck_assert_msg(c[at] == want, "%s: C_%lld[%lld,%lld] = %.9g, want %.9g", what, (long long)t, (long long)i,
                              (long long)j, c[at], want);
                written[at] = 1;
            }
    for (int64_t i = 0; i < nc; i++)
        ck_assert_msg(written[i] || c[i] == UNWRITTEN, "%s: C's buffer overwritten at %lld", what, (long long)(i - offset));
    free(a), free(b), free(c), free(written);
}

/* The linears, as cuda_exec.c calls them. */
static const int64_t linear_shapes[][3] = {{6, 5, 3}, {1, 7, 9}, {12, 4, 4}, {3, 3, 8}};

static void check_linears(const GemmTarget *to, int (*last_compute)(void)) {
    for (size_t s = 0; s < sizeof linear_shapes / sizeof *linear_shapes; s++)
        for (int wgrad = 0; wgrad <= 1; wgrad++)
            for (int64_t v = 0; v < 4; v++) {
                int64_t offset = v % 2, m = linear_shapes[s][0], n = linear_shapes[s][1], k = linear_shapes[s][2];
                int bf16 = (int)(v / 2);
                check_gemm(to, wgrad ? cuda_gemm_wgrad(m, n, k, 0, 0, 0, bf16) : cuda_gemm_linear(m, n, k, 0, 0, 0, bf16),
                           offset);
                if (last_compute) ck_assert_int_eq(last_compute(), (bf16 ? 77 : 68)); /* CUBLAS_COMPUTE_32F_FAST_TF32 : _32F */
            }
}

/* The attention's products, one head of [T,h,d] (T 5, h 3, d 4) read and written in
 * place: leading dimension h*d, batch stride d. */
static const CudaGemm attention_gemms[] = {
    /* scores: S_i[T,T] = 0.125 Q_i K_i^T */
    {.m = 5, .n = 5, .k = 4, .batch = 3, .trans_b = 1, .lda = 12, .ldb = 12, .ldc = 5, .stride_a = 4, .stride_b = 4,
     .stride_c = 25, .alpha = 0.125f},
    /* the same shape with another alpha: the prepared shape is shared, alpha is the call's */
    {.m = 5, .n = 5, .k = 4, .batch = 3, .trans_b = 1, .lda = 12, .ldb = 12, .ldc = 5, .stride_a = 4, .stride_b = 4,
     .stride_c = 25, .alpha = 0.3f},
    /* the same again with the heads apart ([h,T,d]): leading dimensions and strides are part of the prepared shape */
    {.m = 5, .n = 5, .k = 4, .batch = 3, .trans_b = 1, .lda = 4, .ldb = 4, .ldc = 5, .stride_a = 20, .stride_b = 20,
     .stride_c = 25, .alpha = 0.3f},
    /* out: O_i[T,d] = P_i V_i, written into [T,h,d] */
    {.m = 5, .n = 4, .k = 5, .batch = 3, .lda = 5, .ldb = 12, .ldc = 12, .stride_a = 25, .stride_b = 4, .stride_c = 4,
     .alpha = 1.0f},
    /* dV_i[T,d] = P_i^T dO_i */
    {.m = 5, .n = 4, .k = 5, .batch = 3, .trans_a = 1, .lda = 5, .ldb = 12, .ldc = 12, .stride_a = 25, .stride_b = 4,
     .stride_c = 4, .alpha = 1.0f},
    /* dS_i[T,T] = dO_i V_i^T, then dK_i[T,d] = 0.3 dS_i^T Q_i */
    {.m = 5, .n = 5, .k = 4, .batch = 3, .trans_b = 1, .lda = 12, .ldb = 12, .ldc = 5, .stride_a = 4, .stride_b = 4,
     .stride_c = 25, .alpha = 1.0f},
    {.m = 5, .n = 4, .k = 5, .batch = 3, .trans_a = 1, .lda = 5, .ldb = 12, .ldc = 12, .stride_a = 25, .stride_b = 4,
     .stride_c = 4, .alpha = 0.3f},
};

/* Every transpose pair at m 3, n 5, k 6: batch 1 with tight leading dimensions
 * (lda or ldb below k, which only the transposed form's row length allows), and
 * batch 3 with padded ones and odd strides (4-byte-aligned later batches). */
static CudaGemm transposes_case(int trans_a, int trans_b, int batched) {
    CudaGemm g = {.m = 3, .n = 5, .k = 6, .batch = batched ? 3 : 1, .trans_a = trans_a, .trans_b = trans_b,
                  .alpha = batched ? 0.3f : 1.0f};
    int64_t pad = batched;
    g.lda = (trans_a ? g.m : g.k) + pad, g.ldb = (trans_b ? g.k : g.n) + 2 * pad, g.ldc = g.n + 3 * pad;
    if (batched) {
        g.stride_a = (trans_a ? g.k : g.m) * g.lda + 1;
        g.stride_b = (trans_b ? g.n : g.k) * g.ldb + 3;
        g.stride_c = g.m * g.ldc + 5;
    }
    return g;
}

static void check_general_gemms(const GemmTarget *to) {
    for (int bf16 = 0; bf16 <= 1; bf16++)
        for (int64_t offset = 0; offset <= 1; offset++) {
            for (size_t i = 0; i < sizeof attention_gemms / sizeof *attention_gemms; i++) {
                CudaGemm g = attention_gemms[i];
                g.bf16_operands = bf16;
                check_gemm(to, g, offset);
            }
            for (int t = 0; t < 8; t++) {
                CudaGemm g = transposes_case(t & 1, (t >> 1) & 1, t >> 2);
                g.bf16_operands = bf16;
                check_gemm(to, g, offset);
            }
        }
}

/* op(A) op(B) * 0.5 by hand, A = [1 2; 3 4] and B = 1..6 stored [2,3] or, trans_b,
 * [3,2]: the reference above could share a misreading with the code under test;
 * these numbers cannot. Swapping, dropping or doubling a transpose, or ignoring
 * alpha, gives others. */
static void check_by_hand(const GemmTarget *to) {
    static const float a[] = {1, 2, 3, 4}, b[] = {1, 2, 3, 4, 5, 6};
    static const float want[2][2][6] = {
        {{4.5f, 6, 7.5f, 9.5f, 13, 16.5f}, {2.5f, 5.5f, 8.5f, 5.5f, 12.5f, 19.5f}}, /* [trans_a][trans_b] */
        {{6.5f, 8.5f, 10.5f, 9, 12, 15}, {3.5f, 7.5f, 11.5f, 5, 11, 17}},
    };
    for (int ta = 0; ta <= 1; ta++)
        for (int tb = 0; tb <= 1; tb++) {
            float c[6];
            CudaGemm g = {.m = 2, .n = 3, .k = 2, .batch = 1, .trans_a = ta, .trans_b = tb, .a = host_addr(a),
                          .b = host_addr(b), .c = host_addr(c), .lda = 2, .ldb = tb ? 2 : 3, .ldc = 3, .alpha = 0.5f};
            Err e = {0};
            ck_assert_msg(to->run(to->ctx, &g, &e) == 0, "%s", e.msg);
            for (int i = 0; i < 6; i++)
                ck_assert_msg(c[i] == want[ta][tb][i], "trans_a=%d trans_b=%d: C[%d] = %g, want %g", ta, tb, i, c[i],
                              want[ta][tb][i]);
        }
}

/* Shapes no GEMM has (a leading dimension shorter than its row, by the row length of
 * each transpose form; empty or over-large batches): refused as internal errors. */
static void check_refusals(const GemmTarget *to, const char *says) {
    static const CudaGemm bad[] = {
        {.m = 0, .n = 2, .k = 2, .batch = 1, .lda = 2, .ldb = 2, .ldc = 2},
        {.m = 2, .n = 2, .k = 0, .batch = 1, .lda = 2, .ldb = 2, .ldc = 2},
        {.m = 2, .n = 2, .k = 2, .batch = 0, .lda = 2, .ldb = 2, .ldc = 2},
        {.m = 3, .n = 5, .k = 6, .batch = 1, .lda = 5, .ldb = 5, .ldc = 5},                /* lda < k */
        {.m = 3, .n = 5, .k = 6, .batch = 1, .trans_a = 1, .lda = 2, .ldb = 5, .ldc = 5},  /* lda < m */
        {.m = 3, .n = 5, .k = 6, .batch = 1, .lda = 6, .ldb = 4, .ldc = 5},                /* ldb < n */
        {.m = 3, .n = 5, .k = 6, .batch = 1, .trans_b = 1, .lda = 6, .ldb = 5, .ldc = 5},  /* ldb < k */
        {.m = 3, .n = 5, .k = 6, .batch = 1, .lda = 6, .ldb = 5, .ldc = 4},                /* ldc < n */
        {.m = 2, .n = 2, .k = 2, .batch = 2, .lda = 2, .ldb = 2, .ldc = 2, .stride_a = -4}, /* a stride backwards */
    };
    float dummy[64] = {0};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CudaGemm g = bad[i];
        g.a = g.b = g.c = host_addr(dummy);
        Err e = {0};
        ck_assert_msg(to->run(to->ctx, &g, &e) == -1, "bad GEMM %zu accepted", i);
        ck_assert_msg(e.code == 2 && strstr(e.msg, says), "bad GEMM %zu: %s", i, e.msg); /* internal: the planner's bug */
    }
}

static int run_blaslt(void *ctx, const CudaGemm *g, Err *err) { return blaslt_gemm(ctx, g, NULL, err); }

START_TEST(test_cublaslt_mapping_on_a_stand_in) {
    char *so = build_mock_cublaslt();
    Err e = {0};
    Blaslt *b = blaslt_open(so, 0, 1 << 20, &e);
    ck_assert_msg(b != NULL, "%s", e.msg);
    void *mock = dlopen(so, RTLD_NOW); /* the same library: its record of the last call's compute type */
    int (*last_compute)(void) = mock ? (int (*)(void))dlsym(mock, "mock_last_compute") : NULL;
    ck_assert_ptr_nonnull(last_compute);
    GemmTarget to = {run_blaslt, b, 0};
    check_linears(&to, last_compute);
    check_general_gemms(&to);
    check_by_hand(&to);
    check_refusals(&to, "cuBLASLt GEMM of");
    /* a batch count past cuBLASLt's int32_t, and a negative stride */
    static const CudaGemm bad[] = {{.m = 1, .n = 1, .k = 1, .batch = (int64_t)INT32_MAX + 1, .lda = 1, .ldb = 1, .ldc = 1,
                                    .stride_a = 1, .stride_b = 1, .stride_c = 1, .alpha = 1.0f},
                                   {.m = 1, .n = 1, .k = 1, .batch = 2, .lda = 1, .ldb = 1, .ldc = 1, .stride_a = 1,
                                    .stride_b = -1, .stride_c = 1, .alpha = 1.0f}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(&e, 0, sizeof e);
        ck_assert_int_eq(blaslt_gemm(b, &bad[i], NULL, &e), -1);
        ck_assert_msg(e.code == 2 && strstr(e.msg, "cuBLASLt GEMM of"), "%s", e.msg);
    }
    dlclose(mock);
    blaslt_close(b);
    memset(&e, 0, sizeof e);
    ck_assert_ptr_null(blaslt_open("/nonexistent/libcublasLt.so", 0, 0, &e));
    ck_assert_msg(strstr(e.msg, "need cuBLASLt") && strstr(e.msg, "/nonexistent/libcublasLt.so"), "%s", e.msg);
    free(so);
}
END_TEST

/* The host emulation's gemm (tests/testutil.c), which the executor's bit-for-bit
 * tests stand on: the general form against the same reference, once counted per
 * call, and its bf16 check on exactly the elements read (GAP, off the grid, lies
 * between them in the padded and batched cases). */
static int run_table(void *ctx, const CudaGemm *g, Err *err) {
    CudaApi *api = ctx;
    int64_t before = cuda_emu_counts(api).gemms;
    int rc = api->gemm(api, g, NULL, err);
    ck_assert_int_eq(cuda_emu_counts(api).gemms, before + 1);
    return rc;
}

START_TEST(test_emulated_gemm_general_form) {
    CudaApi *api = cuda_emu_open(EMU_BLOCK, EMU_MAX_GRID);
    if (!api) return;
    GemmTarget to = {run_table, api, 0};
    check_linears(&to, NULL);
    check_general_gemms(&to);
    check_by_hand(&to);
    check_refusals(&to, "emulation: GEMM of");
    float a[] = {1, 2, 3, 4 + 0x1p-20f}, b[] = {1, 2, 3, 4}, c[4];
    CudaGemm g = cuda_gemm_linear(2, 2, 2, host_addr(a), host_addr(b), host_addr(c), 1);
    Err e = {0};
    ck_assert_int_eq(run_table(api, &g, &e), -1);
    ck_assert_msg(strstr(e.msg, "off the bf16 grid"), "%s", e.msg);
    api->close(api);
}
END_TEST

/* The emulated streams (tests/emu_streams.c), which the executor's tests of its waits stand on:
 * work runs when something needs it, with what it waits for, and no sooner. */
static float download_first(CudaApi *api, CuPtr x, CuStream s) {
    float v = 0;
    Err e = {0};
    ck_assert_msg(api->copy_d2h(api, &v, x, sizeof v, s, &e) == 0, "%s", e.msg);
    return v;
}

START_TEST(test_emulated_streams_order_like_a_gpu) {
    CudaApi *api = cuda_emu_open(EMU_BLOCK, EMU_MAX_GRID);
    if (!api) return;
    Err e = {0};
    CuStream copy = NULL, compute = NULL;
    CuEvent up = NULL, t0 = NULL;
    CuPtr x = 0, y = 0;
    const float one = 1, two = 2;
    ck_assert(!api->stream_create(api, &copy, &e) && !api->stream_create(api, &compute, &e));
    ck_assert(!api->event_create(api, &up, &e) && !api->event_create(api, &t0, &e));
    ck_assert(!api->mem_alloc(api, sizeof(float), &x, &e) && !api->mem_alloc(api, sizeof(float), &y, &e));
    /* An upload another stream does not wait for has not happened: the fresh memory's 0xff bytes. */
    ck_assert(!api->copy_h2d(api, x, &one, sizeof one, copy, &e));
    ck_assert(isnan(download_first(api, x, compute)));
    /* With the wait, it has. */
    ck_assert(!api->event_record(api, up, copy, &e) && !api->stream_wait_event(api, compute, up, &e));
    ck_assert_float_eq(download_first(api, x, compute), 1);
    /* An event its stream has not reached has no time yet. */
    ck_assert(!api->event_record(api, t0, copy, &e));
    ck_assert_int_eq(api->event_elapsed_ms(api, up, t0, &(float){0}, &e), -1);
    ck_assert_msg(strstr(e.msg, "not ready"), "%s", e.msg);
    ck_assert(!api->stream_sync(api, copy, &e));
    ck_assert_int_eq(api->event_elapsed_ms(api, up, t0, &(float){0}, &(Err){0}), 0);
    /* Two unordered writes of one address land in one order, then in the other. */
    float last[2];
    for (int round = 0; round < 2; round++) {
        ck_assert(!api->copy_h2d(api, y, &one, sizeof one, copy, &e));
        ck_assert(!api->copy_h2d(api, y, &two, sizeof two, compute, &e));
        ck_assert(!api->stream_sync(api, NULL, &e));
        last[round] = download_first(api, y, NULL);
    }
    ck_assert_msg(last[0] != last[1], "both rounds ran the streams in one order (%g)", last[0]);
    /* A GEMM's operands are checked when it runs; the failure comes with the next synchronize. */
    float a[] = {1, 2, 3, 4 + 0x1p-20f}, b[] = {1, 2, 3, 4}, c[4];
    CudaGemm g = cuda_gemm_linear(2, 2, 2, host_addr(a), host_addr(b), host_addr(c), 1);
    ck_assert_int_eq(api->gemm(api, &g, compute, &e), 0);
    ck_assert_int_eq(api->stream_sync(api, compute, &e), -1);
    ck_assert_msg(strstr(e.msg, "off the bf16 grid"), "%s", e.msg);
    ck_assert(!api->stream_sync(api, compute, &(Err){0}));
    api->mem_free(api, x), api->mem_free(api, y);
    api->event_destroy(api, up), api->event_destroy(api, t0);
    api->stream_destroy(api, copy), api->stream_destroy(api, compute);
    api->close(api);
}
END_TEST

/* A table's gemm on its own memory: each operand's extent copied there (C's too, so
 * that what the GEMM must leave is checked) at the host address's offset within 256
 * bytes (its alignment), the GEMM run, C copied back. */
static int run_in_table_memory(void *ctx, const CudaGemm *g, Err *err) {
    CudaApi *api = ctx;
    const CuPtr host[3] = {g->a, g->b, g->c};
    const Operand ops[3] = {operand_a(g), operand_b(g), operand_c(g)};
    CuPtr base[3] = {0}, dev[3] = {0};
    size_t bytes[3];
    int rc = 0;
    for (int i = 0; i < 3 && rc == 0; i++) {
        bytes[i] = (size_t)extent(g->batch, ops[i]) * sizeof(float);
        rc = api->mem_alloc(api, bytes[i] + 256, &base[i], err);
        dev[i] = base[i] + host[i] % 256;
        if (rc == 0) rc = api->copy_h2d(api, dev[i], (const void *)(uintptr_t)host[i], bytes[i], NULL, err);
    }
    CudaGemm d = *g;
    d.a = dev[0], d.b = dev[1], d.c = dev[2];
    if (rc == 0) rc = api->gemm(api, &d, NULL, err);
    if (rc == 0) rc = api->copy_d2h(api, (void *)(uintptr_t)host[2], dev[2], bytes[2], NULL, err);
    if (rc == 0) rc = api->stream_sync(api, NULL, err);
    for (int i = 0; i < 3; i++)
        if (base[i]) api->mem_free(api, base[i]);
    return rc;
}

/* The general form on the device (the real cuBLASLt), where a GPU answers; here on
 * the emulated table, which checks the copying around it. Operands on the bf16 grid
 * (multiples of 1/8, k <= 6): TF32 or fp32 products and fp32 sums in any order are
 * then exact, and alpha's product is one fp32 rounding of an exact value, as the
 * reference's is; so the comparison stays exact. */
static void check_general_in_table_memory(CudaApi *api) {
    Err e = {0};
    ck_assert_msg(api->bind(api, &e) == 0, "%s", e.msg);
    GemmTarget to = {run_in_table_memory, api, 1};
    check_linears(&to, NULL);
    check_general_gemms(&to);
    check_by_hand(&to);
}

START_TEST(test_gemm_general_form_in_table_memory) {
    CudaApi *api = cuda_emu_open(EMU_BLOCK, EMU_MAX_GRID);
    if (!api) return;
    check_general_in_table_memory(api);
    ck_assert_int_eq(cuda_emu_counts(api).live_allocations, 0);
    api->close(api);
}
END_TEST

START_TEST(test_real_device_gemm_general_form_when_present) {
    Err e = {0};
    CudaApi *api = cuda_api_open(&e);
    if (!api) {
        printf("test_cuda_exec: skipping the GPU GEMM test: %s\n", e.msg);
        return;
    }
    check_general_in_table_memory(api);
    api->close(api);
}
END_TEST

/* FP8 forward through cuBLASLt's block scaling, where a GPU answers. Tolerance:
 * the interpreter sums each 128-block of E4M3 products exactly and rounds
 * once per block; Hopper's FP8 tensor cores accumulate a block with about 14
 * significant bits (DeepSeek-V3 report, 3.3.2) before cuBLASLt promotes it to
 * fp32, a relative error of at most 128 * 2^-14 in the worst case and about
 * sqrt(128) * 2^-14 = 7e-4 for these random operands: 5e-3 relative L2 catches a
 * wrong scale layout (errors of order 1) with margin. 12 tokens (cuBLASLt wants a
 * multiple of 4), 3 K blocks (sb's padded to 4) and 2 N blocks, so that both scale
 * copies' layouts matter. */
START_TEST(test_real_device_fp8_when_present) {
    Err e = {0};
    CudaApi *api = cuda_api_open(&e);
    if (!api) {
        printf("test_cuda_exec: skipping the GPU FP8 test: %s\n", e.msg);
        return;
    }
    Graph *g = parse_ir_ok(
        "v3ir 1\n%0 = input {name=\"x\"} : f32[4,3,384]\n%1, %2 = quantize %0 {tile=\"1x128\"} : e4m3[4,3,384], f32[4,3,3]\n"
        "%3 = input {name=\"w\"} : f32[160,384]\n%4, %5 = quantize %3 {tile=\"128x128\"} : e4m3[160,384], f32[2,3]\n"
        "%6 = fp8_matmul %1, %2, %4, %5 : f32[4,3,160]\noutput \"y\" = %6\n",
        "fp8 gpu");
    TensorSet feeds, want, got;
    tset_init(&feeds);
    feed_random_inputs(g, NULL, (InputFill){"", 0, 4}, BATCH, SEQ, 13, &feeds);
    interpret(g, &feeds, &want);
    InterpOptions io = {.batch = BATCH, .seq = SEQ};
    CudaExec *x = cuda_exec_prepare(api, g, &io, &e);
    ck_assert_msg(x != NULL, "%s", e.msg);
    step_ok(x, &feeds, &got);
    double err = rel_l2(tset_get(&got, "y"), tset_get(&want, "y"));
    ck_assert_msg(err <= 5e-3, "FP8 GEMM on the GPU: relative L2 error %.3g", err);
    tset_free(&feeds), tset_free(&want), tset_free(&got);
    cuda_exec_free(x);
    graph_free(g);
}
END_TEST

/* Distance in bf16 steps between two bf16-grid floats of one sign. */
static int64_t bf16_steps(float a, float b) { return float_ulps(a, b) >> 16; }

/* A bf16 GEMM on the GPU (TF32 tensor cores, fp32 accumulation, then the
 * rounding kernel). Tolerance: the operands are positive, so the fp32 sum of the
 * exact products is within K * 2^-24 = 2^-16 (K = 256) of the exact sum,
 * relatively, as is the interpreter's fp64 sum rounded to float; both then round
 * to bf16 (steps of 2^-8 relative), so they are equal or, when the exact sum lies
 * within 2^-16 of a rounding boundary, one bf16 step apart; never more. A wrong
 * layout, precision or missing rounding breaks that bound or the grid. */
START_TEST(test_real_device_bf16_when_present) {
    Err e = {0};
    CudaApi *api = cuda_api_open(&e);
    if (!api) {
        printf("test_cuda_exec: skipping the GPU bf16 test: %s\n", e.msg);
        return;
    }
    Graph *g = parse_ir_ok("v3ir 1\n%0 = input {name=\"x\"} : bf16[B,T,256]\n%1 = input {name=\"w\"} : bf16[160,256]\n"
                           "%2 = linear %0, %1 : bf16[B,T,160]\n%3 = input {name=\"g\"} : bf16[B,T,160]\n"
                           "%4 = linear_wgrad %3, %0 : bf16[160,256]\noutput \"y\" = %2\noutput \"dw\" = %4\n",
                           "bf16 gpu");
    TensorSet feeds, want, got;
    tset_init(&feeds);
    feed_random_inputs(g, NULL, (InputFill){"", 1, 4}, BATCH, SEQ, 19, &feeds);
    round_bf16_inputs(g, &feeds);
    interpret(g, &feeds, &want);
    InterpOptions io = {.batch = BATCH, .seq = SEQ};
    CudaExec *x = cuda_exec_prepare(api, g, &io, &e);
    ck_assert_msg(x != NULL, "%s", e.msg);
    step_ok(x, &feeds, &got);
    for (size_t i = 0; i < g->outputs.len; i++) {
        const char *name = g->outputs.data[i].name;
        const Tensor *w = tset_get(&want, name), *r = tset_get(&got, name);
        const float *wf = w->data, *rf = r->data;
        for (int64_t k = 0; k < w->numel; k++) {
            ck_assert_msg(round_to_bf16(rf[k]) == rf[k], "%s[%lld] = %.9g is not a bf16", name, (long long)k, rf[k]);
            ck_assert_msg(bf16_steps(rf[k], wf[k]) <= 1, "%s[%lld]: GPU %.9g, interpreter %.9g", name, (long long)k, rf[k],
                          wf[k]);
        }
    }
    tset_free(&feeds), tset_free(&want), tset_free(&got);
    cuda_exec_free(x);
    graph_free(g);
}
END_TEST

/* ---- the command line and the default backend ---- */
START_TEST(test_cli_backend_cuda_without_driver) {
    if (cuda_gpu_present()) {
        printf("test_cuda_exec: a GPU answers here; the missing-driver error is not reachable\n");
        return;
    }
    char *dir = make_temp_dir();
    CmdResult r = run_v3c("run models/deepseek_v3.v3 --checkpoint ../shared/golden/tiny --input "
                          "../shared/golden/tiny/expected.safetensors --output %s/out.safetensors --backend cuda", dir);
    assert_user_error(&r, "libcuda.so.1");
    ck_assert_msg(strstr(r.err, "NVIDIA driver") != NULL, "%s", r.err);
    cmd_free(&r);
    free(dir);
}
END_TEST

/* cuda exactly when a GPU answers, else cpu with LLVM (else interp); deciding prints nothing. */
START_TEST(test_default_backend) {
    char *dir = make_temp_dir(), *path = path_join(dir, "said");
    fflush(stdout), fflush(stderr);
    int out = dup(1), errfd = dup(2);
    ck_assert(freopen(path, "w", stdout) != NULL);
    dup2(1, 2);
    const char *b = exec_default_backend();
    fflush(stdout), fflush(stderr);
    dup2(out, 1), dup2(errfd, 2);
    close(out), close(errfd);
    const char *want = cuda_gpu_present() ? "cuda" : cpu_kernels_available() ? "cpu" : "interp";
    ck_assert_str_eq(b, want);
    Err e = {0};
    char *said = read_file(path, NULL, &e);
    ck_assert_ptr_nonnull(said);
    ck_assert_msg(said[0] == '\0', "exec_default_backend printed: %s", said);
    free(said), free(path), free(dir);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("cuda_exec");
    TCase *emu = tcase_create("emulated_device");
    tcase_set_timeout(emu, 600);
    tcase_add_test(emu, test_tiny_forward_bit_for_bit);
    tcase_add_test(emu, test_tiny_grads_bit_for_bit);
    tcase_add_test(emu, test_grouped_gemms_with_empty_experts);
    tcase_add_test(emu, test_bf16_gemms_bit_for_bit);
    tcase_add_test(emu, test_tiny_bf16_grads_bit_for_bit);
    tcase_add_test(emu, test_fp8_forward_through_scale_copies);
    tcase_add_test(emu, test_fp8_wgrad_through_transposed_copies);
    tcase_add_test(emu, test_tiny_fp8_grads_bit_for_bit);
    tcase_add_test(emu, test_tiny_fp8_bf16_grads_bit_for_bit);
    tcase_add_test(emu, test_fp8_calls_through_the_table);
    tcase_add_test(emu, test_fp8_forms_cublaslt_cannot_express);
    tcase_add_test(emu, test_bad_token_id_is_a_clear_error);
    tcase_add_test(emu, test_feed_errors);
    tcase_add_test(emu, test_unplannable_graphs_refused);
    tcase_add_test(emu, test_ep_exchange_on_the_host);
    suite_add_tcase(s, emu);
    TCase *gemm = tcase_create("gemm"); /* CK_RUN_CASE=gemm runs these alone, without compiling kernels */
    tcase_set_timeout(gemm, 120);
    tcase_add_test(gemm, test_cublaslt_mapping_on_a_stand_in);
    tcase_add_test(gemm, test_emulated_gemm_general_form);
    tcase_add_test(gemm, test_emulated_streams_order_like_a_gpu);
    tcase_add_test(gemm, test_gemm_general_form_in_table_memory);
    suite_add_tcase(s, gemm);
    TCase *dev = tcase_create("device");
    tcase_set_timeout(dev, 600);
    tcase_add_test(dev, test_real_device_when_present);
    tcase_add_test(dev, test_real_device_fp8_when_present);
    tcase_add_test(dev, test_real_device_bf16_when_present);
    tcase_add_test(dev, test_real_device_gemm_general_form_when_present);
    tcase_add_test(dev, test_cli_backend_cuda_without_driver);
    tcase_add_test(dev, test_default_backend);
    suite_add_tcase(s, dev);
    return s;
}

int main(void) { return run_suite(suite()); }
