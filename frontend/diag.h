/* Diagnostics: "file:line:col: error: msg", the source line and a caret. */
#ifndef V3C_DIAG_H
#define V3C_DIAG_H

#include "ast.h"

struct Program;

/* Sets err to the located message; returns -1. */
int diag_error(const struct Program *p, Loc loc, Err *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Appends "\nfile:line:col: note: msg" to an error already set. */
void diag_note(const struct Program *p, Loc loc, Err *err, const char *msg);

#endif
