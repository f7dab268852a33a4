#include "../ir/analysis.h"
#include "../ir/verify.h"
#include "cli.h"
#include "stats_memory.h"

/* Parse, bind, lower and verify: the quick "is my model file right" check. */
int cmd_check(const Options *o, Err *err) {
    Model m;
    int rc = model_build(o, &m, err);
    if (rc == 0) rc = ir_verify(m.graph, err);
    if (rc == 0) printf("%s: ok (%zu nodes, %zu outputs)\n", o->model, m.graph->nodes.len, m.graph->outputs.len);
    model_free(&m);
    return rc;
}

/* CONTRACT: the lines "parameters: N", "activated: N", "mtp_parameters: N". */
int cmd_stats(const Options *o, Err *err) {
    Model m;
    int rc = model_build(o, &m, err);
    if (rc == 0 && o->memory) {
        rc = stats_memory(o, &m, err);
        model_free(&m);
        return rc;
    }
    ParamCounts pc;
    if (rc == 0) rc = count_params(m.graph, &pc, err);
    if (rc == 0) {
        printf("parameters: %lld\n", (long long)pc.parameters);
        printf("activated: %lld\n", (long long)pc.activated);
        printf("mtp_parameters: %lld\n", (long long)pc.mtp_parameters);
        printf("weight_tensors: %lld\n", (long long)pc.tensors);
        printf("nodes: %zu\n", m.graph->nodes.len);
    }
    model_free(&m);
    return rc;
}
