/* FP8 (DeepSeek-V3's recipe, docs/ops.md "FP8"): quantize to E4M3 with one fp32
 * scale per tile, dequantize, and the blockwise-scaled FP8 GEMMs (forward/Dgrad
 * form and the Wgrad form that contracts over tokens). Float tensors hold `real`
 * (ops_internal.h); scales are f32 tensors, so they hold `real` too. */
#include <stdio.h>
#include <stdlib.h>

#include "../../base/fp8.h"
#include "ops_internal.h"

#define OP_ROWS_DECLS
#include "fp8_rows.inc"
#undef OP_ROWS_DECLS

enum { FP8_BLOCK = 128 };

const AttrSpec fp8_quantize_attrs[] = {{"tile", ATTR_STR, 1}, {"pow2", ATTR_INT, 0}, {0}};
const AttrSpec fp8_dequantize_attrs[] = {{"tile", ATTR_STR, 1}, {"to", ATTR_DTYPE, 0}, {0}};
const AttrSpec fp8_matmul_attrs[] = {{"out", ATTR_DTYPE, 0}, {"wgrad", ATTR_INT, 0}, {0}};

/* Tile height (rows, the second-to-last axis) and width (the last axis). */
/* batched: the tiles cover the last two axes and every leading axis is a batch
 * (stacked expert weights); otherwise every leading axis is flattened into the
 * token axis, so "128x1" tiles 128 consecutive tokens of B*T, across sequences. */
typedef struct TileShape {
    const char *name;
    int64_t rows, cols;
    int batched;
} TileShape;

static const TileShape tile_shapes[] = {
    {"1x128", 1, FP8_BLOCK, 0},           /* activations: a token's 128 channels along K */
    {"128x1", FP8_BLOCK, 1, 0},           /* Wgrad operands: 128 tokens of one channel */
    {"128x128", FP8_BLOCK, FP8_BLOCK, 1}, /* weights */
};

