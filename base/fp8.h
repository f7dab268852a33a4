/* The two OCP FP8 formats and their conversions to and from float.
 * E4M3 (E4M3FN): bias 7, no infinities, largest finite 448, NaN = S.1111.111.
 * E5M2: bias 15, IEEE-like with infinities, largest finite 57344.
 * Narrowing rounds to nearest, ties to even. Saturation policy: a finite value
 * beyond the largest finite one becomes +-max (what FP8 GEMM kernels call
 * "satfinite"), because quantization divides by amax/448 and a one-ulp overshoot
 * of 448 must not become NaN. NaN stays NaN; an infinity becomes NaN in E4M3 (it
 * has none) and stays infinite in E5M2. Callers that must not see NaN (quantize)
 * reject non-finite input themselves. */
#ifndef V3C_FP8_H
#define V3C_FP8_H

#include <float.h>
#include <stdint.h>
#include <string.h>

typedef enum Fp8Format { FP8_E4M3, FP8_E5M2 } Fp8Format;

float fp8_to_float(Fp8Format f, uint8_t bits);
float fp8_max(Fp8Format f); /* 448 or 57344 */
int fp8_is_nan(Fp8Format f, uint8_t bits);

/* Inline: quantization encodes every element. */
typedef struct Fp8Layout {
    int mant_bits, bias;
    float max;
    double min_normal; /* 2^(1-bias) */
    float quantum;     /* a subnormal's step, 2^(1-bias-mant_bits) */
    uint8_t max_bits, nan_bits, inf_bits; /* inf_bits 0: the format has no infinity */
} Fp8Layout;

static const Fp8Layout fp8_layouts[] = {
    [FP8_E4M3] = {3, 7, 448.0f, 0x1p-6, 0x1p-9f, 0x7E, 0x7F, 0},
    [FP8_E5M2] = {2, 15, 57344.0f, 0x1p-14, 0x1p-16f, 0x7B, 0x7F, 0x7C},
};

/* Round-to-nearest-even of a normal value's mantissa to mant_bits, on the
 * float's bits; a carry moves into the exponent as it should (up to max, which
 * the caller has already saturated). Unsigned throughout: fp8_e4m3_from_finite
 * computes this for every value and discards it for the others. */
static inline uint8_t fp8_encode_normal(const Fp8Layout *l, float a) {
    uint32_t u;
    memcpy(&u, &a, sizeof u);
    int shift = 23 - l->mant_bits;
    u += ((uint32_t)1 << (shift - 1)) - 1 + ((u >> shift) & 1);
    uint32_t e = (u >> 23) - 127u + (uint32_t)l->bias;
    return (uint8_t)((e << l->mant_bits) | ((u >> shift) & ((1u << l->mant_bits) - 1)));
}

/* On the float's bits (quantization encodes every element): saturation at max,
 * the normal range by encode_normal, and a subnormal as a whole number of
 * quanta. Scaling by a power of two is exact, and adding and subtracting 2^23
 * rounds a float below 2^22 to the nearest integer, ties to even, under the
 * default rounding mode; 2^mant_bits quanta are the smallest normal's bits. */
static inline uint8_t fp8_from_float(Fp8Format f, float x) {
    const Fp8Layout *l = &fp8_layouts[f];
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    uint8_t sign = u >> 31 ? 0x80 : 0;
    u &= 0x7FFFFFFFu;
    if (u > 0x7F800000u) return sign | l->nan_bits;
    if (u == 0x7F800000u) return sign | (l->inf_bits ? l->inf_bits : l->nan_bits);
    float a;
    memcpy(&a, &u, sizeof a);
    if (a >= l->max) return sign | l->max_bits;
    if (a >= (float)l->min_normal) return sign | fp8_encode_normal(l, a);
    volatile float shifted = a / l->quantum + 0x1p23f; /* volatile: the rounding must happen in float */
    return sign | (uint8_t)(shifted - 0x1p23f);
}

/* fp8_from_float(FP8_E4M3, x) for finite x, without branches, so that a loop of it
 * vectorizes (quantization's hot loop): saturation, the normal encoding and the
 * subnormal one are all computed and one is selected by masks from comparisons of
 * |x|'s bits as integers (the numeric order for non-negative floats). The subnormal candidate reads min(|x|, 2^-6),
 * so its float-to-int conversion stays in range whatever x is. Float arithmetic must
 * round to float at each step (FLT_EVAL_METHOD 0: SSE, NEON); elsewhere this is
 * fp8_from_float. tests/test_fp8.c holds the two equal. */
static inline uint8_t fp8_e4m3_from_finite(float x) {
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
    enum { MIN_NORMAL = 0x3C800000, MAX_FINITE = 0x43E00000 }; /* 2^-6 and 448 as float bits */
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    uint32_t sign = (u >> 24) & 0x80u, a = u & 0x7FFFFFFFu;
    float abs_x;
    memcpy(&abs_x, &a, sizeof abs_x);
    uint32_t normal = fp8_encode_normal(&fp8_layouts[FP8_E4M3], abs_x);
    uint32_t small_bits = a < MIN_NORMAL ? a : MIN_NORMAL;
    float small;
    memcpy(&small, &small_bits, sizeof small);
    uint32_t subnormal = (uint32_t)(int32_t)((small * 0x1p9f + 0x1p23f) - 0x1p23f);
    /* Masks, not ?: between the candidates: a conditional lets the compiler move the
     * subnormal's float arithmetic into a branch, which it then cannot vectorize. */
    uint32_t is_normal = 0u - (uint32_t)(a >= MIN_NORMAL), is_saturated = 0u - (uint32_t)(a >= MAX_FINITE);
    uint32_t bits = (normal & is_normal) | (subnormal & ~is_normal);
    bits = (0x7Eu & is_saturated) | (bits & ~is_saturated);
    return (uint8_t)(sign | bits);
#else
    return fp8_from_float(FP8_E4M3, x);
#endif
}

#endif
