/* ZeRO-1 over the data-parallel ranks: every rank holds all weights and computes
 * gradients on its slice of the batch, but the AdamW moments are sharded. The
 * trained weights, in collect order, form one flat vector padded to a multiple of
 * the DP size; rank r owns elements [r*S, (r+1)*S). A step reduce-scatters the
 * gradients (each rank receives the sum over ranks of its shard), updates its
 * shard of the weights with its shard of the moments, and all-gathers the
 * weights. Memory for moments: 2 * params / D floats per rank instead of 2 * params. */
#ifndef V3C_ZERO_H
#define V3C_ZERO_H

#include "comm.h"
#include "optim.h"

typedef struct Zero1 {
    Comm *dp;
    ParamGrad *params; /* the weights in flat order (their grads are not kept) */
    size_t n;
    size_t total, shard_len, shard_lo; /* elements: all weights, one shard, where ours starts */
    float *flat;                       /* shard_len * ranks: gradients in, weights out */
    float *grad, *m, *v;               /* our shard: summed gradients, moments */
    /* The summed gradients are divided by this: the ranks of dp by default. An
     * expert's gradient (ZeRO over the ranks holding the same experts) already
     * sums the tokens of its whole EP group, so it divides by EP x DP. */
    int average_over;
    /* counted[i]: p[i]'s gradient counts towards the norm (NULL: every one's).
     * A weight two pipeline ranks hold counts on one of them only. */
    unsigned char *counted;
} Zero1;

/* The layout for these weights (p's order; every rank must pass the same); our
 * moments from opt's full tensors (zeros for a weight opt has none for). Collective. */
int zero1_init(Zero1 *z, Comm *dp, const ParamGrad *p, size_t n, const AdamW *opt, Err *err);
void zero1_free(Zero1 *z);
/* Only the weights with counted[i] (p's order, as given to zero1_init) count
 * towards the norm from now on. */
void zero1_count_only(Zero1 *z, const unsigned char *counted);
/* Reduce-scatters the gradients (p as given to zero1_init, with this step's
 * grads); *sum_sq: the squared global norm of their average over ranks (the
 * counted ones'). */
int zero1_reduce_grads(Zero1 *z, const ParamGrad *p, size_t n, double *sum_sq, Err *err);
/* AdamW on our shard with the averaged gradients times grad_scale, then every
 * rank's updated shard into every rank's weights. Counts opt->updates. */
int zero1_update(Zero1 *z, AdamW *opt, const OptimConfig *c, double lr, double grad_scale, Err *err);
/* Gathers the full moments into opt (as one rank's AdamW holds them), for a checkpoint. */
int zero1_gather_moments(Zero1 *z, AdamW *opt, Err *err);

#endif
