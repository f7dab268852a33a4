/* Attention templates: sdpa and sdpa_grad, tiled for a GPU and still bit for
 * bit with the interpreter (ir/ops/attention.c, ir/ops/grad.c).
 *
 * A block owns a tile of blockDim.x rows (query rows, or key rows for dk/dv)
 * of one (batch, head), a thread one row. The block stages TILE rows of the
 * other side (K and V, or Q and G) at a time in shared memory with coalesced
 * loads, so each element is read from global memory once per block instead of
 * once per thread. Each thread then repeats the interpreter's fp64 operations
 * for its row in the interpreter's order. The interpreter keeps a row's scores
 * in an O(S) array; the kernels recompute them in another pass over the tiles
 * instead (a recomputed score has the same bits), so a thread holds only its
 * DV (or DK, or DK + DV) accumulators. */
#include <stdio.h>
#include <string.h>

#include "cuda_tpl.h"

/* Static shared memory: K and V tiles together stay under the 48 KiB a block may declare
 * statically; 32 rows (40 KiB at DeepSeek-V3's dk=192, dv=128) when they fit. */
enum { ATTN_SMEM_BYTES = 40 * 1024, ATTN_SMEM_LIMIT = 48 * 1024 - 16, ATTN_MAX_TILE = 32 };

/* Rows per staged tile for head dims dk, dv (floats), or -1 with the error set. */
static int64_t attn_tile(const Tpl *c, int64_t dk, int64_t dv) {
    int64_t row = (dk + dv) * (int64_t)sizeof(float);
    if (row + 8 > ATTN_SMEM_LIMIT)
        return err_set(c->err, "%s: head dims dk=%lld and dv=%lld need more than 48 KiB of shared memory per row",
                       op_info(c->n->op)->name, (long long)dk, (long long)dv);
    int64_t tile = row > 0 ? ATTN_SMEM_BYTES / row : ATTN_MAX_TILE;
    if (tile < 1) tile = 1;
    return tile < ATTN_MAX_TILE ? tile : ATTN_MAX_TILE;
}

typedef struct AttnShape {
    int64_t bh, t, slen, dk, dv, tile;
} AttnShape;

/* The shape defines (BH = batch * heads, T, SLEN, NH, DK, DV, TILE, CAUSAL, SCALE, STORE)
 * and the device helpers; q is input `first` (sdpa_grad's q is its second input). */
static int attn_defines(const Tpl *c, KernelText *kt, int first, AttnShape *sh) {
    const Node *n = c->n;
    int64_t q[IR_MAX_RANK], k[IR_MAX_RANK], v[IR_MAX_RANK];
    if (tpl_shape(c, n->in[first], q) < 0 || tpl_shape(c, n->in[first + 1], k) < 0 ||
        tpl_shape(c, n->in[first + 2], v) < 0)
        return -1;
    *sh = (AttnShape){q[0] * q[2], q[1], k[1], q[3], v[3], attn_tile(c, q[3], v[3])};
    if (sh->tile < 0) return -1;
    tpl_define(kt, "BH", sh->bh);
    tpl_define(kt, "T", sh->t);
    tpl_define(kt, "SLEN", sh->slen);
    tpl_define(kt, "NH", q[2]);
    tpl_define(kt, "DK", sh->dk);
    tpl_define(kt, "DV", sh->dv);
    tpl_define(kt, "TILE", sh->tile);
    tpl_define(kt, "CAUSAL", node_int(n, "causal", 1) != 0);
    char scale[64];
    format_double(scale, sizeof scale, node_float(n, "scale", 1.0));
    buf_printf(&kt->body, "#define SCALE ((double)%s)\n", scale);
    tpl_define_store(kt, ir_type(c->g, n->out[0])->dtype);
    buf_puts(&kt->body,
             "/* tile[n][w] = rows [r0, r0 + n) of (b, hd) in x[B][len][NH][w]: consecutive threads load\n"
             " * consecutive floats (coalesced). */\n"
             "static __device__ void v3c_stage(float *tile, const float *x, long long len, long long w, long long b,\n"
             "                                 long long hd, long long r0, long long n) {\n"
             "    for (long long e = threadIdx.x; e < n * w; e += blockDim.x)\n"
             "        tile[e] = x[((b * len + r0 + e / w) * NH + hd) * w + e % w];\n"
             "}\n"
             "/* The interpreter's dot product: fp64 products of floats, added left to right. */\n"
             "static __device__ double v3c_dot(const float *a, const float *b, long long n) {\n"
             "    double d = 0.0;\n"
             "    for (long long i = 0; i < n; i++) d += (double)a[i] * b[i];\n"
             "    return d;\n"
             "}\n");
    return 0;
}

