/* The DSL frontend: parsing, hyperparameter binding, lowering to the IR, and
 * every error with its file:line:col and caret. */
#include <stdlib.h>
#include <string.h>

#include "../base/json.h"
#include "../frontend/frontend.h"
#include "testutil.h"

static Program *parse_ok(const char *src) {
    Err e = {0};
    Program *p = program_parse_string(src, "t.v3", &e);
    ck_assert_msg(p != NULL, "parse failed: %s", e.msg);
    return p;
}

static Graph *lower_ok(Program *p) {
    Err e = {0};
    Graph *g = program_lower(p, &e);
    ck_assert_msg(g != NULL, "lower failed: %s", e.msg);
    return g;
}

/* Parses and lowers src, expecting exactly the error text want. */
static void expect_error(const char *src, const char *want) {
    Err e = {0};
    Program *p = program_parse_string(src, "t.v3", &e);
    Graph *g = p ? program_lower(p, &e) : NULL;
    ck_assert_msg(g == NULL, "expected an error for: %s", src);
    ck_assert_int_eq(e.code, 1);
    ck_assert_str_eq(e.msg, want);
    program_free(p);
}

/* error() reports its message: a window onto compile-time scalars. */
static void expect_value(const char *src_expr, const char *want) {
    char *src = xsprintf("error(\"{%s}\");", src_expr);
    char *msg = xsprintf("t.v3:1:1: error: %s\n  %s\n  ^", want, src);
    expect_error(src, msg);
    free(src);
    free(msg);
}

static ValueId named(Graph *g, const char *name) {
    int64_t v;
    ck_assert_msg(strmap_get(&g->names, name, &v), "no value named %s", name);
    return (ValueId)v;
}

static const Node *producer(Graph *g, ValueId v) { return &g->nodes.data[g->values.data[v].node]; }

static void expect_type(Graph *g, ValueId v, const char *want) {
    char buf[256];
    type_print(ir_type(g, v), buf, sizeof buf);
    ck_assert_str_eq(buf, want);
}
START_TEST(test_scalar_expressions) {
    expect_value("1 + 2 * 3", "7");
    expect_value("(1 + 2) * 3", "9");
    expect_value("7 / 2", "3.5");
    expect_value("7 % 3", "1");
    expect_value("-2 - -3", "1");
    expect_value("idiv(12, 4)", "3");
    expect_value("2.5 * 2", "5");
    expect_value("1 < 2 and not (2 <= 1) or false", "true");
    expect_value("none == none", "true");
    expect_value("none == 0", "false");
    expect_value("len([1, 2] + [3])", "3");
    expect_value("[4, 5, 6][-1]", "6");
    expect_value("[i * i for i in 0..5][4]", "16");
    expect_value("len([i for i in 3..3])", "0");
    expect_value("T - 1", "T-1");
    expect_value("B * T * 2", "B*T*2");
    expect_value("T - T + 4", "4");
    expect_value("(B * T * 4) / 2", "B*T*2");
    expect_value("max(3, 4.5)", "4.5");
    expect_value("min(3, 4)", "3");
    expect_value("clamp(7, 0, 5)", "5");
    expect_value("floor(2.7) + ceil(2.1)", "5");
    expect_value("int(3.9)", "3");
    expect_value("float(2)", "2");
    expect_error("let f = float(\"-inf\");\nerror(\"{f} {float(1) * 2}\");",
                 "t.v3:2:1: error: -inf 2\n  error(\"{f} {float(1) * 2}\");\n  ^");
    expect_value("sqrt(16.0)", "4");
    expect_value("ln(1.0)", "0");
    expect_value("pow(2, 10)", "1024");
    expect_value("abs(-5)", "5");
    expect_value("len([])", "0");
}
END_TEST

START_TEST(test_interpolation) {
    /* ints print without decimals; braces doubled are literal; escapes */
    expect_error("let i = 3; let L = 61; let k = 2;\n"
                 "error(\"layers.{i}.x {i + 1} {L + k - 1} {{lit}} \\\"q\\\" {2.5}\");",
                 "t.v3:2:1: error: layers.3.x 4 62 {lit} \"q\" 2.5\n"
                 "  error(\"layers.{i}.x {i + 1} {L + k - 1} {{lit}} \\\"q\\\" {2.5}\");\n  ^");
    Program *p = parse_ok("for e in 0..3 { weight(\"experts.{e}.w\", [2, 4]); }");
    Graph *g = lower_ok(p);
    expect_type(g, named(g, "experts.2.w"), "f32[2,4]");
    ck_assert_int_eq((int)g->nodes.len, 3);
    graph_free(g);
    program_free(p);
}
END_TEST

