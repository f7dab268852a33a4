/* The bf16 pass (passes/bf16.h): which GEMMs it moves to bf16 and which it
 * leaves, the arithmetic a bf16 GEMM means (interpreter), the cpu backend
 * against it, and bf16 training and inference against f32 on the bundled model. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/numeric.h"
#include "../passes/autodiff.h"
#include "../passes/bf16.h"
#include "../passes/fp8.h"
#include "../runtime/exec.h"
#include "../runtime/safetensors.h"
#include "testutil.h"

static const char *golden_dir = "../shared/golden/tiny";

/* Every GEMM form: forward, Dgrad (x by the transposed weight), Wgrad, and the experts' two. */
static const char *gemm_graph =
    "v3ir 1\n"
    "%0 = input {name=\"x\"} : f32[B,T,24]\n%1 = input {name=\"w\"} : f32[40,24]\n%2 = linear %0, %1 : f32[B,T,40]\n"
    "%3 = input {name=\"g\"} : f32[B,T,40]\n%4 = transpose %1 : f32[24,40]\n%5 = linear %3, %4 : f32[B,T,24]\n"
    "%6 = linear_wgrad %3, %0 : f32[40,24]\n"
    "%7, %8 = topk %0 {k=2} : f32[B,T,2], i32[B,T,2]\n%9, %10 = moe_dispatch %0, %8 {experts=24} : f32[B*T*2,24], i32[24]\n"
    "%11 = input {name=\"we\"} : f32[24,5,24]\n%12 = grouped_linear %9, %10, %11 : f32[B*T*2,5]\n"
    "%13 = input {name=\"ge\"} : f32[B*T*2,5]\n%14 = grouped_linear_wgrad %13, %10, %9 : f32[24,5,24]\n"
    "output \"y\" = %2\noutput \"dx\" = %5\noutput \"dw\" = %6\noutput \"ye\" = %12\noutput \"dwe\" = %14\n";

static Graph *bf16_of(const char *text) {
    Graph *g = parse_ir_ok(text, "gemm graph");
    Err e = {0};
    ck_assert_msg(bf16_graph(g, &e) == 0, "%s", e.msg);
    return g;
}

static int count_gemms(const Graph *g, DType dt) {
    static const char gemm[OP_COUNT] = {[OP_LINEAR] = 1, [OP_LINEAR_WGRAD] = 1, [OP_GROUPED_LINEAR] = 1,
                                        [OP_GROUPED_LINEAR_WGRAD] = 1};
    int n = 0;
    for (size_t i = 0; i < g->nodes.len; i++)
        if (gemm[g->nodes.data[i].op] && ir_type(g, g->nodes.data[i].out[0])->dtype == dt) n++;
    return n;
}

static int count_op(const Graph *g, OpKind op) {
    int n = 0;
    for (size_t i = 0; i < g->nodes.len; i++) n += g->nodes.data[i].op == op;
    return n;
}

START_TEST(test_every_gemm_form_goes_bf16) {
    Graph *g = bf16_of(gemm_graph);
    ck_assert_int_eq(count_gemms(g, DT_BF16), 5);
    ck_assert_int_eq(count_gemms(g, DT_F32), 0);
    /* Each operand value cast once (x feeds three GEMMs, g two, the dispatched rows two), each result cast back. */
    int operands = 7 /* x w g w^T ge we rows */, results = 5;
    ck_assert_int_eq(count_op(g, OP_CAST), operands + results);
    for (size_t i = 0; i < g->outputs.len; i++)
        ck_assert_int_eq(ir_type(g, g->outputs.data[i].value)->dtype, DT_F32);
    /* Idempotent: GEMMs on bf16 operands are left alone. */
    char *once = print_ir(g);
    Err e = {0};
    ck_assert_int_eq(bf16_graph(g, &e), 0);
    char *twice = print_ir(g);
    ck_assert_str_eq(once, twice);
    free(once), free(twice);
    graph_free(g);
}
END_TEST

/* A bf16 GEMM's value, as the interpreter defines it: both operands on bf16's
 * grid, the products summed exactly (fp64 holds a sum of 24 16-bit products
 * exactly enough: the one rounding that matters is the last), rounded once to bf16. */
