/* The fp8 pass: DeepSeek-V3's FP8 recipe (spec/deepseek_v3.md, "FP8 mixed
 * precision") as explicit quantize / fp8_matmul nodes. Every Linear whose weight
 * is a checkpoint Linear (not the embedding, lm_head / MTP head or MoE gate)
 * runs as an FP8 GEMM: x quantized in 1x128 tiles, w in 128x128 blocks, fp32
 * promotion every 128 of K. Expert (grouped) linears get the same quantization
 * of both operands, written as quantize + dequantize in front of grouped_linear
 * (the op table has no grouped FP8 GEMM; a backend fuses the pair). Norms,
 * attention core, gate and heads are untouched. After autodiff the same linears
 * run Dgrad as FP8 GEMMs (g 1x128, w^T 128x128) and Wgrad as fp8_matmul wgrad=1
 * (g and x in 128x1 tiles, x quantized in forward); the experts' Wgrad copy of
 * x is kept as FP8 bytes and scales and dequantized in backward, so only FP8
 * lives between the passes (spec: activations saved for Linear backward are
 * FP8); docs/ops.md "FP8". */
#ifndef V3C_PASSES_FP8_H
#define V3C_PASSES_FP8_H

#include "../ir/ir.h"

typedef struct Fp8Options {
    int pow2_scales;  /* power-of-2 scales for o_proj's input and the SwiGLU product feeding down_proj */
    int fp8_dispatch; /* MoE dispatch sends FP8 activations: the tokens are quantized (1x128) before it */
} Fp8Options;

/* The options the `fp8` pass and `--fp8` use: the report's recipe (pow2 on, FP8 dispatch on). */
Fp8Options fp8_default_options(void);

/* Rewrites g in place (node order stays topological). */
int fp8_graph(Graph *g, const Fp8Options *opt, Err *err);

#endif
