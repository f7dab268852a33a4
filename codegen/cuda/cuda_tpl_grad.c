/* Templates for the backward ops autodiff emits (transpose and pad are layout
 * copies in cuda_tpl_basic.c). Accumulations never race: each output is owned
 * by one thread, which adds its terms in the interpreter's order. sdpa_grad,
 * registered below, is in cuda_tpl_attention.c. */
#include <stdio.h>
#include <string.h>

#include "cuda_tpl.h"

static void sig(KernelText *kt) { buf_puts(&kt->body, "extern \"C\" __global__ void KNAME("); }

/* ---- sum_to: expand's adjoint; a thread per output walks the broadcast axes in order ---- */
static void emit_sum_to_indexing(KernelText *kt, const int64_t *x, int xr, const int64_t *y, int yr) {
    int64_t xstride[IR_MAX_RANK], s = 1;
    for (int d = xr - 1; d >= 0; d--) xstride[d] = s, s *= x[d];
    buf_puts(&kt->body, "        long long rem = o, base = 0;\n");
    for (int d = yr - 1; d >= 0; d--) {
        int j = d + (xr - yr);
        buf_printf(&kt->body, "        { const long long q = rem %% %lldll; rem /= %lldll;", (long long)y[d], (long long)y[d]);
        if (y[d] != 1) buf_printf(&kt->body, " base += q * %lldll;", (long long)xstride[j]);
        buf_puts(&kt->body, " }\n");
    }
    int64_t free_count = 1;
    for (int j = 0; j < xr; j++) {
        int d = j - (xr - yr);
        if (d < 0 || y[d] == 1) free_count *= x[j];
    }
    buf_printf(&kt->body, "        (void)rem;\n        double acc = 0.0;\n        for (long long f = 0; f < %lldll; f++) {\n"
                          "            long long r2 = f, i = base;\n", (long long)free_count);
    for (int j = xr - 1; j >= 0; j--) {
        int d = j - (xr - yr);
        if (d < 0 || y[d] == 1)
            buf_printf(&kt->body, "            i += r2 %% %lldll * %lldll; r2 /= %lldll;\n", (long long)x[j],
                       (long long)xstride[j], (long long)x[j]);
    }
    buf_puts(&kt->body, "            (void)r2;\n            acc += (double)in[i];\n        }\n");
}

static int tpl_sum_to(const Tpl *c) {
    int64_t x[IR_MAX_RANK], y[IR_MAX_RANK];
    int xr = tpl_shape(c, c->n->in[0], x), yr = tpl_shape(c, c->n->out[0], y);
    if (xr < 0 || yr < 0) return -1;
    int64_t n = shape_prod(y, 0, yr);
    KernelText kt;
    tpl_begin(&kt, "sum_to");
    tpl_define(&kt, "N", n);
    tpl_define_store(&kt, ir_type(c->g, c->n->out[0])->dtype);
    sig(&kt);
    ktext_param(&kt, "const float *", "in");
    ktext_param(&kt, "float *", "out");
    buf_puts(&kt.body, ") {\n    for (long long o = V3C_THREAD_ID; o < N; o += V3C_THREADS) {\n");
    emit_sum_to_indexing(&kt, x, xr, y, yr);
    buf_puts(&kt.body, "        out[o] = STORE(acc);\n    }\n}\n");
    CudaArg a[] = {carg_value(c->n->in[0]), carg_value(c->n->out[0])};
    return tpl_launch(c, &kt, a, 2, n);
}

/* ---- embedding_grad: tokens sorted by id (stable), then a thread per (row, col) ---- */
static int invert_rank(const Tpl *c, int64_t count) {
    KernelText kt;
    tpl_begin(&kt, "invert_rank");
    tpl_define(&kt, "P", count);
    sig(&kt);
    ktext_param(&kt, "const long long *", "rank");
    ktext_param(&kt, "long long *", "sorted");
    tpl_body(&kt, "    for (long long p = V3C_THREAD_ID; p < P; p += V3C_THREADS)\n"
                  "        sorted[rank[p]] = p;\n}\n");
    CudaArg a[] = {carg_scratch(0, count * 8), carg_scratch(1, count * 8)};
    return tpl_launch(c, &kt, a, 2, count);
}

