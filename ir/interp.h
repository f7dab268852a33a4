/* The reference interpreter: evaluates a graph node by node in topological
 * order on host tensors. Simple and obviously right, never fast. */
#ifndef V3C_INTERP_H
#define V3C_INTERP_H

#include "ir.h"

/* Named tensors (inputs, weights, outputs). Owns its tensors. */
typedef struct TensorSet {
    StrMap index; /* name -> position in tensors */
    VEC(Tensor *) tensors;
    VEC(char *) names;
} TensorSet;

void tset_init(TensorSet *s);
void tset_free(TensorSet *s);
/* Takes ownership of t; replaces (and frees) a tensor of the same name. */
void tset_put(TensorSet *s, const char *name, Tensor *t);
Tensor *tset_get(const TensorSet *s, const char *name);

typedef struct InterpOptions {
    int64_t batch, seq; /* values of the symbols B and T */
    int threads;        /* 0: all cores */
    /* The EP group's collectives for ep_dispatch / ep_combine (ir/collective.h);
     * NULL for a graph without them. */
    const struct Collectives *collectives;
} InterpOptions;

/* Runs g. Inputs and params are looked up by name in `feeds` (not consumed);
 * every graph output is added to `results` under its output name. Each value is
 * freed after its last use. */
int interp_run(const Graph *g, const TensorSet *feeds, const InterpOptions *opt, TensorSet *results, Err *err);

/* Runs one node's kernel on given tensors (for op tests): allocates outputs from
 * the node's types at B, T. */
int interp_node(const Graph *g, const Node *n, const Tensor *const *in, int64_t b, int64_t t,
                Tensor **out, Err *err);

#endif
