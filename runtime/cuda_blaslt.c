/* cuBLASLt through dlopen. The enum values are cublasLt.h's (CUDA 13), written
 * out so that v3c builds without the toolkit's headers. */
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_blaslt.h"

typedef int Status; /* cublasStatus_t */
typedef void *Handle, *Desc, *Layout, *Pref;
typedef struct {
    uint64_t data[8];
} Algo; /* cublasLtMatmulAlgo_t */
typedef struct {
    Algo algo;
    size_t workspace_size;
    Status state;
    float waves;
    int reserved[4];
} Heuristic; /* cublasLtMatmulHeuristicResult_t */

enum {
    R_32F = 0,              /* CUDA_R_32F */
    R_8F_E4M3 = 28,         /* CUDA_R_8F_E4M3 */
    DESC_A_SCALE_POINTER = 17, /* CUBLASLT_MATMUL_DESC_A_SCALE_POINTER */
    DESC_B_SCALE_POINTER = 18, /* CUBLASLT_MATMUL_DESC_B_SCALE_POINTER */
    DESC_A_SCALE_MODE = 31, /* CUBLASLT_MATMUL_DESC_A_SCALE_MODE */
    DESC_B_SCALE_MODE = 32, /* CUBLASLT_MATMUL_DESC_B_SCALE_MODE */
    SCALE_VEC128_32F = 4,   /* CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F: one fp32 per 128 along the inner (K) axis */
    SCALE_BLK128x128_32F = 5, /* CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F */
    COMPUTE_32F = 68,       /* CUBLAS_COMPUTE_32F: true fp32, no TF32 down-conversion */
    COMPUTE_32F_FAST_TF32 = 77, /* CUBLAS_COMPUTE_32F_FAST_TF32: fp32 in and out, TF32 tensor-core products */
    OP_N = 0, OP_T = 1,     /* CUBLAS_OP_N, CUBLAS_OP_T */
    DESC_TRANSA = 3,        /* CUBLASLT_MATMUL_DESC_TRANSA */
    DESC_TRANSB = 4,        /* CUBLASLT_MATMUL_DESC_TRANSB */
    PREF_MAX_WORKSPACE = 1, /* CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES */
    PREF_MIN_ALIGNMENT_A = 5, /* CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_{A,B,C,D}_BYTES = 5..8, default 256 */
    MAX_ALIGNMENT = 256,
    MAX_CACHED = 1024,      /* grouped GEMMs' row counts vary per step: past this, plans are not kept */
};

/* One GEMM shape, ready to run. */
typedef struct Prepared {
    int fp8, wgrad;
    int bf16;       /* operands on the bf16 grid: TF32 products (CudaGemm.bf16_operands) */
    int both_1x128; /* FP8 with 1x128 scales on both operands (CudaFp8Gemm.both_1x128) */
    int64_t m, n, k;
    uint32_t align; /* bytes every operand's address is a multiple of (a grouped GEMM's slices are only 4-aligned) */
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
    Status (*create)(Handle *h);
    Status (*destroy)(Handle h);
    const char *(*status_string)(Status s);
    Status (*desc_create)(Desc *d, int compute, int scale_type);
    Status (*desc_destroy)(Desc d);
    Status (*desc_set)(Desc d, int attr, const void *buf, size_t size);
    Status (*layout_create)(Layout *l, int type, uint64_t rows, uint64_t cols, int64_t ld);
    Status (*layout_destroy)(Layout l);
    Status (*pref_create)(Pref *p);
    Status (*pref_destroy)(Pref p);
    Status (*pref_set)(Pref p, int attr, const void *buf, size_t size);
    Status (*heuristic)(Handle h, Desc d, Layout a, Layout b, Layout c, Layout dd, Pref p, int requested,
                        Heuristic *results, int *returned);
    Status (*matmul)(Handle h, Desc d, const void *alpha, const void *a, Layout al, const void *b, Layout bl,
                     const void *beta, const void *c, Layout cl, void *dp, Layout dl, const Algo *algo, void *ws,
                     size_t ws_bytes, CuStream s);
};

