/* The backward ops autodiff emits (docs/ops.md, "Backward ops"): shape rules
 * and kernels. Sums run in fp64 like the forward kernels'. */
#include <stdlib.h>

#include "ops_internal.h"

static int require_same_real(const Node *n, const Type *a, const Type *b, Err *err) {
    if (require_real(n, "operand", a, err) || require_real(n, "operand", b, err)) return -1;
    if (a->dtype != b->dtype) return err_set(err, "%s: dtypes differ: %s and %s", node_op_name(n), TY(a), TY(b));
    return 0;
}

static double *dzeros(int64_t n) { return xcalloc((size_t)(n ? n : 1), sizeof(double)); }

/* Writes fp64 sums into a float tensor, rounded to its dtype. */
static void store_sums(Tensor *t, const double *acc) {
    real *y = tensor_real(t);
    for (int64_t i = 0; i < t->numel; i++) y[i] = round_to_dtype(t->dtype, (real)acc[i]);
}

/* ---- transpose: swap the last two axes ---- */
int transpose_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    if (in[0].rank < 2) return err_set(err, "%s: %s must have rank >= 2", node_op_name(n), TY(&in[0]));
    *out = in[0];
    out->dims[out->rank - 2] = in[0].dims[in[0].rank - 1];
    out->dims[out->rank - 1] = in[0].dims[in[0].rank - 2];
    return 0;
}

int transpose_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin, (void)n, (void)err;
    const Tensor *x = in[0];
    int64_t r = x->shape[x->rank - 2], c = x->shape[x->rank - 1], mats = r * c > 0 ? x->numel / (r * c) : 0;
    size_t es = dtype_host_size(x->dtype);
    for (int64_t m = 0; m < mats; m++)
        for (int64_t i = 0; i < r; i++)
            for (int64_t j = 0; j < c; j++)
                memcpy((char *)out[0]->data + (size_t)(m * r * c + j * r + i) * es,
                       (const char *)x->data + (size_t)(m * r * c + i * c + j) * es, es);
    return 0;
}

/* ---- sum_to: the adjoint of expand ---- */
int sum_to_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    const Attr *a = node_attr(n, "shape");
    if (require_real(n, "input", &in[0], err)) return -1;
    if (a->ndims > in[0].rank) return err_set(err, "sum_to: cannot sum %s to a shape of higher rank", TY(&in[0]));
    *out = (Type){.dtype = in[0].dtype, .rank = a->ndims};
    for (int i = 0; i < a->ndims; i++) out->dims[i] = a->dims[i];
    Type b;
    int ok = broadcast_shape(n, out, &in[0], &b, err) == 0;
    for (int i = 0; ok && i < b.rank; i++) ok = dim_equal(b.dims[i], in[0].dims[i]);
    if (!ok) return err_set(err, "sum_to: %s does not broadcast to %s", TY(out), TY(&in[0]));
    return 0;
}

int sum_to_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin, (void)n, (void)err;
    int64_t strides[IR_MAX_RANK];
    broadcast_strides(out[0], in[0], strides);
    double *acc = dzeros(out[0]->numel);
    const real *x = tensor_real(in[0]);
    for (int64_t i = 0; i < in[0]->numel; i++) acc[broadcast_offset(in[0], strides, i)] += x[i];
    store_sums(out[0], acc);
    free(acc);
    return 0;
}

/* ---- pad: the adjoint of slice; zeros outside [start, end) along axis ---- */
static Dim one_dim(const Node *n, const char *key) { return node_attr(n, key)->dims[0]; }

static int pad_check_attrs(const Node *n, Err *err) {
    if (node_attr(n, "start")->ndims != 1 || node_attr(n, "end")->ndims != 1 || node_attr(n, "size")->ndims != 1)
        return err_set(err, "pad: start, end and size must be one dim each");
    Dim start = one_dim(n, "start"), end = one_dim(n, "end"), size = one_dim(n, "size");
    if (!dim_is_const(start) && !dim_is_const(end) && !dim_equal(end, size))
        return err_set(err, "pad: start or end must be a constant, or end the size");
    return 0;
}

