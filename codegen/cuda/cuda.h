/* codegen/cuda: the CUDA code generator. A graph at concrete B, T becomes a
 * plan: generated kernels (CUDA C, one self-contained source each, deduplicated
 * by text), their launches in graph order, and library calls (cuBLASLt GEMMs).
 *
 * Device data layout is the interpreter's host layout (ir.h, Tensor): float
 * dtypes as float (bf16/f16 values rounded), i32 as int, i64 as long long,
 * u8/e4m3/e5m2 as bytes; so a kernel's result can be compared with the
 * interpreter's bit for bit. Kernels take only pointers: every shape is a
 * constant in the source. */
#ifndef V3C_CODEGEN_CUDA_H
#define V3C_CODEGEN_CUDA_H

#include "../fuse.h"
#include "../kernel.h"

enum { CUDA_MAX_PARAMS = 16, CUDA_BLOCK = 256 };

/* One distinct kernel. Its name is derived from its text, so equal kernels of
 * different layers are one kernel. */
typedef struct CudaKernel {
    char *name;   /* extern "C" symbol */
    char *source; /* complete CUDA C */
    const char *family; /* "fused", "rope", ...: what generated it */
    int nparams;
    const char *param_types[CUDA_MAX_PARAMS]; /* C types, e.g. "const float *" */
    int smem_per_thread; /* dynamic shared memory bytes per thread of a block */
} CudaKernel;

/* What one kernel parameter is bound to at a launch. */
typedef enum CudaArgKind {
    CARG_VALUE,   /* a graph value's buffer */
    CARG_SCRATCH, /* a temporary of `bytes`, valid for the node's launches */
    CARG_STATUS,  /* the run's int status word: kernels store a nonzero code on bad data */
} CudaArgKind;

typedef struct CudaArg {
    CudaArgKind kind;
    ValueId value;
    int64_t offset; /* CARG_VALUE: bytes into the value's buffer (a window, so equal copies share a kernel) */
    int64_t bytes;
    int scratch; /* CARG_SCRATCH: which of the node's temporaries (launches of one node share them) */
} CudaArg;

typedef struct CudaLaunch {
    int kernel;  /* index into CudaPlan.kernels */
    int32_t node;
    int64_t grid, block;
    int nargs;
    CudaArg args[CUDA_MAX_PARAMS];
} CudaLaunch;

/* Library calls: GEMMs through cuBLASLt (row-major; y[m,n] = x[m,k] w[n,k]^T unless said). */
typedef enum CudaLibKind {
    LIB_GEMM,         /* linear */
    LIB_GEMM_WGRAD,   /* linear_wgrad: dw[n,k] = g[m,n]^T x[m,k] */
    LIB_GROUPED_GEMM, /* grouped_linear: per expert, rows by counts */
    LIB_GROUPED_WGRAD,
    LIB_FP8_GEMM,       /* fp8_matmul wgrad=0: A scales VEC128_32F (1x128), B BLK128x128_32F */
    LIB_FP8_GEMM_WGRAD, /* fp8_matmul wgrad=1: both 128x1 (VEC128_32F along tokens) */
    /* The EP exchanges (ops ep_dispatch / ep_combine): an all-to-all-v over the
     * EP group (NCCL), m rows of n columns of the input, groups = the ranks. */
    LIB_EP_DISPATCH,
    LIB_EP_COMBINE,
    /* sdpa and sdpa_grad as batched GEMMs around generated softmax kernels (CudaAttention). */
    LIB_ATTENTION,
    LIB_ATTENTION_GRAD,
    LIB_KIND_COUNT
} CudaLibKind;

/* Attention on the GEMM path (codegen/cuda/cuda_lib_attention.c): per batch row b and
 * chunk of heads_per_round heads, the executor runs, with q [B,T,h,dk], k [B,S,h,dk],
 * v [B,S,h,dv] read in place (leading dimension h*d, batch stride d):
 *   sdpa:      P = scale q k^T (GEMM into scratch ATT_P); softmax (launch `softmax`);
 *              out = P v (GEMM).
 *   sdpa_grad: P as above; dP = g v^T (GEMM into scratch ATT_DS); dS = P (dP - rowsum(P dP))
 *              in place (launch `dscores`); dv = P^T g; dq = scale dS k; dk = scale dS^T q.
 * The scores are fp32 sums and the softmax is computed in fp64 from them, so the result is
 * within a few fp32 roundings of the interpreter's all-fp64 attention, not bit for bit
 * (CudaPlanOptions.exact_attention keeps the bit-exact kernels). Masked scores (causal) are
 * computed and then zeroed: the GEMMs run over the whole square. */
