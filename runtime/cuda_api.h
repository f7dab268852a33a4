/* runtime: everything the CUDA executor asks of a GPU, as one table of
 * function pointers. Two tables exist: the real one (the CUDA driver API and
 * cuBLASLt, both through dlopen: cuda_backend.c, cuda_blaslt.c) and a host
 * emulation for tests (tests/testutil.c: memory is malloc, a module is the
 * kernel source compiled with g++ and codegen/cuda/host_emu.h, GEMMs are host
 * loops). The executor (cuda_exec.c) sees only this table, so what the tests
 * verify through the emulation is the executor's own logic: buffers, windows,
 * scratch, launch order, library calls, streams, events and the status words.
 *
 * Every call returns 0, or -1 with err set to a message naming the call. */
#ifndef V3C_RUNTIME_CUDA_API_H
#define V3C_RUNTIME_CUDA_API_H

#include "../codegen/cuda/kcache.h"

typedef unsigned long long CuPtr; /* a device address (CUdeviceptr) */
typedef void *CuModule, *CuFunction, *CuStream, *CuEvent;

/* Row-major strided batched GEMMs on fp32 buffers: for each i < batch,
 *   C_i[m,n] = alpha * op(A_i)[m,k] op(B_i)[k,n]   (C_i overwritten)
 * op(A) is A stored [m,k], rows lda elements apart, or with trans_a A stored [k,m] (rows lda
 * apart) and transposed; op(B) likewise from B stored [k,n] or, with trans_b, [n,k]; C is
 * stored [m,n], rows ldc apart. A_i starts stride_a elements after A_{i-1} (likewise B, C).
 * The linears are batch 1 (cuda_gemm_linear, cuda_gemm_wgrad); the attention's products use
 * the leading dimensions and strides to read one head of [B,T,h,d] in place.
 * bf16_operands: every operand value lies on the bf16 grid (a bf16 graph value), so the device
 * may multiply in TF32, which holds such a value exactly; else the products are full fp32.
 * Either way the sums are fp32 and the output is fp32 (a bf16 result is rounded afterwards). */
typedef struct CudaGemm {
    int64_t m, n, k, batch;
    int trans_a, trans_b;
    CuPtr a, b, c;
    int64_t lda, ldb, ldc;
    int64_t stride_a, stride_b, stride_c;
    float alpha;
    int bf16_operands;
} CudaGemm;

/* A GEMM cuBLASLt can take: every dimension and the batch at least 1, the batch within its
 * int32_t, each leading dimension at least the stored row it spans, no negative batch stride.
 * Anything else is a planner's bug; the real table and the emulation refuse the same shapes. */
static inline int cuda_gemm_valid(const CudaGemm *g) {
    int64_t row_a = g->trans_a ? g->m : g->k, row_b = g->trans_b ? g->k : g->n;
    int negative_stride = g->batch > 1 && (g->stride_a < 0 || g->stride_b < 0 || g->stride_c < 0);
    return g->m > 0 && g->n > 0 && g->k > 0 && g->batch > 0 && g->batch <= INT32_MAX && g->lda >= row_a &&
           g->ldb >= row_b && g->ldc >= g->n && !negative_stride;
}

/* linear: y[m,n] = x[m,k] w[n,k]^T. */
static inline CudaGemm cuda_gemm_linear(int64_t m, int64_t n, int64_t k, CuPtr x, CuPtr w, CuPtr y, int bf16) {
    return (CudaGemm){.m = m, .n = n, .k = k, .batch = 1, .trans_b = 1, .a = x, .b = w, .c = y,
                      .lda = k, .ldb = k, .ldc = n, .alpha = 1.0f, .bf16_operands = bf16};
}
/* linear_wgrad: dw[n,k] = g[m,n]^T x[m,k] (m tokens contracted). */
static inline CudaGemm cuda_gemm_wgrad(int64_t m, int64_t n, int64_t k, CuPtr g, CuPtr x, CuPtr dw, int bf16) {
    return (CudaGemm){.m = n, .n = k, .k = m, .batch = 1, .trans_a = 1, .a = g, .b = x, .c = dw,
                      .lda = n, .ldb = k, .ldc = k, .alpha = 1.0f, .bf16_operands = bf16};
}

