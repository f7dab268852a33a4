#include "analysis.h"

#include <stdlib.h>
#include <string.h>

static int is_main_output(const char *name) { return strcmp(name, "logits") == 0 || strcmp(name, "loss") == 0; }

/* Marks every node the given outputs depend on (nodes are in topological order,
 * so one backward sweep suffices). */
static void mark_reachable(const Graph *g, int main_only, int want_main, unsigned char *node_mark) {
    unsigned char *value_live = xcalloc(g->values.len ? g->values.len : 1, 1);
    for (size_t i = 0; i < g->outputs.len; i++)
        if (is_main_output(g->outputs.data[i].name) == want_main || !main_only)
            value_live[g->outputs.data[i].value] = 1;
    for (size_t n = g->nodes.len; n-- > 0;) {
        const Node *nd = &g->nodes.data[n];
        int live = 0;
        for (int k = 0; k < nd->nout; k++) live |= value_live[nd->out[k]];
        if (!live) continue;
        node_mark[n] = 1;
        for (int k = 0; k < nd->nin; k++) value_live[nd->in[k]] = 1;
    }
    free(value_live);
}

static int param_elements(const Graph *g, const Node *n, int64_t *out, Err *err) {
    const Type *t = ir_type(g, n->out[0]);
    int64_t total = 1;
    for (int i = 0; i < t->rank; i++) {
        if (!dim_is_const(t->dims[i]))
            return err_set(err, "weight '%s' has a symbolic shape", node_str(n, "name", "?"));
        if (mul_overflows_i64(total, dim_const_value(t->dims[i]), &total))
            return err_set(err, "weight '%s' has too many elements", node_str(n, "name", "?"));
    }
    *out = total;
    return 0;
}

/* Fraction of tokens that use each param: K/E for stacked expert weights fed to
 * a grouped_linear, 1 otherwise. */
static double *activation_fractions(const Graph *g) {
    double *frac = xmalloc(sizeof(double) * (g->values.len ? g->values.len : 1));
    for (size_t v = 0; v < g->values.len; v++) frac[v] = 1.0;
    for (size_t n = 0; n < g->nodes.len; n++) {
        const Node *gl = &g->nodes.data[n];
        if (gl->op != OP_GROUPED_LINEAR) continue;
        const Node *stack = &g->nodes.data[g->values.data[gl->in[2]].node];
        const Node *disp = &g->nodes.data[g->values.data[gl->in[1]].node];
        if (stack->op != OP_STACK || disp->op != OP_MOE_DISPATCH) continue;
        const Type *idx = ir_type(g, disp->in[1]);
        Dim k = idx->dims[idx->rank - 1];
        if (!dim_is_const(k)) continue;
        double f = (double)dim_const_value(k) / (double)node_int(disp, "experts", 1);
        for (int i = 0; i < stack->nin; i++) frac[stack->in[i]] = f;
    }
    return frac;
}

int count_params(const Graph *g, ParamCounts *out, Err *err) {
    size_t nn = g->nodes.len ? g->nodes.len : 1;
    unsigned char *main_mark = xcalloc(nn, 1), *other_mark = xcalloc(nn, 1);
    mark_reachable(g, 1, 1, main_mark);
    mark_reachable(g, 1, 0, other_mark);
    double *frac = activation_fractions(g);
    memset(out, 0, sizeof *out);
    double activated = 0;
    int rc = 0;
    for (size_t n = 0; n < g->nodes.len && rc == 0; n++) {
        const Node *nd = &g->nodes.data[n];
        int64_t elems = 0;
        if (nd->op != OP_PARAM || (!main_mark[n] && !other_mark[n])) continue;
        if ((rc = param_elements(g, nd, &elems, err))) break;
        if (main_mark[n]) {
            out->parameters += elems;
            out->tensors++;
            activated += (double)elems * frac[nd->out[0]];
        } else {
            out->mtp_parameters += elems;
        }
    }
    out->activated = (int64_t)(activated + 0.5);
    free(main_mark);
    free(other_mark);
    free(frac);
    return rc;
}
