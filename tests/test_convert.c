/* v3c convert and FP8 checkpoints: ../shared/golden/tiny to fp8 and back, with
 * the dequantized bits computed here independently of the quantize op. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../base/fp8.h"
#include "../base/numeric.h"
#include "../frontend/frontend.h"
#include "../runtime/fp8_checkpoint.h"
#include "testutil.h"

static const char *tiny = "../shared/golden/tiny";

static char *convert(const char *in, const char *to) {
    char *dir = make_temp_dir(), *out = path_join(dir, to);
    free(dir);
    CmdResult r = run_v3c("convert --checkpoint %s --output %s --to %s", in, out, to);
    ck_assert_msg(r.status == 0, "convert --to %s failed: %s", to, r.err);
    cmd_free(&r);
    return out;
}

static Tensor *load(const Checkpoint *c, const char *name) {
    Err e = {0};
    const StTensor *st = checkpoint_find(c, name);
    ck_assert_msg(st != NULL, "missing %s", name);
    Tensor *t = st_to_tensor(st, &e);
    ck_assert_msg(t != NULL, "%s", e.msg);
    return t;
}

/* The recipe written out by hand: per 128x128 block (ragged at the edges) scale =
 * max(amax, 1e-12)/448 in fp32, q = e4m3(x / scale), dequantized = q * scale. */
static float expected_dequant(const float *w, int64_t n, int64_t k, int64_t r, int64_t c) {
    int64_t r0 = r / 128 * 128, c0 = c / 128 * 128;
    float amax = 0;
    for (int64_t i = r0; i < n && i < r0 + 128; i++)
        for (int64_t j = c0; j < k && j < c0 + 128; j++) amax = fmaxf(amax, fabsf(w[i * k + j]));
    float scale = fmaxf(amax, 1e-12f) / 448.0f;
    return fp8_to_float(FP8_E4M3, fp8_from_float(FP8_E4M3, w[r * k + c] / scale)) * scale;
}

START_TEST(fp8_round_trip_equals_dequantized_bits) {
    char *fp8 = convert(tiny, "fp8"), *back = convert(fp8, "f32");
    Err e = {0};
    Checkpoint *orig = checkpoint_open(tiny, &e), *q = checkpoint_open(fp8, &e), *f = checkpoint_open(back, &e);
    ck_assert_msg(orig && q && f, "%s", e.msg);
    int quantized = 0;
    const StFile *file = orig->files.data[0];
    for (size_t i = 0; i < file->tensors.len; i++) {
        const StTensor *st = &file->tensors.data[i];
        if (st->dtype != ST_F32 && st->dtype != ST_BF16) continue; /* integer tensors are copied as they are */
        Tensor *w = load(orig, st->name), *got = load(f, st->name);
        int fp8_weight = fp8_quantizes_weight(st->name, st->rank);
        const StTensor *stored = checkpoint_find(q, st->name);
        ck_assert_int_eq(stored->dtype, (fp8_weight ? ST_F8_E4M3 : ST_F32));
        quantized += fp8_weight;
        for (int64_t j = 0; j < w->numel; j++) {
            float want = fp8_weight ? expected_dequant(tensor_f32(w), w->shape[0], w->shape[1], j / w->shape[1],
                                                       j % w->shape[1])
                                    : tensor_f32(w)[j];
            ck_assert_msg(f32_to_bits(tensor_f32(got)[j]) == f32_to_bits(want), "%s[%lld]: %.9g vs %.9g", st->name,
                          (long long)j, tensor_f32(got)[j], want);
        }
        tensor_free(w), tensor_free(got);
    }
    ck_assert_int_gt(quantized, 20);
    ck_assert_ptr_null(checkpoint_find(f, "model.layers.0.mlp.down_proj.weight_scale_inv"));
    ck_assert_ptr_nonnull(checkpoint_find(q, "model.layers.0.mlp.down_proj.weight_scale_inv"));
    ck_assert_int_eq(checkpoint_find(q, "lm_head.weight")->dtype, ST_F32);
    ck_assert_int_eq(checkpoint_find(q, "model.layers.1.mlp.gate.weight")->dtype, ST_F32);
    ck_assert(json_get(q->config, "quantization_config") != NULL);
    ck_assert(json_get(f->config, "quantization_config") == NULL);
    checkpoint_close(orig), checkpoint_close(q), checkpoint_close(f);
    free(fp8), free(back);
}
END_TEST