enum { ATT_P, ATT_DS };
typedef struct CudaAttention {
    int64_t batch, heads, t, s, dk, dv;
    int64_t heads_per_round; /* divides heads; bounds the scratch to heads_per_round * t * s floats */
    float scale;
    /* bf16 operands and results (the bf16 pass): the row kernels round P and dS to bf16, as
     * flash attention's bf16 P, so every GEMM operand is on the bf16 grid (TF32 products exact);
     * the results are rounded after the call: the first by CudaLibCall.round, sdpa_grad's dk and
     * dv by round_rest. */
    int bf16;
    CudaLaunch softmax; /* over scratch ATT_P, one round's rows */
    CudaLaunch dscores; /* sdpa_grad: over ATT_P and ATT_DS */
    CudaLaunch round_rest[2];
} CudaAttention;

typedef struct CudaLibCall {
    CudaLibKind kind;
    int32_t node;
    int64_t m, n, k, groups;
    /* A bf16 result (bf16 GEMMs, fp8_matmul out=bf16): the kernel that rounds the GEMM's fp32 output
     * to the bf16 grid in place, which the executor launches right after the call (after every expert
     * of a grouped one). It lives here, not in the plan's launches, because a node's launches run
     * before its call. round.kernel < 0: the result is f32 and needs none. */
    CudaLaunch round;
    CudaAttention att; /* LIB_ATTENTION, LIB_ATTENTION_GRAD */
} CudaLibCall;

/* The launches a call makes itself, besides its GEMMs (round, softmax, dscores, round_rest):
 * up to CUDA_CALL_LAUNCHES, into out; returns how many. */
enum { CUDA_CALL_LAUNCHES = 5 };
int cuda_call_launches(const CudaLibCall *c, const CudaLaunch **out);
/* Rounds of an attention call per step (batch rows times chunks of heads); 0 without queries. */
int64_t cuda_attention_rounds(const CudaAttention *a);
/* Launches a call makes itself per step: an attention's row kernels once per round, the roundings once. */
int64_t cuda_call_step_launches(const CudaLibCall *c);

/* LIB_FP8_GEMM_WGRAD (dw[n,k] = sum over m tokens of qa[m,n] qb[m,k]): cuBLASLt's FP8 GEMM
 * contracts only an innermost axis, so the node's launches (which run before its call) copy
 * each operand transposed into scratch: qa^T [n, mp] and qb^T [k, mp] bytes, the tokens padded
 * with zeros to mp = fp8_wgrad_tokens(m), and their 128x1 scales as the 1x128 scales of the
 * transposed operands, sa^T[kb * ld + r] with ld = fp8_scale_ld(rows) (zeros past the rows).
 * These are the scratch slots. */
enum { FP8_WGRAD_QA_T, FP8_WGRAD_SA_T, FP8_WGRAD_QB_T, FP8_WGRAD_SB_T };
static inline int64_t fp8_wgrad_tokens(int64_t m) { return (m + 127) / 128 * 128; }
/* The scales' leading dimension: rows rounded up to 4 floats, so every column of scales starts 16-byte aligned. */
static inline int64_t fp8_scale_ld(int64_t rows) { return (rows + 3) / 4 * 4; }

/* LIB_FP8_GEMM (y[m,n] = qa[m,k] qb[n,k]^T): the operands stay where they are, but their scales
 * are copied (the node's launches, before its call) into the layouts PyTorch's _scaled_mm hands
 * cuBLASLt: qa's 1x128 scales sa [m, kblocks] "outer-dim major", saT[kb * fp8_scale_ld(m) + r]
 * (zeros for the padding rows r >= m), and qb's 128x128 scales sb [nblocks, kblocks] row-major
 * with the K blocks padded to 4, sbP[nb * fp8_scale_ld(kblocks) + kb] (zeros past kblocks);
 * kblocks = ceil(k/128), nblocks = ceil(n/128). These are the scratch slots. */
enum { FP8_FWD_SA, FP8_FWD_SB };

const char *cuda_lib_kind_name(CudaLibKind k);

/* Choices a plan may make differently; all zero is the default. */
typedef struct CudaPlanOptions {
    /* sdpa and sdpa_grad by the fp64 kernels of cuda_tpl_attention.c, bit for bit with the
     * interpreter (the tests that compare whole graphs bit for bit), instead of cuBLASLt GEMMs
     * (CudaAttention: tensor-core speed, fp32 sums). */
    int exact_attention;
    /* The GEMM path's score scratch per slot (CudaAttention.heads_per_round); 0: 256 MiB. */
    int64_t attention_scratch_bytes;
} CudaPlanOptions;

