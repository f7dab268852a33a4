/* cuBLASLt through dlopen: the entry points, values and structs of
 * cublaslt_abi.h (cublasLt.h's, CUDA 13, written out so that v3c builds without
 * the toolkit's headers; tests/test_cuda_abi.c checks them against it). */
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cublaslt_abi.h"
#include "cuda_blaslt.h"

typedef AbiLtStatus Status;
typedef AbiLtHandle Handle;
typedef AbiLtDesc Desc;
typedef AbiLtLayout Layout;
typedef AbiLtPref Pref;
typedef LtAlgo Algo;
typedef LtHeuristic Heuristic;

enum {
    MAX_ALIGNMENT = 256,
    MAX_CACHED = 1024, /* grouped GEMMs' row counts vary per step: past this, plans are not kept */
};

/* Everything that shapes a GEMM's descriptors, layouts and algorithm (not its
 * pointers or alpha, passed per call). All int64_t, so no padding: compared with memcmp. */
typedef struct Shape {
    int64_t fp8;
    int64_t bf16;       /* operands on the bf16 grid: TF32 products (CudaGemm.bf16_operands) */
    int64_t both_1x128; /* FP8 with 1x128 scales on both operands (CudaFp8Gemm.both_1x128) */
    int64_t trans_a, trans_b, m, n, k, batch, lda, ldb, ldc, stride_a, stride_b, stride_c;
    int64_t align; /* bytes every operand's address is a multiple of (a grouped GEMM's slices are only 4-aligned) */
} Shape;
_Static_assert(sizeof(Shape) == 16 * sizeof(int64_t), "Shape has no padding: compared with memcmp");

/* One GEMM shape, ready to run. */
typedef struct Prepared {
    Shape s;
    Desc desc;
    Layout a, b, d;
    Algo algo;
    size_t workspace;
} Prepared;

struct Blaslt {
    void *lib;
    Handle handle;
    CuPtr workspace;
    size_t workspace_bytes;
    VEC(Prepared) cache;
    CUBLASLT_ENTRY_POINTS(DLABI_FIELD)
};

#define SYMBOL(symbol, field, ret, params) {#symbol, offsetof(Blaslt, field)},
static const DlabiSymbol symbols[] = {CUBLASLT_ENTRY_POINTS(SYMBOL)};

static int check(const Blaslt *b, Status s, const char *what, Err *err) {
    if (s == LT_OK) return 0;
    const char *text = b->status_string ? b->status_string(s) : NULL;
    return err_set(err, "cuBLASLt: %s failed: %s (%d)", what, text ? text : "unknown status", s);
}

static void *open_library(const char *library, Err *err) {
    static const char *const names[] = {"libcublasLt.so.13", "libcublasLt.so", "/usr/local/cuda/lib64/libcublasLt.so"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        void *lib = dlopen(library ? library : names[i], RTLD_NOW | RTLD_LOCAL);
        if (lib) return lib;
        if (library) break;
    }
    const char *why = dlerror();
    err_set(err, "the CUDA backend's GEMMs need cuBLASLt, and %s cannot be loaded (%s)",
            library ? library : "libcublasLt.so.13", why ? why : "not found");
    return NULL;
}

Blaslt *blaslt_open(const char *library, CuPtr workspace, size_t bytes, Err *err) {
    void *lib = open_library(library, err);
    if (!lib) return NULL;
    Blaslt *b = xcalloc(1, sizeof *b);
    b->lib = lib, b->workspace = workspace, b->workspace_bytes = bytes;
    const char *missing = dlabi_resolve(lib, symbols, sizeof symbols / sizeof *symbols, NULL, 0, b);
    if (missing) {
        err_set(err, "cuBLASLt (libcublasLt) lacks %s", missing);
        blaslt_close(b);
        return NULL;
    }
    if (check(b, b->create(&b->handle), "cublasLtCreate", err)) {
        b->handle = NULL;
        blaslt_close(b);
        return NULL;
    }
    return b;
}

