/* A fused group's loop description rendered to CUDA C: a block per row (a
 * grid-stride loop over rows), threads over cols, shared-memory reductions.
 * The arithmetic is the description's: double math, K_F32 rounding to float.
 * Only the order of a reduction's additions differs from the interpreter
 * (per-thread partial sums, then a tree), see docs/cuda.md for the bound. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda.h"

/* ---- the prelude: device helpers every kernel source starts with ----
 * Plain C++ on purpose: the host-emulation tests compile the same text with g++. */
static const char prelude[] =
    "/* v3c generated kernel */\n"
    "static __device__ __forceinline__ double v3c_inf() { return __longlong_as_double(0x7ff0000000000000ll); }\n"
    "static __device__ __forceinline__ double v3c_nan() { return __longlong_as_double(0x7ff8000000000000ll); }\n"
    "static __device__ __forceinline__ double v3c_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }\n"
    "static __device__ __forceinline__ double v3c_silu(double x) { return x * v3c_sigmoid(x); }\n"
    "static __device__ __forceinline__ double v3c_max_nan(double a, double b) { return isnan(a) || isnan(b) ? v3c_nan() : a > b ? a : b; }\n"
    "static __device__ __forceinline__ double v3c_min_nan(double a, double b) { return isnan(a) || isnan(b) ? v3c_nan() : a < b ? a : b; }\n"
    "/* Reduction steps: 0 sum, 1 max by `>` (NaN ignored), 2 max with NaN propagating. */\n"
    "static __device__ __forceinline__ double v3c_step(int op, double acc, double v) {\n"
    "    if (op == 0) return acc + v;\n"
    "    if (op == 2 && (isnan(acc) || isnan(v))) return v3c_nan();\n"
    "    return v > acc ? v : acc;\n"
    "}\n"
    "/* Tree reduction over the block's partials, for any blockDim.x; every thread gets the result. */\n"
    "static __device__ double v3c_block_reduce(int op, double v, double *red) {\n"
    "    unsigned n = blockDim.x, i = threadIdx.x;\n"
    "    red[i] = v;\n"
    "    __syncthreads();\n"
    "    for (unsigned s = 1; s < n; s *= 2) {\n"
    "        if (i % (2 * s) == 0 && i + s < n) red[i] = v3c_step(op, red[i], red[i + s]);\n"
    "        __syncthreads();\n"
    "    }\n"
    "    double r = red[0];\n"
    "    __syncthreads();\n"
    "    return r;\n"
    "}\n"
    "/* Round to nearest even on the bf16 / f16 grid, as base/numeric.c (NaN quieted, f16 overflow to inf). */\n"
    "static __device__ float v3c_round_bf16(float x) {\n"
    "    unsigned u = __float_as_uint(x);\n"
    "    if ((u & 0x7fffffffu) > 0x7f800000u) return __uint_as_float((u | 0x00400000u) & 0xffff0000u);\n"
    "    u += 0x7fffu + ((u >> 16) & 1u);\n"
    "    return __uint_as_float(u & 0xffff0000u);\n"
    "}\n"
    "static __device__ float v3c_round_f16(float x) {\n"
    "    if (isnan(x) || isinf(x) || x == 0.0f) return x;\n"
    "    int e;\n"
    "    frexp((double)x, &e);\n"
    "    double spacing = ldexp(1.0, e - 11 > -24 ? e - 11 : -24);\n"
    "    double r = rint((double)x / spacing) * spacing;\n"
    "    if (fabs(r) > 65504.0) return (float)(x < 0 ? -v3c_inf() : v3c_inf());\n"
    "    return (float)r;\n"
    "}\n"
    "#define V3C_THREAD_ID ((long long)blockIdx.x * blockDim.x + threadIdx.x)\n"
    "#define V3C_THREADS ((long long)gridDim.x * blockDim.x)\n";

const char *cuda_prelude(void) { return prelude; }

void ktext_param(KernelText *kt, const char *type, const char *name) {
    kt->param_types[kt->nparams++] = type;
    buf_printf(&kt->body, "%s%s%s", kt->nparams > 1 ? ", " : "", type, name);
}

/* ---- expressions ---- */
typedef struct MathForm {
    const char *fmt; /* printf form over the argument texts */
} MathForm;

static const MathForm math_forms[K_OP_COUNT] = {
    [K_F32] = {"(double)(float)(%s)"}, [K_BF16] = {"(double)v3c_round_bf16((float)(%s))"}, [K_NEG] = {"(-%s)"},
    [K_EXP] = {"exp(%s)"}, [K_LOG] = {"log(%s)"}, [K_SQRT] = {"sqrt(%s)"},
    [K_RSQRT] = {"(1.0 / sqrt(%s))"}, [K_RECIP] = {"(1.0 / %s)"}, [K_ABS] = {"fabs(%s)"},
    [K_SIGMOID] = {"v3c_sigmoid(%s)"}, [K_SILU] = {"v3c_silu(%s)"},
    [K_ADD] = {"(%s + %s)"}, [K_SUB] = {"(%s - %s)"}, [K_MUL] = {"(%s * %s)"}, [K_DIV] = {"(%s / %s)"},
    [K_MAX_NAN] = {"v3c_max_nan(%s, %s)"}, [K_MIN_NAN] = {"v3c_min_nan(%s, %s)"},
    [K_WHERE] = {"(%s != 0.0 ? %s : %s)"},
};

