#include "exec.h"
#include "train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* One optimizer step on one batch; fills s. */
static int train_step(const TrainConfig *c, TensorSet *weights, AdamW *opt, TrainProgress *pr, StepStats *s,
                      int64_t saved_step, Err *err) {
    int64_t step = pr->step + 1; /* 1-based, as logged */
    tset_put(weights, input_name, corpus_batch(c->data, (uint64_t)pr->seed, pr->step, pr->batch, pr->seq));
    TensorSet results;
    tset_init(&results);
    int rc = exec_step(c->exec, weights, &results, err);
    if (rc == 0 && !scalar_output(&results, c->objective, &s->objective))
        rc = err_internal(err, "the training graph has no scalar output '%s'", c->objective);
    if (rc == 0 && !scalar_output(&results, "loss", &s->loss)) s->loss = s->objective;
    if (rc == 0) s->has_mtp = scalar_output(&results, "mtp_loss", &s->mtp_loss);
    if (rc == 0 && !isfinite(s->objective))
        rc = nonfinite_error(c->objective, s->objective, step, c, saved_step, err);
    size_t n = 0;
    ParamGrad *p = rc == 0 ? collect_grads(weights, &results, &n) : NULL;
    if (rc == 0) {
        s->grad_norm = grad_global_norm(p, n);
        if (!isfinite(s->grad_norm)) rc = nonfinite_error("the gradient norm", s->grad_norm, step, c, saved_step, err);
    }
    if (rc == 0) {
        s->lr = optim_lr(&pr->optim, pr->step);
        adamw_step(opt, &pr->optim, p, n, s->lr, clip_scale(pr->optim.clip, s->grad_norm));
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

/* The weights without the step's input_ids, as a checkpoint stores them. */
static void weights_only(const TensorSet *feeds, TensorSet *out) {
    tset_init(out);
    for (size_t i = 0; i < feeds->names.len; i++) {
        if (strcmp(feeds->names.data[i], input_name) == 0) continue;
        const Tensor *t = feeds->tensors.data[i];
        Tensor *copy = tensor_new(t->dtype, t->rank, t->shape);
        memcpy(copy->data, t->data, (size_t)t->numel * dtype_host_size(t->dtype));
        tset_put(out, feeds->names.data[i], copy);
    }
}

static int save(const TrainConfig *c, const TensorSet *feeds, const AdamW *opt, const TrainProgress *pr, Err *err) {
    TensorSet w;
    weights_only(feeds, &w);
    int rc = save_checkpoint(c->save_dir, &w, c->config_json, opt, pr, err);
    tset_free(&w);
    return rc;
}

static void summarise(TrainSummary *sum, const StepStats *s) {
    if (sum->steps_run == 0) sum->first_loss = sum->min_loss = s->loss;
    sum->last_loss = s->loss;
    if (s->loss < sum->min_loss) sum->min_loss = s->loss;
    sum->steps_run++;
}

int train_run(const TrainConfig *c, TensorSet *weights, AdamW *opt, TrainProgress *pr, TrainSummary *sum, Err *err) {
    memset(sum, 0, sizeof *sum);
    int64_t saved_step = -1;
    double seconds = 0.0;
    int rc = 0;
    while (rc == 0 && pr->step < c->steps) {
        StepStats s = {0};
        double start = now_seconds();
        rc = train_step(c, weights, opt, pr, &s, saved_step, err);
        s.seconds = now_seconds() - start;
        if (rc) break;
        seconds += s.seconds;
        summarise(sum, &s);
        if (c->log) log_step(c->log, c, pr, &s);
        show_progress(c, pr, &s);
        int due = c->save_every > 0 && pr->step % c->save_every == 0;
        if (c->save_dir && (due || pr->step == c->steps)) {
            rc = save(c, weights, opt, pr, err);
            saved_step = pr->step;
        }
    }
    if (rc == 0 && c->save_dir && saved_step < 0) rc = save(c, weights, opt, pr, err); /* nothing left to train */
    sum->tokens_per_s = seconds > 0 ? (double)(sum->steps_run * pr->batch * pr->seq) / seconds : 0.0;
    return rc;
}