static void sig(KernelText *kt) { buf_puts(&kt->body, "extern \"C\" __global__ void KNAME("); }

/* Blocks for `rows` rows per (batch, head) at CUDA_BLOCK rows per block (the kernels
 * loop over the tiles with a block stride, so any grid is correct). */
static int attn_launch(const Tpl *c, KernelText *kt, const CudaArg *args, int nargs, int64_t bh, int64_t rows) {
    int64_t blocks = bh * ((rows + CUDA_BLOCK - 1) / CUDA_BLOCK);
    return cuda_emit_kernel(c->em, kt, args, nargs, 0, blocks > 0 ? blocks : 1);
}

/* ---- sdpa ----
 * Block: query rows [t0, t0 + blockDim.x) of one (b, head); thread: query row t. Pass 1
 * stages K tiles and finds the row's max score; pass 2 stages K and V tiles, recomputes each
 * score, and adds exp(score - max) into the sum and, times the value row, into the row's DV
 * accumulators, key by key: the interpreter's order for every output column. */
static const char sdpa_body[] =
    "    static __shared__ float ks[TILE * DK + 1], vs[TILE * DV + 1];\n"
    "    const long long qtiles = (T + blockDim.x - 1) / blockDim.x;\n"
    "    for (long long item = blockIdx.x; item < BH * qtiles; item += gridDim.x) {\n"
    "        const long long b = item / qtiles / NH, hd = item / qtiles % NH, t0 = item % qtiles * blockDim.x;\n"
    "        const long long t = t0 + threadIdx.x, keys = CAUSAL ? (t0 + blockDim.x < T ? t0 + blockDim.x : T) : SLEN;\n"
    "        const long long visible = t >= T ? 0 : CAUSAL ? t + 1 : SLEN;\n"
    "        const float *qr = q + ((b * T + (t < T ? t : 0)) * NH + hd) * DK;\n"
    "        double m = -v3c_inf(), sum = 0.0, acc[DV + 1];\n"
    "        for (long long s0 = 0; s0 < keys; s0 += TILE) {\n"
    "            const long long n = keys - s0 < TILE ? keys - s0 : TILE;\n"
    "            __syncthreads(); /* the previous tile is consumed */\n"
    "            v3c_stage(ks, k, SLEN, DK, b, hd, s0, n);\n"
    "            __syncthreads();\n"
    "            for (long long j = 0; j < n && s0 + j < visible; j++) {\n"
    "                const double score = SCALE * v3c_dot(qr, ks + j * DK, DK);\n"
    "                m = score > m ? score : m;\n"
    "            }\n"
    "        }\n"
    "        for (long long col = 0; col < DV; col++) acc[col] = 0.0;\n"
    "        for (long long s0 = 0; s0 < keys; s0 += TILE) {\n"
    "            const long long n = keys - s0 < TILE ? keys - s0 : TILE;\n"
    "            __syncthreads();\n"
    "            v3c_stage(ks, k, SLEN, DK, b, hd, s0, n);\n"
    "            v3c_stage(vs, v, SLEN, DV, b, hd, s0, n);\n"
    "            __syncthreads();\n"
    "            for (long long j = 0; j < n && s0 + j < visible; j++) {\n"
    "                const double p = exp(SCALE * v3c_dot(qr, ks + j * DK, DK) - m);\n"
    "                sum += p;\n"
    "                for (long long col = 0; col < DV; col++) acc[col] += p * vs[j * DV + col];\n"
    "            }\n"
    "        }\n"
    "        for (long long col = 0; col < DV && t < T; col++) o[((b * T + t) * NH + hd) * DV + col] = STORE(acc[col] / sum);\n"
    "    }\n}\n";