static int dim_negative(Dim d) { return dim_is_const(d) && dim_const_value(d) < 0; }

int pad_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    int axis;
    if (norm_axis(n, node_int(n, "axis", 0), in[0].rank, &axis, err) || pad_check_attrs(n, err)) return -1;
    Dim start = one_dim(n, "start"), end = one_dim(n, "end"), size = one_dim(n, "size"), len, tail;
    if (dim_sub(end, start, &len, err) || dim_sub(size, end, &tail, err)) return -1;
    if (!dim_equal(len, in[0].dims[axis]) || dim_negative(start) || dim_negative(tail))
        return err_set(err, "pad: %s does not fit [start, end) of axis %d's new size", TY(&in[0]), axis);
    *out = in[0];
    out->dims[axis] = size;
    return 0;
}

int pad_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin;
    int axis;
    if (norm_axis(n, node_int(n, "axis", 0), in[0]->rank, &axis, err)) return -1;
    Tensor *y = out[0];
    int64_t size = y->shape[axis], len = in[0]->shape[axis];
    Dim start_d = one_dim(n, "start"), end_d = one_dim(n, "end");
    int64_t start = dim_is_const(start_d) ? dim_const_value(start_d)
                    : dim_is_const(end_d) ? dim_const_value(end_d) - len : size - len;
    if (start < 0 || start + len > size)
        return err_set(err, "pad: [%lld, %lld) is out of bounds for size %lld", (long long)start,
                       (long long)(start + len), (long long)size);
    size_t es = dtype_host_size(y->dtype);
    int64_t outer = shape_product(y, 0, axis), inner = shape_product(y, axis + 1, y->rank);
    for (int64_t o = 0; o < outer; o++)
        memcpy((char *)y->data + (size_t)((o * size + start) * inner) * es,
               (const char *)in[0]->data + (size_t)(o * len * inner) * es, (size_t)(len * inner) * es);
    return 0;
}

/* ---- linear_wgrad: dW[N,K] = sum over rows of g[r,:]^T x[r,:] ---- */
int linear_wgrad_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    const Type *g = &in[0], *x = &in[1];
    if (require_same_real(n, g, x, err)) return -1;
    if (g->rank < 1 || !same_leading(g, x))
        return err_set(err, "linear_wgrad: g %s and x %s must agree on all but the last axis", TY(g), TY(x));
    *out = (Type){.dtype = g->dtype, .rank = 2, .dims = {g->dims[g->rank - 1], x->dims[x->rank - 1]}};
    return 0;
}

typedef struct WgradJob {
    const real *g, *x;
    real *w;
    DType dt;
    int64_t rows, n, k;
    const int64_t *row_start; /* per group; NULL for one group of all rows */
} WgradJob;

/* Output rows [lo, hi) of dW (flattened [groups*n]), each an fp64 sum over its group's rows. */
static void wgrad_rows(void *ctx, int64_t lo, int64_t hi) {
    const WgradJob *j = ctx;
    double *acc = dzeros(j->k);
    for (int64_t o = lo; o < hi; o++) {
        int64_t grp = o / j->n, c = o % j->n;
        int64_t r0 = j->row_start ? j->row_start[grp] : 0, r1 = j->row_start ? j->row_start[grp + 1] : j->rows;
        memset(acc, 0, sizeof(double) * (size_t)j->k);
        for (int64_t r = r0; r < r1; r++) {
            double gv = j->g[r * j->n + c];
            const real *xr = j->x + r * j->k;
            for (int64_t i = 0; i < j->k; i++) acc[i] += gv * xr[i];
        }
        for (int64_t i = 0; i < j->k; i++) j->w[o * j->k + i] = round_to_dtype(j->dt, (real)acc[i]);
    }
    free(acc);
}