typedef struct CudaPlan {
    int64_t b, t;
    CudaPlanOptions opts;
    VEC(CudaKernel) kernels; /* distinct */
    VEC(CudaLaunch) launches;
    VEC(CudaLibCall) calls;
    StrMap by_name;          /* kernel name -> index in kernels */
    int64_t generated; /* kernel sources generated, before deduplication */
    int64_t aliases;   /* nodes that move no data (reshape, sources) */
} CudaPlan;

/* Plans g at batch b, sequence t (opts NULL: the defaults). An op with neither a template
 * nor a library mapping is a user error naming it. */
int cuda_plan_build(const Graph *g, int64_t b, int64_t t, const CudaPlanOptions *opts, CudaPlan *p, Err *err);
void cuda_plan_free(CudaPlan *p);

/* ---- building blocks (cuda_render.c, cuda_templates*.c) ---- */

/* Collects the kernels one node (or fused group) needs. */
typedef struct CudaEmit {
    CudaPlan *plan;
    int32_t node;
} CudaEmit;

/* A kernel text in the making: the renderer fills body and params, cuda_emit_kernel names it. */
typedef struct KernelText {
    const char *family;
    Buf body; /* everything after the prelude; KNAME stands for the kernel's name */
    int nparams;
    const char *param_types[CUDA_MAX_PARAMS];
    int smem_per_thread;
} KernelText;

void ktext_param(KernelText *kt, const char *type, const char *name);
/* Names kt (family + hash of its text), adds it to the plan unless an equal one
 * is there, and records a launch with these args over `threads` work items (or
 * `blocks` blocks of CUDA_BLOCK threads when blocks > 0). Frees kt's text. */
int cuda_emit_kernel(CudaEmit *em, KernelText *kt, const CudaArg *args, int nargs, int64_t threads, int64_t blocks);

/* The device helpers every kernel source starts with (math, rounding, block reductions). */
const char *cuda_prelude(void);

/* Renders a fused group's loop description: a block per row, threads over cols. */
int cuda_render_fused(const KernelDesc *k, KernelText *kt, Err *err);

/* A node's template, when its op has one: 0 done, -1 error, 1 no template. */
int cuda_template_node(CudaEmit *em, const Graph *g, const Node *n, int64_t b, int64_t t, Err *err);
/* A node's library call, when its op maps to one: 0 done, -1 error, 1 not a library op. */
int cuda_library_node(CudaPlan *p, const Graph *g, const Node *n, int64_t b, int64_t t, Err *err);

/* LIB_FP8_GEMM_WGRAD's operand copies into the FP8_WGRAD_* scratch slots, launched for node
 * n before its call (cuda_tpl_fp8.c). */
int cuda_fp8_wgrad_operands(CudaEmit *em, const Node *n, const CudaLibCall *call);
/* LIB_FP8_GEMM's scale copies into the FP8_FWD_* scratch slots, launched for node n before its
 * call (cuda_tpl_fp8.c). */
int cuda_fp8_fwd_scales(CudaEmit *em, const Node *n, const CudaLibCall *call);

/* A double literal that reads back exactly (inf and NaN through the prelude's helpers). */
void cuda_literal(Buf *b, double v);
/* The C type of one element of dtype dt as held on the device. */
const char *cuda_elem_type(DType dt);

/* Shorthands for launch arguments. */
static inline CudaArg carg_value(ValueId v) { return (CudaArg){.kind = CARG_VALUE, .value = v}; }
static inline CudaArg carg_value_at(ValueId v, int64_t offset_bytes) {
    return (CudaArg){.kind = CARG_VALUE, .value = v, .offset = offset_bytes};
}
static inline CudaArg carg_scratch(int which, int64_t bytes) {
    return (CudaArg){.kind = CARG_SCRATCH, .value = -1, .bytes = bytes, .scratch = which};
}
static inline CudaArg carg_status(void) { return (CudaArg){.kind = CARG_STATUS, .value = -1}; }

/* Status codes kernels store (runtime maps them to messages). */
enum { CUDA_STATUS_OK = 0, CUDA_STATUS_INDEX = 1, CUDA_STATUS_NAN = 2, CUDA_STATUS_COUNTS = 3 };

#endif
