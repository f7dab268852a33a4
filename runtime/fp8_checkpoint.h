/* DeepSeek FP8 checkpoints: a quantized Linear weight is stored as
 * "<module>.weight" F8_E4M3 [N,K] plus "<module>.weight_scale_inv" F32
 * [ceil(N/128), ceil(K/128)], W = q * scale_inv per 128x128 block (ragged edge
 * blocks are smaller). The arithmetic is the quantize / dequantize ops' (ir/ops/fp8.c). */
#ifndef V3C_FP8_CHECKPOINT_H
#define V3C_FP8_CHECKPOINT_H

#include "checkpoint.h"

/* "<name>_scale_inv", caller frees. */
char *fp8_scale_name(const char *weight_name);

/* Whether convert --to fp8 quantizes this tensor: what DeepSeek's checkpoint
 * quantizes, every Linear weight (rank 2, "*.weight") except the embedding,
 * the output heads and the MoE gate. */
int fp8_quantizes_weight(const char *name, int rank);

/* 128x128-block quantization of an f32 [N,K] weight: q e4m3 and scale_inv f32. */
int fp8_quantize_weight(const Tensor *w, Tensor **q, Tensor **scale_inv, Err *err);
/* q (e4m3 [N,K]) times its block scales, as an f32 tensor. */
Tensor *fp8_dequantize_weight(const Tensor *q, const Tensor *scale_inv, Err *err);

/* checkpoint_load_params, plus: a param stored as F8_E4M3 with its
 * weight_scale_inv is dequantized into f32 (rounded to the param's dtype). */
int checkpoint_load_params_fp8_aware(const Checkpoint *c, const Graph *g, TensorSet *out, Err *err);

#endif
