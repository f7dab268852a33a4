#include "zero.h"

#include <stdlib.h>
#include <string.h>

static size_t ranks(const Zero1 *z) { return (size_t)comm_size(z->dp); }

/* The part of weight i (at flat offset `at`, numel elements) inside our shard:
 * its first element's index within the weight and within the shard, and the length. */
typedef struct Overlap {
    size_t in_weight, in_shard, len;
} Overlap;

static Overlap overlap(const Zero1 *z, size_t at, size_t numel) {
    size_t lo = at > z->shard_lo ? at : z->shard_lo;
    size_t hi_w = at + numel, hi_s = z->shard_lo + z->shard_len;
    size_t hi = hi_w < hi_s ? hi_w : hi_s;
    if (hi <= lo) return (Overlap){0, 0, 0};
    return (Overlap){lo - at, lo - z->shard_lo, hi - lo};
}

/* Our shard of a full per-weight moment (zeros where opt has none). */
static void shard_moments(Zero1 *z, const TensorSet *full, float *shard, const ParamGrad *p, size_t n) {
    memset(shard, 0, z->shard_len * sizeof *shard);
    size_t at = 0;
    for (size_t i = 0; i < n; at += (size_t)p[i].weight->numel, i++) {
        const Tensor *t = tset_get(full, p[i].name);
        Overlap o = overlap(z, at, (size_t)p[i].weight->numel);
        if (t && t->numel == p[i].weight->numel && o.len)
            memcpy(shard + o.in_shard, tensor_f32(t) + o.in_weight, o.len * sizeof *shard);
    }
}

int zero1_init(Zero1 *z, Comm *dp, const ParamGrad *p, size_t n, const AdamW *opt, Err *err) {
    memset(z, 0, sizeof *z);
    z->dp = dp;
    z->n = n;
    z->params = xcalloc(n + 1, sizeof *z->params);
    for (size_t i = 0; i < n; i++) z->params[i] = (ParamGrad){p[i].name, p[i].weight, NULL};
    for (size_t i = 0; i < n; i++) z->total += (size_t)p[i].weight->numel;
    z->shard_len = (z->total + ranks(z) - 1) / ranks(z);
    z->shard_lo = (size_t)comm_rank(dp) * z->shard_len;
    z->average_over = comm_size(dp);
    z->flat = xcalloc(z->shard_len * ranks(z), sizeof *z->flat);
    z->grad = xcalloc(z->shard_len, sizeof *z->grad);
    z->m = xcalloc(z->shard_len, sizeof *z->m);
    z->v = xcalloc(z->shard_len, sizeof *z->v);
    shard_moments(z, &opt->m, z->m, p, n);
    shard_moments(z, &opt->v, z->v, p, n);
    /* Every rank must lay out the same weights: a mismatch would mix up shards. */
    int64_t sizes[2] = {(int64_t)z->total, -(int64_t)z->total};
    if (comm_allreduce_sum(dp, sizes, 1, COMM_I64, err)) return -1;
    if (sizes[0] != (int64_t)z->total * (int64_t)ranks(z))
        return err_internal(err, "data-parallel ranks train different weights (%zu elements here)", z->total);
    return 0;
}

void zero1_free(Zero1 *z) {
    free(z->params);
    free(z->counted);
    free(z->flat);
    free(z->grad);
    free(z->m);
    free(z->v);
    memset(z, 0, sizeof *z);
}

static int same_params(const Zero1 *z, const ParamGrad *p, size_t n) {
    if (n != z->n) return 0;
    for (size_t i = 0; i < n; i++)
        if (p[i].weight != z->params[i].weight || p[i].grad->numel != p[i].weight->numel) return 0;
    return 1;
}

void zero1_count_only(Zero1 *z, const unsigned char *counted) {
    free(z->counted);
    z->counted = xmalloc(z->n + 1);
    memcpy(z->counted, counted, z->n);
}

/* Our shard's part of the squared norm: the counted weights' elements, in shard order. */
static double shard_sum_sq(const Zero1 *z) {
    double sum = 0.0, inv = 1.0 / (double)z->average_over;
    size_t at = 0;
    for (size_t i = 0; i < z->n; at += (size_t)z->params[i].weight->numel, i++) {
        Overlap o = overlap(z, at, (size_t)z->params[i].weight->numel);
        if (z->counted && !z->counted[i]) continue;
        for (size_t k = o.in_shard; k < o.in_shard + o.len; k++)
            sum += ((double)z->grad[k] * inv) * ((double)z->grad[k] * inv);
    }
    return sum;
}

