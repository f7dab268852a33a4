#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../base/numeric.h"
#include "../runtime/checkpoint.h"
#include "testutil.h"

/* Writes DIR/FILE holding f32 tensors named in `names` (NULL-terminated), each [2,3] with value k + i/10. */
static void write_shard(const char *dir, const char *file, const char *const *names) {
    TensorSet set;
    tset_init(&set);
    int64_t shape[2] = {2, 3};
    for (int k = 0; names[k]; k++) {
        Tensor *t = tensor_new(DT_F32, 2, shape);
        for (int64_t i = 0; i < t->numel; i++) tensor_f32(t)[i] = (float)k + (float)i / 10;
        tset_put(&set, names[k], t);
    }
    char *path = path_join(dir, file);
    Err e = {0};
    ck_assert_msg(st_write(path, &set, &e) == 0, "%s", e.msg);
    free(path);
    tset_free(&set);
}

static void write_file_in(const char *dir, const char *file, const char *text) {
    char *path = path_join(dir, file);
    write_text(path, text);
    free(path);
}

static void expect_open_error(const char *dir, const char *needle) {
    Err e = {0};
    Checkpoint *c = checkpoint_open(dir, &e);
    ck_assert_msg(c == NULL, "checkpoint in %s should not open", dir);
    ck_assert_msg(strstr(e.msg, needle) != NULL, "want '%s' in '%s'", needle, e.msg);
}

static const char *const SHARD1[] = {"a", "b", NULL};
static const char *const SHARD2[] = {"c", NULL};

static char *sharded_dir(const char *index) {
    char *dir = make_temp_dir();
    write_shard(dir, "model-00001-of-00002.safetensors", SHARD1);
    write_shard(dir, "model-00002-of-00002.safetensors", SHARD2);
    write_file_in(dir, "model.safetensors.index.json", index);
    return dir;
}

static const char GOOD_INDEX[] = "{\"metadata\":{\"total_size\":72},\"weight_map\":{"
                                 "\"a\":\"model-00001-of-00002.safetensors\","
                                 "\"c\":\"model-00002-of-00002.safetensors\","
                                 "\"b\":\"model-00001-of-00002.safetensors\"}}";

START_TEST(test_sharded_with_index) {
    char *dir = sharded_dir(GOOD_INDEX);
    write_file_in(dir, "config.json", "{\"hidden_size\": 6}");
    Err e = {0};
    Checkpoint *c = checkpoint_open(dir, &e);
    ck_assert_msg(c != NULL, "%s", e.msg);
    ck_assert_uint_eq(c->files.len, 2); /* each shard opened once */
    ck_assert_int_eq(json_get(c->config, "hidden_size")->integer, 6);
    const StTensor *t = checkpoint_find(c, "c");
    ck_assert(t && t->rank == 2 && t->shape[1] == 3);
    Tensor *v = st_to_tensor(t, &e);
    ck_assert_float_eq(tensor_f32(v)[5], 0.5f);
    tensor_free(v);
    ck_assert_ptr_nonnull(checkpoint_find(c, "a"));
    ck_assert_ptr_null(checkpoint_find(c, "zz"));
    checkpoint_close(c);
    free(dir);
}
END_TEST

START_TEST(test_index_errors) {
    char *dir = sharded_dir("{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\",\"x\":\"gone.safetensors\"}}");
    expect_open_error(dir, "model.safetensors.index.json names shard 'gone.safetensors': cannot open");
    free(dir);
    dir = sharded_dir("{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\",\"c\":\"model-00001-of-00002.safetensors\"}}");
    expect_open_error(dir, "tensor 'c' is mapped to shard 'model-00001-of-00002.safetensors', which does not contain it");
    free(dir);
    dir = sharded_dir("{\"metadata\":{}}");
    expect_open_error(dir, "'weight_map' is missing or not an object");
    free(dir);
    dir = sharded_dir("{\"weight_map\":{\"a\":3}}");
    expect_open_error(dir, "weight_map entry 'a' is not a file name");
    free(dir);
    dir = sharded_dir("{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\",}}");
    expect_open_error(dir, "model.safetensors.index.json:1:");
    free(dir);
}
END_TEST

