/* memplan: liveness, peaks and arena offsets on graphs small enough to work
 * out by hand (each expected number is derived in the comment above it), and
 * the no-overlap invariant on a real model. */
#include <stdlib.h>
#include <string.h>

#include "../ir/text.h"
#include "../passes/memplan.h"
#include "../passes/passes.h"
#include "../frontend/frontend.h"
#include "testutil.h"

static MemPlan plan_ok(const Graph *g, int64_t b, int64_t t) {
    MemPlan p;
    Err e = {0};
    ck_assert_msg(memplan_build(g, b, t, &p, &e) == 0, "%s", e.msg);
    return p;
}

/* x is an input (not an activation); each f32[B,64] is 256 bytes at B=1.
 * The expected last uses, live sets and offsets are worked out in the test. */
static const char *chain =
    "v3ir 1\n"
    "%0 = input {name=\"x\"} : f32[B,64]\n"
    "%1 = exp %0 : f32[B,64]\n"
    "%2 = neg %1 : f32[B,64]\n"
    "%3 = exp %2 : f32[B,64]\n"
    "%4 = add %1, %3 : f32[B,64]\n"
    "%5 = neg %4 : f32[B,64]\n"
    "%6 = add %4, %1 : f32[B,64]\n"
    "output \"y\" = %6\n";

START_TEST(test_chain_liveness_and_peak) {
    Graph *g = parse_ir_ok(chain, "t");
    MemPlan p = plan_ok(g, 1, 1);
    /* last readers: x n1, %1 n6, %2 n3, %3 n4, %4 n6, %5 none (its own node 5), %6 the end (7) */
    int32_t want_last[] = {1, 6, 3, 4, 6, 5, 7};
    for (int v = 0; v < 7; v++) ck_assert_int_eq(p.last_use[v], want_last[v]);
    ck_assert_int_eq(p.bytes[0], 0); /* an input */
    ck_assert_int_eq(p.bytes[1], 256);
    /* live per node: n1 {1} 256, n2 {1,2} 512, n3 {1,2,3} 768, n4 {1,3,4} 768,
     * n5 {1,4,5} 768, n6 {1,4,6} 768: peak 768, first reached at n3. */
    ck_assert_int_eq(p.peak_bytes, 768);
    ck_assert_int_eq(p.peak_node, 3);
    /* without the output %6 the peak is still n3's 768 */
    ck_assert_int_eq(p.peak_activation_bytes, 768);
    ck_assert_int_eq(p.output_bytes, 256);
    /* offsets: %1 0, %2 256, %3 512; before n4 %2 frees [256,512): %4 256;
     * before n5 %3 frees [512,768): %5 512; before n6 %5 frees it again: %6 512. */
    int64_t want_off[] = {-1, 0, 256, 512, 256, 512, 512};
    for (int v = 0; v < 7; v++) ck_assert_int_eq(p.offset[v], want_off[v]);
    ck_assert_int_eq(p.arena_bytes, 768);
    /* at B=3 every size triples, the liveness does not change */
    int64_t peak3;
    Err e = {0};
    ck_assert_int_eq(memplan_peak(g, 3, 1, &peak3, &e), 0);
    ck_assert_int_eq(peak3, 3 * 768);
    memplan_free(&p);
    graph_free(g);
}
END_TEST

/* x f32[256] (1024 bytes), y f32[128] (512 bytes), both inputs.
 * n2 a=exp x @0, n3 b=exp y @1024, n4 c=exp x @1536, n5 d=exp y @2560 (top 3072),
 * n6 e=concat a,d f32[384] (1536) @3072 (top 4608); before n7 a and d die: holes
 * [0,1024) and [2560,3072); n7 f=exp y (512) best-fits the 512 hole: @2560
 * (first fit would say 0); n8 out=concat b,c,e,f f32[896] (3584) fits no hole
 * and the hole [0,1024) does not reach the top: @4608, arena 8192.
 * Live bytes: n6 a+b+c+d+e = 1024+512+1024+512+1536 = 4608, n7 b+c+e+f = 3584,
 * n8 b+c+e+f+out = 7168: peak 7168 at n8; without the output, 4608 at n6. */