/* Reductions: the v3c_step op code and the partial's start value. */
typedef struct ReduceForm {
    int valid, code;
    const char *init;
} ReduceForm;

static const ReduceForm reduce_forms[K_OP_COUNT] = {
    [K_RSUM] = {1, 0, "0.0"}, [K_RMAX] = {1, 1, "-v3c_inf()"}, [K_RMAX_NAN] = {1, 2, "-v3c_inf()"},
};

/* How many args an op reads: K_LOAD and K_CONST leave args[] unset (zeros), so never follow them there. */
static int arg_count(KOp op) {
    if (op == K_LOAD || op == K_CONST) return 0;
    if (op == K_WHERE) return 3;
    return op >= K_ADD && op <= K_MIN_NAN ? 2 : 1;
}

typedef struct Render {
    const KernelDesc *k;
    Buf *out;
    char *row_done;
    const char *bad; /* set when an op has no form */
} Render;

static void var_name(const Render *r, int id, char *name, size_t n) {
    snprintf(name, n, "%c%d", r->k->exprs.data[id].space == KS_ROW ? 'r' : 'e', id);
}

void cuda_literal(Buf *b, double v) {
    if (isnan(v)) buf_puts(b, "v3c_nan()");
    else if (isinf(v)) buf_puts(b, v > 0 ? "v3c_inf()" : "(-v3c_inf())");
    else {
        char text[64];
        format_double(text, sizeof text, v);
        /* Keep it a double literal: "1" would be an int. */
        buf_printf(b, "%s%s", text, strpbrk(text, ".eEn") ? "" : ".0");
    }
}

static void render_load(const Render *r, const KExpr *x, Buf *b) {
    buf_printf(b, "(double)in%d[0", x->buf);
    for (int d = 0; d < r->k->nlead; d++)
        if (x->rstride[d]) buf_printf(b, " + i%d * %lldll", d, (long long)x->rstride[d]);
    if (x->space == KS_ELEM && x->cstride) buf_printf(b, " + col * %lldll", (long long)x->cstride);
    buf_puts(b, "]");
}

/* The right-hand side of expression id (not a reduction). */
static void render_value(Render *r, int id, Buf *b) {
    const KExpr *x = &r->k->exprs.data[id];
    if (x->op == K_LOAD) return render_load(r, x, b);
    /* The interpreter holds a const node as an f32 tensor, so its value is the
     * float nearest the attribute; kernel.c passes the attribute unrounded.
     * Rounding here is exact for the other constants (column counts < 2^24). */
    if (x->op == K_CONST) return cuda_literal(b, (double)(float)x->value);
    if ((unsigned)x->op >= K_OP_COUNT || !math_forms[x->op].fmt) {
        r->bad = "an operation the CUDA renderer does not know";
        buf_puts(b, "0.0");
        return;
    }
    char a[3][24] = {"", "", ""};
    for (int i = 0; i < arg_count(x->op); i++)
        if (x->args[i] >= 0) var_name(r, x->args[i], a[i], sizeof a[i]);
    buf_printf(b, math_forms[x->op].fmt, a[0], a[1], a[2]);
}

static int is_reduction(KOp op) { return (unsigned)op < K_OP_COUNT && reduce_forms[op].valid; }

/* Marks the per-element expressions `id` needs inside one col loop. */
static void mark_elems(const Render *r, int id, char *need) {
    if (id < 0 || need[id] || r->k->exprs.data[id].space == KS_ROW) return;
    need[id] = 1;
    const KExpr *x = &r->k->exprs.data[id];
    for (int a = 0; a < arg_count(x->op); a++) mark_elems(r, x->args[a], need);
}

static void emit_row(Render *r, int id);

/* Row values read by the marked elements come first, at row scope. */
static void emit_row_inputs(Render *r, const char *need) {
    const KernelDesc *k = r->k;
    for (size_t i = 0; i < k->exprs.len; i++) {
        if (!need[i]) continue;
        for (int a = 0; a < arg_count(k->exprs.data[i].op); a++) {
            int arg = k->exprs.data[i].args[a];
            if (arg >= 0 && k->exprs.data[arg].space == KS_ROW) emit_row(r, arg);
        }
    }
}

static void emit_elems(Render *r, const char *need, const char *indent) {
    for (size_t i = 0; i < r->k->exprs.len; i++) {
        if (!need[i]) continue;
        buf_printf(r->out, "%sconst double e%zu = ", indent, i);
        render_value(r, (int)i, r->out);
        buf_puts(r->out, ";\n");
    }
}

