/* Built-in functions: scalar math, sources (weight, input) and one builtin per
 * tensor op. A tensor op's positional arguments map to its inputs and then to
 * its attributes in the order docs/dsl.md lists (op_specs below). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval.h"

enum { MAX_OP_ARGS = 5, MAX_TENSOR_LIST = 1024 };
static const int64_t MAX_WEIGHT_ELEMENTS = (int64_t)1 << 40;

/* ---- tensor ops ---- */

typedef enum ArgKind { A_END, A_TENSOR, A_TENSORS, A_INT, A_FLOAT, A_DIMS, A_DIM1, A_DTYPE } ArgKind;

typedef struct ArgSpec {
    ArgKind kind;
    const char *attr; /* attribute key; NULL for inputs */
} ArgSpec;

typedef struct OpSpec {
    const char *name;
    OpKind op;
    int required; /* arguments that must be given; the rest are optional attributes */
    ArgSpec args[MAX_OP_ARGS];
} OpSpec;

#define T_ {A_TENSOR, NULL}
#define UNARY(nm, e) {nm, e, 1, {T_}}
#define BINARY(nm, e) {nm, e, 2, {T_, T_}}
#define REDUCE(nm, e) {nm, e, 2, {T_, {A_INT, "axis"}, {A_INT, "keepdim"}}}

static const OpSpec op_specs[] = {
    UNARY("neg", OP_NEG), UNARY("exp", OP_EXP), UNARY("log", OP_LOG), UNARY("sqrt", OP_SQRT),
    UNARY("rsqrt", OP_RSQRT), UNARY("recip", OP_RECIP), UNARY("abs", OP_ABS), UNARY("sigmoid", OP_SIGMOID),
    UNARY("silu", OP_SILU), UNARY("mean_all", OP_MEAN_ALL),
    {"cast", OP_CAST, 2, {T_, {A_DTYPE, "to"}}},
    BINARY("add", OP_ADD), BINARY("sub", OP_SUB), BINARY("mul", OP_MUL), BINARY("div", OP_DIV),
    BINARY("maximum", OP_MAXIMUM), BINARY("minimum", OP_MINIMUM),
    {"where", OP_WHERE, 3, {T_, T_, T_}},
    REDUCE("sum", OP_SUM), REDUCE("mean", OP_MEAN), REDUCE("max", OP_MAX),
    {"softmax", OP_SOFTMAX, 1, {T_, {A_INT, "axis"}}},
    BINARY("linear", OP_LINEAR), BINARY("embedding", OP_EMBEDDING),
    {"reshape", OP_RESHAPE, 2, {T_, {A_DIMS, "shape"}}},
    {"expand", OP_EXPAND, 2, {T_, {A_DIMS, "shape"}}},
    {"slice", OP_SLICE, 4, {T_, {A_INT, "axis"}, {A_DIM1, "start"}, {A_DIM1, "end"}}},
    {"concat", OP_CONCAT, 2, {{A_TENSORS, NULL}, {A_INT, "axis"}}},
    {"stack", OP_STACK, 1, {{A_TENSORS, NULL}}},
    {"topk", OP_TOPK, 2, {T_, {A_INT, "k"}}},
    BINARY("gather", OP_GATHER),
    {"one_hot", OP_ONE_HOT, 2, {T_, {A_INT, "n"}}},
    {"moe_dispatch", OP_MOE_DISPATCH, 3, {T_, T_, {A_INT, "experts"}}},
    {"grouped_linear", OP_GROUPED_LINEAR, 3, {T_, T_, T_}},
    {"moe_combine", OP_MOE_COMBINE, 3, {T_, T_, T_}},
    {"rope", OP_ROPE, 2, {T_, T_, {A_FLOAT, "scale"}}},
    {"sdpa", OP_SDPA, 4, {T_, T_, T_, {A_FLOAT, "scale"}, {A_INT, "causal"}}},
    BINARY("cross_entropy", OP_CROSS_ENTROPY),
    {"iota", OP_IOTA, 1, {{A_INT, "n"}}},
    {"const", OP_CONST, 1, {{A_FLOAT, "value"}}},
};

