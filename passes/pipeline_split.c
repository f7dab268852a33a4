/* The stage split (pipeline_split.h). Every node of the training graph is
 * either placed on one (stage, part), or cloned into each part that reads it:
 * params, and "free" nodes that read no weight (input_ids, constants, RoPE
 * frequencies, label slices), which are cheaper to recompute than to send. */
#include "pipeline_split.h"

#include <stdlib.h>
#include <string.h>

static const char *const part_names[PIPE_PART_COUNT] = {"forward", "backward", "weight"};

const char *pipe_part_name(PipePart p) { return (unsigned)p < PIPE_PART_COUNT ? part_names[p] : "?"; }

int pipeline_layer_stage(int layer, int layers, int stages) {
    int s = 0;
    while (s + 1 < stages && (int64_t)(s + 1) * layers / stages <= layer) s++;
    return s;
}

/* What the split does with a node. */
typedef enum Placement { PLACE_STAGE, PLACE_PARAM, PLACE_FREE, PLACE_DISSOLVED } Placement;

typedef struct Splitter {
    const Graph *g;
    const PipelineSplitOptions *o;
    int layers;
    Placement *place; /* per node */
    int *stage;       /* per node, for PLACE_STAGE */
    PipePart *part;   /* per node, for PLACE_STAGE */
    int *node_uses;   /* per value: how many node inputs read it */
    int *output_uses; /* per value: how many graph outputs name it */
    VEC(PipeMessage) messages;
} Splitter;

/* "layers.N..." -> N; -1 for any other scope. */
static int scope_layer(const char *scope) {
    static const char prefix[] = "layers.";
    if (strncmp(scope, prefix, sizeof prefix - 1) != 0) return -1;
    char *end;
    long n = strtol(scope + sizeof prefix - 1, &end, 10);
    if (end == scope + sizeof prefix - 1 || (*end && *end != '.') || n < 0 || n > 1000000) return -1;
    return (int)n;
}

static int count_layers(const Graph *g) {
    int layers = 0;
    for (size_t i = 0; i < g->nodes.len; i++) {
        int n = scope_layer(g->nodes.data[i].scope);
        if (n + 1 > layers) layers = n + 1;
    }
    return layers;
}

static const Node *producer(const Graph *g, ValueId v) { return &g->nodes.data[g->values.data[v].node]; }
static int32_t producer_id(const Graph *g, ValueId v) { return g->values.data[v].node; }

static int is_free_node(const Splitter *sp, const Node *n) {
    if (n->op == OP_PARAM) return 0;
    for (int i = 0; i < n->nin; i++)
        if (sp->place[producer_id(sp->g, n->in[i])] != PLACE_FREE) return 0;
    return 1;
}

/* The stage an unscoped node goes to: a forward node after the latest stage it
 * reads (the final norm after the last layer, the embedding on stage 0); a
 * backward node on the earliest stage whose gradients it reads (gradients flow
 * towards stage 0), else after the forward values it reads. */
static int unscoped_stage(const Splitter *sp, const Node *n) {
    int fwd_max = -1, bwd_min = -1;
    for (int i = 0; i < n->nin; i++) {
        int32_t m = producer_id(sp->g, n->in[i]);
        if (sp->place[m] != PLACE_STAGE) continue;
        int s = sp->stage[m];
        if (sp->part[m] == PIPE_FORWARD && s > fwd_max) fwd_max = s;
        if (sp->part[m] != PIPE_FORWARD && (bwd_min < 0 || s < bwd_min)) bwd_min = s;
    }
    if (!(n->flags & NODE_BACKWARD)) return fwd_max < 0 ? 0 : fwd_max;
    if (bwd_min >= 0) return bwd_min;
    return fwd_max < 0 ? sp->o->stages - 1 : fwd_max;
}

static int node_stage(const Splitter *sp, const Node *n) {
    int layer = scope_layer(n->scope);
    if (layer >= 0) return pipeline_layer_stage(layer, sp->layers, sp->o->stages);
    if (strncmp(n->scope, "mtp", 3) == 0) return sp->o->stages - 1;
    return unscoped_stage(sp, n);
}

