/* The IR text form: golden round trips, builder round trips, reader errors
 * with positions, DOT through Graphviz, per-node cost, and scale. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "../ir/text.h"
#include "../ir/verify.h"
#include "../passes/passes.h"
#include "testutil.h"

START_TEST(test_golden_files_round_trip) {
    const char *dir = "tests/data/ir";
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "cannot open %s (run from the source root)", dir);
    int files = 0;
    for (struct dirent *ent; (ent = readdir(d));) {
        if (!str_ends_with(ent->d_name, ".v3ir")) continue;
        char *path = path_join(dir, ent->d_name);
        Err e = {0};
        char *text = read_file(path, NULL, &e);
        ck_assert_msg(text != NULL, "%s", e.msg);
        Graph *g = parse_ir_ok(text, path);
        ck_assert_msg(ir_verify(g, &e) == 0, "%s: %s", path, e.msg);
        char *again = print_ir(g);
        ck_assert_msg(strcmp(again, text) == 0, "%s does not print back identically:\n%s", path, again);
        free(again);
        graph_free(g);
        free(text);
        free(path);
        files++;
    }
    closedir(d);
    ck_assert_int_ge(files, 2);
}
END_TEST

/* ir_param/ir_input, spelled out: graph.c's ir_param hands memcpy a NULL
 * input array, which UBSan rejects, so sources are declared with a dummy one. */
static ValueId declare(Graph *g, OpKind op, const char *name, Type t) {
    Err e = {0};
    ValueId none = 0, v;
    Attr a = attr_str("name", name);
    ck_assert_msg(ir_emit_typed(g, op, &none, 0, &a, 1, &t, 1, &v, &e) >= 0, "%s", e.msg);
    strmap_put(&g->names, name, v);
    return v;
}

/* A graph built through the builder with every attribute kind and awkward values. */
static Graph *build_awkward_graph(void) {
    Err e = {0};
    Graph *g = graph_new();
    Type x_t = {.dtype = DT_F32, .rank = 3, .dims = {dim_sym_b(), dim_sym_t(), dim_const(8)}};
    ValueId x = declare(g, OP_INPUT, "tokens \"q\"\nline2\t\\", x_t);
    Dim flat, b8;
    ck_assert_int_eq(dim_mul(dim_sym_b(), dim_sym_t(), &flat, &e), 0);
    ck_assert_int_eq(dim_mul(flat, dim_const(8), &flat, &e), 0);
    ck_assert_int_eq(dim_mul(dim_sym_b(), dim_const(8), &b8, &e), 0);
    g->cur_scope = graph_intern(g, "layers.3.self_attn");
    g->cur_chunk = CHUNK_ATTENTION;
    ValueId r, s, c[5], m, cast;
    Attr shape = attr_dims("shape", 1, &flat);
    ck_assert_msg(ir_emit(g, OP_RESHAPE, &x, 1, &shape, 1, &r, &e) >= 0, "%s", e.msg);
    Attr slice[3] = {attr_int("axis", -1), attr_dims("start", 1, &b8), attr_dims("end", 1, &flat)};
    ck_assert_msg(ir_emit(g, OP_SLICE, &r, 1, slice, 3, &s, &e) >= 0, "%s", e.msg);
    double values[5] = {1e-06, 2.5, 10000.0, 1e+300, -0.0};
    g->cur_chunk = CHUNK_NONE;
    for (int i = 0; i < 5; i++) {
        Attr v = attr_float("value", values[i]);
        ck_assert_msg(ir_emit(g, OP_CONST, &x, 0, &v, 1, &c[i], &e) >= 0, "%s", e.msg);
    }
    ValueId mul_in[2] = {s, c[0]};
    ck_assert_msg(ir_emit(g, OP_MUL, mul_in, 2, NULL, 0, &m, &e) >= 0, "%s", e.msg);
    Attr to = attr_dtype("to", DT_BF16);
    g->cur_scope = graph_intern(g, "");
    ck_assert_msg(ir_emit(g, OP_CAST, &m, 1, &to, 1, &cast, &e) >= 0, "%s", e.msg);
    ck_assert_int_eq(ir_add_output(g, "y \"1\"", cast, &e), 0);
    const char *names[5] = {"", "c1", "c2", "c3", "c4"};
    for (int i = 1; i < 5; i++) ck_assert_int_eq(ir_add_output(g, names[i], c[i], &e), 0);
    return g;
}

