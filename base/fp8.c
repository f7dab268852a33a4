#include "fp8.h"

#include <math.h>
#include <string.h>

typedef struct Fp8Layout {
    int mant_bits, bias;
    float max;
    double min_normal; /* 2^(1-bias) */
    uint8_t nan_bits, inf_bits; /* inf_bits 0: the format has no infinity */
} Fp8Layout;

static const Fp8Layout layouts[] = {
    [FP8_E4M3] = {3, 7, 448.0f, 0x1p-6, 0x7F, 0},
    [FP8_E5M2] = {2, 15, 57344.0f, 0x1p-14, 0x7F, 0x7C},
};

float fp8_max(Fp8Format f) { return layouts[f].max; }

int fp8_is_nan(Fp8Format f, uint8_t bits) {
    const Fp8Layout *l = &layouts[f];
    uint8_t mag = bits & 0x7F;
    return l->inf_bits ? mag > l->inf_bits : mag == l->nan_bits;
}

/* Magnitude bits of a finite, non-negative value no larger than max. Scaling by a
 * power of two is exact in double, and nearbyint rounds ties to even under the
 * default rounding mode, so each step below is exact except the one rounding. */
static uint8_t encode_magnitude(const Fp8Layout *l, double a) {
    int min_normal_exp = 1 - l->bias;
    int frac_exp;
    frexp(a, &frac_exp);
    int e = a == 0 ? min_normal_exp : frac_exp - 1; /* a = 1.m * 2^e */
    if (e < min_normal_exp) e = min_normal_exp;     /* subnormals share the smallest quantum */
    double steps = nearbyint(ldexp(a, l->mant_bits - e));
    /* steps counts quanta of 2^(e - mant_bits); below 2^mant_bits the value is
     * subnormal (exponent field 0), and a carry to 2^(mant_bits+1) moves up one binade. */
    int64_t q = (int64_t)steps;
    int64_t one = (int64_t)1 << l->mant_bits;
    if (q < one) return (uint8_t)q;
    if (q == 2 * one) {
        e++;
        q = one;
    }
    return (uint8_t)(((e + l->bias) << l->mant_bits) | (q - one));
}

/* The same rounding on a float's bits, for values in the normal range (the hot
 * path of quantization): round-to-nearest-even of the mantissa to mant_bits, a
 * carry moving into the exponent as it should. */
static uint8_t encode_normal(const Fp8Layout *l, float a) {
    uint32_t u;
    memcpy(&u, &a, sizeof u);
    int shift = 23 - l->mant_bits;
    u += ((uint32_t)1 << (shift - 1)) - 1 + ((u >> shift) & 1);
    int e = (int)(u >> 23) - 127;
    return (uint8_t)(((e + l->bias) << l->mant_bits) | ((u >> shift) & ((1u << l->mant_bits) - 1)));
}

uint8_t fp8_from_float(Fp8Format f, float x) {
    const Fp8Layout *l = &layouts[f];
    uint8_t sign = signbit(x) ? 0x80 : 0;
    if (isnan(x)) return sign | l->nan_bits;
    if (isinf(x)) return sign | (l->inf_bits ? l->inf_bits : l->nan_bits);
    double a = fabs((double)x);
    if (a >= l->max) return sign | encode_magnitude(l, l->max);
    if (a >= l->min_normal) return sign | encode_normal(l, (float)a);
    return sign | encode_magnitude(l, a);
}

float fp8_to_float(Fp8Format f, uint8_t bits) {
    const Fp8Layout *l = &layouts[f];
    float sign = bits & 0x80 ? -1.0f : 1.0f;
    if (fp8_is_nan(f, bits)) return NAN;
    if (l->inf_bits && (bits & 0x7F) == l->inf_bits) return sign * INFINITY;
    int exp_field = (bits & 0x7F) >> l->mant_bits;
    int mant = bits & ((1 << l->mant_bits) - 1);
    if (exp_field == 0) return sign * ldexpf((float)mant, 1 - l->bias - l->mant_bits);
    return sign * ldexpf((float)(mant | (1 << l->mant_bits)), exp_field - l->bias - l->mant_bits);
}
