#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../base/json.h"
#include "../base/numeric.h"

enum { ST_COUNT = ST_BOOL + 1, ST_MAX_RANK = 8 };

typedef void (*ConvertFn)(const unsigned char *src, void *dst, int64_t n);

static uint16_t le16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t le32(const unsigned char *p) { return (uint32_t)le16(p) | (uint32_t)le16(p + 2) << 16; }
static uint64_t le64(const unsigned char *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

static void conv_f64(const unsigned char *s, void *d, int64_t n) {
    for (int64_t i = 0; i < n; i++) ((float *)d)[i] = (float)f64_from_bits(le64(s + 8 * i));
}
static void conv_f32(const unsigned char *s, void *d, int64_t n) {
    for (int64_t i = 0; i < n; i++) ((float *)d)[i] = f32_from_bits(le32(s + 4 * i));
}
static void conv_f16(const unsigned char *s, void *d, int64_t n) {
    for (int64_t i = 0; i < n; i++) ((float *)d)[i] = f16_to_float(le16(s + 2 * i));
}
static void conv_bf16(const unsigned char *s, void *d, int64_t n) {
    for (int64_t i = 0; i < n; i++) ((float *)d)[i] = bf16_to_float(le16(s + 2 * i));
}
static void conv_i64(const unsigned char *s, void *d, int64_t n) {
    for (int64_t i = 0; i < n; i++) ((int64_t *)d)[i] = (int64_t)le64(s + 8 * i);
}
static void conv_i32(const unsigned char *s, void *d, int64_t n) {
    for (int64_t i = 0; i < n; i++) ((int32_t *)d)[i] = (int32_t)le32(s + 4 * i);
}
static void conv_i16(const unsigned char *s, void *d, int64_t n) {
    for (int64_t i = 0; i < n; i++) ((int32_t *)d)[i] = (int16_t)le16(s + 2 * i);
}
static void conv_i8(const unsigned char *s, void *d, int64_t n) {
    for (int64_t i = 0; i < n; i++) ((int32_t *)d)[i] = (int8_t)s[i];
}
static void conv_bytes(const unsigned char *s, void *d, int64_t n) { memcpy(d, s, (size_t)n); }

/* One row per file dtype: its name, element size, and how it becomes a host Tensor. */
static const struct {
    const char *name;
    size_t size;
    DType host;
    ConvertFn convert;
} st_types[ST_COUNT] = {
    [ST_F64] = {"F64", 8, DT_F32, conv_f64},           [ST_F32] = {"F32", 4, DT_F32, conv_f32},
    [ST_F16] = {"F16", 2, DT_F32, conv_f16},           [ST_BF16] = {"BF16", 2, DT_F32, conv_bf16},
    [ST_F8_E4M3] = {"F8_E4M3", 1, DT_E4M3, conv_bytes}, [ST_F8_E5M2] = {"F8_E5M2", 1, DT_E5M2, conv_bytes},
    [ST_I64] = {"I64", 8, DT_I64, conv_i64},           [ST_I32] = {"I32", 4, DT_I32, conv_i32},
    [ST_I16] = {"I16", 2, DT_I32, conv_i16},           [ST_I8] = {"I8", 1, DT_I32, conv_i8},
    [ST_U8] = {"U8", 1, DT_U8, conv_bytes},            [ST_BOOL] = {"BOOL", 1, DT_U8, conv_bytes},
};

const char *st_dtype_name(StDType t) { return (unsigned)t < ST_COUNT ? st_types[t].name : "?"; }
size_t st_dtype_size(StDType t) { return (unsigned)t < ST_COUNT ? st_types[t].size : 0; }

static int st_dtype_parse(const char *s, StDType *out) {
    for (int i = 0; i < ST_COUNT; i++)
        if (strcmp(s, st_types[i].name) == 0) {
            *out = (StDType)i;
            return 0;
        }
    return -1;
}

/* ---- header validation ---- */

typedef struct Checker {
    const char *what;
    uint64_t data_size;
    Err *err;
} Checker;

static void format_shape(char *out, size_t n, const int64_t *shape, int rank) {
    size_t k = (size_t)snprintf(out, n, "[");
    for (int i = 0; i < rank && k < n; i++) k += (size_t)snprintf(out + k, n - k, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (k < n) snprintf(out + k, n - k, "]");
}

static int is_nonneg_integer(const Json *j) { return j && j->kind == JSON_NUMBER && j->is_integer && j->integer >= 0; }

static int check_dtype(const Checker *c, const char *name, const Json *entry, StTensor *t) {
    const Json *d = json_get(entry, "dtype");
    if (!d || d->kind != JSON_STRING)
        return err_set(c->err, "%s: tensor '%s': dtype is missing or not a string", c->what, name);
    if (st_dtype_parse(d->string, &t->dtype))
        return err_set(c->err, "%s: tensor '%s': unknown dtype '%s'", c->what, name, d->string);
    return 0;
}

static int check_shape(const Checker *c, const char *name, const Json *entry, StTensor *t) {
    const Json *s = json_get(entry, "shape");
    if (!s || s->kind != JSON_ARRAY)
        return err_set(c->err, "%s: tensor '%s': shape is missing or not an array", c->what, name);
    if (s->len > ST_MAX_RANK)
        return err_set(c->err, "%s: tensor '%s': rank %zu is more than the %d supported", c->what, name, s->len,
                       ST_MAX_RANK);
    t->rank = (int)s->len;
    for (size_t i = 0; i < s->len; i++) {
        if (!is_nonneg_integer(s->items[i]))
            return err_set(c->err, "%s: tensor '%s': shape[%zu] is not a non-negative integer", c->what, name, i);
        t->shape[i] = s->items[i]->integer;
    }
    return 0;
}

static int check_offsets(const Checker *c, const char *name, const Json *entry, StTensor *t) {
    const Json *o = json_get(entry, "data_offsets");
    if (!o || o->kind != JSON_ARRAY || o->len != 2 || !is_nonneg_integer(o->items[0]) ||
        !is_nonneg_integer(o->items[1]))
        return err_set(c->err, "%s: tensor '%s': data_offsets must be two non-negative integers", c->what, name);
    t->begin = (uint64_t)o->items[0]->integer;
    t->end = (uint64_t)o->items[1]->integer;
    if (t->begin > t->end)
        return err_set(c->err, "%s: tensor '%s': data_offsets begin %llu is after end %llu", c->what, name,
                       (unsigned long long)t->begin, (unsigned long long)t->end);
    if (t->end > c->data_size)
        return err_set(c->err, "%s: tensor '%s': data_offsets end %llu is beyond the data section (%llu bytes)",
                       c->what, name, (unsigned long long)t->end, (unsigned long long)c->data_size);
    return 0;
}

static int check_byte_length(const Checker *c, const char *name, const StTensor *t) {
    char shape[256];
    format_shape(shape, sizeof shape, t->shape, t->rank);
    int64_t need = (int64_t)st_dtype_size(t->dtype);
    for (int i = 0; i < t->rank; i++)
        if (mul_overflows_i64(need, t->shape[i], &need))
            return err_set(c->err, "%s: tensor '%s': shape %s is too large", c->what, name, shape);
    uint64_t have = t->end - t->begin;
    if (have != (uint64_t)need)
        return err_set(c->err, "%s: tensor '%s': data_offsets span %llu bytes but %s %s needs %lld", c->what, name,
                       (unsigned long long)have, st_dtype_name(t->dtype), shape, (long long)need);
    return 0;
}

static int check_entry(const Checker *c, const char *name, const Json *entry, StTensor *t) {
    if (entry->kind != JSON_OBJECT)
        return err_set(c->err, "%s: tensor '%s': entry is not an object (found %s)", c->what, name,
                       json_kind_name(entry->kind));
    if (check_dtype(c, name, entry, t) || check_shape(c, name, entry, t) || check_offsets(c, name, entry, t))
        return -1;
    return check_byte_length(c, name, t);
}

static int check_metadata(const Checker *c, const Json *m) {
    if (m->kind != JSON_OBJECT)
        return err_set(c->err, "%s: __metadata__ is not an object of strings (found %s)", c->what, json_kind_name(m->kind));
    for (size_t i = 0; i < m->len; i++)
        if (m->items[i]->kind != JSON_STRING)
            return err_set(c->err, "%s: __metadata__ value '%s' is not a string (found %s)", c->what, m->keys[i],
                           json_kind_name(m->items[i]->kind));
    return 0;
}

static int by_begin(const void *a, const void *b) {
    const StTensor *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int by_tensor_name(const void *a, const void *b) {
    return strcmp(((const StTensor *)a)->name, ((const StTensor *)b)->name);
}

/* Overlap is checked on a copy sorted by offset; the tensors themselves end up sorted by name. */
static int check_overlap(const Checker *c, const StFile *f) {
    size_t n = f->tensors.len;
    StTensor *sorted = xmalloc((n ? n : 1) * sizeof *sorted);
    if (n) memcpy(sorted, f->tensors.data, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, by_begin);
    const StTensor *prev = NULL;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const StTensor *t = &sorted[i];
        if (t->begin == t->end) continue; /* empty tensors occupy no bytes */
        if (prev && prev->end > t->begin)
            rc = err_set(c->err, "%s: tensors '%s' [%llu,%llu) and '%s' [%llu,%llu) overlap", c->what, prev->name,
                         (unsigned long long)prev->begin, (unsigned long long)prev->end, t->name,
                         (unsigned long long)t->begin, (unsigned long long)t->end);
        prev = t;
    }
    free(sorted);
    return rc;
}

static int read_entries(const Checker *c, const Json *header, StFile *f, const unsigned char *data) {
    for (size_t i = 0; i < header->len; i++) {
        const char *name = header->keys[i];
        if (strcmp(name, "__metadata__") == 0) {
            if (check_metadata(c, header->items[i])) return -1;
            continue;
        }
        StTensor t = {0};
        if (check_entry(c, name, header->items[i], &t)) return -1;
        t.name = xstrdup(name);
        t.data = data + t.begin;
        VEC_PUSH(f->tensors, t);
    }
    return 0;
}

static int parse_header(StFile *f, const char *what, Err *err) {
    if (f->size < 8)
        return err_set(err, "%s: file is %zu bytes, too short for the 8-byte safetensors header length", what, f->size);
    uint64_t hlen = le64(f->map);
    if (hlen > f->size - 8)
        return err_set(err, "%s: header length %llu is beyond the file (%zu bytes after the length field)", what,
                       (unsigned long long)hlen, f->size - 8);
    Json *header = json_parse((const char *)f->map + 8, (size_t)hlen, what, err);
    if (!header) return err_wrap(err, "invalid safetensors header: ");
    int rc = 0;
    if (header->kind != JSON_OBJECT) {
        rc = err_set(err, "%s: safetensors header is not a JSON object (found %s)", what, json_kind_name(header->kind));
    } else {
        Checker c = {what, f->size - 8 - hlen, err};
        rc = read_entries(&c, header, f, f->map + 8 + hlen);
        if (!rc) rc = check_overlap(&c, f);
        /* Name order makes st_find a binary search: checkpoints hold thousands of tensors. */
        if (!rc && f->tensors.len) qsort(f->tensors.data, f->tensors.len, sizeof *f->tensors.data, by_tensor_name);
    }
    json_free(header);
    return rc;
}

static StFile *finish_open(StFile *f, const char *what, Err *err) {
    if (parse_header(f, what, err)) {
        st_close(f);
        return NULL;
    }
    return f;
}

static StFile *new_file(const char *what) {
    StFile *f = xcalloc(1, sizeof *f);
    f->path = xstrdup(what);
    return f;
}

/* Maps `size` bytes; size 0 gets no mapping (mmap refuses it) and fails the length check later. */
static int map_fd(StFile *f, int fd, size_t size, int writable) {
    if (size == 0) return 0;
    void *m = mmap(NULL, size, writable ? PROT_READ | PROT_WRITE : PROT_READ,
                   fd < 0 ? MAP_PRIVATE | MAP_ANONYMOUS : MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) return -1;
    f->map = m;
    f->size = size;
    return 0;
}

StFile *st_open(const char *path, Err *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return err_set(err, "cannot open '%s': %s", path, strerror(errno)), NULL;
    struct stat st;
    StFile *f = new_file(path);
    const char *problem = NULL;
    if (fstat(fd, &st)) problem = strerror(errno);
    else if (!S_ISREG(st.st_mode)) problem = "not a regular file";
    else if (map_fd(f, fd, (size_t)st.st_size, 0)) problem = strerror(errno);
    close(fd);
    if (problem) {
        err_set(err, "cannot read '%s': %s", path, problem);
        st_close(f);
        return NULL;
    }
    return finish_open(f, path, err);
}

/* An anonymous mapping rather than malloc, so st_close releases both kinds the same way. */
StFile *st_open_memory(const void *data, size_t size, const char *what, Err *err) {
    StFile *f = new_file(what);
    if (map_fd(f, -1, size, 1)) {
        st_close(f);
        return err_set(err, "%s: cannot map %zu bytes: %s", what, size, strerror(errno)), NULL;
    }
    if (size) memcpy(f->map, data, size);
    f->size = size;
    return finish_open(f, what, err);
}

void st_close(StFile *f) {
    if (!f) return;
    if (f->map) munmap(f->map, f->size);
    for (size_t i = 0; i < f->tensors.len; i++) free(f->tensors.data[i].name);
    VEC_FREE(f->tensors);
    free(f->path);
    free(f);
}

const StTensor *st_find(const StFile *f, const char *name) {
    if (!f->tensors.len) return NULL;
    StTensor key = {.name = (char *)name};
    return bsearch(&key, f->tensors.data, f->tensors.len, sizeof key, by_tensor_name);
}

Tensor *st_to_tensor(const StTensor *t, Err *err) {
    if ((unsigned)t->dtype >= ST_COUNT || t->rank < 0 || t->rank > ST_MAX_RANK)
        return err_internal(err, "tensor '%s' was not validated", t->name), NULL;
    Tensor *out = tensor_new(st_types[t->dtype].host, t->rank, t->shape);
    st_types[t->dtype].convert(t->data, out->data, out->numel);
    return out;
}

/* ---- writing ---- */

static void put_le(unsigned char *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (unsigned char)(v >> (8 * i) & 0xFF);
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

typedef void (*StoreFn)(unsigned char *dst, const void *src, int64_t n);

static void store_f32(unsigned char *d, const void *s, int64_t n) {
    for (int64_t i = 0; i < n; i++) put_le(d + 4 * i, f32_bits(((const float *)s)[i]), 4);
}
static void store_bf16(unsigned char *d, const void *s, int64_t n) {
    for (int64_t i = 0; i < n; i++) put_le(d + 2 * i, float_to_bf16(((const float *)s)[i]), 2);
}
static void store_f16(unsigned char *d, const void *s, int64_t n) {
    for (int64_t i = 0; i < n; i++) put_le(d + 2 * i, float_to_f16(((const float *)s)[i]), 2);
}
static void store_i64(unsigned char *d, const void *s, int64_t n) {
    for (int64_t i = 0; i < n; i++) put_le(d + 8 * i, (uint64_t)((const int64_t *)s)[i], 8);
}
static void store_i32(unsigned char *d, const void *s, int64_t n) {
    for (int64_t i = 0; i < n; i++) put_le(d + 4 * i, (uint32_t)((const int32_t *)s)[i], 4);
}
static void store_bytes(unsigned char *d, const void *s, int64_t n) { memcpy(d, s, (size_t)n); }

/* How each host dtype is stored in a file. */
static const struct {
    StDType file;
    StoreFn store;
} st_writers[DT_COUNT] = {
    [DT_F32] = {ST_F32, store_f32},          [DT_BF16] = {ST_BF16, store_bf16},
    [DT_F16] = {ST_F16, store_f16},          [DT_E4M3] = {ST_F8_E4M3, store_bytes},
    [DT_E5M2] = {ST_F8_E5M2, store_bytes},   [DT_I32] = {ST_I32, store_i32},
    [DT_I64] = {ST_I64, store_i64},          [DT_U8] = {ST_U8, store_bytes},
};

typedef struct Named {
    const char *name;
    const Tensor *t;
    uint64_t begin, end;
} Named;

static int by_name(const void *a, const void *b) { return strcmp(((const Named *)a)->name, ((const Named *)b)->name); }

static void write_header_entry(Buf *h, const Named *e) {
    json_write_string(h, e->name);
    buf_printf(h, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(st_writers[e->t->dtype].file));
    for (int i = 0; i < e->t->rank; i++) buf_printf(h, "%s%lld", i ? "," : "", (long long)e->t->shape[i]);
    buf_printf(h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)e->begin, (unsigned long long)e->end);
}

/* Sorts the set by name and lays the tensors out back to back; returns the data size. */
static Named *layout(const TensorSet *set, uint64_t *data_size, Err *err) {
    size_t n = set->tensors.len;
    Named *v = xmalloc((n ? n : 1) * sizeof *v);
    uint64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        v[i] = (Named){set->names.data[i], set->tensors.data[i], 0, 0};
        if ((unsigned)v[i].t->dtype >= DT_COUNT || v[i].t->numel < 0) {
            err_internal(err, "tensor '%s' has an invalid dtype or size", v[i].name);
            free(v);
            return NULL;
        }
    }
    qsort(v, n, sizeof *v, by_name);
    for (size_t i = 0; i < n; i++) {
        v[i].begin = at;
        at += (uint64_t)v[i].t->numel * st_dtype_size(st_writers[v[i].t->dtype].file);
        v[i].end = at;
    }
    *data_size = at;
    return v;
}

int st_write(const char *path, const TensorSet *set, Err *err) {
    uint64_t data_size;
    Named *v = layout(set, &data_size, err);
    if (!v) return -1;
    Buf header = {0};
    buf_putc(&header, '{');
    for (size_t i = 0; i < set->tensors.len; i++) {
        if (i) buf_putc(&header, ',');
        write_header_entry(&header, &v[i]);
    }
    buf_putc(&header, '}');
    while (header.len % 8) buf_putc(&header, ' '); /* keeps the data section 8-byte aligned */
    size_t total = 8 + header.len + (size_t)data_size;
    unsigned char *file = xmalloc(total);
    put_le(file, header.len, 8);
    memcpy(file + 8, header.data, header.len);
    unsigned char *data = file + 8 + header.len;
    for (size_t i = 0; i < set->tensors.len; i++)
        st_writers[v[i].t->dtype].store(data + v[i].begin, v[i].t->data, v[i].t->numel);
    int rc = write_file_atomic(path, file, total, err);
    free(file);
    free(v);
    buf_free(&header);
    return rc;
}