static int tile_of(const Node *n, TileShape *out, Err *err) {
    const char *name = node_str(n, "tile", "");
    for (size_t i = 0; i < sizeof tile_shapes / sizeof tile_shapes[0]; i++)
        if (strcmp(tile_shapes[i].name, name) == 0) {
            *out = tile_shapes[i];
            return 0;
        }
    return err_set(err, "%s: tile \"%s\" is not one of \"1x128\", \"128x1\", \"128x128\"", node_op_name(n), name);
}

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Replaces a tiled axis by its tile count, ceil(size/tile): exact for symbolic
 * sizes too (Dim's ceiling form, e.g. ceil(B*T/128)). */
static int tile_axis(const Node *n, int axis, int64_t tile, Dim *dims, Err *err) {
    if (dim_ceil_div(dims[axis], tile, &dims[axis], err)) return err_wrap(err, "%s: axis %d: ", node_op_name(n), axis);
    return 0;
}

/* The f32 scales' type for x quantized in tiles: x's shape, each tiled axis
 * replaced by its tile count (1x128: [...,ceil(K/128)]; 128x128:
 * [...,ceil(N/128),ceil(K/128)]; 128x1, tokens M = the product of the leading
 * axes: [ceil(M/128),K]). */
static int scales_type(const Node *n, const Type *x, const TileShape *tile, Type *out, Err *err) {
    int need = tile->rows > 1 ? 2 : 1;
    if (x->rank < need)
        return err_set(err, "%s: %s tiles need rank >= %d, got %s", node_op_name(n), tile->name, need, TY(x));
    *out = *x;
    out->dtype = DT_F32;
    if (tile->rows > 1 && !tile->batched) {
        out->rank = 2;
        out->dims[1] = x->dims[x->rank - 1];
        if (dims_product(x->dims, 0, x->rank - 1, &out->dims[0], err)) return -1;
    }
    if (tile_axis(n, out->rank - 1, tile->cols, out->dims, err)) return -1;
    return tile->rows > 1 ? tile_axis(n, out->rank - 2, tile->rows, out->dims, err) : 0;
}

static int require_e4m3(const Node *n, const char *what, const Type *t, Err *err) {
    if (t->dtype == DT_E4M3) return 0;
    return err_set(err, "%s: %s %s must be e4m3", node_op_name(n), what, TY(t));
}

/* Segmented 128x1 tiles (quantize's optional counts input): the rows split
 * into consecutive segments of counts[i] rows (counts read in row-major order;
 * the rows past their sum form one last segment, e.g. padding) and the tiles
 * restart at each segment, as a per-expert GEMM tiles them (per expert and
 * source rank under expert parallelism). With S counts there are at most
 * sum ceil(c/128) <= ceil((M + 127*(S+1))/128) tiles, a static bound; tiles
 * past the used ones are empty. */
static int segmented_scales_type(const Node *n, const Type *x, const Type *counts, Type *out, Err *err) {
    if (x->rank != 2 || counts->rank < 1 || (counts->dtype != DT_I32 && counts->dtype != DT_I64))
        return err_set(err, "%s: segmented 128x1 tiles need x[M,K] and i32/i64 counts, got %s and %s",
                       node_op_name(n), TY(x), TY(counts));
    Dim segments, pad, rows;
    if (dims_product(counts->dims, 0, counts->rank, &segments, err) ||
        dim_add(segments, dim_const(1), &segments, err) || dim_mul(segments, dim_const(FP8_BLOCK - 1), &pad, err) ||
        dim_add(x->dims[0], pad, &rows, err) || dim_ceil_div(rows, FP8_BLOCK, &rows, err))
        return err_wrap(err, "%s: ", node_op_name(n));
    *out = (Type){.dtype = DT_F32, .rank = 2, .dims = {rows, x->dims[1]}};
    return 0;
}

/* The scales' type for x in these tiles, segmented by counts when given. */
static int tile_scales_type(const Node *n, const Type *x, const Type *counts, const TileShape *tile, Type *out,
                            Err *err) {
    if (!counts) return scales_type(n, x, tile, out, err);
    if (tile->rows != FP8_BLOCK || tile->cols != 1)
        return err_set(err, "%s: a counts input segments 128x1 tiles only, not %s", node_op_name(n), tile->name);
    return segmented_scales_type(n, x, counts, out, err);
}

/* The scales s must be what quantizing q with this tile gives. */
static int check_scales(const Node *n, const char *what, const Type *q, const Type *s, const TileShape *tile,
                        Err *err) {
    Type want;
    if (scales_type(n, q, tile, &want, err)) return -1;
    if (type_equal(&want, s)) return 0;
    return err_set(err, "%s: %s %s are not the %s tile scales of %s (want %s)", node_op_name(n), what, TY(s),
                   tile->name, TY(q), TY(&want));
}

/* ---- tiled views ----
 * A tensor seen as [batch, rows, cols] with tiles of tile.rows x tile.cols over the
 * last two axes; a 1-row tile flattens every leading axis into rows. Scales are
 * [batch, ceil(rows/th), ceil(cols/tw)] row-major, which is the scales' shape. */
typedef struct TiledView {
    int64_t batch, rows, cols, tile_rows, tile_cols, row_tiles, col_tiles;
    const int64_t *row_bound; /* segmented tiles: row tile i is rows [row_bound[i], row_bound[i+1]) */
} TiledView;

static TiledView tiled_view(const Tensor *x, const TileShape *tile) {
    TiledView v = {.cols = x->shape[x->rank - 1], .tile_rows = tile->rows, .tile_cols = tile->cols};
    if (tile->batched) {
        v.rows = x->shape[x->rank - 2];
        v.batch = shape_product(x, 0, x->rank - 2);
    } else {
        v.rows = shape_product(x, 0, x->rank - 1);
        v.batch = 1;
    }
    v.row_tiles = ceil_div(v.rows, v.tile_rows);
    v.col_tiles = ceil_div(v.cols, v.tile_cols);
    return v;
}

/* Element index range of tile t (numbered as the scales are), clipped at ragged edges. */
typedef struct TileBox {
    int64_t base, r0, r1, c0, c1;
} TileBox;

static TileBox tile_box(const TiledView *v, int64_t t) {
    int64_t per_batch = v->row_tiles * v->col_tiles, in_batch = t % per_batch;
    int64_t rt = in_batch / v->col_tiles, ct = in_batch % v->col_tiles;
    TileBox b = {.base = t / per_batch * v->rows * v->cols, .r0 = rt * v->tile_rows, .c0 = ct * v->tile_cols};
    b.r1 = b.r0 + v->tile_rows < v->rows ? b.r0 + v->tile_rows : v->rows;
    if (v->row_bound) b.r0 = v->row_bound[rt], b.r1 = v->row_bound[rt + 1];
    b.c1 = b.c0 + v->tile_cols < v->cols ? b.c0 + v->tile_cols : v->cols;
    return b;
}

/* Row-tile bounds for segments of counts[i] rows and a last one of the rest:
 * 128-row tiles restarting at each segment; the unused tiles at the end are
 * empty (start = end = m). */
static int64_t *segment_row_bounds(const Tensor *counts, int64_t m, int64_t row_tiles, Err *err) {
    int64_t *bound = xmalloc(sizeof(int64_t) * (size_t)(row_tiles + 1)), at = 0, tile = 0;
    for (int64_t e = 0; e <= counts->numel; e++) {
        int64_t c = e < counts->numel ? index_at(counts, e) : m - at;
        if (c < 0 || c > m - at) {
            free(bound);
            err_set(err, "quantize: counts[%lld]=%lld overruns the %lld rows", (long long)e, (long long)c, (long long)m);
            return NULL;
        }
        for (int64_t r = at; r < at + c && tile < row_tiles; r += FP8_BLOCK) bound[tile++] = r;
        at += c;
    }
    while (tile <= row_tiles) bound[tile++] = m;
    return bound;
}

/* The view of x's tiles, segmented when counts is given (*bound then owns the bounds). */
static int segmented_view(const Tensor *x, const TileShape *tile, const Tensor *counts, int64_t row_tiles,
                          TiledView *v, int64_t **bound, Err *err) {
    *v = tiled_view(x, tile);
    *bound = NULL;
    if (!counts) return 0;
    if (!(*bound = segment_row_bounds(counts, v->rows, row_tiles, err))) return -1;
    v->row_tiles = row_tiles;
    v->row_bound = *bound;
    return 0;
}

/* ---- quantize ---- */
int quantize_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    TileShape tile = tile_shapes[0];
    if (require_real(n, "x", &in[0], err) || tile_of(n, &tile, err)) return -1;
    int64_t pow2 = node_int(n, "pow2", 0);
    if (pow2 != 0 && pow2 != 1) return err_set(err, "quantize: pow2=%lld must be 0 or 1", (long long)pow2);
    if (tile_scales_type(n, &in[0], nin > 1 ? &in[1] : NULL, &tile, &out[1], err)) return -1;
    out[0] = in[0];
    out[0].dtype = DT_E4M3;
    return 0;
}