static const OpSpec *find_op_spec(const char *name) {
    for (size_t i = 0; i < sizeof op_specs / sizeof op_specs[0]; i++)
        if (strcmp(op_specs[i].name, name) == 0) return &op_specs[i];
    return NULL;
}

static int spec_max_args(const OpSpec *s) {
    int n = 0;
    while (n < MAX_OP_ARGS && s->args[n].kind != A_END) n++;
    return n;
}

/* The operands and attributes of one op call, as they are converted. */
typedef struct OpCall {
    ValueId in[MAX_TENSOR_LIST];
    int nin;
    Attr attrs[MAX_OP_ARGS];
    int nattrs;
    Dim dims[MAX_OP_ARGS][IR_MAX_RANK];
} OpCall;

static int arg_error(Eval *ev, const Expr *call, int i, const char *want, const Val *v) {
    return eval_error(ev, call->args.items[i]->loc, "%s: argument %d must be %s, got %s", call->name, i + 1, want,
                      value_kind_name(v->kind));
}

static int add_tensors(Eval *ev, const Expr *call, int i, const Val *v, OpCall *oc) {
    if (v->kind != V_LIST && v->kind != V_TUPLE) return arg_error(ev, call, i, "a list of tensors", v);
    if (v->list.len > MAX_TENSOR_LIST)
        return eval_error(ev, call->args.items[i]->loc, "%s: at most %d tensors", call->name, MAX_TENSOR_LIST);
    for (int k = 0; k < v->list.len; k++)
        if (eval_tensor(ev, call->args.items[i]->loc, &v->list.items[k], &oc->in[oc->nin++])) return -1;
    return 0;
}

static int add_dims(Eval *ev, const Expr *call, int i, const Val *v, const char *key, OpCall *oc) {
    Dim *dims = oc->dims[oc->nattrs];
    if (v->kind != V_LIST && v->kind != V_TUPLE) return arg_error(ev, call, i, "a list of ints and dims", v);
    if (v->list.len > IR_MAX_RANK)
        return eval_error(ev, call->args.items[i]->loc, "%s: a shape has at most %d dims", call->name, IR_MAX_RANK);
    for (int k = 0; k < v->list.len; k++)
        if (value_as_dim(&v->list.items[k], &dims[k])) return arg_error(ev, call, i, "a list of ints and dims", v);
    oc->attrs[oc->nattrs++] = attr_dims(key, v->list.len, dims);
    return 0;
}

static int add_arg(Eval *ev, const Expr *call, int i, const ArgSpec *spec, const Val *v, OpCall *oc) {
    Dim *dim = oc->dims[oc->nattrs];
    DType dt;
    switch (spec->kind) {
    case A_TENSOR: return eval_tensor(ev, call->args.items[i]->loc, v, &oc->in[oc->nin++]);
    case A_TENSORS: return add_tensors(ev, call, i, v, oc);
    case A_DIMS: return add_dims(ev, call, i, v, spec->attr, oc);
    case A_INT:
        if (v->kind != V_INT && v->kind != V_BOOL) return arg_error(ev, call, i, "an int", v);
        oc->attrs[oc->nattrs++] = attr_int(spec->attr, v->i);
        return 0;
    case A_FLOAT:
        if (!value_is_number(v)) return arg_error(ev, call, i, "a number", v);
        oc->attrs[oc->nattrs++] = attr_float(spec->attr, value_number(v));
        return 0;
    case A_DIM1:
        if (value_as_dim(v, dim)) return arg_error(ev, call, i, "an int or a dim", v);
        oc->attrs[oc->nattrs++] = attr_dims(spec->attr, 1, dim);
        return 0;
    case A_DTYPE:
        if (v->kind != V_STR || dtype_parse(v->s, &dt)) return arg_error(ev, call, i, "a dtype name (\"bf16\", ...)", v);
        oc->attrs[oc->nattrs++] = attr_dtype(spec->attr, dt);
        return 0;
    case A_END: break;
    }
    return eval_error(ev, call->loc, "%s: too many arguments", call->name);
}

