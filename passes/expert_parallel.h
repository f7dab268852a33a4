/* The expert_parallel pass: rewrites a forward graph for one rank of an
 * expert-parallel (EP) group (docs/expert_parallel.md). Rank r of `ranks`
 * keeps the experts [r*L, (r+1)*L), L = E/ranks: each grouped_linear's stack of
 * per-expert weights shrinks to those L params, and every MoE layer's
 * moe_dispatch -> experts -> moe_combine gains the exchanges
 *   moe_dispatch -> ep_dispatch -> experts (local) -> ep_combine -> moe_combine,
 * which move each (token, expert) row to the rank holding the expert and back.
 * Routing, the shared experts and everything else stay per rank. Run it before
 * autodiff: the exchanges' VJPs are the reverse exchanges, so backward needs
 * nothing else; run fp8 after it as usual. */
#ifndef V3C_PASSES_EXPERT_PARALLEL_H
#define V3C_PASSES_EXPERT_PARALLEL_H

#include "../ir/ir.h"

typedef struct EpOptions {
    int ranks;        /* size of the EP group (1 leaves the graph as it is) */
    int rank;         /* this rank's place in it */
    int fp8_dispatch; /* rows travel as FP8: e4m3 bytes plus f32 scales per 1x128 tile (--fp8) */
    /* Rows a rank may receive per local token and MoE layer: 0 for the exact
     * worst case, ranks * min(K, L) (ep_capacity); less trades memory for a
     * run-time error when routing overflows it (never a silent drop). */
    int rows_per_token;
} EpOptions;

/* Rewrites g in place. Errors: E not divisible by ranks, a rank outside
 * [0, ranks), expert weights that are not a stack of params, or expert rows
 * read by an op other than grouped_linear, a zero-preserving elementwise op or
 * moe_combine (those rows are spread over the ranks). */
int expert_parallel_graph(Graph *g, const EpOptions *opt, Err *err);

/* Rows one rank may receive per MoE layer: ranks * N * min(K, L) for N tokens
 * per rank routed to K experts each, as a polynomial in B and T (N is). A token
 * sends at most min(K, L) rows to one rank (node-limited routing lowers the
 * number of ranks it reaches, not this). */
int ep_capacity(Dim tokens, int64_t k, int64_t local_experts, int ranks, Dim *out, Err *err);

#endif
