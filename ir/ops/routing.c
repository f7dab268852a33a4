/* Routing: topk, gather, one_hot and the MoE trio (dispatch, grouped_linear, combine). */
#include <stdio.h>
#include <stdlib.h>

#include "ops_internal.h"

static Dim last_dim(const Type *t) { return t->dims[t->rank - 1]; }

static int require_rank(const Node *n, const char *what, const Type *t, int min_rank, Err *err) {
    if (t->rank >= min_rank) return 0;
    return err_set(err, "%s: %s %s must have rank >= %d", node_op_name(n), what, TY(t), min_rank);
}

/* ---- topk ---- */
int topk_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    const Type *x = &in[0];
    int64_t k = node_int(n, "k", 0);
    if (require_real(n, "input", x, err) || require_rank(n, "input", x, 1, err)) return -1;
    Dim e = last_dim(x);
    if (k < 1 || (dim_is_const(e) && k > dim_const_value(e)))
        return err_set(err, "topk: k=%lld is not in [1, size of the last axis] for %s", (long long)k, TY(x));
    out[0] = *x;
    out[0].dims[x->rank - 1] = dim_const(k);
    out[1] = out[0];
    out[1].dtype = DT_I32;
    return 0;
}

/* Picks the k largest of one row; ties go to the lower index, as a stable sort would. */
static void topk_row(const real *x, int64_t e, int64_t k, unsigned char *taken, real *vals, int32_t *idx) {
    memset(taken, 0, (size_t)e);
    for (int64_t j = 0; j < k; j++) {
        int64_t best = -1;
        for (int64_t i = 0; i < e; i++)
            if (!taken[i] && (best < 0 || x[i] > x[best])) best = i;
        taken[best] = 1;
        vals[j] = x[best];
        idx[j] = (int32_t)best;
    }
}

int topk_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin;
    const Tensor *x = in[0];
    int64_t e = x->shape[x->rank - 1], k = node_int(n, "k", 0), rows = shape_product(x, 0, x->rank - 1);
    if (k > e) return err_set(err, "topk: k=%lld exceeds the last axis' size %lld", (long long)k, (long long)e);
    if (e > INT32_MAX) return err_set(err, "topk: last axis of size %lld does not fit i32 indices", (long long)e);
    for (int64_t i = 0; i < x->numel; i++)
        if (isnan(tensor_real(x)[i])) return err_set(err, "topk: input element %lld is NaN", (long long)i);
    unsigned char *taken = xmalloc((size_t)(e ? e : 1));
    for (int64_t r = 0; r < rows; r++)
        topk_row(tensor_real(x) + r * e, e, k, taken, tensor_real(out[0]) + r * k, (int32_t *)out[1]->data + r * k);
    free(taken);
    return 0;
}

/* ---- gather ---- */
int gather_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    const Type *x = &in[0], *idx = &in[1];
    if (require_index(n, "indices", idx, err) || require_rank(n, "input", x, 1, err)) return -1;
    if (!same_leading(x, idx))
        return err_set(err, "gather: input %s and indices %s must agree on all but the last axis", TY(x), TY(idx));
    *out = *idx;
    out->dtype = x->dtype;
    return 0;
}

int gather_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin, (void)n;
    const Tensor *x = in[0], *idx = in[1];
    int64_t e = x->shape[x->rank - 1], k = idx->shape[idx->rank - 1];
    size_t es = dtype_host_size(x->dtype);
    for (int64_t i = 0; i < idx->numel; i++) {
        int64_t j = index_at(idx, i);
        if (j < 0 || j >= e)
            return err_set(err, "gather: index %lld at position %lld is outside [0, %lld)", (long long)j, (long long)i,
                           (long long)e);
        memcpy((char *)out[0]->data + (size_t)i * es, (const char *)x->data + (size_t)((i / k) * e + j) * es, es);
    }
    return 0;
}

/* ---- one_hot ---- */
int one_hot_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    int64_t classes = node_int(n, "n", 0);
    if (require_index(n, "indices", &in[0], err)) return -1;
    if (classes < 1) return err_set(err, "one_hot: n must be >= 1, got %lld", (long long)classes);
    if (in[0].rank + 1 > IR_MAX_RANK) return err_set(err, "one_hot: %s has too many dims", TY(&in[0]));
    *out = in[0];
    out->dtype = DT_F32;
    out->dims[out->rank++] = dim_const(classes);
    return 0;
}

