#ifndef V3C_VERIFY_H
#define V3C_VERIFY_H

#include "ir.h"

/* Structural check: topological order, value ids in range and defined once,
 * arities and attributes per the op table, every type equal to what the
 * shape rule gives, outputs valid, names unique. Reports the first problem. */
int ir_verify(const Graph *g, Err *err);

#endif