START_TEST(test_builder_graph_round_trips) {
    Graph *g = build_awkward_graph();
    char *first = print_ir(g);
    ck_assert_ptr_nonnull(strstr(first, "{axis=-1, end=[B*T*8], start=[B*8]} : f32[B*T*8-B*8]"));
    ck_assert_ptr_nonnull(strstr(first, "{value=1e-06}"));
    ck_assert_ptr_nonnull(strstr(first, "{value=2.5}"));
    ck_assert_ptr_nonnull(strstr(first, "{value=10000.0}"));
    ck_assert_ptr_nonnull(strstr(first, "{value=1e+300}"));
    ck_assert_ptr_nonnull(strstr(first, "{value=-0.0}"));
    ck_assert_ptr_nonnull(strstr(first, "{name=\"tokens \\\"q\\\"\\nline2\\t\\\\\"}"));
    ck_assert_ptr_nonnull(strstr(first, "@\"layers.3.self_attn\" #attention\n"));
    ck_assert_ptr_nonnull(strstr(first, "{to=bf16} : bf16[B*T*8-B*8]\n"));
    Graph *back = parse_ir_ok(first, "builder");
    char *second = print_ir(back);
    ck_assert_str_eq(second, first);
    /* -0.0 keeps its sign through the text. */
    ck_assert(signbit(node_float(&back->nodes.data[7], "value", 1.0)));
    free(first);
    free(second);
    graph_free(g);
    graph_free(back);
}
END_TEST

START_TEST(test_annotated_text_reads_back_plain) {
    Graph *g = build_awkward_graph();
    Buf b = {0};
    PrintOptions opt = {.annotate = 1, .batch = 2, .seq = 4};
    ir_print(g, &opt, &b);
    ck_assert_ptr_nonnull(strstr(b.data, "   ; flops=48 bytes=388\n")); /* the mul: B*T*8-B*8 = 48 elements */
    Graph *back = parse_ir_ok(b.data, "annotated");
    char *plain = print_ir(g), *again = print_ir(back);
    ck_assert_str_eq(again, plain);
    free(plain);
    free(again);
    buf_free(&b);
    graph_free(g);
    graph_free(back);
}
END_TEST

START_TEST(test_values_renumbered_in_definition_order) {
    const char *in = "v3ir 1\n\n; a comment\n%7 = input {name=\"x\"} : f32[4]\n%3 = neg %7 : f32[4]   ; note\n"
                     "output \"y\" = %3\n";
    Graph *g = parse_ir_ok(in, "t");
    char *out = print_ir(g);
    ck_assert_str_eq(out, "v3ir 1\n%0 = input {name=\"x\"} : f32[4]\n%1 = neg %0 : f32[4]\noutput \"y\" = %1\n");
    free(out);
    graph_free(g);
}
END_TEST

/* A scalar type as the first type read: its dims list is still unallocated
 * (found by fuzz_ir_text; UBSan flags the empty copy from a null list). */
START_TEST(test_scalar_first_type) {
    const char *in = "v3ir 1\n%0 = input {name=\"x\"} : f32[]\noutput \"y\" = %0\n";
    Graph *g = parse_ir_ok(in, "t");
    char *out = print_ir(g);
    ck_assert_str_eq(out, in);
    free(out);
    graph_free(g);
}
END_TEST

/* A dims attribute and a long type on one line: the reader's scratch space
 * grows while the attribute still points into it. */
