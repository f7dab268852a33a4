#include "exec.h"
#include "train.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ep.h"
#include "pipeline.h"
#include "zero.h"

static const char *const input_name = "input_ids";
static const char *const bias_suffix = ".gate.e_score_correction_bias";
static const char *const load_prefix = "expert_load.";

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void balance_bias(float *bias, const int32_t *load, int64_t experts, double gamma) {
    double mean = 0.0;
    for (int64_t i = 0; i < experts; i++) mean += load[i];
    mean /= (double)experts;
    for (int64_t i = 0; i < experts; i++) {
        double sign = (mean > load[i]) - (mean < load[i]);
        bias[i] = (float)(bias[i] + gamma * sign);
    }
}

double load_cv(const int32_t *load, int64_t experts) {
    double mean = 0.0, var = 0.0;
    for (int64_t i = 0; i < experts; i++) mean += load[i];
    mean /= (double)experts;
    if (mean <= 0.0) return 0.0;
    for (int64_t i = 0; i < experts; i++) var += (load[i] - mean) * (load[i] - mean);
    return sqrt(var / (double)experts) / mean;
}

/* What one step measured, for the log and the progress line. */
typedef struct StepStats {
    double loss, mtp_loss, objective, lr, grad_norm, expert_load_cv, seconds;
    int has_mtp;
    int64_t held_parameters; /* scalars in the weights this rank holds */
} StepStats;

static int scalar_output(const TensorSet *results, const char *name, double *out) {
    const Tensor *t = tset_get(results, name);
    if (!t || t->dtype != DT_F32 || t->numel != 1) return 0;
    *out = tensor_f32(t)[0];
    return 1;
}

/* Every expert_load.<prefix> output: its CV (averaged into the stats) and, with
 * gamma > 0, the bias update of <prefix>.gate.e_score_correction_bias. */
static void balance_experts(const TensorSet *results, TensorSet *weights, double gamma, StepStats *s) {
    double cv_sum = 0.0;
    int layers = 0;
    for (size_t i = 0; i < results->names.len; i++) {
        const char *name = results->names.data[i];
        const Tensor *load = results->tensors.data[i];
        if (strncmp(name, load_prefix, strlen(load_prefix)) != 0 || load->dtype != DT_I32) continue;
        cv_sum += load_cv(load->data, load->numel);
        layers++;
        char *bias_name = xsprintf("%s%s", name + strlen(load_prefix), bias_suffix);
        Tensor *bias = tset_get(weights, bias_name);
        if (gamma > 0.0 && bias && bias->numel == load->numel) balance_bias(tensor_f32(bias), load->data, load->numel, gamma);
        free(bias_name);
    }
    s->expert_load_cv = layers ? cv_sum / layers : 0.0;
}

/* The (weight, gradient) pairs: every weight the graph outputs a "grad.<name>" for. */
static ParamGrad *collect_grads(TensorSet *weights, const TensorSet *results, size_t *n) {
    ParamGrad *p = xcalloc(weights->names.len + 1, sizeof *p);
    *n = 0;
    for (size_t i = 0; i < weights->names.len; i++) {
        char *gname = xsprintf("grad.%s", weights->names.data[i]);
        const Tensor *g = tset_get(results, gname);
        Tensor *w = weights->tensors.data[i];
        if (g && g->dtype == DT_F32 && g->numel == w->numel)
            p[(*n)++] = (ParamGrad){weights->names.data[i], w, g};
        free(gname);
    }
    return p;
}

static int nonfinite_error(const char *what, double v, int64_t step, const TrainConfig *c, int64_t saved_step,
                           Err *err) {
    if (c->save_dir && saved_step >= 0)
        return err_set(err, "%s is %g at step %lld; training stopped (the checkpoint in %s, from step %lld, is kept)",
                       what, v, (long long)step, c->save_dir, (long long)saved_step);
    if (c->save_dir)
        return err_set(err, "%s is %g at step %lld; training stopped (nothing was written to %s)", what, v,
                       (long long)step, c->save_dir);
    return err_set(err, "%s is %g at step %lld; training stopped", what, v, (long long)step);
}

