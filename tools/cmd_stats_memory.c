/* v3c stats --memory: see stats_memory.h. */
#include <stdio.h>
#include <string.h>

#include "../passes/autodiff.h"
#include "../passes/memplan.h"
#include "../passes/recompute.h"
#include "stats_memory.h"

static int has_output(const Graph *g, const char *name) { return ir_find_output(g, name) >= 0; }

static int is_training_output(const char *name, void *target) {
    return strcmp(name, target) == 0 || strncmp(name, "grad.", 5) == 0;
}

/* A training step returns the loss and the gradients; logits and the other
 * forward outputs would otherwise stay live to the end and inflate the peak. */
static int keep_training_outputs(Graph *g, const char *target, Err *err) {
    ir_retain_outputs(g, is_training_output, (void *)target);
    PipelineOptions po = {.passes = "dce"};
    return run_pipeline(g, &po, err);
}

static int64_t sum_param_bytes(const Graph *g, int64_t *grad_bytes, const MemPlan *plan) {
    int64_t params = 0;
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        if (n->op != OP_PARAM) continue;
        const Type *ty = ir_type(g, n->out[0]);
        int64_t bytes = memplan_dtype_bytes(ty->dtype);
        for (int d = 0; d < ty->rank; d++) bytes *= dim_const_value(ty->dims[d]);
        params += bytes;
    }
    *grad_bytes = 0;
    for (size_t i = 0; i < g->outputs.len; i++)
        if (strncmp(g->outputs.data[i].name, "grad.", 5) == 0) *grad_bytes += plan->bytes[g->outputs.data[i].value];
    return params;
}

static void print_plan(const char *suffix, const MemPlan *p) {
    printf("peak_activation_bytes%s: %lld\n", suffix, (long long)p->peak_activation_bytes);
    printf("peak_bytes%s: %lld\n", suffix, (long long)p->peak_bytes);
    printf("arena_bytes%s: %lld\n", suffix, (long long)p->arena_bytes);
}

static int check_param_shapes(const Graph *g, Err *err) {
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        if (n->op != OP_PARAM) continue;
        const Type *ty = ir_type(g, n->out[0]);
        for (int d = 0; d < ty->rank; d++)
            if (!dim_is_const(ty->dims[d]))
                return err_set(err, "stats --memory: weight '%s' has a shape depending on B or T",
                               node_str(n, "name", "?"));
    }
    return 0;
}

int stats_memory(const Options *o, Model *m, Err *err) {
    /* -1: the option was not given */
    if ((o->batch != -1 && o->batch < 1) || (o->seq != -1 && o->seq < 1))
        return err_set(err, "stats --memory: --batch and --seq must be positive");
    int64_t batch = o->batch > 0 ? o->batch : 1, seq = o->seq > 0 ? o->seq : 4096;
    Graph *g = m->graph;
    const char *target = has_output(g, "total_loss") ? "total_loss" : has_output(g, "loss") ? "loss" : NULL;
    if (!target) return err_set(err, "stats --memory: the model has no 'total_loss' or 'loss' output to train on");
    if (check_param_shapes(g, err) || autodiff_graph(g, target, err) || keep_training_outputs(g, target, err))
        return -1;
    MemPlan plain, recomputed;
    if (memplan_build(g, batch, seq, &plain, err)) return -1;
    size_t clones = 0;
    if (recompute_graph(g, &clones, err) || memplan_build(g, batch, seq, &recomputed, err)) {
        memplan_free(&plain);
        return -1;
    }
    int64_t grad_bytes, param_bytes = sum_param_bytes(g, &grad_bytes, &recomputed);
    printf("batch: %lld\nseq: %lld\n", (long long)batch, (long long)seq);
    printf("parameter_bytes: %lld\ngradient_bytes: %lld\n", (long long)param_bytes, (long long)grad_bytes);
    printf("weight_derived_bytes: %lld\n", (long long)recomputed.weight_derived_bytes);
    print_plan("", &plain);
    print_plan("_recompute", &recomputed);
    printf("recompute_saving_bytes: %lld\n", (long long)(plain.peak_activation_bytes - recomputed.peak_activation_bytes));
    printf("recompute_clones: %zu\n", clones);
    memplan_free(&plain);
    memplan_free(&recomputed);
    return 0;
}
