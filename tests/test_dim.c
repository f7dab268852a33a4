#include <string.h>

#include "../ir/dim.h"
#include "testutil.h"

static void roundtrip(const char *text, const char *want) {
    Dim d;
    Err e = {0};
    ck_assert_int_eq(dim_parse(text, &d, &e), (int)strlen(text));
    char out[128];
    dim_print(d, out, sizeof out);
    ck_assert_str_eq(out, want);
}

START_TEST(test_print_parse) {
    roundtrip("64", "64");
    roundtrip("T", "T");
    roundtrip("T-1", "T-1");
    roundtrip("B*T*8", "B*T*8");
    roundtrip("8*T*B", "B*T*8");
    roundtrip("B*T*2-B*2", "B*T*2-B*2");
    roundtrip("T-1+1", "T");
    roundtrip("-3", "-3");
    roundtrip("0", "0");
}
END_TEST

START_TEST(test_arith) {
    Err e = {0};
    Dim t = dim_sym_t(), b = dim_sym_b(), tm1, prod, q;
    ck_assert_int_eq(dim_sub(t, dim_const(1), &tm1, &e), 0);
    ck_assert_int_eq(dim_mul(b, tm1, &prod, &e), 0);
    char s[64];
    dim_print(prod, s, sizeof s);
    ck_assert_str_eq(s, "B*T-B");
    int64_t v;
    ck_assert_int_eq(dim_eval(prod, 2, 16, &v, &e), 0);
    ck_assert_int_eq(v, 30);
    ck_assert_int_eq(dim_div_const(dim_const(12), 4, &q, &e), 0);
    ck_assert(dim_is_const(q) && dim_const_value(q) == 3);
    ck_assert_int_eq(dim_div_const(dim_const(10), 4, &q, &e), -1);
    ck_assert_int_eq(dim_eval(tm1, 1, 0, &v, &e), -1); /* negative */
    ck_assert(dim_equal(t, dim_sym_t()) && !dim_equal(t, b));
}
END_TEST

START_TEST(test_parse_errors) {
    Dim d;
    Err e = {0};
    ck_assert_int_eq(dim_parse("X", &d, &e), -1);
    ck_assert_int_eq(dim_parse("99999999999999999999", &d, &e), -1);
    ck_assert_int_eq(dim_parse("B*", &d, &e), -1);
}
END_TEST

int main(void) {
    Suite *s = suite_create("dim");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_print_parse);
    tcase_add_test(tc, test_arith);
    tcase_add_test(tc, test_parse_errors);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