/* The golden data clamps amax to >= 1e-12, so an all-zero tile gets a tiny
 * scale and quantizes to zeros; no division by zero. */
static const float AMAX_FLOOR = 1e-12f;

/* amax/448 in fp32, or with pow2 the next power of two at or above it, so that
 * x/scale still fits in E4M3 and the scale multiplies exactly. */
static float tile_scale(float amax, int pow2) {
    float s = (amax > AMAX_FLOOR ? amax : AMAX_FLOOR) / fp8_max(FP8_E4M3);
    if (!pow2) return s;
    int e;
    float frac = frexpf(s, &e); /* s = frac * 2^e, frac in [0.5, 1) */
    return ldexpf(1.0f, frac == 0.5f ? e - 1 : e);
}

/* Quantization goes by bands: a band is one row of tiles (batch, row tile), all its
 * columns at once, so that every loop runs along a contiguous row and vectorizes,
 * whatever the tile's shape (a 128x1 tile's own elements are a column). A tile's amax
 * is a max, so gathering it column by column gives the same value. */

/* col_amax[c] = max(col_amax[c], |x[c]|). For non-negative IEEE values the integer order
 * of the bits is the numeric order, so the max is taken on the bits (which vectorizes,
 * where a float max under NaN's rules does not); infinities and NaNs come out above
 * every finite value, which is how the band finds them. */
