#include "fp8_checkpoint.h"

#include <stdlib.h>
#include <string.h>

#include "../base/numeric.h"

char *fp8_scale_name(const char *weight_name) { return xsprintf("%s_scale_inv", weight_name); }

/* Kept in BF16 by DeepSeek (spec "Kept in BF16/FP32"); norms are rank 1. */
static const char *const unquantized[] = {"embed_tokens.weight", "lm_head.weight", "shared_head.head.weight",
                                          "mlp.gate.weight"};

int fp8_quantizes_weight(const char *name, int rank) {
    if (rank != 2 || !str_ends_with(name, ".weight")) return 0;
    for (size_t i = 0; i < sizeof unquantized / sizeof unquantized[0]; i++)
        if (str_ends_with(name, unquantized[i])) return 0;
    return 1;
}

/* Runs one FP8 op of the op table on concrete tensors, so that checkpoints and
 * graphs share one definition of the arithmetic. */
static int run_fp8_op(OpKind op, const Tensor *const *in, int nin, const char *tile, Tensor **out, Err *err) {
    Graph *g = graph_new();
    ValueId ids[2], outs[2];
    int rc = 0;
    for (int i = 0; i < nin && !rc; i++) {
        Type t = {.dtype = in[i]->dtype, .rank = in[i]->rank};
        for (int d = 0; d < t.rank; d++) t.dims[d] = dim_const(in[i]->shape[d]);
        ids[i] = ir_input(g, i ? "scales" : "x", t, err);
        rc = ids[i] < 0 ? -1 : 0;
    }
    Attr a = attr_str("tile", tile);
    if (!rc && ir_emit(g, op, ids, nin, &a, 1, outs, err) < 0) rc = -1;
    if (!rc) rc = interp_node(g, &g->nodes.data[g->nodes.len - 1], in, 1, 1, out, err);
    graph_free(g);
    return rc;
}

int fp8_quantize_weight(const Tensor *w, Tensor **q, Tensor **scale_inv, Err *err) {
    Tensor *out[2];
    if (run_fp8_op(OP_QUANTIZE, &w, 1, "128x128", out, err)) return -1;
    *q = out[0];
    *scale_inv = out[1];
    return 0;
}

Tensor *fp8_dequantize_weight(const Tensor *q, const Tensor *scale_inv, Err *err) {
    const Tensor *in[2] = {q, scale_inv};
    Tensor *out;
    return run_fp8_op(OP_DEQUANTIZE, in, 2, "128x128", &out, err) ? NULL : out;
}

/* ---- loading ---- */

static const StTensor *fp8_stored(const Checkpoint *c, const Node *n) {
    const StTensor *t = checkpoint_find(c, node_str(n, "name", ""));
    return t && t->dtype == ST_F8_E4M3 ? t : NULL;
}

static int same_dims(const StTensor *st, const Type *ty) {
    if (st->rank != ty->rank) return 0;
    for (int i = 0; i < ty->rank; i++)
        if (!dim_is_const(ty->dims[i]) || dim_const_value(ty->dims[i]) != st->shape[i]) return 0;
    return 1;
}

static Tensor *load_fp8_param(const Checkpoint *c, const Graph *g, const Node *n, Err *err) {
    const char *name = node_str(n, "name", "");
    const Type *ty = ir_type(g, n->out[0]);
    const StTensor *q = checkpoint_find(c, name);
    char *sname = fp8_scale_name(name);
    const StTensor *s = checkpoint_find(c, sname);
    Tensor *qt = NULL, *st = NULL, *w = NULL;
    if (!s) err_set(err, "weight '%s' is F8_E4M3 but the checkpoint has no '%s'", name, sname);
    else if (!same_dims(q, ty)) err_set(err, "weight '%s' has a different shape in the checkpoint than the model expects", name);
    else if (s->dtype != ST_F32 && s->dtype != ST_BF16) err_set(err, "'%s' must be F32, not %s", sname, st_dtype_name(s->dtype));
    else if ((qt = st_to_tensor(q, err)) && (st = st_to_tensor(s, err))) w = fp8_dequantize_weight(qt, st, err);
    if (w) {
        float *v = tensor_f32(w);
        for (int64_t i = 0; ty->dtype == DT_BF16 && i < w->numel; i++) v[i] = round_to_bf16(v[i]);
        w->dtype = ty->dtype;
    }
    if (!w && !err->set) err_set(err, "cannot load FP8 weight '%s'", name);
    free(sname);
    tensor_free(qt);
    tensor_free(st);
    return w;
}

/* The FP8 params are dequantized here; the rest go through checkpoint_load_params
 * on a view of g whose FP8 params are marked dead (it skips dead params). */
int checkpoint_load_params_fp8_aware(const Checkpoint *c, const Graph *g, TensorSet *out, Err *err) {
    Graph view = *g;
    size_t bytes = sizeof(Node) * (g->nodes.len ? g->nodes.len : 1);
    view.nodes.data = xmalloc(bytes);
    memcpy(view.nodes.data, g->nodes.data, sizeof(Node) * g->nodes.len);
    int rc = 0;
    for (size_t i = 0; i < g->nodes.len && !rc; i++) {
        const Node *n = &g->nodes.data[i];
        if (n->op != OP_PARAM || n->dead || !fp8_stored(c, n)) continue;
        view.nodes.data[i].dead = 1;
        Tensor *w = load_fp8_param(c, g, n, err);
        if (!w) rc = -1;
        else tset_put(out, node_str(n, "name", ""), w);
    }
    if (!rc) rc = checkpoint_load_params(c, &view, out, err);
    free(view.nodes.data);
    return rc;
}