static void prepared_free(const Blaslt *b, Prepared *p) {
    if (p->a) b->layout_destroy(p->a);
    if (p->b) b->layout_destroy(p->b);
    if (p->d) b->layout_destroy(p->d);
    if (p->desc) b->desc_destroy(p->desc);
}

void blaslt_close(Blaslt *b) {
    if (!b) return;
    for (size_t i = 0; i < b->cache.len; i++) prepared_free(b, &b->cache.data[i]);
    VEC_FREE(b->cache);
    if (b->handle) b->destroy(b->handle);
    if (b->lib) dlclose(b->lib);
    free(b);
}

/* Products: a bf16 value (8 significant bits) converts to TF32 (11) exactly and
 * the product of two (16 bits) is exact in fp32, so TF32 tensor cores with fp32
 * accumulation compute what a bf16 GEMM with fp32 accumulation does, reading the
 * fp32 buffers as they are. An f32 value would lose 13 bits in TF32: f32 GEMMs
 * stay CUBLAS_COMPUTE_32F. */
static int compute_type(const Shape *s) { return s->bf16 ? LT_COMPUTE_32F_FAST_TF32 : LT_COMPUTE_32F; }

/* One operand's column-major layout: rows x cols, columns ld apart, `batch` of them
 * `stride` elements apart. Set for batch 1 too (cuBLASLt's defaults: 1 and 0), so
 * every GEMM takes one path. */
static int layout(const Blaslt *b, Layout *l, int64_t rows, int64_t cols, int64_t ld, const Shape *s, int64_t stride,
                  const char *what, Err *err) {
    int32_t count = (int32_t)s->batch;
    return check(b, b->layout_create(l, LT_R_32F, (uint64_t)rows, (uint64_t)cols, ld), what, err) ||
           check(b, b->layout_set(*l, LT_LAYOUT_BATCH_COUNT, &count, sizeof count), "set a layout's batch count", err) ||
           check(b, b->layout_set(*l, LT_LAYOUT_BATCH_STRIDE, &stride, sizeof stride), "set a layout's batch stride", err);
}

/* Row-major as column-major (cuBLASLt's order): a row-major [r,c] matrix with rows
 * ld apart is a column-major [c,r] one with the same ld. So C[m,n] = op(A) op(B) is,
 * column-major, C^T[n,m] = op(B)^T op(A)^T: cuBLASLt's A is our B, stored [k,n]
 * row-major and so read as the column-major [n,k] op(B)^T itself (LT_OP_N), or with
 * trans_b stored [n,k], column-major [k,n], transposed (LT_OP_T); its B is our A
 * likewise (column-major [k,m], or [m,k] transposed with trans_a); D is column-major
 * [n,m], columns ldc apart. cuda_gemm_linear (trans_b) is thus TRANSA = T, TRANSB = N;
 * cuda_gemm_wgrad (trans_a) TRANSA = N, TRANSB = T. */
static int describe(const Blaslt *b, Prepared *p, Err *err) {
    const Shape *s = &p->s;
    int ta = s->trans_b ? LT_OP_T : LT_OP_N, tb = s->trans_a ? LT_OP_T : LT_OP_N;
    return check(b, b->desc_create(&p->desc, compute_type(s), LT_R_32F), "cublasLtMatmulDescCreate", err) ||
           check(b, b->desc_set(p->desc, LT_DESC_TRANSA, &ta, sizeof ta), "set TRANSA", err) ||
           check(b, b->desc_set(p->desc, LT_DESC_TRANSB, &tb, sizeof tb), "set TRANSB", err) ||
           layout(b, &p->a, s->trans_b ? s->k : s->n, s->trans_b ? s->n : s->k, s->ldb, s, s->stride_b, "layout A", err) ||
           layout(b, &p->b, s->trans_a ? s->m : s->k, s->trans_a ? s->k : s->m, s->lda, s, s->stride_a, "layout B", err) ||
           layout(b, &p->d, s->n, s->m, s->ldc, s, s->stride_c, "layout D", err);
}

