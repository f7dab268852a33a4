/* The fuse pass and its rules (ir/fusion.h): groups recorded on the nodes, printed
 * as ^N and read back, each rule firing on a small graph, recorded groups checked
 * (bad ones are errors, not crashes), and the cpu backend running the recorded
 * groups with the interpreter's results. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../ir/fusion.h"
#include "../ir/text.h"
#include "../ir/verify.h"
#include "../passes/passes.h"
#include "../runtime/cpu_backend.h"
#include "../runtime/exec.h"
#include "testutil.h"

static void run_fuse(Graph *g) {
    Err e = {0};
    PipelineOptions opt = {.passes = "fuse", .verify_each = 1};
    ck_assert_msg(run_pipeline(g, &opt, &e) == 0, "%s", e.msg);
}

/* Residual add + RMSNorm: the row reduction rule with the elementwise math around it, one
 * group (one kernel) whose residual sum is also stored, as a graph output. */
static const char *residual_rmsnorm =
    "v3ir 1\n"
    "%0 = input {name=\"x\"} : f32[B,T,64]\n"
    "%1 = input {name=\"h\"} : f32[B,T,64]\n"
    "%2 = param {name=\"w\"} : f32[64]\n"
    "%3 = add %0, %1 : f32[B,T,64]\n"
    "%4 = mul %3, %3 : f32[B,T,64]\n"
    "%5 = mean %4 {axis=-1, keepdim=1} : f32[B,T,1]\n"
    "%6 = const {value=1e-06} : f32[]\n"
    "%7 = add %5, %6 : f32[B,T,1]\n"
    "%8 = rsqrt %7 : f32[B,T,1]\n"
    "%9 = mul %3, %8 : f32[B,T,64]\n"
    "%10 = mul %2, %9 : f32[B,T,64]\n"
    "output \"y\" = %10\n"
    "output \"residual\" = %3\n";

START_TEST(test_residual_rmsnorm_is_one_group) {
    Graph *g = parse_ir_ok(residual_rmsnorm, "t");
    run_fuse(g);
    char *text = print_ir(g);
    ck_assert_msg(strstr(text, "%3 = add %0, %1 : f32[B,T,64] ^1\n"), "%s", text);
    ck_assert_msg(strstr(text, "%5 = mean %4 {axis=-1, keepdim=1} : f32[B,T,1] ^1\n"), "%s", text);
    ck_assert_msg(strstr(text, "%10 = mul %2, %9 : f32[B,T,64] ^1\n"), "%s", text);
    ck_assert_msg(strstr(text, "^2") == NULL, "one group expected:\n%s", text);
    ck_assert_msg(strstr(text, "const {value=1e-06} : f32[]\n"), "a const is read, not fused:\n%s", text);
    IrFusion f;
    Err e = {0};
    ck_assert_int_eq(ir_fusion_recorded(g, &f, &e), 0);
    ck_assert_int_eq(f.groups.len, 1);
    ck_assert_int_eq(f.groups.data[0].nodes.len, 7);
    ck_assert_str_eq(f.groups.data[0].rule, "elementwise"); /* started by the residual add */
    ir_fusion_free(&f);
    free(text);
    graph_free(g);
}
END_TEST

/* One graph per rule: the group each forms, by the rule that started it. */
static const struct {
    const char *rule, *body;
    int members;
} rule_cases[] = {
    {"elementwise", /* SwiGLU: silu(gate) * up */
     "%0 = input {name=\"a\"} : f32[B,T,32]\n%1 = input {name=\"b\"} : f32[B,T,32]\n%2 = silu %0 : f32[B,T,32]\n"
     "%3 = mul %2, %1 : f32[B,T,32]\noutput \"y\" = %3\n",
     2},
    {"row reduction", /* a last-axis sum and the per-row math after it */
     "%0 = input {name=\"a\"} : f32[B,T,32]\n%1 = sum %0 {axis=2} : f32[B,T]\n%2 = sqrt %1 : f32[B,T]\n"
     "output \"y\" = %2\n",
     2},
    {"softmax", /* softmax, then a scale */
     "%0 = input {name=\"a\"} : f32[B,T,32]\n%1 = softmax %0 : f32[B,T,32]\n%2 = const {value=2.0} : f32[]\n"
     "%3 = mul %1, %2 : f32[B,T,32]\noutput \"y\" = %3\n",
     2},
    {"row sum_to", /* the backward of a per-row broadcast (RMSNorm's rsqrt), and the math after it */
     "%0 = input {name=\"a\"} : f32[B,T,32]\n%1 = sum_to %0 {shape=[B,T,1]} : f32[B,T,1]\n%2 = neg %1 : f32[B,T,1]\n"
     "output \"y\" = %2\n",
     2},
};

