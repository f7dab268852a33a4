/* The binary operators on every kind of value: ints and floats compute now,
 * dims combine as polynomials in B and T, tensors emit add/sub/mul/div, lists
 * and strings concatenate with `+`. Comparisons are compile-time only. */
#include <math.h>
#include <string.h>

#include "eval.h"


static const char *const verbs[] = {
    [OP_B_ADD] = "add",     [OP_B_SUB] = "subtract", [OP_B_MUL] = "multiply", [OP_B_DIV] = "divide",
    [OP_B_MOD] = "take the remainder of", [OP_B_EQ] = "compare", [OP_B_NE] = "compare", [OP_B_LT] = "compare",
    [OP_B_LE] = "compare", [OP_B_GT] = "compare", [OP_B_GE] = "compare", [OP_B_AND] = "combine",
    [OP_B_OR] = "combine",
};

static const OpKind tensor_ops[] = {[OP_B_ADD] = OP_ADD, [OP_B_SUB] = OP_SUB, [OP_B_MUL] = OP_MUL, [OP_B_DIV] = OP_DIV};

static int is_compare(BinOp op) { return op >= OP_B_EQ && op <= OP_B_GE; }
static int is_arith(BinOp op) { return op <= OP_B_DIV; }

static int mismatch(Eval *ev, Loc loc, BinOp op, const Val *a, const Val *b) {
    return eval_error(ev, loc, "cannot %s %s and %s", verbs[op], value_kind_name(a->kind), value_kind_name(b->kind));
}

/* Result of comparing by sign (a<b: -1, a==b: 0, a>b: 1). */
static int ordered(BinOp op, int sign) {
    static const int want_lt[] = {[OP_B_EQ] = 0, [OP_B_NE] = 1, [OP_B_LT] = 1, [OP_B_LE] = 1, [OP_B_GT] = 0, [OP_B_GE] = 0};
    static const int want_eq[] = {[OP_B_EQ] = 1, [OP_B_NE] = 0, [OP_B_LT] = 0, [OP_B_LE] = 1, [OP_B_GT] = 0, [OP_B_GE] = 1};
    static const int want_gt[] = {[OP_B_EQ] = 0, [OP_B_NE] = 1, [OP_B_LT] = 0, [OP_B_LE] = 0, [OP_B_GT] = 1, [OP_B_GE] = 1};
    return sign < 0 ? want_lt[op] : sign == 0 ? want_eq[op] : want_gt[op];
}

static int number_sign(const Val *a, const Val *b) {
    if (a->kind == V_INT && b->kind == V_INT) return (a->i > b->i) - (a->i < b->i);
    double x = value_number(a), y = value_number(b);
    return (x > y) - (x < y);
}

/* Kinds that only support equality: none, bool, string, dim. */
static int equality_only(Eval *ev, Loc loc, BinOp op, const Val *a, const Val *b, int equal, Val *out) {
    if (op != OP_B_EQ && op != OP_B_NE) return eval_error(ev, loc, "cannot order %s and %s", value_kind_name(a->kind), value_kind_name(b->kind));
    *out = value_bool(op == OP_B_EQ ? equal : !equal);
    return 0;
}

static int compare(Eval *ev, Loc loc, BinOp op, const Val *a, const Val *b, Val *out) {
    Dim x, y;
    if (a->kind == V_NONE || b->kind == V_NONE)
        return equality_only(ev, loc, op, a, b, a->kind == b->kind, out);
    if (value_is_number(a) && value_is_number(b)) {
        *out = value_bool(ordered(op, number_sign(a, b)));
        return 0;
    }
    if (a->kind == V_STR && b->kind == V_STR) return equality_only(ev, loc, op, a, b, strcmp(a->s, b->s) == 0, out);
    if (a->kind == V_BOOL && b->kind == V_BOOL) return equality_only(ev, loc, op, a, b, a->i == b->i, out);
    if ((a->kind == V_DIM || b->kind == V_DIM) && value_as_dim(a, &x) == 0 && value_as_dim(b, &y) == 0)
        return equality_only(ev, loc, op, a, b, dim_equal(x, y), out);
    return mismatch(ev, loc, op, a, b);
}

static int int_binary(Eval *ev, Loc loc, BinOp op, int64_t a, int64_t b, Val *out) {
    int64_t r = 0;
    int overflow = 0;
    if (op == OP_B_ADD) overflow = __builtin_add_overflow(a, b, &r);
    if (op == OP_B_SUB) overflow = __builtin_sub_overflow(a, b, &r);
    if (op == OP_B_MUL) overflow = __builtin_mul_overflow(a, b, &r);
    if (op == OP_B_MOD) {
        if (b == 0) return eval_error(ev, loc, "integer division by zero");
        r = b == -1 ? 0 : a % b;
    }
    if (overflow) return eval_error(ev, loc, "integer overflow");
    *out = value_int(r);
    return 0;
}

