/* The op table: one row per op. Names and arity come from ops.def; attributes,
 * shape rules and kernels from the families in ir/ops/. docs/ops.md is the spec. */
#include <string.h>

#include "ir.h"
#include "ops/ops_internal.h"

static const AttrSpec no_attrs[] = {{0}};
static const AttrSpec name_attrs[] = {{"name", ATTR_STR, 1}, {0}};
static const AttrSpec const_attrs[] = {{"value", ATTR_FLOAT, 1}, {0}};
static const AttrSpec n_attrs[] = {{"n", ATTR_INT, 1}, {0}};
static const AttrSpec cast_attrs[] = {{"to", ATTR_DTYPE, 1}, {0}};
static const AttrSpec reduce_attrs[] = {{"axis", ATTR_INT, 1}, {"keepdim", ATTR_INT, 0}, {0}};
static const AttrSpec softmax_attrs[] = {{"axis", ATTR_INT, 0}, {0}};
static const AttrSpec axis_attrs[] = {{"axis", ATTR_INT, 1}, {0}};
static const AttrSpec shape_attrs[] = {{"shape", ATTR_DIMS, 1}, {0}};
static const AttrSpec slice_attrs[] = {
    {"axis", ATTR_INT, 1}, {"start", ATTR_DIMS, 1}, {"end", ATTR_DIMS, 1}, {0}};
static const AttrSpec topk_attrs[] = {{"k", ATTR_INT, 1}, {0}};
static const AttrSpec dispatch_attrs[] = {{"experts", ATTR_INT, 1}, {0}};
static const AttrSpec rope_attrs[] = {{"scale", ATTR_FLOAT, 0}, {0}};
static const AttrSpec sdpa_attrs[] = {{"scale", ATTR_FLOAT, 1}, {"causal", ATTR_INT, 0}, {0}};

/* Families added later keep their rows in their own files; each file is
 * included twice: once for declarations, once for its rows. */
#define OP_ROWS_DECLS
#include "ops/grad_rows.inc"
#include "ops/fp8_rows.inc"
#include "ops/vjp_rows.inc"
#include "ops/ep_rows.inc"
#undef OP_ROWS_DECLS

#define ROW(e, attr_list, family, text)                                                     \
    [OP_##e].attrs = attr_list, [OP_##e].infer = family##_infer, [OP_##e].interp = family##_interp, \
    [OP_##e].doc = text

/* Name and arity from ops.def, the rest per op below: member designators let
 * the two lists fill one constant table. */
static const OpInfo table[OP_COUNT] = {
#define OP(e, nm, mi, ma, no) [OP_##e].name = nm, [OP_##e].min_in = mi, [OP_##e].max_in = ma, [OP_##e].nout = no,
#include "ops.def"
#undef OP
    ROW(INPUT, name_attrs, source, "a run-time input, fed by name"),
    ROW(PARAM, name_attrs, source, "a weight, named by its checkpoint name"),
    ROW(CONST, const_attrs, const, "f32[] scalar constant"),
    ROW(IOTA, n_attrs, iota, "f32[n]: 0, 1, ..., n-1"),
    ROW(NEG, no_attrs, unary, "-x"),
    ROW(EXP, no_attrs, unary, "e^x"),
    ROW(LOG, no_attrs, unary, "natural logarithm"),
    ROW(SQRT, no_attrs, unary, "square root"),
    ROW(RSQRT, no_attrs, unary, "1/sqrt(x)"),
    ROW(RECIP, no_attrs, unary, "1/x"),
    ROW(ABS, no_attrs, unary, "|x|"),
    ROW(SIGMOID, no_attrs, unary, "1/(1+e^-x)"),
    ROW(SILU, no_attrs, unary, "x*sigmoid(x)"),
    ROW(CAST, cast_attrs, cast, "convert to dtype `to` (RNE; float->int truncates)"),
    ROW(ADD, no_attrs, binary, "a+b, numpy broadcasting"),
    ROW(SUB, no_attrs, binary, "a-b, numpy broadcasting"),
    ROW(MUL, no_attrs, binary, "a*b, numpy broadcasting"),
    ROW(DIV, no_attrs, binary, "a/b, numpy broadcasting"),
    ROW(MAXIMUM, no_attrs, binary, "elementwise max, NaN propagates"),
    ROW(MINIMUM, no_attrs, binary, "elementwise min, NaN propagates"),
    ROW(WHERE, no_attrs, where, "cond != 0 ? a : b, broadcast"),
    ROW(SUM, reduce_attrs, reduce, "sum over one axis (fp64)"),
    ROW(MEAN, reduce_attrs, reduce, "mean over one axis (fp64)"),
    ROW(MAX, reduce_attrs, reduce, "max over one axis"),
    ROW(MEAN_ALL, no_attrs, mean_all, "f32[] mean of every element (fp64)"),
    ROW(SOFTMAX, softmax_attrs, softmax, "softmax over one axis (default -1, fp64 sum)"),
    ROW(LINEAR, no_attrs, linear, "x[...,K] @ w[N,K]^T (fp64 dot products)"),
    ROW(EMBEDDING, no_attrs, embedding, "rows of w[V,H] picked by integer ids"),
    ROW(RESHAPE, shape_attrs, reshape, "same elements, new shape, row-major"),
    ROW(SLICE, slice_attrs, slice, "elements start..end-1 along axis"),
    ROW(CONCAT, axis_attrs, concat, "join along axis"),
    ROW(EXPAND, shape_attrs, expand, "broadcast to shape"),
    ROW(STACK, no_attrs, stack, "join along a new leading axis"),
    ROW(TOPK, topk_attrs, topk, "k largest along the last axis, values and i32 indices"),
    ROW(GATHER, no_attrs, gather, "take along the last axis"),
    ROW(ONE_HOT, n_attrs, one_hot, "f32[...,n]: 1 at the index"),
    ROW(MOE_DISPATCH, dispatch_attrs, moe_dispatch, "token copies grouped by expert, and per-expert counts"),
    ROW(GROUPED_LINEAR, no_attrs, grouped_linear, "each expert's rows times its w[e]^T"),
    ROW(MOE_COMBINE, no_attrs, moe_combine, "weighted sum of each token's expert rows"),
    ROW(ROPE, rope_attrs, rope, "rotate interleaved pairs by position * inv_freq"),
    ROW(SDPA, sdpa_attrs, sdpa, "softmax(scale * q.k) v, causal by default"),
    ROW(CROSS_ENTROPY, no_attrs, cross_entropy, "-log softmax(logits)[target]"),
#include "ops/grad_rows.inc"
#include "ops/fp8_rows.inc"
#include "ops/vjp_rows.inc"
#include "ops/ep_rows.inc"
};

const OpInfo *op_info(OpKind op) { return (unsigned)op < OP_COUNT ? &table[op] : NULL; }

int op_lookup(const char *name, OpKind *out) {
    for (int i = 0; i < OP_COUNT; i++)
        if (strcmp(table[i].name, name) == 0) {
            *out = (OpKind)i;
            return 0;
        }
    return -1;
}