/* FP8 on Hopper is TN only: out[m,n] = qa[m,k] qb[n,k]^T is, column-major,
 * out^T[n,m] = qb[n,k] qa^T[k,m]: A = qb (col-major k x n, transposed), B = qa
 * (col-major k x m), D col-major n x m = out. Scales: B (qa) always 1x128
 * (VEC128_32F); A (qb) 128x128 (BLK128x128_32F) in the forward form, 1x128 in the
 * weight gradient's (cuBLASLt takes both pairs on Hopper; 128x128 on both is not
 * one). The scale tensors are passed as CudaFp8Gemm lays them out, which the plan's
 * copies make the layouts PyTorch's _scaled_mm hands cuBLASLt: 1x128 scales
 * "outer-dim major", block-major with the rows padded to 4 (sa[kb * ld + r], ld =
 * fp8_scale_ld(rows); both of the weight gradient's, the forward's sa), and the
 * forward's 128x128 sb row-major [ceil(n/128)][ceil(k/128) padded to 4], as torch
 * pads a weight's K blocks for cuBLASLt. That is public evidence (PyTorch's own
 * _scaled_mm test and its callers), not a run: neither form is verified on a GPU
 * here. The scale pointers are set per call (prepared descriptors are shared by shape). */
static int describe_fp8(const Blaslt *b, Prepared *p, Err *err) {
    int ta = LT_OP_T, tb = LT_OP_N, b_mode = LT_SCALE_VEC128_32F;
    int a_mode = p->s.both_1x128 ? LT_SCALE_VEC128_32F : LT_SCALE_BLK128x128_32F;
    uint64_t m = (uint64_t)p->s.m, n = (uint64_t)p->s.n, k = (uint64_t)p->s.k;
    return check(b, b->desc_create(&p->desc, LT_COMPUTE_32F, LT_R_32F), "cublasLtMatmulDescCreate", err) ||
           check(b, b->desc_set(p->desc, LT_DESC_TRANSA, &ta, sizeof ta), "set TRANSA", err) ||
           check(b, b->desc_set(p->desc, LT_DESC_TRANSB, &tb, sizeof tb), "set TRANSB", err) ||
           check(b, b->desc_set(p->desc, LT_DESC_A_SCALE_MODE, &a_mode, sizeof a_mode), "set A_SCALE_MODE (CUDA >= 12.9)", err) ||
           check(b, b->desc_set(p->desc, LT_DESC_B_SCALE_MODE, &b_mode, sizeof b_mode), "set B_SCALE_MODE (CUDA >= 12.9)", err) ||
           check(b, b->layout_create(&p->a, LT_R_8F_E4M3, k, n, p->s.k), "layout A", err) ||
           check(b, b->layout_create(&p->b, LT_R_8F_E4M3, k, m, p->s.k), "layout B", err) ||
           check(b, b->layout_create(&p->d, LT_R_32F, n, m, p->s.n), "layout D", err);
}

