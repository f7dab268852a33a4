/* Templates for the model-specific forward ops: embedding, routing (topk,
 * gather, one_hot), the MoE permutes, rope and the loss (sdpa, registered
 * below, is in cuda_tpl_attention.c). Each thread runs the interpreter's loop
 * for its output in the interpreter's order, so results match it bit for bit
 * (up to libm's cos/sin/exp/log on the device).
 * Bad indices store CUDA_STATUS_INDEX into the status word instead of failing. */
#include <stdio.h>
#include <string.h>

#include "cuda_tpl.h"

static void sig(KernelText *kt) { buf_puts(&kt->body, "extern \"C\" __global__ void KNAME("); }

/* ---- the MoE row order (and embedding_grad's token order) ----
 * rank[p] = #{q : key[q] < key[p]} + #{q < p : key[q] == key[p]}: a stable
 * counting sort's destination, computed per element with no shared state. */
static const char rank_body[] =
    "    for (long long p = V3C_THREAD_ID; p < P; p += V3C_THREADS) {\n"
    "        const long long k = (long long)keys[p];\n"
    "        if (k < 0 || (LIMIT >= 0 && k >= LIMIT)) { status[0] = 1; rank[p] = -1; continue; }\n"
    "        long long r = 0;\n"
    "        for (long long q = 0; q < P; q++) r += (long long)keys[q] < k || ((long long)keys[q] == k && q < p);\n"
    "        rank[p] = r;\n"
    "    }\n}\n";

static int rank_kernel(const Tpl *c, ValueId keys, int64_t count, int64_t limit) {
    KernelText kt;
    tpl_begin(&kt, "stable_rank");
    tpl_define(&kt, "P", count);
    tpl_define(&kt, "LIMIT", limit);
    sig(&kt);
    ktext_param(&kt, tpl_in_type(ir_type(c->g, keys)->dtype), "keys");
    ktext_param(&kt, "long long *", "rank");
    ktext_param(&kt, "int *", "status");
    tpl_body(&kt, rank_body);
    CudaArg a[] = {carg_value(keys), carg_scratch(0, count * 8), carg_status()};
    return tpl_launch(c, &kt, a, 3, count);
}

int tpl_stable_rank(const Tpl *c, ValueId keys, int64_t count) { return rank_kernel(c, keys, count, -1); }

/* ---- embedding ---- */
static int tpl_embedding(const Tpl *c) {
    int64_t w[IR_MAX_RANK];
    if (tpl_shape(c, c->n->in[0], w) < 0) return -1;
    int64_t ids = tpl_numel(c, c->n->in[1]);
    KernelText kt;
    tpl_begin(&kt, "embedding");
    tpl_define(&kt, "V", w[0]);
    tpl_define(&kt, "H", w[1]);
    tpl_define(&kt, "N", ids * w[1]);
    sig(&kt);
    ktext_param(&kt, "const float *", "w");
    ktext_param(&kt, tpl_in_type(ir_type(c->g, c->n->in[1])->dtype), "ids");
    ktext_param(&kt, "float *", "out");
    ktext_param(&kt, "int *", "status");
    tpl_body(&kt, "    for (long long i = V3C_THREAD_ID; i < N; i += V3C_THREADS) {\n"
                  "        const long long id = (long long)ids[i / H];\n"
                  "        if (id < 0 || id >= V) { status[0] = 1; continue; }\n"
                  "        out[i] = w[id * H + i % H];\n"
                  "    }\n}\n");
    CudaArg a[] = {carg_value(c->n->in[0]), carg_value(c->n->in[1]), carg_value(c->n->out[0]), carg_status()};
    return tpl_launch(c, &kt, a, 4, ids * w[1]);
}

