/* The IR's text form (docs/ir.md) and Graphviz DOT form. */
#ifndef V3C_TEXT_H
#define V3C_TEXT_H

#include "ir.h"

typedef struct PrintOptions {
    int annotate;       /* add "; flops=N bytes=N" comments */
    int64_t batch, seq; /* B and T for annotations */
} PrintOptions;

void ir_print(const Graph *g, const PrintOptions *opt, Buf *out);
/* what names the text in errors: "file.v3ir:LINE:COL: error: ...". */
Graph *ir_parse(const char *text, const char *what, Err *err);
void ir_print_dot(const Graph *g, Buf *out);
/* FLOPs and bytes moved by one node at B, T (for annotations, stats, benchmarks). */
int ir_node_cost(const Graph *g, const Node *n, int64_t b, int64_t t, double *flops, double *bytes);

#endif
