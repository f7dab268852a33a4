#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../base/numeric.h"
#include "../runtime/safetensors.h"
#include "testutil.h"

/* A safetensors image: length field, header text, then `data_len` data bytes taken from `data` (zeros if NULL). */
static unsigned char *image(const char *header, const void *data, size_t data_len, size_t *size) {
    size_t h = strlen(header);
    *size = 8 + h + data_len;
    unsigned char *p = calloc(1, *size);
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(p + 8, header, h);
    if (data) memcpy(p + 8 + h, data, data_len);
    return p;
}

static StFile *open_image(const char *header, const void *data, size_t data_len, Err *e) {
    size_t size;
    unsigned char *p = image(header, data, data_len, &size);
    StFile *f = st_open_memory(p, size, "mem.safetensors", e);
    free(p);
    return f;
}

static void expect_error(const char *header, size_t data_len, const char *needle) {
    Err e = {0};
    StFile *f = open_image(header, NULL, data_len, &e);
    ck_assert_msg(f == NULL, "header %s should be rejected", header);
    ck_assert_msg(strstr(e.msg, "mem.safetensors") != NULL, "message does not name the file: %s", e.msg);
    ck_assert_msg(strstr(e.msg, needle) != NULL, "header %s: want '%s' in '%s'", header, needle, e.msg);
}

START_TEST(test_dtype_table) {
    ck_assert_str_eq(st_dtype_name(ST_BF16), "BF16");
    ck_assert_str_eq(st_dtype_name(ST_F8_E4M3), "F8_E4M3");
    ck_assert_uint_eq(st_dtype_size(ST_F64), 8);
    ck_assert_uint_eq(st_dtype_size(ST_BOOL), 1);
    ck_assert_uint_eq(st_dtype_size(ST_I16), 2);
    ck_assert_str_eq(st_dtype_name((StDType)77), "?");
}
END_TEST

START_TEST(test_short_and_long_header) {
    Err e = {0};
    ck_assert_ptr_null(st_open_memory("abc", 3, "mem.safetensors", &e));
    ck_assert_msg(strstr(e.msg, "mem.safetensors: file is 3 bytes, too short") != NULL, "%s", e.msg);
    ck_assert_ptr_null(st_open_memory("", 0, "mem.safetensors", &e));
    ck_assert_msg(strstr(e.msg, "file is 0 bytes") != NULL, "%s", e.msg);
    unsigned char p[12] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' '};
    ck_assert_ptr_null(st_open_memory(p, sizeof p, "mem.safetensors", &e));
    ck_assert_msg(strstr(e.msg, "header length 100 is beyond the file (4 bytes") != NULL, "%s", e.msg);
    unsigned char huge[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    ck_assert_ptr_null(st_open_memory(huge, sizeof huge, "mem.safetensors", &e));
    ck_assert_msg(strstr(e.msg, "header length 18446744073709551615 is beyond") != NULL, "%s", e.msg);
}
END_TEST

START_TEST(test_bad_headers) {
    expect_error("{\"a\":", 0, "mem.safetensors:1:6: malformed JSON");
    expect_error("[1,2]", 0, "header is not a JSON object (found array)");
    expect_error("{\"a\":[]}", 0, "tensor 'a': entry is not an object (found array)");
    expect_error("{\"a\":{\"shape\":[],\"data_offsets\":[0,4]}}", 4, "tensor 'a': dtype is missing");
    expect_error("{\"a\":{\"dtype\":\"F4\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, "tensor 'a': unknown dtype 'F4'");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":3,\"data_offsets\":[0,4]}}", 4, "tensor 'a': shape is missing or not an array");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "tensor 'a': shape is missing");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,-1],\"data_offsets\":[0,4]}}", 4, "shape[1] is not a non-negative integer");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "shape[0] is not a non-negative integer");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, "shape[0] is not");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, "rank 9 is more than the 8");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "tensor 'a': data_offsets must be two non-negative integers");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "data_offsets must be two");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, "data_offsets must be two");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, "data_offsets must be two");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]}}", 4, "data_offsets must be two");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4, "data_offsets begin 4 is after end 0");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
                 "tensor 'a': data_offsets end 8 is beyond the data section (4 bytes)");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
                 "tensor 'a': data_offsets span 4 bytes but F32 [2] needs 8");
    expect_error("{\"a\":{\"dtype\":\"BF16\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 4,
                 "tensor 'a': shape [4294967296,4294967296] is too large");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
                 "tensors 'a' [0,8) and 'b' [4,8) overlap");
    expect_error("{\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]},"
                 "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 8,
                 "tensors 'a' [0,4) and 'b' [2,6) overlap");
    expect_error("{\"__metadata__\":[]}", 0, "__metadata__ is not an object of strings (found array)");
    expect_error("{\"__metadata__\":{\"format\":\"pt\",\"n\":1}}", 0, "__metadata__ value 'n' is not a string (found number)");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "duplicate key");
}
END_TEST

