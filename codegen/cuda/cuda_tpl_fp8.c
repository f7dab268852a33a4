/* Templates for FP8 quantize / dequantize (DeepSeek-V3's tiles: 1x128, 128x1,
 * 128x128). A thread per tile: amax, the fp32 scale, then E4M3 with round to
 * nearest even and saturation, exactly as base/fp8.c and ir/ops/fp8.c. */
#include <stdio.h>
#include <string.h>

#include "cuda_tpl.h"

enum { FP8_BLOCK = 128 };

typedef struct Tile {
    const char *name;
    int64_t rows, cols;
    int batched; /* leading axes are a batch (weights); else they flatten into rows */
} Tile;

static const Tile tiles[] = {{"1x128", 1, FP8_BLOCK, 0}, {"128x1", FP8_BLOCK, 1, 0}, {"128x128", FP8_BLOCK, FP8_BLOCK, 1}};

static const char fp8_helpers[] =
    "static __device__ unsigned char v3c_e4m3(float x) {\n"
    "    const unsigned char sign = (__float_as_uint(x) >> 31) ? 0x80 : 0;\n"
    "    if (isnan(x) || isinf(x)) return sign | 0x7f;\n"
    "    const double a = fabs((double)x);\n"
    "    if (a >= 448.0) return sign | 0x7e;\n"
    "    if (a >= 0.015625) {\n"
    "        unsigned u = __float_as_uint((float)a);\n"
    "        u += (1u << 19) - 1 + ((u >> 20) & 1u);\n"
    "        const int e = (int)(u >> 23) - 127;\n"
    "        return sign | (unsigned char)(((e + 7) << 3) | ((u >> 20) & 7u));\n"
    "    }\n"
    "    const long long q = (long long)rint(a * 512.0);\n"
    "    return sign | (unsigned char)(q < 8 ? q : (1 << 3) | (q - 8));\n"
    "}\n"
    "static __device__ float v3c_e4m3_to_float(unsigned char b) {\n"
    "    const float sign = (b & 0x80) ? -1.0f : 1.0f;\n"
    "    if ((b & 0x7f) == 0x7f) return (float)v3c_nan();\n"
    "    const int ef = (b & 0x7f) >> 3, m = b & 7;\n"
    "    if (ef == 0) return sign * (float)ldexp((double)m, -9);\n"
    "    return sign * (float)ldexp((double)(m | 8), ef - 10);\n"
    "}\n"
    "/* Tile t's element box, clipped at ragged edges (tiles numbered as the scales). */\n"
    "#define TILE_BOX(t)                                                                       \\\n"
    "    const long long per_batch = ROW_TILES * COL_TILES, in_batch = (t) % per_batch;        \\\n"
    "    const long long base = (t) / per_batch * ROWS * COLS;                                 \\\n"
    "    long long r0 = in_batch / COL_TILES * TH, r1 = r0 + TH < ROWS ? r0 + TH : ROWS;       \\\n"
    "    const long long c0 = in_batch % COL_TILES * TW;                                       \\\n"
    "    const long long c1 = c0 + TW < COLS ? c0 + TW : COLS;\n";

/* Segmented 128x1 tiles (counts given): row tiles restart at each segment of
 * counts[i] rows (counts row-major; the rows past their sum are one last
 * segment); tiles past the used ones are empty. Bad counts: status 3. */
static const char segment_helper[] =
    "static __device__ int v3c_segment(const CT *counts, long long rt, long long *r0, long long *r1) {\n"
    "    long long at = 0, tile = 0;\n"
    "    *r0 = *r1 = ROWS;\n"
    "    for (long long e = 0; e <= EXPERTS; e++) {\n"
    "        const long long c = e < EXPERTS ? (long long)counts[e] : ROWS - at;\n"
    "        if (c < 0 || c > ROWS - at) return 1;\n"
    "        for (long long r = at; r < at + c; r += TH, tile++)\n"
    "            if (tile == rt) { *r0 = r; *r1 = r + TH < at + c ? r + TH : at + c; }\n"
    "        at += c;\n"
    "    }\n"
    "    return 0;\n"
    "}\n"
    "#define SEGMENT(t) if (v3c_segment(counts, (t) % (ROW_TILES * COL_TILES) / COL_TILES, &r0, &r1)) { status[0] = 3; continue; }\n";