START_TEST(test_dims_attribute_with_long_type) {
    const char *in = "v3ir 1\n%0 = input {name=\"x\"} : f32[B,T,8]\n"
                     "%1 = reshape %0 {shape=[B,T,1,1,2,1,2,2]} : f32[B,T,1,1,2,1,2,2]\n";
    Graph *g = parse_ir_ok(in, "t");
    char *out = print_ir(g);
    ck_assert_str_eq(out, in);
    free(out);
    graph_free(g);
}
END_TEST

typedef struct BadText {
    const char *text;
    const char *want;
} BadText;

#define X "v3ir 1\n%0 = input {name=\"x\"} : f32[4]\n"
static const BadText bad_texts[] = {
    {"", "t.v3ir:1:1: error: expected the header 'v3ir 1'"},
    {"v3ir 2\n", "t.v3ir:1:6: error: unsupported format version 2"},
    {"v3ir 1\n%0 = frob : f32[]\n", "t.v3ir:2:6: error: unknown op 'frob'"},
    {"v3ir 1\n%0 = neg %5 : f32[]\n", "t.v3ir:2:10: error: undefined value %5"},
    {X "%0 = neg %0 : f32[4]\n", "t.v3ir:3:1: error: value %0 is defined twice"},
    {X "%1, %1 = topk %0 {k=2} : f32[2], i32[2]\n", "t.v3ir:3:5: error: value %1 is defined twice"},
    {"v3ir 1\n%0 = input {name=\"x\"} : f32[B,Q]\n", "t.v3ir:2:31: error: expected a dimension"},
    {"v3ir 1\n%0 = input {name=\"x\"} : f33[4]\n", "t.v3ir:2:25: error: unknown dtype 'f33'"},
    {X "%1 = topk %0 {k=2} : f32[2]\n", "t.v3ir:3:6: error: op 'topk' has 2 outputs, 1 given"},
    {X "%1, %2 = neg %0 : f32[4]\n", "t.v3ir:3:10: error: 2 results but 1 type"},
    {X "%1 = neg %0 {foo=1} : f32[4]\n", "t.v3ir:3:6: error: op 'neg' has no attribute 'foo'"},
    {X "%1, %2 = topk %0 : f32[2], i32[2]\n", "t.v3ir:3:10: error: op 'topk' needs attribute 'k'"},
    {X "%1, %2 = topk %0 {k=2.0} : f32[2], i32[2]\n", "t.v3ir:3:10: error: attribute 'k' of op 'topk' has the wrong kind"},
    {X "%1, %2 = topk %0 {k=2, k=2} : f32[2], i32[2]\n", "t.v3ir:3:10: error: attribute 'k' given twice"},
    {X "%1, %2 = topk %0 {k=99999999999999999999} : f32[2], i32[2]\n", "t.v3ir:3:21: error: integer 99999999999999999999 out of range"},
    {X "%1 = neg %0 : f32[5]\n", "t.v3ir:3:6: error: op 'neg' output 0 has type f32[5], but its shape rule gives f32[4]"},
    {X "%1 = neg %0 : f32[4] @\"abc\n", "t.v3ir:3:23: error: unterminated string"},
    {X "%1 = neg %0 : f32[4] @\"a\\qb\"\n", "t.v3ir:3:25: error: unknown escape"},
    {X "%1 = neg %0 : f32[4] #lunch\n", "t.v3ir:3:23: error: unknown chunk 'lunch'"},
    {X "%1 = neg %0 : f32[4] junk\n", "t.v3ir:3:22: error: expected end of line, found 'j'"},
    {X "%1 = neg %0 f32[4]\n", "t.v3ir:3:13: error: expected ':', found 'f'"},
    {X "%1 = input {name=\"x\"} : f32[4]\n", "t.v3ir:3:6: error: 'x' is declared twice"},
    {X "output \"y\" = %9\n", "t.v3ir:3:14: error: undefined value %9"},
    {X "output \"y\" = %0\noutput \"y\" = %0\n", "t.v3ir:4:8: error: output 'y' is defined twice"},
    {X "what\n", "t.v3ir:3:1: error: expected a node ('%N = op ...') or 'output'"},
    {X "%1 = neg %0 : f32[1,1,1,1,1,1,1,1,1]\n", "t.v3ir:3:35: error: more than 8 dims"},
    {X "%1 = neg %x : f32[4]\n", "t.v3ir:3:10: error: expected digits after '%'"},
    {X "%1 = const {value=1.5.5} : f32[]\n", "t.v3ir:3:19: error: malformed number '1.5.5'"},
};
#undef X