static void max_abs_into(real *col_amax, const real *x, int64_t n) {
    if (sizeof(real) != sizeof(uint32_t)) { /* V3C_REAL=double */
        for (int64_t c = 0; c < n; c++) {
            real a = (real)fabs(x[c]);
            if (isnan(a) || a > col_amax[c]) col_amax[c] = a; /* a NaN, once there, stays */
        }
        return;
    }
    for (int64_t c = 0; c < n; c++) {
        uint32_t bits, top;
        memcpy(&bits, &x[c], sizeof bits);
        memcpy(&top, &col_amax[c], sizeof top);
        bits &= 0x7FFFFFFFu;
        top = bits > top ? bits : top;
        memcpy(&col_amax[c], &top, sizeof top);
    }
}

static void encode_row(const real *x, const real *col_scale, int64_t n, uint8_t *q) {
    for (int64_t c = 0; c < n; c++)
        q[c] = fp8_e4m3_from_finite((float)(x[c] / col_scale[c])); /* true division, as the recipe says */
}

typedef struct Band {
    const TiledView *v;
    const real *x; /* the band's first row */
    uint8_t *q;
    real *scales; /* its col_tiles scales */
    int64_t rows;
    real *col_amax, *col_scale; /* scratch, v->cols each */
} Band;

/* Each tile's scale from its columns' amax, spread back over the columns; 0 when a value is not finite. */
static int band_scales(const Band *b, int pow2) {
    const TiledView *v = b->v;
    for (int64_t t = 0; t < v->col_tiles; t++) {
        int64_t c0 = t * v->tile_cols, c1 = c0 + v->tile_cols < v->cols ? c0 + v->tile_cols : v->cols;
        real amax = 0;
        for (int64_t c = c0; c < c1; c++) {
            if (!isfinite(b->col_amax[c])) return 0;
            if (b->col_amax[c] > amax) amax = b->col_amax[c];
        }
        b->scales[t] = tile_scale((float)amax, pow2);
        for (int64_t c = c0; c < c1; c++) b->col_scale[c] = b->scales[t];
    }
    return 1;
}

/* 0 when the band holds a value that is not finite (its q is then not written). */
static int quantize_band(const Band *b, int pow2) {
    int64_t cols = b->v->cols;
    memset(b->col_amax, 0, sizeof(real) * (size_t)cols);
    for (int64_t r = 0; r < b->rows; r++) max_abs_into(b->col_amax, b->x + r * cols, cols);
    if (!band_scales(b, pow2)) return 0;
    for (int64_t r = 0; r < b->rows; r++) encode_row(b->x + r * cols, b->col_scale, cols, b->q + r * cols);
    return 1;
}

/* Says where the first value that is not finite is. */
static int nonfinite_error(const Tensor *x, Err *err) {
    const real *v = tensor_real(x);
    for (int64_t i = 0; i < x->numel; i++)
        if (!isfinite(v[i]))
            return err_set(err, "quantize: element %lld is %s; FP8 quantization needs finite values", (long long)i,
                           isnan(v[i]) ? "NaN" : "infinite");
    return err_internal(err, "quantize: a band saw a value that is not finite, but none is");
}

typedef struct QuantizeJob {
    TiledView view;
    const real *x;
    uint8_t *q;
    real *scales;
    int pow2;
    int nonfinite; /* set by any band that found one */
} QuantizeJob;

static void quantize_bands(void *ctx, int64_t lo, int64_t hi) {
    QuantizeJob *j = ctx;
    const TiledView *v = &j->view;
    Band b = {.v = v, .col_amax = xmalloc(sizeof(real) * (size_t)(v->cols + 1))};
    b.col_scale = xmalloc(sizeof(real) * (size_t)(v->cols + 1));
    for (int64_t band = lo; band < hi; band++) {
        TileBox box = tile_box(v, band * v->col_tiles); /* the band's first tile: its rows */
        int64_t at = box.base + box.r0 * v->cols;
        b.x = j->x + at, b.q = j->q + at, b.scales = j->scales + band * v->col_tiles, b.rows = box.r1 - box.r0;
        if (!quantize_band(&b, j->pow2)) __atomic_store_n(&j->nonfinite, 1, __ATOMIC_RELAXED);
    }
    free(b.col_amax);
    free(b.col_scale);
}

