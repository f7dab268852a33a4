/* codegen/cuda: helpers shared by the template files (not a public header).
 * A template writes `#define`s for its shapes, a kernel signature and a body of
 * CUDA C text; the same text is compiled by NVRTC and, in the tests, by g++. */
#ifndef V3C_CODEGEN_CUDA_TPL_H
#define V3C_CODEGEN_CUDA_TPL_H

#include "cuda.h"

typedef struct Tpl {
    CudaEmit *em;
    const Graph *g;
    const Node *n;
    int64_t b, t;
    Err *err;
} Tpl;

typedef int (*TplFn)(const Tpl *c);

/* Concrete shape of v: its rank, or -1 with the error set. */
int tpl_shape(const Tpl *c, ValueId v, int64_t *shape);
int64_t tpl_numel(const Tpl *c, ValueId v);
int64_t shape_prod(const int64_t *s, int from, int to);

/* Starts a kernel: family, then defines, then params, then tpl_body. */
void tpl_begin(KernelText *kt, const char *family);
void tpl_define(KernelText *kt, const char *name, int64_t v);
void tpl_typedef(KernelText *kt, const char *name, DType dt);
/* Parameter types by dtype (string literals, as CudaKernel keeps them). */
const char *tpl_in_type(DType dt);
const char *tpl_out_type(DType dt);
/* Closes the parameter list and appends the body text (which ends the function). */
void tpl_body(KernelText *kt, const char *body);
/* Emits kt with args over `threads` work items (grid-stride loops). */
int tpl_launch(const Tpl *c, KernelText *kt, const CudaArg *args, int nargs, int64_t threads);
/* The rounding of a double to an output dtype's float: "(float)(x)" or a v3c_round_* call. */
void tpl_define_store(KernelText *kt, DType out);
/* Normalised axis attribute. */
int tpl_axis(const Tpl *c, int rank, int64_t dflt);

/* The template families (one table each; cuda_templates.c looks them up in order). */
extern const TplFn cuda_tpl_basic[OP_COUNT];   /* cuda_tpl_basic.c: sources, elementwise, reductions, layout */
extern const TplFn cuda_tpl_model[OP_COUNT];   /* cuda_tpl_model.c: embedding, routing, MoE, rope, sdpa, losses */
extern const TplFn cuda_tpl_grad[OP_COUNT];    /* cuda_tpl_grad.c: backward ops */
extern const TplFn cuda_tpl_fp8[OP_COUNT];     /* cuda_tpl_fp8.c: quantize, dequantize */

/* Shared kernels: a stable rank of each key among all keys (the MoE row order,
 * embedding_grad's token order), written to scratch 0 as long long. */
int tpl_stable_rank(const Tpl *c, ValueId keys, int64_t count);
/* Attention (cuda_tpl_attention.c), registered in cuda_tpl_model and cuda_tpl_grad. */
int tpl_sdpa(const Tpl *c);
int tpl_sdpa_grad(const Tpl *c);
/* sdpa / sdpa_grad as a LIB_ATTENTION(_GRAD) call (cuda_lib_attention.c): 0 done, -1 error,
 * 1 when the node takes the kernel templates instead (exact_attention, operands not all f32 or all bf16,
 * or an empty head dim). */
int cuda_lib_attention(const Tpl *c, CudaLibCall *call);
/* A kernel rounding y's floats to the bf16 grid in place, as a launch a library call makes itself. */
int tpl_round_bf16(const Tpl *c, ValueId y, CudaLaunch *out);
/* Moves the launch just emitted out of the plan (into a library call that makes it itself). */
int tpl_take_launch(const Tpl *c, CudaLaunch *out);
/* Fills an output value with a constant. */
int tpl_fill(const Tpl *c, ValueId out, double value);
/* dst[o*DST_STRIDE + DST_OFF + r] = src[o*SRC_STRIDE + SRC_OFF + r] for o < outer, r < row. */
int tpl_block_copy(const Tpl *c, ValueId src, ValueId dst, int64_t outer, int64_t row, int64_t src_stride,
                   int64_t src_off, int64_t dst_stride, int64_t dst_off);

#endif
