/* The cpu backend's own kernels for hot ops the fused-kernel description cannot
 * express: attention and its gradient as per-(batch, head) GEMMs around a row
 * softmax, the experts' GEMMs through BLAS (experts spread over the threads), and the layout ops
 * autodiff emits (expand, sum_to, transpose) as strided loops instead of the
 * interpreter's per-element index arithmetic, and rope with its cos/sin table.
 *
 * Numerics: GEMMs accumulate in fp32 (relative error about sqrt(K) 2^-24
 * against the interpreter's fp64 sums); softmax keeps the interpreter's fp64
 * max/exp/sum per row. rope, expand, sum_to and transpose give the interpreter's bits
 * (sum_to adds each output's terms in the interpreter's order, in fp64). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../base/parallel.h"
#include "../codegen/cpu.h"
#include "cpu_ops.h"

/* ---- attention: one (batch, head) pair is a few GEMMs on strided rows ---- */
typedef struct Attention {
    const float *q, *k, *v, *g;  /* g: the output gradient (sdpa_grad only) */
    float *o, *dq, *dk, *dv;
    int64_t t, s, h, dk_len, dv_len;
    float scale;
    int causal;
    int threads;
} Attention;

static int64_t visible_keys(const Attention *a, int64_t t) { return a->causal ? t + 1 : a->s; }

/* A BLAS leading dimension: at least 1 even for an empty head dim, where nothing is read through it. */
static int ld(int64_t x) { return x > 0 ? (int)x : 1; }

/* p[t, :] = softmax(scale q k^T) over the visible keys, zero beyond them. */
static void attention_probs(const Attention *a, int64_t b, int64_t hd, float *p) {
    const float *q = a->q + (b * a->t * a->h + hd) * a->dk_len, *k = a->k + (b * a->s * a->h + hd) * a->dk_len;
    int ldk = ld(a->h * a->dk_len);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)a->t, (int)a->s, (int)a->dk_len, a->scale, q, ldk, k, ldk,
                0.0f, p, ld(a->s));
    for (int64_t t = 0; t < a->t; t++) {
        float *row = p + t * a->s;
        int64_t visible = visible_keys(a, t);
        double m = -INFINITY, sum = 0;
        for (int64_t s = 0; s < visible; s++) m = row[s] > m ? row[s] : m;
        for (int64_t s = 0; s < visible; s++) sum += row[s] = (float)exp(row[s] - m);
        for (int64_t s = 0; s < visible; s++) row[s] = (float)(row[s] / sum);
        for (int64_t s = visible; s < a->s; s++) row[s] = 0.0f;
    }
}

static void sdpa_pairs(void *ctx, int64_t lo, int64_t hi) {
    const Attention *a = ctx;
    float *p = xmalloc(sizeof(float) * (size_t)(a->t * a->s + 1));
    int ldv = ld(a->h * a->dv_len);
    for (int64_t it = lo; it < hi; it++) {
        int64_t b = it / a->h, hd = it % a->h;
        attention_probs(a, b, hd, p);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)a->t, (int)a->dv_len, (int)a->s, 1.0f, p, ld(a->s),
                    a->v + (b * a->s * a->h + hd) * a->dv_len, ldv, 0.0f, a->o + (b * a->t * a->h + hd) * a->dv_len, ldv);
    }
    free(p);
}

/* ds = scale p (dp - rowsum(p dp)), in place of dp. */
static void softmax_backward(const Attention *a, const float *p, float *dp) {
    for (int64_t t = 0; t < a->t; t++) {
        const float *pr = p + t * a->s;
        float *dr = dp + t * a->s;
        double pdp = 0;
        for (int64_t s = 0; s < a->s; s++) pdp += (double)pr[s] * dr[s];
        for (int64_t s = 0; s < a->s; s++) dr[s] = (float)(a->scale * pr[s] * (dr[s] - pdp));
    }
}

