#include "diag.h"

#include <stdio.h>
#include <string.h>

#include "program.h"

static const char *file_path(const Program *p, Loc loc) {
    if (loc.file < 0 || (size_t)loc.file >= p->files.len) return "<unknown>";
    return p->files.data[loc.file].path;
}

/* The text of line `line` (1-based) without its newline; NULL if absent. */
static const char *line_start(const Program *p, Loc loc, int *len) {
    if (loc.file < 0 || (size_t)loc.file >= p->files.len) return NULL;
    const char *s = p->files.data[loc.file].text;
    for (int l = 1; l < loc.line && s; l++) {
        s = strchr(s, '\n');
        if (s) s++;
    }
    if (!s) return NULL;
    const char *end = strchr(s, '\n');
    *len = end ? (int)(end - s) : (int)strlen(s);
    return s;
}

/* "  <line>\n  <spaces>^": tabs in the source line are kept under the caret
 * so that it lines up however the terminal expands them. */
static void caret_lines(const Program *p, Loc loc, Buf *b) {
    int len;
    const char *s = line_start(p, loc, &len);
    if (!s) return;
    if (len > 200) len = 200;
    buf_printf(b, "\n  %.*s\n  ", len, s);
    for (int i = 0; i + 1 < loc.col && i < len; i++) buf_putc(b, s[i] == '\t' ? '\t' : ' ');
    buf_putc(b, '^');
}

int diag_error(const Program *p, Loc loc, Err *err, const char *fmt, ...) {
    Buf b = {0};
    buf_printf(&b, "%s:%d:%d: error: ", file_path(p, loc), loc.line, loc.col);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    caret_lines(p, loc, &b);
    err_set(err, "%s", b.data);
    buf_free(&b);
    return -1;
}

void diag_note(const Program *p, Loc loc, Err *err, const char *msg) {
    size_t used = strlen(err->msg);
    snprintf(err->msg + used, sizeof err->msg - used, "\n%s:%d:%d: note: %s", file_path(p, loc), loc.line,
             loc.col, msg);
}