START_TEST(test_valid_edge_cases) {
    Err e = {0};
    /* Zero-size tensors (even at the same offset as others), metadata, a hole, trailing padding spaces. */
    const char *h = "{\"__metadata__\":{\"format\":\"pt\"},"
                    "\"z\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]},"
                    "\"s\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4]},"
                    "\"t\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[6,8]}}   ";
    unsigned char data[8] = {0xfe, 0xff, 0xff, 0xff, 9, 9, 7, 8};
    StFile *f = open_image(h, data, sizeof data, &e);
    ck_assert_msg(f != NULL, "%s", e.msg);
    ck_assert_uint_eq(f->tensors.len, 3);
    /* Held in name order whatever the header order. */
    ck_assert_str_eq(f->tensors.data[0].name, "s");
    ck_assert_str_eq(f->tensors.data[2].name, "z");
    ck_assert_str_eq(st_find(f, "t")->name, "t");
    const StTensor *z = st_find(f, "z"), *s = st_find(f, "s");
    ck_assert(z && z->rank == 2 && z->shape[0] == 0 && z->shape[1] == 3);
    ck_assert_ptr_null(st_find(f, "__metadata__"));
    ck_assert_ptr_null(st_find(f, "missing"));
    Tensor *tz = st_to_tensor(z, &e), *ts = st_to_tensor(s, &e), *tt = st_to_tensor(st_find(f, "t"), &e);
    ck_assert(tz->numel == 0 && tz->dtype == DT_F32);
    ck_assert(ts->rank == 0 && ts->numel == 1 && ts->dtype == DT_I32 && ((int32_t *)ts->data)[0] == -2);
    ck_assert(tt->dtype == DT_U8 && ((uint8_t *)tt->data)[0] == 7 && ((uint8_t *)tt->data)[1] == 8);
    tensor_free(tz), tensor_free(ts), tensor_free(tt);
    st_close(f);
    f = open_image("{}", NULL, 0, &e);
    ck_assert(f && f->tensors.len == 0);
    st_close(f);
}
END_TEST