int linear_wgrad_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin, (void)n, (void)err;
    WgradJob j = {tensor_real(in[0]), tensor_real(in[1]), tensor_real(out[0]), out[0]->dtype,
                  shape_product(in[0], 0, in[0]->rank - 1), out[0]->shape[0], out[0]->shape[1], NULL};
    parallel_for(j.n, j.rows * j.k, wgrad_rows, &j);
    return 0;
}

/* ---- grouped_linear_wgrad(g[M,N], counts[E], xd[M,K]) -> dW[E,N,K] ---- */
int grouped_linear_wgrad_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    const Type *g = &in[0], *counts = &in[1], *xd = &in[2];
    if (require_same_real(n, g, xd, err) || require_index(n, "counts", counts, err)) return -1;
    if (g->rank != 2 || counts->rank != 1 || xd->rank != 2 || !dim_equal(g->dims[0], xd->dims[0]))
        return err_set(err, "grouped_linear_wgrad: want g[M,N], counts[E], xd[M,K]; got %s, %s, %s", TY(g),
                       TY(counts), TY(xd));
    *out = (Type){.dtype = g->dtype, .rank = 3, .dims = {counts->dims[0], g->dims[1], xd->dims[1]}};
    return 0;
}

int grouped_linear_wgrad_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin, (void)n;
    const Tensor *counts = in[1];
    int64_t m = in[0]->shape[0], experts = counts->numel;
    int64_t *of = experts_of_rows(counts, m, err);
    if (!of) return -1;
    free(of);
    int64_t *start = xmalloc(sizeof(int64_t) * (size_t)(experts + 1));
    start[0] = 0;
    for (int64_t e = 0; e < experts; e++) start[e + 1] = start[e] + index_at(counts, e);
    WgradJob j = {tensor_real(in[0]), tensor_real(in[2]), tensor_real(out[0]), out[0]->dtype,
                  m, out[0]->shape[1], out[0]->shape[2], start};
    parallel_for(experts * j.n, (m / (experts ? experts : 1) + 1) * j.k, wgrad_rows, &j);
    free(start);
    return 0;
}

/* ---- embedding_grad(g[...,H], ids[...]) -> [rows,H]: rows of g added at their ids ---- */
int embedding_grad_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    const Type *g = &in[0], *ids = &in[1];
    const Attr *rows = node_attr(n, "rows");
    if (require_real(n, "g", g, err) || require_index(n, "ids", ids, err)) return -1;
    if (rows->ndims != 1) return err_set(err, "embedding_grad: rows must be one dim");
    int ok = g->rank == ids->rank + 1;
    for (int i = 0; ok && i < ids->rank; i++) ok = dim_equal(g->dims[i], ids->dims[i]);
    if (!ok) return err_set(err, "embedding_grad: g %s must be ids %s plus a feature axis", TY(g), TY(ids));
    *out = (Type){.dtype = g->dtype, .rank = 2, .dims = {rows->dims[0], g->dims[g->rank - 1]}};
    return 0;
}

int embedding_grad_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin, (void)n;
    int64_t vocab = out[0]->shape[0], h = out[0]->shape[1];
    double *acc = dzeros(out[0]->numel);
    for (int64_t i = 0; i < in[1]->numel; i++) {
        int64_t id = index_at(in[1], i);
        if (id < 0 || id >= vocab) {
            free(acc);
            return err_set(err, "embedding_grad: id %lld at position %lld is outside [0, %lld)", (long long)id,
                           (long long)i, (long long)vocab);
        }
        const real *gr = tensor_real(in[0]) + i * h;
        for (int64_t c = 0; c < h; c++) acc[id * h + c] += gr[c];
    }
    store_sums(out[0], acc);
    free(acc);
    return 0;
}