static void sdpa_grad_pairs(void *ctx, int64_t lo, int64_t hi) {
    const Attention *a = ctx;
    size_t n = (size_t)(a->t * a->s + 1);
    float *p = xmalloc(sizeof(float) * n), *dp = xmalloc(sizeof(float) * n);
    int T = (int)a->t, S = (int)a->s, DK = (int)a->dk_len, DV = (int)a->dv_len, lds = ld(a->s);
    int ldk = ld(a->h * a->dk_len), ldv = ld(a->h * a->dv_len);
    for (int64_t it = lo; it < hi; it++) {
        int64_t b = it / a->h, hd = it % a->h, qoff = (b * a->t * a->h + hd), koff = (b * a->s * a->h + hd);
        const float *q = a->q + qoff * DK, *k = a->k + koff * DK, *v = a->v + koff * DV, *g = a->g + qoff * DV;
        attention_probs(a, b, hd, p);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, S, DV, 1.0f, g, ldv, v, ldv, 0.0f, dp, lds);
        softmax_backward(a, p, dp);
        float *dq = a->dq + qoff * DK, *dk = a->dk + koff * DK, *dv = a->dv + koff * DV;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, DK, S, 1.0f, dp, lds, k, ldk, 0.0f, dq, ldk);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, S, DK, T, 1.0f, dp, lds, q, ldk, 0.0f, dk, ldk);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, S, DV, T, 1.0f, p, lds, g, ldv, 0.0f, dv, ldv);
    }
    free(p), free(dp);
}

static Attention attention_of(const Node *n, const Tensor *q, const Tensor *k, const Tensor *v, int threads) {
    return (Attention){.q = tensor_f32(q), .k = tensor_f32(k), .v = tensor_f32(v), .t = q->shape[1], .s = k->shape[1],
                       .h = q->shape[2], .dk_len = q->shape[3], .dv_len = v->shape[3],
                       .scale = (float)node_float(n, "scale", 1.0), .causal = (int)node_int(n, "causal", 1),
                       .threads = threads};
}

static int64_t attention_cost(const Attention *a) { return a->t * a->s * (a->dk_len + a->dv_len); }

static int fast_sdpa(const CpuOpCall *c, Err *err) {
    Attention a = attention_of(c->node, c->in[0], c->in[1], c->in[2], c->threads);
    if (a.s == 0 && c->in[0]->numel > 0) return err_set(err, "sdpa: there are no keys to attend to");
    a.o = tensor_f32(c->out[0]);
    parallel_for_capped(c->in[0]->shape[0] * a.h, attention_cost(&a), c->threads, sdpa_pairs, &a);
    return 0;
}

static int fast_sdpa_grad(const CpuOpCall *c, Err *err) {
    Attention a = attention_of(c->node, c->in[1], c->in[2], c->in[3], c->threads);
    if (a.s == 0 && c->in[1]->numel > 0) return err_set(err, "sdpa_grad: there are no keys to attend to");
    a.g = tensor_f32(c->in[0]);
    a.dq = tensor_f32(c->out[0]), a.dk = tensor_f32(c->out[1]), a.dv = tensor_f32(c->out[2]);
    parallel_for_capped(c->in[1]->shape[0] * a.h, 3 * attention_cost(&a), c->threads, sdpa_grad_pairs, &a);
    return 0;
}

/* ---- the experts' GEMMs: rows of expert e are contiguous; experts spread over the threads ---- */
static int64_t count_at(const Tensor *counts, int64_t e) {
    return counts->dtype == DT_I64 ? ((const int64_t *)counts->data)[e] : ((const int32_t *)counts->data)[e];
}

/* start[e] = the first row of expert e, start[E] = m; counts are checked as the interpreter checks them. */
static int64_t *expert_rows(const char *op, const Tensor *counts, int64_t m, Err *err) {
    int64_t *start = xmalloc(sizeof(int64_t) * (size_t)(counts->numel + 1));
    start[0] = 0;
    for (int64_t e = 0; e < counts->numel; e++) {
        int64_t rows = count_at(counts, e);
        if (rows < 0 || rows > m - start[e]) {
            free(start);
            err_set(err, "%s: counts[%lld]=%lld overruns the %lld rows", op, (long long)e, (long long)rows, (long long)m);
            return NULL;
        }
        start[e + 1] = start[e] + rows;
    }
    if (start[counts->numel] != m) {
        err_set(err, "%s: counts sum to %lld but there are %lld rows", op, (long long)start[counts->numel], (long long)m);
        free(start);
        return NULL;
    }
    return start;
}