/* Dtypes st_write never produces: F64, I16, I8, BOOL, and F16/BF16 bits as found in files. */
START_TEST(test_read_conversions) {
    unsigned char data[8 + 4 + 2 + 2 + 2 + 2] = {0};
    double d = -2.5;
    memcpy(data, &d, 8); /* the test host is little-endian, as is the format */
    data[8] = 0xff, data[9] = 0x7f, data[10] = 0x00, data[11] = 0x80; /* I16: 32767, -32768 */
    data[12] = 0x80, data[13] = 0x05;                                 /* I8: -128, 5 */
    data[14] = 0x00, data[15] = 0x3c;                                 /* F16 1.0 */
    data[16] = 0xc0, data[17] = 0x3f;                                 /* BF16 1.5 */
    data[18] = 1, data[19] = 0;                                       /* BOOL */
    const char *h = "{\"d\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]},"
                    "\"i16\":{\"dtype\":\"I16\",\"shape\":[2],\"data_offsets\":[8,12]},"
                    "\"i8\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[12,14]},"
                    "\"h\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[14,16]},"
                    "\"b\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[16,18]},"
                    "\"q\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[18,20]}}";
    Err e = {0};
    StFile *f = open_image(h, data, sizeof data, &e);
    ck_assert_msg(f != NULL, "%s", e.msg);
    Tensor *t = st_to_tensor(st_find(f, "d"), &e);
    ck_assert(t->dtype == DT_F32 && tensor_f32(t)[0] == -2.5f);
    tensor_free(t);
    t = st_to_tensor(st_find(f, "i16"), &e);
    ck_assert(t->dtype == DT_I32 && ((int32_t *)t->data)[0] == 32767 && ((int32_t *)t->data)[1] == -32768);
    tensor_free(t);
    t = st_to_tensor(st_find(f, "i8"), &e);
    ck_assert(t->dtype == DT_I32 && ((int32_t *)t->data)[0] == -128 && ((int32_t *)t->data)[1] == 5);
    tensor_free(t);
    t = st_to_tensor(st_find(f, "h"), &e);
    ck_assert(t->dtype == DT_F32 && tensor_f32(t)[0] == 1.0f);
    tensor_free(t);
    t = st_to_tensor(st_find(f, "b"), &e);
    ck_assert(t->dtype == DT_F32 && tensor_f32(t)[0] == 1.5f);
    tensor_free(t);
    t = st_to_tensor(st_find(f, "q"), &e);
    ck_assert(t->dtype == DT_U8 && ((uint8_t *)t->data)[0] == 1 && ((uint8_t *)t->data)[1] == 0);
    tensor_free(t);
    st_close(f);
}
END_TEST

static Tensor *filled(DType dt, int rank, const int64_t *shape) {
    Tensor *t = tensor_new(dt, rank, shape);
    for (int64_t i = 0; i < t->numel; i++) {
        if (dt == DT_F32 || dt == DT_BF16 || dt == DT_F16) tensor_f32(t)[i] = (float)i * 0.37f - 1.1f;
        else if (dt == DT_I64) ((int64_t *)t->data)[i] = (int64_t)i * 3000000000LL - 7;
        else if (dt == DT_I32) ((int32_t *)t->data)[i] = (int32_t)i * -100000 + 3;
        else ((uint8_t *)t->data)[i] = (uint8_t)(i * 37 + 1);
    }
    return t;
}

static uint64_t read_le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

START_TEST(test_write_read_round_trip) {
    static const struct {
        const char *name;
        DType dt;
        const char *file_dtype;
        DType read_as;
    } cases[] = {
        {"w.f32", DT_F32, "F32", DT_F32},       {"a.bf16", DT_BF16, "BF16", DT_F32}, {"m.f16", DT_F16, "F16", DT_F32},
        {"c.i64", DT_I64, "I64", DT_I64},       {"b.i32", DT_I32, "I32", DT_I32},    {"z.u8", DT_U8, "U8", DT_U8},
        {"q.e4m3", DT_E4M3, "F8_E4M3", DT_E4M3}, {"r.e5m2", DT_E5M2, "F8_E5M2", DT_E5M2},
    };
    enum { N = sizeof cases / sizeof cases[0] };
    int64_t shape[3] = {2, 3, 5};
    TensorSet set;
    tset_init(&set);
    for (int i = 0; i < N; i++) tset_put(&set, cases[i].name, filled(cases[i].dt, 1 + i % 3, shape));
    int64_t empty_shape[2] = {0, 4};
    tset_put(&set, "empty", tensor_new(DT_F32, 2, empty_shape));
    char *dir = make_temp_dir(), *path = path_join(dir, "rt.safetensors");
    Err e = {0};
    ck_assert_msg(st_write(path, &set, &e) == 0, "%s", e.msg);
    size_t len;
    unsigned char *raw = (unsigned char *)read_file(path, &len, &e);
    uint64_t hlen = read_le64(raw);
    ck_assert_uint_eq(hlen % 8, 0);
    ck_assert_int_eq(raw[8 + hlen - 1] == ' ' || raw[8 + hlen - 1] == '}', 1);
    /* Name order in the header: "a.bf16" first, "z.u8" last. */
    char *header = strndup((char *)raw + 8, hlen);
    ck_assert(strstr(header, "a.bf16") && strstr(header, "a.bf16") < strstr(header, "b.i32"));
    ck_assert(strstr(header, "r.e5m2") < strstr(header, "z.u8") && strstr(header, "z.u8"));
    free(header);
    free(raw);
    StFile *f = st_open(path, &e);
    ck_assert_msg(f != NULL, "%s", e.msg);
    ck_assert_uint_eq(f->tensors.len, N + 1);
    ck_assert_uint_eq(f->tensors.data[0].begin, 0); /* data is laid out in name order too */
    for (int i = 0; i < N; i++) {
        const StTensor *st = st_find(f, cases[i].name);
        ck_assert_msg(st != NULL, "%s missing", cases[i].name);
        ck_assert_str_eq(st_dtype_name(st->dtype), cases[i].file_dtype);
        Tensor *got = st_to_tensor(st, &e), *want = tset_get(&set, cases[i].name);
        ck_assert_int_eq(got->dtype, cases[i].read_as);
        ck_assert_int_eq(got->rank, want->rank);
        ck_assert_int_eq(got->numel, want->numel);
        for (int64_t k = 0; k < got->numel; k++) {
            if (cases[i].dt == DT_BF16)
                ck_assert_float_eq(tensor_f32(got)[k], round_to_bf16(tensor_f32(want)[k]));
            else if (cases[i].dt == DT_F16)
                ck_assert_float_eq(tensor_f32(got)[k], round_to_f16(tensor_f32(want)[k]));
        }
        if (cases[i].dt != DT_BF16 && cases[i].dt != DT_F16)
            ck_assert_int_eq(memcmp(got->data, want->data, (size_t)got->numel * dtype_host_size(got->dtype)), 0);
        tensor_free(got);
    }
    const StTensor *empty = st_find(f, "empty");
    ck_assert(empty && empty->begin == empty->end && empty->shape[0] == 0);
    st_close(f);
    tset_free(&set);
    free(path);
    free(dir);
}
END_TEST

