/* One rank's training job (train_job.h): layout, communicators, state, loop. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../base/parallel.h"
#include "../runtime/ep.h"
#include "../runtime/exec.h"
#include "../runtime/pipeline.h"
#include "../runtime/train.h"
#include "bundle.h"

/* Defaults chosen so `v3c train models/tiny.v3` takes a few minutes on two cores
 * (docs/training.md has the measurements). */
static const char *const default_corpus = "data/kjv.txt";
enum { DEFAULT_STEPS = 300, DEFAULT_BATCH = 4, DEFAULT_SEQ = 64, DEFAULT_WARMUP = 10, DEFAULT_SEED = 1 };
static const double default_lr = 3e-3, default_gamma = 1e-3;

/* ---- layout ---- */

int64_t layout_world(const Layout *l) { return l->pp * l->ep * l->dp; }
int64_t layout_data_ranks(const Layout *l) { return l->ep * l->dp; }
int layout_uses_pipeline(const Layout *l) { return l->pp > 1 || l->microbatches > 1; }

static int check_sizes(const Options *o, int64_t started, Layout *l, Err *err) {
    l->pp = o->pp > 0 ? o->pp : 1;
    l->ep = o->ep > 0 ? o->ep : 1;
    const int64_t most = (int64_t)1 << 20; /* keeps the product below far from overflowing */
    if (l->pp > most || l->ep > most || o->dp > most)
        return err_set(err, "--pp, --ep and --dp must each be at most %lld", (long long)most);
    if (started < 0) {
        l->dp = o->dp > 0 ? o->dp : 1;
        return 0;
    }
    l->dp = o->dp > 0 ? o->dp : started / (l->pp * l->ep);
    if (layout_world(l) != started || l->dp < 1)
        return err_set(err, "--pp %lld x --ep %lld x --dp %lld = %lld ranks, but %lld %s started%s", (long long)l->pp,
                       (long long)l->ep, (long long)l->dp, (long long)layout_world(l), (long long)started,
                       started == 1 ? "was" : "were",
                       comm_under_mpirun() ? " (mpirun -np)" : " (run it under mpirun -np N)");
    return 0;
}

/* --schedule (default 1f1b) and --microbatches (default 2P: enough for every schedule). */
static int check_pipeline_options(const Options *o, Layout *l, Err *err) {
    int kind = o->schedule ? sched_kind_parse(o->schedule) : SCHED_1F1B;
    if (kind < 0) return err_set(err, "unknown --schedule '%s' (expected 1f1b, zb1p or dualpipe)", o->schedule);
    l->schedule = (SchedKind)kind;
    l->microbatches = o->microbatches > 0 ? o->microbatches : l->pp > 1 ? 2 * l->pp : 1;
    if (l->microbatches > SCHED_MAX_MICROBATCHES)
        return err_set(err, "--microbatches must be at most %d", SCHED_MAX_MICROBATCHES);
    if (o->schedule && l->pp == 1) return err_set(err, "--schedule needs --pp 2 or more (one stage has no pipeline)");
    return 0;
}

int layout_configure(const Options *o, int64_t started, Layout *l, Err *err) {
    memset(l, 0, sizeof *l);
    return check_sizes(o, started, l, err) || check_pipeline_options(o, l, err) ? -1 : 0;
}

void layout_place(Layout *l, int w) {
    int per_stage = (int)layout_data_ranks(l);
    l->stage = w / per_stage;
    l->data_rank = w % per_stage;
    l->ep_rank = l->data_rank % (int)l->ep;
    l->replica = l->data_rank / (int)l->ep;
}

static int split_comms(Comm *world, Layout *l, Err *err) {
    int ep = (int)l->ep, dp = (int)l->dp;
    l->data = comm_split(world, l->stage, l->data_rank, err);
    if (l->data) l->ep_group = comm_split(world, l->stage * dp + l->replica, l->ep_rank, err);
    if (l->ep_group) l->expert_dp = comm_split(world, l->stage * ep + l->ep_rank, l->replica, err);
    if (l->expert_dp) l->pipe = comm_split(world, l->data_rank, l->stage, err);
    return l->pipe ? 0 : -1;
}