static const char *holes =
    "v3ir 1\n"
    "%0 = input {name=\"x\"} : f32[256]\n"
    "%1 = input {name=\"y\"} : f32[128]\n"
    "%2 = exp %0 : f32[256]\n"
    "%3 = exp %1 : f32[128]\n"
    "%4 = exp %0 : f32[256]\n"
    "%5 = exp %1 : f32[128]\n"
    "%6 = concat %2, %5 {axis=0} : f32[384]\n"
    "%7 = exp %1 : f32[128]\n"
    "%8 = concat %3, %4, %6, %7 {axis=0} : f32[896]\n"
    "output \"out\" = %8\n";

START_TEST(test_best_fit_reuses_the_tightest_hole) {
    Graph *g = parse_ir_ok(holes, "t");
    MemPlan p = plan_ok(g, 1, 1);
    int64_t want_off[] = {-1, -1, 0, 1024, 1536, 2560, 3072, 2560, 4608};
    for (int v = 0; v < 9; v++) ck_assert_int_eq(p.offset[v], want_off[v]);
    ck_assert_int_eq(p.arena_bytes, 8192);
    ck_assert_int_eq(p.peak_bytes, 7168);
    ck_assert_int_eq(p.peak_node, 8);
    ck_assert_int_eq(p.peak_activation_bytes, 4608);
    ck_assert_int_eq(p.output_bytes, 3584);
    memplan_free(&p);
    graph_free(g);
}
END_TEST

/* Device sizes, not the interpreter's (which holds bf16 as float): with
 * n = B*T*128 elements, bf16 is 2n bytes, f32 4n, u8 n, i64 8n. */
static const char *dtypes =
    "v3ir 1\n"
    "%0 = input {name=\"x\"} : f32[B,T,128]\n"
    "%1 = cast %0 {to=bf16} : bf16[B,T,128]\n"
    "%2 = cast %1 {to=f32} : f32[B,T,128]\n"
    "%3 = cast %0 {to=u8} : u8[B,T,128]\n"
    "%4 = cast %0 {to=i64} : i64[B,T,128]\n"
    "output \"a\" = %2\n"
    "output \"b\" = %3\n"
    "output \"c\" = %4\n";

START_TEST(test_device_dtype_sizes) {
    Graph *g = parse_ir_ok(dtypes, "t");
    MemPlan p = plan_ok(g, 2, 3);
    int64_t n = 2 * 3 * 128;
    ck_assert_int_eq(p.bytes[1], 2 * n);
    ck_assert_int_eq(p.bytes[2], 4 * n);
    ck_assert_int_eq(p.bytes[3], 1 * n);
    ck_assert_int_eq(p.bytes[4], 8 * n);
    /* live: n1 2n, n2 2n+4n, n3 4n+n (%1 died after n2), n4 4n+n+8n: the outputs live to the end */
    ck_assert_int_eq(p.peak_bytes, (4 + 1 + 8) * n);
    ck_assert_int_eq(p.peak_node, 4);
    /* n2 holds %1 and %2 (2n + 4n) while the outputs-excluded sweep sees only %1 */
    ck_assert_int_eq(p.peak_activation_bytes, 2 * n);
    ck_assert_int_eq(memplan_dtype_bytes(DT_F16), 2);
    ck_assert_int_eq(memplan_dtype_bytes(DT_E4M3), 1);
    ck_assert_int_eq(memplan_dtype_bytes(DT_E5M2), 1);
    ck_assert_int_eq(memplan_dtype_bytes(DT_I32), 4);
    memplan_free(&p);
    graph_free(g);
}
END_TEST

/* Offsets are MEMPLAN_ALIGN-aligned: the f32[3] values (12 bytes each) sit at
 * 0, 256 and 512; the peak counts the real bytes, 3 * 12 at n3. */