int one_hot_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin;
    int64_t classes = node_int(n, "n", 0);
    for (int64_t i = 0; i < in[0]->numel; i++) {
        int64_t j = index_at(in[0], i);
        if (j < 0 || j >= classes)
            return err_set(err, "one_hot: index %lld at position %lld is outside [0, %lld)", (long long)j,
                           (long long)i, (long long)classes);
        tensor_real(out[0])[i * classes + j] = 1.0f;
    }
    return 0;
}

/* ---- MoE row order ----
 * Pair p = token*K + slot goes to row rows[p]; rows are grouped by expert and,
 * within an expert, ordered by p (token, then slot): a counting sort. */
int moe_rows(const Tensor *idx, int64_t experts, int64_t *rows, int64_t *counts, Err *err) {
    memset(counts, 0, sizeof(int64_t) * (size_t)experts);
    for (int64_t p = 0; p < idx->numel; p++) {
        int64_t e = index_at(idx, p);
        if (e < 0 || e >= experts)
            return err_set(err, "expert index %lld at position %lld is outside [0, %lld)", (long long)e, (long long)p,
                           (long long)experts);
        counts[e]++;
    }
    int64_t *next = xmalloc(sizeof(int64_t) * (size_t)experts);
    for (int64_t e = 0, at = 0; e < experts; at += counts[e], e++) next[e] = at;
    for (int64_t p = 0; p < idx->numel; p++) rows[p] = next[index_at(idx, p)]++;
    free(next);
    return 0;
}

int moe_dispatch_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    const Type *x = &in[0], *idx = &in[1];
    int64_t experts = node_int(n, "experts", 0);
    if (require_real(n, "x", x, err) || require_index(n, "indices", idx, err) ||
        require_rank(n, "x", x, 1, err))
        return -1;
    if (experts < 1) return err_set(err, "moe_dispatch: experts must be >= 1, got %lld", (long long)experts);
    if (!same_leading(x, idx))
        return err_set(err, "moe_dispatch: x %s and indices %s must agree on all but the last axis", TY(x), TY(idx));
    Dim rows;
    if (dims_product(idx->dims, 0, idx->rank, &rows, err)) return -1;
    out[0] = (Type){.dtype = x->dtype, .rank = 2, .dims = {rows, last_dim(x)}};
    out[1] = (Type){.dtype = DT_I32, .rank = 1, .dims = {dim_const(experts)}};
    return 0;
}

int moe_dispatch_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin;
    const Tensor *x = in[0], *idx = in[1];
    int64_t experts = node_int(n, "experts", 0), h = x->shape[x->rank - 1], k = idx->shape[idx->rank - 1];
    int64_t *rows = xmalloc(sizeof(int64_t) * (size_t)(idx->numel ? idx->numel : 1));
    int64_t *counts = xmalloc(sizeof(int64_t) * (size_t)experts);
    int rc = moe_rows(idx, experts, rows, counts, err);
    for (int64_t p = 0; rc == 0 && p < idx->numel; p++)
        memcpy(tensor_real(out[0]) + rows[p] * h, tensor_real(x) + (p / k) * h, sizeof(real) * (size_t)h);
    for (int64_t e = 0; rc == 0 && e < experts; e++) ((int32_t *)out[1]->data)[e] = (int32_t)counts[e];
    free(rows);
    free(counts);
    return rc ? err_wrap(err, "moe_dispatch: ") : 0;
}

/* ---- grouped_linear ---- */
int grouped_linear_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    const Type *xd = &in[0], *counts = &in[1], *w = &in[2];
    if (require_real(n, "xd", xd, err) || require_index(n, "counts", counts, err) || require_real(n, "w", w, err))
        return -1;
    if (xd->rank != 2 || counts->rank != 1 || w->rank != 3)
        return err_set(err, "grouped_linear: want xd[M,K], counts[E], w[E,N,K]; got %s, %s, %s", TY(xd), TY(counts),
                       TY(w));
    if (xd->dtype != w->dtype) return err_set(err, "grouped_linear: dtypes differ: xd %s and w %s", TY(xd), TY(w));
    if (!dim_equal(w->dims[0], counts->dims[0]))
        return err_set(err, "grouped_linear: w %s has a different expert count than counts %s", TY(w), TY(counts));
    if (!dim_equal(w->dims[2], xd->dims[1]))
        return err_set(err, "grouped_linear: xd %s has a different feature count than w %s expects", TY(xd), TY(w));
    *out = (Type){.dtype = xd->dtype, .rank = 2, .dims = {xd->dims[0], w->dims[1]}};
    return 0;
}

typedef struct GroupedJob {
    const real *x, *w;
    real *y;
    const int64_t *expert_of_row;
    int64_t n, k;
} GroupedJob;

