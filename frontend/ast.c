#include "ast.h"

#include <stdlib.h>
#include <string.h>

Expr *ast_expr(Arena *a, ExprKind kind, Loc loc) {
    Expr *e = arena_alloc(a, sizeof *e);
    e->kind = kind;
    e->loc = loc;
    return e;
}

Expr *ast_binary(Arena *a, BinOp op, Expr *l, Expr *r, Loc loc) {
    Expr *e = ast_expr(a, E_BINARY, loc);
    e->op = op;
    e->a = l;
    e->b = r;
    return e;
}

Stmt *ast_stmt(Arena *a, StmtKind kind, Loc loc) {
    Stmt *s = arena_alloc(a, sizeof *s);
    s->kind = kind;
    s->loc = loc;
    return s;
}

Decl *ast_decl(Arena *a, DeclKind kind, Loc loc) {
    Decl *d = arena_alloc(a, sizeof *d);
    d->kind = kind;
    d->loc = loc;
    return d;
}

/* Arena arrays cannot be reallocated: a full array (length a power of two)
 * is copied into one twice as large; the waste is at most the final size. */
static void *grow(Arena *a, void *items, int len, size_t size) {
    if (len != 0 && (len & (len - 1)) != 0) return items;
    void *bigger = arena_alloc(a, size * (size_t)(len ? 2 * len : 1));
    if (len) memcpy(bigger, items, size * (size_t)len);
    return bigger;
}

void ast_expr_push(Arena *a, ExprList *l, Expr *e) {
    l->items = grow(a, l->items, l->len, sizeof *l->items);
    l->items[l->len++] = e;
}

void ast_stmt_push(Arena *a, StmtList *l, Stmt *s) {
    l->items = grow(a, l->items, l->len, sizeof *l->items);
    l->items[l->len++] = s;
}

void ast_name_push(Arena *a, NameList *l, const char *name, Loc loc) {
    l->items = grow(a, l->items, l->len, sizeof *l->items);
    l->locs = grow(a, l->locs, l->len, sizeof *l->locs);
    l->items[l->len] = name;
    l->locs[l->len++] = loc;
}

void ast_decl_push(DeclList *l, Decl *d) {
    if (l->len == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->items = xrealloc(l->items, sizeof *l->items * (size_t)l->cap);
    }
    l->items[l->len++] = d;
}

void ast_decls_free(DeclList *l) {
    free(l->items);
    l->items = NULL;
    l->len = l->cap = 0;
}
