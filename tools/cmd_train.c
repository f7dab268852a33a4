/* v3c train: builds the model, appends its backward graph, and runs the training
 * loop (runtime/train.h) on a byte-level corpus. docs/training.md describes it. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../passes/autodiff.h"
#include "../passes/memplan.h"
#include "../passes/fp8.h"
#include "../passes/recompute.h"
#include "../runtime/exec.h"
#include "../runtime/train.h"
#include "cli.h"


/* Defaults chosen so `v3c train models/tiny.v3` takes a few minutes on two cores
 * (docs/training.md has the measurements). */
static const char *const default_corpus = "data/kjv.txt";
enum { DEFAULT_STEPS = 300, DEFAULT_BATCH = 4, DEFAULT_SEQ = 64, DEFAULT_WARMUP = 10, DEFAULT_SEED = 1 };
static const double default_lr = 3e-3, default_gamma = 1e-3;

/* A --flag value that must be a finite number >= 0. */
static int parse_real(const char *flag, const char *text, double *out, Err *err) {
    if (!text) return 0;
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *end || errno || !isfinite(v) || v < 0)
        return err_set(err, "%s expects a number >= 0, got '%s'", flag, text);
    *out = v;
    return 0;
}

/* Options given on the command line win; the rest come from `base` (defaults or
 * the checkpoint being resumed). A 0 for the integer options means "not given"
 * (the option parser's default). */
static int apply_options(const Options *o, TrainProgress *pr, int64_t *steps, Err *err) {
    if (o->batch > 0) pr->batch = o->batch;
    if (o->seq > 0) pr->seq = o->seq;
    if (o->seed >= 0) pr->seed = o->seed;
    if (o->steps >= 0) *steps = o->steps;
    if (o->warmup >= 0) pr->optim.warmup = o->warmup;
    if (o->seq > 0 && o->seq < 2) return err_set(err, "--seq must be at least 2 (one next-token target)");
    OptimConfig *c = &pr->optim;
    if (parse_real("--lr", o->lr, &c->lr, err) || parse_real("--weight-decay", o->weight_decay, &c->weight_decay, err) ||
        parse_real("--clip", o->clip, &c->clip, err) || parse_real("--gamma", o->gamma, &pr->gamma, err))
        return -1;
    if (o->lr && !o->min_lr) c->min_lr = c->lr * 0.1;
    if (parse_real("--min-lr", o->min_lr, &c->min_lr, err)) return -1;
    if (c->min_lr > c->lr) return err_set(err, "--min-lr %g is above --lr %g", c->min_lr, c->lr);
    c->total_steps = *steps;
    return 0;
}

static TrainProgress fresh_progress(void) {
    TrainProgress pr = {.batch = DEFAULT_BATCH, .seq = DEFAULT_SEQ, .seed = DEFAULT_SEED, .gamma = default_gamma};
    pr.optim = optim_defaults(default_lr, DEFAULT_STEPS);
    pr.optim.warmup = DEFAULT_WARMUP;
    return pr;
}

/* --set plus the training options that are DSL hyperparameters. */
static char *hyper_sets(const Options *o, Err *err) {
    double v;
    Buf b = {0};
    if (o->sets) buf_puts(&b, o->sets);
    if (parse_real("--alpha", o->alpha, &v, err) || parse_real("--mtp-lambda", o->mtp_lambda, &v, err)) {
        buf_free(&b);
        return NULL;
    }
    if (o->alpha) buf_printf(&b, "%saux_loss_alpha=%s", b.len ? "," : "", o->alpha);
    if (o->mtp_lambda) buf_printf(&b, "%smtp_loss_weight=%s", b.len ? "," : "", o->mtp_lambda);
    return b.len ? buf_take(&b) : xstrdup("");
}

static int check_train_options(const Options *o, Err *err) {
    if (o->resume && o->checkpoint)
        return err_set(err, "give --checkpoint (start from weights) or --resume (continue a run), not both");
    if (o->resume && o->config) return err_set(err, "--resume takes the model's config.json from %s; drop --config", o->resume);
    struct stat st;
    if (o->resume && (stat(o->resume, &st) != 0 || !S_ISDIR(st.st_mode)))
        return err_set(err, "--resume %s: no such directory", o->resume);
    if (o->save && save_check_writable(o->save, err)) return -1;
    return 0;
}

/* The model with --alpha/--mtp-lambda bound, --resume's directory as its checkpoint. */
static int build_model(const Options *o, Model *m, Err *err) {
    char *sets = hyper_sets(o, err);
    if (!sets) return -1;
    Options mo = *o;
    mo.sets = sets[0] ? sets : NULL;
    if (o->resume) mo.checkpoint = o->resume;
    mo.fp8 = 0; /* FP8 rewrites the backward GEMMs too: prepare_graph applies it after autodiff */
    int rc = model_build(&mo, m, err);
    if (rc && o->resume) err_wrap(err, "--resume %s: ", o->resume);
    free(sets);
    return rc;
}