/* ---- data parallelism ---- */

static int dp_size(const TrainConfig *c) { return c->dp ? comm_size(c->dp) : 1; }
static int dp_rank(const TrainConfig *c) { return c->dp ? comm_rank(c->dp) : 0; }

/* This rank's rows of the global batch the one-rank run draws for this step. */
static Tensor *local_batch(const TrainConfig *c, const TrainProgress *pr) {
    Tensor *all = corpus_batch(c->data, (uint64_t)pr->seed, pr->step, pr->batch, pr->seq);
    if (dp_size(c) == 1) return all;
    int64_t rows = pr->batch / dp_size(c), shape[2] = {rows, pr->seq};
    Tensor *mine = tensor_new(all->dtype, 2, shape);
    size_t row_bytes = (size_t)pr->seq * dtype_host_size(all->dtype);
    memcpy(mine->data, (char *)all->data + (size_t)(dp_rank(c) * rows) * row_bytes, (size_t)rows * row_bytes);
    tensor_free(all);
    return mine;
}

/* The losses over the global batch: every rank's slice has as many tokens and
 * sequences, so the global mean is the mean of the ranks' means. */
static int global_losses(const TrainConfig *c, StepStats *s, Err *err) {
    if (dp_size(c) == 1) return 0;
    double v[3] = {s->objective, s->loss, s->has_mtp ? s->mtp_loss : 0.0};
    if (comm_allreduce_sum(c->dp, v, 3, COMM_F64, err)) return -1;
    s->objective = v[0] / dp_size(c);
    s->loss = v[1] / dp_size(c);
    s->mtp_loss = v[2] / dp_size(c);
    return 0;
}

/* Token counts per expert over the global batch, so every rank moves the biases alike. */
static int global_expert_loads(const TrainConfig *c, TensorSet *results, Err *err) {
    for (size_t i = 0; dp_size(c) > 1 && i < results->names.len; i++) {
        Tensor *load = results->tensors.data[i];
        if (strncmp(results->names.data[i], load_prefix, strlen(load_prefix)) != 0 || load->dtype != DT_I32) continue;
        if (comm_allreduce_sum(c->dp, load->data, (size_t)load->numel, COMM_I32, err)) return -1;
    }
    return 0;
}

/* ---- pipeline parallelism: each rank holds its own stages' weights ---- */

/* The pipeline's ranks, when there are several (not one process running every stage). */
static Comm *pipe_comm(const TrainConfig *c) {
    Comm *p = c->pipe ? pipe_runner_comm(c->pipe) : NULL;
    return p && comm_size(p) > 1 ? p : NULL;
}

/* Keeps the entries of set that this rank holds, and those no stage reads
 * (no rank updates them; every rank may keep them); frees the rest. */
static void keep_held(const TrainConfig *c, const StrMap *held, TensorSet *set) {
    TensorSet kept;
    tset_init(&kept);
    for (size_t i = 0; i < set->names.len; i++) {
        const char *name = set->names.data[i];
        int64_t first;
        if (pipe_runner_reads(c->pipe, name) && !strmap_get(held, name, &first)) continue;
        tset_put(&kept, name, set->tensors.data[i]);
        set->tensors.data[i] = NULL;
    }
    tset_free(set);
    *set = kept;
}

/* What a pipeline rank holds, and the order the gradient norm adds weights in. */
typedef struct Holding {
    StrMap held;  /* this rank's params: name -> 1 where it counts them (pipe_runner_params) */
    StrMap order; /* every weight: name -> its position in the set every rank loaded */
} Holding;

/* Under a pipeline over ranks: h gets this rank's params, the weights and
 * moments of every other rank's are freed, and the runner returns only the
 * gradients of ours. */