/* ---- scatter_add(g[...,K], idx[...,K]) -> [...,size]: the adjoint of gather ---- */
int scatter_add_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    const Type *g = &in[0], *idx = &in[1];
    const Attr *size = node_attr(n, "size");
    if (require_real(n, "g", g, err) || require_index(n, "indices", idx, err)) return -1;
    if (size->ndims != 1) return err_set(err, "scatter_add: size must be one dim");
    int ok = g->rank >= 1 && g->rank == idx->rank;
    for (int i = 0; ok && i < g->rank; i++) ok = dim_equal(g->dims[i], idx->dims[i]);
    if (!ok) return err_set(err, "scatter_add: g %s and indices %s must have one shape", TY(g), TY(idx));
    *out = *g;
    out->dims[g->rank - 1] = size->dims[0];
    return 0;
}

int scatter_add_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin, (void)n;
    const Tensor *g = in[0], *idx = in[1];
    int64_t e = out[0]->shape[out[0]->rank - 1], k = idx->shape[idx->rank - 1];
    double *acc = dzeros(out[0]->numel);
    for (int64_t i = 0; i < idx->numel; i++) {
        int64_t j = index_at(idx, i);
        if (j < 0 || j >= e) {
            free(acc);
            return err_set(err, "scatter_add: index %lld at position %lld is outside [0, %lld)", (long long)j,
                           (long long)i, (long long)e);
        }
        acc[(i / k) * e + j] += tensor_real(g)[i];
    }
    store_sums(out[0], acc);
    free(acc);
    return 0;
}

/* ---- mean_all_grad(g[], x) -> like x: g / numel(x), numel known only at run time ---- */
int mean_all_grad_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    if (in[0].dtype != DT_F32 || in[0].rank != 0)
        return err_set(err, "mean_all_grad: g %s must be f32[]", TY(&in[0]));
    if (require_real(n, "x", &in[1], err)) return -1;
    *out = in[1];
    return 0;
}

int mean_all_grad_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin;
    if (out[0]->numel == 0) return err_set(err, "%s: x has no elements", node_op_name(n));
    real v = round_to_dtype(out[0]->dtype, (real)((double)tensor_real(in[0])[0] / (double)out[0]->numel));
    for (int64_t i = 0; i < out[0]->numel; i++) tensor_real(out[0])[i] = v;
    return 0;
}

/* ---- cross_entropy_grad(g[...], logits[...,V], targets[...]) -> g (softmax - onehot) ---- */
int cross_entropy_grad_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    Type loss;
    if (cross_entropy_infer(in + 1, 2, n, &loss, err)) return -1;
    if (!type_equal(&in[0], &loss))
        return err_set(err, "cross_entropy_grad: g %s must have the loss's type %s", TY(&in[0]), TY(&loss));
    *out = in[1];
    return 0;
}

static void ce_grad_row(const real *x, int64_t v, int64_t target, double g, real *dx, DType dt) {
    double m = -INFINITY, s = 0;
    for (int64_t i = 0; i < v; i++) m = x[i] > m ? x[i] : m;
    for (int64_t i = 0; i < v; i++) s += exp((double)x[i] - m);
    for (int64_t i = 0; i < v; i++)
        dx[i] = round_to_dtype(dt, (real)(g * (exp((double)x[i] - m) / s - (i == target ? 1.0 : 0.0))));
}

int cross_entropy_grad_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin, (void)n;
    const Tensor *targets = in[2];
    int64_t v = in[1]->shape[in[1]->rank - 1];
    for (int64_t r = 0; r < targets->numel; r++) {
        int64_t t = index_at(targets, r);
        if (t < 0 || t >= v)
            return err_set(err, "cross_entropy_grad: target %lld at position %lld is outside [0, %lld)", (long long)t,
                           (long long)r, (long long)v);
        ce_grad_row(tensor_real(in[1]) + r * v, v, t, tensor_real(in[0])[r], tensor_real(out[0]) + r * v,
                    out[0]->dtype);
    }
    return 0;
}

