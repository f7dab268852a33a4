/* fp8: see fp8.h. The graph is rebuilt node by node into a fresh one, so the
 * nodes a rewrite adds land where the old node stood and the order stays topological. */
#include "fp8.h"

#include <stdlib.h>
#include <string.h>

#include "passes.h"
#include "rebuild.h"

Fp8Options fp8_default_options(void) { return (Fp8Options){.pow2_scales = 1, .fp8_dispatch = 1}; }

/* Weights DeepSeek keeps in BF16 although they feed a linear: embedding, output
 * heads and the MoE router (its scores decide routing; spec "Kept in BF16/FP32"). */
static const char *const high_precision_weights[] = {
    "embed_tokens.weight", "lm_head.weight", "shared_head.head.weight", "mlp.gate.weight",
};

static const Node *producer(const Graph *g, ValueId v) { return &g->nodes.data[g->values.data[v].node]; }

/* The checkpoint name when v is a weight the recipe quantizes, else NULL. */
static const char *fp8_weight_name(const Graph *g, ValueId v) {
    const Node *p = producer(g, v);
    if (p->op == OP_STACK) p = producer(g, p->in[0]); /* experts: stack of per-expert weights */
    if (p->op != OP_PARAM) return NULL;
    const char *name = node_str(p, "name", "");
    for (size_t i = 0; i < sizeof high_precision_weights / sizeof high_precision_weights[0]; i++)
        if (str_ends_with(name, high_precision_weights[i])) return NULL;
    return name;
}

static int stack_of_params(const Graph *g, ValueId v) {
    const Node *p = producer(g, v);
    if (p->op == OP_PARAM) return 1;
    if (p->op != OP_STACK) return 0;
    for (int i = 0; i < p->nin; i++)
        if (producer(g, p->in[i])->op != OP_PARAM) return 0;
    return 1;
}

/* x is the SwiGLU product silu(gate) * up. */
static int is_swiglu_product(const Graph *g, ValueId x) {
    const Node *p = producer(g, x);
    if (p->op != OP_MUL) return 0;
    return producer(g, p->in[0])->op == OP_SILU || producer(g, p->in[1])->op == OP_SILU;
}

/* The report's power-of-2 scales: o_proj's input and the SwiGLU output feeding down_proj. */
static int wants_pow2(const Graph *g, const Fp8Options *opt, ValueId x, const char *weight) {
    return opt->pow2_scales && (str_ends_with(weight, "o_proj.weight") || is_swiglu_product(g, x));
}

/* A weight's gradient output, "grad.<name>", when v is one (autodiff_graph). */
static const char *grad_output_name(const Graph *g, ValueId v) {
    for (size_t i = 0; i < g->outputs.len; i++)
        if (g->outputs.data[i].value == v && strncmp(g->outputs.data[i].name, "grad.", 5) == 0)
            return g->outputs.data[i].name + 5;
    return NULL;
}

static int quantized_name(const char *name) {
    for (size_t i = 0; i < sizeof high_precision_weights / sizeof high_precision_weights[0]; i++)
        if (str_ends_with(name, high_precision_weights[i])) return 0;
    return 1;
}

/* A linear_wgrad whose result is the gradient of a weight the recipe quantizes. */
static int is_fp8_wgrad(const Graph *g, const Node *n) {
    const char *name;
    return n->op == OP_LINEAR_WGRAD && (name = grad_output_name(g, n->out[0])) && quantized_name(name);
}

/* The param behind w = transpose(param) (Dgrad's weight operand), else -1. */
static ValueId transposed_weight(const Graph *g, ValueId w) {
    const Node *p = producer(g, w);
    return p->op == OP_TRANSPOSE ? p->in[0] : -1;
}

typedef struct Rebuild {
    GraphRebuild b;
    const Fp8Options *opt;
    /* Per old value x that a Wgrad reads: 1 if it is wanted in 128x1 tiles; then
     * saved[x] holds what forward made of it (quantized q, scales), else -1;
     * for experts, restored[x] its dequantized values once a Wgrad made them. */
    char *wants_128x1;
    ValueId (*saved)[2];
    ValueId *restored;
    ValueId *segments; /* per old counts value: the Wgrad tile segments made of it once, else -1 */
} Rebuild;

