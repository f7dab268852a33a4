/* Lowering: runs the top-level statements in order. Scalars are computed here;
 * tensor operations append graph nodes (eval_emit). `if` chooses at compile
 * time and `for` unrolls, so the graph has no control flow. */
#include "eval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diag.h"

enum { MAX_NOTES = 8 };
static const int64_t VALUE_BUDGET_BYTES = (int64_t)256 << 20;

typedef struct Var {
    const char *name;
    Val v;
} Var;

struct Frame {
    Frame *parent; /* NULL at a function's (or the program's) outermost block */
    VEC(Var) vars;
};

/* Statement results: an error, fall through, or a `return` (value in *ret). */
enum { EXEC_ERROR = -1, EXEC_NEXT = 0, EXEC_RETURN = 1 };

int eval_error(Eval *ev, Loc loc, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    diag_error(ev->p, loc, ev->err, "%s", msg);
    for (int i = ev->depth - 1, shown = 0; i >= 0; i--, shown++) {
        if (shown == MAX_NOTES) {
            char more[64];
            snprintf(more, sizeof more, "called from here (and %d more callers)", i);
            diag_note(ev->p, ev->calls[i], ev->err, more);
            break;
        }
        diag_note(ev->p, ev->calls[i], ev->err, "called from here");
    }
    return -1;
}

void *eval_alloc(Eval *ev, Loc loc, size_t n) {
    ev->bytes += (int64_t)n;
    if (ev->bytes > VALUE_BUDGET_BYTES) {
        eval_error(ev, loc, "model too large: more than %lld MiB of compile-time values",
                   (long long)(VALUE_BUDGET_BYTES >> 20));
        return NULL;
    }
    return arena_alloc(&ev->arena, n ? n : 1);
}

int eval_emit(Eval *ev, Loc loc, OpKind op, const ValueId *in, int nin, const Attr *attrs, int nattrs,
              ValueId *out) {
    if ((int64_t)ev->g->nodes.len >= ev->p->max_nodes)
        return eval_error(ev, loc, "model too large: more than %lld graph nodes", (long long)ev->p->max_nodes);
    Err why = {0};
    if (ir_emit(ev->g, op, in, nin, attrs, nattrs, out, &why) < 0) return eval_error(ev, loc, "%s", why.msg);
    return 0;
}

int eval_tensor(Eval *ev, Loc loc, const Val *v, ValueId *out) {
    if (v->kind == V_TENSOR) {
        *out = v->tensor;
        return 0;
    }
    if (!value_is_number(v)) return eval_error(ev, loc, "expected a tensor or a number, got %s", value_kind_name(v->kind));
    Attr a = attr_float("value", value_number(v));
    return eval_emit(ev, loc, OP_CONST, NULL, 0, &a, 1, out);
}

/* ---- variables ---- */

static Var *find_var(Frame *f, const char *name) {
    for (; f; f = f->parent)
        for (size_t i = f->vars.len; i-- > 0;)
            if (strcmp(f->vars.data[i].name, name) == 0) return &f->vars.data[i];
    return NULL;
}

static void define_var(Eval *ev, const char *name, Val v) {
    Var var = {name, v};
    VEC_PUSH(ev->frame->vars, var);
}

static int lookup(Eval *ev, const Expr *e, Val *out) {
    Var *var = find_var(ev->frame, e->name);
    const HyperDecl *h = var ? NULL : hyper_find(ev->p, e->name);
    if (var) *out = var->v;
    else if (h) *out = h->value;
    else if (strcmp(e->name, "B") == 0) *out = value_dim(dim_sym_b());
    else if (strcmp(e->name, "T") == 0) *out = value_dim(dim_sym_t());
    else return eval_error(ev, e->loc, "unknown name '%s'", e->name);
    return 0;
}

/* ---- expressions ---- */

typedef int (*EvalFn)(Eval *ev, const Expr *e, Val *out);

static int eval_int(Eval *ev, const Expr *e, Val *out) { (void)ev; *out = value_int(e->i); return 0; }
static int eval_float(Eval *ev, const Expr *e, Val *out) { (void)ev; *out = value_float(e->f); return 0; }
static int eval_bool(Eval *ev, const Expr *e, Val *out) { (void)ev; *out = value_bool((int)e->i); return 0; }
static int eval_none(Eval *ev, const Expr *e, Val *out) { (void)ev; (void)e; *out = value_none(); return 0; }