START_TEST(test_interpreter_bf16_linear_is_one_rounding) {
    Graph *g = bf16_of(gemm_graph);
    TensorSet feeds, out;
    tset_init(&feeds), tset_init(&out);
    feed_random_inputs(g, NULL, (InputFill){NULL, 0, 0}, 2, 3, 7, &feeds);
    Err e = {0};
    InterpOptions opt = {.batch = 2, .seq = 3};
    ck_assert_msg(exec_run("interp", g, &feeds, &opt, &out, &e) == 0, "%s", e.msg);
    const float *x = tensor_f32(tset_get(&feeds, "x")), *w = tensor_f32(tset_get(&feeds, "w"));
    const float *y = tensor_f32(tset_get(&out, "y"));
    int rounded_differently = 0;
    for (int r = 0; r < 6; r++)
        for (int c = 0; c < 40; c++) {
            double s = 0, s32 = 0;
            for (int k = 0; k < 24; k++) {
                s += (double)round_to_bf16(x[r * 24 + k]) * round_to_bf16(w[c * 24 + k]);
                s32 += (double)x[r * 24 + k] * w[c * 24 + k];
            }
            ck_assert_float_eq(y[r * 40 + c], round_to_bf16((float)s));
            rounded_differently += round_to_bf16((float)s32) != y[r * 40 + c];
        }
    /* The operands' rounding shows: an f32 GEMM rounded at the end is not the same thing. */
    ck_assert_int_gt(rounded_differently, 0);
    tset_free(&feeds), tset_free(&out);
    graph_free(g);
}
END_TEST

/* The cpu backend sums the exact products in f32 (BLAS) and rounds once; the
 * interpreter sums in fp64. The two sums differ by at most K * 2^-24 * sum|x w|
 * (fp32 accumulation), which can carry the result across one bf16 rounding
 * boundary: so at most one bf16 step of the result plus that. */
static double bf16_step(double v) {
    int ex;
    frexp(fabs(v), &ex);
    return ldexp(1.0, ex - 8);
}

static void expect_within_one_bf16_step(const Tensor *got, const Tensor *want, double accum_slack, const char *what) {
    ck_assert_int_eq(got->numel, want->numel);
    for (int64_t i = 0; i < want->numel; i++) {
        double a = tensor_value(got, i), b = tensor_value(want, i);
        ck_assert_msg(fabs(a - b) <= bf16_step(b) + accum_slack, "%s[%lld]: cpu %.9g interp %.9g", what, (long long)i, a, b);
    }
}

START_TEST(test_cpu_backend_bf16_gemms) {
    Graph *g = bf16_of(gemm_graph);
    TensorSet feeds, cpu, interp;
    tset_init(&feeds), tset_init(&cpu), tset_init(&interp);
    feed_random_inputs(g, NULL, (InputFill){NULL, 0, 0}, 2, 5, 11, &feeds);
    Err e = {0};
    InterpOptions opt = {.batch = 2, .seq = 5};
    ck_assert_msg(exec_run("interp", g, &feeds, &opt, &interp, &e) == 0, "%s", e.msg);
    ck_assert_msg(exec_run("cpu", g, &feeds, &opt, &cpu, &e) == 0, "%s", e.msg);
    /* Inputs in [-1, 1], K <= 40 rows summed: sum|x w| <= 40, so the fp32 slack is 40 * 40 * 2^-24. */
    double slack = 40.0 * 40.0 * ldexp(1.0, -24);
    for (size_t i = 0; i < g->outputs.len; i++) {
        const char *name = g->outputs.data[i].name;
        expect_within_one_bf16_step(tset_get(&cpu, name), tset_get(&interp, name), slack, name);
        /* and on bf16's grid, as the interpreter holds bf16 values */
        const Tensor *t = tset_get(&cpu, name);
        for (int64_t k = 0; k < t->numel; k++) ck_assert_float_eq(tensor_f32(t)[k], round_to_bf16(tensor_f32(t)[k]));
    }
    tset_free(&feeds), tset_free(&cpu), tset_free(&interp);
    graph_free(g);
}
END_TEST

