/* sdpa and sdpa_grad on the GEMM path (cuda.h, CudaAttention): the plan holds
 * the shapes, how many heads one round covers, and the two row kernels the
 * executor launches between its GEMMs. The products are the FLOPs of
 * attention, so they go to cuBLASLt (tensor cores where the operands allow);
 * what is left per score (a softmax, or the gradient's dS) is one pass over
 * rows of scratch.
 *
 * The row kernels compute in fp64 from the fp32 scores, as the interpreter's
 * softmax does from its fp64 ones; a block owns a row, threads stride its
 * columns. A masked (causal) column is written as 0, so the GEMMs that read P
 * or dS may run over the whole square. */
#include <stdio.h>
#include <string.h>

#include "cuda_tpl.h"

/* Bytes of scores one round may keep per scratch slot, unless the plan's options say: bounds
 * memory at long sequences (DeepSeek-V3's 128 heads x 4096^2 would be 8 GiB in one round). */
static const int64_t default_round_budget = (int64_t)256 << 20;

/* The most heads, dividing `heads`, whose scores fit the budget (at least one). */
static int64_t heads_per_round(int64_t heads, int64_t t, int64_t s, int64_t budget) {
    int64_t per_head = t * s * (int64_t)sizeof(float), best = 1;
    for (int64_t hc = 1; hc <= heads; hc++)
        if (heads % hc == 0 && hc * per_head <= budget) best = hc;
    return best;
}

/* Row r of a round's [heads_per_round * T, S] scores is query t = r % T; causal rows see s <= t. */
static const char softmax_body[] =
    "    extern __shared__ double v3c_red[];\n"
    "    for (long long r = blockIdx.x; r < ROWS; r += gridDim.x) {\n"
    "        float *row = p + r * S;\n"
    "        long long visible = CAUSAL ? r % T + 1 : S;\n"
    "        double m = -v3c_inf(), sum = 0.0;\n"
    "        for (long long s = threadIdx.x; s < visible; s += blockDim.x) m = v3c_step(1, m, (double)row[s]);\n"
    "        m = v3c_block_reduce(1, m, v3c_red);\n"
    "        for (long long s = threadIdx.x; s < visible; s += blockDim.x) sum += exp((double)row[s] - m);\n"
    "        sum = v3c_block_reduce(0, sum, v3c_red);\n"
    "        for (long long s = threadIdx.x; s < S; s += blockDim.x)\n"
    "            row[s] = s < visible ? STORE_P(exp((double)row[s] - m) / sum) : 0.0f;\n"
    "    }\n"
    "}\n";

/* dS = P (dP - sum over the row of P dP), in place over dP (the softmax's gradient; the
 * scale is applied by the GEMMs that read dS). */
static const char dscores_body[] =
    "    extern __shared__ double v3c_red[];\n"
    "    for (long long r = blockIdx.x; r < ROWS; r += gridDim.x) {\n"
    "        const float *pr = p + r * S;\n"
    "        float *dr = dp + r * S;\n"
    "        long long visible = CAUSAL ? r % T + 1 : S;\n"
    "        double pdp = 0.0;\n"
    "        for (long long s = threadIdx.x; s < visible; s += blockDim.x) pdp += (double)pr[s] * dr[s];\n"
    "        pdp = v3c_block_reduce(0, pdp, v3c_red);\n"
    "        for (long long s = threadIdx.x; s < S; s += blockDim.x)\n"
    "            dr[s] = s < visible ? STORE_P((double)pr[s] * ((double)dr[s] - pdp)) : 0.0f;\n"
    "    }\n"
    "}\n";

