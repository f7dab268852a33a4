/* shapes: a whole-graph shape check. Every node's shape rule runs again on the
 * types its inputs carry now; a node whose recorded types differ (a pass that
 * rewired it without re-inferring) fails with both types named. It changes nothing. */
#include "../ir/verify.h"
#include "passes.h"

static int ids_in_range(const Graph *g, const Node *n) {
    for (int k = 0; k < n->nin; k++)
        if (n->in[k] < 0 || (size_t)n->in[k] >= g->values.len) return 0;
    for (int k = 0; k < n->nout; k++)
        if (n->out[k] < 0 || (size_t)n->out[k] >= g->values.len) return 0;
    return 1;
}

int pass_shapes(Graph *g, PassContext *ctx, Err *err) {
    (void)ctx;
    for (size_t i = 0; i < g->nodes.len; i++) {
        if (!ids_in_range(g, &g->nodes.data[i]))
            return err_internal(err, "shapes: node %zu refers to a value that does not exist (run verify)", i);
        if (ir_verify_node_types(g, i, err)) return -1;
    }
    return 0;
}
