/* memplan: see memplan.h. One forward sweep computes last uses, a difference
 * array over node positions gives the live bytes at every node, and
 * base/arena.h's best fit hands out the offsets. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/arena.h"
#include "../ir/verify.h"
#include "memplan.h"
#include "passes.h"

static const int64_t device_bytes[DT_COUNT] = {
    [DT_F32] = 4, [DT_BF16] = 2, [DT_F16] = 2, [DT_E4M3] = 1,
    [DT_E5M2] = 1, [DT_I32] = 4, [DT_I64] = 8, [DT_U8] = 1,
};

int64_t memplan_dtype_bytes(DType t) { return (unsigned)t < DT_COUNT ? device_bytes[t] : 0; }

/* depends[v]: v is an input or computed from one, transitively (one sweep:
 * nodes are in topological order). */
static uint8_t *input_dependence(const Graph *g) {
    uint8_t *depends = xcalloc(g->values.len ? g->values.len : 1, 1);
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        uint8_t d = n->op == OP_INPUT;
        for (int k = 0; k < n->nin; k++) d |= depends[n->in[k]];
        for (int k = 0; k < n->nout; k++) depends[n->out[k]] = d;
    }
    return depends;
}

static int value_bytes(const Graph *g, ValueId v, int64_t batch, int64_t seq, int64_t *out, Err *err) {
    const Type *ty = &g->values.data[v].type;
    int64_t shape[IR_MAX_RANK];
    if (type_concrete(ty, batch, seq, shape, err)) return -1;
    int64_t n = memplan_dtype_bytes(ty->dtype);
    for (int i = 0; i < ty->rank; i++) {
        if (shape[i] < 0) return err_set(err, "memplan: value %%%d has a negative extent at B=%lld, T=%lld", (int)v,
                                         (long long)batch, (long long)seq);
        if (mul_overflows_i64(n, shape[i], &n))
            return err_set(err, "memplan: value %%%d does not fit in 2^63 bytes", (int)v);
    }
    *out = n;
    return 0;
}

/* Activations get their bytes; weight-derived values are summed apart and get 0. */
static int size_values(const Graph *g, int64_t batch, int64_t seq, MemPlan *p, Err *err) {
    uint8_t *depends = input_dependence(g);
    int rc = 0;
    for (size_t v = 0; v < p->nvalues && !rc; v++) {
        OpKind op = g->nodes.data[g->values.data[v].node].op;
        if (op == OP_PARAM || op == OP_INPUT) continue;
        rc = value_bytes(g, (ValueId)v, batch, seq, &p->bytes[v], err);
        if (!rc && !depends[v]) {
            if (add_overflows_i64(p->weight_derived_bytes, p->bytes[v], &p->weight_derived_bytes))
                rc = err_set(err, "memplan: the graph's values exceed 2^63 bytes");
            p->bytes[v] = 0;
        }
    }
    free(depends);
    return rc;
}

static void compute_last_uses(const Graph *g, MemPlan *p, uint8_t *is_output) {
    size_t nn = g->nodes.len;
    for (size_t v = 0; v < p->nvalues; v++) p->last_use[v] = g->values.data[v].node;
    for (size_t i = 0; i < nn; i++)
        for (int k = 0; k < g->nodes.data[i].nin; k++) p->last_use[g->nodes.data[i].in[k]] = (int32_t)i;
    for (size_t i = 0; i < g->outputs.len; i++) {
        ValueId v = g->outputs.data[i].value;
        p->last_use[v] = (int32_t)nn;
        is_output[v] = 1;
    }
}

/* Max of the running sum of delta[0..n-1]; *at gets the first position reaching it. */
static int64_t running_max(const int64_t *delta, size_t n, int32_t *at) {
    int64_t live = 0, best = 0;
    *at = n ? 0 : -1;
    for (size_t i = 0; i < n; i++) {
        live += delta[i];
        if (live > best) best = live, *at = (int32_t)i;
    }
    return best;
}

