/* tools/device/compare.py, the checks tools/device/check.sh makes on a GPU machine,
 * run here on the cpu backend's output: it passes what meets the golden README's
 * tolerances and fails what does not. Skips, saying so, without python3. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static int have_python(void) {
    if (system("command -v python3 >/dev/null 2>&1") == 0) return 1;
    printf("test_device_kit: skipped: no python3\n");
    return 0;
}

/* `v3c run --grads` on the golden tiny model into DIR/out.safetensors, with extra flags. */
static char *golden_run(const char *dir, const char *flags) {
    char *out = path_join(dir, "out.safetensors");
    CmdResult r = run_v3c("run models/deepseek_v3.v3 --checkpoint ../shared/golden/tiny --input "
                          "../shared/golden/tiny/expected.safetensors --output %s --backend cpu --grads %s",
                          out, flags);
    ck_assert_msg(r.status == 0, "%s", r.err);
    cmd_free(&r);
    return out;
}

START_TEST(test_golden_comparison) {
    if (!have_python()) return;
    char *dir = make_temp_dir(), *out = golden_run(dir, "");
    CmdResult r = run_program("python3", "tools/device/compare.py golden ../shared/golden/tiny/expected.safetensors %s",
                              out);
    ck_assert_msg(r.status == 0 && strstr(r.out, "ok   golden: 95 tensors compared (89 gradients"), "%s%s", r.out,
                  r.err);
    cmd_free(&r);
    free(out);
    /* FP8 moves every output by far more than fp32's tolerances. */
    out = golden_run(dir, "--fp8");
    r = run_program("python3", "tools/device/compare.py golden ../shared/golden/tiny/expected.safetensors %s", out);
    ck_assert_msg(r.status == 1 && strstr(r.out, "FAIL golden: 95 tensors compared"), "%s%s", r.out, r.err);
    cmd_free(&r);
    free(out), free(dir);
}
END_TEST

/* A log against itself passes; the same log with every loss 2% higher fails. */
START_TEST(test_curve_comparison) {
    if (!have_python()) return;
    char *dir = make_temp_dir(), *a = path_join(dir, "a.jsonl"), *b = path_join(dir, "b.jsonl");
    Buf ta = {0}, tb = {0};
    for (int step = 1; step <= 80; step++) {
        double loss = 5.5 - step / 40.0;
        buf_printf(&ta, "{\"step\":%d,\"loss\":%.6f}\n", step, loss);
        buf_printf(&tb, "{\"step\":%d,\"loss\":%.6f}\n", step, loss * (step > 40 ? 1.02 : 1.0));
    }
    write_text(a, ta.data), write_text(b, tb.data);
    CmdResult r = run_program("python3", "tools/device/compare.py curve %s %s", a, a);
    ck_assert_msg(r.status == 0 && strstr(r.out, "ok   curve: largest window difference 0.00%"), "%s%s", r.out, r.err);
    cmd_free(&r);
    r = run_program("python3", "tools/device/compare.py curve %s %s", a, b);
    ck_assert_msg(r.status == 1 && strstr(r.out, "| 41-80 |") && strstr(r.out, "+2.00%") &&
                      strstr(r.out, "FAIL curve: largest window difference 2.00%"),
                  "%s%s", r.out, r.err);
    cmd_free(&r);
    r = run_program("python3", "tools/device/compare.py curve %s", a);
    ck_assert_int_eq(r.status, 1);
    cmd_free(&r);
    buf_free(&ta), buf_free(&tb);
    free(a), free(b), free(dir);
}
END_TEST

/* A run that wrote no log, or a garbled one, fails with a line naming the file, not a traceback. */
START_TEST(test_curve_unreadable_log) {
    if (!have_python()) return;
    char *dir = make_temp_dir(), *a = path_join(dir, "a.jsonl"), *bad = path_join(dir, "bad.jsonl"),
         *missing = path_join(dir, "missing.jsonl");
    write_text(a, "{\"step\":1,\"loss\":5.0}\n");
    write_text(bad, "{\"step\":1,\"loss\":5.0}\nv3c: error: out of memory\n");
    const char *runs[] = {missing, bad};
    for (int i = 0; i < 2; i++) {
        CmdResult r = run_program("python3", "tools/device/compare.py curve %s %s", a, runs[i]);
        ck_assert_msg(r.status == 1 && strstr(r.out, "FAIL curve: cannot read the losses of ") &&
                          strstr(r.out, runs[i]) && !strstr(r.err, "Traceback"),
                      "%s%s", r.out, r.err);
        cmd_free(&r);
    }
    free(a), free(bad), free(missing), free(dir);
}
END_TEST

int main(void) {
    Suite *s = suite_create("device_kit");
    TCase *tc = tcase_create("compare");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_golden_comparison);
    tcase_add_test(tc, test_curve_comparison);
    tcase_add_test(tc, test_curve_unreadable_log);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
