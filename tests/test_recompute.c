/* recompute: the rewrite on a hand-built graph (exact text), its invariants
 * (valid, idempotent, forward recompute values dead after their last forward
 * reader), bit-identical results on the interpreter, and on the golden tiny
 * model's training graph: the same gradients bit for bit and a lower peak. */
#include <stdlib.h>
#include <string.h>

#include "../frontend/frontend.h"
#include "../ir/interp.h"
#include "../ir/text.h"
#include "../ir/verify.h"
#include "../passes/autodiff.h"
#include "../passes/memplan.h"
#include "../passes/passes.h"
#include "../passes/recompute.h"
#include "../runtime/checkpoint.h"
#include "../runtime/safetensors.h"
#include "testutil.h"

static void recompute_ok(Graph *g, size_t want_cloned) {
    Err e = {0};
    size_t cloned = 99;
    ck_assert_msg(recompute_graph(g, &cloned, &e) == 0, "%s", e.msg);
    ck_assert_msg(ir_verify(g, &e) == 0, "%s", e.msg);
    ck_assert_uint_eq(cloned, want_cloned);
}

/* A forward chain with recompute nodes %1, %2 (reading x) and %4 (reading the
 * stored %3), and backward nodes reading %2, %1 and %4. */
static const char *small =
    "v3ir 1\n"
    "%0 = input {name=\"x\"} : f32[4]\n"
    "%1 = exp %0 : f32[4] @\"layers.0\" #attention !recompute\n"
    "%2 = neg %1 : f32[4] @\"layers.0\" #attention !recompute\n"
    "%3 = mul %2, %0 : f32[4]\n"
    "%4 = exp %3 : f32[4] !recompute\n"
    "%5 = mul %2, %3 : f32[4] !backward\n"
    "%6 = mul %5, %1 : f32[4] !backward\n"
    "%7 = mul %6, %4 : f32[4] !backward !wgrad\n"
    "output \"y\" = %4\n"
    "output \"g\" = %7\n";

/* %5 needs %2, whose clone needs %1's: both go right before %5, in order;
 * %6 reuses %1's clone; %7 needs %4, cloned from the stored %3 right before
 * it. Clones keep scope, chunk and !recompute and gain !backward (not !wgrad). */
static const char *small_after =
    "v3ir 1\n"
    "%0 = input {name=\"x\"} : f32[4]\n"
    "%1 = exp %0 : f32[4] @\"layers.0\" #attention !recompute\n"
    "%2 = neg %1 : f32[4] @\"layers.0\" #attention !recompute\n"
    "%3 = mul %2, %0 : f32[4]\n"
    "%4 = exp %3 : f32[4] !recompute\n"
    "%5 = exp %0 : f32[4] @\"layers.0\" #attention !recompute !backward\n"
    "%6 = neg %5 : f32[4] @\"layers.0\" #attention !recompute !backward\n"
    "%7 = mul %6, %3 : f32[4] !backward\n"
    "%8 = mul %7, %5 : f32[4] !backward\n"
    "%9 = exp %3 : f32[4] !recompute !backward\n"
    "%10 = mul %8, %9 : f32[4] !backward !wgrad\n"
    "output \"y\" = %4\n"
    "output \"g\" = %10\n";

START_TEST(test_clones_before_first_backward_use) {
    Graph *g = parse_ir_ok(small, "t");
    recompute_ok(g, 3);
    char *text = print_ir(g);
    ck_assert_str_eq(text, small_after);
    free(text);
    int64_t x;
    ck_assert(strmap_get(&g->names, "x", &x) && x == 0);
    graph_free(g);
}
END_TEST

START_TEST(test_idempotent_and_noop_without_backward) {
    Graph *g = parse_ir_ok(small, "t");
    recompute_ok(g, 3);
    recompute_ok(g, 0);
    char *text = print_ir(g);
    ck_assert_str_eq(text, small_after);
    free(text);
    graph_free(g);
    /* forward only: nothing to clone, nothing moves */
    const char *fwd = "v3ir 1\n"
                      "%0 = input {name=\"x\"} : f32[4]\n"
                      "%1 = exp %0 : f32[4] !recompute\n"
                      "output \"y\" = %1\n";
    g = parse_ir_ok(fwd, "t");
    recompute_ok(g, 0);
    text = print_ir(g);
    ck_assert_str_eq(text, fwd);
    free(text);
    graph_free(g);
}
END_TEST