/* counts >= 0: 128x1 tiles restarting at each expert's rows (segmented quantize). */
static ValueId quantize_in(Rebuild *r, ValueId x, ValueId counts, const char *tile, int pow2, ValueId q[2],
                           Err *err) {
    Attr a[2] = {attr_str("tile", tile), attr_int("pow2", pow2)};
    ValueId in[2] = {x, counts};
    return ir_emit(r->b.g, OP_QUANTIZE, in, counts >= 0 ? 2 : 1, a, pow2 ? 2 : 1, q, err);
}

static ValueId quantize(Rebuild *r, ValueId x, const char *tile, int pow2, ValueId q[2], Err *err) {
    return quantize_in(r, x, -1, tile, pow2, q, err);
}

/* quantize then dequantize: the values an FP8 operand carries, in high precision. */
static int fp8_round_trip(Rebuild *r, ValueId x, ValueId counts, const char *tile, int pow2, ValueId *out,
                          Err *err) {
    ValueId q[3];
    if (quantize_in(r, x, counts, tile, pow2, q, err) < 0) return -1;
    q[2] = counts;
    Attr a[2] = {attr_str("tile", tile), attr_dtype("to", ir_type(r->b.g, x)->dtype)};
    return ir_emit(r->b.g, OP_DEQUANTIZE, q, counts >= 0 ? 3 : 2, a, 2, out, err) < 0 ? -1 : 0;
}

/* FP8 storage of the activation Linear backward keeps: the Wgrad's 128x1 copy
 * of x, quantized here in forward from the high-precision x (never from the
 * 1x128 copy), so the high-precision x need not live until backward. */
static int save_for_wgrad(Rebuild *r, ValueId old_x, int pow2, Err *err) {
    if (!r->wants_128x1[old_x] || r->saved[old_x][0] >= 0) return 0;
    return quantize(r, r->b.map[old_x], "128x1", pow2, r->saved[old_x], err) < 0 ? -1 : 0;
}

/* y = x @ w^T as an FP8 GEMM: forward (w a param) and Dgrad (x the output
 * gradient, w = transpose(param), quantized afresh in 128x128 blocks: a block's
 * amax is the same either way, so this is the forward's quantized weight transposed). */
static int rewrite_linear(Rebuild *r, const Node *n, const char *weight, Err *err) {
    ValueId x = r->b.map[n->in[0]], w = r->b.map[n->in[1]], qx[2], qw[2], y;
    int backward = (n->flags & NODE_BACKWARD) != 0;
    int pow2 = !backward && wants_pow2(r->b.old, r->opt, n->in[0], weight);
    if (!backward && save_for_wgrad(r, n->in[0], pow2, err)) return -1;
    if (quantize(r, x, "1x128", pow2, qx, err) < 0 || quantize(r, w, "128x128", 0, qw, err) < 0) return -1;
    ValueId in[4] = {qx[0], qx[1], qw[0], qw[1]};
    Attr out = attr_dtype("out", ir_type(r->b.old, n->out[0])->dtype);
    if (ir_emit(r->b.g, OP_FP8_MATMUL, in, 4, &out, 1, &y, err) < 0) return -1;
    r->b.map[n->out[0]] = y;
    return 0;
}

/* dw = linear_wgrad(g, x) as the Wgrad FP8 GEMM: g quantized 128x1 here, x's
 * 128x1 copy from forward. */
static int rewrite_wgrad(Rebuild *r, const Node *n, Err *err) {
    ValueId qg[2], y;
    if (quantize(r, r->b.map[n->in[0]], "128x1", 0, qg, err) < 0) return -1;
    ValueId in[4] = {qg[0], qg[1], r->saved[n->in[1]][0], r->saved[n->in[1]][1]};
    Attr a[2] = {attr_dtype("out", ir_type(r->b.old, n->out[0])->dtype), attr_int("wgrad", 1)};
    if (ir_emit(r->b.g, OP_FP8_MATMUL, in, 4, a, 2, &y, err) < 0) return -1;
    r->b.map[n->out[0]] = y;
    return 0;
}

/* The segments the experts' Wgrad tiles restart at: each expert's rows; under
 * expert parallelism (counts from ep_dispatch) each expert's rows from each
 * source rank, plan[s][j] transposed to [j][s], so a tile holds one rank's
 * tokens as in a per-expert GEMM on that rank (and as one rank accumulating
 * over the same micro-batches sees them). */