START_TEST(test_statements) {
    Program *p = parse_ok(
        "hyper n_layers = 3;\n"
        "hyper dense = 1;\n"
        "let x = input(\"x\", \"f32\", [B, T, 8]);\n"
        "let count = 0;\n"
        "fn pair(a) { return a + 1.0, a * 2.0; }\n"
        "for i in 0..n_layers {\n"
        "  scope \"layers.{i}\" {\n"
        "    if i < dense { chunk mlp { let d = x + weight(\"d{i}\", [8]); } x = d; }\n"
        "    else if i == 1 { chunk attention { let a, b = pair(x); x = a - b; } }\n"
        "    else { x = -x; }\n"
        "  }\n"
        "  count = count + 1;\n"
        "}\n"
        "if count != 3 or x == none or not (none != x) { error(\"count {count}\"); }\n"
        "output \"y{count}\" = x / 2;\n");
    Graph *g = lower_ok(p);
    ck_assert_int_eq((int)g->outputs.len, 1);
    ck_assert_str_eq(g->outputs.data[0].name, "y3");
    expect_type(g, g->outputs.data[0].value, "f32[B,T,8]");
    const Node *last = producer(g, g->outputs.data[0].value);
    ck_assert_str_eq(op_info(last->op)->name, "div");
    ck_assert_str_eq(last->scope, "");
    const Node *add0 = NULL, *neg = NULL, *sub = NULL;
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        if (n->op == OP_ADD && !add0) add0 = n;
        if (n->op == OP_NEG) neg = n;
        if (n->op == OP_SUB) sub = n;
    }
    ck_assert_ptr_nonnull(add0);
    ck_assert_ptr_nonnull(sub);
    ck_assert_ptr_nonnull(neg);
    ck_assert_str_eq(add0->scope, "layers.0");
    ck_assert_int_eq(add0->chunk, CHUNK_MLP);
    ck_assert_str_eq(sub->scope, "layers.1");
    ck_assert_int_eq(sub->chunk, CHUNK_ATTENTION);
    ck_assert_str_eq(neg->scope, "layers.2");
    ck_assert_int_eq(neg->chunk, CHUNK_NONE);
    /* weights are scope-free: a name shared across scopes is one tensor */
    ck_assert_str_eq(producer(g, named(g, "d0"))->scope, "");
    graph_free(g);
    program_free(p);
}
END_TEST

START_TEST(test_nested_scopes_and_hoisting) {
    Program *p = parse_ok(
        "let y = f(input(\"x\", \"bf16\", [B, 4]));\n"
        "output \"y\" = y;\n"
        "fn f(x) { scope \"model\" { scope \"norm\" { return sigmoid(x) * 2; } } }\n");
    Graph *g = lower_ok(p);
    const Node *mul = producer(g, g->outputs.data[0].value);
    ck_assert_str_eq(op_info(mul->op)->name, "mul");
    ck_assert_str_eq(mul->scope, "model.norm");
    expect_type(g, g->outputs.data[0].value, "bf16[B,4]");
    graph_free(g);
    program_free(p);
}
END_TEST

START_TEST(test_tensor_ops) {
    Program *p = parse_ok(
        "let ids = input(\"ids\", \"i64\", [B, T]);\n"
        "let h = embedding(weight(\"emb\", [100, 16]), ids);\n"
        "let v, i = topk(linear(h, weight(\"g\", [8, 16])), 2);\n"
        "let xd, counts = moe_dispatch(reshape(h, [B * T, 16]), reshape(i, [B * T, 2]), 8);\n"
        "let s = slice(h, 1, 0, T - 1);\n"
        "let c = concat([h, h], -1);\n"
        "output \"s\" = sum(s, -1);\n"
        "output \"k\" = mean(c, 2, true);\n"
        "output \"m\" = max(h, -1);\n"
        "output \"mx\" = max(h, 0.5);\n"
        "output \"e\" = exp(h);\n"
        "output \"xd\" = xd;\n"
        "output \"cast\" = cast(softmax(h), \"bf16\");\n"
        "if rank(h) != 3 or len(shape(h)) != 3 or shape(h)[2] != 16 or shape(h)[1] != T { error(\"shape\"); }\n");
    Graph *g = lower_ok(p);
    ck_assert_int_eq((int)g->outputs.len, 7);
    expect_type(g, g->outputs.data[0].value, "f32[B,T-1]");
    expect_type(g, g->outputs.data[1].value, "f32[B,T,1]");
    expect_type(g, g->outputs.data[2].value, "f32[B,T]");
    ck_assert_str_eq(op_info(producer(g, g->outputs.data[3].value)->op)->name, "maximum");
    ck_assert_str_eq(op_info(producer(g, g->outputs.data[4].value)->op)->name, "exp");
    expect_type(g, g->outputs.data[5].value, "f32[B*T*2,16]");
    expect_type(g, g->outputs.data[6].value, "bf16[B,T,16]");
    graph_free(g);
    program_free(p);
}
END_TEST

