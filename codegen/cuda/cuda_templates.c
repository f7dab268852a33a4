/* Template helpers, the lookup of a node's template, and the library mapping
 * of the GEMM family (cuBLASLt calls, not kernels). */
#include <stdio.h>
#include <string.h>

#include "cuda_tpl.h"

/* ---- helpers ---- */
int tpl_shape(const Tpl *c, ValueId v, int64_t *shape) {
    const Type *ty = ir_type(c->g, v);
    return type_concrete(ty, c->b, c->t, shape, c->err) ? -1 : ty->rank;
}

int64_t shape_prod(const int64_t *s, int from, int to) {
    int64_t p = 1;
    for (int i = from; i < to; i++) p *= s[i];
    return p;
}

int64_t tpl_numel(const Tpl *c, ValueId v) {
    int64_t s[IR_MAX_RANK];
    int rank = tpl_shape(c, v, s);
    return rank < 0 ? -1 : shape_prod(s, 0, rank);
}

void tpl_begin(KernelText *kt, const char *family) {
    memset(kt, 0, sizeof *kt);
    kt->family = family;
}

void tpl_define(KernelText *kt, const char *name, int64_t v) { buf_printf(&kt->body, "#define %s %lldll\n", name, (long long)v); }

static const char *const elem_types[DT_COUNT] = {
    [DT_F32] = "float", [DT_BF16] = "float", [DT_F16] = "float", [DT_E4M3] = "unsigned char",
    [DT_E5M2] = "unsigned char", [DT_I32] = "int", [DT_I64] = "long long", [DT_U8] = "unsigned char",
};
static const char *const in_types[DT_COUNT] = {
    [DT_F32] = "const float *", [DT_BF16] = "const float *", [DT_F16] = "const float *",
    [DT_E4M3] = "const unsigned char *", [DT_E5M2] = "const unsigned char *", [DT_I32] = "const int *",
    [DT_I64] = "const long long *", [DT_U8] = "const unsigned char *",
};
static const char *const out_types[DT_COUNT] = {
    [DT_F32] = "float *", [DT_BF16] = "float *", [DT_F16] = "float *", [DT_E4M3] = "unsigned char *",
    [DT_E5M2] = "unsigned char *", [DT_I32] = "int *", [DT_I64] = "long long *", [DT_U8] = "unsigned char *",
};

const char *cuda_elem_type(DType dt) { return (unsigned)dt < DT_COUNT ? elem_types[dt] : "float"; }
const char *tpl_in_type(DType dt) { return (unsigned)dt < DT_COUNT ? in_types[dt] : "const float *"; }
const char *tpl_out_type(DType dt) { return (unsigned)dt < DT_COUNT ? out_types[dt] : "float *"; }

void tpl_typedef(KernelText *kt, const char *name, DType dt) {
    buf_printf(&kt->body, "typedef %s %s;\n", cuda_elem_type(dt), name);
}

void tpl_define_store(KernelText *kt, DType out) {
    const char *form = out == DT_BF16 ? "v3c_round_bf16((float)(x))" : out == DT_F16 ? "v3c_round_f16((float)(x))" : "(float)(x)";
    buf_printf(&kt->body, "#define STORE(x) %s\n", form);
}

void tpl_body(KernelText *kt, const char *body) {
    buf_puts(&kt->body, ") {\n");
    buf_puts(&kt->body, body);
}

int tpl_launch(const Tpl *c, KernelText *kt, const CudaArg *args, int nargs, int64_t threads) {
    return cuda_emit_kernel(c->em, kt, args, nargs, threads, 0);
}

int tpl_axis(const Tpl *c, int rank, int64_t dflt) {
    int64_t a = node_int(c->n, "axis", dflt);
    return (int)(a < 0 ? a + rank : a);
}

/* ---- lookup ---- */
static const TplFn *const families[] = {cuda_tpl_basic, cuda_tpl_model, cuda_tpl_grad, cuda_tpl_fp8};

