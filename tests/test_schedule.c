/* Pipeline schedules: instruction lists, the simulator, the bubbles of the
 * DeepSeek-V3 report's Table 2, the text timeline and the SVG. All chunk times
 * here are multiples of 0.5, so every simulated time is a short sum of exactly
 * representable doubles and the bubbles compare exactly (EXACT). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/schedule.h"
#include "testutil.h"

#define EXACT 1e-12

static const int SIZES[] = {4, 8, 16};

static SchedTimeline *simulate(SchedKind kind, int ranks, int mbs, ChunkTimes t, Schedule **out) {
    Err e = {0};
    Schedule *s = schedule_build(kind, ranks, mbs, &e);
    ck_assert_msg(s != NULL, "%s", e.msg);
    SchedTimeline *tl = schedule_simulate(s, &t, &e);
    ck_assert_msg(tl != NULL, "%s", e.msg);
    *out = s;
    return tl;
}

static double largest_idle(const SchedTimeline *tl) {
    double most = 0;
    for (int r = 0; r < tl->ranks; r++) most = fmax(most, tl->idle[r]);
    return most;
}

/* Asserts the report's bubble for P = 4, 8, 16 and M = mult x P for each mult. */
static void check_bubble(SchedKind kind, ChunkTimes t, int min_mult, int every_rank) {
    for (size_t i = 0; i < sizeof SIZES / sizeof *SIZES; i++)
        for (int mult = min_mult; mult <= min_mult + 2; mult++) {
            int p = SIZES[i];
            Schedule *s;
            SchedTimeline *tl = simulate(kind, p, mult * p, t, &s);
            double want = sched_report_bubble(kind, p, &t);
            for (int r = 0; every_rank && r < p; r++)
                ck_assert_msg(fabs(tl->idle[r] - want) < EXACT, "%s P=%d M=%d rank %d: idle %g, report %g",
                              sched_kind_name(kind), p, mult * p, r, tl->idle[r], want);
            ck_assert_msg(fabs(largest_idle(tl) - want) < EXACT, "%s P=%d M=%d F=%g B=%g W=%g FB=%g: bubble %g, report %g",
                          sched_kind_name(kind), p, mult * p, t.f, t.b, t.w, t.fb, largest_idle(tl), want);
            sched_timeline_free(tl);
            schedule_free(s);
        }
}

START_TEST(test_1f1b_bubble) {
    /* Any times: W is not used by 1F1B. */
    ChunkTimes times[] = {{1, 2, 1, 3}, {2, 3, 1, 5}, {3, 1, 0.5, 4}, {1.5, 4, 2, 5.5}};
    for (size_t i = 0; i < sizeof times / sizeof *times; i++) check_bubble(SCHED_1F1B, times[i], 1, 1);
}
END_TEST

START_TEST(test_zb1p_bubble) {
    /* Holds when W <= F and W <= B - W (docs/schedule.md). */
    ChunkTimes times[] = {{1, 2, 1, 3}, {2, 4, 1, 6}, {3, 5, 2, 8}, {2.5, 3, 1.5, 5.5}, {4, 2, 1, 6}};
    for (size_t i = 0; i < sizeof times / sizeof *times; i++) check_bubble(SCHED_ZB1P, times[i], 1, 1);
}
END_TEST

START_TEST(test_zb1p_outside_assumption) {
    /* W > F: the deferred W no longer fit in the waits the formula counts on,
     * so the simulated bubble is larger than (P-1)(F+B-2W) = 0. */
    Schedule *s;
    ChunkTimes t = {1, 3, 2, 4};
    SchedTimeline *tl = simulate(SCHED_ZB1P, 4, 8, t, &s);
    ck_assert_double_eq(sched_report_bubble(SCHED_ZB1P, 4, &t), 0);
    ck_assert(largest_idle(tl) > 0.5);
    sched_timeline_free(tl);
    schedule_free(s);
}
END_TEST

START_TEST(test_dualpipe_bubble) {
    /* Holds when F = B - W, W <= F and max(F, B) <= F&B <= F + B: the report's
     * equal-chunk assumption (docs/schedule.md). The bubble is the largest
     * per-rank idle time: when F&B < F + B the outer ranks overlap fewer pairs,
     * so they are busier and idle less than the inner ranks. */
    ChunkTimes times[] = {{1, 2, 1, 3}, {1, 2, 1, 2.5}, {1, 2, 1, 2}, {3, 5, 2, 6}, {2, 3, 1, 4}, {3, 4, 1, 5.5}};
    for (size_t i = 0; i < sizeof times / sizeof *times; i++) check_bubble(SCHED_DUALPIPE, times[i], 2, 0);
}
END_TEST