/* ---- topk: a thread per row, k passes of "largest not yet taken, lower index on ties" ---- */
static int tpl_topk(const Tpl *c) {
    int64_t x[IR_MAX_RANK];
    int rank = tpl_shape(c, c->n->in[0], x);
    if (rank < 1) return rank < 0 ? -1 : err_set(c->err, "topk needs rank >= 1");
    int64_t e = x[rank - 1], k = node_int(c->n, "k", 0), rows = shape_prod(x, 0, rank - 1);
    if (k < 1 || k > e) return err_set(c->err, "topk: k=%lld does not fit the last axis' size %lld", (long long)k, (long long)e);
    KernelText kt;
    tpl_begin(&kt, "topk");
    tpl_define(&kt, "E", e);
    tpl_define(&kt, "K", k);
    tpl_define(&kt, "ROWS", rows);
    sig(&kt);
    ktext_param(&kt, "const float *", "x");
    ktext_param(&kt, "float *", "vals");
    ktext_param(&kt, "int *", "idx");
    ktext_param(&kt, "int *", "status");
    tpl_body(&kt, "    for (long long r = V3C_THREAD_ID; r < ROWS; r += V3C_THREADS) {\n"
                  "        const float *xr = x + r * E;\n"
                  "        unsigned char taken[E];\n"
                  "        int bad = 0;\n"
                  "        for (long long i = 0; i < E; i++) { taken[i] = 0; bad |= isnan(xr[i]); }\n"
                  "        if (bad) { status[0] = 2; continue; }\n"
                  "        for (long long j = 0; j < K; j++) {\n"
                  "            long long best = -1;\n"
                  "            for (long long i = 0; i < E; i++)\n"
                  "                if (!taken[i] && (best < 0 || xr[i] > xr[best])) best = i;\n"
                  "            taken[best] = 1;\n"
                  "            vals[r * K + j] = xr[best];\n"
                  "            idx[r * K + j] = (int)best;\n"
                  "        }\n"
                  "    }\n}\n");
    CudaArg a[] = {carg_value(c->n->in[0]), carg_value(c->n->out[0]), carg_value(c->n->out[1]), carg_status()};
    return tpl_launch(c, &kt, a, 4, rows);
}

/* ---- gather (take along the last axis) ---- */
static int tpl_gather(const Tpl *c) {
    int64_t x[IR_MAX_RANK], idx[IR_MAX_RANK];
    int xr = tpl_shape(c, c->n->in[0], x), ir = tpl_shape(c, c->n->in[1], idx);
    if (xr < 1 || ir < 1) return xr < 0 || ir < 0 ? -1 : err_set(c->err, "gather needs rank >= 1");
    DType dt = ir_type(c->g, c->n->in[0])->dtype;
    int64_t n = shape_prod(idx, 0, ir);
    KernelText kt;
    tpl_begin(&kt, "gather");
    tpl_define(&kt, "E", x[xr - 1]);
    tpl_define(&kt, "K", idx[ir - 1]);
    tpl_define(&kt, "N", n);
    sig(&kt);
    ktext_param(&kt, tpl_in_type(dt), "x");
    ktext_param(&kt, tpl_in_type(ir_type(c->g, c->n->in[1])->dtype), "idx");
    ktext_param(&kt, tpl_out_type(dt), "out");
    ktext_param(&kt, "int *", "status");
    tpl_body(&kt, "    for (long long i = V3C_THREAD_ID; i < N; i += V3C_THREADS) {\n"
                  "        const long long j = (long long)idx[i];\n"
                  "        if (j < 0 || j >= E) { status[0] = 1; continue; }\n"
                  "        out[i] = x[i / K * E + j];\n"
                  "    }\n}\n");
    CudaArg a[] = {carg_value(c->n->in[0]), carg_value(c->n->in[1]), carg_value(c->n->out[0]), carg_status()};
    return tpl_launch(c, &kt, a, 4, n);
}

/* ---- one_hot ---- */
static int tpl_one_hot(const Tpl *c) {
    int64_t n = tpl_numel(c, c->n->in[0]), classes = node_int(c->n, "n", 0);
    KernelText kt;
    tpl_begin(&kt, "one_hot");
    tpl_define(&kt, "C", classes);
    tpl_define(&kt, "N", n * classes);
    sig(&kt);
    ktext_param(&kt, tpl_in_type(ir_type(c->g, c->n->in[0])->dtype), "idx");
    ktext_param(&kt, "float *", "out");
    ktext_param(&kt, "int *", "status");
    tpl_body(&kt, "    for (long long i = V3C_THREAD_ID; i < N; i += V3C_THREADS) {\n"
                  "        const long long j = (long long)idx[i / C];\n"
                  "        if (i % C == 0 && (j < 0 || j >= C)) status[0] = 1;\n"
                  "        out[i] = j == i % C ? 1.0f : 0.0f;\n"
                  "    }\n}\n");
    CudaArg a[] = {carg_value(c->n->in[0]), carg_value(c->n->out[0]), carg_status()};
    return tpl_launch(c, &kt, a, 3, n * classes);
}