START_TEST(test_alignment) {
    Graph *g = parse_ir_ok("v3ir 1\n"
                        "%0 = input {name=\"x\"} : f32[3]\n"
                        "%1 = exp %0 : f32[3]\n"
                        "%2 = neg %0 : f32[3]\n"
                        "%3 = add %1, %2 : f32[3]\n"
                        "output \"y\" = %3\n", "t");
    MemPlan p = plan_ok(g, 1, 1);
    ck_assert_int_eq(p.offset[1], 0);
    ck_assert_int_eq(p.offset[2], MEMPLAN_ALIGN);
    /* %3 cannot reuse its inputs' space while they are read */
    ck_assert_int_eq(p.offset[3], 2 * MEMPLAN_ALIGN);
    ck_assert_int_eq(p.arena_bytes, 3 * MEMPLAN_ALIGN);
    ck_assert_int_eq(p.peak_bytes, 36);
    memplan_free(&p);
    graph_free(g);
}
END_TEST

START_TEST(test_errors) {
    Graph *g = parse_ir_ok("v3ir 1\n"
                        "%0 = input {name=\"x\"} : f32[1099511627776,1099511627776]\n"
                        "%1 = exp %0 : f32[1099511627776,1099511627776]\n"
                        "output \"y\" = %1\n", "t");
    Err e = {0};
    int64_t peak;
    ck_assert_int_eq(memplan_peak(g, 1, 1, &peak, &e), -1);
    ck_assert_msg(strstr(e.msg, "2^63") != NULL, "%s", e.msg);
    Err e2 = {0};
    ck_assert_int_eq(memplan_peak(g, 0, 1, &peak, &e2), -1);
    ck_assert_msg(strstr(e2.msg, "positive") != NULL, "%s", e2.msg);
    graph_free(g);
}
END_TEST

/* On the tiny model: no two buffers live at the same node overlap in the
 * arena, every buffer lies inside it, and the peak is what a direct count of
 * live bytes at the peak node gives. */
START_TEST(test_no_overlap_on_tiny_model) {
    Err e = {0};
    Program *prog = program_parse_file("models/tiny.v3", &e);
    ck_assert_msg(prog != NULL, "%s", e.msg);
    Graph *g = program_lower(prog, &e);
    ck_assert_msg(g != NULL, "%s", e.msg);
    MemPlan p = plan_ok(g, 2, 16);
    int64_t live_at_peak = 0;
    for (size_t v = 0; v < p.nvalues; v++) {
        if (!p.bytes[v]) continue;
        ck_assert(p.offset[v] >= 0 && p.offset[v] % MEMPLAN_ALIGN == 0 && p.offset[v] + p.bytes[v] <= p.arena_bytes);
        int32_t def = g->values.data[v].node;
        if (def <= p.peak_node && p.last_use[v] >= p.peak_node) live_at_peak += p.bytes[v];
        for (size_t u = v + 1; u < p.nvalues; u++) {
            if (!p.bytes[u]) continue;
            int32_t du = g->values.data[u].node;
            int overlap_time = du <= p.last_use[v] && def <= p.last_use[u];
            int overlap_space = p.offset[u] < p.offset[v] + p.bytes[v] && p.offset[v] < p.offset[u] + p.bytes[u];
            ck_assert_msg(!(overlap_time && overlap_space), "values %zu and %zu share memory while both live", v, u);
        }
    }
    ck_assert_int_eq(live_at_peak, p.peak_bytes);
    ck_assert(p.arena_bytes >= p.peak_bytes);
    memplan_free(&p);
    graph_free(g);
    program_free(prog);
}
END_TEST

START_TEST(test_pass_reports_and_changes_nothing) {
    CmdResult r = run_v3c("dump models/tiny.v3 --passes verify,memplan");
    ck_assert_int_eq(r.status, 0);
    ck_assert_msg(strstr(r.err, "; memplan at B=1 T=4096: peak_bytes ") != NULL, "%s", r.err);
    CmdResult plain = run_v3c("dump models/tiny.v3 --passes verify");
    ck_assert_str_eq(r.out, plain.out);
    cmd_free(&r);
    cmd_free(&plain);
}
END_TEST

/* Values computed from weights and constants alone are not activations: the
 * negated weight (4*8*4 = 128 bytes) and the constant (4) are summed apart.
 * At B=1 the activations are %3 and %5, 16 bytes each, both live at n5. */
