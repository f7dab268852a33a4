/* codegen: the loop description of one fused group, shared by every renderer.
 *
 * A kernel walks a [rows, cols] iteration space: cols is the last dim of the
 * group's widest shape, rows the product of the others. Each expression lives
 * in one of two spaces: ELEM (one value per (row, col)) or ROW (one value per
 * row: a reduction over cols, or math on such values). Arithmetic is done in
 * double; K_F32 rounds to float where the reference interpreter stores a float,
 * so a generated kernel gives the interpreter's bits. */
#ifndef V3C_CODEGEN_KERNEL_H
#define V3C_CODEGEN_KERNEL_H

#include "../ir/ir.h"
#include "fuse.h"

typedef enum KOp {
    K_LOAD,  /* buffer element at (row offset + col * cstride) */
    K_CONST, /* a compile-time double */
    K_F32,   /* round to float and back */
    K_BF16,  /* round a float to the nearest bf16 (ties to even, NaN stays NaN) and back: cast to bf16 */
    /* unary */
    K_NEG, K_EXP, K_LOG, K_SQRT, K_RSQRT, K_RECIP, K_ABS, K_SIGMOID, K_SILU,
    /* binary */
    K_ADD, K_SUB, K_MUL, K_DIV, K_MAX_NAN, K_MIN_NAN,
    K_WHERE,    /* a != 0 ? b : c */
    /* reductions over cols, giving a ROW value */
    K_RSUM,     /* sequential double sum */
    K_RMAX_NAN, /* max; NaN propagates (the max op) */
    K_RMAX,     /* max by `x > m` (softmax's, NaN ignored) */
    K_OP_COUNT
} KOp;

typedef enum KSpace { KS_ELEM, KS_ROW } KSpace;

typedef struct KExpr {
    KOp op;
    KSpace space;
    int args[3];  /* earlier expressions */
    double value; /* K_CONST */
    int buf;      /* K_LOAD: which buffer */
    int64_t rstride[IR_MAX_RANK]; /* K_LOAD: element stride per leading dim */
    int64_t cstride;              /* K_LOAD: stride along cols (0 or 1) */
} KExpr;

typedef struct KStore {
    int expr;
    int buf;
} KStore;

typedef struct KernelDesc {
    int64_t rows, cols;
    int nlead;                  /* leading dims the row index decomposes into */
    int64_t lead[IR_MAX_RANK];
    VEC(KExpr) exprs;           /* topological: args before users */
    VEC(KStore) stores;
    /* Buffers: inputs[0..nin) then outputs[0..nout), as the kernel's bufs[] argument. */
    VEC(ValueId) inputs;
    VEC(ValueId) outputs;
} KernelDesc;

void kernel_desc_free(KernelDesc *k);
/* Builds the loop description of a fused group at batch b, sequence t. */
int kernel_from_group(const Graph *g, const Fusion *f, int group, int64_t b, int64_t t, KernelDesc *k, Err *err);
/* A text key that is equal for kernels that compute the same thing on the same shapes. */
char *kernel_key(const KernelDesc *k);

/* The signature of every generated kernel: rows [lo, hi) of the iteration space. */
typedef void (*KernelFn)(float *const *bufs, int64_t lo, int64_t hi);

#endif