START_TEST(test_each_rule_fires) {
    ck_assert_int_eq(ir_fusion_rule_count(), (int)(sizeof rule_cases / sizeof rule_cases[0]));
    for (size_t i = 0; i < sizeof rule_cases / sizeof rule_cases[0]; i++) {
        char *text = xsprintf("v3ir 1\n%s", rule_cases[i].body);
        Graph *g = parse_ir_ok(text, rule_cases[i].rule);
        IrFusion f;
        ir_fusion_plan(g, &f);
        ck_assert_msg(f.groups.len == 1, "%s: %zu groups", rule_cases[i].rule, f.groups.len);
        ck_assert_str_eq(f.groups.data[0].rule, rule_cases[i].rule);
        ck_assert_str_eq(ir_fusion_rule_name((int)i), rule_cases[i].rule);
        ck_assert_int_eq(f.groups.data[0].nodes.len, rule_cases[i].members);
        ir_fusion_free(&f);
        graph_free(g);
        free(text);
    }
    ck_assert_ptr_null(ir_fusion_rule_name(-1));
}
END_TEST

/* What the rules leave alone: other axes, non-f32, GEMMs, and a node whose group was read outside. */
/* Casts between f32 and bf16 (the bf16 pass's) join elementwise groups; other casts do not. */
START_TEST(test_bf16_casts_fuse) {
    Graph *g = parse_ir_ok("v3ir 1\n%0 = input {name=\"a\"} : f32[B,T,8]\n%1 = exp %0 : f32[B,T,8]\n"
                           "%2 = cast %1 {to=bf16} : bf16[B,T,8]\n%3 = cast %2 {to=f32} : f32[B,T,8]\n"
                           "%4 = add %3, %0 : f32[B,T,8]\n%5 = cast %4 {to=i32} : i32[B,T,8]\n%6 = cast %4 {to=f16} : f16[B,T,8]\n"
                           "output \"y\" = %4\noutput \"i\" = %5\noutput \"h\" = %6\noutput \"b\" = %2\n",
                           "t");
    IrFusion f;
    ir_fusion_plan(g, &f);
    ck_assert_int_ge(f.group_of[1], 0);
    ck_assert_int_eq(f.group_of[2], f.group_of[1]);
    ck_assert_int_eq(f.group_of[3], f.group_of[1]);
    ck_assert_int_eq(f.group_of[4], f.group_of[1]);
    ck_assert_int_eq(f.group_of[5], -1); /* to an integer */
    ck_assert_int_eq(f.group_of[6], -1); /* to f16: another grid */
    ir_fusion_free(&f);
    graph_free(g);
}
END_TEST

START_TEST(test_rules_decline) {
    Graph *g = parse_ir_ok("v3ir 1\n%0 = input {name=\"a\"} : f32[B,T,8]\n%1 = sum %0 {axis=1} : f32[B,8]\n"
                           "%8 = sum_to %0 {shape=[T,1]} : f32[T,1]\n%9 = sum_to %0 {shape=[B,1,8]} : f32[B,1,8]\n"
                           "%2 = cast %0 {to=bf16} : bf16[B,T,8]\n%3 = neg %2 : bf16[B,T,8]\n"
                           "%4 = input {name=\"w\"} : f32[8,8]\n%5 = exp %0 : f32[B,T,8]\n%6 = linear %5, %4 : f32[B,T,8]\n"
                           "%7 = add %5, %6 : f32[B,T,8]\noutput \"s\" = %1\noutput \"n\" = %3\noutput \"y\" = %7\n"
                           "output \"u\" = %8\noutput \"v\" = %9\n",
                           "t");
    IrFusion f;
    ir_fusion_plan(g, &f);
    /* nodes in line order: 0 a, 1 sum, 2 sum_to, 3 sum_to, 4 cast, 5 neg, 6 w, 7 exp, 8 linear, 9 add */
    ck_assert_int_eq(f.group_of[1], -1); /* sum over T */
    ck_assert_int_eq(f.group_of[2], -1); /* sum_to onto [T,1]: leading dims differ */
    ck_assert_int_eq(f.group_of[3], -1); /* sum_to over T */
    ck_assert_int_eq(f.group_of[5], -1); /* bf16 */
    ck_assert_int_eq(f.group_of[8], -1); /* a GEMM */
    ck_assert_int_ge(f.group_of[7], 0);
    ck_assert_int_ge(f.group_of[9], 0);
    ck_assert_int_ne(f.group_of[7], f.group_of[9]); /* the linear read exp's group first */
    ir_fusion_free(&f);
    graph_free(g);
}
END_TEST

