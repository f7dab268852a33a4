/* autodiff_graph: gradients of the whole model against reference gradients
 * (../shared/golden/tiny from HF transformers in float64, and the variants in
 * tests/data/variants), plus the structure autodiff promises: flags, scopes,
 * which params get gradients, errors. */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../frontend/frontend.h"
#include "../ir/interp.h"
#include "../ir/verify.h"
#include "../passes/autodiff.h"
#include "../passes/passes.h"
#include "../runtime/checkpoint.h"
#include "testutil.h"

static const char *golden_dir = "../shared/golden/tiny";

/* The model lowered for a checkpoint's config, differentiated for `target`. */
static Graph *build_graph(const Checkpoint *ck, const char *target) {
    Err e = {0};
    Program *p = program_parse_file("models/deepseek_v3.v3", &e);
    ck_assert_msg(p != NULL, "%s", e.msg);
    ck_assert_msg(program_bind_config(p, ck->config, &e) == 0, "%s", e.msg);
    Graph *g = program_lower(p, &e);
    ck_assert_msg(g != NULL, "%s", e.msg);
    program_free(p);
    ck_assert_msg(autodiff_graph(g, target, &e) == 0, "%s", e.msg);
    ck_assert_msg(ir_verify(g, &e) == 0, "%s", e.msg);
    return g;
}

/* Runs the differentiated model on the reference input and compares every
 * grad.* the reference holds. Tolerance (../shared/golden/README.md): an fp32
 * implementation reaches relative L2 < 1e-3 per gradient tensor. Returns how many
 * gradients were compared. */
static int compare_grads(const char *dir) {
    Err e = {0};
    Checkpoint *ck = checkpoint_open(dir, &e);
    ck_assert_msg(ck != NULL, "%s", e.msg);
    Graph *g = build_graph(ck, "loss");
    char *path = path_join(dir, "expected.safetensors");
    StFile *want = st_open(path, &e);
    ck_assert_msg(want != NULL, "%s", e.msg);
    TensorSet feeds, results;
    tset_init(&feeds);
    tset_init(&results);
    ck_assert_msg(checkpoint_load_params(ck, g, &feeds, &e) == 0, "%s", e.msg);
    Tensor *ids = st_to_tensor(st_find(want, "input_ids"), &e);
    ck_assert_msg(ids != NULL, "%s", e.msg);
    InterpOptions io = {.batch = ids->shape[0], .seq = ids->shape[1]};
    tset_put(&feeds, "input_ids", ids);
    ck_assert_msg(interp_run(g, &feeds, &io, &results, &e) == 0, "%s: %s", dir, e.msg);
    int compared = 0;
    for (size_t i = 0; i < want->tensors.len; i++) {
        const char *name = want->tensors.data[i].name;
        if (!starts_with(name, "grad.")) continue;
        Tensor *w = st_to_tensor(&want->tensors.data[i], &e), *got = tset_get(&results, name);
        ck_assert_msg(got != NULL, "%s: no %s", dir, name);
        ck_assert_int_eq(got->numel, w->numel);
        double err = rel_l2(got, w);
        ck_assert_msg(err < 1e-3, "%s: %s relative L2 error %.3g", dir, name, err);
        tensor_free(w);
        compared++;
    }
    /* No gradient beyond the reference's: the gate bias in particular only
     * steers topk's indices, so none reaches it. */
    int produced = 0;
    for (size_t i = 0; i < g->outputs.len; i++) {
        const char *name = g->outputs.data[i].name;
        ck_assert_msg(strstr(name, "e_score_correction_bias") == NULL, "%s: %s", dir, name);
        produced += starts_with(name, "grad.");
    }
    ck_assert_int_eq(produced, compared);
    tset_free(&feeds);
    tset_free(&results);
    st_close(want);
    free(path);
    graph_free(g);
    checkpoint_close(ck);
    return compared;
}

START_TEST(test_golden_tiny_grads) {
    /* Every main-model weight but the 2 gate biases: 89 tensors. */
    ck_assert_int_eq(compare_grads(golden_dir), 89);
}
END_TEST

START_TEST(test_variant_grads) { ck_assert_int_ge(for_each_variant(compare_grads, 10), 10); }
END_TEST

/* Nodes past the forward graph are autodiff's: all flagged backward, the weight
 * gradient ops W, the input gradient ops not, each in its forward node's scope. */
