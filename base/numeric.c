#include "numeric.h"

#include <string.h>

uint32_t f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

double f64_from_bits(uint64_t u) {
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Shifts right by `shift` (1..31) rounding to nearest, ties to even. */
static uint32_t shift_round_even(uint32_t x, unsigned shift) {
    uint32_t half = 1u << (shift - 1), rest = x & ((1u << shift) - 1), r = x >> shift;
    return r + (rest > half || (rest == half && (r & 1)));
}

uint16_t float_to_bf16(float f) {
    uint32_t u = f32_to_bits(f);
    /* NaN: keep sign and top payload bits; setting the quiet bit keeps it a NaN
     * even when the payload lived only in the dropped low bits. */
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x0040u);
    return (uint16_t)shift_round_even(u, 16);
}

float bf16_to_float(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

enum {
    F32_TO_F16_REBIAS = (127 - 15) << 23,
    F16_MIN_NORMAL_AS_F32 = 0x38800000,  /* 2^-14 */
    F16_OVERFLOW_AS_F32 = 0x477FF000,    /* 65520: halfway past 65504, rounds to inf */
    F16_HALF_MIN_SUB_AS_F32 = 0x33000000 /* 2^-25: half the smallest subnormal */
};

static uint16_t f16_subnormal(uint32_t abs_bits) {
    if (abs_bits <= F16_HALF_MIN_SUB_AS_F32) return 0; /* ties to even: zero */
    uint32_t exp = abs_bits >> 23, mant = (abs_bits & 0x7FFFFFu) | 0x800000u;
    /* value = mant * 2^(exp-150); in units of 2^-24 that is mant >> (126 - exp). */
    return (uint16_t)shift_round_even(mant, 126 - exp);
}

uint16_t float_to_f16(float f) {
    uint32_t u = f32_to_bits(f), a = u & 0x7FFFFFFFu;
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    if (a > 0x7F800000u) return sign | 0x7E00u | (uint16_t)((a >> 13) & 0x3FFu);
    if (a >= F16_OVERFLOW_AS_F32) return sign | 0x7C00u;
    if (a < F16_MIN_NORMAL_AS_F32) return sign | f16_subnormal(a);
    /* A rounding carry out of the mantissa correctly bumps the exponent. */
    return sign | (uint16_t)shift_round_even(a - F32_TO_F16_REBIAS, 13);
}

float f16_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
    if (exp == 0x1F) return f32_from_bits(sign | 0x7F800000u | mant << 13);
    if (exp != 0) return f32_from_bits(sign | ((exp + 112) << 23) | mant << 13);
    float sub = (float)mant * (1.0f / 16777216.0f); /* exact: mant < 2^10 */
    return f32_from_bits(sign | f32_to_bits(sub));
}

float round_to_bf16(float f) { return bf16_to_float(float_to_bf16(f)); }

void round_to_bf16_array(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = round_to_bf16(x[i]);
}
float round_to_f16(float f) { return f16_to_float(float_to_f16(f)); }