int cuda_template_node(CudaEmit *em, const Graph *g, const Node *n, int64_t b, int64_t t, Err *err) {
    if ((unsigned)n->op >= OP_COUNT) return 1;
    Tpl c = {em, g, n, b, t, err};
    for (size_t f = 0; f < sizeof families / sizeof *families; f++)
        if (families[f][n->op]) return families[f][n->op](&c) ? -1 : 0;
    return 1;
}

/* ---- library calls ---- */
typedef int (*LibFn)(const Tpl *c, CudaLibCall *call);

static int lib_linear(const Tpl *c, CudaLibCall *call) {
    int64_t x[IR_MAX_RANK], w[IR_MAX_RANK];
    int rank = tpl_shape(c, c->n->in[0], x);
    if (rank < 0 || tpl_shape(c, c->n->in[1], w) < 0) return -1;
    *call = (CudaLibCall){.kind = LIB_GEMM, .m = shape_prod(x, 0, rank - 1), .n = w[0], .k = w[1], .groups = 1};
    return 0;
}

static int lib_linear_wgrad(const Tpl *c, CudaLibCall *call) {
    int64_t gs[IR_MAX_RANK], o[IR_MAX_RANK];
    int rank = tpl_shape(c, c->n->in[0], gs);
    if (rank < 0 || tpl_shape(c, c->n->out[0], o) < 0) return -1;
    *call = (CudaLibCall){.kind = LIB_GEMM_WGRAD, .m = shape_prod(gs, 0, rank - 1), .n = o[0], .k = o[1], .groups = 1};
    return 0;
}

static int lib_grouped(const Tpl *c, CudaLibCall *call) {
    int64_t x[IR_MAX_RANK], w[IR_MAX_RANK];
    if (tpl_shape(c, c->n->in[0], x) < 0 || tpl_shape(c, c->n->in[2], w) < 0) return -1;
    *call = (CudaLibCall){.kind = LIB_GROUPED_GEMM, .m = x[0], .n = w[1], .k = w[2], .groups = w[0]};
    return 0;
}

static int lib_grouped_wgrad(const Tpl *c, CudaLibCall *call) {
    int64_t gs[IR_MAX_RANK], o[IR_MAX_RANK];
    if (tpl_shape(c, c->n->in[0], gs) < 0 || tpl_shape(c, c->n->out[0], o) < 0) return -1;
    *call = (CudaLibCall){.kind = LIB_GROUPED_WGRAD, .m = gs[0], .n = o[1], .k = o[2], .groups = o[0]};
    return 0;
}

/* wgrad=0: qa [...,K] x qb [N,K]; wgrad=1: qa [...,N], qb [...,K] over M tokens. */
static int lib_fp8(const Tpl *c, CudaLibCall *call) {
    int64_t a[IR_MAX_RANK], bq[IR_MAX_RANK];
    int ra = tpl_shape(c, c->n->in[0], a), rb = tpl_shape(c, c->n->in[2], bq);
    if (ra < 0 || rb < 0) return -1;
    if (node_int(c->n, "wgrad", 0))
        *call = (CudaLibCall){.kind = LIB_FP8_GEMM_WGRAD, .m = shape_prod(a, 0, ra - 1), .n = a[ra - 1],
                              .k = bq[rb - 1], .groups = 1};
    else
        *call = (CudaLibCall){.kind = LIB_FP8_GEMM, .m = shape_prod(a, 0, ra - 1), .n = bq[0], .k = bq[1], .groups = 1};
    return 0;
}

/* Rows move between ranks: communication, not a kernel. */
static int lib_ep(const Tpl *c, CudaLibCall *call) {
    int64_t x[IR_MAX_RANK];
    int rank = tpl_shape(c, c->n->in[0], x);
    if (rank < 0) return -1;
    CudaLibKind kind = c->n->op == OP_EP_DISPATCH ? LIB_EP_DISPATCH : LIB_EP_COMBINE;
    *call = (CudaLibCall){.kind = kind, .m = shape_prod(x, 0, rank - 1), .n = x[rank - 1], .k = 0,
                          .groups = node_int(c->n, "ranks", 1)};
    return 0;
}

