/* Rewriting a graph node by node into a fresh one: the passes that insert
 * nodes (fp8, bf16, expert_parallel) copy what they leave alone, emit their
 * replacements where the old node stood, and so keep the node order
 * topological without a sort. */
#ifndef V3C_PASSES_REBUILD_H
#define V3C_PASSES_REBUILD_H

#include "../ir/ir.h"

typedef struct GraphRebuild {
    const Graph *old;
    Graph *g;     /* the graph being built */
    ValueId *map; /* old value -> new value; -1 until made */
} GraphRebuild;

void rebuild_begin(GraphRebuild *r, const Graph *old);
/* New nodes get n's scope, chunk and flags (forward or backward). */
void rebuild_enter(GraphRebuild *r, const Node *n);
/* n as it is, on its inputs' new values. `pass` names the caller in errors. */
int rebuild_copy_node(GraphRebuild *r, const Node *n, const char *pass, Err *err);
/* The old graph's outputs on their new values, then the new graph takes the
 * old one's place (the old one is freed); on error the old graph is untouched. */
int rebuild_finish(GraphRebuild *r, Graph *g, Err *err);
/* Frees what rebuild_begin made (after finish, or instead of it). */
void rebuild_end(GraphRebuild *r);

#endif