/* fp8_matmul in the one layout Hopper's FP8 GEMM has (TN: the contracted axis innermost in
 * both operands): out[m,n] = sum over k of qa[m,k] qb[n,k] (E4M3 operands, fp32 out), each
 * 128-block of k scaled by fp32 scales, one per row of qa and per 128 rows of qb
 * (both_1x128=0) or per row of qb (both_1x128=1):
 * both_1x128=0 (the forward form, wgrad=0 of the op; m a multiple of 4 for cuBLASLt): qa and
 *   qb as the op has them, the scales as the plan's copies lay them out (codegen/cuda/cuda.h,
 *   FP8_FWD_*): sa (1x128) block-major, sa[kb * fp8_scale_ld(m) + r], and sb (128x128)
 *   [ceil(n/128)][fp8_scale_ld(ceil(k/128))], sb[nb * fp8_scale_ld(ceil(k/128)) + kb], zeros
 *   in the padding of both;
 * both_1x128=1 (the weight gradient, wgrad=1 of the op, after the plan's transposing
 *   copies: codegen/cuda/cuda.h, FP8_WGRAD_*): k a multiple of 128, and the scales
 *   block-major, sa[kb * fp8_scale_ld(m) + r] and sb[kb * fp8_scale_ld(n) + c]. */
typedef struct CudaFp8Gemm {
    int both_1x128;
    int64_t m, n, k;
    CuPtr qa, sa, qb, sb, out;
} CudaFp8Gemm;

typedef struct CudaApi CudaApi;
struct CudaApi {
    void *ctx;            /* the implementation's own state */
    const char *what;     /* "CUDA driver on NVIDIA H100 (sm_90a)", "host emulation": for messages */
    /* Whether fp8_gemm can do this form and shape (pointers unset): 0, or -1 with the reason.
     * The executor asks at prepare, so a plan it cannot run is refused before any work. NULL: all can. */
    int (*fp8_check)(CudaApi *a, const CudaFp8Gemm *shape, Err *err);
    /* Makes the device current for the calling thread (a step may run on another thread than prepare). */
    int (*bind)(CudaApi *a, Err *err);
    /* One loadable image per kernel (a cubin for the real device). */
    int (*compile)(CudaApi *a, const CudaKernel *kernels, int n, CudaCubin *images, CudaCompileStats *stats, Err *err);
    int (*module_load)(CudaApi *a, const CudaCubin *image, CuModule *m, Err *err);
    void (*module_unload)(CudaApi *a, CuModule m);
    int (*module_function)(CudaApi *a, CuModule m, const char *name, CuFunction *f, Err *err);
    int (*mem_alloc)(CudaApi *a, size_t bytes, CuPtr *p, Err *err);
    void (*mem_free)(CudaApi *a, CuPtr p);
    int (*memset_zero)(CudaApi *a, CuPtr p, size_t bytes, CuStream s, Err *err);
    int (*copy_h2d)(CudaApi *a, CuPtr dst, const void *src, size_t bytes, CuStream s, Err *err);
    int (*copy_d2h)(CudaApi *a, void *dst, CuPtr src, size_t bytes, CuStream s, Err *err);
    /* args[i] is the i-th kernel parameter (every parameter is a device pointer). */
    int (*launch)(CudaApi *a, CuFunction f, unsigned grid, unsigned block, unsigned smem_bytes, CuStream s,
                  const CuPtr *args, int nargs, Err *err);
    int (*stream_create)(CudaApi *a, CuStream *s, Err *err);
    void (*stream_destroy)(CudaApi *a, CuStream s);
    int (*stream_sync)(CudaApi *a, CuStream s, Err *err);
    int (*event_create)(CudaApi *a, CuEvent *e, Err *err);
    void (*event_destroy)(CudaApi *a, CuEvent e);
    int (*event_record)(CudaApi *a, CuEvent e, CuStream s, Err *err);
    /* Work queued on s after this waits for e's recorded point. */
    int (*stream_wait_event)(CudaApi *a, CuStream s, CuEvent e, Err *err);
    int (*event_elapsed_ms)(CudaApi *a, CuEvent start, CuEvent end, float *ms, Err *err);
    int (*gemm)(CudaApi *a, const CudaGemm *g, CuStream s, Err *err);
    int (*fp8_gemm)(CudaApi *a, const CudaFp8Gemm *g, CuStream s, Err *err);
    /* Fills bytes at p with value (cuMemsetD8Async): the executor's debug poisoning of dead buffers. */
    int (*memset_byte)(CudaApi *a, CuPtr p, unsigned char value, size_t bytes, CuStream s, Err *err);
    /* Frees ctx and the table itself. */
    void (*close)(CudaApi *a);
};

#endif
