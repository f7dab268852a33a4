/* runtime: expert parallelism (docs/expert_parallel.md). The EP group's
 * collectives over a Comm for the interpreter's ep_dispatch / ep_combine, the
 * interpreter run that binds them, which weights a rank holds, and gathering
 * the experts' gradients back into full sets. */
#ifndef V3C_RUNTIME_EP_H
#define V3C_RUNTIME_EP_H

#include "../ir/collective.h"
#include "../ir/interp.h"
#include "comm.h"

/* A Collectives over an EP communicator (the ranks of one pipeline stage and DP
 * replica set that share experts; comm_split makes it). Borrows comm. */
typedef struct EpGroup {
    Comm *comm;
    Collectives collectives;
} EpGroup;

void ep_group_init(EpGroup *grp, Comm *comm);


/* The expert index e of a weight named "...experts.<e>...", else -1. */
int64_t ep_expert_of(const char *name);
/* Whether rank `rank` of `ranks` holds the weight: every non-expert weight,
 * and experts [rank*E/ranks, (rank+1)*E/ranks). */
int ep_holds(const char *name, int64_t experts, int rank, int ranks);

/* Expert entries of a set whose names start with `prefix` ("grad." for the
 * experts' gradients, "model." for their weights; names "...experts.<e>..."):
 * each rank holds its own experts'; afterwards every rank holds all E experts'
 * (allgather over the EP group), to compare with one rank or to save a full
 * checkpoint. Other entries are left alone. Every rank must hold the same local
 * set (the same graph). */
int ep_gather_experts(Comm *ep, TensorSet *set, int64_t experts, const char *prefix, Err *err);

/* Experts per MoE layer among the set's entries (0: none). */
int64_t ep_held_experts(const TensorSet *set);
/* For reading state saved in the one-rank format (every expert): `out` gets a
 * zero tensor of each entry's shape of `local` (rank `rank` of `ranks`, holding
 * its own experts), plus one under every other rank's expert numbers for each
 * expert entry. Returns the experts per layer in the whole model (0: none). */
int64_t ep_all_expert_shapes(const TensorSet *local, int rank, int ranks, TensorSet *out);
/* Drops the entries of set that rank `rank` of `ranks` does not hold (ep_holds). */
void ep_keep_held(TensorSet *set, int64_t experts, int rank, int ranks);

#endif
