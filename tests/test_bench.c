/* The benchmark binaries (bench/): their command lines refuse bad input as v3c
 * does, and cpu_vs_interp prints its table row. Timings are never asserted. */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static const char *const cpu_bench = V3C_BENCH_DIR "/cpu_vs_interp";
static const char *const gpu_bench = V3C_BENCH_DIR "/gpu_step";

static const struct {
    const char *args, *needle;
} bad_args[] = {
    {"models/tiny.v3 --attention bogus", "--attention must be gemm or exact, not 'bogus'"},
    {"models/tiny.v3 --precision f16", "--precision must be f32 or bf16, not 'f16'"},
    {"models/tiny.v3 --batch 0", "--batch must be a whole number from 1 to 65536, not '0'"},
    {"models/tiny.v3 --batch -4", "--batch must be a whole number"},
    {"models/tiny.v3 --seq 12x", "--seq must be a whole number from 1 to 1048576, not '12x'"},
    {"models/tiny.v3 --iters 99999999999999999999", "--iters must be a whole number"},
    {"models/tiny.v3 --seq", "--seq needs a value"},
    {"models/tiny.v3 --stepz 3", "unknown flag '--stepz'"},
    {"models/tiny.v3 models/tiny.v3", "unexpected argument 'models/tiny.v3': the model comes first"},
    {"models/no_such.v3", "cannot read 'models/no_such.v3'"},
    {"models/tiny.v3 --set no_such_key=3", "no_such_key"},
    {"models/tiny.v3 --config /no/such/config.json", "/no/such/config.json"},
};

START_TEST(test_bad_arguments) {
    const char *const benches[] = {cpu_bench, gpu_bench};
    for (size_t b = 0; b < 2; b++)
        for (size_t i = 0; i < sizeof bad_args / sizeof *bad_args; i++) {
            /* gpu_step opens the driver before the model: here it stops there. */
            if (b == 1 && i >= 9) continue;
            CmdResult r = run_program(benches[b], "%s", bad_args[i].args);
            assert_user_error(&r, bad_args[i].needle);
            ck_assert_msg(r.out[0] == 0, "%s %s printed: %s", benches[b], bad_args[i].args, r.out);
            cmd_free(&r);
        }
}
END_TEST

/* One row: model, size, the plan's counts, compile time, both steps, the ratio. */
START_TEST(test_cpu_bench_prints_its_row) {
    CmdResult r = run_program(cpu_bench, "models/tiny.v3 --batch 1 --seq 4 --iters 1");
    ck_assert_msg(r.status == 0, "%s", r.err);
    ck_assert_msg(strncmp(r.out, "| models/tiny.v3 ", 17) == 0 && strstr(r.out, "| B=1 T=4 |") && strstr(r.out, " kernels, ") &&
                      strstr(r.out, " cached), ") && strstr(r.out, "x |\n"),
                  "%s", r.out);
    int bars = 0;
    for (const char *c = r.out; *c; c++) bars += *c == '|';
    ck_assert_int_eq(bars, 8);
    cmd_free(&r);
}
END_TEST

/* Without a GPU (here and in CI) gpu_step says what is missing; with one it prints its JSON line. */
START_TEST(test_gpu_bench_without_gpu) {
    CmdResult r = run_program(gpu_bench, "models/tiny.v3 --batch 1 --seq 4 --iters 1");
    if (r.status == 0) {
        ck_assert_msg(strstr(r.out, "{\"engine\":\"v3c-cuda\"") && strstr(r.out, "\"train_tokens_per_s\":"), "%s", r.out);
        printf("gpu_step ran on a GPU: %s", r.out);
    } else {
        assert_user_error(&r, "");
        printf("gpu_step without a GPU: %s", r.err);
    }
    cmd_free(&r);
}
END_TEST

int main(void) {
    Suite *s = suite_create("bench");
    TCase *tc = tcase_create("bench");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_bad_arguments);
    tcase_add_test(tc, test_cpu_bench_prints_its_row);
    tcase_add_test(tc, test_gpu_bench_without_gpu);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
