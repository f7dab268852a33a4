/* A kernel's loop description rendered to LLVM IR through the LLVM-C API:
 *   void name(float **bufs, i64 lo, i64 hi)
 *   for r in [lo, hi): one col loop per reduction, then one col loop for the stores.
 * Row-level values are emitted before the col loop that reads them, so they dominate it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "emit.h"

typedef struct Emitter {
    LLVMContextRef ctx;
    LLVMModuleRef mod;
    LLVMBuilderRef b, at_entry; /* at_entry: before the entry block's branch, for allocas */
    LLVMTypeRef f64, f32, i64, fptr;
    LLVMValueRef fn;
    const KernelDesc *k;
    LLVMValueRef *bufs;
    LLVMValueRef row, col;
    LLVMValueRef lead_idx[IR_MAX_RANK];
    LLVMValueRef *row_memo, *loop_memo;
} Emitter;

static LLVMValueRef f64c(Emitter *e, double v) { return LLVMConstReal(e->f64, v); }
static LLVMValueRef i64c(Emitter *e, int64_t v) { return LLVMConstInt(e->i64, (unsigned long long)v, 1); }

/* double name(double) from libm or an LLVM intrinsic; declared once per module. */
static LLVMValueRef call1(Emitter *e, const char *name, LLVMValueRef x) {
    LLVMTypeRef ty = LLVMFunctionType(e->f64, &e->f64, 1, 0);
    LLVMValueRef f = LLVMGetNamedFunction(e->mod, name);
    if (!f) f = LLVMAddFunction(e->mod, name, ty);
    return LLVMBuildCall2(e->b, ty, f, &x, 1, "");
}

/* ---- arithmetic, one function per op (the interpreter's double formulas) ---- */
typedef LLVMValueRef (*MathFn)(Emitter *e, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c);

static LLVMValueRef m_neg(Emitter *e, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) { (void)b, (void)c; return LLVMBuildFNeg(e->b, a, ""); }
static LLVMValueRef m_exp(Emitter *e, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) { (void)b, (void)c; return call1(e, "exp", a); }
static LLVMValueRef m_log(Emitter *e, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) { (void)b, (void)c; return call1(e, "log", a); }
static LLVMValueRef m_sqrt(Emitter *e, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) { (void)b, (void)c; return call1(e, "llvm.sqrt.f64", a); }
static LLVMValueRef m_abs(Emitter *e, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) { (void)b, (void)c; return call1(e, "llvm.fabs.f64", a); }
static LLVMValueRef m_recip(Emitter *e, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) { (void)b, (void)c; return LLVMBuildFDiv(e->b, f64c(e, 1.0), a, ""); }
static LLVMValueRef m_rsqrt(Emitter *e, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) { return m_recip(e, m_sqrt(e, a, b, c), b, c); }
static LLVMValueRef m_sigmoid(Emitter *e, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
    LLVMValueRef ex = m_exp(e, m_neg(e, a, b, c), b, c);
    return m_recip(e, LLVMBuildFAdd(e->b, f64c(e, 1.0), ex, ""), b, c);
}
static LLVMValueRef m_silu(Emitter *e, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) { return LLVMBuildFMul(e->b, a, m_sigmoid(e, a, b, c), ""); }
static LLVMValueRef m_add(Emitter *e, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) { (void)c; return LLVMBuildFAdd(e->b, a, b, ""); }
static LLVMValueRef m_sub(Emitter *e, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) { (void)c; return LLVMBuildFSub(e->b, a, b, ""); }
static LLVMValueRef m_mul(Emitter *e, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) { (void)c; return LLVMBuildFMul(e->b, a, b, ""); }
static LLVMValueRef m_div(Emitter *e, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) { (void)c; return LLVMBuildFDiv(e->b, a, b, ""); }
/* NaN in either operand gives NaN, as torch.maximum/minimum. */
static LLVMValueRef pick_nan(Emitter *e, LLVMRealPredicate pred, LLVMValueRef a, LLVMValueRef b) {
    LLVMValueRef better = LLVMBuildSelect(e->b, LLVMBuildFCmp(e->b, pred, a, b, ""), a, b, "");
    return LLVMBuildSelect(e->b, LLVMBuildFCmp(e->b, LLVMRealUNO, a, b, ""), f64c(e, NAN), better, "");
}
static LLVMValueRef m_max(Emitter *e, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) { (void)c; return pick_nan(e, LLVMRealOGT, a, b); }
static LLVMValueRef m_min(Emitter *e, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) { (void)c; return pick_nan(e, LLVMRealOLT, a, b); }
/* `cond != 0` is true for NaN, hence the unordered compare. */
static LLVMValueRef m_where(Emitter *e, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
    return LLVMBuildSelect(e->b, LLVMBuildFCmp(e->b, LLVMRealUNE, a, f64c(e, 0.0), ""), b, c, "");
}
static LLVMValueRef m_f32(Emitter *e, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
    (void)b, (void)c;
    return LLVMBuildFPExt(e->b, LLVMBuildFPTrunc(e->b, a, e->f32, ""), e->f64, "");
}

