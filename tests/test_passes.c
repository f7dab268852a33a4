/* The pass manager and the first passes: verify, shapes, dce, cse, and the
 * hooks (--verify-each, --print-after, --time-passes). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../ir/text.h"
#include "../ir/verify.h"
#include "../passes/passes.h"
#include "testutil.h"

static void run_ok(Graph *g, const char *passes) {
    Err e = {0};
    PipelineOptions opt = {.passes = passes, .verify_each = 1};
    ck_assert_msg(run_pipeline(g, &opt, &e) == 0, "%s: %s", passes, e.msg);
}

static void assert_prints(const Graph *g, const char *want) {
    char *got = print_ir(g);
    ck_assert_str_eq(got, want);
    free(got);
}

static const char *branchy =
    "v3ir 1\n"
    "%0 = input {name=\"x\"} : f32[B,8]\n"
    "%1 = param {name=\"w\"} : f32[4,8]\n"
    "%2 = param {name=\"unused\"} : f32[4,8]\n"
    "%3 = input {name=\"unused_input\"} : f32[2]\n"
    "%4 = linear %0, %1 : f32[B,4]\n"
    "%5 = exp %4 : f32[B,4]\n"
    "%6 = linear %0, %2 : f32[B,4] @\"dead.branch\"\n"
    "%7 = neg %4 : f32[B,4]\n"
    "output \"y\" = %7\n";

START_TEST(test_dce_removes_unused_branch_and_sources) {
    Graph *g = parse_ir_ok(branchy, "t");
    run_ok(g, "dce");
    assert_prints(g, "v3ir 1\n"
                     "%0 = input {name=\"x\"} : f32[B,8]\n"
                     "%1 = param {name=\"w\"} : f32[4,8]\n"
                     "%2 = linear %0, %1 : f32[B,4]\n"
                     "%3 = neg %2 : f32[B,4]\n"
                     "output \"y\" = %3\n");
    /* Removed names are gone from the name map; surviving ones point at their node. */
    ck_assert(!strmap_get(&g->names, "unused", NULL));
    int64_t w;
    ck_assert(strmap_get(&g->names, "w", &w) && w == 1);
    graph_free(g);
}
END_TEST

START_TEST(test_cse_merges_duplicates) {
    Graph *g = parse_ir_ok("v3ir 1\n"
                        "%0 = input {name=\"x\"} : f32[4]\n"
                        "%1 = exp %0 : f32[4] @\"a\" #attention\n"
                        "%2 = exp %0 : f32[4] @\"b\" #mlp\n"
                        "%3 = neg %1 : f32[4]\n"
                        "%4 = neg %2 : f32[4]\n"
                        "%5 = add %3, %4 : f32[4]\n"
                        "%6 = const {value=0.0} : f32[]\n"
                        "%7 = const {value=-0.0} : f32[]\n"
                        "%8 = const {value=0.0} : f32[]\n"
                        "%9 = mul %5, %6 : f32[4]\n"
                        "%10 = mul %5, %7 : f32[4]\n"
                        "%11 = mul %5, %8 : f32[4]\n"
                        "output \"a\" = %9\n"
                        "output \"b\" = %10\n"
                        "output \"c\" = %11\n", "t");
    run_ok(g, "cse");
    /* exp and neg chains merge (scope ignored, the first survives); 0.0 and -0.0 do not. */
    assert_prints(g, "v3ir 1\n"
                     "%0 = input {name=\"x\"} : f32[4]\n"
                     "%1 = exp %0 : f32[4] @\"a\" #attention\n"
                     "%2 = neg %1 : f32[4]\n"
                     "%3 = add %2, %2 : f32[4]\n"
                     "%4 = const {value=0.0} : f32[]\n"
                     "%5 = const {value=-0.0} : f32[]\n"
                     "%6 = mul %3, %4 : f32[4]\n"
                     "%7 = mul %3, %5 : f32[4]\n"
                     "output \"a\" = %6\n"
                     "output \"b\" = %7\n"
                     "output \"c\" = %6\n");
    graph_free(g);
}
END_TEST

START_TEST(test_cse_keeps_different_attributes_and_sources) {
    const char *text = "v3ir 1\n"
                       "%0 = input {name=\"x\"} : f32[4,6]\n"
                       "%1 = input {name=\"y\"} : f32[4,6]\n"
                       "%2 = sum %0 {axis=0, keepdim=0} : f32[6]\n"
                       "%3 = sum %0 {axis=1, keepdim=0} : f32[4]\n"
                       "%4 = reshape %0 {shape=[24]} : f32[24]\n"
                       "%5 = reshape %1 {shape=[24]} : f32[24]\n"
                       "output \"a\" = %2\n"
                       "output \"b\" = %3\n"
                       "output \"c\" = %4\n"
                       "output \"d\" = %5\n";
    Graph *g = parse_ir_ok(text, "t");
    run_ok(g, "cse");
    assert_prints(g, text);
    graph_free(g);
}
END_TEST

