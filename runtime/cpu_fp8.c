/* The cpu backend's fp8_matmul: the interpreter's arithmetic (ir/ops/fp8.c),
 * with each 128-long block's partial sums from one fp64 BLAS call instead of its
 * loops. Those sums are exact in fp64 in any order: E4M3 values are multiples of
 * 2^-9 below 448, so a block's products and their sums are multiples of 2^-18
 * below 128 * 448^2 < 2^25, 43 bits. The scaled fp32 accumulation after each
 * block is the interpreter's expression, so the result is its bits. */
#include <stdlib.h>
#include <string.h>

#include "../base/fp8.h"
#include "../base/parallel.h"
#include "../codegen/cpu.h"
#include "cpu_ops.h"

enum { BLOCK = 128 };

typedef struct Fp8Gemm {
    const double *a, *b; /* decoded: nt a[M,K], b[N,K]; wgrad a[M,N], b[M,K] */
    const float *sa, *sb;
    float *y;
    int64_t m, n, k, blocks; /* blocks of the contracted axis (K, or M for wgrad) */
} Fp8Gemm;

/* q's values in fp64; *nan set when any is an E4M3 NaN. */
static double *decode(const Tensor *q, int *nan) {
    double table[256];
    for (int i = 0; i < 256; i++) table[i] = fp8_to_float(FP8_E4M3, (uint8_t)i);
    const uint8_t *bits = q->data;
    double *d = xmalloc(sizeof(double) * (size_t)(q->numel ? q->numel : 1));
    for (int64_t i = 0; i < q->numel; i++) {
        d[i] = table[bits[i]];
        if (d[i] != d[i]) *nan = 1;
    }
    return d;
}

static int64_t block_len(int64_t total, int64_t b) { return total - b * BLOCK < BLOCK ? total - b * BLOCK : BLOCK; }

/* Zeroes rows x cols of the output at y and returns scratch for a block's partial sums over them. */
static double *begin_rows(float *y, int64_t rows, int64_t cols) {
    memset(y, 0, sizeof(float) * (size_t)(rows * cols));
    return xmalloc(sizeof(double) * (size_t)(rows * cols));
}

/* Rows [lo, hi) of y[M,N] = qa qb^T: per K block, the partials p = a_blk b_blk^T, then y += p * sa * sb. */
static void nt_rows(void *ctx, int64_t lo, int64_t hi) {
    const Fp8Gemm *g = ctx;
    int64_t rows = hi - lo, n = g->n;
    float *y = g->y + lo * n;
    double *p = begin_rows(y, rows, n);
    for (int64_t kb = 0; kb < g->blocks; kb++) {
        gemm_f64_nt(g->a + lo * g->k + kb * BLOCK, g->k, g->b + kb * BLOCK, g->k, p, n, rows, n, block_len(g->k, kb));
        for (int64_t r = 0; r < rows; r++) {
            double sa = g->sa[(lo + r) * g->blocks + kb];
            for (int64_t c = 0; c < n; c++)
                y[r * n + c] = (float)((double)y[r * n + c] + p[r * n + c] * sa * g->sb[(c / BLOCK) * g->blocks + kb]);
        }
    }
    free(p);
}

/* Rows [lo, hi) of y[N,K] = qa^T qb: per block of tokens, p = a_blk^T b_blk, then y += p * sa * sb. */
static void wgrad_rows(void *ctx, int64_t lo, int64_t hi) {
    const Fp8Gemm *g = ctx;
    int64_t rows = hi - lo, k = g->k;
    float *y = g->y + lo * k;
    double *p = begin_rows(y, rows, k);
    for (int64_t mb = 0; mb < g->blocks; mb++) {
        gemm_f64_tn(g->a + mb * BLOCK * g->n + lo, g->n, g->b + mb * BLOCK * k, k, p, k, rows, k, block_len(g->m, mb));
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < k; c++)
                y[r * k + c] = (float)((double)y[r * k + c] + p[r * k + c] * g->sa[mb * g->n + lo + r] * g->sb[mb * k + c]);
    }
    free(p);
}

int cpu_fp8_matmul(const CpuOpCall *c, Err *err) {
    const Tensor *qa = c->in[0], *qb = c->in[2];
    int nan = 0;
    double *a = decode(qa, &nan), *b = decode(qb, &nan);
    if (nan) {
        /* NaN operands are the interpreter's run-time error, word for word. */
        free(a), free(b);
        return op_info(OP_FP8_MATMUL)->interp(c->in, 4, c->node, c->out, err);
    }
    int wgrad = node_int(c->node, "wgrad", 0) != 0;
    Fp8Gemm g = {a, b, tensor_f32(c->in[1]), tensor_f32(c->in[3]), tensor_f32(c->out[0]), 0, 0, 0, 0};
    g.m = 1;
    for (int d = 0; d + 1 < qa->rank; d++) g.m *= qa->shape[d];
    if (wgrad) g.n = qa->shape[qa->rank - 1], g.k = qb->shape[qb->rank - 1], g.blocks = (g.m + BLOCK - 1) / BLOCK;
    else g.n = qb->shape[0], g.k = qb->shape[1], g.blocks = (g.k + BLOCK - 1) / BLOCK;
    int64_t out_rows = wgrad ? g.n : g.m, out_cols = wgrad ? g.k : g.n;
    if (out_rows * out_cols > 0) {
        /* Zero blocks (an empty contracted axis) leave y zeroed, as the interpreter does. */
        parallel_for_capped(out_rows, out_cols * (wgrad ? g.m : g.k) + 1, c->threads, wgrad ? wgrad_rows : nt_rows, &g);
    }
    free(a), free(b);
    return 0;
}