START_TEST(test_write_empty_set) {
    TensorSet set;
    tset_init(&set);
    char *dir = make_temp_dir(), *path = path_join(dir, "e.safetensors");
    Err e = {0};
    ck_assert_int_eq(st_write(path, &set, &e), 0);
    StFile *f = st_open(path, &e);
    ck_assert_msg(f && f->tensors.len == 0 && f->size == 16, "%s", e.msg);
    st_close(f);
    tset_free(&set);
    ck_assert_int_eq(st_write("/nonexistent-dir/x.safetensors", &set, &e), -1);
    ck_assert_msg(strstr(e.msg, "/nonexistent-dir/x.safetensors") != NULL, "%s", e.msg);
    free(path);
    free(dir);
}
END_TEST

START_TEST(test_open_file_errors) {
    Err e = {0};
    ck_assert_ptr_null(st_open("/nonexistent/none.safetensors", &e));
    ck_assert_msg(strstr(e.msg, "cannot open '/nonexistent/none.safetensors'") != NULL, "%s", e.msg);
    char *dir = make_temp_dir();
    ck_assert_ptr_null(st_open(dir, &e));
    ck_assert_msg(strstr(e.msg, dir) != NULL && strstr(e.msg, "not a regular file") != NULL, "%s", e.msg);
    char *path = path_join(dir, "short.safetensors");
    write_text(path, "");
    ck_assert_ptr_null(st_open(path, &e));
    ck_assert_msg(strstr(e.msg, "short.safetensors: file is 0 bytes") != NULL, "%s", e.msg);
    write_text(path, "\x02");
    ck_assert_ptr_null(st_open(path, &e));
    ck_assert_msg(strstr(e.msg, "file is 1 bytes") != NULL, "%s", e.msg);
    free(path);
    free(dir);
}
END_TEST

int main(void) {
    Suite *s = suite_create("safetensors");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_dtype_table);
    tcase_add_test(tc, test_short_and_long_header);
    tcase_add_test(tc, test_bad_headers);
    tcase_add_test(tc, test_valid_edge_cases);
    tcase_add_test(tc, test_read_conversions);
    tcase_add_test(tc, test_write_read_round_trip);
    tcase_add_test(tc, test_write_empty_set);
    tcase_add_test(tc, test_open_file_errors);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