static PipePart node_part(const Splitter *sp, const Node *n) {
    if (!(n->flags & NODE_BACKWARD)) return PIPE_FORWARD;
    return sp->o->split_weights && (n->flags & NODE_WGRAD) ? PIPE_WEIGHT : PIPE_BACKWARD;
}

static void place_nodes(Splitter *sp) {
    for (size_t i = 0; i < sp->g->nodes.len; i++) {
        const Node *n = &sp->g->nodes.data[i];
        if (n->op == OP_PARAM) sp->place[i] = PLACE_PARAM;
        else if (is_free_node(sp, n)) sp->place[i] = PLACE_FREE;
        else {
            sp->place[i] = PLACE_STAGE;
            sp->stage[i] = node_stage(sp, n);
            sp->part[i] = node_part(sp, n);
        }
    }
}

static void count_uses(Splitter *sp) {
    for (size_t i = 0; i < sp->g->nodes.len; i++) {
        const Node *n = &sp->g->nodes.data[i];
        for (int k = 0; k < n->nin; k++) sp->node_uses[n->in[k]]++;
    }
    for (size_t i = 0; i < sp->g->outputs.len; i++) sp->output_uses[sp->g->outputs.data[i].value]++;
}

/* ---- weight gradients accumulated across stages ---- */

/* An accumulation `add` of two equal-typed gradients that only its parent in
 * the tree (or, at the root, one graph output) reads. */
static int is_accumulation(const Splitter *sp, ValueId v, int root) {
    const Node *n = producer(sp->g, v);
    if (n->op != OP_ADD || n->nin != 2 || !(n->flags & NODE_BACKWARD)) return 0;
    if (sp->place[producer_id(sp->g, v)] != PLACE_STAGE) return 0;
    const Type *t = ir_type(sp->g, v);
    if (!type_equal(ir_type(sp->g, n->in[0]), t) || !type_equal(ir_type(sp->g, n->in[1]), t)) return 0;
    return root ? sp->node_uses[v] == 0 && sp->output_uses[v] == 1 : sp->node_uses[v] == 1 && sp->output_uses[v] == 0;
}

enum { NO_STAGE = -1, MANY_STAGES = -2 };

/* The one stage every leaf under v lies on; NO_STAGE or MANY_STAGES. */
static int leaf_stage(const Splitter *sp, ValueId v, int root) {
    if (is_accumulation(sp, v, root)) {
        const Node *n = producer(sp->g, v);
        int a = leaf_stage(sp, n->in[0], 0), b = leaf_stage(sp, n->in[1], 0);
        if (a == NO_STAGE) return b;
        if (b == NO_STAGE) return a;
        return a == b ? a : MANY_STAGES;
    }
    int32_t m = producer_id(sp->g, v);
    return sp->place[m] == PLACE_STAGE ? sp->stage[m] : NO_STAGE;
}

typedef VEC(ValueId) ValueList;

/* Dissolves the accumulation tree above v where its leaves lie on different
 * stages, so each stage outputs its own partial sum; collects the leaves. */
static void collect_leaves(Splitter *sp, ValueId v, int root, ValueList *leaves) {
    if (is_accumulation(sp, v, root) && leaf_stage(sp, v, root) == MANY_STAGES) {
        const Node *n = producer(sp->g, v);
        sp->place[producer_id(sp->g, v)] = PLACE_DISSOLVED;
        collect_leaves(sp, n->in[0], 0, leaves);
        collect_leaves(sp, n->in[1], 0, leaves);
        return;
    }
    VEC_PUSH(*leaves, v);
}

/* A training-graph output the stage graphs keep: its value, or the leaves
 * whose per-stage partial sums add up to it. */
typedef struct KeptOutput {
    const char *name;
    ValueList leaves;
} KeptOutput;
typedef VEC(KeptOutput) KeptOutputs;

static int is_static(const Type *t) {
    for (int i = 0; i < t->rank; i++)
        if (!dim_is_const(t->dims[i])) return 0;
    return 1;
}

