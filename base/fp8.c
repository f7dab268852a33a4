#include "fp8.h"

#include <math.h>
#include <string.h>

float fp8_max(Fp8Format f) { return fp8_layouts[f].max; }

int fp8_is_nan(Fp8Format f, uint8_t bits) {
    const Fp8Layout *l = &fp8_layouts[f];
    uint8_t mag = bits & 0x7F;
    return l->inf_bits ? mag > l->inf_bits : mag == l->nan_bits;
}

/* Built from bits (dequantization decodes every element): a normal value's
 * exponent and mantissa move into a float's fields, a subnormal is a multiple of
 * the quantum; both exact. */
float fp8_to_float(Fp8Format f, uint8_t bits) {
    const Fp8Layout *l = &fp8_layouts[f];
    if (fp8_is_nan(f, bits)) return NAN;
    int negative = bits & 0x80, exp_field = (bits & 0x7F) >> l->mant_bits, mant = bits & ((1 << l->mant_bits) - 1);
    float mag;
    if (l->inf_bits && (bits & 0x7F) == l->inf_bits) {
        mag = INFINITY;
    } else if (exp_field == 0) {
        mag = (float)mant * l->quantum;
    } else {
        uint32_t u = (uint32_t)(exp_field - l->bias + 127) << 23 | (uint32_t)mant << (23 - l->mant_bits);
        memcpy(&mag, &u, sizeof mag);
    }
    return negative ? -mag : mag;
}