/* ---- attention, as autocast runs it ---- */
static const char *attention_graph =
    "v3ir 1\n"
    "%0 = input {name=\"q\"} : f32[B,T,2,6]\n%1 = input {name=\"k\"} : f32[B,T,2,6]\n%2 = input {name=\"v\"} : f32[B,T,2,5]\n"
    "%3 = sdpa %0, %1, %2 {scale=0.4} : f32[B,T,2,5]\n%4 = input {name=\"g\"} : f32[B,T,2,5]\n"
    "%5, %6, %7 = sdpa_grad %4, %0, %1, %2 {scale=0.4} : f32[B,T,2,6], f32[B,T,2,6], f32[B,T,2,5]\n"
    "output \"o\" = %3\noutput \"dq\" = %5\noutput \"dk\" = %6\noutput \"dv\" = %7\n";

static int count_op_in(const Graph *g, OpKind op, DType dt) {
    int n = 0;
    for (size_t i = 0; i < g->nodes.len; i++)
        n += g->nodes.data[i].op == op && ir_type(g, g->nodes.data[i].out[0])->dtype == dt;
    return n;
}

/* sdpa and sdpa_grad run on bf16 copies of q, k, v and g (each cast once), their results cast back;
 * the interpreter's bf16 attention is its f32 attention on the rounded operands, each result
 * rounded once to bf16; the cpu backend's is within one bf16 step of it (its GEMMs sum in f32:
 * scores of at most 0.4 * 6, P summed over at most T keys, slack 2^-16 covers those sums). */
START_TEST(test_attention_goes_bf16) {
    Graph *g = bf16_of(attention_graph);
    ck_assert_int_eq(count_op_in(g, OP_SDPA, DT_BF16), 1);
    ck_assert_int_eq(count_op_in(g, OP_SDPA_GRAD, DT_BF16), 1);
    ck_assert_int_eq(count_op(g, OP_CAST), 4 + 4);
    Graph *f32 = parse_ir_ok(attention_graph, "f32 attention");
    TensorSet feeds, rounded, in_bf16, in_f32, on_cpu;
    tset_init(&feeds), tset_init(&rounded), tset_init(&in_bf16), tset_init(&in_f32), tset_init(&on_cpu);
    feed_random_inputs(g, NULL, (InputFill){NULL, 0, 0}, 2, 7, 5, &feeds);
    feed_random_inputs(g, NULL, (InputFill){NULL, 0, 0}, 2, 7, 5, &rounded);
    static const char *const names[] = {"q", "k", "v", "g"};
    for (int i = 0; i < 4; i++) {
        Tensor *t = tset_get(&rounded, names[i]);
        round_to_bf16_array(tensor_f32(t), t->numel);
    }
    Err e = {0};
    InterpOptions opt = {.batch = 2, .seq = 7};
    ck_assert_msg(exec_run("interp", g, &feeds, &opt, &in_bf16, &e) == 0, "%s", e.msg);
    ck_assert_msg(exec_run("interp", f32, &rounded, &opt, &in_f32, &e) == 0, "%s", e.msg);
    ck_assert_msg(exec_run("cpu", g, &feeds, &opt, &on_cpu, &e) == 0, "%s", e.msg);
    for (size_t i = 0; i < g->outputs.len; i++) {
        const char *name = g->outputs.data[i].name;
        const Tensor *want = tset_get(&in_f32, name), *got = tset_get(&in_bf16, name);
        for (int64_t k = 0; k < want->numel; k++)
            ck_assert_msg(tensor_f32(got)[k] == round_to_bf16(tensor_f32(want)[k]), "%s[%lld]", name, (long long)k);
        expect_within_one_bf16_step(tset_get(&on_cpu, name), got, ldexp(1.0, -16), name);
    }
    tset_free(&feeds), tset_free(&rounded), tset_free(&in_bf16), tset_free(&in_f32), tset_free(&on_cpu);
    graph_free(f32);
    graph_free(g);
}
END_TEST

/* ---- the bundled model ---- */
static Graph *tiny_graph(int grads, int fp8, int bf16) {
    char *tmp = make_temp_dir(), *path = path_join(tmp, "g.v3ir");
    CmdResult r = run_v3c("dump models/deepseek_v3.v3 --checkpoint %s %s%s%s-o %s", golden_dir, grads ? "--grads " : "",
                          fp8 ? "--fp8 " : "", bf16 ? "--bf16 " : "", path);
    ck_assert_msg(r.status == 0, "%s", r.err);
    Err e = {0};
    char *text = read_file(path, NULL, &e);
    ck_assert_msg(text != NULL, "%s", e.msg);
    Graph *g = parse_ir_ok(text, path);
    free(text), free(path), free(tmp);
    cmd_free(&r);
    return g;
}

