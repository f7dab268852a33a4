/* Conversions between float and the 16-bit float formats stored in checkpoints.
 * Narrowing rounds to nearest, ties to even; NaN stays NaN (quieted), infinities
 * and signed zeros are kept. FP8 formats are handled elsewhere. */
#ifndef V3C_NUMERIC_H
#define V3C_NUMERIC_H

#include <stdint.h>

/* Bit patterns of IEEE floats, without aliasing tricks. */
uint32_t f32_to_bits(float f);
float f32_from_bits(uint32_t u);
double f64_from_bits(uint64_t u);

uint16_t float_to_bf16(float f);
float bf16_to_float(uint16_t h);
/* IEEE 754 binary16: subnormals kept, values >= 65520 in magnitude become infinity. */
uint16_t float_to_f16(float f);
float f16_to_float(uint16_t h);

/* The nearest bf16 / f16 value, as a float. */
float round_to_bf16(float f);
/* round_to_bf16 on every element in place (one call per tensor: the rounding inlined). */
void round_to_bf16_array(float *x, int64_t n);
float round_to_f16(float f);

#endif