typedef struct Experts {
    const float *a, *w; /* a: the rows (x or g); w: weights (grouped_linear) or the inputs xd (wgrad) */
    float *y;
    const int64_t *start;
    int64_t n, k;
} Experts;

/* grouped_linear(x[M,K], counts, w[E,N,K]) -> [M,N]: x_e w_e^T. */
static void forward_experts(void *ctx, int64_t lo, int64_t hi) {
    const Experts *x = ctx;
    for (int64_t e = lo; e < hi; e++)
        gemm_xwt(x->a + x->start[e] * x->k, x->w + e * x->n * x->k, x->y + x->start[e] * x->n,
                 x->start[e + 1] - x->start[e], x->n, x->k, 1);
}

/* grouped_linear_wgrad(g[M,N], counts, xd[M,K]) -> [E,N,K]: g_e^T xd_e (zero for an expert with no rows). */
static void wgrad_experts(void *ctx, int64_t lo, int64_t hi) {
    const Experts *x = ctx;
    for (int64_t e = lo; e < hi; e++) {
        float *dw = x->y + e * x->n * x->k;
        int64_t rows = x->start[e + 1] - x->start[e];
        if (rows == 0) memset(dw, 0, sizeof(float) * (size_t)(x->n * x->k));
        else gemm_dyt_x(x->a + x->start[e] * x->n, x->w + x->start[e] * x->k, dw, rows, x->n, x->k, 1);
    }
}

static int fast_grouped_linear(const CpuOpCall *c, Err *err) {
    const Tensor *x = c->in[0], *w = c->in[2];
    int64_t *start = expert_rows("grouped_linear", c->in[1], x->shape[0], err);
    if (!start) return -1;
    Experts ex = {tensor_f32(x), tensor_f32(w), tensor_f32(c->out[0]), start, w->shape[1], w->shape[2]};
    int64_t experts = c->in[1]->numel;
    parallel_for_capped(experts, x->shape[0] / (experts ? experts : 1) * ex.n * ex.k + 1, c->threads, forward_experts, &ex);
    free(start);
    return 0;
}

static int fast_grouped_linear_wgrad(const CpuOpCall *c, Err *err) {
    const Tensor *g = c->in[0], *x = c->in[2];
    int64_t *start = expert_rows("grouped_linear_wgrad", c->in[1], g->shape[0], err);
    if (!start) return -1;
    Experts ex = {tensor_f32(g), tensor_f32(x), tensor_f32(c->out[0]), start, g->shape[1], x->shape[1]};
    int64_t experts = c->in[1]->numel;
    parallel_for_capped(experts, g->shape[0] / (experts ? experts : 1) * ex.n * ex.k + 1, c->threads, wgrad_experts, &ex);
    free(start);
    return 0;
}

/* ---- broadcasting layout: walk the wide shape with an odometer of offsets into the narrow one ---- */
typedef struct Odometer {
    int rank;
    int64_t shape[IR_MAX_RANK], stride[IR_MAX_RANK], index[IR_MAX_RANK];
    int64_t offset; /* into the narrow tensor */
} Odometer;

/* The narrow tensor's element strides in the wide index space (0 where it broadcasts). */
static Odometer odometer_of(const Tensor *wide, const Tensor *narrow) {
    Odometer o = {.rank = wide->rank};
    int64_t stride = 1;
    for (int i = wide->rank - 1; i >= 0; i--) {
        int ni = i - (wide->rank - narrow->rank);
        int64_t size = ni >= 0 ? narrow->shape[ni] : 1;
        o.shape[i] = wide->shape[i];
        o.stride[i] = size == 1 ? 0 : stride;
        stride *= size;
    }
    return o;
}

static void odometer_next(Odometer *o) {
    for (int d = o->rank - 1; d >= 0; d--) {
        o->offset += o->stride[d];
        if (++o->index[d] < o->shape[d]) return;
        o->offset -= o->stride[d] * o->shape[d];
        o->index[d] = 0;
    }
}