static ValueId wgrad_segments(Rebuild *r, ValueId old_counts, Err *err) {
    const Node *p = producer(r->b.old, old_counts);
    if (p->op != OP_EP_DISPATCH || p->out[1] != old_counts) return r->b.map[old_counts];
    ValueId *t = &r->segments[old_counts]; /* one transpose serves the layer's Wgrads, forward and backward */
    if (*t < 0 && ir_emit(r->b.g, OP_TRANSPOSE, &r->b.map[p->out[2]], 1, NULL, 0, t, err) < 0) return -1;
    return *t;
}

/* Experts' Wgrad, grouped_linear_wgrad(g, counts, x): both operands carry their
 * 128x1 FP8 values (x's round trip made in forward), the tiles restarting at
 * each expert's first token as in a per-expert GEMM. */
/* x's 128x1 FP8 copy back in high precision, where backward first needs it
 * (the gate and up projections' Wgrads share it). */
static ValueId restore_saved(Rebuild *r, ValueId old_x, ValueId segments, Err *err) {
    if (r->restored[old_x] >= 0) return r->restored[old_x];
    ValueId q[3] = {r->saved[old_x][0], r->saved[old_x][1], segments};
    Attr a[2] = {attr_str("tile", "128x1"), attr_dtype("to", ir_type(r->b.g, r->b.map[old_x])->dtype)};
    return ir_emit(r->b.g, OP_DEQUANTIZE, q, 3, a, 2, &r->restored[old_x], err) < 0 ? -1 : r->restored[old_x];
}

static int rewrite_grouped_wgrad(Rebuild *r, const Node *n, Err *err) {
    ValueId in[3] = {0, r->b.map[n->in[1]], 0}, y, segments = wgrad_segments(r, n->in[1], err);
    if (segments < 0 || (in[2] = restore_saved(r, n->in[2], segments, err)) < 0 ||
        fp8_round_trip(r, r->b.map[n->in[0]], segments, "128x1", 0, &in[0], err))
        return -1;
    if (ir_emit(r->b.g, OP_GROUPED_LINEAR_WGRAD, in, 3, NULL, 0, &y, err) < 0) return -1;
    r->b.map[n->out[0]] = y;
    return 0;
}

/* The experts' Wgrad copy of x: quantized in forward like a Linear's (tiles
 * restarting at each expert's rows), kept as FP8 until backward dequantizes it. */
static int save_grouped_for_wgrad(Rebuild *r, ValueId old_x, ValueId old_counts, int pow2, Err *err) {
    if (!r->wants_128x1[old_x] || r->saved[old_x][0] >= 0) return 0;
    ValueId segments = wgrad_segments(r, old_counts, err);
    return segments < 0 || quantize_in(r, r->b.map[old_x], segments, "128x1", pow2, r->saved[old_x], err) < 0 ? -1 : 0;
}

/* Forward (w a stack of params) and Dgrad (w = transpose(stack)). */
static int rewrite_grouped(Rebuild *r, const Node *n, const char *weight, Err *err) {
    ValueId x, w, in[3], y;
    int backward = (n->flags & NODE_BACKWARD) != 0;
    int pow2 = !backward && wants_pow2(r->b.old, r->opt, n->in[0], weight);
    if (!backward && save_grouped_for_wgrad(r, n->in[0], n->in[1], pow2, err)) return -1;
    if (fp8_round_trip(r, r->b.map[n->in[0]], -1, "1x128", pow2, &x, err) ||
        fp8_round_trip(r, r->b.map[n->in[2]], -1, "128x128", 0, &w, err))
        return -1;
    in[0] = x, in[1] = r->b.map[n->in[1]], in[2] = w;
    if (ir_emit(r->b.g, OP_GROUPED_LINEAR, in, 3, NULL, 0, &y, err) < 0) return -1;
    r->b.map[n->out[0]] = y;
    return 0;
}

/* FP8 dispatch: the tokens travel quantized; the experts' 1x128 quantization of
 * the same rows then reproduces them exactly (same tiles, same amax). */
static int rewrite_dispatch(Rebuild *r, const Node *n, Err *err) {
    ValueId in[2] = {0, r->b.map[n->in[1]]}, out[2];
    if (fp8_round_trip(r, r->b.map[n->in[0]], -1, "1x128", 0, &in[0], err)) return -1;
    if (ir_emit(r->b.g, OP_MOE_DISPATCH, in, 2, n->attrs, n->nattrs, out, err) < 0) return -1;
    r->b.map[n->out[0]] = out[0];
    r->b.map[n->out[1]] = out[1];
    return 0;
}