int quantize_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    TileShape tile = tile_shapes[0];
    int64_t *bound = NULL;
    QuantizeJob j = {{0}, tensor_real(in[0]), out[0]->data, tensor_real(out[1]), (int)node_int(n, "pow2", 0), 0};
    if (tile_of(n, &tile, err) ||
        segmented_view(in[0], &tile, nin > 1 ? in[1] : NULL, out[1]->shape[0], &j.view, &bound, err))
        return -1;
    int64_t bands = j.view.col_tiles ? out[1]->numel / j.view.col_tiles : 0;
    parallel_for(bands, j.view.tile_rows * j.view.cols, quantize_bands, &j);
    free(bound);
    return j.nonfinite ? nonfinite_error(in[0], err) : 0;
}

/* ---- dequantize ---- */
int dequantize_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    TileShape tile = tile_shapes[0];
    DType to = DT_F32;
    const Attr *a = node_attr(n, "to");
    if (a) to = a->dtype;
    if (require_e4m3(n, "q", &in[0], err) || tile_of(n, &tile, err)) return -1;
    if (to != DT_F32 && to != DT_BF16) return err_set(err, "dequantize: to=%s must be f32 or bf16", dtype_name(to));
    Type want;
    if (tile_scales_type(n, &in[0], nin > 2 ? &in[2] : NULL, &tile, &want, err)) return -1;
    if (!type_equal(&want, &in[1]))
        return err_set(err, "dequantize: scales %s are not the %s%s tile scales of %s (want %s)", TY(&in[1]),
                       nin > 2 ? "segmented " : "", tile.name, TY(&in[0]), TY(&want));
    out[0] = in[0];
    out[0].dtype = to;
    return 0;
}

int dequantize_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    TileShape tile = tile_shapes[0];
    TiledView v;
    int64_t *bound = NULL;
    if (tile_of(n, &tile, err) ||
        segmented_view(in[0], &tile, nin > 2 ? in[2] : NULL, in[1]->shape[0], &v, &bound, err))
        return -1;
    const uint8_t *q = in[0]->data;
    const real *scales = tensor_real(in[1]);
    real *y = tensor_real(out[0]);
    float decode[256];
    for (int i = 0; i < 256; i++) decode[i] = fp8_to_float(FP8_E4M3, (uint8_t)i);
    for (int64_t t = 0; t < in[1]->numel; t++) {
        TileBox b = tile_box(&v, t);
        for (int64_t r = b.r0; r < b.r1; r++)
            for (int64_t c = b.c0; c < b.c1; c++) {
                int64_t i = b.base + r * v.cols + c;
                y[i] = decode[q[i]] * scales[t];
            }
    }
    free(bound);
    tensor_round(out[0]);
    return 0;
}

/* ---- fp8_matmul ----
 * wgrad=0 (forward, Dgrad): y[...,N] = qa[...,K] (1x128) @ qb[N,K]^T (128x128).
 * wgrad=1 (Wgrad): y[N,K] = qa[...,N]^T @ qb[...,K] summed over the M tokens of
 * the leading axes, both operands in 128x1 tiles: linear_wgrad on FP8 operands,
 * the GEMM's inner dimension being the tokens. */
static const TileShape *act_tile(void) { return &tile_shapes[0]; }
static const TileShape *token_tile(void) { return &tile_shapes[1]; }
static const TileShape *weight_tile(void) { return &tile_shapes[2]; }

static int wgrad_form(const Node *n, int *out, Err *err) {
    int64_t w = node_int(n, "wgrad", 0);
    if (w != 0 && w != 1) return err_set(err, "fp8_matmul: wgrad=%lld must be 0 or 1", (long long)w);
    *out = (int)w;
    return 0;
}