static void hold_own_stages(const TrainConfig *c, TensorSet *weights, AdamW *opt, Holding *h) {
    strmap_init(&h->held);
    strmap_init(&h->order);
    if (!pipe_comm(c)) return;
    for (size_t i = 0; i < weights->names.len; i++) strmap_put(&h->order, weights->names.data[i], (int64_t)i);
    pipe_runner_params(c->pipe, &h->held);
    pipe_runner_keep_held_grads(c->pipe);
    keep_held(c, &h->held, weights);
    keep_held(c, &h->held, &opt->m);
    keep_held(c, &h->held, &opt->v);
}

static void holding_free(Holding *h) {
    strmap_free(&h->held);
    strmap_free(&h->order);
}

static int64_t parameters_in(const TensorSet *weights) {
    int64_t n = 0;
    for (size_t i = 0; i < weights->names.len; i++)
        if (strcmp(weights->names.data[i], input_name) != 0) n += weights->tensors.data[i]->numel;
    return n;
}

/* Whether the weight's gradient counts towards the norm here: a weight
 * several pipeline ranks hold counts on the lowest-numbered one. */
static int counts_here(const TrainConfig *c, const StrMap *held, const char *name) {
    int64_t lowest = 1;
    return !pipe_comm(c) || (strmap_get(held, name, &lowest) && lowest);
}

static double weight_sum_sq(const ParamGrad *p) {
    double sum = 0.0;
    const float *g = tensor_f32(p->grad);
    for (int64_t k = 0; k < p->grad->numel; k++) sum += (double)g[k] * (double)g[k];
    return sum;
}

/* The squared norm on one data rank: each weight's own sum of squares, added
 * in the order of the loaded set. A pipeline's ranks each fill in the weights
 * they count (every slot has one rank's value and zeros, so the sum over the
 * ranks is exact): every layout adds the same numbers in the same order and
 * gets the one-rank norm, bit for bit (FP8 needs that, see docs/pipeline.md). */
static int weights_sum_sq(const TrainConfig *c, const Holding *h, const ParamGrad *p, size_t n, double *sum_sq,
                          Err *err) {
    *sum_sq = 0.0;
    if (!pipe_comm(c)) {
        for (size_t i = 0; i < n; i++) *sum_sq += weight_sum_sq(&p[i]);
        return 0;
    }
    double *slots = xcalloc(h->order.len + 1, sizeof *slots);
    for (size_t i = 0; i < n; i++) {
        int64_t at;
        if (counts_here(c, &h->held, p[i].name) && strmap_get(&h->order, p[i].name, &at))
            slots[at] = weight_sum_sq(&p[i]);
    }
    int rc = comm_allreduce_sum(pipe_comm(c), slots, h->order.len, COMM_F64, err);
    for (size_t i = 0; rc == 0 && i < h->order.len; i++) *sum_sq += slots[i];
    free(slots);
    return rc;
}

/* Adds the pipeline ranks' squared norms in rank order, so every rank gets the same bits. */
static int pipe_sum(const TrainConfig *c, double *sum_sq, Err *err) {
    Comm *p = pipe_comm(c);
    if (!p) return 0;
    double *all = xcalloc((size_t)comm_size(p), sizeof *all);
    int rc = comm_allgather(p, sum_sq, all, 1, COMM_F64, err);
    *sum_sq = 0.0;
    for (int k = 0; rc == 0 && k < comm_size(p); k++) *sum_sq += all[k];
    free(all);
    return rc;
}

/* The pipeline ranks of data rank 0 send world rank 0 the weights and
 * moments it does not hold, so it writes the whole checkpoint. */
static int gather_stages(const TrainConfig *c, TensorSet *w, AdamW *full, Err *err) {
    Comm *p = pipe_comm(c);
    if (!p || dp_rank(c) != 0) return 0;
    if (save_gather_on_rank0(p, w, err) || save_gather_on_rank0(p, &full->m, err)) return -1;
    return save_gather_on_rank0(p, &full->v, err);
}

/* ---- expert parallelism ---- */