static int choose_algo(const Blaslt *b, Prepared *p, Err *err) {
    Pref pref = NULL;
    size_t ws = b->workspace_bytes;
    uint32_t align = (uint32_t)p->s.align;
    Heuristic h;
    int found = 0;
    static const int alignments[] = {LT_PREF_MIN_ALIGNMENT_A, LT_PREF_MIN_ALIGNMENT_B, LT_PREF_MIN_ALIGNMENT_C,
                                     LT_PREF_MIN_ALIGNMENT_D};
    int rc = check(b, b->pref_create(&pref), "cublasLtMatmulPreferenceCreate", err) ||
             check(b, b->pref_set(pref, LT_PREF_MAX_WORKSPACE, &ws, sizeof ws), "set the workspace limit", err);
    for (int which = 0; which < 4 && rc == 0; which++)
        rc = check(b, b->pref_set(pref, alignments[which], &align, sizeof align), "set an alignment", err);
    if (rc == 0)
        rc = check(b, b->heuristic(b->handle, p->desc, p->a, p->b, p->d, p->d, pref, 1, &h, &found),
                   "cublasLtMatmulAlgoGetHeuristic", err);
    if (pref) b->pref_destroy(pref);
    if (rc) return -1;
    const Shape *s = &p->s;
    if (found < 1)
        return err_set(err, "cuBLASLt has no %s algorithm for a GEMM of m=%lld n=%lld k=%lld batch=%lld "
                            "trans_a=%d trans_b=%d on this GPU",
                       s->fp8 ? "block-scaled FP8" : s->bf16 ? "TF32 (bf16 operands)" : "fp32", (long long)s->m,
                       (long long)s->n, (long long)s->k, (long long)s->batch, (int)s->trans_a, (int)s->trans_b);
    p->algo = h.algo, p->workspace = h.workspace_size;
    return 0;
}

/* The largest power of two, up to 256, that divides every address. */
static uint32_t alignment_of(const CuPtr *ptrs, int n) {
    uint32_t a = MAX_ALIGNMENT;
    for (int i = 0; i < n; i++)
        while (a > 1 && ptrs[i] % a) a /= 2;
    return a;
}

/* The prepared shape: from the cache, or made now (and kept unless the cache is
 * full: then *fresh holds it and the caller frees it). */
static const Prepared *prepared(Blaslt *b, const Shape *key, Prepared *fresh, Err *err) {
    for (size_t i = 0; i < b->cache.len; i++)
        if (memcmp(&b->cache.data[i].s, key, sizeof *key) == 0) return &b->cache.data[i];
    *fresh = (Prepared){.s = *key};
    if ((key->fp8 ? describe_fp8(b, fresh, err) : describe(b, fresh, err)) || choose_algo(b, fresh, err)) {
        prepared_free(b, fresh);
        return NULL;
    }
    if (b->cache.len >= MAX_CACHED) return fresh;
    VEC_PUSH(b->cache, *fresh);
    return &b->cache.data[b->cache.len - 1];
}

/* A shape cuBLASLt would reject or misread (a leading dimension shorter than the
 * row it must hold, a batch count past its int32_t) is the planner's bug. */
static int gemm_sane(const CudaGemm *g, Err *err) {
    if (cuda_gemm_valid(g)) return 0;
    return err_internal(err, "cuBLASLt GEMM of m=%lld n=%lld k=%lld batch=%lld trans_a=%d trans_b=%d lda=%lld ldb=%lld "
                             "ldc=%lld strides %lld %lld %lld",
                        (long long)g->m, (long long)g->n, (long long)g->k, (long long)g->batch, g->trans_a, g->trans_b,
                        (long long)g->lda, (long long)g->ldb, (long long)g->ldc, (long long)g->stride_a,
                        (long long)g->stride_b, (long long)g->stride_c);
}

