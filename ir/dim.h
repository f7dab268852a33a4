/* A tensor dimension: a small polynomial in the symbolic sizes B (batch) and
 * T (sequence), e.g. 64, T, T-1, B*T*8, B*T*2-B*2, or the ceiling of such a
 * polynomial over a constant, ceil(B*T/128). Batch and sequence stay symbolic
 * until run time, yet flattening (B*T tokens), shifting (T-k positions for MTP
 * depth k) and tiling (one FP8 scale per 128 tokens) keep exact shapes. */
#ifndef V3C_DIM_H
#define V3C_DIM_H

#include <stdint.h>

#include "../base/base.h"

enum { DIM_MAX_TERMS = 6 };

typedef struct DimTerm {
    int64_t coef;
    uint8_t pow_b, pow_t; /* exponents of B and T */
} DimTerm;

typedef struct Dim {
    uint8_t nterms; /* 0 terms means the constant 0 */
    DimTerm t[DIM_MAX_TERMS];
    /* 0: the dim is the polynomial. >1: it is ceil(polynomial / ceil_den), kept
     * canonical (see dim_ceil_div) so that dim_equal stays structural. */
    int64_t ceil_den;
} Dim;

Dim dim_const(int64_t v);
Dim dim_sym_b(void);
Dim dim_sym_t(void);
int dim_is_const(Dim d);
int64_t dim_const_value(Dim d); /* only meaningful when dim_is_const */
int dim_equal(Dim a, Dim b);
/* Arithmetic returns -1 (and sets err) when the result needs more terms than
 * fit, or when an operand is a ceiling (no exact polynomial form exists). */
int dim_add(Dim a, Dim b, Dim *out, Err *err);
int dim_sub(Dim a, Dim b, Dim *out, Err *err);
int dim_mul(Dim a, Dim b, Dim *out, Err *err);
/* Exact division by a nonzero constant; fails if a coefficient is not divisible. */
int dim_div_const(Dim a, int64_t d, Dim *out, Err *err);
/* ceil(a/d) for a constant d >= 1: exact division when every coefficient is
 * divisible, a constant when a is, otherwise a ceiling with the coefficients and
 * d divided by their common factor (ceil(2x/4) = ceil(x/2)). A ceiling of a
 * ceiling composes: ceil(ceil(P/a)/b) = ceil(P/(a*b)) for P >= 0. */
int dim_ceil_div(Dim a, int64_t d, Dim *out, Err *err);
/* Value at B=b, T=t; fails on overflow or a negative result. */
int dim_eval(Dim d, int64_t b, int64_t t, int64_t *out, Err *err);
/* Text: "64", "T", "T-1", "B*T*8", "B*T*2-B*2", "ceil(B*T/128)". dim_parse accepts what dim_print writes
 * and general sums of products of integers, B and T; returns chars consumed or -1. */
void dim_print(Dim d, char *out, int n);
int dim_parse(const char *s, Dim *out, Err *err);

#endif