/* ---- sdpa_grad(g, q, k, v) -> dq, dk, dv: softmax recomputed per query row ---- */
int sdpa_grad_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    Type o;
    if (sdpa_infer(in + 1, 3, n, &o, err)) return -1;
    if (!type_equal(&in[0], &o))
        return err_set(err, "sdpa_grad: g %s must have the attention output's type %s", TY(&in[0]), TY(&o));
    for (int i = 0; i < 3; i++) out[i] = in[i + 1];
    return 0;
}

typedef struct SdpaGradJob {
    const real *g, *q, *k, *v;
    real *dq, *dk, *dv;
    DType dt;
    int64_t t, s, h, dk_len, dv_len;
    double scale;
    int causal;
} SdpaGradJob;

typedef struct SdpaScratch {
    double *p, *dp, *dk, *dv; /* per key: probability, its gradient; per key accumulators */
} SdpaScratch;

static const real *row_of(const real *base, const SdpaGradJob *j, int64_t b, int64_t len, int64_t pos, int64_t hd,
                          int64_t width) {
    return base + ((b * len + pos) * j->h + hd) * width;
}

/* Query row t of (b, head): p = softmax(scale q.k), dp = g.v, ds = p (dp - p.dp). */
static void sdpa_grad_query(const SdpaGradJob *j, int64_t b, int64_t hd, int64_t t, SdpaScratch *w) {
    const real *q = row_of(j->q, j, b, j->t, t, hd, j->dk_len), *g = row_of(j->g, j, b, j->t, t, hd, j->dv_len);
    int64_t visible = j->causal ? t + 1 : j->s;
    double m = -INFINITY, sum = 0, pdp = 0;
    for (int64_t s = 0; s < visible; s++) {
        const real *k = row_of(j->k, j, b, j->s, s, hd, j->dk_len), *v = row_of(j->v, j, b, j->s, s, hd, j->dv_len);
        double dot = 0, gv = 0;
        for (int64_t i = 0; i < j->dk_len; i++) dot += (double)q[i] * k[i];
        for (int64_t c = 0; c < j->dv_len; c++) gv += (double)g[c] * v[c];
        w->p[s] = j->scale * dot;
        w->dp[s] = gv;
        m = w->p[s] > m ? w->p[s] : m;
    }
    for (int64_t s = 0; s < visible; s++) sum += w->p[s] = exp(w->p[s] - m);
    for (int64_t s = 0; s < visible; s++) pdp += (w->p[s] /= sum) * w->dp[s];
    real *dq = j->dq + ((b * j->t + t) * j->h + hd) * j->dk_len;
    for (int64_t i = 0; i < j->dk_len; i++) {
        double acc = 0;
        for (int64_t s = 0; s < visible; s++)
            acc += w->p[s] * (w->dp[s] - pdp) * row_of(j->k, j, b, j->s, s, hd, j->dk_len)[i];
        dq[i] = round_to_dtype(j->dt, (real)(j->scale * acc));
    }
    for (int64_t s = 0; s < visible; s++) {
        double ds = j->scale * w->p[s] * (w->dp[s] - pdp);
        for (int64_t i = 0; i < j->dk_len; i++) w->dk[s * j->dk_len + i] += ds * q[i];
        for (int64_t c = 0; c < j->dv_len; c++) w->dv[s * j->dv_len + c] += w->p[s] * g[c];
    }
}