START_TEST(test_flags_and_scopes) {
    Err e = {0};
    Checkpoint *ck = checkpoint_open(golden_dir, &e);
    ck_assert_msg(ck != NULL, "%s", e.msg);
    Graph *g = build_graph(ck, "loss");
    int wgrads = 0, dx_linears = 0, sdpa_grads = 0;
    size_t first_backward = g->nodes.len;
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        if (n->flags & NODE_BACKWARD && i < first_backward) first_backward = i;
        if (i > first_backward) ck_assert_msg(n->flags & NODE_BACKWARD, "node %zu (%s) is not backward", i, op_info(n->op)->name);
        int wgrad_op = n->op == OP_LINEAR_WGRAD || n->op == OP_GROUPED_LINEAR_WGRAD || n->op == OP_EMBEDDING_GRAD;
        if (wgrad_op) ck_assert_msg(n->flags & NODE_WGRAD, "%s lacks !wgrad", op_info(n->op)->name);
        wgrads += wgrad_op;
        if (n->op == OP_LINEAR && (n->flags & NODE_BACKWARD)) {
            ck_assert_msg(!(n->flags & NODE_WGRAD), "an input-gradient linear is marked !wgrad");
            dx_linears++;
        }
        if (n->op == OP_SDPA_GRAD) {
            ck_assert_msg(starts_with(n->scope, "layers."), "sdpa_grad in scope '%s'", n->scope);
            ck_assert_int_eq(n->chunk, CHUNK_ATTENTION);
            sdpa_grads++;
        }
    }
    ck_assert_int_gt(wgrads, 20);
    ck_assert_int_gt(dx_linears, 10);
    ck_assert_int_eq(sdpa_grads, 3); /* the main model's three layers; MTP does not reach `loss` */
    ck_assert((ir_find_output(g, "grad.model.embed_tokens.weight") >= 0));
    ck_assert(!(ir_find_output(g, "grad.model.layers.3.eh_proj.weight") >= 0));
    graph_free(g);
    /* total_loss reaches the MTP module too. */
    g = build_graph(ck, "total_loss");
    ck_assert((ir_find_output(g, "grad.model.layers.3.eh_proj.weight") >= 0));
    ck_assert(!(ir_find_output(g, "grad.model.layers.1.mlp.gate.e_score_correction_bias") >= 0));
    graph_free(g);
    checkpoint_close(ck);
}
END_TEST

/* The registry pass differentiates total_loss when present, else loss. */
START_TEST(test_pass_target_choice) {
    Err e = {0};
    Graph *g = graph_new();
    Type scalar = {.dtype = DT_F32, .rank = 0}, vec = {.dtype = DT_F32, .rank = 1, .dims = {dim_const(3)}};
    ValueId w = ir_param(g, "w", vec, &e), sq = -1, loss = -1;
    ValueId in[2] = {w, w};
    ck_assert_int_ge(ir_emit(g, OP_MUL, in, 2, NULL, 0, &sq, &e), 0);
    ck_assert_int_ge(ir_emit(g, OP_MEAN_ALL, &sq, 1, NULL, 0, &loss, &e), 0);
    ck_assert_int_eq(ir_add_output(g, "loss", loss, &e), 0);
    PipelineOptions po = {.passes = "autodiff,verify"};
    ck_assert_msg(run_pipeline(g, &po, &e) == 0, "%s", e.msg);
    ck_assert((ir_find_output(g, "grad.w") >= 0));
    /* d mean(w*w) / dw = 2w/3: w*w is read twice by nothing, but w twice by mul. */
    TensorSet feeds, out;
    tset_init(&feeds);
    tset_init(&out);
    int64_t three = 3;
    Tensor *wt = tensor_new(DT_F32, 1, &three);
    for (int i = 0; i < 3; i++) tensor_f32(wt)[i] = (float)(i + 1);
    tset_put(&feeds, "w", wt);
    InterpOptions io = {.batch = 1, .seq = 1};
    ck_assert_msg(interp_run(g, &feeds, &io, &out, &e) == 0, "%s", e.msg);
    for (int i = 0; i < 3; i++) ck_assert_float_eq_tol(tensor_f32(tset_get(&out, "grad.w"))[i], 2.0 * (i + 1) / 3, 1e-6);
    tset_free(&feeds);
    tset_free(&out);
    (void)scalar;
    graph_free(g);
}
END_TEST

START_TEST(test_bad_targets) {
    Err e = {0};
    Checkpoint *ck = checkpoint_open(golden_dir, &e);
    ck_assert_msg(ck != NULL, "%s", e.msg);
    Program *p = program_parse_file("models/deepseek_v3.v3", &e);
    ck_assert_msg(p && program_bind_config(p, ck->config, &e) == 0, "%s", e.msg);
    Graph *g = program_lower(p, &e);
    ck_assert_msg(g != NULL, "%s", e.msg);
    ck_assert_int_eq(autodiff_graph(g, "no_such_loss", &e), -1);
    ck_assert_msg(strstr(e.msg, "no output named 'no_such_loss'"), "%s", e.msg);
    ck_assert_int_eq(autodiff_graph(g, "logits", &e), -1);
    ck_assert_msg(strstr(e.msg, "must be f32[] or f32[1]"), "%s", e.msg);
    Graph *empty = graph_new();
    PipelineOptions po = {.passes = "autodiff"};
    ck_assert_int_eq(run_pipeline(empty, &po, &e), -1);
    ck_assert_msg(strstr(e.msg, "no output named 'loss'"), "%s", e.msg);
    graph_free(empty);
    graph_free(g);
    program_free(p);
    checkpoint_close(ck);
}
END_TEST

int main(void) {
    Suite *s = suite_create("autodiff");
    TCase *golden = tcase_create("golden");
    tcase_set_timeout(golden, 600);
    tcase_add_test(golden, test_golden_tiny_grads);
    tcase_add_test(golden, test_variant_grads);
    suite_add_tcase(s, golden);
    TCase *structure = tcase_create("structure");
    tcase_set_timeout(structure, 120);
    tcase_add_test(structure, test_flags_and_scopes);
    tcase_add_test(structure, test_pass_target_choice);
    tcase_add_test(structure, test_bad_targets);
    suite_add_tcase(s, structure);
    return run_suite(s);
}