/* The point of the pass: forward recompute values end at their last forward
 * reader. Before, %1 is last read by backward node 6 and %2 by 5; after, by
 * their forward readers 2 and 3. */
START_TEST(test_forward_values_die_early) {
    Graph *g = parse_ir_ok(small, "t");
    MemPlan before, after;
    Err e = {0};
    ck_assert_int_eq(memplan_build(g, 1, 1, &before, &e), 0);
    ck_assert_int_eq(before.last_use[1], 6);
    ck_assert_int_eq(before.last_use[2], 5);
    recompute_ok(g, 3);
    ck_assert_int_eq(memplan_build(g, 1, 1, &after, &e), 0);
    ck_assert_int_eq(after.last_use[1], 2);
    ck_assert_int_eq(after.last_use[2], 3);
    memplan_free(&before);
    memplan_free(&after);
    graph_free(g);
}
END_TEST

static TensorSet run_graph(const Graph *g, const TensorSet *feeds) {
    TensorSet out;
    tset_init(&out);
    Err e = {0};
    InterpOptions opt = {.batch = 1, .seq = 1, .threads = 1};
    ck_assert_msg(interp_run(g, feeds, &opt, &out, &e) == 0, "%s", e.msg);
    return out;
}

static void assert_same_bits(const TensorSet *a, const TensorSet *b, const char *name) {
    const Tensor *ta = tset_get(a, name), *tb = tset_get(b, name);
    ck_assert_msg(ta && tb, "output %s missing", name);
    ck_assert_int_eq(ta->numel, tb->numel);
    ck_assert_msg(memcmp(ta->data, tb->data, (size_t)ta->numel * dtype_host_size(ta->dtype)) == 0,
                  "%s differs with recompute", name);
}

START_TEST(test_same_bits_on_interpreter) {
    Graph *plain = parse_ir_ok(small, "t"), *rc = parse_ir_ok(small, "t");
    recompute_ok(rc, 3);
    TensorSet feeds;
    tset_init(&feeds);
    int64_t shape[] = {4};
    Tensor *x = tensor_new(DT_F32, 1, shape);
    float xs[] = {0.5f, -1.25f, 2.0f, 0.1f};
    memcpy(x->data, xs, sizeof xs);
    tset_put(&feeds, "x", x);
    TensorSet a = run_graph(plain, &feeds), b = run_graph(rc, &feeds);
    assert_same_bits(&a, &b, "y");
    assert_same_bits(&a, &b, "g");
    tset_free(&a);
    tset_free(&b);
    tset_free(&feeds);
    graph_free(plain);
    graph_free(rc);
}
END_TEST

static const char *golden_dir = "../shared/golden/tiny";

/* The golden tiny model's training graph: the default pipeline, then
 * autodiff of total_loss (covering the MTP module's recompute blocks too). */
static Graph *training_graph(const Checkpoint *ck, int with_recompute) {
    Err e = {0};
    Program *p = program_parse_file("models/deepseek_v3.v3", &e);
    ck_assert_msg(p != NULL, "%s", e.msg);
    ck_assert_msg(program_bind_config(p, ck->config, &e) == 0, "%s", e.msg);
    Graph *g = program_lower(p, &e);
    ck_assert_msg(g != NULL, "%s", e.msg);
    PipelineOptions po = {0};
    ck_assert_msg(run_pipeline(g, &po, &e) == 0, "%s", e.msg);
    ck_assert_msg(autodiff_graph(g, "total_loss", &e) == 0, "%s", e.msg);
    if (with_recompute) {
        size_t cloned = 0;
        ck_assert_msg(recompute_graph(g, &cloned, &e) == 0, "%s", e.msg);
        ck_assert_msg(cloned > 0, "the model has recompute blocks: something must be cloned");
    }
    ck_assert_msg(ir_verify(g, &e) == 0, "%s", e.msg);
    program_free(p);
    return g;
}

static Tensor *golden_input_ids(void) {
    Err e = {0};
    char *path = path_join(golden_dir, "expected.safetensors");
    StFile *f = st_open(path, &e);
    ck_assert_msg(f != NULL, "%s", e.msg);
    const StTensor *st = st_find(f, "input_ids");
    ck_assert(st != NULL);
    Tensor *ids = st_to_tensor(st, &e);
    ck_assert_msg(ids != NULL, "%s", e.msg);
    st_close(f);
    free(path);
    return ids;
}

