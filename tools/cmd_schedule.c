/* v3c schedule --pp P --microbatches M --schedule 1f1b|zb1p|dualpipe
 *              [--f F --b B --w W --fb FB] [--svg FILE]
 * Builds the pipeline schedule, times it with the given chunk times
 * (runtime/schedule.h) and prints the per-rank timeline and its bubble next to
 * the report's Table 2 formula; --svg also draws it. docs/schedule.md. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/schedule.h"
#include "cli.h"

/* Beyond this many characters the text timeline is unreadable anyway. */
enum { MAX_TIMELINE_CELLS = 4000000, MAX_SVG_OPS = 200000 };

static int parse_time(const char *name, const char *text, double fallback, double *out, Err *err) {
    if (!text) {
        *out = fallback;
        return 0;
    }
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (!*text || *end || errno) return err_set(err, "%s expects a number, got '%s'", name, text);
    *out = v;
    return 0;
}

static int parse_times(const Options *o, ChunkTimes *t, Err *err) {
    if (parse_time("--f", o->sched_f, 1, &t->f, err) || parse_time("--b", o->sched_b, 2 * t->f, &t->b, err) ||
        parse_time("--w", o->sched_w, t->b / 2, &t->w, err))
        return -1;
    /* No overlap gain unless told: the pair costs as much as its two chunks. */
    return parse_time("--fb", o->sched_fb, t->f + t->b, &t->fb, err);
}

static int build(const Options *o, Schedule **s, Err *err) {
    if (!o->schedule) return err_set(err, "'v3c schedule' needs --schedule 1f1b|zb1p|dualpipe");
    int kind = sched_kind_parse(o->schedule);
    if (kind < 0) return err_set(err, "unknown --schedule '%s' (expected 1f1b, zb1p or dualpipe)", o->schedule);
    if (o->pp <= 0) return err_set(err, "'v3c schedule' needs --pp P (at least 1)");
    if (o->microbatches <= 0) return err_set(err, "'v3c schedule' needs --microbatches M (at least 1)");
    if (o->pp > SCHED_MAX_RANKS || o->microbatches > SCHED_MAX_MICROBATCHES)
        return err_set(err, "--pp must be at most %d and --microbatches at most %d", SCHED_MAX_RANKS,
                       SCHED_MAX_MICROBATCHES);
    *s = schedule_build((SchedKind)kind, (int)o->pp, (int)o->microbatches, err);
    return *s ? 0 : -1;
}

static void print_summary(const Schedule *s, const SchedTimeline *tl, const ChunkTimes *t) {
    double most = 0;
    for (int r = 0; r < s->ranks; r++) most = fmax(most, tl->idle[r]);
    double formula = sched_report_bubble(s->kind, s->ranks, t);
    printf("span %g; bubble (largest per-rank idle time) %g\n", tl->span, most);
    static const char *const FORMULA[SCHED_KIND_COUNT] = {"(PP-1)(F+B)", "(PP-1)(F+B-2W)", "(PP/2-1)(F&B+B-3W)"};
    printf("report Table 2: %s = %g (%s)\n", FORMULA[s->kind], formula,
           fabs(most - formula) <= 1e-9 * fmax(1, formula) ? "equal" : "differs, see docs/schedule.md");
}

static void print_timeline(const Schedule *s, const SchedTimeline *tl, const ChunkTimes *t) {
    printf("schedule %s: %d ranks, %d micro-batches, F=%g B=%g W=%g F&B=%g\n", sched_kind_name(s->kind), s->ranks,
           s->microbatches, t->f, t->b, t->w, t->fb);
    if (tl->span * s->ranks > MAX_TIMELINE_CELLS) {
        printf("(timeline of %g x %d cells not shown)\n", ceil(tl->span), s->ranks);
        return;
    }
    printf("F forward, B backward%s, W weight backward, X overlapped F&B, . idle%s\n",
           s->kind == SCHED_1F1B ? "" : " (input part)", s->kind == SCHED_DUALPIPE ? "; lower case: direction 1" : "");
    schedule_print_text(s, tl, stdout);
}

static int write_svg(const char *path, const Schedule *s, const SchedTimeline *tl, Err *err) {
    long ops = 0;
    for (int r = 0; r < s->ranks; r++) ops += s->len[r];
    if (ops > MAX_SVG_OPS) return err_set(err, "--svg: %ld chunks is too many to draw (limit %d)", ops, MAX_SVG_OPS);
    char *svg = schedule_svg(s, tl);
    int rc = write_file_atomic(path, svg, strlen(svg), err);
    free(svg);
    return rc;
}

int cmd_schedule(const Options *o, Err *err) {
    Schedule *s = NULL;
    ChunkTimes t;
    if (build(o, &s, err) || parse_times(o, &t, err)) {
        schedule_free(s);
        return -1;
    }
    SchedTimeline *tl = schedule_simulate(s, &t, err);
    int rc = tl ? 0 : -1;
    if (tl) {
        print_timeline(s, tl, &t);
        print_summary(s, tl, &t);
        if (o->svg) rc = write_svg(o->svg, s, tl, err);
    }
    sched_timeline_free(tl);
    schedule_free(s);
    return rc;
}