static int infer_nt(const Node *n, const Type *in, Type *out, Err *err) {
    const Type *qa = &in[0], *qb = &in[2];
    if (qa->rank < 1 || qb->rank != 2)
        return err_set(err, "fp8_matmul: qa %s must have rank >= 1 and qb %s rank 2", TY(qa), TY(qb));
    if (!dim_equal(qa->dims[qa->rank - 1], qb->dims[1]))
        return err_set(err, "fp8_matmul: qa %s and qb %s differ in K", TY(qa), TY(qb));
    if (check_scales(n, "sa", qa, &in[1], act_tile(), err) || check_scales(n, "sb", qb, &in[3], weight_tile(), err))
        return -1;
    *out = *qa;
    out->dims[qa->rank - 1] = qb->dims[0];
    return 0;
}

static int infer_wgrad(const Node *n, const Type *in, Type *out, Err *err) {
    const Type *qa = &in[0], *qb = &in[2];
    if (qa->rank < 2 || qa->rank != qb->rank || !same_leading(qa, qb))
        return err_set(err, "fp8_matmul: wgrad=1 operands qa %s and qb %s must share their token axes (rank >= 2)",
                       TY(qa), TY(qb));
    if (check_scales(n, "sa", qa, &in[1], token_tile(), err) || check_scales(n, "sb", qb, &in[3], token_tile(), err))
        return -1;
    *out = *qa;
    out->rank = 2;
    out->dims[0] = qa->dims[qa->rank - 1];
    out->dims[1] = qb->dims[qb->rank - 1];
    return 0;
}

int fp8_matmul_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    const Attr *a = node_attr(n, "out");
    DType to = a ? a->dtype : DT_F32;
    int wgrad = 0; /* set by wgrad_form before use; -O3 cannot see through its error return */
    if (to != DT_F32 && to != DT_BF16) return err_set(err, "fp8_matmul: out=%s must be f32 or bf16", dtype_name(to));
    if (require_e4m3(n, "qa", &in[0], err) || require_e4m3(n, "qb", &in[2], err) || wgrad_form(n, &wgrad, err))
        return -1;
    if ((wgrad ? infer_wgrad : infer_nt)(n, in, out, err)) return -1;
    out->dtype = to;
    return 0;
}

/* Operands are decoded to double once: an E4M3 product is exact in double (8
 * significant bits) and a sum of 128 of them spans < 53 bits (E4M3 magnitudes lie
 * in [2^-9, 448]), so every 128-block partial sum is exact whatever the order and
 * the loops below may run as vectorisable axpys. */
typedef struct Fp8MatmulJob {
    const uint8_t *qa;
    const double *b; /* nt: qb decoded and transposed, [K][N]; wgrad: qb decoded, [M][K] */
    const real *sa, *sb;
    real *y;
    int64_t m, n, k, blocks; /* blocks of 128 along the contracted axis */
    double decode[256];
} Fp8MatmulJob;

static double *decode_all(const Fp8MatmulJob *j, const Tensor *q, int transpose) {
    int64_t rows = q->shape[0], cols = q->numel / (rows ? rows : 1);
    const uint8_t *bits = q->data;
    double *d = xmalloc(sizeof(double) * (size_t)(q->numel ? q->numel : 1));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) d[transpose ? c * rows + r : r * cols + c] = j->decode[bits[r * cols + c]];
    return d;
}

/* part[0..n) = the exact partial sums of row r over K in [k0, k1). */
static void nt_block(const Fp8MatmulJob *j, int64_t r, int64_t k0, int64_t k1, double *part) {
    memset(part, 0, sizeof(double) * (size_t)j->n);
    for (int64_t i = k0; i < k1; i++) {
        double a = j->decode[j->qa[r * j->k + i]];
        if (a == 0) continue;
        const double *b = j->b + i * j->n;
        for (int64_t c = 0; c < j->n; c++) part[c] += a * b[c];
    }
}

/* Every 128 of K the exact partial sum is scaled by both scales and added into
 * the accumulator: one rounding to `real` (fp32) per promotion, as on the GPU's CUDA cores. */