static int experts_sharded(const TrainConfig *c) { return c->ep && comm_size(c->ep) > 1; }

/* ZeRO-1 over the data ranks for the weights every rank holds, and, with
 * sharded experts, a second one over the ranks holding the same experts. */
typedef struct Shards {
    Zero1 dense, experts;
    size_t ndense; /* the first ndense of the step's params are not experts */
    int ready;
    const Holding *hold; /* this pipeline rank's params */
} Shards;

static void shards_free(Shards *z) {
    zero1_free(&z->dense);
    zero1_free(&z->experts);
}

/* Reorders p: the weights every rank holds first, then the experts; returns their count. */
static size_t experts_last(ParamGrad *p, size_t n) {
    ParamGrad *sorted = xcalloc(n + 1, sizeof *sorted);
    size_t k = 0;
    for (int expert = 0; expert < 2; expert++)
        for (size_t i = 0; i < n; i++)
            if ((ep_expert_of(p[i].name) >= 0) == expert) sorted[k++] = p[i];
    size_t dense = 0;
    while (dense < n && ep_expert_of(sorted[dense].name) < 0) dense++;
    memcpy(p, sorted, n * sizeof *p);
    free(sorted);
    return dense;
}

/* Which of p's weights count towards the norm on this pipeline rank. */
static void count_only_ours(const TrainConfig *c, const Shards *z, Zero1 *zero, const ParamGrad *p, size_t n) {
    unsigned char *counted = xmalloc(n + 1);
    for (size_t i = 0; i < n; i++) counted[i] = (unsigned char)counts_here(c, &z->hold->held, p[i].name);
    zero1_count_only(zero, counted);
    free(counted);
}

static int shards_init(const TrainConfig *c, Shards *z, AdamW *opt, const ParamGrad *p, size_t n, Err *err) {
    z->ready = 1;
    if (zero1_init(&z->dense, c->dp, p, z->ndense, opt, err)) return -1;
    count_only_ours(c, z, &z->dense, p, z->ndense);
    if (!experts_sharded(c)) return 0;
    if (zero1_init(&z->experts, c->expert_dp, p + z->ndense, n - z->ndense, opt, err)) return -1;
    count_only_ours(c, z, &z->experts, p + z->ndense, n - z->ndense);
    z->experts.average_over = dp_size(c);
    return 0;
}

/* The squared norm of this stage's gradient averaged over its data ranks:
 * each expert counted once, on the EP rank holding it. */
static int stage_sum_sq(const TrainConfig *c, Shards *z, AdamW *opt, ParamGrad *p, size_t n, double *sum_sq,
                        Err *err) {
    z->ndense = experts_sharded(c) ? experts_last(p, n) : n;
    if (!z->ready && shards_init(c, z, opt, p, n, err)) return -1;
    double dense = 0.0, experts = 0.0;
    if (zero1_reduce_grads(&z->dense, p, z->ndense, &dense, err)) return -1;
    if (experts_sharded(c)) {
        if (zero1_reduce_grads(&z->experts, p + z->ndense, n - z->ndense, &experts, err)) return -1;
        if (comm_allreduce_sum(c->ep, &experts, 1, COMM_F64, err)) return -1;
    }
    *sum_sq = dense + experts;
    return 0;
}

/* The norm of the averaged gradient of the whole model: each weight counted
 * once, on one rank of its stage's data ranks and pipeline ranks. */
static int grad_norm(const TrainConfig *c, Shards *z, AdamW *opt, ParamGrad *p, size_t n, double *norm, Err *err) {
    double sum_sq = 0.0;
    int rc = dp_size(c) == 1 ? weights_sum_sq(c, z->hold, p, n, &sum_sq, err)
                             : stage_sum_sq(c, z, opt, p, n, &sum_sq, err) || pipe_sum(c, &sum_sq, err);
    if (rc) return -1;
    *norm = sqrt(sum_sq);
    return 0;
}