static Tensor *logits(const char *ckpt_dir) {
    Err e = {0};
    Checkpoint *c = checkpoint_open(ckpt_dir, &e);
    ck_assert_msg(c != NULL, "%s", e.msg);
    Program *p = program_parse_file("models/deepseek_v3.v3", &e);
    ck_assert_msg(p && program_bind_config(p, c->config, &e) == 0, "%s", e.msg);
    Graph *g = program_lower(p, &e);
    ck_assert_msg(g != NULL, "%s", e.msg);
    TensorSet feeds, results;
    tset_init(&feeds), tset_init(&results);
    ck_assert_msg(checkpoint_load_params_fp8_aware(c, g, &feeds, &e) == 0, "%s", e.msg);
    char *path = path_join(tiny, "expected.safetensors");
    StFile *f = st_open(path, &e);
    Tensor *ids = st_to_tensor(st_find(f, "input_ids"), &e);
    InterpOptions io = {.batch = ids->shape[0], .seq = ids->shape[1]};
    tset_put(&feeds, "input_ids", ids);
    ck_assert_msg(interp_run(g, &feeds, &io, &results, &e) == 0, "%s", e.msg);
    const Tensor *l = tset_get(&results, "logits");
    Tensor *copy = tensor_new(l->dtype, l->rank, l->shape);
    memcpy(copy->data, l->data, sizeof(float) * (size_t)l->numel);
    tset_free(&feeds), tset_free(&results);
    st_close(f), free(path), graph_free(g), program_free(p), checkpoint_close(c);
    return copy;
}

/* Loading the FP8 checkpoint dequantizes exactly what convert --to f32 writes,
 * so the two runs agree bit for bit (ragged blocks: tiny's dims are < 128). */
START_TEST(run_on_fp8_checkpoint_equals_dequantized_weights) {
    char *fp8 = convert(tiny, "fp8"), *back = convert(fp8, "f32");
    Tensor *a = logits(fp8), *b = logits(back);
    ck_assert_int_eq(a->numel, b->numel);
    ck_assert(memcmp(a->data, b->data, sizeof(float) * (size_t)a->numel) == 0);
    tensor_free(a), tensor_free(b), free(fp8), free(back);
}
END_TEST

START_TEST(bad_input_is_a_clear_error) {
    char *dir = make_temp_dir();
    CmdResult r = run_v3c("convert --checkpoint %s --output %s/x --to fp4", tiny, dir);
    assert_user_error(&r, "--to must be fp8, bf16 or f32");
    cmd_free(&r);
    r = run_v3c("convert --checkpoint %s --output %s --to f32", tiny, dir);
    assert_user_error(&r, "already exists");
    cmd_free(&r);
    r = run_v3c("convert --checkpoint %s/none --output %s/y --to f32", dir, dir);
    ck_assert_int_eq(r.status, 1);
    cmd_free(&r);
    free(dir);
}
END_TEST

START_TEST(bf16_narrows_every_float) {
    char *out = convert(tiny, "bf16");
    Err e = {0};
    Checkpoint *c = checkpoint_open(out, &e);
    ck_assert_msg(c != NULL, "%s", e.msg);
    ck_assert_int_eq(checkpoint_find(c, "model.embed_tokens.weight")->dtype, ST_BF16);
    ck_assert_int_eq(checkpoint_find(c, "model.layers.0.mlp.down_proj.weight")->dtype, ST_BF16);
    checkpoint_close(c);
    free(out);
}
END_TEST

int main(void) {
    Suite *s = suite_create("convert");
    TCase *tc = tcase_create("convert");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, fp8_round_trip_equals_dequantized_bits);
    tcase_add_test(tc, run_on_fp8_checkpoint_equals_dequantized_weights);
    tcase_add_test(tc, bad_input_is_a_clear_error);
    tcase_add_test(tc, bf16_narrows_every_float);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