START_TEST(test_directory_without_index) {
    char *dir = make_temp_dir();
    expect_open_error(dir, "has no *.safetensors files");
    write_shard(dir, "b.safetensors", SHARD2);
    write_shard(dir, "a.safetensors", SHARD1);
    Err e = {0};
    Checkpoint *c = checkpoint_open(dir, &e);
    ck_assert_msg(c != NULL, "%s", e.msg);
    ck_assert_ptr_null(c->config);
    ck_assert_uint_eq(c->files.len, 2);
    ck_assert(strstr(c->files.data[0]->path, "a.safetensors") != NULL); /* opened in name order */
    ck_assert_ptr_nonnull(checkpoint_find(c, "b"));
    ck_assert_ptr_nonnull(checkpoint_find(c, "c"));
    checkpoint_close(c);
    write_shard(dir, "c.safetensors", SHARD2);
    expect_open_error(dir, "tensor 'c' is in both 'b.safetensors' and 'c.safetensors'");
    free(dir);
}
END_TEST

START_TEST(test_config_and_dir_errors) {
    char *dir = make_temp_dir();
    write_shard(dir, "model.safetensors", SHARD1);
    write_file_in(dir, "config.json", "{\"hidden_size\": 64,\n \"x\": }");
    expect_open_error(dir, "config.json:2:7: malformed JSON");
    write_file_in(dir, "config.json", "[1]");
    expect_open_error(dir, "config.json is not a JSON object (found array)");
    write_file_in(dir, "model.safetensors", "short");
    write_file_in(dir, "config.json", "{}");
    expect_open_error(dir, "model.safetensors: file is 5 bytes");
    expect_open_error("/nonexistent/ckpt", "cannot open checkpoint directory '/nonexistent/ckpt'");
    free(dir);
}
END_TEST

START_TEST(test_golden_tiny) {
    Err e = {0};
    Checkpoint *c = checkpoint_open("../shared/golden/tiny", &e);
    ck_assert_msg(c != NULL, "%s", e.msg);
    ck_assert_int_eq(json_get(c->config, "hidden_size")->integer, 64);
    ck_assert_int_eq(json_get(c->config, "vocab_size")->integer, 256);
    const StTensor *t = checkpoint_find(c, "model.embed_tokens.weight");
    ck_assert_ptr_nonnull(t);
    ck_assert(t->rank == 2 && t->shape[0] == 256 && t->shape[1] == 64);
    ck_assert_str_eq(st_dtype_name(t->dtype), "F32");
    Tensor *v = st_to_tensor(t, &e);
    int nonzero = 0;
    for (int64_t i = 0; i < v->numel; i++) {
        ck_assert(isfinite(tensor_f32(v)[i]));
        nonzero += tensor_f32(v)[i] != 0.0f;
    }
    ck_assert_int_gt(nonzero, 0);
    tensor_free(v);
    checkpoint_close(c);
}
END_TEST

static Type f32_type(int rank, const int64_t *dims) {
    Type t = {.dtype = DT_F32, .rank = rank};
    for (int i = 0; i < rank; i++) t.dims[i] = dim_const(dims[i]);
    return t;
}

static Graph *graph_with_params(const char *const *names, const int64_t (*shapes)[2], int n) {
    Graph *g = graph_new();
    Err e = {0};
    for (int i = 0; i < n; i++) ck_assert_msg(ir_param(g, names[i], f32_type(2, shapes[i]), &e) >= 0, "%s", e.msg);
    return g;
}

START_TEST(test_load_params) {
    char *dir = sharded_dir(GOOD_INDEX);
    Err e = {0};
    Checkpoint *c = checkpoint_open(dir, &e);
    ck_assert_msg(c != NULL, "%s", e.msg);
    const char *names[] = {"a", "c"};
    const int64_t shapes[][2] = {{2, 3}, {2, 3}};
    Graph *g = graph_with_params(names, shapes, 2);
    TensorSet out;
    tset_init(&out);
    ck_assert_msg(checkpoint_load_params(c, g, &out, &e) == 0, "%s", e.msg);
    Tensor *a = tset_get(&out, "a");
    ck_assert(a && a->dtype == DT_F32 && a->numel == 6);
    ck_assert_float_eq(tensor_f32(a)[4], 0.4f);
    ck_assert_ptr_nonnull(tset_get(&out, "c"));
    ck_assert_ptr_null(tset_get(&out, "b")); /* unused by the graph: not loaded, not an error */
    tset_free(&out);
    graph_free(g);
    checkpoint_close(c);
    free(dir);
}
END_TEST