static int apply_update(const TrainConfig *c, Shards *z, AdamW *opt, const TrainProgress *pr, const ParamGrad *p,
                        size_t n, const StepStats *s, Err *err) {
    double scale = clip_scale(pr->optim.clip, s->grad_norm);
    if (dp_size(c) == 1) {
        adamw_step(opt, &pr->optim, p, n, s->lr, scale);
        return 0;
    }
    int64_t updates = opt->updates;
    if (zero1_update(&z->dense, opt, &pr->optim, s->lr, scale, err)) return -1;
    if (!experts_sharded(c)) return 0;
    opt->updates = updates; /* one step, though two shards update: both count it */
    return zero1_update(&z->experts, opt, &pr->optim, s->lr, scale, err);
}

static void inject_fault(const TrainConfig *c, int64_t step) {
    int world_rank = c->dp ? comm_world_rank(c->dp, comm_rank(c->dp)) : 0;
    if (c->fault.kind == FAULT_NONE || c->fault.rank != world_rank || c->fault.step != step) return;
    fflush(NULL);
    if (c->fault.kind == FAULT_EXIT) _exit(1);
    if (c->fault.kind == FAULT_CRASH) raise(SIGKILL);
    for (;;) pause(); /* FAULT_HANG: alive, silent */
}

/* The forward+backward pass on this rank's rows; fills the losses of s. */
static int forward_backward(const TrainConfig *c, TensorSet *weights, TrainProgress *pr, TensorSet *results,
                            StepStats *s, Err *err) {
    Tensor *ids = local_batch(c, pr);
    int rc;
    if (c->pipe) {
        rc = pipeline_train_step(c->pipe, weights, ids, results, err);
        tensor_free(ids);
    } else {
        tset_put(weights, input_name, ids);
        rc = exec_step(c->exec, weights, results, err);
    }
    if (rc) return -1;
    if (!scalar_output(results, c->objective, &s->objective))
        return err_internal(err, "the training graph has no scalar output '%s'", c->objective);
    if (!scalar_output(results, "loss", &s->loss)) s->loss = s->objective;
    s->has_mtp = scalar_output(results, "mtp_loss", &s->mtp_loss);
    return global_losses(c, s, err);
}

/* One optimizer step on one batch; fills s. */
static int train_step(const TrainConfig *c, TensorSet *weights, AdamW *opt, Shards *z, TrainProgress *pr,
                      StepStats *s, int64_t saved_step, Err *err) {
    int64_t step = pr->step + 1; /* 1-based, as logged */
    inject_fault(c, step);
    TensorSet results;
    tset_init(&results);
    int rc = forward_backward(c, weights, pr, &results, s, err);
    if (rc == 0 && !isfinite(s->objective))
        rc = nonfinite_error(c->objective, s->objective, step, c, saved_step, err);
    size_t n = 0;
    ParamGrad *p = rc == 0 ? collect_grads(weights, &results, &n) : NULL;
    if (rc == 0) rc = grad_norm(c, z, opt, p, n, &s->grad_norm, err);
    if (rc == 0 && !isfinite(s->grad_norm))
        rc = nonfinite_error("the gradient norm", s->grad_norm, step, c, saved_step, err);
    if (rc == 0) {
        s->lr = optim_lr(&pr->optim, pr->step);
        rc = apply_update(c, z, opt, pr, p, n, s, err);
    }
    if (rc == 0) rc = global_expert_loads(c, &results, err);
    if (rc == 0) {
        balance_experts(&results, weights, pr->gamma, s);
        pr->step = step;
    }
    free(p);
    tset_free(&results);
    return rc;
}

static void json_number(FILE *f, const char *key, double v) {
    char num[64];
    format_double(num, sizeof num, v);
    fprintf(f, ",\"%s\":%s", key, num);
}