static int float_binary(Eval *ev, Loc loc, BinOp op, double a, double b, Val *out) {
    static const char *const names[] = {[OP_B_ADD] = "+", [OP_B_SUB] = "-", [OP_B_MUL] = "*", [OP_B_DIV] = "/"};
    if (op == OP_B_MOD) return eval_error(ev, loc, "'%%' needs integers, got float");
    if (op == OP_B_DIV && b == 0) return eval_error(ev, loc, "division by zero");
    double r = op == OP_B_ADD ? a + b : op == OP_B_SUB ? a - b : op == OP_B_MUL ? a * b : a / b;
    if (!isfinite(r)) return eval_error(ev, loc, "'%s' gives a value that is not finite", names[op]);
    *out = value_float(r);
    return 0;
}

static int number_binary(Eval *ev, Loc loc, BinOp op, const Val *a, const Val *b, Val *out) {
    if (a->kind == V_INT && b->kind == V_INT && op != OP_B_DIV) return int_binary(ev, loc, op, a->i, b->i, out);
    return float_binary(ev, loc, op, value_number(a), value_number(b), out);
}

static int dim_binary(Eval *ev, Loc loc, BinOp op, const Val *a, const Val *b, Val *out) {
    Dim x, y, r;
    Err why = {0};
    if (value_as_dim(a, &x) || value_as_dim(b, &y) || op == OP_B_MOD) return mismatch(ev, loc, op, a, b);
    int rc;
    if (op == OP_B_ADD) rc = dim_add(x, y, &r, &why);
    else if (op == OP_B_SUB) rc = dim_sub(x, y, &r, &why);
    else if (op == OP_B_MUL) rc = dim_mul(x, y, &r, &why);
    else if (b->kind != V_INT) return eval_error(ev, loc, "a dim can only be divided by an int");
    else if (b->i == 0) return eval_error(ev, loc, "integer division by zero");
    else rc = dim_div_const(x, b->i, &r, &why);
    if (rc) return eval_error(ev, loc, "%s", why.msg);
    *out = value_dim(r);
    return 0;
}

static int tensor_binary(Eval *ev, Loc loc, BinOp op, const Val *a, const Val *b, Val *out) {
    int a_ok = a->kind == V_TENSOR || value_is_number(a), b_ok = b->kind == V_TENSOR || value_is_number(b);
    if (!is_arith(op) || !a_ok || !b_ok) {
        if (is_compare(op) && a_ok && b_ok)
            return eval_error(ev, loc, "cannot compare tensors (comparisons are computed at compile time)");
        return mismatch(ev, loc, op, a, b);
    }
    ValueId in[2], r;
    if (eval_tensor(ev, loc, a, &in[0]) || eval_tensor(ev, loc, b, &in[1])) return -1;
    if (eval_emit(ev, loc, tensor_ops[op], in, 2, NULL, 0, &r)) return -1;
    *out = value_tensor(r);
    return 0;
}

static int list_concat(Eval *ev, Loc loc, const Val *a, const Val *b, Val *out) {
    int64_t n = (int64_t)a->list.len + b->list.len;
    if (n > MAX_LIST_LEN) return eval_error(ev, loc, "model too large: a list of more than %d items", MAX_LIST_LEN);
    Val *items = eval_alloc(ev, loc, sizeof(Val) * (size_t)n);
    if (!items) return -1;
    if (a->list.len) memcpy(items, a->list.items, sizeof(Val) * (size_t)a->list.len);
    if (b->list.len) memcpy(items + a->list.len, b->list.items, sizeof(Val) * (size_t)b->list.len);
    *out = (Val){.kind = V_LIST, .list = {(int)n, items}};
    return 0;
}

static int string_concat(Eval *ev, Loc loc, const Val *a, const Val *b, Val *out) {
    size_t la = strlen(a->s), lb = strlen(b->s);
    char *s = eval_alloc(ev, loc, la + lb + 1);
    if (!s) return -1;
    memcpy(s, a->s, la);
    memcpy(s + la, b->s, lb + 1);
    *out = value_str(s);
    return 0;
}

static int is_seq(const Val *v) { return v->kind == V_LIST || v->kind == V_TUPLE; }

int eval_binary(Eval *ev, Loc loc, BinOp op, const Val *a, const Val *b, Val *out) {
    /* `x == none` is how a program asks "not set yet", whatever x holds */
    if ((op == OP_B_EQ || op == OP_B_NE) && (a->kind == V_NONE || b->kind == V_NONE))
        return equality_only(ev, loc, op, a, b, a->kind == b->kind, out);
    if (a->kind == V_TENSOR || b->kind == V_TENSOR) return tensor_binary(ev, loc, op, a, b, out);
    if (is_compare(op)) return compare(ev, loc, op, a, b, out);
    if (op == OP_B_ADD && is_seq(a) && is_seq(b)) return list_concat(ev, loc, a, b, out);
    if (op == OP_B_ADD && a->kind == V_STR && b->kind == V_STR) return string_concat(ev, loc, a, b, out);
    if ((a->kind == V_DIM || b->kind == V_DIM) && (is_arith(op) || op == OP_B_MOD))
        return dim_binary(ev, loc, op, a, b, out);
    if (value_is_number(a) && value_is_number(b) && (is_arith(op) || op == OP_B_MOD))
        return number_binary(ev, loc, op, a, b, out);
    return mismatch(ev, loc, op, a, b);
}
