/* The evaluator: runs a Program's statements at compile time, computing
 * scalars and emitting graph nodes for tensor operations. Internal to frontend/. */
#ifndef V3C_EVAL_H
#define V3C_EVAL_H

#include "program.h"

/* Calls in progress, and nested expressions/statements over all of them (a
 * bound on the C stack the evaluator uses, since each nesting is a recursion). */
enum { EVAL_MAX_DEPTH = 64, EVAL_MAX_NESTING = 4000, MAX_LIST_LEN = 1 << 24 };

typedef struct Frame Frame; /* one block's variables */

typedef struct Eval {
    Program *p;
    Graph *g;
    Err *err;
    Arena arena;         /* values made while lowering (strings, lists) */
    int64_t bytes;       /* allocated from arena, against a budget */
    int64_t iterations;  /* loop iterations so far */
    int depth;           /* function calls in progress */
    int nesting;         /* expressions and statements being evaluated */
    Loc calls[EVAL_MAX_DEPTH + 1]; /* their call sites, for notes */
    Frame *frame;        /* innermost block */
} Eval;

int eval_expr(Eval *ev, const Expr *e, Val *out);
/* A located error with "called from here" notes; returns -1. */
int eval_error(Eval *ev, Loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Memory for values, counted against a budget (an error when exceeded). */
void *eval_alloc(Eval *ev, Loc loc, size_t n);
/* Appends a node; an error from the op's shape rule is reported at loc. */
int eval_emit(Eval *ev, Loc loc, OpKind op, const ValueId *in, int nin, const Attr *attrs, int nattrs,
              ValueId *out);
/* v as a tensor: a tensor as is, a number as an f32[] const node. */
int eval_tensor(Eval *ev, Loc loc, const Val *v, ValueId *out);
/* Arithmetic shared by operators and builtins (a, b of any kind). */
int eval_binary(Eval *ev, Loc loc, BinOp op, const Val *a, const Val *b, Val *out);

/* builtins.c */
int builtin_exists(const char *name);
/* Returns 1 if name is no builtin (nothing done), 0 on success, -1 on error. */
int builtin_call(Eval *ev, const Expr *call, Val *args, int nargs, Val *out);

#endif