/* After a failure only this rank may have seen, no collective teardown. */
static void free_comms(Layout *l, int failed) {
    Comm *comms[] = {l->pipe, l->expert_dp, l->ep_group, l->data};
    for (size_t i = 0; i < sizeof comms / sizeof *comms; i++) {
        if (failed) comm_abandon(comms[i]);
        else comm_free(comms[i]);
    }
}

/* ---- options ---- */

/* A --flag value that must be a finite number >= 0. */
int train_parse_real(const char *flag, const char *text, double *out, Err *err) {
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
    if (train_parse_real("--lr", o->lr, &c->lr, err) || train_parse_real("--weight-decay", o->weight_decay, &c->weight_decay, err) ||
        train_parse_real("--clip", o->clip, &c->clip, err) || train_parse_real("--gamma", o->gamma, &pr->gamma, err))
        return -1;
    if (o->lr && !o->min_lr) c->min_lr = c->lr * 0.1;
    if (train_parse_real("--min-lr", o->min_lr, &c->min_lr, err)) return -1;
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

int train_job_check_options(const Options *o, Err *err) {
    if (o->resume && o->checkpoint)
        return err_set(err, "give --checkpoint (start from weights) or --resume (continue a run), not both");
    if (o->resume && o->config) return err_set(err, "--resume takes the model's config.json from %s; drop --config", o->resume);
    struct stat st;
    if (o->resume && (stat(o->resume, &st) != 0 || !S_ISDIR(st.st_mode)))
        return err_set(err, "--resume %s: no such directory", o->resume);
    if (o->save && save_check_writable(o->save, err)) return -1;
    return 0;
}

/* ---- the run ---- */

/* Everything one training run holds, released together. */
typedef struct Run {
    TensorSet weights;
    AdamW opt;
    Corpus data;
    TrainProgress pr;
    FILE *log;
    EpGroup ep;
    Schedule *sched;
    PipeRunner *pipe;
} Run;

static void run_free(Run *r, TrainJob *job) {
    pipe_runner_free(r->pipe);
    schedule_free(r->sched);
    tset_free(&r->weights);
    adamw_free(&r->opt);
    corpus_close(&r->data);
    if (r->log) fclose(r->log);
    pipeline_split_free(job->split);
    graph_free(job->graph);
    free(job->config_json);
    memset(job, 0, sizeof *job);
}

/* A checkpoint holds every expert's moments (the one-rank format): read them
 * against every expert's shape, keep this EP rank's. */
static int load_moments(const char *dir, const Layout *l, Run *r, TrainProgress *pr, Err *err) {
    if (l->ep == 1) return load_train_state(dir, &r->weights, &r->opt, pr, err);
    TensorSet all;
    int64_t experts = ep_all_expert_shapes(&r->weights, l->ep_rank, (int)l->ep, &all);
    int rc = load_train_state(dir, &all, &r->opt, pr, err);
    tset_free(&all);
    if (rc) return -1;
    ep_keep_held(&r->opt.m, experts, l->ep_rank, (int)l->ep);
    ep_keep_held(&r->opt.v, experts, l->ep_rank, (int)l->ep);
    return 0;
}

/* Weights, optimizer state and progress: fresh, or from --resume. */
static int load_state(const Options *o, const Layout *l, TrainJob *job, Run *r, int64_t *steps, Err *err) {
    TrainProgress pr = fresh_progress();
    *steps = DEFAULT_STEPS;
    Options wo = *o;
    if (o->seed < 0) wo.seed = DEFAULT_SEED;
    if (job->load_weights(&wo, job->ctx, &r->weights, err)) return -1;
    if (o->resume) {
        if (load_moments(o->resume, l, r, &pr, err)) return -1;
        *steps = pr.optim.total_steps;
    }
    r->pr = pr;
    return apply_options(o, &r->pr, steps, err);
}

static int check_batch_split(const TrainProgress *pr, const Layout *l, Err *err) {
    int64_t d = layout_data_ranks(l);
    if (pr->batch % d != 0)
        return err_set(err, "--batch %lld does not split over %lld data ranks (--ep x --dp; give a multiple of %lld)",
                       (long long)pr->batch, (long long)d, (long long)d);
    if ((pr->batch / d) % l->microbatches != 0)
        return err_set(err,
                       "--batch %lld over %lld data ranks is %lld rows each, not a multiple of --microbatches %lld",
                       (long long)pr->batch, (long long)d, (long long)(pr->batch / d), (long long)l->microbatches);
    return 0;
}

static void print_summary(const TrainSummary *s, const TrainProgress *pr, const char *backend) {
    if (s->steps_run == 0) {
        printf("nothing to train: already at step %lld\n", (long long)pr->step);
        return;
    }
    printf("trained %lld steps (to step %lld): loss first %.4f last %.4f min %.4f, %.0f tokens/s on %s\n",
           (long long)s->steps_run, (long long)pr->step, s->first_loss, s->last_loss, s->min_loss, s->tokens_per_s,
           backend);
}

/* What the log reports as peak_activation_bytes: this rank's activations as
 * `aot`'s memory report counts them (bundle.h): the whole graph's peak, or
 * with a pipeline its stages' micro-batches in flight. A bundle brings its own. */
static int activation_peak(const Layout *l, const TrainProgress *pr, TrainJob *job, const Schedule *sched, Err *err) {
    if (!job->graph) return 0;
    ExpertStacks none = {0};
    RankMemory m;
    int64_t rows = pr->batch / (layout_data_ranks(l) * l->microbatches);
    if (bundle_rank_memory(job->split, sched, l, &none, job->graph, l->stage, rows, pr->seq, &m, err)) return -1;
    job->peak_activation_bytes = m.activations;
    return 0;
}

const char *train_job_backend(const Options *o, int fp8) {
    if (o->backend) return o->backend;
    const char *found = exec_default_backend();
    /* cuBLASLt's block-scaled FP8 GEMM takes only K a multiple of 128 and N of 16
     * (docs/cuda.md), which small models miss: FP8 runs on cuda when asked for. */
    return strcmp(found, "cuda") == 0 && fp8 ? "cpu" : found;
}

/* The stage graphs and their runner: pp ranks in the schedule's order, or one
 * stage accumulating gradients over the micro-batches. */
static int make_pipeline(const Layout *l, TrainJob *job, Run *r, Err *err) {
    PipelineSplitOptions so = {.stages = (int)l->pp, .split_weights = l->pp > 1 && l->schedule != SCHED_1F1B};
    if (!job->split && !(job->split = pipeline_split(job->graph, &so, err))) return -1;
    if (job->split->stages != l->pp)
        return err_internal(err, "%d stage graphs for --pp %lld", job->split->stages, (long long)l->pp);
    if (l->pp > 1 && !(r->sched = schedule_build(l->schedule, (int)l->pp, (int)l->microbatches, err))) return -1;
    PipeRunOptions po = {
        .backend = job->backend,
        .batch = r->pr.batch / layout_data_ranks(l),
        .seq = r->pr.seq,
        .microbatches = (int)l->microbatches,
        /* EP exchanges must run in one order on every rank; the cpu kernels
         * are not known to be safe on two threads. */
        .overlap = l->pp > 1 && l->ep == 1 && strcmp(job->backend, "interp") == 0,
        .collectives = l->ep > 1 ? &r->ep.collectives : NULL,
    };
    r->pipe = pipe_runner_new((int)l->pp, job->split->graphs, r->sched, l->pp > 1 ? l->pipe : NULL, &po, err);
    return r->pipe ? 0 : -1;
}

/* Opened once everything before the first step has succeeded, so that a run ending in an
 * error (a bad environment variable, a plan that does not build) leaves an existing log
 * as it was rather than truncated, and makes no empty one. */
static int open_log(const Options *o, int rank0, Run *r, Err *err) {
    if (rank0 && o->log && !(r->log = fopen(o->log, o->resume ? "a" : "w")))
        return err_set(err, "cannot write --log %s: %s", o->log, strerror(errno));
    return 0;
}

static int train_prepared(const Options *o, Run *r, TrainConfig *c, TrainJob *job, int64_t steps, const Layout *l,
                          int rank0, Err *err) {
    c->graph = job->graph;
    c->objective = job->objective;
    c->data = &r->data;
    c->steps = steps;
    c->save_every = o->save_every;
    c->save_dir = o->save;
    c->config_json = job->config_json;
    c->progress = rank0 ? stderr : NULL;
    c->progress_bar = isatty(STDERR_FILENO);
    c->report_every = steps >= 20 ? steps / 20 : 1;
    c->dp = l->data;
    c->ep = l->ep > 1 ? l->ep_group : NULL;
    c->expert_dp = l->ep > 1 ? l->expert_dp : NULL;
    if (train_parse_fault(getenv("V3C_FAULT"), &c->fault, err)) return -1;
    if (layout_uses_pipeline(l) || !job->graph) {
        if (make_pipeline(l, job, r, err) || activation_peak(l, &r->pr, job, r->sched, err)) return -1;
        c->pipe = r->pipe;
    } else {
        if (activation_peak(l, &r->pr, job, NULL, err)) return -1;
        InterpOptions io = {.batch = r->pr.batch / layout_data_ranks(l), .seq = r->pr.seq};
        io.collectives = l->ep > 1 ? &r->ep.collectives : NULL;
        if (!(c->exec = exec_prepare(job->backend, c->graph, &io, err))) return -1;
    }
    c->peak_activation_bytes = job->peak_activation_bytes;
    TrainSummary sum;
    int rc = open_log(o, rank0, r, err);
    c->log = r->log;
    if (rc == 0) rc = train_run(c, &r->weights, &r->opt, &r->pr, &sum, err);
    if (rc == 0 && rank0) print_summary(&sum, &r->pr, job->backend);
    exec_free(c->exec);
    return rc;
}

int train_job_run(const Options *o, Layout *l, Comm *world, TrainJob *job, Err *err) {
    Run r = {0};
    tset_init(&r.weights);
    adamw_init(&r.opt);
    ep_group_init(&r.ep, l->ep_group);
    int64_t steps = 0;
    TrainConfig c = {0};
    int rank0 = comm_rank(world) == 0;
    int rc = load_state(o, l, job, &r, &steps, err);
    if (rc == 0) rc = check_batch_split(&r.pr, l, err);
    if (rc == 0) rc = corpus_open(&r.data, o->data ? o->data : default_corpus, r.pr.seq, err);
    if (rc == 0) rc = train_prepared(o, &r, &c, job, steps, l, rank0, err);
    run_free(&r, job);
    return rc;
}

/* ---- the frame ---- */

static int run_on(const Options *o, const Layout *fixed, Comm *world, TrainBody body, void *ctx, Err *err) {
    Layout l;
    if (fixed) {
        l = *fixed;
        if (layout_world(&l) != comm_size(world))
            return err_set(err, "the bundle is for %lld ranks (--pp %lld x --ep %lld x --dp %lld), but %d %s started%s",
                           (long long)layout_world(&l), (long long)l.pp, (long long)l.ep, (long long)l.dp,
                           comm_size(world), comm_size(world) == 1 ? "was" : "were",
                           comm_under_mpirun() ? " (mpirun -np)" : " (run it under mpirun -np N)");
    } else if (layout_configure(o, comm_size(world), &l, err)) {
        return -1;
    }
    layout_place(&l, comm_rank(world));
    int rc = split_comms(world, &l, err);
    if (rc == 0) rc = body(o, &l, world, ctx, err);
    free_comms(&l, rc != 0 && comm_size(world) > 1);
    return rc;
}

/* Ranks on one machine share its cores: with more threads than cores, the pool's polling
 * threads would take the time the other ranks need (4 ranks on 2 cores ran 1.5x slower). */
static void share_cores_with_local_ranks(void) {
    int local = comm_local_ranks();
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (local > 1) parallel_set_core_share(cores / local > 1 ? (int)(cores / local) : 1);
}

int train_job_main(const Options *o, const Layout *fixed, TrainBody body, void *ctx, Err *err) {
    Comm *world = comm_init(NULL, NULL, 0, err);
    if (!world) return -1;
    share_cores_with_local_ranks();
    int rc = run_on(o, fixed, world, body, ctx, err);
    if (rc && comm_size(world) > 1) {
        /* Name the rank: with many ranks the lines interleave. */
        if (!strstr(err->msg, "rank ")) err_wrap(err, "rank %d: ", comm_rank(world));
        comm_abandon(world);
    } else {
        comm_free(world);
    }
    return rc;
}