static void log_step(FILE *f, const TrainConfig *c, const TrainProgress *pr, const StepStats *s) {
    fprintf(f, "{\"step\":%lld", (long long)pr->step);
    json_number(f, "loss", s->loss);
    if (s->has_mtp) json_number(f, "mtp_loss", s->mtp_loss);
    else fputs(",\"mtp_loss\":null", f);
    json_number(f, c->objective, s->objective);
    json_number(f, "tokens_per_s", (double)(pr->batch * pr->seq) / s->seconds);
    fprintf(f, ",\"peak_activation_bytes\":%lld", (long long)c->peak_activation_bytes);
    json_number(f, "expert_load_cv", s->expert_load_cv);
    json_number(f, "lr", s->lr);
    json_number(f, "grad_norm", s->grad_norm);
    json_number(f, "step_seconds", s->seconds);
    fprintf(f, ",\"held_parameters\":%lld", (long long)s->held_parameters);
    fputs("}\n", f);
    fflush(f);
}

static void show_progress(const TrainConfig *c, const TrainProgress *pr, const StepStats *s) {
    if (!c->progress) return;
    double tps = (double)(pr->batch * pr->seq) / s->seconds;
    if (c->progress_bar) {
        enum { WIDTH = 30 };
        int filled = (int)(WIDTH * pr->step / (c->steps > 0 ? c->steps : 1));
        char bar[WIDTH + 1];
        for (int i = 0; i < WIDTH; i++) bar[i] = i < filled ? '#' : '.';
        bar[WIDTH] = 0;
        fprintf(c->progress, "\r[%s] %lld/%lld loss %.4f lr %.2e %.0f tok/s ", bar, (long long)pr->step,
                (long long)c->steps, s->loss, s->lr, tps);
        if (pr->step == c->steps) fputc('\n', c->progress);
    } else if (pr->step % (c->report_every > 0 ? c->report_every : 1) == 0 || pr->step == c->steps) {
        fprintf(c->progress, "step %lld/%lld loss %.4f lr %.3g grad_norm %.3g %.0f tok/s\n", (long long)pr->step,
                (long long)c->steps, s->loss, s->lr, s->grad_norm, tps);
    }
    fflush(c->progress);
}

/* A copy of the set without the step's input_ids, as a checkpoint stores it. */
static void weights_only(const TensorSet *feeds, TensorSet *out) {
    tset_init(out);
    for (size_t i = 0; feeds && i < feeds->names.len; i++) {
        if (strcmp(feeds->names.data[i], input_name) == 0) continue;
        const Tensor *t = feeds->tensors.data[i];
        Tensor *copy = tensor_new(t->dtype, t->rank, t->shape);
        memcpy(copy->data, t->data, (size_t)t->numel * dtype_host_size(t->dtype));
        tset_put(out, feeds->names.data[i], copy);
    }
}

/* World rank 0: stage 0's first data rank. */
static int writes_checkpoints(const TrainConfig *c) { return !c->dp || comm_world_rank(c->dp, dp_rank(c)) == 0; }

/* Weights and moments as one rank holds them: every EP rank's experts gathered. */
static int gather_experts(const TrainConfig *c, TensorSet *w, AdamW *full, Err *err) {
    int64_t experts = ep_held_experts(w) * comm_size(c->ep);
    if (experts == 0) return 0; /* a model without routed experts */
    if (ep_gather_experts(c->ep, w, experts, "", err) || ep_gather_experts(c->ep, &full->m, experts, "", err))
        return -1;
    return ep_gather_experts(c->ep, &full->v, experts, "", err);
}

/* Every rank gathers the moments (collectives), world rank 0 the other
 * pipeline ranks' weights and moments; it writes. */
