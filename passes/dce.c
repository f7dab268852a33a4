/* dce: keeps only what the graph's outputs depend on. One backward sweep over
 * the topologically ordered nodes marks live values; everything else, unused
 * params and inputs included, is dropped by ir_compact. A graph without
 * outputs therefore becomes empty. */
#include <stdint.h>
#include <stdlib.h>

#include "../ir/verify.h"
#include "passes.h"

static void mark_dead_nodes(Graph *g, uint8_t *live) {
    for (size_t i = g->nodes.len; i-- > 0;) {
        Node *n = &g->nodes.data[i];
        int used = 0;
        for (int k = 0; k < n->nout; k++) used |= live[n->out[k]];
        n->dead = !used;
        if (used)
            for (int k = 0; k < n->nin; k++) live[n->in[k]] = 1;
    }
}

/* ir_compact leaves removed names mapped to -1; rebuild the map from the
 * surviving sources so a later ir_param of a removed name starts afresh. */
static void rebuild_names(Graph *g) {
    strmap_free(&g->names);
    strmap_init(&g->names);
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        const char *name = node_str(n, "name", NULL);
        if ((n->op == OP_PARAM || n->op == OP_INPUT) && name) strmap_put(&g->names, name, n->out[0]);
    }
}

int pass_dce(Graph *g, PassContext *ctx, Err *err) {
    (void)ctx;
    if (!ir_ids_valid(g)) return err_internal(err, "dce: the graph refers to values that do not exist (run verify)");
    uint8_t *live = xcalloc(g->values.len ? g->values.len : 1, 1);
    for (size_t i = 0; i < g->outputs.len; i++) live[g->outputs.data[i].value] = 1;
    mark_dead_nodes(g, live);
    free(live);
    ir_compact(g);
    rebuild_names(g);
    return 0;
}