static const char no_segment[] = "#define SEGMENT(t)\n";

static const char quantize_body[] =
    "    for (long long t = V3C_THREAD_ID; t < TILES; t += V3C_THREADS) {\n"
    "        TILE_BOX(t)\n"
    "        SEGMENT(t)\n"
    "        float amax = 0.0f;\n"
    "        int bad = 0;\n"
    "        for (long long r = r0; r < r1; r++)\n"
    "            for (long long c = c0; c < c1; c++) {\n"
    "                const float v = x[base + r * COLS + c];\n"
    "                bad |= isnan(v) || isinf(v);\n"
    "                amax = (float)fmax((double)amax, fabs((double)v));\n"
    "            }\n"
    "        if (bad) { status[0] = 2; continue; }\n"
    "        float s = (amax > 1e-12f ? amax : 1e-12f) / 448.0f;\n"
    "        if (POW2) { int e; const double frac = frexp((double)s, &e); s = (float)ldexp(1.0, frac == 0.5 ? e - 1 : e); }\n"
    "        scales[t] = s;\n"
    "        for (long long r = r0; r < r1; r++)\n"
    "            for (long long c = c0; c < c1; c++) q[base + r * COLS + c] = v3c_e4m3(x[base + r * COLS + c] / s);\n"
    "    }\n}\n";

static const char dequantize_body[] =
    "    (void)status;\n"
    "    for (long long t = V3C_THREAD_ID; t < TILES; t += V3C_THREADS) {\n"
    "        TILE_BOX(t)\n"
    "        SEGMENT(t)\n"
    "        for (long long r = r0; r < r1; r++)\n"
    "            for (long long c = c0; c < c1; c++)\n"
    "                y[base + r * COLS + c] = STORE(v3c_e4m3_to_float(q[base + r * COLS + c]) * scales[t]);\n"
    "    }\n}\n";

/* Defines the tiling of x (ROWS, COLS, TH, TW, ROW_TILES, COL_TILES, TILES) and
 * the helpers; with counts (segmented 128x1), the row tiles are the scales' rows. */
static int tile_view(const Tpl *c, ValueId x, ValueId scales, ValueId counts, KernelText *kt, int64_t *count) {
    const char *name = node_str(c->n, "tile", "");
    const Tile *tile = NULL;
    for (size_t i = 0; i < sizeof tiles / sizeof *tiles; i++)
        if (strcmp(tiles[i].name, name) == 0) tile = &tiles[i];
    if (!tile) return err_set(c->err, "%s: tile \"%s\" is not one of 1x128, 128x1, 128x128", op_info(c->n->op)->name, name);
    int64_t s[IR_MAX_RANK], sc[IR_MAX_RANK];
    int rank = tpl_shape(c, x, s);
    if (rank < (tile->rows > 1 ? 2 : 1)) return rank < 0 ? -1 : err_set(c->err, "%s tiles need a higher rank", tile->name);
    if (tpl_shape(c, scales, sc) < 0) return -1;
    int64_t cols = s[rank - 1], rows = tile->batched ? s[rank - 2] : shape_prod(s, 0, rank - 1);
    int64_t batch = tile->batched ? shape_prod(s, 0, rank - 2) : 1;
    int64_t row_tiles = counts >= 0 ? sc[0] : (rows + tile->rows - 1) / tile->rows;
    int64_t col_tiles = (cols + tile->cols - 1) / tile->cols;
    tpl_define(kt, "ROWS", rows);
    tpl_define(kt, "COLS", cols);
    tpl_define(kt, "TH", tile->rows);
    tpl_define(kt, "TW", tile->cols);
    tpl_define(kt, "ROW_TILES", row_tiles);
    tpl_define(kt, "COL_TILES", col_tiles);
    tpl_define(kt, "TILES", batch * row_tiles * col_tiles);
    *count = batch * row_tiles * col_tiles;
    buf_puts(&kt->body, fp8_helpers);
    if (counts < 0) {
        buf_puts(&kt->body, no_segment);
        return 0;
    }
    tpl_define(kt, "EXPERTS", tpl_numel(c, counts));
    tpl_typedef(kt, "CT", ir_type(c->g, counts)->dtype);
    buf_puts(&kt->body, segment_helper);
    return 0;
}

