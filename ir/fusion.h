/* ir: which nodes may share one generated kernel (fusion groups), decided on
 * the symbolic graph so that a grouping holds for every B and T.
 *
 * It lives in ir/ because two layers need the same rules: the `fuse` pass
 * (passes/fuse.c) records groups on the nodes (Node.group, printed as ^N), and
 * the cpu backend (codegen/fuse.c) checks recorded groups or plans its own when
 * the pipeline did not run the pass; passes/ and codegen/ cannot see each other.
 *
 * The walk: nodes in graph order; a node a rule takes joins the group of one of
 * its producers when the rule says it fits there, else starts a group. A group
 * is sealed once a node outside it reads one of its values: nothing joins it
 * after that, so every group can run at its last member (the grouped graph
 * stays acyclic). Rules are rows of a table in fusion.c; a rule is a pattern
 * (which ops, all operands f32) plus how a node must sit in a group's
 * [rows, cols] space, so a new fusion is one row. */
#ifndef V3C_IR_FUSION_H
#define V3C_IR_FUSION_H

#include "ir.h"

typedef struct IrFusionGroup {
    VEC(int32_t) nodes; /* in graph order */
    Type full;          /* the widest shape: the kernel's [rows, cols] space */
    const char *rule;   /* the rule that started it */
    int sealed;
} IrFusionGroup;

typedef struct IrFusion {
    int32_t *group_of; /* per node: its group index, -1 when it runs on its own */
    VEC(IrFusionGroup) groups;
} IrFusion;

/* Plans groups for g from the rule table (what the fuse pass records). */
void ir_fusion_plan(const Graph *g, IrFusion *f);
/* The grouping recorded on g's nodes (Node.group), checked against the rules:
 * every member taken by a rule and fitting its group, no member joining a
 * sealed group. An invalid grouping is a user error naming node and group. */
int ir_fusion_recorded(const Graph *g, IrFusion *f, Err *err);
/* Whether any node of g carries a recorded group. */
int ir_fusion_is_recorded(const Graph *g);
void ir_fusion_free(IrFusion *f);

/* The rule table, for documentation and tests: names in table order. */
int ir_fusion_rule_count(void);
const char *ir_fusion_rule_name(int i);

#endif