static int count_names(const Graph *g, OpKind op, const char *prefix, const char *suffix) {
    int n = 0;
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *nd = &g->nodes.data[i];
        const char *name = node_str(nd, "name", "");
        n += nd->op == op && starts_with(name, prefix) && strstr(name, suffix);
    }
    for (size_t i = 0; op == OP_COUNT && i < g->outputs.len; i++)
        n += starts_with(g->outputs.data[i].name, prefix) && strstr(g->outputs.data[i].name, suffix);
    return n;
}

/* The f32 GEMMs left are exactly the routers': a forward per MoE layer, and a
 * Dgrad and a Wgrad per router that gets a gradient (--grads differentiates
 * `loss`, so the MTP module's router gets none). */
START_TEST(test_tiny_router_stays_f32) {
    Graph *g = tiny_graph(1, 0, 1);
    int routers = count_names(g, OP_PARAM, "", "mlp.gate.weight");
    int trained = count_names(g, OP_COUNT, "grad.", "mlp.gate.weight");
    ck_assert_int_gt(routers, trained);
    ck_assert_int_gt(trained, 0);
    ck_assert_int_eq(count_gemms(g, DT_F32), routers + 2 * trained);
    ck_assert_int_gt(count_gemms(g, DT_BF16), 10 * routers);
    /* and every attention, forward and backward */
    ck_assert_int_eq(count_op_in(g, OP_SDPA, DT_F32) + count_op_in(g, OP_SDPA_GRAD, DT_F32), 0);
    ck_assert_int_gt(count_op_in(g, OP_SDPA, DT_BF16), 0);
    ck_assert_int_eq(count_op_in(g, OP_SDPA_GRAD, DT_BF16), count_op_in(g, OP_SDPA, DT_BF16) - 1); /* MTP's gets none */
    graph_free(g);
}
END_TEST

/* --fp8 --bf16: FP8's GEMMs keep their numerics; the output heads, which FP8 leaves, go bf16. */
START_TEST(test_fp8_then_bf16) {
    Graph *f8 = tiny_graph(1, 1, 0), *both = tiny_graph(1, 1, 1);
    ck_assert_int_eq(count_op(both, OP_FP8_MATMUL), count_op(f8, OP_FP8_MATMUL));
    ck_assert_int_eq(count_op(both, OP_QUANTIZE), count_op(f8, OP_QUANTIZE));
    for (size_t i = 0; i < both->nodes.len; i++) {
        const Node *n = &both->nodes.data[i];
        if (n->op != OP_GROUPED_LINEAR && n->op != OP_GROUPED_LINEAR_WGRAD) continue;
        ck_assert_msg(ir_type(both, n->out[0])->dtype == DT_F32, "an FP8 experts' GEMM went bf16");
    }
    int heads = 0;
    for (size_t i = 0; i < both->nodes.len; i++) {
        const Node *n = &both->nodes.data[i];
        if (n->op == OP_LINEAR && ir_type(both, n->out[0])->dtype == DT_BF16) heads++;
    }
    ck_assert_int_ge(heads, 2); /* lm_head and the MTP head, forward */
    graph_free(f8), graph_free(both);
}
END_TEST

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median over tokens of |got - want| / |want| of one token's logits. */
static double median_token_rel_l2(const Tensor *got, const Tensor *want) {
    int64_t vocab = want->shape[want->rank - 1], tokens = want->numel / vocab;
    double *err = xmalloc(sizeof(double) * (size_t)tokens);
    for (int64_t t = 0; t < tokens; t++) {
        double d = 0, w = 0;
        for (int64_t v = t * vocab; v < (t + 1) * vocab; v++) {
            double a = tensor_value(got, v), b = tensor_value(want, v);
            d += (a - b) * (a - b), w += b * b;
        }
        err[t] = sqrt(d / w);
    }
    qsort(err, (size_t)tokens, sizeof(double), compare_doubles);
    double m = err[tokens / 2];
    free(err);
    return m;
}