static int tpl_quantize(const Tpl *c) {
    const Node *n = c->n;
    ValueId counts = n->nin > 1 ? n->in[1] : -1;
    KernelText kt;
    int64_t count = 0;
    tpl_begin(&kt, "quantize");
    tpl_define(&kt, "POW2", node_int(n, "pow2", 0) != 0);
    if (tile_view(c, n->in[0], n->out[1], counts, &kt, &count)) {
        buf_free(&kt.body);
        return -1;
    }
    buf_puts(&kt.body, "extern \"C\" __global__ void KNAME(");
    ktext_param(&kt, "const float *", "x");
    ktext_param(&kt, "unsigned char *", "q");
    ktext_param(&kt, "float *", "scales");
    ktext_param(&kt, "int *", "status");
    CudaArg a[5] = {carg_value(n->in[0]), carg_value(n->out[0]), carg_value(n->out[1]), carg_status()};
    if (counts >= 0) {
        ktext_param(&kt, tpl_in_type(ir_type(c->g, counts)->dtype), "counts");
        a[4] = carg_value(counts);
    }
    tpl_body(&kt, quantize_body);
    return tpl_launch(c, &kt, a, counts >= 0 ? 5 : 4, count);
}

static int tpl_dequantize(const Tpl *c) {
    const Node *n = c->n;
    ValueId counts = n->nin > 2 ? n->in[2] : -1;
    KernelText kt;
    int64_t count = 0;
    tpl_begin(&kt, "dequantize");
    tpl_define_store(&kt, ir_type(c->g, n->out[0])->dtype);
    if (tile_view(c, n->in[0], n->in[1], counts, &kt, &count)) {
        buf_free(&kt.body);
        return -1;
    }
    buf_puts(&kt.body, "extern \"C\" __global__ void KNAME(");
    ktext_param(&kt, "const unsigned char *", "q");
    ktext_param(&kt, "const float *", "scales");
    ktext_param(&kt, "float *", "y");
    ktext_param(&kt, "int *", "status");
    CudaArg a[5] = {carg_value(n->in[0]), carg_value(n->in[1]), carg_value(n->out[0]), carg_status()};
    if (counts >= 0) {
        ktext_param(&kt, tpl_in_type(ir_type(c->g, counts)->dtype), "counts");
        a[4] = carg_value(counts);
    }
    tpl_body(&kt, dequantize_body);
    return tpl_launch(c, &kt, a, counts >= 0 ? 5 : 4, count);
}

/* One operand of fp8_matmul wgrad=1, q [M tokens, R] with 128x1 scales s [BLOCKS, R], as the
 * TN GEMM wants it: qt [R, MP] (the tokens innermost, zero bytes past M: a zero E4M3 adds
 * nothing to a block's exact partial sum, and the last block keeps its own scale) and
 * st [BLOCKS, LD], the same scales as the 1x128 scales of qt (zeros past R). */
static const char wgrad_operand_body[] =
    "    for (long long i = V3C_THREAD_ID; i < R * MP; i += V3C_THREADS) {\n"
    "        const long long r = i / MP, m = i % MP;\n"
    "        qt[i] = m < M ? q[m * R + r] : (unsigned char)0;\n"
    "    }\n"
    "    for (long long i = V3C_THREAD_ID; i < BLOCKS * LD; i += V3C_THREADS) {\n"
    "        const long long r = i % LD;\n"
    "        st[i] = r < R ? s[i / LD * R + r] : 0.0f;\n"
    "    }\n}\n";

