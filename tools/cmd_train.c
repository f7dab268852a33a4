/* v3c train: builds the model, appends its backward graph, and runs the training
 * job (train_job.h) on a byte-level corpus. docs/training.md describes it. */
#include <stdlib.h>

#include "../passes/autodiff.h"
#include "../passes/expert_parallel.h"
#include "../passes/bf16.h"
#include "../passes/fp8.h"
#include "../passes/recompute.h"
#include "train_job.h"

/* --set plus the training options that are DSL hyperparameters. */
static char *hyper_sets(const Options *o, Err *err) {
    double v;
    if (train_parse_real("--alpha", o->alpha, &v, err) || train_parse_real("--mtp-lambda", o->mtp_lambda, &v, err))
        return NULL;
    Buf b = {0};
    if (o->sets) buf_puts(&b, o->sets);
    if (o->alpha) buf_printf(&b, "%saux_loss_alpha=%s", b.len ? "," : "", o->alpha);
    if (o->mtp_lambda) buf_printf(&b, "%smtp_loss_weight=%s", b.len ? "," : "", o->mtp_lambda);
    return b.len ? buf_take(&b) : xstrdup("");
}

int train_build_model(const Options *o, Model *m, Err *err) {
    char *sets = hyper_sets(o, err);
    if (!sets) return -1;
    Options mo = *o;
    mo.sets = sets[0] ? sets : NULL;
    if (o->resume) mo.checkpoint = o->resume;
    mo.fp8 = mo.bf16 = 0; /* they rewrite the backward GEMMs too: train_prepare_graph applies them after autodiff */
    int rc = model_build(&mo, m, err);
    if (rc && o->resume) err_wrap(err, "--resume %s: ", o->resume);
    free(sets);
    return rc;
}

static int has_output(const Graph *g, const char *name) { return ir_find_output(g, name) >= 0; }

int train_prepare_graph(const Options *o, const Layout *l, Graph *g, const char **objective, Err *err) {
    *objective = has_output(g, "total_loss") ? "total_loss" : "loss";
    if (!has_output(g, *objective)) return err_set(err, "%s has no 'loss' output to train on", o->model);
    /* Before autodiff: the exchanges' VJPs are the reverse exchanges. */
    if (o->ep_capacity > (1 << 20)) return err_set(err, "--ep-capacity must be at most %d", 1 << 20);
    EpOptions ep = {.ranks = (int)l->ep, .rank = l->ep_rank, .fp8_dispatch = o->fp8, .rows_per_token = (int)o->ep_capacity};
    if (l->ep > 1 && expert_parallel_graph(g, &ep, err)) return -1;
    if (autodiff_graph(g, *objective, err)) return -1;
    Fp8Options f8 = fp8_default_options();
    if (o->fp8 && fp8_graph(g, &f8, err)) return -1;
    if (o->recompute && recompute_graph(g, NULL, err)) return -1;
    /* After recompute: a recomputed value's bf16 copy is then made in backward, not kept from forward. */
    if (o->bf16 && bf16_graph(g, err)) return -1;
    /* Not cse: it would merge recompute's clones back into the stored values. */
    PipelineOptions sweep = {.passes = "dce,verify", .log = stderr};
    return run_pipeline(g, &sweep, err);
}

static int model_weights_of(const Options *o, void *ctx, TensorSet *weights, Err *err) {
    return model_weights(o, ctx, weights, err);
}

static int train_body(const Options *o, Layout *l, Comm *world, void *ctx, Err *err) {
    (void)ctx;
    Model m = {0};
    TrainJob job = {.load_weights = model_weights_of, .ctx = &m, .backend = train_job_backend(o, o->fp8)};
    int rc = train_build_model(o, &m, err);
    if (rc == 0) rc = train_prepare_graph(o, l, m.graph, &job.objective, err);
    if (rc == 0) {
        job.graph = m.graph; /* the job frees it; model_weights reads it until then */
        if (m.program) job.config_json = program_hypers_json(m.program);
        rc = train_job_run(o, l, world, &job, err);
        m.graph = NULL;
    }
    model_free(&m);
    return rc;
}

int cmd_train(const Options *o, Err *err) {
    if (train_job_check_options(o, err)) return -1;
    return train_job_main(o, NULL, train_body, NULL, err);
}