#define SYM(name, field) {name, offsetof(Blaslt, field)}
static const struct {
    const char *name;
    size_t offset;
} symbols[] = {
    SYM("cublasLtCreate", create), SYM("cublasLtDestroy", destroy), SYM("cublasLtGetStatusString", status_string),
    SYM("cublasLtMatmulDescCreate", desc_create), SYM("cublasLtMatmulDescDestroy", desc_destroy),
    SYM("cublasLtMatmulDescSetAttribute", desc_set), SYM("cublasLtMatrixLayoutCreate", layout_create),
    SYM("cublasLtMatrixLayoutDestroy", layout_destroy), SYM("cublasLtMatmulPreferenceCreate", pref_create),
    SYM("cublasLtMatmulPreferenceDestroy", pref_destroy), SYM("cublasLtMatmulPreferenceSetAttribute", pref_set),
    SYM("cublasLtMatmulAlgoGetHeuristic", heuristic), SYM("cublasLtMatmul", matmul),
};

static int check(const Blaslt *b, Status s, const char *what, Err *err) {
    if (s == 0) return 0;
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
    for (size_t i = 0; i < sizeof symbols / sizeof *symbols; i++) {
        void *fn = dlsym(lib, symbols[i].name);
        if (!fn) {
            err_set(err, "cuBLASLt (libcublasLt) lacks %s", symbols[i].name);
            blaslt_close(b);
            return NULL;
        }
        memcpy((char *)b + symbols[i].offset, &fn, sizeof fn);
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
static int compute_type(const Prepared *p) { return p->bf16 ? COMPUTE_32F_FAST_TF32 : COMPUTE_32F; }

/* Row-major as column-major (cublasLt's order): a row-major [r,c] matrix is a
 * column-major [c,r] one with ld c. Forward, y^T[n,m] = w[n,k] x^T[k,m]:
 * A = w (col-major k x n, transposed), B = x (col-major k x m), D col-major n x m.
 * Wgrad, dw^T[k,n] = x^T[k,m] g[m,n]: A = x (col-major k x m), B = g (col-major
 * n x m, transposed), D col-major k x n. */
static int describe(const Blaslt *b, Prepared *p, Err *err) {
    int ta = p->wgrad ? OP_N : OP_T, tb = p->wgrad ? OP_T : OP_N;
    int rc = check(b, b->desc_create(&p->desc, compute_type(p), R_32F), "cublasLtMatmulDescCreate", err) ||
             check(b, b->desc_set(p->desc, DESC_TRANSA, &ta, sizeof ta), "set TRANSA", err) ||
             check(b, b->desc_set(p->desc, DESC_TRANSB, &tb, sizeof tb), "set TRANSB", err);
    if (rc) return -1;
    uint64_t m = (uint64_t)p->m, n = (uint64_t)p->n, k = (uint64_t)p->k;
    if (p->wgrad)
        return check(b, b->layout_create(&p->a, R_32F, k, m, p->k), "layout A", err) ||
               check(b, b->layout_create(&p->b, R_32F, n, m, p->n), "layout B", err) ||
               check(b, b->layout_create(&p->d, R_32F, k, n, p->k), "layout D", err);
    return check(b, b->layout_create(&p->a, R_32F, k, n, p->k), "layout A", err) ||
           check(b, b->layout_create(&p->b, R_32F, k, m, p->k), "layout B", err) ||
           check(b, b->layout_create(&p->d, R_32F, n, m, p->n), "layout D", err);
}

/* FP8 on Hopper is TN only: out[m,n] = qa[m,k] qb[n,k]^T is, column-major,
 * out^T[n,m] = qb[n,k] qa^T[k,m]: A = qb (col-major k x n, transposed), B = qa
 * (col-major k x m), D col-major n x m = out. Scales: B (qa) always 1x128
 * (VEC128_32F); A (qb) 128x128 (BLK128x128_32F) in the forward form, 1x128 in the
 * weight gradient's (cuBLASLt takes both pairs on Hopper; 128x128 on both is not
 * one). The scale tensors are passed as CudaFp8Gemm lays them out: the forward's
 * sa [m, ceil(k/128)] and sb [ceil(n/128), ceil(k/128)] row-major, the K blocks
 * innermost; the weight gradient's block-major (sa[kb * ld + r], ld a multiple of
 * 4), the layout PyTorch's _scaled_mm hands cuBLASLt for 1x128 scales ("outer-dim
 * major"). Neither is verified on a GPU here. The scale pointers are set per call
 * (prepared descriptors are shared by shape). */
static int describe_fp8(const Blaslt *b, Prepared *p, Err *err) {
    int ta = OP_T, tb = OP_N, a_mode = p->both_1x128 ? SCALE_VEC128_32F : SCALE_BLK128x128_32F, b_mode = SCALE_VEC128_32F;
    uint64_t m = (uint64_t)p->m, n = (uint64_t)p->n, k = (uint64_t)p->k;
    return check(b, b->desc_create(&p->desc, COMPUTE_32F, R_32F), "cublasLtMatmulDescCreate", err) ||
           check(b, b->desc_set(p->desc, DESC_TRANSA, &ta, sizeof ta), "set TRANSA", err) ||
           check(b, b->desc_set(p->desc, DESC_TRANSB, &tb, sizeof tb), "set TRANSB", err) ||
           check(b, b->desc_set(p->desc, DESC_A_SCALE_MODE, &a_mode, sizeof a_mode), "set A_SCALE_MODE (CUDA >= 12.9)", err) ||
           check(b, b->desc_set(p->desc, DESC_B_SCALE_MODE, &b_mode, sizeof b_mode), "set B_SCALE_MODE (CUDA >= 12.9)", err) ||
           check(b, b->layout_create(&p->a, R_8F_E4M3, k, n, p->k), "layout A", err) ||
           check(b, b->layout_create(&p->b, R_8F_E4M3, k, m, p->k), "layout B", err) ||
           check(b, b->layout_create(&p->d, R_32F, n, m, p->n), "layout D", err);
}

static int choose_algo(const Blaslt *b, Prepared *p, Err *err) {
    Pref pref = NULL;
    size_t ws = b->workspace_bytes;
    Heuristic h;
    int found = 0;
    int rc = check(b, b->pref_create(&pref), "cublasLtMatmulPreferenceCreate", err) ||
             check(b, b->pref_set(pref, PREF_MAX_WORKSPACE, &ws, sizeof ws), "set the workspace limit", err);
    for (int which = 0; which < 4 && rc == 0; which++)
        rc = check(b, b->pref_set(pref, PREF_MIN_ALIGNMENT_A + which, &p->align, sizeof p->align), "set an alignment", err);
    if (rc == 0)
        rc = check(b, b->heuristic(b->handle, p->desc, p->a, p->b, p->d, p->d, pref, 1, &h, &found),
                   "cublasLtMatmulAlgoGetHeuristic", err);
    if (pref) b->pref_destroy(pref);
    if (rc) return -1;
    if (found < 1)
        return err_set(err, "cuBLASLt has no %s algorithm for a %s GEMM of m=%lld n=%lld k=%lld on this GPU",
                       p->fp8 ? "block-scaled FP8" : p->bf16 ? "TF32 (bf16 operands)" : "fp32", p->wgrad ? "wgrad" : "forward", (long long)p->m,
                       (long long)p->n, (long long)p->k);
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

/* The prepared shape (fp8, wgrad, m, n, k, alignment): from the cache, or made now (and
 * kept unless the cache is full: then *fresh holds it and the caller frees it). */
static const Prepared *prepared(Blaslt *b, Prepared key, Prepared *fresh, Err *err) {
    for (size_t i = 0; i < b->cache.len; i++) {
        const Prepared *p = &b->cache.data[i];
        if (p->fp8 == key.fp8 && p->wgrad == key.wgrad && p->bf16 == key.bf16 && p->both_1x128 == key.both_1x128 &&
            p->m == key.m && p->n == key.n && p->k == key.k && p->align == key.align)
            return p;
    }
    *fresh = key;
    if ((key.fp8 ? describe_fp8(b, fresh, err) : describe(b, fresh, err)) || choose_algo(b, fresh, err)) {
        prepared_free(b, fresh);
        return NULL;
    }
    if (b->cache.len >= MAX_CACHED) return fresh;
    VEC_PUSH(b->cache, *fresh);
    return &b->cache.data[b->cache.len - 1];
}

int blaslt_gemm(Blaslt *b, const CudaGemm *g, CuStream s, Err *err) {
    if (g->m <= 0 || g->n <= 0 || g->k <= 0)
        return err_internal(err, "cuBLASLt GEMM of m=%lld n=%lld k=%lld", (long long)g->m, (long long)g->n, (long long)g->k);
    Prepared fresh;
    const CuPtr ptrs[] = {g->a, g->b, g->out};
    Prepared key = {.wgrad = g->wgrad, .bf16 = g->bf16_operands, .m = g->m, .n = g->n, .k = g->k,
                    .align = alignment_of(ptrs, 3)};
    const Prepared *p = prepared(b, key, &fresh, err);
    if (!p) return -1;
    const float one = 1.0f, zero = 0.0f;
    /* A is w (forward) or x (wgrad): the second operand in CudaGemm's order. */
    const void *a = (const void *)(uintptr_t)g->b, *bb = (const void *)(uintptr_t)g->a;
    void *d = (void *)(uintptr_t)g->out;
    int rc = check(b, b->matmul(b->handle, p->desc, &one, a, p->a, bb, p->b, &zero, d, p->d, d, p->d, &p->algo,
                                (void *)(uintptr_t)b->workspace, p->workspace, s),
                   "cublasLtMatmul", err);
    if (p == &fresh) prepared_free(b, &fresh);
    return rc;
}

/* The weight gradient's M (rows of dw) a multiple of 4 as well: its scales' leading dimension is then
 * M itself, where cuBLASLt's implied one (M, or M rounded up to 4, as PyTorch pads) cannot differ. */
int blaslt_fp8_check(const CudaFp8Gemm *g, Err *err) {
    if (g->both_1x128 && g->m % 4)
        return err_set(err, "fp8_matmul weight gradient with %lld rows: cuBLASLt's 1x128 scales need the rows a multiple "
                            "of 4",
                       (long long)g->m);
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
    Prepared key = {.fp8 = 1, .both_1x128 = g->both_1x128, .m = g->m, .n = g->n, .k = g->k, .align = alignment_of(ptrs, 3)};
    const Prepared *p = prepared(b, key, &fresh, err);
    if (!p) return -1;
    const void *sb = (const void *)(uintptr_t)g->sb, *sa = (const void *)(uintptr_t)g->sa;
    const float one = 1.0f, zero = 0.0f;
    void *d = (void *)(uintptr_t)g->out;
    int rc = check(b, b->desc_set(p->desc, DESC_A_SCALE_POINTER, &sb, sizeof sb), "set A_SCALE_POINTER", err) ||
                     check(b, b->desc_set(p->desc, DESC_B_SCALE_POINTER, &sa, sizeof sa), "set B_SCALE_POINTER", err) ||
                     check(b, b->matmul(b->handle, p->desc, &one, (const void *)(uintptr_t)g->qb, p->a,
                                        (const void *)(uintptr_t)g->qa, p->b, &zero, d, p->d, d, p->d, &p->algo,
                                        (void *)(uintptr_t)b->workspace, p->workspace, s),
                           "cublasLtMatmul (FP8)", err)
                 ? -1
                 : 0;
    if (p == &fresh) prepared_free(b, &fresh);
    return rc;
}
