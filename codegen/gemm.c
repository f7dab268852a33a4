/* GEMMs through OpenBLAS (DESIGN.md: use the well-kept library). Row-major throughout.
 *
 * Each GEMM is split across our threads (base/parallel.h) into row blocks of its
 * output, each block one single-threaded OpenBLAS call: OpenBLAS's own thread pool
 * busy-waits between calls, which on cores shared with other work (the training
 * step's many small GEMMs) costs more than it gains. The blocks are of a fixed size,
 * so the results do not depend on the number of threads (below). */
#include <cblas.h>

#include "../base/parallel.h"
#include "cpu.h"

void gemm_use_own_threads(void) { openblas_set_num_threads(1); }

typedef struct Gemm {
    const float *a, *b;
    float *c;
    int64_t m, n, k;
} Gemm;

/* Each OpenBLAS call covers a block of ROW_BLOCK rows (the last may be shorter), so every
 * call has the same shape whatever the number of threads: OpenBLAS picks its kernel, and
 * with it the order of a row's sums over K, by the call's shape (a small-matrix kernel
 * below some size), so blocks that followed the thread count would make the bits depend on
 * the machine's cores. */
enum { ROW_BLOCK = 32 };

static int64_t blocks_of(int64_t rows) { return (rows + ROW_BLOCK - 1) / ROW_BLOCK; }
static int64_t block_rows(int64_t rows, int64_t b) { return rows - b * ROW_BLOCK < ROW_BLOCK ? rows - b * ROW_BLOCK : ROW_BLOCK; }

/* Row blocks [lo, hi) of y = x w^T. */
static void xwt_blocks(void *ctx, int64_t lo, int64_t hi) {
    const Gemm *g = ctx;
    for (int64_t b = lo; b < hi; b++) {
        int64_t r = b * ROW_BLOCK;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)block_rows(g->m, b), (int)g->n, (int)g->k, 1.0f,
                    g->a + r * g->k, (int)g->k, g->b, (int)g->k, 0.0f, g->c + r * g->n, (int)g->n);
    }
}

/* An empty sum (k = 0 or m = 0 below) leaves the caller's zeroed output as it is: BLAS would
 * refuse the leading dimension 0 with a message on stderr. */
void gemm_xwt(const float *x, const float *w, float *y, int64_t m, int64_t n, int64_t k, int threads) {
    if (m == 0 || n == 0 || k == 0) return;
    Gemm g = {x, w, y, m, n, k};
    parallel_for_capped(blocks_of(m), ROW_BLOCK * n * k, threads, xwt_blocks, &g);
}

/* Row blocks [lo, hi) of dw = dy^T x: blocks of dy's columns. */
static void dyt_x_blocks(void *ctx, int64_t lo, int64_t hi) {
    const Gemm *g = ctx;
    for (int64_t b = lo; b < hi; b++) {
        int64_t r = b * ROW_BLOCK;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)block_rows(g->n, b), (int)g->k, (int)g->m, 1.0f,
                    g->a + r, (int)g->n, g->b, (int)g->k, 0.0f, g->c + r * g->k, (int)g->k);
    }
}

void gemm_dyt_x(const float *dy, const float *x, float *dw, int64_t m, int64_t n, int64_t k, int threads) {
    if (n == 0 || k == 0 || m == 0) return;
    Gemm g = {dy, x, dw, m, n, k};
    parallel_for_capped(blocks_of(n), ROW_BLOCK * m * k, threads, dyt_x_blocks, &g);
}

void gemm_f64_nt(const double *a, int64_t lda, const double *b, int64_t ldb, double *c, int64_t ldc, int64_t m, int64_t n,
              int64_t k) {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)k, 1.0, a, (int)lda, b, (int)ldb, 0.0, c,
                (int)ldc);
}

void gemm_f64_tn(const double *a, int64_t lda, const double *b, int64_t ldb, double *c, int64_t ldc, int64_t m, int64_t n,
              int64_t k) {
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)m, (int)n, (int)k, 1.0, a, (int)lda, b, (int)ldb, 0.0, c,
                (int)ldc);
}