static int eval_string(Eval *ev, const Expr *e, Val *out) {
    Buf b = {0};
    buf_puts(&b, "");
    for (int i = 0; i < e->nparts; i++) {
        const StrPart *part = &e->parts[i];
        Val v;
        if (!part->expr) {
            buf_puts(&b, part->text);
            continue;
        }
        if (eval_expr(ev, part->expr, &v)) {
            buf_free(&b);
            return -1;
        }
        if (value_format(&b, &v)) {
            buf_free(&b);
            return eval_error(ev, part->expr->loc, "cannot put a %s in a string", value_kind_name(v.kind));
        }
    }
    char *s = eval_alloc(ev, e->loc, b.len + 1);
    if (s) memcpy(s, b.data, b.len + 1);
    buf_free(&b);
    if (!s) return -1;
    *out = value_str(s);
    return 0;
}

static int eval_list(Eval *ev, const Expr *e, Val *out) {
    Val *items = eval_alloc(ev, e->loc, sizeof(Val) * (size_t)e->args.len);
    if (!items) return -1;
    for (int i = 0; i < e->args.len; i++)
        if (eval_expr(ev, e->args.items[i], &items[i])) return -1;
    *out = (Val){.kind = V_LIST, .list = {e->args.len, items}};
    return 0;
}

static int eval_int_expr(Eval *ev, const Expr *e, const char *what, int64_t *out);

/* [item for v in lo..hi]: builds a list in one allocation (a loop of `xs + [x]`
 * would copy the list every iteration). */
static int eval_comprehension(Eval *ev, const Expr *e, Val *out) {
    int64_t lo = 0, hi = 0;
    if (eval_int_expr(ev, e->b, "a range bound", &lo) || eval_int_expr(ev, e->c, "a range bound", &hi)) return -1;
    int64_t n = hi > lo ? hi - lo : 0;
    if (n > MAX_LIST_LEN) return eval_error(ev, e->loc, "model too large: a list of more than %d items", MAX_LIST_LEN);
    Val *items = eval_alloc(ev, e->loc, sizeof(Val) * (size_t)(n ? n : 1));
    if (!items) return -1;
    for (int64_t i = 0; i < n; i++) {
        if (++ev->iterations > ev->p->max_iterations)
            return eval_error(ev, e->loc, "model too large: more than %lld loop iterations",
                              (long long)ev->p->max_iterations);
        Frame f = {.parent = ev->frame};
        ev->frame = &f;
        define_var(ev, e->name, value_int(lo + i));
        int rc = eval_expr(ev, e->a, &items[i]);
        ev->frame = f.parent;
        VEC_FREE(f.vars);
        if (rc) return -1;
    }
    *out = (Val){.kind = V_LIST, .list = {(int)n, items}};
    return 0;
}

static int eval_index(Eval *ev, const Expr *e, Val *out) {
    Val xs, idx;
    if (eval_expr(ev, e->a, &xs) || eval_expr(ev, e->b, &idx)) return -1;
    if (xs.kind != V_LIST && xs.kind != V_TUPLE)
        return eval_error(ev, e->loc, "cannot index a %s%s", value_kind_name(xs.kind),
                          xs.kind == V_TENSOR ? " (use slice or gather)" : "");
    if (idx.kind != V_INT) return eval_error(ev, e->b->loc, "a list index must be an int, got %s", value_kind_name(idx.kind));
    int64_t i = idx.i < 0 ? idx.i + xs.list.len : idx.i;
    if (i < 0 || i >= xs.list.len)
        return eval_error(ev, e->b->loc, "index %lld is out of range for a list of %d", (long long)idx.i, xs.list.len);
    *out = xs.list.items[i];
    return 0;
}

static int eval_neg(Eval *ev, const Expr *e, Val *out) {
    Val zero = value_int(0), x;
    if (eval_expr(ev, e->a, &x)) return -1;
    if (x.kind == V_TENSOR) {
        ValueId r;
        if (eval_emit(ev, e->loc, OP_NEG, &x.tensor, 1, NULL, 0, &r)) return -1;
        *out = value_tensor(r);
        return 0;
    }
    if (x.kind == V_FLOAT) {
        *out = value_float(-x.f);
        return 0;
    }
    if (x.kind != V_INT && x.kind != V_DIM) return eval_error(ev, e->loc, "cannot negate a %s", value_kind_name(x.kind));
    return eval_binary(ev, e->loc, OP_B_SUB, &zero, &x, out);
}

static int eval_not(Eval *ev, const Expr *e, Val *out) {
    Val x;
    if (eval_expr(ev, e->a, &x)) return -1;
    if (x.kind != V_BOOL) return eval_error(ev, e->loc, "'not' needs a bool, got %s", value_kind_name(x.kind));
    *out = value_bool(!x.i);
    return 0;
}