/* Moves the odometer to the wide tensor's element i. */
static void odometer_seek(Odometer *o, int64_t i) {
    o->offset = 0;
    for (int d = o->rank - 1; d >= 0; d--) {
        o->index[d] = o->shape[d] ? i % o->shape[d] : 0;
        i = o->shape[d] ? i / o->shape[d] : 0;
        o->offset += o->index[d] * o->stride[d];
    }
}

typedef struct Expand {
    Odometer start;
    const float *x;
    float *y;
} Expand;

static void expand_range(void *ctx, int64_t lo, int64_t hi) {
    const Expand *e = ctx;
    Odometer o = e->start;
    odometer_seek(&o, lo);
    for (int64_t i = lo; i < hi; i++, odometer_next(&o)) e->y[i] = e->x[o.offset];
}

static int fast_expand(const CpuOpCall *c, Err *err) {
    (void)err;
    Expand e = {odometer_of(c->out[0], c->in[0]), tensor_f32(c->in[0]), tensor_f32(c->out[0])};
    parallel_for_capped(c->out[0]->numel, 4, c->threads, expand_range, &e);
    return 0;
}

static int fast_sum_to(const CpuOpCall *c, Err *err) {
    (void)err;
    const Tensor *x = c->in[0];
    Tensor *y = c->out[0];
    Odometer o = odometer_of(x, y);
    double *acc = xcalloc((size_t)(y->numel ? y->numel : 1), sizeof(double));
    const float *xs = tensor_f32(x);
    for (int64_t i = 0; i < x->numel; i++, odometer_next(&o)) acc[o.offset] += xs[i];
    float *ys = tensor_f32(y);
    for (int64_t i = 0; i < y->numel; i++) ys[i] = (float)acc[i];
    free(acc);
    return 0;
}

/* ---- transpose of the last two axes, in cache-sized tiles ---- */
enum { TILE = 32 };

typedef struct Transpose {
    const float *x;
    float *y;
    int64_t rows, cols, bands; /* bands: row tiles per matrix */
} Transpose;

/* Bands [lo, hi): each TILE rows of one matrix, written as TILE-wide column strips of y. */
static void transpose_bands(void *ctx, int64_t lo, int64_t hi) {
    const Transpose *t = ctx;
    for (int64_t b = lo; b < hi; b++) {
        int64_t size = t->rows * t->cols, i0 = b % t->bands * TILE;
        const float *x = t->x + b / t->bands * size;
        float *y = t->y + b / t->bands * size;
        for (int64_t j0 = 0; j0 < t->cols; j0 += TILE)
            for (int64_t i = i0; i < i0 + TILE && i < t->rows; i++)
                for (int64_t j = j0; j < j0 + TILE && j < t->cols; j++) y[j * t->rows + i] = x[i * t->cols + j];
    }
}

static int fast_transpose(const CpuOpCall *c, Err *err) {
    (void)err;
    const Tensor *x = c->in[0];
    int64_t rows = x->shape[x->rank - 2], cols = x->shape[x->rank - 1], size = rows * cols;
    int64_t mats = size > 0 ? x->numel / size : 0;
    Transpose t = {tensor_f32(x), tensor_f32(c->out[0]), rows, cols, (rows + TILE - 1) / TILE};
    parallel_for_capped(mats * t.bands, TILE * cols, c->threads, transpose_bands, &t);
    return 0;
}

/* f32 <-> bf16: the values as they are; a bf16 result is rounded by the caller. */
static int fast_cast(const CpuOpCall *c, Err *err) {
    (void)err;
    memcpy(c->out[0]->data, c->in[0]->data, sizeof(float) * (size_t)c->in[0]->numel);
    return 0;
}

/* ---- rope: the interpreter's formulas, with cos and sin computed once per (position, pair) ---- */
typedef struct Rope {
    const float *x;
    float *y;
    const double *cs; /* [T, d/2, 2]: scale cos, scale sin */
    int64_t d, seq, per_pos;
} Rope;

static void rope_vectors(void *ctx, int64_t lo, int64_t hi) {
    const Rope *r = ctx;
    for (int64_t v = lo; v < hi; v++) {
        const double *cs = r->cs + (v / r->per_pos) % r->seq * r->d;
        const float *x = r->x + v * r->d;
        float *y = r->y + v * r->d;
        for (int64_t j = 0; j < r->d / 2; j++) {
            double c = cs[2 * j], s = cs[2 * j + 1], x0 = x[2 * j], x1 = x[2 * j + 1];
            y[2 * j] = (float)(x0 * c - x1 * s);
            y[2 * j + 1] = (float)(x0 * s + x1 * c);
        }
    }
}