/* Outputs whose size depends on B or T (logits) are per-micro-batch
 * intermediates, not step results: they are dropped. */
static int keep_outputs(Splitter *sp, KeptOutputs *kept, Err *err) {
    for (size_t i = 0; i < sp->g->outputs.len; i++) {
        const GraphOutput *o = &sp->g->outputs.data[i];
        if (!is_static(ir_type(sp->g, o->value))) continue;
        if (sp->place[producer_id(sp->g, o->value)] != PLACE_STAGE)
            return err_set(err, "output '%s' reads no weight and no layer: no pipeline stage computes it", o->name);
        KeptOutput k = {.name = o->name};
        collect_leaves(sp, o->value, 1, &k.leaves);
        VEC_PUSH(*kept, k);
    }
    return 0;
}

/* ---- messages ---- */

/* Whether a value of (s, p) may feed (t, q) under every schedule: forward
 * values flow to later stages, input gradients to earlier ones, and a part
 * never reads a part that runs after it. */
static int crossing_allowed(int s, PipePart p, int t, PipePart q) {
    if (p == PIPE_FORWARD) return q != PIPE_FORWARD || s < t;
    if (p == PIPE_BACKWARD) return (q == PIPE_BACKWARD && s > t) || (q == PIPE_WEIGHT && s >= t);
    return 0;
}

static int find_message(const Splitter *sp, const char *name, int t, PipePart q) {
    for (size_t i = 0; i < sp->messages.len; i++) {
        const PipeMessage *m = &sp->messages.data[i];
        if (m->dst_stage == t && m->dst_part == q && strcmp(m->name, name) == 0) return (int)i;
    }
    return -1;
}

static int add_message(Splitter *sp, ValueId v, int t, PipePart q, Err *err) {
    int32_t m = producer_id(sp->g, v);
    int s = sp->stage[m];
    PipePart p = sp->part[m];
    if (!crossing_allowed(s, p, t, q))
        return err_set(err, "value %%%d (%s, scope '%s') of stage %d's %s part is read by stage %d's %s part: "
                       "a pipeline cannot run that dataflow", (int)v, op_info(sp->g->nodes.data[m].op)->name,
                       sp->g->nodes.data[m].scope, s, pipe_part_name(p), t, pipe_part_name(q));
    char *name = xsprintf("x.%d", (int)v);
    if (find_message(sp, name, t, q) >= 0) {
        free(name);
        return 0;
    }
    PipeMessage msg = {.name = name, .src_stage = s, .dst_stage = t, .src_part = p, .dst_part = q};
    VEC_PUSH(sp->messages, msg);
    return 0;
}

/* A node reads a value across parts either directly or through the free
 * nodes cloned into its graph; clones read only free values and params. */
static int find_messages(Splitter *sp, Err *err) {
    for (size_t i = 0; i < sp->g->nodes.len; i++) {
        if (sp->place[i] != PLACE_STAGE) continue;
        const Node *n = &sp->g->nodes.data[i];
        for (int k = 0; k < n->nin; k++) {
            int32_t m = producer_id(sp->g, n->in[k]);
            if (sp->place[m] == PLACE_DISSOLVED)
                return err_internal(err, "a dissolved gradient accumulation is read by node %zu", i);
            if (sp->place[m] != PLACE_STAGE) continue;
            if (sp->stage[m] == sp->stage[i] && sp->part[m] == sp->part[i]) continue;
            if (add_message(sp, n->in[k], sp->stage[i], sp->part[i], err)) return -1;
        }
    }
    return 0;
}

/* ---- building one stage graph ---- */

typedef struct Builder {
    const Splitter *sp;
    Graph *out;
    ValueId *map; /* training-graph value -> value of out, -1 before first use */
} Builder;

static ValueId local_value(Builder *b, ValueId v, Err *err);

