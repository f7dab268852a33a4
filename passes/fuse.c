/* fuse: records fusion groups on the nodes (Node.group = N, printed ^N), so a
 * dump shows which nodes each generated kernel covers and a backend compiles
 * exactly those groups. The rules and the walk are ir/fusion.h's, shared with
 * the cpu backend, which plans the same groups itself when this pass did not run.
 * Groups already on the graph are replaced: running the pass twice changes nothing. */
#include "../ir/fusion.h"
#include "passes.h"

int pass_fuse(Graph *g, PassContext *ctx, Err *err) {
    (void)ctx, (void)err;
    for (size_t i = 0; i < g->nodes.len; i++) g->nodes.data[i].group = 0;
    IrFusion f;
    ir_fusion_plan(g, &f);
    for (size_t i = 0; i < g->nodes.len; i++) g->nodes.data[i].group = f.group_of[i] + 1;
    ir_fusion_free(&f);
    return 0;
}
