/* A bundle's per-rank memory report (docs/aot.md): what one rank of the layout
 * holds while training, from its stage graphs, the schedule and the ZeRO-1
 * sharding, without running anything. */
#include <string.h>

#include "../passes/memplan.h"
#include "bundle.h"

enum { MASTER_BYTES = 4, MOMENT_BYTES = 4 }; /* f32 weights, gradients and AdamW moments (runtime/optim.h) */

int bundle_rank_stages(const Layout *l, int r, int stages[2]) {
    stages[0] = r;
    if (l->pp > 1 && l->schedule == SCHED_DUALPIPE) {
        stages[1] = (int)l->pp - 1 - r;
        return 2;
    }
    return 1;
}

static int64_t param_numel(const Graph *g, const Node *n) {
    const Type *ty = ir_type(g, n->out[0]);
    int64_t numel = 1;
    for (int d = 0; d < ty->rank; d++) numel *= dim_const_value(ty->dims[d]);
    return numel;
}

static void expert_name_set(const ExpertStacks *ex, StrMap *names) {
    strmap_init(names);
    for (size_t s = 0; s < ex->stacks.len; s++)
        for (int64_t e = 0; e < ex->experts; e++) strmap_put(names, ex->stacks.data[s][e], 1);
}

/* Every weight the graphs read, once; the experts' apart (ZeRO-1 shards them over fewer ranks). */
static void count_params(const Graph *const *graphs, int n, const ExpertStacks *ex, int64_t *dense, int64_t *experts) {
    StrMap seen, expert_names;
    strmap_init(&seen);
    expert_name_set(ex, &expert_names);
    *dense = *experts = 0;
    for (int i = 0; i < n; i++)
        for (size_t k = 0; k < graphs[i]->nodes.len; k++) {
            const Node *node = &graphs[i]->nodes.data[k];
            const char *name = node->op == OP_PARAM ? node_str(node, "name", NULL) : NULL;
            if (!name || strmap_get(&seen, name, NULL)) continue;
            strmap_put(&seen, name, 1);
            *(strmap_get(&expert_names, name, NULL) ? experts : dense) += param_numel(graphs[i], node);
        }
    strmap_free(&seen);
    strmap_free(&expert_names);
}

/* The graphs the rank runs: its stages' parts, or the whole graph when there is no split. */
static int rank_graphs(const PipelineSplit *split, const Graph *whole, const int *stages, int n, const Graph **out) {
    if (!split) {
        out[0] = whole;
        return 1;
    }
    int k = 0;
    for (int i = 0; i < n; i++)
        for (int part = 0; part < PIPE_PART_COUNT; part++) out[k++] = split->graphs[stages[i]][part];
    return k;
}

static int is_input_of(const Graph *g, const char *name) {
    int64_t v;
    return strmap_get(&g->names, name, &v) && v >= 0 && g->nodes.data[g->values.data[v].node].op == OP_INPUT;
}

/* Bytes of one micro-batch's activations a stage keeps from its forward until
 * its backward (and deferred weight part) read them, and the peak of any one
 * of its graphs while it runs. */
static int stage_activations(const PipelineSplit *split, int s, int64_t rows, int64_t seq, int64_t *saved,
                             int64_t *transient, int64_t *weight_derived, Err *err) {
    *saved = *transient = *weight_derived = 0;
    for (int part = 0; part < PIPE_PART_COUNT; part++) {
        const Graph *g = split->graphs[s][part];
        MemPlan plan;
        if (memplan_build(g, rows, seq, &plan, err)) return -1;
        if (plan.peak_activation_bytes > *transient) *transient = plan.peak_activation_bytes;
        *weight_derived += plan.weight_derived_bytes;
        for (size_t i = 0; part == PIPE_FORWARD && i < g->outputs.len; i++) {
            const char *name = g->outputs.data[i].name;
            if (is_input_of(split->graphs[s][PIPE_BACKWARD], name) || is_input_of(split->graphs[s][PIPE_WEIGHT], name))
                *saved += plan.bytes[g->outputs.data[i].value];
        }
        memplan_free(&plan);
    }
    return 0;
}

/* Walks rank r's instructions: a micro-batch's saved activations live from
 * its forward to its backward, or to its deferred W. Returns the most bytes
 * (per direction: size[dir]) live at once; without a schedule (one stage) one
 * micro-batch at a time. */
static int64_t peak_live(const Schedule *sched, int r, const int64_t size[2]) {
    if (!sched) return size[0];
    int64_t live = 0, peak = 0;
    for (int i = 0; i < sched->len[r]; i++) {
        const SchedOp *op = &sched->ops[r][i];
        if (op->kind == SOP_F || op->kind == SOP_FB) live += size[op->dir];
        if (live > peak) peak = live;
        if (op->kind == SOP_FB) live -= size[op->bdir];
        if ((op->kind == SOP_B && op->full) || op->kind == SOP_W) live -= size[op->dir];
    }
    return peak;
}

int64_t rank_memory_total(const RankMemory *m) { return m->parameters + m->gradients + m->optimizer + m->activations; }

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* The unsplit graph's own peak, as memplan gives it (graph outputs left out). */
static int whole_graph_activations(const Graph *whole, int64_t rows, int64_t seq, RankMemory *out, Err *err) {
    MemPlan plan;
    if (memplan_build(whole, rows, seq, &plan, err)) return -1;
    out->activations = plan.peak_activation_bytes;
    out->weight_derived = plan.weight_derived_bytes;
    out->inflight = 1;
    memplan_free(&plan);
    return 0;
}

static int pipelined_activations(const PipelineSplit *split, const Schedule *sched, const int *stages, int n,
                                 int r, int64_t rows, int64_t seq, RankMemory *out, Err *err) {
    int64_t saved[2] = {0, 0}, transient = 0;
    for (int i = 0; i < n; i++) {
        int64_t t, w;
        if (stage_activations(split, stages[i], rows, seq, &saved[i], &t, &w, err)) return -1;
        if (t > transient) transient = t;
        out->weight_derived += w;
    }
    const int64_t one[2] = {1, 1};
    out->activations = peak_live(sched, r, saved) + transient;
    out->inflight = peak_live(sched, r, one);
    return 0;
}

int bundle_rank_memory(const PipelineSplit *split, const Schedule *sched, const Layout *l, const ExpertStacks *ex,
                       const Graph *whole, int r, int64_t rows, int64_t seq, RankMemory *out, Err *err) {
    int stages[2];
    int n = bundle_rank_stages(l, r, stages);
    int64_t dense, experts;
    const Graph *graphs[2 * PIPE_PART_COUNT];
    count_params(graphs, rank_graphs(split, whole, stages, n, graphs), ex, &dense, &experts);
    memset(out, 0, sizeof *out);
    out->parameters = (dense + experts) * MASTER_BYTES;
    out->gradients = (dense + experts) * MASTER_BYTES;
    /* ZeRO-1: dense moments over the stage's ep x dp data ranks, the experts' over the dp ranks holding them. */
    out->optimizer = 2 * MOMENT_BYTES * (ceil_div(dense, layout_data_ranks(l)) + ceil_div(experts, l->dp));
    if (!split || (whole && !layout_uses_pipeline(l))) return whole_graph_activations(whole, rows, seq, out, err);
    return pipelined_activations(split, sched, stages, n, r, rows, seq, out, err);
}