static double median_token_error(const char *extra) {
    char *tmp = make_temp_dir(), *out = path_join(tmp, "out.safetensors");
    char *expected = path_join(golden_dir, "expected.safetensors");
    CmdResult r = run_v3c("run models/deepseek_v3.v3 --checkpoint %s --input %s --output %s %s", golden_dir, expected,
                          out, extra);
    ck_assert_msg(r.status == 0, "%s", r.err);
    Err e = {0};
    StFile *want = st_open(expected, &e), *got = st_open(out, &e);
    ck_assert_msg(want && got, "%s", e.msg);
    Tensor *w = st_to_tensor(st_find(want, "logits"), &e), *g = st_to_tensor(st_find(got, "logits"), &e);
    ck_assert_msg(w && g, "%s", e.msg);
    double err = median_token_rel_l2(g, w);
    tensor_free(w), tensor_free(g);
    st_close(want), st_close(got);
    cmd_free(&r);
    free(out), free(expected), free(tmp);
    return err;
}

/* Golden logits (f64 HF) against a bf16 forward, token by token. Each GEMM's
 * operands carry a relative rounding error of at most 2^-9 (bf16's unit
 * roundoff), its result another; independent errors add in quadrature, so the
 * ~30 GEMMs in series from the embedding to the logits give about
 * sqrt(30 * 3) * 2^-9 / sqrt(3) ≈ 1.1e-2 relative (the 1/sqrt(3) is a uniform
 * rounding error's RMS): the median token is held to 2e-2. Not every token:
 * where a router's top-k scores nearly tie, the perturbation picks another
 * expert and that token's logits (and, through attention, later ones') move
 * by far more — a bf16 model routes that way too, so the whole tensor's error
 * is no bound. f32 is held to the golden's 1e-4 on every token. */
START_TEST(test_golden_forward_in_bf16) {
    double f32 = median_token_error("--backend cpu"), bf16 = median_token_error("--bf16 --backend cpu");
    double interp = median_token_error("--bf16 --backend interp");
    printf("golden logits, median token relative L2: f32 %.3g, bf16 %.3g (cpu), %.3g (interp)\n", f32, bf16, interp);
    ck_assert_double_lt(f32, 1e-4);
    ck_assert_double_lt(bf16, 2e-2);
    ck_assert_double_lt(interp, 2e-2);
    ck_assert_double_gt(bf16, 1e-3); /* bf16 shows: it is not the f32 run */
}
END_TEST

/* ---- training: the loss curve in bf16 against f32 ---- */
enum { TRAIN_STEPS = 40, WINDOW = 10 };

static void read_losses(const char *log, double *loss) {
    Err e = {0};
    char *text = read_file(log, NULL, &e);
    ck_assert_msg(text != NULL, "%s", e.msg);
    int n = 0;
    for (char *p = strstr(text, "\"loss\":"); p && n < TRAIN_STEPS; p = strstr(p + 1, "\"loss\":")) loss[n++] = atof(p + 7);
    ck_assert_int_eq(n, TRAIN_STEPS);
    free(text);
}

static void train_losses(const char *extra, double *loss) {
    char *tmp = make_temp_dir(), *log = path_join(tmp, "log.jsonl");
    CmdResult r = run_v3c("train models/tiny.v3 --data data/kjv.txt --steps %d --backend cpu --log %s %s", TRAIN_STEPS,
                          log, extra);
    ck_assert_msg(r.status == 0, "%s", r.err);
    read_losses(log, loss);
    cmd_free(&r);
    free(log), free(tmp);
}

static double window_mean(const double *loss, int end) {
    double s = 0;
    for (int i = end - WINDOW; i < end; i++) s += loss[i];
    return s / WINDOW;
}

/* Step 1 starts from the same weights: only the forward's rounding differs, the
 * logits by ~1e-2 relative (above), the mean cross-entropy over the batch by
 * far less (the errors average out over tokens; the loss's gradient in the
 * logits has norm <= sqrt(2) per token), so 2^-8 bounds it. After that the
 * trajectories differ as any two runs with different rounding do; what bf16
 * must not cost is training progress: each 10-step window's mean loss within
 * 3% of f32's, a quarter of the progress the f32 run makes from steps 11-20 to
 * 31-40 (13%), so a bf16 run that trains visibly slower fails. */
