#include "fp8.h"

#include <math.h>
#include <string.h>

typedef struct Fp8Layout {
    int mant_bits, bias;
    float max;
    double min_normal; /* 2^(1-bias) */
    float quantum;     /* a subnormal's step, 2^(1-bias-mant_bits) */
    uint8_t max_bits, nan_bits, inf_bits; /* inf_bits 0: the format has no infinity */
} Fp8Layout;

static const Fp8Layout layouts[] = {
    [FP8_E4M3] = {3, 7, 448.0f, 0x1p-6, 0x1p-9f, 0x7E, 0x7F, 0},
    [FP8_E5M2] = {2, 15, 57344.0f, 0x1p-14, 0x1p-16f, 0x7B, 0x7F, 0x7C},
};

float fp8_max(Fp8Format f) { return layouts[f].max; }

int fp8_is_nan(Fp8Format f, uint8_t bits) {
    const Fp8Layout *l = &layouts[f];
    uint8_t mag = bits & 0x7F;
    return l->inf_bits ? mag > l->inf_bits : mag == l->nan_bits;
}

/* Round-to-nearest-even of a normal value's mantissa to mant_bits, on the
 * float's bits; a carry moves into the exponent as it should (up to max, which
 * the caller has already saturated). */
static uint8_t encode_normal(const Fp8Layout *l, float a) {
    uint32_t u;
    memcpy(&u, &a, sizeof u);
    int shift = 23 - l->mant_bits;
    u += ((uint32_t)1 << (shift - 1)) - 1 + ((u >> shift) & 1);
    int e = (int)(u >> 23) - 127;
    return (uint8_t)(((e + l->bias) << l->mant_bits) | ((u >> shift) & ((1u << l->mant_bits) - 1)));
}

/* On the float's bits (quantization encodes every element): saturation at max,
 * the normal range by encode_normal, and a subnormal as a whole number of
 * quanta. Scaling by a power of two is exact, and adding and subtracting 2^23
 * rounds a float below 2^22 to the nearest integer, ties to even, under the
 * default rounding mode; 2^mant_bits quanta are the smallest normal's bits. */
uint8_t fp8_from_float(Fp8Format f, float x) {
    const Fp8Layout *l = &layouts[f];
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    uint8_t sign = u >> 31 ? 0x80 : 0;
    u &= 0x7FFFFFFFu;
    if (u > 0x7F800000u) return sign | l->nan_bits;
    if (u == 0x7F800000u) return sign | (l->inf_bits ? l->inf_bits : l->nan_bits);
    float a;
    memcpy(&a, &u, sizeof a);
    if (a >= l->max) return sign | l->max_bits;
    if (a >= (float)l->min_normal) return sign | encode_normal(l, a);
    volatile float shifted = a / l->quantum + 0x1p23f; /* volatile: the rounding must happen in float */
    return sign | (uint8_t)(shifted - 0x1p23f);
}

/* Built from bits (dequantization decodes every element): a normal value's
 * exponent and mantissa move into a float's fields, a subnormal is a multiple of
 * the quantum; both exact. */
float fp8_to_float(Fp8Format f, uint8_t bits) {
    const Fp8Layout *l = &layouts[f];
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
