/* Attention on the CUDA executor's GEMM path (codegen/cuda/cuda.h, CudaAttention;
 * runtime/cuda_attention.c) without a GPU.
 *
 * sdpa and sdpa_grad become batched GEMMs that read each head in place, with
 * generated row kernels (softmax; the softmax's gradient) between them. On the
 * emulated device (tests/testutil.c) the GEMMs are fp64 sums rounded once to
 * fp32 and the row kernels run with 3 threads per block, so the results differ
 * from the interpreter's all-fp64 attention only by the fp32 roundings of the
 * path's intermediates: the scores, P, dP and dS, the scale (a float alpha) and
 * the outputs. The bound below is derived from those; a wrong transpose, leading
 * dimension, head offset, mask or round would be off by O(1).
 *
 * The plan's shape (which nodes become calls, how many heads one round covers,
 * what the exact option keeps) is checked directly. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../codegen/cuda/cuda.h"
#include "../frontend/frontend.h"
#include "../ir/interp.h"
#include "../base/numeric.h"
#include "../passes/autodiff.h"
#include "../passes/bf16.h"
#include "../passes/passes.h"
#include "../runtime/cuda_exec.h"
#include "../runtime/init.h"
#include "testutil.h"

enum { BATCH = 2, SEQ = 3, EMU_BLOCK = 3, EMU_MAX_GRID = 2, TINY_VOCAB = 256 };

/* ---- the plan ---- */
static const char attention_ir[] =
    "v3ir 1\n%0 = input {name=\"q\"} : f32[B,70,3,5]\n%1 = input {name=\"k\"} : f32[B,70,3,5]\n"
    "%2 = input {name=\"v\"} : f32[B,70,3,4]\n%3 = sdpa %0, %1, %2 {scale=0.45} : f32[B,70,3,4]\n"
    "%4 = input {name=\"g\"} : f32[B,70,3,4]\n"
    "%5, %6, %7 = sdpa_grad %4, %0, %1, %2 {scale=0.45} : f32[B,70,3,5], f32[B,70,3,5], f32[B,70,3,4]\n"
    "output \"o\" = %3\noutput \"dq\" = %5\noutput \"dk\" = %6\noutput \"dv\" = %7\n";

static int64_t count_kind(const CudaPlan *p, CudaLibKind k) {
    int64_t n = 0;
    for (size_t i = 0; i < p->calls.len; i++) n += p->calls.data[i].kind == k;
    return n;
}