static int emit_spec(Eval *ev, const Expr *call, const OpSpec *spec, Val *args, int nargs, Val *out) {
    int max = spec_max_args(spec);
    if (nargs < spec->required || nargs > max)
        return eval_error(ev, call->loc, "%s takes %d%s argument%s, got %d", call->name, spec->required,
                          max > spec->required ? " or more" : "", max == 1 ? "" : "s", nargs);
    OpCall oc = {0};
    for (int i = 0; i < nargs; i++)
        if (add_arg(ev, call, i, &spec->args[i], &args[i], &oc)) return -1;
    ValueId res[4];
    if (eval_emit(ev, call->loc, spec->op, oc.in, oc.nin, oc.attrs, oc.nattrs, res)) return -1;
    int nout = op_info(spec->op)->nout;
    if (nout == 1) {
        *out = value_tensor(res[0]);
        return 0;
    }
    Val *items = eval_alloc(ev, call->loc, sizeof(Val) * (size_t)nout);
    if (!items) return -1;
    for (int k = 0; k < nout; k++) items[k] = value_tensor(res[k]);
    *out = (Val){.kind = V_TUPLE, .list = {nout, items}};
    return 0;
}

static int emit_named(Eval *ev, const Expr *call, const char *op, Val *args, int nargs, Val *out) {
    return emit_spec(ev, call, find_op_spec(op), args, nargs, out);
}

/* ---- scalar and dispatching builtins ---- */

typedef struct Builtin Builtin;
typedef int (*BuiltinFn)(Eval *ev, const Builtin *self, const Expr *call, Val *args, int nargs, Val *out);

struct Builtin {
    const char *name;
    int min_args, max_args;
    BuiltinFn fn;
    const char *op;            /* the tensor op for a tensor argument */
    double (*math)(double);    /* the scalar function */
};

static int need_number(Eval *ev, const Expr *call, Val *args, int i) {
    if (value_is_number(&args[i])) return 0;
    return arg_error(ev, call, i, "a number", &args[i]);
}

static int finite_result(Eval *ev, const Expr *call, double r, Val *out) {
    if (!isfinite(r)) return eval_error(ev, call->loc, "%s: the result is not a finite number", call->name);
    *out = value_float(r);
    return 0;
}

static int math1(Eval *ev, const Builtin *self, const Expr *call, Val *args, int nargs, Val *out) {
    if (args[0].kind == V_TENSOR && self->op) return emit_named(ev, call, self->op, args, nargs, out);
    if (need_number(ev, call, args, 0)) return -1;
    if (self->math == fabs && args[0].kind == V_INT) {
        if (args[0].i == INT64_MIN) return eval_error(ev, call->loc, "integer overflow");
        *out = value_int(args[0].i < 0 ? -args[0].i : args[0].i);
        return 0;
    }
    double x = value_number(&args[0]);
    if ((self->math == log && x <= 0) || (self->math == sqrt && x < 0))
        return eval_error(ev, call->loc, "%s of %g is not defined", call->name, x);
    return finite_result(ev, call, self->math(x), out);
}

static int float_to_int(Eval *ev, const Expr *call, double x, Val *out) {
    if (!(x >= -9.2e18 && x <= 9.2e18)) return eval_error(ev, call->loc, "%s: %g does not fit an int", call->name, x);
    *out = value_int((int64_t)x);
    return 0;
}

static int rounding(Eval *ev, const Builtin *self, const Expr *call, Val *args, int nargs, Val *out) {
    (void)nargs;
    if (need_number(ev, call, args, 0)) return -1;
    if (args[0].kind == V_INT) {
        *out = args[0];
        return 0;
    }
    return float_to_int(ev, call, self->math(args[0].f), out);
}