/* base/numeric.c's float_to_bf16 in integer ops: a NaN keeps its top bits with the quiet
 * bit set; anything else rounds to nearest even at bit 16 (overflowing into inf as it should). */
static LLVMValueRef m_bf16(Emitter *e, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
    (void)b, (void)c;
    LLVMTypeRef i32 = LLVMInt32TypeInContext(e->ctx);
    LLVMValueRef u = LLVMBuildBitCast(e->b, LLVMBuildFPTrunc(e->b, a, e->f32, ""), i32, "");
    LLVMValueRef odd = LLVMBuildAnd(e->b, LLVMBuildLShr(e->b, u, LLVMConstInt(i32, 16, 0), ""), LLVMConstInt(i32, 1, 0), "");
    LLVMValueRef up = LLVMBuildAdd(e->b, u, LLVMBuildAdd(e->b, LLVMConstInt(i32, 0x7fff, 0), odd, ""), "");
    LLVMValueRef quiet = LLVMBuildOr(e->b, u, LLVMConstInt(i32, 0x00400000, 0), "");
    LLVMValueRef abs = LLVMBuildAnd(e->b, u, LLVMConstInt(i32, 0x7fffffff, 0), "");
    LLVMValueRef nan = LLVMBuildICmp(e->b, LLVMIntUGT, abs, LLVMConstInt(i32, 0x7f800000, 0), "");
    LLVMValueRef bits = LLVMBuildAnd(e->b, LLVMBuildSelect(e->b, nan, quiet, up, ""), LLVMConstInt(i32, 0xffff0000u, 0), "");
    return LLVMBuildFPExt(e->b, LLVMBuildBitCast(e->b, bits, e->f32, ""), e->f64, "");
}

static const MathFn math_fns[K_OP_COUNT] = {
    [K_F32] = m_f32,   [K_BF16] = m_bf16,   [K_NEG] = m_neg,         [K_EXP] = m_exp,   [K_LOG] = m_log,   [K_SQRT] = m_sqrt,
    [K_RSQRT] = m_rsqrt, [K_RECIP] = m_recip,   [K_ABS] = m_abs,   [K_SIGMOID] = m_sigmoid, [K_SILU] = m_silu,
    [K_ADD] = m_add,   [K_SUB] = m_sub,         [K_MUL] = m_mul,   [K_DIV] = m_div,   [K_MAX_NAN] = m_max,
    [K_MIN_NAN] = m_min, [K_WHERE] = m_where,
};

/* ---- loops ---- */
typedef struct Loop {
    LLVMValueRef var;
    LLVMBasicBlockRef cond, exit;
} Loop;

static LLVMValueRef alloca_at_entry(Emitter *e, LLVMTypeRef ty) { return LLVMBuildAlloca(e->at_entry, ty, ""); }

static LLVMValueRef loop_begin(Emitter *e, Loop *l, LLVMValueRef lo, LLVMValueRef hi) {
    l->var = alloca_at_entry(e, e->i64);
    LLVMBuildStore(e->b, lo, l->var);
    l->cond = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "cond");
    LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "body");
    l->exit = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "exit");
    LLVMBuildBr(e->b, l->cond);
    LLVMPositionBuilderAtEnd(e->b, l->cond);
    LLVMValueRef i = LLVMBuildLoad2(e->b, e->i64, l->var, "i");
    LLVMBuildCondBr(e->b, LLVMBuildICmp(e->b, LLVMIntSLT, i, hi, ""), body, l->exit);
    LLVMPositionBuilderAtEnd(e->b, body);
    return LLVMBuildLoad2(e->b, e->i64, l->var, "i");
}

static void loop_end(Emitter *e, Loop *l) {
    LLVMValueRef i = LLVMBuildLoad2(e->b, e->i64, l->var, "");
    LLVMBuildStore(e->b, LLVMBuildNSWAdd(e->b, i, i64c(e, 1), ""), l->var);
    LLVMBuildBr(e->b, l->cond);
    LLVMPositionBuilderAtEnd(e->b, l->exit);
}

