#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../base/json.h"
#include "testutil.h"

static Json *parse_ok(const char *text) {
    Err e = {0};
    Json *j = json_parse(text, strlen(text), "t.json", &e);
    ck_assert_msg(j != NULL, "'%s' should parse: %s", text, e.msg);
    return j;
}

/* Malformed input must fail with the WHAT:LINE:COL prefix and a reason containing `why`. */
static void parse_bad_n(const char *text, size_t len, const char *where, const char *why) {
    Err e = {0};
    Json *j = json_parse(text, len, "t.json", &e);
    ck_assert_msg(j == NULL, "'%s' should be rejected", text);
    json_free(j);
    ck_assert_msg(e.set && strstr(e.msg, "malformed JSON") != NULL, "message: %s", e.msg);
    ck_assert_msg(strncmp(e.msg, where, strlen(where)) == 0, "'%s': want prefix '%s', got '%s'", text, where, e.msg);
    ck_assert_msg(strstr(e.msg, why) != NULL, "'%s': want '%s' in '%s'", text, why, e.msg);
}

static void parse_bad(const char *text, const char *where, const char *why) {
    parse_bad_n(text, strlen(text), where, why);
}

START_TEST(test_scalars) {
    Json *j = parse_ok(" 42 ");
    ck_assert(j->kind == JSON_NUMBER && j->is_integer && j->integer == 42 && j->number == 42.0);
    json_free(j);
    j = parse_ok("-9223372036854775808");
    ck_assert(j->is_integer && j->integer == INT64_MIN);
    json_free(j);
    j = parse_ok("9223372036854775808"); /* one past INT64_MAX: a number, not an integer */
    ck_assert(!j->is_integer && j->number == 9223372036854775808.0);
    json_free(j);
    j = parse_ok("1.5e3");
    ck_assert(!j->is_integer && j->number == 1500.0);
    json_free(j);
    j = parse_ok("-0.25");
    ck_assert(j->number == -0.25);
    json_free(j);
    j = parse_ok("1e-400"); /* underflow to zero is fine, only overflow is an error */
    ck_assert(j->number == 0.0);
    json_free(j);
    j = parse_ok("true");
    ck_assert(j->kind == JSON_BOOL && j->boolean == 1);
    json_free(j);
    j = parse_ok("false");
    ck_assert(j->kind == JSON_BOOL && j->boolean == 0);
    json_free(j);
    j = parse_ok("null");
    ck_assert(j->kind == JSON_NULL);
    json_free(j);
}
END_TEST