START_TEST(test_malformed_texts_report_position) {
    for (size_t i = 0; i < sizeof bad_texts / sizeof bad_texts[0]; i++) {
        Err e = {0};
        Graph *g = ir_parse(bad_texts[i].text, "t.v3ir", &e);
        ck_assert_msg(g == NULL, "case %zu parsed: %s", i, bad_texts[i].text);
        ck_assert_msg(e.set && strstr(e.msg, bad_texts[i].want) == e.msg, "case %zu: got '%s', want '%s'", i, e.msg,
                      bad_texts[i].want);
    }
}
END_TEST

/* Every prefix of a valid text either parses or fails with a positioned error. */
START_TEST(test_truncated_texts_fail_cleanly) {
    Err e = {0};
    char *text = read_file("tests/data/ir/every_op.v3ir", NULL, &e);
    ck_assert_msg(text != NULL, "%s", e.msg);
    size_t n = strlen(text);
    for (size_t cut = 0; cut < n; cut += 7) {
        char *prefix = xstrndup(text, cut);
        Err pe = {0};
        Graph *g = ir_parse(prefix, "cut", &pe);
        ck_assert_msg(g || strncmp(pe.msg, "cut:", 4) == 0, "cut %zu: %s", cut, pe.msg);
        graph_free(g);
        free(prefix);
    }
    free(text);
}
END_TEST

static int have_dot(void) { return system("command -v dot >/dev/null 2>&1") == 0; }

START_TEST(test_dot_is_valid_graphviz) {
    if (!have_dot()) {
        printf("test_dot_is_valid_graphviz: skipped, Graphviz 'dot' is not installed\n");
        return;
    }
    Err e = {0};
    char *text = read_file("tests/data/ir/every_op.v3ir", NULL, &e);
    Graph *g = parse_ir_ok(text, "every_op");
    Buf dot = {0};
    ir_print_dot(g, &dot);
    ck_assert_ptr_nonnull(strstr(dot.data, "label=\"layers.0\""));
    ck_assert_ptr_nonnull(strstr(dot.data, "label=\"layers.1\""));
    ck_assert_ptr_null(strstr(dot.data, "label=\"layers.0.self_attn\""));
    ck_assert_ptr_nonnull(strstr(dot.data, "topk\\nf32[B*T,2]\\ni32[B*T,2]"));
    char *dir = make_temp_dir();
    char *path = path_join(dir, "g.dot");
    write_text(path, dot.data);
    char *cmd = xsprintf("dot -Tsvg %s -o %s/g.svg", path, dir);
    int st = system(cmd);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "dot failed on %s", path);
    free(cmd);
    free(path);
    free(dir);
    buf_free(&dot);
    graph_free(g);
    free(text);
}
END_TEST

static double cost_of(const char *text, size_t node, int64_t b, int64_t t, double *bytes) {
    Graph *g = parse_ir_ok(text, "cost");
    double flops;
    ck_assert_int_eq(ir_node_cost(g, &g->nodes.data[node], b, t, &flops, bytes), 0);
    graph_free(g);
    return flops;
}