static int eval_bool_operand(Eval *ev, const Expr *e, const char *op, int *out) {
    Val v;
    if (eval_expr(ev, e, &v)) return -1;
    if (v.kind != V_BOOL) return eval_error(ev, e->loc, "'%s' needs bools, got %s", op, value_kind_name(v.kind));
    *out = (int)v.i;
    return 0;
}

/* `and` / `or` evaluate their right side only when it decides the result. */
static int eval_logic(Eval *ev, const Expr *e, Val *out) {
    int is_and = e->op == OP_B_AND, a = 0, b = 0;
    const char *name = is_and ? "and" : "or";
    if (eval_bool_operand(ev, e->a, name, &a)) return -1;
    if (a != is_and) {
        *out = value_bool(a);
        return 0;
    }
    if (eval_bool_operand(ev, e->b, name, &b)) return -1;
    *out = value_bool(b);
    return 0;
}

static int eval_binary_expr(Eval *ev, const Expr *e, Val *out) {
    if (e->op == OP_B_AND || e->op == OP_B_OR) return eval_logic(ev, e, out);
    Val a, b;
    if (eval_expr(ev, e->a, &a) || eval_expr(ev, e->b, &b)) return -1;
    return eval_binary(ev, e->loc, e->op, &a, &b, out);
}

static int call_function(Eval *ev, const Expr *call, const Decl *fn, Val *args, Val *out);

static int eval_call(Eval *ev, const Expr *e, Val *out) {
    Val *args = eval_alloc(ev, e->loc, sizeof(Val) * (size_t)e->args.len);
    if (!args) return -1;
    for (int i = 0; i < e->args.len; i++)
        if (eval_expr(ev, e->args.items[i], &args[i])) return -1;
    int64_t fn;
    if (strmap_get(&ev->p->fn_index, e->name, &fn)) {
        return call_function(ev, e, ev->p->fns.data[fn], args, out);
    }
    int rc = builtin_call(ev, e, args, e->args.len, out);
    if (rc > 0) return eval_error(ev, e->loc, "unknown function or op '%s'", e->name);
    return rc;
}

static const EvalFn eval_table[] = {
    [E_INT] = eval_int,     [E_FLOAT] = eval_float, [E_STRING] = eval_string, [E_BOOL] = eval_bool,
    [E_NONE] = eval_none,   [E_NAME] = lookup,      [E_LIST] = eval_list, [E_COMPREHENSION] = eval_comprehension,     [E_CALL] = eval_call,
    [E_INDEX] = eval_index, [E_NEG] = eval_neg,     [E_NOT] = eval_not,       [E_BINARY] = eval_binary_expr,
};

int eval_expr(Eval *ev, const Expr *e, Val *out) {
    if (ev->nesting >= EVAL_MAX_NESTING) return eval_error(ev, e->loc, "expressions nested too deep");
    ev->nesting++;
    int rc = eval_table[e->kind](ev, e, out);
    ev->nesting--;
    return rc;
}

/* ---- statements ---- */

typedef int (*ExecFn)(Eval *ev, const Stmt *s, Val *ret);
static int exec_stmt(Eval *ev, const Stmt *s, Val *ret);

/* scope and chunk only tag nodes: their statements run in the enclosing
 * variable scope, so `chunk mlp { let x = ...; }` leaves x visible after it. */
static int exec_tagged(Eval *ev, const StmtList *body, Val *ret) {
    int rc = EXEC_NEXT;
    for (int i = 0; rc == EXEC_NEXT && i < body->len; i++) rc = exec_stmt(ev, body->items[i], ret);
    return rc;
}

/* A block opens a variable scope. */
static int exec_block(Eval *ev, const StmtList *body, Val *ret) {
    Frame f = {.parent = ev->frame};
    ev->frame = &f;
    int rc = EXEC_NEXT;
    for (int i = 0; rc == EXEC_NEXT && i < body->len; i++) rc = exec_stmt(ev, body->items[i], ret);
    ev->frame = f.parent;
    VEC_FREE(f.vars);
    return rc;
}