int blaslt_gemm(Blaslt *b, const CudaGemm *g, CuStream s, Err *err) {
    if (gemm_sane(g, err)) return -1;
    /* A single GEMM's strides mean nothing: left out of its shape. A batch's later
     * operands start a stride's bytes further on, so those bound the alignment too. */
    int64_t batched = g->batch > 1, f = (int64_t)sizeof(float);
    const CuPtr addresses[] = {g->a, g->b, g->c, (CuPtr)(batched * g->stride_a * f), (CuPtr)(batched * g->stride_b * f),
                               (CuPtr)(batched * g->stride_c * f)};
    Shape key = {.bf16 = g->bf16_operands != 0, .trans_a = g->trans_a != 0, .trans_b = g->trans_b != 0, .m = g->m,
                 .n = g->n, .k = g->k, .batch = g->batch, .lda = g->lda, .ldb = g->ldb, .ldc = g->ldc,
                 .stride_a = batched * g->stride_a, .stride_b = batched * g->stride_b, .stride_c = batched * g->stride_c,
                 .align = alignment_of(addresses, 6)};
    Prepared fresh;
    const Prepared *p = prepared(b, &key, &fresh, err);
    if (!p) return -1;
    const float zero = 0.0f;
    /* cuBLASLt's A is our B, its B our A (describe). */
    const void *a = (const void *)(uintptr_t)g->b, *bb = (const void *)(uintptr_t)g->a;
    void *d = (void *)(uintptr_t)g->c;
    int rc = check(b, b->matmul(b->handle, p->desc, &g->alpha, a, p->a, bb, p->b, &zero, d, p->d, d, p->d, &p->algo,
                                (void *)(uintptr_t)b->workspace, p->workspace, s),
                   "cublasLtMatmul", err);
    if (p == &fresh) prepared_free(b, &fresh);
    return rc;
}

/* M (qa's rows: the forward's tokens, the weight gradient's rows of dw) a multiple of 4 as well: the
 * 1x128 scales' leading dimension is then M itself, where cuBLASLt's implied one (M, or M rounded up
 * to 4, as PyTorch pads) cannot differ. */
int blaslt_fp8_check(const CudaFp8Gemm *g, Err *err) {
    if (g->m % 4)
        return err_set(err, "fp8_matmul%s with %lld rows%s: cuBLASLt's 1x128 scales need the rows a multiple of 4",
                       g->both_1x128 ? " weight gradient" : "", (long long)g->m, g->both_1x128 ? "" : " (tokens)");
    if (g->k % 128 || g->n % 16)
        return err_set(err, "fp8_matmul with K=%lld, N=%lld%s: cuBLASLt's block-scaled FP8 needs K a multiple of 128 and "
                            "N a multiple of 16",
                       (long long)g->k, (long long)g->n,
                       g->both_1x128 ? " (its weight gradient: N is the gradient's columns, K the tokens padded to 128)" : "");
    return 0;
}

int blaslt_fp8_gemm(Blaslt *b, const CudaFp8Gemm *g, CuStream s, Err *err) {
    if (blaslt_fp8_check(g, err)) return -1;
    Prepared fresh;
    const CuPtr ptrs[] = {g->qa, g->qb, g->out};
    /* batch 1, trans_b (TN): for messages; describe_fp8 knows the one form. */
    Shape key = {.fp8 = 1, .both_1x128 = g->both_1x128, .trans_b = 1, .m = g->m, .n = g->n, .k = g->k, .batch = 1,
                 .align = alignment_of(ptrs, 3)};
    const Prepared *p = prepared(b, &key, &fresh, err);
    if (!p) return -1;
    const void *sb = (const void *)(uintptr_t)g->sb, *sa = (const void *)(uintptr_t)g->sa;
    const float one = 1.0f, zero = 0.0f;
    void *d = (void *)(uintptr_t)g->out;
    int rc = check(b, b->desc_set(p->desc, LT_DESC_A_SCALE_POINTER, &sb, sizeof sb), "set A_SCALE_POINTER", err) ||
                     check(b, b->desc_set(p->desc, LT_DESC_B_SCALE_POINTER, &sa, sizeof sa), "set B_SCALE_POINTER", err) ||
                     check(b, b->matmul(b->handle, p->desc, &one, (const void *)(uintptr_t)g->qb, p->a,
                                        (const void *)(uintptr_t)g->qa, p->b, &zero, d, p->d, d, p->d, &p->algo,
                                        (void *)(uintptr_t)b->workspace, p->workspace, s),
                           "cublasLtMatmul (FP8)", err)
                 ? -1
                 : 0;
    if (p == &fresh) prepared_free(b, &fresh);
    return rc;
}
