/* From a fused group of IR nodes to its loop description: one expression per
 * operation, rounded to float wherever the interpreter stores a float. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel.h"

typedef struct Builder {
    const Graph *g;
    const Fusion *f;
    int group;
    int64_t b, t;
    KernelDesc *k;
    int *expr_of_value; /* per graph value: its expression, -1 none */
} Builder;

void kernel_desc_free(KernelDesc *k) {
    VEC_FREE(k->exprs);
    VEC_FREE(k->stores);
    VEC_FREE(k->inputs);
    VEC_FREE(k->outputs);
}

static int push(KernelDesc *k, KExpr e) {
    VEC_PUSH(k->exprs, e);
    return (int)k->exprs.len - 1;
}

static int unary(KernelDesc *k, KOp op, KSpace s, int a) { return push(k, (KExpr){.op = op, .space = s, .args = {a, -1, -1}}); }
static int binary(KernelDesc *k, KOp op, KSpace s, int a, int b) {
    return push(k, (KExpr){.op = op, .space = s, .args = {a, b, -1}});
}

static int buffer_of(ValueId v, void *vec_p) {
    VEC(ValueId) *vec = vec_p;
    for (size_t i = 0; i < vec->len; i++)
        if (vec->data[i] == v) return (int)i;
    VEC_PUSH(*vec, v);
    return (int)vec->len - 1;
}

/* Numpy broadcast strides of `in` read at the positions of `out`. */
static void broadcast(const int64_t *in, int in_rank, int out_rank, int64_t *strides) {
    int64_t stride = 1;
    for (int i = out_rank - 1; i >= 0; i--) {
        int j = i - (out_rank - in_rank);
        int64_t size = j >= 0 ? in[j] : 1;
        strides[i] = size == 1 ? 0 : stride;
        stride *= size;
    }
}

/* Reads external value v at the positions of a node whose output has shape out. */
static int load(Builder *bd, ValueId v, int out_rank, KSpace space, Err *err) {
    const Node *src = &bd->g->nodes.data[bd->g->values.data[v].node];
    /* The interpreter holds a const as a float tensor: round the same way. */
    if (src->op == OP_CONST)
        return push(bd->k, (KExpr){.op = K_CONST, .space = space, .value = (double)(float)node_float(src, "value", 0)});
    int64_t in[IR_MAX_RANK], strides[IR_MAX_RANK];
    const Type *ty = ir_type(bd->g, v);
    if (type_concrete(ty, bd->b, bd->t, in, err)) return -1;
    broadcast(in, ty->rank, out_rank, strides);
    KExpr e = {.op = K_LOAD, .space = space, .args = {-1, -1, -1}, .buf = buffer_of(v, &bd->k->inputs)};
    /* The row index spans the leading dims; a per-row shape without the trailing 1 has no col dim. */
    for (int d = 0; d < bd->k->nlead; d++) e.rstride[d] = strides[d];
    e.cstride = out_rank > bd->k->nlead && space == KS_ELEM ? strides[out_rank - 1] : 0;
    return push(bd->k, e);
}

static int operand(Builder *bd, ValueId v, int out_rank, KSpace space, Err *err) {
    if (bd->f->group_of[bd->g->values.data[v].node] == bd->group) return bd->expr_of_value[v];
    return load(bd, v, out_rank, space, err);
}

static const KOp kop_of[OP_COUNT] = {
    [OP_NEG] = K_NEG, [OP_EXP] = K_EXP, [OP_LOG] = K_LOG, [OP_SQRT] = K_SQRT, [OP_RSQRT] = K_RSQRT,
    [OP_RECIP] = K_RECIP, [OP_ABS] = K_ABS, [OP_SIGMOID] = K_SIGMOID, [OP_SILU] = K_SILU,
    [OP_ADD] = K_ADD, [OP_SUB] = K_SUB, [OP_MUL] = K_MUL, [OP_DIV] = K_DIV,
    [OP_MAXIMUM] = K_MAX_NAN, [OP_MINIMUM] = K_MIN_NAN, [OP_WHERE] = K_WHERE,
};

/* softmax: max by `>` (as the interpreter), then exp(x - m) / sum, all in double. */
static int softmax_expr(KernelDesc *k, int x) {
    int m = unary(k, K_RMAX, KS_ROW, x);
    int e = unary(k, K_EXP, KS_ELEM, binary(k, K_SUB, KS_ELEM, x, m));
    int s = unary(k, K_RSUM, KS_ROW, e);
    return binary(k, K_DIV, KS_ELEM, e, s);
}

/* The ops a group reduces over cols with: sum, mean, max, and sum_to onto the keepdim row shape
 * (ir/fusion.c admits only that form), which is a sum. */
static int is_reduction(OpKind op) { return op == OP_SUM || op == OP_MEAN || op == OP_MAX || op == OP_SUM_TO; }