static int call_function(Eval *ev, const Expr *call, const Decl *fn, Val *args, Val *out) {
    if (call->args.len != fn->params.len)
        return eval_error(ev, call->loc, "function '%s' takes %d argument%s, got %d", fn->name, fn->params.len,
                          fn->params.len == 1 ? "" : "s", call->args.len);
    if (ev->depth >= EVAL_MAX_DEPTH)
        return eval_error(ev, call->loc, "calls nested too deep (more than %d): unbounded recursion?", EVAL_MAX_DEPTH);
    Frame params = {0};
    Frame *caller = ev->frame;
    ev->frame = &params;
    for (int i = 0; i < fn->params.len; i++) define_var(ev, fn->params.items[i], args[i]);
    ev->calls[ev->depth++] = call->loc;
    *out = value_none();
    int rc = exec_block(ev, &fn->body, out);
    ev->depth--;
    ev->frame = caller;
    VEC_FREE(params.vars);
    return rc == EXEC_ERROR ? -1 : 0;
}

static int exec_let(Eval *ev, const Stmt *s, Val *ret) {
    (void)ret;
    Val v;
    if (eval_expr(ev, s->value, &v)) return EXEC_ERROR;
    if (s->names.len == 1) {
        define_var(ev, s->names.items[0], v);
        return EXEC_NEXT;
    }
    if (v.kind != V_TUPLE && v.kind != V_LIST)
        return eval_error(ev, s->loc, "cannot unpack a %s into %d names", value_kind_name(v.kind), s->names.len);
    if (v.list.len != s->names.len)
        return eval_error(ev, s->loc, "cannot unpack %d values into %d names", v.list.len, s->names.len);
    for (int i = 0; i < s->names.len; i++) define_var(ev, s->names.items[i], v.list.items[i]);
    return EXEC_NEXT;
}

static int exec_assign(Eval *ev, const Stmt *s, Val *ret) {
    (void)ret;
    const char *name = s->names.items[0];
    Var *var = find_var(ev->frame, name);
    if (!var && hyper_find(ev->p, name)) return eval_error(ev, s->loc, "cannot assign to hyperparameter '%s'", name);
    if (!var) return eval_error(ev, s->loc, "unknown name '%s' (declare it with let)", name);
    Val v;
    if (eval_expr(ev, s->value, &v)) return EXEC_ERROR;
    var = find_var(ev->frame, name); /* the frame's array may have moved */
    var->v = v;
    return EXEC_NEXT;
}

static int eval_cond(Eval *ev, const Expr *e, const char *what, int *out) {
    Val v;
    if (eval_expr(ev, e, &v)) return -1;
    if (v.kind != V_BOOL) return eval_error(ev, e->loc, "%s needs a bool, got %s", what, value_kind_name(v.kind));
    *out = (int)v.i;
    return 0;
}

static int exec_if(Eval *ev, const Stmt *s, Val *ret) {
    int c = 0;
    if (eval_cond(ev, s->value, "'if'", &c)) return EXEC_ERROR;
    if (c) return exec_block(ev, &s->body, ret);
    return s->else_branch ? exec_stmt(ev, s->else_branch, ret) : EXEC_NEXT;
}

static int eval_int_expr(Eval *ev, const Expr *e, const char *what, int64_t *out) {
    Val v;
    if (eval_expr(ev, e, &v)) return -1;
    if (v.kind != V_INT) return eval_error(ev, e->loc, "%s must be an int, got %s", what, value_kind_name(v.kind));
    *out = v.i;
    return 0;
}

static int exec_for(Eval *ev, const Stmt *s, Val *ret) {
    int64_t lo = 0, hi = 0;
    if (eval_int_expr(ev, s->value, "a loop bound", &lo) || eval_int_expr(ev, s->value2, "a loop bound", &hi))
        return EXEC_ERROR;
    for (int64_t i = lo; i < hi; i++) {
        if (++ev->iterations > ev->p->max_iterations)
            return eval_error(ev, s->loc, "model too large: more than %lld loop iterations",
                              (long long)ev->p->max_iterations);
        Frame f = {.parent = ev->frame};
        ev->frame = &f;
        define_var(ev, s->names.items[0], value_int(i));
        int rc = exec_block(ev, &s->body, ret);
        ev->frame = f.parent;
        VEC_FREE(f.vars);
        if (rc != EXEC_NEXT) return rc;
    }
    return EXEC_NEXT;
}

static int exec_return(Eval *ev, const Stmt *s, Val *ret) {
    if (ev->depth == 0) return eval_error(ev, s->loc, "'return' outside a function");
    int n = s->values.len;
    if (n == 0) *ret = value_none();
    if (n == 1 && eval_expr(ev, s->values.items[0], ret)) return EXEC_ERROR;
    if (n > 1) {
        Val *items = eval_alloc(ev, s->loc, sizeof(Val) * (size_t)n);
        if (!items) return EXEC_ERROR;
        for (int i = 0; i < n; i++)
            if (eval_expr(ev, s->values.items[i], &items[i])) return EXEC_ERROR;
        *ret = (Val){.kind = V_TUPLE, .list = {n, items}};
    }
    return EXEC_RETURN;
}