static int clone_node(Builder *b, const Node *n, Err *err) {
    const Graph *g = b->sp->g;
    if (n->op == OP_PARAM || n->op == OP_INPUT) {
        const char *name = node_str(n, "name", "");
        const Type *t = ir_type(g, n->out[0]);
        ValueId v = n->op == OP_PARAM ? ir_param(b->out, name, *t, err) : ir_input(b->out, name, *t, err);
        if (v < 0) return -1;
        b->map[n->out[0]] = v;
        return 0;
    }
    ValueId out[4];
    Type types[4];
    if (n->nout > 4) return err_internal(err, "op '%s' has more outputs than the split copies", op_info(n->op)->name);
    ValueId *in = xmalloc(sizeof(ValueId) * (size_t)(n->nin + 1));
    for (int i = 0; i < n->nin; i++)
        if ((in[i] = local_value(b, n->in[i], err)) < 0) {
            free(in);
            return -1;
        }
    for (int i = 0; i < n->nout; i++) types[i] = *ir_type(g, n->out[i]);
    b->out->cur_scope = graph_intern(b->out, n->scope);
    b->out->cur_chunk = n->chunk;
    b->out->cur_flags = n->flags;
    int id = ir_emit_typed(b->out, n->op, in, n->nin, n->attrs, n->nattrs, types, n->nout, out, err);
    free(in);
    if (id < 0) return -1;
    for (int i = 0; i < n->nout; i++) b->map[n->out[i]] = out[i];
    return 0;
}

/* Params and free nodes are cloned on first use; a value of another part
 * becomes an input named as its message. */
static ValueId local_value(Builder *b, ValueId v, Err *err) {
    if (b->map[v] >= 0) return b->map[v];
    const Graph *g = b->sp->g;
    int32_t m = producer_id(g, v);
    Placement pl = b->sp->place[m];
    if (pl == PLACE_PARAM || pl == PLACE_FREE) {
        if (clone_node(b, &g->nodes.data[m], err)) return -1;
        return b->map[v];
    }
    char name[32];
    snprintf(name, sizeof name, "x.%d", (int)v);
    return b->map[v] = ir_input(b->out, name, *ir_type(g, v), err);
}

/* The leaves of one kept output that lie in this graph, summed. */
static int add_partial_output(Builder *b, int s, PipePart q, const KeptOutput *k, Err *err) {
    const Splitter *sp = b->sp;
    ValueId sum = -1;
    for (size_t i = 0; i < k->leaves.len; i++) {
        int32_t m = producer_id(sp->g, k->leaves.data[i]);
        if (sp->place[m] != PLACE_STAGE || sp->stage[m] != s || sp->part[m] != q) continue;
        ValueId v = local_value(b, k->leaves.data[i], err);
        if (v < 0) return -1;
        if (sum >= 0) {
            ValueId pair[2] = {sum, v};
            b->out->cur_scope = graph_intern(b->out, "");
            b->out->cur_flags = sp->g->nodes.data[m].flags;
            if (ir_emit(b->out, OP_ADD, pair, 2, NULL, 0, &v, err) < 0) return -1;
        }
        sum = v;
    }
    return sum < 0 ? 0 : ir_add_output(b->out, k->name, sum, err);
}

static int message_outputs(Builder *b, int s, PipePart q, Err *err) {
    const Splitter *sp = b->sp;
    for (size_t i = 0; i < sp->messages.len; i++) {
        const PipeMessage *m = &sp->messages.data[i];
        if (m->src_stage != s || m->src_part != q || ir_find_output(b->out, m->name) >= 0) continue;
        ValueId v = (ValueId)atoi(m->name + 2);
        if (ir_add_output(b->out, m->name, b->map[v], err)) return -1;
    }
    return 0;
}

