/* Vector-Jacobian products: what an op's `vjp` rule (OpInfo.vjp) sees, and
 * helpers that emit backward nodes. passes/autodiff.c drives the rules; the
 * rules themselves live in ir/ops/vjp.c, one per differentiable forward op. */
#ifndef V3C_VJP_H
#define V3C_VJP_H

#include "ir.h"

/* The graph being extended. Nodes emitted through the helpers below get the
 * builder state the driver set (scope, chunk and flags of the forward node's
 * backward), so the rules need not care. */
typedef struct VjpCtx {
    Graph *g;
    /* Per forward value: 1 when the driver wants its gradient (it is float,
     * depends on a param and reaches the target). Rules use it to skip work. */
    const unsigned char *wanted;
} VjpCtx;

/* Whether input i of n needs a gradient. */
int vjp_wanted(const VjpCtx *c, const Node *n, int i);

/* One-output node; returns its value or -1 with err set. */
ValueId vjp_op(VjpCtx *c, OpKind op, const ValueId *in, int nin, const Attr *attrs, int nattrs, Err *err);
ValueId vjp_unary(VjpCtx *c, OpKind op, ValueId x, Err *err);
ValueId vjp_binary(VjpCtx *c, OpKind op, ValueId a, ValueId b, Err *err);
ValueId vjp_const(VjpCtx *c, double v, Err *err);
/* g reduced (summed over broadcast axes) to the type `like` has; g itself if equal. */
ValueId vjp_sum_to(VjpCtx *c, ValueId g, ValueId like, Err *err);
/* x broadcast to the shape `like` has. */
ValueId vjp_expand_like(VjpCtx *c, ValueId x, ValueId like, Err *err);
ValueId vjp_reshape_to(VjpCtx *c, ValueId x, const Type *to, Err *err);

#endif
