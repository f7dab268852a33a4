/* Shared by the op families in ir/ops/: shape-rule helpers, dtype rounding,
 * index arithmetic and a small parallel-for. Not a public header. */
#ifndef V3C_OPS_INTERNAL_H
#define V3C_OPS_INTERNAL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../../base/numeric.h"
#include "../../base/parallel.h"
#include "../ir.h"

/* ---- float storage ----
 * Float tensors (f32, bf16, f16) hold `real` per element: float normally;
 * double when the ir sources are compiled with -DV3C_REAL=double, which the
 * finite-difference tests (tests/test_vjp_fd.c) use to check VJPs in fp64. */
#ifndef V3C_REAL
#define V3C_REAL float
#endif
typedef V3C_REAL real;
static inline real *tensor_real(const Tensor *t) { return (real *)t->data; }
/* sizeof(real): what dtype_host_size gives for float dtypes (ir/graph.c). */
size_t real_size(void);

/* ---- dtype rounding (RNE) ----
 * The interpreter holds bf16/f16 values as float, rounded to what the dtype can represent. */
static inline real round_to_dtype(DType t, real x) {
    return t == DT_BF16 ? round_to_bf16((float)x) : t == DT_F16 ? round_to_f16((float)x) : x;
}

/* Rounds every element of a float tensor to its dtype. */
void tensor_round(Tensor *t);

/* ---- shape-rule helpers ---- */
typedef struct TypeText {
    char s[256];
} TypeText;
TypeText type_text(const Type *t);
#define TY(t) (type_text(t).s)

const char *node_op_name(const Node *n);
/* f32, bf16 or f16 (the dtypes elementwise math runs on). */
int dtype_is_real(DType t);
int require_real(const Node *n, const char *what, const Type *t, Err *err);
int require_index(const Node *n, const char *what, const Type *t, Err *err);
/* Normalises a possibly negative axis into [0, rank). */
int norm_axis(const Node *n, int64_t axis, int rank, int *out, Err *err);
/* Product of dims [from, to) as a polynomial. */
int dims_product(const Dim *dims, int from, int to, Dim *out, Err *err);
/* Equal leading dims (all but the last) of two types of the same rank. */
int same_leading(const Type *a, const Type *b);
/* Numpy broadcast of a and b's shapes into out (dtype untouched). */
int broadcast_shape(const Node *n, const Type *a, const Type *b, Type *out, Err *err);

/* ---- kernel helpers ---- */
/* Element count of the dims [from, to) of a tensor. */
int64_t shape_product(const Tensor *t, int from, int to);
/* Reads index i of an integer tensor (i32, i64 or u8) as int64. */
int64_t index_at(const Tensor *t, int64_t i);
/* Strides of x for reading it broadcast to out's shape (0 on broadcast axes). */
void broadcast_strides(const Tensor *x, const Tensor *out, int64_t *strides);
/* Offset into x of out's element i, given x's broadcast strides. */
int64_t broadcast_offset(const Tensor *out, const int64_t *strides, int64_t i);
/* parallel_for (base/parallel.h) spreads the heavy loops over the cores. */

/* ---- MoE row bookkeeping (routing.c), shared with the backward ops ---- */
/* rows[p] = the dispatched row of pair p = token*K + slot; counts[e] per expert. */
int moe_rows(const Tensor *idx, int64_t experts, int64_t *rows, int64_t *counts, Err *err);
/* The expert of each of m rows from per-expert counts (NULL, err set, unless they cover m exactly). */
int64_t *experts_of_rows(const Tensor *counts, int64_t m, Err *err);
/* The largest expert index in idx, -1 when empty. */
int64_t max_expert(const Tensor *idx);

/* ---- the ops ---- */
#define DECLARE_OP(fn)                                                             \
    int fn##_infer(const Type *in, int nin, const Node *n, Type *out, Err *err);   \
    int fn##_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err);
/* source.c */
DECLARE_OP(source)
DECLARE_OP(const)
DECLARE_OP(iota)
/* elementwise.c */
DECLARE_OP(unary)
DECLARE_OP(cast)
DECLARE_OP(binary)
DECLARE_OP(where)
/* reduce.c */
DECLARE_OP(reduce)
DECLARE_OP(mean_all)
DECLARE_OP(softmax)
/* linalg.c */
DECLARE_OP(linear)
DECLARE_OP(embedding)
/* layout.c */
DECLARE_OP(reshape)
DECLARE_OP(slice)
DECLARE_OP(concat)
DECLARE_OP(expand)
DECLARE_OP(stack)
/* routing.c */
DECLARE_OP(topk)
DECLARE_OP(gather)
DECLARE_OP(one_hot)
DECLARE_OP(moe_dispatch)
DECLARE_OP(grouped_linear)
DECLARE_OP(moe_combine)
/* attention.c */
DECLARE_OP(rope)
DECLARE_OP(sdpa)
/* loss.c */
DECLARE_OP(cross_entropy)
/* grad.c: the backward ops autodiff emits */
DECLARE_OP(transpose)
DECLARE_OP(sum_to)
DECLARE_OP(pad)
DECLARE_OP(linear_wgrad)
DECLARE_OP(embedding_grad)
DECLARE_OP(scatter_add)
DECLARE_OP(mean_all_grad)
DECLARE_OP(cross_entropy_grad)
DECLARE_OP(sdpa_grad)
DECLARE_OP(moe_combine_grad)
DECLARE_OP(grouped_linear_wgrad)
#undef DECLARE_OP

#endif
