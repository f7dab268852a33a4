/* The bf16 pass: mixed precision the way torch's autocast does it for matrix
 * products and attention. Every GEMM (linear, linear_wgrad, grouped_linear,
 * grouped_linear_wgrad) on f32 operands runs on bf16 copies of them: cast in,
 * the GEMM in bf16 (products exact, the sum rounded once to bf16), cast the
 * result back to f32. Attention likewise (autocast runs
 * scaled_dot_product_attention in bf16): sdpa on bf16 q, k, v, and sdpa_grad on
 * bf16 g, q, k, v, their results rounded to bf16 and cast back. Everything
 * else stays f32: master weights and the optimizer, norms, RoPE, the router's
 * scores, losses, and the gradients between these ops (spec "Kept in
 * BF16/FP32").
 *
 * Left in f32: the MoE router's GEMMs (forward, its Dgrad and its Wgrad: the
 * gate weight's scores decide routing, as in the report and HF's DeepseekV3),
 * and GEMMs with an operand an FP8 round trip made (a dequantize), so that
 * `--fp8 --bf16` keeps the FP8 recipe's numerics and puts the GEMMs FP8 leaves
 * (the output heads) and attention in bf16. Nodes already on bf16 operands are
 * untouched, so the pass is idempotent. It runs after autodiff and after fp8. */
#ifndef V3C_PASSES_BF16_H
#define V3C_PASSES_BF16_H

#include "../ir/ir.h"

/* Rewrites g in place (node order stays topological). */
int bf16_graph(Graph *g, Err *err);

#endif
