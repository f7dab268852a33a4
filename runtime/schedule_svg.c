/* SVG picture of a simulated schedule, laid out like the DualPipe figure of the
 * DeepSeek-V3 report: one row per rank, one box per chunk, its micro-batch
 * number inside. Direction 1 (micro-batches entering at rank P-1) uses the
 * darker shade of each color; an overlapped F&B box is split, forward on top. */
#include <math.h>
#include <stdlib.h>

#include "schedule.h"

enum { LABEL_W = 70, ROW_H = 30, TOP = 10, LEGEND_H = 40, IDLE_W = 90 };

/* [kind][direction] */
static const char *const FILL[3][2] = {
    [SOP_F] = {"#fdd49e", "#f08a4b"},
    [SOP_B] = {"#a6cbe8", "#3b82c4"},
    [SOP_W] = {"#c7e9c0", "#4fa86b"},
};

static void box(Buf *b, double x, double y, double w, double h, const char *fill) {
    buf_printf(b, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\" stroke=\"#333\" stroke-width=\"0.5\"/>\n",
               x, y, w, h, fill);
}

static void label(Buf *b, double x, double y, double size, const char *text) {
    buf_printf(b, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"%.1f\" text-anchor=\"middle\" font-family=\"sans-serif\">%s</text>\n",
               x, y, size, text);
}

/* Micro-batch numbers only where they fit: about 0.6 em per digit. */
static void mb_label(Buf *b, double x, double y, double w, double size, int mb) {
    char text[16];
    int n = snprintf(text, sizeof text, "%d", mb);
    if (w >= size * 0.6 * n + 2) label(b, x + w / 2, y + size * 0.35, size, text);
}

static void draw_op(Buf *b, const SchedOp *op, double x, double y, double w) {
    double h = ROW_H - 6;
    if (op->kind != SOP_FB) {
        box(b, x, y, w, h, FILL[op->kind][op->dir]);
        mb_label(b, x, y + h / 2, w, 11, op->mb);
        return;
    }
    box(b, x, y, w, h / 2, FILL[SOP_F][op->dir]);
    box(b, x, y + h / 2, w, h / 2, FILL[SOP_B][op->bdir]);
    mb_label(b, x, y + h / 4, w, 9, op->mb);
    mb_label(b, x, y + 3 * h / 4, w, 9, op->bmb);
}

static void draw_legend(Buf *b, double y, int dirs) {
    static const char *const NAMES[3] = {"F", "B", "W"};
    double x = LABEL_W;
    for (int d = 0; d < dirs; d++)
        for (int k = 0; k < 3; k++) {
            box(b, x, y, 14, 14, FILL[k][d]);
            char text[32];
            snprintf(text, sizeof text, "%s%s", NAMES[k], dirs == 2 ? (d ? " (dir 1)" : " (dir 0)") : "");
            buf_printf(b, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"11\" font-family=\"sans-serif\">%s</text>\n", x + 18,
                       y + 11, text);
            x += dirs == 2 ? 90 : 40;
        }
}

char *schedule_svg(const Schedule *s, const SchedTimeline *tl) {
    /* About 1200 px for the whole span, but never under 4 px per time unit. */
    double scale = fmax(4.0, fmin(40.0, 1200.0 / tl->span));
    double width = LABEL_W + tl->span * scale + IDLE_W, height = TOP + s->ranks * ROW_H + LEGEND_H;
    Buf b = {0};
    buf_printf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\">\n",
               ceil(width), ceil(height), ceil(width), ceil(height));
    buf_printf(&b, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    for (int r = 0; r < s->ranks; r++) {
        double y = TOP + r * ROW_H + 3;
        buf_printf(&b, "<text x=\"4\" y=\"%.2f\" font-size=\"12\" font-family=\"sans-serif\">Device %d</text>\n",
                   y + ROW_H / 2.0, r);
        for (int i = 0; i < s->len[r]; i++)
            draw_op(&b, &s->ops[r][i], LABEL_W + tl->start[r][i] * scale, y, (tl->end[r][i] - tl->start[r][i]) * scale);
        buf_printf(&b, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"11\" font-family=\"sans-serif\">idle %g</text>\n",
                   LABEL_W + tl->span * scale + 6, y + ROW_H / 2.0, tl->idle[r]);
    }
    draw_legend(&b, TOP + s->ranks * ROW_H + 12, s->kind == SCHED_DUALPIPE ? 2 : 1);
    buf_puts(&b, "</svg>\n");
    return buf_take(&b);
}
