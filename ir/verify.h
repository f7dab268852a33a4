#ifndef V3C_VERIFY_H
#define V3C_VERIFY_H

#include <stddef.h>

#include "ir.h"

/* Structural check: topological order, value ids in range and defined once,
 * arities and attributes per the op table, every type equal to what the
 * shape rule gives, outputs valid, names unique, no node marked dead.
 * Reports the first problem, naming the node's index, op and scope. */
int ir_verify(const Graph *g, Err *err);
/* Every value id a node or output names exists: the minimum a pass needs before
 * it indexes arrays by value id. */
int ir_ids_valid(const Graph *g);

/* Re-runs node i's shape rule on its inputs' types and compares with the types
 * it carries (inputs and params have no rule and always pass). Assumes the
 * node's value ids are in range (ir_verify checks that first). */
int ir_verify_node_types(const Graph *g, size_t i, Err *err);

#endif