static int reduction_expr(KernelDesc *k, OpKind op, int x) {
    if (op == OP_MAX) return unary(k, K_RMAX_NAN, KS_ROW, x);
    int s = unary(k, K_RSUM, KS_ROW, x);
    if (op == OP_SUM || op == OP_SUM_TO) return s;
    return binary(k, K_DIV, KS_ROW, s, push(k, (KExpr){.op = K_CONST, .space = KS_ROW, .value = (double)k->cols}));
}

/* A float held as float either way: to bf16 rounds it onto bf16's grid, to f32 keeps it
 * (ir/fusion.c admits only casts between f32 and bf16). */
static KOp cast_kop(const Graph *g, const Node *n) { return ir_type(g, n->out[0])->dtype == DT_BF16 ? K_BF16 : K_F32; }

static int node_expr(Builder *bd, const Node *n, Err *err) {
    int64_t out[IR_MAX_RANK];
    const Type *ty = ir_type(bd->g, n->out[0]);
    if (type_concrete(ty, bd->b, bd->t, out, err)) return -1;
    int elem = n->op == OP_SOFTMAX || (!is_reduction(n->op) &&
                                       ty->rank == bd->k->nlead + 1 && out[ty->rank - 1] == bd->k->cols &&
                                       memcmp(out, bd->k->lead, sizeof(int64_t) * (size_t)bd->k->nlead) == 0);
    KSpace space = elem ? KS_ELEM : KS_ROW;
    int a[3] = {-1, -1, -1};
    /* Reductions read their input at the full shape, per element. */
    int in_rank = ty->rank;
    if (is_reduction(n->op)) in_rank = bd->k->nlead + 1, space = KS_ELEM;
    for (int i = 0; i < n->nin; i++)
        if ((a[i] = operand(bd, n->in[i], in_rank, space, err)) < 0) return -1;
    KernelDesc *k = bd->k;
    int e;
    if (n->op == OP_SOFTMAX) e = softmax_expr(k, a[0]);
    else if (is_reduction(n->op)) e = reduction_expr(k, n->op, a[0]);
    else if (n->op == OP_CAST) e = unary(k, cast_kop(bd->g, n), space, a[0]);
    else e = push(k, (KExpr){.op = kop_of[n->op], .space = space, .args = {a[0], a[1], a[2]}});
    return unary(k, K_F32, k->exprs.data[e].space, e);
}

static int build(Builder *bd, const FusionGroup *gr, Err *err) {
    KernelDesc *k = bd->k;
    k->nlead = gr->rank - 1;
    memcpy(k->lead, gr->full, sizeof(int64_t) * (size_t)k->nlead);
    k->cols = gr->full[gr->rank - 1];
    k->rows = 1;
    for (int d = 0; d < k->nlead; d++) k->rows *= k->lead[d];
    for (size_t i = 0; i < gr->nodes.len; i++) {
        const Node *n = &bd->g->nodes.data[gr->nodes.data[i]];
        int e = node_expr(bd, n, err);
        if (e < 0) return err_wrap(err, "kernel for %s: ", op_info(n->op)->name);
        bd->expr_of_value[n->out[0]] = e;
        if (fusion_value_escapes(bd->g, bd->f, n->out[0])) {
            int buf = buffer_of(n->out[0], &k->outputs);
            VEC_PUSH(k->stores, ((KStore){e, buf}));
        }
    }
    return 0;
}

int kernel_from_group(const Graph *g, const Fusion *f, int group, int64_t b, int64_t t, KernelDesc *k, Err *err) {
    memset(k, 0, sizeof *k);
    Builder bd = {g, f, group, b, t, k, xmalloc(sizeof(int) * (g->values.len ? g->values.len : 1))};
    for (size_t v = 0; v < g->values.len; v++) bd.expr_of_value[v] = -1;
    int rc = build(&bd, &f->groups.data[group], err);
    free(bd.expr_of_value);
    if (rc) kernel_desc_free(k);
    return rc;
}

char *kernel_key(const KernelDesc *k) {
    Buf b = {0};
    buf_printf(&b, "r%lld c%lld in%zu out%zu L", (long long)k->rows, (long long)k->cols, k->inputs.len, k->outputs.len);
    for (int d = 0; d < k->nlead; d++) buf_printf(&b, ",%lld", (long long)k->lead[d]);
    for (size_t i = 0; i < k->exprs.len; i++) {
        const KExpr *e = &k->exprs.data[i];
        buf_printf(&b, ";%d:%d:%d,%d,%d:%a:%d:%lld", e->op, e->space, e->args[0], e->args[1], e->args[2], e->value,
                   e->buf, (long long)e->cstride);
        for (int d = 0; d < k->nlead; d++) buf_printf(&b, ",%lld", (long long)e->rstride[d]);
    }
    for (size_t i = 0; i < k->stores.len; i++) buf_printf(&b, ";s%d>%d", k->stores.data[i].expr, k->stores.data[i].buf);
    return buf_take(&b);
}
