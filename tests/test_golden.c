/* The whole model against reference data produced by other implementations:
 * ../shared/golden/tiny (HF transformers, float64) and tests/data/variants/NAME
 * (tools/ref/make_reference.py, the same generator on other configs). */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/safetensors.h"
#include "testutil.h"

static const char *golden_dir = "../shared/golden/tiny";

/* Tolerances from ../shared/golden/README.md: logits relative L2 < 1e-4,
 * losses within 1e-4 absolute, gradients relative L2 < 1e-3. */
static void compare_tensor(const char *name, const Tensor *got, const Tensor *want) {
    ck_assert_msg(got != NULL, "output lacks '%s'", name);
    ck_assert_int_eq(got->numel, want->numel);
    ck_assert_int_eq(got->rank, want->rank);
    for (int i = 0; i < want->rank; i++) ck_assert_int_eq(got->shape[i], want->shape[i]);
    if (str_ends_with(name, "loss")) {
        double d = fabs((double)tensor_f32(got)[0] - (double)tensor_f32(want)[0]);
        ck_assert_msg(d < 1e-4, "%s: got %.8f want %.8f", name, tensor_f32(got)[0], tensor_f32(want)[0]);
    } else {
        double e = rel_l2(got, want);
        double tol = starts_with(name, "grad.") ? 1e-3 : 1e-4;
        ck_assert_msg(e < tol, "%s: relative L2 error %.3g >= %.0e", name, e, tol);
    }
}

/* Which expected tensors the forward run must reproduce. */
static int checked_by_forward(const char *name) {
    return strcmp(name, "input_ids") != 0 && strcmp(name, "hidden_last") != 0 && !starts_with(name, "grad.");
}

static int run_and_compare(const char *dir) {
    char *tmp = make_temp_dir();
    char *expected = path_join(dir, "expected.safetensors"), *out = path_join(tmp, "out.safetensors");
    CmdResult r = run_v3c("run models/deepseek_v3.v3 --checkpoint %s --input %s --output %s", dir, expected, out);
    ck_assert_msg(r.status == 0, "v3c run on %s failed (%d): %s", dir, r.status, r.err);
    Err e = {0};
    StFile *want = st_open(expected, &e), *got = st_open(out, &e);
    ck_assert_msg(want && got, "%s", e.msg);
    int compared = 0;
    for (size_t i = 0; i < want->tensors.len; i++) {
        const StTensor *w = &want->tensors.data[i];
        if (!checked_by_forward(w->name)) continue;
        const StTensor *g = st_find(got, w->name);
        ck_assert_msg(g != NULL, "%s: output lacks '%s'", dir, w->name);
        Tensor *wt = st_to_tensor(w, &e), *gt = st_to_tensor(g, &e);
        compare_tensor(w->name, gt, wt);
        tensor_free(wt);
        tensor_free(gt);
        compared++;
    }
    st_close(want);
    st_close(got);
    cmd_free(&r);
    free(expected);
    free(out);
    free(tmp);
    return compared;
}

START_TEST(test_golden_tiny_forward) {
    /* logits, loss, mtp1.logits, mtp1.loss, mtp_loss, total_loss */
    ck_assert_int_eq(run_and_compare(golden_dir), 6);
}
END_TEST

/* Each tests/data/variants/NAME is a config the golden does not cover. */
START_TEST(test_variants_forward) { ck_assert_int_ge(for_each_variant(run_and_compare, 2), 10); }
END_TEST

int main(void) {
    Suite *s = suite_create("golden");
    TCase *tc = tcase_create("forward");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_golden_tiny_forward);
    tcase_add_test(tc, test_variants_forward);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