/* ---- expressions ---- */
static LLVMValueRef elem_ptr(Emitter *e, int buf, LLVMValueRef index) {
    return LLVMBuildGEP2(e->b, e->f32, e->bufs[buf], &index, 1, "");
}

static LLVMValueRef emit_load(Emitter *e, const KExpr *x) {
    LLVMValueRef off = i64c(e, 0);
    for (int d = 0; d < e->k->nlead; d++)
        if (x->rstride[d]) off = LLVMBuildNSWAdd(e->b, off, LLVMBuildNSWMul(e->b, e->lead_idx[d], i64c(e, x->rstride[d]), ""), "");
    if (x->space == KS_ELEM && x->cstride) off = LLVMBuildNSWAdd(e->b, off, LLVMBuildNSWMul(e->b, e->col, i64c(e, x->cstride), ""), "");
    LLVMValueRef v = LLVMBuildLoad2(e->b, e->f32, elem_ptr(e, x->buf, off), "");
    return LLVMBuildFPExt(e->b, v, e->f64, "");
}

static int is_reduction(KOp op) { return op == K_RSUM || op == K_RMAX_NAN || op == K_RMAX; }

static LLVMValueRef emit_row(Emitter *e, int id);

/* Emits, at row level, every row value the col loop computing expression id will read. */
static void emit_row_deps(Emitter *e, int id, char *seen) {
    if (id < 0 || seen[id]) return;
    seen[id] = 1;
    const KExpr *x = &e->k->exprs.data[id];
    if (x->space == KS_ROW) {
        emit_row(e, id);
        return;
    }
    for (int a = 0; a < 3; a++) emit_row_deps(e, x->args[a], seen);
}

static LLVMValueRef compute(Emitter *e, const KExpr *x, LLVMValueRef (*get)(Emitter *, int)) {
    if (x->op == K_LOAD) return emit_load(e, x);
    if (x->op == K_CONST) return f64c(e, x->value);
    LLVMValueRef a[3] = {NULL, NULL, NULL};
    for (int i = 0; i < 3; i++)
        if (x->args[i] >= 0) a[i] = get(e, x->args[i]);
    return math_fns[x->op](e, a[0], a[1], a[2]);
}

/* Inside a col loop: per-element values are memoised for this loop only. */
static LLVMValueRef emit_elem(Emitter *e, int id) {
    const KExpr *x = &e->k->exprs.data[id];
    if (x->space == KS_ROW) return e->row_memo[id];
    if (!e->loop_memo[id]) e->loop_memo[id] = compute(e, x, emit_elem);
    return e->loop_memo[id];
}

static LLVMValueRef col_loop_begin(Emitter *e, Loop *l) {
    memset(e->loop_memo, 0, sizeof(LLVMValueRef) * e->k->exprs.len);
    return e->col = loop_begin(e, l, i64c(e, 0), i64c(e, e->k->cols));
}

static LLVMValueRef reduce_step(Emitter *e, KOp op, LLVMValueRef acc, LLVMValueRef v) {
    if (op == K_RSUM) return LLVMBuildFAdd(e->b, acc, v, "");
    LLVMValueRef keep = LLVMBuildSelect(e->b, LLVMBuildFCmp(e->b, LLVMRealOGT, v, acc, ""), v, acc, "");
    if (op == K_RMAX) return keep;
    return LLVMBuildSelect(e->b, LLVMBuildFCmp(e->b, LLVMRealUNO, v, v, ""), f64c(e, NAN), keep, "");
}

static LLVMValueRef emit_reduction(Emitter *e, const KExpr *x) {
    char *seen = xcalloc(e->k->exprs.len, 1);
    emit_row_deps(e, x->args[0], seen);
    free(seen);
    LLVMValueRef acc = alloca_at_entry(e, e->f64);
    LLVMBuildStore(e->b, f64c(e, x->op == K_RSUM ? 0.0 : -INFINITY), acc);
    Loop l;
    col_loop_begin(e, &l);
    LLVMValueRef v = emit_elem(e, x->args[0]);
    LLVMBuildStore(e->b, reduce_step(e, x->op, LLVMBuildLoad2(e->b, e->f64, acc, ""), v), acc);
    loop_end(e, &l);
    return LLVMBuildLoad2(e->b, e->f64, acc, "");
}

static LLVMValueRef emit_row(Emitter *e, int id) {
    if (e->row_memo[id]) return e->row_memo[id];
    const KExpr *x = &e->k->exprs.data[id];
    LLVMValueRef v = is_reduction(x->op) ? emit_reduction(e, x) : compute(e, x, emit_row);
    return e->row_memo[id] = v;
}