static int emit_rows(const Tpl *c, const CudaAttention *a, const char *family, const char *body, int grad,
                     CudaLaunch *out) {
    int64_t rows = a->heads_per_round * a->t, bytes = rows * a->s * (int64_t)sizeof(float);
    KernelText kt;
    tpl_begin(&kt, family);
    tpl_define(&kt, "ROWS", rows);
    tpl_define(&kt, "T", a->t);
    tpl_define(&kt, "S", a->s);
    tpl_define(&kt, "CAUSAL", node_int(c->n, "causal", 1) != 0);
    buf_puts(&kt.body, a->bf16 ? "#define STORE_P(x) v3c_round_bf16((float)(x))\n" : "#define STORE_P(x) ((float)(x))\n");
    buf_puts(&kt.body, "extern \"C\" __global__ void KNAME(");
    ktext_param(&kt, grad ? "const float *" : "float *", "p");
    if (grad) ktext_param(&kt, "float *", "dp");
    tpl_body(&kt, body);
    kt.smem_per_thread = (int)sizeof(double);
    CudaArg args[2] = {carg_scratch(ATT_P, bytes), carg_scratch(ATT_DS, bytes)};
    if (cuda_emit_kernel(c->em, &kt, args, grad ? 2 : 1, 0, rows)) return -1;
    return tpl_take_launch(c, out);
}

/* The dtype every operand and result has (q, k, v, g, the outputs): f32, bf16, or -1 for a mix. */
static int common_dtype(const Tpl *c) {
    const Node *n = c->n;
    DType dt = ir_type(c->g, n->out[0])->dtype;
    for (int i = 0; i < n->nin; i++)
        if (ir_type(c->g, n->in[i])->dtype != dt) return -1;
    for (int i = 0; i < n->nout; i++)
        if (ir_type(c->g, n->out[i])->dtype != dt) return -1;
    return dt == DT_F32 || dt == DT_BF16 ? (int)dt : -1;
}

static int emit_round_rest(const Tpl *c, CudaAttention *a) {
    a->round_rest[0].kernel = a->round_rest[1].kernel = -1;
    if (!a->bf16 || c->n->op != OP_SDPA_GRAD) return 0;
    return tpl_round_bf16(c, c->n->out[1], &a->round_rest[0]) || tpl_round_bf16(c, c->n->out[2], &a->round_rest[1]);
}

/* An empty head dim would be a GEMM over nothing (k = 0) or of nothing (n = 0), which
 * cuBLASLt refuses: such a node takes the kernel templates. */
int cuda_lib_attention(const Tpl *c, CudaLibCall *call) {
    int dt = common_dtype(c);
    if (c->em->plan->opts.exact_attention || dt < 0) return 1;
    const Node *n = c->n;
    int grad = n->op == OP_SDPA_GRAD, first = grad ? 1 : 0;
    int64_t q[IR_MAX_RANK], k[IR_MAX_RANK], v[IR_MAX_RANK];
    if (tpl_shape(c, n->in[first], q) < 0 || tpl_shape(c, n->in[first + 1], k) < 0 ||
        tpl_shape(c, n->in[first + 2], v) < 0)
        return -1;
    if (q[3] == 0 || v[3] == 0) return 1;
    *call = (CudaLibCall){.kind = grad ? LIB_ATTENTION_GRAD : LIB_ATTENTION, .groups = 1};
    CudaAttention *a = &call->att;
    *a = (CudaAttention){.batch = q[0], .heads = q[2], .t = q[1], .s = k[1], .dk = q[3], .dv = v[3],
                         .scale = (float)node_float(n, "scale", 1.0), .bf16 = dt == DT_BF16};
    a->softmax.kernel = a->dscores.kernel = -1;
    if (emit_round_rest(c, a)) return -1;
    int64_t queries = a->batch * a->heads * a->t;
    if (queries > 0 && a->s == 0) return err_set(c->err, "%s: there are no keys to attend to", op_info(n->op)->name);
    if (queries == 0) return 0; /* nothing to compute: the executor zeroes the outputs (sdpa_grad's dk, dv) */
    int64_t budget = c->em->plan->opts.attention_scratch_bytes;
    a->heads_per_round = heads_per_round(a->heads, a->t, a->s, budget > 0 ? budget : default_round_budget);
    if (emit_rows(c, a, "attn_softmax", softmax_body, 0, &a->softmax)) return -1;
    return grad ? emit_rows(c, a, "attn_dscores", dscores_body, 1, &a->dscores) : 0;
}