static int to_int(Eval *ev, const Builtin *self, const Expr *call, Val *args, int nargs, Val *out) {
    (void)self, (void)nargs;
    if (args[0].kind == V_BOOL || args[0].kind == V_INT) {
        *out = value_int(args[0].i);
        return 0;
    }
    if (need_number(ev, call, args, 0)) return -1;
    return float_to_int(ev, call, args[0].f, out);
}

/* float("-inf"), float("inf"), float("nan") give those values (masks); other strings must be numbers. */
static int parse_float(Eval *ev, const Expr *call, const char *s, Val *out) {
    char *end;
    double f = strtod(s, &end);
    if (!*s || *end) return eval_error(ev, call->loc, "float: \"%s\" is not a number", s);
    *out = value_float(f);
    return 0;
}

static int to_float(Eval *ev, const Builtin *self, const Expr *call, Val *args, int nargs, Val *out) {
    (void)self, (void)nargs;
    if (args[0].kind == V_STR) return parse_float(ev, call, args[0].s, out);
    if (need_number(ev, call, args, 0)) return -1;
    *out = value_float(value_number(&args[0]));
    return 0;
}

static int power(Eval *ev, const Builtin *self, const Expr *call, Val *args, int nargs, Val *out) {
    (void)self, (void)nargs;
    if (need_number(ev, call, args, 0) || need_number(ev, call, args, 1)) return -1;
    return finite_result(ev, call, pow(value_number(&args[0]), value_number(&args[1])), out);
}

/* min/max of numbers; of tensors (elementwise, a number broadcast); max(x, axis[, keepdim]) reduces. */
static int minmax(Eval *ev, const Builtin *self, const Expr *call, Val *args, int nargs, Val *out) {
    int is_max = self->name[1] == 'a';
    if (args[0].kind == V_TENSOR && (args[1].kind == V_INT || nargs == 3)) {
        if (!is_max) return eval_error(ev, call->loc, "min has no reduction form (use -max(-x, axis))");
        return emit_named(ev, call, "max", args, nargs, out);
    }
    if (nargs != 2) return eval_error(ev, call->loc, "%s takes 2 arguments here, got %d", call->name, nargs);
    if (args[0].kind == V_TENSOR || args[1].kind == V_TENSOR)
        return emit_named(ev, call, is_max ? "maximum" : "minimum", args, nargs, out);
    if (need_number(ev, call, args, 0) || need_number(ev, call, args, 1)) return -1;
    int first = (value_number(&args[0]) > value_number(&args[1])) == is_max;
    if (args[0].kind == V_INT && args[1].kind == V_INT) *out = first ? args[0] : args[1];
    else *out = value_float(value_number(first ? &args[0] : &args[1]));
    return 0;
}

static int clamp(Eval *ev, const Builtin *self, const Expr *call, Val *args, int nargs, Val *out) {
    (void)self, (void)nargs;
    for (int i = 0; i < 3; i++)
        if (need_number(ev, call, args, i)) return -1;
    double x = value_number(&args[0]), lo = value_number(&args[1]), hi = value_number(&args[2]);
    const Val *pick = x < lo ? &args[1] : x > hi ? &args[2] : &args[0];
    int all_int = args[0].kind == V_INT && args[1].kind == V_INT && args[2].kind == V_INT;
    *out = all_int ? *pick : value_float(value_number(pick));
    return 0;
}

/* Exact integer division (of ints or dims); inexact is an error, not a rounding. */
static int idiv(Eval *ev, const Builtin *self, const Expr *call, Val *args, int nargs, Val *out) {
    (void)self, (void)nargs;
    if (args[1].kind != V_INT) return arg_error(ev, call, 1, "an int", &args[1]);
    if (args[1].i == 0) return eval_error(ev, call->loc, "integer division by zero");
    if (args[0].kind == V_DIM) return eval_binary(ev, call->loc, OP_B_DIV, &args[0], &args[1], out);
    if (args[0].kind != V_INT) return arg_error(ev, call, 0, "an int", &args[0]);
    int64_t a = args[0].i, b = args[1].i;
    if (b == -1 && a == INT64_MIN) return eval_error(ev, call->loc, "integer overflow");
    if (b != -1 && a % b != 0)
        return eval_error(ev, call->loc, "idiv: %lld is not divisible by %lld", (long long)a, (long long)b);
    *out = value_int(b == -1 ? -a : a / b);
    return 0;
}

