#include "../base/parallel.h"
#include "optim.h"

#include <math.h>
#include <string.h>

OptimConfig optim_defaults(double lr, int64_t total_steps) {
    return (OptimConfig){
        .lr = lr,
        .min_lr = lr * 0.1,
        .warmup = 0,
        .total_steps = total_steps,
        .beta1 = 0.9,
        .beta2 = 0.95,
        .eps = 1e-8,
        .weight_decay = 0.1,
        .clip = 1.0,
    };
}

double optim_lr(const OptimConfig *c, int64_t step) {
    if (step < c->warmup) return c->lr * (double)(step + 1) / (double)c->warmup;
    int64_t span = c->total_steps - c->warmup;
    if (span <= 0 || step >= c->total_steps) return c->min_lr;
    double progress = (double)(step - c->warmup) / (double)span;
    return c->min_lr + (c->lr - c->min_lr) * 0.5 * (1.0 + cos(3.141592653589793 * progress));
}

double grad_global_norm(const ParamGrad *p, size_t n) {
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) {
        const float *g = tensor_f32(p[i].grad);
        for (int64_t k = 0; k < p[i].grad->numel; k++) sum += (double)g[k] * (double)g[k];
    }
    return sqrt(sum);
}

double clip_scale(double clip, double norm) {
    if (clip <= 0.0 || norm <= clip) return 1.0;
    return clip / norm;
}

void adamw_init(AdamW *a) {
    tset_init(&a->m);
    tset_init(&a->v);
    a->updates = 0;
}

void adamw_free(AdamW *a) {
    tset_free(&a->m);
    tset_free(&a->v);
    a->updates = 0;
}

/* The moment tensor for a weight, created as zeros on first use. */
static float *moment(TensorSet *s, const ParamGrad *p) {
    Tensor *t = tset_get(s, p->name);
    if (!t) {
        t = tensor_new(DT_F32, p->weight->rank, p->weight->shape);
        memset(t->data, 0, (size_t)t->numel * sizeof(float));
        tset_put(s, p->name, t);
    }
    return tensor_f32(t);
}

double adamw_correction(double beta, int64_t updates) { return 1.0 - pow(beta, (double)updates); }

typedef struct AdamwJob {
    const OptimConfig *c;
    const AdamwSpan *s;
    double lr, grad_scale, decay, correct1, correct2;
} AdamwJob;

/* Each element on its own, so the split over threads cannot change a bit. */
static void adamw_range(void *ctx, int64_t lo, int64_t hi) {
    const AdamwJob *j = ctx;
    const OptimConfig *c = j->c;
    const AdamwSpan *s = j->s;
    for (int64_t k = lo; k < hi; k++) {
        double gk = (double)s->g[k] * j->grad_scale;
        s->m[k] = (float)(c->beta1 * s->m[k] + (1.0 - c->beta1) * gk);
        s->v[k] = (float)(c->beta2 * s->v[k] + (1.0 - c->beta2) * gk * gk);
        double step = (s->m[k] / j->correct1) / (sqrt(s->v[k] / j->correct2) + c->eps);
        s->w[k] = (float)(s->w[k] - j->lr * (step + j->decay * s->w[k]));
    }
}

void adamw_update_span(const OptimConfig *c, const AdamwSpan *s, double lr, double grad_scale, double decay,
                       double correct1, double correct2) {
    AdamwJob j = {c, s, lr, grad_scale, decay, correct1, correct2};
    parallel_for(s->n, 32, adamw_range, &j);
}

double adamw_decay(const OptimConfig *c, const Tensor *weight) { return weight->rank >= 2 ? c->weight_decay : 0.0; }

void adamw_step(AdamW *a, const OptimConfig *c, const ParamGrad *p, size_t n, double lr, double grad_scale) {
    a->updates++;
    double correct1 = adamw_correction(c->beta1, a->updates), correct2 = adamw_correction(c->beta2, a->updates);
    for (size_t i = 0; i < n; i++) {
        AdamwSpan s = {tensor_f32(p[i].weight), moment(&a->m, &p[i]), moment(&a->v, &p[i]), tensor_f32(p[i].grad),
                       p[i].weight->numel};
        adamw_update_span(c, &s, lr, grad_scale, adamw_decay(c, p[i].weight), correct1, correct2);
    }
}