/* Sums can overflow only if the sizes already nearly do: checked once here. */
static int sweep_peaks(const Graph *g, MemPlan *p, const uint8_t *is_output, Err *err) {
    size_t nn = g->nodes.len;
    int64_t *all = xcalloc(nn + 2, sizeof *all), *acts = xcalloc(nn + 2, sizeof *acts), total = 0;
    int rc = 0;
    for (size_t v = 0; v < p->nvalues && !rc; v++) {
        int64_t b = p->bytes[v];
        int32_t first = g->values.data[v].node, end = p->last_use[v] + 1;
        all[first] += b, all[end] -= b;
        if (is_output[v]) p->output_bytes += b;
        else acts[first] += b, acts[end] -= b;
        if (add_overflows_i64(total, b, &total)) rc = err_set(err, "memplan: the graph's values exceed 2^63 bytes");
    }
    int32_t ignored;
    if (!rc) {
        p->peak_bytes = running_max(all, nn, &p->peak_node);
        p->peak_activation_bytes = running_max(acts, nn, &ignored);
    }
    free(all);
    free(acts);
    return rc;
}

/* Activations by greedy best fit (base/arena.h): a value lives from its
 * producer to its last use, graph outputs (last use nodes.len) to the end. */
static int assign_offsets(const Graph *g, MemPlan *p, Err *err) {
    size_t nv = p->nvalues ? p->nvalues : 1;
    ArenaBuffer *bufs = xcalloc(nv, sizeof *bufs);
    for (size_t v = 0; v < p->nvalues; v++)
        bufs[v] = (ArenaBuffer){g->values.data[v].node, p->last_use[v], p->bytes[v]};
    int rc = arena_pack(bufs, p->nvalues, (int32_t)g->nodes.len + 1, p->offset, &p->arena_bytes, err);
    free(bufs);
    return rc;
}

int memplan_build(const Graph *g, int64_t batch, int64_t seq, MemPlan *p, Err *err) {
    memset(p, 0, sizeof *p);
    if (!ir_ids_valid(g)) return err_internal(err, "memplan: the graph refers to values that do not exist (run verify)");
    if (batch < 1 || seq < 1) return err_set(err, "memplan: batch and sequence length must be positive");
    p->nvalues = g->values.len;
    size_t n = p->nvalues ? p->nvalues : 1;
    p->bytes = xcalloc(n, sizeof *p->bytes);
    p->offset = xmalloc(n * sizeof *p->offset);
    p->last_use = xmalloc(n * sizeof *p->last_use);
    for (size_t v = 0; v < p->nvalues; v++) p->offset[v] = -1;
    uint8_t *is_output = xcalloc(n, 1);
    compute_last_uses(g, p, is_output);
    int rc = size_values(g, batch, seq, p, err);
    if (!rc) rc = sweep_peaks(g, p, is_output, err);
    free(is_output);
    if (!rc) rc = assign_offsets(g, p, err);
    if (rc) memplan_free(p);
    return rc;
}

void memplan_free(MemPlan *p) {
    free(p->bytes);
    free(p->offset);
    free(p->last_use);
    memset(p, 0, sizeof *p);
}

int memplan_peak(const Graph *g, int64_t batch, int64_t seq, int64_t *peak_bytes, Err *err) {
    MemPlan p;
    if (memplan_build(g, batch, seq, &p, err)) return -1;
    *peak_bytes = p.peak_bytes;
    memplan_free(&p);
    return 0;
}

/* The report goes to the pipeline's log. */
int pass_memplan(Graph *g, PassContext *ctx, Err *err) {
    MemPlan p;
    if (memplan_build(g, MEMPLAN_PASS_BATCH, MEMPLAN_PASS_SEQ, &p, err)) return -1;
    const Node *at = p.peak_node >= 0 ? &g->nodes.data[p.peak_node] : NULL;
    fprintf(pass_log(ctx),
            "; memplan at B=%d T=%d: peak_bytes %lld (at node %d%s%s%s%s), peak_activation_bytes %lld, "
            "output_bytes %lld, arena_bytes %lld, weight_derived_bytes %lld\n",
            MEMPLAN_PASS_BATCH, MEMPLAN_PASS_SEQ, (long long)p.peak_bytes, (int)p.peak_node, at ? " " : "",
            at ? op_info(at->op)->name : "", at && at->scope[0] ? " in " : "", at ? at->scope : "",
            (long long)p.peak_activation_bytes, (long long)p.output_bytes, (long long)p.arena_bytes,
            (long long)p.weight_derived_bytes);
    memplan_free(&p);
    return 0;
}