int tpl_sdpa(const Tpl *c) {
    int64_t k[IR_MAX_RANK];
    if (tpl_shape(c, c->n->in[1], k) < 0) return -1;
    if (k[1] == 0 && tpl_numel(c, c->n->in[0]) > 0) return err_set(c->err, "sdpa: there are no keys to attend to");
    KernelText kt;
    AttnShape sh;
    tpl_begin(&kt, "sdpa");
    if (attn_defines(c, &kt, 0, &sh)) return buf_free(&kt.body), -1;
    sig(&kt);
    ktext_param(&kt, "const float *", "q");
    ktext_param(&kt, "const float *", "k");
    ktext_param(&kt, "const float *", "v");
    ktext_param(&kt, "float *", "o");
    tpl_body(&kt, sdpa_body);
    CudaArg a[] = {carg_value(c->n->in[0]), carg_value(c->n->in[1]), carg_value(c->n->in[2]), carg_value(c->n->out[0])};
    return attn_launch(c, &kt, a, 4, sh.bh, sh.t);
}

/* ---- sdpa_grad ----
 * dq: block and thread as in sdpa. Four passes over the key tiles, each recomputing the
 * scores (and dp = g.v) that the interpreter keeps in arrays: 1 the max m, 2 sum = Σ exp(score - m),
 * 3 pdp = Σ p dp with p = exp(score - m) / sum, 4 the DK accumulators += p (dp - pdp) k. Saves
 * (m, sum, pdp) per query row for the dk/dv kernel. */
static const char sdpa_grad_q_body[] =
    "    static __shared__ float ks[TILE * DK + 1], vs[TILE * DV + 1];\n"
    "    const long long qtiles = (T + blockDim.x - 1) / blockDim.x;\n"
    "    for (long long item = blockIdx.x; item < BH * qtiles; item += gridDim.x) {\n"
    "        const long long b = item / qtiles / NH, hd = item / qtiles % NH, t0 = item % qtiles * blockDim.x;\n"
    "        const long long t = t0 + threadIdx.x, keys = CAUSAL ? (t0 + blockDim.x < T ? t0 + blockDim.x : T) : SLEN;\n"
    "        const long long visible = t >= T ? 0 : CAUSAL ? t + 1 : SLEN, r = (b * T + (t < T ? t : 0)) * NH + hd;\n"
    "        const float *qr = q + r * DK, *gr = g + r * DV;\n"
    "        double m = -v3c_inf(), sum = 0.0, pdp = 0.0, acc[DK + 1];\n"
    "        for (long long i = 0; i < DK; i++) acc[i] = 0.0;\n"
    "        for (int pass = 0; pass < 4; pass++) {\n"
    "            for (long long s0 = 0; s0 < keys; s0 += TILE) {\n"
    "                const long long n = keys - s0 < TILE ? keys - s0 : TILE;\n"
    "                __syncthreads(); /* the previous tile is consumed */\n"
    "                v3c_stage(ks, k, SLEN, DK, b, hd, s0, n);\n"
    "                if (pass >= 2) v3c_stage(vs, v, SLEN, DV, b, hd, s0, n);\n"
    "                __syncthreads();\n"
    "                for (long long j = 0; j < n && s0 + j < visible; j++) {\n"
    "                    const double score = SCALE * v3c_dot(qr, ks + j * DK, DK);\n"
    "                    if (pass == 0) { m = score > m ? score : m; continue; }\n"
    "                    const double e = exp(score - m);\n"
    "                    if (pass == 1) { sum += e; continue; }\n"
    "                    const double p = e / sum, dp = v3c_dot(gr, vs + j * DV, DV);\n"
    "                    if (pass == 2) { pdp += p * dp; continue; }\n"
    "                    for (long long i = 0; i < DK; i++) acc[i] += p * (dp - pdp) * ks[j * DK + i];\n"
    "                }\n"
    "            }\n"
    "        }\n"
    "        if (t >= T) continue;\n"
    "        stats[r * 3] = m; stats[r * 3 + 1] = sum; stats[r * 3 + 2] = pdp;\n"
    "        for (long long i = 0; i < DK; i++) dq[r * DK + i] = STORE(SCALE * acc[i]);\n"
    "    }\n}\n";

/* dk, dv: block: key rows [s0, s0 + blockDim.x) of one (b, head); thread: key row s with its
 * DK + DV accumulators. The block stages TILE query rows (q and g) at a time; the thread adds
 * the terms of the queries that see its key in query order, as the interpreter does. Under
 * causal masking no query before s0 sees the block's keys, so the tiles start there. */
