#include <stdlib.h>

#include "../ir/analysis.h"
#include "cli.h"

typedef struct OpCount {
    OpKind op;
    size_t n;
} OpCount;

static int by_count_desc(const void *a, const void *b) {
    const OpCount *x = a, *y = b;
    return x->n < y->n ? 1 : x->n > y->n ? -1 : (int)x->op - (int)y->op;
}

static void print_op_histogram(const Graph *g, FILE *f) {
    OpCount counts[OP_COUNT];
    for (int i = 0; i < OP_COUNT; i++) counts[i] = (OpCount){(OpKind)i, 0};
    for (size_t n = 0; n < g->nodes.len; n++) counts[g->nodes.data[n].op].n++;
    qsort(counts, OP_COUNT, sizeof *counts, by_count_desc);
    fprintf(f, "ops:");
    for (int i = 0; i < OP_COUNT && counts[i].n; i++) fprintf(f, " %s=%zu", op_info(counts[i].op)->name, counts[i].n);
    fprintf(f, "\n");
}

void print_ir_summary(const Graph *g, FILE *f) {
    fprintf(f, "graph: %zu nodes, %zu values, %zu outputs\n", g->nodes.len, g->values.len, g->outputs.len);
    print_op_histogram(g, f);
    for (size_t i = 0; i < g->outputs.len; i++) {
        char ty[256];
        type_print(ir_type(g, g->outputs.data[i].value), ty, sizeof ty);
        fprintf(f, "output %s: %s\n", g->outputs.data[i].name, ty);
    }
    ParamCounts pc;
    Err err = {0};
    if (count_params(g, &pc, &err) == 0)
        fprintf(f, "parameters: %lld in %lld tensors (activated per token %lld), mtp_parameters: %lld\n",
                (long long)pc.parameters, (long long)pc.tensors, (long long)pc.activated,
                (long long)pc.mtp_parameters);
}