START_TEST(test_load_params_bf16_rounds) {
    char *dir = sharded_dir(GOOD_INDEX);
    Err e = {0};
    Checkpoint *c = checkpoint_open(dir, &e);
    Graph *g = graph_new();
    Type t = {.dtype = DT_BF16, .rank = 2, .dims = {dim_const(2), dim_const(3)}};
    ck_assert_msg(ir_param(g, "b", t, &e) >= 0, "%s", e.msg);
    TensorSet out;
    tset_init(&out);
    ck_assert_msg(checkpoint_load_params(c, g, &out, &e) == 0, "%s", e.msg);
    Tensor *b = tset_get(&out, "b");
    ck_assert_int_eq(b->dtype, DT_BF16);
    ck_assert_float_eq(tensor_f32(b)[1], round_to_bf16(1.1f));
    ck_assert(tensor_f32(b)[1] != 1.1f);
    tset_free(&out);
    graph_free(g);
    checkpoint_close(c);
    free(dir);
}
END_TEST

static void expect_load_error(const Checkpoint *c, Graph *g, const char *needle) {
    TensorSet out;
    tset_init(&out);
    Err e = {0};
    ck_assert_int_eq(checkpoint_load_params(c, g, &out, &e), -1);
    ck_assert_msg(strstr(e.msg, needle) != NULL, "want '%s' in '%s'", needle, e.msg);
    ck_assert_uint_eq(out.tensors.len, 0); /* nothing is loaded when anything is wrong */
    tset_free(&out);
    graph_free(g);
}

START_TEST(test_load_params_errors) {
    char *dir = sharded_dir(GOOD_INDEX);
    Err e = {0};
    Checkpoint *c = checkpoint_open(dir, &e);
    ck_assert_msg(c != NULL, "%s", e.msg);
    const char *one_missing[] = {"a", "nope"};
    const int64_t ok_shapes[][2] = {{2, 3}, {2, 3}};
    expect_load_error(c, graph_with_params(one_missing, ok_shapes, 2), "missing weight 'nope'");
    const char *fine[] = {"a", "c"};
    const int64_t wrong[][2] = {{2, 3}, {3, 2}};
    Graph *g = graph_with_params(fine, wrong, 2);
    TensorSet out;
    tset_init(&out);
    ck_assert_int_eq(checkpoint_load_params(c, g, &out, &e), -1);
    ck_assert_str_eq(e.msg, "weight 'c' has shape [2,3] in the checkpoint but the model expects [3,2]");
    tset_free(&out);
    graph_free(g);
    const char *three[] = {"x", "a", "y"};
    const int64_t shapes3[][2] = {{1, 1}, {9, 9}, {1, 1}};
    expect_load_error(c, graph_with_params(three, shapes3, 3), "missing weight 'x' (and 2 more weight problems)");
    g = graph_new();
    Type sym = {.dtype = DT_F32, .rank = 2, .dims = {dim_sym_t(), dim_const(3)}};
    ck_assert_int_ge(ir_param(g, "a", sym, &e), 0);
    expect_load_error(c, g, "weight 'a' has a symbolic dimension 0");
    g = graph_new();
    Type ints = {.dtype = DT_I32, .rank = 2, .dims = {dim_const(2), dim_const(3)}};
    ck_assert_int_ge(ir_param(g, "a", ints, &e), 0);
    expect_load_error(c, g, "weight 'a' has type i32 in the model");
    checkpoint_close(c);
    free(dir);
}
END_TEST

START_TEST(test_load_params_unsupported_dtype) {
    char *dir = make_temp_dir();
    TensorSet set;
    tset_init(&set);
    int64_t shape[1] = {4};
    tset_put(&set, "q", tensor_new(DT_E4M3, 1, shape));
    char *path = path_join(dir, "model.safetensors");
    Err e = {0};
    ck_assert_int_eq(st_write(path, &set, &e), 0);
    tset_free(&set);
    Checkpoint *c = checkpoint_open(dir, &e);
    ck_assert_msg(c != NULL, "%s", e.msg);
    Graph *g = graph_new();
    Type t = {.dtype = DT_F32, .rank = 1, .dims = {dim_const(4)}};
    ck_assert_int_ge(ir_param(g, "q", t, &e), 0);
    expect_load_error(c, g, "weight 'q' has dtype F8_E4M3 in the checkpoint");
    checkpoint_close(c);
    free(path);
    free(dir);
}
END_TEST

int main(void) {
    Suite *s = suite_create("checkpoint");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_sharded_with_index);
    tcase_add_test(tc, test_index_errors);
    tcase_add_test(tc, test_directory_without_index);
    tcase_add_test(tc, test_config_and_dir_errors);
    tcase_add_test(tc, test_golden_tiny);
    tcase_add_test(tc, test_load_params);
    tcase_add_test(tc, test_load_params_bf16_rounds);
    tcase_add_test(tc, test_load_params_errors);
    tcase_add_test(tc, test_load_params_unsupported_dtype);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