static int fast_rope(const CpuOpCall *c, Err *err) {
    (void)err;
    const Tensor *x = c->in[0];
    const float *inv_freq = tensor_f32(c->in[1]);
    double scale = node_float(c->node, "scale", 1.0);
    Rope r = {tensor_f32(x), tensor_f32(c->out[0]), NULL, x->shape[x->rank - 1], x->shape[1], 1};
    for (int d = 2; d < x->rank - 1; d++) r.per_pos *= x->shape[d];
    double *cs = xmalloc(sizeof(double) * (size_t)(r.seq * r.d + 1));
    for (int64_t pos = 0; pos < r.seq; pos++)
        for (int64_t j = 0; j < r.d / 2; j++) {
            double angle = (double)pos * inv_freq[j];
            cs[pos * r.d + 2 * j] = cos(angle) * scale, cs[pos * r.d + 2 * j + 1] = sin(angle) * scale;
        }
    r.cs = cs;
    parallel_for_capped(r.d ? x->numel / r.d : 0, r.d, c->threads, rope_vectors, &r);
    free(cs);
    return 0;
}

/* ---- the table ---- */
static const CpuOpFn fast_ops[OP_COUNT] = {
    [OP_ROPE] = fast_rope,
    [OP_SDPA] = fast_sdpa,
    [OP_SDPA_GRAD] = fast_sdpa_grad,
    [OP_GROUPED_LINEAR] = fast_grouped_linear,
    [OP_GROUPED_LINEAR_WGRAD] = fast_grouped_linear_wgrad,
    [OP_EXPAND] = fast_expand,
    [OP_SUM_TO] = fast_sum_to,
    [OP_TRANSPOSE] = fast_transpose,
    [OP_CAST] = fast_cast,
    [OP_FP8_MATMUL] = cpu_fp8_matmul,
};

/* Ops that also run on bf16 values (held as float on bf16's grid), the caller
 * rounding a bf16 result once (runtime/cpu_backend.c): the experts' GEMMs,
 * since a product of two bf16 values is exact in f32 and the f32 sum is a bf16
 * GEMM's fp32 accumulation; attention, whose GEMMs are such products and whose
 * softmax is computed from their f32 sums (P stays f32); and casts between f32
 * and bf16. */
static const char takes_bf16[OP_COUNT] = {[OP_GROUPED_LINEAR] = 1, [OP_GROUPED_LINEAR_WGRAD] = 1, [OP_CAST] = 1,
                                          [OP_SDPA] = 1, [OP_SDPA_GRAD] = 1, [OP_FP8_MATMUL] = 1};

/* Inputs that are not float values: the experts' row counts, fp8_matmul's E4M3
 * operands (bit masks over the inputs; their types are the op's shape rule's). */
static const unsigned char non_float_inputs[OP_COUNT] = {
    [OP_GROUPED_LINEAR] = 1u << 1, [OP_GROUPED_LINEAR_WGRAD] = 1u << 1, [OP_FP8_MATMUL] = 1u << 0 | 1u << 2};

static int is_non_float_input(const Node *n, int k) { return (non_float_inputs[n->op] >> k) & 1u; }

static int float_ok(const Node *n, DType t) { return t == DT_F32 || (t == DT_BF16 && takes_bf16[n->op]); }

/* f32 tensors, and bf16 ones for takes_bf16: other float dtypes are held as
 * float too, but elementwise results would need their dtype's rounding at every step. */
CpuOpFn cpu_op_for(const Graph *g, const Node *n) {
    if (!fast_ops[n->op]) return NULL;
    for (int k = 0; k < n->nin; k++)
        if (!float_ok(n, ir_type(g, n->in[k])->dtype) && !is_non_float_input(n, k)) return NULL;
    for (int k = 0; k < n->nout; k++)
        if (!float_ok(n, ir_type(g, n->out[k])->dtype)) return NULL;
    return fast_ops[n->op];
}
