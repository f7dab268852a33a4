/* Attention: rope (DeepSeek's interleaved pairs) and sdpa (fp64 scores and softmax). */
#include <stdlib.h>

#include "ops_internal.h"

/* ---- rope ---- */
int rope_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    const Type *x = &in[0], *f = &in[1];
    if (require_real(n, "x", x, err)) return -1;
    if (x->rank < 3) return err_set(err, "rope: x %s must be [B,T,...,d]", TY(x));
    Dim d = x->dims[x->rank - 1];
    if (!dim_is_const(d) || dim_const_value(d) % 2 != 0)
        return err_set(err, "rope: the last dim of x %s must be an even constant", TY(x));
    if (f->dtype != DT_F32 || f->rank != 1 || !dim_equal(f->dims[0], dim_const(dim_const_value(d) / 2)))
        return err_set(err, "rope: inv_freq %s must be f32[%lld] for x %s", TY(f), (long long)(dim_const_value(d) / 2),
                       TY(x));
    *out = *x;
    return 0;
}

int rope_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin, (void)err;
    const Tensor *x = in[0];
    const real *inv_freq = tensor_real(in[1]), *xs = tensor_real(x);
    real *ys = tensor_real(out[0]);
    double scale = node_float(n, "scale", 1.0);
    int64_t d = x->shape[x->rank - 1], seq = x->shape[1], per_pos = shape_product(x, 2, x->rank - 1);
    int64_t vectors = x->numel / (d ? d : 1);
    for (int64_t v = 0; v < vectors; v++) {
        double pos = (double)((v / per_pos) % seq);
        for (int64_t j = 0; j < d / 2; j++) {
            double angle = pos * inv_freq[j], c = cos(angle) * scale, s = sin(angle) * scale;
            double x0 = xs[v * d + 2 * j], x1 = xs[v * d + 2 * j + 1];
            ys[v * d + 2 * j] = (real)(x0 * c - x1 * s);
            ys[v * d + 2 * j + 1] = (real)(x0 * s + x1 * c);
        }
    }
    tensor_round(out[0]);
    return 0;
}

/* ---- sdpa ---- */
static int sdpa_check_dims(const Type *q, const Type *k, const Type *v, int causal, Err *err) {
    int ok = dim_equal(q->dims[0], k->dims[0]) && dim_equal(q->dims[0], v->dims[0]) &&
             dim_equal(q->dims[2], k->dims[2]) && dim_equal(q->dims[2], v->dims[2]);
    if (!ok) return err_set(err, "sdpa: batch or head counts differ: q %s, k %s, v %s", TY(q), TY(k), TY(v));
    if (!dim_equal(q->dims[3], k->dims[3]))
        return err_set(err, "sdpa: q %s and k %s differ in head dim", TY(q), TY(k));
    if (!dim_equal(k->dims[1], v->dims[1]))
        return err_set(err, "sdpa: k %s and v %s differ in length", TY(k), TY(v));
    if (causal && !dim_equal(q->dims[1], k->dims[1]))
        return err_set(err, "sdpa: causal attention needs as many queries as keys: q %s, k %s", TY(q), TY(k));
    return 0;
}

int sdpa_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    const Type *q = &in[0], *k = &in[1], *v = &in[2];
    if (require_real(n, "q", q, err)) return -1;
    if (k->dtype != q->dtype || v->dtype != q->dtype)
        return err_set(err, "sdpa: dtypes differ: q %s, k %s, v %s", TY(q), TY(k), TY(v));
    if (q->rank != 4 || k->rank != 4 || v->rank != 4)
        return err_set(err, "sdpa: want q[B,T,h,dk], k[B,S,h,dk], v[B,S,h,dv]; got %s, %s, %s", TY(q), TY(k), TY(v));
    if (sdpa_check_dims(q, k, v, (int)node_int(n, "causal", 1), err)) return -1;
    *out = *q;
    out->dims[3] = v->dims[3];
    return 0;
}

typedef struct SdpaJob {
    const real *q, *k, *v;
    real *o;
    int64_t t, s, h, dk, dv;
    double scale;
    int causal;
} SdpaJob;

/* One query row (b, t, head): scores, softmax and weighted sum, all in fp64. */
static void sdpa_row(const SdpaJob *j, int64_t b, int64_t t, int64_t hd, double *p) {
    const real *q = j->q + ((b * j->t + t) * j->h + hd) * j->dk;
    int64_t visible = j->causal ? t + 1 : j->s;
    double m = -INFINITY, sum = 0;
    for (int64_t s = 0; s < visible; s++) {
        const real *k = j->k + ((b * j->s + s) * j->h + hd) * j->dk;
        double dot = 0;
        for (int64_t i = 0; i < j->dk; i++) dot += (double)q[i] * k[i];
        p[s] = j->scale * dot;
        m = p[s] > m ? p[s] : m;
    }
    for (int64_t s = 0; s < visible; s++) sum += p[s] = exp(p[s] - m);
    real *o = j->o + ((b * j->t + t) * j->h + hd) * j->dv;
    for (int64_t c = 0; c < j->dv; c++) {
        double acc = 0;
        for (int64_t s = 0; s < visible; s++) acc += p[s] * j->v[((b * j->s + s) * j->h + hd) * j->dv + c];
        o[c] = (real)(acc / sum);
    }
}

static void sdpa_rows(void *ctx, int64_t lo, int64_t hi) {
    const SdpaJob *j = ctx;
    double *p = xmalloc(sizeof(double) * (size_t)(j->s ? j->s : 1));
    for (int64_t r = lo; r < hi; r++) sdpa_row(j, r / (j->t * j->h), (r / j->h) % j->t, r % j->h, p);
    free(p);
}

int sdpa_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin;
    const Tensor *q = in[0], *k = in[1], *v = in[2];
    SdpaJob j = {tensor_real(q), tensor_real(k), tensor_real(v), tensor_real(out[0]), q->shape[1], k->shape[1],
                 q->shape[2], q->shape[3], v->shape[3], node_float(n, "scale", 1.0), (int)node_int(n, "causal", 1)};
    if (j.s == 0 && q->numel > 0) return err_set(err, "sdpa: there are no keys to attend to");
    int64_t rows = q->shape[0] * j.t * j.h;
    parallel_for(rows, j.s * (j.dk + j.dv), sdpa_rows, &j);
    tensor_round(out[0]);
    return 0;
}
