#include <math.h>
#include <string.h>

#include "../base/numeric.h"
#include "testutil.h"

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

START_TEST(test_bf16_all_patterns_round_trip) {
    for (uint32_t h = 0; h < 65536; h++) {
        float f = bf16_to_float((uint16_t)h);
        ck_assert_uint_eq(bits(f), h << 16);
        uint16_t back = float_to_bf16(f);
        if (isnan(f))
            ck_assert_msg(isnan(bf16_to_float(back)) && (back & 0x8000) == (h & 0x8000), "NaN %04x -> %04x", h, back);
        else
            ck_assert_msg(back == h, "bf16 %04x -> %04x", h, back);
    }
}
END_TEST

START_TEST(test_f16_all_patterns_round_trip) {
    for (uint32_t h = 0; h < 65536; h++) {
        float f = f16_to_float((uint16_t)h);
        uint16_t back = float_to_f16(f);
        if (isnan(f))
            ck_assert_msg(isnan(f16_to_float(back)) && (back & 0x8000) == (h & 0x8000), "NaN %04x -> %04x", h, back);
        else
            ck_assert_msg(back == h, "f16 %04x -> %g -> %04x", h, (double)f, back);
    }
}
END_TEST

/* Between two neighbouring representable values: just below the midpoint rounds down,
 * just above rounds up, the midpoint itself goes to the even one. */
static void check_midpoints(uint16_t (*narrow)(float), float (*widen)(uint16_t), uint32_t last) {
    for (uint32_t h = 0; h < last; h++) {
        float lo = widen((uint16_t)h), hi = widen((uint16_t)(h + 1));
        float mid = (float)(((double)lo + (double)hi) / 2); /* exact: both fit in 24 bits */
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        ck_assert_msg(narrow(mid) == even, "midpoint of %04x: got %04x", h, narrow(mid));
        ck_assert_msg(narrow(nextafterf(mid, 0)) == h, "below midpoint of %04x", h);
        ck_assert_msg(narrow(nextafterf(mid, INFINITY)) == h + 1, "above midpoint of %04x", h);
    }
}

START_TEST(test_bf16_rounding) {
    check_midpoints(float_to_bf16, bf16_to_float, 0x7F7F); /* up to the largest finite */
    ck_assert_uint_eq(float_to_bf16(from_bits(0x7F7FFFFF)), 0x7F80); /* FLT_MAX rounds to inf */
    ck_assert_uint_eq(float_to_bf16(-INFINITY), 0xFF80);
    ck_assert_uint_eq(float_to_bf16(-0.0f), 0x8000);
    ck_assert(isnan(bf16_to_float(float_to_bf16(from_bits(0x7F800001))))); /* payload only in low bits */
    ck_assert_float_eq(round_to_bf16(1.0f + 1.0f / 256), 1.0f);       /* tie to even */
    ck_assert_float_eq(round_to_bf16(1.0f + 3.0f / 256), 1.0f + 4.0f / 256);
}
END_TEST

START_TEST(test_f16_rounding) {
    check_midpoints(float_to_f16, f16_to_float, 0x7BFF); /* subnormals through 65504 */
    ck_assert_uint_eq(float_to_f16(65504.0f), 0x7BFF);
    ck_assert_uint_eq(float_to_f16(65519.996f), 0x7BFF);
    ck_assert_uint_eq(float_to_f16(65520.0f), 0x7C00); /* the tie past the max goes to inf */
    ck_assert_uint_eq(float_to_f16(1e10f), 0x7C00);
    ck_assert_uint_eq(float_to_f16(-INFINITY), 0xFC00);
    ck_assert_uint_eq(float_to_f16(ldexpf(1, -24)), 0x0001);   /* smallest subnormal */
    ck_assert_uint_eq(float_to_f16(ldexpf(1, -25)), 0x0000);   /* half of it: tie to even zero */
    ck_assert_uint_eq(float_to_f16(ldexpf(1.5f, -25)), 0x0001);
    ck_assert_uint_eq(float_to_f16(ldexpf(3, -25)), 0x0002);   /* 1.5 units: tie to even 2 */
    ck_assert_uint_eq(float_to_f16(-1e-30f), 0x8000);
    ck_assert_uint_eq(float_to_f16(ldexpf(1023.5f, -24)), 0x0400); /* subnormal rounds up to min normal */
    ck_assert(isnan(f16_to_float(float_to_f16(NAN))));
    ck_assert(isnan(round_to_f16(from_bits(0x7F800001))));
    ck_assert_float_eq(round_to_f16(0.1f), 0.0999755859375f);
}
END_TEST

int main(void) {
    Suite *s = suite_create("numeric");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_bf16_all_patterns_round_trip);
    tcase_add_test(tc, test_f16_all_patterns_round_trip);
    tcase_add_test(tc, test_bf16_rounding);
    tcase_add_test(tc, test_f16_rounding);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
