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

#include <stdint.h>

typedef enum Fp8Format { FP8_E4M3, FP8_E5M2 } Fp8Format;

uint8_t fp8_from_float(Fp8Format f, float x);
float fp8_to_float(Fp8Format f, uint8_t bits);
float fp8_max(Fp8Format f); /* 448 or 57344 */
int fp8_is_nan(Fp8Format f, uint8_t bits);

#endif
