/* Fusion groups at concrete B and T: the symbolic groups of ir/fusion.h (recorded
 * by the fuse pass, or planned here when the pipeline did not run it) with their
 * shapes evaluated, for the kernel builder (kernel.h). */
#include <stdlib.h>
#include <string.h>

#include "../ir/fusion.h"
#include "fuse.h"

/* The groups of g: the ones the fuse pass recorded (checked), else planned here by the same rules. */
static int symbolic_groups(const Graph *g, IrFusion *ir, Err *err) {
    if (!ir_fusion_is_recorded(g)) {
        ir_fusion_plan(g, ir);
        return 0;
    }
    return ir_fusion_recorded(g, ir, err) ? err_wrap(err, "the recorded fusion groups: ") : 0;
}

static int concrete_group(const IrFusionGroup *from, int64_t b, int64_t t, FusionGroup *to, Err *err) {
    *to = (FusionGroup){.rank = from->full.rank, .sealed = from->sealed};
    if (type_concrete(&from->full, b, t, to->full, err)) return -1;
    for (size_t i = 0; i < from->nodes.len; i++) VEC_PUSH(to->nodes, from->nodes.data[i]);
    return 0;
}

/* One sweep over the reads, so asking about a value is a lookup (the full
 * model's backward graph has ~10^5 nodes). */
static uint8_t *escaping_values(const Graph *g, const int32_t *group_of) {
    uint8_t *esc = xmalloc(g->values.len ? g->values.len : 1);
    memset(esc, 0, g->values.len);
    for (size_t i = 0; i < g->outputs.len; i++) esc[g->outputs.data[i].value] = 1;
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        for (int k = 0; k < n->nin; k++) {
            int own = group_of[g->values.data[n->in[k]].node];
            if (own < 0 || group_of[i] != own) esc[n->in[k]] = 1;
        }
    }
    return esc;
}

int fusion_plan(const Graph *g, int64_t b, int64_t t, Fusion *f, Err *err) {
    memset(f, 0, sizeof *f);
    IrFusion ir;
    if (symbolic_groups(g, &ir, err)) return -1;
    f->group_of = ir.group_of, ir.group_of = NULL;
    f->escapes = escaping_values(g, f->group_of);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < ir.groups.len; i++) {
        FusionGroup gr;
        rc = concrete_group(&ir.groups.data[i], b, t, &gr, err);
        VEC_PUSH(f->groups, gr);
    }
    ir_fusion_free(&ir);
    if (rc) fusion_free(f);
    return rc;
}

void fusion_free(Fusion *f) {
    for (size_t i = 0; i < f->groups.len; i++) VEC_FREE(f->groups.data[i].nodes);
    VEC_FREE(f->groups);
    free(f->group_of);
    free(f->escapes);
    memset(f, 0, sizeof *f);
}

int fusion_value_escapes(const Graph *g, const Fusion *f, ValueId v) {
    (void)g;
    return f->escapes[v];
}