/* ---- moe_dispatch: rows by the stable rank, then copies and counts ---- */
static int dispatch_copy(const Tpl *c, int64_t pairs, int64_t k, int64_t h) {
    KernelText kt;
    tpl_begin(&kt, "moe_dispatch");
    tpl_define(&kt, "K", k);
    tpl_define(&kt, "H", h);
    tpl_define(&kt, "N", pairs * h);
    sig(&kt);
    ktext_param(&kt, "const float *", "x");
    ktext_param(&kt, "const long long *", "rows");
    ktext_param(&kt, "float *", "xd");
    tpl_body(&kt, "    for (long long i = V3C_THREAD_ID; i < N; i += V3C_THREADS) {\n"
                  "        const long long p = i / H, row = rows[p];\n"
                  "        if (row >= 0) xd[row * H + i % H] = x[p / K * H + i % H];\n"
                  "    }\n}\n");
    CudaArg a[] = {carg_value(c->n->in[0]), carg_scratch(0, pairs * 8), carg_value(c->n->out[0])};
    return tpl_launch(c, &kt, a, 3, pairs * h);
}

static int dispatch_counts(const Tpl *c, int64_t pairs, int64_t experts) {
    KernelText kt;
    tpl_begin(&kt, "moe_counts");
    tpl_define(&kt, "P", pairs);
    tpl_define(&kt, "EXPERTS", experts);
    sig(&kt);
    ktext_param(&kt, tpl_in_type(ir_type(c->g, c->n->in[1])->dtype), "idx");
    ktext_param(&kt, "int *", "counts");
    tpl_body(&kt, "    for (long long e = V3C_THREAD_ID; e < EXPERTS; e += V3C_THREADS) {\n"
                  "        int n = 0;\n"
                  "        for (long long p = 0; p < P; p++) n += (long long)idx[p] == e;\n"
                  "        counts[e] = n;\n"
                  "    }\n}\n");
    CudaArg a[] = {carg_value(c->n->in[1]), carg_value(c->n->out[1])};
    return tpl_launch(c, &kt, a, 2, experts);
}

static int tpl_moe_dispatch(const Tpl *c) {
    int64_t x[IR_MAX_RANK], idx[IR_MAX_RANK];
    int xr = tpl_shape(c, c->n->in[0], x), ir = tpl_shape(c, c->n->in[1], idx);
    if (xr < 1 || ir < 1) return xr < 0 || ir < 0 ? -1 : err_set(c->err, "moe_dispatch needs rank >= 1");
    int64_t pairs = shape_prod(idx, 0, ir), experts = node_int(c->n, "experts", 0);
    if (rank_kernel(c, c->n->in[1], pairs, experts)) return -1;
    if (dispatch_copy(c, pairs, idx[ir - 1], x[xr - 1])) return -1;
    return dispatch_counts(c, pairs, experts);
}

/* ---- moe_combine: y[t] = sum_k w[t,k] yd[row(t,k)] ---- */
static int tpl_moe_combine(const Tpl *c) {
    int64_t yd[IR_MAX_RANK], idx[IR_MAX_RANK];
    int ir = tpl_shape(c, c->n->in[1], idx);
    if (tpl_shape(c, c->n->in[0], yd) < 0 || ir < 1) return ir == 0 ? err_set(c->err, "moe_combine needs rank >= 1") : -1;
    int64_t pairs = shape_prod(idx, 0, ir), k = idx[ir - 1], tokens = k ? pairs / k : 0;
    if (tpl_stable_rank(c, c->n->in[1], pairs)) return -1;
    KernelText kt;
    tpl_begin(&kt, "moe_combine");
    tpl_define(&kt, "K", k);
    tpl_define(&kt, "H", yd[1]);
    tpl_define(&kt, "N", tokens * yd[1]);
    tpl_define_store(&kt, ir_type(c->g, c->n->out[0])->dtype);
    sig(&kt);
    ktext_param(&kt, "const float *", "yd");
    ktext_param(&kt, "const long long *", "rows");
    ktext_param(&kt, "const float *", "w");
    ktext_param(&kt, "float *", "y");
    tpl_body(&kt, "    for (long long i = V3C_THREAD_ID; i < N; i += V3C_THREADS) {\n"
                  "        const long long t = i / H, col = i % H;\n"
                  "        double s = 0.0;\n"
                  "        for (long long j = 0; j < K; j++) {\n"
                  "            const long long row = rows[t * K + j];\n"
                  "            if (row >= 0) s += (double)w[t * K + j] * yd[row * H + col];\n"
                  "        }\n"
                  "        y[i] = STORE(s);\n"
                  "    }\n}\n");
    CudaArg a[] = {carg_value(c->n->in[0]), carg_scratch(0, pairs * 8), carg_value(c->n->in[2]), carg_value(c->n->out[0])};
    return tpl_launch(c, &kt, a, 4, tokens * yd[1]);
}