static const char *config_json =
    "{\"hidden_size\": 64, \"q_lora_rank\": null, \"rms_norm_eps\": 1,\n"
    " \"unknown_key\": [1, 2], \"norm_topk_prob\": true, \"scoring_func\": \"softmax\",\n"
    " \"rope_parameters\": {\"rope_theta\": 50000.0, \"type\": \"yarn\", \"factor\": 8}}";

static const char *hyper_src =
    "hyper hidden_size = 16;\n"
    "hyper q_lora_rank = 8;\n"
    "hyper rms_norm_eps = 1e-6;\n"
    "hyper norm_topk_prob = false;\n"
    "hyper scoring_func = \"sigmoid\";\n"
    "hyper rope_theta = 10000.0;\n"
    "hyper rope_scaling.rope_type = \"none\";\n"
    "hyper rope_scaling.factor = 1.0;\n";

static void expect_hyper(Program *p, const char *name, const char *want) {
    char buf[64];
    ck_assert_ptr_nonnull(program_hyper_text(p, name, buf, sizeof buf));
    ck_assert_str_eq(buf, want);
}

START_TEST(test_bind_config) {
    Err e = {0};
    Json *j = json_parse(config_json, strlen(config_json), "config.json", &e);
    ck_assert_msg(j != NULL, "%s", e.msg);
    Program *p = parse_ok(hyper_src);
    expect_hyper(p, "hidden_size", "16");
    ck_assert_int_eq(program_bind_config(p, j, &e), 0);
    expect_hyper(p, "hidden_size", "64");
    expect_hyper(p, "q_lora_rank", "none");
    expect_hyper(p, "rms_norm_eps", "1");
    expect_hyper(p, "norm_topk_prob", "true");
    expect_hyper(p, "scoring_func", "softmax");
    expect_hyper(p, "rope_theta", "50000");
    expect_hyper(p, "rope_scaling.rope_type", "yarn");
    expect_hyper(p, "rope_scaling.factor", "8");
    char small[8];
    ck_assert_ptr_null(program_hyper_text(p, "unknown_key", small, sizeof small));
    json_free(j);
    program_free(p);
}
END_TEST

START_TEST(test_bind_config_default_rope_and_errors) {
    Err e = {0};
    const char *plain = "{\"hidden_size\": 32, \"rope_scaling\": null}";
    Json *j = json_parse(plain, strlen(plain), "config.json", &e);
    ck_assert_msg(j != NULL, "%s", e.msg);
    Program *p = parse_ok(hyper_src);
    ck_assert_int_eq(program_bind_config(p, j, &e), 0);
    expect_hyper(p, "rope_scaling.rope_type", "default");
    expect_hyper(p, "hidden_size", "32");
    json_free(j);
    const char *bad = "{\"hidden_size\": 32.5}";
    j = json_parse(bad, strlen(bad), "config.json", &e);
    ck_assert_int_eq(program_bind_config(p, j, &e), -1);
    ck_assert_str_eq(e.msg, "config.json key 'hidden_size': expected int (the type of its default), got float");
    json_free(j);
    const char *nested = "{\"scoring_func\": [1]}";
    j = json_parse(nested, strlen(nested), "config.json", &e);
    ck_assert_int_eq(program_bind_config(p, j, &e), -1);
    ck_assert_str_eq(e.msg, "config.json key 'scoring_func': expected string, got array");
    json_free(j);
    program_free(p);
}
END_TEST