static void nt_rows(void *ctx, int64_t lo, int64_t hi) {
    const Fp8MatmulJob *j = ctx;
    double *part = xmalloc(sizeof(double) * (size_t)(j->n ? j->n : 1));
    for (int64_t r = lo; r < hi; r++) {
        real *y = j->y + r * j->n;
        for (int64_t c = 0; c < j->n; c++) y[c] = 0;
        for (int64_t kb = 0; kb < j->blocks; kb++) {
            int64_t k0 = kb * FP8_BLOCK, k1 = k0 + FP8_BLOCK < j->k ? k0 + FP8_BLOCK : j->k;
            nt_block(j, r, k0, k1, part);
            double sa = j->sa[r * j->blocks + kb];
            for (int64_t c = 0; c < j->n; c++)
                y[c] = (real)((double)y[c] + part[c] * sa * j->sb[(c / FP8_BLOCK) * j->blocks + kb]);
        }
    }
    free(part);
}

/* Exact partial sums over the tokens of block mb for row r of the output and every column. */
static void wgrad_block(const Fp8MatmulJob *j, int64_t r, int64_t mb, double *part) {
    int64_t m0 = mb * FP8_BLOCK, m1 = m0 + FP8_BLOCK < j->m ? m0 + FP8_BLOCK : j->m;
    memset(part, 0, sizeof(double) * (size_t)j->k);
    for (int64_t m = m0; m < m1; m++) {
        double a = j->decode[j->qa[m * j->n + r]];
        if (a == 0) continue;
        const double *b = j->b + m * j->k;
        for (int64_t c = 0; c < j->k; c++) part[c] += a * b[c];
    }
}

/* y[r,:] with a promotion every 128 tokens; the scales are per (token block, channel). */
static void wgrad_rows(void *ctx, int64_t lo, int64_t hi) {
    const Fp8MatmulJob *j = ctx;
    double *part = xmalloc(sizeof(double) * (size_t)(j->k ? j->k : 1));
    for (int64_t r = lo; r < hi; r++) {
        real *y = j->y + r * j->k;
        for (int64_t c = 0; c < j->k; c++) y[c] = 0;
        for (int64_t mb = 0; mb < j->blocks; mb++) {
            wgrad_block(j, r, mb, part);
            for (int64_t c = 0; c < j->k; c++)
                y[c] = (real)((double)y[c] + part[c] * j->sa[mb * j->n + r] * j->sb[mb * j->k + c]);
        }
    }
    free(part);
}

/* quantize never emits NaN, but fed operands might: refuse rather than return NaN sums. */
static int require_no_nan(const char *what, const Tensor *q, Err *err) {
    const uint8_t *bits = q->data;
    for (int64_t i = 0; i < q->numel; i++)
        if (fp8_is_nan(FP8_E4M3, bits[i]))
            return err_set(err, "fp8_matmul: %s element %lld is an E4M3 NaN", what, (long long)i);
    return 0;
}

int fp8_matmul_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin;
    const Tensor *a = in[0], *b = in[2];
    Fp8MatmulJob j = {a->data, NULL, tensor_real(in[1]), tensor_real(in[3]), tensor_real(out[0]), 0, 0, 0, 0, {0}};
    for (int i = 0; i < 256; i++) j.decode[i] = fp8_to_float(FP8_E4M3, (uint8_t)i);
    if (require_no_nan("qa", a, err) || require_no_nan("qb", b, err)) return -1;
    int wgrad = node_int(n, "wgrad", 0) != 0;
    double *decoded = decode_all(&j, b, !wgrad);
    j.b = decoded;
    j.m = shape_product(a, 0, a->rank - 1);
    if (wgrad) {
        j.n = a->shape[a->rank - 1], j.k = b->shape[b->rank - 1], j.blocks = ceil_div(j.m, FP8_BLOCK);
        parallel_for(j.n, j.m * j.k, wgrad_rows, &j);
    } else {
        j.n = b->shape[0], j.k = b->shape[1], j.blocks = ceil_div(j.k, FP8_BLOCK);
        parallel_for(j.m, j.n * j.k, nt_rows, &j);
    }
    free(decoded);
    tensor_round(out[0]);
    return 0;
}
