/* Expert parallelism: ep_dispatch and ep_combine move MoE rows between the
 * ranks of the EP group by all-to-all-v (ir/collective.h). Rank q of `ranks`
 * holds the experts [q*L, (q+1)*L), L = E/ranks; moe_dispatch has already
 * grouped a rank's rows by global expert, so the rows for rank q are one
 * contiguous run. docs/expert_parallel.md explains the layout and the bound. */
#include <stdlib.h>

#include "../../base/fp8.h"
#include "../collective.h"
#include "../vjp.h"
#include "ops_internal.h"

const AttrSpec ep_dispatch_attrs[] = {{"capacity", ATTR_DIMS, 1}, {"fp8", ATTR_INT, 0}, {"ranks", ATTR_INT, 1}, {0}};
const AttrSpec ep_combine_attrs[] = {{"ranks", ATTR_INT, 1}, {"rows", ATTR_DIMS, 1}, {0}};

/* ---- the per-thread binding (see collective.h for why it exists) ---- */
static _Thread_local const Collectives *bound_collectives;

const Collectives *collectives_bind(const Collectives *c) {
    const Collectives *prev = bound_collectives;
    bound_collectives = c;
    return prev;
}

const Collectives *collectives_current(void) { return bound_collectives; }

/* ---- shape rules ---- */
static int ranks_attr(const Node *n, int64_t experts, int64_t *ranks, Err *err) {
    *ranks = node_int(n, "ranks", 0);
    if (*ranks < 1 || *ranks > 1 << 20)
        return err_set(err, "%s: ranks=%lld must be in [1, 2^20]", node_op_name(n), (long long)*ranks);
    if (experts % *ranks)
        return err_set(err, "%s: %lld experts do not split evenly over %lld ranks", node_op_name(n), (long long)experts,
                       (long long)*ranks);
    return 0;
}

static int one_dim_attr(const Node *n, const char *key, Dim *out, Err *err) {
    const Attr *a = node_attr(n, key);
    if (!a || a->ndims != 1) return err_set(err, "%s: %s must be one dim", node_op_name(n), key);
    *out = a->dims[0];
    return 0;
}

static int expert_count(const Node *n, const char *what, const Type *counts, int64_t *experts, Err *err) {
    if (require_index(n, what, counts, err)) return -1;
    if (counts->rank != 1 || !dim_is_const(counts->dims[0]) || dim_const_value(counts->dims[0]) < 1)
        return err_set(err, "%s: %s %s must be [E] with E a constant >= 1", node_op_name(n), what, TY(counts));
    *experts = dim_const_value(counts->dims[0]);
    return 0;
}

int ep_dispatch_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    const Type *x = &in[0];
    int64_t experts, ranks, fp8 = node_int(n, "fp8", 0);
    Dim capacity;
    if (expert_count(n, "counts", &in[1], &experts, err) || ranks_attr(n, experts, &ranks, err) ||
        one_dim_attr(n, "capacity", &capacity, err))
        return -1;
    if (x->rank != 2) return err_set(err, "ep_dispatch: x %s must be [M,W]", TY(x));
    if (fp8 != 0 && fp8 != 1) return err_set(err, "ep_dispatch: fp8=%lld must be 0 or 1", (long long)fp8);
    if (fp8 && require_real(n, "x", x, err)) return -1;
    int64_t local = experts / ranks;
    out[0] = (Type){.dtype = x->dtype, .rank = 2, .dims = {capacity, x->dims[1]}};
    out[1] = (Type){.dtype = DT_I32, .rank = 1, .dims = {dim_const(local)}};
    out[2] = (Type){.dtype = DT_I32, .rank = 2, .dims = {dim_const(ranks), dim_const(local)}};
    return 0;
}