START_TEST(test_weight_derived_values_are_not_activations) {
    Graph *g = parse_ir_ok("v3ir 1\n"
                        "%0 = input {name=\"x\"} : f32[B,8]\n"
                        "%1 = param {name=\"w\"} : f32[4,8]\n"
                        "%2 = neg %1 : f32[4,8]\n"
                        "%3 = linear %0, %2 : f32[B,4]\n"
                        "%4 = const {value=2.0} : f32[]\n"
                        "%5 = mul %3, %4 : f32[B,4]\n"
                        "output \"y\" = %5\n", "t");
    MemPlan p = plan_ok(g, 1, 1);
    ck_assert_int_eq(p.weight_derived_bytes, 132);
    ck_assert_int_eq(p.bytes[2], 0);
    ck_assert_int_eq(p.offset[2], -1);
    ck_assert_int_eq(p.bytes[4], 0);
    ck_assert_int_eq(p.bytes[3], 16);
    ck_assert_int_eq(p.peak_bytes, 32);
    ck_assert_int_eq(p.peak_node, 5);
    memplan_free(&p);
    graph_free(g);
}
END_TEST

static int64_t stat_line(const char *out, const char *key) {
    char *pattern = xsprintf("\n%s: ", key);
    const char *at = strstr(out, pattern);
    free(pattern);
    ck_assert_msg(at != NULL, "no '%s:' line in\n%s", key, out);
    return strtoll(at + strlen(key) + 3, NULL, 10);
}

/* stats --memory on the golden tiny config (B=4, T=64): the recompute pass
 * lowers the activation peak, the saving line is the difference, and every
 * weight but the three MoE layers' gate biases (main layers 1, 2 and the MTP
 * layer; 8 experts each, f32: 3*8*4 = 96 bytes) gets a gradient. */
START_TEST(test_stats_memory) {
    CmdResult r = run_v3c("stats models/deepseek_v3.v3 --checkpoint ../shared/golden/tiny --memory --batch 4 --seq 64");
    ck_assert_msg(r.status == 0, "%s", r.err);
    char *out = xsprintf("\n%s", r.out);
    ck_assert_int_eq(stat_line(out, "batch"), 4);
    ck_assert_int_eq(stat_line(out, "seq"), 64);
    int64_t plain = stat_line(out, "peak_activation_bytes"), rc = stat_line(out, "peak_activation_bytes_recompute");
    ck_assert_msg(rc < plain, "recompute %lld, plain %lld", (long long)rc, (long long)plain);
    ck_assert_int_eq(stat_line(out, "recompute_saving_bytes"), plain - rc);
    ck_assert_int_eq(stat_line(out, "parameter_bytes") - stat_line(out, "gradient_bytes"), 96);
    ck_assert(stat_line(out, "arena_bytes_recompute") >= stat_line(out, "peak_bytes_recompute"));
    ck_assert(stat_line(out, "recompute_clones") > 0);
    free(out);
    cmd_free(&r);
}
END_TEST

START_TEST(test_stats_memory_errors) {
    char *dir = make_temp_dir(), *path = path_join(dir, "noloss.v3ir");
    write_text(path, "v3ir 1\n"
                     "%0 = input {name=\"x\"} : f32[B,4]\n"
                     "%1 = exp %0 : f32[B,4]\n"
                     "output \"y\" = %1\n");
    CmdResult r = run_v3c("stats %s --memory", path);
    assert_user_error(&r, "no 'total_loss' or 'loss' output");
    cmd_free(&r);
    r = run_v3c("stats models/tiny.v3 --memory --seq 0");
    assert_user_error(&r, "--batch and --seq must be positive");
    cmd_free(&r);
    free(path);
    free(dir);
}
END_TEST

int main(void) {
    Suite *s = suite_create("memplan");
    TCase *tc = tcase_create("memplan");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_chain_liveness_and_peak);
    tcase_add_test(tc, test_best_fit_reuses_the_tightest_hole);
    tcase_add_test(tc, test_device_dtype_sizes);
    tcase_add_test(tc, test_alignment);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_no_overlap_on_tiny_model);
    tcase_add_test(tc, test_pass_reports_and_changes_nothing);
    tcase_add_test(tc, test_weight_derived_values_are_not_activations);
    tcase_add_test(tc, test_stats_memory);
    tcase_add_test(tc, test_stats_memory_errors);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