START_TEST(test_dualpipe_outside_assumption) {
    /* F = 2 < B - W = 3: this instruction list idles 16 per rank where the
     * formula says 3 x (5 + 4 - 3) = 18 (regression value from the simulator). */
    Schedule *s;
    ChunkTimes t = {2, 4, 1, 5};
    SchedTimeline *tl = simulate(SCHED_DUALPIPE, 8, 16, t, &s);
    ck_assert_double_eq(sched_report_bubble(SCHED_DUALPIPE, 8, &t), 18);
    ck_assert_double_eq_tol(largest_idle(tl), 16, EXACT);
    sched_timeline_free(tl);
    schedule_free(s);
}
END_TEST

/* Counts, per (direction, stage, micro-batch), the forwards, backwards and
 * weight passes of the whole schedule. */
static void check_complete(const Schedule *s) {
    int dirs = s->kind == SCHED_DUALPIPE ? 2 : 1, per = s->microbatches / dirs, p = s->ranks;
    int *f = calloc((size_t)(2 * p * per), sizeof *f), *b = calloc((size_t)(2 * p * per), sizeof *b);
    int *w = calloc((size_t)(2 * p * per), sizeof *w);
    for (int r = 0; r < p; r++)
        for (int i = 0; i < s->len[r]; i++) {
            const SchedOp *op = &s->ops[r][i];
            int stage = op->dir ? p - 1 - r : r, at = (op->dir * p + stage) * per + op->mb;
            ck_assert(op->mb >= 0 && op->mb < per);
            if (op->kind == SOP_F || op->kind == SOP_FB) f[at]++;
            if (op->kind == SOP_B) b[at]++, w[at] += op->full;
            if (op->kind == SOP_W) ck_assert_msg(b[at] == 1, "W before its B"), w[at]++;
            if (op->kind == SOP_FB) {
                int bstage = op->bdir ? p - 1 - r : r, bat = (op->bdir * p + bstage) * per + op->bmb;
                b[bat]++, w[bat]++;
            }
        }
    for (int i = 0; i < dirs * p * per; i++) ck_assert_msg(f[i] == 1 && b[i] == 1 && w[i] == 1, "slot %d: %d %d %d", i, f[i], b[i], w[i]);
    free(f), free(b), free(w);
}

START_TEST(test_lists_complete) {
    Err e = {0};
    for (int k = 0; k < SCHED_KIND_COUNT; k++)
        for (int p = 2; p <= 8; p += 2) {
            Schedule *s = schedule_build((SchedKind)k, p, 2 * p + 4, &e);
            ck_assert_msg(s != NULL, "%s", e.msg);
            check_complete(s);
            schedule_free(s);
        }
}
END_TEST

START_TEST(test_rank_ops_do_not_overlap) {
    Schedule *s;
    SchedTimeline *tl = simulate(SCHED_DUALPIPE, 8, 20, (ChunkTimes){1, 2, 1, 2.5}, &s);
    for (int r = 0; r < s->ranks; r++) {
        double busy = 0;
        for (int i = 0; i < s->len[r]; i++) {
            if (i) ck_assert(tl->start[r][i] >= tl->end[r][i - 1]);
            busy += tl->end[r][i] - tl->start[r][i];
            ck_assert(tl->end[r][i] <= tl->span);
        }
        ck_assert_double_eq_tol(busy, tl->busy[r], EXACT);
    }
    sched_timeline_free(tl);
    schedule_free(s);
}
END_TEST

static void expect_build_error(SchedKind k, int p, int m, const char *needle) {
    Err e = {0};
    Schedule *s = schedule_build(k, p, m, &e);
    ck_assert_msg(s == NULL, "%s P=%d M=%d accepted", sched_kind_name(k), p, m);
    ck_assert_msg(strstr(e.msg, needle) != NULL, "'%s' lacks '%s'", e.msg, needle);
}

START_TEST(test_bad_sizes) {
    expect_build_error(SCHED_DUALPIPE, 5, 20, "even --pp");
    expect_build_error(SCHED_DUALPIPE, 4, 9, "even number of micro-batches");
    expect_build_error(SCHED_DUALPIPE, 4, 6, "at least 2 x --pp");
    expect_build_error(SCHED_1F1B, 8, 7, "at least --pp");
    expect_build_error(SCHED_ZB1P, 0, 7, "between 1 and 1024");
    expect_build_error(SCHED_1F1B, 1025, 2000, "between 1 and 1024");
    expect_build_error(SCHED_1F1B, 4, 100001, "between 1 and 100000");
    expect_build_error(SCHED_1F1B, 1024, 100000, "too large to simulate");
    ck_assert_int_eq(sched_kind_parse("gpipe"), -1);
    ck_assert_int_eq(sched_kind_parse("zb1p"), SCHED_ZB1P);
}
END_TEST