START_TEST(test_node_cost) {
    double bytes;
    const char *lin = "v3ir 1\n%0 = input {name=\"x\"} : bf16[B,T,64]\n%1 = param {name=\"w\"} : bf16[32,64]\n"
                      "%2 = linear %0, %1 : bf16[B,T,32]\n";
    ck_assert_double_eq(cost_of(lin, 2, 2, 8, &bytes), 2.0 * 16 * 32 * 64);
    ck_assert_double_eq(bytes, 2.0 * (16 * 64 + 32 * 64 + 16 * 32));
#define SDPA(causal)                                                                                   \
    "v3ir 1\n%0 = input {name=\"q\"} : f32[B,T,4,16]\n%1 = input {name=\"v\"} : f32[B,T,4,8]\n"            \
    "%2 = sdpa %0, %0, %1 {causal=" causal ", scale=0.25} : f32[B,T,4,8]\n"
    ck_assert_double_eq(cost_of(SDPA("0"), 2, 2, 8, &bytes), 2.0 * 2 * 4 * 8 * 8 * (16 + 8));
    ck_assert_double_eq(cost_of(SDPA("1"), 2, 2, 8, &bytes), 2.0 * 2 * 4 * 8 * 8 * (16 + 8) / 2);
#undef SDPA
    const char *grouped = "v3ir 1\n%0 = input {name=\"x\"} : u8[B*T,16]\n%1 = input {name=\"c\"} : i32[4]\n"
                          "%2 = param {name=\"w\"} : f32[4,8,16]\n%3 = cast %0 {to=f32} : f32[B*T,16]\n"
                          "%4 = grouped_linear %3, %1, %2 : f32[B*T,8]\n";
    ck_assert_double_eq(cost_of(grouped, 4, 1, 10, &bytes), 2.0 * 10 * 8 * 16);
    ck_assert_double_eq(cost_of(grouped, 3, 1, 10, &bytes), 160);
    ck_assert_double_eq(bytes, 160 * 1 + 160 * 4); /* u8 in, f32 out */
    const char *ids = "v3ir 1\n%0 = input {name=\"ids\"} : i64[B,T-1]\n%1 = cast %0 {to=i32} : i32[B,T-1]\n";
    ck_assert_double_eq(cost_of(ids, 1, 3, 5, &bytes), 12);
    ck_assert_double_eq(bytes, 12 * 8 + 12 * 4);
    Graph *g = parse_ir_ok(ids, "neg");
    double f;
    ck_assert_int_eq(ir_node_cost(g, &g->nodes.data[1], 1, 0, &f, &bytes), -1); /* T-1 < 0 */
    graph_free(g);
}
END_TEST

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sanitizers slow the graph builder's allocations about threefold. */
#if defined(__SANITIZE_ADDRESS__)
static const double time_limit_s = 15.0;
#else
static const double time_limit_s = 5.0;
#endif

/* About the size of the full model (hundreds of thousands of nodes): printing and
 * reading must stay linear. */
START_TEST(test_large_graph_is_fast) {
    Err e = {0};
    Graph *g = graph_new();
    Type h_t = {.dtype = DT_BF16, .rank = 2, .dims = {dim_sym_b(), dim_const(64)}};
    Type w_t = {.dtype = DT_BF16, .rank = 2, .dims = {dim_const(64), dim_const(64)}};
    ValueId x = declare(g, OP_INPUT, "x", h_t);
    enum { LAYERS = 100000 };
    for (int i = 0; i < LAYERS; i++) {
        char name[64], scope[64];
        snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%d.w", i / 256, i % 256);
        snprintf(scope, sizeof scope, "layers.%d.mlp", i / 256);
        ValueId w = declare(g, OP_PARAM, name, w_t), y, in[2] = {x, 0};
        g->cur_scope = graph_intern(g, scope);
        in[1] = w;
        ck_assert_msg(ir_emit(g, OP_LINEAR, in, 2, NULL, 0, &y, &e) >= 0, "%s", e.msg);
        in[1] = y;
        ck_assert_msg(ir_emit(g, OP_ADD, in, 2, NULL, 0, &x, &e) >= 0, "%s", e.msg);
    }
    ck_assert_int_eq(ir_add_output(g, "y", x, &e), 0);
    double t0 = seconds();
    char *first = print_ir(g);
    Graph *back = parse_ir_ok(first, "large");
    char *second = print_ir(back);
    double elapsed = seconds() - t0;
    ck_assert_str_eq(second, first);
    printf("test_large_graph_is_fast: %zu nodes printed, parsed, printed in %.2f s\n", g->nodes.len, elapsed);
    ck_assert_msg(elapsed < time_limit_s, "took %.2f s (limit %.0f s)", elapsed, time_limit_s);
    free(first);
    free(second);
    graph_free(g);
    graph_free(back);
}
END_TEST