static Graph *build_graph(const Splitter *sp, int s, PipePart q, const KeptOutputs *kept, Err *err) {
    Builder b = {.sp = sp, .out = graph_new(), .map = xmalloc(sizeof(ValueId) * (sp->g->values.len + 1))};
    for (size_t i = 0; i < sp->g->values.len; i++) b.map[i] = -1;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sp->g->nodes.len; i++)
        if (sp->place[i] == PLACE_STAGE && sp->stage[i] == s && sp->part[i] == q)
            rc = clone_node(&b, &sp->g->nodes.data[i], err);
    for (size_t i = 0; rc == 0 && i < kept->len; i++) rc = add_partial_output(&b, s, q, &kept->data[i], err);
    if (rc == 0) rc = message_outputs(&b, s, q, err);
    free(b.map);
    if (rc == 0) return b.out;
    err_wrap(err, "stage %d, %s part: ", s, pipe_part_name(q));
    graph_free(b.out);
    return NULL;
}

/* ---- the pass ---- */

static void splitter_free(Splitter *sp, KeptOutputs *kept) {
    free(sp->place);
    free(sp->stage);
    free(sp->part);
    free(sp->node_uses);
    free(sp->output_uses);
    for (size_t i = 0; i < kept->len; i++) VEC_FREE(kept->data[i].leaves);
    VEC_FREE(*kept);
}

static int check_options(const Graph *g, const PipelineSplitOptions *o, int layers, Err *err) {
    if (o->stages < 1) return err_set(err, "a pipeline needs at least 1 stage, got %d", o->stages);
    if (layers < o->stages)
        return err_set(err, "%d pipeline stages need at least as many decoder layers (scopes \"layers.N\"); the graph has %d",
                       o->stages, layers);
    int found = 0;
    for (size_t i = 0; i < g->nodes.len; i++) found |= (g->nodes.data[i].flags & NODE_BACKWARD) != 0;
    if (!found) return err_set(err, "the graph has no backward nodes: split a training graph (autodiff first)");
    return 0;
}

static PipelineSplit *split_new(int stages, int layers, int split_weights) {
    PipelineSplit *ps = xcalloc(1, sizeof *ps);
    *ps = (PipelineSplit){.stages = stages, .layers = layers, .split_weights = split_weights};
    ps->graphs = xcalloc((size_t)stages, sizeof *ps->graphs);
    return ps;
}

static int build_graphs(const Splitter *sp, const KeptOutputs *kept, PipelineSplit *ps, Err *err) {
    for (int s = 0; s < ps->stages; s++)
        for (int q = 0; q < PIPE_PART_COUNT; q++)
            if (!(ps->graphs[s][q] = build_graph(sp, s, (PipePart)q, kept, err))) return -1;
    return 0;
}

PipelineSplit *pipeline_split(const Graph *g, const PipelineSplitOptions *o, Err *err) {
    int layers = count_layers(g);
    if (check_options(g, o, layers, err)) return NULL;
    size_t nn = g->nodes.len + 1, nv = g->values.len + 1;
    Splitter sp = {.g = g, .o = o, .layers = layers, .place = xcalloc(nn, sizeof(Placement)),
                   .stage = xcalloc(nn, sizeof(int)), .part = xcalloc(nn, sizeof(PipePart)),
                   .node_uses = xcalloc(nv, sizeof(int)), .output_uses = xcalloc(nv, sizeof(int))};
    KeptOutputs kept = {0};
    count_uses(&sp);
    place_nodes(&sp);
    PipelineSplit *ps = split_new(o->stages, layers, o->split_weights);
    int rc = keep_outputs(&sp, &kept, err);
    if (rc == 0) rc = find_messages(&sp, err);
    ps->messages = sp.messages.data;
    ps->nmessages = (int)sp.messages.len;
    if (rc == 0) rc = build_graphs(&sp, &kept, ps, err);
    splitter_free(&sp, &kept);
    if (rc == 0) return ps;
    pipeline_split_free(ps);
    return NULL;
}

void pipeline_split_free(PipelineSplit *ps) {
    if (!ps) return;
    for (int s = 0; s < ps->stages; s++)
        for (int q = 0; q < PIPE_PART_COUNT; q++) graph_free(ps->graphs[s][q]);
    for (int i = 0; i < ps->nmessages; i++) free((char *)ps->messages[i].name);
    free(ps->messages);
    free(ps->graphs);
    free(ps);
}