static void emit_reduction(Render *r, int id) {
    const KExpr *x = &r->k->exprs.data[id];
    char *need = xcalloc(r->k->exprs.len, 1);
    mark_elems(r, x->args[0], need);
    emit_row_inputs(r, need);
    if (r->k->exprs.data[x->args[0]].space == KS_ROW) emit_row(r, x->args[0]);
    const ReduceForm *f = &reduce_forms[x->op];
    char arg[24];
    var_name(r, x->args[0], arg, sizeof arg);
    buf_printf(r->out, "        double r%d;\n        {\n            double acc = %s;\n", id, f->init);
    buf_printf(r->out, "            for (long long col = threadIdx.x; col < COLS; col += blockDim.x) {\n");
    emit_elems(r, need, "                ");
    buf_printf(r->out, "                acc = v3c_step(%d, acc, %s);\n            }\n", f->code, arg);
    buf_printf(r->out, "            r%d = v3c_block_reduce(%d, acc, v3c_red);\n        }\n", id, f->code);
    free(need);
}

static void emit_row(Render *r, int id) {
    if (r->row_done[id]) return;
    r->row_done[id] = 1;
    const KExpr *x = &r->k->exprs.data[id];
    if (is_reduction(x->op)) return emit_reduction(r, id);
    for (int a = 0; a < arg_count(x->op); a++)
        if (x->args[a] >= 0) emit_row(r, x->args[a]);
    buf_printf(r->out, "        const double r%d = ", id);
    render_value(r, id, r->out);
    buf_puts(r->out, ";\n");
}

/* ---- the kernel ---- */
static void emit_signature(const KernelDesc *k, KernelText *kt) {
    buf_puts(&kt->body, "extern \"C\" __global__ void KNAME(");
    static const char *const in_names[] = {"in0", "in1", "in2", "in3", "in4", "in5", "in6", "in7",
                                           "in8", "in9", "in10", "in11", "in12", "in13", "in14", "in15"};
    static const char *const out_names[] = {"out0", "out1", "out2", "out3", "out4", "out5", "out6", "out7",
                                            "out8", "out9", "out10", "out11", "out12", "out13", "out14", "out15"};
    for (size_t i = 0; i < k->inputs.len; i++) ktext_param(kt, "const float *__restrict__ ", in_names[i]);
    for (size_t i = 0; i < k->outputs.len; i++) ktext_param(kt, "float *__restrict__ ", out_names[i]);
    buf_puts(&kt->body, ") {\n    extern __shared__ double v3c_red[];\n");
}

static void emit_lead_indices(const KernelDesc *k, Buf *b) {
    int64_t inner = 1;
    for (int d = k->nlead - 1; d >= 0; d--) {
        buf_printf(b, "        const long long i%d = (row / %lldll) %% %lldll;\n        (void)i%d;\n", d, (long long)inner,
                   (long long)k->lead[d], d);
        inner *= k->lead[d];
    }
}

static void emit_stores(Render *r) {
    const KernelDesc *k = r->k;
    char *need = xcalloc(k->exprs.len, 1);
    int any_elem = 0;
    for (size_t s = 0; s < k->stores.len; s++) {
        const KStore *st = &k->stores.data[s];
        if (k->exprs.data[st->expr].space == KS_ELEM) {
            mark_elems(r, st->expr, need);
            any_elem = 1;
            continue;
        }
        emit_row(r, st->expr);
        buf_printf(r->out, "        if (threadIdx.x == 0) out%d[row] = (float)r%d;\n", st->buf, st->expr);
    }
    if (any_elem) {
        emit_row_inputs(r, need);
        buf_puts(r->out, "        for (long long col = threadIdx.x; col < COLS; col += blockDim.x) {\n");
        emit_elems(r, need, "            ");
        for (size_t s = 0; s < k->stores.len; s++) {
            const KStore *st = &k->stores.data[s];
            if (k->exprs.data[st->expr].space == KS_ELEM)
                buf_printf(r->out, "            out%d[row * COLS + col] = (float)e%d;\n", st->buf, st->expr);
        }
        buf_puts(r->out, "        }\n");
    }
    free(need);
}

int cuda_render_fused(const KernelDesc *k, KernelText *kt, Err *err) {
    if (k->inputs.len + k->outputs.len > CUDA_MAX_PARAMS)
        return err_set(err, "fused kernel with %zu buffers: the CUDA generator takes at most %d",
                       k->inputs.len + k->outputs.len, (int)CUDA_MAX_PARAMS);
    kt->family = "fused";
    kt->smem_per_thread = (int)sizeof(double);
    buf_printf(&kt->body, "#define ROWS %lldll\n#define COLS %lldll\n", (long long)k->rows, (long long)k->cols);
    emit_signature(k, kt);
    Render r = {k, &kt->body, xcalloc(k->exprs.len + 1, 1), NULL};
    buf_puts(&kt->body, "    for (long long row = blockIdx.x; row < ROWS; row += gridDim.x) {\n");
    emit_lead_indices(k, &kt->body);
    emit_stores(&r);
    buf_puts(&kt->body, "    }\n}\n");
    free(r.row_done);
    if (r.bad) return err_set(err, "fused kernel: %s", r.bad);
    return 0;
}