static const char sdpa_grad_kv_body[] =
    "    static __shared__ float qs[TILE * DK + 1], gs[TILE * DV + 1];\n"
    "    const long long ktiles = (SLEN + blockDim.x - 1) / blockDim.x;\n"
    "    for (long long item = blockIdx.x; item < BH * ktiles; item += gridDim.x) {\n"
    "        const long long b = item / ktiles / NH, hd = item / ktiles % NH, s0 = item % ktiles * blockDim.x;\n"
    "        const long long s = s0 + threadIdx.x, r = (b * SLEN + (s < SLEN ? s : 0)) * NH + hd;\n"
    "        const float *kr = k + r * DK, *vr = v + r * DV;\n"
    "        double dk_acc[DK + 1], dv_acc[DV + 1];\n"
    "        for (long long i = 0; i < DK; i++) dk_acc[i] = 0.0;\n"
    "        for (long long cc = 0; cc < DV; cc++) dv_acc[cc] = 0.0;\n"
    "        for (long long t0 = CAUSAL ? s0 : 0; t0 < T; t0 += TILE) {\n"
    "            const long long n = T - t0 < TILE ? T - t0 : TILE;\n"
    "            __syncthreads(); /* the previous tile is consumed */\n"
    "            v3c_stage(qs, q, T, DK, b, hd, t0, n);\n"
    "            v3c_stage(gs, g, T, DV, b, hd, t0, n);\n"
    "            __syncthreads();\n"
    "            for (long long j = 0; j < n && s < SLEN; j++) {\n"
    "                if (CAUSAL && t0 + j < s) continue;\n"
    "                const double *st = stats + ((b * T + t0 + j) * NH + hd) * 3;\n"
    "                const double dot = v3c_dot(qs + j * DK, kr, DK), gv = v3c_dot(gs + j * DV, vr, DV);\n"
    "                const double p = exp(SCALE * dot - st[0]) / st[1];\n"
    "                const double ds = SCALE * p * (gv - st[2]);\n"
    "                for (long long i = 0; i < DK; i++) dk_acc[i] += ds * qs[j * DK + i];\n"
    "                for (long long cc = 0; cc < DV; cc++) dv_acc[cc] += p * gs[j * DV + cc];\n"
    "            }\n"
    "        }\n"
    "        if (s >= SLEN) continue;\n"
    "        for (long long i = 0; i < DK; i++) dk[r * DK + i] = STORE(dk_acc[i]);\n"
    "        for (long long cc = 0; cc < DV; cc++) dv[r * DV + cc] = STORE(dv_acc[cc]);\n"
    "    }\n}\n";

static int sdpa_grad_kernel(const Tpl *c, const char *family, const char *body, int kv) {
    const Node *n = c->n;
    KernelText kt;
    AttnShape sh;
    tpl_begin(&kt, family);
    if (attn_defines(c, &kt, 1, &sh)) return buf_free(&kt.body), -1;
    sig(&kt);
    static const char *const names[] = {"g", "q", "k", "v"};
    for (int i = 0; i < 4; i++) ktext_param(&kt, "const float *", names[i]);
    ktext_param(&kt, kv ? "const double *" : "double *", "stats");
    CudaArg a[7] = {carg_value(n->in[0]), carg_value(n->in[1]), carg_value(n->in[2]), carg_value(n->in[3]),
                    carg_scratch(0, sh.bh * sh.t * 3 * 8)};
    if (kv) {
        ktext_param(&kt, "float *", "dk");
        ktext_param(&kt, "float *", "dv");
        a[5] = carg_value(n->out[1]), a[6] = carg_value(n->out[2]);
    } else {
        ktext_param(&kt, "float *", "dq");
        a[5] = carg_value(n->out[0]);
    }
    tpl_body(&kt, body);
    return attn_launch(c, &kt, a, kv ? 7 : 6, sh.bh, kv ? sh.slen : sh.t);
}

int tpl_sdpa_grad(const Tpl *c) {
    int64_t k[IR_MAX_RANK];
    if (tpl_shape(c, c->n->in[2], k) < 0) return -1;
    if (k[1] == 0 && tpl_numel(c, c->n->in[1]) > 0) return err_set(c->err, "sdpa_grad: there are no keys to attend to");
    if (sdpa_grad_kernel(c, "sdpa_grad_q", sdpa_grad_q_body, 0)) return -1;
    return sdpa_grad_kernel(c, "sdpa_grad_kv", sdpa_grad_kv_body, 1);
}
