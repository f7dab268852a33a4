/* The optimizer: AdamW, the learning-rate schedule and global-norm gradient clipping.
 *
 * Weight decay applies to matrices only (rank >= 2: projections, embeddings,
 * experts); rank-1 weights (RMSNorm scales, biases) are not decayed, since
 * pulling a norm scale towards 0 fights the normalisation rather than
 * regularising capacity. */
#ifndef V3C_OPTIM_H
#define V3C_OPTIM_H

#include <stdint.h>

#include "../ir/interp.h"

typedef struct OptimConfig {
    double lr, min_lr;           /* peak and final learning rate */
    int64_t warmup, total_steps; /* linear warmup, then cosine decay to min_lr at total_steps */
    double beta1, beta2, eps;    /* 0.9, 0.95, 1e-8 (the report's betas) */
    double weight_decay;         /* decoupled; 0.1 */
    double clip;                 /* max global gradient norm; 0 disables clipping */
} OptimConfig;

/* The defaults above with the given peak lr. */
OptimConfig optim_defaults(double lr, int64_t total_steps);
/* Learning rate of 0-based step: lr * (step+1)/warmup while warming up, then a
 * half cosine from lr to min_lr, min_lr from total_steps on. */
double optim_lr(const OptimConfig *c, int64_t step);

/* A weight and its gradient (same shape, f32). */
typedef struct ParamGrad {
    const char *name;
    Tensor *weight;
    const Tensor *grad;
} ParamGrad;

/* sqrt(sum of every squared gradient element), accumulated in double. */
double grad_global_norm(const ParamGrad *p, size_t n);
/* The factor clipping multiplies gradients by: min(1, clip / norm) (1 when clip is 0). */
double clip_scale(double clip, double norm);

/* AdamW moments per weight name; `updates` counts the steps taken (bias correction). */
typedef struct AdamW {
    TensorSet m, v;
    int64_t updates;
} AdamW;

void adamw_init(AdamW *a);
void adamw_free(AdamW *a);
/* One update of every weight in p with gradient grad * grad_scale at learning rate lr.
 * Moments of a weight seen for the first time start at zero. */
void adamw_step(AdamW *a, const OptimConfig *c, const ParamGrad *p, size_t n, double lr, double grad_scale);

/* The pieces of adamw_step, for an optimizer that holds only a shard of the
 * moments (ZeRO-1, runtime/zero.h): n consecutive elements of one weight. */
typedef struct AdamwSpan {
    float *w, *m, *v;
    const float *g;
    int64_t n;
} AdamwSpan;
/* 1 - beta^updates: Adam's bias correction after `updates` steps. */
double adamw_correction(double beta, int64_t updates);
/* The weight decay a weight gets (matrices only, as above). */
double adamw_decay(const OptimConfig *c, const Tensor *weight);
void adamw_update_span(const OptimConfig *c, const AdamwSpan *s, double lr, double grad_scale, double decay,
                       double correct1, double correct2);

#endif