START_TEST(test_bf16_training_follows_f32_curve) {
    double f32[TRAIN_STEPS], bf16[TRAIN_STEPS];
    train_losses("", f32);
    train_losses("--bf16", bf16);
    ck_assert_msg(fabs(bf16[0] - f32[0]) <= ldexp(f32[0], -8), "step 1: bf16 %.6f f32 %.6f", bf16[0], f32[0]);
    int identical = 1;
    for (int i = 0; i < TRAIN_STEPS; i++) identical &= bf16[i] == f32[i];
    ck_assert_msg(!identical, "--bf16 changed nothing");
    for (int end = WINDOW; end <= TRAIN_STEPS; end += WINDOW) {
        double a = window_mean(f32, end), b = window_mean(bf16, end);
        printf("steps %d-%d: mean loss f32 %.4f bf16 %.4f (%+.2f%%)\n", end - WINDOW + 1, end, a, b, 100 * (b - a) / a);
        ck_assert_msg(fabs(b - a) <= 0.03 * a, "steps %d-%d: f32 %.4f bf16 %.4f", end - WINDOW + 1, end, a, b);
    }
    ck_assert_double_lt(window_mean(bf16, TRAIN_STEPS), 0.6 * bf16[0]); /* and it trains */
}
END_TEST

/* The field's text in each line of a training log, concatenated: bits, not a tolerance. */
static char *log_field(const char *log, const char *field) {
    Err e = {0};
    char *text = read_file(log, NULL, &e);
    ck_assert_msg(text != NULL, "%s", e.msg);
    Buf b = {0};
    char key[64];
    snprintf(key, sizeof key, "\"%s\":", field);
    for (char *p = strstr(text, key); p; p = strstr(p + 1, key)) {
        size_t n = strcspn(p + strlen(key), ",}");
        buf_printf(&b, "%.*s;", (int)n, p + strlen(key));
    }
    free(text);
    return buf_take(&b);
}

static void train_log(const char *extra, const char *log) {
    CmdResult r = run_v3c("train models/tiny.v3 --data data/kjv.txt --steps 3 --backend cpu --bf16 --log %s %s", log, extra);
    ck_assert_msg(r.status == 0, "%s", r.err);
    cmd_free(&r);
}

/* --recompute re-emits forward values in backward; bf16 runs after it, so a recomputed value's
 * bf16 copy is made from identical bits: the same run to the bit. */
START_TEST(test_bf16_with_recompute_is_the_same_run) {
    char *tmp = make_temp_dir(), *a = path_join(tmp, "a.jsonl"), *b = path_join(tmp, "b.jsonl");
    train_log("", a);
    train_log("--recompute", b);
    static const char *const fields[] = {"loss", "total_loss", "grad_norm"};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        char *x = log_field(a, fields[i]), *y = log_field(b, fields[i]);
        ck_assert_msg(strlen(x) > 6, "%s: %s", fields[i], x);
        ck_assert_str_eq(x, y);
        free(x), free(y);
    }
    free(a), free(b), free(tmp);
}
END_TEST

START_TEST(test_cli_bf16) {
    CmdResult r = run_v3c("dump models/tiny.v3 --bf16");
    ck_assert_msg(r.status == 0, "%s", r.err);
    ck_assert_msg(strstr(r.out, "cast") && strstr(r.out, ": bf16["), "%s", r.out);
    cmd_free(&r);
    r = run_v3c("schedule --bf16 --pp 2");
    assert_user_error(&r, "--bf16");
    cmd_free(&r);
}
END_TEST

int main(void) {
    Suite *s = suite_create("bf16");
    TCase *pass = tcase_create("pass");
    tcase_add_test(pass, test_every_gemm_form_goes_bf16);
    tcase_add_test(pass, test_interpreter_bf16_linear_is_one_rounding);
    tcase_add_test(pass, test_cpu_backend_bf16_gemms);
    tcase_add_test(pass, test_attention_goes_bf16);
    suite_add_tcase(s, pass);
    TCase *model = tcase_create("model");
    tcase_set_timeout(model, 600);
    tcase_add_test(model, test_tiny_router_stays_f32);
    tcase_add_test(model, test_fp8_then_bf16);
    tcase_add_test(model, test_golden_forward_in_bf16);
    tcase_add_test(model, test_bf16_training_follows_f32_curve);
    tcase_add_test(model, test_bf16_with_recompute_is_the_same_run);
    tcase_add_test(model, test_cli_bf16);
    suite_add_tcase(s, model);
    return run_suite(s);
}
