/* The syntax tree of a .v3 file. Every node carries the place it came from,
 * so that errors found while lowering point at the source. Nodes live in the
 * Program's arena and are never freed one by one. */
#ifndef V3C_AST_H
#define V3C_AST_H

#include <stdint.h>

#include "../base/base.h"

typedef struct Loc {
    int file; /* index into the Program's files */
    int line, col;
} Loc;

typedef enum ExprKind {
    E_INT,
    E_FLOAT,
    E_STRING, /* literal text and interpolated {expr} parts */
    E_BOOL,
    E_NONE,
    E_NAME,
    E_LIST,
    E_COMPREHENSION, /* [a for name in b..c] */
    E_CALL,
    E_INDEX,
    E_NEG,
    E_NOT,
    E_BINARY,
} ExprKind;

typedef enum BinOp { OP_B_ADD, OP_B_SUB, OP_B_MUL, OP_B_DIV, OP_B_MOD, OP_B_EQ, OP_B_NE,
                     OP_B_LT, OP_B_LE, OP_B_GT, OP_B_GE, OP_B_AND, OP_B_OR } BinOp;

typedef struct Expr Expr;
typedef struct ExprList {
    int len;
    Expr **items;
} ExprList;

/* A string literal is a sequence of parts: text (expr NULL) or an interpolation. */
typedef struct StrPart {
    const char *text;
    Expr *expr;
} StrPart;

struct Expr {
    ExprKind kind;
    Loc loc;
    int64_t i;        /* E_INT, E_BOOL */
    double f;         /* E_FLOAT */
    const char *name; /* E_NAME, E_CALL (callee) */
    BinOp op;         /* E_BINARY */
    Expr *a, *b;      /* operands; E_INDEX: a[b] */
    Expr *c;          /* E_COMPREHENSION: the range's end */
    ExprList args;    /* E_CALL arguments, E_LIST items */
    int nparts;       /* E_STRING */
    StrPart *parts;
};

typedef enum StmtKind {
    S_LET,    /* let a, b = value */
    S_ASSIGN, /* name = value */
    S_IF,
    S_FOR,
    S_RETURN,
    S_OUTPUT,
    S_SCOPE,
    S_CHUNK,
    S_RECOMPUTE, /* recompute { ... }: nodes inside are recomputed in backward, not stored */
    S_EXPR,
    S_BLOCK,
} StmtKind;

typedef struct Stmt Stmt;
typedef struct StmtList {
    int len;
    Stmt **items;
} StmtList;

typedef struct NameList {
    int len;
    const char **items;
    Loc *locs;
} NameList;

struct Stmt {
    StmtKind kind;
    Loc loc;
    NameList names;   /* S_LET targets; S_ASSIGN/S_FOR/S_CHUNK: one name */
    Expr *value;      /* S_LET, S_ASSIGN, S_OUTPUT value, S_IF cond, S_EXPR, S_FOR lo */
    Expr *value2;     /* S_FOR hi; S_OUTPUT/S_SCOPE name string */
    ExprList values;  /* S_RETURN */
    StmtList body;    /* blocks; S_IF then-branch */
    Stmt *else_branch; /* S_IF: NULL, an S_BLOCK or another S_IF */
};

/* Top-level declarations. */
typedef enum DeclKind { D_IMPORT, D_HYPER, D_FN, D_STMT } DeclKind;

typedef struct Decl {
    DeclKind kind;
    Loc loc;
    const char *name; /* D_IMPORT: path; D_HYPER, D_FN: name */
    Expr *value;      /* D_HYPER default */
    NameList params;  /* D_FN */
    StmtList body;    /* D_FN */
    Stmt *stmt;       /* D_STMT */
} Decl;

typedef struct DeclList {
    int len, cap;
    Decl **items;
} DeclList;

/* Builders used by the grammar actions (allocating in arena). */
Expr *ast_expr(Arena *a, ExprKind kind, Loc loc);
Expr *ast_binary(Arena *a, BinOp op, Expr *l, Expr *r, Loc loc);
Stmt *ast_stmt(Arena *a, StmtKind kind, Loc loc);
Decl *ast_decl(Arena *a, DeclKind kind, Loc loc);
void ast_expr_push(Arena *a, ExprList *l, Expr *e);
void ast_stmt_push(Arena *a, StmtList *l, Stmt *s);
void ast_name_push(Arena *a, NameList *l, const char *name, Loc loc);
void ast_decl_push(DeclList *l, Decl *d); /* heap-grown; freed with ast_decls_free */
void ast_decls_free(DeclList *l);

/* Parses one file's text into top-level declarations. file is the index
 * recorded in every Loc; texts gives diag access to the source for carets. */
struct Program;
int ast_parse_file(struct Program *p, int file, DeclList *out, Err *err);
/* Parses text (one expression) found at loc; used for {expr} in string literals. */
Expr *ast_parse_expr(struct Program *p, const char *text, Loc loc, Err *err);

#endif