/* An id outside [0, LIMIT) sorts as LIMIT (after every row) and sets the status:
 * the order stays a permutation, so no thread reads outside the tensors. */
static const char key_macro[] =
    "#define KEY(ids, p) ((long long)(ids)[p] < 0 || (long long)(ids)[p] >= LIMIT ? LIMIT : (long long)(ids)[p])\n";

static const char embedding_grad_body[] =
    "    for (long long o = V3C_THREAD_ID; o < ROWS * H; o += V3C_THREADS) {\n"
    "        const long long v = o / H, col = o % H;\n"
    "        long long lo = 0, hi = P;\n"
    "        while (lo < hi) { const long long mid = (lo + hi) / 2; if (KEY(ids, sorted[mid]) < v) lo = mid + 1; else hi = mid; }\n"
    "        double acc = 0.0;\n"
    "        for (long long k = lo; k < P && KEY(ids, sorted[k]) == v; k++) acc += (double)g[sorted[k] * H + col];\n"
    "        out[o] = STORE(acc);\n"
    "    }\n}\n";

static int tpl_embedding_grad(const Tpl *c) {
    int64_t y[IR_MAX_RANK];
    if (tpl_shape(c, c->n->out[0], y) < 0) return -1;
    int64_t p = tpl_numel(c, c->n->in[1]);
    KernelText kt;
    tpl_begin(&kt, "rank_ids");
    /* The rank kernel checks ids against the table's rows. */
    tpl_define(&kt, "P", p);
    tpl_define(&kt, "LIMIT", y[0]);
    buf_puts(&kt.body, key_macro);
    sig(&kt);
    ktext_param(&kt, tpl_in_type(ir_type(c->g, c->n->in[1])->dtype), "keys");
    ktext_param(&kt, "long long *", "rank");
    ktext_param(&kt, "int *", "status");
    tpl_body(&kt, "    for (long long p = V3C_THREAD_ID; p < P; p += V3C_THREADS) {\n"
                  "        const long long k = KEY(keys, p);\n"
                  "        if (k == LIMIT) status[0] = 1;\n"
                  "        long long r = 0;\n"
                  "        for (long long q = 0; q < P; q++) r += KEY(keys, q) < k || (KEY(keys, q) == k && q < p);\n"
                  "        rank[p] = r;\n"
                  "    }\n}\n");
    CudaArg ra[] = {carg_value(c->n->in[1]), carg_scratch(0, p * 8), carg_status()};
    if (tpl_launch(c, &kt, ra, 3, p) || invert_rank(c, p)) return -1;
    tpl_begin(&kt, "embedding_grad");
    tpl_define(&kt, "P", p);
    tpl_define(&kt, "ROWS", y[0]);
    tpl_define(&kt, "LIMIT", y[0]);
    buf_puts(&kt.body, key_macro);
    tpl_define(&kt, "H", y[1]);
    tpl_define_store(&kt, ir_type(c->g, c->n->out[0])->dtype);
    sig(&kt);
    ktext_param(&kt, "const float *", "g");
    ktext_param(&kt, tpl_in_type(ir_type(c->g, c->n->in[1])->dtype), "ids");
    ktext_param(&kt, "const long long *", "sorted");
    ktext_param(&kt, "float *", "out");
    tpl_body(&kt, embedding_grad_body);
    CudaArg a[] = {carg_value(c->n->in[0]), carg_value(c->n->in[1]), carg_scratch(1, p * 8), carg_value(c->n->out[0])};
    return tpl_launch(c, &kt, a, 4, y[0] * y[1]);
}

