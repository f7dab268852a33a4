/* codegen: grouping of nodes into fused kernels, at concrete B and T.
 *
 * The groups come from ir/fusion.h: those the `fuse` pass recorded on the
 * nodes (checked against the rules), else planned by the same rules (elementwise
 * chains, a last-axis reduction with the math around it (RMSNorm), softmax).
 * A group runs at its last member, after everything its members read. */
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
    uint8_t *escapes;  /* per value: 1 if read outside its producer's group or a graph output */
    VEC(FusionGroup) groups;
} Fusion;

/* The groups of g with their shapes at batch b, sequence t. Fails (user error)
 * when recorded groups break the rules or a shape does not evaluate. */
int fusion_plan(const Graph *g, int64_t b, int64_t t, Fusion *f, Err *err);
void fusion_free(Fusion *f);
/* Whether value v of a group member must be stored: read outside the group or a graph output. */
int fusion_value_escapes(const Graph *g, const Fusion *f, ValueId v);

#endif