static void grouped_rows(void *ctx, int64_t lo, int64_t hi) {
    const GroupedJob *j = ctx;
    for (int64_t r = lo; r < hi; r++) {
        const real *xr = j->x + r * j->k, *we = j->w + j->expert_of_row[r] * j->n * j->k;
        for (int64_t c = 0; c < j->n; c++) {
            double s = 0;
            for (int64_t i = 0; i < j->k; i++) s += (double)xr[i] * we[c * j->k + i];
            j->y[r * j->n + c] = (real)s;
        }
    }
}

/* Which expert each row belongs to; counts must cover the rows exactly. */
int64_t *experts_of_rows(const Tensor *counts, int64_t m, Err *err) {
    int64_t *of = xmalloc(sizeof(int64_t) * (size_t)(m ? m : 1)), at = 0;
    for (int64_t e = 0; e < counts->numel; e++) {
        int64_t c = index_at(counts, e);
        if (c < 0 || c > m - at) {
            free(of);
            err_set(err, "grouped_linear: counts[%lld]=%lld overruns the %lld rows of xd", (long long)e, (long long)c,
                    (long long)m);
            return NULL;
        }
        for (int64_t i = 0; i < c; i++) of[at++] = e;
    }
    if (at == m) return of;
    free(of);
    err_set(err, "grouped_linear: counts sum to %lld but xd has %lld rows", (long long)at, (long long)m);
    return NULL;
}

int grouped_linear_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin, (void)n;
    int64_t m = in[0]->shape[0];
    int64_t *of = experts_of_rows(in[1], m, err);
    if (!of) return -1;
    GroupedJob j = {tensor_real(in[0]), tensor_real(in[2]), tensor_real(out[0]), of, in[2]->shape[1], in[2]->shape[2]};
    parallel_for(m, j.n * j.k, grouped_rows, &j);
    free(of);
    tensor_round(out[0]);
    return 0;
}

/* ---- moe_combine ---- */
int moe_combine_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    const Type *yd = &in[0], *idx = &in[1], *w = &in[2];
    if (require_real(n, "yd", yd, err) || require_index(n, "indices", idx, err) ||
        require_real(n, "weights", w, err) || require_rank(n, "indices", idx, 1, err))
        return -1;
    if (yd->rank != 2) return err_set(err, "moe_combine: yd %s must be [M,H]", TY(yd));
    if (w->rank != idx->rank || !same_leading(w, idx) || !dim_equal(last_dim(w), last_dim(idx)))
        return err_set(err, "moe_combine: weights %s and indices %s differ in shape", TY(w), TY(idx));
    Dim pairs;
    if (dims_product(idx->dims, 0, idx->rank, &pairs, err)) return -1;
    if (!dim_equal(pairs, yd->dims[0]))
        return err_set(err, "moe_combine: yd %s must have one row per (token, slot) of indices %s", TY(yd), TY(idx));
    *out = *idx;
    out->dtype = yd->dtype;
    out->dims[out->rank - 1] = yd->dims[1];
    return 0;
}

int64_t max_expert(const Tensor *idx) {
    int64_t m = -1;
    for (int64_t p = 0; p < idx->numel; p++) m = index_at(idx, p) > m ? index_at(idx, p) : m;
    return m;
}

static void combine_token(const Tensor *yd, const Tensor *w, const int64_t *rows, int64_t t, int64_t k, real *y) {
    int64_t h = yd->shape[1];
    for (int64_t c = 0; c < h; c++) {
        double s = 0;
        for (int64_t j = 0; j < k; j++)
            s += (double)tensor_real(w)[t * k + j] * tensor_real(yd)[rows[t * k + j] * h + c];
        y[c] = (real)s;
    }
}

int moe_combine_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin, (void)n;
    const Tensor *yd = in[0], *idx = in[1], *w = in[2];
    int64_t k = idx->shape[idx->rank - 1], tokens = k ? idx->numel / k : 0, experts = max_expert(idx) + 1;
    if (experts > (int64_t)1 << 31) return err_set(err, "moe_combine: expert index %lld is too large", (long long)experts - 1);
    int64_t *rows = xmalloc(sizeof(int64_t) * (size_t)(idx->numel ? idx->numel : 1));
    int64_t *counts = xmalloc(sizeof(int64_t) * (size_t)(experts ? experts : 1));
    int rc = moe_rows(idx, experts, rows, counts, err);
    for (int64_t t = 0; rc == 0 && t < tokens; t++)
        combine_token(yd, w, rows, t, k, tensor_real(out[0]) + t * yd->shape[1]);
    free(rows);
    free(counts);
    if (rc) return err_wrap(err, "moe_combine: ");
    tensor_round(out[0]);
    return 0;
}
