/* GEMMs through OpenBLAS (DESIGN.md: use the well-kept library). Row-major throughout. */
#include <cblas.h>

#include "cpu.h"

void gemm_xwt(const float *x, const float *w, float *y, int64_t m, int64_t n, int64_t k) {
    if (m == 0 || n == 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)k, 1.0f, x, (int)k, w, (int)k, 0.0f, y,
                (int)n);
}

void gemm_dyt_x(const float *dy, const float *x, float *dw, int64_t m, int64_t n, int64_t k) {
    if (n == 0 || k == 0) return;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)n, (int)k, (int)m, 1.0f, dy, (int)n, x, (int)k, 0.0f,
                dw, (int)k);
}