int ep_combine_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    const Type *yr = &in[0], *plan = &in[1];
    int64_t experts, ranks;
    Dim rows;
    if (expert_count(n, "counts", &in[2], &experts, err) || ranks_attr(n, experts, &ranks, err) ||
        one_dim_attr(n, "rows", &rows, err) || require_index(n, "plan", plan, err))
        return -1;
    if (yr->rank != 2) return err_set(err, "ep_combine: yr %s must be [R,W]", TY(yr));
    if (plan->rank != 2 || !dim_equal(plan->dims[0], dim_const(ranks)) ||
        !dim_equal(plan->dims[1], dim_const(experts / ranks)))
        return err_set(err, "ep_combine: plan %s must be [ranks=%lld, E/ranks=%lld]", TY(plan), (long long)ranks,
                       (long long)(experts / ranks));
    *out = (Type){.dtype = yr->dtype, .rank = 2, .dims = {rows, yr->dims[1]}};
    return 0;
}

/* ---- run-time helpers ---- */
static int bound_group(const Node *n, const Collectives **out, Err *err) {
    const Collectives *c = collectives_current();
    int64_t ranks = node_int(n, "ranks", 0);
    if (!c)
        return err_set(err, "%s: no EP group is bound; an expert-parallel graph runs through runtime/ep.h",
                       node_op_name(n));
    if (c->size != ranks || c->rank < 0 || c->rank >= c->size)
        return err_set(err, "%s: the graph is split for %lld EP ranks but this is rank %d of %d", node_op_name(n),
                       (long long)ranks, c->rank, c->size);
    *out = c;
    return 0;
}

/* Reads an integer count tensor as int64, each >= 0 and their sum exactly `total` (or at most it when !exact). */
static int64_t *read_counts(const Node *n, const char *what, const Tensor *t, int64_t total, int exact, Err *err) {
    int64_t *c = xmalloc(sizeof(int64_t) * (size_t)t->numel), sum = 0;
    int ok = 1;
    for (int64_t i = 0; i < t->numel && ok; i++) {
        c[i] = index_at(t, i);
        ok = c[i] >= 0 && c[i] <= total - sum;
        sum += ok ? c[i] : 0;
    }
    if (ok && (!exact || sum == total)) return c;
    free(c);
    err_set(err, "%s: %s must be >= 0 and sum to %s %lld", node_op_name(n), what, exact ? "exactly" : "at most",
            (long long)total);
    return NULL;
}

/* Row offsets of block (s, j) of a plan (rows from rank s for local expert j):
 * in source-major order (as the exchange delivers them) and in expert-major
 * order (as grouped_linear wants them). */
static void block_offsets(const int64_t *plan, int64_t ranks, int64_t local, int64_t *by_source, int64_t *by_expert) {
    int64_t at = 0;
    for (int64_t s = 0; s < ranks; s++)
        for (int64_t j = 0; j < local; j++) by_source[s * local + j] = at, at += plan[s * local + j];
    at = 0;
    for (int64_t j = 0; j < local; j++)
        for (int64_t s = 0; s < ranks; s++) by_expert[s * local + j] = at, at += plan[s * local + j];
}

/* Sums of `per` consecutive counts, each times `scale`: rows or bytes per rank. */
static void group_sums(const int64_t *counts, int64_t groups, int64_t per, int64_t scale, int64_t *out) {
    for (int64_t q = 0; q < groups; q++) {
        out[q] = 0;
        for (int64_t j = 0; j < per; j++) out[q] += counts[q * per + j] * scale;
    }
}

/* Copies the rows of every block from one order to the other (row_bytes each). */
static void move_blocks(const int64_t *plan, int64_t blocks, const int64_t *from_off, const int64_t *to_off,
                        const char *from, char *to, size_t row_bytes) {
    for (int64_t b = 0; b < blocks; b++)
        memcpy(to + (size_t)to_off[b] * row_bytes, from + (size_t)from_off[b] * row_bytes, (size_t)plan[b] * row_bytes);
}

/* ---- FP8 rows ----
 * The quantize op's 1x128 recipe without pow2 (ir/ops/fp8.c): scale =
 * max(amax, 1e-12)/448 per 128 columns, q = rne(x/scale); dequantized as
 * fp8(q) * scale rounded to the dtype, as dequantize does. A row travels as its
 * scales (f32) then its W e4m3 bytes. */