/* Items are (b, head) pairs: dk and dv sum over queries, so one item owns them. */
static void sdpa_grad_items(void *ctx, int64_t lo, int64_t hi) {
    const SdpaGradJob *j = ctx;
    int64_t s_len = j->s ? j->s : 1;
    SdpaScratch w = {dzeros(s_len), dzeros(s_len), dzeros(s_len * j->dk_len), dzeros(s_len * j->dv_len)};
    for (int64_t it = lo; it < hi; it++) {
        int64_t b = it / j->h, hd = it % j->h;
        memset(w.dk, 0, sizeof(double) * (size_t)(s_len * j->dk_len));
        memset(w.dv, 0, sizeof(double) * (size_t)(s_len * j->dv_len));
        for (int64_t t = 0; t < j->t; t++) sdpa_grad_query(j, b, hd, t, &w);
        for (int64_t s = 0; s < j->s; s++) {
            real *dk = j->dk + ((b * j->s + s) * j->h + hd) * j->dk_len, *dv = j->dv + ((b * j->s + s) * j->h + hd) * j->dv_len;
            for (int64_t i = 0; i < j->dk_len; i++) dk[i] = round_to_dtype(j->dt, (real)w.dk[s * j->dk_len + i]);
            for (int64_t c = 0; c < j->dv_len; c++) dv[c] = round_to_dtype(j->dt, (real)w.dv[s * j->dv_len + c]);
        }
    }
    free(w.p), free(w.dp), free(w.dk), free(w.dv);
}

int sdpa_grad_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin;
    const Tensor *q = in[1], *k = in[2], *v = in[3];
    SdpaGradJob j = {tensor_real(in[0]), tensor_real(q), tensor_real(k), tensor_real(v), tensor_real(out[0]),
                     tensor_real(out[1]), tensor_real(out[2]), q->dtype, q->shape[1], k->shape[1], q->shape[2],
                     q->shape[3], v->shape[3], node_float(n, "scale", 1.0), (int)node_int(n, "causal", 1)};
    if (j.s == 0 && q->numel > 0) return err_set(err, "sdpa_grad: there are no keys to attend to");
    parallel_for(q->shape[0] * j.h, j.t * j.s * (j.dk_len + j.dv_len), sdpa_grad_items, &j);
    return 0;
}

/* ---- moe_combine_grad(g[...,H], yd[M,H], idx[...,K], w[...,K]) -> d yd, d w ---- */
int moe_combine_grad_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    Type y;
    if (moe_combine_infer(in + 1, 3, n, &y, err)) return -1;
    if (!type_equal(&in[0], &y))
        return err_set(err, "moe_combine_grad: g %s must have the combine output's type %s", TY(&in[0]), TY(&y));
    out[0] = in[1];
    out[1] = in[3];
    return 0;
}

static void combine_grad_token(const Tensor *const *in, Tensor *const *out, const int64_t *rows, int64_t t, int64_t k) {
    int64_t h = in[1]->shape[1];
    const real *g = tensor_real(in[0]) + t * h, *w = tensor_real(in[3]);
    for (int64_t j = 0; j < k; j++) {
        const real *yd = tensor_real(in[1]) + rows[t * k + j] * h;
        real *dyd = tensor_real(out[0]) + rows[t * k + j] * h;
        double dw = 0;
        for (int64_t c = 0; c < h; c++) {
            dw += (double)g[c] * yd[c];
            dyd[c] = round_to_dtype(out[0]->dtype, (real)((double)w[t * k + j] * g[c]));
        }
        tensor_real(out[1])[t * k + j] = round_to_dtype(out[1]->dtype, (real)dw);
    }
}

int moe_combine_grad_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin, (void)n;
    const Tensor *idx = in[2];
    int64_t k = idx->shape[idx->rank - 1], tokens = k ? idx->numel / k : 0, experts = max_expert(idx) + 1;
    if (experts > (int64_t)1 << 31)
        return err_set(err, "moe_combine_grad: expert index %lld is too large", (long long)experts - 1);
    int64_t *rows = xmalloc(sizeof(int64_t) * (size_t)(idx->numel ? idx->numel : 1));
    int64_t *counts = xmalloc(sizeof(int64_t) * (size_t)(experts ? experts : 1));
    int rc = moe_rows(idx, experts, rows, counts, err);
    for (int64_t t = 0; rc == 0 && t < tokens; t++) combine_grad_token(in, out, rows, t, k);
    free(rows);
    free(counts);
    return rc ? err_wrap(err, "moe_combine_grad: ") : 0;
}
