/* PLACEHOLDER until the op table lands: names and arity only. */
#include <string.h>
#include "ir.h"
static const OpInfo table[OP_COUNT] = {
#define OP(e, nm, mi, ma, no) [OP_##e] = {.name = nm, .min_in = mi, .max_in = ma, .nout = no},
#include "ops.def"
#undef OP
};
const OpInfo *op_info(OpKind op) { return &table[op]; }
int op_lookup(const char *name, OpKind *out) {
    for (int i = 0; i < OP_COUNT; i++)
        if (strcmp(table[i].name, name) == 0) { *out = (OpKind)i; return 0; }
    return -1;
}