static int length(Eval *ev, const Builtin *self, const Expr *call, Val *args, int nargs, Val *out) {
    (void)self, (void)nargs;
    if (args[0].kind == V_STR) *out = value_int((int64_t)strlen(args[0].s));
    else if (args[0].kind == V_LIST || args[0].kind == V_TUPLE) *out = value_int(args[0].list.len);
    else return arg_error(ev, call, 0, "a list or a string", &args[0]);
    return 0;
}

static int error_builtin(Eval *ev, const Builtin *self, const Expr *call, Val *args, int nargs, Val *out) {
    (void)self, (void)nargs, (void)out;
    if (args[0].kind != V_STR) return arg_error(ev, call, 0, "a string", &args[0]);
    return eval_error(ev, call->loc, "%s", args[0].s);
}

static int need_tensor(Eval *ev, const Expr *call, Val *args, int i) {
    return args[i].kind == V_TENSOR ? 0 : arg_error(ev, call, i, "a tensor", &args[i]);
}

static int shape_of(Eval *ev, const Builtin *self, const Expr *call, Val *args, int nargs, Val *out) {
    (void)self, (void)nargs;
    if (need_tensor(ev, call, args, 0)) return -1;
    const Type *t = ir_type(ev->g, args[0].tensor);
    Val *items = eval_alloc(ev, call->loc, sizeof(Val) * (size_t)(t->rank ? t->rank : 1));
    if (!items) return -1;
    for (int i = 0; i < t->rank; i++) items[i] = value_dim(t->dims[i]);
    *out = (Val){.kind = V_LIST, .list = {t->rank, items}};
    return 0;
}

static int rank_of(Eval *ev, const Builtin *self, const Expr *call, Val *args, int nargs, Val *out) {
    (void)self, (void)nargs;
    if (need_tensor(ev, call, args, 0)) return -1;
    *out = value_int(ir_type(ev->g, args[0].tensor)->rank);
    return 0;
}

/* ---- sources ---- */

static void format_list(Buf *b, const Val *v) {
    buf_putc(b, '[');
    for (int i = 0; v->kind == V_LIST && i < v->list.len; i++) {
        if (i) buf_putc(b, ',');
        if (value_format(b, &v->list.items[i])) buf_puts(b, value_kind_name(v->list.items[i].kind));
    }
    buf_putc(b, ']');
}

/* Weights have concrete positive dims and a sane size; inputs may use B and T. */
static int shape_arg(Eval *ev, const Expr *call, int i, const Val *v, const char *name, int concrete, Type *t) {
    int ok = (v->kind == V_LIST || v->kind == V_TUPLE) && v->list.len <= IR_MAX_RANK;
    int64_t total = 1;
    for (int k = 0; ok && k < v->list.len; k++) {
        const Val *d = &v->list.items[k];
        ok = (d->kind == V_INT && d->i > 0) || (!concrete && d->kind == V_DIM);
        if (ok && d->kind == V_INT) ok = !__builtin_mul_overflow(total, d->i, &total) && total <= MAX_WEIGHT_ELEMENTS;
        if (ok) value_as_dim(d, &t->dims[k]);
    }
    if (ok) {
        t->rank = v->list.len;
        return 0;
    }
    Buf b = {0};
    format_list(&b, v);
    eval_error(ev, call->args.items[i]->loc, "%s %s has an invalid shape %s", call->name, name, b.data);
    buf_free(&b);
    return -1;
}

static int dtype_arg(Eval *ev, const Expr *call, int i, const Val *v, DType *out) {
    if (v->kind != V_STR || dtype_parse(v->s, out)) return arg_error(ev, call, i, "a dtype name (\"f32\", \"bf16\", ...)", v);
    return 0;
}