/* ---- scatter_add: gather's adjoint; a thread per output scans its row's K indices ---- */
static int tpl_scatter_add(const Tpl *c) {
    int64_t y[IR_MAX_RANK], idx[IR_MAX_RANK];
    int yr = tpl_shape(c, c->n->out[0], y), ir = tpl_shape(c, c->n->in[1], idx);
    if (yr < 1 || ir < 1) return yr < 0 || ir < 0 ? -1 : err_set(c->err, "scatter_add needs rank >= 1");
    int64_t n = shape_prod(y, 0, yr);
    KernelText kt;
    tpl_begin(&kt, "scatter_add");
    tpl_define(&kt, "E", y[yr - 1]);
    tpl_define(&kt, "K", idx[ir - 1]);
    tpl_define(&kt, "N", n);
    tpl_define_store(&kt, ir_type(c->g, c->n->out[0])->dtype);
    sig(&kt);
    ktext_param(&kt, "const float *", "g");
    ktext_param(&kt, tpl_in_type(ir_type(c->g, c->n->in[1])->dtype), "idx");
    ktext_param(&kt, "float *", "out");
    ktext_param(&kt, "int *", "status");
    tpl_body(&kt, "    for (long long o = V3C_THREAD_ID; o < N; o += V3C_THREADS) {\n"
                  "        const long long r = o / E, e = o % E;\n"
                  "        double acc = 0.0;\n"
                  "        for (long long j = 0; j < K; j++) {\n"
                  "            const long long at = (long long)idx[r * K + j];\n"
                  "            if (e == 0 && (at < 0 || at >= E)) status[0] = 1;\n"
                  "            if (at == e) acc += (double)g[r * K + j];\n"
                  "        }\n"
                  "        out[o] = STORE(acc);\n"
                  "    }\n}\n");
    CudaArg a[] = {carg_value(c->n->in[0]), carg_value(c->n->in[1]), carg_value(c->n->out[0]), carg_status()};
    return tpl_launch(c, &kt, a, 4, n);
}

/* ---- mean_all_grad: g / numel everywhere ---- */
static int tpl_mean_all_grad(const Tpl *c) {
    int64_t n = tpl_numel(c, c->n->out[0]);
    KernelText kt;
    tpl_begin(&kt, "mean_all_grad");
    tpl_define(&kt, "N", n);
    tpl_define_store(&kt, ir_type(c->g, c->n->out[0])->dtype);
    sig(&kt);
    ktext_param(&kt, "const float *", "g");
    ktext_param(&kt, "float *", "out");
    tpl_body(&kt, "    for (long long i = V3C_THREAD_ID; i < N; i += V3C_THREADS) out[i] = STORE((double)g[0] / (double)N);\n}\n");
    CudaArg a[] = {carg_value(c->n->in[0]), carg_value(c->n->out[0])};
    return tpl_launch(c, &kt, a, 2, n);
}

/* ---- cross_entropy_grad: a thread per row ---- */
static int tpl_cross_entropy_grad(const Tpl *c) {
    int64_t x[IR_MAX_RANK];
    int rank = tpl_shape(c, c->n->in[1], x);
    if (rank < 1) return rank < 0 ? -1 : err_set(c->err, "cross_entropy_grad needs rank >= 1");
    int64_t rows = shape_prod(x, 0, rank - 1);
    KernelText kt;
    tpl_begin(&kt, "cross_entropy_grad");
    tpl_define(&kt, "V", x[rank - 1]);
    tpl_define(&kt, "ROWS", rows);
    tpl_define_store(&kt, ir_type(c->g, c->n->out[0])->dtype);
    sig(&kt);
    ktext_param(&kt, "const float *", "g");
    ktext_param(&kt, "const float *", "logits");
    ktext_param(&kt, tpl_in_type(ir_type(c->g, c->n->in[2])->dtype), "targets");
    ktext_param(&kt, "float *", "dx");
    ktext_param(&kt, "int *", "status");
    tpl_body(&kt, "    for (long long r = V3C_THREAD_ID; r < ROWS; r += V3C_THREADS) {\n"
                  "        const long long target = (long long)targets[r];\n"
                  "        if (target < 0 || target >= V) { status[0] = 1; continue; }\n"
                  "        const float *xr = logits + r * V;\n"
                  "        const double gr = g[r];\n"
                  "        double m = -v3c_inf(), s = 0.0;\n"
                  "        for (long long i = 0; i < V; i++) m = xr[i] > m ? xr[i] : m;\n"
                  "        for (long long i = 0; i < V; i++) s += exp((double)xr[i] - m);\n"
                  "        for (long long i = 0; i < V; i++)\n"
                  "            dx[r * V + i] = STORE(gr * (exp((double)xr[i] - m) / s - (i == target ? 1.0 : 0.0)));\n"
                  "    }\n}\n");
    CudaArg a[] = {carg_value(c->n->in[0]), carg_value(c->n->in[1]), carg_value(c->n->in[2]), carg_value(c->n->out[0]),
                   carg_status()};
    return tpl_launch(c, &kt, a, 5, rows);
}

