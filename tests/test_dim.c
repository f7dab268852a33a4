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

/* ceil(P/d): the 128-token FP8 tiles of a symbolic B*T axis. */
START_TEST(test_ceil_div) {
    Err e = {0};
    Dim bt, c, c2;
    ck_assert_int_eq(dim_mul(dim_sym_b(), dim_sym_t(), &bt, &e), 0);
    ck_assert_int_eq(dim_ceil_div(bt, 128, &c, &e), 0);
    char s[64];
    dim_print(c, s, sizeof s);
    ck_assert_str_eq(s, "ceil(B*T/128)");
    int64_t v;
    ck_assert_int_eq(dim_eval(c, 2, 100, &v, &e), 0);
    ck_assert_int_eq(v, 2); /* 200 tokens: one full tile and a ragged one */
    ck_assert_int_eq(dim_eval(c, 2, 64, &v, &e), 0);
    ck_assert_int_eq(v, 1);
    ck_assert_int_eq(dim_eval(c, 1, 129, &v, &e), 0);
    ck_assert_int_eq(v, 2);
    ck_assert(!dim_is_const(c) && !dim_equal(c, bt));
    /* Canonical forms keep equality structural. */
    Dim bt256, exact;
    ck_assert_int_eq(dim_mul(bt, dim_const(256), &bt256, &e), 0);
    ck_assert_int_eq(dim_ceil_div(bt256, 128, &exact, &e), 0);
    dim_print(exact, s, sizeof s);
    ck_assert_str_eq(s, "B*T*2");
    Dim bt2;
    ck_assert_int_eq(dim_mul(bt, dim_const(2), &bt2, &e), 0);
    ck_assert_int_eq(dim_ceil_div(bt2, 256, &c2, &e), 0);
    ck_assert(dim_equal(c, c2)); /* ceil(2x/256) = ceil(x/128) */
    ck_assert_int_eq(dim_ceil_div(c, 2, &c2, &e), 0);
    dim_print(c2, s, sizeof s);
    ck_assert_str_eq(s, "ceil(B*T/256)");
    ck_assert_int_eq(dim_ceil_div(dim_const(300), 128, &c2, &e), 0);
    ck_assert(dim_is_const(c2) && dim_const_value(c2) == 3);
    ck_assert_int_eq(dim_ceil_div(bt, 1, &c2, &e), 0);
    ck_assert(dim_equal(c2, bt));
    /* No arithmetic on a ceiling, no division by zero. */
    ck_assert_int_eq(dim_add(c, dim_const(1), &c2, &e), -1);
    ck_assert_ptr_nonnull(strstr(e.msg, "ceil(B*T/128)"));
    ck_assert_int_eq(dim_mul(dim_const(2), c, &c2, &e), -1);
    ck_assert_int_eq(dim_sub(c, c, &c2, &e), -1);
    ck_assert_int_eq(dim_div_const(c, 1, &c2, &e), -1);
    ck_assert_int_eq(dim_ceil_div(bt, 0, &c2, &e), -1);
}
END_TEST

START_TEST(test_ceil_text) {
    roundtrip("ceil(B*T/128)", "ceil(B*T/128)");
    roundtrip("ceil(B*T*2-B*2/128)", "ceil(B*T-B/64)");
    roundtrip("ceil(T/1)", "T");
    roundtrip("ceil(300/128)", "3");
    Dim d;
    Err e = {0};
    ck_assert_int_eq(dim_parse("ceil(B*T)", &d, &e), -1);
    ck_assert_int_eq(dim_parse("ceil(B*T/128", &d, &e), -1);
    ck_assert_int_eq(dim_parse("ceil(B*T/0)", &d, &e), -1);
    ck_assert_int_eq(dim_parse("ceil(B*T/x)", &d, &e), -1);
    /* Trailing text is left to the caller, as for polynomials. */
    ck_assert_int_eq(dim_parse("ceil(T/4),64", &d, &e), 9);
}
END_TEST

int main(void) {
    Suite *s = suite_create("dim");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_print_parse);
    tcase_add_test(tc, test_arith);
    tcase_add_test(tc, test_parse_errors);
    tcase_add_test(tc, test_ceil_div);
    tcase_add_test(tc, test_ceil_text);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