START_TEST(test_bind_sets) {
    Err e = {0};
    Program *p = parse_ok(hyper_src);
    ck_assert_int_eq(program_bind_sets(p, "hidden_size=128,rms_norm_eps=2,scoring_func=\"a,b\",q_lora_rank=none", &e), 0);
    expect_hyper(p, "hidden_size", "128");
    expect_hyper(p, "rms_norm_eps", "2");
    expect_hyper(p, "scoring_func", "a,b");
    expect_hyper(p, "q_lora_rank", "none");
    ck_assert_int_eq(program_bind_sets(p, "norm_topk_prob=true,scoring_func=softmax", &e), 0);
    expect_hyper(p, "norm_topk_prob", "true");
    expect_hyper(p, "scoring_func", "softmax");
    ck_assert_int_eq(program_bind_sets(p, "no_such=1", &e), -1);
    ck_assert_str_eq(e.msg, "--set: unknown hyperparameter 'no_such'");
    ck_assert_int_eq(program_bind_sets(p, "hidden_size=abc", &e), -1);
    ck_assert_str_eq(e.msg, "--set 'hidden_size': expected int (the type of its default), got string");
    ck_assert_int_eq(program_bind_sets(p, "norm_topk_prob=1", &e), -1);
    ck_assert_str_eq(e.msg, "--set 'norm_topk_prob': expected bool (the type of its default), got int");
    ck_assert_int_eq(program_bind_sets(p, "hidden_size", &e), -1);
    ck_assert_str_eq(e.msg, "--set: expected key=value, got 'hidden_size'");
    program_free(p);
}
END_TEST

START_TEST(test_bound_values_reach_lowering) {
    Err e = {0};
    Program *p = parse_ok("hyper hidden_size = 16;\nhyper q_lora_rank = 8;\n"
                          "let w = weight(\"w\", [hidden_size]);\n"
                          "if q_lora_rank != none { weight(\"q\", [q_lora_rank]); }\n");
    ck_assert_int_eq(program_bind_sets(p, "hidden_size=24,q_lora_rank=none", &e), 0);
    Graph *g = lower_ok(p);
    expect_type(g, named(g, "w"), "f32[24]");
    ck_assert(!strmap_get(&g->names, "q", NULL));
    graph_free(g);
    program_free(p);
}
END_TEST

START_TEST(test_imports) {
    Err e = {0};
    Program *p = program_parse_file("tests/data/dsl/main.v3", &e);
    ck_assert_msg(p != NULL, "%s", e.msg);
    Graph *g = lower_ok(p);
    expect_type(g, g->outputs.data[0].value, "f32[B,T,16]");
    graph_free(g);
    program_free(p);
    ck_assert_ptr_null(program_parse_file("tests/data/dsl/missing_import.v3", &e));
    ck_assert_str_eq(e.msg, "tests/data/dsl/missing_import.v3:2:1: error: cannot import \"no_such_file.v3\": "
                            "no such file 'tests/data/dsl/no_such_file.v3'\n"
                            "  import \"no_such_file.v3\";\n  ^");
    ck_assert_ptr_null(program_parse_file("tests/data/dsl/dup_hyper.v3", &e));
    ck_assert_str_eq(e.msg, "tests/data/dsl/dup_hyper.v3:2:7: error: hyperparameter 'eps' is declared twice "
                            "(first at tests/data/dsl/lib/common.v3:2:7)\n"
                            "  hyper eps = 1e-5;\n        ^");
    ck_assert_ptr_null(program_parse_file("tests/data/dsl/nope.v3", &e));
    ck_assert_str_eq(e.msg, "cannot read 'tests/data/dsl/nope.v3': no such file");
}
END_TEST

START_TEST(test_syntax_errors) {
    /* bison lists what it expected when there are few candidates */
    expect_error("let x = 1\nlet y = 2;", "t.v3:2:1: error: syntax error, unexpected let\n  let y = 2;\n  ^");
    expect_error("fn f(a b) { }", "t.v3:1:8: error: syntax error, unexpected identifier, expecting ')'\n"
                                  "  fn f(a b) { }\n         ^");
    expect_error("let x = $;", "t.v3:1:9: error: unexpected character '$'\n  let x = $;\n          ^");
    expect_error("let s = \"abc;", "t.v3:1:9: error: unterminated string starting with '\"'\n"
                                    "  let s = \"abc;\n          ^");
    expect_error("let s = \"a{i +}\";", "t.v3:1:15: error: syntax error, unexpected end of file\n"
                                        "  let s = \"a{i +}\";\n                ^");
    expect_error("let s = \"a}\";", "t.v3:1:11: error: single '}' in string (write '}}' for a brace)\n"
                                    "  let s = \"a}\";\n            ^");
    expect_error("let n = 99999999999999999999;", "t.v3:1:9: error: number '99999999999999999999' is out of range\n"
                                                  "  let n = 99999999999999999999;\n          ^");
    expect_error("fn f() { hyper x = 1; }", "t.v3:1:10: error: syntax error, unexpected hyper\n"
                                            "  fn f() { hyper x = 1; }\n           ^");
}
END_TEST