/* ---- moe_combine_grad: d yd per (pair, col), d w per pair ---- */
static int combine_grad_kernel(const Tpl *c, int dw, int64_t pairs, int64_t k, int64_t h) {
    const Node *n = c->n;
    KernelText kt;
    tpl_begin(&kt, dw ? "moe_combine_grad_w" : "moe_combine_grad_yd");
    tpl_define(&kt, "K", k);
    tpl_define(&kt, "H", h);
    tpl_define(&kt, "N", dw ? pairs : pairs * h);
    tpl_define_store(&kt, ir_type(c->g, n->out[dw])->dtype);
    sig(&kt);
    ktext_param(&kt, "const float *", "g");
    ktext_param(&kt, "const float *", "yd");
    ktext_param(&kt, "const long long *", "rows");
    ktext_param(&kt, "const float *", "w");
    ktext_param(&kt, "float *", "out");
    tpl_body(&kt, dw ? "    for (long long p = V3C_THREAD_ID; p < N; p += V3C_THREADS) {\n"
                       "        if (rows[p] < 0) continue;\n"
                       "        double acc = 0.0;\n"
                       "        for (long long col = 0; col < H; col++) acc += (double)g[p / K * H + col] * yd[rows[p] * H + col];\n"
                       "        out[p] = STORE(acc);\n"
                       "    }\n}\n"
                     : "    for (long long i = V3C_THREAD_ID; i < N; i += V3C_THREADS) {\n"
                       "        const long long p = i / H, col = i % H;\n"
                       "        if (rows[p] >= 0) out[rows[p] * H + col] = STORE((double)w[p] * g[p / K * H + col]);\n"
                       "    }\n}\n");
    CudaArg a[] = {carg_value(n->in[0]), carg_value(n->in[1]), carg_scratch(0, pairs * 8), carg_value(n->in[3]),
                   carg_value(n->out[dw])};
    return tpl_launch(c, &kt, a, 5, dw ? pairs : pairs * h);
}

static int tpl_moe_combine_grad(const Tpl *c) {
    int64_t yd[IR_MAX_RANK], idx[IR_MAX_RANK];
    int ir = tpl_shape(c, c->n->in[2], idx);
    if (tpl_shape(c, c->n->in[1], yd) < 0 || ir < 1) return ir == 0 ? err_set(c->err, "moe_combine_grad needs rank >= 1") : -1;
    int64_t pairs = shape_prod(idx, 0, ir);
    if (tpl_stable_rank(c, c->n->in[2], pairs)) return -1;
    if (combine_grad_kernel(c, 0, pairs, idx[ir - 1], yd[1])) return -1;
    return combine_grad_kernel(c, 1, pairs, idx[ir - 1], yd[1]);
}

const TplFn cuda_tpl_grad[OP_COUNT] = {
    [OP_SUM_TO] = tpl_sum_to, [OP_EMBEDDING_GRAD] = tpl_embedding_grad, [OP_SCATTER_ADD] = tpl_scatter_add,
    [OP_MEAN_ALL_GRAD] = tpl_mean_all_grad, [OP_CROSS_ENTROPY_GRAD] = tpl_cross_entropy_grad,
    [OP_SDPA_GRAD] = tpl_sdpa_grad, [OP_MOE_COMBINE_GRAD] = tpl_moe_combine_grad,
};