START_TEST(test_groups_round_trip_and_pass_is_idempotent) {
    Err e = {0};
    char *text = read_file("tests/data/ir/fused.v3ir", NULL, &e);
    ck_assert_msg(text != NULL, "%s", e.msg);
    Graph *g = parse_ir_ok(text, "fused.v3ir");
    char *again = print_ir(g);
    ck_assert_str_eq(again, text);
    run_fuse(g); /* the file's groups are what the pass makes */
    char *fused = print_ir(g);
    ck_assert_str_eq(fused, text);
    run_fuse(g);
    char *twice = print_ir(g);
    ck_assert_str_eq(twice, text);
    free(twice), free(fused), free(again), free(text);
    graph_free(g);
}
END_TEST

START_TEST(test_group_read_errors) {
    const char *bad[][2] = {
        {"^0", "test:2:35: error: a fusion group must be a number from 1 to 2147483647"},
        {"^x", "test:2:35: error: a fusion group must be a number from 1 to 2147483647"},
        {"^99999999999", "test:2:35: error: a fusion group must be a number from 1 to 2147483647"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *text = xsprintf("v3ir 1\n%%0 = input {name=\"a\"} : f32[B,4] %s\noutput \"y\" = %%0\n", bad[i][0]);
        Err e = {0};
        Graph *g = ir_parse(text, "test", &e);
        ck_assert_msg(g == NULL, "%s parsed", bad[i][0]);
        ck_assert_msg(strstr(e.msg, bad[i][1]) == e.msg, "%s: got %s", bad[i][0], e.msg);
        free(text);
    }
}
END_TEST

START_TEST(test_verify_rejects_negative_group) {
    Graph *g = parse_ir_ok("v3ir 1\n%0 = input {name=\"a\"} : f32[B,4]\n%1 = exp %0 : f32[B,4]\noutput \"y\" = %1\n", "t");
    g->nodes.data[1].group = -3;
    Err e = {0};
    ck_assert_int_eq(ir_verify(g, &e), -1);
    ck_assert_msg(strstr(e.msg, "negative fusion group (-3)"), "%s", e.msg);
    graph_free(g);
}
END_TEST

/* Recorded groups the rules do not allow: user errors from the backend, naming node and group. */
static const struct {
    const char *text, *want;
} bad_groups[] = {
    {"%0 = input {name=\"a\"} : f32[B,4]\n%1 = input {name=\"w\"} : f32[4,4]\n%2 = linear %0, %1 : f32[B,4] ^1\n"
     "output \"y\" = %2\n",
     "node 2 (linear) cannot be in fusion group 1: no fusion rule takes this op with these types"},
    {"%0 = input {name=\"a\"} : f32[B,4]\n%1 = exp %0 : f32[B,4] ^1\n%2 = input {name=\"w\"} : f32[4,4]\n"
     "%3 = linear %1, %2 : f32[B,4]\n%4 = neg %1 : f32[B,4] ^1\noutput \"y\" = %3\noutput \"z\" = %4\n",
     "node 4 (neg) cannot be in fusion group 1: an earlier node outside the group already reads the group"},
    {"%0 = input {name=\"a\"} : f32[B,4]\n%1 = exp %0 : f32[B,4] ^1\n%2 = input {name=\"b\"} : f32[B,5]\n"
     "%3 = neg %2 : f32[B,5] ^1\noutput \"y\" = %1\noutput \"z\" = %3\n",
     "node 3 (neg) cannot be in fusion group 1: its shape does not fit the group's kernel"},
};

START_TEST(test_bad_recorded_groups_are_errors) {
    for (size_t i = 0; i < sizeof bad_groups / sizeof bad_groups[0]; i++) {
        char *text = xsprintf("v3ir 1\n%s", bad_groups[i].text);
        Graph *g = parse_ir_ok(text, "t");
        InterpOptions opt = {.batch = 2, .seq = 3};
        Err e = {0};
        ck_assert_ptr_null(cpu_plan_build(g, &opt, NULL, &e));
        ck_assert_msg(strstr(e.msg, bad_groups[i].want), "got: %s", e.msg);
        ck_assert_msg(strstr(e.msg, "the recorded fusion groups: ") == e.msg, "got: %s", e.msg);
        graph_free(g);
        free(text);
    }
}
END_TEST

static void fill(Tensor *t, uint64_t seed) {
    for (int64_t i = 0; i < t->numel; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        tensor_f32(t)[i] = (float)((seed >> 33) % 20001) / 10000.0f - 1.0f;
    }
}

static Tensor *random_tensor(int rank, const int64_t *shape, uint64_t seed) {
    Tensor *t = tensor_new(DT_F32, rank, shape);
    fill(t, seed);
    return t;
}

/* Runs g on the cpu backend and the interpreter with random f32 inputs at B=2, T=3; asserts
 * the plan has `groups` groups and the outputs are the interpreter's bits (fused kernels repeat
 * its arithmetic). */
static void assert_backend_matches(const Graph *g, int groups) {
    TensorSet feeds, cpu, interp;
    tset_init(&feeds), tset_init(&cpu), tset_init(&interp);
    InterpOptions opt = {.batch = 2, .seq = 3};
    Err e = {0};
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        if (n->op != OP_INPUT && n->op != OP_PARAM) continue;
        int64_t shape[IR_MAX_RANK];
        const Type *ty = ir_type(g, n->out[0]);
        ck_assert_msg(type_concrete(ty, opt.batch, opt.seq, shape, &e) == 0, "%s", e.msg);
        tset_put(&feeds, node_str(n, "name", ""), random_tensor(ty->rank, shape, 7 + i));
    }
    CpuPlan *p = cpu_plan_build(g, &opt, NULL, &e);
    ck_assert_msg(p != NULL, "%s", e.msg);
    ck_assert_int_eq(cpu_plan_stats(p).groups, groups);
    ck_assert_msg(cpu_plan_run(p, &feeds, &cpu, &e) == 0, "%s", e.msg);
    ck_assert_msg(interp_run(g, &feeds, &opt, &interp, &e) == 0, "%s", e.msg);
    for (size_t i = 0; i < g->outputs.len; i++) {
        const Tensor *a = tset_get(&cpu, g->outputs.data[i].name), *b = tset_get(&interp, g->outputs.data[i].name);
        ck_assert_int_eq(a->numel, b->numel);
        ck_assert_msg(memcmp(a->data, b->data, sizeof(float) * (size_t)a->numel) == 0, "%s differs", g->outputs.data[i].name);
    }
    cpu_plan_free(p);
    tset_free(&feeds), tset_free(&cpu), tset_free(&interp);
}