START_TEST(test_default_pipeline_runs) {
    Graph *g = parse_ir_ok(branchy, "t");
    Err e = {0};
    PipelineOptions opt = {0};
    ck_assert_msg(run_pipeline(g, &opt, &e) == 0, "%s", e.msg);
    ck_assert_int_eq((int)g->nodes.len, 4);
    ck_assert_ptr_nonnull(strstr(default_pipeline(), "verify"));
    graph_free(g);
}
END_TEST

START_TEST(test_unknown_pass_lists_known_ones) {
    Graph *g = parse_ir_ok(branchy, "t");
    Err e = {0};
    PipelineOptions opt = {.passes = "verify,frobnicate,dce"};
    ck_assert_int_eq(run_pipeline(g, &opt, &e), -1);
    ck_assert_ptr_nonnull(strstr(e.msg, "unknown pass 'frobnicate'"));
    int n;
    const Pass *all = pass_registry(&n);
    ck_assert_int_ge(n, 4);
    for (int i = 0; i < n; i++) ck_assert_msg(strstr(e.msg, all[i].name) != NULL, "%s lacks %s", e.msg, all[i].name);
    ck_assert_int_eq((int)g->nodes.len, 8); /* nothing ran */
    Err e2 = {0};
    PipelineOptions empty = {.passes = "verify,,dce"};
    ck_assert_int_eq(run_pipeline(g, &empty, &e2), -1);
    ck_assert_ptr_nonnull(strstr(e2.msg, "empty pass name"));
    Err e3 = {0};
    PipelineOptions bad_print = {.passes = "dce", .print_after = "dcee"};
    ck_assert_int_eq(run_pipeline(g, &bad_print, &e3), -1);
    ck_assert_ptr_nonnull(strstr(e3.msg, "--print-after: unknown pass 'dcee'"));
    graph_free(g);
}
END_TEST

START_TEST(test_print_after_writes_numbered_files) {
    Graph *g = parse_ir_ok(branchy, "t");
    char *dir = make_temp_dir();
    char *dump = path_join(dir, "dumps"); /* created by the manager */
    Err e = {0};
    PipelineOptions opt = {.passes = "verify, dce ,cse", .print_after = "all", .dump_dir = dump};
    ck_assert_msg(run_pipeline(g, &opt, &e) == 0, "%s", e.msg);
    const char *files[3] = {"0001.after_verify.v3ir", "0002.after_dce.v3ir", "0003.after_cse.v3ir"};
    for (int i = 0; i < 3; i++) {
        char *path = path_join(dump, files[i]);
        char *text = read_file(path, NULL, &e);
        ck_assert_msg(text != NULL, "%s", e.msg);
        Graph *back = parse_ir_ok(text, "t");
        ck_assert_int_eq((int)back->nodes.len, i == 0 ? 8 : 4);
        graph_free(back);
        free(text);
        free(path);
    }
    char *unwanted = path_join(dump, "0002.after_verify.v3ir");
    ck_assert_ptr_null(fopen(unwanted, "r"));
    free(unwanted);
    free(dump);
    free(dir);
    graph_free(g);
}
END_TEST

static char *read_log(FILE *log) {
    long n = ftell(log);
    rewind(log);
    char *s = xcalloc((size_t)n + 1, 1);
    ck_assert_int_eq((long)fread(s, 1, (size_t)n, log), n);
    return s;
}

START_TEST(test_print_after_one_pass_and_timing_go_to_log) {
    Graph *g = parse_ir_ok(branchy, "t");
    FILE *log = tmpfile();
    Err e = {0};
    PipelineOptions opt = {.passes = "verify,dce,verify", .print_after = "dce", .time_passes = 1, .log = log};
    ck_assert_msg(run_pipeline(g, &opt, &e) == 0, "%s", e.msg);
    char *text = read_log(log);
    char *after = strstr(text, "; *** IR after dce ***\nv3ir 1\n");
    ck_assert_msg(after != NULL, "%s", text);
    ck_assert_ptr_null(strstr(text, "IR after verify"));
    ck_assert_ptr_nonnull(strstr(text, "8 -> 4"));
    ck_assert_ptr_nonnull(strstr(text, "4 -> 4"));
    ck_assert_ptr_nonnull(strstr(text, "total"));
    /* The dump between the header and the timings reads back. */
    char *end = strstr(after, "; pass timings");
    ck_assert_ptr_nonnull(end);
    char *dump = xstrndup(after, (size_t)(end - after));
    Graph *back = parse_ir_ok(dump, "t");
    ck_assert_int_eq((int)back->nodes.len, 4);
    graph_free(back);
    free(dump);
    free(text);
    fclose(log);
    graph_free(g);
}
END_TEST

START_TEST(test_verify_accepts_valid_graphs) {
    Graph *g = parse_ir_ok(branchy, "t");
    Err e = {0};
    ck_assert_msg(ir_verify(g, &e) == 0, "%s", e.msg);
    graph_free(g);
}
END_TEST

