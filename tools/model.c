#include <stdlib.h>
#include <string.h>

#include "../ir/text.h"
#include "../passes/autodiff.h"
#include "../passes/bf16.h"
#include "../passes/fp8.h"
#include "../runtime/fp8_checkpoint.h"
#include "../runtime/init.h"
#include "cli.h"

static int bind_config_file(Program *p, const char *path, Err *err) {
    size_t len;
    char *text = read_file(path, &len, err);
    if (!text) return -1;
    Json *j = json_parse(text, len, path, err);
    free(text);
    if (!j) return -1;
    int rc = program_bind_config(p, j, err);
    json_free(j);
    return rc;
}

static int bind_hypers(const Options *o, Model *m, Err *err) {
    if (o->checkpoint && o->config) return err_set(err, "give --checkpoint or --config, not both");
    if (o->checkpoint) {
        m->checkpoint = checkpoint_open(o->checkpoint, err);
        if (!m->checkpoint) return -1;
        if (m->checkpoint->config && program_bind_config(m->program, m->checkpoint->config, err))
            return err_wrap(err, "%s/config.json: ", o->checkpoint);
    }
    if (o->config && bind_config_file(m->program, o->config, err)) return -1;
    if (o->sets && program_bind_sets(m->program, o->sets, err)) return -1;
    return 0;
}

static int build_from_source(const Options *o, Model *m, Err *err) {
    m->program = program_parse_file(o->model, err);
    if (!m->program || bind_hypers(o, m, err)) return -1;
    m->graph = program_lower(m->program, err);
    return m->graph ? 0 : -1;
}

static int build_from_ir(const Options *o, Model *m, Err *err) {
    if (o->config || o->sets) return err_set(err, "%s is IR text: --config and --set apply to .v3 models", o->model);
    size_t len;
    char *text = read_file(o->model, &len, err);
    if (!text) return -1;
    m->graph = ir_parse(text, o->model, err);
    free(text);
    if (!m->graph) return -1;
    if (o->checkpoint && !(m->checkpoint = checkpoint_open(o->checkpoint, err))) return -1;
    return 0;
}

/* The graph transformations a command's flags ask for, before the pipeline:
 * gradients of the main loss (--grads; the golden's are of `loss`), then FP8,
 * then bf16 for the GEMMs FP8 leaves. */
static int apply_features(const Options *o, Graph *g, Err *err) {
    if (o->grads && autodiff_graph(g, "loss", err)) return -1;
    if (o->fp8) {
        Fp8Options f = fp8_default_options();
        if (fp8_graph(g, &f, err)) return -1;
    }
    return o->bf16 ? bf16_graph(g, err) : 0;
}

int model_build(const Options *o, Model *m, Err *err) {
    memset(m, 0, sizeof *m);
    int rc = str_ends_with(o->model, ".v3ir") ? build_from_ir(o, m, err) : build_from_source(o, m, err);
    if (rc || apply_features(o, m->graph, err)) return -1;
    PipelineOptions po = {
        .passes = o->passes,
        .print_after = o->print_after,
        .dump_dir = o->dump_dir,
        .verify_each = o->verify_each,
        .time_passes = o->time_passes,
        .log = stderr,
    };
    return run_pipeline(m->graph, &po, err);
}

void model_free(Model *m) {
    graph_free(m->graph);
    if (m->program) program_free(m->program);
    if (m->checkpoint) checkpoint_close(m->checkpoint);
    memset(m, 0, sizeof *m);
}

int model_weights(const Options *o, const Model *m, TensorSet *weights, Err *err) {
    if (m->checkpoint) return checkpoint_load_params_fp8_aware(m->checkpoint, m->graph, weights, err);
    InitOptions init = {.seed = (uint64_t)(o->seed >= 0 ? o->seed : 1), .std = 0.02};
    return init_params(m->graph, &init, weights, err);
}