/* ---- rope: DeepSeek's interleaved pairs, angle in fp64 ---- */
static int tpl_rope(const Tpl *c) {
    int64_t x[IR_MAX_RANK];
    int rank = tpl_shape(c, c->n->in[0], x);
    if (rank < 3) return rank < 0 ? -1 : err_set(c->err, "rope needs rank >= 3");
    int64_t d = x[rank - 1], vectors = shape_prod(x, 0, rank - 1);
    KernelText kt;
    tpl_begin(&kt, "rope");
    tpl_define(&kt, "D", d);
    tpl_define(&kt, "SEQ", x[1]);
    tpl_define(&kt, "PER_POS", shape_prod(x, 2, rank - 1));
    tpl_define(&kt, "N", vectors * (d / 2));
    char scale[64];
    format_double(scale, sizeof scale, node_float(c->n, "scale", 1.0));
    buf_printf(&kt.body, "#define SCALE ((double)%s)\n", scale);
    tpl_define_store(&kt, ir_type(c->g, c->n->out[0])->dtype);
    sig(&kt);
    ktext_param(&kt, "const float *", "x");
    ktext_param(&kt, "const float *", "inv_freq");
    ktext_param(&kt, "float *", "y");
    tpl_body(&kt, "    for (long long i = V3C_THREAD_ID; i < N; i += V3C_THREADS) {\n"
                  "        const long long v = i / (D / 2), j = i % (D / 2);\n"
                  "        const double pos = (double)((v / PER_POS) % SEQ);\n"
                  "        const double angle = pos * (double)inv_freq[j], cs = cos(angle) * SCALE, sn = sin(angle) * SCALE;\n"
                  "        const double x0 = x[v * D + 2 * j], x1 = x[v * D + 2 * j + 1];\n"
                  "        y[v * D + 2 * j] = STORE(x0 * cs - x1 * sn);\n"
                  "        y[v * D + 2 * j + 1] = STORE(x0 * sn + x1 * cs);\n"
                  "    }\n}\n");
    CudaArg a[] = {carg_value(c->n->in[0]), carg_value(c->n->in[1]), carg_value(c->n->out[0])};
    return tpl_launch(c, &kt, a, 3, vectors * (d / 2));
}

/* ---- cross_entropy: a thread per row, log-sum-exp in fp64 ---- */
static int tpl_cross_entropy(const Tpl *c) {
    int64_t x[IR_MAX_RANK];
    int rank = tpl_shape(c, c->n->in[0], x);
    if (rank < 1) return rank < 0 ? -1 : err_set(c->err, "cross_entropy needs rank >= 1");
    int64_t rows = shape_prod(x, 0, rank - 1);
    KernelText kt;
    tpl_begin(&kt, "cross_entropy");
    tpl_define(&kt, "V", x[rank - 1]);
    tpl_define(&kt, "ROWS", rows);
    sig(&kt);
    ktext_param(&kt, "const float *", "logits");
    ktext_param(&kt, tpl_in_type(ir_type(c->g, c->n->in[1])->dtype), "targets");
    ktext_param(&kt, "float *", "out");
    ktext_param(&kt, "int *", "status");
    tpl_body(&kt, "    for (long long r = V3C_THREAD_ID; r < ROWS; r += V3C_THREADS) {\n"
                  "        const long long target = (long long)targets[r];\n"
                  "        if (target < 0 || target >= V) { status[0] = 1; continue; }\n"
                  "        const float *xr = logits + r * V;\n"
                  "        double m = -v3c_inf(), s = 0.0;\n"
                  "        for (long long i = 0; i < V; i++) m = xr[i] > m ? xr[i] : m;\n"
                  "        for (long long i = 0; i < V; i++) s += exp((double)xr[i] - m);\n"
                  "        out[r] = (float)(m + log(s) - xr[target]);\n"
                  "    }\n}\n");
    CudaArg a[] = {carg_value(c->n->in[0]), carg_value(c->n->in[1]), carg_value(c->n->out[0]), carg_status()};
    return tpl_launch(c, &kt, a, 4, rows);
}

const TplFn cuda_tpl_model[OP_COUNT] = {
    [OP_EMBEDDING] = tpl_embedding, [OP_TOPK] = tpl_topk, [OP_GATHER] = tpl_gather, [OP_ONE_HOT] = tpl_one_hot,
    [OP_MOE_DISPATCH] = tpl_moe_dispatch, [OP_MOE_COMBINE] = tpl_moe_combine, [OP_ROPE] = tpl_rope,
    [OP_SDPA] = tpl_sdpa, [OP_CROSS_ENTROPY] = tpl_cross_entropy,
};