static int has_output(const Graph *g, const char *name) { return ir_find_output(g, name) >= 0; }

/* Appends the backward graph of the objective and, with --recompute, re-emits
 * the marked activations in backward instead of storing them; then drops what
 * nothing reads any more. */
static int prepare_graph(const Options *o, Graph *g, const char **objective, Err *err) {
    *objective = has_output(g, "total_loss") ? "total_loss" : "loss";
    if (!has_output(g, *objective)) return err_set(err, "%s has no 'loss' output to train on", o->model);
    if (autodiff_graph(g, *objective, err)) return -1;
    Fp8Options f8 = fp8_default_options();
    if (o->fp8 && fp8_graph(g, &f8, err)) return -1;
    if (o->recompute && recompute_graph(g, NULL, err)) return -1;
    /* Not cse: it would merge recompute's clones back into the stored values. */
    PipelineOptions sweep = {.passes = "dce,verify", .log = stderr};
    return run_pipeline(g, &sweep, err);
}

/* Everything one training run holds, released together. */
typedef struct Run {
    Model model;
    TensorSet weights;
    AdamW opt;
    Corpus data;
    TrainProgress pr;
    char *config_json;
    FILE *log;
} Run;

static void run_free(Run *r) {
    model_free(&r->model);
    tset_free(&r->weights);
    adamw_free(&r->opt);
    corpus_close(&r->data);
    free(r->config_json);
    if (r->log) fclose(r->log);
}

/* Weights, optimizer state and progress: fresh, or from --resume. */
static int load_state(const Options *o, Run *r, int64_t *steps, Err *err) {
    TrainProgress pr = fresh_progress();
    *steps = DEFAULT_STEPS;
    Options wo = *o;
    if (o->seed < 0) wo.seed = DEFAULT_SEED;
    if (model_weights(&wo, &r->model, &r->weights, err)) return -1;
    if (o->resume) {
        if (load_train_state(o->resume, &r->weights, &r->opt, &pr, err)) return -1;
        *steps = pr.optim.total_steps;
    }
    r->pr = pr;
    return apply_options(o, &r->pr, steps, err);
}

static int open_outputs(const Options *o, Run *r, Err *err) {
    if (r->model.program) r->config_json = program_hypers_json(r->model.program);
    if (o->log && !(r->log = fopen(o->log, o->resume ? "a" : "w")))
        return err_set(err, "cannot write --log %s: %s", o->log, strerror(errno));
    return 0;
}

static void print_summary(const TrainSummary *s, const TrainProgress *pr) {
    if (s->steps_run == 0) {
        printf("nothing to train: already at step %lld\n", (long long)pr->step);
        return;
    }
    printf("trained %lld steps (to step %lld): loss first %.4f last %.4f min %.4f, %.0f tokens/s\n",
           (long long)s->steps_run, (long long)pr->step, s->first_loss, s->last_loss, s->min_loss, s->tokens_per_s);
}

/* The memory planner's peak of activations (graph outputs, the gradients among
 * them, left out) at the run's batch and sequence length. */
static int activation_peak(const Graph *g, const TrainProgress *pr, int64_t *peak, Err *err) {
    MemPlan plan;
    if (memplan_build(g, pr->batch, pr->seq, &plan, err)) return -1;
    *peak = plan.peak_activation_bytes;
    memplan_free(&plan);
    return 0;
}

int cmd_train(const Options *o, Err *err) {
    if (check_train_options(o, err)) return -1;
    Run r = {0};
    tset_init(&r.weights);
    adamw_init(&r.opt);
    int64_t steps = 0;
    const char *objective = NULL;
    TrainConfig c = {0};
    int rc = build_model(o, &r.model, err);
    if (rc == 0) rc = prepare_graph(o, r.model.graph, &objective, err);
    if (rc == 0) rc = load_state(o, &r, &steps, err);
    if (rc == 0) rc = corpus_open(&r.data, o->data ? o->data : default_corpus, r.pr.seq, err);
    if (rc == 0) rc = activation_peak(r.model.graph, &r.pr, &c.peak_activation_bytes, err);
    if (rc == 0) rc = open_outputs(o, &r, err);
    if (rc == 0) {
        c.graph = r.model.graph;
        c.objective = objective;
        c.data = &r.data;
        c.steps = steps;
        c.save_every = o->save_every;
        c.save_dir = o->save;
        c.config_json = r.config_json;
        c.log = r.log;
        c.progress = stderr;
        c.progress_bar = isatty(STDERR_FILENO);
        c.report_every = steps >= 20 ? steps / 20 : 1;
        InterpOptions io = {.batch = r.pr.batch, .seq = r.pr.seq};
        c.exec = exec_prepare(o->backend ? o->backend : exec_default_backend(), c.graph, &io, err);
        TrainSummary sum;
        rc = c.exec ? train_run(&c, &r.weights, &r.opt, &r.pr, &sum, err) : -1;
        if (rc == 0) print_summary(&sum, &r.pr);
        exec_free(c.exec);
    }
    run_free(&r);
    return rc;
}