/* ---- the function ---- */
static void emit_lead_indices(Emitter *e) {
    int64_t inner = 1;
    for (int d = e->k->nlead - 1; d >= 0; d--) {
        LLVMValueRef q = LLVMBuildSDiv(e->b, e->row, i64c(e, inner), "");
        e->lead_idx[d] = LLVMBuildSRem(e->b, q, i64c(e, e->k->lead[d]), "");
        inner *= e->k->lead[d];
    }
}

static void emit_stores(Emitter *e) {
    const KernelDesc *k = e->k;
    int nin = (int)k->inputs.len, any_elem = 0;
    char *seen = xcalloc(k->exprs.len, 1);
    for (size_t s = 0; s < k->stores.len; s++) {
        const KStore *st = &k->stores.data[s];
        if (k->exprs.data[st->expr].space == KS_ELEM) {
            emit_row_deps(e, st->expr, seen);
            any_elem = 1;
            continue;
        }
        LLVMValueRef v = LLVMBuildFPTrunc(e->b, emit_row(e, st->expr), e->f32, "");
        LLVMBuildStore(e->b, v, elem_ptr(e, nin + st->buf, e->row));
    }
    free(seen);
    if (!any_elem) return;
    Loop l;
    col_loop_begin(e, &l);
    LLVMValueRef at = LLVMBuildNSWAdd(e->b, LLVMBuildNSWMul(e->b, e->row, i64c(e, k->cols), ""), e->col, "");
    for (size_t s = 0; s < k->stores.len; s++) {
        const KStore *st = &k->stores.data[s];
        if (k->exprs.data[st->expr].space != KS_ELEM) continue;
        LLVMBuildStore(e->b, LLVMBuildFPTrunc(e->b, emit_elem(e, st->expr), e->f32, ""), elem_ptr(e, nin + st->buf, at));
    }
    loop_end(e, &l);
}

static void emit_body(Emitter *e) {
    const KernelDesc *k = e->k;
    size_t nbufs = k->inputs.len + k->outputs.len;
    LLVMValueRef bufs_arg = LLVMGetParam(e->fn, 0);
    for (size_t i = 0; i < nbufs; i++) {
        LLVMValueRef idx = i64c(e, (int64_t)i);
        LLVMValueRef p = LLVMBuildGEP2(e->b, e->fptr, bufs_arg, &idx, 1, "");
        e->bufs[i] = LLVMBuildLoad2(e->b, e->fptr, p, "buf");
    }
    Loop rows;
    e->row = loop_begin(e, &rows, LLVMGetParam(e->fn, 1), LLVMGetParam(e->fn, 2));
    emit_lead_indices(e);
    emit_stores(e);
    loop_end(e, &rows);
    LLVMBuildRetVoid(e->b);
}

void emit_kernel(LLVMContextRef ctx, LLVMModuleRef mod, const KernelDesc *k, const char *name) {
    Emitter e = {.ctx = ctx, .mod = mod, .k = k};
    e.f64 = LLVMDoubleTypeInContext(ctx);
    e.f32 = LLVMFloatTypeInContext(ctx);
    e.i64 = LLVMInt64TypeInContext(ctx);
    e.fptr = LLVMPointerType(e.f32, 0);
    LLVMTypeRef params[3] = {LLVMPointerType(e.fptr, 0), e.i64, e.i64};
    e.fn = LLVMAddFunction(mod, name, LLVMFunctionType(LLVMVoidTypeInContext(ctx), params, 3, 0));
    e.b = LLVMCreateBuilderInContext(ctx);
    e.at_entry = LLVMCreateBuilderInContext(ctx);
    LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(ctx, e.fn, "entry");
    LLVMBasicBlockRef start = LLVMAppendBasicBlockInContext(ctx, e.fn, "start");
    LLVMPositionBuilderAtEnd(e.b, entry);
    LLVMPositionBuilderBefore(e.at_entry, LLVMBuildBr(e.b, start));
    LLVMPositionBuilderAtEnd(e.b, start);
    e.bufs = xcalloc(k->inputs.len + k->outputs.len + 1, sizeof(LLVMValueRef));
    e.row_memo = xcalloc(k->exprs.len + 1, sizeof(LLVMValueRef));
    e.loop_memo = xcalloc(k->exprs.len + 1, sizeof(LLVMValueRef));
    emit_body(&e);
    free(e.bufs);
    free(e.row_memo);
    free(e.loop_memo);
    LLVMDisposeBuilder(e.b);
    LLVMDisposeBuilder(e.at_entry);
}