static const LibFn lib_fns[OP_COUNT] = {
    [OP_LINEAR] = lib_linear, [OP_LINEAR_WGRAD] = lib_linear_wgrad, [OP_GROUPED_LINEAR] = lib_grouped,
    [OP_GROUPED_LINEAR_WGRAD] = lib_grouped_wgrad, [OP_FP8_MATMUL] = lib_fp8,
    [OP_EP_DISPATCH] = lib_ep, [OP_EP_COMBINE] = lib_ep, [OP_SDPA] = cuda_lib_attention,
    [OP_SDPA_GRAD] = cuda_lib_attention,
};

/* The bf16 result of a library call: the GEMM leaves fp32 sums (exact products, fp32
 * accumulation), which one pass rounds to the bf16 grid as the interpreter's
 * round_to_dtype does (nearest even). Emitted like any kernel (named by its text,
 * deduplicated), then its launch is moved from the plan into the call record. */
static const char round_bf16_body[] =
    "    for (long long i = V3C_THREAD_ID; i < N; i += V3C_THREADS) y[i] = v3c_round_bf16(y[i]);\n}\n";

static const uint8_t is_gemm[LIB_KIND_COUNT] = {
    [LIB_GEMM] = 1, [LIB_GEMM_WGRAD] = 1, [LIB_GROUPED_GEMM] = 1, [LIB_GROUPED_WGRAD] = 1,
    [LIB_FP8_GEMM] = 1, [LIB_FP8_GEMM_WGRAD] = 1, [LIB_ATTENTION] = 1, [LIB_ATTENTION_GRAD] = 1,
};

int tpl_take_launch(const Tpl *c, CudaLaunch *out) {
    CudaPlan *p = c->em->plan;
    if (p->launches.len == 0) return err_internal(c->err, "CUDA plan: no launch to take");
    *out = p->launches.data[--p->launches.len];
    return 0;
}

int tpl_round_bf16(const Tpl *c, ValueId y, CudaLaunch *out) {
    int64_t numel = tpl_numel(c, y);
    if (numel < 0) return -1;
    KernelText kt;
    tpl_begin(&kt, "round_bf16");
    tpl_define(&kt, "N", numel);
    buf_puts(&kt.body, "extern \"C\" __global__ void KNAME(");
    ktext_param(&kt, "float *", "y");
    tpl_body(&kt, round_bf16_body);
    CudaArg arg = carg_value(y);
    return tpl_launch(c, &kt, &arg, 1, numel) || tpl_take_launch(c, out) ? -1 : 0;
}

/* The first result's rounding (an attention's others: cuda_lib_attention.c). */
static int emit_round(const Tpl *c, CudaLibCall *call) {
    call->round.kernel = -1;
    ValueId y = c->n->out[0];
    if (!is_gemm[call->kind] || ir_type(c->g, y)->dtype != DT_BF16) return 0;
    return tpl_round_bf16(c, y, &call->round);
}

int cuda_library_node(CudaPlan *p, const Graph *g, const Node *n, int64_t b, int64_t t, Err *err) {
    if ((unsigned)n->op >= OP_COUNT || !lib_fns[n->op]) return 1;
    CudaEmit em = {p, (int32_t)(n - g->nodes.data)};
    Tpl c = {&em, g, n, b, t, err};
    CudaLibCall call;
    int rc = lib_fns[n->op](&c, &call);
    if (rc) return rc; /* 1: this node takes a kernel template instead */
    if (emit_round(&c, &call)) return -1;
    call.node = em.node;
    if (call.kind == LIB_FP8_GEMM_WGRAD && cuda_fp8_wgrad_operands(&em, n, &call)) return -1;
    if (call.kind == LIB_FP8_GEMM && cuda_fp8_fwd_scales(&em, n, &call)) return -1;
    VEC_PUSH(p->calls, call);
    return 0;
}