static int save(const TrainConfig *c, const TensorSet *feeds, AdamW *opt, Shards *z, const TrainProgress *pr,
                Err *err) {
    if (z->ready && zero1_gather_moments(&z->dense, opt, err)) return -1;
    if (z->ready && experts_sharded(c) && zero1_gather_moments(&z->experts, opt, err)) return -1;
    int gathers = experts_sharded(c) || pipe_comm(c);
    TensorSet w;
    weights_only(feeds, &w);
    AdamW full = {.updates = opt->updates};
    weights_only(gathers ? &opt->m : NULL, &full.m);
    weights_only(gathers ? &opt->v : NULL, &full.v);
    int rc = experts_sharded(c) ? gather_experts(c, &w, &full, err) : 0;
    if (rc == 0) rc = gather_stages(c, &w, &full, err);
    if (rc == 0 && writes_checkpoints(c))
        rc = save_checkpoint(c->save_dir, &w, c->config_json, gathers ? &full : opt, pr, err);
    tset_free(&w);
    adamw_free(&full);
    return rc;
}

static void summarise(TrainSummary *sum, const StepStats *s) {
    if (sum->steps_run == 0) sum->first_loss = sum->min_loss = s->loss;
    sum->last_loss = s->loss;
    if (s->loss < sum->min_loss) sum->min_loss = s->loss;
    sum->steps_run++;
}

static int check_dp(const TrainConfig *c, const TrainProgress *pr, Err *err) {
    if (pr->batch % dp_size(c) == 0) return 0;
    return err_set(err, "--batch %lld does not split over %d data-parallel ranks (give a multiple of %d)",
                   (long long)pr->batch, dp_size(c), dp_size(c));
}

int train_run(const TrainConfig *c, TensorSet *weights, AdamW *opt, TrainProgress *pr, TrainSummary *sum, Err *err) {
    memset(sum, 0, sizeof *sum);
    if (check_dp(c, pr, err)) return -1;
    int64_t saved_step = -1;
    double seconds = 0.0;
    Holding hold;
    hold_own_stages(c, weights, opt, &hold);
    Shards zero = {.hold = &hold};
    int rc = 0;
    while (rc == 0 && pr->step < c->steps) {
        StepStats s = {.held_parameters = parameters_in(weights)};
        double start = now_seconds();
        rc = train_step(c, weights, opt, &zero, pr, &s, saved_step, err);
        s.seconds = now_seconds() - start;
        if (rc) break;
        seconds += s.seconds;
        summarise(sum, &s);
        if (c->log) log_step(c->log, c, pr, &s);
        show_progress(c, pr, &s);
        int due = c->save_every > 0 && pr->step % c->save_every == 0;
        if (c->save_dir && (due || pr->step == c->steps)) {
            rc = save(c, weights, opt, &zero, pr, err);
            saved_step = pr->step;
        }
    }
    /* Nothing left to train: the checkpoint is still written. */
    if (rc == 0 && c->save_dir && saved_step < 0) rc = save(c, weights, opt, &zero, pr, err);
    shards_free(&zero);
    holding_free(&hold);
    sum->tokens_per_s = seconds > 0 ? (double)(sum->steps_run * pr->batch * pr->seq) / seconds : 0.0;
    return rc;
}

/* KIND@rank=R,step=S */
int train_parse_fault(const char *text, TrainFault *f, Err *err) {
    static const struct {
        const char *name;
        TrainFaultKind kind;
    } kinds[] = {{"exit", FAULT_EXIT}, {"crash", FAULT_CRASH}, {"hang", FAULT_HANG}};
    memset(f, 0, sizeof *f);
    if (!text || !*text) return 0;
    const char *at = strchr(text, '@');
    for (size_t i = 0; at && i < sizeof kinds / sizeof *kinds; i++)
        if ((size_t)(at - text) == strlen(kinds[i].name) && strncmp(text, kinds[i].name, (size_t)(at - text)) == 0)
            f->kind = kinds[i].kind;
    long long step = 0;
    int rank = 0, used = 0;
    if (f->kind == FAULT_NONE || sscanf(at + 1, "rank=%d,step=%lld%n", &rank, &step, &used) != 2 || at[1 + used] ||
        rank < 0 || step < 1) {
        f->kind = FAULT_NONE;
        return err_set(err, "V3C_FAULT '%s': expected exit|crash|hang@rank=R,step=S (S from 1)", text);
    }
    f->rank = rank;
    f->step = step;
    return 0;
}