/* Each corruption and a fragment its message must contain. */
typedef void (*Corrupt)(Graph *g);
static void change_type(Graph *g) { g->values.data[7].type.dims[1] = dim_const(5); }
static void use_before_definition(Graph *g) { g->nodes.data[4].in[0] = 6; }
static void leave_dead_node(Graph *g) { g->nodes.data[5].dead = 1; }
static void duplicate_param_name(Graph *g) { g->nodes.data[2].attrs[0].s = g->nodes.data[1].attrs[0].s; }
static void output_out_of_range(Graph *g) { g->outputs.data[0].value = 99; }
static void wrong_arity(Graph *g) { g->nodes.data[5].nin = 2; }
static void unsorted_attrs(Graph *g) { g->nodes.data[1].attrs[0].key = "zzz"; }
static void value_points_elsewhere(Graph *g) { g->values.data[5].node = 6; }

static const struct {
    Corrupt corrupt;
    const char *want;
} corruptions[] = {
    {change_type, "node 7 (neg): output 0 has type f32[B,5], but its shape rule gives f32[B,4]"},
    {use_before_definition, "node 4 (linear): input 0 (value 6) is defined by node 6, not before it"},
    {leave_dead_node, "node 5 (exp): is marked dead"},
    {duplicate_param_name, "node 2 (param): name 'w' is declared twice"},
    {output_out_of_range, "output 'y' is value 99, which does not exist"},
    {wrong_arity, "node 5 (exp): has 2 inputs"},
    {unsorted_attrs, "node 1 (param): has attribute 'zzz'"},
    {value_points_elsewhere, "value 5 claims to be output 0 of node 6"},
};

START_TEST(test_verify_catches_corruption) {
    for (size_t i = 0; i < sizeof corruptions / sizeof corruptions[0]; i++) {
        Graph *g = parse_ir_ok(branchy, "t");
        corruptions[i].corrupt(g);
        Err e = {0};
        ck_assert_int_eq(ir_verify(g, &e), -1);
        ck_assert_msg(strstr(e.msg, corruptions[i].want) != NULL, "case %zu: '%s' lacks '%s'", i, e.msg,
                      corruptions[i].want);
        graph_free(g);
    }
}
END_TEST

START_TEST(test_verify_names_scope) {
    Graph *g = parse_ir_ok(branchy, "t");
    g->values.data[6].type.dtype = DT_BF16;
    Err e = {0};
    ck_assert_int_eq(ir_verify(g, &e), -1);
    ck_assert_ptr_nonnull(strstr(e.msg, "node 6 (linear @dead.branch)"));
    graph_free(g);
}
END_TEST

START_TEST(test_pipeline_errors_name_the_pass) {
    Graph *g = parse_ir_ok(branchy, "t");
    change_type(g);
    Err e = {0};
    PipelineOptions shapes = {.passes = "dce,shapes"};
    ck_assert_int_eq(run_pipeline(g, &shapes, &e), -1);
    ck_assert_msg(strstr(e.msg, "pass 'shapes' (#2 in the pipeline) failed") != NULL, "%s", e.msg);
    ck_assert_ptr_nonnull(strstr(e.msg, "but its shape rule gives"));
    graph_free(g);
    g = parse_ir_ok(branchy, "t");
    change_type(g);
    Err e2 = {0};
    PipelineOptions each = {.passes = "cse", .verify_each = 1};
    ck_assert_int_eq(run_pipeline(g, &each, &e2), -1);
    ck_assert_msg(strstr(e2.msg, "invalid after pass 'cse'") != NULL, "%s", e2.msg);
    graph_free(g);
}
END_TEST

START_TEST(test_registry_lookup) {
    ck_assert_ptr_nonnull(pass_lookup("cse"));
    ck_assert_ptr_null(pass_lookup("CSE"));
    int n;
    const Pass *all = pass_registry(&n);
    for (int i = 0; i < n; i++) {
        ck_assert_ptr_eq(pass_lookup(all[i].name), &all[i]);
        ck_assert_msg(all[i].doc && strlen(all[i].doc) > 10, "pass %s has no doc", all[i].name);
    }
}
END_TEST

static Suite *passes_suite(void) {
    Suite *s = suite_create("passes");
    TCase *tc = tcase_create("passes");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_dce_removes_unused_branch_and_sources);
    tcase_add_test(tc, test_cse_merges_duplicates);
    tcase_add_test(tc, test_cse_keeps_different_attributes_and_sources);
    tcase_add_test(tc, test_default_pipeline_runs);
    tcase_add_test(tc, test_unknown_pass_lists_known_ones);
    tcase_add_test(tc, test_print_after_writes_numbered_files);
    tcase_add_test(tc, test_print_after_one_pass_and_timing_go_to_log);
    tcase_add_test(tc, test_verify_accepts_valid_graphs);
    tcase_add_test(tc, test_verify_catches_corruption);
    tcase_add_test(tc, test_verify_names_scope);
    tcase_add_test(tc, test_pipeline_errors_name_the_pass);
    tcase_add_test(tc, test_registry_lookup);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(passes_suite()); }