START_TEST(test_evaluation_errors) {
    expect_error("let x = foo(1);", "t.v3:1:9: error: unknown function or op 'foo'\n  let x = foo(1);\n          ^");
    expect_error("let x = y + 1;", "t.v3:1:9: error: unknown name 'y'\n  let x = y + 1;\n          ^");
    expect_error("fn f(a) { return a; }\nf(1, 2);",
                 "t.v3:2:1: error: function 'f' takes 1 argument, got 2\n  f(1, 2);\n  ^");
    expect_error("let t = input(\"x\", \"f32\", [4]);\nlet z = \"s\" + t;",
                 "t.v3:2:13: error: cannot add string and tensor\n  let z = \"s\" + t;\n              ^");
    expect_error("error(\"bad {1 + 1}\");", "t.v3:1:1: error: bad 2\n  error(\"bad {1 + 1}\");\n  ^");
    expect_error("let x = 5 % 0;", "t.v3:1:11: error: integer division by zero\n  let x = 5 % 0;\n            ^");
    expect_error("fn f(n) { return f(n + 1); }\nf(0);",
                 "t.v3:1:18: error: calls nested too deep (more than 64): unbounded recursion?\n"
                 "  fn f(n) { return f(n + 1); }\n                   ^\n"
                 "t.v3:1:18: note: called from here\nt.v3:1:18: note: called from here\n"
                 "t.v3:1:18: note: called from here\nt.v3:1:18: note: called from here\n"
                 "t.v3:1:18: note: called from here\nt.v3:1:18: note: called from here\n"
                 "t.v3:1:18: note: called from here\nt.v3:1:18: note: called from here\n"
                 "t.v3:1:18: note: called from here (and 55 more callers)");
    expect_error("let x = input(\"x\", \"f32\", [4]);\noutput \"y\" = x;\noutput \"y\" = x;",
                 "t.v3:3:1: error: output 'y' is defined twice\n  output \"y\" = x;\n  ^");
    expect_error("weight(\"w\", [4, 0]);",
                 "t.v3:1:13: error: weight w has an invalid shape [4,0]\n  weight(\"w\", [4, 0]);\n              ^");
    expect_error("weight(\"w\", [1048576, 1048576, 2]);",
                 "t.v3:1:13: error: weight w has an invalid shape [1048576,1048576,2]\n"
                 "  weight(\"w\", [1048576, 1048576, 2]);\n              ^");
    expect_error("for i in 0..2000000 { }",
                 "t.v3:1:1: error: model too large: more than 1000000 loop iterations\n  for i in 0..2000000 { }\n  ^");
    expect_error("hyper h = 1;\nh = 2;", "t.v3:2:1: error: cannot assign to hyperparameter 'h'\n  h = 2;\n  ^");
    expect_error("if 1 { }", "t.v3:1:4: error: 'if' needs a bool, got int\n  if 1 { }\n     ^");
    expect_error("chunk foo { }", "t.v3:1:7: error: unknown chunk 'foo' (attention, dispatch, mlp or combine)\n"
                                  "  chunk foo { }\n        ^");
    expect_error("fn sum(x) { return x; }", "t.v3:1:4: error: function 'sum' has the name of a built-in\n"
                                            "  fn sum(x) { return x; }\n     ^");
    expect_error("hyper h = 1 + 1;", "t.v3:1:13: error: the default of a hyperparameter must be a literal "
                                     "(number, string, true, false or none)\n  hyper h = 1 + 1;\n              ^");
    expect_error("let a, b = 1;", "t.v3:1:1: error: cannot unpack a int into 2 names\n  let a, b = 1;\n  ^");
    expect_error("let x = [1][3];", "t.v3:1:13: error: index 3 is out of range for a list of 1\n"
                                    "  let x = [1][3];\n              ^");
    expect_error("return 1;", "t.v3:1:1: error: 'return' outside a function\n  return 1;\n  ^");
}
END_TEST