int zero1_reduce_grads(Zero1 *z, const ParamGrad *p, size_t n, double *sum_sq, Err *err) {
    if (!same_params(z, p, n)) return err_internal(err, "ZeRO-1: this step's gradients are not the weights sharded");
    size_t at = 0;
    for (size_t i = 0; i < z->n; i++) {
        memcpy(z->flat + at, tensor_f32(p[i].grad), (size_t)p[i].grad->numel * sizeof *z->flat);
        at += (size_t)p[i].grad->numel;
    }
    memset(z->flat + at, 0, (z->shard_len * ranks(z) - at) * sizeof *z->flat);
    if (comm_reduce_scatter_sum(z->dp, z->flat, z->grad, z->shard_len * ranks(z), COMM_F32, err)) return -1;
    *sum_sq = shard_sum_sq(z);
    return comm_allreduce_sum(z->dp, sum_sq, 1, COMM_F64, err);
}

/* Our updated shard of the weights, gathered from everyone into every weight. */
static int gather_weights(Zero1 *z, Err *err) {
    const ParamGrad *p = z->params;
    size_t n = z->n;
    float *mine = xcalloc(z->shard_len, sizeof *mine);
    size_t at = 0;
    for (size_t i = 0; i < n; at += (size_t)p[i].weight->numel, i++) {
        Overlap o = overlap(z, at, (size_t)p[i].weight->numel);
        if (o.len) memcpy(mine + o.in_shard, tensor_f32(p[i].weight) + o.in_weight, o.len * sizeof *mine);
    }
    int rc = comm_allgather(z->dp, mine, z->flat, z->shard_len, COMM_F32, err);
    free(mine);
    at = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        memcpy(tensor_f32(p[i].weight), z->flat + at, (size_t)p[i].weight->numel * sizeof *z->flat);
        at += (size_t)p[i].weight->numel;
    }
    return rc;
}

int zero1_update(Zero1 *z, AdamW *opt, const OptimConfig *c, double lr, double grad_scale, Err *err) {
    const ParamGrad *p = z->params;
    size_t n = z->n;
    opt->updates++;
    double correct1 = adamw_correction(c->beta1, opt->updates), correct2 = adamw_correction(c->beta2, opt->updates);
    double scale = grad_scale / (double)z->average_over; /* the shard holds sums over ranks */
    size_t at = 0;
    for (size_t i = 0; i < n; at += (size_t)p[i].weight->numel, i++) {
        Overlap o = overlap(z, at, (size_t)p[i].weight->numel);
        if (!o.len) continue;
        AdamwSpan s = {tensor_f32(p[i].weight) + o.in_weight, z->m + o.in_shard, z->v + o.in_shard,
                       z->grad + o.in_shard, (int64_t)o.len};
        adamw_update_span(c, &s, lr, scale, adamw_decay(c, p[i].weight), correct1, correct2);
    }
    return gather_weights(z, err);
}

/* One moment, all shards gathered, split back into per-weight tensors of full. */
static int gather_moment(Zero1 *z, const float *shard, TensorSet *full, const ParamGrad *p, size_t n, Err *err) {
    if (comm_allgather(z->dp, shard, z->flat, z->shard_len, COMM_F32, err)) return -1;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        Tensor *t = tset_get(full, p[i].name);
        if (!t || t->numel != p[i].weight->numel) {
            t = tensor_new(DT_F32, p[i].weight->rank, p[i].weight->shape);
            tset_put(full, p[i].name, t);
        }
        memcpy(tensor_f32(t), z->flat + at, (size_t)t->numel * sizeof *z->flat);
        at += (size_t)t->numel;
    }
    return 0;
}

int zero1_gather_moments(Zero1 *z, AdamW *opt, Err *err) {
    return gather_moment(z, z->m, &opt->m, z->params, z->n, err) ||
                   gather_moment(z, z->v, &opt->v, z->params, z->n, err)
               ? -1
               : 0;
}