static int wgrad_operand(CudaEmit *em, ValueId q, ValueId s, int64_t m, int64_t rows, int slot_q, int slot_s) {
    int64_t mp = fp8_wgrad_tokens(m), blocks = mp / FP8_BLOCK, ld = fp8_scale_ld(rows);
    KernelText kt;
    tpl_begin(&kt, "fp8_wgrad_operand");
    tpl_define(&kt, "M", m);
    tpl_define(&kt, "MP", mp);
    tpl_define(&kt, "R", rows);
    tpl_define(&kt, "BLOCKS", blocks);
    tpl_define(&kt, "LD", ld);
    buf_puts(&kt.body, "extern \"C\" __global__ void KNAME(");
    ktext_param(&kt, "const unsigned char *", "q");
    ktext_param(&kt, "const float *", "s");
    ktext_param(&kt, "unsigned char *", "qt");
    ktext_param(&kt, "float *", "st");
    tpl_body(&kt, wgrad_operand_body);
    CudaArg a[4] = {carg_value(q), carg_value(s), carg_scratch(slot_q, rows * mp),
                    carg_scratch(slot_s, blocks * ld * (int64_t)sizeof(float))};
    int64_t threads = rows * mp > blocks * ld ? rows * mp : blocks * ld;
    return cuda_emit_kernel(em, &kt, a, 4, threads, 0);
}

int cuda_fp8_wgrad_operands(CudaEmit *em, const Node *n, const CudaLibCall *call) {
    return wgrad_operand(em, n->in[0], n->in[1], call->m, call->n, FP8_WGRAD_QA_T, FP8_WGRAD_SA_T) ||
                   wgrad_operand(em, n->in[2], n->in[3], call->m, call->k, FP8_WGRAD_QB_T, FP8_WGRAD_SB_T)
               ? -1
               : 0;
}

/* A matrix of floats re-laid: dst[o * LD + i] = src[o * SRC_O + i * SRC_I] for i < N, zeros for
 * N <= i < LD (the padding: what cuBLASLt may read there is a defined zero, as PyTorch pads).
 * With SRC_I = 1 it pads rows; with SRC_O = 1 it also transposes. */
static const char fwd_scales_body[] =
    "    for (long long j = V3C_THREAD_ID; j < OUTER * LD; j += V3C_THREADS) {\n"
    "        const long long o = j / LD, i = j % LD;\n"
    "        dst[j] = i < N ? src[o * SRC_O + i * SRC_I] : 0.0f;\n"
    "    }\n}\n";

static int fwd_scales(CudaEmit *em, ValueId s, int64_t outer, int64_t n, int64_t src_o, int64_t src_i, int slot) {
    int64_t ld = fp8_scale_ld(n);
    KernelText kt;
    tpl_begin(&kt, "fp8_fwd_scales");
    tpl_define(&kt, "OUTER", outer);
    tpl_define(&kt, "N", n);
    tpl_define(&kt, "LD", ld);
    tpl_define(&kt, "SRC_O", src_o);
    tpl_define(&kt, "SRC_I", src_i);
    buf_puts(&kt.body, "extern \"C\" __global__ void KNAME(");
    ktext_param(&kt, "const float *", "src");
    ktext_param(&kt, "float *", "dst");
    tpl_body(&kt, fwd_scales_body);
    CudaArg a[2] = {carg_value(s), carg_scratch(slot, outer * ld * (int64_t)sizeof(float))};
    return cuda_emit_kernel(em, &kt, a, 2, outer * ld, 0);
}

/* sa [m, kb] -> block-major [kb][ld(m)] (the row axis innermost: a transpose); sb [nb, kb] -> [nb][ld(kb)]. */
int cuda_fp8_fwd_scales(CudaEmit *em, const Node *n, const CudaLibCall *call) {
    int64_t kblocks = (call->k + FP8_BLOCK - 1) / FP8_BLOCK, nblocks = (call->n + FP8_BLOCK - 1) / FP8_BLOCK;
    return fwd_scales(em, n->in[1], kblocks, call->m, 1, kblocks, FP8_FWD_SA) ||
                   fwd_scales(em, n->in[3], nblocks, kblocks, kblocks, 1, FP8_FWD_SB)
               ? -1
               : 0;
}

const TplFn cuda_tpl_fp8[OP_COUNT] = {[OP_QUANTIZE] = tpl_quantize, [OP_DEQUANTIZE] = tpl_dequantize};