enum { FP8_TILE = 128 };

static int64_t fp8_tiles(int64_t w) { return (w + FP8_TILE - 1) / FP8_TILE; }
static size_t fp8_row_bytes(int64_t w) { return (size_t)fp8_tiles(w) * sizeof(float) + (size_t)w; }

static void quantize_row(const real *x, int64_t w, char *payload) {
    uint8_t *q = (uint8_t *)payload + fp8_tiles(w) * (int64_t)sizeof(float);
    for (int64_t t = 0; t < fp8_tiles(w); t++) {
        int64_t c0 = t * FP8_TILE, c1 = c0 + FP8_TILE < w ? c0 + FP8_TILE : w;
        real amax = 0;
        for (int64_t c = c0; c < c1; c++) amax = fmax(amax, fabs(x[c]));
        float scale = ((float)amax > 1e-12f ? (float)amax : 1e-12f) / fp8_max(FP8_E4M3);
        memcpy(payload + t * (int64_t)sizeof(float), &scale, sizeof scale);
        for (int64_t c = c0; c < c1; c++) q[c] = fp8_from_float(FP8_E4M3, (float)(x[c] / scale));
    }
}

static void dequantize_row(const char *payload, int64_t w, DType dt, real *y) {
    const uint8_t *q = (const uint8_t *)payload + fp8_tiles(w) * (int64_t)sizeof(float);
    for (int64_t c = 0; c < w; c++) {
        float scale;
        memcpy(&scale, payload + (c / FP8_TILE) * (int64_t)sizeof(float), sizeof scale);
        y[c] = round_to_dtype(dt, fp8_to_float(FP8_E4M3, q[c]) * scale);
    }
}

/* ---- ep_dispatch ---- */
typedef struct Dispatch {
    const Collectives *c;
    int64_t ranks, local, width, rows, capacity;
    int fp8;
    size_t row_bytes; /* on the wire */
    int64_t *counts;  /* [ranks*local]: this rank's rows per global expert */
    int64_t *plan;    /* [ranks*local]: rows from rank s for local expert j */
} Dispatch;

/* Every rank learns how many rows each peer sends it per local expert. */
static int exchange_plan(Dispatch *d, Err *err) {
    int64_t *bytes = xmalloc(sizeof(int64_t) * (size_t)d->ranks);
    for (int64_t q = 0; q < d->ranks; q++) bytes[q] = d->local * (int64_t)sizeof(int64_t);
    int rc = d->c->alltoallv(d->c->ctx, d->counts, bytes, d->plan, bytes, err);
    free(bytes);
    if (rc) return err_wrap(err, "ep_dispatch: exchanging counts: ");
    /* Peers checked their own counts; only a broken one announces fewer than 0.
     * Too many rows in all is found after the row exchange, which every rank
     * must join. */
    for (int64_t i = 0; i < d->ranks * d->local; i++)
        if (d->plan[i] < 0)
            return err_set(err, "ep_dispatch: rank %lld announced %lld rows", (long long)(i / d->local),
                           (long long)d->plan[i]);
    return 0;
}

/* The rows as they travel: x itself, or each row quantized to FP8. */
static char *wire_rows(const Dispatch *d, const Tensor *x) {
    if (!d->fp8) return x->data;
    char *buf = xmalloc(d->row_bytes * (size_t)(d->rows ? d->rows : 1));
    for (int64_t r = 0; r < d->rows; r++)
        quantize_row(tensor_real(x) + r * d->width, d->width, buf + d->row_bytes * (size_t)r);
    return buf;
}

