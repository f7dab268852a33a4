/* codegen: grouping of nodes into fused kernels.
 *
 * The planner walks the graph in order and lets each fusible node join the
 * group of one of its producers when a fusion rule accepts it (a table in
 * fuse.c: elementwise chains, a last-axis reduction with the math around it
 * (RMSNorm), softmax). A group is sealed as soon as a node outside it reads
 * one of its values, which keeps the grouped graph acyclic: a group runs at
 * its last member, after everything its members read. */
#ifndef V3C_CODEGEN_FUSE_H
#define V3C_CODEGEN_FUSE_H

#include "../ir/ir.h"

typedef struct FusionGroup {
    VEC(int32_t) nodes;  /* in graph order */
    int64_t full[IR_MAX_RANK]; /* the widest shape: the kernel's [rows, cols] */
    int rank;
    int sealed;
} FusionGroup;

typedef struct Fusion {
    int32_t *group_of; /* per node: its group, -1 when it runs on its own */
    VEC(FusionGroup) groups;
} Fusion;

/* Plans groups for g at batch b, sequence t (shapes are concrete). */
int fusion_plan(const Graph *g, int64_t b, int64_t t, Fusion *f, Err *err);
void fusion_free(Fusion *f);
/* Whether value v of a group member must be stored: read outside the group or a graph output. */
int fusion_value_escapes(const Graph *g, const Fusion *f, ValueId v);

#endif