/* ir_rename_source / ir_rename_output (how launch gives an EP rank its own
 * experts): the text shows the new names, lookups follow, errors for names
 * that are absent or taken. */
START_TEST(test_rename_params_and_outputs) {
    Graph *g = parse_ir_ok("v3ir 1\n"
                           "%0 = param {name=\"a\"} : f32[2]\n"
                           "%1 = param {name=\"b\"} : f32[2]\n"
                           "%2 = add %0, %1 : f32[2]\n"
                           "output \"grad.a\" = %2\n",
                           "rename");
    Err e = {0};
    ck_assert_int_eq(ir_rename_source(g, "a", "c", &e), 0);
    ck_assert_int_eq(ir_rename_output(g, "grad.a", "grad.c", &e), 0);
    ck_assert_int_eq(ir_find_output(g, "grad.a"), -1);
    ck_assert_int_eq(ir_find_output(g, "grad.c"), 0);
    char *text = print_ir(g);
    ck_assert_msg(strstr(text, "name=\"c\"") && !strstr(text, "name=\"a\"") && strstr(text, "\"grad.c\""), "%s", text);
    Graph *back = parse_ir_ok(text, "renamed");
    graph_free(back);
    ck_assert_int_eq(ir_rename_source(g, "a", "d", &e), -1);
    ck_assert_msg(strstr(e.msg, "no param or input named 'a'"), "%s", e.msg);
    ck_assert_int_eq(ir_rename_source(g, "c", "b", &e), -1);
    ck_assert_msg(strstr(e.msg, "'b' is already"), "%s", e.msg);
    ck_assert_int_eq(ir_rename_output(g, "grad.x", "grad.y", &e), -1);
    /* The name a rename freed can be taken again; the graph still verifies. */
    ck_assert_int_eq(ir_rename_source(g, "b", "a", &e), 0);
    PipelineOptions po = {.passes = "verify,dce,verify"};
    ck_assert_msg(run_pipeline(g, &po, &e) == 0, "%s", e.msg);
    free(text);
    graph_free(g);
}
END_TEST

static Suite *ir_text_suite(void) {
    Suite *s = suite_create("ir_text");
    TCase *tc = tcase_create("text");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_golden_files_round_trip);
    tcase_add_test(tc, test_builder_graph_round_trips);
    tcase_add_test(tc, test_annotated_text_reads_back_plain);
    tcase_add_test(tc, test_values_renumbered_in_definition_order);
    tcase_add_test(tc, test_scalar_first_type);
    tcase_add_test(tc, test_dims_attribute_with_long_type);
    tcase_add_test(tc, test_malformed_texts_report_position);
    tcase_add_test(tc, test_truncated_texts_fail_cleanly);
    tcase_add_test(tc, test_dot_is_valid_graphviz);
    tcase_add_test(tc, test_node_cost);
    tcase_add_test(tc, test_large_graph_is_fast);
    tcase_add_test(tc, test_rename_params_and_outputs);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(ir_text_suite()); }