static int source(Eval *ev, const Expr *call, OpKind op, const char *name, Type t, Val *out) {
    Err why = {0};
    if ((int64_t)ev->g->nodes.len >= ev->p->max_nodes)
        return eval_error(ev, call->loc, "model too large: more than %lld graph nodes", (long long)ev->p->max_nodes);
    ValueId v = op == OP_PARAM ? ir_param(ev->g, name, t, &why) : ir_input(ev->g, name, t, &why);
    if (v < 0) return eval_error(ev, call->loc, "%s", why.msg);
    *out = value_tensor(v);
    return 0;
}

static int weight(Eval *ev, const Builtin *self, const Expr *call, Val *args, int nargs, Val *out) {
    (void)self;
    Type t = {.dtype = DT_F32};
    if (args[0].kind != V_STR) return arg_error(ev, call, 0, "a string", &args[0]);
    if (nargs == 3 && dtype_arg(ev, call, 2, &args[2], &t.dtype)) return -1;
    if (shape_arg(ev, call, 1, &args[1], args[0].s, 1, &t)) return -1;
    return source(ev, call, OP_PARAM, args[0].s, t, out);
}

static int input(Eval *ev, const Builtin *self, const Expr *call, Val *args, int nargs, Val *out) {
    (void)self, (void)nargs;
    Type t = {0};
    if (args[0].kind != V_STR) return arg_error(ev, call, 0, "a string", &args[0]);
    if (dtype_arg(ev, call, 1, &args[1], &t.dtype) || shape_arg(ev, call, 2, &args[2], args[0].s, 0, &t)) return -1;
    return source(ev, call, OP_INPUT, args[0].s, t, out);
}

static const Builtin builtins[] = {
    {"exp", 1, 1, math1, "exp", exp},     {"log", 1, 1, math1, "log", log},
    {"ln", 1, 1, math1, "log", log},      {"sqrt", 1, 1, math1, "sqrt", sqrt},
    {"abs", 1, 1, math1, "abs", fabs},    {"floor", 1, 1, rounding, NULL, floor},
    {"ceil", 1, 1, rounding, NULL, ceil}, {"pow", 2, 2, power, NULL, NULL},
    {"min", 2, 3, minmax, NULL, NULL},    {"max", 2, 3, minmax, NULL, NULL},
    {"clamp", 3, 3, clamp, NULL, NULL},   {"int", 1, 1, to_int, NULL, NULL},
    {"float", 1, 1, to_float, NULL, NULL}, {"idiv", 2, 2, idiv, NULL, NULL},
    {"len", 1, 1, length, NULL, NULL},    {"error", 1, 1, error_builtin, NULL, NULL},
    {"shape", 1, 1, shape_of, NULL, NULL}, {"rank", 1, 1, rank_of, NULL, NULL},
    {"weight", 2, 3, weight, NULL, NULL}, {"input", 3, 3, input, NULL, NULL},
};

static const Builtin *find_builtin(const char *name) {
    for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++)
        if (strcmp(builtins[i].name, name) == 0) return &builtins[i];
    return NULL;
}

int builtin_exists(const char *name) { return find_builtin(name) || find_op_spec(name); }

int builtin_call(Eval *ev, const Expr *call, Val *args, int nargs, Val *out) {
    const Builtin *b = find_builtin(call->name);
    if (!b) {
        const OpSpec *spec = find_op_spec(call->name);
        return spec ? emit_spec(ev, call, spec, args, nargs, out) : 1;
    }
    if (nargs < b->min_args || nargs > b->max_args) {
        if (b->min_args == b->max_args)
            return eval_error(ev, call->loc, "%s takes %d argument%s, got %d", b->name, b->min_args,
                              b->min_args == 1 ? "" : "s", nargs);
        return eval_error(ev, call->loc, "%s takes %d to %d arguments, got %d", b->name, b->min_args, b->max_args, nargs);
    }
    return b->fn(ev, b, call, args, nargs, out);
}