START_TEST(test_strings) {
    Json *j = parse_ok("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"");
    ck_assert_str_eq(j->string, "a\"b\\c/d\b\f\n\r\t");
    json_free(j);
    j = parse_ok("\"\\u0041\\u00e9\\u20AC\\ud83d\\ude00\"");
    ck_assert_str_eq(j->string, "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    json_free(j);
    j = parse_ok("\"raw \xc3\xa9 bytes\"");
    ck_assert_str_eq(j->string, "raw \xc3\xa9 bytes");
    json_free(j);
    j = parse_ok("\"\"");
    ck_assert_str_eq(j->string, "");
    json_free(j);
}
END_TEST

START_TEST(test_nesting) {
    Json *j = parse_ok("{\"a\": [1, 2, {\"b\": null}], \"c\": {\"d\": \"e\"}, \"f\": []}");
    ck_assert_int_eq(j->kind, JSON_OBJECT);
    ck_assert_int_eq(j->len, 3);
    ck_assert_str_eq(j->keys[0], "a");
    ck_assert_str_eq(j->keys[2], "f");
    const Json *a = json_get(j, "a");
    ck_assert(a && a->kind == JSON_ARRAY && a->len == 3);
    ck_assert_int_eq(a->items[1]->integer, 2);
    ck_assert(json_get(a->items[2], "b")->kind == JSON_NULL);
    ck_assert_str_eq(json_get(json_get(j, "c"), "d")->string, "e");
    ck_assert_int_eq(json_get(j, "f")->len, 0);
    ck_assert_ptr_null(json_get(j, "zz"));
    ck_assert_ptr_null(json_get(a, "a")); /* not an object */
    json_free(j);
    j = parse_ok("{}");
    ck_assert(j->kind == JSON_OBJECT && j->len == 0);
    json_free(j);
}
END_TEST

static char *nested(int depth) {
    char *s = malloc((size_t)depth * 2 + 1);
    for (int i = 0; i < depth; i++) s[i] = '[', s[depth * 2 - 1 - i] = ']';
    s[depth * 2] = 0;
    return s;
}

START_TEST(test_depth_limit) {
    char *ok = nested(64), *bad = nested(65);
    json_free(parse_ok(ok));
    parse_bad(bad, "t.json:1:65:", "nesting deeper than 64");
    free(ok);
    free(bad);
    char *deep = nested(100000); /* must not overflow the stack */
    parse_bad(deep, "t.json:1:65:", "nesting");
    free(deep);
}
END_TEST

START_TEST(test_malformed) {
    parse_bad("", "t.json:1:1:", "unexpected end");
    parse_bad("   ", "t.json:1:4:", "unexpected end");
    parse_bad("{\"a\":1} x", "t.json:1:9:", "trailing characters");
    parse_bad("[1,]", "t.json:1:4:", "unexpected character");
    parse_bad("[1 2]", "t.json:1:4:", "expected ',' or ']'");
    parse_bad("{\"a\" 1}", "t.json:1:6:", "expected ':'");
    parse_bad("{\"a\":1,}", "t.json:1:8:", "expected a string key");
    parse_bad("{\"a\":1 \"b\":2}", "t.json:1:8:", "expected ',' or '}'");
    parse_bad("{\"a\":1,\n \"a\":2}", "t.json:2:2:", "duplicate key");
    parse_bad("\"abc", "t.json:1:5:", "unterminated string");
    parse_bad("\"a\\x\"", "t.json:1:4:", "bad escape");
    parse_bad("\"a\\u12G4\"", "t.json:1:4:", "bad hex digit");
    parse_bad("\"a\\u12", "t.json:1:4:", "truncated");
    parse_bad("\"\\ud83d\"", "t.json:1:3:", "unpaired high surrogate");
    parse_bad("\"\\ud83d\\u0041\"", "t.json:1:3:", "not followed by a low surrogate");
    parse_bad("\"\\ude00\"", "t.json:1:3:", "unpaired low surrogate");
    parse_bad("\"a\\u0000b\"", "t.json:1:4:", "embedded NUL");
    parse_bad_n("\"a\0b\"", 5, "t.json:1:3:", "embedded NUL");
    parse_bad_n("[1]\0", 4, "t.json:1:4:", "trailing characters");
    parse_bad("\"tab\there\"", "t.json:1:5:", "control character");
    parse_bad("01", "t.json:1:2:", "leading zero");
    parse_bad("-", "t.json:1:2:", "expected a digit");
    parse_bad("1.", "t.json:1:3:", "after '.'");
    parse_bad("1e+", "t.json:1:4:", "exponent");
    parse_bad("+1", "t.json:1:1:", "unexpected character");
    parse_bad(".5", "t.json:1:1:", "unexpected character");
    parse_bad("1e999", "t.json:1:1:", "number out of range");
    parse_bad("-1e400", "t.json:1:1:", "number out of range");
    parse_bad("tru", "t.json:1:1:", "unexpected character");
    parse_bad("nul", "t.json:1:1:", "unexpected character");
    parse_bad("NaN", "t.json:1:1:", "unexpected character");
    parse_bad("[\n\n  x]", "t.json:3:3:", "unexpected character");
    parse_bad("{\"a\":[1,2}", "t.json:1:10:", "expected ',' or ']'");
}
END_TEST

START_TEST(test_long_number) {
    char buf[700];
    memset(buf, '1', sizeof buf - 1);
    buf[sizeof buf - 1] = 0;
    parse_bad(buf, "t.json:1:1:", "number too long");
}
END_TEST

START_TEST(test_write_string) {
    Buf b = {0};
    json_write_string(&b, "a\"b\\c\n\t\x01 \xc3\xa9");
    ck_assert_str_eq(b.data, "\"a\\\"b\\\\c\\n\\t\\u0001 \xc3\xa9\"");
    /* What we write, we read back identically. */
    Json *j = parse_ok(b.data);
    ck_assert_str_eq(j->string, "a\"b\\c\n\t\x01 \xc3\xa9");
    json_free(j);
    buf_free(&b);
}
END_TEST

START_TEST(test_kind_names) {
    ck_assert_str_eq(json_kind_name(JSON_OBJECT), "object");
    ck_assert_str_eq(json_kind_name(JSON_STRING), "string");
    ck_assert_str_eq(json_kind_name((JsonKind)99), "?");
}
END_TEST

int main(void) {
    Suite *s = suite_create("json");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_scalars);
    tcase_add_test(tc, test_strings);
    tcase_add_test(tc, test_nesting);
    tcase_add_test(tc, test_depth_limit);
    tcase_add_test(tc, test_malformed);
    tcase_add_test(tc, test_long_number);
    tcase_add_test(tc, test_write_string);
    tcase_add_test(tc, test_kind_names);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