static int dispatch_takes_fp8(const Graph *g, const Node *n) {
    const Type *x = ir_type(g, n->in[0]);
    return x->rank >= 1 && dim_is_const(x->dims[x->rank - 1]) && x->dtype != DT_E4M3;
}

/* The weight operand's param (or stack of params): w itself in forward,
 * transpose(w) in Dgrad. */
static ValueId weight_source(const Graph *g, const Node *n, ValueId w) {
    ValueId t = transposed_weight(g, w);
    return (n->flags & NODE_BACKWARD) && t >= 0 ? t : w;
}

static int rebuild_node(Rebuild *r, const Node *n, Err *err) {
    const char *weight;
    ValueId w;
    rebuild_enter(&r->b, n);
    if (n->op == OP_LINEAR && (w = weight_source(r->b.old, n, n->in[1])) >= 0 &&
        (weight = fp8_weight_name(r->b.old, w)) && producer(r->b.old, w)->op == OP_PARAM)
        return rewrite_linear(r, n, weight, err);
    if (n->op == OP_GROUPED_LINEAR && (w = weight_source(r->b.old, n, n->in[2])) >= 0 && stack_of_params(r->b.old, w) &&
        (weight = fp8_weight_name(r->b.old, w)))
        return rewrite_grouped(r, n, weight, err);
    if (n->op == OP_LINEAR_WGRAD && r->saved[n->in[1]][0] >= 0 && is_fp8_wgrad(r->b.old, n))
        return rewrite_wgrad(r, n, err);
    if (n->op == OP_GROUPED_LINEAR_WGRAD && r->saved[n->in[2]][0] >= 0) return rewrite_grouped_wgrad(r, n, err);
    if (n->op == OP_MOE_DISPATCH && !(n->flags & NODE_BACKWARD) && r->opt->fp8_dispatch && dispatch_takes_fp8(r->b.old, n))
        return rewrite_dispatch(r, n, err);
    return rebuild_copy_node(&r->b, n, "fp8", err);
}

/* Which forward activations a Wgrad will read in 128x1 tiles: the x of every
 * FP8 linear_wgrad and of every expert grouped_linear_wgrad whose weights are
 * quantized (their forward grouped_linear is rewritten, so saved[x] gets set). */
static void find_wgrad_operands(Rebuild *r) {
    size_t nv = r->b.old->values.len ? r->b.old->values.len : 1;
    r->wants_128x1 = xcalloc(nv, 1);
    r->saved = xmalloc(sizeof *r->saved * nv);
    r->restored = xmalloc(sizeof *r->restored * nv);
    r->segments = xmalloc(sizeof *r->segments * nv);
    for (size_t v = 0; v < nv; v++) r->saved[v][0] = r->saved[v][1] = r->restored[v] = r->segments[v] = -1;
    for (size_t i = 0; i < r->b.old->nodes.len; i++) {
        const Node *n = &r->b.old->nodes.data[i];
        if (n->dead) continue;
        if (is_fp8_wgrad(r->b.old, n)) r->wants_128x1[n->in[1]] = 1;
        if (n->op == OP_GROUPED_LINEAR_WGRAD) r->wants_128x1[n->in[2]] = 1;
    }
}

int fp8_graph(Graph *g, const Fp8Options *opt, Err *err) {
    Rebuild r = {.opt = opt};
    rebuild_begin(&r.b, g);
    find_wgrad_operands(&r);
    int rc = 0;
    for (size_t i = 0; i < g->nodes.len && !rc; i++)
        if (!g->nodes.data[i].dead) rc = rebuild_node(&r, &g->nodes.data[i], err);
    if (!rc) rc = rebuild_finish(&r.b, g, err);
    rebuild_end(&r.b);
    free(r.wants_128x1);
    free(r.saved);
    free(r.restored);
    free(r.segments);
    return rc ? err_wrap(err, "fp8: ") : 0;
}

int pass_fp8(Graph *g, PassContext *ctx, Err *err) {
    (void)ctx;
    Fp8Options opt = fp8_default_options();
    return fp8_graph(g, &opt, err);
}