/* Received rows (source-major) into xr (expert-major), dequantizing FP8 rows. */
static void place_rows(const Dispatch *d, const char *recv, Tensor *xr) {
    int64_t blocks = d->ranks * d->local;
    int64_t *by_source = xmalloc(sizeof(int64_t) * (size_t)blocks),
            *by_expert = xmalloc(sizeof(int64_t) * (size_t)blocks);
    block_offsets(d->plan, d->ranks, d->local, by_source, by_expert);
    if (!d->fp8) {
        move_blocks(d->plan, blocks, by_source, by_expert, recv, xr->data, d->row_bytes);
    } else {
        for (int64_t b = 0; b < blocks; b++)
            for (int64_t r = 0; r < d->plan[b]; r++)
                dequantize_row(recv + (size_t)(by_source[b] + r) * d->row_bytes, d->width, xr->dtype,
                               tensor_real(xr) + (by_expert[b] + r) * d->width);
    }
    free(by_source);
    free(by_expert);
}

/* A rank whose rows overflow the capacity still takes part in the exchange
 * (its peers are already in it) and fails after. */
static int exchange_rows(Dispatch *d, const Tensor *x, Tensor *xr, Err *err) {
    int64_t *send = xmalloc(sizeof(int64_t) * (size_t)d->ranks), *recv = xmalloc(sizeof(int64_t) * (size_t)d->ranks);
    group_sums(d->counts, d->ranks, d->local, (int64_t)d->row_bytes, send);
    group_sums(d->plan, d->ranks, d->local, (int64_t)d->row_bytes, recv);
    int64_t received = 0;
    for (int64_t s = 0; s < d->ranks; s++) received += recv[s] / (int64_t)d->row_bytes;
    char *out = wire_rows(d, x), *in = xmalloc(d->row_bytes * (size_t)(received ? received : 1));
    int rc = d->c->alltoallv(d->c->ctx, out, send, in, recv, err);
    if (rc)
        err_wrap(err, "ep_dispatch: ");
    else if (received > d->capacity)
        rc = err_set(err, "ep_dispatch: %lld rows arrive but the capacity is %lld", (long long)received,
                     (long long)d->capacity);
    else
        place_rows(d, in, xr);
    if (out != x->data) free(out);
    free(in);
    free(send);
    free(recv);
    return rc;
}

/* Rows per local expert; the padding rows (zero) count as the last expert's:
 * zero rows through bias-free experts stay zero and add nothing to a weight
 * gradient, and grouped_linear wants counts that cover every row. */
static void local_counts(const Dispatch *d, Tensor *lcounts, Tensor *plan) {
    int64_t total = 0;
    for (int64_t j = 0; j < d->local; j++) {
        int64_t rows = 0;
        for (int64_t s = 0; s < d->ranks; s++) rows += d->plan[s * d->local + j];
        ((int32_t *)lcounts->data)[j] = (int32_t)rows;
        total += rows;
    }
    ((int32_t *)lcounts->data)[d->local - 1] += (int32_t)(d->capacity - total);
    for (int64_t i = 0; i < d->ranks * d->local; i++) ((int32_t *)plan->data)[i] = (int32_t)d->plan[i];
}

int ep_dispatch_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin;
    const Tensor *x = in[0];
    Dispatch d = {.ranks = node_int(n, "ranks", 0),
                  .width = x->shape[1],
                  .rows = x->shape[0],
                  .capacity = out[0]->shape[0],
                  .fp8 = (int)node_int(n, "fp8", 0)};
    d.local = in[1]->numel / d.ranks;
    d.row_bytes = d.fp8 ? fp8_row_bytes(d.width) : (size_t)d.width * dtype_host_size(x->dtype);
    if (d.capacity > INT32_MAX)
        return err_set(err, "ep_dispatch: capacity %lld does not fit i32 counts", (long long)d.capacity);
    if (bound_group(n, &d.c, err) || !(d.counts = read_counts(n, "counts", in[1], d.rows, 1, err))) return -1;
    d.plan = xmalloc(sizeof(int64_t) * (size_t)(d.ranks * d.local));
    int rc = exchange_plan(&d, err);
    if (rc == 0) rc = exchange_rows(&d, x, out[0], err);
    if (rc == 0) local_counts(&d, out[1], out[2]);
    free(d.counts);
    free(d.plan);
    return rc;
}