static int eval_text(Eval *ev, const Expr *e, const char *what, const char **out) {
    Val v;
    if (eval_expr(ev, e, &v)) return -1;
    if (v.kind != V_STR) return eval_error(ev, e->loc, "%s must be a string, got %s", what, value_kind_name(v.kind));
    *out = v.s;
    return 0;
}

static int exec_output(Eval *ev, const Stmt *s, Val *ret) {
    (void)ret;
    const char *name = 0;
    Val v;
    if (eval_text(ev, s->value2, "an output name", &name) || eval_expr(ev, s->value, &v)) return EXEC_ERROR;
    if (v.kind != V_TENSOR)
        return eval_error(ev, s->value->loc, "output '%s' must be a tensor, got %s", name, value_kind_name(v.kind));
    for (size_t i = 0; i < ev->g->outputs.len; i++)
        if (strcmp(ev->g->outputs.data[i].name, name) == 0)
            return eval_error(ev, s->loc, "output '%s' is defined twice", name);
    Err why = {0};
    if (ir_add_output(ev->g, name, v.tensor, &why)) return eval_error(ev, s->loc, "%s", why.msg);
    return EXEC_NEXT;
}

static int exec_scope(Eval *ev, const Stmt *s, Val *ret) {
    const char *name = 0;
    if (eval_text(ev, s->value2, "a scope name", &name)) return EXEC_ERROR;
    const char *saved = ev->g->cur_scope;
    char *joined = *saved && *name ? xsprintf("%s.%s", saved, name) : xstrdup(*name ? name : saved);
    ev->g->cur_scope = graph_intern(ev->g, joined);
    free(joined);
    int rc = exec_tagged(ev, &s->body, ret);
    ev->g->cur_scope = saved;
    return rc;
}

static int exec_chunk(Eval *ev, const Stmt *s, Val *ret) {
    Chunk c;
    if (chunk_parse(s->names.items[0], &c))
        return eval_error(ev, s->loc, "unknown chunk '%s' (attention, dispatch, mlp or combine)", s->names.items[0]);
    Chunk saved = ev->g->cur_chunk;
    ev->g->cur_chunk = c;
    int rc = exec_tagged(ev, &s->body, ret);
    ev->g->cur_chunk = saved;
    return rc;
}

static int exec_recompute(Eval *ev, const Stmt *s, Val *ret) {
    unsigned saved = ev->g->cur_flags;
    ev->g->cur_flags |= NODE_RECOMPUTE;
    int rc = exec_tagged(ev, &s->body, ret);
    ev->g->cur_flags = saved;
    return rc;
}

static int exec_expr(Eval *ev, const Stmt *s, Val *ret) {
    (void)ret;
    Val v;
    return eval_expr(ev, s->value, &v) ? EXEC_ERROR : EXEC_NEXT;
}

static int exec_nested(Eval *ev, const Stmt *s, Val *ret) { return exec_block(ev, &s->body, ret); }

static const ExecFn exec_table[] = {
    [S_LET] = exec_let,       [S_ASSIGN] = exec_assign, [S_IF] = exec_if,       [S_FOR] = exec_for,
    [S_RETURN] = exec_return, [S_OUTPUT] = exec_output, [S_SCOPE] = exec_scope, [S_CHUNK] = exec_chunk, [S_RECOMPUTE] = exec_recompute,
    [S_EXPR] = exec_expr,     [S_BLOCK] = exec_nested,
};

static int exec_stmt(Eval *ev, const Stmt *s, Val *ret) {
    if (ev->nesting >= EVAL_MAX_NESTING) return eval_error(ev, s->loc, "statements nested too deep");
    ev->nesting++;
    int rc = exec_table[s->kind](ev, s, ret);
    ev->nesting--;
    return rc;
}

Graph *program_lower(Program *p, Err *err) {
    Eval ev = {.p = p, .g = graph_new(), .err = err};
    Frame top = {0};
    ev.frame = &top;
    Val ret;
    int rc = EXEC_NEXT;
    for (size_t i = 0; rc == EXEC_NEXT && i < p->stmts.len; i++) rc = exec_stmt(&ev, p->stmts.data[i], &ret);
    VEC_FREE(top.vars);
    arena_free(&ev.arena);
    if (rc == EXEC_ERROR) {
        graph_free(ev.g);
        return NULL;
    }
    return ev.g;
}
