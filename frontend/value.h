/* Compile-time values (Val) of the .v3 language: scalars computed while lowering,
 * dims (polynomials in B and T), tensors (graph values; ir.h's Value) and lists. */
#ifndef V3C_VALUE_H
#define V3C_VALUE_H

#include "../ir/ir.h"

typedef enum ValueKind { V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_DIM, V_TENSOR, V_LIST, V_TUPLE } ValueKind;

typedef struct Val Val;
struct Val {
    ValueKind kind;
    union {
        int64_t i;     /* V_BOOL (0/1), V_INT */
        double f;      /* V_FLOAT */
        const char *s; /* V_STR */
        Dim dim;       /* V_DIM: never constant (constants are V_INT) */
        ValueId tensor;
        struct {
            int len;
            Val *items;
        } list; /* V_LIST, V_TUPLE */
    };
};

const char *value_kind_name(ValueKind k); /* "int", "tensor", ... for messages */
Val value_none(void);
Val value_bool(int b);
Val value_int(int64_t i);
Val value_float(double f);
Val value_str(const char *s);
Val value_tensor(ValueId t);
Val value_dim(Dim d); /* a constant dim becomes an int */

int value_is_number(const Val *v); /* int or float */
double value_number(const Val *v);
/* Int or dim as a Dim; 0 ok, -1 if v is neither. */
int value_as_dim(const Val *v, Dim *out);
/* Appends v as interpolation shows it (ints without decimals); -1 for tensors and lists. */
int value_format(Buf *b, const Val *v);

#endif