START_TEST(test_backend_runs_recorded_groups) {
    Graph *g = parse_ir_ok(residual_rmsnorm, "t");
    run_fuse(g);
    assert_backend_matches(g, 1);
    graph_free(g);
}
END_TEST

/* A recorded group may hold nodes that do not read each other (same space): one kernel, both stored;
 * and a node left out of a group (neg) runs on its own between the group's members. */
START_TEST(test_backend_runs_hand_written_groups) {
    Graph *g = parse_ir_ok("v3ir 1\n%0 = input {name=\"a\"} : f32[B,T,6]\n%1 = exp %0 : f32[B,T,6] ^7\n"
                           "%2 = neg %0 : f32[B,T,6]\n%3 = sigmoid %0 : f32[B,T,6] ^7\n%4 = add %2, %0 : f32[B,T,6] ^3\n"
                           "output \"e\" = %1\noutput \"s\" = %3\noutput \"n\" = %4\n",
                           "t");
    assert_backend_matches(g, 2);
    graph_free(g);
}
END_TEST

START_TEST(test_dump_shows_groups) {
    CmdResult r = run_v3c("dump models/tiny.v3 --passes verify,fuse");
    ck_assert_msg(r.status == 0, "%s", r.err);
    ck_assert_msg(strstr(r.out, " ^1\n") && strstr(r.out, " ^2\n"), "no groups in the dump");
    cmd_free(&r);
    r = run_v3c("dump models/tiny.v3 --passes verify");
    ck_assert_msg(r.status == 0 && strstr(r.out, " ^1\n") == NULL, "groups without the pass");
    cmd_free(&r);
    r = run_v3c("dump models/tiny.v3 --passes verify,fuse --format dot");
    ck_assert_msg(r.status == 0 && strstr(r.out, " ^1\"]") != NULL, "no group in the DOT labels");
    cmd_free(&r);
}
END_TEST

int main(void) {
    Suite *s = suite_create("fuse");
    TCase *tc = tcase_create("fuse");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_residual_rmsnorm_is_one_group);
    tcase_add_test(tc, test_each_rule_fires);
    tcase_add_test(tc, test_rules_decline);
    tcase_add_test(tc, test_bf16_casts_fuse);
    tcase_add_test(tc, test_groups_round_trip_and_pass_is_idempotent);
    tcase_add_test(tc, test_group_read_errors);
    tcase_add_test(tc, test_verify_rejects_negative_group);
    tcase_add_test(tc, test_bad_recorded_groups_are_errors);
    tcase_add_test(tc, test_backend_runs_recorded_groups);
    tcase_add_test(tc, test_backend_runs_hand_written_groups);
    tcase_add_test(tc, test_dump_shows_groups);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