START_TEST(test_shape_error_at_call) {
    expect_error("fn proj(x) {\n  return linear(x, weight(\"w\", [32, 48]));\n}\n"
                 "let x = input(\"x\", \"f32\", [B, 64]);\nlet y = proj(x);",
                 "t.v3:2:10: error: linear: x f32[B,64] has 64 features but w f32[32,48] expects 48\n"
                 "    return linear(x, weight(\"w\", [32, 48]));\n           ^\n"
                 "t.v3:5:9: note: called from here");
    expect_error("let x = input(\"x\", \"f32\", [4]);\nlet y = x + input(\"z\", \"i32\", [4]);",
                 "t.v3:2:11: error: add: operand i32[4] must be f32, bf16 or f16\n"
                 "  let y = x + input(\"z\", \"i32\", [4]);\n            ^");
}
END_TEST

START_TEST(test_limits) {
    Err e = {0};
    Program *p = parse_ok("let x = input(\"x\", \"f32\", [4]);\nfor i in 0..10 { x = x + 1; }");
    program_set_limits(p, 1000, 12);
    ck_assert_ptr_null(program_lower(p, &e));
    ck_assert_str_eq(e.msg, "t.v3:2:24: error: model too large: more than 12 graph nodes\n"
                            "  for i in 0..10 { x = x + 1; }\n                         ^");
    program_set_limits(p, 1000, 100);
    Graph *g = lower_ok(p);
    ck_assert_int_eq((int)g->nodes.len, 21);
    graph_free(g);
    program_free(p);
}
END_TEST

/* Deep nesting is an error in the parser or the evaluator, never a stack overflow. */
START_TEST(test_nesting_limits) {
    Buf b = {0};
    buf_puts(&b, "let x = ");
    for (int i = 0; i < 1000; i++) buf_putc(&b, '(');
    Err e = {0};
    ck_assert_ptr_null(program_parse_string(b.data, "t.v3", &e));
    ck_assert_msg(strstr(e.msg, "t.v3:1:") && strstr(e.msg, ": error: nesting too deep\n"), "%s", e.msg);
    buf_free(&b);
    buf_puts(&b, "fn f(n) { return ");
    for (int i = 0; i < 290; i++) buf_putc(&b, '-');
    buf_puts(&b, "f(n + 1); }\nf(0);");
    Program *p = parse_ok(b.data);
    ck_assert_ptr_null(program_lower(p, &e));
    ck_assert_msg(strstr(e.msg, ": error: expressions nested too deep\n"), "%s", e.msg);
    program_free(p);
    buf_free(&b);
}
END_TEST

/* The fuzz seeds are meant to be valid programs that reach deep into lowering. */
START_TEST(test_fuzz_seeds_lower) {
    static const char *const seeds[] = {"fuzz/corpus/parser/block.v3", "fuzz/corpus/parser/scalars.v3",
                                        "fuzz/corpus/parser/moe.v3"};
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        Err e = {0};
        Program *p = program_parse_file(seeds[i], &e);
        ck_assert_msg(p != NULL, "%s", e.msg);
        Graph *g = program_lower(p, &e);
        ck_assert_msg(g != NULL, "%s", e.msg);
        graph_free(g);
        program_free(p);
    }
}
END_TEST

int main(void) {
    Suite *s = suite_create("frontend");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_scalar_expressions);
    tcase_add_test(tc, test_interpolation);
    tcase_add_test(tc, test_statements);
    tcase_add_test(tc, test_nested_scopes_and_hoisting);
    tcase_add_test(tc, test_tensor_ops);
    tcase_add_test(tc, test_bind_config);
    tcase_add_test(tc, test_bind_config_default_rope_and_errors);
    tcase_add_test(tc, test_bind_sets);
    tcase_add_test(tc, test_bound_values_reach_lowering);
    tcase_add_test(tc, test_imports);
    tcase_add_test(tc, test_syntax_errors);
    tcase_add_test(tc, test_evaluation_errors);
    tcase_add_test(tc, test_shape_error_at_call);
    tcase_add_test(tc, test_limits);
    tcase_add_test(tc, test_fuzz_seeds_lower);
    tcase_add_test(tc, test_nesting_limits);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
