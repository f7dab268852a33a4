/* GEMMs through OpenBLAS (DESIGN.md: use the well-kept library). Row-major throughout.
 *
 * Each GEMM is split across our threads (base/parallel.h) into row blocks of its
 * output, each block one single-threaded OpenBLAS call: OpenBLAS's own thread pool
 * busy-waits between calls, which on cores shared with other work (the training
 * step's many small GEMMs) costs more than it gains; and a block's sums over K run
 * in the same order whatever the split. */
#include <cblas.h>

#include "../base/parallel.h"
#include "cpu.h"

void gemm_use_own_threads(void) { openblas_set_num_threads(1); }

typedef struct Gemm {
    const float *a, *b;
    float *c;
    int64_t m, n, k;
} Gemm;

/* Rows [lo, hi) of y = x w^T. */
static void xwt_rows(void *ctx, int64_t lo, int64_t hi) {
    const Gemm *g = ctx;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(hi - lo), (int)g->n, (int)g->k, 1.0f, g->a + lo * g->k,
                (int)g->k, g->b, (int)g->k, 0.0f, g->c + lo * g->n, (int)g->n);
}

/* An empty sum (k = 0 or m = 0 below) leaves the caller's zeroed output as it is: BLAS would
 * refuse the leading dimension 0 with a message on stderr. */
void gemm_xwt(const float *x, const float *w, float *y, int64_t m, int64_t n, int64_t k, int threads) {
    if (m == 0 || n == 0 || k == 0) return;
    Gemm g = {x, w, y, m, n, k};
    parallel_for_capped(m, n * k, threads, xwt_rows, &g);
}

/* Rows [lo, hi) of dw = dy^T x: columns lo..hi of dy. */
static void dyt_x_rows(void *ctx, int64_t lo, int64_t hi) {
    const Gemm *g = ctx;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(hi - lo), (int)g->k, (int)g->m, 1.0f, g->a + lo,
                (int)g->n, g->b, (int)g->k, 0.0f, g->c + lo * g->k, (int)g->k);
}

void gemm_dyt_x(const float *dy, const float *x, float *dw, int64_t m, int64_t n, int64_t k, int threads) {
    if (n == 0 || k == 0 || m == 0) return;
    Gemm g = {dy, x, dw, m, n, k};
    parallel_for_capped(n, m * k, threads, dyt_x_rows, &g);
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
