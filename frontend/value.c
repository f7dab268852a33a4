#include "value.h"

#include <math.h>

static const char *const kind_names[] = {
    [V_NONE] = "none", [V_BOOL] = "bool", [V_INT] = "int",       [V_FLOAT] = "float", [V_STR] = "string",
    [V_DIM] = "dim",   [V_TENSOR] = "tensor", [V_LIST] = "list", [V_TUPLE] = "tuple",
};

const char *value_kind_name(ValueKind k) { return kind_names[k]; }

Val value_none(void) { return (Val){.kind = V_NONE}; }
Val value_bool(int b) { return (Val){.kind = V_BOOL, .i = b != 0}; }
Val value_int(int64_t i) { return (Val){.kind = V_INT, .i = i}; }
Val value_float(double f) { return (Val){.kind = V_FLOAT, .f = f}; }
Val value_str(const char *s) { return (Val){.kind = V_STR, .s = s}; }
Val value_tensor(ValueId t) { return (Val){.kind = V_TENSOR, .tensor = t}; }

Val value_dim(Dim d) {
    if (dim_is_const(d)) return value_int(dim_const_value(d));
    return (Val){.kind = V_DIM, .dim = d};
}

int value_is_number(const Val *v) { return v->kind == V_INT || v->kind == V_FLOAT; }

double value_number(const Val *v) { return v->kind == V_INT ? (double)v->i : v->f; }

int value_as_dim(const Val *v, Dim *out) {
    if (v->kind == V_INT) {
        *out = dim_const(v->i);
        return 0;
    }
    if (v->kind == V_DIM) {
        *out = v->dim;
        return 0;
    }
    return -1;
}

int value_format(Buf *b, const Val *v) {
    char tmp[128];
    switch (v->kind) {
    case V_NONE: buf_puts(b, "none"); return 0;
    case V_BOOL: buf_puts(b, v->i ? "true" : "false"); return 0;
    case V_INT: buf_printf(b, "%lld", (long long)v->i); return 0;
    case V_FLOAT: format_double(tmp, sizeof tmp, v->f); buf_puts(b, tmp); return 0;
    case V_STR: buf_puts(b, v->s); return 0;
    case V_DIM: dim_print(v->dim, tmp, sizeof tmp); buf_puts(b, tmp); return 0;
    default: return -1;
    }
}