START_TEST(test_attention_plans_as_gemm_calls) {
    Graph *g = parse_ir_ok(attention_ir, "attention");
    CudaPlan p;
    Err e = {0};
    ck_assert_msg(cuda_plan_build(g, BATCH, SEQ, NULL, &p, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(count_kind(&p, LIB_ATTENTION), 1);
    ck_assert_int_eq(count_kind(&p, LIB_ATTENTION_GRAD), 1);
    ck_assert_int_eq(p.launches.len, 0); /* the row kernels are the calls' own */
    ck_assert_int_eq(p.kernels.len, 2);  /* one softmax (both calls' rows are alike) and one dscores */
    const CudaAttention *fwd = &p.calls.data[0].att, *bwd = &p.calls.data[1].att;
    const int64_t shape[] = {fwd->batch, fwd->heads, fwd->t, fwd->s, fwd->dk, fwd->dv}, want[] = {BATCH, 3, 70, 70, 5, 4};
    for (int i = 0; i < 6; i++) ck_assert_int_eq(shape[i], want[i]);
    ck_assert_int_eq(fwd->heads_per_round, 3);
    ck_assert_int_eq(fwd->softmax.kernel, bwd->softmax.kernel);
    ck_assert_int_lt(fwd->dscores.kernel, 0);
    ck_assert_int_ge(bwd->dscores.kernel, 0);
    ck_assert_msg(fabsf(fwd->scale - 0.45f) == 0, "scale %g", (double)fwd->scale);
    const CudaLaunch *own[CUDA_CALL_LAUNCHES];
    ck_assert_int_eq(cuda_call_launches(&p.calls.data[1], own), 2);
    cuda_plan_free(&p);
    /* exact_attention keeps the bit-exact kernel templates */
    CudaPlanOptions exact = {.exact_attention = 1};
    ck_assert_msg(cuda_plan_build(g, BATCH, SEQ, &exact, &p, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(p.calls.len, 0);
    ck_assert_int_ge(p.launches.len, 3);
    cuda_plan_free(&p);
    graph_free(g);
}
END_TEST

/* A round's scores stay within 256 MiB per scratch slot: DeepSeek-V3 (128 heads, 4096^2
 * scores of 64 MiB per head) takes rounds of 4 heads; the benchmark config (16 heads of
 * 1024^2) one round per batch row. */
START_TEST(test_rounds_bound_the_scratch) {
    static const struct {
        int64_t b, t, heads, want;
    } cases[] = {{1, 4096, 128, 4}, {4, 1024, 16, 16}, {1, 8192, 7, 1}, {1, 5000, 7, 1}, {2, 3000, 7, 7}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *text = xsprintf("v3ir 1\n%%0 = input {name=\"q\"} : f32[B,T,%lld,8]\n"
                              "%%1 = sdpa %%0, %%0, %%0 {scale=0.1} : f32[B,T,%lld,8]\noutput \"o\" = %%1\n",
                              (long long)cases[i].heads, (long long)cases[i].heads);
        Graph *g = parse_ir_ok(text, "rounds");
        CudaPlan p;
        Err e = {0};
        ck_assert_msg(cuda_plan_build(g, cases[i].b, cases[i].t, NULL, &p, &e) == 0, "%s", e.msg);
        const CudaAttention *a = &p.calls.data[0].att;
        ck_assert_int_eq(a->heads_per_round, cases[i].want);
        ck_assert_int_eq(a->heads % a->heads_per_round, 0);
        int64_t bytes = a->heads_per_round * a->t * a->s * 4;
        ck_assert(a->heads_per_round == 1 || bytes <= (int64_t)256 << 20);
        ck_assert_int_eq(p.calls.data[0].att.softmax.args[0].bytes, bytes);
        cuda_plan_free(&p);
        graph_free(g);
        free(text);
    }
}
END_TEST

/* ---- numbers against the interpreter ---- */
/* The executor on the emulated device at BATCH, SEQ (api_out, unless NULL: its table, for its
 * counts); NULL, the reason printed, without a host compiler. */
static CudaExec *emulated(const Graph *g, const CudaPlanOptions *po, CudaApi **api_out) {
    CudaApi *api = cuda_emu_open(EMU_BLOCK, EMU_MAX_GRID);
    if (!api) return NULL;
    if (api_out) *api_out = api;
    InterpOptions io = {.batch = BATCH, .seq = SEQ};
    Err e = {0};
    CudaExec *x = cuda_exec_prepare_opts(api, g, &io, po, &e);
    ck_assert_msg(x != NULL, "%s", e.msg);
    return x;
}

static double max_abs(const Tensor *t) {
    double m = 0;
    for (int64_t i = 0; i < t->numel; i++) m = fmax(m, fabs(tensor_value(t, i)));
    return m;
}

/* The largest |difference| over the largest |want|. */
static double normalized_error(const Tensor *got, const Tensor *want) {
    ck_assert_int_eq(got->numel, want->numel);
    double d = 0;
    for (int64_t i = 0; i < got->numel; i++) {
        double gv = tensor_value(got, i), wv = tensor_value(want, i);
        ck_assert_msg(!isnan(gv) || isnan(wv), "element %lld is NaN, want %g", (long long)i, wv);
        d = fmax(d, fabs(gv - wv));
    }
    double m = max_abs(want);
    return m > 0 ? d / m : d;
}

/* Bound on normalized_error for scores up to smax in magnitude. A score's fp32 rounding
 * and the float scale move it by at most 2^-23 |s|; exp(s - m) then moves by that relative
 * to itself for s and again for m, and the sum and P's own rounding add 2^-24 each: P's
 * relative error is below 2^-24 (4 smax + 2). Each later fp32 intermediate (dP, dS, the
 * outputs) adds at most 2^-24 relative, and dS = P (dP - sum P dP) can cancel, so its
 * absolute error scales with |P| |dP| rather than |dS|; products over at most 75 keys
 * then carry it into dq, dk, dv. A factor of 8 over the P bound covers these chains at
 * every output's own scale; errors of a wrong index are O(1). */
static double attention_bound(double smax) { return 8.0 * ldexp(4.0 * smax + 2.0, -24); }

static void compare_all(const Graph *g, const TensorSet *want, const TensorSet *got, double bound) {
    for (size_t i = 0; i < g->outputs.len; i++) {
        const char *name = g->outputs.data[i].name;
        const Tensor *w = tset_get(want, name), *r = tset_get(got, name);
        ck_assert_msg(w && r, "output %s missing", name);
        double err = normalized_error(r, w);
        ck_assert_msg(err <= bound, "output %s: normalized error %.3g over the bound %.3g", name, err, bound);
    }
}

/* Runs ir on the interpreter and the emulated device and compares every output within
 * attention_bound(smax), smax the largest |score| the inputs allow: scale * dk * max|q| * max|k|
 * (inputs in [-1, 1]). */
static void run_and_compare(const char *ir, double smax, const CudaPlanOptions *po, const CudaStepOptions *so) {
    Graph *g = parse_ir_ok(ir, ir);
    TensorSet feeds, want, got;
    tset_init(&feeds);
    feed_random_inputs(g, NULL, (InputFill){"", 0, 4}, BATCH, SEQ, 11, &feeds);
    tset_init(&want);
    InterpOptions io = {.batch = BATCH, .seq = SEQ};
    Err e = {0};
    ck_assert_msg(interp_run(g, &feeds, &io, &want, &e) == 0, "%s", e.msg);
    CudaExec *x = emulated(g, po, NULL);
    if (x) {
        tset_init(&got);
        ck_assert_msg(cuda_exec_step_opts(x, &feeds, so, &got, &e) == 0, "%s", e.msg);
        compare_all(g, &want, &got, attention_bound(smax));
        tset_free(&got);
        cuda_exec_free(x);
    }
    tset_free(&want), tset_free(&feeds);
    graph_free(g);
}

START_TEST(test_causal_attention_matches_interpreter) {
    CudaStepOptions poison = {.poison_dead_values = 1};
    run_and_compare(attention_ir, 0.45 * 5, NULL, &poison);
}
END_TEST

/* A scratch budget of one head's scores: three rounds per batch row, each at its head's offset. */
START_TEST(test_attention_in_rounds_of_one_head) {
    CudaPlanOptions one_head = {.attention_scratch_bytes = 70 * 70 * 4};
    Graph *g = parse_ir_ok(attention_ir, "attention");
    CudaPlan p;
    Err e = {0};
    ck_assert_msg(cuda_plan_build(g, BATCH, SEQ, &one_head, &p, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(p.calls.data[0].att.heads_per_round, 1);
    cuda_plan_free(&p);
    graph_free(g);
    run_and_compare(attention_ir, 0.45 * 5, &one_head, NULL);
}
END_TEST

/* Keys outnumber queries (75 to 70), wide heads, one head per batch row. */
START_TEST(test_noncausal_attention_matches_interpreter) {
    run_and_compare("v3ir 1\n%0 = input {name=\"q\"} : f32[B,70,1,31]\n%1 = input {name=\"k\"} : f32[B,75,1,31]\n"
                    "%2 = input {name=\"v\"} : f32[B,75,1,9]\n%3 = sdpa %0, %1, %2 {causal=0, scale=0.05} : f32[B,70,1,9]\n"
                    "%4 = input {name=\"g\"} : f32[B,70,1,9]\n"
                    "%5, %6, %7 = sdpa_grad %4, %0, %1, %2 {causal=0, scale=0.05} : f32[B,70,1,31], f32[B,75,1,31], "
                    "f32[B,75,1,9]\noutput \"o\" = %3\noutput \"dq\" = %5\noutput \"dk\" = %6\noutput \"dv\" = %7\n",
                    0.05 * 31, NULL, NULL);
}
END_TEST

/* A sharp softmax (scores up to 2000 * 5): a row's max must be over its visible keys only. */
START_TEST(test_sharp_softmax_matches_interpreter) {
    run_and_compare("v3ir 1\n%0 = input {name=\"q\"} : f32[B,T,2,5]\n%1 = input {name=\"k\"} : f32[B,T,2,5]\n"
                    "%2 = input {name=\"v\"} : f32[B,T,2,3]\n%3 = sdpa %0, %1, %2 {scale=2000} : f32[B,T,2,3]\n"
                    "output \"o\" = %3\n",
                    2000.0 * 5, NULL, NULL);
}
END_TEST

/* ---- bf16 attention (the bf16 pass: autocast's scaled_dot_product_attention) ----
 * The row kernels round P and dS to bf16, so every GEMM operand is on the bf16 grid (the
 * emulated GEMM refuses a bf16_operands call whose operands are not), and the results are
 * rounded to bf16 after the call. Against the interpreter (fp64 on the bf16 operands, each
 * result rounded once), with u = 2^-8 bf16's unit roundoff: P's rounding moves each probability
 * by at most u relative, so out = P v by u max|v|, plus the output's own rounding, u: 2u at the
 * output's scale. The gradients carry P's rounding, dS's (u each) and their own, on dS terms
 * P (dP - sum P dP) whose bracket can reach twice max|dP| before the products cancel: about
 * (1 + 2 + 2 + 1) u. 8u (2^-5) at each output's scale covers these chains (measured: 1.1u for
 * out, 1.6u for dq); a wrong operand, mask or offset is off by O(1) (>= 0.2 for every mutation
 * tried on the f32 path), and a missing rounding of P or dS fails the emulated GEMM's grid check. */
START_TEST(test_bf16_attention_matches_interpreter) {
    Graph *g = parse_ir_ok(attention_ir, "attention");
    Err e = {0};
    ck_assert_msg(bf16_graph(g, &e) == 0, "%s", e.msg);
    CudaPlan p;
    ck_assert_msg(cuda_plan_build(g, BATCH, SEQ, NULL, &p, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(count_kind(&p, LIB_ATTENTION) + count_kind(&p, LIB_ATTENTION_GRAD), 2);
    for (size_t i = 0; i < p.calls.len; i++) {
        const CudaLibCall *c = &p.calls.data[i];
        ck_assert(c->att.bf16);
        ck_assert_int_ge(c->round.kernel, 0);
        ck_assert_int_eq(c->att.round_rest[0].kernel >= 0, c->kind == LIB_ATTENTION_GRAD);
    }
    cuda_plan_free(&p);
    TensorSet feeds, want, got;
    tset_init(&feeds), tset_init(&want), tset_init(&got);
    feed_random_inputs(g, NULL, (InputFill){"", 0, 4}, BATCH, SEQ, 11, &feeds);
    InterpOptions io = {.batch = BATCH, .seq = SEQ};
    ck_assert_msg(interp_run(g, &feeds, &io, &want, &e) == 0, "%s", e.msg);
    CudaExec *x = emulated(g, NULL, NULL);
    if (x) {
        ck_assert_msg(cuda_exec_step(x, &feeds, &got, &e) == 0, "%s", e.msg);
        compare_all(g, &want, &got, ldexp(1.0, -5));
        for (size_t i = 0; i < g->outputs.len; i++) {
            const Tensor *t = tset_get(&got, g->outputs.data[i].name);
            for (int64_t k = 0; k < t->numel; k++)
                ck_assert_msg(tensor_f32(t)[k] == round_to_bf16(tensor_f32(t)[k]), "%s[%lld] off the bf16 grid",
                              g->outputs.data[i].name, (long long)k);
        }
        cuda_exec_free(x);
    }
    tset_free(&feeds), tset_free(&want), tset_free(&got);
    graph_free(g);
}
END_TEST

/* The launches an attention call makes itself, per step: its row kernels once per round (two batch
 * rows of three one-head rounds), its bf16 roundings once. What `v3c compile` counts
 * (cuda_call_step_launches) is what the executor launches. */
START_TEST(test_call_launches_per_step) {
    Graph *g = parse_ir_ok(attention_ir, "attention");
    Err e = {0};
    ck_assert_msg(bf16_graph(g, &e) == 0, "%s", e.msg);
    CudaPlanOptions one_head = {.attention_scratch_bytes = 70 * 70 * 4};
    CudaPlan p;
    ck_assert_msg(cuda_plan_build(g, BATCH, SEQ, &one_head, &p, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(p.calls.len, 2);
    ck_assert_int_eq(cuda_attention_rounds(&p.calls.data[0].att), BATCH * 3);
    ck_assert_int_eq(cuda_call_step_launches(&p.calls.data[0]), BATCH * 3 + 1);         /* softmax, round */
    ck_assert_int_eq(cuda_call_step_launches(&p.calls.data[1]), 2 * BATCH * 3 + 1 + 2); /* + dscores, dk, dv */
    int64_t own = cuda_call_step_launches(&p.calls.data[0]) + cuda_call_step_launches(&p.calls.data[1]);
    cuda_plan_free(&p);
    TensorSet feeds, got;
    tset_init(&feeds), tset_init(&got);
    feed_random_inputs(g, NULL, (InputFill){"", 0, 4}, BATCH, SEQ, 5, &feeds);
    CudaApi *api = NULL;
    CudaExec *x = emulated(g, &one_head, &api);
    if (x) {
        ck_assert_msg(cuda_exec_step(x, &feeds, &got, &e) == 0, "%s", e.msg);
        ck_assert_int_eq(cuda_emu_counts(api).launches, cuda_exec_stats(x).launches + own);
        cuda_exec_free(x);
    }
    tset_free(&feeds), tset_free(&got);
    graph_free(g);
}
END_TEST

/* No queries: sdpa_grad's dk and dv are sums over nothing, zeros (the emulated device's memory
 * starts as NaN, so a skipped write shows). */
START_TEST(test_no_queries_give_zero_gradients) {
    Graph *g = parse_ir_ok("v3ir 1\n%0 = input {name=\"q\"} : f32[B,0,2,4]\n%1 = input {name=\"k\"} : f32[B,5,2,4]\n"
                           "%2 = input {name=\"v\"} : f32[B,5,2,3]\n%3 = input {name=\"g\"} : f32[B,0,2,3]\n"
                           "%4, %5, %6 = sdpa_grad %3, %0, %1, %2 {causal=0, scale=1} : f32[B,0,2,4], f32[B,5,2,4], "
                           "f32[B,5,2,3]\noutput \"dk\" = %5\noutput \"dv\" = %6\n",
                           "no queries");
    TensorSet feeds, got;
    tset_init(&feeds);
    feed_random_inputs(g, NULL, (InputFill){"", 0, 4}, BATCH, SEQ, 3, &feeds);
    CudaExec *x = emulated(g, NULL, NULL);
    if (x) {
        Err e = {0};
        tset_init(&got);
        ck_assert_msg(cuda_exec_step(x, &feeds, &got, &e) == 0, "%s", e.msg);
        ck_assert_int_eq(tset_get(&got, "dk")->numel, BATCH * 5 * 2 * 4);
        const Tensor *dk = tset_get(&got, "dk"), *dv = tset_get(&got, "dv");
        for (int64_t i = 0; i < dk->numel; i++) ck_assert_msg(tensor_value(dk, i) == 0, "dk[%lld]", (long long)i);
        for (int64_t i = 0; i < dv->numel; i++) ck_assert_msg(tensor_value(dv, i) == 0, "dv[%lld]", (long long)i);
        tset_free(&got);
        cuda_exec_free(x);
    }
    tset_free(&feeds);
    graph_free(g);
}
END_TEST

/* No keys: the interpreter's run-time error, at plan time (the shapes are known there). */
START_TEST(test_no_keys_is_an_error) {
    Graph *g = parse_ir_ok("v3ir 1\n%0 = input {name=\"q\"} : f32[B,T,2,4]\n%1 = input {name=\"k\"} : f32[B,0,2,4]\n"
                           "%2 = input {name=\"v\"} : f32[B,0,2,3]\n%3 = sdpa %0, %1, %2 {causal=0, scale=1} : f32[B,T,2,3]\n"
                           "output \"o\" = %3\n",
                           "no keys");
    CudaPlan p;
    Err e = {0};
    ck_assert_int_eq(cuda_plan_build(g, BATCH, SEQ, NULL, &p, &e), -1);
    ck_assert_int_eq(e.code, 1);
    ck_assert_msg(strstr(e.msg, "sdpa: there are no keys to attend to") != NULL, "%s", e.msg);
    graph_free(g);
}
END_TEST

/* An empty head dim is no GEMM cuBLASLt takes: the node keeps its kernel templates. */
START_TEST(test_empty_head_dims_take_the_templates) {
    Graph *g = parse_ir_ok("v3ir 1\n%0 = input {name=\"q\"} : f32[B,T,2,0]\n%1 = input {name=\"v\"} : f32[B,T,2,3]\n"
                           "%2 = sdpa %0, %0, %1 {scale=1} : f32[B,T,2,3]\noutput \"o\" = %2\n",
                           "dk 0");
    CudaPlan p;
    Err e = {0};
    ck_assert_msg(cuda_plan_build(g, BATCH, SEQ, NULL, &p, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(p.calls.len, 0);
    ck_assert_int_ge(p.launches.len, 1);
    cuda_plan_free(&p);
    graph_free(g);
}
END_TEST

/* ---- the bundled model ---- */
/* tiny.v3 with every gradient: logits, loss and gradients within the bound of the largest score
 * (the scores of a 0.02-std initialisation are small: the bound is then a few 2^-24). Two steps
 * with other tokens on one executor, buffers poisoned after their last use. */
START_TEST(test_tiny_model_with_gemm_attention) {
    Err e = {0};
    Program *prog = program_parse_file("models/tiny.v3", &e);
    ck_assert_msg(prog != NULL, "%s", e.msg);
    Graph *g = program_lower(prog, &e);
    ck_assert_msg(g != NULL, "%s", e.msg);
    ck_assert_msg(autodiff_graph(g, "loss", &e) == 0, "%s", e.msg);
    PipelineOptions po = {.log = stderr};
    ck_assert_msg(run_pipeline(g, &po, &e) == 0, "%s", e.msg);
    CudaExec *x = emulated(g, NULL, NULL);
    if (x) {
        CudaStepOptions poison = {.poison_dead_values = 1};
        for (uint64_t seed = 1; seed <= 2; seed++) {
            TensorSet feeds, want, got;
            tset_init(&feeds);
            InitOptions init = {.seed = 7 + seed, .std = 0.02};
            ck_assert_msg(init_params(g, &init, &feeds, &e) == 0, "%s", e.msg);
            static const InputFill ids[] = {{"input_ids", 0, TINY_VOCAB}, {0}};
            feed_random_inputs(g, ids, (InputFill){"", 0, 4}, BATCH, SEQ, seed, &feeds);
            tset_init(&want), tset_init(&got);
            InterpOptions io = {.batch = BATCH, .seq = SEQ};
            ck_assert_msg(interp_run(g, &feeds, &io, &want, &e) == 0, "%s", e.msg);
            ck_assert_msg(cuda_exec_step_opts(x, &feeds, &poison, &got, &e) == 0, "%s", e.msg);
            compare_all(g, &want, &got, attention_bound(1.0));
            tset_free(&feeds), tset_free(&want), tset_free(&got);
        }
        cuda_exec_free(x);
    }
    graph_free(g);
    program_free(prog);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("cuda_attention");
    TCase *plan = tcase_create("plan");
    tcase_add_test(plan, test_attention_plans_as_gemm_calls);
    tcase_add_test(plan, test_rounds_bound_the_scratch);
    tcase_add_test(plan, test_no_keys_is_an_error);
    tcase_add_test(plan, test_empty_head_dims_take_the_templates);
    suite_add_tcase(s, plan);
    TCase *emu = tcase_create("emulated_device");
    tcase_set_timeout(emu, 600);
    tcase_add_test(emu, test_causal_attention_matches_interpreter);
    tcase_add_test(emu, test_attention_in_rounds_of_one_head);
    tcase_add_test(emu, test_noncausal_attention_matches_interpreter);
    tcase_add_test(emu, test_sharp_softmax_matches_interpreter);
    tcase_add_test(emu, test_bf16_attention_matches_interpreter);
    tcase_add_test(emu, test_call_launches_per_step);
    tcase_add_test(emu, test_no_queries_give_zero_gradients);
    tcase_add_test(emu, test_tiny_model_with_gemm_attention);
    suite_add_tcase(s, emu);
    return s;
}

int main(void) { return run_suite(suite()); }