START_TEST(test_bad_times) {
    Err e = {0};
    Schedule *zb = schedule_build(SCHED_ZB1P, 4, 4, &e), *f1 = schedule_build(SCHED_1F1B, 4, 4, &e);
    ChunkTimes bad[] = {{0, 2, 1, 3}, {1, -2, 1, 3}, {1, 2, 1, NAN}, {1, 2, 1, INFINITY}, {1, 2, 2, 3}};
    const char *needle[] = {"--f", "--b", "--fb", "--fb", "must be less than --b"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(&e, 0, sizeof e);
        ck_assert_ptr_null(schedule_simulate(zb, &bad[i], &e));
        ck_assert_msg(strstr(e.msg, needle[i]) != NULL, "'%s' lacks '%s'", e.msg, needle[i]);
    }
    /* 1F1B never splits the backward, so W = B is fine there. */
    SchedTimeline *tl = schedule_simulate(f1, &bad[4], &e);
    ck_assert_ptr_nonnull(tl);
    sched_timeline_free(tl);
    schedule_free(zb);
    schedule_free(f1);
}
END_TEST

static char *text_of(const Schedule *s, const SchedTimeline *tl) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    schedule_print_text(s, tl, f);
    fclose(f);
    return text;
}

START_TEST(test_text_timeline) {
    /* 1F1B, P=4, F=1, B=2: rank 0 runs F0..F3 in [0,4); backward 0 starts on
     * rank 3 at 4 and takes 2 per stage down to rank 0: [10,12). */
    Schedule *s;
    SchedTimeline *tl = simulate(SCHED_1F1B, 4, 8, (ChunkTimes){1, 2, 1, 3}, &s);
    char *text = text_of(s, tl);
    ck_assert_msg(strstr(text, "rank    0 |FFFF......BBF") == text, "%s", text);
    ck_assert_msg(strstr(text, "rank    3 |...FBBFBB") != NULL, "%s", text);
    ck_assert_msg(strstr(text, "| idle 9\n") != NULL, "%s", text);
    free(text);
    sched_timeline_free(tl);
    schedule_free(s);
    /* DualPipe: direction 1 enters at the last rank, in lower case. */
    tl = simulate(SCHED_DUALPIPE, 4, 8, (ChunkTimes){1, 2, 1, 3}, &s);
    text = text_of(s, tl);
    ck_assert_msg(strstr(text, "rank    3 |fff") != NULL && strstr(text, "rank    0 |FFF") == text, "%s", text);
    ck_assert_msg(strchr(text, 'X') != NULL, "no overlapped pair in\n%s", text);
    free(text);
    sched_timeline_free(tl);
    schedule_free(s);
}
END_TEST

static int count(const char *s, const char *needle) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)) != NULL; p++) n++;
    return n;
}

START_TEST(test_svg) {
    Schedule *s;
    SchedTimeline *tl = simulate(SCHED_DUALPIPE, 8, 20, (ChunkTimes){1, 2, 1, 3}, &s);
    char *svg = schedule_svg(s, tl);
    ck_assert(starts_with(svg, "<svg "));
    size_t n = strlen(svg);
    ck_assert(n > 8 && strcmp(svg + n - 7, "</svg>\n") == 0);
    /* One box per chunk, two per overlapped pair, the background, 6 legend keys. */
    int boxes = 1 + 6;
    for (int r = 0; r < s->ranks; r++)
        for (int i = 0; i < s->len[r]; i++) boxes += s->ops[r][i].kind == SOP_FB ? 2 : 1;
    ck_assert_int_eq(count(svg, "<rect "), boxes);
    ck_assert_int_eq(count(svg, "<text"), count(svg, "</text>"));
    char *dir = make_temp_dir(), *path = path_join(dir, "dualpipe.svg");
    write_text(path, svg);
    if (system("python3 -c 'pass' 2>/dev/null") == 0) {
        char *cmd = xsprintf("python3 -c 'import sys, xml.dom.minidom as m; m.parse(sys.argv[1])' %s", path);
        ck_assert_msg(system(cmd) == 0, "python3 rejects %s", path);
        free(cmd);
    }
    free(path), free(dir), free(svg);
    sched_timeline_free(tl);
    schedule_free(s);
}
END_TEST

int main(void) {
    Suite *s = suite_create("schedule");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_1f1b_bubble);
    tcase_add_test(tc, test_zb1p_bubble);
    tcase_add_test(tc, test_zb1p_outside_assumption);
    tcase_add_test(tc, test_dualpipe_bubble);
    tcase_add_test(tc, test_dualpipe_outside_assumption);
    tcase_add_test(tc, test_lists_complete);
    tcase_add_test(tc, test_rank_ops_do_not_overlap);
    tcase_add_test(tc, test_bad_sizes);
    tcase_add_test(tc, test_bad_times);
    tcase_add_test(tc, test_text_timeline);
    tcase_add_test(tc, test_svg);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