/* ---- ep_combine ---- */
/* yr's rows (expert-major, padding ignored) back to their ranks; each rank
 * receives its rows in global expert order, the order moe_dispatch made. */
static int combine_rows(const Collectives *c, const int64_t *plan, const int64_t *counts, int64_t ranks, int64_t local,
                        const Tensor *yr, Tensor *y, Err *err) {
    size_t row_bytes = (size_t)yr->shape[1] * dtype_host_size(yr->dtype);
    int64_t blocks = ranks * local, *by_source = xmalloc(sizeof(int64_t) * (size_t)blocks),
            *by_expert = xmalloc(sizeof(int64_t) * (size_t)blocks), *send = xmalloc(sizeof(int64_t) * (size_t)ranks),
            *recv = xmalloc(sizeof(int64_t) * (size_t)ranks);
    block_offsets(plan, ranks, local, by_source, by_expert);
    group_sums(plan, ranks, local, (int64_t)row_bytes, send);
    group_sums(counts, ranks, local, (int64_t)row_bytes, recv);
    int64_t total = 0;
    for (int64_t s = 0; s < ranks; s++) total += send[s] / (int64_t)row_bytes;
    char *packed = xmalloc(row_bytes * (size_t)(total ? total : 1));
    move_blocks(plan, blocks, by_expert, by_source, yr->data, packed, row_bytes);
    int rc = c->alltoallv(c->ctx, packed, send, y->data, recv, err);
    free(packed), free(by_source), free(by_expert), free(send), free(recv);
    return rc ? err_wrap(err, "ep_combine: ") : 0;
}

int ep_combine_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin;
    const Collectives *c;
    int64_t ranks = node_int(n, "ranks", 0), local = in[1]->shape[1];
    if (bound_group(n, &c, err)) return -1;
    int64_t *plan = read_counts(n, "plan", in[1], in[0]->shape[0], 0, err);
    int64_t *counts = plan ? read_counts(n, "counts", in[2], out[0]->shape[0], 1, err) : NULL;
    int rc = counts ? combine_rows(c, plan, counts, ranks, local, in[0], out[0], err) : -1;
    free(plan);
    free(counts);
    return rc;
}

/* ---- VJPs: each exchange's adjoint is the reverse exchange ----
 * ep_dispatch is a permutation of x's rows into xr plus zero padding, so its
 * transpose sends xr's gradient rows back (padding dropped): ep_combine. The
 * FP8 rounding of the forward exchange passes the gradient straight through,
 * as the single-rank FP8 round trip does (the fp8 pass runs after autodiff). */
int vjp_ep_dispatch(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    if (gout[0] < 0 || !vjp_wanted(c, n, 0)) return 0;
    Dim rows = ir_type(c->g, n->in[0])->dims[0];
    Attr a[2] = {attr_int("ranks", node_int(n, "ranks", 0)), attr_dims("rows", 1, &rows)};
    ValueId in[3] = {gout[0], n->out[2], n->in[1]};
    gin[0] = vjp_op(c, OP_EP_COMBINE, in, 3, a, 2, err);
    return gin[0] < 0 ? -1 : 0;
}

/* ep_combine's transpose scatters the gradient rows back out to the experts
 * (zero padding) along the same plan: ep_dispatch of them, which rebuilds the
 * same plan from the same counts. */
int vjp_ep_combine(VjpCtx *c, const Node *n, const ValueId *gout, ValueId *gin, Err *err) {
    if (gout[0] < 0 || !vjp_wanted(c, n, 0)) return 0;
    Dim capacity = ir_type(c->g, n->in[0])->dims[0];
    Attr a[2] = {attr_dims("capacity", 1, &capacity), attr_int("ranks", node_int(n, "ranks", 0))};
    ValueId in[2] = {gout[0], n->in[2]}, out[3];
    if (ir_emit(c->g, OP_EP_DISPATCH, in, 2, a, 2, out, err) < 0) return -1;
    gin[0] = out[0];
    return 0;
}