static TensorSet run_training_graph(const Graph *g, const Checkpoint *ck, const Tensor *ids) {
    Err e = {0};
    TensorSet feeds, out;
    tset_init(&feeds);
    tset_init(&out);
    ck_assert_msg(checkpoint_load_params(ck, g, &feeds, &e) == 0, "%s", e.msg);
    Tensor *copy = tensor_new(ids->dtype, ids->rank, ids->shape);
    memcpy(copy->data, ids->data, (size_t)ids->numel * dtype_host_size(ids->dtype));
    tset_put(&feeds, "input_ids", copy);
    InterpOptions opt = {.batch = ids->shape[0], .seq = ids->shape[1]};
    ck_assert_msg(interp_run(g, &feeds, &opt, &out, &e) == 0, "%s", e.msg);
    tset_free(&feeds);
    return out;
}

/* Recomputing runs the same kernels on the same inputs, so every gradient
 * must match bit for bit: no tolerance. */
START_TEST(test_golden_tiny_grads_bit_identical) {
    Err e = {0};
    Checkpoint *ck = checkpoint_open(golden_dir, &e);
    ck_assert_msg(ck != NULL, "%s", e.msg);
    Graph *plain = training_graph(ck, 0), *rc = training_graph(ck, 1);
    Tensor *ids = golden_input_ids();
    TensorSet a = run_training_graph(plain, ck, ids), b = run_training_graph(rc, ck, ids);
    int grads = 0;
    for (size_t i = 0; i < plain->outputs.len; i++) {
        const char *name = plain->outputs.data[i].name;
        assert_same_bits(&a, &b, name);
        grads += strncmp(name, "grad.", 5) == 0;
    }
    ck_assert_uint_eq(plain->outputs.len, rc->outputs.len);
    /* every weight but the gate biases (no gradient) has one */
    ck_assert_int_ge(grads, 80);
    tensor_free(ids);
    tset_free(&a);
    tset_free(&b);
    graph_free(plain);
    graph_free(rc);
    checkpoint_close(ck);
}
END_TEST

/* The saving the pass exists for, planned at the golden shape and at a long sequence. */
START_TEST(test_golden_tiny_lower_peak) {
    Err e = {0};
    Checkpoint *ck = checkpoint_open(golden_dir, &e);
    ck_assert_msg(ck != NULL, "%s", e.msg);
    Graph *plain = training_graph(ck, 0), *rc = training_graph(ck, 1);
    int64_t shapes[][2] = {{2, 16}, {1, 4096}};
    for (int s = 0; s < 2; s++) {
        MemPlan a, b;
        ck_assert_msg(memplan_build(plain, shapes[s][0], shapes[s][1], &a, &e) == 0, "%s", e.msg);
        ck_assert_msg(memplan_build(rc, shapes[s][0], shapes[s][1], &b, &e) == 0, "%s", e.msg);
        ck_assert_msg(b.peak_activation_bytes < a.peak_activation_bytes, "B=%lld T=%lld: %lld with recompute, %lld without",
                      (long long)shapes[s][0], (long long)shapes[s][1], (long long)b.peak_activation_bytes,
                      (long long)a.peak_activation_bytes);
        memplan_free(&a);
        memplan_free(&b);
    }
    graph_free(plain);
    graph_free(rc);
    checkpoint_close(ck);
}
END_TEST

START_TEST(test_pass_in_pipeline) {
    char *dir = make_temp_dir(), *path = path_join(dir, "small.v3ir");
    write_text(path, small);
    CmdResult r = run_v3c("dump %s --passes verify,recompute,verify", path);
    ck_assert_int_eq(r.status, 0);
    ck_assert_str_eq(r.out, small_after);
    cmd_free(&r);
    free(path);
    free(dir);
}
END_TEST

int main(void) {
    Suite *s = suite_create("recompute");
    TCase *tc = tcase_create("recompute");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_clones_before_first_backward_use);
    tcase_add_test(tc, test_idempotent_and_noop_without_backward);
    tcase_add_test(tc, test_forward_values_die_early);
    tcase_add_test(tc, test_same_bits_on_interpreter);
    tcase_add_test(tc, test_pass_in_pipeline);
    tcase_add_test(tc, test_golden_tiny_grads_bit_identical);
    tcase_add_test(tc, test_golden_tiny_lower_peak);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
